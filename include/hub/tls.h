/*
 * tls.h: TLS for the listening port, sans-I/O, on OpenSSL 3.
 *
 * Two objects:
 * - struct hub_tls_ctx: the server's certificate, key and settings (one
 *   SSL_CTX). TLS 1.2 and 1.3 only; for TLS 1.2 only forward-secret AEAD
 *   suites of OpenSSL's default list (ECDHE with AES-GCM or ChaCha20); ALPN
 *   http/1.1; stateless session tickets, no server-side session cache;
 *   no renegotiation, no 0-RTT. hub_tls_ctx_reload swaps in a new SSL_CTX:
 *   every connection holds its own reference to the SSL_CTX it started with,
 *   so sessions under way keep working and new handshakes use the new files.
 * - struct hub_tls: one connection's TLS state. It never touches a socket:
 *   ciphertext that arrived goes in through hub_tls_feed, which hands the
 *   plaintext up through a callback; plaintext to send goes in through
 *   hub_tls_flush, which encrypts a whole batch (the connection's corked
 *   output of one loop iteration) into one contiguous run of ciphertext that
 *   the caller writes to the socket and acknowledges with hub_tls_sent.
 *
 * Invariants:
 * - Small plaintext slices are coalesced into full records (up to 16 KiB of
 *   plaintext each), so a batch of many small frames costs one record, not
 *   one per frame.
 * - Ciphertext waiting for the socket is bounded (max_out): hub_tls_flush
 *   takes no more plaintext than fits, and leaves the rest in the caller's
 *   queue, where the caller's own output limits see it (the last records'
 *   overhead may pass max_out by a few bytes each). Ciphertext produced
 *   while reading (handshake flights, tickets, key updates, alerts) counts
 *   too: a read that makes more due when the bound is passed fails the
 *   connection with HUB_TLS_FAIL_LIMIT; a read that makes nothing due never
 *   does.
 * - Incoming ciphertext is never buffered here beyond OpenSSL's one partial
 *   record: every hub_tls_feed decrypts all it can before it returns.
 * - An idle connection holds no buffers of its own (OpenSSL's are released
 *   too, SSL_MODE_RELEASE_BUFFERS).
 * - A connection whose first bytes are not a TLS handshake record is failed
 *   at once, without OpenSSL: HUB_TLS_FAIL_PLAIN_HTTP when they look like an
 *   HTTP request line (a short "400: this port speaks TLS" answer is then
 *   queued as the ciphertext to send, in clear), HUB_TLS_FAIL_NOT_TLS
 *   otherwise (nothing is sent).
 * - After a failure, or once close_notify went either way, plaintext given to
 *   hub_tls_flush is dropped (reported as taken) and only the bytes already
 *   due (an alert, close_notify, the 400) are still handed out: the caller
 *   sends them and closes.
 *
 * Everything runs on the loop thread. The counters in hub_tls_stats are
 * process-wide and written by this module only.
 */
#ifndef HUB_TLS_H
#define HUB_TLS_H

#include "hub/buf.h"

#include <time.h>

struct hub_tls_ctx;
struct hub_tls;

/* Warnings about a certificate or key that loaded (bit flags). */
enum hub_tls_warning {
    HUB_TLS_WARN_EXPIRED = 1u << 0,       /* the certificate's notAfter has passed */
    HUB_TLS_WARN_NOT_YET_VALID = 1u << 1, /* the certificate's notBefore is in the future */
    HUB_TLS_WARN_KEY_READABLE = 1u << 2,  /* the key file is readable by other users */
};

/* Why a connection failed. */
enum hub_tls_fail {
    HUB_TLS_FAIL_NONE = 0,   /* no failure */
    HUB_TLS_FAIL_PLAIN_HTTP, /* plain HTTP sent to the TLS port */
    HUB_TLS_FAIL_NOT_TLS,    /* the first bytes are not a TLS record */
    HUB_TLS_FAIL_HANDSHAKE,  /* the handshake failed (version, cipher, malformed, alert) */
    HUB_TLS_FAIL_PROTOCOL,   /* a bad record or an alert after the handshake */
    HUB_TLS_FAIL_LIMIT,      /* more ciphertext due than max_out allows */
    HUB_TLS_FAIL_COUNT
};

