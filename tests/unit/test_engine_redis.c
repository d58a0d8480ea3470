/*
 * test_engine_redis.c: the Redis engine on a real loop against real
 * redis-servers this test starts (skipped, exit 77, without redis-server).
 *
 * Several engines in one process play the nodes of a cluster: they share
 * one loop and one redis-server, each with its own node id and upcall log.
 * Faults are injected from outside the engine: a blocking hiredis client
 * writes a message without publishing it (a lost PUBLISH), FLUSHALL loses the
 * data, SIGKILL/SIGSTOP act on the server by its PID. Nothing here asserts a
 * duration as performance; waits have generous deadlines and only bound how
 * long a failure takes to show. A few figures (Redis CPU per message, round
 * trips) are printed for the record.
 */
#include "hub/engine.h"

#include "../engine/redis_harness.h"
#include "check.h"

#include <stdarg.h>
#include <uv.h>

#define MAXLOG 4096

static uv_loop_t loop;

static struct hub_iov S(const char *s) {
    struct hub_iov v = {s, strlen(s)};
    return v;
}

struct node {
    const char *name;
    struct hub_engine *e;
    char msgs[MAXLOG][48]; /* "offset text" of each on_msg */
    uint64_t offs[MAXLOG];
    int nmsg;
    char events[256][96]; /* presence, typing, invites, epochs, amendments, controls */
    int nev;
    int states;
    char meta[128]; /* "author|mentions|reply_to" of the last on_msg */
};

static void ev_log(struct node *n, const char *fmt, ...) HUB_PRINTF_LIKE(2, 3);
static void ev_log(struct node *n, const char *fmt, ...)
{
    if (n->nev >= 256)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(n->events[n->nev++], sizeof(n->events[0]), fmt, ap);
    va_end(ap);
}

static void on_msg(void *data, const struct hub_engine_msg *m)
{
    struct node *n = data;
    if (n->nmsg >= MAXLOG)
        return;
    snprintf(n->meta, sizeof(n->meta), "%.*s|%.*s|%llu", (int)m->author.len, m->author.base,
             (int)m->mentions.len, m->mentions.base, (unsigned long long)m->reply_to);
    n->offs[n->nmsg] = m->offset;
    snprintf(n->msgs[n->nmsg++], sizeof(n->msgs[0]), "%.*s %llu %.*s", (int)m->room.len,
             m->room.base, (unsigned long long)m->offset, (int)m->text.len, m->text.base);
}

static void on_presence(void *data, const struct hub_engine_presence *p)
{
    static const char *kinds[] = {"join", "leave", "nick"};
    ev_log(data, "%s %.*s %.*s %.*s %llu %d", kinds[p->kind], (int)p->room.len, p->room.base,
           (int)p->client.len, p->client.base, (int)p->nick.len, p->nick.base,
           (unsigned long long)p->members, p->local);
}

static void on_typing(void *data, struct hub_iov room, struct hub_iov client, struct hub_iov nick)
{
    ev_log(data, "typing %.*s %.*s %.*s", (int)room.len, room.base, (int)client.len, client.base,
           (int)nick.len, nick.base);
}

static void on_epoch(void *data, struct hub_iov room, struct hub_iov epoch)
{
    ev_log(data, "epoch %.*s", (int)room.len, room.base);
    (void)epoch;
}

static void on_invite(void *data, struct hub_iov client, struct hub_iov nick, struct hub_iov room,
                      struct hub_iov from)
{
    ev_log(data, "invite %.*s %.*s %.*s %.*s", (int)client.len, client.base, (int)nick.len,
           nick.base, (int)room.len, room.base, (int)from.len, from.base);
}

static void on_state(void *data, int ready, const char *reason)
{
    struct node *n = data;
    n->states++;
    (void)ready, (void)reason;
}

static void on_amend(void *data, const struct hub_engine_amended *a)
{
    struct node *n = data;
    /* The message itself was delivered before (exactly once by offset). */
    int seen = 0;
    for (int i = 0; i < n->nmsg; i++)
        seen |= n->offs[i] == a->offset;
    ev_log(n, "amend %.*s %llu %d %.*s%.*s %u %.*s%s", (int)a->room.len, a->room.base,
           (unsigned long long)a->offset, a->kind, (int)a->text.len, a->text.base,
           (int)a->emoji.len, a->emoji.base, a->count, (int)a->nick.len, a->nick.base,
           seen ? "" : " unseen");
}

static void on_control(void *data, const struct hub_engine_control *c)
{
    ev_log(data, "control %d %.*s %.*s %.*s %.*s %lld", c->kind, (int)c->target.len, c->target.base,
           (int)c->room.len, c->room.base, (int)c->text.len, c->text.base, (int)c->by.len,
           c->by.base, (long long)c->until_ms);
}

static const struct hub_engine_events events = {.on_amend = on_amend,
                                                .on_control = on_control,
                                                .on_msg = on_msg,
                                                .on_presence = on_presence,
                                                .on_typing = on_typing,
                                                .on_epoch = on_epoch,
                                                .on_invite = on_invite,
                                                .on_state = on_state};

static int has_event(const struct node *n, const char *line)
{
    for (int i = 0; i < n->nev; i++)
        if (strcmp(n->events[i], line) == 0)
            return 1;
    return 0;
}

static void wake_cb(uv_timer_t *t)
{
    (void)t;
}

