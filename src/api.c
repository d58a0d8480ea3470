/*
 * api.c: the server HTTP API (api.h, docs/operations.md "Server API").
 *
 * A request goes: key check (401), rate limit (429), route (404, 405),
 * engine readiness (503), arguments (400), then one engine call, or two in
 * a row (a ban is a restriction and then a control message; presence of an
 * empty room asks history whether the room exists). Each request is one
 * struct hub_api_call that lives until its answer: the engine callbacks get
 * the call, never the caller's state, so a connection that closes while
 * the engine works only cancels its call (owner NULL), and the completion
 * frees the call without touching anything else.
 *
 * Every answer goes through finish(): it logs the line (method, path,
 * status, peer; never the key or the body), counts it for /metrics and
 * hands it to the owner.
 */
#include "hub/api.h"

#include "hub/buf.h"
#include "hub/chat.h"
#include "hub/engine.h"
#include "hub/history.h"
#include "hub/http.h"
#include "hub/ident.h"
#include "hub/jsonw.h"
#include "hub/log.h"
#include "hub/utf8.h"

#include <jansson.h>

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#define API_PAGE_DEFAULT 50        /* history messages without limit= (the history op's) */
#define API_PAGE_MAX 100           /* history messages at most (the history op's) */
#define API_PAGE_BYTES (256 << 10) /* history reply bytes at most: under any output limit */
#define API_LIST_MAX 1000          /* members and rooms listed at most */
#define API_SUB_MAX 256            /* bytes of a user id (a token's sub) */
#define API_REASON_MAX 512         /* bytes of a reason */
#define API_DURATION_MAX (100LL * 365 * 86400) /* seconds of a ban or mute */

enum endpoint {
    EP_PUBLISH,
    EP_PRESENCE,
    EP_HISTORY,
    EP_ROOMS,
    EP_KICK,
    EP_BAN,
    EP_UNBAN,
    EP_MUTE,
    EP_UNMUTE,
    EP_DISCONNECT,
    EP_TOPIC,
    EP_OTHER, /* unknown paths, and requests refused before routing (401, 429) */
    EP_COUNT,
};

static const char *const ep_names[EP_COUNT] = {
    "publish", "presence", "history", "rooms",      "kick",  "ban",
    "unban",   "mute",     "unmute",  "disconnect", "topic", "other",
};

/* The statuses counted, one column each; anything else counts as 500. */
static const int statuses[] = {200, 400, 401, 404, 405, 413, 429, 500, 503};
#define NSTATUS (sizeof(statuses) / sizeof(statuses[0]))

struct hub_api {
    char *key;
    size_t key_len;
    uint32_t rate;
    double tokens;     /* rate limit: requests that may come now */
    uint64_t refilled; /* when tokens was last topped up (request clock) */
    int started;       /* the bucket has been filled once */
    struct hub_chat *chat;
    int64_t (*now_ms)(void);
    struct hub_api_call *current; /* the call hub_api_handle is running, until it answers */
    uint64_t counts[EP_COUNT][NSTATUS];
};

/* What a moderation call does once its first step is done. */
struct control_step {
    int kind;      /* enum hub_engine_control_kind, 0: none */
    int64_t until; /* BAN: until when */
    size_t tlen;   /* target bytes in buf */
    size_t rlen;   /* room bytes, after the target */
    size_t xlen;   /* text bytes, after the room */
};

struct hub_api_call {
    struct hub_api *api;
    hub_api_reply_cb cb; /* NULL once cancelled */
    void *owner;
    int endpoint;
    char method[8];
    char path[48];
    char peer[64];
    /* History and presence: the room and the page asked for. */
    char room[HUB_CHAT_ROOM_MAX + 1];
    size_t room_len;
    int dir;
    uint64_t anchor;
    /* Moderation: the control message sent after a restriction or topic. */
    struct control_step step;
    int64_t until; /* BAN and MUTE: reported in the answer (0: lifted, INT64_MAX: for good) */
    char *buf;     /* target, room and text of step (owned) */
};

/* ---- answers ------------------------------------------------------------ */

