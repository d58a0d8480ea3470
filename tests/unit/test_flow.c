/*
 * test_flow.c: the holds of flow.h on detached connections, with an
 * injected clock and hub_flow_poll called by hand.
 */
#include "check.h"
#include "hub/flow.h"
#include "hub/metrics.h"

#include <string.h>

/* Members with a 16 KiB soft limit and a soft hold of 2, 3 or 10 s (conn.h:
 * the policy is shared through hub_conn_ops). */
static const struct hub_conn_ops soft_10000 = {.soft_limit = 16384, .soft_hold_ms = 10000};
static const struct hub_conn_ops soft_2000 = {.soft_limit = 16384, .soft_hold_ms = 2000};
static const struct hub_conn_ops soft_3000 = {.soft_limit = 16384, .soft_hold_ms = 3000};

static uint64_t now;

static uint64_t clock_ms(void)
{
    return now;
}

static struct hub_flow *flow_new(uint64_t max_total_output, size_t inflight_max)
{
    struct hub_flow_config cfg = {max_total_output, inflight_max, clock_ms};
    struct hub_flow *f = NULL;
    CHECK_EQ(hub_flow_new(&f, NULL, &cfg), 0);
    return f;
}

/* A rate hold lasts until its time, and a longer one is not shortened. */
static void test_rate(void)
{
    struct hub_flow *f = flow_new(0, 0);
    struct hub_conn c;
    hub_conn_init_detached(&c, 0);
    now = 1000;
    hub_flow_rate_hold(f, &c, 50);
    CHECK_EQ(hub_flow_holds(f, &c), HUB_FLOW_RATE);
    hub_flow_rate_hold(f, &c, 10); /* shorter: the 50 ms stand */
    now = 1049;
    hub_flow_poll(f);
    CHECK_EQ(hub_flow_holds(f, &c), HUB_FLOW_RATE);
    now = 1050;
    hub_flow_poll(f);
    CHECK_EQ(hub_flow_holds(f, &c), 0);
    struct hub_flow_stats st;
    hub_flow_stats(f, &st);
    CHECK_EQ(st.holds[0], 1);
    CHECK_EQ(st.held, 0);
    hub_flow_close(f);
    hub_conn_close(&c);
    hub_outq_free(&c.out);
}

static void fill(struct hub_conn *c, size_t bytes)
{
    static char junk[4096];
    while (c->out.bytes < bytes)
        CHECK_EQ(hub_conn_write(c, junk, sizeof(junk)), 0);
}

/* A member over its soft limit holds the publishers of that room only,
 * until it drains to half its soft limit. */
static void test_room(void)
{
    struct hub_flow *f = flow_new(0, 0);
    struct hub_conn member, other, pub, pub2;
    hub_conn_init_detached(&member, 0);
    hub_conn_init_detached(&other, 0);
    hub_conn_init_detached(&pub, 0);
    hub_conn_init_detached(&pub2, 0);
    member.ops = &soft_10000;
    other.ops = &soft_10000;
    now = 5000;
    /* Under the soft limit: delivering marks nothing. */
    fill(&member, 8192);
    hub_flow_delivered(f, &member, "a", 1);
    hub_flow_publish(f, &pub, "a", 1, 10);
    CHECK_EQ(hub_flow_holds(f, &pub), 0);
    /* Over it: the next publish into "a" is held, one into "b" is not. */
    fill(&member, 20000);
    hub_flow_delivered(f, &member, "a", 1);
    hub_flow_delivered(f, &member, "a", 1); /* twice: counted once */
    hub_flow_publish(f, &pub, "a", 1, 10);
    hub_flow_publish(f, &pub2, "b", 1, 10);
    CHECK_EQ(hub_flow_holds(f, &pub), HUB_FLOW_ROOM);
    CHECK_EQ(hub_flow_holds(f, &pub2), 0);
    /* A second member over its limit in the same room. */
    fill(&other, 20000);
    hub_flow_delivered(f, &other, "a", 1);
    struct hub_flow_stats st;
    hub_flow_stats(f, &st);
    CHECK_EQ(st.rooms, 1);
    CHECK_EQ(st.held, 1);
    /* The first drains to half its limit; the other still holds. */
    hub_conn_drop_backlog(&member);
    hub_flow_poll(f);
    CHECK_EQ(hub_flow_holds(f, &pub), HUB_FLOW_ROOM);
    /* The other closes: forgotten, the room is free. */
    hub_flow_forget(f, &other);
    CHECK_EQ(hub_flow_holds(f, &pub), 0);
    hub_flow_stats(f, &st);
    CHECK_EQ(st.rooms, 0);
    CHECK_EQ(st.held, 0);
    CHECK_EQ(st.holds[1], 1);
    hub_flow_close(f);
    struct hub_conn *all[] = {&member, &other, &pub, &pub2};
    for (int i = 0; i < 4; i++) {
        hub_conn_close(all[i]);
        hub_outq_free(&all[i]->out);
    }
}

