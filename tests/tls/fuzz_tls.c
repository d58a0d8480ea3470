/*
 * fuzz_tls.c: libFuzzer target for the TLS server input path (src/tls.c).
 *
 * The first input byte picks a mode and a split point:
 * - even: the rest is what a client sends to a fresh connection (sniffing,
 *   the ClientHello, anything after). It is fed twice, whole and cut in two,
 *   and the target traps when the two runs end in different states or
 *   failures: the outcome must not depend on how the bytes were cut.
 * - odd: a real OpenSSL client first completes a handshake; then the rest
 *   is cut into segments, each either a message the client encrypts and
 *   sends (valid records) or raw bytes injected as they are. The plaintext
 *   the server hands up must be exactly the client's messages until the
 *   first injected segment, and the server's answers (flushed in pieces
 *   whose sizes come from the input) must be readable by the client while
 *   the connection is open.
 * In both modes every byte due to the socket is acknowledged in pieces and
 * the pending count must add up; the sanitizers catch the rest.
 *
 * It is built with the other fuzz targets (tests/fuzz/meson.build, -Dfuzz=true)
 * when OpenSSL was found.
 *
 * and run it like the others (an empty corpus directory is fine; it finds
 * the 0x16 start within seconds):
 *
 *   mkdir -p /tmp/corpus-tls
 *   ./build-fuzz/tests/fuzz/fuzz_tls -max_total_time=60 /tmp/corpus-tls
 */
#include "hub/buf.h"
#include "hub/tls.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct hub_tls_ctx *ctx;
static SSL_CTX *cctx;

/* Writes a throwaway certificate and key to temporary files and loads them. */
static void init(void)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, key);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)"fuzz", -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509_sign(x, key, EVP_sha256());
    char cert_path[] = "/tmp/fuzz_tls_crt_XXXXXX", key_path[] = "/tmp/fuzz_tls_key_XXXXXX";
    int cfd = mkstemp(cert_path), kfd = mkstemp(key_path);
    FILE *cf = fdopen(cfd, "w"), *kf = fdopen(kfd, "w");
    if (cf == NULL || kf == NULL)
        abort();
    PEM_write_X509(cf, x);
    PEM_write_PrivateKey(kf, key, NULL, NULL, 0, NULL, NULL);
    fclose(cf);
    fclose(kf);
    char err[256];
    if (hub_tls_ctx_new(&ctx, cert_path, key_path, 0, NULL, err, sizeof(err)) != 0) {
        fprintf(stderr, "fuzz_tls: %s\n", err);
        abort();
    }
    unlink(cert_path);
    unlink(key_path);
    X509_free(x);
    EVP_PKEY_free(key);
    cctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, NULL);
}

static int collect(void *user, const char *p, size_t len)
{
    hub_buf_append(user, p, len);
    return 0;
}

/* Acknowledges everything due in pieces of at most step bytes, copying the
 * bytes to out (if not NULL); traps when the pending count disagrees. */
static void drain(struct hub_tls *t, size_t step, BIO *out)
{
    for (int guard = 0; guard < 1000; guard++) {
        size_t taken = 0;
        struct hub_iov wire;
        size_t before = hub_tls_pending(t);
        hub_tls_flush(t, NULL, 0, &taken, &wire);
        if (taken != 0 || wire.len > before)
            __builtin_trap();
        if (wire.len == 0) {
            if (hub_tls_pending(t) != 0)
                __builtin_trap();
            return;
        }
        size_t n = wire.len < step ? wire.len : step;
        if (out != NULL)
            BIO_write(out, wire.base, (int)n);
        hub_tls_sent(t, n);
        if (hub_tls_pending(t) != before - n)
            __builtin_trap();
    }
}

