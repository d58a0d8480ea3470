/*
 * engine_memory.c: the single-node engine.
 *
 * Sequencing and storage are the hub_history store's (memory or SQLite),
 * borrowed; fan-out is an on_msg upcall on this node, from the store's
 * completion, so a room's messages reach on_msg in offset order because the
 * store completes appends in order. Presence, subscriptions and nick claims
 * are hash tables of this process, and the calls that touch only them
 * complete (and fire their upcalls) before returning.
 *
 * Invariants:
 * - on_msg fires only for subscribed rooms, also while a close waits for
 *   the store (a draining hub still delivers what it acknowledges).
 * - Every publish and read holds one count in pending until its store
 *   completion ran; close finishes when pending reaches zero.
 * - A member is in exactly one room's array, at its index, and in the
 *   member table under "<room length>:<room><client>".
 */
#include "engine_impl.h"
#include "hub/engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct msub {
    struct engine_map_node node; /* in subs, keyed by name */
    char name[];                 /* room name, NUL-terminated */
};

struct mroom;

/* One allocation per member: the key, then room for the nick it joined
 * with (a longer nick later is allocated apart). Idle connections are
 * members, so bytes here are bytes per connection. */
struct mmember {
    struct engine_map_node node; /* in members, keyed by key */
    struct mroom *room;          /* the room it is in */
    char *nick;                  /* current nick: inline (after key) or owned */
    uint32_t index;              /* its slot in room->m */
    uint32_t nick_cap;           /* bytes the inline nick may take, NUL excluded */
    uint32_t client_off;         /* where the client id starts in key */
    uint32_t key_len;            /* bytes in key */
    char key[];                  /* "<room length>:<room><client>", NUL, inline nick */
};

struct mroom {
    struct engine_map_node node; /* in rooms, keyed by name */
    struct mmember **m;          /* members, owned array */
    uint32_t n, cap;             /* used and allocated */
    size_t name_len;             /* bytes in name */
    char name[];                 /* room name */
};

/* One allocation per claim: the folded nick, the nick as claimed (the same
 * length: folding is ASCII only) and the holder, each NUL-terminated. */
struct mnick {
    struct engine_map_node node; /* in nicks, keyed by fold */
    char *client;                /* holder's client id, inline */
    char *nick;                  /* as claimed, inline */
    char fold[];                 /* ASCII-folded nick, then nick and client */
};

struct memory_engine {
    struct hub_engine base;         /* the interface header; must be first */
    struct hub_history *store;      /* borrowed */
    struct engine_map subs;         /* struct msub */
    struct engine_map rooms;        /* struct mroom: rooms with members */
    struct engine_map members;      /* struct mmember */
    struct engine_map nicks;        /* struct mnick */
    uint64_t pending;               /* store requests in flight */
    void (*closed_cb)(void *data);  /* close's callback, once pending is 0 */
    void *closed_data;              /* its argument */
    uint64_t published, duplicates; /* stats */
    uint64_t received;              /* stats: on_msg upcalls */
};

static const struct engine_ops memory_ops;

int hub_engine_open_memory(struct hub_engine **out, struct hub_history *store,
                           const struct hub_engine_events *ev, void *data)
{
    struct memory_engine *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return HUB_ENOMEM;
    engine_init(&e->base, &memory_ops, ev, data);
    e->base.state = HUB_ENGINE_READY;
    e->store = store;
    *out = &e->base;
    return 0;
}

static struct hub_iov iov(const char *s, size_t len)
{
    struct hub_iov v = {s, len};
    return v;
}

static struct msub *find_sub(struct memory_engine *e, struct hub_iov room)
{
    struct engine_map_node *n =
        engine_map_find(&e->subs, room.base, room.len, hub_hash(room.base, room.len, 0));
    return n ? HUB_CONTAINER_OF(n, struct msub, node) : NULL;
}

static struct mroom *find_room(struct memory_engine *e, struct hub_iov room)
{
    struct engine_map_node *n =
        engine_map_find(&e->rooms, room.base, room.len, hub_hash(room.base, room.len, 0));
    return n ? HUB_CONTAINER_OF(n, struct mroom, node) : NULL;
}

/* Builds the member key of (room, client) into buf (at least room.len +
 * client.len + 8 bytes). Returns its length; *client_off gets the client's
 * position. */
