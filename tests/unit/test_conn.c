/*
 * test_conn.c: the connection layer on a real libuv loop.
 *
 * Each case connects a libuv TCP client (the "peer", which reads only when
 * the case says so) to a hub_conn accepted from a loopback listener, with
 * small socket buffers so that a few hundred KiB fill the path. The cases
 * check the order of bytes on the wire (urgent frames behind a partial
 * write, the latest pong replacing an unsent one), the soft-limit hold, the
 * timer wheel, read pause and resume at the watermarks, the flush before
 * the loop sleeps (output queued from timer and close callbacks leaves in
 * the same iteration, counted in loop iterations rather than time), the
 * rejection of connections that cannot be served, and the per-address limit
 * key. Every case ends by closing everything and checking that the loop
 * closes with no live handles.
 */
#include "check.h"
#include "hub/conn.h"
#include "hub/metrics.h"

#include <stdlib.h>
#include <string.h>

struct env {
    uv_loop_t loop;
    struct hub_io *io;
    uv_tcp_t listener;
    uv_tcp_t peer;            /* the client side */
    uv_connect_t creq;        /* its connect request */
    struct hub_conn conn;     /* the server side */
    uv_timer_t watchdog;      /* fails a case that hangs */
    int accepted;             /* conn was accepted */
    int connected;            /* the peer's connect completed */
    int conn_closed;          /* conn's on_close fired */
    int timed_out;            /* the watchdog fired */
    int reject;               /* connections are rejected with hub_io_reject */
    int rejected;             /* how many were */
    struct hub_buf rx;        /* bytes the peer read */
    int peer_eof;             /* the peer read the end of the stream */
    struct hub_buf conn_rx;   /* bytes conn's on_read got */
    int timeouts;             /* conn's on_timeout calls */
    struct hub_conn_ops ops;  /* conn's callbacks and policy */
    uint64_t timeout_at;      /* loop time of the last one */
    uint64_t checks;          /* iterations seen by the test's check handle */
    uint64_t checks_at_queue; /* checks when the output was queued */
    uint64_t checks_at_rx;    /* checks when the peer read it */
    uv_check_t counter;       /* counts loop iterations */
};

static struct env E;

static void on_conn_read(struct hub_conn *c, const char *data, size_t len)
{
    (void)c;
    hub_buf_append(&E.conn_rx, data, len);
}

static void on_conn_close(struct hub_conn *c)
{
    (void)c;
    E.conn_closed = 1;
}

static void on_conn_timeout(struct hub_conn *c)
{
    E.timeouts++;
    E.timeout_at = hub_conn_now(c);
}

static void on_listen(uv_stream_t *l, int status)
{
    CHECK_EQ(status, 0);
    if (E.reject) {
        CHECK_EQ(hub_io_reject(E.io, l), 0);
        E.rejected++;
        return;
    }
    CHECK_EQ(hub_conn_init(&E.conn, E.io, 1 << 20), 0);
    E.ops.on_read = on_conn_read;
    E.ops.on_close = on_conn_close;
    E.ops.on_timeout = on_conn_timeout;
    hub_conn_ops_policy(&E.ops, 1 << 20);
    E.conn.ops = &E.ops;
    /* Small kernel buffers: a few hundred KiB fill the path. */
    int sz = 32768;
    CHECK_EQ(hub_conn_accept(&E.conn, l), 0);
    uv_send_buffer_size((uv_handle_t *)&E.conn.tcp, &sz);
    E.accepted = 1;
}

static void on_connect(uv_connect_t *req, int status)
{
    (void)req;
    CHECK_EQ(status, 0);
    E.connected = 1;
}

static void on_watchdog(uv_timer_t *t)
{
    (void)t;
    E.timed_out = 1;
    fprintf(stderr, "watchdog: the case did not finish in time\n");
}

static void on_counter(uv_check_t *h)
{
    (void)h;
    E.checks++;
}

/* Runs the loop until *flag is set (or the watchdog fires). */
static void run_until(const int *flag)
{
    while (!*flag && !E.timed_out)
        uv_run(&E.loop, UV_RUN_ONCE);
    CHECK(*flag);
}

