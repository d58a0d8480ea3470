/*
 * metrics.h: the hub's counters, exported at GET /metrics in the Prometheus
 * text format.
 *
 * One process-wide instance, written only on the loop thread (the counters
 * are plain integers). Modules bump the counters that belong to their layer:
 * conn counts bytes, ws counts close codes, chat counts messages, the server
 * counts connections and refusals.
 */
#ifndef HUB_METRICS_H
#define HUB_METRICS_H

#include "hub/buf.h"

enum hub_refusal {
    HUB_REFUSE_BAD_HANDSHAKE = 0, /* 400/426: not a valid RFC 6455 upgrade */
    HUB_REFUSE_BAD_ROOM,          /* 400: bad room name in the path */
    HUB_REFUSE_ORIGIN,            /* 403: cross-site Origin */
    HUB_REFUSE_MAX_CONNS,         /* 503: --max-conns reached */
    HUB_REFUSE_PER_IP,            /* 503: per-IP limit reached */
    HUB_REFUSE_DRAINING,          /* 503: shutting down */
    HUB_REFUSE_TIMEOUT,           /* handshake deadline passed */
    HUB_REFUSE_NOMEM,             /* no memory for the connection: accepted and closed */
    HUB_REFUSE_COUNT
};

/* Close codes counted one by one; anything else lands in "other". */
#define HUB_METRICS_CLOSE_CODES                                                                    \
    X(1000) X(1001) X(1002) X(1003) X(1007) X(1008) X(1009) X(1011) X(1012) X(4008) X(4012) X(4013)

struct hub_metrics {
    uint64_t conns_http;                /* connections still speaking HTTP (gauge) */
    uint64_t conns_raw;                 /* raw-mode WebSockets (gauge) */
    uint64_t conns_json;                /* chathub.v1 WebSockets (gauge) */
    uint64_t accepted;                  /* TCP connections accepted */
    uint64_t http_requests;             /* HTTP requests answered */
    uint64_t messages_in;               /* WebSocket messages received */
    uint64_t messages_out;              /* WebSocket messages queued to clients */
    uint64_t bytes_in;                  /* bytes read from sockets */
    uint64_t bytes_out;                 /* bytes written to sockets */
    uint64_t published;                 /* chat messages sequenced into rooms */
    uint64_t raw_dropped;               /* raw lines dropped: the engine was unreachable */
    uint64_t unavailable;               /* requests answered "unavailable" (engine unreachable) */
    uint64_t slow_closes;               /* clients closed for not reading (4008) */
    uint64_t rate_limited;              /* requests refused by the rate limit */
    uint64_t heartbeat_closes;          /* clients dropped for not answering pings */
    uint64_t output_queued;             /* bytes queued to all connections, unsent (gauge) */
    uint64_t read_pauses;               /* times a connection stopped being read: output over
                                           its high watermark */
    uint64_t refused[HUB_REFUSE_COUNT]; /* refused handshakes by reason */
#define X(code) uint64_t close_##code;
    HUB_METRICS_CLOSE_CODES
#undef X
    uint64_t close_other; /* other close codes sent */
};

extern struct hub_metrics hub_metrics;

/* Counts a close frame the hub sent with code. */
void hub_metrics_close(uint16_t code);

/* Appends the Prometheus text exposition (format 0.0.4) of every counter,
 * plus the gauges given here, to b. Returns 0 or HUB_ENOMEM. */
int hub_metrics_render(struct hub_buf *b, size_t rooms, int draining);

#endif
