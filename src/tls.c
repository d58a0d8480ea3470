/*
 * tls.c: OpenSSL driven without sockets, between conn and http/ws.
 *
 * Like uWebSockets (uSockets' openssl.c) and h2o (lib/common/socket.c), each
 * SSL object talks to one custom BIO instead of a file descriptor: its read
 * side serves the ciphertext lent to hub_tls_feed for the duration of the
 * call (no copy into a BIO_s_mem first), and its write side appends to the
 * connection's ciphertext buffer (no BIO_read out of one afterwards). The BIO
 * never blocks and never fails a write except when out of memory, so an
 * SSL_write always completes, and an SSL_read that has run out of input
 * reports SSL_ERROR_WANT_READ with nothing left behind in the BIO: OpenSSL
 * keeps the partial record in its own buffer.
 *
 * Output is double-buffered. `acc` collects every byte OpenSSL writes
 * (handshake flights, tickets, alerts, application records). hub_tls_flush
 * hands out `wire`, which is never appended to while the caller holds a view
 * of it (a uv_write may be in flight on its bytes); when the view is fully
 * acknowledged the two swap, so one buffer is always free to grow.
 *
 * The first byte of a connection decides whether it is TLS at all: a TLS
 * client starts with a handshake record (0x16). Anything else is refused
 * here, before OpenSSL sees it, so the hub can say what went wrong (plain
 * HTTP, counted apart) instead of logging "wrong version number".
 *
 * Settings follow Mozilla's "intermediate" profile without DHE (no DH
 * parameters to manage): TLS 1.2 and 1.3, AEAD suites with ECDHE for 1.2,
 * OpenSSL's TLS 1.3 defaults, no renegotiation, server cipher preference,
 * stateless tickets (SSL_SESS_CACHE_OFF keeps no per-session memory), no
 * early data.
 */
#include "hub/tls.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* OpenSSL's default list filtered down to forward-secret AEAD suites; TLS 1.3
 * suites are configured apart and OpenSSL's defaults there are all strong. */
#define TLS12_CIPHERS                                                                              \
    "DEFAULT:!kRSA:!kDHE:!aNULL:!eNULL:!SHA1:!SHA256:!SHA384:!CAMELLIA:!ARIA:!PSK:!SRP:!DSS:"      \
    "!3DES:!RC4:!MD5"

#define RECORD_PLAIN 16384 /* largest plaintext of one TLS record */
#define SNIFF_MAX 7        /* longest HTTP method we recognise ("OPTIONS") */

struct hub_tls_stats hub_tls_stats;

struct hub_tls_ctx {
    SSL_CTX *ssl;    /* the context for new handshakes; one reference held here */
    char *cert_file; /* copied path of the PEM certificate (chain) file */
    char *key_file;  /* copied path of the PEM key file */
};

struct hub_tls {
    SSL *ssl;            /* the session; holds a reference to its SSL_CTX */
    const char *in;      /* ciphertext lent by hub_tls_feed, during the call only */
    size_t in_len;       /* bytes of in not yet read by OpenSSL */
    struct hub_buf acc;  /* ciphertext produced, queued behind wire */
    struct hub_buf wire; /* ciphertext lent to the caller; never appended to */
    size_t wire_off;     /* bytes of wire acknowledged by hub_tls_sent */
    size_t max_out;      /* bound on acc + unacknowledged wire */
    const char *why;     /* static reason of the failure, or NULL */
    uint8_t state;       /* enum hub_tls_state */
    uint8_t fail;        /* enum hub_tls_fail */
    uint8_t sniffed;     /* 1 once the first byte was seen to be 0x16 */
    uint8_t sniff_len;   /* upper-case letters seen so far when it was not */
    uint8_t resumed;     /* 1 if the handshake resumed a session */
    uint8_t nomem;       /* 1 if a BIO write ran out of memory */
};

/* ---- the BIO -------------------------------------------------------------- */

