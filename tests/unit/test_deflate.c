/*
 * test_deflate.c: permessage-deflate (RFC 7692) sans-I/O: the offer parser,
 * the whole-message zlib calls with their output bound, and the frame path
 * of a hub_ws with the extension on (compressed input split at every
 * offset, RSV1 misuse, zip bombs, and the compressed form of a shared frame
 * made once for every recipient).
 *
 * Exits 77 (skipped) in a build without zlib, where the extension is never
 * negotiated.
 */
#include "check.h"
#include "hub/conn.h"
#include "hub/deflate.h"
#include "hub/ws.h"
#include "ws_script.h"

#include <stdlib.h>

/* ---- Negotiation ---- */

/* Negotiates value; returns the window bits accepted (0: declined) and
 * copies the response line into line. */
static int nego(const char *value, char *line)
{
    struct hub_deflate_params p = {0, 0};
    line[0] = '\0';
    struct hub_iov v = {value, strlen(value)};
    if (!hub_deflate_negotiate(v, &p, line, 160))
        return 0;
    return p.server_max_window_bits;
}

#define BASE                                                                                       \
    "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; "                   \
    "client_no_context_takeover"

static void test_negotiation(void)
{
    char line[160];
    /* What browsers and Node ws offer. */
    CHECK_EQ(nego("permessage-deflate; client_max_window_bits", line), 15);
    CHECK_STR(line, BASE "\r\n");
    CHECK_EQ(nego("permessage-deflate", line), 15);
    CHECK_STR(line, BASE "\r\n");
    /* server_max_window_bits is answered with the same value (7.1.2.1). */
    CHECK_EQ(nego("permessage-deflate; server_max_window_bits=10", line), 10);
    CHECK_STR(line, BASE "; server_max_window_bits=10\r\n");
    CHECK_EQ(nego("permessage-deflate; server_max_window_bits=\"12\"", line), 12);
    CHECK_EQ(nego("permessage-deflate; server_max_window_bits=\"1\\5\"", line), 15);
    CHECK_EQ(nego("permessage-deflate; server_max_window_bits=8", line), 8);
    CHECK_EQ(nego("permessage-deflate;server_max_window_bits=9;client_max_window_bits=8", line), 9);
    CHECK_EQ(nego("Permessage-Deflate; Server_No_Context_Takeover", line), 15);
    CHECK_EQ(
        nego("permessage-deflate; server_no_context_takeover; client_no_context_takeover", line),
        15);
    CHECK_EQ(nego(" ,\t, permessage-deflate\t;\tclient_max_window_bits = 11 ,, ", line), 15);
    /* Other extensions are skipped; the first valid offer wins. */
    CHECK_EQ(nego("x-webkit-deflate-frame; no_context_takeover, permessage-deflate", line), 15);
    CHECK_EQ(nego("permessage-deflate; server_max_window_bits=16, "
                  "permessage-deflate; server_max_window_bits=11, permessage-deflate",
                  line),
             11);
    CHECK_EQ(nego("foo; bar=\"a, b; c\", permessage-deflate", line), 15);
    /* Invalid offers are declined (RFC 7692 section 7). */
    const char *declined[] = {
        "",
        "x-webkit-deflate-frame",
        "permessage-deflate; server_max_window_bits",     /* needs a value */
        "permessage-deflate; server_max_window_bits=7",   /* out of range */
        "permessage-deflate; server_max_window_bits=16",  /* out of range */
        "permessage-deflate; server_max_window_bits=08",  /* leading zero */
        "permessage-deflate; server_max_window_bits=1 0", /* junk */
        "permessage-deflate; server_max_window_bits=\"\"",
        "permessage-deflate; server_max_window_bits=\"10 \"",
        "permessage-deflate; client_max_window_bits=20",
        "permessage-deflate; client_max_window_bits=abc",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; client_no_context_takeover=\"\"",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
        "permessage-deflate; unknown_param",
        "permessage-deflate; mux",
    };
    for (size_t i = 0; i < HUB_ARRAY_SIZE(declined); i++) {
        if (nego(declined[i], line) != 0)
            fprintf(stderr, "accepted: %s\n", declined[i]);
        CHECK_EQ(nego(declined[i], line), 0);
        CHECK_STR(line, "");
    }
    /* Grammar errors decline everything, even a valid offer before them. */
    const char *broken[] = {
        "permessage-deflate; =1",
        "permessage-deflate;",
        "permessage-deflate; a=",
        "permessage-deflate junk",
        "permessage-deflate, ;x",
        "permessage-deflate, \"quoted\"",
        "permessage-deflate, x; server_max_window_bits=\"10",
        "permessage-deflate, x; y=\"a\\",
        "permessage-deflate, x; y=\"\x01\"",
        "permessage-deflate, x; y=a=b",
        "permessage-deflate, @",
    };
    for (size_t i = 0; i < HUB_ARRAY_SIZE(broken); i++) {
        if (nego(broken[i], line) != 0)
            fprintf(stderr, "accepted: %s\n", broken[i]);
        CHECK_EQ(nego(broken[i], line), 0);
    }
    /* Every prefix of a long header parses without reading past its end
     * (the value is not NUL-terminated here: ASan sees any overread). */
    const char *full = "a; b=\"c\\\"d\", permessage-deflate ; server_max_window_bits=\"13\"; "
                       "client_max_window_bits";
    size_t n = strlen(full);
    for (size_t i = 0; i <= n; i++) {
        char *copy = malloc(i ? i : 1);
        memcpy(copy, full, i);
        struct hub_deflate_params p;
        hub_deflate_negotiate((struct hub_iov){copy, i}, &p, line, sizeof(line));
        free(copy);
    }
    CHECK_EQ(nego(full, line), 13);
    /* A line buffer too small for the answer declines. */
    struct hub_deflate_params p;
    CHECK_EQ(hub_deflate_negotiate((struct hub_iov){"permessage-deflate", 18}, &p, line, 20), 0);
}