static void raw_input(const uint8_t *data, size_t size, size_t cut)
{
    struct hub_tls *a = hub_tls_new(ctx, 0), *b = hub_tls_new(ctx, 0);
    struct hub_buf pa = {0}, pb = {0};
    if (a == NULL || b == NULL)
        abort();
    int ra = hub_tls_feed(a, (const char *)data, size, collect, &pa);
    if (cut > size)
        cut = size;
    int rb = hub_tls_feed(b, (const char *)data, cut, collect, &pb);
    if (rb == 0)
        rb = hub_tls_feed(b, (const char *)data + cut, size - cut, collect, &pb);
    if (ra != rb || hub_tls_state(a) != hub_tls_state(b) ||
        hub_tls_failure(a) != hub_tls_failure(b))
        __builtin_trap();
    drain(a, 1 + cut % 97, NULL);
    drain(b, 1 + size % 89, NULL);
    hub_tls_free(a);
    hub_tls_free(b);
    hub_buf_free(&pa);
    hub_buf_free(&pb);
}

/* Moves everything the client wrote to the server. */
static int to_server(BIO *wbio, struct hub_tls *t, struct hub_buf *plain)
{
    char buf[16 * 1024];
    int rc = 0, n;
    while ((n = BIO_read(wbio, buf, sizeof(buf))) > 0 && rc == 0)
        rc = hub_tls_feed(t, buf, (size_t)n, collect, plain);
    return rc;
}

static void after_handshake(const uint8_t *data, size_t size, size_t step)
{
    SSL *cl = SSL_new(cctx);
    BIO *rbio = BIO_new(BIO_s_mem()), *wbio = BIO_new(BIO_s_mem());
    SSL_set_bio(cl, rbio, wbio);
    SSL_set_connect_state(cl);
    struct hub_tls *t = hub_tls_new(ctx, 0);
    struct hub_buf plain = {0}, expect = {0};
    if (t == NULL)
        abort();
    for (int round = 0; round < 8 && hub_tls_state(t) == HUB_TLS_HANDSHAKE; round++) {
        SSL_do_handshake(cl);
        if (to_server(wbio, t, &plain) != 0)
            break;
        drain(t, step, rbio);
    }
    if (hub_tls_state(t) != HUB_TLS_OPEN)
        __builtin_trap(); /* a genuine client must get through */
    int injected = 0;
    size_t off = 0;
    while (off < size && hub_tls_state(t) == HUB_TLS_OPEN) {
        /* Segment header: low 7 bits length, top bit "inject raw". */
        size_t len = data[off] & 0x7f;
        int raw = data[off] & 0x80;
        off++;
        if (len > size - off)
            len = size - off;
        if (raw) {
            injected = 1;
            hub_tls_feed(t, (const char *)data + off, len, collect, &plain);
        } else if (len > 0) {
            SSL_write(cl, data + off, (int)len);
            if (!injected)
                hub_buf_append(&expect, data + off, len);
            to_server(wbio, t, &plain);
            /* Echo it back in slices of the step size. */
            struct hub_iov iov[4];
            unsigned n = 0;
            for (size_t p = 0; p < len && n < 4; p += step, n++) {
                iov[n].base = (const char *)data + off + p;
                iov[n].len = len - p < step ? len - p : step;
            }
            size_t taken = 0;
            struct hub_iov wire;
            hub_tls_flush(t, iov, n, &taken, &wire);
        }
        off += len;
        drain(t, step, rbio);
        char sink[4096];
        while (SSL_read(cl, sink, sizeof(sink)) > 0) {
        }
    }
    if (!injected &&
        (plain.len != expect.len || (plain.len > 0 && memcmp(plain.data, expect.data, plain.len))))
        __builtin_trap();
    hub_tls_shutdown(t);
    drain(t, step, rbio);
    hub_tls_free(t);
    SSL_free(cl);
    hub_buf_free(&plain);
    hub_buf_free(&expect);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (ctx == NULL)
        init();
    if (size == 0)
        return 0;
    size_t step = 1 + (data[0] >> 1);
    if ((data[0] & 1) == 0)
        raw_input(data + 1, size - 1, step);
    else
        after_handshake(data + 1, size - 1, step);
    return 0;
}
