/*
 * http.h: the HTTP/1.1 side of a connection, up to the WebSocket upgrade.
 *
 * The only module that includes http-parser. A hub_http parses the requests
 * that arrive on one connection (pipelined and keep-alive), enforces the
 * request limits, serves static files from a hub_static site, and hands
 * anything else to the owner's request callback: health and metrics
 * endpoints, and WebSocket upgrades, which it validates (RFC 6455 section 4.2)
 * and answers with 101 Switching Protocols.
 *
 * Responses go into the connection's output queue (hub_conn_write); the
 * module never writes to a socket itself, so it is tested sans-I/O with a
 * detached hub_conn.
 */
#ifndef HUB_HTTP_H
#define HUB_HTTP_H

#include "hub/common.h"

struct hub_conn;
struct hub_http;
struct hub_static;

enum hub_http_method {
    HUB_HTTP_GET = 1,
    HUB_HTTP_HEAD = 2,
    HUB_HTTP_OTHER = 3, /* anything else: answered 405 unless the callback takes it */
    HUB_HTTP_POST = 4,  /* POST: answered 405 unless the callback takes it */
};

/* Largest request body kept (and read at all): a Content-Length over it is
 * answered 413 at once, and a chunked body that grows past it gets 413 as
 * soon as it does. */
#define HUB_HTTP_MAX_BODY (64u * 1024)

/* One parsed request. Every view points into the hub_http's own storage and
 * is valid only during the request callback. Absent headers have len 0. When
 * a header appears more than once, the values are joined with ", ". */
struct hub_http_request {
    int method;                   /* enum hub_http_method */
    struct hub_iov method_name;   /* e.g. "GET" */
    struct hub_iov path;          /* raw path, without the query, e.g. "/ws/lobby" */
    struct hub_iov query;         /* after '?', without it */
    unsigned short http_major;    /* 1 */
    unsigned short http_minor;    /* 0 or 1 */
    int keep_alive;               /* 1 if the connection persists after the response */
    int upgrade;                  /* 1 if the request asks for a protocol upgrade */
    struct hub_iov host;          /* Host */
    struct hub_iov origin;        /* Origin */
    struct hub_iov upgrade_hdr;   /* Upgrade */
    struct hub_iov connection;    /* Connection */
    struct hub_iov ws_key;        /* Sec-WebSocket-Key */
    struct hub_iov ws_version;    /* Sec-WebSocket-Version */
    struct hub_iov ws_protocol;   /* Sec-WebSocket-Protocol */
    struct hub_iov if_none_match; /* If-None-Match */
    struct hub_iov ws_extensions; /* Sec-WebSocket-Extensions */
    struct hub_iov forwarded_for; /* X-Forwarded-For (for --trust-proxy) */
    struct hub_iov forwarded;     /* Forwarded (RFC 7239, for --trust-proxy) */
    struct hub_iov authorization; /* Authorization (the server API's key; never logged) */
    struct hub_iov content_type;  /* Content-Type */
    struct hub_iov body;          /* the decoded body (Content-Length or chunked), only for
                                     paths under cfg->body_prefix; else empty */
};

/* Content-Security-Policy values for HTML responses. The hub's own page
 * satisfies PAGE: script, style and images from the hub only (no inline
 * script or style attribute; the page's empty data: favicon is allowed),
 * WebSockets to ws:/wss:, no plugins, no <base>, forms to the hub, never
 * framed. Pages of a --public directory are the operator's and may carry
 * inline script, so they get FRAMES, which only forbids framing. */
#define HUB_HTTP_CSP_PAGE                                                                          \
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "              \
    "connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; form-action 'self'; "        \
    "frame-ancestors 'none'"
#define HUB_HTTP_CSP_FRAMES "frame-ancestors 'none'"

struct hub_http_config {
    size_t max_header_bytes;       /* request line plus headers; over it: 431 (8192) */
    unsigned max_headers;          /* header lines; over it: 431 (100) */
    const struct hub_static *site; /* files to serve; borrowed, outlives every hub_http */
    const char *csp;               /* CSP of HTML responses (HUB_HTTP_CSP_PAGE); borrowed */
    int hsts;                      /* 1: responses carry Strict-Transport-Security (TLS on) */
    const char *body_prefix;       /* requests whose path starts with this ("/api/") keep their
                                      body (req.body) and get JSON error responses
                                      ({"error":{"code","message"}}); NULL: bodies are read and
                                      thrown away, errors are text/plain; borrowed */
};

/* What the request callback did with a request. */
enum hub_http_action {
    HUB_HTTP_PASS = 0,     /* not mine: serve it from the site (or 404/405) */
    HUB_HTTP_DONE = 1,     /* the callback queued a response with hub_http_respond* */
    HUB_HTTP_UPGRADED = 2, /* the callback called hub_http_accept_websocket */
    HUB_HTTP_LATER = 3,    /* the callback answers later: hub_http_respond* and then
                              hub_http_resume, after the callback has returned (if it
                              answered before returning, LATER counts as DONE) */
};

/* Called once per complete request, in order. Returns an enum hub_http_action. */
typedef int (*hub_http_request_cb)(struct hub_http *h, const struct hub_http_request *req,
                                   void *data);