static struct sockaddr_in listen_addr(void)
{
    struct sockaddr_in a;
    int len = sizeof(a);
    uv_tcp_getsockname(&E.listener, (struct sockaddr *)&a, &len);
    return a;
}

static void peer_connect(void)
{
    struct sockaddr_in a = listen_addr();
    CHECK_EQ(uv_tcp_init(&E.loop, &E.peer), 0);
    int sz = 32768;
    CHECK_EQ(uv_tcp_connect(&E.creq, &E.peer, (const struct sockaddr *)&a, on_connect), 0);
    run_until(&E.connected);
    uv_recv_buffer_size((uv_handle_t *)&E.peer, &sz);
}

/* Sets up the loop, the io, the listener and (unless rejecting) one
 * accepted connection with its peer. */
static void setup(int reject)
{
    memset(&E, 0, sizeof(E));
    E.reject = reject;
    CHECK_EQ(uv_loop_init(&E.loop), 0);
    CHECK_EQ(hub_io_init(&E.io, &E.loop), 0);
    CHECK_EQ(uv_timer_init(&E.loop, &E.watchdog), 0);
    uv_timer_start(&E.watchdog, on_watchdog, 10000, 0);
    uv_unref((uv_handle_t *)&E.watchdog);
    CHECK_EQ(uv_check_init(&E.loop, &E.counter), 0);
    uv_check_start(&E.counter, on_counter);
    uv_unref((uv_handle_t *)&E.counter);
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    CHECK_EQ(uv_tcp_init(&E.loop, &E.listener), 0);
    CHECK_EQ(uv_tcp_bind(&E.listener, (const struct sockaddr *)&a, 0), 0);
    CHECK_EQ(uv_listen((uv_stream_t *)&E.listener, 16, on_listen), 0);
    if (reject)
        return;
    peer_connect();
    run_until(&E.accepted);
}

static void peer_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    static char b[65536];
    (void)suggested;
    *buf = uv_buf_init(b, sizeof(b));
}

static void peer_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    (void)s;
    if (n > 0) {
        if (E.rx.len == 0)
            E.checks_at_rx = E.checks;
        hub_buf_append(&E.rx, buf->base, (size_t)n);
    } else if (n < 0) {
        E.peer_eof = 1;
        uv_read_stop(s);
    }
}

static void peer_start_reading(void)
{
    CHECK_EQ(uv_read_start((uv_stream_t *)&E.peer, peer_alloc, peer_read), 0);
}

/* Runs until the peer has read n bytes. */
static void peer_read_upto(size_t n)
{
    while (E.rx.len < n && !E.timed_out && !E.peer_eof)
        uv_run(&E.loop, UV_RUN_ONCE);
    CHECK(E.rx.len >= n);
}

static void nop_close(uv_handle_t *h)
{
    (void)h;
}

/* Closes everything and checks that the loop ends with no live handles. */
static void teardown(void)
{
    if (!E.reject && !E.conn_closed) {
        hub_conn_close(&E.conn);
        run_until(&E.conn_closed);
    }
    if (!uv_is_closing((uv_handle_t *)&E.peer) && E.peer.loop == &E.loop)
        uv_close((uv_handle_t *)&E.peer, nop_close);
    uv_close((uv_handle_t *)&E.listener, nop_close);
    uv_close((uv_handle_t *)&E.watchdog, nop_close);
    uv_close((uv_handle_t *)&E.counter, nop_close);
    hub_io_close(E.io);
    uv_run(&E.loop, UV_RUN_DEFAULT);
    CHECK_EQ(uv_loop_close(&E.loop), 0);
    CHECK_EQ(hub_metrics.output_queued, 0);
    hub_buf_free(&E.rx);
    hub_buf_free(&E.conn_rx);
}

static struct hub_shared *filled(size_t len, char c)
{
    struct hub_shared *s = hub_shared_new(len);
    memset(s->data, c, len);
    return s;
}

