/*
 * test_http.c: unit tests of the HTTP layer, sans-I/O.
 *
 * Each script of request bytes is fed to a hub_http over a detached
 * connection three ways: in one piece, in two pieces split at every offset,
 * and one byte at a time. All runs must queue byte-identical output, show
 * the request callback the same requests, and end with the same result (and
 * for an upgrade the same switch offset). The single-piece run is then
 * checked against the expected responses.
 *
 * The site is a temporary directory read with hub_static_open_dir.
 */
#include "hub/http.h"

#include "hub/buf.h"
#include "hub/conn.h"
#include "hub/log.h"
#include "hub/static.h"

#include "check.h"
#include "tmpfs.h"

#include <uv.h>

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static uv_loop_t loop;
static struct hub_static *site;
static char site_dir[512];
static char big_body[5000];

/* ---- The test site ---- */

static const char index_body[] = "<!doctype html><title>t</title>hello\n";
static const char style_body[] = "body { color: red }\n";

static void site_create(void)
{
    tmp_make_dir(&loop, "hub_http", site_dir, sizeof(site_dir));
    for (size_t i = 0; i < sizeof(big_body); i++)
        big_body[i] = (char)('a' + i % 26);
    tmp_write_file(site_dir, "index.html", index_body, sizeof(index_body) - 1);
    tmp_write_file(site_dir, "style.css", style_body, sizeof(style_body) - 1);
    tmp_write_file(site_dir, "big.js", big_body, sizeof(big_body));
    CHECK_EQ(hub_static_open_dir(&site, site_dir), 0);
}

static void site_destroy(void)
{
    hub_static_free(site);
    tmp_remove_tree(&loop, site_dir);
}

static const char *etag_of(const char *rel)
{
    const struct hub_static_file *f = hub_static_find(site, rel);
    return f != NULL ? f->etag : "(missing)";
}

/* ---- The request callback ---- */

/* What the callback does besides passing; set per test. */
enum cb_mode {
    CB_NORMAL,     /* /ws upgrades, /healthz answered, the rest passed */
    CB_LAZY_DONE,  /* claims DONE without answering (a bug to survive) */
    CB_FAKE_SWITCH /* claims UPGRADED without accepting (a bug to survive) */
};

struct run {
    struct hub_buf log; /* what the callback saw, one line per request */
    int mode;           /* enum cb_mode */
};

static void log_iov(struct hub_buf *b, const char *name, struct hub_iov v)
{
    hub_buf_printf(b, " %s=[%.*s]", name, (int)v.len, v.base);
}

/* The body of the request waiting for its answer (the views die with the
 * callback, as they do for the server's API calls). */
static char later_body[HUB_HTTP_MAX_BODY];
static size_t later_len;

static int test_cb(struct hub_http *h, const struct hub_http_request *req, void *data)
{
    struct run *r = data;
    hub_buf_printf(&r->log, "%d %.*s", req->method, (int)req->method_name.len,
                   req->method_name.base);
    log_iov(&r->log, "path", req->path);
    log_iov(&r->log, "query", req->query);
    hub_buf_printf(&r->log, " v=%u.%u ka=%d up=%d", req->http_major, req->http_minor,
                   req->keep_alive, req->upgrade);
    log_iov(&r->log, "host", req->host);
    log_iov(&r->log, "origin", req->origin);
    log_iov(&r->log, "upgrade", req->upgrade_hdr);
    log_iov(&r->log, "connection", req->connection);
    log_iov(&r->log, "key", req->ws_key);
    log_iov(&r->log, "version", req->ws_version);
    log_iov(&r->log, "protocol", req->ws_protocol);
    log_iov(&r->log, "inm", req->if_none_match);
    log_iov(&r->log, "auth", req->authorization);
    log_iov(&r->log, "ctype", req->content_type);
    log_iov(&r->log, "body", req->body);
    hub_buf_puts(&r->log, "\n");

    if (r->mode == CB_LAZY_DONE)
        return HUB_HTTP_DONE;
    if (r->mode == CB_FAKE_SWITCH)
        return HUB_HTTP_UPGRADED;
    if (req->upgrade && hub_iov_eq_ci(req->path, "/ws")) {
        int status = hub_http_check_websocket(req);
        if (status != 0) {
            hub_http_respond_status(h, status);
            return HUB_HTTP_DONE;
        }
        const char *sub = hub_iov_has_token(req->ws_protocol, "chathub.v1") ? "chathub.v1" : NULL;
        CHECK_EQ(hub_http_accept_websocket(h, req, sub), 0);
        return HUB_HTTP_UPGRADED;
    }
    if (hub_iov_eq_ci(req->path, "/healthz")) {
        hub_http_respond(h, 200, "text/plain; charset=utf-8", NULL, "ok\n", 3);
        return HUB_HTTP_DONE;
    }
    /* The server API's shape (cfg.body_prefix "/api/"): /api/later is
     * answered after the callback (run_script does it on HUB_HTTP_WAIT),
     * anything else under /api/ echoes its body at once. */
    if (hub_iov_eq_ci(req->path, "/api/later")) {
        CHECK(req->body.len <= sizeof(later_body));
        memcpy(later_body, req->body.base, req->body.len);
        later_len = req->body.len;
        return HUB_HTTP_LATER;
    }
    if (req->path.len >= 5 && memcmp(req->path.base, "/api/", 5) == 0) {
        hub_http_respond(h, 200, "application/json", NULL, req->body.base, req->body.len);
        return HUB_HTTP_DONE;
    }
    return HUB_HTTP_PASS;
}

/* ---- Driving a script ---- */

struct outcome {
    char *out;        /* everything queued, NUL-terminated */
    size_t out_len;   /* its length */
    char *log;        /* the callback's log, NUL-terminated */
    int result;       /* last hub_http_feed result */
    size_t switch_at; /* stream offset where WebSocket bytes start, or 0 */
    int closing;      /* the conn was marked to close */
};

static void outcome_free(struct outcome *o)
{
    free(o->out);
    free(o->log);
    memset(o, 0, sizeof(*o));
}

static char *drain(struct hub_conn *c, size_t *len)
{
    struct hub_buf b;
    hub_buf_init(&b);
    for (;;) {
        const char *bases[16];
        size_t lens[16];
        unsigned n = hub_outq_peek(&c->out, bases, lens, 16);
        if (n == 0)
            break;
        size_t total = 0;
        for (unsigned i = 0; i < n; i++) {
            hub_buf_append(&b, bases[i], lens[i]);
            total += lens[i];
        }
        hub_outq_consume(&c->out, total);
    }
    hub_buf_append(&b, "", 1);
    *len = b.len - 1;
    return b.data;
}

/* Feeds script split at the given cut offsets (ascending, inside the
 * script). step > 0 feeds that many bytes at a time instead. */
