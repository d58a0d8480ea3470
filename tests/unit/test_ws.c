/*
 * test_ws.c: the WebSocket layer sans-I/O. Scripted client bytes are fed to
 * a hub_ws on a detached connection split at every offset, and the messages
 * delivered and the frames queued must not depend on the split.
 */
#include "check.h"
#include "hub/conn.h"
#include "hub/ws.h"
#include "ws_script.h"

#include <stdlib.h>

struct rec {
    struct hub_buf log; /* "T:<text>|" or "B:<len>|" per message */
    struct hub_ws *ws;  /* for the echo tests */
    int echo;           /* send every message back */
};

static void on_msg(struct hub_ws *ws, int opcode, const char *data, size_t len, void *user)
{
    struct rec *r = user;
    if (opcode == HUB_WS_TEXT) {
        hub_buf_puts(&r->log, "T:");
        hub_buf_append(&r->log, data, len);
    } else {
        hub_buf_printf(&r->log, "B:%zu", len);
    }
    hub_buf_puts(&r->log, "|");
    if (r->echo)
        hub_ws_send(ws, opcode, data, len);
}

struct run {
    struct hub_buf log; /* messages delivered */
    struct hub_buf out; /* bytes queued to the peer */
    unsigned flags;     /* conn flags at the end */
};

/* Feeds script in pieces cut at the given offsets (ascending, <= len). */
static void run_script(const struct hub_buf *script, const size_t *cuts, int ncuts, int echo,
                       struct run *res)
{
    struct hub_conn c;
    hub_conn_init_detached(&c, 0);
    struct hub_ws_config cfg;
    hub_ws_config_default(&cfg);
    struct rec r = {{0}, NULL, echo};
    struct hub_ws *ws = hub_ws_new(&c, &cfg, on_msg, &r);
    size_t at = 0;
    for (int i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : script->len;
        if (hub_ws_feed(ws, script->data + at, end - at) != 0)
            break;
        at = end;
    }
    res->log = r.log;
    hub_buf_init(&res->out);
    drain_conn(&c, &res->out);
    res->flags = c.flags;
    hub_ws_free(ws);
    hub_outq_free(&c.out);
}

static void run_free(struct run *r)
{
    hub_buf_free(&r->log);
    hub_buf_free(&r->out);
}

/* Runs the script whole, then split at every offset into two and into three
 * pieces around it, and checks every run matches the whole one. */
static void check_splits(const struct hub_buf *script, int echo, struct run *whole)
{
    run_script(script, NULL, 0, echo, whole);
    int mismatches = 0;
    for (size_t i = 0; i <= script->len; i++) {
        for (size_t j = i; j <= script->len; j += (script->len / 7) + 1) {
            size_t cuts[2] = {i, j};
            struct run r;
            run_script(script, cuts, 2, echo, &r);
            if (r.log.len != whole->log.len ||
                (r.log.len && memcmp(r.log.data, whole->log.data, r.log.len)) ||
                r.out.len != whole->out.len ||
                (r.out.len && memcmp(r.out.data, whole->out.data, r.out.len)) ||
                r.flags != whole->flags)
                mismatches++;
            run_free(&r);
        }
    }
    CHECK_EQ(mismatches, 0);
}

static int log_is(const struct run *r, const char *expect)
{
    return r->log.len == strlen(expect) &&
           (r->log.len == 0 || memcmp(r->log.data, expect, r->log.len) == 0);
}

/* Returns the close code of the last frame queued to the peer, or -1. */
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

