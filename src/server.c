/*
 * server.c: accept, route, enforce the connection policies, shut down.
 *
 * Each accepted socket gets a struct client that embeds its hub_conn. The
 * client starts in HTTP (a hub_http); a valid upgrade replaces that with a
 * hub_ws and a hub_chat_client, and the bytes that arrived behind the request
 * are fed straight to the WebSocket. The client is freed only from the
 * connection's close callback.
 *
 * Every connection has one deadline in the io's timer wheel, whose meaning
 * depends on its phase: in HTTP, the next request must be complete within
 * handshake_ms (slowloris); on a WebSocket, a ping goes out every
 * ping_interval_ms and the peer must send something, anything, within
 * pong_timeout_ms of it; once a close frame is out, the peer has a few
 * seconds to answer it before the socket is cut.
 *
 * Shutdown (signal or hub_server_shutdown): the listener closes, /healthz
 * answers 503, plain HTTP connections close, raw WebSockets get 1001, and
 * JSON clients get a bye push with a jittered retry delay and close 1012, in
 * batches so that they do not all reconnect to the next server at once.
 * Whoever has not finished the close handshake after drain_ms is cut; a
 * second signal cuts everyone at once. When the last client is gone the
 * server closes its own handles so that uv_run returns and uv_loop_close
 * succeeds. There is no list of clients: the shutdown finds them by walking
 * the loop's handles.
 */
#include "hub/server.h"
#include "hub/chat.h"
#include "hub/conn.h"
#include "hub/flow.h"
#include "hub/history.h"
#include "hub/http.h"
#include "hub/log.h"
#include "hub/metrics.h"
#include "hub/origin.h"
#include "hub/static.h"
#include "hub/ws.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef HUB_VERSION
#define HUB_VERSION "0.0.0"
#endif

#define DRAIN_BATCH 500      /* WebSockets told to go per drain step */
#define DRAIN_STEP_MS 50     /* time between drain steps */
#define RETRY_MIN_MS 1000    /* bye: earliest suggested reconnect */
#define RETRY_SPREAD_MS 4000 /* bye: spread of the suggested reconnects */

/* Connections per peer address: per IPv4 address, per IPv6 /64
 * (hub_conn_addr_key). */
struct ip_count {
    struct ip_count *next;           /* hash chain */
    uint32_t n;                      /* open connections */
    char ip[HUB_CONN_ADDR_KEY_SIZE]; /* the address's limit key */
};

struct hub_server {
    uv_loop_t *loop;                  /* borrowed */
    uv_tcp_t listener;                /* the listening socket */
    uv_signal_t sigint;               /* SIGINT handler */
    uv_signal_t sigterm;              /* SIGTERM handler */
    uv_timer_t drain_timer;           /* paces the drain, then bounds it */
    uv_timer_t tick;                  /* once a second: chat's deferred work */
    struct hub_io *io;                /* loop-wide connection state, owned */
    struct hub_static *site;          /* files served, owned */
    struct hub_history *history;      /* message store, owned */
    struct hub_chat *chat;            /* chat state, owned */
    struct hub_flow *flow;            /* backpressure on senders, owned (freed by its close) */
    struct hub_http_config http_cfg;  /* per-connection HTTP limits */
    struct hub_ws_config ws_cfg;      /* per-connection WebSocket limits */
    struct hub_origin_policy origins; /* --allow-origin patterns */
    struct hub_server_config cfg;     /* copied configuration */
    struct ip_count *ips[256];        /* connections per address */
    int port;                         /* bound port */
    size_t nclients;                  /* connections not yet closed */
    int stopping;                     /* shutdown has begun */
    int listening;                    /* the listener is open */
    int nhandles;                     /* start-up: handles initialised so far */
    uint64_t drain_deadline;          /* loop time when the drain gives up */
    uint64_t rng;                     /* jitter for bye retry delays */
    uint64_t raw_rooms_refused;       /* raw upgrades answered 503 by --max-total-rooms */
    struct sockaddr_storage bound;    /* the address the listener is bound to */
};

enum client_phase {
    PHASE_HTTP, /* speaking HTTP */
    PHASE_RAW,  /* raw-mode WebSocket */
    PHASE_JSON, /* chathub.v1 WebSocket */
};

struct client {
    struct hub_conn conn;         /* the socket, embedded */
    struct hub_server *server;    /* borrowed */
    struct hub_http *http;        /* HTTP state until the upgrade, owned */
    struct hub_ws *ws;            /* WebSocket state after it, owned */
    struct hub_chat_client *chat; /* chat membership, owned */
    struct ip_count *ip;          /* this address's counter, borrowed */
    uint64_t ping_sent;           /* loop time of the unanswered ping, 0 = none */
    int phase;                    /* enum client_phase */
    int told_to_go;               /* drain: close already started */
    uint32_t requests;            /* HTTP requests answered on this connection */
};

