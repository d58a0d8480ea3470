/*
 * flow.c: holds on the connections that send (flow.h).
 *
 * Two kinds of entry, both allocated only while needed:
 * - a flow_conn per connection that has a hold, bytes in flight, or a queue
 *   over its soft limit that congests rooms; found by the connection's
 *   address in a hash table, and linked in a list that the poll walks;
 * - a flow_room per room with at least one congesting member; found by name,
 *   with the list of the publishers it holds.
 *
 * Invariants:
 * - fc->holds != 0 exactly when the flow has asked the connection to pause
 *   (fc->paused), and the connection is paused by the flow's request only
 *   then; hub_conn_pause is called only when that changes.
 * - fc->held_by is set exactly when HUB_FLOW_ROOM is in fc->holds, and fc is
 *   then linked in that room's held list.
 * - room->nmembers counts the flow_conns whose congests array names it; a
 *   room with none is freed at once, releasing its publishers.
 * - An entry with no hold, nothing in flight and no congested room is
 *   freed at once.
 */
#include "hub/flow.h"
#include "hub/hmap.h"
#include "hub/metrics.h"
#include "hub/rooms.h"

#include <stdlib.h>
#include <string.h>

struct flow_room;

struct flow_conn {
    struct hub_hnode node;           /* in f->conns, keyed by conn address */
    struct flow_conn *prev, *next;   /* in f->conn_list */
    struct hub_conn *conn;           /* the connection, borrowed */
    uint64_t rate_due;               /* flow time the rate hold ends, 0 = none */
    size_t inflight;                 /* its bytes on their way through history */
    struct flow_room *held_by;       /* the room that holds it, or NULL */
    struct flow_conn *hprev, *hnext; /* in held_by's held list */
    struct flow_room **congests;     /* owned: rooms its queue congests */
    uint32_t ncongests;              /* entries in congests */
    uint64_t congested_since;        /* flow time its queue first congested a room, 0 = not */
    int spent;                       /* it held rooms for its soft hold: it holds no more
                                        until it drains to half its soft limit */
    unsigned holds;                  /* enum hub_flow_hold bits in force */
    int paused;                      /* the flow asked the connection to pause */
};

struct flow_room {
    struct hub_hnode node;            /* in f->rooms, keyed by name */
    struct flow_room *prev, *next;    /* in f->room_list */
    struct flow_conn *held;           /* publishers it holds */
    uint32_t nmembers;                /* members whose queues congest it */
    size_t len;                       /* bytes in name */
    char name[HUB_ROOM_NAME_MAX + 1]; /* the room's name */
};

struct hub_flow {
    uv_timer_t timer;            /* the poll, running while there are holds */
    uv_loop_t *loop;             /* borrowed, or NULL (no timer) */
    struct hub_flow_config cfg;  /* copied */
    struct hub_hmap conns;       /* flow_conn by connection */
    struct hub_hmap rooms;       /* flow_room by name */
    struct flow_conn *conn_list; /* every flow_conn */
    struct flow_room *room_list; /* every flow_room */
    struct hub_flow_stats stats; /* counters and gauges */
    uint32_t noutput;            /* connections with HUB_FLOW_OUTPUT */
    uint32_t nrate;              /* connections with HUB_FLOW_RATE */
    uint32_t nspent;             /* connections with spent set */
    int running;                 /* the timer is started */
    int closing;                 /* hub_flow_close was called */
};

static uint64_t flow_now(const struct hub_flow *f)
{
    if (f->cfg.now_ms != NULL)
        return f->cfg.now_ms();
    return f->loop != NULL ? uv_now(f->loop) : 0;
}

static uint64_t conn_hash(const struct hub_conn *c)
{
    uintptr_t p = (uintptr_t)c;
    return hub_hash((const char *)&p, sizeof(p), 0);
}

