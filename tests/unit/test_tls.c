/*
 * test_tls.c: unit tests of the TLS layer, sans-I/O.
 *
 * An OpenSSL client (memory BIOs) and a server hub_tls talk through the
 * test's own buffers: every flight of the handshake and every burst of
 * application data is cut at every offset, and the server's ciphertext is
 * acknowledged in the same pieces. Certificates and keys are made at test
 * time with the OpenSSL API (P-256 keys, self-signed or signed by a
 * throwaway CA) in a fresh temporary directory, which is removed at the end;
 * nothing is checked in.
 *
 * Covered: handshakes over TLS 1.3 and 1.2 at every split, application data
 * both ways at every split, corking (many slices → one record), the
 * ciphertext bound, plain HTTP and garbage, close_notify both ways, session
 * resumption, refused versions and ciphers, ALPN, reload (new handshakes see
 * the new certificate, old sessions carry on, a bad file keeps the old one,
 * the context may go before its connections), load errors and warnings, and
 * the metrics text.
 */
#include "hub/tls.h"

#include "check.h"
#include "tmpfs.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <uv.h>

static uv_loop_t loop;
static char dir[512];

/* ---- Throwaway certificates ---- */

static EVP_PKEY *make_key(void)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    CHECK(k != NULL);
    return k;
}

/* A certificate for key with common name cn, valid from now + from_s to
 * now + until_s, signed by issuer/issuer_key (self-signed when NULL). */
static X509 *make_cert(EVP_PKEY *key, const char *cn, long from_s, long until_s, X509 *issuer,
                       EVP_PKEY *issuer_key, int is_ca)
{
    static long serial = 1;
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_gmtime_adj(X509_getm_notBefore(x), from_s);
    X509_gmtime_adj(X509_getm_notAfter(x), until_s);
    X509_set_pubkey(x, key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, issuer != NULL ? X509_get_subject_name(issuer) : name);
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, issuer != NULL ? issuer : x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints,
                                              is_ca ? "critical,CA:TRUE" : "CA:FALSE");
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    CHECK(X509_sign(x, issuer_key != NULL ? issuer_key : key, EVP_sha256()) > 0);
    return x;
}

static void path_of(char *out, size_t outsz, const char *rel)
{
    snprintf(out, outsz, "%s/%s", dir, rel);
}

/* Writes the certificates (NULL-terminated) to rel as PEM. */
static void write_certs(const char *rel, X509 *const *certs)
{
    char path[1024];
    path_of(path, sizeof(path), rel);
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    for (int i = 0; certs[i] != NULL; i++)
        CHECK(PEM_write_X509(f, certs[i]) == 1);
    fclose(f);
}

/* Writes key to rel as PEM with file mode mode; encrypted under a password
 * when encrypted is set. */
static void write_key(const char *rel, EVP_PKEY *key, int mode, int encrypted)
{
    char path[1024];
    path_of(path, sizeof(path), rel);
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (encrypted)
        CHECK(PEM_write_PrivateKey(f, key, EVP_aes_128_cbc(), (unsigned char *)"secret", 6, NULL,
                                   NULL) == 1);
    else
        CHECK(PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) == 1);
    fclose(f);
    chmod(path, (mode_t)mode);
}

/* Writes a self-signed certificate for cn and its key to cert_rel/key_rel. */
static void write_pair(const char *cert_rel, const char *key_rel, const char *cn)
{
    EVP_PKEY *k = make_key();
    X509 *x = make_cert(k, cn, -3600, 86400, NULL, NULL, 0);
    X509 *certs[] = {x, NULL};
    write_certs(cert_rel, certs);
    write_key(key_rel, k, 0600, 0);
    X509_free(x);
    EVP_PKEY_free(k);
}

static struct hub_tls_ctx *load(const char *cert_rel, const char *key_rel, unsigned *warn)
{
    char cert[1024], key[1024], err[512];
    path_of(cert, sizeof(cert), cert_rel);
    path_of(key, sizeof(key), key_rel);
    struct hub_tls_ctx *ctx = NULL;
    int rc = hub_tls_ctx_new(&ctx, cert, key, 0, warn, err, sizeof(err));
    CHECK_EQ(rc, 0);
    if (rc != 0)
        fprintf(stderr, "load: %s\n", err);
    return ctx;
}

/* ---- The two ends ---- */

struct client {
    SSL *ssl;  /* the OpenSSL client */
    BIO *rbio; /* ciphertext from the server, written by the test */
    BIO *wbio; /* ciphertext to the server, read by the test */
};

struct server {
    struct hub_tls *t;    /* the layer under test */
    struct hub_buf plain; /* plaintext handed up */
    int stop_after;       /* on_plain asks to stop after this many calls (0: never) */
    int calls;            /* on_plain calls */
};

static SSL_CTX *client_ctx(int min_version, int max_version, const char *ciphers)
{
    SSL_CTX *c = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_security_level(c, 0); /* so that old versions are even offered */
    SSL_CTX_set_min_proto_version(c, min_version);
    SSL_CTX_set_max_proto_version(c, max_version);
    if (ciphers != NULL)
        CHECK(SSL_CTX_set_cipher_list(c, ciphers) == 1);
    SSL_CTX_set_verify(c, SSL_VERIFY_NONE, NULL);
    return c;
}

static void client_init(struct client *cl, SSL_CTX *cctx, SSL_SESSION *resume)
{
    cl->ssl = SSL_new(cctx);
    cl->rbio = BIO_new(BIO_s_mem());
    cl->wbio = BIO_new(BIO_s_mem());
    SSL_set_bio(cl->ssl, cl->rbio, cl->wbio);
    SSL_set_connect_state(cl->ssl);
    SSL_set_tlsext_host_name(cl->ssl, "localhost");
    if (resume != NULL)
        SSL_set_session(cl->ssl, resume);
}

static void client_free(struct client *cl)
{
    SSL_free(cl->ssl);
}

static int on_plain(void *user, const char *data, size_t len)
{
    struct server *sv = user;
    hub_buf_append(&sv->plain, data, len);
    sv->calls++;
    return sv->stop_after != 0 && sv->calls >= sv->stop_after;
}