static void test_messages_and_echo(void)
{
    struct hub_buf s = {0};
    client_frame(&s, 1, 1, "hello", 5, 1);
    client_frame(&s, 0, 1, "frag", 4, 1);   /* fragmented text ... */
    client_frame(&s, 1, 9, "pp", 2, 1);     /* ... with a ping in between ... */
    client_frame(&s, 1, 0, "mented", 6, 1); /* ... completed */
    char bin[300];
    for (size_t i = 0; i < sizeof(bin); i++)
        bin[i] = (char)i;
    client_frame(&s, 1, 2, bin, sizeof(bin), 1);
    client_frame(&s, 1, 1, "", 0, 1);
    struct run whole;
    check_splits(&s, 1, &whole);
    CHECK(log_is(&whole, "T:hello|T:fragmented|B:300|T:|"));
    /* The pong went ahead of the queued echoes (nothing had started going
     * out on a detached conn); the echoes follow in order, unmasked. */
    size_t off = 0;
    struct server_frame f;
    CHECK(next_server_frame(&whole.out, &off, &f) && f.opcode == 10 && f.len == 2);
    CHECK(next_server_frame(&whole.out, &off, &f) && f.opcode == 1 && f.len == 5 && !f.masked);
    CHECK(next_server_frame(&whole.out, &off, &f) && f.opcode == 1 && f.len == 10 &&
          memcmp(f.payload, "fragmented", 10) == 0);
    CHECK(next_server_frame(&whole.out, &off, &f) && f.opcode == 2 && f.len == 300 &&
          memcmp(f.payload, bin, 300) == 0);
    CHECK(next_server_frame(&whole.out, &off, &f) && f.opcode == 1 && f.len == 0);
    CHECK(!hub_conn_closing(&(struct hub_conn){.flags = whole.flags}));
    run_free(&whole);
    hub_buf_free(&s);
}

static void test_close_handshake(void)
{
    struct hub_buf s = {0};
    client_frame(&s, 1, 1, "bye", 3, 1);
    client_frame(&s, 1, 8, "\x03\xe8ok", 4, 1);
    client_frame(&s, 1, 1, "after close", 11, 1);
    struct run whole;
    check_splits(&s, 0, &whole);
    CHECK(log_is(&whole, "T:bye|"));
    CHECK_EQ(last_close_code(&whole), 1000);
    CHECK(whole.flags & HUB_CONN_CLOSE_AFTER_FLUSH);
    run_free(&whole);
    hub_buf_free(&s);
}

static void expect_close(const char *what, struct hub_buf *s, int code)
{
    struct run whole;
    check_splits(s, 0, &whole);
    if (last_close_code(&whole) != code)
        fprintf(stderr, "case %s: close code %d, want %d\n", what, last_close_code(&whole), code);
    CHECK_EQ(last_close_code(&whole), code);
    CHECK(whole.flags & HUB_CONN_CLOSE_AFTER_FLUSH);
    run_free(&whole);
    hub_buf_free(s);
}

static void test_protocol_errors(void)
{
    struct hub_buf s = {0};
    client_frame(&s, 1, 1, "unmasked", 8, 0);
    expect_close("unmasked", &s, 1002);

    client_frame(&s, 1, 1, "\xc3\x28", 2, 1);
    expect_close("bad utf-8", &s, 1007);

    client_frame(&s, 0, 1, "\xe2\x82", 2, 1); /* a euro sign split across fragments is fine */
    client_frame(&s, 1, 0, "\xac", 1, 1);
    client_frame(&s, 1, 1, "\xed\xa0\x80", 3, 1); /* a UTF-16 surrogate is not */
    expect_close("surrogate", &s, 1007);

    client_frame(&s, 1, 3, "x", 1, 1);
    expect_close("reserved opcode", &s, 1002);

    char big[126];
    memset(big, 'p', sizeof(big));
    client_frame(&s, 1, 9, big, sizeof(big), 1);
    expect_close("ping over 125", &s, 1002);

    client_frame(&s, 0, 9, "x", 1, 1);
    expect_close("fragmented ping", &s, 1002);

    client_frame(&s, 1, 0, "x", 1, 1);
    expect_close("continuation without start", &s, 1002);

    client_frame(&s, 1, 8, "\x03", 1, 1);
    expect_close("1-byte close payload", &s, 1002);

    client_frame(&s, 1, 8, "\x03\xed", 2, 1); /* 1005 may not be sent */
    expect_close("close code 1005", &s, 1002);

    client_frame(&s, 1, 8, "\x03\xe8\xff", 3, 1);
    expect_close("invalid utf-8 in close reason", &s, 1007);
}

