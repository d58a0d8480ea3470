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
 * server closes the engine (a Redis engine's connections; the memory
 * engine is chat's), flushes history, and closes its own handles so that
 * uv_run returns and uv_loop_close succeeds. There is no list of clients:
 * the shutdown finds them by walking the loop's handles, and takes only TCP
 * handles that carry a client's marker (the Redis engine owns poll and
 * timer handles of its own).
 */
#include "hub/server.h"
#include "hub/api.h"
#include "hub/auth.h"
#include "hub/chat.h"
#include "hub/conn.h"
#include "hub/flow.h"
#include "hub/engine.h"
#include "hub/deflate.h"
#include "hub/history.h"
#include "hub/http.h"
#include "hub/log.h"
#include "hub/access.h"
#include "hub/metrics.h"
#include "hub/origin.h"
#include "hub/static.h"
#include "hub/ws.h"
#ifdef HUB_HAVE_TLS
#include "hub/tls.h"
#endif

#include <assert.h>
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
    uv_signal_t sighup;               /* SIGHUP: reload the TLS certificate (TLS only) */
    uv_timer_t drain_timer;           /* paces the drain, then bounds it */
    uv_timer_t tick;                  /* once a second: chat's deferred work */
    struct hub_io *io;                /* loop-wide connection state, owned */
    struct hub_static *site;          /* files served, owned */
    struct hub_history *history;      /* message store, owned */
    struct hub_chat *chat;            /* chat state, owned */
    struct hub_flow *flow;            /* backpressure on senders, owned (freed by its close) */
    struct hub_engine *engine;        /* the Redis engine, owned (NULL: chat's memory engine) */
    struct hub_api *api;              /* the server API, owned (NULL: no --api-key-file) */
    struct hub_http_config http_cfg;  /* per-connection HTTP limits */
    struct hub_ws_config ws_cfg;      /* per-connection WebSocket limits */
    struct hub_origin_policy origins; /* --allow-origin patterns */
    struct hub_host_policy hosts;     /* Host names answered (DNS rebinding) */
    struct hub_cidr *metrics_allow;   /* --metrics-allow networks, owned */
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
    struct hub_conn_ops http_ops;     /* what clients do and may queue before the upgrade */
    struct hub_conn_ops ws_ops;       /* and after it (with the soft output limit) */
};

enum client_phase {
    PHASE_HTTP, /* speaking HTTP */
    PHASE_RAW,  /* raw-mode WebSocket */
    PHASE_JSON, /* chathub.v1 WebSocket */
};

/* Why the hub cut a connection without a close handshake (client.cut). */
enum client_cut {
    CUT_NONE,     /* it did not */
    CUT_PING,     /* no answer to ping */
    CUT_SHUTDOWN, /* the drain's deadline passed */
};

static const char *const cut_text[] = {NULL, "no answer to ping", "cut at shutdown"};

/* One per connection, for as long as it is open: every byte here is paid
 * by every idle connection (bench/RESULTS.md), so it is kept to what an
 * idle connection needs. Its address lives in conn (binary, formatted only
 * for logs); the per-address counter is found again by that address. A
 * struct client is recognised (drain walk) by conn.ops pointing at one of
 * its server's two hub_conn_ops. */
struct client {
    struct hub_conn conn;         /* the socket, embedded; must be first */
    struct hub_server *server;    /* borrowed */
    struct hub_http *http;        /* HTTP state until the upgrade, owned */
    struct hub_ws *ws;            /* WebSocket state after it, owned */
    struct hub_chat_client *chat; /* chat membership, owned */
    uint64_t ws_since;            /* loop time of the upgrade, 0 before */
    struct api_wait *api;         /* a server API request's state, owned, or NULL */
    uint32_t ping_sent;           /* loop time (32-bit ms) of the unanswered ping, if ping_out */
    uint8_t phase;                /* enum client_phase */
    uint8_t cut;                  /* enum client_cut */
    unsigned ping_out : 1;        /* a ping is unanswered */
    unsigned told_to_go : 1;      /* drain: close already started */
    unsigned had_request : 1;     /* an HTTP request arrived on this connection */
    unsigned via_proxy : 1;       /* the peer is a --trust-proxy: counted per request */
    unsigned ip_counted : 1;      /* counted in the server's per-address table */
};

/* A connection whose API request is answered later (api.h): the call to
 * cancel if the connection closes first, and the bytes that came behind the
 * request, parsed once it is answered (reading is paused meanwhile). */
