/*
 * http.c: HTTP/1.1 requests on one connection, up to the WebSocket upgrade.
 *
 * A hub_http turns the bytes of one connection into requests (pipelined and
 * keep-alive), answers each one in order, and stops at a WebSocket upgrade so
 * that the bytes behind it go to the WebSocket layer. It is sans-I/O: input
 * comes in through hub_http_feed, responses go into the connection's output
 * queue, and nothing here touches a socket.
 *
 * Invariants:
 * - Feeding the same bytes split at any offsets gives the same responses and
 *   the same result. Every limit is therefore measured on stream positions or
 *   on byte counts, never on how the bytes happened to be cut.
 * - A request's URL and the values of the headers we care about live in one
 *   block of cfg->max_header_bytes allocated with the hub_http; nothing grows
 *   per request. The raw head (request line and headers) is limited to that
 *   size and to cfg->max_headers lines; a request body is read up to
 *   HUB_HTTP_MAX_BODY decoded bytes (Content-Length or chunked) and kept,
 *   in a heap block of the request, only for paths under cfg->body_prefix
 *   (the server API); others are thrown away as they arrive.
 * - A request the callback answers later (HUB_HTTP_LATER) stops the parser
 *   right behind it: hub_http_feed returns HUB_HTTP_WAIT with the bytes
 *   after the request unconsumed, and hub_http_resume, after the answer,
 *   finishes the request as if the callback had answered at once. So
 *   pipelined requests are answered in order however late an answer is.
 * - Responses are queued in request order. After an error response the
 *   connection is marked close-after-flush and the rest of the input is
 *   ignored; after an upgrade nothing more is parsed.
 * - Only the "parser adapter" section below (and the parser field of struct
 *   hub_http) knows http-parser. It turns the library's callbacks into the
 *   req_* event functions, pauses the library where a request begins, where
 *   its head ends and where it ends, and maps its errors to HTTP statuses;
 *   swapping in llhttp (which pauses the same way) means rewriting only it.
 */
#include "hub/http.h"

#include "hub/base64.h"
#include "hub/buf.h"
#include "hub/conn.h"
#include "hub/log.h"
#include "hub/sha1.h"
#include "hub/static.h"

#include <http_parser.h>

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HTTP_DEFAULT_MAX_HEADER_BYTES 8192
#define HTTP_DEFAULT_MAX_HEADERS 100

/* Request bodies are read up to this many decoded bytes (http.h): enough
 * for the server API's JSON, and for a stray form post, not for a flood. */
#define HTTP_MAX_BODY HUB_HTTP_MAX_BODY

/* Bytes a whole request may take on the wire beyond its head. Chunked framing
 * (sizes, extensions, trailers) costs bytes that carry no body, so this is
 * looser than HTTP_MAX_BODY but still bounds a message that never ends. */
#define HTTP_MAX_RAW_BODY (4u * HTTP_MAX_BODY)

/* Static files up to this size are copied behind the headers into one chunk;
 * larger ones are queued by reference to the site's memory. */
#define HTTP_COPY_BODY_MAX 2048

/* Longest header name we recognise ("Sec-WebSocket-Extensions" is 24). */
#define HTTP_NAME_MAX 32

/* Bytes of request storage kept inside the hub_http itself. A WebSocket
 * upgrade from a browser stores about 150 bytes (URL, Host, Origin, key,
 * version, protocol, extensions), so most connections never allocate more;
 * a larger head grows the store on the heap, up to max_header_bytes, and
 * the next request starts small again. A store of max_header_bytes per
 * connection (8 KiB) used to be allocated up front, which with hundreds of
 * handshakes in flight left megabytes of heap behind (bench/RESULTS.md). */
#define HTTP_STORE_INLINE 256

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* The headers whose values a request callback can see. */
enum known_header {
    KH_HOST,
    KH_ORIGIN,
    KH_UPGRADE,
    KH_CONNECTION,
    KH_WS_KEY,
    KH_WS_VERSION,
    KH_WS_PROTOCOL,
    KH_IF_NONE_MATCH,
    KH_WS_EXTENSIONS,
    KH_X_FORWARDED_FOR, /* read only from trusted proxies (proxy.h) */
    KH_FORWARDED,
    KH_AUTHORIZATION, /* the server API's key */
    KH_CONTENT_TYPE,
    KH_COUNT,
    KH_NONE = -1,
};

static const char *const known_names[KH_COUNT] = {
    "Host",
    "Origin",
    "Upgrade",
    "Connection",
    "Sec-WebSocket-Key",
    "Sec-WebSocket-Version",
    "Sec-WebSocket-Protocol",
    "If-None-Match",
    "Sec-WebSocket-Extensions",
    "X-Forwarded-For",
    "Forwarded",
    "Authorization",
    "Content-Type",
};

enum http_state {
    ST_OPEN,     /* parsing requests */
    ST_CLOSED,   /* HUB_HTTP_CLOSE was returned; input is ignored */
    ST_SWITCHED, /* HUB_HTTP_SWITCH was returned; input belongs to WebSocket */
    ST_WAITING,  /* HUB_HTTP_WAIT was returned; input waits for hub_http_resume */
};

/* What the last header callback delivered, to tell a continued piece from
 * the start of a new name or value. */
enum piece {
    PIECE_NONE,
    PIECE_FIELD,
    PIECE_VALUE,
};

/* Where the head scanner is in the current line (see head_scan). */
enum scan_state {
    SC_REQLINE,    /* in the request line */
    SC_LINE_START, /* at the first byte of a header line (or of the blank line) */
    SC_NAME,       /* in a header name, before its colon */
    SC_VALUE,      /* after the colon, up to the end of the line */
};

/* What one run of the parser stopped at. */
enum adapter_event {
    EV_MORE,     /* every byte was parsed */
    EV_BEGIN,    /* a request began; its first byte is the last one parsed */
    EV_HEADERS,  /* the head is complete; its last byte is the next one */
    EV_COMPLETE, /* a request ended with the last byte parsed */
    EV_ERROR,    /* malformed input or a limit; see the status */
};

/* A region of the request storage. */
struct span {
    size_t off;  /* first byte in store */
    size_t len;  /* bytes */
    int present; /* the header was seen at least once */
};