static void server_init(struct server *sv, struct hub_tls_ctx *ctx, size_t max_out)
{
    memset(sv, 0, sizeof(*sv));
    sv->t = hub_tls_new(ctx, max_out);
    CHECK(sv->t != NULL);
}

static void server_free(struct server *sv)
{
    hub_tls_free(sv->t);
    hub_buf_free(&sv->plain);
}

/* Takes everything the client wrote. */
static size_t client_out(struct client *cl, char *buf, size_t cap)
{
    int n = BIO_read(cl->wbio, buf, (int)cap);
    return n > 0 ? (size_t)n : 0;
}

/* Feeds len bytes to the server in two pieces cut at split (when 0 < split <
 * len), or one byte at a time (split < 0). Returns the first nonzero result. */
static int feed_split(struct server *sv, const char *data, size_t len, long split)
{
    int rc = 0;
    if (split < 0) {
        for (size_t i = 0; i < len && rc == 0; i++)
            rc = hub_tls_feed(sv->t, data + i, 1, on_plain, sv);
        return rc;
    }
    size_t cut = split > 0 && (size_t)split < len ? (size_t)split : len;
    rc = hub_tls_feed(sv->t, data, cut, on_plain, sv);
    if (rc == 0 && cut < len)
        rc = hub_tls_feed(sv->t, data + cut, len - cut, on_plain, sv);
    return rc;
}

/* Client → server. Returns the feed result. */
static int c2s(struct client *cl, struct server *sv, long split)
{
    static char buf[1 << 20];
    size_t n = client_out(cl, buf, sizeof(buf));
    return n > 0 ? feed_split(sv, buf, n, split) : 0;
}

/* Server → client: everything due, acknowledged and delivered in pieces cut
 * at split like feed_split. Returns the bytes moved. */
static size_t s2c(struct server *sv, struct client *cl, long split)
{
    size_t moved = 0;
    for (;;) {
        size_t taken = 99;
        struct hub_iov wire;
        CHECK_EQ(hub_tls_flush(sv->t, NULL, 0, &taken, &wire), 0);
        CHECK_EQ(taken, 0);
        if (wire.len == 0)
            return moved;
        size_t off = 0;
        while (off < wire.len) {
            size_t n = wire.len - off;
            if (split < 0)
                n = 1;
            else if (split > 0 && off == 0 && (size_t)split < n)
                n = (size_t)split;
            BIO_write(cl->rbio, wire.base + off, (int)n);
            hub_tls_sent(sv->t, n);
            off += n;
            /* The view stays put while it is not fully acknowledged. */
            if (off < wire.len) {
                struct hub_iov again;
                CHECK_EQ(hub_tls_flush(sv->t, NULL, 0, &taken, &again), 0);
                CHECK(again.base == wire.base + off && again.len == wire.len - off);
            }
        }
        moved += wire.len;
    }
}

/* Runs the handshake to its end on both sides. Returns 1 when both are done. */
static int handshake(struct client *cl, struct server *sv, long split)
{
    for (int round = 0; round < 8; round++) {
        int r = SSL_do_handshake(cl->ssl);
        if (r != 1 && SSL_get_error(cl->ssl, r) != SSL_ERROR_WANT_READ)
            return 0;
        if (c2s(cl, sv, split) != 0)
            return 0;
        s2c(sv, cl, split);
        if (r == 1 && hub_tls_state(sv->t) == HUB_TLS_OPEN)
            return 1;
    }
    return 0;
}

/* Lets the client read what it was sent (tickets); returns plaintext bytes. */
static size_t client_read(struct client *cl, char *buf, size_t cap)
{
    size_t got = 0;
    for (;;) {
        int r = SSL_read(cl->ssl, buf + got, (int)(cap - got));
        if (r <= 0)
            return got;
        got += (size_t)r;
    }
}

/* Common name of the certificate the client was shown. */
static void peer_cn(struct client *cl, char *out, size_t outsz)
{
    snprintf(out, outsz, "?");
    X509 *x = SSL_get1_peer_certificate(cl->ssl);
    if (x == NULL)
        return;
    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, out, (int)outsz);
    X509_free(x);
}

/* Counts the TLS records in len bytes of wire data (all of them complete). */
static int count_records(const char *p, size_t len, int type)
{
    int n = 0;
    size_t off = 0;
    while (off + 5 <= len) {
        size_t rl = ((size_t)(unsigned char)p[off + 3] << 8) | (unsigned char)p[off + 4];
        if ((unsigned char)p[off] == type)
            n++;
        off += 5 + rl;
    }
    CHECK_EQ(off, len);
    return n;
}

/* ---- Tests ---- */

static void test_handshake_splits(struct hub_tls_ctx *ctx, int version)
{
    SSL_CTX *cctx = client_ctx(version, version, NULL);
    /* Learn the largest flight first, then cut every flight at every offset. */
    size_t largest = 0;
    {
        struct client cl;
        struct server sv;
        client_init(&cl, cctx, NULL);
        server_init(&sv, ctx, 0);
        for (int round = 0; round < 8 && hub_tls_state(sv.t) != HUB_TLS_OPEN; round++) {
            SSL_do_handshake(cl.ssl);
            char buf[8192];
            size_t n = client_out(&cl, buf, sizeof(buf));
            largest = n > largest ? n : largest;
            CHECK_EQ(feed_split(&sv, buf, n, 0), 0);
            size_t m = s2c(&sv, &cl, 0);
            largest = m > largest ? m : largest;
        }
        CHECK_EQ(hub_tls_state(sv.t), HUB_TLS_OPEN);
        CHECK_STR(hub_tls_version(sv.t), version == TLS1_3_VERSION ? "TLSv1.3" : "TLSv1.2");
        server_free(&sv);
        client_free(&cl);
    }
    CHECK(largest > 200);
    int bad = 0;
    for (long split = -1; split <= (long)largest; split++) {
        struct client cl;
        struct server sv;
        client_init(&cl, cctx, NULL);
        server_init(&sv, ctx, 0);
        int ok = handshake(&cl, &sv, split);
        /* Application data right behind the handshake, both ways. */
        static const char req[] = "GET /ws HTTP/1.1\r\nHost: localhost\r\n\r\n";
        SSL_write(cl.ssl, req, sizeof(req) - 1);
        ok = ok && c2s(&cl, &sv, split) == 0;
        ok = ok && sv.plain.len == sizeof(req) - 1 && memcmp(sv.plain.data, req, sv.plain.len) == 0;
        if (!ok && bad++ < 3)
            fprintf(stderr, "handshake v%x failed at split %ld\n", version, split);
        server_free(&sv);
        client_free(&cl);
    }
    CHECK_EQ(bad, 0);
    SSL_CTX_free(cctx);
}