void hub_server_config_default(struct hub_server_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->host = "0.0.0.0";
    cfg->port = 8080;
    cfg->max_message = 64 * 1024;
    cfg->max_fragments = 128;
    cfg->max_header_bytes = 8192;
    cfg->max_headers = 100;
    cfg->max_output = 1024 * 1024;
    cfg->soft_output = 256 * 1024;
    cfg->soft_hold_ms = 10000;
    cfg->handshake_ms = 10000;
    cfg->ping_interval_ms = 25000;
    cfg->pong_timeout_ms = 10000;
    cfg->drain_ms = 10000;
    cfg->max_conns = 100000;
    cfg->max_conns_per_ip = 64;
    cfg->max_rooms = 64;
    cfg->rate = 20;
    cfg->burst = 40;
    cfg->data_dir = "./chathub-data";
    cfg->persist = 1;
    cfg->history = 1000;
    cfg->history_max_bytes = HUB_HISTORY_DISK_MAX_BYTES_DEFAULT;
    cfg->max_total_rooms = 10000;
    cfg->max_total_output = 256u << 20;
}

static uint64_t *phase_gauge(int phase)
{
    return phase == PHASE_HTTP  ? &hub_metrics.conns_http
           : phase == PHASE_RAW ? &hub_metrics.conns_raw
                                : &hub_metrics.conns_json;
}

static void set_phase(struct client *cl, int phase)
{
    (*phase_gauge(cl->phase))--;
    cl->phase = phase;
    (*phase_gauge(phase))++;
}

/* ---- per-address counts --------------------------------------------- */

static struct ip_count **ip_slot(struct hub_server *s, const char *ip)
{
    uint64_t h = hub_hash(ip, strlen(ip), 0);
    struct ip_count **pp = &s->ips[h % HUB_ARRAY_SIZE(s->ips)];
    while (*pp != NULL && strcmp((*pp)->ip, ip) != 0)
        pp = &(*pp)->next;
    return pp;
}

/* Counts one more connection from cl's address. Returns 0, or HUB_ELIMIT
 * when the address already has max_conns_per_ip. */
static int ip_acquire(struct client *cl)
{
    struct hub_server *s = cl->server;
    char peer[HUB_CONN_ADDR_KEY_SIZE];
    /* A peer whose address cannot be had counts under "?". */
    hub_conn_peer_key(&cl->conn, peer, sizeof(peer));
    struct ip_count **pp = ip_slot(s, peer);
    if (*pp == NULL) {
        struct ip_count *e = calloc(1, sizeof(*e));
        if (e == NULL)
            return HUB_ENOMEM;
        memcpy(e->ip, peer, sizeof(e->ip));
        *pp = e;
    }
    if (s->cfg.max_conns_per_ip != 0 && (*pp)->n >= s->cfg.max_conns_per_ip)
        return HUB_ELIMIT;
    (*pp)->n++;
    cl->ip = *pp;
    return 0;
}

static void ip_release(struct client *cl)
{
    if (cl->ip == NULL)
        return;
    if (--cl->ip->n == 0) {
        struct ip_count **pp = ip_slot(cl->server, cl->ip->ip);
        *pp = cl->ip->next;
        free(cl->ip);
    }
    cl->ip = NULL;
}

/* ---- lifetime ------------------------------------------------------- */

static void server_handle_closed(uv_handle_t *h)
{
    (void)h;
}

/* Closes the server's own handles so that the loop can end. */
static void server_close_handles(struct hub_server *s)
{
    uv_close((uv_handle_t *)&s->drain_timer, server_handle_closed);
    uv_close((uv_handle_t *)&s->tick, server_handle_closed);
    uv_close((uv_handle_t *)&s->sigint, server_handle_closed);
    uv_close((uv_handle_t *)&s->sigterm, server_handle_closed);
    /* Closing the handles gives the signals their default action back; the
     * hub is finishing anyway, and a late SIGTERM must not turn a clean exit
     * into death by signal. (signal() is standard C, on Windows too.) */
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    hub_io_close(s->io);
    s->io = NULL;
    hub_flow_close(s->flow);
    s->flow = NULL;
}

/* Start-up failed after hub_io_init: closes the handles initialised so far
 * (s->nhandles of listener, sigint, sigterm, drain_timer, tick) and the io. */