struct api_wait {
    struct hub_api_call *call; /* the pending call, or NULL */
    int sync;                  /* 1 while hub_api_handle runs: an answer now is not late */
    char *held;                /* bytes after the request, owned */
    size_t nheld;              /* their count */
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
    cfg->search_index = HUB_HISTORY_SEARCH_AUTO;
    cfg->max_total_rooms = 10000;
    cfg->max_total_output = 256u << 20;
    cfg->redis_prefix = "chathub:";
    cfg->node_lease_ms = 30000;
    /* permessage-deflate: on when this build has zlib. */
    cfg->deflate = hub_deflate_available();
    cfg->deflate_min = 128;
    cfg->api_rate = HUB_API_RATE_DEFAULT;
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

/* ---- operator logs (log.h) ------------------------------------------ */

/* Logs one event about cl: every connection log line goes through here, so
 * the call sites stay one line each. code -1 and NULL strings are left out. */
static void client_log(struct client *cl, int level, const char *event, int code,
                       const char *reason, const char *by, const char *room)
{
    uint64_t now = hub_conn_now(&cl->conn);
    int closed = strcmp(event, "close") == 0; /* only the close line has totals */
    struct hub_log_conn e = {
        .event = event,
        .addr = hub_conn_peer(&cl->conn),
        .mode = cl->phase == PHASE_RAW    ? "raw"
                : cl->phase == PHASE_JSON ? "json"
                                          : "http",
        .room = room,
        .code = code,
        .reason = reason,
        .by = by,
        .duration_ms = closed && now >= cl->ws_since ? (int64_t)(now - cl->ws_since) : -1,
        .bytes_in = closed ? (int64_t)cl->conn.bytes_in : -1,
        .bytes_out = closed ? (int64_t)cl->conn.bytes_out : -1,
    };
    hub_log_conn(level, &e);
}

/* The close line of a WebSocket: who closed, with which code. A close the
 * hub started wins; else the peer's; else there was no close handshake. */
static void client_log_close(struct client *cl)
{
    uint16_t ours = hub_ws_close_code_sent(cl->ws), theirs = hub_ws_close_code_received(cl->ws);
    if (ours != 0)
        client_log(cl, HUB_LOG_INFO, "close", ours, hub_ws_close_name(ours), "hub", NULL);
    else if (theirs != 1006)
        client_log(cl, HUB_LOG_INFO, "close", theirs, hub_ws_close_name(theirs), "client", NULL);
    else
        client_log(cl, HUB_LOG_INFO, "close", 1006, cl->cut ? cut_text[cl->cut] : "connection lost",
                   cl->cut ? "hub" : NULL, NULL);
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
static int ip_acquire_key(struct client *cl, const char *peer)
{
    struct hub_server *s = cl->server;
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
    cl->ip_counted = 1;
    return 0;
}

static int ip_acquire(struct client *cl)
{
    char peer[HUB_CONN_ADDR_KEY_SIZE];
    /* A peer whose address cannot be had counts under "?". */
    hub_conn_peer_key(&cl->conn, peer, sizeof(peer));
    return ip_acquire_key(cl, peer);
}

/* Counts cl's connection off the address it was counted under: the key of
 * the client address in conn, which does not change while counted. */
static void ip_release(struct client *cl)
{
    if (!cl->ip_counted)
        return;
    cl->ip_counted = 0;
    char key[HUB_CONN_ADDR_KEY_SIZE];
    hub_conn_peer_key(&cl->conn, key, sizeof(key));
    struct ip_count **pp = ip_slot(cl->server, key);
    struct ip_count *e = *pp;
    assert(e != NULL);
    if (e != NULL && --e->n == 0) {
        *pp = e->next;
        free(e);
    }
}

/* ---- clients behind a trusted proxy ------------------------------------ */

/* Returns 1 if cl's peer is one of the --trust-proxy networks. */
static int peer_is_proxy(struct client *cl)
{
    struct hub_server *s = cl->server;
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    return s->cfg.ntrust_proxy > 0 &&
           uv_tcp_getpeername(&cl->conn.tcp, (struct sockaddr *)&ss, &len) == 0 &&
           hub_cidr_match_any(s->cfg.trust_proxy, s->cfg.ntrust_proxy, (struct sockaddr *)&ss);
}

/* A request from a trusted proxy: the client is the one its headers name
 * (the proxy itself when they name none), and the per-address count moves
 * to that address; one proxy connection may carry the requests of several
 * clients in turn. Returns 0, or HUB_ELIMIT when that address is at
 * --max-conns-per-ip (then the connection is no longer counted). */
static int proxy_client(struct client *cl, const struct hub_http_request *req)
{
    struct hub_server *s = cl->server;
    struct sockaddr_storage peer, client;
    int len = sizeof(peer);
    char key[HUB_CONN_ADDR_KEY_SIZE];
    if (uv_tcp_getpeername(&cl->conn.tcp, (struct sockaddr *)&peer, &len) != 0)
        return 0;
    if (!hub_proxy_client(s->cfg.trust_proxy, s->cfg.ntrust_proxy, (struct sockaddr *)&peer,
                          req->forwarded_for, req->forwarded, &client))
        client = peer;
    hub_conn_addr_key((struct sockaddr *)&client, key, sizeof(key));
    char old[HUB_CONN_ADDR_KEY_SIZE];
    if (cl->ip_counted && hub_conn_peer_key(&cl->conn, old, sizeof(old)) == 0 &&
        strcmp(old, key) == 0) {
        hub_conn_set_client_addr(&cl->conn, (struct sockaddr *)&client);
        return 0;
    }
    /* Released under the old address before the new one replaces it. */
    ip_release(cl);
    hub_conn_set_client_addr(&cl->conn, (struct sockaddr *)&client);
    return ip_acquire_key(cl, key);
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
    uv_close((uv_handle_t *)&s->sighup, server_handle_closed);
    /* Closing the handles gives the signals their default action back; the
     * hub is finishing anyway, and a late SIGTERM must not turn a clean exit
     * into death by signal. (signal() is standard C, on Windows too.) */
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
#if defined(HUB_HAVE_TLS) && defined(SIGHUP)
    if (s->cfg.tls != NULL)
        signal(SIGHUP, SIG_IGN); /* a late reload request is moot */
#endif
    hub_io_close(s->io);
    s->io = NULL;
    hub_flow_close(s->flow);
    s->flow = NULL;
}

/* Start-up failed after hub_io_init: closes the handles initialised so far
 * (s->nhandles of listener, sigint, sigterm, drain_timer, tick, sighup) and
 * the io. */
static void server_close_some(struct hub_server *s)
{
    uv_handle_t *hs[] = {(uv_handle_t *)&s->listener, (uv_handle_t *)&s->sigint,
                         (uv_handle_t *)&s->sigterm,  (uv_handle_t *)&s->drain_timer,
                         (uv_handle_t *)&s->tick,     (uv_handle_t *)&s->sighup};
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

/* Shutdown, after the engine: make history durable, then let the loop end. */
static void flush_history(struct hub_server *s)
{
    if (s->history == NULL) {
        server_close_handles(s);
        return;
    }
    hub_log_info("flushing history");
    hub_history_close(s->history, history_closed, s);
}

/* The Redis engine has answered or failed everything in flight and closed
 * its connections (their handles finish closing in the next iteration). */
static void engine_closed(void *data)
{
    flush_history(data);
}

static void stop_listening(struct hub_server *s)
{
    if (!s->listening)
        return;
    s->listening = 0;
    uv_close((uv_handle_t *)&s->listener, server_handle_closed);
}

/* Shutdown, last client gone: close the engine chat is done with, make
 * history durable, then let the loop end. */
static void server_finish(struct hub_server *s)
{
    stop_listening(s);
    if (s->engine != NULL) {
        hub_log_info("closing the engine");
        hub_engine_close(s->engine, engine_closed, s);
        return;
    }
    flush_history(s);
}

static void client_on_close(struct hub_conn *c)
{
    struct client *cl = HUB_CONTAINER_OF(c, struct client, conn);
    struct hub_server *s = cl->server;
    if (cl->ws != NULL && cl->ws_since != 0)
        client_log_close(cl);
    hub_flow_forget(s->flow, c);
    if (cl->api != NULL) {
        /* An answer still on its way must not find this client. */
        hub_api_cancel(cl->api->call);
        free(cl->api->held);
        free(cl->api);
    }
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
        /* A request begun and not finished (slowloris) is worth a line; an
         * idle keep-alive or a browser's unused preconnect is not. */
        int partial = c->bytes_in > 0 && !cl->had_request;
        client_log(cl, partial ? HUB_LOG_INFO : HUB_LOG_DEBUG, "refused", -1,
                   partial ? "request not complete in time" : "idle", NULL, NULL);
        hub_conn_close(c);
        return;
    }
    if (hub_ws_close_sent(cl->ws)) {
        hub_conn_close(c); /* the close handshake went unanswered */
        return;
    }
    uint32_t now = (uint32_t)hub_conn_now(c);
    /* A connection the hub itself does not read (flow.h) cannot show that
     * it is alive: its silence is not held against it. */
    if (cl->ping_out && hub_conn_ms_after(cl->ping_sent, c->last_rx) &&
        !(c->flags & HUB_CONN_PAUSED_OWNER)) {
        /* Not a single byte since our ping: the peer or the path is dead. */
        hub_metrics.heartbeat_closes++;
        cl->cut = CUT_PING;
        hub_conn_close(c);
        return;
    }
    if (cl->ping_out) {
        cl->ping_out = 0;
        hub_conn_set_timeout(c, s->cfg.ping_interval_ms - s->cfg.pong_timeout_ms);
        return;
    }
    cl->ping_out = 1;
    cl->ping_sent = now;
    hub_ws_ping(cl->ws);
    hub_conn_set_timeout(c, s->cfg.pong_timeout_ms);
}

/* Refuses a request with status, counts and logs why. */
static int refuse(struct client *cl, struct hub_http *h, int status, int reason)
{
    client_log(cl, HUB_LOG_INFO, "refused", status, hub_metrics_refusal_name(reason), NULL, NULL);
    hub_metrics.refused[reason]++;
    hub_http_respond_status(h, status);
    return HUB_HTTP_DONE;
}

/* Refuses a WebSocket from a page whose origin the policy does not admit,
 * naming the origin and the --allow-origin that would admit it. */
static int refuse_origin(struct client *cl, struct hub_http *h, struct hub_iov origin)
{
    char shown[201], body[600];
    hub_origin_suggest(origin, shown, sizeof(shown));
    size_t n = hub_origin_refusal(origin, body, sizeof(body));
    char why[260 + 2 * sizeof(shown)];
    snprintf(why, sizeof(why), "origin %s not allowed (to allow it: --allow-origin %s)", shown,
             shown);
    client_log(cl, HUB_LOG_INFO, "refused", 403, why, NULL, NULL);
    hub_metrics.refused[HUB_REFUSE_ORIGIN]++;
    hub_http_respond(h, 403, "text/plain; charset=utf-8", NULL, body, n);
    return HUB_HTTP_DONE;
}

/* Answers an upgrade request: validation, policies, room, 101, WebSocket. */
static int client_upgrade(struct client *cl, struct hub_http *h, const struct hub_http_request *req)
{
    struct hub_server *s = cl->server;
    if (s->stopping)
        return refuse(cl, h, 503, HUB_REFUSE_DRAINING);
    int status = hub_http_check_websocket(req);
    if (status != 0)
        return refuse(cl, h, status, HUB_REFUSE_BAD_HANDSHAKE);
    if (!hub_origin_admit(&s->origins, req->origin, req->host))
        return refuse_origin(cl, h, req->origin);
    struct hub_iov room;
    if (hub_chat_room_from_path(req->path, &room) != 0) {
        hub_metrics.refused[HUB_REFUSE_BAD_ROOM]++;
        client_log(cl, HUB_LOG_INFO, "refused", 400, "bad room name", NULL, NULL);
        static const char msg[] =
            "400 Bad Request: room names are 1-64 characters of A-Z a-z 0-9 _ . : -\n";
        hub_http_respond(h, 400, "text/plain; charset=utf-8", NULL, msg, sizeof(msg) - 1);
        return HUB_HTTP_DONE;
    }
    /* Offering chathub.v1 selects the JSON protocol; anything else (or no
     * subprotocol) is raw mode, and the 101 then names no subprotocol. */
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
    /* With tokens, a raw client (which sends no hello) gives its token as
     * ?token=; JSON clients give it in hello. The token is never logged. */
    struct hub_auth_identity ident = {0};
    if (!json) {
        const char *why = NULL;
        int st = hub_chat_raw_admit(s->chat, room, req->query, &ident, &why);
        if (st != 0) {
            client_log(cl, HUB_LOG_INFO, "refused", st, why, NULL, NULL);
            char body[200];
            int n = snprintf(body, sizeof(body), "%d %s: %s\n", st,
                             st == 401 ? "Unauthorized" : "Forbidden", why);
            hub_http_respond(h, st, "text/plain; charset=utf-8", NULL, body, (size_t)n);
            return HUB_HTTP_DONE;
        }
    }
    cl->ws = hub_ws_new(&cl->conn, &s->ws_cfg, client_on_ws_message, cl);
    if (cl->ws == NULL) {
        hub_auth_identity_clear(&ident);
        return refuse(cl, h, 503, HUB_REFUSE_MAX_CONNS);
    }
    /* permessage-deflate, when on and offered (deflate.h). */
    struct hub_deflate_params dp;
    char ext_line[160];
    int deflate = s->cfg.deflate &&
                  hub_deflate_negotiate(req->ws_extensions, &dp, ext_line, sizeof(ext_line));
    if (deflate)
        hub_ws_set_deflate(cl->ws, dp.server_max_window_bits);
    if (hub_http_accept_websocket_ext(h, req, json ? "chathub.v1" : NULL,
                                      deflate ? ext_line : NULL) != 0) {
        hub_auth_identity_clear(&ident);
        hub_ws_free(cl->ws);
        cl->ws = NULL;
        return HUB_HTTP_DONE;
    }
    set_phase(cl, json ? PHASE_JSON : PHASE_RAW);
    cl->ws_since = hub_conn_now(&cl->conn);
    char rname[72];
    snprintf(rname, sizeof(rname), "%.*s", (int)(room.len < 64 ? room.len : 64), room.base);
    client_log(cl, HUB_LOG_INFO, "open", -1, NULL, NULL, json ? NULL : rname);
    cl->conn.ops = &s->ws_ops; /* the soft output limit from now on */
    hub_conn_set_timeout(&cl->conn, s->cfg.ping_interval_ms);
    cl->chat =
        hub_chat_client_new_as(s->chat, cl->ws, json ? HUB_CHAT_JSON : HUB_CHAT_RAW, room, &ident);
    hub_auth_identity_clear(&ident); /* taken, or left for a failure */
    if (cl->chat == NULL)
        hub_ws_close(cl->ws, HUB_WS_INTERNAL_ERROR, "out of memory");
    return HUB_HTTP_UPGRADED;
}

/* ---- HTTP phase -------------------------------------------------------- */

/* The /metrics rows of the history store's budget and of the global caps
 * (issue 14), appended after the common ones. */
static void render_limits(struct hub_server *s, struct hub_buf *b)
{
    struct hub_history_stats hs = {0};
    if (s->history != NULL) /* none with --redis: history lives in Redis */
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
    /* Moderation and search (chat's counters, issue 13 part 2 and 15). */
    struct hub_chat_mod_stats ms;
    hub_chat_mod_stats(s->chat, &ms);
    hub_buf_printf(
        b,
        "# HELP chathub_moderation_total Moderation actions and edits, by action.\n"
        "# TYPE chathub_moderation_total counter\n"
        "chathub_moderation_total{action=\"kick\"} %llu\n"
        "chathub_moderation_total{action=\"ban\"} %llu\n"
        "chathub_moderation_total{action=\"unban\"} %llu\n"
        "chathub_moderation_total{action=\"mute\"} %llu\n"
        "chathub_moderation_total{action=\"unmute\"} %llu\n"
        "chathub_moderation_total{action=\"delete\"} %llu\n"
        "chathub_moderation_total{action=\"topic\"} %llu\n"
        "chathub_moderation_total{action=\"edit\"} %llu\n"
        "# HELP chathub_search_total Search requests answered.\n"
        "# TYPE chathub_search_total counter\nchathub_search_total %llu\n",
        (unsigned long long)ms.kick, (unsigned long long)ms.ban, (unsigned long long)ms.unban,
        (unsigned long long)ms.mute, (unsigned long long)ms.unmute, (unsigned long long)ms.del,
        (unsigned long long)ms.topic, (unsigned long long)ms.edit, (unsigned long long)ms.search);
}

static void engine_row(struct hub_buf *b, const char *type, const char *name, const char *help,
                       unsigned long long v)
{
    hub_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", name, help, name, type, name, v);
}

/* The engine's figures (docs/operations.md lists them). */
static void render_engine_metrics(struct hub_buf *b, struct hub_engine *e)
{
    struct hub_engine_stats st;
    hub_engine_stats(e, &st);
    hub_buf_printf(b,
                   "# HELP chathub_engine_info The engine this hub uses, and its node id.\n"
                   "# TYPE chathub_engine_info gauge\n"
                   "chathub_engine_info{engine=\"%s\",node=\"%s\"} 1\n",
                   st.kind, hub_engine_node_id(e));
    engine_row(b, "gauge", "chathub_engine_ready", "1 when the engine serves requests.",
               st.state == HUB_ENGINE_READY);
    engine_row(b, "gauge", "chathub_engine_shards", "Redis servers the engine uses.", st.shards);
    engine_row(b, "gauge", "chathub_engine_shards_ready", "Redis servers connected.",
               st.shards_ready);
    engine_row(b, "counter", "chathub_engine_published_total",
               "Messages this node published (acknowledged).", st.published);
    engine_row(b, "counter", "chathub_engine_duplicates_total",
               "Publishes answered as duplicates of an earlier cmid.", st.duplicates);
    engine_row(b, "counter", "chathub_engine_received_total",
               "Messages the engine delivered to this node.", st.received);
    engine_row(b, "counter", "chathub_engine_dropped_total",
               "Engine requests failed as unavailable (not connected, timeout, queue full).",
               st.dropped);
    engine_row(b, "counter", "chathub_engine_fills_total",
               "Reads issued to fill a hole in a room's offsets.", st.fills);
    engine_row(b, "counter", "chathub_engine_filled_total", "Messages delivered from hole fills.",
               st.filled);
    engine_row(b, "counter", "chathub_engine_skipped_total",
               "Offsets skipped because the store no longer had them.", st.skipped);
    engine_row(b, "counter", "chathub_engine_reconnects_total",
               "Engine connections re-established after a loss.", st.reconnects);
    engine_row(b, "counter", "chathub_engine_epochs_total", "Room epoch changes seen.", st.epochs);
    engine_row(b, "counter", "chathub_engine_swept_total",
               "Dead nodes whose members this node removed.", st.swept);
    engine_row(b, "gauge", "chathub_engine_queue", "Engine requests in flight or held.", st.queue);
    engine_row(b, "gauge", "chathub_engine_rooms", "Rooms this node is subscribed to.", st.rooms);
    hub_buf_printf(b,
                   "# HELP chathub_engine_rtt_seconds Moving average of engine round trips.\n"
                   "# TYPE chathub_engine_rtt_seconds gauge\nchathub_engine_rtt_seconds %.6f\n"
                   "# HELP chathub_engine_rtt_max_seconds Longest engine round trip since the "
                   "last scrape.\n# TYPE chathub_engine_rtt_max_seconds gauge\n"
                   "chathub_engine_rtt_max_seconds %.6f\n",
                   (double)st.rtt_us / 1e6, (double)st.rtt_max_us / 1e6);
}

/* Issue 20 (include/hub/access.h). The Host policy against DNS rebinding
 * covers every request but /healthz, which reveals nothing and which
 * health checkers call by address. A refused request gets 421 (an upgrade
 * is counted as refused for its Origin). Returns 1 when the request may go
 * on, 0 after the response. */
static int host_allowed(struct client *cl, struct hub_http *h, const struct hub_http_request *req)
{
    struct hub_server *s = cl->server;
    if (hub_host_allowed(&s->hosts, req->host) || hub_iov_eq_ci(req->path, "/healthz"))
        return 1;
    char why[300];
    snprintf(why, sizeof(why), "Host %.*s is not a name this hub answers to (see --server-name)",
             (int)(req->host.len > 200 ? 200 : req->host.len), req->host.base);
    client_log(cl, HUB_LOG_INFO, "refused", 421, why, NULL, NULL);
    if (req->upgrade_hdr.len > 0 || req->upgrade)
        hub_metrics.refused[HUB_REFUSE_ORIGIN]++;
    hub_http_respond_status(h, 421);
    return 0;
}

/* /metrics is for loopback peers (127.0.0.0/8, ::1) by default; a
 * --metrics-allow list replaces that default with its networks. */
static int metrics_peer_allowed(struct client *cl)
{
    struct hub_server *s = cl->server;
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    if (uv_tcp_getpeername(&cl->conn.tcp, (struct sockaddr *)&ss, &len) != 0)
        return 0;
    if (s->cfg.nmetrics_allow == 0)
        return hub_addr_is_loopback((const struct sockaddr *)&ss);
    for (size_t i = 0; i < s->cfg.nmetrics_allow; i++)
        if (hub_cidr_match(&s->metrics_allow[i], (const struct sockaddr *)&ss))
            return 1;
    return 0;
}

/* A request through a trusted proxy from an address at --max-conns-per-ip:
 * 503, and the connection ends. */
static int refuse_per_ip(struct client *cl, struct hub_http *h)
{
    struct hub_server *s = cl->server;
    char why[64];
    snprintf(why, sizeof(why), "over --max-conns-per-ip %u (via proxy)", s->cfg.max_conns_per_ip);
    client_log(cl, HUB_LOG_INFO, "refused", 503, why, NULL, NULL);
    hub_metrics.refused[HUB_REFUSE_PER_IP]++;
    hub_http_respond(h, 503, "text/plain; charset=utf-8", "Retry-After: 5\r\n",
                     "503 too many connections\n", 25);
    hub_conn_close_after_flush(&cl->conn);
    return HUB_HTTP_DONE;
}

/* ---- the server API (issue 13 part 3, api.h) ------------------------ */

static void client_on_read(struct hub_conn *c, const char *data, size_t len);

/* A request waits for its answer: keep the bytes behind it (pipelined
 * requests, parsed in order later) and stop reading until it is answered. */
static void api_hold(struct client *cl, const char *data, size_t len)
{
    struct api_wait *w = cl->api;
    if (len > 0) {
        char *p = realloc(w->held, w->nheld + len);
        if (p == NULL) {
            hub_conn_close(&cl->conn);
            return;
        }
        memcpy(p + w->nheld, data, len);
        w->held = p;
        w->nheld += len;
    }
    hub_conn_pause(&cl->conn, 1);
}

/* The answer of an API request (api.h), now or later. A late one ends the
 * request's wait: the kept bytes are parsed and reading goes on. */
static void api_reply(void *owner, const struct hub_api_reply *r)
{
    struct client *cl = owner;
    struct api_wait *w = cl->api;
    hub_http_respond(cl->http, r->status, "application/json", r->headers, r->body, r->len);
    if (w->sync)
        return;
    w->call = NULL;
    if (hub_http_resume(cl->http) != HUB_HTTP_MORE) {
        free(w->held);
        w->held = NULL;
        w->nheld = 0;
        return;
    }
    char *held = w->held;
    size_t n = w->nheld;
    w->held = NULL;
    w->nheld = 0;
    hub_conn_pause(&cl->conn, 0);
    if (n > 0)
        client_on_read(&cl->conn, held, n); /* may wait again, keeping a copy */
    free(held);
}

/* Routes /api/ to the API; without --api-key-file it does not exist. */
static int client_api(struct client *cl, struct hub_http *h, const struct hub_http_request *req)
{
    struct hub_server *s = cl->server;
    if (s->api == NULL) {
        static const char body[] =
            "{\"error\":{\"code\":\"not_found\",\"message\":\"no server API here\"}}";
        hub_http_respond(h, 404, "application/json", NULL, body, sizeof(body) - 1);
        return HUB_HTTP_DONE;
    }
    if (cl->api == NULL && (cl->api = calloc(1, sizeof(*cl->api))) == NULL) {
        hub_http_respond_status(h, 503);
        return HUB_HTTP_DONE;
    }
    struct hub_api_request ar = {
        .method = req->method,
        .method_name = req->method_name,
        .path = req->path,
        .query = req->query,
        .authorization = req->authorization,
        .body = req->body,
        .peer = hub_conn_peer(&cl->conn),
        .now = hub_conn_now(&cl->conn),
    };
    cl->api->sync = 1;
    int done = hub_api_handle(s->api, &ar, api_reply, cl, &cl->api->call);
    cl->api->sync = 0;
    return done ? HUB_HTTP_DONE : HUB_HTTP_LATER;
}

static int client_on_request(struct hub_http *h, const struct hub_http_request *req, void *data)
{
    struct client *cl = data;
    struct hub_server *s = cl->server;
    hub_metrics.http_requests++;
    cl->had_request = 1;
    if (cl->via_proxy && proxy_client(cl, req) != 0)
        return refuse_per_ip(cl, h);
    /* The next request on this connection gets a fresh deadline. */
    hub_conn_set_timeout(&cl->conn, s->cfg.handshake_ms);
    if (!host_allowed(cl, h, req))
        return HUB_HTTP_DONE;
    if (req->upgrade_hdr.len > 0 || req->upgrade)
        return client_upgrade(cl, h, req);
    if (req->path.len >= 4 && memcmp(req->path.base, "/api", 4) == 0 &&
        (req->path.len == 4 || req->path.base[4] == '/'))
        return client_api(cl, h, req);
    if (req->method != HUB_HTTP_GET && req->method != HUB_HTTP_HEAD)
        return HUB_HTTP_PASS; /* 405 from the static handler */
    if (hub_iov_eq_ci(req->path, "/healthz")) {
        struct hub_engine *e = hub_chat_engine(s->chat);
        if (s->stopping) {
            hub_http_respond(h, 503, "text/plain; charset=utf-8", "Retry-After: 5\r\n",
                             "draining\n", 9);
        } else if (!hub_engine_ready(e)) {
            /* Not ready to serve chat: say why, for the operator and the
             * load balancer's logs. */
            struct hub_engine_stats st;
            hub_engine_stats(e, &st);
            char body[512];
            int n = snprintf(body, sizeof(body), "engine %s: %s\n",
                             st.state == HUB_ENGINE_CLOSING ? "closing" : "connecting",
                             st.reason && st.reason[0] ? st.reason : "not ready");
            if (n < 0 || (size_t)n >= sizeof(body))
                n = (int)sizeof(body) - 1;
            hub_http_respond(h, 503, "text/plain; charset=utf-8", "Retry-After: 1\r\n", body,
                             (size_t)n);
        } else {
            hub_http_respond(h, 200, "text/plain; charset=utf-8", NULL, "ok\n", 3);
        }
        return HUB_HTTP_DONE;
    }
    if (hub_iov_eq_ci(req->path, "/metrics")) {
        if (!metrics_peer_allowed(cl)) {
            hub_http_respond_status(h, 403);
            return HUB_HTTP_DONE;
        }
        struct hub_buf b = {0};
        hub_metrics_render(&b, hub_chat_room_count(s->chat), s->stopping);
        render_limits(s, &b);
        render_engine_metrics(&b, hub_chat_engine(s->chat));
        if (s->api != NULL)
            hub_api_metrics_render(s->api, &b);
#ifdef HUB_HAVE_TLS
        if (s->cfg.tls != NULL)
            hub_tls_metrics_render(&b);
#endif
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
        if (r == HUB_HTTP_WAIT) {
            api_hold(cl, data + used, len - used);
            return;
        }
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
    char why[64];
    snprintf(why, sizeof(why),
             reason == HUB_REFUSE_PER_IP ? "over --max-conns-per-ip %u" : "over --max-conns %u",
             reason == HUB_REFUSE_PER_IP ? cl->server->cfg.max_conns_per_ip
                                         : cl->server->cfg.max_conns);
    client_log(cl, HUB_LOG_INFO, "refused", 503, why, NULL, NULL);
    hub_metrics.refused[reason]++;
    if (cl->conn.tls != NULL) {
        /* No TLS handshake (the costly part) for a connection that is
         * turned away anyway, so no 503 either: it is closed at once. */
        hub_conn_close(&cl->conn);
        return;
    }
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
    cl->conn.ops = &s->http_ops;
    s->nclients++;
    /* The address is kept in binary by the accept, for the logs (even
     * after the socket is gone) and the per-address count. */
    if (hub_conn_accept(&cl->conn, listener) != 0) {
        hub_conn_close(&cl->conn);
        return;
    }
    if (s->cfg.tls != NULL && hub_conn_use_tls(&cl->conn, s->cfg.tls) != 0) {
        hub_metrics.refused[HUB_REFUSE_NOMEM]++;
        hub_conn_close(&cl->conn);
        return;
    }
    if (s->cfg.max_conns != 0 && s->nclients > s->cfg.max_conns) {
        client_turn_away(cl, HUB_REFUSE_MAX_CONNS);
        return;
    }
    /* A trusted proxy's connection is counted per request, under the
     * address its headers name (proxy_client). */
    cl->via_proxy = peer_is_proxy(cl);
    int rc = cl->via_proxy ? 0 : ip_acquire(cl);
    if (rc != 0) {
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
         * on its way (or an API call waiting for the engine); it is let go
         * once it has had one. */
        if (!cl->had_request || (cl->api != NULL && cl->api->call != NULL))
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
    /* Only client connections: the listener, and the engine's poll and timer
     * handles (and any other TCP handle), are not clients. */
    if (uv_handle_get_type(h) != UV_TCP || h == (uv_handle_t *)&w->s->listener ||
        uv_is_closing(h) || h->data == NULL)
        return;
    struct hub_conn *c = h->data;
    if (c->ops != &w->s->http_ops && c->ops != &w->s->ws_ops)
        return;
    struct client *cl = HUB_CONTAINER_OF(c, struct client, conn);
    if (w->cut) {
        cl->cut = CUT_SHUTDOWN;
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

#ifdef HUB_HAVE_TLS
/* SIGHUP: re-read the certificate and key (a renewal). New handshakes use
 * the new ones, open connections keep theirs; a bad file is logged and the
 * old certificate stays in use. */
static void server_on_sighup(uv_signal_t *sig, int signum)
{
    struct hub_server *s = sig->data;
    char err[512];
    unsigned warn = 0;
    (void)signum;
    if (hub_tls_ctx_reload(s->cfg.tls, 0, &warn, err, sizeof(err)) != 0) {
        hub_log_error("TLS reload failed, keeping the old certificate: %s", err);
        return;
    }
    char desc[512];
    hub_tls_ctx_describe(s->cfg.tls, desc, sizeof(desc));
    hub_log_info("TLS certificate reloaded: %s", desc);
    for (unsigned bit = 1; bit != 0 && bit <= warn; bit <<= 1)
        if (warn & bit)
            hub_log_warn("%s", hub_tls_warning_text(bit));
}
#endif

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
    /* A hub only this machine can reach admits local dev pages (origin.h). */
    s->origins.local_dev = !s->cfg.strict_origin && s->cfg.ntrust_proxy == 0 &&
                           hub_addr_is_loopback((struct sockaddr *)&ss);
    s->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                             : ((struct sockaddr_in *)&ss)->sin_port);
    s->bound = ss;
    /* A hub bound to loopback answers only to loopback names (access.h). */
    s->hosts.loopback_only = hub_addr_is_loopback((const struct sockaddr *)&ss);
    return 0;
}

static void engine_abandoned(void *data)
{
    (void)data;
}

/* Opens the Redis engine for chat and hands it over (it starts connecting;
 * /healthz says when it is ready). */
static int open_redis(struct hub_server *s, const struct hub_history_config *hist_cfg, char *err,
                      size_t errsz)
{
    struct hub_engine_config ecfg;
    hub_engine_config_default(&ecfg);
    ecfg.urls = s->cfg.redis_urls;
    ecfg.nurls = s->cfg.nredis;
    ecfg.node_id = s->cfg.node_id;
    if (s->cfg.redis_prefix != NULL)
        ecfg.prefix = s->cfg.redis_prefix;
    ecfg.history_max = hist_cfg->max_per_room;
    if (s->cfg.node_lease_ms > 0)
        ecfg.lease_ms = s->cfg.node_lease_ms;
    struct hub_engine_events ev;
    hub_chat_engine_events(&ev);
    char why[256] = "";
    int rc = hub_engine_open_redis(&s->engine, s->loop, &ecfg, &ev, s->chat, why, sizeof(why));
    if (rc != 0) {
        snprintf(err, errsz, "cannot use --redis: %s", why[0] ? why : hub_strerror(rc));
        s->engine = NULL;
        return rc;
    }
    hub_chat_use_engine(s->chat, s->engine);
    return 0;
}

void hub_server_engine_info(const struct hub_server *s, char *buf, size_t n)
{
    struct hub_engine *e = hub_chat_engine(s->chat);
    struct hub_engine_stats st;
    hub_engine_stats(e, &st);
    if (s->engine != NULL)
        snprintf(buf, n, "engine redis (%u shard%s), node %s", st.shards, st.shards == 1 ? "" : "s",
                 hub_engine_node_id(e));
    else if (s->cfg.persist)
        snprintf(buf, n, "engine memory, history in SQLite (%s)", s->cfg.data_dir);
    else
        snprintf(buf, n, "engine memory, history in memory only");
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
    /* Issue 20: --server-name and --metrics-allow (access.h). */
    s->hosts.names = cfg->server_names;
    s->hosts.nnames = cfg->nserver_names;
    for (size_t i = 0; i < cfg->nserver_names; i++)
        if (!hub_server_name_valid(cfg->server_names[i])) {
            snprintf(err, errsz, "invalid --server-name '%s'", cfg->server_names[i]);
            rc = HUB_EINVAL;
            goto fail_free;
        }
    if (cfg->nmetrics_allow > 0) {
        s->metrics_allow = calloc(cfg->nmetrics_allow, sizeof(*s->metrics_allow));
        if (s->metrics_allow == NULL)
            goto fail_free;
    }
    for (size_t i = 0; i < cfg->nmetrics_allow; i++)
        if (hub_cidr_parse(cfg->metrics_allow[i], &s->metrics_allow[i]) != 0) {
            snprintf(err, errsz, "invalid --metrics-allow '%s': expected ADDR/LEN",
                     cfg->metrics_allow[i]);
            rc = HUB_EINVAL;
            goto fail_free;
        }
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
    hist_cfg.search_index = cfg->search_index;
    /* With Redis, history lives in Redis (the engine's streams): no local
     * store, and --data-dir/--no-persist do not apply. */
    if (cfg->nredis > 0)
        rc = 0;
    else if (cfg->persist)
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
    chat_cfg.auth = cfg->auth;
    chat_cfg.guests = cfg->guests;
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
    if (cfg->nredis > 0) {
        rc = open_redis(s, &hist_cfg, err, errsz);
        if (rc != 0)
            goto fail_chat;
    }
    hub_http_config_default(&s->http_cfg);
    s->http_cfg.site = s->site;
    if (cfg->api_key != NULL) {
        /* The server API: request bodies and JSON errors under /api/. */
        struct hub_api_config acfg = {
            .key = cfg->api_key,
            .key_len = cfg->api_key_len,
            .rate = cfg->api_rate,
            .chat = s->chat,
        };
        rc = hub_api_new(&s->api, &acfg);
        if (rc != 0) {
            snprintf(err, errsz, "cannot use --api-key-file: %s",
                     rc == HUB_EINVAL ? "the key is too short" : hub_strerror(rc));
            goto fail_chat;
        }
        s->http_cfg.body_prefix = "/api/";
    }
    /* An operator's --public pages may need inline script (http.h). */
    s->http_cfg.csp = cfg->public_dir != NULL ? HUB_HTTP_CSP_FRAMES : HUB_HTTP_CSP_PAGE;
    s->http_cfg.max_header_bytes = cfg->max_header_bytes;
    s->http_cfg.max_headers = cfg->max_headers;
    s->http_cfg.hsts = cfg->tls != NULL;
    hub_ws_config_default(&s->ws_cfg);
    s->ws_cfg.max_message = cfg->max_message;
    s->ws_cfg.max_fragments = cfg->max_fragments;
    s->ws_cfg.deflate_min = cfg->deflate_min;
    /* What every connection does and may queue, shared (conn.h). */
    s->http_ops.on_read = client_on_read;
    s->http_ops.on_close = client_on_close;
    s->http_ops.on_timeout = client_on_timeout;
    hub_conn_ops_policy(&s->http_ops, cfg->max_output);
    s->ws_ops = s->http_ops;
    s->ws_ops.soft_limit = cfg->soft_output > UINT32_MAX ? UINT32_MAX : (uint32_t)cfg->soft_output;
    s->ws_ops.soft_hold_ms = cfg->soft_hold_ms;
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
    if (uvrc == 0) {
        s->nhandles = 5;
        uvrc = uv_signal_init(loop, &s->sighup);
    }
    s->listener.data = s->sigint.data = s->sigterm.data = s->drain_timer.data = s->tick.data = s;
    s->sighup.data = s;
    if (uvrc == 0) {
        s->nhandles = 6;
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
    uv_unref((uv_handle_t *)&s->sighup);
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
#ifdef HUB_HAVE_TLS
    if (cfg->tls != NULL && (uvrc = uv_signal_start(&s->sighup, server_on_sighup, SIGHUP)) != 0) {
        snprintf(err, errsz, "cannot handle SIGHUP (TLS reload): %s", uv_strerror(uvrc));
        rc = HUB_EIO;
        s->listening = 0;
        goto fail_handles;
    }
#endif
    *out = s;
    return 0;

fail_handles:
    s->stopping = 1;
    server_close_some(s);
fail_chat:
    if (s->engine != NULL)
        hub_engine_close(s->engine, engine_abandoned, NULL);
    hub_api_free(s->api);
    hub_chat_free(s->chat);
fail_history:
    hub_history_free(s->history);
fail_flow:
    hub_flow_close(s->flow);
fail_site:
    hub_static_free(s->site);
    /* Lets the close callbacks of whatever was opened run (handles embedded
     * in s, the store's thread handle, the engine's) before s goes. */
    uv_run(loop, UV_RUN_DEFAULT);
    hub_engine_free(s->engine);
fail_free:
    free(s->metrics_allow);
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
    hub_api_free(s->api);
    hub_chat_free(s->chat);
    hub_engine_free(s->engine);
    hub_history_free(s->history);
    hub_static_free(s->site);
    free(s->metrics_allow);
    free(s);
    hub_deflate_release();
}