static size_t member_key(char *buf, struct hub_iov room, struct hub_iov client,
                         uint32_t *client_off)
{
    int n = sprintf(buf, "%zu:", room.len);
    memcpy(buf + n, room.base, room.len);
    *client_off = (uint32_t)((size_t)n + room.len);
    memcpy(buf + *client_off, client.base, client.len);
    buf[*client_off + client.len] = '\0';
    return *client_off + client.len;
}

/* Bytes of the decimal length prefix and colon of a member key. */
static size_t key_prefix_len(size_t room_len)
{
    size_t n = 2;
    while (room_len >= 10) {
        room_len /= 10;
        n++;
    }
    return n;
}

/* Sets m's nick: inline when it fits there, else allocated. Returns 0 or
 * HUB_ENOMEM (the old nick kept). */
static int member_set_nick(struct mmember *m, struct hub_iov nick)
{
    char *in = m->key + m->key_len + 1;
    char *nk = in;
    if (nick.len > m->nick_cap && (nk = engine_strdup(nick)) == NULL)
        return HUB_ENOMEM;
    if (nk == in) {
        memcpy(in, nick.base, nick.len);
        in[nick.len] = '\0';
    }
    if (m->nick != NULL && m->nick != in)
        free(m->nick);
    m->nick = nk;
    return 0;
}

static struct mmember *find_member(struct memory_engine *e, struct hub_iov room,
                                   struct hub_iov client)
{
    char buf[2 * 256 + 16];
    uint32_t off;
    size_t len = member_key(buf, room, client, &off);
    struct engine_map_node *n = engine_map_find(&e->members, buf, len, hub_hash(buf, len, 0));
    return n ? HUB_CONTAINER_OF(n, struct mmember, node) : NULL;
}

static void free_member(struct mmember *m)
{
    if (m->nick != m->key + m->key_len + 1)
        free(m->nick);
    free(m);
}

static void memory_free(struct hub_engine *base)
{
    struct memory_engine *e = (struct memory_engine *)base;
    struct engine_map *maps[] = {&e->subs, &e->rooms, &e->members, &e->nicks};
    for (size_t k = 0; k < HUB_ARRAY_SIZE(maps); k++) {
        for (size_t i = 0; i < maps[k]->nbuckets; i++)
            for (struct engine_map_node *n = maps[k]->buckets[i], *next; n; n = next) {
                next = n->next;
                if (k == 1) {
                    struct mroom *r = HUB_CONTAINER_OF(n, struct mroom, node);
                    free(r->m);
                    free(r);
                } else if (k == 2) {
                    free_member(HUB_CONTAINER_OF(n, struct mmember, node));
                } else if (k == 3) {
                    free(HUB_CONTAINER_OF(n, struct mnick, node));
                } else {
                    free(HUB_CONTAINER_OF(n, struct msub, node));
                }
            }
        engine_map_free(maps[k]);
    }
    free(e);
}

static void maybe_closed(struct memory_engine *e)
{
    if (e->pending == 0 && e->closed_cb != NULL) {
        void (*cb)(void *) = e->closed_cb;
        e->closed_cb = NULL;
        cb(e->closed_data);
    }
}

static void memory_close(struct hub_engine *base, void (*cb)(void *data), void *data)
{
    struct memory_engine *e = (struct memory_engine *)base;
    e->closed_cb = cb;
    e->closed_data = data;
    maybe_closed(e);
}

static int memory_subscribe(struct hub_engine *base, struct hub_iov room)
{
    struct memory_engine *e = (struct memory_engine *)base;
    if (find_sub(e, room) != NULL)
        return 0;
    struct msub *s = malloc(sizeof(*s) + room.len + 1);
    if (s == NULL)
        return HUB_ENOMEM;
    memcpy(s->name, room.base, room.len);
    s->name[room.len] = '\0';
    s->node.key = s->name;
    s->node.klen = room.len;
    s->node.hash = hub_hash(room.base, room.len, 0);
    if (engine_map_insert(&e->subs, &s->node) != 0) {
        free(s);
        return HUB_ENOMEM;
    }
    return 0;
}

static void memory_unsubscribe(struct hub_engine *base, struct hub_iov room)
{
    struct memory_engine *e = (struct memory_engine *)base;
    struct msub *s = find_sub(e, room);
    if (s != NULL) {
        engine_map_remove(&e->subs, &s->node);
        free(s);
    }
}

