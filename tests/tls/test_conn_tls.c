/*
 * test_conn_tls.c: the connection layer with TLS on, on a real libuv loop.
 *
 * One hub_conn is accepted from a loopback listener and switched to TLS
 * (hub_conn_use_tls) with a throwaway certificate made here. The peer is a
 * libuv TCP client driving an OpenSSL client through memory BIOs, so the
 * test sees both the ciphertext on the wire (it counts the TLS records) and
 * the plaintext inside. The cases check what conn.h promises for TLS: the
 * layers above see plaintext both ways; a burst of small sends queued in one
 * iteration leaves as full records, not one record per send (cork); the
 * output limit, the output gauge and the read watermarks count the
 * plaintext queue, while the ciphertext waiting for the socket stays within
 * the TLS layer's bound; an urgent frame overtakes the plaintext backlog
 * that has not been encrypted yet; close_after_flush ends with close_notify
 * after the last byte. Every case closes everything and checks that the
 * loop closes with no live handles.
 */
#include "check.h"
#include "hub/conn.h"
#include "hub/metrics.h"
#include "hub/tls.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define LIMIT (1u << 20) /* the connection's hard output limit */

struct env {
    uv_loop_t loop;
    struct hub_io *io;
    struct hub_tls_ctx *ctx; /* the server certificate */
    uv_tcp_t listener;       /* loopback, ephemeral port */
    uv_tcp_t peer;           /* the client's socket */
    uv_connect_t creq;       /* its connect request */
    struct hub_conn conn;    /* the server side, with TLS */
    uv_timer_t watchdog;     /* fails a case that hangs */
    SSL_CTX *cctx;           /* the client's context */
    SSL *ssl;                /* the client */
    BIO *rbio;               /* ciphertext from the server, into the client */
    BIO *wbio;               /* ciphertext from the client, to the socket */
    int accepted;            /* conn was accepted */
    int connected;           /* the peer's connect completed */
    int handshaken;          /* the client finished its handshake */
    int conn_closed;         /* conn's on_close fired */
    int timed_out;           /* the watchdog fired */
    int peer_eof;            /* the peer read the end of the TCP stream */
    int close_notify;        /* the client read the server's close_notify */
    struct hub_buf rx;       /* plaintext the client decrypted */
    struct hub_buf conn_rx;  /* plaintext conn's on_read got */
    struct hub_conn_ops ops; /* conn's callbacks and policy */
    unsigned records;        /* application-data records seen on the wire */
    unsigned char hdr[5];    /* the record header being read */
    size_t hdr_len;          /* bytes of hdr filled */
    size_t body_left;        /* bytes of the current record's body still to come */
    char dir[256];           /* scratch directory for the certificate */
};

static struct env E;

/* ---- a throwaway certificate ---- */

static void make_cert_files(char *cert, size_t certsz, char *key, size_t keysz)
{
    snprintf(E.dir, sizeof(E.dir), "/tmp/chathub-conn-tls-XXXXXX");
    CHECK(mkdtemp(E.dir) != NULL);
    snprintf(cert, certsz, "%s/cert.pem", E.dir);
    snprintf(key, keysz, "%s/key.pem", E.dir);
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, k);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1, -1,
                               0);
    X509_set_issuer_name(x, name);
    CHECK(X509_sign(x, k, EVP_sha256()) > 0);
    FILE *f = fopen(cert, "wb");
    CHECK(f != NULL && PEM_write_X509(f, x) == 1);
    fclose(f);
    f = fopen(key, "wb");
    CHECK(f != NULL && PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL) == 1);
    fclose(f);
    chmod(key, 0600);
    X509_free(x);
    EVP_PKEY_free(k);
}

static void remove_cert_files(void)
{
    char p[300];
    snprintf(p, sizeof(p), "%s/cert.pem", E.dir);
    remove(p);
    snprintf(p, sizeof(p), "%s/key.pem", E.dir);
    remove(p);
    remove(E.dir);
}

/* ---- the server side ---- */

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

static void on_listen(uv_stream_t *l, int status)
{
    CHECK_EQ(status, 0);
    CHECK_EQ(hub_conn_init(&E.conn, E.io, LIMIT), 0);
    E.ops.on_read = on_conn_read;
    E.ops.on_close = on_conn_close;
    hub_conn_ops_policy(&E.ops, LIMIT);
    E.conn.ops = &E.ops;
    CHECK_EQ(hub_conn_accept(&E.conn, l), 0);
    CHECK_EQ(hub_conn_use_tls(&E.conn, E.ctx), 0);
    /* Small kernel buffers: a few hundred KiB fill the path. */
    int sz = 32768;
    uv_send_buffer_size((uv_handle_t *)&E.conn.tcp, &sz);
    E.accepted = 1;
}