/* ---- zlib calls ---- */

/* Chat-like text: words from a small vocabulary, like real lines. */
static void chat_text(char *out, size_t len, unsigned seed)
{
    static const char *words[] = {"the",  "room",   "hello", "is",      "anyone", "here",
                                  "chat", "server", "ok",    "message", "today",  "thanks"};
    size_t i = 0;
    while (i < len) {
        seed = seed * 1103515245u + 12345u;
        const char *w = words[(seed >> 16) % HUB_ARRAY_SIZE(words)];
        for (size_t k = 0; w[k] && i < len; k++)
            out[i++] = w[k];
        if (i < len)
            out[i++] = ' ';
    }
}

static void test_zlib_calls(void)
{
    char text[1024];
    chat_text(text, sizeof(text), 1);
    struct hub_buf z = {0}, back = {0};
    CHECK_EQ(hub_deflate_compress(text, sizeof(text), 15, &z), 0);
    CHECK(z.len > 0 && z.len < sizeof(text) / 2);
    CHECK(z.len < 4 || memcmp(z.data + z.len - 4, "\0\0\xff\xff", 4) != 0);
    CHECK_EQ(hub_deflate_inflate(z.data, z.len, 1024, &back), 0);
    CHECK(back.len == sizeof(text) && memcmp(back.data, text, sizeof(text)) == 0);
    /* The bound: one byte less than the message is too big. */
    CHECK_EQ(hub_deflate_inflate(z.data, z.len, 1023, &back), HUB_ENOBUFS);
    CHECK_EQ(back.len, 0);
    /* Appends after what out holds. */
    size_t before = z.len;
    CHECK_EQ(hub_deflate_compress(text, sizeof(text), 9, &z), 0);
    CHECK_EQ(hub_deflate_inflate(z.data + before, z.len - before, 4096, &back), 0);
    CHECK(back.len == sizeof(text) && memcmp(back.data, text, sizeof(text)) == 0);
    CHECK_EQ(hub_deflate_compress(text, 10, 8, &z), HUB_EINVAL);
    CHECK_EQ(hub_deflate_compress(text, 10, 16, &z), HUB_EINVAL);
    /* An empty message compresses and inflates (RFC 7692 7.2.3.6). */
    z.len = 0;
    CHECK_EQ(hub_deflate_compress("", 0, 15, &z), 0);
    CHECK_EQ(hub_deflate_inflate(z.data, z.len, 10, &back), 0);
    CHECK_EQ(back.len, 0);
    CHECK_EQ(hub_deflate_inflate("\x00", 1, 10, &back), 0);
    CHECK_EQ(back.len, 0);
    /* A zip bomb: 1 MiB of zeros in about a kilobyte. Inflating it with a
     * 64 KiB bound stops at the bound, and the buffer never got near 1 MiB. */
    char *zeros = calloc(1, 1 << 20);
    z.len = 0;
    CHECK_EQ(hub_deflate_compress(zeros, 1 << 20, 15, &z), 0);
    CHECK(z.len < 1100);
    hub_buf_free(&back);
    CHECK_EQ(hub_deflate_inflate(z.data, z.len, 64 * 1024, &back), HUB_ENOBUFS);
    CHECK(back.cap <= 2 * (64 * 1024 + 1));
    free(zeros);
    /* Corrupt data: a reserved block type (BTYPE 11). */
    CHECK_EQ(hub_deflate_inflate("\x07\xff\xff", 3, 1024, &back), HUB_EPROTO);
    /* A final block followed by trailing bytes ends the message. */
    z.len = 0;
    hub_buf_append(&z, "\x4b\x04\x00", 3); /* "a" with BFINAL set */
    CHECK_EQ(hub_deflate_inflate(z.data, z.len, 10, &back), 0);
    CHECK(back.len == 1 && back.data[0] == 'a');
    /* Every truncation of a valid stream (followed by the 00 00 ff ff tail
     * that inflating adds, which then reads as arbitrary bits) fails
     * cleanly or yields at most the bound. */
    z.len = 0;
    hub_deflate_compress(text, sizeof(text), 15, &z);
    for (size_t i = 0; i < z.len; i++) {
        int rc = hub_deflate_inflate(z.data, i, 1024, &back);
        CHECK(rc == 0 || rc == HUB_EPROTO || rc == HUB_ENOBUFS);
        CHECK(back.len <= 1024 && (rc == 0 || back.len == 0));
    }
    hub_buf_free(&z);
    hub_buf_free(&back);
}