/* ---- publish and read ------------------------------------------------ */

#define MPUB_PARTS 8

struct mpub {
    struct memory_engine *e;  /* the engine */
    hub_engine_publish_cb cb; /* completion */
    void *data;               /* its argument */
    int binary;               /* a relay */
    uint64_t reply_to;        /* offset answered, or 0 */
    size_t lens[MPUB_PARTS];  /* room, from, text, cmid, client, author, actor, mentions */
    char bytes[];             /* the strings, back to back */
};

static struct hub_iov mpub_part(const struct mpub *pm, int k)
{
    size_t off = 0;
    for (int i = 0; i < k; i++)
        off += pm->lens[i];
    return iov(pm->bytes + off, pm->lens[k]);
}

static void mpub_deliver(struct mpub *pm, uint64_t offset, int64_t ts)
{
    struct memory_engine *e = pm->e;
    if (find_sub(e, mpub_part(pm, 0)) == NULL)
        return;
    struct hub_engine_msg m = {0};
    m.room = mpub_part(pm, 0);
    m.from = mpub_part(pm, 1);
    m.text = mpub_part(pm, 2);
    m.cmid = mpub_part(pm, 3);
    m.client = mpub_part(pm, 4);
    m.author = mpub_part(pm, 5);
    m.mentions = mpub_part(pm, 7);
    m.reply_to = pm->reply_to;
    m.offset = offset;
    m.ts = ts;
    m.binary = pm->binary;
    e->received++;
    e->base.ev.on_msg(e->base.data, &m);
}

static void mpub_appended(void *data, int err, uint64_t offset, int64_t ts, int duplicate)
{
    struct mpub *pm = data;
    struct memory_engine *e = pm->e;
    if (err == 0 && duplicate)
        e->duplicates++;
    if (err == 0 && !duplicate) {
        e->published++;
        mpub_deliver(pm, offset, ts);
    }
    pm->cb(pm->data, err, offset, ts, duplicate);
    free(pm);
    e->pending--;
    maybe_closed(e);
}

static void mpub_relayed(void *data)
{
    struct mpub *pm = data;
    struct memory_engine *e = pm->e;
    mpub_deliver(pm, 0, 0);
    pm->cb(pm->data, 0, 0, 0, 0);
    free(pm);
    e->pending--;
    maybe_closed(e);
}

static int memory_publish(struct hub_engine *base, const struct hub_engine_pub *p,
                          hub_engine_publish_cb cb, void *data)
{
    struct memory_engine *e = (struct memory_engine *)base;
    struct hub_iov parts[MPUB_PARTS] = {p->room,   p->from,   p->text,  p->cmid,
                                        p->client, p->author, p->actor, p->mentions};
    size_t total = 0;
    for (int i = 0; i < MPUB_PARTS; i++)
        total += parts[i].len;
    struct mpub *pm = malloc(sizeof(*pm) + total);
    if (pm == NULL)
        return HUB_ENOMEM;
    pm->e = e;
    pm->cb = cb;
    pm->data = data;
    pm->binary = p->binary;
    pm->reply_to = p->reply_to;
    char *w = pm->bytes;
    for (int i = 0; i < MPUB_PARTS; i++) {
        pm->lens[i] = parts[i].len;
        if (parts[i].len > 0)
            memcpy(w, parts[i].base, parts[i].len);
        w += parts[i].len;
    }
    /* Count first: the memory store completes inside the call. */
    e->pending++;
    struct hub_history_new m = {
        .room = mpub_part(pm, 0),
        .from = mpub_part(pm, 1),
        .text = mpub_part(pm, 2),
        .cmid = mpub_part(pm, 3),
        .author = mpub_part(pm, 5),
        .actor = mpub_part(pm, 6),
        .mentions = mpub_part(pm, 7),
        .reply_to = p->reply_to,
        .ts = p->ts,
    };
    int rc = p->binary ? hub_history_barrier(e->store, mpub_relayed, pm)
                       : hub_history_append_ex(e->store, &m, mpub_appended, pm);
    if (rc != 0) {
        e->pending--;
        free(pm);
    }
    return rc;
}

struct mread {
    struct memory_engine *e; /* the engine */
    hub_history_read_cb cb;  /* completion */
    void *data;              /* its argument */
};