/* ---- the client side ---- */

/* Counts the application-data records (content type 23) in ciphertext. */
static void count_records(const unsigned char *p, size_t n)
{
    while (n > 0) {
        if (E.body_left > 0) {
            size_t k = n < E.body_left ? n : E.body_left;
            E.body_left -= k;
            p += k;
            n -= k;
            continue;
        }
        E.hdr[E.hdr_len++] = *p++;
        n--;
        if (E.hdr_len == 5) {
            E.hdr_len = 0;
            E.body_left = (size_t)E.hdr[3] << 8 | E.hdr[4];
            if (E.hdr[0] == 23)
                E.records++;
        }
    }
}

/* Sends whatever the client has written to the server. */
static void client_push(void)
{
    char buf[16384];
    int n;
    while ((n = BIO_read(E.wbio, buf, sizeof(buf))) > 0) {
        uv_buf_t b = uv_buf_init(buf, (unsigned)n);
        CHECK_EQ(uv_try_write((uv_stream_t *)&E.peer, &b, 1), n);
    }
}

/* Advances the client: handshake, then decrypt everything available. */
static void client_pump(void)
{
    if (!E.handshaken) {
        int r = SSL_do_handshake(E.ssl);
        if (r == 1)
            E.handshaken = 1;
        else
            CHECK_EQ(SSL_get_error(E.ssl, r), SSL_ERROR_WANT_READ);
    }
    if (E.handshaken) {
        char buf[16384];
        for (;;) {
            int r = SSL_read(E.ssl, buf, sizeof(buf));
            if (r > 0) {
                hub_buf_append(&E.rx, buf, (size_t)r);
                continue;
            }
            int e = SSL_get_error(E.ssl, r);
            if (e == SSL_ERROR_ZERO_RETURN)
                E.close_notify = 1;
            else
                CHECK_EQ(e, SSL_ERROR_WANT_READ);
            break;
        }
    }
    client_push();
}

static void peer_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char b[65536];
    (void)h;
    (void)suggested;
    *buf = uv_buf_init(b, sizeof(b));
}

static void peer_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    if (n > 0) {
        count_records((const unsigned char *)buf->base, (size_t)n);
        CHECK_EQ(BIO_write(E.rbio, buf->base, (int)n), n);
        client_pump();
    } else if (n < 0) {
        E.peer_eof = 1;
        uv_read_stop(s);
    }
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

static void run_until(const int *flag)
{
    while (!*flag && !E.timed_out)
        uv_run(&E.loop, UV_RUN_ONCE);
    CHECK(*flag);
}

static void peer_reading(int on)
{
    if (on)
        CHECK_EQ(uv_read_start((uv_stream_t *)&E.peer, peer_alloc, peer_read), 0);
    else
        uv_read_stop((uv_stream_t *)&E.peer);
}

/* Runs until the client has decrypted n bytes. */
static void rx_upto(size_t n)
{
    while (E.rx.len < n && !E.timed_out && !E.peer_eof)
        uv_run(&E.loop, UV_RUN_ONCE);
    CHECK(E.rx.len >= n);
}

/* The loop, the io, the certificate, one accepted TLS connection and its
 * peer, with the handshake done. */