/* A member over its soft limit for longer than its soft hold no longer
 * holds anyone: it is closed by its next send instead. */
static void test_room_hold_expires(void)
{
    struct hub_flow *f = flow_new(0, 0);
    struct hub_conn member, pub;
    hub_conn_init_detached(&member, 0);
    hub_conn_init_detached(&pub, 0);
    member.ops = &soft_2000;
    now = 10000;
    fill(&member, 20000);
    member.over_soft_since = 10000; /* a detached conn has no clock of its own */
    hub_flow_delivered(f, &member, "r", 1);
    hub_flow_publish(f, &pub, "r", 1, 10);
    CHECK_EQ(hub_flow_holds(f, &pub), HUB_FLOW_ROOM);
    now = 11999;
    hub_flow_poll(f);
    CHECK_EQ(hub_flow_holds(f, &pub), HUB_FLOW_ROOM);
    now = 12000;
    hub_flow_poll(f);
    CHECK_EQ(hub_flow_holds(f, &pub), 0);
    /* And it does not congest the room again. */
    hub_flow_delivered(f, &member, "r", 1);
    hub_flow_publish(f, &pub, "r", 1, 10);
    CHECK_EQ(hub_flow_holds(f, &pub), 0);
    hub_flow_close(f);
    hub_conn_close(&member);
    hub_outq_free(&member.out);
    hub_conn_close(&pub);
    hub_outq_free(&pub.out);
}

/* A member that stops reading just under its soft limit (its queue dipped
 * under it once, which restarts the connection's own clock, and never got
 * down to half) still holds its room for its soft hold at most; it then
 * holds no one until it has drained to half its limit. */
static void test_room_dip(void)
{
    struct hub_flow *f = flow_new(0, 0);
    struct hub_conn member, pub;
    hub_conn_init_detached(&member, 0);
    hub_conn_init_detached(&pub, 0);
    member.ops = &soft_3000;
    now = 20000;
    fill(&member, 20000);
    hub_flow_delivered(f, &member, "d", 1);
    hub_flow_publish(f, &pub, "d", 1, 10);
    CHECK_EQ(hub_flow_holds(f, &pub), HUB_FLOW_ROOM);
    /* The dip: 12 KiB queued (over half, under the limit), no soft clock. */
    hub_conn_drop_backlog(&member);
    fill(&member, 12000);
    member.over_soft_since = 0;
    now = 22999;
    hub_flow_poll(f);
    CHECK_EQ(hub_flow_holds(f, &pub), HUB_FLOW_ROOM);
    now = 23000;
    hub_flow_poll(f);
    CHECK_EQ(hub_flow_holds(f, &pub), 0);
    /* Spent: over its limit again, it holds no one. */
    fill(&member, 20000);
    hub_flow_delivered(f, &member, "d", 1);
    hub_flow_publish(f, &pub, "d", 1, 10);
    CHECK_EQ(hub_flow_holds(f, &pub), 0);
    /* Drained to half: it may hold the room again later. */
    hub_conn_drop_backlog(&member);
    hub_flow_poll(f);
    fill(&member, 20000);
    hub_flow_delivered(f, &member, "d", 1);
    hub_flow_publish(f, &pub, "d", 1, 10);
    CHECK_EQ(hub_flow_holds(f, &pub), HUB_FLOW_ROOM);
    hub_flow_forget(f, &member);
    CHECK_EQ(hub_flow_holds(f, &pub), 0);
    struct hub_flow_stats st;
    hub_flow_stats(f, &st);
    CHECK_EQ(st.held, 0);
    CHECK_EQ(st.rooms, 0);
    hub_flow_close(f);
    hub_conn_close(&member);
    hub_outq_free(&member.out);
    hub_conn_close(&pub);
    hub_outq_free(&pub.out);
}