static int64_t wall_ms(const struct hub_api *a)
{
    if (a->now_ms != NULL)
        return a->now_ms();
    /* uv_gettimeofday, not timespec_get: the Windows cross build's C
     * library has no timespec_get. */
    uv_timeval64_t tv;
    if (uv_gettimeofday(&tv) != 0)
        return 0;
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static void count(struct hub_api *a, int endpoint, int status)
{
    size_t k;
    for (k = 0; k < NSTATUS; k++)
        if (statuses[k] == status)
            break;
    if (k == NSTATUS)
        k = 7; /* 500 */
    a->counts[endpoint][k]++;
}

/* Answers call, logs and counts the answer, and frees the call. */
static void finish(struct hub_api_call *call, int status, const char *headers, const char *body,
                   size_t len)
{
    struct hub_api *a = call->api;
    count(a, call->endpoint, status);
    hub_log(status >= 500 ? HUB_LOG_WARN : HUB_LOG_INFO, "api %s: %s %s %d%s", call->peer,
            call->method, call->path, status, call->cb == NULL ? " (caller gone)" : "");
    if (a->current == call)
        a->current = NULL;
    if (call->cb != NULL) {
        struct hub_api_reply r = {status, headers, body, len};
        call->cb(call->owner, &r);
    }
    free(call->buf);
    free(call);
}

/* Answers with the JSON text of w (or 500 if writing it failed). */
static void finish_json(struct hub_api_call *call, struct hub_jsonw *w)
{
    if (hub_jsonw_error(w) != 0) {
        static const char oom[] =
            "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}";
        finish(call, 500, NULL, oom, sizeof(oom) - 1);
    } else {
        finish(call, 200, NULL, w->b.data, w->b.len);
    }
    hub_jsonw_free(w);
}

static void finish_error(struct hub_api_call *call, int status, const char *code,
                         const char *message)
{
    struct hub_jsonw w = {0};
    hub_jsonw_raw(&w, "{\"error\":{");
    hub_jsonw_kstr(&w, "code", code, strlen(code));
    hub_jsonw_kstr(&w, "message", message, strlen(message));
    hub_jsonw_raw(&w, "}}");
    const char *headers = status == 401   ? "WWW-Authenticate: Bearer realm=\"chathub\"\r\n"
                          : status == 429 ? "Retry-After: 1\r\n"
                          : status == 503 ? "Retry-After: 1\r\n"
                                          : NULL;
    if (hub_jsonw_error(&w) != 0)
        finish(call, status, headers, "{}", 2);
    else
        finish(call, status, headers, w.b.data, w.b.len);
    hub_jsonw_free(&w);
}

static void finish_ok(struct hub_api_call *call)
{
    static const char ok[] = "{\"ok\":true}";
    finish(call, 200, NULL, ok, sizeof(ok) - 1);
}

/* An engine failure as an answer. */
static void finish_engine_error(struct hub_api_call *call, int err)
{
    switch (err) {
    case HUB_EAGAIN:
    case HUB_ECLOSED:
        finish_error(call, 503, "unavailable", "the engine cannot serve this now: try again");
        break;
    case HUB_EIO:
        finish_error(call, 503, "unavailable", "the message store failed: try again");
        break;
    case HUB_EINVAL:
        finish_error(call, 400, "bad_request", "the engine refused the arguments");
        break;
    case HUB_ENOMEM:
        finish_error(call, 500, "internal", "out of memory");
        break;
    default:
        finish_error(call, 500, "internal", hub_strerror(err));
        break;
    }
}

/* ---- request parsing ----------------------------------------------------- */

/* Compares the presented key with ours in time that depends only on our
 * key's length: every byte of ours is looked at whatever was presented. */
static int key_matches(const struct hub_api *a, struct hub_iov given)
{
    unsigned diff = given.len != a->key_len;
    for (size_t i = 0; i < a->key_len; i++) {
        unsigned char g = given.len > 0 ? (unsigned char)given.base[i % given.len] : 0;
        diff |= (unsigned)(g ^ (unsigned char)a->key[i]);
    }
    return diff == 0;
}

/* Takes the key of "Bearer KEY" (scheme case-insensitive, RFC 6750). */
static int bearer(struct hub_iov auth, struct hub_iov *key)
{
    static const char scheme[] = "bearer ";
    if (auth.len < sizeof(scheme) || !hub_eq_ci(auth.base, 7, scheme, 7))
        return -1;
    size_t i = 7;
    while (i < auth.len && auth.base[i] == ' ')
        i++;
    key->base = auth.base + i;
    key->len = auth.len - i;
    while (key->len > 0 && (key->base[key->len - 1] == ' ' || key->base[key->len - 1] == '\t'))
        key->len--;
    return key->len > 0 ? 0 : -1;
}

/* The token bucket of the whole API: rate per second, as many at once. */
static int rate_admit(struct hub_api *a, uint64_t now)
{
    if (a->rate == 0)
        return 1;
    if (!a->started) {
        a->started = 1;
        a->tokens = a->rate;
        a->refilled = now;
    }
    if (now > a->refilled) {
        a->tokens += (double)(now - a->refilled) * a->rate / 1000.0;
        if (a->tokens > a->rate)
            a->tokens = a->rate;
        a->refilled = now;
    }
    if (a->tokens < 1.0)
        return 0;
    a->tokens -= 1.0;
    return 1;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Finds name= in a query string and percent-decodes its value into out
 * (outsz bytes, NUL-terminated). Returns 1 (found), 0 (absent) or -1
 * (malformed escape, or longer than outsz - 1). */
static int query_param(struct hub_iov q, const char *name, char *out, size_t outsz, size_t *len)
{
    size_t nlen = strlen(name), i = 0;
    while (i < q.len) {
        size_t end = i;
        while (end < q.len && q.base[end] != '&')
            end++;
        if (end - i > nlen && memcmp(q.base + i, name, nlen) == 0 && q.base[i + nlen] == '=') {
            size_t n = 0;
            for (size_t j = i + nlen + 1; j < end; j++) {
                char c = q.base[j];
                if (c == '%') {
                    int hi = j + 2 < end ? hexval(q.base[j + 1]) : -1;
                    int lo = j + 2 < end ? hexval(q.base[j + 2]) : -1;
                    if (hi < 0 || lo < 0)
                        return -1;
                    c = (char)(hi * 16 + lo);
                    j += 2;
                } else if (c == '+') {
                    c = ' ';
                }
                if (n + 1 >= outsz)
                    return -1;
                out[n++] = c;
            }
            out[n] = '\0';
            *len = n;
            return 1;
        }
        i = end + 1;
    }
    return 0;
}

/* A decimal query parameter in [min, max]. Returns 1, 0 (absent) or -1. */
static int query_uint(struct hub_iov q, const char *name, uint64_t min, uint64_t max, uint64_t *v)
{
    char s[24];
    size_t n;
    int rc = query_param(q, name, s, sizeof(s), &n);
    if (rc <= 0)
        return rc;
    if (n == 0 || n > 19)
        return -1;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        x = x * 10 + (uint64_t)(s[i] - '0');
    }
    if (x < min || x > max)
        return -1;
    *v = x;
    return 1;
}

/* The room parameter of a GET (room=R). Returns 0, or -1 after a 400. */
static int get_query_room(struct hub_api_call *call, struct hub_iov query)
{
    int rc = query_param(query, "room", call->room, sizeof(call->room), &call->room_len);
    if (rc == 0) {
        finish_error(call, 400, "bad_request", "the room parameter is missing (?room=NAME)");
        return -1;
    }
    if (rc < 0 || !hub_chat_valid_room(call->room, call->room_len)) {
        finish_error(call, 400, "bad_request",
                     "bad room name: 1-64 characters of A-Z a-z 0-9 _ . : -");
        return -1;
    }
    return 0;
}

/* The body as a JSON object. Returns it (the caller decrefs), or NULL
 * after a 400. */
static json_t *get_body(struct hub_api_call *call, struct hub_iov body)
{
    json_error_t jerr;
    json_t *root =
        body.len > 0 ? json_loadb(body.base, body.len, JSON_REJECT_DUPLICATES, &jerr) : NULL;
    if (root == NULL || !json_is_object(root)) {
        json_decref(root);
        finish_error(call, 400, "bad_json", "the body must be a JSON object");
        return NULL;
    }
    return root;
}

/* A string member: 1 (present, *out set, borrowed from root), 0 (absent or
 * null), -1 (another type). */
static int get_str(json_t *root, const char *key, struct hub_iov *out)
{
    json_t *v = json_object_get(root, key);
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return -1;
    out->base = json_string_value(v);
    out->len = json_string_length(v);
    return 1;
}

/* An integer member in [min, max]: 1, 0 (absent or null), -1. */
static int get_int(json_t *root, const char *key, json_int_t min, json_int_t max, json_int_t *out)
{
    json_t *v = json_object_get(root, key);
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
        return -1;
    *out = json_integer_value(v);
    return 1;
}

/* The body's room, required or not. Returns 1 (set), 0 (absent and not
 * required) or -1 after a 400. */
static int get_body_room(struct hub_api_call *call, json_t *root, int required,
                         struct hub_iov *room)
{
    int rc = get_str(root, "room", room);
    if (rc == 0 && !required) {
        room->base = "";
        room->len = 0;
        return 0;
    }
    if (rc != 1 || !hub_chat_valid_room(room->base, room->len)) {
        finish_error(call, 400, "bad_request",
                     rc == 0 ? "\"room\" is required"
                             : "bad room name: 1-64 characters of A-Z a-z 0-9 _ . : -");
        return -1;
    }
    memcpy(call->room, room->base, room->len);
    call->room[room->len] = '\0';
    call->room_len = room->len;
    return 1;
}

/* The nick rules of chat's hello and nick ops (nicks.c, ident.h). Returns
 * NULL or why not. */
static const char *nick_problem(const char *s, size_t len)
{
    if (len == 0)
        return "the nick is empty";
    if (len > HUB_CHAT_NICK_BYTES || !hub_utf8_valid(s, len) ||
        hub_utf8_length(s, len) > HUB_CHAT_NICK_MAX)
        return "the nick is longer than 32 characters or not UTF-8";
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f || (c == 0xc2 && i + 1 < len && (unsigned char)s[i + 1] < 0xa0))
            return "the nick contains control characters";
    }
    if (s[0] == ' ' || s[len - 1] == ' ')
        return "the nick starts or ends with a space";
    if (memchr(s, ',', len) != NULL)
        return "the nick contains a comma";
    return hub_ident_nick_check(s, len);
}