/* Runs the loop until cond(arg) or the deadline. Returns cond's last value. */
static int run_until(int (*cond)(void *), void *arg, int ms)
{
    uint64_t end = uv_hrtime() + (uint64_t)ms * 1000000u;
    uv_timer_t wake;
    uv_timer_init(&loop, &wake);
    int ok;
    while (!(ok = cond(arg)) && uv_hrtime() < end) {
        uv_update_time(&loop);
        uv_timer_start(&wake, wake_cb, 20, 0);
        uv_run(&loop, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *)&wake, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    return ok;
}

static int ready_cond(void *arg)
{
    struct node **ns = arg;
    for (int i = 0; ns[i]; i++)
        if (!hub_engine_ready(ns[i]->e))
            return 0;
    return 1;
}

static int not_ready_cond(void *arg)
{
    return !hub_engine_ready(((struct node *)arg)->e);
}

static uint32_t history_max; /* 0: the default */

static int open_node(struct node *n, const char *name, const char *const *urls, size_t nurls,
                     uint32_t lease_ms)
{
    struct hub_engine_config cfg;
    hub_engine_config_default(&cfg);
    if (history_max)
        cfg.history_max = history_max;
    cfg.urls = urls;
    cfg.nurls = nurls;
    cfg.node_id = name;
    cfg.lease_ms = lease_ms;
    cfg.timeout_ms = 800;
    cfg.backoff_min_ms = 20;
    cfg.backoff_max_ms = 200;
    cfg.max_inflight = 64;
    memset(n, 0, sizeof(*n));
    n->name = name;
    char err[256];
    int rc = hub_engine_open_redis(&n->e, &loop, &cfg, &events, n, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "open %s: %s\n", name, err);
    return rc;
}

static void closed_cb(void *data)
{
    (*(int *)data)++;
}

static int int_is_one(void *arg)
{
    return *(int *)arg >= 1;
}

static void close_node(struct node *n)
{
    int done = 0;
    hub_engine_close(n->e, closed_cb, &done);
    CHECK(run_until(int_is_one, &done, 3000));
    hub_engine_free(n->e);
    n->e = NULL;
}

/* ---- completions ---------------------------------------------------- */

struct acks {
    int n, errs, eagain, dups;
    uint64_t off[MAXLOG];
};

static void on_ack(void *data, int err, uint64_t offset, int64_t ts, int duplicate)
{
    struct acks *a = data;
    (void)ts;
    if (err == HUB_EAGAIN)
        a->eagain++;
    else if (err != 0)
        a->errs++;
    if (duplicate)
        a->dups++;
    if (a->n < MAXLOG)
        a->off[a->n] = err ? 0 : offset;
    a->n++;
}

static int pub(struct node *n, const char *room, const char *text, const char *cmid, struct acks *a)
{
    struct hub_engine_pub p = {.room = S(room),
                               .from = S("ann"),
                               .text = S(text),
                               .cmid = S(cmid),
                               .client = S(n->name),
                               .ts = 1};
    return hub_engine_publish(n->e, &p, on_ack, a);
}

struct wait_n {
    int *counter;
    int want;
};

static int counter_reached(void *arg)
{
    struct wait_n *w = arg;
    return *w->counter >= w->want;
}

static int wait_count(int *counter, int want, int ms)
{
    struct wait_n w = {counter, want};
    return run_until(counter_reached, &w, ms);
}

struct read_sync {
    int done, err;
    struct hub_history_pos pos;
    size_t n;
    uint64_t first_off;
};

static void on_read(void *data, int err, const struct hub_history_pos *pos,
                    const struct hub_history_msg *msgs, size_t n, int complete)
{
    struct read_sync *r = data;
    (void)complete;
    r->done++;
    r->err = err;
    if (err == 0) {
        r->pos = *pos;
        r->n = n;
        r->first_off = n ? msgs[0].offset : 0;
    }
}

/* Subscribes and waits until the subscription is live (a read held behind
 * it has completed). */
static void subscribe_live(struct node *n, const char *room)
{
    CHECK_EQ(hub_engine_subscribe(n->e, S(room)), 0);
    struct read_sync r = {0};
    CHECK_EQ(hub_engine_read(n->e, S(room), HUB_HISTORY_LATEST, 0, 0, on_read, &r), 0);
    CHECK(wait_count(&r.done, 1, 3000));
    CHECK_EQ(r.err, 0);
}

struct done_sync {
    int done, err;
};

static void on_done(void *data, int err)
{
    struct done_sync *d = data;
    d->done++;
    d->err = err;
}

struct event_wait {
    struct node *n;
    const char *line;
};

static int event_seen(void *arg)
{
    struct event_wait *w = arg;
    return has_event(w->n, w->line);
}

static int wait_event(struct node *n, const char *line, int ms)
{
    struct event_wait w = {n, line};
    int ok = run_until(event_seen, &w, ms);
    if (!ok)
        fprintf(stderr, "%s: no event \"%s\"\n", n->name, line);
    return ok;
}

struct members_sync {
    int done;
    uint64_t total;
    size_t n;
};

static void on_members(void *data, int err, uint64_t total, const struct hub_engine_member *m,
                       size_t n)
{
    struct members_sync *s = data;
    (void)m;
    s->done++;
    s->total = err ? 0 : total;
    s->n = n;
}

/* ---- the scenarios ---------------------------------------------------- */

static struct test_redis redis1;
static char url1[64];

/* Engines started before Redis report why they are not ready, then connect. */
static void test_start_before_redis(struct node *a, struct node *b)
{
    const char *urls[] = {url1};
    CHECK_EQ(open_node(a, "node-a", urls, 1, 900), 0);
    CHECK_EQ(open_node(b, "node-b", urls, 1, 900), 0);
    run_until(not_ready_cond, a, 300);
    CHECK(!hub_engine_ready(a->e));
    struct hub_engine_stats st;
    hub_engine_stats(a->e, &st);
    CHECK_STR(st.kind, "redis");
    CHECK_EQ(st.state, HUB_ENGINE_CONNECTING);
    CHECK(strstr(st.reason, "redis 127.0.0.1:") != NULL);
    struct acks acks = {0};
    CHECK_EQ(pub(a, "lobby", "early", "", &acks), HUB_EAGAIN);
    CHECK_EQ(acks.n, 0);
    CHECK_EQ(test_redis_start(&redis1), 0);
    struct node *both[] = {a, b, NULL};
    CHECK(run_until(ready_cond, both, 5000));
    hub_engine_stats(a->e, &st);
    CHECK_EQ(st.state, HUB_ENGINE_READY);
    CHECK_STR(st.reason, "");
    CHECK_EQ(st.shards_ready, 1);
}

static void test_one_order(struct node *a, struct node *b)
{
    subscribe_live(a, "lobby");
    subscribe_live(b, "lobby");
    /* One ack log per node: each node's acks must come in its request order. */
    struct acks *acks = calloc(2, sizeof(*acks));
    char text[32];
    for (int i = 0; i < 60; i++) {
        snprintf(text, sizeof(text), "m%d", i);
        CHECK_EQ(pub(i % 2 ? b : a, "lobby", text, "", &acks[i % 2]), 0);
    }
    CHECK(wait_count(&acks[0].n, 30, 5000));
    CHECK(wait_count(&acks[1].n, 30, 5000));
    CHECK(wait_count(&a->nmsg, 60, 5000));
    CHECK(wait_count(&b->nmsg, 60, 5000));
    CHECK_EQ(acks[0].errs + acks[0].eagain + acks[1].errs + acks[1].eagain, 0);
    CHECK_EQ(a->nmsg, 60);
    CHECK_EQ(b->nmsg, 60);
    /* Both nodes saw offsets 1..60 in order, and the same message at each. */
    for (int i = 0; i < 60 && i < a->nmsg && i < b->nmsg; i++) {
        CHECK_EQ(a->offs[i], (uint64_t)i + 1);
        CHECK_STR(a->msgs[i], b->msgs[i]);
    }
    int order_ok = 1;
    for (int k = 0; k < 2; k++)
        for (int i = 1; i < 30; i++)
            if (acks[k].off[i] <= acks[k].off[i - 1])
                order_ok = 0;
    CHECK(order_ok);
    /* The message each ack names is the one that node sent at that point. */
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < 30; i++) {
            uint64_t off = acks[k].off[i];
            char want[48];
            snprintf(want, sizeof(want), "lobby %llu m%d", (unsigned long long)off, 2 * i + k);
            if (off >= 1 && off <= 60)
                CHECK_STR(a->msgs[off - 1], want);
        }
    free(acks);

    /* History reads across nodes: B reads what A and B wrote. */
    struct read_sync r = {0};
    CHECK_EQ(hub_engine_read(b->e, S("lobby"), HUB_HISTORY_BEFORE, 11, 5, on_read, &r), 0);
    CHECK(wait_count(&r.done, 1, 3000));
    CHECK_EQ(r.pos.last, 60);
    CHECK_EQ(r.pos.first, 1);
    CHECK_EQ(r.n, 5);
    CHECK_EQ(r.first_off, 6);
    memset(&r, 0, sizeof(r));
    CHECK_EQ(hub_engine_read(a->e, S("lobby"), HUB_HISTORY_AFTER, 58, 10, on_read, &r), 0);
    CHECK(wait_count(&r.done, 1, 3000));
    CHECK_EQ(r.n, 2);
    CHECK_EQ(r.first_off, 59);
    memset(&r, 0, sizeof(r));
    CHECK_EQ(hub_engine_read(a->e, S("fresh"), HUB_HISTORY_LATEST, 0, 10, on_read, &r), 0);
    CHECK(wait_count(&r.done, 1, 3000));
    CHECK_EQ(r.pos.last, 0);
    CHECK_EQ(r.pos.first, 1);
    CHECK_EQ(strlen(r.pos.epoch), HUB_HISTORY_EPOCH_LEN);

    /* cmid dedupe across nodes: B's resend of A's message is a duplicate. */
    struct acks d = {0};
    CHECK_EQ(pub(a, "lobby", "once", "cm-1", &d), 0);
    CHECK(wait_count(&d.n, 1, 3000));
    CHECK_EQ(pub(b, "lobby", "once", "cm-1", &d), 0);
    CHECK(wait_count(&d.n, 2, 3000));
    CHECK_EQ(d.off[0], 61);
    CHECK_EQ(d.off[1], 61);
    CHECK_EQ(d.dups, 1);
    CHECK(wait_count(&b->nmsg, 61, 3000));
    run_until(int_is_one, &(int){0}, 100);
    CHECK_EQ(b->nmsg, 61); /* the duplicate was not delivered again */
}

static void test_presence_nicks(struct node *a, struct node *b)
{
    struct done_sync d = {0};
    CHECK_EQ(hub_engine_claim_nick(a->e, S("Ann"), S("a-1"), on_done, &d), 0);
    CHECK(wait_count(&d.done, 1, 3000));
    CHECK_EQ(d.err, 0);
    CHECK_EQ(hub_engine_claim_nick(b->e, S("aNN"), S("b-1"), on_done, &d), 0);
    CHECK(wait_count(&d.done, 2, 3000));
    CHECK_EQ(d.err, HUB_EEXIST);

    CHECK_EQ(hub_engine_join(a->e, S("lobby"), S("a-1"), S("Ann")), 0);
    CHECK(wait_event(b, "join lobby a-1 Ann 1 0", 3000));
    CHECK(wait_event(a, "join lobby a-1 Ann 1 1", 3000));
    CHECK_EQ(hub_engine_join(b->e, S("lobby"), S("b-1"), S("Bob")), 0);
    CHECK(wait_event(a, "join lobby b-1 Bob 2 0", 3000));
    struct members_sync ms = {0};
    CHECK_EQ(hub_engine_members(b->e, S("lobby"), 10, on_members, &ms), 0);
    CHECK(wait_count(&ms.done, 1, 3000));
    CHECK_EQ(ms.total, 2);
    CHECK_EQ(ms.n, 2);
    CHECK_EQ(hub_engine_renick(b->e, S("lobby"), S("b-1"), S("Bob"), S("Bobby")), 0);
    CHECK(wait_event(a, "nick lobby b-1 Bobby 2 0", 3000));

    CHECK_EQ(hub_engine_typing(a->e, S("lobby"), S("a-1"), S("Ann")), 0);
    CHECK(wait_event(b, "typing lobby a-1 Ann", 3000));

    /* A DM invite reaches the node of whoever holds the nick. */
    CHECK_EQ(hub_engine_invite(b->e, S("ANN"), S("@ann,bob"), S("Bob"), on_done, &d), 0);
    CHECK(wait_count(&d.done, 3, 3000));
    CHECK_EQ(d.err, 0);
    CHECK(wait_event(a, "invite a-1 Ann @ann,bob Bob", 3000));
    CHECK_EQ(hub_engine_invite(b->e, S("nobody"), S("@bob,nobody"), S("Bob"), on_done, &d), 0);
    CHECK(wait_count(&d.done, 4, 3000));
    CHECK_EQ(d.err, HUB_ENOENT);

    /* Released on one node, claimable on the other. */
    hub_engine_release_nick(a->e, S("ann"), S("a-1"));
    /* The release is fire-and-forget; a query on A's connection completes
     * after it (one connection answers in order). */
    struct members_sync fence = {0};
    CHECK_EQ(hub_engine_members(a->e, S("lobby"), 10, on_members, &fence), 0);
    CHECK(wait_count(&fence.done, 1, 3000));
    CHECK_EQ(hub_engine_claim_nick(b->e, S("ann"), S("b-1"), on_done, &d), 0);
    CHECK(wait_count(&d.done, 5, 3000));
    CHECK_EQ(d.err, 0);
    hub_engine_release_nick(b->e, S("ann"), S("b-1"));
    CHECK_EQ(hub_engine_leave(b->e, S("lobby"), S("b-1")), 0);
    CHECK(wait_event(a, "leave lobby b-1 Bobby 1 0", 3000));
}