static void test_too_big(void)
{
    size_t n = 64 * 1024 + 1;
    char *big = calloc(1, n);
    struct hub_buf s = {0};
    client_frame(&s, 1, 2, big, n, 1);
    struct run whole;
    run_script(&s, NULL, 0, 0, &whole);
    CHECK(log_is(&whole, ""));
    CHECK_EQ(last_close_code(&whole), 1009);
    run_free(&whole);
    hub_buf_free(&s);

    /* Exactly the limit passes, also when it arrives in fragments. */
    client_frame(&s, 0, 2, big, n - 1 - 1000, 1);
    client_frame(&s, 1, 0, big, 1000, 1);
    run_script(&s, NULL, 0, 0, &whole);
    CHECK(log_is(&whole, "B:65536|"));
    run_free(&whole);
    hub_buf_free(&s);
    free(big);
}

static void test_frames_and_close(void)
{
    /* Header sizes at the 125/126/65535/65536 boundaries. */
    size_t sizes[] = {0, 125, 126, 65535, 65536};
    for (size_t i = 0; i < HUB_ARRAY_SIZE(sizes); i++) {
        char *payload;
        struct hub_shared *f = hub_ws_frame_alloc(HUB_WS_BINARY, sizes[i], &payload);
        memset(payload, 'z', sizes[i]);
        struct hub_buf b = {0};
        hub_buf_append(&b, f->data, f->len);
        size_t off = 0;
        struct server_frame sf;
        CHECK(next_server_frame(&b, &off, &sf) && sf.len == sizes[i] && sf.fin && off == b.len);
        CHECK_EQ(f->len - sizes[i], sizes[i] < 126 ? 2 : sizes[i] <= 65535 ? 4 : 10);
        hub_buf_free(&b);
        hub_shared_unref(f);
    }

    /* Our close: nothing is sent after it, and the peer's answer ends it. */
    struct hub_conn c;
    hub_conn_init_detached(&c, 0);
    struct hub_ws_config cfg;
    hub_ws_config_default(&cfg);
    struct rec r = {{0}, NULL, 0};
    struct hub_ws *ws = hub_ws_new(&c, &cfg, on_msg, &r);
    CHECK_EQ(hub_ws_close(ws, 1001, "server shutting down"), 0);
    CHECK_EQ(hub_ws_close(ws, 1001, "again"), HUB_ECLOSED);
    CHECK_EQ(hub_ws_send(ws, HUB_WS_TEXT, "late", 4), HUB_ECLOSED);
    CHECK(!hub_conn_closing(&c));
    struct hub_buf in = {0};
    client_frame(&in, 1, 1, "ignored", 7, 1);
    client_frame(&in, 1, 8, "\x03\xe9", 2, 1);
    hub_ws_feed(ws, in.data, in.len);
    CHECK_EQ(r.log.len, 0);
    CHECK(c.flags & HUB_CONN_CLOSE_AFTER_FLUSH);
    CHECK_EQ(hub_ws_close_code_received(ws), 1001);
    struct hub_buf out = {0};
    drain_conn(&c, &out);
    size_t off = 0;
    struct server_frame sf;
    CHECK(next_server_frame(&out, &off, &sf) && sf.opcode == 8 && sf.len == 22 &&
          memcmp(sf.payload + 2, "server shutting down", 20) == 0);
    CHECK(!next_server_frame(&out, &off, &sf));
    hub_buf_free(&out);
    hub_buf_free(&in);
    hub_buf_free(&r.log);
    hub_ws_free(ws);
    hub_outq_free(&c.out);

    /* A full output queue: the backlog is dropped and 4008 goes out. */
    hub_conn_init_detached(&c, 100);
    ws = hub_ws_new(&c, &cfg, on_msg, &r);
    char chunk[60] = {0};
    CHECK_EQ(hub_ws_send(ws, HUB_WS_BINARY, chunk, sizeof(chunk)), 0);
    CHECK_EQ(hub_ws_send(ws, HUB_WS_BINARY, chunk, sizeof(chunk)), HUB_ENOBUFS);
    CHECK(hub_ws_close_sent(ws));
    CHECK_EQ(hub_ws_send(ws, HUB_WS_BINARY, chunk, 1), HUB_ECLOSED);
    drain_conn(&c, &out);
    off = 0;
    CHECK(next_server_frame(&out, &off, &sf) && sf.opcode == 8 && sf.len == 13 &&
          sf.payload[0] == 0x0f && sf.payload[1] == 0xa8 &&
          memcmp(sf.payload + 2, "slow client", 11) == 0);
    CHECK(!next_server_frame(&out, &off, &sf));
    hub_buf_free(&out);
    hub_ws_free(ws);
    hub_outq_free(&c.out);
}