/* A free text (reason, topic): UTF-8 without C0 controls but tab and line
 * feed, at most max bytes. */
static int text_ok(struct hub_iov t, size_t max)
{
    return t.len <= max && hub_utf8_valid(t.base, t.len) &&
           hub_ident_text_check(t.base, t.len) == NULL;
}

/* The claim key chat uses for a guest's nick (nicks.c: the ident key, named
 * by "#" and its SHA-1 when longer than the engine takes). Returns its
 * length, or 0 when the nick has none. */
static size_t nick_claim_key(const char *s, size_t len, char key[HUB_IDENT_KEY_MAX])
{
    size_t n = 0;
    if (hub_ident_claim_key(s, len, HUB_ENGINE_NICK_MAX, key, HUB_IDENT_KEY_MAX, &n) != 0)
        return 0;
    return n;
}

/* Who a moderation call is about: "user" (a token's sub) or "nick".
 * target is what control messages name ("u:<sub>" or the nick), actor the
 * restriction key ("u:<sub>" or "n:<claim key>"). Both written NUL-
 * terminated into bufs of API_SUB_MAX + HUB_IDENT_KEY_MAX bytes. Returns 0
 * or -1 after a 400. */
#define TARGET_MAX (API_SUB_MAX + HUB_IDENT_KEY_MAX + 4)
static int get_target(struct hub_api_call *call, json_t *root, char *target, size_t *tlen,
                      char *actor, size_t *alen)
{
    struct hub_iov user = {"", 0}, nick = {"", 0};
    int hu = get_str(root, "user", &user), hn = get_str(root, "nick", &nick);
    if (hu < 0 || hn < 0 || (hu > 0) == (hn > 0)) {
        finish_error(call, 400, "bad_request", "give one of \"user\" (a user id) or \"nick\"");
        return -1;
    }
    if (hu > 0) {
        if (user.len == 0 || !text_ok(user, API_SUB_MAX) || memchr(user.base, '\n', user.len)) {
            finish_error(call, 400, "bad_request", "\"user\" must be 1-256 bytes of text");
            return -1;
        }
        *tlen = (size_t)snprintf(target, TARGET_MAX, "u:%.*s", (int)user.len, user.base);
        memcpy(actor, target, *tlen + 1);
        *alen = *tlen;
        return 0;
    }
    const char *why = nick_problem(nick.base, nick.len);
    char key[HUB_IDENT_KEY_MAX];
    size_t klen = why == NULL ? nick_claim_key(nick.base, nick.len, key) : 0;
    if (why != NULL || klen == 0) {
        finish_error(call, 400, "bad_request", why != NULL ? why : "not a nick");
        return -1;
    }
    memcpy(target, nick.base, nick.len);
    target[nick.len] = '\0';
    *tlen = nick.len;
    *alen = (size_t)snprintf(actor, TARGET_MAX, "n:%.*s", (int)klen, key);
    return 0;
}