static int conn_eq(const struct hub_hnode *n, const void *key, size_t len)
{
    (void)len;
    return HUB_CONTAINER_OF(n, struct flow_conn, node)->conn == key;
}

static int room_eq(const struct hub_hnode *n, const void *key, size_t len)
{
    const struct flow_room *r = HUB_CONTAINER_OF(n, struct flow_room, node);
    return r->len == len && memcmp(r->name, key, len) == 0;
}

static struct flow_conn *conn_find(const struct hub_flow *f, const struct hub_conn *c)
{
    if (f->conns.count == 0)
        return NULL;
    struct hub_hnode *n = hub_hmap_find(&f->conns, conn_hash(c), c, 0, conn_eq);
    return n != NULL ? HUB_CONTAINER_OF(n, struct flow_conn, node) : NULL;
}

static struct flow_conn *conn_get(struct hub_flow *f, struct hub_conn *c)
{
    struct flow_conn *fc = conn_find(f, c);
    if (fc != NULL)
        return fc;
    fc = calloc(1, sizeof(*fc));
    if (fc == NULL)
        return NULL; /* no hold then: the hub goes on unthrottled rather than fail */
    fc->conn = c;
    hub_hmap_insert(&f->conns, &fc->node, conn_hash(c));
    fc->next = f->conn_list;
    if (f->conn_list != NULL)
        f->conn_list->prev = fc;
    f->conn_list = fc;
    return fc;
}

static struct flow_room *room_find(const struct hub_flow *f, const char *name, size_t len)
{
    if (f->rooms.count == 0)
        return NULL;
    struct hub_hnode *n = hub_hmap_find(&f->rooms, hub_hash(name, len, 0), name, len, room_eq);
    return n != NULL ? HUB_CONTAINER_OF(n, struct flow_room, node) : NULL;
}

static void timer_cb(uv_timer_t *t);

/* Starts the poll if something waits for it, stops it when nothing does. */
static void arm(struct hub_flow *f)
{
    int need = f->rooms.count > 0 || f->nrate > 0 || f->noutput > 0 || f->nspent > 0;
    if (f->loop == NULL || f->closing || need == f->running)
        return;
    if (need)
        uv_timer_start(&f->timer, timer_cb, HUB_FLOW_POLL_MS, HUB_FLOW_POLL_MS);
    else
        uv_timer_stop(&f->timer);
    f->running = need;
}

static void conn_free(struct hub_flow *f, struct flow_conn *fc)
{
    hub_hmap_remove(&f->conns, &fc->node);
    if (fc->prev != NULL)
        fc->prev->next = fc->next;
    else
        f->conn_list = fc->next;
    if (fc->next != NULL)
        fc->next->prev = fc->prev;
    free(fc->congests);
    free(fc);
}

/* Makes the connection's pause match fc->holds, and frees fc once it has
 * nothing left to track. fc must not be used afterwards unless it still
 * has something (a hold, bytes in flight, a congested room). */
static void apply(struct hub_flow *f, struct flow_conn *fc)
{
    int want = fc->holds != 0;
    if (want != fc->paused) {
        fc->paused = want;
        if (want)
            f->stats.held++;
        else
            f->stats.held--;
        /* A failure to read again closes the connection; hub_flow_forget
         * follows from its close path. */
        hub_conn_pause(fc->conn, want);
    }
    if (fc->holds == 0 && fc->inflight == 0 && fc->ncongests == 0 && !fc->spent)
        conn_free(f, fc);
}

static void hold(struct hub_flow *f, struct flow_conn *fc, unsigned why)
{
    if (fc->holds & why)
        return;
    fc->holds |= why;
    for (int i = 0; i < 4; i++)
        if (why == 1u << i)
            f->stats.holds[i]++;
    if (why == HUB_FLOW_RATE)
        f->nrate++;
    if (why == HUB_FLOW_OUTPUT)
        f->noutput++;
}