/* Bytes the peer read, as runs of "<char>x<count>" for comparison. */
static void runs(const struct hub_buf *b, char *out, size_t outsz)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < b->len;) {
        size_t j = i;
        while (j < b->len && b->data[j] == b->data[i])
            j++;
        int n = snprintf(out + o, outsz - o, "%s%cx%zu", o ? " " : "", b->data[i], j - i);
        if (n < 0 || (size_t)n >= outsz - o)
            break;
        o += (size_t)n;
        i = j;
    }
}

/* A chunk is queued and partly written; the rest is in one uv_write. A
 * second chunk waits behind it. Urgent frames go between the two, in the
 * order queued; the answer to the latest ping replaces an unsent one. */
static void test_urgent_behind_partial_write(void)
{
    setup(0);
    struct hub_shared *a = filled(512 * 1024, 'A'), *b = filled(1000, 'B');
    CHECK_EQ(hub_conn_send(&E.conn, a), 0);
    /* Flush it now (the check handle would do it after the next poll). */
    uv_run(&E.loop, UV_RUN_NOWAIT);
    CHECK(E.conn.flags & HUB_CONN_WRITING);
    CHECK(E.conn.inflight > 0);
    CHECK_EQ(hub_conn_send(&E.conn, b), 0);
    CHECK_EQ(hub_conn_write_urgent(&E.conn, "P", 1), 0);
    /* Twenty pongs: the first HUB_CONN_LATEST_KEEP wait, and every newer
     * one replaces the newest of them. */
    for (int i = 0; i < 20; i++)
        CHECK_EQ(hub_conn_write_urgent_latest(&E.conn, &"abcdefghijklmnopqrst"[i], 1), 0);
    CHECK_EQ(hub_conn_write_urgent(&E.conn, "Q", 1), 0);
    CHECK_EQ(hub_conn_write_urgent_latest(&E.conn, "z", 1), 0); /* replaces t */
    /* Left: the rest of A in flight, B, P, sixteen pongs and Q. */
    CHECK_EQ(E.conn.out.bytes, E.conn.inflight + 1000 + 1 + HUB_CONN_LATEST_KEEP + 1);
    CHECK_EQ(hub_metrics.output_queued, E.conn.out.bytes);
    peer_start_reading();
    peer_read_upto(512 * 1024 + 1000 + 2 + HUB_CONN_LATEST_KEEP);
    char got[256];
    runs(&E.rx, got, sizeof(got));
    CHECK_STR(got, "Ax524288 Px1 ax1 bx1 cx1 dx1 ex1 fx1 gx1 hx1 ix1 jx1 kx1 lx1 mx1 nx1 ox1 zx1 "
                   "Qx1 Bx1000");
    CHECK_EQ(E.conn.out.bytes, 0);
    CHECK_EQ(hub_metrics.output_queued, 0);
    hub_shared_unref(a);
    hub_shared_unref(b);
    teardown();
}

/* Urgent frames count against the hard limit with a small allowance. */
static void test_urgent_allowance(void)
{
    setup(0);
    struct hub_shared *a = filled((1 << 20) - 10, 'A');
    CHECK_EQ(hub_conn_send(&E.conn, a), 0);
    CHECK_EQ(hub_conn_send(&E.conn, a), HUB_ENOBUFS); /* the hard limit */
    size_t room = (1 << 20) + HUB_CONN_URGENT_ALLOWANCE - E.conn.out.bytes;
    char frame[2048];
    memset(frame, 'u', sizeof(frame));
    CHECK_EQ(hub_conn_write_urgent(&E.conn, frame, room), 0);
    CHECK_EQ(hub_conn_write_urgent(&E.conn, frame, 1), HUB_ENOBUFS);
    /* A first pong is no exception. */
    CHECK_EQ(hub_conn_write_urgent_latest(&E.conn, frame, 1), HUB_ENOBUFS);
    /* The frame that ends the connection goes past everything. */
    CHECK_EQ(hub_conn_write_force(&E.conn, frame, 10), 0);
    hub_shared_unref(a);
    teardown();
}

static void on_hold_timer(uv_timer_t *t)
{
    int *fired = t->data;
    *fired = 1;
}

/* Over the soft limit, sends keep working for the hold time and fail after
 * it; draining below the limit resets the clock. */