/* What the parser knows once the head is complete. */
struct head_info {
    int method;                  /* enum hub_http_method */
    const char *method_name;     /* static string, e.g. "GET" */
    unsigned short major, minor; /* HTTP version */
    int keep_alive;              /* the request lets the connection persist */
    int upgrade;                 /* the request asks for a protocol upgrade */
    int has_length;              /* Content-Length was given */
    uint64_t content_length;     /* its value when has_length */
};

struct hub_http {
    struct hub_conn *conn;             /* borrowed; outlives h */
    const struct hub_http_config *cfg; /* borrowed; outlives h */
    hub_http_request_cb cb;            /* owner's request callback */
    void *data;                        /* owner's pointer for cb */
    http_parser parser;                /* the library's state (adapter only) */
    int pa_event;                      /* enum adapter_event of the last pause */
    int state;                         /* enum http_state */

    /* Where the bytes of the current parser run sit in the stream. */
    const char *chunk;   /* first byte handed to the parser in this run */
    uint64_t chunk_pos;  /* stream offset of chunk */
    uint64_t stream_pos; /* stream offset of the next unparsed byte */

    /* The request being parsed. */
    int in_message;            /* between EV_BEGIN and EV_COMPLETE */
    int headers_done;          /* the head is complete; later fields are trailers */
    int err_status;            /* status a req_* event asked to answer, or 0 */
    uint64_t head_start;       /* stream offset of the request's first byte */
    uint64_t last_end;         /* stream offset just past the last URL/header piece */
    unsigned nheaders;         /* header lines so far */
    int host_lines;            /* Host header lines so far */
    int scan;                  /* enum scan_state of the head scanner */
    int piece;                 /* enum piece */
    char name[HTTP_NAME_MAX];  /* current header name (first bytes) */
    size_t name_len;           /* its full length, even past HTTP_NAME_MAX */
    int cur_hdr;               /* enum known_header of the current value */
    size_t value_mark;         /* hdr[cur_hdr].len when this value began */
    int sep_added;             /* ", " was added before this value */
    struct span url;           /* the request target */
    struct span hdr[KH_COUNT]; /* values, duplicates joined with ", " */
    uint64_t body_bytes;       /* decoded body bytes so far */
    struct head_info head;     /* valid once headers_done */
    int is_head;               /* answer without a body (HEAD) */
    int keep_alive;            /* the connection persists after the response */
    int keep_body;             /* the path is under cfg->body_prefix: body kept, JSON errors */
    char *body;                /* the kept body (owned), or NULL */
    size_t body_cap;           /* bytes allocated for body */

    /* What the request callback did. */
    unsigned responses; /* responses queued for the current request */
    int accepted;       /* hub_http_accept_websocket succeeded */

    size_t used;                   /* bytes of store in use */
    size_t cap;                    /* size of store */
    char *store;                   /* URL and known header values of the current request:
                                      small, or a heap block (owned) once a head outgrew it */
    char small[HTTP_STORE_INLINE]; /* the store of ordinary requests */
};

/* ---- Request events (called by the parser adapter) ---- */

static void req_reset(struct hub_http *h)
{
    h->in_message = 0;
    h->headers_done = 0;
    h->err_status = 0;
    h->head_start = 0;
    h->last_end = 0;
    h->nheaders = 0;
    h->host_lines = 0;
    h->scan = SC_REQLINE;
    h->piece = PIECE_NONE;
    h->name_len = 0;
    h->cur_hdr = KH_NONE;
    h->value_mark = 0;
    h->sep_added = 0;
    memset(&h->url, 0, sizeof(h->url));
    memset(h->hdr, 0, sizeof(h->hdr));
    h->body_bytes = 0;
    memset(&h->head, 0, sizeof(h->head));
    h->is_head = 0;
    /* Until a head says otherwise, an error answer ends the connection. */
    h->keep_alive = 0;
    h->keep_body = 0;
    free(h->body);
    h->body = NULL;
    h->body_cap = 0;
    h->used = 0;
    if (h->store != h->small) {
        free(h->store);
        h->store = h->small;
        h->cap = sizeof(h->small);
    }
}

/* Stream offset of a byte the parser is pointing at in the current run. */
static uint64_t stream_offset(const struct hub_http *h, const char *at)
{
    return h->chunk_pos + (uint64_t)(at - h->chunk);
}

/* Records how far the head reaches and fails with 431 once it is too long.
 * Positions, not piece sizes, are compared so that whitespace between pieces
 * counts and the verdict does not depend on how the input was cut. */
static int head_reach(struct hub_http *h, const char *at, size_t len)
{
    uint64_t end = stream_offset(h, at) + len;
    if (end > h->last_end)
        h->last_end = end;
    if (h->last_end - h->head_start > h->cfg->max_header_bytes) {
        h->err_status = 431;
        return -1;
    }
    return 0;
}

static int store_append(struct hub_http *h, const char *at, size_t len)
{
    /* The head limit keeps this from happening: everything stored is a
     * subset of the head. Kept as a guard, never as an assert, because the
     * bytes come from the network. */
    if (len > h->cap - h->used) {
        size_t need = h->used + len, max = h->cfg->max_header_bytes;
        if (need > max || need < len) {
            h->err_status = 431;
            return -1;
        }
        size_t cap = h->cap * 2 > need ? h->cap * 2 : need;
        if (cap > max)
            cap = max;
        char *p = h->store == h->small ? malloc(cap) : realloc(h->store, cap);
        if (p == NULL) {
            h->err_status = 503;
            return -1;
        }
        if (h->store == h->small)
            memcpy(p, h->small, h->used);
        h->store = p;
        h->cap = cap;
    }
    memcpy(h->store + h->used, at, len);
    h->used += len;
    return 0;
}

static void reverse(char *p, size_t n)
{
    for (size_t i = 0; i < n / 2; i++) {
        char t = p[i];
        p[i] = p[n - 1 - i];
        p[n - 1 - i] = t;
    }
}

/* Moves the value of header k to the end of the store, so that a repeated
 * header can be appended to it in place. Rotating by three reversals needs
 * no second buffer; every value stored behind k slides down by k's length. */
static void value_to_end(struct hub_http *h, int k)
{
    struct span *s = &h->hdr[k];
    size_t end = s->off + s->len;
    if (end == h->used)
        return;
    reverse(h->store + s->off, s->len);
    reverse(h->store + end, h->used - end);
    reverse(h->store + s->off, h->used - s->off);
    for (int j = 0; j < KH_COUNT; j++)
        if (j != k && h->hdr[j].present && h->hdr[j].off > s->off)
            h->hdr[j].off -= s->len;
    s->off = h->used - s->len;
}