static void unhold(struct hub_flow *f, struct flow_conn *fc, unsigned why)
{
    if (!(fc->holds & why))
        return;
    fc->holds &= ~why;
    if (why == HUB_FLOW_RATE) {
        f->nrate--;
        fc->rate_due = 0;
    }
    if (why == HUB_FLOW_OUTPUT)
        f->noutput--;
    if (why == HUB_FLOW_ROOM) {
        struct flow_room *r = fc->held_by;
        if (fc->hprev != NULL)
            fc->hprev->hnext = fc->hnext;
        else
            r->held = fc->hnext;
        if (fc->hnext != NULL)
            fc->hnext->hprev = fc->hprev;
        fc->held_by = NULL;
        fc->hprev = fc->hnext = NULL;
    }
}

/* Frees a room that no member congests any more, releasing its publishers. */
static void room_release(struct hub_flow *f, struct flow_room *r)
{
    while (r->held != NULL) {
        struct flow_conn *fc = r->held;
        unhold(f, fc, HUB_FLOW_ROOM);
        apply(f, fc);
    }
    hub_hmap_remove(&f->rooms, &r->node);
    if (r->prev != NULL)
        r->prev->next = r->next;
    else
        f->room_list = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
    f->stats.rooms--;
    free(r);
}

/* fc's queue no longer congests its rooms. */
static void uncongest(struct hub_flow *f, struct flow_conn *fc)
{
    for (uint32_t i = 0; i < fc->ncongests; i++) {
        struct flow_room *r = fc->congests[i];
        if (--r->nmembers == 0)
            room_release(f, r);
    }
    free(fc->congests);
    fc->congests = NULL;
    fc->ncongests = 0;
}

/* A member past its soft hold no longer holds anyone: its next send closes
 * it (4008), and a room must not wait on a member that will not read. The
 * connection's own clock of it restarts whenever its queue dips under the
 * soft limit, so the flow also keeps one (congested_since) that restarts
 * only once the queue is down to half: a member that stops reading just
 * under its soft limit must not hold a room for good either. */
static int past_hold(const struct hub_flow *f, const struct hub_conn *c)
{
    if (c->over_soft_since == 0)
        return 0;
    /* The conn keeps 32-bit times (conn.h): compared by difference. */
    uint32_t now = (uint32_t)(c->io != NULL ? hub_conn_now(c) : flow_now(f));
    return !hub_conn_ms_after(c->over_soft_since, now) &&
           now - c->over_soft_since >= c->ops->soft_hold_ms;
}

int hub_flow_new(struct hub_flow **out, uv_loop_t *loop, const struct hub_flow_config *cfg)
{
    struct hub_flow *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return HUB_ENOMEM;
    f->cfg = *cfg;
    f->loop = loop;
    if (hub_hmap_init(&f->conns, 16) != 0 || hub_hmap_init(&f->rooms, 16) != 0) {
        hub_hmap_destroy(&f->conns);
        free(f);
        return HUB_ENOMEM;
    }
    if (loop != NULL) {
        if (uv_timer_init(loop, &f->timer) != 0) {
            hub_hmap_destroy(&f->conns);
            hub_hmap_destroy(&f->rooms);
            free(f);
            return HUB_EIO;
        }
        f->timer.data = f;
        /* The poll alone must not keep the loop alive. */
        uv_unref((uv_handle_t *)&f->timer);
    }
    *out = f;
    return 0;
}

static void flow_free(struct hub_flow *f)
{
    hub_hmap_destroy(&f->conns);
    hub_hmap_destroy(&f->rooms);
    free(f);
}

static void timer_closed(uv_handle_t *h)
{
    flow_free(h->data);
}

void hub_flow_close(struct hub_flow *f)
{
    if (f == NULL)
        return;
    f->closing = 1;
    while (f->conn_list != NULL)
        hub_flow_forget(f, f->conn_list->conn);
    if (f->loop != NULL)
        uv_close((uv_handle_t *)&f->timer, timer_closed);
    else
        flow_free(f);
}

