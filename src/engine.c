/*
 * engine.c: the engine interface's dispatch, its argument checks, and the
 * helpers both engines share (a byte-keyed hash table, case folding, the
 * shard hash, random ids).
 *
 * Checks that do not depend on the engine (room, nick, key, emoji, text and
 * mention bounds, amendment kinds, a closed engine) are made here once, so both engines refuse the
 * same input with the same code and their callbacks never fire for a refused call.
 */
#include "hub/engine.h"
#include "engine_impl.h"
#include "hub/rooms.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NICK_MAX HUB_ENGINE_NICK_MAX /* longest nick the engine stores */

void hub_engine_config_default(struct hub_engine_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->prefix = "chathub:";
    cfg->history_max = 1000;
    cfg->lease_ms = 30000;
    cfg->timeout_ms = 5000;
    cfg->max_inflight = 10000;
    cfg->dedupe_ttl_s = 86400;
    cfg->backoff_min_ms = 100;
    cfg->backoff_max_ms = 5000;
    cfg->fill_max = 1000;
}

void engine_init(struct hub_engine *e, const struct engine_ops *ops,
                 const struct hub_engine_events *ev, void *data)
{
    e->ops = ops;
    e->ev = *ev;
    e->data = data;
    e->closing = 0;
    e->state = HUB_ENGINE_CONNECTING;
    strcpy(e->node_id, "local");
}

static int room_ok(struct hub_iov room)
{
    return room.len >= 1 && room.len <= HUB_ROOM_NAME_MAX && room.base != NULL;
}

static int nick_ok(struct hub_iov nick)
{
    return nick.len >= 1 && nick.len <= NICK_MAX && nick.base != NULL;
}

/* Client ids and nicks given with presence calls: short, not empty. */
static int id_ok(struct hub_iov id)
{
    return id.len >= 1 && id.len <= NICK_MAX && id.base != NULL;
}

/* An author or actor key: may be empty (no check, nobody's), else bounded. */
static int key_ok(struct hub_iov k)
{
    return k.len <= ENGINE_KEY_MAX && (k.len == 0 || k.base != NULL);
}

/* Any other bounded view (empty allowed). */
static int view_ok(struct hub_iov v, size_t max)
{
    return v.len <= max && (v.len == 0 || v.base != NULL);
}

/* Mentions: empty, or at most HUB_HISTORY_MENTIONS_MAX nicks of 1..NICK_MAX
 * bytes, each followed by '\n'. */
static int mentions_ok(struct hub_iov m)
{
    if (m.len == 0)
        return 1;
    if (m.base == NULL || m.base[m.len - 1] != '\n')
        return 0;
    size_t n = 0, start = 0;
    for (size_t i = 0; i < m.len; i++)
        if (m.base[i] == '\n') {
            if (i == start || i - start > NICK_MAX || ++n > HUB_HISTORY_MENTIONS_MAX)
                return 0;
            start = i + 1;
        }
    return 1;
}

static int emoji_ok(struct hub_iov e)
{
    return e.len >= 1 && e.len <= HUB_HISTORY_EMOJI_MAX && e.base != NULL;
}

void hub_engine_close(struct hub_engine *e, void (*cb)(void *data), void *data)
{
    e->closing = 1;
    e->state = HUB_ENGINE_CLOSING;
    e->ops->close(e, cb, data);
}

void hub_engine_free(struct hub_engine *e)
{
    if (e != NULL)
        e->ops->free(e);
}

const char *hub_engine_node_id(const struct hub_engine *e)
{
    return e->node_id;
}

int hub_engine_subscribe(struct hub_engine *e, struct hub_iov room)
{
    if (e->closing)
        return HUB_ECLOSED;
    if (!room_ok(room))
        return HUB_EINVAL;
    return e->ops->subscribe(e, room);
}

void hub_engine_unsubscribe(struct hub_engine *e, struct hub_iov room)
{
    if (!e->closing && room_ok(room))
        e->ops->unsubscribe(e, room);
}

int hub_engine_publish(struct hub_engine *e, const struct hub_engine_pub *p,
                       hub_engine_publish_cb cb, void *data)
{
    if (e->closing)
        return HUB_ECLOSED;
    if (!room_ok(p->room) || p->from.len > NICK_MAX || p->client.len > NICK_MAX ||
        p->cmid.len > NICK_MAX || !key_ok(p->author) || !key_ok(p->actor) ||
        !mentions_ok(p->mentions))
        return HUB_EINVAL;
    return e->ops->publish(e, p, cb, data);
}