/* One method object for every connection, created with the first context and
 * kept while any context or connection uses it. */
static BIO_METHOD *bio_method;
static unsigned bio_method_refs;

static int bio_read(BIO *b, char *out, int len)
{
    struct hub_tls *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (t->in_len == 0 || len <= 0) {
        BIO_set_retry_read(b);
        return -1;
    }
    size_t n = t->in_len < (size_t)len ? t->in_len : (size_t)len;
    memcpy(out, t->in, n);
    t->in += n;
    t->in_len -= n;
    return (int)n;
}

static int bio_write(BIO *b, const char *data, int len)
{
    struct hub_tls *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (len <= 0)
        return 0;
    if (hub_buf_append(&t->acc, data, (size_t)len) != 0) {
        t->nomem = 1;
        return -1;
    }
    return len;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    /* OpenSSL flushes after each flight; everything is already in acc. */
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static int bio_method_ref(void)
{
    if (bio_method == NULL) {
        BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "chathub");
        if (m == NULL || !BIO_meth_set_read(m, bio_read) || !BIO_meth_set_write(m, bio_write) ||
            !BIO_meth_set_ctrl(m, bio_ctrl) || !BIO_meth_set_create(m, bio_create)) {
            BIO_meth_free(m);
            return HUB_ENOMEM;
        }
        bio_method = m;
    }
    bio_method_refs++;
    return 0;
}

static void bio_method_unref(void)
{
    assert(bio_method_refs > 0);
    if (--bio_method_refs == 0) {
        BIO_meth_free(bio_method);
        bio_method = NULL;
    }
}

/* ---- the server context -------------------------------------------------- */

static void set_err(char *err, size_t errsz, const char *fmt, ...) HUB_PRINTF_LIKE(3, 4);

static void set_err(char *err, size_t errsz, const char *fmt, ...)
{
    if (err == NULL || errsz == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errsz, fmt, ap);
    va_end(ap);
}

/* OpenSSL's reason for the last error, or fallback. */
static const char *ssl_reason(const char *fallback)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e != 0 ? ERR_reason_error_string(e) : NULL;
    return r != NULL ? r : fallback;
}