static int known_index(const struct hub_http *h)
{
    if (h->name_len > sizeof(h->name))
        return KH_NONE;
    struct hub_iov name = {h->name, h->name_len};
    for (int k = 0; k < KH_COUNT; k++)
        if (hub_iov_eq_ci(name, known_names[k]))
            return k;
    return KH_NONE;
}

/* The name is complete and its value starts: find out whether we keep it. */
static int value_begin(struct hub_http *h)
{
    h->cur_hdr = known_index(h);
    h->sep_added = 0;
    if (h->cur_hdr == KH_NONE)
        return 0;
    if (h->cur_hdr == KH_HOST)
        h->host_lines++;
    struct span *s = &h->hdr[h->cur_hdr];
    if (!s->present || s->len == 0) {
        /* First value, or the earlier ones were empty: start afresh at the
         * end of the store, where the value's bytes will be appended. */
        s->present = 1;
        s->off = h->used;
        s->len = 0;
    } else {
        value_to_end(h, h->cur_hdr);
        if (store_append(h, ", ", 2) != 0)
            return -1;
        s->len += 2;
        h->sep_added = 1;
    }
    h->value_mark = s->len;
    return 0;
}

/* A value is complete: drop its trailing whitespace (http-parser keeps it),
 * and the separator again if the repeated value turned out empty. */
static void value_end(struct hub_http *h)
{
    if (h->cur_hdr == KH_NONE)
        return;
    struct span *s = &h->hdr[h->cur_hdr];
    while (s->len > h->value_mark &&
           (h->store[s->off + s->len - 1] == ' ' || h->store[s->off + s->len - 1] == '\t')) {
        s->len--;
        h->used--;
    }
    if (s->len == h->value_mark && h->sep_added) {
        s->len -= 2;
        h->used -= 2;
    }
    h->cur_hdr = KH_NONE;
}

static void req_begin(struct hub_http *h)
{
    req_reset(h);
    h->in_message = 1;
}

static int req_url(struct hub_http *h, const char *at, size_t len)
{
    if (head_reach(h, at, len) != 0)
        return -1;
    /* The URL is the first thing stored, so it always starts at offset 0. */
    if (store_append(h, at, len) != 0)
        return -1;
    h->url.len += len;
    return 0;
}

static int req_field(struct hub_http *h, const char *at, size_t len)
{
    /* Trailers of a chunked body: nobody reads them, and their bytes are
     * bounded by the raw message limit. */
    if (h->headers_done)
        return 0;
    if (head_reach(h, at, len) != 0)
        return -1;
    if (h->piece != PIECE_FIELD) {
        if (h->piece == PIECE_VALUE)
            value_end(h);
        /* Counted now, judged when the head is complete: the parser hands
         * over a name at its ':' or wherever the input was cut, so judging
         * here would make the answer depend on the cuts. */
        h->nheaders++;
        h->piece = PIECE_FIELD;
        h->name_len = 0;
    }
    /* Names longer than any we know are only counted, never stored. */
    if (h->name_len < sizeof(h->name)) {
        size_t n = sizeof(h->name) - h->name_len;
        memcpy(h->name + h->name_len, at, len < n ? len : n);
    }
    h->name_len += len;
    return 0;
}

static int req_value(struct hub_http *h, const char *at, size_t len)
{
    if (h->headers_done)
        return 0;
    if (head_reach(h, at, len) != 0)
        return -1;
    if (h->piece != PIECE_VALUE) {
        h->piece = PIECE_VALUE;
        if (value_begin(h) != 0)
            return -1;
    }
    if (h->cur_hdr == KH_NONE)
        return 0;
    if (store_append(h, at, len) != 0)
        return -1;
    h->hdr[h->cur_hdr].len += len;
    return 0;
}

/* Scans len bytes of a request head for what http-parser lets through but
 * RFC 9112 says to refuse, because a proxy in front may read the same bytes
 * differently (request smuggling): white space between a header name and
 * its colon (section 5.1; http-parser takes "Content-Length : 5" as a
 * length), and a line that starts with white space, which is obs-fold or
 * white space before the first header (sections 5.2 and 2.2). The scanner
 * keeps its state across calls, so cuts do not matter. Returns the index of
 * the first offending byte, or len. */
static size_t head_scan(struct hub_http *h, const char *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        char c = p[i];
        switch (h->scan) {
        case SC_REQLINE:
        case SC_VALUE:
            if (c == '\n')
                h->scan = SC_LINE_START;
            break;
        case SC_LINE_START:
            if (c == ' ' || c == '\t')
                return i;
            if (c != '\r' && c != '\n')
                h->scan = c == ':' ? SC_VALUE : SC_NAME;
            break;
        case SC_NAME:
            if (c == ' ' || c == '\t')
                return i;
            if (c == ':')
                h->scan = SC_VALUE;
            else if (c == '\n')
                h->scan = SC_LINE_START; /* no colon: http-parser refuses it */
            break;
        }
    }
    return len;
}

/* RFC 3986 host and port characters (reg-name, IP literals, ":port"). */
static int host_char(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c != '\0' && strchr("-._~%!$&'()*+,;=:[]", c) != NULL;
}

static int split_target(struct hub_iov url, int method, struct hub_http_request *req);
static struct hub_iov view(const struct hub_http *h, const struct span *s);

/* Is the request's path under cfg->body_prefix (the server API)? Its body
 * is kept and its errors are JSON. */
static int under_body_prefix(const struct hub_http *h)
{
    const char *prefix = h->cfg->body_prefix;
    if (prefix == NULL || *prefix == '\0')
        return 0;
    struct hub_http_request req;
    memset(&req, 0, sizeof(req));
    req.host = view(h, &h->hdr[KH_HOST]);
    if (split_target(view(h, &h->url), h->head.method, &req) != 0)
        return 0;
    size_t n = strlen(prefix);
    return req.path.len >= n && memcmp(req.path.base, prefix, n) == 0;
}

/* The head is complete and ends at stream offset end (h->head was filled by
 * the adapter). Returns 0, or the status to fail the request with. */