static void test_soft_limit_hold(void)
{
    setup(0);
    E.ops.high_water = E.ops.low_water = 0;
    E.ops.soft_limit = 64 * 1024;
    E.ops.soft_hold_ms = 200;
    struct hub_shared *a = filled(512 * 1024, 'A');
    CHECK_EQ(hub_conn_send(&E.conn, a), 0);
    uv_run(&E.loop, UV_RUN_NOWAIT); /* flushes; most of it stays queued */
    CHECK(E.conn.out.bytes > 64 * 1024);
    CHECK(E.conn.over_soft_since != 0);
    struct hub_shared *b = filled(10, 'B');
    CHECK_EQ(hub_conn_send(&E.conn, b), 0); /* within the hold */
    uv_timer_t t;
    int fired = 0;
    uv_timer_init(&E.loop, &t);
    t.data = &fired;
    uv_timer_start(&t, on_hold_timer, 250, 0);
    run_until(&fired);
    CHECK((uint32_t)hub_conn_now(&E.conn) + 1 - E.conn.over_soft_since >= 200);
    CHECK_EQ(hub_conn_send(&E.conn, b), HUB_ENOBUFS); /* held too long */
    /* The peer reads it all: below the limit, the clock is reset. */
    peer_start_reading();
    peer_read_upto(512 * 1024 + 10);
    CHECK_EQ(E.conn.over_soft_since, 0);
    CHECK_EQ(hub_conn_send(&E.conn, b), 0);
    uv_close((uv_handle_t *)&t, nop_close);
    hub_shared_unref(a);
    hub_shared_unref(b);
    teardown();
}

/* A deadline fires once, not before it is due; a cancelled one never. */
static void test_wheel_expiry(void)
{
    setup(0);
    uint64_t start = hub_conn_now(&E.conn);
    hub_conn_set_timeout(&E.conn, 300);
    CHECK_EQ(E.conn.due, (uint32_t)(start + 300));
    CHECK(E.conn.wheel.next != &E.conn.wheel);
    while (E.timeouts == 0 && !E.timed_out)
        uv_run(&E.loop, UV_RUN_ONCE);
    CHECK_EQ(E.timeouts, 1);
    CHECK(E.timeout_at >= start + 300);
    CHECK(E.conn.wheel.next == &E.conn.wheel); /* unlinked */
    /* A cancelled deadline: run past it and see nothing. */
    hub_conn_set_timeout(&E.conn, 100);
    hub_conn_set_timeout(&E.conn, 0);
    uv_timer_t t;
    int fired = 0;
    uv_timer_init(&E.loop, &t);
    t.data = &fired;
    uv_timer_start(&t, on_hold_timer, 1100, 0);
    run_until(&fired);
    CHECK_EQ(E.timeouts, 1);
    /* Rescheduling from the callback's point of view: a new deadline fires. */
    hub_conn_set_timeout(&E.conn, 1);
    while (E.timeouts == 1 && !E.timed_out)
        uv_run(&E.loop, UV_RUN_ONCE);
    CHECK_EQ(E.timeouts, 2);
    uv_close((uv_handle_t *)&t, nop_close);
    teardown();
}

/* Past the high watermark reading stops; the peer's bytes wait in the
 * kernel. Once the queue drains to the low watermark reading resumes and
 * they arrive. The owner's pause holds reading independently. */