/* The optional reason. Returns 0 or -1 after a 400. */
static int get_reason(struct hub_api_call *call, json_t *root, struct hub_iov *reason)
{
    int rc = get_str(root, "reason", reason);
    if (rc == 0) {
        reason->base = "";
        reason->len = 0;
    }
    if (rc < 0 || !text_ok(*reason, API_REASON_MAX)) {
        finish_error(call, 400, "bad_request", "\"reason\" must be text of at most 512 bytes");
        return -1;
    }
    return 0;
}

/* ---- publish -------------------------------------------------------------- */

static void publish_done(void *data, int err, uint64_t offset, int64_t ts, int duplicate)
{
    struct hub_api_call *call = data;
    if (err == HUB_EINVAL) {
        finish_error(call, 400, "bad_request", "\"reply_to\" is not a message of this room");
        return;
    }
    if (err != 0) {
        finish_engine_error(call, err);
        return;
    }
    struct hub_jsonw w = {0};
    hub_jsonw_raw(&w, "{");
    hub_jsonw_kuint(&w, "offset", offset);
    hub_jsonw_kint(&w, "ts", ts);
    if (duplicate)
        hub_jsonw_kbool(&w, "duplicate", 1);
    hub_jsonw_raw(&w, "}");
    finish_json(call, &w);
}

static void do_publish(struct hub_api_call *call, struct hub_engine *e,
                       const struct hub_api_request *req)
{
    json_t *root = get_body(call, req->body);
    if (root == NULL)
        return;
    struct hub_iov room, text, from = {"api", 3}, cmid = {"", 0};
    json_int_t reply_to = 0;
    const char *why = NULL;
    int rc;
    if (get_body_room(call, root, 1, &room) < 0)
        goto out;
    if (get_str(root, "text", &text) != 1 || text.len == 0)
        why = "\"text\" must be a non-empty string";
    else if ((why = hub_ident_text_check(text.base, text.len)) != NULL)
        ;
    else if (hub_utf8_length(text.base, text.len) > HUB_API_TEXT_MAX)
        why = "\"text\" is longer than 4000 characters";
    else if ((rc = get_str(root, "from", &from)) < 0)
        why = "\"from\" must be a string";
    else if (rc > 0 && (why = nick_problem(from.base, from.len)) != NULL)
        ;
    else if (get_str(root, "cmid", &cmid) < 0 || cmid.len > HUB_CHAT_CMID_MAX)
        why = "\"cmid\" must be a string of at most 64 bytes";
    else if (get_int(root, "reply_to", 0, (json_int_t)1 << 53, &reply_to) < 0)
        why = "\"reply_to\" must be the offset of a message";
    if (why != NULL) {
        finish_error(call, 400, "bad_request", why);
        goto out;
    }
    struct hub_engine_pub p = {
        .room = room,
        .from = from,
        .text = text,
        .cmid = cmid,
        .client = {"api", 3},
        .ts = wall_ms(call->api),
        .reply_to = (uint64_t)reply_to,
    };
    rc = hub_engine_publish(e, &p, publish_done, call);
    if (rc != 0)
        finish_engine_error(call, rc);
out:
    json_decref(root);
}

/* ---- presence ------------------------------------------------------------- */

static void exists_done(void *data, int err, const struct hub_history_pos *pos,
                        const struct hub_history_msg *msgs, size_t n, int complete)
{
    struct hub_api_call *call = data;
    (void)msgs, (void)n, (void)complete;
    if (err != 0) {
        finish_engine_error(call, err);
        return;
    }
    if (pos->last == 0) {
        finish_error(call, 404, "no_such_room", "the room has no members and no messages");
        return;
    }
    struct hub_jsonw w = {0};
    hub_jsonw_raw(&w, "{");
    hub_jsonw_kstr(&w, "room", call->room, call->room_len);
    hub_jsonw_kuint(&w, "count", 0);
    hub_jsonw_raw(&w, ",\"members\":[]}");
    finish_json(call, &w);
}