/* Application data cut at every offset, several records in one burst. */
static void test_data_splits(struct hub_tls_ctx *ctx)
{
    SSL_CTX *cctx = client_ctx(TLS1_2_VERSION, TLS1_3_VERSION, NULL);
    struct client cl;
    struct server sv;
    client_init(&cl, cctx, NULL);
    server_init(&sv, ctx, 0);
    CHECK(handshake(&cl, &sv, 0));
    char sent[3000];
    for (size_t i = 0; i < sizeof(sent); i++)
        sent[i] = (char)('a' + i % 26);
    int bad = 0;
    for (long split = -1; split < 3100; split += split < 400 ? 1 : 7) {
        /* Three records of different sizes in one burst. */
        SSL_write(cl.ssl, sent, 1000);
        SSL_write(cl.ssl, sent + 1000, 1);
        SSL_write(cl.ssl, sent + 1001, sizeof(sent) - 1001);
        sv.plain.len = 0;
        int rc = c2s(&cl, &sv, split);
        if ((rc != 0 || sv.plain.len != sizeof(sent) ||
             memcmp(sv.plain.data, sent, sizeof(sent)) != 0) &&
            bad++ < 3)
            fprintf(stderr, "data failed at split %ld (rc %d, %zu bytes)\n", split, rc,
                    sv.plain.len);
    }
    CHECK_EQ(bad, 0);

    /* Server to client, acknowledged at every offset. */
    for (long split = -1; split < 1200; split += split < 200 ? 1 : 13) {
        struct hub_iov iov[3] = {{sent, 500}, {sent + 500, 1}, {sent + 501, 499}};
        size_t taken = 0;
        struct hub_iov wire;
        CHECK_EQ(hub_tls_flush(sv.t, iov, 3, &taken, &wire), 0);
        CHECK_EQ(taken, 1000);
        /* Leave the view for s2c to pick up again. */
        s2c(&sv, &cl, split);
        char got[2000];
        size_t n = client_read(&cl, got, sizeof(got));
        if ((n != 1000 || memcmp(got, sent, 1000) != 0) && bad++ < 3)
            fprintf(stderr, "server data failed at split %ld (%zu bytes)\n", split, n);
    }
    CHECK_EQ(bad, 0);
    CHECK_EQ(hub_tls_pending(sv.t), 0);

    /* A callback that asks to stop gets nothing more from that feed. */
    sv.plain.len = 0;
    sv.calls = 0;
    sv.stop_after = 1;
    SSL_write(cl.ssl, "one", 3);
    SSL_write(cl.ssl, "two", 3);
    CHECK_EQ(c2s(&cl, &sv, 0), 0);
    CHECK_EQ(sv.calls, 1);
    CHECK_EQ(sv.plain.len, 3);
    server_free(&sv);
    client_free(&cl);
    SSL_CTX_free(cctx);
}

/* Many small slices become one record; big batches become full records. */
static void test_cork(struct hub_tls_ctx *ctx)
{
    SSL_CTX *cctx = client_ctx(TLS1_3_VERSION, TLS1_3_VERSION, NULL);
    struct client cl;
    struct server sv;
    client_init(&cl, cctx, NULL);
    server_init(&sv, ctx, 0);
    CHECK(handshake(&cl, &sv, 0));
    char got[64 * 1024];
    client_read(&cl, got, sizeof(got)); /* the ticket */
    CHECK_EQ(hub_tls_pending(sv.t), 0);

    static char frames[50][60];
    struct hub_iov iov[50];
    for (int i = 0; i < 50; i++) {
        memset(frames[i], 'A' + i % 26, sizeof(frames[i]));
        iov[i].base = frames[i];
        iov[i].len = sizeof(frames[i]);
    }
    size_t taken = 0;
    struct hub_iov wire;
    CHECK_EQ(hub_tls_flush(sv.t, iov, 50, &taken, &wire), 0);
    CHECK_EQ(taken, 3000);
    /* TLS 1.3 record: 5 header + 3000 + 1 content type + 16 tag. */
    CHECK_EQ(wire.len, 3000 + 22);
    CHECK_EQ(count_records(wire.base, wire.len, 0x17), 1);
    BIO_write(cl.rbio, wire.base, (int)wire.len);
    hub_tls_sent(sv.t, wire.len);
    CHECK_EQ(client_read(&cl, got, sizeof(got)), 3000);
    CHECK(memcmp(got, frames[0], 60) == 0 && memcmp(got + 2940, frames[49], 60) == 0);

    /* 40000 bytes in slices of odd sizes: three full-or-last records. */
    static char big[40000];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (char)(i * 7);
    struct hub_iov biov[4] = {{big, 10}, {big + 10, 20000}, {big + 20010, 3}, {big + 20013, 19987}};
    CHECK_EQ(hub_tls_flush(sv.t, biov, 4, &taken, &wire), 0);
    CHECK_EQ(taken, sizeof(big));
    CHECK_EQ(count_records(wire.base, wire.len, 0x17), 3);
    CHECK_EQ(wire.len, sizeof(big) + 3 * 22);
    BIO_write(cl.rbio, wire.base, (int)wire.len);
    hub_tls_sent(sv.t, wire.len);
    CHECK_EQ(client_read(&cl, got, sizeof(got)), sizeof(big));
    CHECK(memcmp(got, big, sizeof(big)) == 0);
    server_free(&sv);
    client_free(&cl);
    SSL_CTX_free(cctx);
}