/* ---- The frame path ---- */

/* Appends a client frame with RSV bits rsv (4 = RSV1), masked. */
static void client_frame_rsv(struct hub_buf *b, int fin, int rsv, int opcode, const void *payload,
                             size_t len)
{
    size_t at = b->len;
    client_frame(b, fin, opcode, payload, len, 1);
    b->data[at] = (char)(b->data[at] | (rsv << 4));
}

/* Appends a compressed client message of text, in nfrag frames. */
static void client_compressed(struct hub_buf *b, int opcode, const char *text, size_t len,
                              int nfrag)
{
    struct hub_buf z = {0};
    hub_deflate_compress(text, len, 15, &z);
    size_t per = z.len / (size_t)nfrag + 1, at = 0;
    for (int i = 0; i < nfrag; i++) {
        size_t n = i == nfrag - 1 ? z.len - at : (per < z.len - at ? per : z.len - at);
        client_frame_rsv(b, i == nfrag - 1, i == 0 ? 4 : 0, i == 0 ? opcode : 0, z.data + at, n);
        at += n;
    }
    hub_buf_free(&z);
}

struct rec {
    struct hub_buf log; /* "T:<len>:<first 8 bytes>|" or "B:<len>|" per message */
    struct hub_buf all; /* every message's bytes, concatenated */
};

