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
    char events[256][96]; /* presence, typing, invites, epochs */
    int nev;
    int states;
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

static const struct hub_engine_events events = {.on_msg = on_msg,
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

static int open_node(struct node *n, const char *name, const char *const *urls, size_t nurls,
                     uint32_t lease_ms)
{
    struct hub_engine_config cfg;
    hub_engine_config_default(&cfg);
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

static struct test_redis redis2;

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