/* The ciphertext bound: plaintext beyond it stays with the caller. */
static void test_out_limit(struct hub_tls_ctx *ctx)
{
    SSL_CTX *cctx = client_ctx(TLS1_3_VERSION, TLS1_3_VERSION, NULL);
    struct client cl;
    struct server sv;
    client_init(&cl, cctx, NULL);
    server_init(&sv, ctx, 4096);
    CHECK(handshake(&cl, &sv, 0));
    static char data[20000];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (char)(i * 13);
    static char got[sizeof(data)];
    size_t got_len = 0, off = 0;
    int rounds = 0;
    while (off < sizeof(data) && rounds++ < 100) {
        struct hub_iov iov = {data + off, sizeof(data) - off};
        size_t taken = 0;
        struct hub_iov wire;
        CHECK_EQ(hub_tls_flush(sv.t, &iov, 1, &taken, &wire), 0);
        CHECK(taken <= 4096);
        CHECK(hub_tls_pending(sv.t) <= 4096 + 64);
        off += taken;
        /* Unacknowledged, nothing more is taken and the view is the same. */
        size_t taken2 = 1;
        struct hub_iov wire2;
        struct hub_iov rest = {data + off, sizeof(data) - off};
        CHECK_EQ(hub_tls_flush(sv.t, &rest, 1, &taken2, &wire2), 0);
        CHECK_EQ(taken2, 0);
        CHECK(wire2.base == wire.base && wire2.len == wire.len);
        BIO_write(cl.rbio, wire.base, (int)wire.len);
        hub_tls_sent(sv.t, wire.len);
        got_len += client_read(&cl, got + got_len, sizeof(got) - got_len);
    }
    CHECK(rounds >= 5);
    CHECK_EQ(got_len, sizeof(data));
    CHECK(memcmp(got, data, sizeof(data)) == 0);

    /* A full budget leaves the records' overhead above the bound; reading
     * application data that produces no ciphertext must not fail then (a
     * slow reader that still sends is not over any limit). */
    {
        struct hub_iov iov = {data, sizeof(data)};
        size_t taken = 0;
        struct hub_iov wire;
        CHECK_EQ(hub_tls_flush(sv.t, &iov, 1, &taken, &wire), 0);
        CHECK(hub_tls_pending(sv.t) > 4096);
        SSL_write(cl.ssl, "still here", 10);
        CHECK_EQ(c2s(&cl, &sv, 0), 0);
        CHECK_EQ(hub_tls_state(sv.t), HUB_TLS_OPEN);
        BIO_write(cl.rbio, wire.base, (int)wire.len);
        hub_tls_sent(sv.t, wire.len);
        got_len = client_read(&cl, got, sizeof(got));
        CHECK_EQ(got_len, taken);
    }

    /* Ciphertext due from reading counts too: a client that keeps asking
     * for key updates and never reads fails the connection at the bound. */
    int rc = 0;
    for (int i = 0; i < 1000 && rc == 0; i++) {
        SSL_key_update(cl.ssl, SSL_KEY_UPDATE_REQUESTED);
        SSL_write(cl.ssl, "x", 1);
        rc = c2s(&cl, &sv, 0);
    }
    CHECK_EQ(rc, HUB_ENOBUFS);
    CHECK_EQ(hub_tls_failure(sv.t), HUB_TLS_FAIL_LIMIT);
    server_free(&sv);
    client_free(&cl);
    SSL_CTX_free(cctx);
}

static void test_plain_http(struct hub_tls_ctx *ctx)
{
    static const char *const reqs[] = {
        "GET / HTTP/1.1\r\nHost: localhost:8443\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\n\r\n",
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "CONNECT example.org:443 HTTP/1.1\r\n\r\n",
    };
    uint64_t before = hub_tls_stats.failures[HUB_TLS_FAIL_PLAIN_HTTP];
    int runs = 0;
    for (size_t r = 0; r < HUB_ARRAY_SIZE(reqs); r++) {
        size_t len = strlen(reqs[r]);
        for (long split = -1; split < (long)len; split++) {
            struct server sv;
            server_init(&sv, ctx, 0);
            int rc = feed_split(&sv, reqs[r], len, split);
            CHECK_EQ(rc, HUB_EPROTO);
            CHECK_EQ(hub_tls_failure(sv.t), HUB_TLS_FAIL_PLAIN_HTTP);
            CHECK_EQ(hub_tls_state(sv.t), HUB_TLS_FAILED);
            CHECK_EQ(sv.plain.len, 0);
            /* The answer is plain HTTP, and more input changes nothing. */
            CHECK_EQ(hub_tls_feed(sv.t, "x", 1, on_plain, &sv), HUB_EPROTO);
            struct hub_iov drop = {"late", 4};
            size_t taken = 0;
            struct hub_iov wire;
            CHECK_EQ(hub_tls_flush(sv.t, &drop, 1, &taken, &wire), 0);
            CHECK_EQ(taken, 4);
            CHECK(wire.len > 12 && memcmp(wire.base, "HTTP/1.1 400", 12) == 0);
            size_t head = 0;
            while (head + 4 <= wire.len && memcmp(wire.base + head, "\r\n\r\n", 4) != 0)
                head++;
            CHECK_EQ(wire.len - (head + 4), 50); /* the Content-Length */
            hub_tls_sent(sv.t, wire.len);
            CHECK_EQ(hub_tls_pending(sv.t), 0);
            server_free(&sv);
            runs++;
        }
    }
    CHECK_EQ(hub_tls_stats.failures[HUB_TLS_FAIL_PLAIN_HTTP] - before, (uint64_t)runs);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 32);
}