static void timer_cb(uv_timer_t *t)
{
    hub_flow_poll(t->data);
}

void hub_flow_poll(struct hub_flow *f)
{
    if (f == NULL)
        return;
    uint64_t now = flow_now(f);
    int output_ok = f->cfg.max_total_output == 0 ||
                    hub_metrics.output_queued <= f->cfg.max_total_output / 4 * 3;
    /* Members first: a room that no member congests any more releases its
     * publishers, which the walk then sees without a room hold. The walk
     * keeps the next entry before apply can free the current one; a room
     * release frees only entries that have nothing else, which are ahead
     * of or behind this one in the list, so it restarts after releases. */
    for (struct flow_conn *fc = f->conn_list, *next; fc != NULL; fc = next) {
        next = fc->next;
        if (fc->ncongests == 0)
            continue;
        struct hub_conn *c = fc->conn;
        int drained = c->out.bytes <= c->ops->soft_limit / 2 || hub_conn_closing(c);
        if (drained || past_hold(f, c) || now + 1 - fc->congested_since >= c->ops->soft_hold_ms) {
            uncongest(f, fc);
            fc->congested_since = 0;
            if (!drained && !fc->spent) {
                fc->spent = 1; /* until it drains: see past_hold */
                f->nspent++;
            }
            apply(f, fc);
            next = f->conn_list; /* releases may have freed any entry */
        }
    }
    for (struct flow_conn *fc = f->conn_list, *next; fc != NULL && f->nspent > 0; fc = next) {
        next = fc->next;
        struct hub_conn *c = fc->conn;
        if (fc->spent && (c->out.bytes <= c->ops->soft_limit / 2 || hub_conn_closing(c))) {
            fc->spent = 0;
            f->nspent--;
            apply(f, fc);
        }
    }
    for (struct flow_conn *fc = f->conn_list, *next; fc != NULL; fc = next) {
        next = fc->next;
        unsigned before = fc->holds;
        if ((fc->holds & HUB_FLOW_RATE) && now >= fc->rate_due)
            unhold(f, fc, HUB_FLOW_RATE);
        if ((fc->holds & HUB_FLOW_OUTPUT) && output_ok)
            unhold(f, fc, HUB_FLOW_OUTPUT);
        if (fc->holds != before)
            apply(f, fc);
    }
    arm(f);
}

void hub_flow_rate_hold(struct hub_flow *f, struct hub_conn *c, uint32_t ms)
{
    if (f == NULL || f->closing || ms == 0)
        return;
    struct flow_conn *fc = conn_get(f, c);
    if (fc == NULL)
        return;
    uint64_t due = flow_now(f) + ms;
    if (due > fc->rate_due)
        fc->rate_due = due;
    hold(f, fc, HUB_FLOW_RATE);
    apply(f, fc);
    arm(f);
}

void hub_flow_publish(struct hub_flow *f, struct hub_conn *c, const char *room, size_t len,
                      size_t bytes)
{
    if (f == NULL || f->closing)
        return;
    int output_over =
        f->cfg.max_total_output != 0 && hub_metrics.output_queued > f->cfg.max_total_output;
    struct flow_room *r = room_find(f, room, len);
    if (f->cfg.inflight_max == 0 && r == NULL && !output_over)
        return; /* nothing to count and nothing to hold */
    struct flow_conn *fc = conn_get(f, c);
    if (fc == NULL)
        return;
    if (f->cfg.inflight_max != 0) {
        fc->inflight += bytes;
        if (fc->inflight > f->cfg.inflight_max)
            hold(f, fc, HUB_FLOW_INFLIGHT);
    }
    if (r != NULL && !(fc->holds & HUB_FLOW_ROOM)) {
        hold(f, fc, HUB_FLOW_ROOM);
        fc->held_by = r;
        fc->hnext = r->held;
        if (r->held != NULL)
            r->held->hprev = fc;
        r->held = fc;
    }
    if (output_over)
        hold(f, fc, HUB_FLOW_OUTPUT);
    apply(f, fc);
    arm(f);
}