/* The connection's phase. */
enum hub_tls_state {
    HUB_TLS_HANDSHAKE = 0, /* waiting for the handshake to finish */
    HUB_TLS_OPEN,          /* application data flows both ways */
    HUB_TLS_CLOSED,        /* close_notify received or sent: no more data */
    HUB_TLS_FAILED,        /* failed; see hub_tls_failure */
};

/* Process-wide TLS counters, exported by hub_tls_metrics_render. */
struct hub_tls_stats {
    uint64_t handshakes;                   /* handshakes completed */
    uint64_t resumed;                      /* of which resumed a session (ticket) */
    uint64_t abandoned;                    /* connections freed before their handshake ended */
    uint64_t failures[HUB_TLS_FAIL_COUNT]; /* failed connections by enum hub_tls_fail */
    uint64_t reloads;                      /* successful hub_tls_ctx_reload calls */
    uint64_t reload_failures;              /* reloads that kept the old certificate */
};

extern struct hub_tls_stats hub_tls_stats;

/* Default bound on ciphertext waiting for the socket, per connection. */
#define HUB_TLS_DEFAULT_MAX_OUT (256 * 1024)

/* ---- server context ---------------------------------------------------- */

/* Loads the PEM certificate file (the certificate first, then any chain
 * certificates) and the PEM private key file into a new context. Paths are
 * copied (reload reads them again). On success *out is set, *warnings (if
 * not NULL) receives enum hub_tls_warning bits, and 0 is returned. On
 * failure returns HUB_ENOENT (a file cannot be read), HUB_EINVAL (no
 * certificate or key in a file, key does not match the certificate),
 * HUB_ENOMEM or HUB_EIO (OpenSSL failed otherwise), and writes a one-line
 * reason naming the file into err (errsz bytes, always NUL-terminated when
 * errsz > 0). now is the time the validity is checked against (0: the
 * current time). */
int hub_tls_ctx_new(struct hub_tls_ctx **out, const char *cert_file, const char *key_file,
                    time_t now, unsigned *warnings, char *err, size_t errsz);

/* Re-reads the files given to hub_tls_ctx_new into a new SSL_CTX. On success
 * new handshakes use it, connections under way keep the one they started
 * with, and 0 is returned with *warnings set as above. On failure the
 * current certificate stays in use and the return and err are as for
 * hub_tls_ctx_new. Counts into hub_tls_stats.reloads / reload_failures. */
int hub_tls_ctx_reload(struct hub_tls_ctx *ctx, time_t now, unsigned *warnings, char *err,
                       size_t errsz);

/* Writes a one-line description of the certificate in use ("CN=example.org,
 * valid until 2027-01-01T00:00:00Z, chain of 2") into buf, for logs. */
void hub_tls_ctx_describe(const struct hub_tls_ctx *ctx, char *buf, size_t bufsz);

/* Releases the context. Connections created from it may outlive it: each
 * holds its own reference to its SSL_CTX. NULL is ignored. */
void hub_tls_ctx_free(struct hub_tls_ctx *ctx);

/* Returns a static English sentence for one enum hub_tls_warning bit. */
const char *hub_tls_warning_text(unsigned warning);

/* ---- one connection ---------------------------------------------------- */

/* Plaintext arrived. data is lent for the call only. Return 0 to go on, or
 * nonzero to stop (the connection is closing): hub_tls_feed then returns at
 * once and drops the rest of its input. */
typedef int (*hub_tls_plain_cb)(void *user, const char *data, size_t len);

/* Creates a server-side connection on ctx's current certificate, with at
 * most max_out bytes of ciphertext waiting for the socket (0: the default).
 * Returns NULL when out of memory. The caller owns the result. */
struct hub_tls *hub_tls_new(struct hub_tls_ctx *ctx, size_t max_out);