static void test_fragment_limit(void)
{
    struct hub_buf s = {0};
    client_frame(&s, 0, 1, "a", 1, 1);
    for (int i = 0; i < 127; i++)
        client_frame(&s, 0, 0, "b", 1, 1);
    client_frame(&s, 1, 0, "c", 1, 1); /* the 129th frame of one message */
    struct run whole;
    run_script(&s, NULL, 0, 0, &whole);
    CHECK(log_is(&whole, ""));
    CHECK_EQ(last_close_code(&whole), 1008);
    run_free(&whole);
    hub_buf_free(&s);
    /* 128 frames are fine. */
    client_frame(&s, 0, 1, "a", 1, 1);
    for (int i = 0; i < 126; i++)
        client_frame(&s, 0, 0, "b", 1, 1);
    client_frame(&s, 1, 0, "c", 1, 1);
    run_script(&s, NULL, 0, 0, &whole);
    CHECK_EQ(whole.log.len, 2 + 128 + 1);
    CHECK_EQ(last_close_code(&whole), -1);
    run_free(&whole);
    hub_buf_free(&s);
}

/* A ping flood answered by the latest pong only (RFC 6455 5.5.3): once
 * HUB_CONN_LATEST_KEEP pongs wait in the queue, the answer to a newer ping
 * replaces the newest, so the queue holds sixteen pongs however many pings
 * came, whatever the split. */
static void test_ping_flood_one_pong(void)
{
    struct hub_buf s = {0};
    char pl[8];
    for (int i = 0; i < 40; i++) {
        snprintf(pl, sizeof(pl), "p%02d", i);
        client_frame(&s, 1, 9, pl, 3, 1);
        if (i == 0)
            client_frame(&s, 1, 1, "hi", 2, 1);
    }
    client_frame(&s, 1, 9, "last", 4, 1);
    struct run whole;
    check_splits(&s, 1, &whole);
    CHECK(log_is(&whole, "T:hi|"));
    /* The answers to the first pings, then the latest one only, all ahead
     * of the echo. */
    size_t off = 0;
    struct server_frame f;
    for (int i = 0; i < 15; i++) {
        snprintf(pl, sizeof(pl), "p%02d", i);
        CHECK(next_server_frame(&whole.out, &off, &f) && f.opcode == 10 && f.len == 3 &&
              memcmp(f.payload, pl, 3) == 0);
    }
    CHECK(next_server_frame(&whole.out, &off, &f) && f.opcode == 10 && f.len == 4 &&
          memcmp(f.payload, "last", 4) == 0);
    CHECK(next_server_frame(&whole.out, &off, &f) && f.opcode == 1 && f.len == 2);
    CHECK(!next_server_frame(&whole.out, &off, &f));
    run_free(&whole);
    hub_buf_free(&s);
}

int main(void)
{
    test_messages_and_echo();
    test_ping_flood_one_pong();
    test_close_handshake();
    test_protocol_errors();
    test_too_big();
    test_frames_and_close();
    test_fragment_limit();
    return CHECK_DONE();
}
