/*
 * api.h: the server HTTP API under /api/ (docs/operations.md, "Server API").
 *
 * The application a chat lives in calls it from its backend: publish into a
 * room, list who is online, read history, list rooms, and moderate (kick,
 * ban, unban, mute, unmute, disconnect, topic). Every call carries
 * "Authorization: Bearer KEY"; the key is compared in constant time and
 * never logged. Requests are limited together to cfg.rate per second (429
 * beyond). Bodies are JSON objects (jansson); every answer is JSON, errors
 * as {"error":{"code","message"}} with the matching status.
 *
 * The module knows no sockets and no HTTP framing: the server hands it one
 * parsed request (struct hub_api_request, views borrowed for the call) and
 * a reply callback. The answer may come before hub_api_handle returns (the
 * memory engine over the memory store answers at once) or later, from an
 * engine callback; a pending call can be cancelled (its connection closed),
 * after which its callback never fires and nothing of the caller's is
 * touched. Everything goes through the chat's engine (hub_chat_engine), so
 * a publish reaches members on every node, and moderation becomes a
 * restriction (hub_engine_restrict) and/or a control message
 * (hub_engine_control) that every node applies to its own clients.
 */
#ifndef HUB_API_H
#define HUB_API_H

#include "hub/common.h"

#include <stdint.h>

struct hub_api;
struct hub_api_call;
struct hub_buf;
struct hub_chat;

#define HUB_API_KEY_MIN 16    /* bytes of a key, at least */
#define HUB_API_KEY_MAX 4096  /* bytes of a key file, at most */
#define HUB_API_TEXT_MAX 4000 /* characters of a published text (chat's max_text) */
#define HUB_API_RATE_DEFAULT 100

struct hub_api_config {
    const char *key;         /* the API key (copied) */
    size_t key_len;          /* its bytes, >= HUB_API_KEY_MIN */
    uint32_t rate;           /* requests per second for the whole API, after the key check
                                (burst: the same number); 0 = no limit */
    struct hub_chat *chat;   /* borrowed; its engine serves every call */
    int64_t (*now_ms)(void); /* wall clock (ms since the Unix epoch) for publishes and bans;
                                NULL = the system clock */
};

/* One request. Views are borrowed for the hub_api_handle call only. */
struct hub_api_request {
    int method;                   /* enum hub_http_method */
    struct hub_iov method_name;   /* for the log line */
    struct hub_iov path;          /* "/api/publish" */
    struct hub_iov query;         /* without '?' */
    struct hub_iov authorization; /* the Authorization header */
    struct hub_iov body;          /* the request body */
    const char *peer;             /* the caller's address, for the log line */
    uint64_t now;                 /* a monotonic clock in ms, for the rate limit */
};

/* An answer: status, extra header lines (each ending in "\r\n", or NULL)
 * and a JSON body (application/json). Borrowed for the callback. */
struct hub_api_reply {
    int status;
    const char *headers;
    const char *body;
    size_t len;
};

typedef void (*hub_api_reply_cb)(void *owner, const struct hub_api_reply *r);

/* Creates the API. Returns 0, HUB_EINVAL (key shorter than HUB_API_KEY_MIN)
 * or HUB_ENOMEM. */
int hub_api_new(struct hub_api **out, const struct hub_api_config *cfg);

/* Frees the API. Every call must have completed or been cancelled. NULL is
 * ignored. */
void hub_api_free(struct hub_api *a);

/* Handles one request; cb(owner, reply) fires exactly once unless the call
 * is cancelled. Returns 1 when cb has fired already (before returning), 0
 * when the answer comes later: *call is then the pending call, for
 * hub_api_cancel, valid until cb fires. */
int hub_api_handle(struct hub_api *a, const struct hub_api_request *req, hub_api_reply_cb cb,
                   void *owner, struct hub_api_call **call);

/* Forgets the owner of a pending call: its callback never fires (the call's
 * engine request still completes, and is then freed). */
void hub_api_cancel(struct hub_api_call *call);

/* Appends the chathub_api_requests_total{endpoint,status} rows to b. */
void hub_api_metrics_render(const struct hub_api *a, struct hub_buf *b);

/* Reads an API key file: the key is its content without surrounding white
 * space. Returns 0 with the key in out (outsz bytes, NUL-terminated) and
 * its length in *len, or -1 with a one-line reason in why (unreadable,
 * larger than HUB_API_KEY_MAX, shorter than HUB_API_KEY_MIN bytes). The
 * key itself never appears in the reason. */
int hub_api_read_key_file(const char *path, char *out, size_t outsz, size_t *len, char *why,
                          size_t whysz);

#endif
