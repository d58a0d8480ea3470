/*
 * server.c: accept, route, and shut down.
 *
 * Each accepted socket gets a struct client that embeds its hub_conn. The
 * client starts in HTTP (a hub_http); a valid upgrade replaces that with a
 * hub_ws and a hub_chat_client, and the bytes that arrived behind the request
 * are fed straight to the WebSocket. The client is freed only from the
 * connection's close callback.
 *
 * Shutdown (signal or hub_server_shutdown): the listener closes, every
 * WebSocket gets a 1001 close frame and plain HTTP connections are closed;
 * clients that do not finish the close handshake within drain_ms are cut.
 * When the last client is gone the server closes its own handles so that
 * uv_run returns and uv_loop_close succeeds. There is no list of clients:
 * the shutdown finds them by walking the loop's handles.
 */
#include "hub/server.h"
#include "hub/chat.h"
#include "hub/conn.h"
#include "hub/history.h"
#include "hub/http.h"
#include "hub/log.h"
#include "hub/static.h"
#include "hub/ws.h"

#ifndef HUB_VERSION
#define HUB_VERSION "0.0.0"
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct hub_server {
    uv_loop_t *loop;               /* borrowed */
    uv_tcp_t listener;             /* the listening socket */
    uv_signal_t sigint;            /* SIGINT handler */
    uv_signal_t sigterm;           /* SIGTERM handler */
    uv_timer_t drain_timer;        /* bounds the shutdown */
    uv_timer_t tick;               /* once a second: chat's deferred work */
    struct hub_io *io;             /* loop-wide connection state, owned */
    struct hub_static *site;       /* files served, owned */
    struct hub_chat *chat;         /* chat state, owned */
    struct hub_history *history;   /* message store, owned */
    struct hub_http_config http_cfg; /* per-connection HTTP limits */
    struct hub_ws_config ws_cfg;   /* per-connection WebSocket limits */
    struct hub_server_config cfg;  /* copied configuration */
    int port;                      /* bound port */
    size_t nclients;               /* connections not yet closed */
    int stopping;                  /* shutdown has begun */
    int handles_open;              /* server handles still to close */
};

struct client {
    struct hub_conn conn;       /* the socket, embedded */
    struct hub_server *server;  /* borrowed */
    struct hub_http *http;      /* HTTP state until the upgrade, owned */
    struct hub_ws *ws;          /* WebSocket state after it, owned */
    struct hub_chat_client *chat; /* chat membership, owned */
};

void hub_server_config_default(struct hub_server_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->host = "0.0.0.0";
    cfg->port = 8080;
    cfg->max_message = 64 * 1024;
    cfg->max_output = 1024 * 1024;
    cfg->drain_ms = 5000;
}

static void server_handle_closed(uv_handle_t *h)
{
    struct hub_server *s = h->data;
    s->handles_open--;
}

/* Called when shutdown is under way and the last client has gone. */
static void server_close_handles(struct hub_server *s)
{
    uv_close((uv_handle_t *)&s->drain_timer, server_handle_closed);
    uv_close((uv_handle_t *)&s->tick, server_handle_closed);
    uv_close((uv_handle_t *)&s->sigint, server_handle_closed);
    uv_close((uv_handle_t *)&s->sigterm, server_handle_closed);
    hub_io_close(s->io);
    s->io = NULL;
}

static void client_on_close(struct hub_conn *c)
{
    struct client *cl = HUB_CONTAINER_OF(c, struct client, conn);
    struct hub_server *s = cl->server;
    hub_chat_client_free(cl->chat);
    hub_ws_free(cl->ws);
    hub_http_free(cl->http);
    free(cl);
    s->nclients--;
    if (s->stopping && s->nclients == 0)
        server_close_handles(s);
}

static void client_on_ws_message(struct hub_ws *ws, int opcode, const char *data, size_t len,
                                 void *user)
{
    struct client *cl = user;
    hub_chat_client_message(cl->chat, opcode, data, len);
}