static void server_close_some(struct hub_server *s)
{
    uv_handle_t *hs[] = {(uv_handle_t *)&s->listener, (uv_handle_t *)&s->sigint,
                         (uv_handle_t *)&s->sigterm, (uv_handle_t *)&s->drain_timer,
                         (uv_handle_t *)&s->tick};
    for (int i = 0; i < s->nhandles; i++)
        uv_close(hs[i], server_handle_closed);
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    hub_io_close(s->io);
    s->io = NULL;
}

static void history_closed(void *data)
{
    server_close_handles(data);
}

static void stop_listening(struct hub_server *s)
{
    if (!s->listening)
        return;
    s->listening = 0;
    uv_close((uv_handle_t *)&s->listener, server_handle_closed);
}

/* Shutdown, last client gone: make history durable, then let the loop end. */
static void server_finish(struct hub_server *s)
{
    stop_listening(s);
    hub_log_info("flushing history");
    hub_history_close(s->history, history_closed, s);
}

static void client_on_close(struct hub_conn *c)
{
    struct client *cl = HUB_CONTAINER_OF(c, struct client, conn);
    struct hub_server *s = cl->server;
    hub_flow_forget(s->flow, c);
    hub_chat_client_free(cl->chat);
    hub_ws_free(cl->ws);
    hub_http_free(cl->http);
    ip_release(cl);
    (*phase_gauge(cl->phase))--;
    free(cl);
    s->nclients--;
    if (s->stopping && s->nclients == 0)
        server_finish(s);
}

/* ---- WebSocket phase -------------------------------------------------- */

static void client_on_ws_message(struct hub_ws *ws, int opcode, const char *data, size_t len,
                                 void *user)
{
    struct client *cl = user;
    hub_chat_client_message(cl->chat, opcode, data, len);
}

/* The one deadline of a connection passed; what it means depends on the
 * phase (see the file comment). */
static void client_on_timeout(struct hub_conn *c)
{
    struct client *cl = HUB_CONTAINER_OF(c, struct client, conn);
    struct hub_server *s = cl->server;
    if (cl->ws == NULL) {
        hub_metrics.refused[HUB_REFUSE_TIMEOUT]++;
        hub_log_debug("%s: request not complete in time", hub_conn_peer(c));
        hub_conn_close(c);
        return;
    }
    if (hub_ws_close_sent(cl->ws)) {
        hub_conn_close(c); /* the close handshake went unanswered */
        return;
    }
    uint64_t now = hub_conn_now(c);
    /* A connection the hub itself does not read (flow.h) cannot show that
     * it is alive: its silence is not held against it. */
    if (cl->ping_sent != 0 && c->last_rx < cl->ping_sent && !(c->flags & HUB_CONN_PAUSED_OWNER)) {
        /* Not a single byte since our ping: the peer or the path is dead. */
        hub_metrics.heartbeat_closes++;
        hub_log_debug("%s: no answer to ping, closing", hub_conn_peer(c));
        hub_conn_close(c);
        return;
    }
    if (cl->ping_sent != 0) {
        cl->ping_sent = 0;
        hub_conn_set_timeout(c, s->cfg.ping_interval_ms - s->cfg.pong_timeout_ms);
        return;
    }
    cl->ping_sent = now;
    hub_ws_ping(cl->ws);
    hub_conn_set_timeout(c, s->cfg.pong_timeout_ms);
}

/* Refuses a request with status and counts why. */
static int refuse(struct hub_http *h, int status, int reason)
{
    hub_metrics.refused[reason]++;
    hub_http_respond_status(h, status);
    return HUB_HTTP_DONE;
}