/* A node that stops refreshing its lease vanishes from presence. */
static void test_lease_expiry(struct node *a, struct node *b)
{
    struct node c;
    const char *urls[] = {url1};
    CHECK_EQ(open_node(&c, "node-c", urls, 1, 900), 0);
    struct node *all[] = {&c, NULL};
    CHECK(run_until(ready_cond, all, 5000));
    struct done_sync d = {0};
    CHECK_EQ(hub_engine_claim_nick(c.e, S("Cy"), S("c-1"), on_done, &d), 0);
    CHECK(wait_count(&d.done, 1, 3000));
    CHECK_EQ(d.err, 0);
    CHECK_EQ(hub_engine_join(c.e, S("lobby"), S("c-1"), S("Cy")), 0);
    CHECK(wait_event(a, "join lobby c-1 Cy 2 0", 3000));
    /* Closing does not leave: to Redis, node-c just stops refreshing. */
    close_node(&c);
    uint64_t t0 = uv_hrtime();
    CHECK(wait_event(a, "leave lobby c-1 Cy 1 0", 5000));
    CHECK(wait_event(b, "leave lobby c-1 Cy 1 0", 2000));
    printf("figure: node lease 900 ms; its member left presence %.0f ms after it stopped\n",
           (double)(uv_hrtime() - t0) / 1e6);
    CHECK_EQ(hub_engine_claim_nick(b->e, S("cy"), S("b-2"), on_done, &d), 0);
    CHECK(wait_count(&d.done, 2, 3000));
    CHECK_EQ(d.err, 0); /* the dead node's nick was released */
    hub_engine_release_nick(b->e, S("cy"), S("b-2"));
    struct hub_engine_stats st[2];
    hub_engine_stats(a->e, &st[0]);
    hub_engine_stats(b->e, &st[1]);
    CHECK_EQ(st[0].swept + st[1].swept, 1);
}

/* A message stored without its PUBLISH (a lost publication) is read from
 * the stream before the next one is delivered. */
static void test_hole_fill(struct node *a, struct node *b)
{
    int before = b->nmsg;
    long long o = test_redis_int(&redis1, "HINCRBY chathub:r:lobby o 1");
    CHECK(o > 0);
    redisContext *c = test_redis_connect(&redis1);
    redisReply *rep =
        redisCommand(c, "XADD chathub:s:lobby %lld-0 t 5 f ghost x lost c %s k x", o, "");
    CHECK(rep != NULL && rep->type == REDIS_REPLY_STRING);
    freeReplyObject(rep);
    redisFree(c);
    struct acks acks = {0};
    CHECK_EQ(pub(a, "lobby", "after", "", &acks), 0);
    CHECK(wait_count(&b->nmsg, before + 2, 3000));
    CHECK_EQ(b->offs[before], (uint64_t)o);
    CHECK_EQ(b->offs[before + 1], (uint64_t)o + 1);
    char want[48];
    snprintf(want, sizeof(want), "lobby %lld lost", o);
    CHECK_STR(b->msgs[before], want);
    struct hub_engine_stats st;
    hub_engine_stats(b->e, &st);
    CHECK(st.fills >= 1);
    CHECK(st.filled >= 1);
}

/* Events of n that start with prefix. */
static int count_events(const struct node *n, const char *prefix)
{
    int k = 0;
    for (int i = 0; i < n->nev; i++)
        k += strncmp(n->events[i], prefix, strlen(prefix)) == 0;
    return k;
}

/* FLUSHALL: the room's epoch changes and every node is told. The members
 * written again are not announced as joins: nobody was told they left. */
static void test_epoch(struct node *a, struct node *b)
{
    a->nev = b->nev = 0;
    CHECK_EQ(test_redis_int(&redis1, "FLUSHALL") == -1, 1); /* status reply, not an integer */
    struct acks acks = {0};
    CHECK_EQ(pub(a, "lobby", "new world", "", &acks), 0);
    CHECK(wait_event(b, "epoch lobby", 3000));
    CHECK(wait_event(a, "epoch lobby", 3000));
    CHECK(wait_count(&acks.n, 1, 3000));
    CHECK_EQ(acks.off[0], 1);
    CHECK_STR(b->msgs[b->nmsg - 1], "lobby 1 new world");
    /* The lease refresh finds its key gone and writes the members again. */
    struct members_sync ms = {0};
    for (int i = 0; i < 40 && ms.total != 1; i++) {
        ms.done = 0;
        CHECK_EQ(hub_engine_members(b->e, S("lobby"), 10, on_members, &ms), 0);
        CHECK(wait_count(&ms.done, 1, 3000));
        if (ms.total != 1)
            run_until(int_is_one, &(int){0}, 100);
    }
    CHECK_EQ(ms.total, 1); /* a-1 again */
    CHECK_EQ(count_events(b, "join "), 0);
    CHECK_EQ(count_events(a, "join "), 0);
}

struct fail_wait {
    struct acks *a;
    int n;
};

/* SIGKILL and restart: prompt failures during the outage, then delivery. */
static void test_kill_restart(struct node *a, struct node *b)
{
    struct acks inflight = {0};
    CHECK_EQ(pub(a, "lobby", "racing", "", &inflight), 0);
    test_redis_signal(&redis1, SIGKILL);
    CHECK(run_until(not_ready_cond, a, 3000));
    CHECK(wait_count(&inflight.n, 1, 3000)); /* acked or failed, never hanging */
    struct acks acks = {0};
    uint64_t t0 = uv_hrtime();
    int rc = pub(a, "lobby", "during", "cm-out", &acks);
    CHECK_EQ(rc, HUB_EAGAIN);
    printf("figure: publish during the outage refused in %.3f ms\n",
           (double)(uv_hrtime() - t0) / 1e6);
    CHECK_EQ(acks.n, 0);
    struct hub_engine_stats st;
    hub_engine_stats(a->e, &st);
    CHECK(strstr(st.reason, "redis 127.0.0.1") != NULL);
    CHECK(st.dropped >= 1);

    a->nev = b->nev = 0;
    CHECK_EQ(test_redis_start(&redis1), 0); /* empty: the data is gone */
    struct node *both[] = {a, b, NULL};
    t0 = uv_hrtime();
    CHECK(run_until(ready_cond, both, 5000));
    printf("figure: ready again %.0f ms after redis-server answered\n",
           (double)(uv_hrtime() - t0) / 1e6);
    /* Every subscribed room reads its position after the reconnect: the new
     * epoch is seen without waiting for a message, and the members written
     * again are not announced as joins. */
    CHECK(wait_event(a, "epoch lobby", 3000));
    CHECK(wait_event(b, "epoch lobby", 3000));
    run_until(int_is_one, &(int){0}, 300);
    CHECK_EQ(count_events(a, "join "), 0);
    CHECK_EQ(count_events(b, "join "), 0);
    /* Resubscribed: a publish from A reaches B (new epoch: the data is gone). */
    int before = b->nmsg;
    struct read_sync r = {0};
    CHECK_EQ(hub_engine_read(b->e, S("lobby"), HUB_HISTORY_LATEST, 0, 0, on_read, &r), 0);
    CHECK(wait_count(&r.done, 1, 3000));
    CHECK_EQ(pub(a, "lobby", "back", "cm-out", &acks), 0);
    CHECK(wait_count(&b->nmsg, before + 1, 3000));
    CHECK_STR(b->msgs[b->nmsg - 1], "lobby 1 back");
    hub_engine_stats(a->e, &st);
    CHECK(st.reconnects >= 2); /* both connections */
}