/* Answers an upgrade request: validation, room, 101, then the WebSocket. */
static int client_upgrade(struct client *cl, struct hub_http *h, const struct hub_http_request *req)
{
    struct hub_server *s = cl->server;
    int status = hub_http_check_websocket(req);
    if (status != 0) {
        hub_http_respond_status(h, status);
        return HUB_HTTP_DONE;
    }
    struct hub_iov room;
    if (hub_chat_room_from_path(req->path, &room) != 0) {
        hub_http_respond(h, 400, "text/plain; charset=utf-8", NULL,
                         "400 Bad Request: room names are 1-64 characters of A-Z a-z 0-9 _ . : -\n",
                         71);
        return HUB_HTTP_DONE;
    }
    cl->ws = hub_ws_new(&cl->conn, &s->ws_cfg, client_on_ws_message, cl);
    if (cl->ws == NULL) {
        hub_http_respond_status(h, 503);
        return HUB_HTTP_DONE;
    }
    /* Offering chathub.v1 selects the JSON protocol; anything else (or no
     * subprotocol) is raw mode, and the 101 then names no subprotocol. */
    int json = hub_iov_has_token(req->ws_protocol, "chathub.v1");
    if (hub_http_accept_websocket(h, req, json ? "chathub.v1" : NULL) != 0) {
        hub_ws_free(cl->ws);
        cl->ws = NULL;
        return HUB_HTTP_DONE;
    }
    cl->chat = hub_chat_client_new(s->chat, cl->ws, json ? HUB_CHAT_JSON : HUB_CHAT_RAW, room);
    if (cl->chat == NULL)
        hub_ws_close(cl->ws, HUB_WS_INTERNAL_ERROR, "out of memory");
    return HUB_HTTP_UPGRADED;
}

static int client_on_request(struct hub_http *h, const struct hub_http_request *req, void *data)
{
    struct client *cl = data;
    if (req->upgrade_hdr.len > 0 || req->upgrade)
        return client_upgrade(cl, h, req);
    if (hub_iov_eq_ci(req->path, "/healthz")) {
        if (req->method == HUB_HTTP_OTHER)
            return HUB_HTTP_PASS; /* 405 from the static handler */
        if (cl->server->stopping)
            hub_http_respond(h, 503, "text/plain; charset=utf-8", NULL, "draining\n", 9);
        else
            hub_http_respond(h, 200, "text/plain; charset=utf-8", NULL, "ok\n", 3);
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

static void server_on_connection(uv_stream_t *listener, int status)
{
    struct hub_server *s = listener->data;
    if (status < 0) {
        hub_log_warn("accept failed: %s", uv_strerror(status));
        return;
    }
    struct client *cl = calloc(1, sizeof(*cl));
    if (cl == NULL)
        return;
    if (hub_conn_init(&cl->conn, s->io, s->cfg.max_output) != 0) {
        free(cl);
        return;
    }
    cl->server = s;
    cl->conn.on_read = client_on_read;
    cl->conn.on_close = client_on_close;
    s->nclients++;
    cl->http = hub_http_new(&cl->conn, &s->http_cfg, client_on_request, cl);
    if (cl->http == NULL || hub_conn_accept(&cl->conn, listener) != 0) {
        hub_conn_close(&cl->conn);
        return;
    }
}

/* Closes one client for shutdown: a 1001 close handshake for WebSockets,
 * a plain close for HTTP connections. */
static void shutdown_walk_cb(uv_handle_t *h, void *arg)
{
    struct hub_server *s = arg;
    if (h->type != UV_TCP || h == (uv_handle_t *)&s->listener || uv_is_closing(h))
        return;
    struct client *cl = HUB_CONTAINER_OF(h->data, struct client, conn);
    if (cl->ws != NULL && !hub_ws_close_sent(cl->ws))
        hub_ws_close(cl->ws, HUB_WS_GOING_AWAY, "server shutting down");
    else if (cl->ws == NULL)
        hub_conn_close_after_flush(&cl->conn);
}

/* The drain deadline passed: cut whoever is still there. */
static void drain_walk_cb(uv_handle_t *h, void *arg)
{
    struct hub_server *s = arg;
    if (h->type != UV_TCP || h == (uv_handle_t *)&s->listener || uv_is_closing(h))
        return;
    hub_conn_close(h->data);
}

static void drain_timeout_cb(uv_timer_t *t)
{
    struct hub_server *s = t->data;
    hub_log_warn("drain timeout: closing %zu remaining connections", s->nclients);
    uv_walk(s->loop, drain_walk_cb, s);
}

void hub_server_shutdown(struct hub_server *s)
{
    if (s->stopping)
        return;
    s->stopping = 1;
    hub_log_info("shutting down: closing %zu connections", s->nclients);
    uv_close((uv_handle_t *)&s->listener, server_handle_closed);
    uv_walk(s->loop, shutdown_walk_cb, s);
    if (s->nclients == 0) {
        server_close_handles(s);
        return;
    }
    uv_timer_start(&s->drain_timer, drain_timeout_cb, s->cfg.drain_ms, 0);
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
        uv_walk(s->loop, drain_walk_cb, s);
        return;
    }
    hub_server_shutdown(s);
}

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
        rc = uv_listen((uv_stream_t *)&s->listener, 511, server_on_connection);
    uv_freeaddrinfo(req.addrinfo);
    if (rc != 0) {
        snprintf(err, errsz, "cannot listen on %s:%d: %s", s->cfg.host, s->cfg.port,
                 uv_strerror(rc));
        return HUB_EIO;
    }
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&ss, &len);
    s->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                             : ((struct sockaddr_in *)&ss)->sin_port);
    return 0;
}