/* Offers http/1.1 when the client asks for it; a client that offers only
 * other protocols gets no ALPN answer (and is free to try HTTP/1.1). */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned inlen, void *arg)
{
    static const unsigned char ours[] = "\x08http/1.1";
    unsigned char *sel = NULL;
    if (SSL_select_next_proto(&sel, outlen, ours, sizeof(ours) - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

/* A key is never prompted for: chathub runs unattended. */
static int no_password(char *buf, int size, int rwflag, void *u)
{
    return -1;
}

/* Checks that path can be opened for reading; what names the file in err. */
static int check_readable(const char *path, const char *what, char *err, size_t errsz)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        set_err(err, errsz, "cannot read TLS %s file %s: %s", what, path, strerror(errno));
        return HUB_ENOENT;
    }
    fclose(f);
    return 0;
}

/* Builds a configured SSL_CTX from the two files. See hub_tls_ctx_new. */
static int load_ctx(SSL_CTX **out, const char *cert_file, const char *key_file, time_t now,
                    unsigned *warnings, char *err, size_t errsz)
{
    unsigned warn = 0;
    int rc = check_readable(cert_file, "certificate", err, errsz);
    if (rc == 0)
        rc = check_readable(key_file, "key", err, errsz);
    if (rc != 0)
        return rc;

    ERR_clear_error();
    SSL_CTX *c = SSL_CTX_new(TLS_server_method());
    if (c == NULL) {
        set_err(err, errsz, "TLS: cannot create a context: %s", ssl_reason("out of memory"));
        return HUB_ENOMEM;
    }
    if (!SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION) ||
        !SSL_CTX_set_cipher_list(c, TLS12_CIPHERS)) {
        set_err(err, errsz, "TLS: cannot configure the context: %s", ssl_reason("unknown"));
        rc = HUB_EIO;
        goto free_ctx;
    }
    SSL_CTX_set_options(c, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                               SSL_OP_PRIORITIZE_CHACHA | SSL_OP_NO_COMPRESSION);
    SSL_CTX_clear_options(c, SSL_OP_NO_TICKET);
    SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(c, 1);
    SSL_CTX_set_max_early_data(c, 0);
    SSL_CTX_set_alpn_select_cb(c, alpn_select, NULL);
    SSL_CTX_set_default_passwd_cb(c, no_password);

    if (SSL_CTX_use_certificate_chain_file(c, cert_file) != 1) {
        set_err(err, errsz, "no usable PEM certificate in %s: %s", cert_file,
                ssl_reason("unreadable"));
        rc = HUB_EINVAL;
        goto free_ctx;
    }
    BIO *kb = BIO_new_file(key_file, "r");
    EVP_PKEY *key = kb != NULL ? PEM_read_bio_PrivateKey(kb, NULL, no_password, NULL) : NULL;
    BIO_free(kb);
    if (key == NULL) {
        set_err(err, errsz,
                "no usable PEM private key in %s (an encrypted key is not supported): %s", key_file,
                ssl_reason("unreadable"));
        rc = HUB_EINVAL;
        goto free_ctx;
    }
    X509 *leaf = SSL_CTX_get0_certificate(c);
    if (leaf == NULL || X509_check_private_key(leaf, key) != 1) {
        EVP_PKEY_free(key);
        set_err(err, errsz, "the key in %s does not match the certificate in %s", key_file,
                cert_file);
        rc = HUB_EINVAL;
        goto free_ctx;
    }
    int used = SSL_CTX_use_PrivateKey(c, key);
    EVP_PKEY_free(key);
    if (used != 1 || SSL_CTX_check_private_key(c) != 1) {
        set_err(err, errsz, "TLS: cannot use the key in %s: %s", key_file, ssl_reason("unknown"));
        rc = HUB_EINVAL;
        goto free_ctx;
    }

    time_t at = now != 0 ? now : time(NULL);
    if (X509_cmp_time(X509_get0_notAfter(leaf), &at) < 0)
        warn |= HUB_TLS_WARN_EXPIRED;
    if (X509_cmp_time(X509_get0_notBefore(leaf), &at) > 0)
        warn |= HUB_TLS_WARN_NOT_YET_VALID;
#ifdef S_IROTH
    struct stat st;
    if (stat(key_file, &st) == 0 && (st.st_mode & S_IROTH))
        warn |= HUB_TLS_WARN_KEY_READABLE;
#endif
    ERR_clear_error();
    if (warnings != NULL)
        *warnings = warn;
    *out = c;
    return 0;

free_ctx:
    SSL_CTX_free(c);
    ERR_clear_error();
    return rc;
}

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p != NULL)
        memcpy(p, s, n);
    return p;
}

int hub_tls_ctx_new(struct hub_tls_ctx **out, const char *cert_file, const char *key_file,
                    time_t now, unsigned *warnings, char *err, size_t errsz)
{
    set_err(err, errsz, "%s", "");
    struct hub_tls_ctx *ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL)
        goto nomem;
    ctx->cert_file = dup_str(cert_file);
    ctx->key_file = dup_str(key_file);
    if (ctx->cert_file == NULL || ctx->key_file == NULL)
        goto free_ctx;
    if (bio_method_ref() != 0)
        goto free_ctx;
    int rc = load_ctx(&ctx->ssl, cert_file, key_file, now, warnings, err, errsz);
    if (rc != 0) {
        bio_method_unref();
        free(ctx->cert_file);
        free(ctx->key_file);
        free(ctx);
        return rc;
    }
    *out = ctx;
    return 0;

free_ctx:
    free(ctx->cert_file);
    free(ctx->key_file);
    free(ctx);