/* SIGSTOP: a stalled server. The queue is bounded and nothing hangs. */
static void test_stall(struct node *a, struct node *b)
{
    (void)b;
    test_redis_signal(&redis1, SIGSTOP);
    struct acks acks = {0};
    int refused = 0, queued = 0;
    char text[16];
    for (int i = 0; i < 100; i++) {
        snprintf(text, sizeof(text), "s%d", i);
        if (pub(a, "lobby", text, "", &acks) == HUB_EAGAIN)
            refused++;
        else
            queued++;
    }
    CHECK_EQ(queued, 64); /* max_inflight */
    CHECK_EQ(refused, 36);
    /* The watchdog (timeout 800 ms) fails what is in flight. */
    CHECK(wait_count(&acks.n, queued, 4000));
    CHECK_EQ(acks.eagain, queued);
    test_redis_signal(&redis1, SIGCONT);
    struct node *both[] = {a, b, NULL};
    CHECK(run_until(ready_cond, both, 5000));
}

/* Redis CPU per published message with two subscribed nodes. */
static void figure_cpu(struct node *a, struct node *b)
{
    const int N = 20000;
    struct acks *acks = calloc(1, sizeof(*acks));
    int before_b = b->nmsg;
    double cpu0 = test_redis_cpu_us(&redis1);
    uint64_t t0 = uv_hrtime();
    int sent = 0;
    while (sent < N) {
        /* Keep at most 60 in flight (max_inflight is 64 in this test). */
        while (sent < N && sent - acks->n < 60) {
            if (pub(a, "bench", "0123456789012345678901234567890123456789012345678901234567890123",
                    "", acks) != 0)
                break;
            sent++;
        }
        wait_count(&acks->n, sent - 30 > acks->n ? sent - 30 : acks->n + 1, 2000);
    }
    wait_count(&acks->n, N, 10000);
    double secs = (double)(uv_hrtime() - t0) / 1e9;
    double cpu1 = test_redis_cpu_us(&redis1);
    struct hub_engine_stats st;
    hub_engine_stats(a->e, &st);
    CHECK_EQ(acks->n, N);
    CHECK_EQ(acks->errs + acks->eagain, 0);
    printf("figure: %d publishes (64 B) from one node, 2 nodes subscribed: %.0f msg/s, "
           "Redis CPU %.1f us/message, RTT avg %llu us, max %llu us\n",
           N, N / secs, (cpu1 - cpu0) / N, (unsigned long long)st.rtt_us,
           (unsigned long long)st.rtt_max_us);
    (void)before_b;
    free(acks);
}

/* ---- issue 13 and 15: replies, mentions, amendments, search, bans ---- */

struct pub_sync {
    int done, err;
    uint64_t off;
};

static void on_pub(void *data, int err, uint64_t offset, int64_t ts, int duplicate)
{
    struct pub_sync *p = data;
    (void)ts, (void)duplicate;
    p->done++;
    p->err = err;
    p->off = err ? 0 : offset;
}

/* Publishes and waits; returns the completion's error (or the call's). */
static int pub_ex(struct node *n, const char *room, const char *text, const char *author,
                  const char *actor, const char *mentions, uint64_t reply_to, int64_t ts,
                  uint64_t *off)
{
    struct hub_engine_pub p = {.room = S(room),
                               .from = S("ann"),
                               .text = S(text),
                               .cmid = S(""),
                               .client = S(n->name),
                               .ts = ts,
                               .author = S(author),
                               .actor = S(actor),
                               .mentions = S(mentions),
                               .reply_to = reply_to};
    struct pub_sync ps = {0};
    int rc = hub_engine_publish(n->e, &p, on_pub, &ps);
    if (rc != 0)
        return rc;
    CHECK(wait_count(&ps.done, 1, 3000));
    if (off != NULL)
        *off = ps.off;
    return ps.err;
}

struct amend_sync {
    int done, err;
    struct hub_history_amended r;
    char author[64], from[64];
};

static void on_amended(void *data, int err, const struct hub_history_amended *r)
{
    struct amend_sync *s = data;
    s->done++;
    s->err = err;
    if (err == 0) {
        s->r = *r;
        snprintf(s->author, sizeof(s->author), "%.*s", (int)r->author.len, r->author.base);
        snprintf(s->from, sizeof(s->from), "%.*s", (int)r->from.len, r->from.base);
    }
}

/* Amends and waits; returns the completion's error and fills out. */
static int amend(struct node *n, const char *room, uint64_t off, int kind, const char *who,
                 int moderator, const char *arg, int64_t ts, uint32_t max_emoji,
                 struct amend_sync *out)
{
    struct hub_history_amend a = {.room = S(room),
                                  .offset = off,
                                  .kind = kind,
                                  .who = S(who),
                                  .moderator = moderator,
                                  .text = S(kind == HUB_AMEND_EDIT ? arg : ""),
                                  .emoji = S(kind >= HUB_AMEND_REACT ? arg : ""),
                                  .ts = ts,
                                  .window_ms = 60000,
                                  .max_emoji = max_emoji};
    memset(out, 0, sizeof(*out));
    int rc = hub_engine_amend(n->e, &a, S("nick"), on_amended, out);
    if (rc != 0)
        return rc;
    CHECK(wait_count(&out->done, 1, 3000));
    return out->err;
}

/* A query's result, copied. */
struct query_sync {
    int done, err, complete;
    struct hub_history_pos pos;
    char topic[64];
    size_t n;
    struct {
        uint64_t offset, reply_to;
        int64_t edited_ts;
        int deleted;
        char text[64], author[32], mentions[32], rx[128];
    } m[16];
};

static void on_query(void *data, int err, const struct hub_history_pos *pos,
                     const struct hub_history_msg *msgs, size_t n, int complete)
{
    struct query_sync *q = data;
    q->done++;
    q->err = err;
    if (err != 0)
        return;
    q->pos = *pos;
    q->complete = complete;
    snprintf(q->topic, sizeof(q->topic), "%.*s", (int)pos->topic.len, pos->topic.base);
    q->pos.topic.base = NULL;
    q->n = n < 16 ? n : 16;
    for (size_t i = 0; i < q->n; i++) {
        const struct hub_history_msg *m = &msgs[i];
        q->m[i].offset = m->offset;
        q->m[i].reply_to = m->reply_to;
        q->m[i].edited_ts = m->edited_ts;
        q->m[i].deleted = m->deleted;
        snprintf(q->m[i].text, sizeof(q->m[i].text), "%.*s", (int)m->text.len, m->text.base);
        snprintf(q->m[i].author, sizeof(q->m[i].author), "%.*s", (int)m->author.len,
                 m->author.base);
        snprintf(q->m[i].mentions, sizeof(q->m[i].mentions), "%.*s", (int)m->mentions.len,
                 m->mentions.base);
        size_t w = 0;
        q->m[i].rx[0] = '\0';
        for (size_t k = 0; k < m->nreactions && w < sizeof(q->m[i].rx) - 40; k++)
            w += (size_t)snprintf(q->m[i].rx + w, sizeof(q->m[i].rx) - w, "%s%.*s=%u%s",
                                  k ? " " : "", (int)m->reactions[k].emoji.len,
                                  m->reactions[k].emoji.base, m->reactions[k].count,
                                  m->reactions[k].mine ? "*" : "");
    }
}

static void query(struct node *n, const char *room, int dir, uint64_t pos, unsigned limit,
                  const char *viewer, const char *actor, int64_t now, struct query_sync *out)
{
    struct hub_history_query q = {.dir = dir,
                                  .pos = pos,
                                  .limit = limit,
                                  .viewer = S(viewer),
                                  .actor = S(actor),
                                  .now_ms = now};
    memset(out, 0, sizeof(*out));
    CHECK_EQ(hub_engine_query(n->e, S(room), &q, on_query, out), 0);
    CHECK(wait_count(&out->done, 1, 3000));
    CHECK_EQ(out->err, 0);
}

/* Publish fields, refusals, amendments with their checks, on_amend on
 * both nodes, and queries that apply them. */