static void members_done(void *data, int err, uint64_t total, const struct hub_engine_member *m,
                         size_t n)
{
    struct hub_api_call *call = data;
    if (err != 0) {
        finish_engine_error(call, err);
        return;
    }
    if (total == 0) {
        /* Nobody here: a room is known if it has messages. */
        struct hub_iov room = {call->room, call->room_len};
        int rc = hub_engine_read(hub_chat_engine(call->api->chat), room, HUB_HISTORY_LATEST, 0, 0,
                                 exists_done, call);
        if (rc != 0)
            finish_engine_error(call, rc);
        return;
    }
    struct hub_jsonw w = {0};
    hub_jsonw_raw(&w, "{");
    hub_jsonw_kstr(&w, "room", call->room, call->room_len);
    hub_jsonw_kuint(&w, "count", total);
    hub_jsonw_raw(&w, ",\"members\":[");
    for (size_t i = 0; i < n; i++) {
        hub_jsonw_item(&w);
        hub_jsonw_raw(&w, "{");
        hub_jsonw_kstr(&w, "nick", m[i].nick.base, m[i].nick.len);
        hub_jsonw_kstr(&w, "client", m[i].client.base, m[i].client.len);
        hub_jsonw_raw(&w, "}");
    }
    hub_jsonw_raw(&w, "]");
    /* Past API_LIST_MAX the engine gives the count only. */
    if (n < total)
        hub_jsonw_kbool(&w, "truncated", 1);
    hub_jsonw_raw(&w, "}");
    finish_json(call, &w);
}

static void do_presence(struct hub_api_call *call, struct hub_engine *e,
                        const struct hub_api_request *req)
{
    if (get_query_room(call, req->query) < 0)
        return;
    struct hub_iov room = {call->room, call->room_len};
    int rc = hub_engine_members(e, room, API_LIST_MAX, members_done, call);
    if (rc != 0)
        finish_engine_error(call, rc);
}

/* ---- history -------------------------------------------------------------- */

/* Bytes one message takes in the reply, about (a bound, not exact). */
static size_t msg_bytes(const struct hub_history_msg *m)
{
    return 160 + hub_jsonw_str_size(m->from.base, m->from.len) +
           hub_jsonw_str_size(m->text.base, m->text.len) +
           hub_jsonw_str_size(m->cmid.base, m->cmid.len);
}

static void history_done(void *data, int err, const struct hub_history_pos *pos,
                         const struct hub_history_msg *msgs, size_t n, int complete)
{
    struct hub_api_call *call = data;
    if (err != 0) {
        finish_engine_error(call, err);
        return;
    }
    if (pos->last == 0) {
        finish_error(call, 404, "no_such_room", "the room has no messages");
        return;
    }
    /* A page bounded in bytes too: the messages nearest to where the caller
     * stands (the newest, or the oldest after "after"). */
    int newest = call->dir != HUB_HISTORY_AFTER;
    size_t k = 0, bytes = 0;
    while (k < n) {
        const struct hub_history_msg *m = newest ? &msgs[n - 1 - k] : &msgs[k];
        size_t b = msg_bytes(m);
        if (k > 0 && bytes + b > API_PAGE_BYTES)
            break;
        bytes += b;
        k++;
    }
    const struct hub_history_msg *page = newest && k > 0 ? msgs + (n - k) : msgs;
    if (k < n)
        complete = 0;
    struct hub_jsonw w = {0};
    hub_jsonw_raw(&w, "{");
    hub_jsonw_kstr(&w, "room", call->room, call->room_len);
    hub_jsonw_kstr(&w, "epoch", pos->epoch, strlen(pos->epoch));
    hub_jsonw_kuint(&w, "offset", pos->last);
    hub_jsonw_raw(&w, ",\"messages\":[");
    for (size_t i = 0; i < k; i++) {
        const struct hub_history_msg *m = &page[i];
        hub_jsonw_item(&w);
        hub_jsonw_raw(&w, "{");
        hub_jsonw_kuint(&w, "offset", m->offset);
        hub_jsonw_kint(&w, "ts", m->ts);
        hub_jsonw_kstr(&w, "from", m->from.base, m->from.len);
        hub_jsonw_kstr(&w, "text", m->text.base, m->text.len);
        if (m->cmid.len > 0)
            hub_jsonw_kstr(&w, "cmid", m->cmid.base, m->cmid.len);
        if (m->reply_to > 0)
            hub_jsonw_kuint(&w, "reply_to", m->reply_to);
        if (m->edited_ts > 0)
            hub_jsonw_kint(&w, "edited_ts", m->edited_ts);
        if (m->deleted)
            hub_jsonw_kbool(&w, "deleted", 1);
        hub_jsonw_raw(&w, "}");
    }
    hub_jsonw_raw(&w, "]");
    if (!complete) {
        /* Where the caller continues. */
        hub_jsonw_raw(&w, ",\"next\":{");
        if (newest)
            hub_jsonw_kuint(&w, "before",
                            k > 0                             ? page[0].offset
                            : call->dir == HUB_HISTORY_BEFORE ? call->anchor
                                                              : pos->last + 1);
        else
            hub_jsonw_kuint(&w, "after", k > 0 ? page[k - 1].offset : call->anchor);
        hub_jsonw_raw(&w, "}");
    }
    hub_jsonw_kbool(&w, "complete", complete);
    hub_jsonw_raw(&w, "}");
    finish_json(call, &w);
}