static void mread_done(void *data, int err, const struct hub_history_pos *pos,
                       const struct hub_history_msg *msgs, size_t n, int complete)
{
    struct mread *rd = data;
    struct memory_engine *e = rd->e;
    rd->cb(rd->data, err, pos, msgs, n, complete);
    free(rd);
    e->pending--;
    maybe_closed(e);
}

static int memory_read(struct hub_engine *base, struct hub_iov room, int dir, uint64_t pos,
                       unsigned limit, hub_history_read_cb cb, void *data)
{
    struct memory_engine *e = (struct memory_engine *)base;
    struct mread *rd = malloc(sizeof(*rd));
    if (rd == NULL)
        return HUB_ENOMEM;
    rd->e = e;
    rd->cb = cb;
    rd->data = data;
    e->pending++;
    int rc = hub_history_read(e->store, room, dir, pos, limit, mread_done, rd);
    if (rc != 0) {
        e->pending--;
        free(rd);
    }
    return rc;
}

/* ---- queries, amendments, search, restrictions, topics, control ---- */

static int memory_query(struct hub_engine *base, struct hub_iov room,
                        const struct hub_history_query *q, hub_history_read_cb cb, void *data)
{
    struct memory_engine *e = (struct memory_engine *)base;
    struct mread *rd = malloc(sizeof(*rd));
    if (rd == NULL)
        return HUB_ENOMEM;
    rd->e = e;
    rd->cb = cb;
    rd->data = data;
    e->pending++;
    int rc = hub_history_query(e->store, room, q, mread_done, rd);
    if (rc != 0) {
        e->pending--;
        free(rd);
    }
    return rc;
}

/* An amendment in flight: what on_amend needs once the store has it. */
struct mamend {
    struct memory_engine *e;
    hub_engine_amend_cb cb;
    void *data;
    uint64_t offset;
    int kind;
    size_t lens[5]; /* room, text, emoji, who, nick */
    char bytes[];
};

static struct hub_iov mamend_part(const struct mamend *ma, int k)
{
    size_t off = 0;
    for (int i = 0; i < k; i++)
        off += ma->lens[i];
    return iov(ma->bytes + off, ma->lens[k]);
}

static void mamend_done(void *data, int err, const struct hub_history_amended *r)
{
    struct mamend *ma = data;
    struct memory_engine *e = ma->e;
    int fan = err == 0 && r != NULL && r->changed;
    struct hub_engine_amended a = {
        .room = mamend_part(ma, 0),
        .offset = ma->offset,
        .kind = ma->kind,
        .text = ma->kind == HUB_AMEND_EDIT ? mamend_part(ma, 1) : iov(NULL, 0),
        .edited_ts = fan ? r->edited_ts : 0,
        .emoji = mamend_part(ma, 2),
        .count = fan ? r->count : 0,
        .who = mamend_part(ma, 3),
        .nick = mamend_part(ma, 4),
    };
    ma->cb(ma->data, err, r);
    /* After the completion, as engine.h says; only for subscribed rooms. */
    if (fan && e->base.ev.on_amend != NULL && find_sub(e, a.room) != NULL)
        e->base.ev.on_amend(e->base.data, &a);
    free(ma);
    e->pending--;
    maybe_closed(e);
}

static int memory_amend(struct hub_engine *base, const struct hub_history_amend *a,
                        struct hub_iov nick, hub_engine_amend_cb cb, void *data)
{
    struct memory_engine *e = (struct memory_engine *)base;
    struct hub_iov parts[5] = {a->room, a->text, a->emoji, a->who, nick};
    size_t total = 0;
    for (int i = 0; i < 5; i++)
        total += parts[i].len;
    struct mamend *ma = malloc(sizeof(*ma) + total);
    if (ma == NULL)
        return HUB_ENOMEM;
    ma->e = e;
    ma->cb = cb;
    ma->data = data;
    ma->offset = a->offset;
    ma->kind = a->kind;
    char *w = ma->bytes;
    for (int i = 0; i < 5; i++) {
        ma->lens[i] = parts[i].len;
        if (parts[i].len > 0)
            memcpy(w, parts[i].base, parts[i].len);
        w += parts[i].len;
    }
    e->pending++;
    int rc = hub_history_amend(e->store, a, mamend_done, ma);
    if (rc != 0) {
        e->pending--;
        free(ma);
    }
    return rc;
}

/* A search, restriction or topic in flight. */
struct mdone {
    struct memory_engine *e;
    hub_history_search_cb search_cb;
    hub_engine_done_cb done_cb;
    void *data;
};