static void test_msgops(struct node *a, struct node *b)
{
    a->nev = b->nev = 0;
    subscribe_live(a, "ops");
    subscribe_live(b, "ops");
    const int64_t T = 1000000;
    uint64_t off = 0;
    int na = a->nmsg, nb = b->nmsg;
    CHECK_EQ(pub_ex(a, "ops", "hello @bob", "u:ann", "u:ann", "bob\n", 0, T, &off), 0);
    CHECK_EQ(off, 1);
    CHECK(wait_count(&b->nmsg, nb + 1, 3000));
    CHECK_STR(b->meta, "u:ann|bob\n|0");
    /* reply_to must name 1..last. */
    CHECK_EQ(pub_ex(a, "ops", "bad", "u:ann", "u:ann", "", 2, T, NULL), HUB_EINVAL);
    CHECK_EQ(pub_ex(b, "ops", "answer", "u:bob", "u:bob", "", 1, T + 1, &off), 0);
    CHECK_EQ(off, 2);
    CHECK(wait_count(&a->nmsg, na + 2, 3000));
    CHECK_STR(a->meta, "u:bob||1");
    CHECK_EQ(pub_ex(a, "ops", "raw line", "", "", "", 0, T + 2, &off), 0);
    CHECK_EQ(off, 3);

    struct amend_sync s;
    /* Edit: the author within the window, or a moderator. */
    CHECK_EQ(amend(b, "ops", 1, HUB_AMEND_EDIT, "u:bob", 0, "x", T + 10, 0, &s), HUB_EPERM);
    CHECK_EQ(amend(a, "ops", 1, HUB_AMEND_EDIT, "u:ann", 0, "late", T + 60001, 0, &s), HUB_EPERM);
    CHECK_EQ(amend(a, "ops", 3, HUB_AMEND_EDIT, "", 0, "nobody's", T + 10, 0, &s), HUB_EPERM);
    CHECK_EQ(amend(a, "ops", 9, HUB_AMEND_EDIT, "u:ann", 0, "x", T + 10, 0, &s), HUB_ENOENT);
    CHECK_EQ(amend(a, "ops", 1, HUB_AMEND_EDIT, "u:ann", 0, "hello @bob!", T + 20, 0, &s), 0);
    CHECK_EQ(s.r.changed, 1);
    CHECK_EQ(s.r.edited_ts, T + 20);
    CHECK_STR(s.author, "u:ann");
    CHECK_STR(s.from, "ann");
    CHECK(wait_event(a, "amend ops 1 1 hello @bob! 0 nick", 3000));
    CHECK(wait_event(b, "amend ops 1 1 hello @bob! 0 nick", 3000));
    CHECK_EQ(amend(b, "ops", 2, HUB_AMEND_EDIT, "u:mod", 1, "moderated", T + 999999, 0, &s), 0);

    /* Reactions: once per user per emoji, at most max_emoji distinct. */
    CHECK_EQ(amend(b, "ops", 1, HUB_AMEND_REACT, "u:bob", 0, "👍", T + 30, 2, &s), 0);
    CHECK_EQ(s.r.count, 1);
    CHECK_EQ(s.r.changed, 1);
    CHECK_EQ(amend(b, "ops", 1, HUB_AMEND_REACT, "u:bob", 0, "👍", T + 31, 2, &s), 0);
    CHECK_EQ(s.r.changed, 0);
    CHECK_EQ(s.r.count, 1);
    CHECK_EQ(amend(a, "ops", 1, HUB_AMEND_REACT, "u:ann", 0, "👍", T + 32, 2, &s), 0);
    CHECK_EQ(s.r.count, 2);
    CHECK_EQ(amend(a, "ops", 1, HUB_AMEND_REACT, "u:ann", 0, "🎉", T + 33, 2, &s), 0);
    CHECK_EQ(amend(a, "ops", 1, HUB_AMEND_REACT, "u:ann", 0, "🚀", T + 34, 2, &s), HUB_ELIMIT);
    CHECK_EQ(amend(a, "ops", 1, HUB_AMEND_UNREACT, "u:ann", 0, "🚀", T + 35, 2, &s), 0);
    CHECK_EQ(s.r.changed, 0);
    CHECK(wait_event(a, "amend ops 1 3 🎉 1 nick", 3000));
    CHECK(wait_event(b, "amend ops 1 3 👍 2 nick", 3000));

    struct query_sync q;
    query(b, "ops", HUB_HISTORY_LATEST, 0, 10, "u:bob", "u:bob", T, &q);
    CHECK_EQ(q.n, 3);
    CHECK_EQ(q.pos.last, 3);
    CHECK_STR(q.m[0].text, "hello @bob!");
    CHECK_EQ(q.m[0].edited_ts, T + 20);
    CHECK_STR(q.m[0].author, "u:ann");
    CHECK_STR(q.m[0].mentions, "bob\n");
    CHECK_STR(q.m[0].rx, "👍=2* 🎉=1");
    CHECK_EQ(q.m[1].reply_to, 1);
    CHECK_STR(q.m[1].text, "moderated");
    CHECK_EQ(q.m[2].edited_ts, 0);
    CHECK_EQ(q.pos.ban_until, 0);
    CHECK_EQ(q.pos.mute_until, 0);
    CHECK_STR(q.topic, "");
    /* The plain read applies amendments too (no viewer: mine 0). */
    query(a, "ops", HUB_HISTORY_BEFORE, 2, 1, "", "", T, &q);
    CHECK_EQ(q.n, 1);
    CHECK_STR(q.m[0].rx, "👍=2 🎉=1");

    /* Unreact to zero removes the emoji. */
    CHECK_EQ(amend(a, "ops", 1, HUB_AMEND_UNREACT, "u:ann", 0, "🎉", T + 36, 2, &s), 0);
    CHECK_EQ(s.r.changed, 1);
    CHECK_EQ(s.r.count, 0);
    CHECK(wait_event(b, "amend ops 1 4 🎉 0 nick", 3000));

    /* Delete: a tombstone everywhere, then edits and reactions are refused. */
    CHECK_EQ(amend(b, "ops", 1, HUB_AMEND_DELETE, "u:bob", 0, "", T + 40, 0, &s), HUB_EPERM);
    CHECK_EQ(amend(a, "ops", 1, HUB_AMEND_DELETE, "u:ann", 0, "", T + 40, 0, &s), 0);
    CHECK_EQ(s.r.changed, 1);
    CHECK(wait_event(b, "amend ops 1 2  0 nick", 3000));
    CHECK(wait_event(a, "amend ops 1 2  0 nick", 3000));
    CHECK_EQ(amend(a, "ops", 1, HUB_AMEND_DELETE, "u:ann", 0, "", T + 41, 0, &s), 0);
    CHECK_EQ(s.r.changed, 0);
    CHECK_EQ(amend(a, "ops", 1, HUB_AMEND_EDIT, "u:ann", 0, "again", T + 42, 0, &s), HUB_ENOENT);
    CHECK_EQ(amend(a, "ops", 1, HUB_AMEND_REACT, "u:ann", 0, "👍", T + 42, 0, &s), HUB_ENOENT);
    CHECK_EQ(amend(a, "ops", 3, HUB_AMEND_DELETE, "u:mod", 1, "", T + 9999999, 0, &s), 0);
    query(b, "ops", HUB_HISTORY_LATEST, 0, 10, "u:bob", "", T, &q);
    CHECK_EQ(q.m[0].deleted, 1);
    CHECK_STR(q.m[0].text, "");
    CHECK_STR(q.m[0].mentions, "");
    CHECK_STR(q.m[0].rx, "");
    CHECK_EQ(q.m[2].deleted, 1);
    /* Every on_amend came after the on_msg of its offset. */
    for (int i = 0; i < a->nev; i++)
        CHECK(strstr(a->events[i], "unseen") == NULL);
    for (int i = 0; i < b->nev; i++)
        CHECK(strstr(b->events[i], "unseen") == NULL);
    /* Bad arguments are refused by the call. */
    struct hub_history_amend bad = {
        .room = S("ops"), .offset = 1, .kind = HUB_AMEND_REACT, .who = S("u:ann"), .emoji = S("")};
    CHECK_EQ(hub_engine_amend(a->e, &bad, S("n"), on_amended, &s), HUB_EINVAL);
    bad.kind = 9;
    CHECK_EQ(hub_engine_amend(a->e, &bad, S("n"), on_amended, &s), HUB_EINVAL);
}

/* A lost publication and then an amendment of it: the amendment waits
 * for the hole fill, so on_msg of that offset comes first. */