void hub_flow_published(struct hub_flow *f, struct hub_conn *c, size_t bytes)
{
    if (f == NULL || f->cfg.inflight_max == 0)
        return;
    struct flow_conn *fc = conn_find(f, c);
    if (fc == NULL)
        return;
    fc->inflight -= bytes < fc->inflight ? bytes : fc->inflight;
    if ((fc->holds & HUB_FLOW_INFLIGHT) && fc->inflight <= f->cfg.inflight_max / 2)
        unhold(f, fc, HUB_FLOW_INFLIGHT);
    apply(f, fc);
}

void hub_flow_congested(struct hub_flow *f, struct hub_conn *c, const char *room, size_t len)
{
    if (f == NULL || f->closing || len > HUB_ROOM_NAME_MAX || past_hold(f, c))
        return;
    struct flow_conn *fc = conn_find(f, c);
    struct flow_room *r = room_find(f, room, len);
    if (fc != NULL && fc->spent)
        return; /* it held rooms for its soft hold already */
    if (fc != NULL && r != NULL)
        for (uint32_t i = 0; i < fc->ncongests; i++)
            if (fc->congests[i] == r)
                return; /* known already: the common case while a queue is high */
    if (fc == NULL && (fc = conn_get(f, c)) == NULL)
        return;
    struct flow_room **a = realloc(fc->congests, (fc->ncongests + 1) * sizeof(*a));
    if (a == NULL) {
        apply(f, fc);
        return;
    }
    fc->congests = a;
    if (r == NULL) {
        r = calloc(1, sizeof(*r));
        if (r == NULL) {
            apply(f, fc);
            return;
        }
        memcpy(r->name, room, len);
        r->len = len;
        hub_hmap_insert(&f->rooms, &r->node, hub_hash(room, len, 0));
        r->next = f->room_list;
        if (f->room_list != NULL)
            f->room_list->prev = r;
        f->room_list = r;
        f->stats.rooms++;
    }
    fc->congests[fc->ncongests++] = r;
    if (fc->congested_since == 0)
        fc->congested_since = flow_now(f) + 1; /* + 1: never 0 once set */
    r->nmembers++;
    arm(f);
}

void hub_flow_forget(struct hub_flow *f, struct hub_conn *c)
{
    if (f == NULL)
        return;
    struct flow_conn *fc = conn_find(f, c);
    if (fc == NULL)
        return;
    uncongest(f, fc); /* may release other entries, never fc: it is still tracked */
    unhold(f, fc, HUB_FLOW_RATE);
    unhold(f, fc, HUB_FLOW_OUTPUT);
    unhold(f, fc, HUB_FLOW_ROOM);
    fc->holds = 0;
    if (fc->spent)
        f->nspent--;
    if (fc->paused)
        f->stats.held--;
    conn_free(f, fc); /* the connection is closing: no resume */
    arm(f);
}

void hub_flow_release(struct hub_flow *f, struct hub_conn *c)
{
    struct flow_conn *fc = f != NULL ? conn_find(f, c) : NULL;
    int paused = fc != NULL && fc->paused;
    hub_flow_forget(f, c);
    if (paused)
        hub_conn_pause(c, 0);
}

unsigned hub_flow_holds(const struct hub_flow *f, const struct hub_conn *c)
{
    const struct flow_conn *fc = f != NULL ? conn_find(f, c) : NULL;
    return fc != NULL ? fc->holds : 0;
}

void hub_flow_stats(const struct hub_flow *f, struct hub_flow_stats *out)
{
    if (f == NULL) {
        memset(out, 0, sizeof(*out));
        return;
    }
    *out = f->stats;
}