nomem:
    set_err(err, errsz, "TLS: out of memory");
    return HUB_ENOMEM;
}

int hub_tls_ctx_reload(struct hub_tls_ctx *ctx, time_t now, unsigned *warnings, char *err,
                       size_t errsz)
{
    set_err(err, errsz, "%s", "");
    SSL_CTX *fresh = NULL;
    int rc = load_ctx(&fresh, ctx->cert_file, ctx->key_file, now, warnings, err, errsz);
    if (rc != 0) {
        hub_tls_stats.reload_failures++;
        return rc;
    }
    /* Sessions under way hold their own reference to the old context. */
    SSL_CTX_free(ctx->ssl);
    ctx->ssl = fresh;
    hub_tls_stats.reloads++;
    return 0;
}

void hub_tls_ctx_describe(const struct hub_tls_ctx *ctx, char *buf, size_t bufsz)
{
    if (bufsz == 0)
        return;
    X509 *leaf = SSL_CTX_get0_certificate(ctx->ssl);
    char cn[256] = "?";
    char until[32] = "?";
    if (leaf != NULL) {
        X509_NAME_get_text_by_NID(X509_get_subject_name(leaf), NID_commonName, cn, sizeof(cn));
        struct tm tm;
        if (ASN1_TIME_to_tm(X509_get0_notAfter(leaf), &tm) == 1)
            strftime(until, sizeof(until), "%Y-%m-%dT%H:%M:%SZ", &tm);
    }
    STACK_OF(X509) *chain = NULL;
    SSL_CTX_get0_chain_certs(ctx->ssl, &chain);
    snprintf(buf, bufsz, "CN=%s, valid until %s, chain of %d", cn, until,
             1 + (chain != NULL ? sk_X509_num(chain) : 0));
    ERR_clear_error();
}

void hub_tls_ctx_free(struct hub_tls_ctx *ctx)
{
    if (ctx == NULL)
        return;
    SSL_CTX_free(ctx->ssl);
    free(ctx->cert_file);
    free(ctx->key_file);
    free(ctx);
    bio_method_unref();
}

const char *hub_tls_warning_text(unsigned warning)
{
    switch (warning) {
    case HUB_TLS_WARN_EXPIRED:
        return "the TLS certificate has expired: clients will refuse it";
    case HUB_TLS_WARN_NOT_YET_VALID:
        return "the TLS certificate is not valid yet: check the clock";
    case HUB_TLS_WARN_KEY_READABLE:
        return "the TLS key file is readable by other users: chmod 600 it";
    }
    return "unknown TLS warning";
}

/* ---- one connection ------------------------------------------------------ */

struct hub_tls *hub_tls_new(struct hub_tls_ctx *ctx, size_t max_out)
{
    struct hub_tls *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->max_out = max_out != 0 ? max_out : HUB_TLS_DEFAULT_MAX_OUT;
    ERR_clear_error();
    t->ssl = SSL_new(ctx->ssl);
    if (t->ssl == NULL)
        goto free_t;
    BIO *b = BIO_new(bio_method);
    if (b == NULL)
        goto free_ssl;
    BIO_set_data(b, t);
    SSL_set_bio(t->ssl, b, b); /* the SSL owns the BIO from here on */
    SSL_set_accept_state(t->ssl);
    bio_method_refs++;
    return t;

free_ssl:
    SSL_free(t->ssl);
free_t:
    ERR_clear_error();
    free(t);
    return NULL;
}

void hub_tls_free(struct hub_tls *t)
{
    if (t == NULL)
        return;
    if (t->state == HUB_TLS_HANDSHAKE)
        hub_tls_stats.abandoned++;
    SSL_free(t->ssl);
    hub_buf_free(&t->acc);
    hub_buf_free(&t->wire);
    free(t);
    bio_method_unref();
}

size_t hub_tls_pending(const struct hub_tls *t)
{
    return t->acc.len + (t->wire.len - t->wire_off);
}