static struct mdone *mdone_new(struct memory_engine *e, void *data)
{
    struct mdone *d = calloc(1, sizeof(*d));
    if (d != NULL) {
        d->e = e;
        d->data = data;
        e->pending++;
    }
    return d;
}

static void mdone_free(struct mdone *d)
{
    struct memory_engine *e = d->e;
    free(d);
    e->pending--;
    maybe_closed(e);
}

static void msearch_done(void *data, int err, const struct hub_history_msg *msgs, size_t n,
                         int complete)
{
    struct mdone *d = data;
    d->search_cb(d->data, err, msgs, n, complete);
    mdone_free(d);
}

static void mdone_done(void *data, int err)
{
    struct mdone *d = data;
    d->done_cb(d->data, err);
    mdone_free(d);
}

/* Cleans up after a store call that returned an error. */
static int mdone_failed(struct mdone *d, int rc)
{
    if (rc != 0)
        mdone_free(d);
    return rc;
}

static int memory_search(struct hub_engine *base, struct hub_iov room, struct hub_iov q,
                         uint64_t before, unsigned limit, hub_history_search_cb cb, void *data)
{
    struct memory_engine *e = (struct memory_engine *)base;
    struct mdone *d = mdone_new(e, data);
    if (d == NULL)
        return HUB_ENOMEM;
    d->search_cb = cb;
    return mdone_failed(d, hub_history_search(e->store, room, q, before, limit, msearch_done, d));
}

static int memory_restrict(struct hub_engine *base, const struct hub_history_restrict *r,
                           hub_engine_done_cb cb, void *data)
{
    struct memory_engine *e = (struct memory_engine *)base;
    struct mdone *d = mdone_new(e, data);
    if (d == NULL)
        return HUB_ENOMEM;
    d->done_cb = cb;
    return mdone_failed(d, hub_history_restrict(e->store, r, mdone_done, d));
}

static int memory_set_topic(struct hub_engine *base, struct hub_iov room, struct hub_iov topic,
                            hub_engine_done_cb cb, void *data)
{
    struct memory_engine *e = (struct memory_engine *)base;
    struct mdone *d = mdone_new(e, data);
    if (d == NULL)
        return HUB_ENOMEM;
    d->done_cb = cb;
    return mdone_failed(d, hub_history_set_topic(e->store, room, topic, mdone_done, d));
}

/* One node: the control message is this node's alone, applied at once
 * (on_control fires before the call returns; see engine.h). */
static int memory_control(struct hub_engine *base, const struct hub_engine_control *c)
{
    struct memory_engine *e = (struct memory_engine *)base;
    if (e->base.ev.on_control != NULL)
        e->base.ev.on_control(e->base.data, c);
    return 0;
}

/* ---- presence -------------------------------------------------------- */

static void presence(struct memory_engine *e, int kind, struct hub_iov room, struct hub_iov client,
                     struct hub_iov nick, struct hub_iov old_nick, uint64_t members)
{
    if (e->base.ev.on_presence == NULL || find_sub(e, room) == NULL)
        return;
    struct hub_engine_presence p = {kind, room, client, nick, old_nick, members, 1};
    e->base.ev.on_presence(e->base.data, &p);
}