static int req_head_done(struct hub_http *h, uint64_t end)
{
    if (h->piece == PIECE_VALUE)
        value_end(h);
    h->piece = PIECE_NONE;
    h->headers_done = 1;
    h->is_head = h->head.method == HUB_HTTP_HEAD;
    /* A refused upgrade leaves the peer speaking who knows what next, so
     * those requests never keep the connection. */
    h->keep_alive = h->head.keep_alive && !h->head.upgrade;
    h->keep_body = under_body_prefix(h);
    if (end - h->head_start > h->cfg->max_header_bytes || h->nheaders > h->cfg->max_headers)
        return 431;
    /* Two Host lines make the target ambiguous, and HTTP/1.1 requires one
     * (RFC 9112 section 3.2: 400 for a missing, repeated or invalid Host). */
    if (h->head.major != 1 || h->host_lines > 1)
        return 400;
    if (h->head.minor >= 1 && h->host_lines == 0)
        return 400;
    const struct span *host = &h->hdr[KH_HOST];
    for (size_t i = 0; i < host->len; i++)
        if (!host_char((unsigned char)h->store[host->off + i]))
            return 400;
    if (h->head.has_length && h->head.content_length > HTTP_MAX_BODY)
        return 413;
    return 0;
}

static int req_body(struct hub_http *h, const char *at, size_t len)
{
    h->body_bytes += len;
    if (h->body_bytes > HTTP_MAX_BODY) {
        h->err_status = 413;
        return -1;
    }
    if (!h->keep_body || len == 0)
        return 0;
    /* body_bytes - len bytes are kept already; the block grows by doubling
     * (from 1 KiB, or the announced length) up to the limit. */
    size_t have = (size_t)(h->body_bytes - len), need = (size_t)h->body_bytes;
    if (need > h->body_cap) {
        size_t cap = h->body_cap ? h->body_cap * 2 : 1024;
        if (h->body_cap == 0 && h->head.has_length && h->head.content_length > cap)
            cap = (size_t)h->head.content_length;
        if (cap < need)
            cap = need;
        if (cap > HTTP_MAX_BODY)
            cap = HTTP_MAX_BODY;
        char *p = realloc(h->body, cap);
        if (p == NULL) {
            h->err_status = 503;
            return -1;
        }
        h->body = p;
        h->body_cap = cap;
    }
    memcpy(h->body + have, at, len);
    return 0;
}

/* ---- Parser adapter: the only code that knows http-parser ---- */

static int pa_message_begin(http_parser *p)
{
    struct hub_http *h = p->data;
    req_begin(h);
    /* Pausing tells the caller where the request starts, so head limits are
     * measured from its first byte. */
    h->pa_event = EV_BEGIN;
    http_parser_pause(p, 1);
    return 0;
}

static int pa_url(http_parser *p, const char *at, size_t len)
{
    return req_url(p->data, at, len);
}

static int pa_header_field(http_parser *p, const char *at, size_t len)
{
    return req_field(p->data, at, len);
}

static int pa_header_value(http_parser *p, const char *at, size_t len)
{
    return req_value(p->data, at, len);
}

static int pa_headers_complete(http_parser *p)
{
    struct hub_http *h = p->data;
    struct head_info info;
    info.method = p->method == HTTP_GET    ? HUB_HTTP_GET
                  : p->method == HTTP_HEAD ? HUB_HTTP_HEAD
                  : p->method == HTTP_POST ? HUB_HTTP_POST
                                           : HUB_HTTP_OTHER;
    info.method_name = http_method_str((enum http_method)p->method);
    info.major = p->http_major;
    info.minor = p->http_minor;
    info.keep_alive = http_should_keep_alive(p) != 0;
    info.upgrade = p->upgrade != 0;
    /* content_length stays ULLONG_MAX when the header is absent. */
    info.has_length = !(p->flags & F_CHUNKED) && p->content_length != (uint64_t)-1;
    info.content_length = info.has_length ? p->content_length : 0;
    h->head = info;
    /* Pausing here stops the parser on the last byte of the head, which
     * tells the caller exactly how long the head is. */
    h->pa_event = EV_HEADERS;
    http_parser_pause(p, 1);
    return 0;
}

static int pa_body(http_parser *p, const char *at, size_t len)
{
    return req_body(p->data, at, len);
}

