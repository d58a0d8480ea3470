/*
 * test_buf.c: growable buffers, shared chunks and the output queue.
 */
#include "check.h"
#include "hub/buf.h"

static void test_buf(void)
{
    struct hub_buf b;
    hub_buf_init(&b);
    for (int i = 0; i < 1000; i++)
        CHECK_EQ(hub_buf_printf(&b, "%03d,", i), 0);
    CHECK_EQ(b.len, 4000);
    CHECK(memcmp(b.data, "000,001,", 8) == 0);
    hub_buf_consume(&b, 3996);
    CHECK_EQ(b.len, 4);
    CHECK(memcmp(b.data, "999,", 4) == 0);
    /* A formatted string longer than the stack buffer in hub_buf_printf. */
    char big[600];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    CHECK_EQ(hub_buf_printf(&b, "<%s>", big), 0);
    CHECK_EQ(b.len, 4 + 601);
    CHECK(b.data[4] == '<' && b.data[b.len - 1] == '>');
    hub_buf_free(&b);
    CHECK(b.data == NULL && b.len == 0);
}

static void test_outq(void)
{
    struct hub_outq q;
    hub_outq_init(&q, 100);
    struct hub_shared *s = hub_shared_copy("0123456789", 10);
    /* The same chunk queued many times: one allocation, many references. */
    for (int i = 0; i < 10; i++)
        CHECK_EQ(hub_outq_push(&q, s), 0);
    CHECK_EQ(s->refs, 11);
    CHECK_EQ(q.bytes, 100);
    CHECK_EQ(hub_outq_push(&q, s), HUB_ENOBUFS);
    CHECK_EQ(s->refs, 11);
    const char *bases[4];
    size_t lens[4];
    CHECK_EQ(hub_outq_peek(&q, bases, lens, 4), 4);
    CHECK(bases[0] == s->data && lens[0] == 10);
    hub_outq_consume(&q, 15);
    CHECK_EQ(q.bytes, 85);
    CHECK_EQ(s->refs, 10);
    CHECK_EQ(hub_outq_peek(&q, bases, lens, 4), 4);
    CHECK(bases[0] == s->data + 5 && lens[0] == 5);
    /* Wrap the ring around: consume and push alternately. */
    for (int i = 0; i < 50; i++) {
        hub_outq_consume(&q, 10);
        CHECK_EQ(hub_outq_push(&q, s), 0);
    }
    CHECK_EQ(q.bytes, 85);
    CHECK_EQ(hub_outq_push_copy(&q, "abcdefghijklmnop", 16), HUB_ENOBUFS);
    CHECK_EQ(hub_outq_push_copy(&q, "abcdefghijklmno", 15), 0);
    CHECK_EQ(q.bytes, 100);
    hub_outq_free(&q);
    CHECK_EQ(s->refs, 1);
    hub_shared_unref(s);

    static const char lit[] = "static bytes";
    struct hub_shared *st = hub_shared_static(lit, sizeof(lit) - 1);
    CHECK(st->data == lit && st->len == 12);
    hub_shared_unref(st);
}

static void test_tokens(void)
{
    struct hub_iov v = {"keep-alive, Upgrade", 19};
    CHECK(hub_iov_has_token(v, "upgrade"));
    CHECK(hub_iov_has_token(v, "KEEP-ALIVE"));
    CHECK(!hub_iov_has_token(v, "close"));
    struct hub_iov w = {" websocket ,x", 13};
    CHECK(hub_iov_has_token(w, "WebSocket"));
    struct hub_iov u = {"upgrade2", 8};
    CHECK(!hub_iov_has_token(u, "upgrade"));
    struct hub_iov e = {"", 0};
    CHECK(!hub_iov_has_token(e, "upgrade"));
}

int main(void)
{
    test_buf();
    test_outq();
    test_tokens();
    return CHECK_DONE();
}