int hub_server_new(struct hub_server **out, uv_loop_t *loop, const struct hub_server_config *cfg,
                   char *err, size_t errsz)
{
    int rc = HUB_ENOMEM;
    struct hub_server *s = calloc(1, sizeof(*s));
    if (s == NULL)
        goto fail;
    s->loop = loop;
    s->cfg = *cfg;
    snprintf(err, errsz, "out of memory");
    rc = cfg->public_dir ? hub_static_open_dir(&s->site, cfg->public_dir)
                         : hub_static_open_embedded(&s->site);
    if (rc != 0) {
        snprintf(err, errsz, "cannot serve --public %s: %s", cfg->public_dir ? cfg->public_dir : "",
                 hub_strerror(rc));
        goto fail_free;
    }
    struct hub_history_config hist_cfg;
    hub_history_config_default(&hist_cfg);
    rc = hub_history_open_memory(&s->history, &hist_cfg);
    if (rc != 0)
        goto fail_site;
    struct hub_chat_config chat_cfg;
    hub_chat_config_default(&chat_cfg);
    chat_cfg.welcome = cfg->welcome;
    chat_cfg.server_name = "chathub " HUB_VERSION;
    chat_cfg.history = s->history;
    chat_cfg.max_message = cfg->max_message;
    chat_cfg.history_max_rooms_kept = hist_cfg.max_per_room;
    rc = hub_chat_new(&s->chat, &chat_cfg);
    if (rc != 0)
        goto fail_history;
    hub_http_config_default(&s->http_cfg);
    s->http_cfg.site = s->site;
    hub_ws_config_default(&s->ws_cfg);
    s->ws_cfg.max_message = cfg->max_message;
    rc = hub_io_init(&s->io, loop);
    if (rc != 0)
        goto fail_chat;
    /* From here on every handle is initialised before anything can fail, so
     * a failure closes them all the same way. */
    uv_tcp_init(loop, &s->listener);
    uv_signal_init(loop, &s->sigint);
    uv_signal_init(loop, &s->sigterm);
    uv_timer_init(loop, &s->drain_timer);
    uv_timer_init(loop, &s->tick);
    s->listener.data = s->sigint.data = s->sigterm.data = s->drain_timer.data = s->tick.data = s;
    s->handles_open = 5;
    uv_timer_start(&s->tick, tick_cb, 1000, 1000);
    uv_unref((uv_handle_t *)&s->tick);
    uv_unref((uv_handle_t *)&s->sigint);
    uv_unref((uv_handle_t *)&s->sigterm);
    rc = server_bind(s, err, errsz);
    if (rc != 0)
        goto fail_handles;
    uv_signal_start(&s->sigint, server_on_signal, SIGINT);
    uv_signal_start(&s->sigterm, server_on_signal, SIGTERM);
    *out = s;
    return 0;

fail_handles:
    s->stopping = 1;
    uv_close((uv_handle_t *)&s->listener, server_handle_closed);
    server_close_handles(s);
    uv_run(loop, UV_RUN_DEFAULT); /* lets the close callbacks run */
fail_chat:
    hub_chat_free(s->chat);
fail_history:
    hub_history_free(s->history);
fail_site:
    hub_static_free(s->site);
fail_free:
    free(s);
fail:
    return rc;
}

int hub_server_port(const struct hub_server *s)
{
    return s->port;
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