static int pa_message_complete(http_parser *p)
{
    struct hub_http *h = p->data;
    /* Pausing hands the finished request to hub_http_feed before the next
     * byte is parsed: the response goes out in order, and an upgrade stops
     * right behind its head. */
    h->pa_event = EV_COMPLETE;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings pa_settings = {
    .on_message_begin = pa_message_begin,
    .on_url = pa_url,
    .on_header_field = pa_header_field,
    .on_header_value = pa_header_value,
    .on_headers_complete = pa_headers_complete,
    .on_body = pa_body,
    .on_message_complete = pa_message_complete,
};

static void pa_init(struct hub_http *h)
{
    http_parser_init(&h->parser, HTTP_REQUEST);
    h->parser.data = h;
}

/* Parses up to len bytes; stops where a request begins, where its head
 * ends and where it ends. Returns the bytes parsed (on EV_ERROR, those
 * before the offending one) and sets *ev, and *status on EV_ERROR. */
static size_t pa_execute(struct hub_http *h, const char *data, size_t len, int *ev, int *status)
{
    h->pa_event = EV_MORE;
    size_t n = http_parser_execute(&h->parser, &pa_settings, data, len);
    enum http_errno err = HTTP_PARSER_ERRNO(&h->parser);
    *status = 0;
    if (err == HPE_PAUSED) {
        http_parser_pause(&h->parser, 0);
        *ev = h->pa_event;
        return n;
    }
    if (err != HPE_OK) {
        *ev = EV_ERROR;
        if (h->err_status != 0)
            *status = h->err_status;
        else if (err == HPE_HEADER_OVERFLOW)
            *status = 431;
        else
            *status = 400;
        return n;
    }
    if (n != len) {
        /* The library stopped without saying why (it does so after an
         * upgrade head, but that already paused in message complete). */
        *ev = EV_ERROR;
        *status = 400;
        return n;
    }
    *ev = EV_MORE;
    return n;
}

/* ---- Responses ---- */

const char *hub_http_reason(int status)
{
    switch (status) {
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 421:
        return "Misdirected Request";
    case 426:
        return "Upgrade Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 505:
        return "HTTP Version Not Supported";
    }
    return "Unknown";
}

static int is_html(const char *content_type)
{
    return content_type != NULL && strncmp(content_type, "text/html", 9) == 0;
}

/* Statuses whose responses never carry a body (RFC 9110 section 6.4.1);
 * they get no Content-Length either, since for 304 it would have to be the
 * length of the 200 response. */
static int status_has_body(int status)
{
    return status >= 200 && status != 204 && status != 304;
}

/* The queue refused the response (output limit) or broke mid-way: the client
 * is not reading or memory ran out, so end the connection after what is
 * already queued. */
static int respond_failed(struct hub_http *h, int rc)
{
    hub_log_debug("http %s: response not queued (%s), closing", hub_conn_peer(h->conn),
                  hub_strerror(rc));
    hub_conn_close_after_flush(h->conn);
    return rc == HUB_ENOMEM ? HUB_ENOMEM : HUB_ECLOSED;
}

/* Queues one response. With by_ref, a body larger than HTTP_COPY_BODY_MAX is
 * queued as a reference to body, which must outlive the connection's output
 * queue (the site's files do). Only an error response that ends the
 * connection goes past the output limit: it is the last thing queued, so a
 * client can never stack more than one of them. Error responses on a
 * connection that stays open (404, 405 and the like, which a client may
 * pipeline by the thousand without reading) go through the limit like any
 * other; one that does not fit ends the connection (respond_failed). */
static int respond(struct hub_http *h, int status, const char *content_type, const char *extra,
                   const void *body, size_t body_len, int by_ref)
{
    if ((h->state != ST_OPEN && h->state != ST_WAITING) || hub_conn_closing(h->conn))
        return HUB_ECLOSED;
    struct hub_buf b;
    hub_buf_init(&b);
    int send_body = !h->is_head && status_has_body(status) && body_len > 0;
    int body_apart = send_body && by_ref && body_len > HTTP_COPY_BODY_MAX;
    int rc = hub_buf_printf(&b, "HTTP/1.1 %d %s\r\nServer: chathub\r\n", status,
                            hub_http_reason(status));
    if (rc == 0 && content_type != NULL)
        rc = hub_buf_printf(&b, "Content-Type: %s\r\n", content_type);
    if (rc == 0 && status_has_body(status))
        rc = hub_buf_printf(&b, "Content-Length: %zu\r\n", body_len);
    if (rc == 0 && !h->keep_alive)
        rc = hub_buf_puts(&b, "Connection: close\r\n");
    else if (rc == 0 && h->head.minor == 0)
        rc = hub_buf_puts(&b, "Connection: keep-alive\r\n"); /* HTTP/1.0 needs to be told */
    if (rc == 0)
        rc = hub_buf_puts(&b, "X-Content-Type-Options: nosniff\r\n");
    /* Every HTML page: its CSP (http.h), no framing, no Referer sent on. */
    if (rc == 0 && is_html(content_type))
        rc = hub_buf_printf(&b,
                            "Content-Security-Policy: %s\r\nX-Frame-Options: DENY\r\n"
                            "Referrer-Policy: no-referrer\r\n",
                            h->cfg->csp != NULL ? h->cfg->csp : HUB_HTTP_CSP_PAGE);
    /* Served over TLS: browsers should not try plain http:// next time. */
    if (rc == 0 && h->cfg->hsts)
        rc = hub_buf_puts(&b, "Strict-Transport-Security: max-age=31536000\r\n");
    if (rc == 0 && extra != NULL)
        rc = hub_buf_puts(&b, extra);
    if (rc == 0)
        rc = hub_buf_puts(&b, "\r\n");
    if (rc == 0 && send_body && !body_apart)
        rc = hub_buf_append(&b, body, body_len);
    if (rc != 0)
        goto fail_buf;

    if (body_apart) {
        /* Check the whole response against the limit first, so that the
         * headers are never queued without their body. */
        const struct hub_outq *q = &h->conn->out;
        if (q->limit != 0 && (q->bytes > q->limit || b.len + body_len > q->limit - q->bytes)) {
            rc = HUB_ENOBUFS;
            goto fail_buf;
        }
    }
    rc = status >= 400 && !h->keep_alive ? hub_conn_write_force(h->conn, b.data, b.len)
                                         : hub_conn_write(h->conn, b.data, b.len);
    if (rc != 0)
        goto fail_buf;
    if (body_apart) {
        struct hub_shared *chunk = hub_shared_static(body, body_len);
        if (chunk == NULL) {
            rc = HUB_ENOMEM;
            goto fail_buf;
        }
        rc = hub_conn_send(h->conn, chunk);
        hub_shared_unref(chunk);
        if (rc != 0)
            goto fail_buf;
    }
    hub_buf_free(&b);
    h->responses++;
    return 0;

fail_buf:
    hub_buf_free(&b);
    return respond_failed(h, rc);
}

int hub_http_respond(struct hub_http *h, int status, const char *content_type,
                     const char *extra_headers, const void *body, size_t body_len)
{
    return respond(h, status, content_type, extra_headers, body, body_len, 0);
}

int hub_http_respond_status(struct hub_http *h, int status)
{
    const char *extra = NULL;
    switch (status) {
    case 405:
        extra = "Allow: GET, HEAD\r\n";
        break;
    case 426:
        extra = "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n";
        break;
    case 503:
        extra = "Retry-After: 5\r\n";
        break;
    }
    char body[160];
    int n;
    if (h->keep_body) {
        /* The server API's callers parse every answer as JSON. */
        const char *code = status == 413   ? "too_large"
                           : status == 404 ? "not_found"
                           : status == 405 ? "method_not_allowed"
                           : status == 503 ? "unavailable"
                           : status >= 500 ? "internal"
                                           : "bad_request";
        n = snprintf(body, sizeof(body), "{\"error\":{\"code\":\"%s\",\"message\":\"%d %s\"}}\n",
                     code, status, hub_http_reason(status));
    } else {
        n = snprintf(body, sizeof(body), "%d %s\n", status, hub_http_reason(status));
    }
    if (n < 0 || (size_t)n >= sizeof(body))
        return HUB_EINVAL;
    return respond(h, status, h->keep_body ? "application/json" : "text/plain; charset=utf-8",
                   extra, body, (size_t)n, 0);
}

static const char not_found_page[] =
    "<!doctype html>\n"
    "<html lang=\"en\"><head><meta charset=\"utf-8\"><title>404 Not Found</title></head>\n"
    "<body><h1>Not Found</h1><p>There is no such page here. "
    "<a href=\"/\">Go to the chat</a>.</p></body></html>\n";

/* ---- WebSocket handshake ---- */

void hub_http_websocket_accept_key(struct hub_iov key, char out[29])
{
    struct hub_sha1 s;
    uint8_t digest[20];
    hub_sha1_init(&s);
    hub_sha1_update(&s, key.base, key.len);
    hub_sha1_update(&s, WS_GUID, sizeof(WS_GUID) - 1);
    hub_sha1_final(&s, digest);
    hub_base64_encode(digest, sizeof(digest), out);
}

/* The key must be the canonical base64 of 16 bytes: 24 characters ending in
 * "==". Re-encoding catches non-zero padding bits, which decode to the same
 * bytes but are not what RFC 6455 section 4.1 asks clients to send. */
static int ws_key_valid(struct hub_iov key)
{
    uint8_t raw[18];
    char again[HUB_BASE64_ENCODED_SIZE(16)];
    if (key.len != 24)
        return 0;
    if (hub_base64_decode(key.base, key.len, raw, sizeof(raw)) != 16)
        return 0;
    hub_base64_encode(raw, 16, again);
    return memcmp(again, key.base, 24) == 0;
}

int hub_http_check_websocket(const struct hub_http_request *req)
{
    if (req->method != HUB_HTTP_GET)
        return 400;
    if (req->http_major < 1 || (req->http_major == 1 && req->http_minor < 1))
        return 400;
    if (!hub_iov_has_token(req->upgrade_hdr, "websocket") ||
        !hub_iov_has_token(req->connection, "upgrade"))
        return 400;
    /* A missing version is a broken handshake; a different one is a client
     * that can retry with 13, which the 426 response names. */
    if (req->ws_version.len == 0)
        return 400;
    if (req->ws_version.len != 2 || memcmp(req->ws_version.base, "13", 2) != 0)
        return 426;
    if (!ws_key_valid(req->ws_key))
        return 400;
    return 0;
}

/* RFC 9110 token characters, so a subprotocol cannot smuggle in a header. */
static int is_token(const char *s)
{
    if (*s == '\0')
        return 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
            continue;
        if (strchr("!#$%&'*+-.^_`|~", c) == NULL)
            return 0;
    }
    return 1;
}