#ifndef _WIN32 /* see main() */
static void test_read_watermarks(void)
{
    setup(0);
    E.ops.high_water = 64 * 1024;
    E.ops.low_water = 16 * 1024;
    uint64_t pauses = hub_metrics.read_pauses;
    struct hub_shared *a = filled(32 * 1024, 'A'), *big = filled(512 * 1024, 'B');
    CHECK_EQ(hub_conn_send(&E.conn, a), 0);
    CHECK(!hub_conn_reading_paused(&E.conn));
    CHECK_EQ(hub_conn_send(&E.conn, a), 0);
    CHECK_EQ(hub_conn_send(&E.conn, big), 0); /* 576 KiB > 64 KiB */
    CHECK(hub_conn_reading_paused(&E.conn));
    CHECK_EQ(hub_metrics.read_pauses, pauses + 1);
    /* The peer writes; nothing reaches on_read while paused. */
    uv_buf_t hello = uv_buf_init("hello", 5);
    CHECK_EQ(uv_try_write((uv_stream_t *)&E.peer, &hello, 1), 5);
    for (int i = 0; i < 5; i++)
        uv_run(&E.loop, UV_RUN_NOWAIT);
    CHECK_EQ(E.conn_rx.len, 0);
    CHECK(hub_conn_reading_paused(&E.conn));
    /* The peer reads: the queue drains, reading resumes, hello arrives. */
    peer_start_reading();
    peer_read_upto(576 * 1024);
    while (E.conn_rx.len < 5 && !E.timed_out)
        uv_run(&E.loop, UV_RUN_ONCE);
    CHECK(!hub_conn_reading_paused(&E.conn));
    CHECK_EQ(E.conn_rx.len, 5);
    /* The owner's pause and the output's are independent. */
    CHECK_EQ(hub_conn_pause(&E.conn, 1), 0);
    CHECK(hub_conn_reading_paused(&E.conn));
    uv_read_stop((uv_stream_t *)&E.peer); /* the peer stops reading again */
    CHECK_EQ(hub_conn_send(&E.conn, big), 0);
    CHECK(E.conn.flags & HUB_CONN_PAUSED_OUTPUT);
    CHECK_EQ(hub_conn_pause(&E.conn, 0), 0);
    CHECK(hub_conn_reading_paused(&E.conn)); /* output still holds it */
    peer_start_reading();
    peer_read_upto(576 * 1024 + 512 * 1024);
    CHECK(!hub_conn_reading_paused(&E.conn));
    hub_shared_unref(a);
    hub_shared_unref(big);
    teardown();
}
#endif

static void on_queue_timer(uv_timer_t *t)
{
    (void)t;
    E.checks_at_queue = E.checks;
    CHECK_EQ(hub_conn_write(&E.conn, "tick", 4), 0);
}

static void on_dummy_closed(uv_handle_t *h)
{
    (void)h;
    E.checks_at_queue = E.checks;
    CHECK_EQ(hub_conn_write(&E.conn, "gone", 4), 0);
}

/* Output queued by a timer callback or a close callback (which libuv runs
 * outside the poll phase) is written before the loop sleeps: the peer reads
 * it in the very next poll, before another check phase. Without the
 * prepare flush it would wait for the next wake-up (the wheel's tick). */
static void test_prepare_flush(void)
{
    setup(0);
    peer_start_reading();
    uv_timer_t t;
    uv_timer_init(&E.loop, &t);
    uv_timer_start(&t, on_queue_timer, 10, 0);
    peer_read_upto(4);
    CHECK_EQ(E.checks_at_rx, E.checks_at_queue);
    CHECK(memcmp(E.rx.data, "tick", 4) == 0);
    /* The same from a close callback. */
    E.rx.len = 0;
    uv_close((uv_handle_t *)&t, on_dummy_closed);
    peer_read_upto(4);
    CHECK_EQ(E.checks_at_rx, E.checks_at_queue);
    CHECK(memcmp(E.rx.data, "gone", 4) == 0);
    teardown();
}

/* A connection that cannot be served is accepted and closed at once, and
 * the listener goes on accepting: three at once (the spare handle is busy
 * for the second and third), then one that is served. */
static void test_reject(void)
{
    setup(1);
    uv_tcp_t peers[3];
    uv_connect_t reqs[3];
    struct sockaddr_in a = listen_addr();
    int done = 0;
    for (int i = 0; i < 3; i++) {
        uv_tcp_init(&E.loop, &peers[i]);
        peers[i].data = &done;
        uv_tcp_connect(&reqs[i], &peers[i], (const struct sockaddr *)&a, on_connect);
    }
    int three = 0;
    while (!three && !E.timed_out) {
        uv_run(&E.loop, UV_RUN_ONCE);
        three = E.rejected >= 3;
    }
    CHECK_EQ(E.rejected, 3);
    /* Each rejected peer reads the end of the stream. */
    for (int i = 0; i < 3; i++) {
        E.peer_eof = 0;
        CHECK_EQ(uv_read_start((uv_stream_t *)&peers[i], peer_alloc, peer_read), 0);
        run_until(&E.peer_eof);
        uv_close((uv_handle_t *)&peers[i], nop_close);
    }
    CHECK_EQ(E.rx.len, 0);
    /* The listener still works. */
    E.reject = 0;
    E.connected = 0;
    peer_connect();
    run_until(&E.accepted);
    CHECK_EQ(hub_conn_write(&E.conn, "ok", 2), 0);
    E.peer_eof = 0;
    peer_start_reading();
    peer_read_upto(2);
    E.reject = 0;
    teardown();
}