static void test_garbage(struct hub_tls_ctx *ctx)
{
    char buf[600];
    /* Not a handshake record at all: refused without OpenSSL, nothing sent. */
    for (int i = 0; i < 300; i++) {
        size_t len = 1 + rnd() % sizeof(buf);
        for (size_t j = 0; j < len; j++)
            buf[j] = (char)rnd();
        if (buf[0] == 0x16 || (buf[0] >= 'A' && buf[0] <= 'Z'))
            buf[0] = 0x01;
        struct server sv;
        server_init(&sv, ctx, 0);
        CHECK_EQ(feed_split(&sv, buf, len, (long)(rnd() % len)), HUB_EPROTO);
        CHECK_EQ(hub_tls_failure(sv.t), HUB_TLS_FAIL_NOT_TLS);
        CHECK_EQ(hub_tls_pending(sv.t), 0);
        server_free(&sv);
    }
    /* Lower-case or long words are not HTTP methods we know. */
    static const char *const words[] = {"get / HTTP/1.1\r\n", "GETTINGLONG / x", "G3T /"};
    for (size_t i = 0; i < HUB_ARRAY_SIZE(words); i++) {
        struct server sv;
        server_init(&sv, ctx, 0);
        CHECK_EQ(feed_split(&sv, words[i], strlen(words[i]), 0), HUB_EPROTO);
        CHECK_EQ(hub_tls_failure(sv.t), HUB_TLS_FAIL_NOT_TLS);
        server_free(&sv);
    }
    /* A handshake record header followed by garbage: OpenSSL refuses it
     * (with an alert) or waits for the rest of a long record. */
    int failed = 0;
    for (int i = 0; i < 300; i++) {
        size_t len = 6 + rnd() % (sizeof(buf) - 6);
        for (size_t j = 0; j < len; j++)
            buf[j] = (char)rnd();
        buf[0] = 0x16;
        if (i % 2 == 0) {
            buf[1] = 0x03;
            buf[2] = 0x01;
            buf[3] = 0;
            buf[4] = (char)(len - 5); /* a record that ends where the input does */
        }
        struct server sv;
        server_init(&sv, ctx, 0);
        int rc = feed_split(&sv, buf, len, (long)(rnd() % len));
        CHECK(rc == 0 || rc == HUB_EPROTO);
        if (rc == HUB_EPROTO) {
            CHECK_EQ(hub_tls_failure(sv.t), HUB_TLS_FAIL_HANDSHAKE);
            CHECK(hub_tls_failure_text(sv.t)[0] != '\0');
            failed++;
        }
        server_free(&sv);
    }
    CHECK(failed >= 150);

    /* Garbage after the handshake: a bad record fails the connection and
     * an alert is due; the client reads it as an error. */
    SSL_CTX *cctx = client_ctx(TLS1_2_VERSION, TLS1_3_VERSION, NULL);
    for (int v = 0; v < 2; v++) {
        SSL_CTX_set_max_proto_version(cctx, v == 0 ? TLS1_3_VERSION : TLS1_2_VERSION);
        struct client cl;
        struct server sv;
        client_init(&cl, cctx, NULL);
        server_init(&sv, ctx, 0);
        CHECK(handshake(&cl, &sv, 0));
        char rec[105] = {0x17, 0x03, 0x03, 0x00, 100};
        for (int j = 5; j < 105; j++)
            rec[j] = (char)rnd();
        CHECK_EQ(hub_tls_feed(sv.t, rec, sizeof(rec), on_plain, &sv), HUB_EPROTO);
        CHECK_EQ(hub_tls_failure(sv.t), HUB_TLS_FAIL_PROTOCOL);
        CHECK(hub_tls_pending(sv.t) > 0);
        s2c(&sv, &cl, 0);
        char got[100];
        CHECK(SSL_read(cl.ssl, got, sizeof(got)) <= 0);
        CHECK_EQ(SSL_get_error(cl.ssl, -1), SSL_ERROR_SSL);
        ERR_clear_error();
        server_free(&sv);
        client_free(&cl);
    }
    SSL_CTX_free(cctx);
}

static void test_close_notify(struct hub_tls_ctx *ctx)
{
    SSL_CTX *cctx = client_ctx(TLS1_2_VERSION, TLS1_3_VERSION, NULL);
    struct client cl;
    struct server sv;
    char got[256];

    /* The client closes: the server answers with its own close_notify. */
    client_init(&cl, cctx, NULL);
    server_init(&sv, ctx, 0);
    CHECK(handshake(&cl, &sv, 0));
    client_read(&cl, got, sizeof(got));
    CHECK_EQ(SSL_shutdown(cl.ssl), 0);
    CHECK_EQ(c2s(&cl, &sv, 0), HUB_ECLOSED);
    CHECK_EQ(hub_tls_state(sv.t), HUB_TLS_CLOSED);
    CHECK_EQ(hub_tls_feed(sv.t, "x", 1, on_plain, &sv), HUB_ECLOSED);
    CHECK(s2c(&sv, &cl, 0) > 0);
    CHECK_EQ(SSL_shutdown(cl.ssl), 1);
    server_free(&sv);
    client_free(&cl);

    /* The server closes: the client sees a clean end of stream, and data
     * queued afterwards is dropped. */
    client_init(&cl, cctx, NULL);
    server_init(&sv, ctx, 0);
    CHECK(handshake(&cl, &sv, 0));
    CHECK_EQ(hub_tls_shutdown(sv.t), 0);
    CHECK_EQ(hub_tls_state(sv.t), HUB_TLS_CLOSED);
    struct hub_iov late = {"late", 4};
    size_t taken = 0;
    struct hub_iov wire;
    CHECK_EQ(hub_tls_flush(sv.t, &late, 1, &taken, &wire), 0);
    CHECK_EQ(taken, 4);
    CHECK(wire.len > 0);
    BIO_write(cl.rbio, wire.base, (int)wire.len);
    hub_tls_sent(sv.t, wire.len);
    CHECK(SSL_read(cl.ssl, got, sizeof(got)) <= 0);
    CHECK_EQ(SSL_get_error(cl.ssl, 0), SSL_ERROR_ZERO_RETURN);
    server_free(&sv);
    client_free(&cl);

    /* Shutdown during the handshake sends nothing and changes nothing. */
    server_init(&sv, ctx, 0);
    CHECK_EQ(hub_tls_shutdown(sv.t), 0);
    CHECK_EQ(hub_tls_state(sv.t), HUB_TLS_HANDSHAKE);
    CHECK_EQ(hub_tls_pending(sv.t), 0);
    server_free(&sv);
    SSL_CTX_free(cctx);
}