/* Frees a connection (counted as abandoned if its handshake never ended).
 * Outstanding views from hub_tls_flush become invalid. NULL is ignored. */
void hub_tls_free(struct hub_tls *t);

/* Takes len bytes of ciphertext from the socket (data is borrowed for the
 * call), advances the handshake and hands every byte of plaintext it can
 * decrypt to on_plain(user, ...). Afterwards there may be ciphertext to send
 * (hub_tls_pending): the caller should flush. Returns:
 *   0            all input consumed (or on_plain asked to stop);
 *   HUB_ECLOSED  the peer sent close_notify (a reply is due; no more input);
 *   HUB_EPROTO   the connection failed (hub_tls_failure says why; an alert
 *                or the 400 answer may be due);
 *   HUB_ENOBUFS  more ciphertext is due than max_out allows (failed, LIMIT);
 *   HUB_ENOMEM   out of memory (failed).
 * Once the state is CLOSED or FAILED, further input is ignored and the same
 * code is returned again. */
int hub_tls_feed(struct hub_tls *t, const char *data, size_t len, hub_tls_plain_cb on_plain,
                 void *user);

/* The flush of one loop iteration. Encrypts the leading plaintext of
 * iov[0..niov) (borrowed for the call) in one batch, as much as max_out
 * allows, and sets *taken to the number of plaintext bytes consumed (the
 * caller drops them from its queue; an iov may be taken in part). Before the
 * handshake ends nothing is taken; after a failure or close_notify
 * everything is taken and dropped. Then *wire is set to the ciphertext to
 * write next (len 0: none), which stays valid and unchanged until
 * hub_tls_sent has acknowledged all of it or the connection is freed: bytes
 * produced meanwhile queue behind it, and a later hub_tls_flush returns the
 * unacknowledged rest of the same view first (so call it again after
 * hub_tls_sent to get what queued behind). Returns 0, or HUB_ENOMEM or
 * HUB_EPROTO when encrypting failed (the connection is then FAILED; *wire is
 * still set, and *taken counts what was taken before). */
int hub_tls_flush(struct hub_tls *t, const struct hub_iov *iov, unsigned niov, size_t *taken,
                  struct hub_iov *wire);

/* Acknowledges n bytes (at most the view's length) of the view from
 * hub_tls_flush as handed to the socket. When all of it is, its storage is
 * released or reused. */
void hub_tls_sent(struct hub_tls *t, size_t n);

/* Ciphertext bytes due to the socket that hub_tls_sent has not yet
 * acknowledged (the view and whatever queues behind it). */
size_t hub_tls_pending(const struct hub_tls *t);

/* Queues close_notify once the handshake has ended (a no-op in other
 * states); the state becomes CLOSED. Flush afterwards. Returns 0 or
 * HUB_ENOMEM. */
int hub_tls_shutdown(struct hub_tls *t);

/* Returns the current enum hub_tls_state. */
enum hub_tls_state hub_tls_state(const struct hub_tls *t);

/* Returns why the connection failed (HUB_TLS_FAIL_NONE if it did not). */
enum hub_tls_fail hub_tls_failure(const struct hub_tls *t);

/* Returns a static description of the failure for debug logs: OpenSSL's
 * reason ("wrong version number", "no shared cipher") when it had one, else
 * the failure's name. "" when there was no failure. */
const char *hub_tls_failure_text(const struct hub_tls *t);

/* Returns 1 if the handshake resumed a session, else 0. */
int hub_tls_resumed(const struct hub_tls *t);

/* Returns the negotiated protocol version ("TLSv1.3"), static. */
const char *hub_tls_version(const struct hub_tls *t);

/* Returns the static name of an enum hub_tls_fail value ("plain_http"). */
const char *hub_tls_fail_name(enum hub_tls_fail f);

/* Appends the Prometheus text of hub_tls_stats to b (chathub_tls_* lines).
 * Returns 0 or HUB_ENOMEM. */
int hub_tls_metrics_render(struct hub_buf *b);

#endif