/* Answers an upgrade request: validation, policies, room, 101, WebSocket. */
static int client_upgrade(struct client *cl, struct hub_http *h, const struct hub_http_request *req)
{
    struct hub_server *s = cl->server;
    if (s->stopping)
        return refuse(h, 503, HUB_REFUSE_DRAINING);
    int status = hub_http_check_websocket(req);
    if (status != 0)
        return refuse(h, status, HUB_REFUSE_BAD_HANDSHAKE);
    if (!hub_origin_allowed(&s->origins, req->origin, req->host)) {
        hub_log_info("%s: refused cross-site WebSocket from origin %.*s", hub_conn_peer(&cl->conn),
                     (int)(req->origin.len > 200 ? 200 : req->origin.len), req->origin.base);
        return refuse(h, 403, HUB_REFUSE_ORIGIN);
    }
    struct hub_iov room;
    if (hub_chat_room_from_path(req->path, &room) != 0) {
        hub_metrics.refused[HUB_REFUSE_BAD_ROOM]++;
        static const char msg[] =
            "400 Bad Request: room names are 1-64 characters of A-Z a-z 0-9 _ . : -\n";
        hub_http_respond(h, 400, "text/plain; charset=utf-8", NULL, msg, sizeof(msg) - 1);
        return HUB_HTTP_DONE;
    }
    int json = hub_iov_has_token(req->ws_protocol, "chathub.v1");
    if (!json && !hub_chat_room_admits(s->chat, room)) {
        /* --max-total-rooms: a raw client would create a room past it. */
        hub_log_info("%s: refused a new room: --max-total-rooms %u reached",
                     hub_conn_peer(&cl->conn), s->cfg.max_total_rooms);
        s->raw_rooms_refused++;
        static const char msg[] = "503 too many rooms on this hub; try again later\n";
        hub_http_respond(h, 503, "text/plain; charset=utf-8", "Retry-After: 30\r\n", msg,
                         sizeof(msg) - 1);
        return HUB_HTTP_DONE;
    }
    cl->ws = hub_ws_new(&cl->conn, &s->ws_cfg, client_on_ws_message, cl);
    if (cl->ws == NULL)
        return refuse(h, 503, HUB_REFUSE_MAX_CONNS);
    /* Offering chathub.v1 selects the JSON protocol; anything else (or no
     * subprotocol) is raw mode, and the 101 then names no subprotocol. */
    if (hub_http_accept_websocket(h, req, json ? "chathub.v1" : NULL) != 0) {
        hub_ws_free(cl->ws);
        cl->ws = NULL;
        return HUB_HTTP_DONE;
    }
    set_phase(cl, json ? PHASE_JSON : PHASE_RAW);
    hub_conn_set_soft_limit(&cl->conn, s->cfg.soft_output, s->cfg.soft_hold_ms);
    hub_conn_set_timeout(&cl->conn, s->cfg.ping_interval_ms);
    cl->chat = hub_chat_client_new(s->chat, cl->ws, json ? HUB_CHAT_JSON : HUB_CHAT_RAW, room);
    if (cl->chat == NULL)
        hub_ws_close(cl->ws, HUB_WS_INTERNAL_ERROR, "out of memory");
    return HUB_HTTP_UPGRADED;
}

/* ---- HTTP phase -------------------------------------------------------- */

/* The /metrics rows of the history store's budget and of the global caps
 * (issue 14), appended after the common ones. */
static void render_limits(struct hub_server *s, struct hub_buf *b)
{
    struct hub_history_stats hs;
    hub_history_stats(s->history, &hs);
    uint64_t max = s->cfg.history_max_bytes;
    hub_buf_printf(b,
                   "# HELP chathub_history_bytes Bytes the history store counts against its "
                   "budget (SQLite: its files on disk).\n# TYPE chathub_history_bytes gauge\n"
                   "chathub_history_bytes %llu\n"
                   "# HELP chathub_history_max_bytes The history store's byte budget (0 = none).\n"
                   "# TYPE chathub_history_max_bytes gauge\nchathub_history_max_bytes %llu\n"
                   "# HELP chathub_history_rooms Rooms the history store holds a stream for.\n"
                   "# TYPE chathub_history_rooms gauge\nchathub_history_rooms %llu\n"
                   "# HELP chathub_history_messages Messages the history store holds.\n"
                   "# TYPE chathub_history_messages gauge\nchathub_history_messages %llu\n"
                   "# HELP chathub_history_dropped_total Messages dropped to keep the budget.\n"
                   "# TYPE chathub_history_dropped_total counter\n"
                   "chathub_history_dropped_total %llu\n",
                   (unsigned long long)hs.bytes, (unsigned long long)max,
                   (unsigned long long)hs.rooms, (unsigned long long)hs.messages,
                   (unsigned long long)hs.dropped);
    struct hub_flow_stats fs;
    hub_flow_stats(s->flow, &fs);
    hub_buf_printf(b,
                   "# HELP chathub_rooms_refused_total Joins and raw upgrades refused by "
                   "--max-total-rooms.\n# TYPE chathub_rooms_refused_total counter\n"
                   "chathub_rooms_refused_total %llu\n"
                   "# HELP chathub_max_total_rooms The --max-total-rooms cap (0 = none).\n"
                   "# TYPE chathub_max_total_rooms gauge\nchathub_max_total_rooms %u\n"
                   "# HELP chathub_max_total_output_bytes The --max-total-output cap (0 = none).\n"
                   "# TYPE chathub_max_total_output_bytes gauge\n"
                   "chathub_max_total_output_bytes %llu\n"
                   "# HELP chathub_flow_holds_total Times a sender stopped being read, by reason.\n"
                   "# TYPE chathub_flow_holds_total counter\n"
                   "chathub_flow_holds_total{reason=\"rate\"} %llu\n"
                   "chathub_flow_holds_total{reason=\"room\"} %llu\n"
                   "chathub_flow_holds_total{reason=\"inflight\"} %llu\n"
                   "chathub_flow_holds_total{reason=\"output\"} %llu\n"
                   "# HELP chathub_flow_held Connections not being read now (backpressure).\n"
                   "# TYPE chathub_flow_held gauge\nchathub_flow_held %llu\n"
                   "# HELP chathub_flow_congested_rooms Rooms with a member over --soft-output.\n"
                   "# TYPE chathub_flow_congested_rooms gauge\nchathub_flow_congested_rooms %llu\n",
                   (unsigned long long)(hub_chat_rooms_refused(s->chat) + s->raw_rooms_refused),
                   s->cfg.max_total_rooms, (unsigned long long)s->cfg.max_total_output,
                   (unsigned long long)fs.holds[0], (unsigned long long)fs.holds[1],
                   (unsigned long long)fs.holds[2], (unsigned long long)fs.holds[3],
                   (unsigned long long)fs.held, (unsigned long long)fs.rooms);
}