int hub_engine_read(struct hub_engine *e, struct hub_iov room, int dir, uint64_t pos,
                    unsigned limit, hub_history_read_cb cb, void *data)
{
    if (e->closing)
        return HUB_ECLOSED;
    if (!room_ok(room) || dir < HUB_HISTORY_LATEST || dir > HUB_HISTORY_AFTER)
        return HUB_EINVAL;
    return e->ops->read(e, room, dir, pos, limit, cb, data);
}

int hub_engine_join(struct hub_engine *e, struct hub_iov room, struct hub_iov client,
                    struct hub_iov nick)
{
    if (e->closing)
        return HUB_ECLOSED;
    if (!room_ok(room) || !id_ok(client) || !nick_ok(nick))
        return HUB_EINVAL;
    return e->ops->join(e, room, client, nick);
}

int hub_engine_leave(struct hub_engine *e, struct hub_iov room, struct hub_iov client)
{
    if (e->closing)
        return HUB_ECLOSED;
    if (!room_ok(room) || !id_ok(client))
        return HUB_EINVAL;
    return e->ops->leave(e, room, client);
}

int hub_engine_renick(struct hub_engine *e, struct hub_iov room, struct hub_iov client,
                      struct hub_iov old_nick, struct hub_iov nick)
{
    if (e->closing)
        return HUB_ECLOSED;
    if (!room_ok(room) || !id_ok(client) || !nick_ok(nick) || old_nick.len > NICK_MAX)
        return HUB_EINVAL;
    return e->ops->renick(e, room, client, old_nick, nick);
}

int hub_engine_members(struct hub_engine *e, struct hub_iov room, unsigned limit,
                       hub_engine_members_cb cb, void *data)
{
    if (e->closing)
        return HUB_ECLOSED;
    if (!room_ok(room))
        return HUB_EINVAL;
    return e->ops->members(e, room, limit, cb, data);
}

int hub_engine_rooms(struct hub_engine *e, unsigned limit, hub_engine_rooms_cb cb, void *data)
{
    if (e->closing)
        return HUB_ECLOSED;
    return e->ops->rooms(e, limit, cb, data);
}

int hub_engine_claim_nick(struct hub_engine *e, struct hub_iov nick, struct hub_iov client,
                          hub_engine_done_cb cb, void *data)
{
    if (e->closing)
        return HUB_ECLOSED;
    if (!nick_ok(nick) || !id_ok(client))
        return HUB_EINVAL;
    return e->ops->claim_nick(e, nick, client, cb, data);
}

void hub_engine_release_nick(struct hub_engine *e, struct hub_iov nick, struct hub_iov client)
{
    if (!e->closing && nick_ok(nick) && id_ok(client))
        e->ops->release_nick(e, nick, client);
}

int hub_engine_typing(struct hub_engine *e, struct hub_iov room, struct hub_iov client,
                      struct hub_iov nick)
{
    if (e->closing)
        return HUB_ECLOSED;
    if (!room_ok(room) || !id_ok(client) || !nick_ok(nick))
        return HUB_EINVAL;
    return e->ops->typing(e, room, client, nick);
}

int hub_engine_invite(struct hub_engine *e, struct hub_iov to_nick, struct hub_iov room,
                      struct hub_iov from, hub_engine_done_cb cb, void *data)
{
    if (e->closing)
        return HUB_ECLOSED;
    if (!nick_ok(to_nick) || !room_ok(room) || !nick_ok(from))
        return HUB_EINVAL;
    return e->ops->invite(e, to_nick, room, from, cb, data);
}

/* ---- issue 13 and 15: queries, amendments, search, restrictions ------ */

int hub_engine_query(struct hub_engine *e, struct hub_iov room, const struct hub_history_query *q,
                     hub_history_read_cb cb, void *data)
{
    if (e->closing)
        return HUB_ECLOSED;
    if (!room_ok(room) || q->dir < HUB_HISTORY_LATEST || q->dir > HUB_HISTORY_AFTER ||
        !key_ok(q->viewer) || !key_ok(q->actor))
        return HUB_EINVAL;
    if (e->ops->query == NULL)
        return HUB_EINVAL;
    return e->ops->query(e, room, q, cb, data);
}