static int memory_join(struct hub_engine *base, struct hub_iov room, struct hub_iov client,
                       struct hub_iov nick)
{
    struct memory_engine *e = (struct memory_engine *)base;
    struct mmember *m = find_member(e, room, client);
    if (m != NULL)
        return member_set_nick(m, nick); /* already a member: refreshed silently */
    struct mroom *r = find_room(e, room);
    int new_room = r == NULL;
    if (new_room) {
        r = calloc(1, sizeof(*r) + room.len + 1);
        if (r == NULL)
            return HUB_ENOMEM;
        memcpy(r->name, room.base, room.len);
        r->name_len = room.len;
        r->node.key = r->name;
        r->node.klen = room.len;
        r->node.hash = hub_hash(room.base, room.len, 0);
    }
    if (r->n == r->cap) {
        uint32_t cap = r->cap ? r->cap * 2 : 4;
        struct mmember **a = realloc(r->m, cap * sizeof(*a));
        if (a == NULL)
            goto fail_room;
        r->m = a;
        r->cap = cap;
    }
    m = malloc(sizeof(*m) + key_prefix_len(room.len) + room.len + client.len + nick.len + 2);
    if (m == NULL)
        goto fail_room;
    m->key_len = (uint32_t)member_key(m->key, room, client, &m->client_off);
    m->nick = NULL;
    m->nick_cap = (uint32_t)nick.len;
    member_set_nick(m, nick); /* fits inline: cannot fail */
    m->node.key = m->key;
    m->node.klen = m->key_len;
    m->node.hash = hub_hash(m->key, m->key_len, 0);
    if (engine_map_insert(&e->members, &m->node) != 0)
        goto fail_nick;
    if (new_room && engine_map_insert(&e->rooms, &r->node) != 0) {
        engine_map_remove(&e->members, &m->node);
        goto fail_nick;
    }
    m->room = r;
    m->index = r->n;
    r->m[r->n++] = m;
    presence(e, HUB_ENGINE_JOIN, room, client, nick, iov(NULL, 0), r->n);
    return 0;

fail_nick:
    free(m);
fail_room:
    if (new_room) {
        free(r->m);
        free(r);
    }
    return HUB_ENOMEM;
}

static int memory_leave(struct hub_engine *base, struct hub_iov room, struct hub_iov client)
{
    struct memory_engine *e = (struct memory_engine *)base;
    struct mmember *m = find_member(e, room, client);
    if (m == NULL)
        return 0;
    struct mroom *r = m->room;
    engine_map_remove(&e->members, &m->node);
    r->m[m->index] = r->m[--r->n];
    r->m[m->index]->index = m->index;
    uint64_t left = r->n;
    if (r->n == 0) {
        engine_map_remove(&e->rooms, &r->node);
        free(r->m);
        free(r);
    }
    presence(e, HUB_ENGINE_LEAVE, room, client, iov(m->nick, strlen(m->nick)), iov(NULL, 0), left);
    free_member(m);
    return 0;
}

static int memory_renick(struct hub_engine *base, struct hub_iov room, struct hub_iov client,
                         struct hub_iov old_nick, struct hub_iov nick)
{
    struct memory_engine *e = (struct memory_engine *)base;
    struct mmember *m = find_member(e, room, client);
    if (m == NULL)
        return 0;
    if (member_set_nick(m, nick) != 0)
        return HUB_ENOMEM;
    presence(e, HUB_ENGINE_NICK, room, client, nick, old_nick, m->room->n);
    return 0;
}

static int memory_members(struct hub_engine *base, struct hub_iov room, unsigned limit,
                          hub_engine_members_cb cb, void *data)
{
    struct memory_engine *e = (struct memory_engine *)base;
    struct mroom *r = find_room(e, room);
    uint64_t total = r ? r->n : 0;
    if (total == 0 || total > limit) {
        cb(data, 0, total, NULL, 0);
        return 0;
    }
    struct hub_engine_member *list = malloc(total * sizeof(*list));
    if (list == NULL)
        return HUB_ENOMEM;
    for (uint32_t i = 0; i < r->n; i++) {
        const struct mmember *m = r->m[i];
        list[i].client = iov(m->key + m->client_off, m->key_len - m->client_off);
        list[i].nick = iov(m->nick, strlen(m->nick));
    }
    cb(data, 0, total, list, total);
    free(list);
    return 0;
}

static int by_members_desc(const void *x, const void *y)
{
    const struct hub_engine_room_count *a = x, *b = y;
    return a->members < b->members ? 1 : a->members > b->members ? -1 : 0;
}

static int memory_rooms(struct hub_engine *base, unsigned limit, hub_engine_rooms_cb cb, void *data)
{
    struct memory_engine *e = (struct memory_engine *)base;
    size_t n = e->rooms.n;
    struct hub_engine_room_count *list = malloc((n ? n : 1) * sizeof(*list));
    if (list == NULL)
        return HUB_ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < e->rooms.nbuckets; i++)
        for (struct engine_map_node *x = e->rooms.buckets[i]; x; x = x->next) {
            struct mroom *r = HUB_CONTAINER_OF(x, struct mroom, node);
            list[k].room = iov(r->name, r->name_len);
            list[k++].members = r->n;
        }
    qsort(list, k, sizeof(*list), by_members_desc);
    cb(data, 0, list, k < limit ? k : limit);
    free(list);
    return 0;
}

/* ---- nicks, typing, invites ------------------------------------------ */

