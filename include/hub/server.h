/*
 * server.h: the listener and the wiring of every module.
 *
 * A hub_server accepts TCP connections, gives each an HTTP front end
 * (static files, health, metrics) and, on a valid upgrade, a WebSocket and
 * a chat client, and enforces the connection policies (limits, Origin,
 * deadlines, heartbeat). It handles SIGINT and SIGTERM itself: stop
 * accepting, drain every client, and let the loop run dry. With a TLS
 * context (cfg.tls) the port speaks TLS only, responses carry HSTS, and
 * SIGHUP reloads the certificate and key.
 */
#ifndef HUB_SERVER_H
#define HUB_SERVER_H

#include "hub/common.h"
#include "hub/proxy.h"

#include <uv.h>

struct hub_auth;
struct hub_server;
struct hub_tls_ctx;

struct hub_server_config {
    const char *host;       /* address to bind ("0.0.0.0", "::", "127.0.0.1", a name) */
    int port;               /* TCP port; 0 picks a free one */
    const char *public_dir; /* serve this directory instead of the embedded page, or NULL */
    const char *welcome;    /* greeting for raw clients / motd for JSON clients, or NULL */
    const char *const *allow_origins; /* extra allowed Origin patterns (borrowed) */
    size_t nallow_origins;            /* number of patterns */
    size_t max_message;               /* largest WebSocket message (65536) */
    uint32_t max_fragments;           /* frames per WebSocket message (128) */
    size_t max_header_bytes;          /* HTTP request head limit (8192) */
    uint32_t max_headers;             /* HTTP header lines (100) */
    size_t max_output;                /* hard output queue limit per client (1 MiB) */
    size_t soft_output;               /* soft output queue limit per client (256 KiB) */
    uint32_t soft_hold_ms;            /* how long the soft limit may be exceeded (10 s) */
    uint32_t handshake_ms;            /* time to complete each HTTP request (10 s) */
    uint32_t ping_interval_ms;        /* WebSocket ping period (25 s) */
    uint32_t pong_timeout_ms;         /* silence tolerated after a ping (10 s) */
    uint32_t drain_ms;                /* how long shutdown waits for clients (10 s) */
    uint32_t max_conns;               /* connections in total (100000; 0 = no limit) */
    uint32_t max_conns_per_ip;        /* connections per peer address (64; 0 = no limit) */
    uint32_t max_rooms;               /* rooms per connection (64) */
    uint32_t rate;                    /* messages per second per connection (20; 0 = no limit) */
    uint32_t burst;                   /* messages per connection at once (40) */
    const char *data_dir;             /* SQLite history directory ("./chathub-data") */
    int persist;                      /* 1: history in SQLite; 0: in memory only */
    uint32_t history;                 /* messages kept per room (1000) */
    uint32_t history_ttl_s;           /* age limit of history in seconds (0 = none) */
    uint64_t history_max_bytes;       /* history byte budget: on disk for SQLite
                                         (HUB_HISTORY_DISK_MAX_BYTES_DEFAULT), in memory with
                                         persist 0 (give it HUB_HISTORY_MAX_BYTES_DEFAULT);
                                         0 = none */
    int search_index;                 /* --search-index: 1 on, 0 off, HUB_HISTORY_SEARCH_AUTO */
    uint32_t max_total_rooms;         /* rooms that exist at once (10000; 0 = no limit) */
    uint64_t max_total_output;        /* output queued to all clients before publishers stop
                                         being read (256 MiB; 0 = no limit) */
    /* The engine (docs/engine.md): none of these means the memory engine. */
    const char *const *redis_urls; /* --redis: one URL per shard (borrowed); history then lives
                                      in Redis and data_dir/persist are not used */
    size_t nredis;                 /* number of URLs (0: memory engine) */
    const char *node_id;           /* --node-id, or NULL for a random one */
    const char *redis_prefix;      /* --redis-prefix: key and channel prefix ("chathub:") */
    uint32_t node_lease_ms;        /* --node-lease: a dead node's members and nicks vanish
                                      after it (30000) */
    /* Issue 20: Host names and /metrics peers (include/hub/access.h). */
    const char *const *server_names;  /* --server-name values (borrowed) */
    size_t nserver_names;             /* number of names */
    const char *const *metrics_allow; /* --metrics-allow CIDRs (borrowed); replace loopback */
    size_t nmetrics_allow;            /* number of CIDRs */
    int deflate;                      /* 1: accept permessage-deflate (on when built with zlib) */
    uint32_t deflate_min;             /* payloads shorter than this go uncompressed (128) */
    /* issue 18 (newcomer) */
    int strict_origin; /* 1: no local-dev Origin relaxation on loopback (origin.h) */
    const struct hub_cidr *trust_proxy; /* --trust-proxy networks (borrowed), or NULL */
    size_t ntrust_proxy;                     /* number of networks */
    struct hub_tls_ctx *tls;          /* TLS on the port (borrowed, reloaded on SIGHUP), or NULL */
    const struct hub_auth *auth;             /* --auth-secret-file verifier (borrowed), or NULL */
    int guests;                              /* --guests: unsigned guests beside signed users */
    /* Issue 13 part 3: the server API under /api/ (include/hub/api.h). */
    const char *api_key; /* --api-key-file's key (borrowed), or NULL: every /api/ path is 404 */
    size_t api_key_len;  /* its bytes (at least HUB_API_KEY_MIN) */
    uint32_t api_rate;   /* --api-rate: API requests per second, all callers (100; 0 = none) */
};

void hub_server_config_default(struct hub_server_config *cfg);

/* Creates the server on loop, loads the site, binds and listens, and installs
 * the signal handlers. The strings in cfg are borrowed and must outlive the
 * server. Returns 0; HUB_EINVAL for a malformed --metrics-allow CIDR or
 * --server-name (err says which); HUB_EIO when the address cannot be bound (err gets a
 * one-line reason such as "cannot listen on 0.0.0.0:8080: address already in
 * use"); HUB_ENOENT/HUB_ELIMIT for a bad --public directory; HUB_ENOMEM. */
int hub_server_new(struct hub_server **out, uv_loop_t *loop, const struct hub_server_config *cfg,
                   char *err, size_t errsz);

/* The port actually bound (useful with port 0). */
int hub_server_port(const struct hub_server *s);

/* Writes the address actually bound, numeric, with the port
 * ("0.0.0.0:8080", "[::1]:8080"), into out. Sets *loopback to 1 when only
 * this host can reach it (127.0.0.0/8, ::1). */
void hub_server_bound(const struct hub_server *s, char *out, size_t outsz, int *loopback);
/* Writes a one-line description of the engine into buf, e.g. "engine redis
 * (2 shards), node n1" or "engine memory, history in SQLite (DIR)". */
void hub_server_engine_info(const struct hub_server *s, char *buf, size_t n);

/* Starts the same orderly shutdown a signal does. */
void hub_server_shutdown(struct hub_server *s);

/* Frees the server. Call after uv_run has returned, i.e. after the shutdown
 * has closed every handle. */
void hub_server_free(struct hub_server *s);

#endif