static void setup(void)
{
    memset(&E, 0, sizeof(E));
    char cert[300], key[300], err[512];
    make_cert_files(cert, sizeof(cert), key, sizeof(key));
    CHECK_EQ(hub_tls_ctx_new(&E.ctx, cert, key, 0, NULL, err, sizeof(err)), 0);
    CHECK_EQ(uv_loop_init(&E.loop), 0);
    CHECK_EQ(hub_io_init(&E.io, &E.loop), 0);
    CHECK_EQ(uv_timer_init(&E.loop, &E.watchdog), 0);
    uv_timer_start(&E.watchdog, on_watchdog, 15000, 0);
    uv_unref((uv_handle_t *)&E.watchdog);
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    CHECK_EQ(uv_tcp_init(&E.loop, &E.listener), 0);
    CHECK_EQ(uv_tcp_bind(&E.listener, (const struct sockaddr *)&a, 0), 0);
    CHECK_EQ(uv_listen((uv_stream_t *)&E.listener, 16, on_listen), 0);
    int len = sizeof(a);
    uv_tcp_getsockname(&E.listener, (struct sockaddr *)&a, &len);
    CHECK_EQ(uv_tcp_init(&E.loop, &E.peer), 0);
    CHECK_EQ(uv_tcp_connect(&E.creq, &E.peer, (const struct sockaddr *)&a, on_connect), 0);
    run_until(&E.connected);
    int sz = 32768;
    uv_recv_buffer_size((uv_handle_t *)&E.peer, &sz);
    run_until(&E.accepted);

    E.cctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(E.cctx, SSL_VERIFY_NONE, NULL);
    E.ssl = SSL_new(E.cctx);
    E.rbio = BIO_new(BIO_s_mem());
    E.wbio = BIO_new(BIO_s_mem());
    SSL_set_bio(E.ssl, E.rbio, E.wbio);
    SSL_set_connect_state(E.ssl);
    peer_reading(1);
    client_pump(); /* the ClientHello */
    run_until(&E.handshaken);
    /* TLS 1.3: the server's tickets follow its Finished; let them land so
     * that the cases count only their own records. */
    for (int i = 0; i < 20; i++)
        uv_run(&E.loop, UV_RUN_NOWAIT);
    E.records = 0;
}

static void nop_close(uv_handle_t *h)
{
    (void)h;
}

static void teardown(void)
{
    if (!E.conn_closed) {
        hub_conn_close(&E.conn);
        run_until(&E.conn_closed);
    }
    if (!uv_is_closing((uv_handle_t *)&E.peer))
        uv_close((uv_handle_t *)&E.peer, nop_close);
    uv_close((uv_handle_t *)&E.listener, nop_close);
    uv_close((uv_handle_t *)&E.watchdog, nop_close);
    hub_io_close(E.io);
    uv_run(&E.loop, UV_RUN_DEFAULT);
    CHECK_EQ(uv_loop_close(&E.loop), 0);
    CHECK_EQ(hub_metrics.output_queued, 0);
    SSL_free(E.ssl);
    SSL_CTX_free(E.cctx);
    hub_tls_ctx_free(E.ctx);
    hub_buf_free(&E.rx);
    hub_buf_free(&E.conn_rx);
    remove_cert_files();
}

static struct hub_shared *filled(size_t len, char c)
{
    struct hub_shared *s = hub_shared_new(len);
    memset(s->data, c, len);
    return s;
}

/* ---- cases ---- */

/* Plaintext both ways through the same calls as without TLS. */
static void test_plaintext_both_ways(void)
{
    setup();
    CHECK_EQ(SSL_write(E.ssl, "hello, hub", 10), 10);
    client_push();
    while (E.conn_rx.len < 10 && !E.timed_out)
        uv_run(&E.loop, UV_RUN_ONCE);
    CHECK_EQ(E.conn_rx.len, 10);
    CHECK(memcmp(E.conn_rx.data, "hello, hub", 10) == 0);
    CHECK_EQ(hub_conn_write(&E.conn, "hello, peer", 11), 0);
    rx_upto(11);
    CHECK_EQ(E.rx.len, 11);
    CHECK(memcmp(E.rx.data, "hello, peer", 11) == 0);
    CHECK_EQ(E.records, 1);
    teardown();
}

/* 300 sends of 100 bytes queued in one iteration leave as two full-size
 * records (30000 bytes = 16384 + 13616), not 300. */
static void test_cork_makes_full_records(void)
{
    setup();
    struct hub_shared *frame = filled(100, 'f');
    for (int i = 0; i < 300; i++)
        CHECK_EQ(hub_conn_send(&E.conn, frame), 0);
    hub_shared_unref(frame);
    rx_upto(30000);
    CHECK_EQ(E.rx.len, 30000);
    CHECK_EQ(E.records, 2);
    teardown();
}

/* A peer that does not read: the plaintext queue holds the backlog and
 * meets the output limit as without TLS, the gauge follows it, reading
 * stops at the high watermark, and the ciphertext waiting for the socket
 * stays within the TLS layer's bound. Reading resumes at the low watermark
 * once the peer reads, and every byte arrives in order. */