static void do_history(struct hub_api_call *call, struct hub_engine *e,
                       const struct hub_api_request *req)
{
    if (get_query_room(call, req->query) < 0)
        return;
    uint64_t before = 0, after = 0, limit = API_PAGE_DEFAULT;
    int hb = query_uint(req->query, "before", 1, UINT64_MAX >> 11, &before);
    int ha = query_uint(req->query, "after", 0, UINT64_MAX >> 11, &after);
    int hl = query_uint(req->query, "limit", 1, API_PAGE_MAX, &limit);
    if (hb < 0 || ha < 0 || hl < 0 || (hb > 0 && ha > 0)) {
        finish_error(call, 400, "bad_request",
                     "use one of before=N or after=N (integers) and limit=1-100");
        return;
    }
    call->dir = hb > 0 ? HUB_HISTORY_BEFORE : ha > 0 ? HUB_HISTORY_AFTER : HUB_HISTORY_LATEST;
    call->anchor = hb > 0 ? before : after;
    struct hub_iov room = {call->room, call->room_len};
    int rc = hub_engine_read(e, room, call->dir, call->anchor, (unsigned)limit, history_done, call);
    if (rc != 0)
        finish_engine_error(call, rc);
}

/* ---- rooms ---------------------------------------------------------------- */

static void rooms_done(void *data, int err, const struct hub_engine_room_count *r, size_t n)
{
    struct hub_api_call *call = data;
    if (err != 0) {
        finish_engine_error(call, err);
        return;
    }
    struct hub_jsonw w = {0};
    hub_jsonw_raw(&w, "{\"rooms\":[");
    for (size_t i = 0; i < n; i++) {
        hub_jsonw_item(&w);
        hub_jsonw_raw(&w, "{");
        hub_jsonw_kstr(&w, "room", r[i].room.base, r[i].room.len);
        hub_jsonw_kuint(&w, "members", r[i].members);
        hub_jsonw_raw(&w, "}");
    }
    hub_jsonw_raw(&w, "]}");
    finish_json(call, &w);
}

static void do_rooms(struct hub_api_call *call, struct hub_engine *e,
                     const struct hub_api_request *req)
{
    (void)req;
    int rc = hub_engine_rooms(e, API_LIST_MAX, rooms_done, call);
    if (rc != 0)
        finish_engine_error(call, rc);
}

/* ---- moderation ------------------------------------------------------------ */

/* Sends the control message of call->step (if any) and answers. */
static void send_step(struct hub_api_call *call)
{
    struct control_step *st = &call->step;
    if (st->kind != 0) {
        struct hub_engine_control c = {
            .kind = st->kind,
            .target = {call->buf, st->tlen},
            .room = {call->buf + st->tlen, st->rlen},
            .text = {call->buf + st->tlen + st->rlen, st->xlen},
            .by = {"api", 3},
            .until_ms = st->until,
        };
        int rc = hub_engine_control(hub_chat_engine(call->api->chat), &c);
        if (rc != 0) {
            finish_engine_error(call, rc);
            return;
        }
    }
    if (call->endpoint == EP_BAN || call->endpoint == EP_MUTE) {
        struct hub_jsonw w = {0};
        hub_jsonw_raw(&w, "{\"ok\":true");
        if (call->until != INT64_MAX)
            hub_jsonw_kint(&w, "until", call->until);
        hub_jsonw_raw(&w, "}");
        finish_json(call, &w);
        return;
    }
    finish_ok(call);
}

static void step_done(void *data, int err)
{
    struct hub_api_call *call = data;
    if (err != 0) {
        finish_engine_error(call, err);
        return;
    }
    send_step(call);
}

/* Keeps target, room and text for the control message sent after the
 * first step. Returns 0, or -1 after a 500. */
static int keep_step(struct hub_api_call *call, int kind, struct hub_iov target,
                     struct hub_iov room, struct hub_iov text, int64_t until)
{
    call->buf = malloc(target.len + room.len + text.len + 1);
    if (call->buf == NULL) {
        finish_error(call, 500, "internal", "out of memory");
        return -1;
    }
    memcpy(call->buf, target.base, target.len);
    memcpy(call->buf + target.len, room.base, room.len);
    memcpy(call->buf + target.len + room.len, text.base, text.len);
    call->step.kind = kind;
    call->step.tlen = target.len;
    call->step.rlen = room.len;
    call->step.xlen = text.len;
    call->step.until = until;
    return 0;
}