static void test_amend_after_hole(struct node *a, struct node *b)
{
    long long o = test_redis_int(&redis1, "HINCRBY chathub:r:ops o 1");
    CHECK(o > 0);
    redisContext *c = test_redis_connect(&redis1);
    redisReply *rep =
        redisCommand(c, "XADD chathub:s:ops %lld-0 t 5 f ghost x boo c %s k x a u:g", o, "");
    CHECK(rep != NULL && rep->type == REDIS_REPLY_STRING);
    freeReplyObject(rep);
    redisFree(c);
    b->nev = 0;
    struct amend_sync s;
    CHECK_EQ(amend(a, "ops", (uint64_t)o, HUB_AMEND_REACT, "u:ann", 0, "👀", 6, 0, &s), 0);
    char want[96];
    snprintf(want, sizeof(want), "amend ops %lld 3 👀 1 nick", o);
    CHECK(wait_event(b, want, 3000));
    CHECK_EQ(b->offs[b->nmsg - 1], (uint64_t)o);
    CHECK_STR(b->meta, "u:g||0");

    /* A message and its edit both lost (written without publications): the
     * fill delivers the edited text and says it was edited. */
    o = test_redis_int(&redis1, "HINCRBY chathub:r:ops o 1");
    c = test_redis_connect(&redis1);
    rep = redisCommand(c, "XADD chathub:s:ops %lld-0 t 5 f ghost x orig c %s k x a u:g", o, "");
    CHECK(rep != NULL && rep->type == REDIS_REPLY_STRING);
    freeReplyObject(rep);
    rep = redisCommand(c, "HSET chathub:x:ops:%lld e 9 t fixed", o);
    freeReplyObject(rep);
    rep = redisCommand(c, "ZADD chathub:ai:ops %lld %lld", o, o);
    freeReplyObject(rep);
    redisFree(c);
    b->nev = 0;
    int before = b->nmsg;
    CHECK_EQ(pub_ex(a, "ops", "next", "u:ann", "", "", 0, 10, NULL), 0);
    CHECK(wait_count(&b->nmsg, before + 2, 3000));
    snprintf(want, sizeof(want), "ops %lld fixed", o);
    CHECK_STR(b->msgs[before], want);
    snprintf(want, sizeof(want), "amend ops %lld 1 fixed 0 ", o);
    CHECK(wait_event(b, want, 3000));
}

/* An amendment stored without its PUBLISH (a lost publication) is read
 * from the room's amendment log before the next one is delivered; and
 * amendments made while a node's subscribed connection was down are read
 * from the log when it is back. */
static void test_amend_log(struct node *a, struct node *b)
{
    redisContext *c = test_redis_connect(&redis1);
    redisReply *ep = redisCommand(c, "HGET chathub:r:ops e");
    CHECK(ep != NULL && ep->type == REDIS_REPLY_STRING);
    long long seq = test_redis_int(&redis1, "HINCRBY chathub:r:ops a 1");
    CHECK(seq > 0);
    char pl[256], sq[24];
    snprintf(sq, sizeof(sq), "%lld", seq);
    snprintf(pl, sizeof(pl), "a%zu:%s1:21:30:1:04:👻1:14:u:gh5:ghost%zu:%s", strlen(ep->str),
             ep->str, strlen(sq), sq);
    redisReply *rep = redisCommand(c, "XADD chathub:al:ops %lld-0 p %s", seq, pl);
    CHECK(rep != NULL && rep->type == REDIS_REPLY_STRING);
    freeReplyObject(rep);
    freeReplyObject(ep);
    a->nev = b->nev = 0;
    struct amend_sync s;
    CHECK_EQ(amend(a, "ops", 2, HUB_AMEND_REACT, "u:ann", 0, "🙂", 7, 0, &s), 0);
    CHECK(wait_event(b, "amend ops 2 3 🙂 1 nick", 3000));
    CHECK(wait_event(a, "amend ops 2 3 🙂 1 nick", 3000));
    CHECK(b->nev >= 2);
    CHECK_STR(b->events[0], "amend ops 2 3 👻 1 ghost"); /* the lost one first */
    CHECK_STR(b->events[1], "amend ops 2 3 🙂 1 nick");

    /* Both nodes' subscribed connections drop; an amendment is made before
     * they are back (the reconnect waits 20 ms, the amendment takes one
     * round trip on the command connection). */
    struct hub_engine_stats st0, st1;
    hub_engine_stats(b->e, &st0);
    a->nev = b->nev = 0;
    rep = redisCommand(c, "CLIENT KILL TYPE pubsub");
    CHECK(rep != NULL && rep->type == REDIS_REPLY_INTEGER && rep->integer >= 2);
    freeReplyObject(rep);
    redisFree(c);
    CHECK_EQ(amend(a, "ops", 2, HUB_AMEND_UNREACT, "u:ann", 0, "🙂", 8, 0, &s), 0);
    CHECK_EQ(s.r.changed, 1);
    CHECK(wait_event(b, "amend ops 2 4 🙂 0 nick", 3000));
    CHECK(wait_event(a, "amend ops 2 4 🙂 0 nick", 3000));
    hub_engine_stats(b->e, &st1);
    CHECK(st1.fills > st0.fills); /* from the log, not the lost publication */
    struct node *both[] = {a, b, NULL};
    CHECK(run_until(ready_cond, both, 5000));
}

struct search_sync {
    int done, err, complete;
    size_t n;
    uint64_t off[16];
    char text[16][48];
};

static void on_search(void *data, int err, const struct hub_history_msg *msgs, size_t n,
                      int complete)
{
    struct search_sync *s = data;
    s->done++;
    s->err = err;
    s->complete = complete;
    s->n = n;
    for (size_t i = 0; i < n && i < 16; i++) {
        s->off[i] = msgs[i].offset;
        snprintf(s->text[i], sizeof(s->text[i]), "%.*s", (int)msgs[i].text.len, msgs[i].text.base);
    }
}

static int search(struct node *n, const char *room, const char *q, uint64_t before, unsigned limit,
                  struct search_sync *out)
{
    memset(out, 0, sizeof(*out));
    int rc = hub_engine_search(n->e, S(room), S(q), before, limit, on_search, out);
    if (rc != 0)
        return rc;
    CHECK(wait_count(&out->done, 1, 3000));
    return out->err;
}

static void test_search(struct node *a, struct node *b)
{
    const char *texts[] = {"Release notes for 1.2", "release party tonight", "PRERELEASE build",
                           "notes, release: draft", "nothing here",          "secret release",
                           "Ünïcode relEASE"};
    for (int i = 0; i < 7; i++)
        CHECK_EQ(pub_ex(a, "find", texts[i], "u:ann", "", "", 0, 100 + i, NULL), 0);
    struct amend_sync s;
    CHECK_EQ(amend(a, "find", 5, HUB_AMEND_EDIT, "u:ann", 0, "release edited", 110, 0, &s), 0);
    CHECK_EQ(amend(a, "find", 6, HUB_AMEND_DELETE, "u:ann", 0, "", 110, 0, &s), 0);
    struct search_sync r;
    CHECK_EQ(search(b, "find", "release", 0, 20, &r), 0);
    CHECK_EQ(r.complete, 1);
    CHECK_EQ(r.n, 5); /* 7, 5 (edited), 4, 2, 1: not 3 (prefix of no word), not 6 (deleted) */
    CHECK_EQ(r.off[0], 7);
    CHECK_EQ(r.off[1], 5);
    CHECK_STR(r.text[1], "release edited");
    CHECK_EQ(r.off[2], 4);
    CHECK_EQ(r.off[3], 2);
    CHECK_EQ(r.off[4], 1);
    CHECK_EQ(search(b, "find", "NOT rel", 0, 20, &r), 0); /* AND of word prefixes */
    CHECK_EQ(r.n, 2);
    CHECK_EQ(r.off[0], 4);
    CHECK_EQ(r.off[1], 1);
    CHECK_EQ(search(b, "find", "notes,rel", 0, 20, &r), 0); /* one word: "notes" then "rel*" */
    CHECK_EQ(r.n, 1);
    CHECK_EQ(r.off[0], 4);
    CHECK_EQ(search(b, "find", "notes, rel", 0, 20, &r), 0); /* two words */
    CHECK_EQ(r.n, 2);
    CHECK_EQ(search(b, "find", "for 1.2", 0, 20, &r), 0);
    CHECK_EQ(r.n, 1);
    CHECK_EQ(r.off[0], 1);
    CHECK_EQ(search(b, "find", "1.3", 0, 20, &r), 0);
    CHECK_EQ(r.n, 0);
    CHECK_EQ(search(b, "find", "ünïcode", 0, 20, &r), 0); /* non-ASCII bytes compare as is */
    CHECK_EQ(r.n, 0);
    CHECK_EQ(search(b, "find", "Ünï", 0, 20, &r), 0);
    CHECK_EQ(r.n, 1);
    CHECK_EQ(search(b, "find", "release", 0, 2, &r), 0);
    CHECK_EQ(r.n, 2);
    CHECK_EQ(r.complete, 0);
    CHECK_EQ(search(b, "find", "release", 4, 2, &r), 0);
    CHECK_EQ(r.n, 2);
    CHECK_EQ(r.off[0], 2);
    CHECK_EQ(r.complete, 1);
    CHECK_EQ(search(b, "find", "secret", 0, 20, &r), 0);
    CHECK_EQ(r.n, 0);
    CHECK_EQ(search(b, "nowhere", "x", 0, 20, &r), 0);
    CHECK_EQ(r.n, 0);
    CHECK_EQ(r.complete, 1);
    CHECK_EQ(search(b, "find", " ,; ", 0, 20, &r), HUB_EINVAL);
}