static void test_limits_and_watermarks(void)
{
    setup();
    peer_reading(0);
    E.ops.high_water = 256 * 1024;
    E.ops.low_water = 64 * 1024;
    struct hub_shared *chunk = filled(64 * 1024, 'b');
    size_t queued = 0;
    int rc = 0;
    for (int i = 0; i < 64 && rc == 0; i++) {
        rc = hub_conn_send(&E.conn, chunk);
        if (rc == 0)
            queued += chunk->len;
        /* Let the flushes run and the socket fill between sends. */
        for (int k = 0; k < 4; k++)
            uv_run(&E.loop, UV_RUN_NOWAIT);
    }
    hub_shared_unref(chunk);
    CHECK_EQ(rc, HUB_ENOBUFS);
    /* The limit refused a send that would have passed it in plaintext. */
    CHECK(E.conn.out.bytes + 64 * 1024 > LIMIT);
    CHECK(E.conn.out.bytes <= LIMIT);
    CHECK_EQ(hub_metrics.output_queued, E.conn.out.bytes);
    CHECK(hub_conn_reading_paused(&E.conn));
    size_t pending = hub_tls_pending(E.conn.tls);
    CHECK(pending > 0);
    CHECK(pending <= HUB_TLS_DEFAULT_MAX_OUT + 1024); /* + the records' overhead */
    CHECK(queued > E.conn.out.bytes);                 /* some left for the socket */

    peer_reading(1);
    rx_upto(queued);
    CHECK_EQ(E.rx.len, queued);
    size_t bad = 0;
    for (size_t i = 0; i < E.rx.len; i++)
        bad += E.rx.data[i] != 'b';
    CHECK_EQ(bad, 0);
    CHECK_EQ(E.conn.out.bytes, 0);
    CHECK_EQ(hub_metrics.output_queued, 0);
    CHECK(!hub_conn_reading_paused(&E.conn));
    teardown();
}

/* An urgent frame goes ahead of the plaintext not yet encrypted; with more
 * than HUB_CONN_LATEST_KEEP unsent latest-only frames, the newest is
 * replaced rather than joined. */
static void test_urgent_overtakes_backlog(void)
{
    setup();
    peer_reading(0);
    struct hub_shared *chunk = filled(64 * 1024, 'a');
    for (int i = 0; i < 12; i++) {
        CHECK_EQ(hub_conn_send(&E.conn, chunk), 0);
        for (int k = 0; k < 4; k++)
            uv_run(&E.loop, UV_RUN_NOWAIT);
    }
    hub_shared_unref(chunk);
    size_t backlog = E.conn.out.bytes;
    CHECK(backlog > 0); /* the TLS bound keeps most of it in plaintext */
    for (int i = 0; i < HUB_CONN_LATEST_KEEP + 4; i++)
        CHECK_EQ(hub_conn_write_urgent_latest(&E.conn, "P", 1), 0);
    CHECK_EQ(hub_conn_write_urgent(&E.conn, "U", 1), 0);
    CHECK_EQ(E.conn.out.bytes, backlog + HUB_CONN_LATEST_KEEP + 1);
    peer_reading(1);
    size_t total = 12 * 64 * 1024 + HUB_CONN_LATEST_KEEP + 1;
    rx_upto(total);
    CHECK_EQ(E.rx.len, total);
    /* The urgent bytes sit inside the run of 'a', with backlog of it after
     * them: they overtook what had not been encrypted. */
    const char *p = memchr(E.rx.data, 'P', E.rx.len);
    CHECK(p != NULL);
    if (p != NULL) {
        size_t at = (size_t)(p - E.rx.data);
        CHECK(memcmp(p, "PPPPPPPPPPPPPPPPU", HUB_CONN_LATEST_KEEP + 1) == 0);
        size_t after = E.rx.len - at - (HUB_CONN_LATEST_KEEP + 1);
        CHECK(after > 0);
        CHECK(after <= backlog); /* less a slice already partly encrypted */
    }
    teardown();
}

/* close_after_flush: the last bytes, then close_notify, then the end of
 * the TCP stream. */
static void test_close_after_flush_sends_close_notify(void)
{
    setup();
    CHECK_EQ(hub_conn_write(&E.conn, "bye", 3), 0);
    hub_conn_close_after_flush(&E.conn);
    CHECK_EQ(hub_conn_write(&E.conn, "late", 4), HUB_ECLOSED);
    run_until(&E.peer_eof);
    CHECK_EQ(E.rx.len, 3);
    CHECK(memcmp(E.rx.data, "bye", 3) == 0);
    CHECK(E.close_notify);
    run_until(&E.conn_closed);
    teardown();
}

int main(void)
{
    test_plaintext_both_ways();
    test_cork_makes_full_records();
    test_limits_and_watermarks();
    test_urgent_overtakes_backlog();
    test_close_after_flush_sends_close_notify();
    return CHECK_DONE();
}