/* kick, ban, unban, mute, unmute, disconnect. */
static void do_moderate(struct hub_api_call *call, struct hub_engine *e,
                        const struct hub_api_request *req)
{
    json_t *root = get_body(call, req->body);
    if (root == NULL)
        return;
    int ep = call->endpoint;
    struct hub_iov room = {"", 0}, reason;
    char target[TARGET_MAX], actor[TARGET_MAX];
    size_t tlen, alen;
    json_int_t duration = 0;
    int rc;
    /* kick needs a room; ban and mute (and their lifting) take one or mean
     * the whole hub; disconnect takes none. */
    if (ep != EP_DISCONNECT && get_body_room(call, root, ep == EP_KICK, &room) < 0)
        goto out;
    if (get_target(call, root, target, &tlen, actor, &alen) < 0)
        goto out;
    if (get_reason(call, root, &reason) < 0)
        goto out;
    if ((ep == EP_BAN || ep == EP_MUTE) &&
        get_int(root, "duration", 1, API_DURATION_MAX, &duration) < 0) {
        finish_error(call, 400, "bad_request",
                     "\"duration\" must be seconds (1 or more); leave it out for good");
        goto out;
    }
    struct hub_iov tgt = {target, tlen}, act = {actor, alen};
    if (ep == EP_KICK || ep == EP_DISCONNECT) {
        if (keep_step(call, ep == EP_KICK ? HUB_CONTROL_KICK : HUB_CONTROL_DISCONNECT, tgt, room,
                      reason, 0) == 0)
            send_step(call);
        goto out;
    }
    int64_t now = wall_ms(call->api);
    int64_t until = 0;
    if (ep == EP_BAN || ep == EP_MUTE)
        until = duration > 0 ? now + (int64_t)duration * 1000 : INT64_MAX;
    call->until = until;
    struct hub_history_restrict r = {
        .kind = ep == EP_BAN || ep == EP_UNBAN ? HUB_RESTRICT_BAN : HUB_RESTRICT_MUTE,
        .room = room,
        .actor = act,
        .until_ms = until,
        .by = {"api", 3},
        .reason = reason,
        .ts = now,
    };
    /* A ban also removes the user: a control message once it is stored.
     * An unban goes out as a BAN control with until 0 too: the node that
     * holds the target lifts what it recorded under the target's own key
     * (chat's on_control records bans by nick under "u:<sub>" there). */
    if ((ep == EP_BAN || ep == EP_UNBAN) &&
        keep_step(call, HUB_CONTROL_BAN, tgt, room, reason, until) != 0)
        goto out;
    /* A mute (or unmute) likewise: the holder's node records it under the
     * holder's own key and tells the user. */
    if ((ep == EP_MUTE || ep == EP_UNMUTE) &&
        keep_step(call, HUB_CONTROL_MUTE, tgt, room, reason, until) != 0)
        goto out;
    rc = hub_engine_restrict(e, &r, step_done, call);
    if (rc != 0)
        finish_engine_error(call, rc);
out:
    json_decref(root);
}

static void do_topic(struct hub_api_call *call, struct hub_engine *e,
                     const struct hub_api_request *req)
{
    json_t *root = get_body(call, req->body);
    if (root == NULL)
        return;
    struct hub_iov room, topic;
    if (get_body_room(call, root, 1, &room) < 0)
        goto out;
    if (get_str(root, "topic", &topic) != 1 || !text_ok(topic, HUB_HISTORY_TOPIC_MAX)) {
        finish_error(call, 400, "bad_request",
                     "\"topic\" must be text of at most 512 bytes (empty clears it)");
        goto out;
    }
    struct hub_iov none = {"", 0};
    if (keep_step(call, HUB_CONTROL_TOPIC, none, room, topic, 0) != 0)
        goto out;
    int rc = hub_engine_set_topic(e, room, topic, step_done, call);
    if (rc != 0)
        finish_engine_error(call, rc);
out:
    json_decref(root);
}

/* ---- routing ---------------------------------------------------------------- */

typedef void (*handler_fn)(struct hub_api_call *call, struct hub_engine *e,
                           const struct hub_api_request *req);

static const struct route {
    const char *path;
    int post; /* 1: POST; 0: GET (and HEAD) */
    handler_fn fn;
} routes[EP_OTHER] = {
    [EP_PUBLISH] = {"/api/publish", 1, do_publish},
    [EP_PRESENCE] = {"/api/presence", 0, do_presence},
    [EP_HISTORY] = {"/api/history", 0, do_history},
    [EP_ROOMS] = {"/api/rooms", 0, do_rooms},
    [EP_KICK] = {"/api/kick", 1, do_moderate},
    [EP_BAN] = {"/api/ban", 1, do_moderate},
    [EP_UNBAN] = {"/api/unban", 1, do_moderate},
    [EP_MUTE] = {"/api/mute", 1, do_moderate},
    [EP_UNMUTE] = {"/api/unmute", 1, do_moderate},
    [EP_DISCONNECT] = {"/api/disconnect", 1, do_moderate},
    [EP_TOPIC] = {"/api/topic", 1, do_topic},
};

static void copy_view(char *dst, size_t dsz, struct hub_iov v)
{
    size_t n = v.len < dsz - 1 ? v.len : dsz - 1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v.base[i];
        dst[i] = c >= 0x21 && c < 0x7f ? (char)c : '?'; /* a log line stays one line */
    }
    dst[n] = '\0';
}