static struct mnick *find_nick(struct memory_engine *e, struct hub_iov nick)
{
    char fold[256];
    engine_fold(nick, fold);
    struct engine_map_node *n =
        engine_map_find(&e->nicks, fold, nick.len, hub_hash(fold, nick.len, 0));
    return n ? HUB_CONTAINER_OF(n, struct mnick, node) : NULL;
}

static int memory_claim_nick(struct hub_engine *base, struct hub_iov nick, struct hub_iov client,
                             hub_engine_done_cb cb, void *data)
{
    struct memory_engine *e = (struct memory_engine *)base;
    struct mnick *x = find_nick(e, nick);
    if (x != NULL) {
        if (strlen(x->client) != client.len || memcmp(x->client, client.base, client.len) != 0) {
            cb(data, HUB_EEXIST);
            return 0;
        }
        /* The holder claims it again (perhaps in another case): keep its
         * spelling (the same length, folding is ASCII only). */
        memcpy(x->nick, nick.base, nick.len);
        cb(data, 0);
        return 0;
    }
    x = malloc(sizeof(*x) + 2 * (nick.len + 1) + client.len + 1);
    if (x == NULL)
        return HUB_ENOMEM;
    engine_fold(nick, x->fold);
    x->nick = x->fold + nick.len + 1;
    memcpy(x->nick, nick.base, nick.len);
    x->nick[nick.len] = '\0';
    x->client = x->nick + nick.len + 1;
    memcpy(x->client, client.base, client.len);
    x->client[client.len] = '\0';
    x->node.key = x->fold;
    x->node.klen = nick.len;
    x->node.hash = hub_hash(x->fold, nick.len, 0);
    if (engine_map_insert(&e->nicks, &x->node) != 0) {
        free(x);
        return HUB_ENOMEM;
    }
    cb(data, 0);
    return 0;
}

static void memory_release_nick(struct hub_engine *base, struct hub_iov nick, struct hub_iov client)
{
    struct memory_engine *e = (struct memory_engine *)base;
    struct mnick *x = find_nick(e, nick);
    if (x == NULL || strlen(x->client) != client.len ||
        memcmp(x->client, client.base, client.len) != 0)
        return;
    engine_map_remove(&e->nicks, &x->node);
    free(x);
}

static int memory_typing(struct hub_engine *base, struct hub_iov room, struct hub_iov client,
                         struct hub_iov nick)
{
    struct memory_engine *e = (struct memory_engine *)base;
    if (e->base.ev.on_typing != NULL && find_sub(e, room) != NULL)
        e->base.ev.on_typing(e->base.data, room, client, nick);
    return 0;
}

static int memory_invite(struct hub_engine *base, struct hub_iov to_nick, struct hub_iov room,
                         struct hub_iov from, hub_engine_done_cb cb, void *data)
{
    struct memory_engine *e = (struct memory_engine *)base;
    struct mnick *x = find_nick(e, to_nick);
    if (x == NULL) {
        cb(data, HUB_ENOENT);
        return 0;
    }
    if (e->base.ev.on_invite != NULL)
        e->base.ev.on_invite(e->base.data, iov(x->client, strlen(x->client)),
                             iov(x->nick, strlen(x->nick)), room, from);
    cb(data, 0);
    return 0;
}

static void memory_stats(struct hub_engine *base, struct hub_engine_stats *st)
{
    struct memory_engine *e = (struct memory_engine *)base;
    st->kind = "memory";
    st->published = e->published;
    st->duplicates = e->duplicates;
    st->received = e->received;
    st->queue = e->pending;
    st->rooms = e->subs.n;
}

static const struct engine_ops memory_ops = {
    .close = memory_close,
    .free = memory_free,
    .subscribe = memory_subscribe,
    .unsubscribe = memory_unsubscribe,
    .publish = memory_publish,
    .read = memory_read,
    .join = memory_join,
    .leave = memory_leave,
    .renick = memory_renick,
    .members = memory_members,
    .rooms = memory_rooms,
    .claim_nick = memory_claim_nick,
    .release_nick = memory_release_nick,
    .typing = memory_typing,
    .invite = memory_invite,
    .stats = memory_stats,
    .query = memory_query,
    .amend = memory_amend,
    .search = memory_search,
    .set_restriction = memory_restrict,
    .set_topic = memory_set_topic,
    .control = memory_control,
};
