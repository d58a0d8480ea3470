/*
 * flow.h: backpressure on the connections that send, instead of drops.
 *
 * The hub slows a sender down rather than lose what it sends or cut its
 * audience: a connection stops being read (hub_conn_pause; TCP then slows
 * the peer) for as long as any of these holds it:
 * - rate: its rate-limit bucket is dry (hub_flow_rate_hold, for a time);
 * - room: it published into a room where a member's output queue is over
 *   that member's soft limit (delivery marks the room, hub_flow_delivered),
 *   until every such member has drained to half its soft limit or has held
 *   it for its soft_hold_ms (counted from when it first congested a room,
 *   and restarted only once it has drained to half; it is closed 4008 by
 *   its next send once over the soft limit that long, as any slow client
 *   is), after which that member holds no one until it has drained to
 *   half: one member that does not read cannot stall a room for good;
 * - inflight: more than inflight_max bytes of its messages are on their way
 *   through the history store (published, not yet delivered), until that
 *   falls to half: what a publisher can put into its room's queues before
 *   the room's congestion shows is bounded by this (the server gives it
 *   half the room between the soft and the hard output limit);
 * - output: the output queued to all connections (hub_metrics.output_queued)
 *   is over max_total_output, until it falls to three quarters of it.
 * Fan-out frames stay shared (one refcounted frame per broadcast), so
 * holding the publishers bounds the memory a flood can take.
 *
 * One uv_timer checks the holds every HUB_FLOW_POLL_MS while there are any;
 * an inflight hold ends from hub_flow_published at once. Entries exist only
 * for connections with a hold, bytes in flight or a congested queue, and
 * for the rooms such queues are in, so an idle hub keeps nothing here.
 *
 * Ownership: the flow never owns a connection; a connection that closes
 * must be forgotten (hub_flow_forget) before its memory goes. Every call
 * accepts f == NULL and then does nothing, so that the chat layer runs
 * without a flow in unit tests. Room names are copied.
 */
#ifndef HUB_FLOW_H
#define HUB_FLOW_H

#include "hub/conn.h"

struct hub_flow;

#define HUB_FLOW_POLL_MS 10 /* how often the holds are checked while there are any */

enum hub_flow_hold {
    HUB_FLOW_RATE = 1u << 0,     /* the rate-limit bucket is dry */
    HUB_FLOW_ROOM = 1u << 1,     /* a room it published into has a member over its soft limit */
    HUB_FLOW_INFLIGHT = 1u << 2, /* too many of its bytes are on their way through history */
    HUB_FLOW_OUTPUT = 1u << 3,   /* the output queued to all connections is over the cap */
};

struct hub_flow_config {
    uint64_t max_total_output; /* output held by all connections before publishers are held
                                  (0 = no limit) */
    size_t inflight_max;       /* bytes per publisher on their way through history (0 = no
                                  limit) */
    uint64_t (*now_ms)(void);  /* a clock in ms for tests (no loop); NULL = the loop's time */
};

struct hub_flow_stats {
    uint64_t holds[4]; /* holds started, by reason: rate, room, inflight, output */
    uint64_t held;     /* connections held now (a gauge) */
    uint64_t rooms;    /* rooms with a member over its soft limit now (a gauge) */
};

/* Creates the flow on loop (NULL: no timer; the caller then calls
 * hub_flow_poll itself, as unit tests do with detached connections). cfg is
 * copied. Returns 0, HUB_ENOMEM or HUB_EIO. */
int hub_flow_new(struct hub_flow **out, uv_loop_t *loop, const struct hub_flow_config *cfg);

/* Releases every hold and frees the flow: at once without a loop, from its
 * timer's close callback with one (run the loop afterwards). NULL is ignored. */
void hub_flow_close(struct hub_flow *f);

/* Ends the holds that are over; the timer calls it every HUB_FLOW_POLL_MS. */
void hub_flow_poll(struct hub_flow *f);

/* c's rate-limit bucket holds no token: do not read c for ms. A longer hold
 * already in force stays. */
void hub_flow_rate_hold(struct hub_flow *f, struct hub_conn *c, uint32_t ms);

/* c published bytes of text into room (name borrowed for the call): counts
 * them in flight and holds c if the room is congested, if c has too much in
 * flight, or if the output of all connections is over the cap. */
void hub_flow_publish(struct hub_flow *f, struct hub_conn *c, const char *room, size_t len,
                      size_t bytes);

/* bytes that c published have been delivered (or failed): no longer in
 * flight. Ends an inflight hold once at most half of inflight_max is left. */
void hub_flow_published(struct hub_flow *f, struct hub_conn *c, size_t bytes);

/* The slow half of hub_flow_delivered: marks room congested by c. */
void hub_flow_congested(struct hub_flow *f, struct hub_conn *c, const char *room, size_t len);

/* A frame was queued to c, a member of room (name borrowed): if c's queue is
 * over its soft limit, the room is congested. Costs one comparison when it
 * is not. */
static inline void hub_flow_delivered(struct hub_flow *f, struct hub_conn *c, const char *room,
                                      size_t len)
{
    if (f != NULL && c->ops->soft_limit != 0 && c->out.bytes > c->ops->soft_limit)
        hub_flow_congested(f, c, room, len);
}

/* c is closing: drops everything the flow knows of it (its holds, its
 * bytes in flight, the rooms its queue congested). */
void hub_flow_forget(struct hub_flow *f, struct hub_conn *c);

/* Like hub_flow_forget, and reads c again if the flow held it: for a
 * connection that must still be heard (the answer to a shutdown's close). */
void hub_flow_release(struct hub_flow *f, struct hub_conn *c);

/* The holds in force on c (enum hub_flow_hold bits), for tests. */
unsigned hub_flow_holds(const struct hub_flow *f, const struct hub_conn *c);

/* Fills *out. */
void hub_flow_stats(const struct hub_flow *f, struct hub_flow_stats *out);

#endif