static int client_on_request(struct hub_http *h, const struct hub_http_request *req, void *data)
{
    struct client *cl = data;
    struct hub_server *s = cl->server;
    hub_metrics.http_requests++;
    cl->requests++;
    /* The next request on this connection gets a fresh deadline. */
    hub_conn_set_timeout(&cl->conn, s->cfg.handshake_ms);
    if (req->upgrade_hdr.len > 0 || req->upgrade)
        return client_upgrade(cl, h, req);
    if (req->method == HUB_HTTP_OTHER)
        return HUB_HTTP_PASS; /* 405 from the static handler */
    if (hub_iov_eq_ci(req->path, "/healthz")) {
        if (s->stopping)
            hub_http_respond(h, 503, "text/plain; charset=utf-8", "Retry-After: 5\r\n",
                             "draining\n", 9);
        else
            hub_http_respond(h, 200, "text/plain; charset=utf-8", NULL, "ok\n", 3);
        return HUB_HTTP_DONE;
    }
    if (hub_iov_eq_ci(req->path, "/metrics")) {
        struct hub_buf b = {0};
        hub_metrics_render(&b, hub_chat_room_count(s->chat), s->stopping);
        render_limits(s, &b);
        hub_http_respond(h, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, b.data, b.len);
        hub_buf_free(&b);
        return HUB_HTTP_DONE;
    }
    return HUB_HTTP_PASS;
}

static void client_on_read(struct hub_conn *c, const char *data, size_t len)
{
    struct client *cl = HUB_CONTAINER_OF(c, struct client, conn);
    if (cl->http != NULL) {
        size_t used = 0;
        int r = hub_http_feed(cl->http, data, len, &used);
        if (r != HUB_HTTP_SWITCH)
            return;
        hub_http_free(cl->http);
        cl->http = NULL;
        data += used;
        len -= used;
        if (cl->ws == NULL || len == 0)
            return;
    }
    if (cl->ws != NULL)
        hub_ws_feed(cl->ws, data, len);
}

/* Answers a connection the hub cannot take and lets it go. */
static void client_turn_away(struct client *cl, int reason)
{
    static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\n"
                               "Server: chathub\r\n"
                               "Content-Type: text/plain; charset=utf-8\r\n"
                               "Content-Length: 25\r\n"
                               "Retry-After: 5\r\n"
                               "Connection: close\r\n\r\n"
                               "503 too many connections\n";
    hub_metrics.refused[reason]++;
    hub_conn_write_force(&cl->conn, busy, sizeof(busy) - 1);
    hub_conn_close_after_flush(&cl->conn);
}

static void server_on_connection(uv_stream_t *listener, int status)
{
    struct hub_server *s = listener->data;
    if (status < 0) {
        hub_log_warn("accept failed: %s", uv_strerror(status));
        return;
    }
    /* A connection callback that returns without uv_accept leaves libuv no
     * longer watching the listener, so a connection that cannot be served
     * is accepted and closed at once (as nginx and Redis do). */
    struct client *cl = calloc(1, sizeof(*cl));
    if (cl == NULL || hub_conn_init(&cl->conn, s->io, s->cfg.max_output) != 0) {
        free(cl);
        hub_metrics.refused[HUB_REFUSE_NOMEM]++;
        hub_log_warn("no memory for a new connection: closing it");
        hub_io_reject(s->io, listener);
        return;
    }
    cl->server = s;
    cl->phase = PHASE_HTTP;
    hub_metrics.conns_http++;
    hub_metrics.accepted++;
    cl->conn.on_read = client_on_read;
    cl->conn.on_close = client_on_close;
    cl->conn.on_timeout = client_on_timeout;
    s->nclients++;
    if (hub_conn_accept(&cl->conn, listener) != 0) {
        hub_conn_close(&cl->conn);
        return;
    }
    if (s->cfg.max_conns != 0 && s->nclients > s->cfg.max_conns) {
        client_turn_away(cl, HUB_REFUSE_MAX_CONNS);
        return;
    }
    int rc = ip_acquire(cl);
    if (rc != 0) {
        if (rc == HUB_ELIMIT)
            hub_log_info("%s: over --max-conns-per-ip %u", hub_conn_peer(&cl->conn),
                         s->cfg.max_conns_per_ip);
        client_turn_away(cl, HUB_REFUSE_PER_IP);
        return;
    }
    cl->http = hub_http_new(&cl->conn, &s->http_cfg, client_on_request, cl);
    if (cl->http == NULL) {
        hub_conn_close(&cl->conn);
        return;
    }
    hub_conn_set_timeout(&cl->conn, s->cfg.handshake_ms);
}