static void test_resume(struct hub_tls_ctx *ctx)
{
    for (int v = 0; v < 2; v++) {
        int version = v == 0 ? TLS1_3_VERSION : TLS1_2_VERSION;
        SSL_CTX *cctx = client_ctx(version, version, NULL);
        SSL_CTX_set_session_cache_mode(cctx, SSL_SESS_CACHE_CLIENT);
        struct client cl;
        struct server sv;
        char got[256];
        client_init(&cl, cctx, NULL);
        server_init(&sv, ctx, 0);
        CHECK(handshake(&cl, &sv, 0));
        client_read(&cl, got, sizeof(got)); /* takes the TLS 1.3 ticket */
        SSL_SESSION *sess = SSL_get1_session(cl.ssl);
        CHECK_EQ(hub_tls_resumed(sv.t), 0);
        /* A client session ended without close_notify is not resumable
         * (OpenSSL's rule), so end it properly. */
        SSL_shutdown(cl.ssl);
        CHECK_EQ(c2s(&cl, &sv, 0), HUB_ECLOSED);
        server_free(&sv);
        client_free(&cl);
        CHECK(sess != NULL && SSL_SESSION_is_resumable(sess) && SSL_SESSION_has_ticket(sess));

        uint64_t before = hub_tls_stats.resumed;
        client_init(&cl, cctx, sess);
        server_init(&sv, ctx, 0);
        CHECK(handshake(&cl, &sv, 0));
        CHECK_EQ(SSL_session_reused(cl.ssl), 1);
        CHECK_EQ(hub_tls_resumed(sv.t), 1);
        CHECK_EQ(hub_tls_stats.resumed - before, 1);
        server_free(&sv);
        client_free(&cl);
        SSL_SESSION_free(sess);
        SSL_CTX_free(cctx);
    }
}

/* Old versions and weak suites are refused; ALPN picks http/1.1. */
static void test_policy(struct hub_tls_ctx *ctx)
{
    static const struct {
        int min, max;
        const char *ciphers;
    } refused[] = {
        {TLS1_VERSION, TLS1_VERSION, NULL},
        {TLS1_1_VERSION, TLS1_1_VERSION, NULL},
        {TLS1_2_VERSION, TLS1_2_VERSION, "ECDHE-ECDSA-AES128-SHA"},
        {TLS1_2_VERSION, TLS1_2_VERSION, "ECDHE-ECDSA-AES128-SHA256"},
    };
    for (size_t i = 0; i < HUB_ARRAY_SIZE(refused); i++) {
        SSL_CTX *cctx = client_ctx(refused[i].min, refused[i].max, refused[i].ciphers);
        struct client cl;
        struct server sv;
        client_init(&cl, cctx, NULL);
        server_init(&sv, ctx, 0);
        CHECK(!handshake(&cl, &sv, 0));
        CHECK_EQ(hub_tls_failure(sv.t), HUB_TLS_FAIL_HANDSHAKE);
        if (i < 2)
            CHECK_STR(hub_tls_failure_text(sv.t), "unsupported protocol");
        else
            CHECK_STR(hub_tls_failure_text(sv.t), "no shared cipher");
        ERR_clear_error();
        server_free(&sv);
        client_free(&cl);
        SSL_CTX_free(cctx);
    }

    static const struct {
        const char *offer;
        unsigned offer_len;
        const char *chosen;
    } alpn[] = {
        {"\x02h2\x08http/1.1", 12, "http/1.1"},
        {"\x08http/1.1", 9, "http/1.1"},
        {"\x02h2", 3, ""},
    };
    for (size_t i = 0; i < HUB_ARRAY_SIZE(alpn); i++) {
        SSL_CTX *cctx = client_ctx(TLS1_2_VERSION, TLS1_3_VERSION, NULL);
        SSL_CTX_set_alpn_protos(cctx, (const unsigned char *)alpn[i].offer, alpn[i].offer_len);
        struct client cl;
        struct server sv;
        client_init(&cl, cctx, NULL);
        server_init(&sv, ctx, 0);
        CHECK(handshake(&cl, &sv, 0));
        const unsigned char *sel = NULL;
        unsigned sel_len = 0;
        SSL_get0_alpn_selected(cl.ssl, &sel, &sel_len);
        CHECK_EQ(sel_len, strlen(alpn[i].chosen));
        CHECK(sel_len == 0 || memcmp(sel, alpn[i].chosen, sel_len) == 0);
        server_free(&sv);
        client_free(&cl);
        SSL_CTX_free(cctx);
    }
}

/* One round trip over an established pair. */
static int round_trip(struct client *cl, struct server *sv, const char *msg)
{
    size_t len = strlen(msg);
    sv->plain.len = 0;
    SSL_write(cl->ssl, msg, (int)len);
    if (c2s(cl, sv, 0) != 0 || sv->plain.len != len || memcmp(sv->plain.data, msg, len) != 0)
        return 0;
    struct hub_iov iov = {msg, len};
    size_t taken = 0;
    struct hub_iov wire;
    hub_tls_flush(sv->t, &iov, 1, &taken, &wire);
    if (taken != len)
        return 0;
    BIO_write(cl->rbio, wire.base, (int)wire.len);
    hub_tls_sent(sv->t, wire.len);
    char got[256];
    size_t n = client_read(cl, got, sizeof(got));
    return n == len && memcmp(got, msg, len) == 0;
}