/* Besides the codes http.h lists, returns HUB_EINVAL (nothing queued) when
 * subprotocol is not a token: it is echoed into a header line. */
int hub_http_accept_websocket(struct hub_http *h, const struct hub_http_request *req,
                              const char *subprotocol)
{
    return hub_http_accept_websocket_ext(h, req, subprotocol, NULL);
}

/* Also HUB_EINVAL when the extensions line is not one header line. */
int hub_http_accept_websocket_ext(struct hub_http *h, const struct hub_http_request *req,
                                  const char *subprotocol, const char *extensions)
{
    if (subprotocol != NULL && !is_token(subprotocol))
        return HUB_EINVAL;
    if (extensions != NULL) {
        size_t n = strlen(extensions);
        if (n < 2 || strcmp(extensions + n - 2, "\r\n") != 0 ||
            strpbrk(extensions, "\r\n") != extensions + n - 2)
            return HUB_EINVAL;
    }
    if (h->state != ST_OPEN || hub_conn_closing(h->conn))
        return HUB_ECLOSED;
    /* The 101 is put together from preformatted pieces in one buffer on
     * the stack (no printf, no heap) and queued with a single copy. */
    static const char head[] = "HTTP/1.1 101 Switching Protocols\r\n"
                               "Server: chathub\r\n"
                               "Upgrade: websocket\r\n"
                               "Connection: Upgrade\r\n"
                               "Sec-WebSocket-Accept: ";
    static const char proto[] = "\r\nSec-WebSocket-Protocol: ";
    size_t plen = subprotocol != NULL ? strlen(subprotocol) : 0;
    size_t elen = extensions != NULL ? strlen(extensions) : 0;
    size_t need =
        sizeof(head) - 1 + 28 + (subprotocol ? sizeof(proto) - 1 + plen : 0) + 2 + elen + 2;
    char small[512];
    char *out = need <= sizeof(small) ? small : malloc(need);
    if (out == NULL)
        return HUB_ENOMEM;
    char *p = out;
    memcpy(p, head, sizeof(head) - 1);
    p += sizeof(head) - 1;
    char accept[29];
    hub_http_websocket_accept_key(req->ws_key, accept);
    memcpy(p, accept, 28);
    p += 28;
    if (subprotocol != NULL) {
        memcpy(p, proto, sizeof(proto) - 1);
        p += sizeof(proto) - 1;
        memcpy(p, subprotocol, plen);
        p += plen;
    }
    memcpy(p, "\r\n", 2);
    p += 2;
    memcpy(p, extensions != NULL ? extensions : "", elen);
    p += elen;
    memcpy(p, "\r\n", 2);
    p += 2;
    /* A handful of bytes that decide whether the connection lives: they go
     * past the output limit like an error response would. */
    int rc = hub_conn_write_force(h->conn, out, (size_t)(p - out));
    if (out != small)
        free(out);
    if (rc != 0)
        return rc == HUB_ENOMEM ? HUB_ENOMEM : HUB_ECLOSED;
    h->responses++;
    h->accepted = 1;
    return 0;
}

/* ---- Serving a request ---- */

/* Does an If-None-Match value name etag (RFC 9110 section 13.1.2: weak
 * comparison, so a W/ prefix does not matter; "*" matches anything)? */
static int etag_matches(struct hub_iov inm, const char *etag)
{
    size_t elen = strlen(etag);
    size_t i = 0;
    while (i < inm.len) {
        char c = inm.base[i];
        if (c == ' ' || c == '\t' || c == ',') {
            i++;
            continue;
        }
        if (c == '*')
            return 1;
        if (c == 'W' && i + 1 < inm.len && inm.base[i + 1] == '/')
            i += 2;
        if (i >= inm.len || inm.base[i] != '"')
            return 0; /* not an entity-tag: ignore the header */
        size_t start = i;
        i++;
        while (i < inm.len && inm.base[i] != '"')
            i++;
        if (i >= inm.len)
            return 0;
        i++;
        if (i - start == elen && memcmp(inm.base + start, etag, elen) == 0)
            return 1;
    }
    return 0;
}

/* What happens to a request the callback passed on: a static file, or the
 * error that explains why not. */