/* ---- shutdown ----------------------------------------------------------- */

static uint32_t next_random(struct hub_server *s)
{
    /* xorshift64: jitter needs spread, not secrecy. */
    s->rng ^= s->rng << 13;
    s->rng ^= s->rng >> 7;
    s->rng ^= s->rng << 17;
    return (uint32_t)(s->rng >> 32);
}

/* Starts the close of one client for the drain. */
static void tell_to_go(struct hub_server *s, struct client *cl)
{
    if (cl->ws == NULL) {
        /* A connection that has not had an answer yet may be a health check
         * on its way; it is let go once it has had one. */
        if (cl->requests == 0)
            return;
        cl->told_to_go = 1;
        hub_conn_close_after_flush(&cl->conn);
        return;
    }
    cl->told_to_go = 1;
    /* A sender held back by the flow must be read again to hear its answer
     * to the close; nothing it sends now is relayed. */
    hub_flow_release(s->flow, &cl->conn);
    if (hub_ws_close_sent(cl->ws))
        return;
    if (cl->phase == PHASE_JSON) {
        char bye[128];
        int n = snprintf(bye, sizeof(bye),
                         "{\"t\":\"bye\",\"code\":1012,\"reason\":\"server restart\","
                         "\"retry_ms\":%u}",
                         RETRY_MIN_MS + next_random(s) % RETRY_SPREAD_MS);
        hub_ws_send(cl->ws, HUB_WS_TEXT, bye, (size_t)n);
        hub_ws_close(cl->ws, HUB_WS_SERVICE_RESTART, "server restart");
    } else {
        hub_ws_close(cl->ws, HUB_WS_GOING_AWAY, "server shutting down");
    }
}

struct drain_walk {
    struct hub_server *s; /* the server */
    int budget;           /* clients still to tell in this step */
    int cut;              /* close everyone now */
};

static void drain_walk_cb(uv_handle_t *h, void *arg)
{
    struct drain_walk *w = arg;
    if (h->type != UV_TCP || h == (uv_handle_t *)&w->s->listener || uv_is_closing(h))
        return;
    struct client *cl = HUB_CONTAINER_OF(h->data, struct client, conn);
    if (w->cut) {
        hub_conn_close(&cl->conn);
    } else if (!cl->told_to_go && w->budget > 0) {
        w->budget--;
        tell_to_go(w->s, cl);
    }
}

/* One drain step: tell the next batch to go, or cut the rest once the
 * deadline has passed. Steps repeat while clients remain, because HTTP
 * connections become ready to go as they get their answers. */
static void drain_timer_cb(uv_timer_t *t)
{
    struct hub_server *s = t->data;
    struct drain_walk w = {s, DRAIN_BATCH, uv_now(s->loop) >= s->drain_deadline};
    if (w.cut) {
        hub_log_warn("drain timeout: closing %zu remaining connections", s->nclients);
        stop_listening(s);
    }
    uv_walk(s->loop, drain_walk_cb, &w);
    if (!w.cut)
        uv_timer_start(&s->drain_timer, drain_timer_cb, DRAIN_STEP_MS, 0);
}

void hub_server_shutdown(struct hub_server *s)
{
    if (s->stopping)
        return;
    s->stopping = 1;
    hub_log_info("shutting down: closing %zu connections", s->nclients);
    if (s->nclients == 0) {
        server_finish(s);
        return;
    }
    s->drain_deadline = uv_now(s->loop) + s->cfg.drain_ms;
    drain_timer_cb(&s->drain_timer);
}

static void tick_cb(uv_timer_t *t)
{
    struct hub_server *s = t->data;
    hub_chat_tick(s->chat);
}

static void server_on_signal(uv_signal_t *sig, int signum)
{
    struct hub_server *s = sig->data;
    if (s->stopping) {
        /* A second signal: the operator wants out now. */
        hub_log_warn("second signal: closing every connection now");
        stop_listening(s);
        struct drain_walk w = {s, 0, 1};
        uv_walk(s->loop, drain_walk_cb, &w);
        return;
    }
    hub_server_shutdown(s);
}