static void test_reload(void)
{
    write_pair("live.crt", "live.key", "alpha");
    struct hub_tls_ctx *ctx = load("live.crt", "live.key", NULL);
    if (ctx == NULL)
        return;
    char desc[256], cn[64], err[512];
    hub_tls_ctx_describe(ctx, desc, sizeof(desc));
    CHECK(strncmp(desc, "CN=alpha, valid until 20", 24) == 0);
    CHECK(strstr(desc, ", chain of 1") != NULL);

    SSL_CTX *cctx = client_ctx(TLS1_2_VERSION, TLS1_3_VERSION, NULL);
    struct client old_cl, cl;
    struct server old_sv, sv;
    client_init(&old_cl, cctx, NULL);
    server_init(&old_sv, ctx, 0);
    CHECK(handshake(&old_cl, &old_sv, 0));
    peer_cn(&old_cl, cn, sizeof(cn));
    CHECK_STR(cn, "alpha");

    /* The renewal: new files in place, then the reload. */
    write_pair("live.crt", "live.key", "beta");
    uint64_t reloads = hub_tls_stats.reloads, failures = hub_tls_stats.reload_failures;
    unsigned warn = 99;
    CHECK_EQ(hub_tls_ctx_reload(ctx, 0, &warn, err, sizeof(err)), 0);
    CHECK_EQ(warn, 0);
    CHECK_EQ(hub_tls_stats.reloads - reloads, 1);
    client_init(&cl, cctx, NULL);
    server_init(&sv, ctx, 0);
    CHECK(handshake(&cl, &sv, 0));
    peer_cn(&cl, cn, sizeof(cn));
    CHECK_STR(cn, "beta");
    CHECK(round_trip(&old_cl, &old_sv, "still here"));
    server_free(&sv);
    client_free(&cl);

    /* A broken certificate file, then a key that does not match: the
     * reload fails with the reason and beta stays in use. */
    tmp_write_file(dir, "live.crt", "-----BEGIN CERTIFICATE-----\nnope\n", 34);
    CHECK_EQ(hub_tls_ctx_reload(ctx, 0, &warn, err, sizeof(err)), HUB_EINVAL);
    CHECK(strstr(err, "no usable PEM certificate in ") != NULL && strstr(err, "live.crt") != NULL);
    write_pair("live.crt", "other.key", "gamma");
    CHECK_EQ(hub_tls_ctx_reload(ctx, 0, &warn, err, sizeof(err)), HUB_EINVAL);
    CHECK(strstr(err, "does not match the certificate") != NULL);
    CHECK_EQ(hub_tls_stats.reload_failures - failures, 2);
    client_init(&cl, cctx, NULL);
    server_init(&sv, ctx, 0);
    CHECK(handshake(&cl, &sv, 0));
    peer_cn(&cl, cn, sizeof(cn));
    CHECK_STR(cn, "beta");

    /* The context may go before the connections made from it. */
    hub_tls_ctx_free(ctx);
    CHECK(round_trip(&old_cl, &old_sv, "alpha lives on"));
    CHECK(round_trip(&cl, &sv, "beta lives on"));
    server_free(&sv);
    client_free(&cl);
    server_free(&old_sv);
    client_free(&old_cl);
    SSL_CTX_free(cctx);
}

static void test_load_errors(void)
{
    char cert[1024], key[1024], err[512];
    struct hub_tls_ctx *ctx = NULL;
    unsigned warn = 0;
    write_pair("a.crt", "a.key", "a");
    write_pair("b.crt", "b.key", "b");

    path_of(cert, sizeof(cert), "missing.crt");
    path_of(key, sizeof(key), "a.key");
    CHECK_EQ(hub_tls_ctx_new(&ctx, cert, key, 0, &warn, err, sizeof(err)), HUB_ENOENT);
    CHECK(strstr(err, "cannot read TLS certificate file ") != NULL);
    CHECK(strstr(err, "missing.crt: No such file or directory") != NULL);

    path_of(cert, sizeof(cert), "a.crt");
    path_of(key, sizeof(key), "missing.key");
    CHECK_EQ(hub_tls_ctx_new(&ctx, cert, key, 0, &warn, err, sizeof(err)), HUB_ENOENT);
    CHECK(strstr(err, "cannot read TLS key file ") != NULL);

    path_of(key, sizeof(key), "b.key");
    CHECK_EQ(hub_tls_ctx_new(&ctx, cert, key, 0, &warn, err, sizeof(err)), HUB_EINVAL);
    CHECK(strstr(err, "b.key does not match the certificate in ") != NULL);
    CHECK(strstr(err, "a.crt") != NULL);

    /* A key where the certificate should be, and the other way round. */
    path_of(cert, sizeof(cert), "a.key");
    path_of(key, sizeof(key), "a.key");
    CHECK_EQ(hub_tls_ctx_new(&ctx, cert, key, 0, &warn, err, sizeof(err)), HUB_EINVAL);
    CHECK(strstr(err, "no usable PEM certificate in ") != NULL);
    path_of(cert, sizeof(cert), "a.crt");
    path_of(key, sizeof(key), "a.crt");
    CHECK_EQ(hub_tls_ctx_new(&ctx, cert, key, 0, &warn, err, sizeof(err)), HUB_EINVAL);
    CHECK(strstr(err, "no usable PEM private key in ") != NULL);

    /* An encrypted key is refused, never prompted for. */
    EVP_PKEY *k = make_key();
    X509 *x = make_cert(k, "enc", -60, 3600, NULL, NULL, 0);
    X509 *one[] = {x, NULL};
    write_certs("enc.crt", one);
    write_key("enc.key", k, 0600, 1);
    path_of(cert, sizeof(cert), "enc.crt");
    path_of(key, sizeof(key), "enc.key");
    CHECK_EQ(hub_tls_ctx_new(&ctx, cert, key, 0, &warn, err, sizeof(err)), HUB_EINVAL);
    CHECK(strstr(err, "encrypted key is not supported") != NULL);
    X509_free(x);

    /* Warnings: loaded, but flagged. */
    x = make_cert(k, "old", -86400 * 10, -86400, NULL, NULL, 0);
    one[0] = x;
    write_certs("old.crt", one);
    write_key("old.key", k, 0600, 0);
    X509_free(x);
    ctx = load("old.crt", "old.key", &warn);
    CHECK_EQ(warn, HUB_TLS_WARN_EXPIRED);
    CHECK(strstr(hub_tls_warning_text(HUB_TLS_WARN_EXPIRED), "expired") != NULL);
    hub_tls_ctx_free(ctx);

    x = make_cert(k, "future", 86400, 86400 * 10, NULL, NULL, 0);
    one[0] = x;
    write_certs("future.crt", one);
    write_key("future.key", k, 0644, 0);
    X509_free(x);
    ctx = load("future.crt", "future.key", &warn);
    CHECK_EQ(warn, HUB_TLS_WARN_NOT_YET_VALID | HUB_TLS_WARN_KEY_READABLE);
    hub_tls_ctx_free(ctx);

    /* The clock is injected: a valid certificate seen from the future. */
    path_of(cert, sizeof(cert), "a.crt");
    path_of(key, sizeof(key), "a.key");
    CHECK_EQ(hub_tls_ctx_new(&ctx, cert, key, time(NULL) + 86400 * 2, &warn, err, sizeof(err)), 0);
    CHECK_EQ(warn, HUB_TLS_WARN_EXPIRED);
    hub_tls_ctx_free(ctx);
    CHECK_EQ(hub_tls_ctx_new(&ctx, cert, key, 0, &warn, err, sizeof(err)), 0);
    CHECK_EQ(warn, 0);
    hub_tls_ctx_free(ctx);
    EVP_PKEY_free(k);
}