static void serve_default(struct hub_http *h, const struct hub_http_request *req)
{
    if (req->method != HUB_HTTP_GET && req->method != HUB_HTTP_HEAD) {
        hub_http_respond_status(h, 405);
        return;
    }
    if (req->upgrade) {
        /* Upgrades are the server's business; one that reaches here went
         * to a path nobody takes or failed the checks. */
        int status = hub_http_check_websocket(req);
        hub_http_respond_status(h, status != 0 ? status : 400);
        return;
    }
    char rel[HUB_STATIC_MAX_PATH];
    int rc = hub_static_resolve(req->path.base, req->path.len, rel, sizeof(rel));
    if (rc == HUB_EINVAL) {
        hub_http_respond_status(h, 400);
        return;
    }
    const struct hub_static_file *f = NULL;
    if (rc == 0 && h->cfg->site != NULL)
        f = hub_static_find(h->cfg->site, rel);
    if (f == NULL) {
        respond(h, 404, "text/html; charset=utf-8", NULL, not_found_page,
                sizeof(not_found_page) - 1, 0);
        return;
    }
    char extra[128];
    snprintf(extra, sizeof(extra), "ETag: %s\r\nCache-Control: no-cache\r\n", f->etag);
    if (etag_matches(req->if_none_match, f->etag))
        respond(h, 304, NULL, extra, NULL, 0, 0);
    else
        respond(h, 200, f->mime, extra, f->data, f->len, 1);
}

static struct hub_iov view(const struct hub_http *h, const struct span *s)
{
    struct hub_iov v = {s->len ? h->store + s->off : "", s->len};
    return v;
}

static int starts_with_ci(struct hub_iov v, const char *lit)
{
    size_t n = strlen(lit);
    struct hub_iov head = {v.base, n};
    return v.len >= n && hub_iov_eq_ci(head, lit);
}

/* Splits the request target into path and query. Accepts origin-form
 * ("/p?q"), absolute-form ("http://host/p?q", RFC 9112 section 3.2.2, when
 * its authority equals req->host, which must be set already), and
 * for other methods the asterisk and authority forms as a raw path. Returns
 * 0, or HUB_EINVAL for a target no server could mean. */
static int split_target(struct hub_iov url, int method, struct hub_http_request *req)
{
    struct hub_iov rest = url;
    if (starts_with_ci(url, "http://") || starts_with_ci(url, "https://")) {
        size_t i = url.base[4] == ':' ? 7 : 8;
        size_t auth = i;
        while (i < url.len && url.base[i] != '/' && url.base[i] != '?' && url.base[i] != '#')
            i++;
        /* The target's authority names the host (RFC 9112 section 3.2.2);
         * one that differs from Host is a conflicting Host. */
        struct hub_iov authority = {url.base + auth, i - auth};
        if (!hub_eq_ci(authority.base, authority.len, req->host.base, req->host.len))
            return HUB_EINVAL;
        rest.base = url.base + i;
        rest.len = url.len - i;
    } else if (url.len == 0 || url.base[0] != '/') {
        if (method != HUB_HTTP_OTHER)
            return HUB_EINVAL;
        req->path = url;
        return 0;
    }
    size_t q = 0;
    while (q < rest.len && rest.base[q] != '?' && rest.base[q] != '#')
        q++;
    req->path.base = q > 0 ? rest.base : "/";
    req->path.len = q > 0 ? q : 1;
    if (q < rest.len && rest.base[q] == '?') {
        size_t e = q + 1;
        while (e < rest.len && rest.base[e] != '#')
            e++;
        req->query.base = rest.base + q + 1;
        req->query.len = e - q - 1;
    }
    return 0;
}

static int build_request(const struct hub_http *h, struct hub_http_request *req)
{
    memset(req, 0, sizeof(*req));
    req->method = h->head.method;
    req->method_name.base = h->head.method_name;
    req->method_name.len = strlen(h->head.method_name);
    req->path.base = "";
    req->query.base = "";
    req->http_major = h->head.major;
    req->http_minor = h->head.minor;
    req->keep_alive = h->keep_alive;
    req->upgrade = h->head.upgrade;
    req->host = view(h, &h->hdr[KH_HOST]);
    req->origin = view(h, &h->hdr[KH_ORIGIN]);
    req->upgrade_hdr = view(h, &h->hdr[KH_UPGRADE]);
    req->connection = view(h, &h->hdr[KH_CONNECTION]);
    req->ws_key = view(h, &h->hdr[KH_WS_KEY]);
    req->ws_version = view(h, &h->hdr[KH_WS_VERSION]);
    req->ws_protocol = view(h, &h->hdr[KH_WS_PROTOCOL]);
    req->if_none_match = view(h, &h->hdr[KH_IF_NONE_MATCH]);
    req->ws_extensions = view(h, &h->hdr[KH_WS_EXTENSIONS]);
    req->forwarded_for = view(h, &h->hdr[KH_X_FORWARDED_FOR]);
    req->forwarded = view(h, &h->hdr[KH_FORWARDED]);
    req->authorization = view(h, &h->hdr[KH_AUTHORIZATION]);
    req->content_type = view(h, &h->hdr[KH_CONTENT_TYPE]);
    req->body.base = h->body != NULL ? h->body : "";
    req->body.len = h->body != NULL ? (size_t)h->body_bytes : 0;
    return split_target(view(h, &h->url), req->method, req);
}

/* Ends the connection after the queued output; the rest is ignored. */
static int close_after(struct hub_http *h)
{
    hub_conn_close_after_flush(h->conn);
    h->state = ST_CLOSED;
    return HUB_HTTP_CLOSE;
}

/* Answers malformed input or a broken limit, then closes. */
static int fail(struct hub_http *h, int status)
{
    h->keep_alive = 0;
    if (!h->headers_done)
        h->is_head = 0; /* the method is not known for sure yet */
    hub_http_respond_status(h, status);
    return close_after(h);
}

static int request_done(struct hub_http *h);