/* The failure's return code. */
static int fail_code(const struct hub_tls *t)
{
    if (t->nomem)
        return HUB_ENOMEM;
    return t->fail == HUB_TLS_FAIL_LIMIT ? HUB_ENOBUFS : HUB_EPROTO;
}

/* Marks the connection failed for reason f and returns the code to report. */
static int fail(struct hub_tls *t, enum hub_tls_fail f)
{
    if (t->state != HUB_TLS_FAILED) {
        t->state = HUB_TLS_FAILED;
        t->fail = (uint8_t)f;
        t->why = t->nomem ? "out of memory" : ssl_reason(NULL);
        hub_tls_stats.failures[f]++;
    }
    ERR_clear_error();
    return fail_code(t);
}

/* Answers plain HTTP in plain HTTP: a browser shows it, curl prints it. */
static const char plain_http_answer[] = "HTTP/1.1 400 Bad Request\r\n"
                                        "Server: chathub\r\n"
                                        "Content-Type: text/plain; charset=utf-8\r\n"
                                        "Content-Length: 50\r\n"
                                        "Connection: close\r\n\r\n"
                                        "This port speaks TLS only: use https:// or wss://\n";

/* Looks at the first bytes of the connection. Returns 1 once they are known
 * to start a TLS record, 0 while undecided (everything consumed), or a
 * negative code after failing the connection. */
static int sniff(struct hub_tls *t, const char *data, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)data[i];
        if (t->sniff_len == 0 && c == 0x16) {
            t->sniffed = 1;
            return 1;
        }
        if (c >= 'A' && c <= 'Z' && t->sniff_len < SNIFF_MAX) {
            t->sniff_len++;
            continue;
        }
        if (c == ' ' && t->sniff_len >= 3) {
            if (hub_buf_append(&t->acc, plain_http_answer, sizeof(plain_http_answer) - 1) != 0)
                t->nomem = 1;
            return fail(t, HUB_TLS_FAIL_PLAIN_HTTP);
        }
        return fail(t, HUB_TLS_FAIL_NOT_TLS);
    }
    return 0;
}

int hub_tls_feed(struct hub_tls *t, const char *data, size_t len, hub_tls_plain_cb on_plain,
                 void *user)
{
    if (t->state == HUB_TLS_FAILED)
        return fail_code(t);
    if (t->state == HUB_TLS_CLOSED)
        return HUB_ECLOSED;
    if (!t->sniffed) {
        int s = sniff(t, data, len);
        if (s <= 0)
            return s;
    }
    char plain[RECORD_PLAIN];
    int rc = 0;
    /* Only ciphertext this input makes us produce counts against the bound
     * here: a full flush budget leaves the records' overhead above it, and
     * a slow reader that still sends application data is over no limit. */
    size_t pending_before = hub_tls_pending(t);
    t->in = data;
    t->in_len = len;
    for (;;) {
        ERR_clear_error();
        if (t->state == HUB_TLS_HANDSHAKE) {
            int r = SSL_do_handshake(t->ssl);
            if (r == 1) {
                t->state = HUB_TLS_OPEN;
                t->resumed = SSL_session_reused(t->ssl) ? 1 : 0;
                hub_tls_stats.handshakes++;
                hub_tls_stats.resumed += t->resumed;
                continue;
            }
            if (SSL_get_error(t->ssl, r) == SSL_ERROR_WANT_READ && !t->nomem)
                break;
            rc = fail(t, HUB_TLS_FAIL_HANDSHAKE);
            break;
        }
        int r = SSL_read(t->ssl, plain, sizeof(plain));
        if (r > 0) {
            if (on_plain(user, plain, (size_t)r) != 0)
                break;
            continue;
        }
        int e = SSL_get_error(t->ssl, r);
        if (e == SSL_ERROR_WANT_READ && !t->nomem)
            break;
        if (e == SSL_ERROR_ZERO_RETURN) {
            /* The peer's close_notify: answer with ours. */
            t->state = HUB_TLS_CLOSED;
            SSL_shutdown(t->ssl);
            ERR_clear_error();
            rc = t->nomem ? HUB_ENOMEM : HUB_ECLOSED;
            break;
        }
        rc = fail(t, HUB_TLS_FAIL_PROTOCOL);
        break;
    }
    t->in = NULL;
    t->in_len = 0;
    if (rc == 0 && hub_tls_pending(t) > pending_before && hub_tls_pending(t) > t->max_out)
        rc = fail(t, HUB_TLS_FAIL_LIMIT);
    return rc;
}