/* ---- start-up ---------------------------------------------------------- */

static int server_bind(struct hub_server *s, char *err, size_t errsz)
{
    char port[16];
    snprintf(port, sizeof(port), "%d", s->cfg.port);
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    uv_getaddrinfo_t req;
    /* Synchronous (no callback): this runs once at start, before the loop. */
    int rc = uv_getaddrinfo(s->loop, &req, NULL, s->cfg.host, port, &hints);
    if (rc != 0) {
        snprintf(err, errsz, "cannot resolve --host %s: %s", s->cfg.host, uv_strerror(rc));
        return HUB_EIO;
    }
    rc = uv_tcp_bind(&s->listener, req.addrinfo->ai_addr, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&s->listener, 4096, server_on_connection);
    uv_freeaddrinfo(req.addrinfo);
    if (rc != 0) {
        snprintf(err, errsz, "cannot listen on %s:%d: %s", s->cfg.host, s->cfg.port,
                 uv_strerror(rc));
        return HUB_EIO;
    }
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    rc = uv_tcp_getsockname(&s->listener, (struct sockaddr *)&ss, &len);
    if (rc != 0) {
        snprintf(err, errsz, "cannot read the bound address of %s:%d: %s", s->cfg.host, s->cfg.port,
                 uv_strerror(rc));
        return HUB_EIO;
    }
    s->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                             : ((struct sockaddr_in *)&ss)->sin_port);
    s->bound = ss;
    return 0;
}