static void on_done_sync(void *data, int err)
{
    on_done(data, err);
}

static int restrict_(struct node *n, int kind, const char *room, const char *actor, int64_t until)
{
    struct hub_history_restrict r = {.kind = kind,
                                     .room = S(room),
                                     .actor = S(actor),
                                     .until_ms = until,
                                     .by = S("mod"),
                                     .ts = 5000000};
    struct done_sync d = {0};
    int rc = hub_engine_restrict(n->e, &r, on_done_sync, &d);
    if (rc != 0)
        return rc;
    CHECK(wait_count(&d.done, 1, 3000));
    return d.err;
}

/* Bans and mutes (room and hub, until a time or for good, lifted), with
 * the injected clock of publishes and queries; topics; control messages. */
static void test_restrict_topic_control(struct node *a, struct node *b)
{
    const int64_t T = 5000000;
    CHECK_EQ(restrict_(a, HUB_RESTRICT_BAN, "ops", "u:bob", INT64_MAX), 0);
    CHECK_EQ(restrict_(a, HUB_RESTRICT_MUTE, "", "n:cy", T + 1000), 0);
    CHECK_EQ(restrict_(a, HUB_RESTRICT_MUTE, "ops", "n:cy", T + 500), 0);
    CHECK_EQ(pub_ex(b, "ops", "x", "u:bob", "u:bob", "", 0, T, NULL), HUB_EPERM);
    CHECK_EQ(pub_ex(b, "other", "x", "u:bob", "u:bob", "", 0, T, NULL), 0);
    CHECK_EQ(pub_ex(b, "other", "x", "g:c1", "n:cy", "", 0, T, NULL), HUB_EPERM);
    CHECK_EQ(pub_ex(b, "ops", "x", "g:c1", "n:cy", "", 0, T + 999, NULL), HUB_EPERM);
    CHECK_EQ(pub_ex(b, "ops", "x", "g:c1", "n:cy", "", 0, T + 1000, NULL), 0); /* expired */
    CHECK_EQ(pub_ex(b, "ops", "x", "g:c1", "", "", 0, T, NULL), 0); /* no actor: no check */
    struct query_sync q;
    query(b, "ops", HUB_HISTORY_LATEST, 0, 0, "", "u:bob", T, &q);
    CHECK_EQ(q.pos.ban_until, INT64_MAX);
    CHECK_EQ(q.pos.mute_until, 0);
    query(b, "ops", HUB_HISTORY_LATEST, 0, 0, "", "n:cy", T, &q);
    CHECK_EQ(q.pos.ban_until, 0);
    CHECK_EQ(q.pos.mute_until, T + 1000); /* the later of room and hub */
    query(b, "ops", HUB_HISTORY_LATEST, 0, 0, "", "n:cy", T + 1000, &q);
    CHECK_EQ(q.pos.mute_until, 0);
    /* Lifted. */
    CHECK_EQ(restrict_(b, HUB_RESTRICT_BAN, "ops", "u:bob", 0), 0);
    CHECK_EQ(pub_ex(b, "ops", "back", "u:bob", "u:bob", "", 0, T, NULL), 0);
    CHECK_EQ(restrict_(b, HUB_RESTRICT_MUTE, "", "n:cy", 0), 0);
    CHECK_EQ(test_redis_int(&redis1, "EXISTS chathub:mute:0:n:cy"), 0);
    /* A timed restriction's key is freed by Redis (an hour after its end). */
    CHECK(test_redis_int(&redis1, "PTTL chathub:mute:3:opsn:cy") > 0);
    struct hub_history_restrict bad = {.kind = 7, .actor = S("u:x")};
    CHECK_EQ(hub_engine_restrict(a->e, &bad, on_done_sync, &(struct done_sync){0}), HUB_EINVAL);

    /* Topics. */
    struct done_sync d = {0};
    CHECK_EQ(hub_engine_set_topic(a->e, S("ops"), S("Release day"), on_done_sync, &d), 0);
    CHECK(wait_count(&d.done, 1, 3000));
    CHECK_EQ(d.err, 0);
    query(b, "ops", HUB_HISTORY_LATEST, 0, 0, "", "", T, &q);
    CHECK_STR(q.topic, "Release day");
    CHECK_EQ(hub_engine_set_topic(a->e, S("ops"), S(""), on_done_sync, &d), 0);
    CHECK(wait_count(&d.done, 2, 3000));
    query(b, "ops", HUB_HISTORY_LATEST, 0, 0, "", "", T, &q);
    CHECK_STR(q.topic, "");

    /* Control messages reach every node, the sender's included. */
    a->nev = b->nev = 0;
    struct hub_engine_control c = {.kind = HUB_CONTROL_BAN,
                                   .target = S("u:bob"),
                                   .room = S(""),
                                   .text = S("spam"),
                                   .by = S("mod"),
                                   .until_ms = INT64_MAX};
    CHECK_EQ(hub_engine_control(a->e, &c), 0);
    CHECK(wait_event(a, "control 2 u:bob  spam mod 9223372036854775807", 3000));
    CHECK(wait_event(b, "control 2 u:bob  spam mod 9223372036854775807", 3000));
    c.kind = 0;
    CHECK_EQ(hub_engine_control(a->e, &c), HUB_EINVAL);
}

/* Amendment state of messages trimmed from the stream is deleted. */
static void test_trim_cleans(void)
{
    history_max = 10;
    const char *urls[] = {url1};
    struct node *t = calloc(1, sizeof(*t));
    CHECK_EQ(open_node(t, "node-t", urls, 1, 900), 0);
    struct node *all[] = {t, NULL};
    CHECK(run_until(ready_cond, all, 5000));
    struct amend_sync s;
    for (int i = 1; i <= 5; i++) {
        CHECK_EQ(pub_ex(t, "trim", "m", "u:ann", "", "", 0, 10, NULL), 0);
        CHECK_EQ(amend(t, "trim", (uint64_t)i, HUB_AMEND_REACT, "u:ann", 0, "👍", 11, 0, &s), 0);
    }
    CHECK_EQ(amend(t, "trim", 2, HUB_AMEND_EDIT, "u:ann", 0, "e", 12, 0, &s), 0);
    CHECK_EQ(test_redis_int(&redis1, "ZCARD chathub:ai:trim"), 5);
    CHECK_EQ(test_redis_int(&redis1, "EXISTS chathub:x:trim:2"), 1);
    struct acks acks = {0};
    for (int i = 0; i < 400; i++) {
        CHECK_EQ(pub(t, "trim", "filler", "", &acks), 0);
        if (i % 50 == 49)
            CHECK(wait_count(&acks.n, i + 1, 3000));
    }
    CHECK(wait_count(&acks.n, 400, 5000));
    CHECK(test_redis_int(&redis1, "XLEN chathub:s:trim") < 300);
    CHECK_EQ(test_redis_int(&redis1, "ZCARD chathub:ai:trim"), 0);
    for (int i = 1; i <= 5; i++)
        CHECK_EQ(test_redis_int(&redis1, "EXISTS chathub:x:trim:%d", i), 0);
    /* A trimmed message can no longer be amended. */
    CHECK_EQ(amend(t, "trim", 2, HUB_AMEND_REACT, "u:ann", 0, "👍", 13, 0, &s), HUB_ENOENT);
    close_node(t);
    free(t);
    history_max = 0;
}

/* Redis CPU per amendment (one script, one round trip each) and per
 * search of a 1000-message stream (one script scanning it). */