/* Encrypts len bytes as application data. Returns 0, or the code of the
 * failure (HUB_ENOMEM when the BIO ran out of memory, else HUB_EPROTO). */
static int encrypt(struct hub_tls *t, const char *data, size_t len)
{
    if (len == 0)
        return 0;
    ERR_clear_error();
    int r = SSL_write(t->ssl, data, (int)len);
    if (r == (int)len && !t->nomem)
        return 0;
    return fail(t, HUB_TLS_FAIL_PROTOCOL);
}

/* Encrypts as much of iov as the budget allows; see hub_tls_flush. */
static int encrypt_batch(struct hub_tls *t, const struct hub_iov *iov, unsigned niov, size_t *taken)
{
    size_t pending = hub_tls_pending(t);
    size_t budget = pending < t->max_out ? t->max_out - pending : 0;
    char stage[RECORD_PLAIN];
    size_t staged = 0;
    for (unsigned i = 0; i < niov && budget > 0; i++) {
        const char *p = iov[i].base;
        size_t left = iov[i].len < budget ? iov[i].len : budget;
        budget -= left;
        *taken += left;
        while (left > 0) {
            if (staged == 0 && left >= RECORD_PLAIN) {
                /* Whole records straight from the caller's memory. */
                size_t n = left - left % RECORD_PLAIN;
                int rc = encrypt(t, p, n);
                if (rc != 0)
                    return rc;
                p += n;
                left -= n;
                continue;
            }
            size_t n = RECORD_PLAIN - staged;
            if (n > left)
                n = left;
            memcpy(stage + staged, p, n);
            staged += n;
            p += n;
            left -= n;
            if (staged == RECORD_PLAIN) {
                int rc = encrypt(t, stage, staged);
                if (rc != 0)
                    return rc;
                staged = 0;
            }
        }
    }
    return encrypt(t, stage, staged);
}

int hub_tls_flush(struct hub_tls *t, const struct hub_iov *iov, unsigned niov, size_t *taken,
                  struct hub_iov *wire)
{
    int rc = 0;
    *taken = 0;
    wire->base = NULL;
    wire->len = 0;
    if (t->state == HUB_TLS_OPEN) {
        rc = encrypt_batch(t, iov, niov, taken);
    } else if (t->state != HUB_TLS_HANDSHAKE) {
        for (unsigned i = 0; i < niov; i++)
            *taken += iov[i].len;
    }
    if (t->wire_off == t->wire.len && t->acc.len > 0) {
        struct hub_buf spare = t->wire;
        t->wire = t->acc;
        t->acc = spare;
        t->acc.len = 0;
        t->wire_off = 0;
    }
    /* No pointer arithmetic on a buffer never allocated (UBSan: a NULL
     * plus 0 is undefined): an empty wire stays {NULL, 0}. */
    if (t->wire.data != NULL) {
        wire->base = t->wire.data + t->wire_off;
        wire->len = t->wire.len - t->wire_off;
    }
    return rc;
}

void hub_tls_sent(struct hub_tls *t, size_t n)
{
    assert(n <= t->wire.len - t->wire_off);
    t->wire_off += n;
    if (t->wire_off < t->wire.len)
        return;
    t->wire_off = 0;
    t->wire.len = 0;
    /* An idle connection holds no buffers; a busy one keeps the spare. */
    if (t->acc.len == 0) {
        hub_buf_free(&t->wire);
        hub_buf_free(&t->acc);
    }
}