static void run_script(const struct hub_http_config *cfg, int mode, size_t out_limit,
                       const char *script, size_t len, const size_t *cuts, size_t ncuts,
                       size_t step, struct outcome *o)
{
    struct hub_conn c;
    struct run r;
    memset(o, 0, sizeof(*o));
    hub_buf_init(&r.log);
    r.mode = mode;
    hub_conn_init_detached(&c, out_limit);
    struct hub_http *h = hub_http_new(&c, cfg, test_cb, &r);
    CHECK(h != NULL);
    if (h == NULL)
        return;

    size_t pos = 0;
    size_t k = 0;
    o->result = HUB_HTTP_MORE;
    size_t end = 0;
    while (pos < len) {
        /* A waiting request may leave part of a piece unparsed: the rest of
         * it is fed next, so the cuts stay where they were. */
        if (pos >= end) {
            end = len;
            if (step > 0)
                end = pos + step < len ? pos + step : len;
            else if (k < ncuts)
                end = cuts[k++];
        }
        size_t consumed = 12345;
        int rc = hub_http_feed(h, script + pos, end - pos, &consumed);
        o->result = rc;
        if (rc == HUB_HTTP_SWITCH) {
            CHECK(consumed <= end - pos);
            o->switch_at = pos + consumed;
            break;
        }
        if (rc == HUB_HTTP_WAIT) {
            /* A request waits: nothing behind it is parsed until it has its
             * answer; then the held bytes are fed again. */
            CHECK(consumed <= end - pos);
            CHECK(hub_http_waiting(h));
            size_t none = 99;
            if (pos + consumed < end) {
                CHECK_EQ(hub_http_feed(h, script + pos + consumed, end - pos - consumed, &none),
                         HUB_HTTP_WAIT);
                CHECK_EQ(none, 0);
            }
            pos += consumed;
            CHECK_EQ(hub_http_respond(h, 200, "application/json", NULL, later_body, later_len), 0);
            rc = hub_http_resume(h);
            o->result = rc;
            CHECK(!hub_http_waiting(h));
            if (rc == HUB_HTTP_CLOSE)
                break;
            continue;
        }
        CHECK_EQ(consumed, end - pos);
        pos = end;
        if (rc == HUB_HTTP_CLOSE) {
            /* Whatever follows is consumed and ignored. */
            size_t n2 = 0;
            CHECK_EQ(hub_http_feed(h, script + pos, len - pos, &n2), HUB_HTTP_CLOSE);
            CHECK_EQ(n2, len - pos);
            break;
        }
    }
    o->closing = hub_conn_closing(&c);
    o->out = drain(&c, &o->out_len);
    hub_buf_append(&r.log, "", 1);
    o->log = r.log.data;
    hub_http_free(h);
    hub_outq_free(&c.out);
}

static int same_outcome(const struct outcome *a, const struct outcome *b)
{
    return a->out_len == b->out_len && memcmp(a->out, b->out, a->out_len) == 0 &&
           strcmp(a->log, b->log) == 0 && a->result == b->result && a->switch_at == b->switch_at &&
           a->closing == b->closing;
}

/* Runs script in one piece (into *o), then at every two-piece split and one
 * byte at a time, checking that every run matches. */
static void run_all_splits_cfg(const struct hub_http_config *cfg, int mode, size_t out_limit,
                               const char *name, const char *script, size_t len, struct outcome *o)
{
    struct outcome other;
    run_script(cfg, mode, out_limit, script, len, NULL, 0, 0, o);
    int mismatches = 0;
    for (size_t cut = 1; cut < len; cut++) {
        run_script(cfg, mode, out_limit, script, len, &cut, 1, 0, &other);
        if (!same_outcome(o, &other)) {
            if (mismatches++ == 0)
                fprintf(stderr, "%s: split at %zu differs:\n--- whole\n%s\n--- split\n%s\n", name,
                        cut, o->out, other.out);
        }
        outcome_free(&other);
    }
    CHECK_EQ(mismatches, 0);
    run_script(cfg, mode, out_limit, script, len, NULL, 0, 1, &other);
    if (!same_outcome(o, &other))
        fprintf(stderr, "%s: byte-by-byte differs:\n--- whole\n%s\n--- bytes\n%s\n", name, o->out,
                other.out);
    CHECK(same_outcome(o, &other));
    outcome_free(&other);
}

static struct hub_http_config default_cfg(void)
{
    struct hub_http_config cfg;
    hub_http_config_default(&cfg);
    cfg.site = site;
    cfg.body_prefix = "/api/";
    return cfg;
}

static void run_all_splits(const char *name, const char *script, struct outcome *o)
{
    struct hub_http_config cfg = default_cfg();
    run_all_splits_cfg(&cfg, CB_NORMAL, 0, name, script, strlen(script), o);
}