static void figure_amend_search(struct node *a)
{
    const int N = 2000;
    for (int i = 0; i < 100; i++)
        CHECK_EQ(
            pub_ex(a, "fig", "some words to search through here", "u:ann", "", "", 0, 10, NULL), 0);
    struct amend_sync *s = calloc((size_t)N, sizeof(*s));
    int done = 0;
    double cpu0 = test_redis_cpu_us(&redis1);
    uint64_t t0 = uv_hrtime();
    for (int i = 0; i < N; i++) {
        struct hub_history_amend am = {.room = S("fig"),
                                       .offset = (uint64_t)(i % 100) + 1,
                                       .kind = (i / 100) % 2 ? HUB_AMEND_UNREACT : HUB_AMEND_REACT,
                                       .who = S("u:ann"),
                                       .emoji = S("👍"),
                                       .ts = 11};
        CHECK_EQ(hub_engine_amend(a->e, &am, S("ann"), on_amended, &s[i]), 0);
        if (i % 50 == 49)
            for (int k = i - 49; k <= i; k++)
                CHECK(wait_count(&s[k].done, 1, 3000));
        (void)done;
    }
    double secs = (double)(uv_hrtime() - t0) / 1e9, cpu1 = test_redis_cpu_us(&redis1);
    int errs = 0;
    for (int i = 0; i < N; i++)
        errs += s[i].err != 0;
    CHECK_EQ(errs, 0);
    printf("figure: %d reactions/unreactions: %.0f/s, Redis CPU %.1f us each, 1 round trip each\n",
           N, N / secs, (cpu1 - cpu0) / N);
    free(s);
    struct acks acks = {0};
    for (int i = 0; i < 900; i++) {
        CHECK_EQ(pub(a, "fig", "filler text that never matches", "", &acks), 0);
        if (i % 50 == 49)
            CHECK(wait_count(&acks.n, i + 1, 3000));
    }
    CHECK(wait_count(&acks.n, 900, 5000));
    struct search_sync r;
    cpu0 = test_redis_cpu_us(&redis1);
    t0 = uv_hrtime();
    for (int i = 0; i < 20; i++)
        CHECK_EQ(search(a, "fig", "sear thro", 0, 50, &r), 0);
    secs = (double)(uv_hrtime() - t0) / 1e9;
    cpu1 = test_redis_cpu_us(&redis1);
    CHECK_EQ(r.n, 50);
    printf("figure: search of a 1000-message stream (50 of 100 matches): %.2f ms per search, "
           "Redis CPU %.0f us per search\n",
           secs * 1000 / 20, (cpu1 - cpu0) / 20);
    for (int i = 0; i < 20; i++)
        CHECK_EQ(search(a, "fig", "zzz", 0, 50, &r), 0);
    cpu0 = test_redis_cpu_us(&redis1);
    t0 = uv_hrtime();
    for (int i = 0; i < 20; i++)
        CHECK_EQ(search(a, "fig", "nomatch", 0, 50, &r), 0);
    secs = (double)(uv_hrtime() - t0) / 1e9;
    cpu1 = test_redis_cpu_us(&redis1);
    CHECK_EQ(r.n, 0);
    CHECK_EQ(r.complete, 1);
    printf("figure: search without a match (whole 1000-message stream): %.2f ms, Redis CPU %.0f "
           "us per search\n",
           secs * 1000 / 20, (cpu1 - cpu0) / 20);
}

static struct test_redis redis2;

struct heal_wait {
    struct test_redis *r;
};

static int healed(void *arg)
{
    struct heal_wait *w = arg;
    return test_redis_int(w->r, "EXISTS chathub:ban:0:u:heal") == 1;
}

/* Two independent servers: rooms are spread over both, and each room's keys
 * live on exactly one of them. */
static void test_sharding(void)
{
    CHECK_EQ(test_redis_start(&redis2), 0);
    char url2[64];
    snprintf(url2, sizeof(url2), "redis://127.0.0.1:%d", redis2.port);
    const char *urls[] = {url1, url2};
    struct node *x = calloc(1, sizeof(*x)), *y = calloc(1, sizeof(*y));
    CHECK_EQ(open_node(x, "shard-x", urls, 2, 900), 0);
    CHECK_EQ(open_node(y, "shard-y", urls, 2, 900), 0);
    struct node *both[] = {x, y, NULL};
    CHECK(run_until(ready_cond, both, 5000));
    char room[16];
    for (int i = 0; i < 16; i++) {
        snprintf(room, sizeof(room), "room%d", i);
        subscribe_live(y, room);
    }
    struct acks acks = {0};
    for (int i = 0; i < 16; i++) {
        snprintf(room, sizeof(room), "room%d", i);
        CHECK_EQ(pub(x, room, "hi", "", &acks), 0);
    }
    CHECK(wait_count(&y->nmsg, 16, 5000));
    int on1 = 0, on2 = 0;
    for (int i = 0; i < 16; i++) {
        long long e1 = test_redis_int(&redis1, "EXISTS chathub:r:room%d", i);
        long long e2 = test_redis_int(&redis2, "EXISTS chathub:r:room%d", i);
        CHECK_EQ(e1 + e2, 1);
        on1 += e1 == 1;
        on2 += e2 == 1;
    }
    CHECK(on1 > 0 && on2 > 0);
    printf("figure: 16 rooms over 2 shards: %d and %d\n", on1, on2);
    /* Nicks are sharded too, and still unique. */
    struct done_sync d = {0};
    CHECK_EQ(hub_engine_claim_nick(x->e, S("Zed"), S("x-1"), on_done, &d), 0);
    CHECK(wait_count(&d.done, 1, 3000));
    CHECK_EQ(hub_engine_claim_nick(y->e, S("zed"), S("y-1"), on_done, &d), 0);
    CHECK(wait_count(&d.done, 2, 3000));
    CHECK_EQ(d.err, HUB_EEXIST);

    /* A hub-wide ban is written to every shard, so the publish script of
     * every room checks it; queries on both shards report it. */
    CHECK_EQ(restrict_(x, HUB_RESTRICT_BAN, "", "u:zed", INT64_MAX), 0);
    int refused = 0, banned = 0;
    for (int i = 0; i < 16; i++) {
        snprintf(room, sizeof(room), "room%d", i);
        refused += pub_ex(y, room, "x", "u:zed", "u:zed", "", 0, 5000000, NULL) == HUB_EPERM;
        struct query_sync q;
        query(y, room, HUB_HISTORY_LATEST, 0, 0, "", "u:zed", 5000000, &q);
        banned += q.pos.ban_until == INT64_MAX;
    }
    CHECK_EQ(refused, 16);
    CHECK_EQ(banned, 16);
    CHECK_EQ(test_redis_int(&redis1, "EXISTS chathub:ban:0:u:zed") +
                 test_redis_int(&redis2, "EXISTS chathub:ban:0:u:zed"),
             2);
    CHECK_EQ(restrict_(y, HUB_RESTRICT_BAN, "", "u:zed", 0), 0);
    for (int i = 0; i < 16; i++) {
        snprintf(room, sizeof(room), "room%d", i);
        CHECK_EQ(pub_ex(y, room, "x", "u:zed", "u:zed", "", 0, 5000000, NULL), 0);
    }
    /* The second shard restarts empty: the first shard's list of hub-wide
     * restrictions is copied back to it when the nodes reconnect. */
    CHECK_EQ(restrict_(x, HUB_RESTRICT_BAN, "", "u:heal", INT64_MAX), 0);
    int shard2 = -1;
    for (int i = 0; i < 16 && shard2 < 0; i++)
        if (test_redis_int(&redis2, "EXISTS chathub:r:room%d", i) == 1)
            shard2 = i;
    CHECK(shard2 >= 0);
    test_redis_signal(&redis2, SIGKILL);
    CHECK(run_until(not_ready_cond, x, 3000));
    CHECK_EQ(test_redis_start(&redis2), 0);
    CHECK(run_until(ready_cond, both, 5000));
    struct heal_wait hw = {&redis2};
    CHECK(run_until(healed, &hw, 3000));
    snprintf(room, sizeof(room), "room%d", shard2);
    CHECK_EQ(pub_ex(y, room, "x", "u:heal", "u:heal", "", 0, 5000000, NULL), HUB_EPERM);
    CHECK_EQ(restrict_(y, HUB_RESTRICT_BAN, "", "u:heal", 0), 0);
    CHECK_EQ(test_redis_int(&redis1, "HLEN chathub:hr"), 0);
    CHECK_EQ(test_redis_int(&redis2, "HLEN chathub:hr"), 0);

    /* Control messages over two shards (the channel is on the first). */
    struct hub_engine_control c = {
        .kind = HUB_CONTROL_TOPIC, .room = S("room3"), .text = S("new topic"), .by = S("api")};
    CHECK_EQ(hub_engine_control(y->e, &c), 0);
    CHECK(wait_event(x, "control 4  room3 new topic api 0", 3000));
    CHECK(wait_event(y, "control 4  room3 new topic api 0", 3000));
    close_node(x);
    close_node(y);
    free(x);
    free(y);
}

int main(void)
{
    if (test_redis_binary() == NULL) {
        fprintf(stderr, "redis-server not installed: skipped\n");
        return 77;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    uv_loop_init(&loop);
    redis1.port = test_free_port();
    snprintf(url1, sizeof(url1), "redis://127.0.0.1:%d", redis1.port);
    struct node *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));

    test_start_before_redis(a, b);
    test_one_order(a, b);
    test_presence_nicks(a, b);
    test_lease_expiry(a, b);
    test_hole_fill(a, b);
    test_msgops(a, b);
    test_amend_after_hole(a, b);
    test_amend_log(a, b);
    test_search(a, b);
    test_restrict_topic_control(a, b);
    test_trim_cleans();
    figure_amend_search(a);
    test_epoch(a, b);
    figure_cpu(a, b);
    test_kill_restart(a, b);
    test_stall(a, b);
    test_sharding();

    close_node(a);
    close_node(b);
    free(a);
    free(b);
    /* hiredis's poll handles close one iteration after the engines. */
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ(uv_loop_close(&loop), 0);
    test_redis_stop(&redis1);
    test_redis_stop(&redis2);
    return CHECK_DONE();
}