static void on_msg(struct hub_ws *ws, int opcode, const char *data, size_t len, void *user)
{
    struct rec *r = user;
    if (opcode == HUB_WS_TEXT)
        hub_buf_printf(&r->log, "T:%zu:%.*s|", len, (int)(len < 8 ? len : 8), data);
    else
        hub_buf_printf(&r->log, "B:%zu|", len);
    hub_buf_append(&r->all, data, len);
}

struct run {
    struct hub_buf log, all, out;
    unsigned flags;
};

static void run_script(const struct hub_buf *script, const size_t *cuts, int ncuts, int deflate,
                       size_t max_message, struct run *res)
{
    struct hub_conn c;
    hub_conn_init_detached(&c, 0);
    struct hub_ws_config cfg;
    hub_ws_config_default(&cfg);
    cfg.max_message = max_message;
    struct rec r = {{0}, {0}};
    struct hub_ws *ws = hub_ws_new(&c, &cfg, on_msg, &r);
    if (deflate)
        hub_ws_set_deflate(ws, 15);
    size_t at = 0;
    for (int i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : script->len;
        if (hub_ws_feed(ws, script->data + at, end - at) != 0)
            break;
        at = end;
    }
    res->log = r.log;
    res->all = r.all;
    hub_buf_init(&res->out);
    drain_conn(&c, &res->out);
    res->flags = c.flags;
    hub_ws_free(ws);
    hub_outq_free(&c.out);
}

static void run_free(struct run *r)
{
    hub_buf_free(&r->log);
    hub_buf_free(&r->all);
    hub_buf_free(&r->out);
}