static void key_of6(const char *ip, char *out)
{
    struct sockaddr_in6 a;
    CHECK_EQ(uv_ip6_addr(ip, 0, &a), 0);
    CHECK_EQ(hub_conn_addr_key((const struct sockaddr *)&a, out, HUB_CONN_ADDR_KEY_SIZE), 0);
}

/* The per-address limit key: IPv4 per address, IPv6 per /64, IPv4-mapped
 * IPv6 as its IPv4 address. */
static void test_addr_key(void)
{
    char k[HUB_CONN_ADDR_KEY_SIZE], k2[HUB_CONN_ADDR_KEY_SIZE];
    struct sockaddr_in a4;
    uv_ip4_addr("10.1.2.3", 0, &a4);
    CHECK_EQ(hub_conn_addr_key((const struct sockaddr *)&a4, k, sizeof(k)), 0);
    CHECK_STR(k, "10.1.2.3");
    key_of6("::ffff:10.1.2.3", k2);
    CHECK_STR(k2, "10.1.2.3");
    key_of6("2001:db8:1:2:3:4:5:6", k);
    CHECK_STR(k, "2001:db8:1:2::/64");
    key_of6("2001:0db8:0001:0002:ffff:ffff:ffff:ffff", k2);
    CHECK_STR(k2, "2001:db8:1:2::/64");
    key_of6("2001:db8:1:3::1", k2);
    CHECK_STR(k2, "2001:db8:1:3::/64");
    key_of6("::1", k);
    CHECK_STR(k, "0:0:0:0::/64");
    key_of6("fe80::abcd:1", k);
    CHECK_STR(k, "fe80:0:0:0::/64");
    /* ::ffff:0:a01:203 is not mapped (that is 96 bits of prefix only). */
    key_of6("::1:ffff:a01:203", k);
    CHECK_STR(k, "0:0:0:0::/64");
    struct sockaddr other = {0};
    /* Neither AF_INET nor AF_INET6, and in range of macOS's 8-bit sa_family_t. */
    other.sa_family = AF_UNIX;
    CHECK_EQ(hub_conn_addr_key(&other, k, sizeof(k)), HUB_EINVAL);
    CHECK_STR(k, "?");
}

static void stamp(const char *what)
{
    if (getenv("TEST_CONN_TRACE") != NULL)
        fprintf(stderr, "%llu ms: %s\n", (unsigned long long)(uv_hrtime() / 1000000), what);
}

int main(void)
{
#ifdef _WIN32
    /* Under Wine these real-loop socket cases do not behave as on Windows or
     * POSIX (paused peers keep taking bytes, reads after a reset fail), so the
     * Windows leg skips them (meson exit code 77) until they run on Windows. */
    fprintf(stderr, "unit/conn: skipped on Windows builds (Wine loopback semantics)\n");
    return 77;
#endif
    stamp("start");
    test_urgent_behind_partial_write();
    stamp("urgent");
    test_urgent_allowance();
    stamp("test_urgent_allowance");
    test_soft_limit_hold();
    stamp("test_soft_limit_hold");
    test_wheel_expiry();
    stamp("test_wheel_expiry");
#ifndef _WIN32
    /* Under Wine the paused peer's loopback socket keeps taking bytes, so the
     * case cannot fill the queue to its watermark and times out (seen in the
     * Windows leg); it runs on every POSIX build. */
    test_read_watermarks();
    stamp("test_read_watermarks");
#endif
    test_prepare_flush();
    stamp("test_prepare_flush");
    test_reject();
    stamp("test_reject");
    test_addr_key();
    return CHECK_DONE();
}
