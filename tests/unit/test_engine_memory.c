/*
 * test_engine_memory.c: the memory engine, sans-I/O over the memory history
 * store (which completes inside each call), plus one run over the SQLite
 * store on a real loop to check the ordering promise with asynchronous
 * completions: on_msg in offset order, acks in request order, close waits.
 */
#include "hub/engine.h"

#include "check.h"
#include "tmpfs.h"

#include <stdlib.h>
#include <string.h>
#include <uv.h>

static struct hub_iov S(const char *s) {
    struct hub_iov v = {s, strlen(s)};
    return v;
}

/* Everything the upcalls saw, as text lines. */
struct log {
    char lines[64][160];
    int n;
};

static void logf_(struct log *l, const char *fmt, ...) HUB_PRINTF_LIKE(2, 3);
#include <stdarg.h>
static void logf_(struct log *l, const char *fmt, ...)
{
    if (l->n >= 64)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(l->lines[l->n++], sizeof(l->lines[0]), fmt, ap);
    va_end(ap);
}

static void on_msg(void *data, const struct hub_engine_msg *m)
{
    logf_(data, "msg %.*s %llu %.*s:%.*s%s", (int)m->room.len, m->room.base,
          (unsigned long long)m->offset, (int)m->from.len, m->from.base, (int)m->text.len,
          m->text.base, m->binary ? " bin" : "");
}

static void on_presence(void *data, const struct hub_engine_presence *p)
{
    static const char *kinds[] = {"join", "leave", "nick"};
    logf_(data, "%s %.*s %.*s %.*s<%.*s %llu %d", kinds[p->kind], (int)p->room.len, p->room.base,
          (int)p->client.len, p->client.base, (int)p->nick.len, p->nick.base, (int)p->old_nick.len,
          p->old_nick.base, (unsigned long long)p->members, p->local);
}

static void on_typing(void *data, struct hub_iov room, struct hub_iov client, struct hub_iov nick)
{
    logf_(data, "typing %.*s %.*s %.*s", (int)room.len, room.base, (int)client.len, client.base,
          (int)nick.len, nick.base);
}

static void on_invite(void *data, struct hub_iov client, struct hub_iov nick, struct hub_iov room,
                      struct hub_iov from)
{
    logf_(data, "invite %.*s %.*s %.*s %.*s", (int)client.len, client.base, (int)nick.len,
          nick.base, (int)room.len, room.base, (int)from.len, from.base);
}

static const struct hub_engine_events events = {
    .on_msg = on_msg,
    .on_presence = on_presence,
    .on_typing = on_typing,
    .on_invite = on_invite,
};

struct acks {
    int n;
    int err[32];
    uint64_t off[32];
    int dup[32];
};

static void on_ack(void *data, int err, uint64_t offset, int64_t ts, int duplicate)
{
    struct acks *a = data;
    (void)ts;
    if (a->n < 32) {
        a->err[a->n] = err;
        a->off[a->n] = offset;
        a->dup[a->n] = duplicate;
    }
    a->n++;
}

static int pub(struct hub_engine *e, const char *room, const char *from, const char *text,
               const char *cmid, int binary, struct acks *a)
{
    struct hub_engine_pub p = {.room = S(room),
                               .from = S(from),
                               .text = S(text),
                               .cmid = S(cmid),
                               .client = S("c-1"),
                               .ts = 1000,
                               .binary = binary};
    return hub_engine_publish(e, &p, on_ack, a);
}

static void on_done(void *data, int err)
{
    int *out = data;
    *out = err;
}

struct members_seen {
    int calls;
    uint64_t total;
    size_t n;
    char nicks[8][32];
};

static void on_members(void *data, int err, uint64_t total, const struct hub_engine_member *m,
                       size_t n)
{
    struct members_seen *s = data;
    s->calls++;
    CHECK_EQ(err, 0);
    s->total = total;
    s->n = n;
    for (size_t i = 0; i < n && i < 8; i++)
        snprintf(s->nicks[i], sizeof(s->nicks[i]), "%.*s=%.*s", (int)m[i].client.len,
                 m[i].client.base, (int)m[i].nick.len, m[i].nick.base);
}