/* Bytes in flight: held past inflight_max, released at half of it. */
static void test_inflight(void)
{
    struct hub_flow *f = flow_new(0, 1000);
    struct hub_conn c;
    hub_conn_init_detached(&c, 0);
    hub_flow_publish(f, &c, "x", 1, 600);
    CHECK_EQ(hub_flow_holds(f, &c), 0);
    hub_flow_publish(f, &c, "x", 1, 600);
    CHECK_EQ(hub_flow_holds(f, &c), HUB_FLOW_INFLIGHT);
    hub_flow_published(f, &c, 600); /* 600 left: over half */
    CHECK_EQ(hub_flow_holds(f, &c), HUB_FLOW_INFLIGHT);
    hub_flow_published(f, &c, 100); /* 500 left */
    CHECK_EQ(hub_flow_holds(f, &c), 0);
    hub_flow_published(f, &c, 10000); /* more than counted: clamps, frees the entry */
    struct hub_flow_stats st;
    hub_flow_stats(f, &st);
    CHECK_EQ(st.held, 0);
    CHECK_EQ(st.holds[2], 1);
    hub_flow_close(f);
    hub_conn_close(&c);
    hub_outq_free(&c.out);
}

/* The global output cap: publishers held above it, released at 3/4. */
static void test_output(void)
{
    struct hub_flow *f = flow_new(1000, 0);
    struct hub_conn c;
    hub_conn_init_detached(&c, 0);
    uint64_t saved = hub_metrics.output_queued;
    hub_metrics.output_queued = 1001;
    hub_flow_publish(f, &c, "x", 1, 1);
    CHECK_EQ(hub_flow_holds(f, &c), HUB_FLOW_OUTPUT);
    hub_metrics.output_queued = 800;
    hub_flow_poll(f);
    CHECK_EQ(hub_flow_holds(f, &c), HUB_FLOW_OUTPUT);
    hub_metrics.output_queued = 750;
    hub_flow_poll(f);
    CHECK_EQ(hub_flow_holds(f, &c), 0);
    hub_metrics.output_queued = saved;
    hub_flow_close(f);
    hub_conn_close(&c);
    hub_outq_free(&c.out);
}

/* Several reasons at once: the connection stays held until the last goes;
 * forgetting a held connection releases everything. NULL flows are no-ops. */
static void test_combined(void)
{
    struct hub_flow *f = flow_new(0, 100);
    struct hub_conn c;
    hub_conn_init_detached(&c, 0);
    now = 0;
    hub_flow_rate_hold(f, &c, 20);
    hub_flow_publish(f, &c, "x", 1, 500);
    CHECK_EQ(hub_flow_holds(f, &c), HUB_FLOW_RATE | HUB_FLOW_INFLIGHT);
    now = 30;
    hub_flow_poll(f);
    CHECK_EQ(hub_flow_holds(f, &c), HUB_FLOW_INFLIGHT);
    hub_flow_forget(f, &c);
    CHECK_EQ(hub_flow_holds(f, &c), 0);
    struct hub_flow_stats st;
    hub_flow_stats(f, &st);
    CHECK_EQ(st.held, 0);
    hub_flow_close(f);
    hub_flow_rate_hold(NULL, &c, 10);
    hub_flow_publish(NULL, &c, "x", 1, 10);
    hub_flow_delivered(NULL, &c, "x", 1);
    hub_flow_forget(NULL, &c);
    hub_flow_close(NULL);
    hub_conn_close(&c);
    hub_outq_free(&c.out);
}

int main(void)
{
    test_rate();
    test_room();
    test_room_hold_expires();
    test_room_dip();
    test_inflight();
    test_output();
    test_combined();
    return CHECK_DONE();
}