int hub_engine_amend(struct hub_engine *e, const struct hub_history_amend *a, struct hub_iov nick,
                     hub_engine_amend_cb cb, void *data)
{
    if (e->closing)
        return HUB_ECLOSED;
    if (!room_ok(a->room) || a->offset == 0 || !key_ok(a->who) || !view_ok(nick, NICK_MAX))
        return HUB_EINVAL;
    switch (a->kind) {
    case HUB_AMEND_EDIT:
        if (a->text.len == 0 || !view_ok(a->text, ENGINE_TEXT_MAX))
            return HUB_EINVAL;
        break;
    case HUB_AMEND_DELETE:
        break;
    case HUB_AMEND_REACT:
    case HUB_AMEND_UNREACT:
        if (!emoji_ok(a->emoji) || a->who.len == 0)
            return HUB_EINVAL;
        break;
    default:
        return HUB_EINVAL;
    }
    if (e->ops->amend == NULL)
        return HUB_EINVAL;
    return e->ops->amend(e, a, nick, cb, data);
}

int hub_engine_search(struct hub_engine *e, struct hub_iov room, struct hub_iov q, uint64_t before,
                      unsigned limit, hub_history_search_cb cb, void *data)
{
    if (e->closing)
        return HUB_ECLOSED;
    if (!room_ok(room) || q.len == 0 || !view_ok(q, ENGINE_QUERY_MAX))
        return HUB_EINVAL;
    if (e->ops->search == NULL)
        return HUB_EINVAL;
    return e->ops->search(e, room, q, before, limit, cb, data);
}

int hub_engine_restrict(struct hub_engine *e, const struct hub_history_restrict *r,
                        hub_engine_done_cb cb, void *data)
{
    if (e->closing)
        return HUB_ECLOSED;
    if ((r->kind != HUB_RESTRICT_BAN && r->kind != HUB_RESTRICT_MUTE) ||
        (r->room.len > 0 && !room_ok(r->room)) || r->actor.len == 0 || !key_ok(r->actor) ||
        r->until_ms < 0 || !view_ok(r->by, ENGINE_REASON_MAX) ||
        !view_ok(r->reason, ENGINE_REASON_MAX))
        return HUB_EINVAL;
    if (e->ops->set_restriction == NULL)
        return HUB_EINVAL;
    return e->ops->set_restriction(e, r, cb, data);
}

int hub_engine_set_topic(struct hub_engine *e, struct hub_iov room, struct hub_iov topic,
                         hub_engine_done_cb cb, void *data)
{
    if (e->closing)
        return HUB_ECLOSED;
    if (!room_ok(room) || !view_ok(topic, HUB_HISTORY_TOPIC_MAX))
        return HUB_EINVAL;
    if (e->ops->set_topic == NULL)
        return HUB_EINVAL;
    return e->ops->set_topic(e, room, topic, cb, data);
}

int hub_engine_control(struct hub_engine *e, const struct hub_engine_control *c)
{
    if (e->closing)
        return HUB_ECLOSED;
    switch (c->kind) {
    case HUB_CONTROL_KICK:
        if (!room_ok(c->room) || c->target.len == 0)
            return HUB_EINVAL;
        break;
    case HUB_CONTROL_BAN:
    case HUB_CONTROL_MUTE:
        if ((c->room.len > 0 && !room_ok(c->room)) || c->target.len == 0)
            return HUB_EINVAL;
        break;
    case HUB_CONTROL_DISCONNECT:
        if (c->target.len == 0)
            return HUB_EINVAL;
        break;
    case HUB_CONTROL_TOPIC:
        if (!room_ok(c->room) || c->text.len > HUB_HISTORY_TOPIC_MAX)
            return HUB_EINVAL;
        break;
    default:
        return HUB_EINVAL;
    }
    if (!key_ok(c->target) || !view_ok(c->room, HUB_ROOM_NAME_MAX) ||
        !view_ok(c->text, ENGINE_REASON_MAX) || !view_ok(c->by, ENGINE_REASON_MAX))
        return HUB_EINVAL;
    if (e->ops->control == NULL)
        return HUB_EINVAL;
    return e->ops->control(e, c);
}

void hub_engine_stats(struct hub_engine *e, struct hub_engine_stats *st)
{
    memset(st, 0, sizeof(*st));
    st->reason = "";
    e->ops->stats(e, st);
    st->state = e->state;
    if (e->closing)
        st->reason = "closing";
}