static size_t count_of(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = strstr(hay, needle); p != NULL; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* What every HTML response carries (issue 20), written out independently
 * of http.c so that a change there shows up here. */
#define HTML_HDRS                                                                                  \
    "Content-Security-Policy: default-src 'self'; script-src 'self'; style-src 'self'; "           \
    "img-src 'self' data:; connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; "      \
    "form-action 'self'; frame-ancestors 'none'\r\nX-Frame-Options: DENY\r\n"                      \
    "Referrer-Policy: no-referrer\r\n"

/* The exact bytes of a 200 for a small site file. */
static void expect_200(struct hub_buf *b, const char *rel, const char *mime, const char *body,
                       size_t len, int head, const char *conn_hdr)
{
    hub_buf_printf(b,
                   "HTTP/1.1 200 OK\r\nServer: chathub\r\nContent-Type: %s\r\n"
                   "Content-Length: %zu\r\n%sX-Content-Type-Options: nosniff\r\n%s"
                   "ETag: %s\r\nCache-Control: no-cache\r\n\r\n",
                   mime, len, conn_hdr, strncmp(mime, "text/html", 9) == 0 ? HTML_HDRS : "",
                   etag_of(rel));
    if (!head)
        hub_buf_append(b, body, len);
}

static void expect_status(struct hub_buf *b, int status, const char *extra, const char *conn_hdr)
{
    char body[64];
    int n = snprintf(body, sizeof(body), "%d %s\n", status, hub_http_reason(status));
    hub_buf_printf(b,
                   "HTTP/1.1 %d %s\r\nServer: chathub\r\nContent-Type: text/plain; "
                   "charset=utf-8\r\nContent-Length: %d\r\n%sX-Content-Type-Options: "
                   "nosniff\r\n%s\r\n%s",
                   status, hub_http_reason(status), n, conn_hdr, extra, body);
}

static void check_output(const char *name, const struct outcome *o, struct hub_buf *want)
{
    hub_buf_append(want, "", 1);
    if (o->out_len != want->len - 1 || memcmp(o->out, want->data, o->out_len) != 0)
        fprintf(stderr, "%s: output differs:\n--- got\n%s\n--- want\n%s\n", name, o->out,
                want->data);
    CHECK_EQ(o->out_len, want->len - 1);
    CHECK(memcmp(o->out, want->data, o->out_len) == 0);
    hub_buf_free(want);
}

#define CLOSE_HDR "Connection: close\r\n"

/* ---- Static files ---- */

static void test_get(void)
{
    struct outcome o;
    struct hub_buf want = {0};
    run_all_splits("get", "GET / HTTP/1.1\r\nHost: example.org\r\n\r\n", &o);
    expect_200(&want, "index.html", "text/html; charset=utf-8", index_body, sizeof(index_body) - 1,
               0, "");
    check_output("get", &o, &want);
    CHECK_EQ(o.result, HUB_HTTP_MORE);
    CHECK(!o.closing);
    CHECK(strstr(o.log, "path=[/] query=[] v=1.1 ka=1 up=0 host=[example.org]") != NULL);
    outcome_free(&o);

    run_all_splits("get css", "GET /style.css?v=3 HTTP/1.1\r\nHost: h\r\n\r\n", &o);
    expect_200(&want, "style.css", "text/css; charset=utf-8", style_body, sizeof(style_body) - 1, 0,
               "");
    check_output("get css", &o, &want);
    CHECK(strstr(o.log, "path=[/style.css] query=[v=3]") != NULL);
    outcome_free(&o);

    /* Absolute-form targets are served by their path. */
    run_all_splits("absolute", "GET http://h:8080/style.css?x HTTP/1.1\r\nHost: h:8080\r\n\r\n",
                   &o);
    expect_200(&want, "style.css", "text/css; charset=utf-8", style_body, sizeof(style_body) - 1, 0,
               "");
    check_output("absolute", &o, &want);
    CHECK(strstr(o.log, "path=[/style.css] query=[x]") != NULL);
    outcome_free(&o);

    /* A large file goes by reference; the bytes must all arrive. */
    run_all_splits("big", "GET /big.js HTTP/1.1\r\nHost: h\r\n\r\n", &o);
    expect_200(&want, "big.js", "text/javascript; charset=utf-8", big_body, sizeof(big_body), 0,
               "");
    check_output("big", &o, &want);
    outcome_free(&o);

    run_all_splits("head", "HEAD /big.js HTTP/1.1\r\nHost: h\r\n\r\n", &o);
    expect_200(&want, "big.js", "text/javascript; charset=utf-8", big_body, sizeof(big_body), 1,
               "");
    check_output("head", &o, &want);
    CHECK(strstr(o.out, "Content-Length: 5000\r\n") != NULL);
    outcome_free(&o);
}

static void test_conditional(void)
{
    char script[512];
    struct outcome o;
    struct hub_buf want = {0};
    const char *etag = etag_of("index.html");
    /* Each form is the text before and after the tag, or "*" alone. */
    static const char *const forms[][2] = {
        {"", ""}, {"\"nope\", ", ""}, {"W/", ""}, {"\"a\",W/", " , \"b\""}, {"*", NULL},
    };

    for (size_t i = 0; i < HUB_ARRAY_SIZE(forms); i++) {
        char inm[128];
        if (forms[i][1] == NULL)
            snprintf(inm, sizeof(inm), "%s", forms[i][0]);
        else
            snprintf(inm, sizeof(inm), "%s%s%s", forms[i][0], etag, forms[i][1]);
        snprintf(script, sizeof(script),
                 "GET /index.html HTTP/1.1\r\nHost: h\r\nIf-None-Match: %s\r\n\r\n", inm);
        run_all_splits("304", script, &o);
        hub_buf_printf(&want,
                       "HTTP/1.1 304 Not Modified\r\nServer: chathub\r\n"
                       "X-Content-Type-Options: nosniff\r\n"
                       "ETag: %s\r\nCache-Control: no-cache\r\n\r\n",
                       etag);
        check_output("304", &o, &want);
        outcome_free(&o);
    }

    /* Another tag, or a tag split over two header lines, is not a match. */
    run_all_splits("inm other",
                   "GET / HTTP/1.1\r\nHost: h\r\nIf-None-Match: \"0000000000000000\"\r\n\r\n", &o);
    CHECK(strncmp(o.out, "HTTP/1.1 200 OK\r\n", 17) == 0);
    outcome_free(&o);

    /* A repeated If-None-Match is joined into one list. */
    snprintf(script, sizeof(script),
             "GET / HTTP/1.1\r\nIf-None-Match: \"x\"\r\nHost: h\r\nIf-None-Match: %s\r\n\r\n",
             etag);
    run_all_splits("inm joined", script, &o);
    CHECK(strncmp(o.out, "HTTP/1.1 304 Not Modified\r\n", 27) == 0);
    char seen[128];
    snprintf(seen, sizeof(seen), "inm=[\"x\", %s]", etag);
    CHECK(strstr(o.log, seen) != NULL);
    outcome_free(&o);
}

static const char not_found_page[] =
    "<!doctype html>\n"
    "<html lang=\"en\"><head><meta charset=\"utf-8\"><title>404 Not Found</title></head>\n"
    "<body><h1>Not Found</h1><p>There is no such page here. "
    "<a href=\"/\">Go to the chat</a>.</p></body></html>\n";

static void test_errors(void)
{
    struct outcome o;
    struct hub_buf want = {0};

    run_all_splits("404", "GET /missing.html HTTP/1.1\r\nHost: h\r\n\r\n", &o);
    hub_buf_printf(&want,
                   "HTTP/1.1 404 Not Found\r\nServer: chathub\r\n"
                   "Content-Type: text/html; charset=utf-8\r\nContent-Length: %zu\r\n"
                   "X-Content-Type-Options: nosniff\r\n" HTML_HDRS "\r\n%s",
                   sizeof(not_found_page) - 1, not_found_page);
    check_output("404", &o, &want);
    CHECK_EQ(o.result, HUB_HTTP_MORE); /* a 404 keeps the connection */
    CHECK(strstr(o.out, "<a href=\"/\">") != NULL);
    outcome_free(&o);

    /* A directory without an index is missing too. */
    run_all_splits("404 dir", "GET /sub/ HTTP/1.1\r\nHost: h\r\n\r\n", &o);
    CHECK(strncmp(o.out, "HTTP/1.1 404 Not Found\r\n", 24) == 0);
    outcome_free(&o);

    /* Traversal attempts are refused, not looked up. */
    static const char *const bad_paths[] = {
        "GET /../index.html HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET /%2e%2e/index.html HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET /a%2f..%2findex.html HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET /x%00 HTTP/1.1\r\nHost: h\r\n\r\n",
    };
    for (size_t i = 0; i < HUB_ARRAY_SIZE(bad_paths); i++) {
        run_all_splits("bad path", bad_paths[i], &o);
        expect_status(&want, 400, "", "");
        check_output("bad path", &o, &want);
        outcome_free(&o);
    }

    /* Other methods: 405 with Allow, after the body was read, and the
     * connection goes on (the GET behind it is answered). */
    run_all_splits("405",
                   "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello=world"
                   "GET /style.css HTTP/1.1\r\nHost: h\r\n\r\n",
                   &o);
    expect_status(&want, 405, "Allow: GET, HEAD\r\n", "");
    expect_200(&want, "style.css", "text/css; charset=utf-8", style_body, sizeof(style_body) - 1, 0,
               "");
    check_output("405", &o, &want);
    CHECK(strstr(o.log, "4 POST path=[/]") != NULL);
    outcome_free(&o);

    run_all_splits("405 chunked",
                   "PUT /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                   "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer-X: y\r\n\r\n"
                   "DELETE /y HTTP/1.1\r\nHost: h\r\n\r\n",
                   &o);
    expect_status(&want, 405, "Allow: GET, HEAD\r\n", "");
    expect_status(&want, 405, "Allow: GET, HEAD\r\n", "");
    check_output("405 chunked", &o, &want);
    outcome_free(&o);

    /* A GET with a small body: read and thrown away. */
    run_all_splits("get body",
                   "GET /style.css HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
                   "HEAD /style.css HTTP/1.1\r\nHost: h\r\n\r\n",
                   &o);
    expect_200(&want, "style.css", "text/css; charset=utf-8", style_body, sizeof(style_body) - 1, 0,
               "");
    expect_200(&want, "style.css", "text/css; charset=utf-8", style_body, sizeof(style_body) - 1, 1,
               "");
    check_output("get body", &o, &want);
    outcome_free(&o);

    /* Too large a body: 413 at once, then close. */
    run_all_splits("413", "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\nabc", &o);
    expect_status(&want, 413, "", CLOSE_HDR);
    check_output("413", &o, &want);
    CHECK_EQ(o.result, HUB_HTTP_CLOSE);
    CHECK(o.closing);
    CHECK_STR(o.log, "");
    outcome_free(&o);

    /* Garbage and malformed heads: 400 and close. */
    static const char *const garbage[] = {
        "\x01\x02 hello\r\n\r\n",
        "GET / HTTP/2.0\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nBad Header\r\n\r\n",
        "GET / FTP/1.1\r\n\r\n",
        "GET * HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    };
    for (size_t i = 0; i < HUB_ARRAY_SIZE(garbage); i++) {
        run_all_splits("garbage", garbage[i], &o);
        expect_status(&want, 400, "", CLOSE_HDR);
        check_output("garbage", &o, &want);
        CHECK_EQ(o.result, HUB_HTTP_CLOSE);
        CHECK(o.closing);
        outcome_free(&o);
    }

    /* Two Host lines: ambiguous, refused. */
    run_all_splits("two hosts", "GET / HTTP/1.1\r\nHost: a\r\nX: y\r\nhost: a\r\n\r\n", &o);
    expect_status(&want, 400, "", CLOSE_HDR);
    check_output("two hosts", &o, &want);
    outcome_free(&o);

    /* A garbage request behind a good one: the good one is answered first. */
    run_all_splits("good then bad", "GET /style.css HTTP/1.1\r\nHost: h\r\n\r\n\x01junk", &o);
    expect_200(&want, "style.css", "text/css; charset=utf-8", style_body, sizeof(style_body) - 1, 0,
               "");
    expect_status(&want, 400, "", CLOSE_HDR);
    check_output("good then bad", &o, &want);
    outcome_free(&o);
}

/* A request of exactly total head bytes, canonically formatted, with one
 * filler header. */
static char *sized_request(size_t total)
{
    static const char line[] = "GET /style.css HTTP/1.1\r\nHost: h\r\n";
    static const char name[] = "X-Fill: ";
    size_t fixed = strlen(line) + strlen(name) + 2 + 2;
    char *s = malloc(total + 1);
    size_t o = 0;
    memcpy(s + o, line, strlen(line));
    o += strlen(line);
    memcpy(s + o, name, strlen(name));
    o += strlen(name);
    for (size_t i = 0; i < total - fixed; i++)
        s[o++] = 'v';
    memcpy(s + o, "\r\n\r\n", 5);
    return s;
}

/* The request store starts inside the hub_http and grows on the heap for a
 * head that stores more (a 3000-byte Origin); the next request on the same
 * connection starts small again and still sees its own values. */
static void test_store_growth(void)
{
    struct outcome o;
    struct hub_http_config cfg = default_cfg();
    char origin[3001];
    memset(origin, 'o', 3000);
    origin[3000] = '\0';
    struct hub_buf req = {0};
    hub_buf_printf(&req,
                   "GET /style.css HTTP/1.1\r\nHost: h\r\nOrigin: http://%s\r\n\r\n"
                   "GET /style.css HTTP/1.1\r\nHost: h\r\nOrigin: http://second\r\n\r\n",
                   origin);
    run_all_splits_cfg(&cfg, CB_NORMAL, 0, "store growth", req.data, req.len, &o);
    struct hub_buf want = {0};
    hub_buf_printf(&want, "origin=[http://%s]", origin);
    CHECK(strstr(o.log, want.data) != NULL);
    CHECK(strstr(o.log, "origin=[http://second]") != NULL);
    CHECK(strncmp(o.out, "HTTP/1.1 200 OK\r\n", 17) == 0);
    CHECK_EQ(o.result, HUB_HTTP_MORE);
    outcome_free(&o);
    hub_buf_free(&want);
    hub_buf_free(&req);
}

static void test_limits(void)
{
    struct outcome o;
    struct hub_buf want = {0};
    struct hub_http_config cfg = default_cfg();

    /* The head may be exactly max_header_bytes long, not one byte more. */
    cfg.max_header_bytes = 256;
    char *ok = sized_request(256);
    CHECK_EQ(strlen(ok), 256);
    run_all_splits_cfg(&cfg, CB_NORMAL, 0, "256", ok, 256, &o);
    CHECK(strncmp(o.out, "HTTP/1.1 200 OK\r\n", 17) == 0);
    CHECK_EQ(o.result, HUB_HTTP_MORE);
    outcome_free(&o);
    char *over = sized_request(257);
    run_all_splits_cfg(&cfg, CB_NORMAL, 0, "257", over, 257, &o);
    expect_status(&want, 431, "", CLOSE_HDR);
    check_output("257", &o, &want);
    CHECK_EQ(o.result, HUB_HTTP_CLOSE);
    CHECK_STR(o.log, "");
    outcome_free(&o);
    free(ok);
    free(over);

    /* The same with the default limit of 8192 bytes. */
    cfg = default_cfg();
    ok = sized_request(8192);
    run_script(&cfg, CB_NORMAL, 0, ok, 8192, NULL, 0, 0, &o);
    CHECK(strncmp(o.out, "HTTP/1.1 200 OK\r\n", 17) == 0);
    outcome_free(&o);
    run_script(&cfg, CB_NORMAL, 0, ok, 8192, NULL, 0, 1, &o);
    CHECK(strncmp(o.out, "HTTP/1.1 200 OK\r\n", 17) == 0);
    outcome_free(&o);
    over = sized_request(8193);
    run_script(&cfg, CB_NORMAL, 0, over, 8193, NULL, 0, 0, &o);
    CHECK(strncmp(o.out, "HTTP/1.1 431 ", 13) == 0);
    outcome_free(&o);
    run_script(&cfg, CB_NORMAL, 0, over, 8193, NULL, 0, 1, &o);
    CHECK(strncmp(o.out, "HTTP/1.1 431 ", 13) == 0);
    outcome_free(&o);
    free(ok);
    free(over);

    /* A long URL alone is over the limit as well. */
    cfg.max_header_bytes = 128;
    char url_req[400];
    memset(url_req, 0, sizeof(url_req));
    memcpy(url_req, "GET /", 5);
    memset(url_req + 5, 'u', 200);
    strcat(url_req, " HTTP/1.1\r\n\r\n");
    run_all_splits_cfg(&cfg, CB_NORMAL, 0, "long url", url_req, strlen(url_req), &o);
    CHECK(strncmp(o.out, "HTTP/1.1 431 ", 13) == 0);
    outcome_free(&o);

    /* Header lines: max_headers of them pass, one more is refused. */
    cfg = default_cfg();
    cfg.max_headers = 5;
    const char *five = "GET /style.css HTTP/1.1\r\nHost: h\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n";
    run_all_splits_cfg(&cfg, CB_NORMAL, 0, "5 headers", five, strlen(five), &o);
    CHECK(strncmp(o.out, "HTTP/1.1 200 OK\r\n", 17) == 0);
    outcome_free(&o);
    const char *six =
        "GET /style.css HTTP/1.1\r\nHost: h\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\nF: 6\r\n\r\n";
    run_all_splits_cfg(&cfg, CB_NORMAL, 0, "6 headers", six, strlen(six), &o);
    expect_status(&want, 431, "", CLOSE_HDR);
    check_output("6 headers", &o, &want);
    outcome_free(&o);

    /* Default: 100 headers pass, 101 do not. */
    cfg = default_cfg();
    for (int n = 100; n <= 101; n++) {
        struct hub_buf req = {0};
        hub_buf_puts(&req, "GET /style.css HTTP/1.1\r\nHost: h\r\n");
        for (int i = 1; i < n; i++)
            hub_buf_printf(&req, "H%d: %d\r\n", i, i);
        hub_buf_puts(&req, "\r\n");
        run_script(&cfg, CB_NORMAL, 0, req.data, req.len, NULL, 0, 1, &o);
        CHECK(strncmp(o.out, n == 100 ? "HTTP/1.1 200 " : "HTTP/1.1 431 ", 13) == 0);
        outcome_free(&o);
        hub_buf_free(&req);
    }

    /* A chunked body that goes on past the limit: 413. */
    struct hub_buf chunked = {0};
    hub_buf_puts(&chunked, "GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 70; i++) {
        hub_buf_puts(&chunked, "400\r\n");
        for (int j = 0; j < 1024; j++)
            hub_buf_puts(&chunked, "z");
        hub_buf_puts(&chunked, "\r\n");
    }
    run_script(&cfg, CB_NORMAL, 0, chunked.data, chunked.len, NULL, 0, 0, &o);
    CHECK(strncmp(o.out, "HTTP/1.1 413 ", 13) == 0);
    CHECK_EQ(o.result, HUB_HTTP_CLOSE);
    outcome_free(&o);
    run_script(&cfg, CB_NORMAL, 0, chunked.data, chunked.len, NULL, 0, 7, &o);
    CHECK(strncmp(o.out, "HTTP/1.1 413 ", 13) == 0);
    outcome_free(&o);
    hub_buf_free(&chunked);

    /* The output limit: a big file that does not fit is not half-queued;
     * the client is not reading, so the connection ends. */
    cfg = default_cfg();
    const char *big = "GET /big.js HTTP/1.1\r\nHost: h\r\n\r\n";
    run_script(&cfg, CB_NORMAL, 1000, big, strlen(big), NULL, 0, 0, &o);
    CHECK_EQ(o.out_len, 0);
    CHECK_EQ(o.result, HUB_HTTP_CLOSE);
    CHECK(o.closing);
    outcome_free(&o);
    /* Error responses get through that limit. */
    run_script(&cfg, CB_NORMAL, 10, "BREW / HTTP/1.1\r\nHost: h\r\n\r\n", 19, NULL, 0, 0, &o);
    CHECK(strncmp(o.out, "HTTP/1.1 400 ", 13) == 0);
    outcome_free(&o);
}

/* ---- Connection handling ---- */

static void test_pipelining(void)
{
    struct outcome o;
    struct hub_buf want = {0};

    run_all_splits("pipelined",
                   "GET / HTTP/1.1\r\nHost: h\r\n\r\n"
                   "GET /style.css HTTP/1.1\r\nHost: h\r\n\r\n"
                   "HEAD /missing HTTP/1.1\r\nHost: h\r\n\r\n",
                   &o);
    expect_200(&want, "index.html", "text/html; charset=utf-8", index_body, sizeof(index_body) - 1,
               0, "");
    expect_200(&want, "style.css", "text/css; charset=utf-8", style_body, sizeof(style_body) - 1, 0,
               "");
    hub_buf_printf(&want,
                   "HTTP/1.1 404 Not Found\r\nServer: chathub\r\n"
                   "Content-Type: text/html; charset=utf-8\r\nContent-Length: %zu\r\n"
                   "X-Content-Type-Options: nosniff\r\n" HTML_HDRS "\r\n",
                   sizeof(not_found_page) - 1);
    check_output("pipelined", &o, &want);
    CHECK_EQ(count_of(o.log, "\n"), 3);
    CHECK_EQ(o.result, HUB_HTTP_MORE);
    outcome_free(&o);

    /* Empty lines between requests are allowed (RFC 9112 section 2.2). */
    run_all_splits("crlf", "\r\nGET /style.css HTTP/1.1\r\nHost: h\r\n\r\n\r\n", &o);
    CHECK_EQ(count_of(o.out, "HTTP/1.1 200 OK"), 1);
    outcome_free(&o);

    /* Connection: close answers with close and ignores what follows. */
    run_all_splits("close",
                   "GET /style.css HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
                   "GET / HTTP/1.1\r\nHost: h\r\n\r\n",
                   &o);
    expect_200(&want, "style.css", "text/css; charset=utf-8", style_body, sizeof(style_body) - 1, 0,
               CLOSE_HDR);
    check_output("close", &o, &want);
    CHECK_EQ(o.result, HUB_HTTP_CLOSE);
    CHECK(o.closing);
    CHECK_EQ(count_of(o.log, "\n"), 1);
    outcome_free(&o);

    /* "close" inside a list, odd case. */
    run_all_splits("close list",
                   "GET /style.css HTTP/1.1\r\nHost: h\r\nConnection: foo, CLOSE\r\n\r\n", &o);
    CHECK(strstr(o.out, CLOSE_HDR) != NULL);
    CHECK_EQ(o.result, HUB_HTTP_CLOSE);
    outcome_free(&o);

    /* HTTP/1.0 closes by default... */
    run_all_splits("1.0", "GET /style.css HTTP/1.0\r\n\r\nGET / HTTP/1.0\r\n\r\n", &o);
    expect_200(&want, "style.css", "text/css; charset=utf-8", style_body, sizeof(style_body) - 1, 0,
               CLOSE_HDR);
    check_output("1.0", &o, &want);
    CHECK_EQ(o.result, HUB_HTTP_CLOSE);
    CHECK(strstr(o.log, "v=1.0 ka=0") != NULL);
    outcome_free(&o);

    /* ...unless it asks for keep-alive, which the response confirms. */
    run_all_splits("1.0 keep-alive",
                   "GET /style.css HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"
                   "HEAD /style.css HTTP/1.0\r\n\r\n",
                   &o);
    expect_200(&want, "style.css", "text/css; charset=utf-8", style_body, sizeof(style_body) - 1, 0,
               "Connection: keep-alive\r\n");
    expect_200(&want, "style.css", "text/css; charset=utf-8", style_body, sizeof(style_body) - 1, 1,
               CLOSE_HDR);
    check_output("1.0 keep-alive", &o, &want);
    CHECK_EQ(o.result, HUB_HTTP_CLOSE);
    outcome_free(&o);

    /* Requests the callback answers itself. */
    run_all_splits(
        "healthz",
        "GET /healthz HTTP/1.1\r\nHost: h\r\n\r\nGET /healthz HTTP/1.1\r\nHost: h\r\n\r\n", &o);
    CHECK_EQ(count_of(o.out, "HTTP/1.1 200 OK\r\n"), 2);
    CHECK_EQ(count_of(o.out, "\r\n\r\nok\n"), 2);
    CHECK(strstr(o.out, "Content-Length: 3\r\n") != NULL);
    outcome_free(&o);

    /* A callback that claims to have answered but did not: 500 and close. */
    struct hub_http_config cfg = default_cfg();
    const char *lazy = "GET /x HTTP/1.1\r\nHost: h\r\n\r\n";
    int level = hub_log_get_level();
    hub_log_set_level(-1); /* the error it logs is expected, once per run */
    run_all_splits_cfg(&cfg, CB_LAZY_DONE, 0, "lazy", lazy, strlen(lazy), &o);
    hub_log_set_level(level);
    expect_status(&want, 500, "", CLOSE_HDR);
    check_output("lazy", &o, &want);
    CHECK_EQ(o.result, HUB_HTTP_CLOSE);
    outcome_free(&o);
}

/* ---- WebSocket upgrades ---- */

#define WS_HEAD(key, version)                                                                      \
    "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"                 \
    "Sec-WebSocket-Key: " key "\r\nSec-WebSocket-Version: " version "\r\n\r\n"

static const char accept_101[] = "HTTP/1.1 101 Switching Protocols\r\nServer: chathub\r\n"
                                 "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                                 "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n";

static void test_upgrade(void)
{
    struct outcome o;
    struct hub_buf want = {0};

    /* The upgrade stops parsing right behind the head: the frame bytes that
     * came with it are left for the WebSocket layer. */
    const char *head = WS_HEAD("dGhlIHNhbXBsZSBub25jZQ==", "13");
    char script[1024];
    snprintf(script, sizeof(script), "%s%s", head, "\x81\x85GET / HTTP/1.1\r\n\r\n");
    run_all_splits("upgrade", script, &o);
    hub_buf_printf(&want, "%s\r\n", accept_101);
    check_output("upgrade", &o, &want);
    CHECK_EQ(o.result, HUB_HTTP_SWITCH);
    CHECK_EQ(o.switch_at, strlen(head));
    CHECK(!o.closing);
    CHECK(strstr(o.log, "upgrade=[websocket] connection=[Upgrade] "
                        "key=[dGhlIHNhbXBsZSBub25jZQ==] version=[13]") != NULL);
    outcome_free(&o);

    /* Exactly the head: the switch offset is the end of the input. */
    run_all_splits("upgrade exact", head, &o);
    CHECK_EQ(o.result, HUB_HTTP_SWITCH);
    CHECK_EQ(o.switch_at, strlen(head));
    outcome_free(&o);

    /* Behind a pipelined GET; tokens in lists, odd case, repeated headers
     * joined, a subprotocol chosen. */
    const char *listy = "GET /style.css HTTP/1.1\r\nHost: h\r\n\r\n"
                        "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: foo/2, WebSocket\r\n"
                        "Connection: keep-alive\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                        "Connection:  UPGRADE  \r\nSec-WebSocket-Version: 13\r\n"
                        "Sec-WebSocket-Protocol: x.v2, chathub.v1\r\nOrigin: http://h\r\n\r\n"
                        "\x88\x80";
    run_all_splits("upgrade lists", listy, &o);
    expect_200(&want, "style.css", "text/css; charset=utf-8", style_body, sizeof(style_body) - 1, 0,
               "");
    hub_buf_printf(&want, "%sSec-WebSocket-Protocol: chathub.v1\r\n\r\n", accept_101);
    check_output("upgrade lists", &o, &want);
    CHECK_EQ(o.result, HUB_HTTP_SWITCH);
    CHECK_EQ(o.switch_at, strlen(listy) - 2);
    CHECK(strstr(o.log, "connection=[keep-alive, UPGRADE]") != NULL);
    CHECK(strstr(o.log, "origin=[http://h]") != NULL);
    CHECK(strstr(o.log, "protocol=[x.v2, chathub.v1]") != NULL);
    outcome_free(&o);

    /* Empty repeats add nothing; trailing whitespace is dropped; values of
     * one header stay together whatever comes between them. */
    run_all_splits("repeats",
                   "GET /style.css HTTP/1.1\r\nOrigin: a \t\r\nHost: x\r\n"
                   "Origin:\r\nUpgrade: u1\r\nOrigin:   \r\nUpgrade: u2\r\nOrigin: b\r\n"
                   "X-Other: zzz\r\nUpgrade: u3\r\n\r\n",
                   &o);
    CHECK(strstr(o.log, "host=[x] origin=[a, b] upgrade=[u1, u2, u3] connection=[]") != NULL);
    CHECK(strncmp(o.out, "HTTP/1.1 200 OK\r\n", 17) == 0);
    outcome_free(&o);

    /* A version other than 13: 426 naming 13, then close. */
    run_all_splits("426", WS_HEAD("dGhlIHNhbXBsZSBub25jZQ==", "8"), &o);
    expect_status(&want, 426, "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n", CLOSE_HDR);
    check_output("426", &o, &want);
    CHECK_EQ(o.result, HUB_HTTP_CLOSE);
    outcome_free(&o);

    /* Bad keys: 15 bytes, not base64, non-zero padding bits, 17 bytes. */
    static const char *const bad_keys[] = {
        WS_HEAD("AAAAAAAAAAAAAAAAAAAA", "13"),
        WS_HEAD("!!!!!!!!!!!!!!!!!!!!!!==", "13"),
        WS_HEAD("dGhlIHNhbXBsZSBub25jZR==", "13"),
        WS_HEAD("AAAAAAAAAAAAAAAAAAAAAAA=", "13"),
        WS_HEAD("", "13"),
    };
    for (size_t i = 0; i < HUB_ARRAY_SIZE(bad_keys); i++) {
        run_all_splits("bad key", bad_keys[i], &o);
        expect_status(&want, 400, "", CLOSE_HDR);
        check_output("bad key", &o, &want);
        CHECK_EQ(o.result, HUB_HTTP_CLOSE);
        outcome_free(&o);
    }

    /* An upgrade to a path nobody takes: the callback passes, 400. */
    run_all_splits("upgrade elsewhere",
                   "GET /other HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
                   &o);
    expect_status(&want, 400, "", CLOSE_HDR);
    check_output("upgrade elsewhere", &o, &want);
    CHECK_EQ(o.result, HUB_HTTP_CLOSE);
    outcome_free(&o);

    /* A callback that claims an upgrade it never accepted: 500, close. */
    struct hub_http_config cfg = default_cfg();
    int level = hub_log_get_level();
    hub_log_set_level(-1); /* the error it logs is expected, once per run */
    run_all_splits_cfg(&cfg, CB_FAKE_SWITCH, 0, "fake switch", head, strlen(head), &o);
    hub_log_set_level(level);
    CHECK(strncmp(o.out, "HTTP/1.1 500 ", 13) == 0);
    CHECK_EQ(o.result, HUB_HTTP_CLOSE);
    outcome_free(&o);
}

static struct hub_http_request ws_request(void)
{
    struct hub_http_request r;
    memset(&r, 0, sizeof(r));
    r.method = HUB_HTTP_GET;
    r.http_major = 1;
    r.http_minor = 1;
    r.upgrade = 1;
    r.upgrade_hdr = (struct hub_iov){"websocket", 9};
    r.connection = (struct hub_iov){"Upgrade", 7};
    r.ws_key = (struct hub_iov){"dGhlIHNhbXBsZSBub25jZQ==", 24};
    r.ws_version = (struct hub_iov){"13", 2};
    return r;
}

static void test_check_websocket(void)
{
    struct hub_http_request r = ws_request();
    CHECK_EQ(hub_http_check_websocket(&r), 0);
    r.method = HUB_HTTP_HEAD;
    CHECK_EQ(hub_http_check_websocket(&r), 400);
    r = ws_request();
    r.http_minor = 0;
    CHECK_EQ(hub_http_check_websocket(&r), 400);
    r = ws_request();
    r.upgrade_hdr = (struct hub_iov){"websockets", 10};
    CHECK_EQ(hub_http_check_websocket(&r), 400);
    r = ws_request();
    r.upgrade_hdr = (struct hub_iov){"h2c , WEBSOCKET", 15};
    CHECK_EQ(hub_http_check_websocket(&r), 0);
    r = ws_request();
    r.connection = (struct hub_iov){"keep-alive", 10};
    CHECK_EQ(hub_http_check_websocket(&r), 400);
    r = ws_request();
    r.connection = (struct hub_iov){"keep-alive,upgrade", 18};
    CHECK_EQ(hub_http_check_websocket(&r), 0);
    r = ws_request();
    r.ws_version = (struct hub_iov){"", 0};
    CHECK_EQ(hub_http_check_websocket(&r), 400);
    r = ws_request();
    r.ws_version = (struct hub_iov){"13, 8", 5};
    CHECK_EQ(hub_http_check_websocket(&r), 426);
    r = ws_request();
    r.ws_version = (struct hub_iov){"130", 3};
    CHECK_EQ(hub_http_check_websocket(&r), 426);
    r = ws_request();
    r.ws_key = (struct hub_iov){"dGhlIHNhbXBsZSBub25jZQ=", 23};
    CHECK_EQ(hub_http_check_websocket(&r), 400);

    char out[29];
    hub_http_websocket_accept_key((struct hub_iov){"dGhlIHNhbXBsZSBub25jZQ==", 24}, out);
    CHECK_STR(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");

    CHECK_STR(hub_http_reason(404), "Not Found");
    CHECK_STR(hub_http_reason(431), "Request Header Fields Too Large");
    CHECK_STR(hub_http_reason(101), "Switching Protocols");
}

/* Direct calls: statuses, extra headers, a subprotocol that would inject a
 * header, and responses after the end. */
static void test_respond_direct(void)
{
    struct hub_conn c;
    struct hub_http_config cfg = default_cfg();
    hub_conn_init_detached(&c, 0);
    struct hub_http *h = hub_http_new(&c, &cfg, NULL, NULL);
    CHECK(h != NULL);
    if (h == NULL)
        return;
    struct hub_http_request r = ws_request();
    CHECK_EQ(hub_http_accept_websocket(h, &r, "bad\r\nX-Evil: 1"), HUB_EINVAL);
    CHECK_EQ(hub_http_accept_websocket(h, &r, ""), HUB_EINVAL);
    CHECK_EQ(c.out.bytes, 0);
    CHECK_EQ(hub_http_respond_status(h, 503), 0);
    size_t len;
    char *out = drain(&c, &len);
    CHECK(strstr(out, "HTTP/1.1 503 Service Unavailable\r\n") == out);
    CHECK(strstr(out, "Retry-After: 5\r\n") != NULL);
    CHECK(strstr(out, "\r\n\r\n503 Service Unavailable\n") != NULL);
    free(out);
    CHECK_EQ(hub_http_respond(h, 200, NULL, "X-A: b\r\n", "xy", 2), 0);
    out = drain(&c, &len);
    CHECK(strstr(out, "Content-Length: 2\r\n") != NULL);
    CHECK(strstr(out, "X-A: b\r\n\r\nxy") != NULL);
    CHECK(strstr(out, "\r\nContent-Type:") == NULL);
    free(out);
    hub_conn_close_after_flush(&c);
    CHECK_EQ(hub_http_respond_status(h, 404), HUB_ECLOSED);
    hub_http_free(h);
    hub_outq_free(&c.out);
}

/* Pipelined requests for missing pages on a connection that never reads:
 * the 404s that keep the connection open go through the output limit, and
 * the first that does not fit ends the connection (it is never forced past
 * the limit). A request that ends the connection gets its error response
 * even over the limit. */
static void test_pipelined_errors_limit(void)
{
    struct hub_http_config cfg = default_cfg();
    struct hub_buf script = {0};
    for (int i = 0; i < 200; i++)
        hub_buf_puts(&script, "GET /nope HTTP/1.1\r\nHost: h\r\n\r\n");
    struct outcome o;
    run_script(&cfg, 0, 4096, script.data, script.len, NULL, 0, 0, &o);
    /* Each 404 (with its security headers) is under 1024 bytes: as many as
     * fit, and no more. */
    CHECK(o.out_len <= 4096);
    CHECK(count_of(o.out, "HTTP/1.1 404 Not Found") < 200);
    CHECK(count_of(o.out, "HTTP/1.1 404 Not Found") >= 4096 / 1024);
    CHECK_EQ(o.result, HUB_HTTP_CLOSE);
    CHECK(o.closing);
    outcome_free(&o);
    /* A malformed request gets its 400 and the close even past the limit,
     * as does a 404 that ends the connection; a 200 does not. */
    script.len = 0;
    hub_buf_puts(&script, "BAD\r\n\r\n");
    run_script(&cfg, 0, 10, script.data, script.len, NULL, 0, 0, &o);
    CHECK_EQ(count_of(o.out, "HTTP/1.1 400 Bad Request"), 1);
    CHECK(o.closing);
    outcome_free(&o);
    script.len = 0;
    hub_buf_puts(&script, "GET /nope HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    run_script(&cfg, 0, 10, script.data, script.len, NULL, 0, 0, &o);
    CHECK_EQ(count_of(o.out, "HTTP/1.1 404 Not Found"), 1);
    CHECK(o.closing);
    outcome_free(&o);
    script.len = 0;
    hub_buf_puts(&script, "GET /style.css HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    run_script(&cfg, 0, 10, script.data, script.len, NULL, 0, 0, &o);
    CHECK_EQ(o.out_len, 0);
    CHECK(o.closing);
    outcome_free(&o);
    hub_buf_free(&script);
}

/* ---- Strict framing (issue 20): what a front proxy could read otherwise ---- */

/* Every request here must get 400 and close, with the callback never
 * called: each is one that http-parser alone would take, or take apart
 * differently from a proxy in front. */
static const char *const strict_bad[] = {
    /* White space between a header name and its colon. */
    "GET / HTTP/1.1\r\nHost: h\r\nContent-Length : 5\r\n\r\nhello",
    "GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: h\r\nContent-Length\t: 5\r\n\r\nhello",
    "GET / HTTP/1.1\r\nHost : h\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: h\r\nX Y: z\r\n\r\n",
    /* obs-fold, and white space before the first header. */
    "GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n b\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n\tb\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: h\r\nX-A:\r\n b\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: h\r\n evil.example\r\n\r\n",
    "GET / HTTP/1.1\r\nX: 1\r\nContent-Length: 0\r\n 5\r\nHost: h\r\n\r\n",
    "GET / HTTP/1.1\r\n Host: h\r\n\r\n",
    "GET / HTTP/1.1\n Host: h\n\n",
    /* Host: missing on HTTP/1.1, repeated, conflicting, invalid. */
    "GET / HTTP/1.1\r\n\r\n",
    "GET / HTTP/1.1\r\nX: y\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: h\r\nHost: h\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: user@a\r\n\r\n",
    "GET http://evil.example/ HTTP/1.1\r\nHost: h\r\n\r\n",
    "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
    /* Still refused: Content-Length twice, and with Transfer-Encoding. */
    "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
    "0\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
    "0\r\n\r\n",
};

static void test_strict(void)
{
    struct outcome o;
    struct hub_buf want = {0};
    for (size_t i = 0; i < HUB_ARRAY_SIZE(strict_bad); i++) {
        char name[32];
        snprintf(name, sizeof(name), "strict %zu", i);
        run_all_splits(name, strict_bad[i], &o);
        expect_status(&want, 400, "", CLOSE_HDR);
        check_output(name, &o, &want);
        CHECK_EQ(o.result, HUB_HTTP_CLOSE);
        CHECK(o.closing);
        if (o.log[0] != '\0')
            fprintf(stderr, "%s: the callback saw %s", name, o.log);
        CHECK_STR(o.log, "");
        outcome_free(&o);
    }

    /* A good request before a folded one is answered; the folded one is not. */
    run_all_splits("strict pipelined",
                   "GET /style.css HTTP/1.1\r\nHost: h\r\n\r\n"
                   "GET /style.css HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n",
                   &o);
    expect_200(&want, "style.css", "text/css; charset=utf-8", style_body, sizeof(style_body) - 1, 0,
               "");
    expect_status(&want, 400, "", CLOSE_HDR);
    check_output("strict pipelined", &o, &want);
    outcome_free(&o);

    /* Accepted: HTTP/1.0 without Host, white space inside and around
     * values, an empty Host (RFC 9112 allows it), an absolute-form target
     * naming the Host, a bare LF line end, and a colon inside a value. */
    static const char *const good[] = {
        "GET /style.css HTTP/1.0\r\n\r\n",
        "GET /style.css HTTP/1.1\r\nHost:   h:8080  \r\nX-A: a  b\t\r\n\r\n",
        "GET /style.css HTTP/1.1\r\nHost:\r\n\r\n",
        "GET HTTP://H:1/style.css HTTP/1.1\r\nHost: h:1\r\n\r\n",
        "GET /style.css HTTP/1.1\nHost: [::1]:80\nX: a:b\n\n",
    };
    for (size_t i = 0; i < HUB_ARRAY_SIZE(good); i++) {
        run_all_splits("strict good", good[i], &o);
        CHECK(strncmp(o.out, "HTTP/1.1 200 OK\r\n", 17) == 0);
        CHECK(strstr(o.log, "path=[/style.css]") != NULL);
        outcome_free(&o);
    }

    /* A fold whose bad byte lies past the head limit is the limit's 431,
     * however the bytes are cut. */
    struct hub_http_config cfg = default_cfg();
    cfg.max_header_bytes = 64;
    static const char late[] =
        "GET / HTTP/1.1\r\nHost: h\r\nX-Long: vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv\r\n"
        " folded\r\n\r\n";
    run_all_splits_cfg(&cfg, CB_NORMAL, 0, "late fold", late, strlen(late), &o);
    CHECK(strncmp(o.out, "HTTP/1.1 431 ", 13) == 0);
    outcome_free(&o);
    static const char early[] = "GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n b\r\nX-Long: "
                                "vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv\r\n\r\n";
    run_all_splits_cfg(&cfg, CB_NORMAL, 0, "early fold", early, strlen(early), &o);
    CHECK(strncmp(o.out, "HTTP/1.1 400 ", 13) == 0);
    outcome_free(&o);
}

/* The CSP of HTML responses follows cfg->csp; other types get none. */
static void test_csp(void)
{
    struct outcome o;
    struct hub_http_config cfg = default_cfg();
    cfg.csp = HUB_HTTP_CSP_FRAMES;
    const char *req = "GET / HTTP/1.1\r\nHost: h\r\n\r\nGET /style.css HTTP/1.1\r\nHost: h\r\n\r\n";
    run_all_splits_cfg(&cfg, CB_NORMAL, 0, "csp frames", req, strlen(req), &o);
    CHECK_EQ(count_of(o.out, "\r\nContent-Security-Policy: frame-ancestors 'none'\r\n"), 1);
    CHECK_EQ(count_of(o.out, "Content-Security-Policy"), 1);
    CHECK_EQ(count_of(o.out, "\r\nX-Frame-Options: DENY\r\n"), 1);
    CHECK_EQ(count_of(o.out, "\r\nReferrer-Policy: no-referrer\r\n"), 1);
    outcome_free(&o);
}

/* Request bodies under cfg.body_prefix, and answers that come later, at
 * every split (issue 13 part 3: the server API). */
static void test_bodies(void)
{
    struct outcome o;
    /* Content-Length and chunked bodies, kept and echoed; an answer that
     * comes later between them; a body elsewhere is thrown away. */
    const char *script = "POST /api/echo HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer k3y\r\n"
                         "Content-Type: application/json\r\nContent-Length: 9\r\n\r\n{\"a\":123}"
                         "POST /api/later HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                         "4\r\n{\"b\"\r\n3;x=y\r\n:[]\r\n1\r\n}\r\n0\r\nTrail: t\r\n\r\n"
                         "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
                         "POST /api/later HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}"
                         "GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n";
    run_all_splits("bodies", script, &o);
    CHECK_EQ(o.result, HUB_HTTP_MORE);
    CHECK(!o.closing);
    CHECK(strstr(o.log, "path=[/api/echo]") != NULL);
    CHECK(strstr(o.log, "auth=[Bearer k3y] ctype=[application/json] body=[{\"a\":123}]") != NULL);
    CHECK(strstr(o.log, "body=[{\"b\":[]}]") != NULL);
    CHECK(strstr(o.log, "path=[/] query=[] v=1.1 ka=1 up=0 host=[h]") != NULL);
    CHECK(strstr(o.log, "body=[hello]") == NULL);
    /* Five answers, in order. */
    const char *p = o.out;
    const char *want[] = {"200 OK", "{\"a\":123}", "200 OK", "{\"b\":[]}", "405 Method",
                          "200 OK", "\r\n\r\n{}",  "200 OK", "ok\n"};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        const char *q = strstr(p, want[i]);
        CHECK(q != NULL);
        if (q == NULL)
            break;
        p = q + strlen(want[i]);
    }
    outcome_free(&o);

    /* A later answer to a request that does not keep the connection. */
    run_all_splits("later close",
                   "POST /api/later HTTP/1.1\r\nHost: h\r\nConnection: close\r\n"
                   "Content-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: h\r\n\r\n",
                   &o);
    CHECK_EQ(o.result, HUB_HTTP_CLOSE);
    CHECK(o.closing);
    CHECK_EQ(count_of(o.out, "HTTP/1.1 "), 1);
    CHECK(strstr(o.out, "Connection: close\r\n") != NULL);
    outcome_free(&o);

    /* Over the limit: 413 with a JSON body under the prefix, text elsewhere;
     * a chunked body past the limit too. */
    run_all_splits("api 413",
                   "POST /api/echo HTTP/1.1\r\nHost: h\r\nContent-Length: 65537\r\n\r\n{", &o);
    CHECK(strstr(o.out, "HTTP/1.1 413 Content Too Large\r\n") != NULL);
    CHECK(strstr(o.out, "Content-Type: application/json\r\n") != NULL);
    CHECK(strstr(o.out, "{\"error\":{\"code\":\"too_large\"") != NULL);
    CHECK(o.closing);
    outcome_free(&o);
    run_all_splits("site 413", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 65537\r\n\r\n{", &o);
    CHECK(strstr(o.out, "413 Content Too Large\n") != NULL);
    outcome_free(&o);
    struct hub_buf big;
    hub_buf_init(&big);
    hub_buf_puts(&big, "POST /api/echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 17; i++) {
        hub_buf_puts(&big, "1000\r\n");
        for (int j = 0; j < 4096; j++)
            hub_buf_append(&big, "z", 1);
        hub_buf_puts(&big, "\r\n");
    }
    struct hub_http_config cfg = default_cfg();
    run_script(&cfg, CB_NORMAL, 0, big.data, big.len, NULL, 0, 0, &o);
    CHECK(strstr(o.out, "HTTP/1.1 413 ") != NULL);
    CHECK(strstr(o.out, "too_large") != NULL);
    CHECK_EQ(count_of(o.log, "path="), 0);
    outcome_free(&o);
    /* Exactly the limit is fine. */
    hub_buf_free(&big);
    hub_buf_init(&big);
    hub_buf_puts(&big, "POST /api/echo HTTP/1.1\r\nHost: h\r\nContent-Length: 65536\r\n\r\n");
    for (int j = 0; j < 65536; j++)
        hub_buf_append(&big, "q", 1);
    run_script(&cfg, CB_NORMAL, 0, big.data, big.len, NULL, 0, 1000, &o);
    CHECK(strstr(o.out, "HTTP/1.1 200 OK\r\n") != NULL);
    CHECK_EQ(o.out_len - (size_t)(strstr(o.out, "\r\n\r\n") + 4 - o.out), 65536);
    outcome_free(&o);
    hub_buf_free(&big);
}

int main(void)
{
    if (uv_loop_init(&loop) != 0)
        return 1;
    site_create();
    test_get();
    test_conditional();
    test_errors();
    test_limits();
    test_store_growth();
    test_pipelining();
    test_pipelined_errors_limit();
    test_upgrade();
    test_check_websocket();
    test_respond_direct();
    test_strict();
    test_csp();
    test_bodies();
    site_destroy();
    CHECK_EQ(uv_loop_close(&loop), 0);
    return CHECK_DONE();
}
