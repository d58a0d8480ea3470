/*
 * fuzz_http.c: libFuzzer target for the HTTP request path.
 *
 * The first input byte picks a split point and a header limit; the rest is
 * fed to a hub_http over a detached connection twice, once whole and once in
 * two pieces, with a request callback that upgrades /ws the way the server
 * does. Besides the sanitizers' checks, the target traps when the two runs
 * differ (responses must not depend on how the bytes were cut) or when an
 * upgrade claims more bytes than it was given. The same bytes also go
 * through hub_static_resolve, whose accepted output must be a safe relative
 * path.
 *
 * Paths under /api/ keep their bodies (cfg.body_prefix, as the server sets
 * it with --api-key-file): the callback echoes the body it got, so a body
 * that depends on the cuts shows as a difference, and /api/later is answered
 * later (HUB_HTTP_LATER), the way the server answers API calls from an
 * engine callback: the run answers it when hub_http_feed says
 * HUB_HTTP_WAIT, resumes, and feeds the bytes that were held back.
 */
#include "hub/buf.h"
#include "hub/conn.h"
#include "hub/http.h"
#include "hub/log.h"
#include "hub/static.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct hub_static *site;

/* The body of the request that waits for its answer (/api/later): the
 * views die with the callback, so it is copied. */
static char later_body[HUB_HTTP_MAX_BODY];
static size_t later_len;

static int fuzz_cb(struct hub_http *h, const struct hub_http_request *req, void *data)
{
    (void)data;
    if (req->upgrade && hub_iov_eq_ci(req->path, "/ws")) {
        int status = hub_http_check_websocket(req);
        if (status != 0) {
            hub_http_respond_status(h, status);
            return HUB_HTTP_DONE;
        }
        const char *sub = hub_iov_has_token(req->ws_protocol, "chathub.v1") ? "chathub.v1" : NULL;
        if (hub_http_accept_websocket(h, req, sub) != 0)
            return HUB_HTTP_DONE;
        return HUB_HTTP_UPGRADED;
    }
    if (req->path.len >= 5 && memcmp(req->path.base, "/api/", 5) == 0) {
        if (req->body.len > HUB_HTTP_MAX_BODY)
            __builtin_trap();
        if (hub_iov_eq_ci(req->path, "/api/later")) {
            memcpy(later_body, req->body.base, req->body.len);
            later_len = req->body.len;
            return HUB_HTTP_LATER;
        }
        hub_http_respond(h, 200, "application/json", NULL, req->body.base, req->body.len);
        return HUB_HTTP_DONE;
    }
    if (hub_iov_eq_ci(req->path, "/healthz")) {
        hub_http_respond(h, 200, "text/plain; charset=utf-8", NULL, "ok\n", 3);
        return HUB_HTTP_DONE;
    }
    return HUB_HTTP_PASS;
}

struct result {
    struct hub_buf out; /* everything queued */
    int rc;             /* last feed result */
    size_t switch_at;   /* offset of the WebSocket bytes after a switch */
};

static void drain(struct hub_conn *c, struct hub_buf *out)
{
    const char *bases[8];
    size_t lens[8];
    unsigned n;
    while ((n = hub_outq_peek(&c->out, bases, lens, 8)) > 0) {
        size_t total = 0;
        for (unsigned i = 0; i < n; i++) {
            hub_buf_append(out, bases[i], lens[i]);
            total += lens[i];
        }
        hub_outq_consume(&c->out, total);
    }
}

static void run(const struct hub_http_config *cfg, const char *in, size_t len, size_t cut,
                struct result *r)
{
    struct hub_conn c;
    hub_buf_init(&r->out);
    r->rc = HUB_HTTP_MORE;
    r->switch_at = 0;
    hub_conn_init_detached(&c, 0);
    struct hub_http *h = hub_http_new(&c, cfg, fuzz_cb, NULL);
    if (h == NULL)
        abort();
    size_t pos = 0;
    size_t ends[2] = {cut, len};
    for (int i = 0; i < 2; i++) {
        while (pos < ends[i]) {
            size_t consumed = 0;
            r->rc = hub_http_feed(h, in + pos, ends[i] - pos, &consumed);
            if (consumed > ends[i] - pos)
                __builtin_trap();
            if (r->rc == HUB_HTTP_SWITCH) {
                r->switch_at = pos + consumed;
                goto done;
            }
            if (r->rc == HUB_HTTP_WAIT) {
                /* Waiting: feeding more parses nothing. */
                size_t none = 1;
                if (pos + consumed < ends[i] &&
                    (hub_http_feed(h, in + pos + consumed, ends[i] - pos - consumed, &none) !=
                         HUB_HTTP_WAIT ||
                     none != 0))
                    __builtin_trap();
                pos += consumed;
                hub_http_respond(h, 200, "application/json", NULL, later_body, later_len);
                r->rc = hub_http_resume(h);
                if (r->rc == HUB_HTTP_CLOSE)
                    goto done;
                continue;
            }
            if (consumed != ends[i] - pos)
                __builtin_trap();
            pos = ends[i];
            if (r->rc == HUB_HTTP_CLOSE)
                goto done;
        }
    }
done:
    drain(&c, &r->out);
    hub_http_free(h);
    hub_outq_free(&c.out);
}

static void check_resolve(const uint8_t *data, size_t size)
{
    char out[256];
    if (hub_static_resolve((const char *)data, size, out, sizeof(out)) != 0)
        return;
    size_t n = strlen(out);
    if (n == 0 || out[0] == '/' || strstr(out, "//") != NULL)
        __builtin_trap();
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)out[i];
        if (c < 0x20 || c == 0x7f || c == '\\')
            __builtin_trap();
    }
    /* No segment may be "." or "..". */
    const char *seg = out;
    for (;;) {
        const char *end = strchr(seg, '/');
        size_t sl = end != NULL ? (size_t)(end - seg) : strlen(seg);
        if ((sl == 1 && seg[0] == '.') || (sl == 2 && seg[0] == '.' && seg[1] == '.'))
            __builtin_trap();
        if (end == NULL)
            break;
        seg = end + 1;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (site == NULL) {
        hub_log_set_level(-1);
        if (hub_static_open_embedded(&site) != 0)
            abort();
    }
    check_resolve(data, size);
    if (size == 0)
        return 0;

    struct hub_http_config cfg;
    hub_http_config_default(&cfg);
    cfg.site = site;
    cfg.body_prefix = "/api/";
    /* Small limits now and then, so the 431 paths get exercised too. */
    if (data[0] & 0x80) {
        cfg.max_header_bytes = 64 + (size_t)(data[0] & 0x0f) * 32;
        cfg.max_headers = 1 + (data[0] & 0x70) / 16;
    }
    const char *in = (const char *)data + 1;
    size_t len = size - 1;
    size_t cut = len * (data[0] & 0x7f) / 127;

    struct result whole, split;
    run(&cfg, in, len, len, &whole);
    run(&cfg, in, len, cut, &split);
    if (whole.rc != split.rc || whole.switch_at != split.switch_at ||
        whole.out.len != split.out.len ||
        (whole.out.len > 0 && memcmp(whole.out.data, split.out.data, whole.out.len) != 0))
        __builtin_trap();
    hub_buf_free(&whole.out);
    hub_buf_free(&split.out);
    return 0;
}