static int same(const struct hub_buf *a, const struct hub_buf *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

/* Runs the script whole, then cut into two pieces at every offset and into
 * three around it; every run must match the whole one. */
static void check_splits(const struct hub_buf *script, int deflate, size_t max_message,
                         struct run *whole)
{
    run_script(script, NULL, 0, deflate, max_message, whole);
    int mismatches = 0;
    for (size_t i = 0; i <= script->len; i++) {
        for (size_t j = i; j <= script->len; j += (script->len / 5) + 1) {
            size_t cuts[2] = {i, j};
            struct run r;
            run_script(script, cuts, 2, deflate, max_message, &r);
            if (!same(&r.log, &whole->log) || !same(&r.all, &whole->all) ||
                !same(&r.out, &whole->out) || r.flags != whole->flags)
                mismatches++;
            run_free(&r);
        }
    }
    CHECK_EQ(mismatches, 0);
}

static int last_close_code(const struct run *r)
{
    size_t off = 0;
    struct server_frame f;
    int code = -1;
    while (next_server_frame(&r->out, &off, &f))
        if (f.opcode == 8)
            code = f.len >= 2 ? (f.payload[0] << 8 | f.payload[1]) : 1005;
    return code;
}

static void test_receive(void)
{
    char text[600];
    chat_text(text, sizeof(text), 7);
    struct hub_buf s = {0};
    client_compressed(&s, 1, text, sizeof(text), 1);
    client_frame(&s, 1, 1, "plain", 5, 1);           /* uncompressed messages stay allowed */
    client_compressed(&s, 1, text, sizeof(text), 3); /* fragmented, RSV1 on the first */
    client_frame(&s, 1, 9, "p", 1, 1);
    client_compressed(&s, 2, text, 100, 1);
    struct run whole;
    check_splits(&s, 1, 64 * 1024, &whole);
    char expect[128];
    snprintf(expect, sizeof(expect), "T:600:%.8s|T:5:plain|T:600:%.8s|B:100|", text, text);
    hub_buf_append(&whole.log, "", 1);
    CHECK_STR(whole.log.data, expect);
    CHECK(whole.all.len == 1305 && memcmp(whole.all.data, text, 600) == 0 &&
          memcmp(whole.all.data + 605, text, 600) == 0);
    CHECK_EQ(last_close_code(&whole), -1);
    run_free(&whole);
    hub_buf_free(&s);
}

static void expect_close(const char *what, struct hub_buf *s, int deflate, size_t max, int code)
{
    struct run whole;
    check_splits(s, deflate, max, &whole);
    if (last_close_code(&whole) != code)
        fprintf(stderr, "case %s: close code %d, want %d\n", what, last_close_code(&whole), code);
    CHECK_EQ(last_close_code(&whole), code);
    CHECK(whole.flags & HUB_CONN_CLOSE_AFTER_FLUSH);
    CHECK_EQ(whole.log.len, 0);
    run_free(&whole);
    hub_buf_free(s);
}

static void test_receive_errors(void)
{
    struct hub_buf s = {0};
    char text[300];
    chat_text(text, sizeof(text), 3);
    /* RSV1 without the extension (RFC 6455 5.2). */
    client_compressed(&s, 1, text, sizeof(text), 1);
    expect_close("RSV1 without deflate", &s, 0, 65536, 1002);
    /* RSV1 on a continuation frame (RFC 7692 6.1). */
    client_frame(&s, 0, 1, "ab", 2, 1);
    client_frame_rsv(&s, 1, 4, 0, "cd", 2);
    expect_close("RSV1 on a continuation", &s, 1, 65536, 1002);
    /* RSV1 on control frames. */
    client_frame_rsv(&s, 1, 4, 9, "", 0);
    expect_close("RSV1 on a ping", &s, 1, 65536, 1002);
    client_frame_rsv(&s, 1, 4, 8, "\x03\xe8", 2);
    expect_close("RSV1 on a close", &s, 1, 65536, 1002);
    /* RSV2 and RSV3 stay reserved. */
    client_frame_rsv(&s, 1, 2, 1, "x", 1);
    expect_close("RSV2", &s, 1, 65536, 1002);
    /* A zip bomb: 1 MiB of zeros in about a kilobyte, with a 64 KiB limit. */
    char *zeros = calloc(1, 1 << 20);
    struct hub_buf z = {0};
    hub_deflate_compress(zeros, 1 << 20, 15, &z);
    CHECK(z.len <= 1100);
    client_frame_rsv(&s, 1, 4, 2, z.data, z.len);
    free(zeros);
    hub_buf_free(&z);
    {
        struct run r;
        run_script(&s, NULL, 0, 1, 64 * 1024, &r);
        CHECK_EQ(last_close_code(&r), 1009);
        CHECK_EQ(r.log.len, 0);
        run_free(&r);
        hub_buf_free(&s);
    }
    /* Exactly max_message inflated passes; one byte more is 1009. */
    client_compressed(&s, 1, text, sizeof(text), 1);
    {
        struct run r;
        run_script(&s, NULL, 0, 1, sizeof(text), &r);
        CHECK_EQ(last_close_code(&r), -1);
        CHECK_EQ(r.all.len, sizeof(text));
        run_free(&r);
        run_script(&s, NULL, 0, 1, sizeof(text) - 1, &r);
        CHECK_EQ(last_close_code(&r), 1009);
        run_free(&r);
    }
    expect_close("inflates past max_message", &s, 1, sizeof(text) - 1, 1009);
    /* Corrupt DEFLATE data. */
    client_frame_rsv(&s, 1, 4, 1, "\x07\xff\xff\xff", 4);
    expect_close("corrupt deflate", &s, 1, 65536, 1007);
    /* Text that is not UTF-8 once inflated (wslay cannot check it). */
    client_compressed(&s, 1, "ok \xc3\x28 no", 9, 1);
    expect_close("bad utf-8 inside", &s, 1, 65536, 1007);
    /* Nothing after the failure is delivered. */
    client_frame_rsv(&s, 1, 4, 1, "\x07\xff", 2);
    client_frame(&s, 1, 1, "after", 5, 1);
    expect_close("corrupt then more", &s, 1, 65536, 1007);
}

/* Inflates a server frame's payload. */
static int inflate_frame(const struct server_frame *f, struct hub_buf *out)
{
    return hub_deflate_inflate(f->payload, f->len, 1 << 20, out);
}

static void test_send(void)
{
    struct hub_ws_config cfg;
    hub_ws_config_default(&cfg);
    struct hub_conn c[4];
    struct hub_ws *ws[4];
    struct rec r = {{0}, {0}};
    for (int i = 0; i < 4; i++) {
        hub_conn_init_detached(&c[i], 0);
        ws[i] = hub_ws_new(&c[i], &cfg, on_msg, &r);
    }
    hub_ws_set_deflate(ws[0], 15);
    hub_ws_set_deflate(ws[1], 15);
    hub_ws_set_deflate(ws[2], 8); /* the smallest window */
    /* ws[3] did not negotiate deflate. */
    char text[1024];
    chat_text(text, sizeof(text), 11);
    struct hub_shared *f = hub_ws_frame(HUB_WS_TEXT, text, sizeof(text));
    for (int i = 0; i < 4; i++)
        CHECK_EQ(hub_ws_send_frame(ws[i], f), 0);
    /* ws[0] and ws[1] queue the very same compressed chunk: one deflate. */
    struct hub_shared *z = c[0].out.count ? c[0].out.items[c[0].out.head].chunk : NULL;
    CHECK(z != NULL && z != f);
    CHECK(c[1].out.count == 1 && c[1].out.items[c[1].out.head].chunk == z);
    CHECK(hub_shared_find_alt(f, (uint16_t)(0x7700 | 15)) == z);
    /* A 256-byte window cannot hold this payload: sent as is. The peer
     * without the extension gets the original too. */
    CHECK(c[2].out.items[c[2].out.head].chunk == f);
    CHECK(c[3].out.items[c[3].out.head].chunk == f);
    struct hub_buf out = {0}, back = {0};
    drain_conn(&c[0], &out);
    size_t off = 0;
    struct server_frame sf;
    CHECK(next_server_frame(&out, &off, &sf) && sf.fin && sf.opcode == 1 && !sf.masked);
    CHECK((out.data[0] & 0x70) == 0x40); /* RSV1 */
    CHECK(sf.len <= sizeof(text) / 2);
    CHECK_EQ(inflate_frame(&sf, &back), 0);
    CHECK(back.len == sizeof(text) && memcmp(back.data, text, sizeof(text)) == 0);
    hub_shared_unref(f);
    /* The compressed form outlives the frame while it is queued. */
    drain_conn(&c[1], &out);
    /* A payload that fits a 256-byte window shares the 15-bit form. */
    f = hub_ws_frame(HUB_WS_TEXT, text, 200);
    CHECK_EQ(hub_ws_send_frame(ws[0], f), 0);
    CHECK_EQ(hub_ws_send_frame(ws[2], f), 0);
    CHECK(c[2].out.items[(c[2].out.head + 1) & (c[2].out.cap - 1)].chunk ==
          c[0].out.items[c[0].out.head].chunk);
    hub_shared_unref(f);
    /* Below deflate_min: uncompressed. */
    f = hub_ws_frame(HUB_WS_TEXT, text, cfg.deflate_min - 1);
    CHECK_EQ(hub_ws_send_frame(ws[0], f), 0);
    CHECK(c[0].out.items[(c[0].out.head + 1) & (c[0].out.cap - 1)].chunk == f);
    CHECK(f->alt == NULL);
    hub_shared_unref(f);
    /* Incompressible bytes go out as they are, and that is remembered. */
    char noise[512];
    unsigned seed = 5;
    for (size_t i = 0; i < sizeof(noise); i++) {
        seed = seed * 1103515245u + 12345u;
        noise[i] = (char)(seed >> 16);
    }
    f = hub_ws_frame(HUB_WS_BINARY, noise, sizeof(noise));
    CHECK_EQ(hub_ws_send_frame(ws[0], f), 0);
    CHECK_EQ(hub_ws_send_frame(ws[1], f), 0);
    CHECK(f->alt != NULL && f->alt->len == 0);
    hub_shared_unref(f);
    out.len = 0;
    drain_conn(&c[0], &out);
    off = 0;
    CHECK(next_server_frame(&out, &off, &sf) && (out.data[0] & 0x40)); /* the 200 bytes */
    CHECK_EQ(inflate_frame(&sf, &back), 0);
    CHECK(back.len == 200 && memcmp(back.data, text, 200) == 0);
    size_t at = off;
    CHECK(next_server_frame(&out, &off, &sf) && !(out.data[at] & 0x40) && sf.len == 127);
    at = off;
    CHECK(next_server_frame(&out, &off, &sf) && !(out.data[at] & 0x40) && sf.len == 512);
    /* Control frames are never compressed. */
    CHECK_EQ(hub_ws_ping(ws[0]), 0);
    CHECK_EQ(hub_ws_close(ws[0], 1000, "bye, and a long enough reason to be over the minimum"), 0);
    out.len = 0;
    drain_conn(&c[0], &out);
    CHECK(out.len >= 2 && (out.data[0] & 0x70) == 0 && (out.data[2] & 0x70) == 0);
    hub_buf_free(&out);
    hub_buf_free(&back);
    for (int i = 0; i < 4; i++) {
        hub_ws_free(ws[i]);
        hub_outq_free(&c[i].out);
    }
    hub_buf_free(&r.log);
    hub_buf_free(&r.all);
}

/* A peer that asked for a smaller window gets a form made with it when the
 * payload is longer than the window; each window's form is made once. */
static void test_send_window(void)
{
    struct hub_ws_config cfg;
    hub_ws_config_default(&cfg);
    struct hub_conn c[2];
    struct hub_ws *ws[2];
    struct rec r = {{0}, {0}};
    for (int i = 0; i < 2; i++) {
        hub_conn_init_detached(&c[i], 0);
        ws[i] = hub_ws_new(&c[i], &cfg, on_msg, &r);
        hub_ws_set_deflate(ws[i], i == 0 ? 15 : 10);
    }
    char text[4000];
    chat_text(text, sizeof(text), 13);
    struct hub_shared *f = hub_ws_frame(HUB_WS_TEXT, text, sizeof(text));
    CHECK_EQ(hub_ws_send_frame(ws[0], f), 0);
    CHECK_EQ(hub_ws_send_frame(ws[1], f), 0);
    CHECK_EQ(hub_ws_send_frame(ws[1], f), 0);
    struct hub_shared *z15 = hub_shared_find_alt(f, (uint16_t)(0x7700 | 15));
    struct hub_shared *z10 = hub_shared_find_alt(f, (uint16_t)(0x7700 | 10));
    CHECK(z15 != NULL && z10 != NULL && z15 != z10);
    CHECK(c[1].out.items[0].chunk == z10 && c[1].out.items[1].chunk == z10);
    hub_shared_unref(f);
    struct hub_buf out = {0}, back = {0};
    drain_conn(&c[1], &out);
    size_t off = 0;
    struct server_frame sf;
    CHECK(next_server_frame(&out, &off, &sf) && (out.data[0] & 0x40));
    CHECK_EQ(inflate_frame(&sf, &back), 0);
    CHECK(back.len == sizeof(text) && memcmp(back.data, text, sizeof(text)) == 0);
    hub_buf_free(&out);
    hub_buf_free(&back);
    for (int i = 0; i < 2; i++) {
        hub_ws_free(ws[i]);
        hub_outq_free(&c[i].out);
    }
}

int main(void)
{
    if (!hub_deflate_available()) {
        printf("no zlib in this build: skipped\n");
        return 77;
    }
    test_negotiation();
    test_zlib_calls();
    test_receive();
    test_receive_errors();
    test_send();
    test_send_window();
    hub_deflate_release();
    return CHECK_DONE();
}