/* A complete request: hand it to the callback, then serve what it passed. */
static int finish_request(struct hub_http *h)
{
    struct hub_http_request req;
    h->in_message = 0;
    if (build_request(h, &req) != 0)
        return fail(h, 400);

    h->responses = 0;
    h->accepted = 0;
    int action = h->cb != NULL ? h->cb(h, &req, h->data) : HUB_HTTP_PASS;
    if (action == HUB_HTTP_UPGRADED && h->accepted) {
        h->state = ST_SWITCHED;
        return HUB_HTTP_SWITCH;
    }
    /* The callback (or a refused response) may have ended the connection. */
    if (hub_conn_closing(h->conn))
        return close_after(h);
    if (action == HUB_HTTP_UPGRADED) {
        hub_log_error("http: callback reported an upgrade it did not accept");
        return fail(h, 500);
    }
    if (action == HUB_HTTP_LATER && h->responses == 0) {
        /* The views in req die here; the callback copied what it needs. */
        h->state = ST_WAITING;
        return HUB_HTTP_WAIT;
    }
    if (action == HUB_HTTP_DONE && h->responses == 0) {
        hub_log_error("http: callback took a request without answering it");
        return fail(h, 500);
    }
    if (h->responses == 0)
        serve_default(h, &req);
    return request_done(h);
}

/* The current request has its answer: the connection goes on or ends. */
static int request_done(struct hub_http *h)
{
    if (!h->keep_alive || hub_conn_closing(h->conn))
        return close_after(h);
    req_reset(h);
    return HUB_HTTP_MORE;
}

int hub_http_resume(struct hub_http *h)
{
    if (h->state != ST_WAITING)
        return h->state == ST_CLOSED ? HUB_HTTP_CLOSE : HUB_HTTP_MORE;
    h->state = ST_OPEN;
    if (hub_conn_closing(h->conn))
        return close_after(h);
    if (h->responses == 0) {
        hub_log_error("http: a request taken for later was resumed without an answer");
        return fail(h, 500);
    }
    return request_done(h);
}

int hub_http_waiting(const struct hub_http *h)
{
    return h->state == ST_WAITING;
}

/* Has the current request broken a size limit by the time pos bytes of the
 * stream were parsed? Limits are judged on positions, at every stop of the
 * parser, so the verdict is the same however the input was cut: a head
 * longer than max_header_bytes gets 431; a body whose bytes on the wire
 * (chunk framing and trailers included) go on far past HTTP_MAX_BODY gets
 * 413. Returns the status, or 0. */
static int limit_status(const struct hub_http *h, uint64_t pos)
{
    if (!h->in_message)
        return 0;
    uint64_t used = pos - h->head_start;
    if (!h->headers_done)
        return used > h->cfg->max_header_bytes ? 431 : 0;
    return used > (uint64_t)h->cfg->max_header_bytes + HTTP_MAX_RAW_BODY ? 413 : 0;
}

/* ---- Public entry points ---- */

void hub_http_config_default(struct hub_http_config *cfg)
{
    cfg->max_header_bytes = HTTP_DEFAULT_MAX_HEADER_BYTES;
    cfg->max_headers = HTTP_DEFAULT_MAX_HEADERS;
    cfg->site = NULL;
    cfg->csp = HUB_HTTP_CSP_PAGE;
    cfg->hsts = 0;
    cfg->body_prefix = NULL;
}

struct hub_http *hub_http_new(struct hub_conn *conn, const struct hub_http_config *cfg,
                              hub_http_request_cb cb, void *data)
{
    struct hub_http *h = malloc(sizeof(*h));
    if (h == NULL)
        return NULL;
    memset(h, 0, offsetof(struct hub_http, small));
    h->conn = conn;
    h->cfg = cfg;
    h->cb = cb;
    h->data = data;
    h->state = ST_OPEN;
    h->store = h->small;
    h->cap = sizeof(h->small);
    req_reset(h);
    pa_init(h);
    return h;
}

void hub_http_free(struct hub_http *h)
{
    if (h != NULL && h->store != h->small)
        free(h->store);
    if (h != NULL)
        free(h->body);
    free(h);
}

int hub_http_feed(struct hub_http *h, const char *data, size_t len, size_t *consumed)
{
    if (h->state == ST_SWITCHED || h->state == ST_WAITING) {
        *consumed = 0;
        return h->state == ST_SWITCHED ? HUB_HTTP_SWITCH : HUB_HTTP_WAIT;
    }
    *consumed = len;
    if (h->state == ST_CLOSED)
        return HUB_HTTP_CLOSE;

    size_t off = 0;
    int stalls = 0;
    while (off < len) {
        int ev;
        int status;
        h->chunk = data + off;
        h->chunk_pos = h->stream_pos;
        int in_head = h->in_message && !h->headers_done;
        size_t n = pa_execute(h, data + off, len - off, &ev, &status);
        /* The head scanner sees every byte of a head once: the request's
         * first byte from the run that began it, then the runs up to
         * EV_HEADERS (whose last byte is parsed again, with the body). A bad
         * byte within the head limit comes first in the stream of any
         * other error the run found; one past it is the limit's (431). */
        size_t from = in_head ? 0 : n;
        if (!in_head && ev == EV_BEGIN && n > 0) {
            h->scan = SC_REQLINE;
            from = n - 1;
        }
        size_t bad = from + head_scan(h, data + off + from, n - from);
        if (bad < n) {
            uint64_t at = h->stream_pos + bad;
            uint64_t start = in_head ? h->head_start : h->stream_pos + n - 1;
            if (at - start < h->cfg->max_header_bytes) {
                h->stream_pos += n;
                return fail(h, 400);
            }
        }
        off += n;
        h->stream_pos += n;
        if (ev == EV_ERROR) {
            /* Whichever came first in the stream wins: if the bytes parsed
             * before the bad one already broke a limit, that is the answer
             * a cut before the bad byte would have given. */
            int limit = h->err_status == 0 ? limit_status(h, h->stream_pos) : 0;
            return fail(h, limit != 0 ? limit : status);
        }
        /* A stop may consume nothing (the head's last byte is parsed again
         * after EV_HEADERS), but never twice in a row; never spin. */
        stalls = n == 0 ? stalls + 1 : 0;
        if (stalls > 2)
            return fail(h, 400);
        if (ev == EV_BEGIN) {
            h->head_start = h->stream_pos - 1;
            continue;
        }
        if (ev == EV_HEADERS) {
            int st = req_head_done(h, h->stream_pos + 1);
            if (st != 0)
                return fail(h, st);
            continue;
        }
        int limit = limit_status(h, h->stream_pos);
        if (limit != 0)
            return fail(h, limit);
        if (ev == EV_COMPLETE) {
            int r = finish_request(h);
            if (r == HUB_HTTP_SWITCH || r == HUB_HTTP_WAIT) {
                *consumed = off;
                return r;
            }
            if (r == HUB_HTTP_CLOSE)
                return r;
        }
    }
    return HUB_HTTP_MORE;
}