/* A certificate file holding the chain: leaf, then the CA. */
static void test_chain(void)
{
    EVP_PKEY *ca_key = make_key(), *leaf_key = make_key();
    X509 *ca = make_cert(ca_key, "Throwaway CA", -3600, 86400, NULL, NULL, 1);
    X509 *leaf = make_cert(leaf_key, "localhost", -3600, 86400, ca, ca_key, 0);
    X509 *chain[] = {leaf, ca, NULL};
    write_certs("chain.crt", chain);
    write_key("chain.key", leaf_key, 0600, 0);
    struct hub_tls_ctx *ctx = load("chain.crt", "chain.key", NULL);
    if (ctx != NULL) {
        char desc[256];
        hub_tls_ctx_describe(ctx, desc, sizeof(desc));
        CHECK(strstr(desc, "CN=localhost") != NULL && strstr(desc, "chain of 2") != NULL);
        /* The client trusts the CA only, and verifies the chain it is sent. */
        SSL_CTX *cctx = client_ctx(TLS1_2_VERSION, TLS1_3_VERSION, NULL);
        X509_STORE_add_cert(SSL_CTX_get_cert_store(cctx), ca);
        SSL_CTX_set_verify(cctx, SSL_VERIFY_PEER, NULL);
        struct client cl;
        struct server sv;
        client_init(&cl, cctx, NULL);
        SSL_set1_host(cl.ssl, "localhost");
        server_init(&sv, ctx, 0);
        CHECK(handshake(&cl, &sv, 0));
        CHECK_EQ(SSL_get_verify_result(cl.ssl), X509_V_OK);
        STACK_OF(X509) *sent = SSL_get_peer_cert_chain(cl.ssl);
        CHECK(sent != NULL && sk_X509_num(sent) == 2);
        server_free(&sv);
        client_free(&cl);
        SSL_CTX_free(cctx);
        hub_tls_ctx_free(ctx);
    }
    X509_free(leaf);
    X509_free(ca);
    EVP_PKEY_free(leaf_key);
    EVP_PKEY_free(ca_key);
}

static void test_metrics(struct hub_tls_ctx *ctx)
{
    /* A connection freed mid-handshake counts as abandoned. */
    uint64_t abandoned = hub_tls_stats.abandoned;
    struct server sv;
    server_init(&sv, ctx, 0);
    CHECK_EQ(feed_split(&sv, "\x16\x03\x01", 3, 0), 0);
    server_free(&sv);
    CHECK_EQ(hub_tls_stats.abandoned - abandoned, 1);

    struct hub_buf b = {0};
    CHECK_EQ(hub_tls_metrics_render(&b), 0);
    hub_buf_append(&b, "", 1);
    char line[128];
    snprintf(line, sizeof(line), "\nchathub_tls_handshakes_total %llu\n",
             (unsigned long long)hub_tls_stats.handshakes);
    CHECK(strstr(b.data, line) != NULL);
    snprintf(line, sizeof(line), "\nchathub_tls_failures_total{reason=\"plain_http\"} %llu\n",
             (unsigned long long)hub_tls_stats.failures[HUB_TLS_FAIL_PLAIN_HTTP]);
    CHECK(strstr(b.data, line) != NULL);
    CHECK(strstr(b.data, "chathub_tls_failures_total{reason=\"not_tls\"}") != NULL);
    CHECK(strstr(b.data, "chathub_tls_reloads_total{result=\"failed\"} 2\n") != NULL);
    CHECK(strstr(b.data, "# TYPE chathub_tls_abandoned_total counter\n") != NULL);
    CHECK(hub_tls_stats.handshakes > 1000);
    hub_buf_free(&b);
}

int main(void)
{
    uv_loop_init(&loop);
    if (tmp_make_dir(&loop, "chathub_tls", dir, sizeof(dir)) != 0)
        return 1;
    write_pair("main.crt", "main.key", "localhost");
    struct hub_tls_ctx *ctx = load("main.crt", "main.key", NULL);
    if (ctx != NULL) {
        test_handshake_splits(ctx, TLS1_3_VERSION);
        test_handshake_splits(ctx, TLS1_2_VERSION);
        test_data_splits(ctx);
        test_cork(ctx);
        test_out_limit(ctx);
        test_plain_http(ctx);
        test_garbage(ctx);
        test_close_notify(ctx);
        test_resume(ctx);
        test_policy(ctx);
    }
    test_reload();
    test_load_errors();
    test_chain();
    if (ctx != NULL) {
        test_metrics(ctx);
        hub_tls_ctx_free(ctx);
    }
    tmp_remove_tree(&loop, dir);
    uv_loop_close(&loop);
    return CHECK_DONE();
}