int hub_tls_shutdown(struct hub_tls *t)
{
    if (t->state != HUB_TLS_OPEN)
        return 0;
    t->state = HUB_TLS_CLOSED;
    ERR_clear_error();
    SSL_shutdown(t->ssl);
    ERR_clear_error();
    return t->nomem ? HUB_ENOMEM : 0;
}

enum hub_tls_state hub_tls_state(const struct hub_tls *t)
{
    return (enum hub_tls_state)t->state;
}

enum hub_tls_fail hub_tls_failure(const struct hub_tls *t)
{
    return (enum hub_tls_fail)t->fail;
}

static const char *const fail_names[HUB_TLS_FAIL_COUNT] = {
    "none", "plain_http", "not_tls", "handshake", "protocol", "limit",
};

const char *hub_tls_fail_name(enum hub_tls_fail f)
{
    return (unsigned)f < HUB_TLS_FAIL_COUNT ? fail_names[f] : "unknown";
}

const char *hub_tls_failure_text(const struct hub_tls *t)
{
    if (t->fail == HUB_TLS_FAIL_NONE)
        return "";
    if (t->fail == HUB_TLS_FAIL_PLAIN_HTTP)
        return "plain HTTP on the TLS port";
    if (t->fail == HUB_TLS_FAIL_NOT_TLS)
        return "not a TLS record";
    if (t->fail == HUB_TLS_FAIL_LIMIT)
        return "too much ciphertext waiting for the socket";
    return t->why != NULL ? t->why : hub_tls_fail_name((enum hub_tls_fail)t->fail);
}

int hub_tls_resumed(const struct hub_tls *t)
{
    return t->resumed;
}

const char *hub_tls_version(const struct hub_tls *t)
{
    return SSL_get_version(t->ssl);
}

int hub_tls_metrics_render(struct hub_buf *b)
{
    const struct hub_tls_stats *s = &hub_tls_stats;
    int rc = hub_buf_printf(b,
                            "# HELP chathub_tls_handshakes_total TLS handshakes completed.\n"
                            "# TYPE chathub_tls_handshakes_total counter\n"
                            "chathub_tls_handshakes_total %llu\n"
                            "# HELP chathub_tls_resumed_total TLS handshakes that resumed a "
                            "session.\n"
                            "# TYPE chathub_tls_resumed_total counter\n"
                            "chathub_tls_resumed_total %llu\n"
                            "# HELP chathub_tls_abandoned_total TLS connections closed before "
                            "their handshake ended.\n"
                            "# TYPE chathub_tls_abandoned_total counter\n"
                            "chathub_tls_abandoned_total %llu\n"
                            "# HELP chathub_tls_failures_total TLS connections failed, by "
                            "reason.\n"
                            "# TYPE chathub_tls_failures_total counter\n",
                            (unsigned long long)s->handshakes, (unsigned long long)s->resumed,
                            (unsigned long long)s->abandoned);
    for (int f = HUB_TLS_FAIL_NONE + 1; f < HUB_TLS_FAIL_COUNT && rc == 0; f++)
        rc = hub_buf_printf(b, "chathub_tls_failures_total{reason=\"%s\"} %llu\n", fail_names[f],
                            (unsigned long long)s->failures[f]);
    if (rc == 0)
        rc = hub_buf_printf(b,
                            "# HELP chathub_tls_reloads_total Certificate reloads, by result.\n"
                            "# TYPE chathub_tls_reloads_total counter\n"
                            "chathub_tls_reloads_total{result=\"ok\"} %llu\n"
                            "chathub_tls_reloads_total{result=\"failed\"} %llu\n",
                            (unsigned long long)s->reloads, (unsigned long long)s->reload_failures);
    return rc == 0 ? 0 : HUB_ENOMEM;
}