struct rooms_seen {
    size_t n;
    char names[8][32];
    uint64_t members[8];
};

static void on_rooms(void *data, int err, const struct hub_engine_room_count *r, size_t n)
{
    struct rooms_seen *s = data;
    CHECK_EQ(err, 0);
    s->n = n;
    for (size_t i = 0; i < n && i < 8; i++) {
        snprintf(s->names[i], sizeof(s->names[i]), "%.*s", (int)r[i].room.len, r[i].room.base);
        s->members[i] = r[i].members;
    }
}

struct read_seen {
    int calls;
    uint64_t last, first;
    size_t n;
    uint64_t offs[8];
    int complete;
};

static void on_read(void *data, int err, const struct hub_history_pos *pos,
                    const struct hub_history_msg *msgs, size_t n, int complete)
{
    struct read_seen *s = data;
    s->calls++;
    CHECK_EQ(err, 0);
    s->last = pos->last;
    s->first = pos->first;
    s->n = n;
    s->complete = complete;
    for (size_t i = 0; i < n && i < 8; i++)
        s->offs[i] = msgs[i].offset;
}

static void closed(void *data)
{
    (*(int *)data)++;
}

static void test_publish_and_subscribe(void)
{
    struct hub_history *h;
    struct hub_history_config cfg;
    hub_history_config_default(&cfg);
    cfg.max_per_room = 3;
    CHECK_EQ(hub_history_open_memory(&h, &cfg), 0);
    struct log log = {0};
    struct hub_engine *e;
    CHECK_EQ(hub_engine_open_memory(&e, h, &events, &log), 0);
    CHECK(hub_engine_ready(e));
    CHECK_STR(hub_engine_node_id(e), "local");

    /* Not subscribed: stored and acked, but no on_msg. */
    struct acks a = {0};
    CHECK_EQ(pub(e, "lobby", "ann", "one", "", 0, &a), 0);
    CHECK_EQ(a.n, 1);
    CHECK_EQ(a.off[0], 1);
    CHECK_EQ(log.n, 0);

    CHECK_EQ(hub_engine_subscribe(e, S("lobby")), 0);
    CHECK_EQ(hub_engine_subscribe(e, S("lobby")), 0); /* idempotent */
    CHECK_EQ(pub(e, "lobby", "ann", "two", "m2", 0, &a), 0);
    CHECK_EQ(pub(e, "lobby", "bob", "bin", "", 1, &a), 0);
    CHECK_EQ(pub(e, "lobby", "ann", "three", "", 0, &a), 0);
    /* The resend of m2 is answered with the original offset and not delivered. */
    CHECK_EQ(pub(e, "lobby", "ann", "two again", "m2", 0, &a), 0);
    CHECK_EQ(a.n, 5);
    CHECK_EQ(a.off[1], 2);
    CHECK_EQ(a.off[2], 0); /* the relay has no offset */
    CHECK_EQ(a.off[3], 3);
    CHECK_EQ(a.off[4], 2);
    CHECK_EQ(a.dup[4], 1);
    CHECK_EQ(log.n, 3);
    CHECK_STR(log.lines[0], "msg lobby 2 ann:two");
    CHECK_STR(log.lines[1], "msg lobby 0 bob:bin bin");
    CHECK_STR(log.lines[2], "msg lobby 3 ann:three");

    /* Reads are the store's, with its semantics. */
    struct read_seen rs = {0};
    CHECK_EQ(hub_engine_read(e, S("lobby"), HUB_HISTORY_LATEST, 0, 2, on_read, &rs), 0);
    CHECK_EQ(rs.calls, 1);
    CHECK_EQ(rs.last, 3);
    CHECK_EQ(rs.first, 1);
    CHECK_EQ(rs.n, 2);
    CHECK_EQ(rs.offs[0], 2);
    CHECK_EQ(rs.complete, 0);
    CHECK_EQ(hub_engine_read(e, S("lobby"), HUB_HISTORY_BEFORE, 2, 5, on_read, &rs), 0);
    CHECK_EQ(rs.n, 1);
    CHECK_EQ(rs.offs[0], 1);
    CHECK_EQ(rs.complete, 1);

    hub_engine_unsubscribe(e, S("lobby"));
    hub_engine_unsubscribe(e, S("nowhere"));
    CHECK_EQ(pub(e, "lobby", "ann", "four", "", 0, &a), 0);
    CHECK_EQ(log.n, 3);

    /* Refused calls never call back. */
    int before = a.n;
    CHECK_EQ(pub(e, "", "ann", "x", "", 0, &a), HUB_EINVAL);
    char big[300];
    memset(big, 'r', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    CHECK_EQ(pub(e, big, "ann", "x", "", 0, &a), HUB_EINVAL);
    CHECK_EQ(hub_engine_subscribe(e, S("")), HUB_EINVAL);
    CHECK_EQ(hub_engine_read(e, S("lobby"), 7, 0, 1, on_read, &rs), HUB_EINVAL);
    CHECK_EQ(a.n, before);

    struct hub_engine_stats st;
    hub_engine_stats(e, &st);
    CHECK_STR(st.kind, "memory");
    CHECK_EQ(st.state, HUB_ENGINE_READY);
    CHECK_EQ(st.published, 4);
    CHECK_EQ(st.duplicates, 1);
    CHECK_EQ(st.received, 3);

    int done = 0;
    hub_engine_close(e, closed, &done);
    CHECK_EQ(done, 1);
    CHECK_EQ(pub(e, "lobby", "ann", "late", "", 0, &a), HUB_ECLOSED);
    hub_engine_free(e);
    hub_history_close(h, closed, &done);
    hub_history_free(h);
}

static void test_presence(void)
{
    struct hub_history *h;
    struct hub_history_config cfg;
    hub_history_config_default(&cfg);
    CHECK_EQ(hub_history_open_memory(&h, &cfg), 0);
    struct log log = {0};
    struct hub_engine *e;
    CHECK_EQ(hub_engine_open_memory(&e, h, &events, &log), 0);
    CHECK_EQ(hub_engine_subscribe(e, S("a")), 0);
    CHECK_EQ(hub_engine_join(e, S("a"), S("c-1"), S("Ann")), 0);
    CHECK_EQ(hub_engine_join(e, S("a"), S("c-2"), S("Bob")), 0);
    CHECK_EQ(hub_engine_join(e, S("a"), S("c-2"), S("Bobby")), 0); /* silent nick refresh */
    CHECK_EQ(hub_engine_join(e, S("b"), S("c-2"), S("Bob")), 0);   /* b not subscribed */
    CHECK_EQ(hub_engine_join(e, S("b"), S("c-3"), S("Cy")), 0);
    CHECK_EQ(hub_engine_join(e, S("b"), S("c-4"), S("Di")), 0);
    CHECK_EQ(log.n, 2);
    CHECK_STR(log.lines[0], "join a c-1 Ann< 1 1");
    CHECK_STR(log.lines[1], "join a c-2 Bob< 2 1");

    struct members_seen ms = {0};
    CHECK_EQ(hub_engine_members(e, S("a"), 10, on_members, &ms), 0);
    CHECK_EQ(ms.calls, 1);
    CHECK_EQ(ms.total, 2);
    CHECK_EQ(ms.n, 2);
    CHECK(strcmp(ms.nicks[0], "c-2=Bobby") == 0 || strcmp(ms.nicks[1], "c-2=Bobby") == 0);
    CHECK_EQ(hub_engine_members(e, S("b"), 2, on_members, &ms), 0);
    CHECK_EQ(ms.total, 3);
    CHECK_EQ(ms.n, 0); /* over the limit: the count only */
    CHECK_EQ(hub_engine_members(e, S("none"), 2, on_members, &ms), 0);
    CHECK_EQ(ms.total, 0);

    struct rooms_seen rs = {0};
    CHECK_EQ(hub_engine_rooms(e, 10, on_rooms, &rs), 0);
    CHECK_EQ(rs.n, 2);
    CHECK_STR(rs.names[0], "b");
    CHECK_EQ(rs.members[0], 3);
    CHECK_STR(rs.names[1], "a");
    CHECK_EQ(hub_engine_rooms(e, 1, on_rooms, &rs), 0);
    CHECK_EQ(rs.n, 1);

    /* A nick longer than the one joined with is kept apart, a shorter one
     * inline again; either way the members list shows the current one. */
    CHECK_EQ(hub_engine_renick(e, S("b"), S("c-3"), S("Cy"), S("Cyrano")), 0);
    struct members_seen mb = {0};
    CHECK_EQ(hub_engine_members(e, S("b"), 10, on_members, &mb), 0);
    int found = 0;
    for (size_t i = 0; i < mb.n; i++)
        found += strcmp(mb.nicks[i], "c-3=Cyrano") == 0;
    CHECK_EQ(found, 1);
    CHECK_EQ(hub_engine_renick(e, S("b"), S("c-3"), S("Cyrano"), S("C")), 0);
    mb = (struct members_seen){0};
    CHECK_EQ(hub_engine_members(e, S("b"), 10, on_members, &mb), 0);
    found = 0;
    for (size_t i = 0; i < mb.n; i++)
        found += strcmp(mb.nicks[i], "c-3=C") == 0;
    CHECK_EQ(found, 1);

    CHECK_EQ(hub_engine_renick(e, S("a"), S("c-1"), S("Ann"), S("Anna")), 0);
    CHECK_EQ(hub_engine_leave(e, S("a"), S("c-2")), 0);
    CHECK_EQ(hub_engine_leave(e, S("a"), S("c-2")), 0); /* not a member any more: silent */
    CHECK_EQ(hub_engine_leave(e, S("a"), S("c-1")), 0);
    CHECK_EQ(log.n, 5);
    CHECK_STR(log.lines[2], "nick a c-1 Anna<Ann 2 1");
    CHECK_STR(log.lines[3], "leave a c-2 Bobby< 1 1");
    CHECK_STR(log.lines[4], "leave a c-1 Anna< 0 1");
    CHECK_EQ(hub_engine_rooms(e, 10, on_rooms, &rs), 0);
    CHECK_EQ(rs.n, 1); /* a is gone */
    CHECK_EQ(hub_engine_join(e, S("a"), S(""), S("x")), HUB_EINVAL);
    CHECK_EQ(hub_engine_join(e, S("a"), S("c-9"), S("")), HUB_EINVAL);

    /* Typing reaches subscribed rooms only. */
    CHECK_EQ(hub_engine_typing(e, S("a"), S("c-1"), S("Anna")), 0);
    CHECK_EQ(hub_engine_typing(e, S("b"), S("c-3"), S("Cy")), 0);
    CHECK_EQ(log.n, 6);
    CHECK_STR(log.lines[5], "typing a c-1 Anna");
    int done = 0;
    hub_engine_close(e, closed, &done);
    hub_engine_free(e); /* frees members still in b */
    hub_history_close(h, closed, &done);
    hub_history_free(h);
}

static void test_nicks_and_invites(void)
{
    struct hub_history *h;
    struct hub_history_config cfg;
    hub_history_config_default(&cfg);
    CHECK_EQ(hub_history_open_memory(&h, &cfg), 0);
    struct log log = {0};
    struct hub_engine *e;
    CHECK_EQ(hub_engine_open_memory(&e, h, &events, &log), 0);
    int err = 1;
    CHECK_EQ(hub_engine_claim_nick(e, S("Ann"), S("c-1"), on_done, &err), 0);
    CHECK_EQ(err, 0);
    err = 1;
    CHECK_EQ(hub_engine_claim_nick(e, S("aNN"), S("c-2"), on_done, &err), 0);
    CHECK_EQ(err, HUB_EEXIST);
    CHECK_EQ(hub_engine_claim_nick(e, S("ANN"), S("c-1"), on_done, &err), 0);
    CHECK_EQ(err, 0);                               /* the holder may claim it again */
    hub_engine_release_nick(e, S("ann"), S("c-2")); /* not the holder: no effect */
    CHECK_EQ(hub_engine_claim_nick(e, S("ann"), S("c-2"), on_done, &err), 0);
    CHECK_EQ(err, HUB_EEXIST);

    CHECK_EQ(hub_engine_invite(e, S("ann"), S("@ann,bob"), S("bob"), on_done, &err), 0);
    CHECK_EQ(err, 0);
    CHECK_EQ(log.n, 1);
    CHECK_STR(log.lines[0], "invite c-1 ANN @ann,bob bob");
    CHECK_EQ(hub_engine_invite(e, S("zed"), S("@bob,zed"), S("bob"), on_done, &err), 0);
    CHECK_EQ(err, HUB_ENOENT);

    hub_engine_release_nick(e, S("Ann"), S("c-1"));
    CHECK_EQ(hub_engine_claim_nick(e, S("ann"), S("c-2"), on_done, &err), 0);
    CHECK_EQ(err, 0);
    CHECK_EQ(hub_engine_claim_nick(e, S(""), S("c-2"), on_done, &err), HUB_EINVAL);
    int done = 0;
    hub_engine_close(e, closed, &done);
    hub_engine_free(e);
    hub_history_close(h, closed, &done);
    hub_history_free(h);
}

/* The SQLite store completes later, from its writer thread: the engine's
 * on_msg and acks must still come in request order, and close must wait. */
struct sq {
    struct log log;
    struct acks acks;
    int closed;
};

/* ---- issue 13 and 15: amendments, control messages, refusals ---- */

static struct log *xlog; /* where the new upcalls write (the same log) */

static void on_msg_x(void *data, const struct hub_engine_msg *m)
{
    char mentions[64];
    snprintf(mentions, sizeof(mentions), "%.*s", (int)m->mentions.len, m->mentions.base);
    for (char *p = mentions; *p; p++)
        if (*p == '\n')
            *p = ',';
    logf_(data, "msg %llu %.*s author=%.*s mentions=%s reply=%llu", (unsigned long long)m->offset,
          (int)m->text.len, m->text.base, (int)m->author.len, m->author.base, mentions,
          (unsigned long long)m->reply_to);
}

static void on_amend_x(void *data, const struct hub_engine_amended *a)
{
    logf_(data, "amend %.*s %llu k%d text=%.*s ets=%lld emoji=%.*s count=%u who=%.*s nick=%.*s",
          (int)a->room.len, a->room.base, (unsigned long long)a->offset, a->kind, (int)a->text.len,
          a->text.base, (long long)a->edited_ts, (int)a->emoji.len, a->emoji.base, a->count,
          (int)a->who.len, a->who.base, (int)a->nick.len, a->nick.base);
}

static void on_control_x(void *data, const struct hub_engine_control *c)
{
    logf_(data, "control k%d %.*s room=%.*s text=%.*s by=%.*s until=%lld", c->kind,
          (int)c->target.len, c->target.base, (int)c->room.len, c->room.base, (int)c->text.len,
          c->text.base, (int)c->by.len, c->by.base, (long long)c->until_ms);
}

static const struct hub_engine_events events_x = {
    .on_msg = on_msg_x,
    .on_amend = on_amend_x,
    .on_control = on_control_x,
};

struct amend_seen {
    int calls, err, changed;
    uint32_t count;
    int log_at; /* log lines when the completion ran */
};

static void on_amend_done(void *data, int err, const struct hub_history_amended *r)
{
    struct amend_seen *s = data;
    s->calls++;
    s->err = err;
    s->changed = err == 0 ? r->changed : -1;
    s->count = err == 0 ? r->count : 0;
    s->log_at = xlog->n;
}

static struct amend_seen amend_x(struct hub_engine *e, const char *room, int kind, uint64_t off,
                                 const char *who, const char *text, const char *emoji)
{
    struct amend_seen s = {0};
    struct hub_history_amend a = {.room = S(room),
                                  .offset = off,
                                  .kind = kind,
                                  .who = S(who),
                                  .text = S(text),
                                  .emoji = S(emoji),
                                  .ts = 2000};
    CHECK_EQ(hub_engine_amend(e, &a, S("nick"), on_amend_done, &s), 0);
    CHECK_EQ(s.calls, 1);
    return s;
}

struct search_seen {
    int calls, err, complete;
    size_t n;
    uint64_t offs[8];
};

static void on_search_done(void *data, int err, const struct hub_history_msg *m, size_t n,
                           int complete)
{
    struct search_seen *s = data;
    s->calls++;
    s->err = err;
    s->n = n;
    s->complete = complete;
    for (size_t i = 0; i < n && i < 8; i++)
        s->offs[i] = m[i].offset;
}

static void test_msgops(void)
{
    struct hub_history *h;
    struct hub_history_config cfg;
    hub_history_config_default(&cfg);
    CHECK_EQ(hub_history_open_memory(&h, &cfg), 0);
    struct log log = {0};
    xlog = &log;
    struct hub_engine *e;
    CHECK_EQ(hub_engine_open_memory(&e, h, &events_x, &log), 0);
    CHECK_EQ(hub_engine_subscribe(e, S("lobby")), 0);

    /* publish carries author, mentions and reply_to to on_msg. */
    struct acks a = {0};
    struct hub_engine_pub p = {.room = S("lobby"),
                               .from = S("ann"),
                               .text = S("hello @bob"),
                               .client = S("c-1"),
                               .ts = 1000,
                               .author = S("u:ann"),
                               .actor = S("u:ann"),
                               .mentions = S("bob\n")};
    CHECK_EQ(hub_engine_publish(e, &p, on_ack, &a), 0);
    p.text = S("re");
    p.mentions = S("");
    p.reply_to = 1;
    CHECK_EQ(hub_engine_publish(e, &p, on_ack, &a), 0);
    CHECK_EQ(a.n, 2);
    CHECK_STR(log.lines[0], "msg 1 hello @bob author=u:ann mentions=bob, reply=0");
    CHECK_STR(log.lines[1], "msg 2 re author=u:ann mentions= reply=1");
    /* A bad reply_to and a muted actor are refused through the callback. */
    p.reply_to = 9;
    CHECK_EQ(hub_engine_publish(e, &p, on_ack, &a), 0);
    CHECK_EQ(a.err[2], HUB_EINVAL);
    p.reply_to = 0;
    int rc = -1;
    struct hub_history_restrict mute = {.kind = HUB_RESTRICT_MUTE,
                                        .room = S("lobby"),
                                        .actor = S("u:ann"),
                                        .until_ms = INT64_MAX,
                                        .by = S("mod")};
    CHECK_EQ(hub_engine_restrict(e, &mute, on_done, &rc), 0);
    CHECK_EQ(rc, 0);
    CHECK_EQ(hub_engine_publish(e, &p, on_ack, &a), 0);
    CHECK_EQ(a.err[3], HUB_EPERM);
    CHECK_EQ(log.n, 2);
    mute.until_ms = 0;
    CHECK_EQ(hub_engine_restrict(e, &mute, on_done, &rc), 0);
    /* Refused before the store: bad mentions, long keys. */
    p.mentions = S("bob");
    CHECK_EQ(hub_engine_publish(e, &p, on_ack, &a), HUB_EINVAL);
    p.mentions = S("a\n\n");
    CHECK_EQ(hub_engine_publish(e, &p, on_ack, &a), HUB_EINVAL);
    p.mentions = S("");
    char bigkey[600];
    memset(bigkey, 'k', sizeof(bigkey) - 1);
    bigkey[sizeof(bigkey) - 1] = '\0';
    p.author = S(bigkey);
    CHECK_EQ(hub_engine_publish(e, &p, on_ack, &a), HUB_EINVAL);
    CHECK_EQ(a.n, 4);

    /* on_amend follows the completion, only when something changed. */
    struct amend_seen s = amend_x(e, "lobby", HUB_AMEND_EDIT, 1, "u:ann", "hello @bobby", "");
    CHECK_EQ(s.err, 0);
    CHECK_EQ(s.log_at, 2); /* completion first */
    CHECK_EQ(log.n, 3);
    CHECK_STR(log.lines[2],
              "amend lobby 1 k1 text=hello @bobby ets=2000 emoji= count=0 who=u:ann nick=nick");
    s = amend_x(e, "lobby", HUB_AMEND_EDIT, 1, "u:bob", "mine", "");
    CHECK_EQ(s.err, HUB_EPERM);
    s = amend_x(e, "lobby", HUB_AMEND_REACT, 1, "u:bob", "", "ok");
    CHECK_EQ(s.count, 1);
    CHECK_STR(log.lines[3], "amend lobby 1 k3 text= ets=0 emoji=ok count=1 who=u:bob nick=nick");
    s = amend_x(e, "lobby", HUB_AMEND_REACT, 1, "u:bob", "", "ok");
    CHECK_EQ(s.changed, 0);
    CHECK_EQ(log.n, 4); /* nothing changed: no on_amend */
    s = amend_x(e, "lobby", HUB_AMEND_UNREACT, 1, "u:bob", "", "ok");
    CHECK_STR(log.lines[4], "amend lobby 1 k4 text= ets=0 emoji=ok count=0 who=u:bob nick=nick");
    s = amend_x(e, "lobby", HUB_AMEND_DELETE, 2, "u:ann", "", "");
    CHECK_STR(log.lines[5], "amend lobby 2 k2 text= ets=0 emoji= count=0 who=u:ann nick=nick");
    /* Refused in engine.c: the callback never fires. */
    struct amend_seen never = {0};
    struct hub_history_amend bad = {.room = S("lobby"), .offset = 1, .kind = 9, .who = S("u:a")};
    CHECK_EQ(hub_engine_amend(e, &bad, S("n"), on_amend_done, &never), HUB_EINVAL);
    bad.kind = HUB_AMEND_REACT;
    bad.emoji = S("");
    CHECK_EQ(hub_engine_amend(e, &bad, S("n"), on_amend_done, &never), HUB_EINVAL);
    bad.emoji = S("0123456789abcdef0123456789abcdef!");
    CHECK_EQ(hub_engine_amend(e, &bad, S("n"), on_amend_done, &never), HUB_EINVAL);
    bad.kind = HUB_AMEND_EDIT;
    bad.text = S("");
    CHECK_EQ(hub_engine_amend(e, &bad, S("n"), on_amend_done, &never), HUB_EINVAL);
    CHECK_EQ(never.calls, 0);
    /* An unsubscribed room's amendments complete without on_amend. */
    CHECK_EQ(pub(e, "quiet", "ann", "psst", "", 0, &a), 0);
    s = amend_x(e, "quiet", HUB_AMEND_REACT, 1, "u:bob", "", "ok");
    CHECK_EQ(s.err, 0);
    CHECK_EQ(log.n, 6);

    /* Search, topic and query forward to the store. */
    struct search_seen ss = {0};
    CHECK_EQ(hub_engine_search(e, S("lobby"), S("hel"), 0, 10, on_search_done, &ss), 0);
    CHECK_EQ(ss.calls, 1);
    CHECK_EQ(ss.n, 1);
    CHECK_EQ(ss.offs[0], 1);
    CHECK_EQ(hub_engine_search(e, S("lobby"), S(""), 0, 10, on_search_done, &ss), HUB_EINVAL);
    CHECK_EQ(hub_engine_set_topic(e, S("lobby"), S("Topic"), on_done, &rc), 0);
    CHECK_EQ(rc, 0);

    /* Control messages fire at once, in call order. */
    struct hub_engine_control c = {.kind = HUB_CONTROL_KICK,
                                   .target = S("bob"),
                                   .room = S("lobby"),
                                   .text = S("spam"),
                                   .by = S("mod")};
    CHECK_EQ(hub_engine_control(e, &c), 0);
    c.kind = HUB_CONTROL_BAN;
    c.room = S("");
    c.until_ms = INT64_MAX;
    CHECK_EQ(hub_engine_control(e, &c), 0);
    CHECK_EQ(log.n, 8);
    CHECK_STR(log.lines[6], "control k1 bob room=lobby text=spam by=mod until=0");
    CHECK_STR(log.lines[7], "control k2 bob room= text=spam by=mod until=9223372036854775807");
    c.kind = HUB_CONTROL_KICK; /* a kick needs a room */
    CHECK_EQ(hub_engine_control(e, &c), HUB_EINVAL);
    c.kind = 77;
    CHECK_EQ(hub_engine_control(e, &c), HUB_EINVAL);
    CHECK_EQ(log.n, 8);

    int done = 0;
    hub_engine_close(e, closed, &done);
    CHECK_EQ(done, 1);
    CHECK_EQ(hub_engine_control(e, &c), HUB_ECLOSED);
    CHECK_EQ(hub_engine_search(e, S("lobby"), S("x"), 0, 1, on_search_done, &ss), HUB_ECLOSED);
    hub_engine_free(e);
    hub_history_close(h, closed, &done);
    hub_history_free(h);
}

static void test_sqlite_ordering(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    char dir[512];
    CHECK_EQ(tmp_make_dir(&loop, "engine-mem-", dir, sizeof(dir)), 0);
    struct hub_history *h;
    struct hub_history_config cfg;
    hub_history_config_default(&cfg);
    char err[256];
    CHECK_EQ(hub_history_open_sqlite(&h, &loop, dir, &cfg, err, sizeof(err)), 0);
    struct sq s;
    memset(&s, 0, sizeof(s));
    struct hub_engine *e;
    CHECK_EQ(hub_engine_open_memory(&e, h, &events, &s.log), 0);
    CHECK_EQ(hub_engine_subscribe(e, S("r")), 0);
    char text[16];
    for (int i = 0; i < 20; i++) {
        snprintf(text, sizeof(text), "m%d", i);
        CHECK_EQ(pub(e, "r", "ann", text, "", i == 7, &s.acks), 0);
    }
    CHECK_EQ(s.acks.n, 0); /* nothing completes inside the calls */
    hub_engine_close(e, closed, &s.closed);
    CHECK_EQ(s.closed, 0); /* twenty requests still in flight */
    while (s.closed == 0 && uv_run(&loop, UV_RUN_ONCE))
        ;
    CHECK_EQ(s.closed, 1);
    CHECK_EQ(s.acks.n, 20);
    CHECK_EQ(s.log.n, 20);
    uint64_t want = 1;
    for (int i = 0; i < 20; i++) {
        if (i == 7) {
            CHECK_EQ(s.acks.off[i], 0);
        } else {
            CHECK_EQ(s.acks.off[i], want);
            char line[64];
            snprintf(line, sizeof(line), "msg r %llu ann:m%d", (unsigned long long)want, i);
            CHECK_STR(s.log.lines[i], line);
            want++;
        }
    }
    CHECK_STR(s.log.lines[7], "msg r 0 ann:m7 bin");
    hub_engine_free(e);
    int hc = 0;
    hub_history_close(h, closed, &hc);
    while (hc == 0 && uv_run(&loop, UV_RUN_ONCE))
        ;
    hub_history_free(h);
    tmp_remove_tree(&loop, dir);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ(uv_loop_close(&loop), 0);
}

static void test_shard_hash(void)
{
    /* The jump hash is stable and moves few rooms when a shard is added. */
    extern uint32_t engine_shard_of(struct hub_iov room, uint32_t n);
    int moved = 0, seen[4] = {0};
    char name[32];
    for (int i = 0; i < 4000; i++) {
        snprintf(name, sizeof(name), "room-%d", i);
        uint32_t a = engine_shard_of(S(name), 3), b = engine_shard_of(S(name), 4);
        CHECK(a < 3 && b < 4);
        CHECK_EQ(engine_shard_of(S(name), 1), 0);
        seen[b]++;
        if (a != b) {
            moved++;
            CHECK_EQ(b, 3); /* a room only ever moves to the new shard */
        }
    }
    /* About a quarter move; every shard gets some. */
    CHECK(moved > 600 && moved < 1400);
    for (int i = 0; i < 4; i++)
        CHECK(seen[i] > 600);
}

int main(void)
{
    test_publish_and_subscribe();
    test_presence();
    test_nicks_and_invites();
    test_msgops();
    test_sqlite_ordering();
    test_shard_hash();
    return CHECK_DONE();
}