int hub_engine_ready(const struct hub_engine *e)
{
    return e->state == HUB_ENGINE_READY;
}

#ifndef HUB_HAVE_REDIS
int hub_engine_have_redis(void)
{
    return 0;
}

int hub_engine_open_redis(struct hub_engine **out, uv_loop_t *loop,
                          const struct hub_engine_config *cfg, const struct hub_engine_events *ev,
                          void *data, char *err, size_t errsz)
{
    (void)out, (void)loop, (void)cfg, (void)ev, (void)data;
    if (errsz > 0)
        snprintf(err, errsz, "this chathub was built without Redis support (meson -Dredis)");
    return HUB_EINVAL;
}
#endif

/* ---- shared helpers -------------------------------------------------- */

struct engine_map_node *engine_map_find(const struct engine_map *m, const char *k, size_t len,
                                        uint64_t h)
{
    if (m->nbuckets == 0)
        return NULL;
    for (struct engine_map_node *n = m->buckets[h & (m->nbuckets - 1)]; n; n = n->next)
        if (n->hash == h && n->klen == len && memcmp(n->key, k, len) == 0)
            return n;
    return NULL;
}

int engine_map_insert(struct engine_map *m, struct engine_map_node *n)
{
    if (m->n >= m->nbuckets) {
        size_t nb = m->nbuckets ? m->nbuckets * 2 : 16;
        struct engine_map_node **b = calloc(nb, sizeof(*b));
        if (b == NULL) {
            if (m->nbuckets == 0)
                return HUB_ENOMEM;
        } else {
            /* Rehash into the doubled table. */
            for (size_t i = 0; i < m->nbuckets; i++)
                for (struct engine_map_node *x = m->buckets[i], *next; x; x = next) {
                    next = x->next;
                    x->next = b[x->hash & (nb - 1)];
                    b[x->hash & (nb - 1)] = x;
                }
            free(m->buckets);
            m->buckets = b;
            m->nbuckets = nb;
        }
    }
    struct engine_map_node **head = &m->buckets[n->hash & (m->nbuckets - 1)];
    n->next = *head;
    *head = n;
    m->n++;
    return 0;
}

void engine_map_remove(struct engine_map *m, struct engine_map_node *n)
{
    struct engine_map_node **pp = &m->buckets[n->hash & (m->nbuckets - 1)];
    while (*pp != n)
        pp = &(*pp)->next;
    *pp = n->next;
    m->n--;
}

void engine_map_free(struct engine_map *m)
{
    free(m->buckets);
    m->buckets = NULL;
    m->nbuckets = m->n = 0;
}

char *engine_strdup(struct hub_iov v)
{
    char *s = malloc(v.len + 1);
    if (s == NULL)
        return NULL;
    if (v.len > 0)
        memcpy(s, v.base, v.len);
    s[v.len] = '\0';
    return s;
}

void engine_fold(struct hub_iov nick, char *out)
{
    for (size_t i = 0; i < nick.len; i++)
        out[i] = (char)hub_ascii_lower((unsigned char)nick.base[i]);
    out[nick.len] = '\0';
}

uint32_t engine_shard_of(struct hub_iov room, uint32_t n)
{
    /* Jump consistent hash (Lamping and Veach, 2014). */
    uint64_t key = hub_hash(room.base, room.len, 0);
    int64_t b = -1, j = 0;
    while (j < (int64_t)n) {
        b = j;
        key = key * 2862933555777941757ull + 1;
        j = (int64_t)((double)(b + 1) * ((double)(1ll << 31) / (double)((key >> 33) + 1)));
    }
    return (uint32_t)(b < 0 ? 0 : b);
}

void engine_random_hex(char *out, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char r[64];
    size_t nb = (len + 1) / 2 > sizeof(r) ? sizeof(r) : (len + 1) / 2;
    if (uv_random(NULL, NULL, r, nb, 0, NULL) != 0) {
        /* No entropy source: the time still differs between runs. */
        uint64_t t = uv_hrtime();
        for (size_t i = 0; i < nb; i++)
            r[i] = (unsigned char)(t >> (8 * (i % 8))) ^ (unsigned char)i;
    }
    for (size_t i = 0; i < len && i / 2 < nb; i++)
        out[i] = hex[(i & 1) ? (r[i / 2] & 15) : (r[i / 2] >> 4)];
    out[len] = '\0';
}