int hub_api_handle(struct hub_api *a, const struct hub_api_request *req, hub_api_reply_cb cb,
                   void *owner, struct hub_api_call **out)
{
    *out = NULL;
    struct hub_api_call *call = calloc(1, sizeof(*call));
    if (call == NULL) {
        static const char oom[] =
            "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}";
        struct hub_api_reply r = {500, NULL, oom, sizeof(oom) - 1};
        count(a, EP_OTHER, 500);
        cb(owner, &r);
        return 1;
    }
    call->api = a;
    call->cb = cb;
    call->owner = owner;
    call->endpoint = EP_OTHER;
    copy_view(call->method, sizeof(call->method), req->method_name);
    copy_view(call->path, sizeof(call->path), req->path);
    snprintf(call->peer, sizeof(call->peer), "%s", req->peer != NULL ? req->peer : "?");
    a->current = call;

    struct hub_iov key;
    int ep = EP_OTHER;
    for (int i = 0; i < EP_OTHER; i++)
        if (req->path.len == strlen(routes[i].path) &&
            memcmp(req->path.base, routes[i].path, req->path.len) == 0)
            ep = i;
    if (bearer(req->authorization, &key) != 0 || !key_matches(a, key)) {
        finish_error(call, 401, "unauthorized",
                     "give the API key as \"Authorization: Bearer KEY\"");
    } else if (!rate_admit(a, req->now)) {
        finish_error(call, 429, "rate_limited", "too many API requests: slow down (--api-rate)");
    } else if (ep == EP_OTHER) {
        finish_error(call, 404, "not_found", "no such API endpoint");
    } else {
        call->endpoint = ep;
        int post = req->method == HUB_HTTP_POST;
        int get = req->method == HUB_HTTP_GET || req->method == HUB_HTTP_HEAD;
        struct hub_engine *e = hub_chat_engine(a->chat);
        if (routes[ep].post ? !post : !get) {
            const char *allow = routes[ep].post ? "Allow: POST\r\n" : "Allow: GET, HEAD\r\n";
            struct hub_jsonw w = {0};
            hub_jsonw_raw(&w, "{\"error\":{\"code\":\"method_not_allowed\",\"message\":");
            hub_jsonw_str(&w, routes[ep].post ? "use POST" : "use GET", routes[ep].post ? 8 : 7);
            hub_jsonw_raw(&w, "}}");
            finish(call, 405, allow, hub_jsonw_error(&w) ? "{}" : w.b.data,
                   hub_jsonw_error(&w) ? 2 : w.b.len);
            hub_jsonw_free(&w);
        } else if (e == NULL || !hub_engine_ready(e)) {
            finish_error(call, 503, "unavailable", "the engine is not ready: try again");
        } else {
            routes[ep].fn(call, e, req);
        }
    }
    int done = a->current == NULL;
    a->current = NULL;
    if (!done)
        *out = call;
    return done;
}

void hub_api_cancel(struct hub_api_call *call)
{
    if (call == NULL)
        return;
    call->cb = NULL;
    call->owner = NULL;
}

/* ---- lifetime, metrics, the key file ------------------------------------- */

int hub_api_new(struct hub_api **out, const struct hub_api_config *cfg)
{
    *out = NULL;
    if (cfg->key == NULL || cfg->key_len < HUB_API_KEY_MIN)
        return HUB_EINVAL;
    struct hub_api *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return HUB_ENOMEM;
    a->key = malloc(cfg->key_len);
    if (a->key == NULL) {
        free(a);
        return HUB_ENOMEM;
    }
    memcpy(a->key, cfg->key, cfg->key_len);
    a->key_len = cfg->key_len;
    a->rate = cfg->rate;
    a->chat = cfg->chat;
    a->now_ms = cfg->now_ms;
    *out = a;
    return 0;
}

void hub_api_free(struct hub_api *a)
{
    if (a == NULL)
        return;
    /* The key does not outlive its use in memory. */
    volatile char *k = a->key;
    for (size_t i = 0; i < a->key_len; i++)
        k[i] = 0;
    free(a->key);
    free(a);
}

void hub_api_metrics_render(const struct hub_api *a, struct hub_buf *b)
{
    hub_buf_puts(b, "# HELP chathub_api_requests_total Server API requests answered, by endpoint "
                    "and status.\n# TYPE chathub_api_requests_total counter\n");
    for (int e = 0; e < EP_COUNT; e++)
        for (size_t k = 0; k < NSTATUS; k++)
            if (a->counts[e][k] > 0)
                hub_buf_printf(b,
                               "chathub_api_requests_total{endpoint=\"%s\",status=\"%d\"} %llu\n",
                               ep_names[e], statuses[k], (unsigned long long)a->counts[e][k]);
}

int hub_api_read_key_file(const char *path, char *out, size_t outsz, size_t *len, char *why,
                          size_t whysz)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(why, whysz, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    char buf[HUB_API_KEY_MAX + 1];
    size_t n = fread(buf, 1, sizeof(buf), f);
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        snprintf(why, whysz, "cannot read %s", path);
        return -1;
    }
    if (n > HUB_API_KEY_MAX) {
        snprintf(why, whysz, "%s is larger than %d bytes", path, HUB_API_KEY_MAX);
        return -1;
    }
    size_t s = 0, e = n;
    while (s < e && isspace((unsigned char)buf[s]))
        s++;
    while (e > s && isspace((unsigned char)buf[e - 1]))
        e--;
    int ok = e - s >= HUB_API_KEY_MIN && e - s < outsz;
    if (ok) {
        memcpy(out, buf + s, e - s);
        out[e - s] = '\0';
        *len = e - s;
    } else {
        snprintf(why, whysz, "the key in %s is %zu bytes; it must be at least %d", path, e - s,
                 HUB_API_KEY_MIN);
    }
    volatile char *p = buf;
    for (size_t i = 0; i < n; i++)
        p[i] = 0;
    return ok ? 0 : -1;
}