/* Results of hub_http_feed. */
enum hub_http_feed_result {
    HUB_HTTP_MORE = 0,   /* all bytes consumed; feed more when they arrive */
    HUB_HTTP_SWITCH = 1, /* upgraded: the bytes after *consumed belong to WebSocket */
    HUB_HTTP_CLOSE = 2,  /* the connection must end after the queued output
                            (error response or "Connection: close"); it is already
                            marked close-after-flush; stop feeding */
    HUB_HTTP_WAIT = 3,   /* a request is waiting for its answer (HUB_HTTP_LATER): the
                            bytes after *consumed were not parsed; keep them and feed
                            them after hub_http_resume (pipelined requests stay in
                            order). Stop reading meanwhile: feeding while waiting
                            consumes nothing and returns HUB_HTTP_WAIT again */
};

/* Sets cfg to the defaults above (site left NULL, csp HUB_HTTP_CSP_PAGE). */
void hub_http_config_default(struct hub_http_config *cfg);

/* Creates the HTTP state of conn. conn, cfg and data are borrowed and must
 * outlive h. Returns NULL when out of memory. */
struct hub_http *hub_http_new(struct hub_conn *conn, const struct hub_http_config *cfg,
                              hub_http_request_cb cb, void *data);

void hub_http_free(struct hub_http *h);

/* Parses len bytes (borrowed for the call), calling cb for each complete
 * request and queueing responses. Malformed input gets 400 (431 for header
 * limits) and HUB_HTTP_CLOSE. Returns an enum hub_http_feed_result; *consumed
 * says how many bytes were used (all of them, except after HUB_HTTP_SWITCH). */
int hub_http_feed(struct hub_http *h, const char *data, size_t len, size_t *consumed);

/* Ends the wait of a request the callback took with HUB_HTTP_LATER, after
 * its answer was queued with hub_http_respond* (none queued: 500). Returns
 * HUB_HTTP_MORE (feed the kept bytes, then read on) or HUB_HTTP_CLOSE (the
 * request did not keep the connection, or it is closing). Returns
 * HUB_HTTP_MORE and does nothing when no request is waiting. */
int hub_http_resume(struct hub_http *h);

/* Returns 1 while a request waits for its answer (HUB_HTTP_WAIT). */
int hub_http_waiting(const struct hub_http *h);

/* Queues a complete response for the current request: status line, Date-less
 * headers (Content-Type if content_type is not NULL, Content-Length,
 * Connection: close when the request does not keep alive,
 * X-Content-Type-Options: nosniff, and for text/html the security headers:
 * Content-Security-Policy: cfg->csp, X-Frame-Options: DENY,
 * Referrer-Policy: no-referrer), extra_headers
 * verbatim (each line ending in "\r\n", or NULL), then body unless the
 * request was HEAD. Returns 0, HUB_ENOMEM or HUB_ECLOSED. All borrowed. */
int hub_http_respond(struct hub_http *h, int status, const char *content_type,
                     const char *extra_headers, const void *body, size_t body_len);

/* Queues the hub's standard small text/plain error page for status (400, 403,
 * 404, 405 with "Allow: GET, HEAD", 426 with "Sec-WebSocket-Version: 13", 431,
 * 503, ...); for a path under cfg->body_prefix the body is JSON instead
 * ({"error":{"code":"too_large","message":"413 Content Too Large"}}).
 * Returns as hub_http_respond. While a request waits (HUB_HTTP_WAIT), the
 * respond calls answer it. */
int hub_http_respond_status(struct hub_http *h, int status);

/* Checks an upgrade request against RFC 6455: GET, HTTP/1.1 or later,
 * "Upgrade" containing the token "websocket" and "Connection" containing
 * "Upgrade" (both case-insensitive, inside lists), a Sec-WebSocket-Key that
 * is base64 of exactly 16 bytes, and Sec-WebSocket-Version 13. Returns 0 when
 * valid, else the HTTP status to answer (400, or 426 for a wrong version). */
int hub_http_check_websocket(const struct hub_http_request *req);

/* Answers a request that passed hub_http_check_websocket with 101 Switching
 * Protocols, Sec-WebSocket-Accept computed from the key, and
 * Sec-WebSocket-Protocol: subprotocol when subprotocol is not NULL. After it
 * the callback returns HUB_HTTP_UPGRADED. Returns 0 or HUB_ENOMEM/HUB_ECLOSED. */
int hub_http_accept_websocket(struct hub_http *h, const struct hub_http_request *req,
                              const char *subprotocol);

/* Like hub_http_accept_websocket, and appends extensions (a NUL-terminated
 * header line ending in "\r\n", such as hub_deflate_negotiate makes; borrowed;
 * NULL for none) to the 101. HUB_EINVAL (nothing queued) when it is not
 * exactly one line. */
int hub_http_accept_websocket_ext(struct hub_http *h, const struct hub_http_request *req,
                                  const char *subprotocol, const char *extensions);

/* Computes Sec-WebSocket-Accept for a key (RFC 6455 section 1.3) into out
 * (29 bytes: 28 characters and a NUL). */
void hub_http_websocket_accept_key(struct hub_iov key, char out[29]);

/* Returns the reason phrase of a status code ("Not Found"). */
const char *hub_http_reason(int status);

#endif