int hub_server_new(struct hub_server **out, uv_loop_t *loop, const struct hub_server_config *cfg,
                   char *err, size_t errsz)
{
    int rc = HUB_ENOMEM;
    if (cfg->pong_timeout_ms >= cfg->ping_interval_ms) {
        /* The ping timer is re-armed for ping_interval - pong_timeout once
         * the pong window closes, which must be a positive time. */
        snprintf(err, errsz, "--pong-timeout (%u ms) must be shorter than --ping-interval (%u ms)",
                 cfg->pong_timeout_ms, cfg->ping_interval_ms);
        return HUB_EINVAL;
    }
    snprintf(err, errsz, "out of memory");
    struct hub_server *s = calloc(1, sizeof(*s));
    if (s == NULL)
        goto fail;
    s->loop = loop;
    s->cfg = *cfg;
    s->origins.allow = cfg->allow_origins;
    s->origins.n = cfg->nallow_origins;
    s->rng = uv_hrtime() | 1;
    rc = cfg->public_dir ? hub_static_open_dir(&s->site, cfg->public_dir)
                         : hub_static_open_embedded(&s->site);
    if (rc != 0) {
        snprintf(err, errsz, "cannot serve --public %s: %s", cfg->public_dir ? cfg->public_dir : "",
                 hub_strerror(rc));
        goto fail_free;
    }
    /* What one publisher may have on its way through history before the
     * congestion it causes shows: a member just under its soft limit must
     * still have room for it under the hard one. Half that room, so that two
     * publishers at once fit too; at least 64 KiB, so that history's group
     * commit still has something to batch. */
    size_t headroom = cfg->max_output > cfg->soft_output ? cfg->max_output - cfg->soft_output : 0;
    struct hub_flow_config flow_cfg = {
        .max_total_output = cfg->max_total_output,
        .inflight_max = headroom / 2 > 65536 ? headroom / 2 : 65536,
    };
    rc = hub_flow_new(&s->flow, loop, &flow_cfg);
    if (rc != 0)
        goto fail_site;
    struct hub_history_config hist_cfg;
    hub_history_config_default(&hist_cfg);
    hist_cfg.max_per_room = cfg->history;
    hist_cfg.ttl_ms = (int64_t)cfg->history_ttl_s * 1000;
    hist_cfg.max_bytes = cfg->history_max_bytes; /* on disk, or in memory with --no-persist */
    if (cfg->persist)
        rc = hub_history_open_sqlite(&s->history, loop, cfg->data_dir, &hist_cfg, err, errsz);
    else
        rc = hub_history_open_memory(&s->history, &hist_cfg);
    if (rc != 0)
        goto fail_flow;
    struct hub_chat_config chat_cfg;
    hub_chat_config_default(&chat_cfg);
    chat_cfg.welcome = cfg->welcome;
    chat_cfg.server_name = "chathub " HUB_VERSION;
    chat_cfg.history = s->history;
    chat_cfg.max_message = cfg->max_message;
    chat_cfg.max_rooms_per_client = cfg->max_rooms;
    chat_cfg.history_max_rooms_kept = hist_cfg.max_per_room;
    chat_cfg.rate = cfg->rate;
    chat_cfg.ping_interval_s = cfg->ping_interval_ms / 1000;
    chat_cfg.burst = cfg->burst;
    chat_cfg.flow = s->flow;
    chat_cfg.max_total_rooms = cfg->max_total_rooms;
    rc = hub_chat_new(&s->chat, &chat_cfg);
    if (rc != 0)
        goto fail_history;
    hub_http_config_default(&s->http_cfg);
    s->http_cfg.site = s->site;
    s->http_cfg.max_header_bytes = cfg->max_header_bytes;
    s->http_cfg.max_headers = cfg->max_headers;
    hub_ws_config_default(&s->ws_cfg);
    s->ws_cfg.max_message = cfg->max_message;
    s->ws_cfg.max_fragments = cfg->max_fragments;
    rc = hub_io_init(&s->io, loop);
    if (rc != 0) {
        snprintf(err, errsz, "cannot set up the event loop: %s", hub_strerror(rc));
        s->io = NULL;
        goto fail_chat;
    }
    /* The handles are initialised in order; each one that is must be
     * closed, so a failure closes exactly those (see fail_handles). These
     * calls do not fail on libuv's platforms, but are checked all the same. */
    int uvrc = uv_tcp_init(loop, &s->listener);
    if (uvrc == 0) {
        s->nhandles = 1;
        uvrc = uv_signal_init(loop, &s->sigint);
    }
    if (uvrc == 0) {
        s->nhandles = 2;
        uvrc = uv_signal_init(loop, &s->sigterm);
    }
    if (uvrc == 0) {
        s->nhandles = 3;
        uvrc = uv_timer_init(loop, &s->drain_timer);
    }
    if (uvrc == 0) {
        s->nhandles = 4;
        uvrc = uv_timer_init(loop, &s->tick);
    }
    s->listener.data = s->sigint.data = s->sigterm.data = s->drain_timer.data = s->tick.data = s;
    if (uvrc == 0) {
        s->nhandles = 5;
        uvrc = uv_timer_start(&s->tick, tick_cb, 1000, 1000);
    }
    if (uvrc != 0) {
        snprintf(err, errsz, "cannot set up the event loop: %s", uv_strerror(uvrc));
        rc = HUB_EIO;
        goto fail_handles;
    }
    uv_unref((uv_handle_t *)&s->sigint);
    uv_unref((uv_handle_t *)&s->sigterm);
    uv_unref((uv_handle_t *)&s->tick);
    rc = server_bind(s, err, errsz);
    if (rc != 0)
        goto fail_handles;
    s->listening = 1;
    if ((uvrc = uv_signal_start(&s->sigint, server_on_signal, SIGINT)) != 0 ||
        (uvrc = uv_signal_start(&s->sigterm, server_on_signal, SIGTERM)) != 0) {
        snprintf(err, errsz, "cannot handle SIGINT/SIGTERM: %s", uv_strerror(uvrc));
        rc = HUB_EIO;
        s->listening = 0;
        goto fail_handles;
    }
    *out = s;
    return 0;

fail_handles:
    s->stopping = 1;
    server_close_some(s);
fail_chat:
    hub_chat_free(s->chat);
fail_history:
    hub_history_free(s->history);
fail_flow:
    hub_flow_close(s->flow);
fail_site:
    hub_static_free(s->site);
    /* Lets the close callbacks of whatever was opened run (handles embedded
     * in s, the store's thread handle) before s goes. */
    uv_run(loop, UV_RUN_DEFAULT);
fail_free:
    free(s);
fail:
    return rc;
}

int hub_server_port(const struct hub_server *s)
{
    return s->port;
}

void hub_server_bound(const struct hub_server *s, char *out, size_t outsz, int *loopback)
{
    char ip[64] = "?";
    int v6 = s->bound.ss_family == AF_INET6;
    if (v6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&s->bound;
        uv_ip6_name(a, ip, sizeof(ip));
        static const unsigned char one[16] = {[15] = 1};
        *loopback = memcmp(&a->sin6_addr, one, 16) == 0;
    } else {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&s->bound;
        uv_ip4_name(a, ip, sizeof(ip));
        *loopback = (ntohl(a->sin_addr.s_addr) >> 24) == 127;
    }
    snprintf(out, outsz, "%s%s%s:%d", v6 ? "[" : "", ip, v6 ? "]" : "", s->port);
}

void hub_server_free(struct hub_server *s)
{
    if (s == NULL)
        return;
    hub_chat_free(s->chat);
    hub_history_free(s->history);
    hub_static_free(s->site);
    free(s);
}
