/*
 * conn.h: one TCP connection on the loop.
 *
 * A hub_conn embeds its uv_tcp_t and its output queue and is itself embedded
 * in the owner's per-client struct (the server's). It knows nothing of HTTP or
 * WebSocket: bytes come up through on_read, bytes go down through
 * hub_conn_send / hub_conn_write, and the end comes up through on_close.
 *
 * Invariants:
 * - Reads land in one buffer lent by the hub_io (shared by every connection
 *   of the loop); the bytes are valid only during on_read, so upper layers
 *   consume or copy them before returning. No idle connection holds a read
 *   buffer.
 * - Output is corked: sends only queue; the hub_io flushes each connection
 *   that has output right after the loop has processed I/O (a uv_check
 *   handle) and again just before the loop sleeps (a uv_prepare handle, like
 *   Redis's beforeSleep), so output queued from timer and close callbacks
 *   leaves in the same loop iteration instead of waiting for the next
 *   wake-up. At most one uv_write is in flight per connection. Its request
 *   comes from a pool in the io, so idle connections do not carry one.
 * - A connection is freed only after libuv's close callback: hub_conn_close
 *   marks it closing, and on_close fires from the close callback, after which
 *   the owner may free the memory. on_close fires exactly once.
 * - A conn with io == NULL is "detached": sends queue into out and nothing is
 *   ever written or read. Unit tests use this to drive upper layers sans-I/O.
 * - Timeouts: each connection has at most one deadline, kept in the io's
 *   timer wheel (one uv_timer for all connections, half-second resolution).
 *   When it passes, on_timeout fires once; the owner decides what it meant
 *   (handshake deadline, heartbeat, close handshake) and sets the next one.
 * - Output limits: past the hard limit sends fail at once; past the soft
 *   limit they fail once the queue has stayed above it for soft_hold_ms.
 *   Control frames use hub_conn_write_urgent and go ahead of queued output
 *   that has not started, so a backlog never delays a pong. Urgent bytes
 *   count too: they may pass the hard limit by HUB_CONN_URGENT_ALLOWANCE
 *   only. Only hub_conn_write_force ignores the limit, for the one frame or
 *   response that ends a connection.
 * - Backpressure: a connection whose queue passes its high watermark stops
 *   reading; once the queue drains to its low watermark, reading resumes.
 *   A peer that sends requests (HTTP, pings) without reading the answers
 *   therefore stops being read instead of growing the queue. This is
 *   independent of hub_conn_pause: reading runs only when neither asks for
 *   a pause. A read that fills the whole lent buffer also stops reading
 *   until the io's next flush, so one connection is read at most one buffer
 *   per loop iteration and what that input produced (a room's fan-out) is
 *   written before more is read.
 * - Accounting: hub_metrics.output_queued is the sum of out.bytes over
 *   every attached connection (the chathub_output_queued_bytes gauge).
 * - TLS (hub_conn_use_tls): the layers above see exactly the same calls and
 *   plaintext. on_read gets decrypted bytes; out holds plaintext, and every
 *   limit, watermark and urgent-write rule above applies to it unchanged.
 *   The flush hands the leading plaintext of out to one hub_tls_flush batch
 *   (whole records, not one per frame) and writes the resulting ciphertext
 *   with one socket write, as the plain flush does; plaintext leaves out only
 *   as it is encrypted, and the ciphertext waiting for the socket is bounded
 *   by the TLS layer (HUB_TLS_DEFAULT_MAX_OUT), so a slow reader's backlog
 *   stays in out where the limits see it. hub_conn_close_after_flush sends
 *   close_notify after the last byte. A TLS failure (plain HTTP, garbage, a
 *   bad handshake) sends what the TLS layer has due (an alert, its 400) and
 *   closes, without waking the layers above.
 */
#ifndef HUB_CONN_H
#define HUB_CONN_H

#include "hub/buf.h"

#include <stdint.h>
#include <uv.h>

struct hub_conn;
struct hub_io;
struct hub_tls;
struct hub_tls_ctx;

/* Bytes arrived. data is lent for the duration of the call only. */
typedef void (*hub_conn_read_cb)(struct hub_conn *c, const char *data, size_t len);

/* The connection is fully closed (libuv close callback). The owner may free
 * the struct that embeds c from here on, but not before. */
typedef void (*hub_conn_close_cb)(struct hub_conn *c);

/* The connection's deadline passed (see hub_conn_set_timeout). */
typedef void (*hub_conn_timeout_cb)(struct hub_conn *c);

/* What the owner does with a kind of connection and what it allows it: the
 * callbacks and the output policy. One hub_conn_ops serves every connection
 * of that kind (the server has one for HTTP and one for WebSocket
 * connections), so an idle connection carries one pointer instead of three
 * callbacks and four limits. Borrowed: it must outlive every conn that
 * points at it, and a change to it applies to all of them from their next
 * queue change. A conn points at hub_conn_ops_none (no callbacks, no soft
 * limit, no watermarks) until the owner sets c->ops. */
struct hub_conn_ops {
    hub_conn_read_cb on_read;       /* bytes arrived; NULL drops them */
    hub_conn_close_cb on_close;     /* required for an attached conn */
    hub_conn_timeout_cb on_timeout; /* required once a timeout is set */
    uint32_t soft_limit;            /* queue bytes tolerated for soft_hold_ms (0 = off) */
    uint32_t soft_hold_ms;          /* how long the queue may stay above soft_limit */
    uint32_t high_water;            /* queue bytes above which reading pauses (0 = never) */
    uint32_t low_water;             /* queue bytes at or below which reading resumes */
};

extern const struct hub_conn_ops hub_conn_ops_none;

/* Fills ops' policy the way a conn had it by default: read watermarks at
 * half and a quarter of out_limit (none when out_limit is 0), no soft
 * limit; limits above UINT32_MAX are capped there. The callbacks are left
 * as they are. */
void hub_conn_ops_policy(struct hub_conn_ops *ops, size_t out_limit);

/* Links a connection into a timer-wheel slot. */
struct hub_conn_link {
    struct hub_conn_link *prev; /* previous in the slot, or the slot head */
    struct hub_conn_link *next; /* next in the slot, or the slot head */
};

enum hub_conn_flags {
    HUB_CONN_CLOSING = 1u << 0,           /* hub_conn_close was called */
    HUB_CONN_CLOSE_AFTER_FLUSH = 1u << 1, /* close once the queue drains */
    HUB_CONN_IN_FLUSH_LIST = 1u << 2,     /* linked in io->flush_head */
    HUB_CONN_WRITING = 1u << 3,           /* a uv_write is in flight */
    HUB_CONN_READ_STOPPED = 1u << 4,      /* reading paused */
    HUB_CONN_SHUTDOWN = 1u << 5,          /* output done, TCP shutdown under way */
    HUB_CONN_PAUSED_OWNER = 1u << 6,      /* hub_conn_pause(c, 1) is in force */
    HUB_CONN_PAUSED_OUTPUT = 1u << 7,     /* the queue passed the high watermark */
    HUB_CONN_ACCEPTED = 1u << 8,          /* hub_conn_accept succeeded: reads are managed */
    HUB_CONN_PAUSED_BATCH = 1u << 9,      /* a full read buffer: more after the next flush */
};

/* Bytes an urgent frame may queue past the hard output limit: room for a
 * pong, a ping and a close, never for a stream of them. */
#define HUB_CONN_URGENT_ALLOWANCE 1024

/* The times a conn keeps (due, last_rx, over_soft_since) are the loop's
 * milliseconds truncated to 32 bits: compare them only through differences
 * (hub_conn_ms_after), which are right for spans under 24 days, far beyond
 * any deadline or hold the hub sets (hub_conn_set_timeout caps at that). */
static inline int hub_conn_ms_after(uint32_t a, uint32_t b)
{
    return (int32_t)(a - b) > 0; /* 1 if time a is later than time b */
}

/* Where the client is: its IP address in binary, kept from the accept (or
 * from a trusted proxy's headers, hub_conn_set_client_addr) so that it can
 * be named in the close log line after the socket is gone; formatted only
 * when asked for (hub_conn_peer). */
enum { HUB_CONN_AF_NONE = 0, HUB_CONN_AF_INET = 4, HUB_CONN_AF_INET6 = 6 };

struct hub_conn {
    uv_tcp_t tcp;                   /* the socket; tcp.data points back at this conn */
    struct hub_outq out;            /* queued output, owned */
    struct hub_io *io;              /* the loop's shared state, or NULL when detached */
    const struct hub_conn_ops *ops; /* callbacks and policy, borrowed (see hub_conn_ops) */
    struct hub_conn *flush_next;    /* link in io's flush list */
    struct hub_conn_link wheel;     /* link in io's timer wheel while a deadline is set */
    struct hub_tls *tls;            /* TLS state when the port speaks TLS, owned; else NULL */
    uint64_t bytes_in;              /* bytes read (for the close log line) */
    uint64_t bytes_out;             /* bytes written */
    uint32_t inflight;              /* bytes of out handed to the in-flight uv_write */
    uint32_t due;                   /* loop time (32-bit ms) of the deadline, if linked */
    uint32_t last_rx;               /* loop time (32-bit ms) of the last bytes read */
    uint32_t over_soft_since;       /* loop time the queue passed soft_limit + 1, 0 = below */
    uint16_t flags;                 /* enum hub_conn_flags */
    uint8_t addr_family;            /* HUB_CONN_AF_*: what addr holds */
    uint8_t addr[16];               /* the client's IP (4 or 16 bytes), network order */
};

/* Creates the loop-wide state: the lent read buffer and the flush handle.
 * Returns 0, HUB_ENOMEM or HUB_EIO. io is owned by the caller until
 * hub_io_close. */
int hub_io_init(struct hub_io **io, uv_loop_t *loop);

/* Closes the io's handles; the memory is freed from their close callbacks,
 * so run the loop afterwards. Every conn must be closed first. */
void hub_io_close(struct hub_io *io);

/* Returns the loop. */
uv_loop_t *hub_io_loop(struct hub_io *io);

/* The owner's pointer for the io (NULL until set; borrowed): lets the owner
 * of every conn on io (the server) find itself from a conn without each
 * connection carrying a pointer to it. */
void hub_io_set_data(struct hub_io *io, void *data);
void *hub_io_data(const struct hub_io *io);

/* Prepares c (zeroed by this call) for accept: initialises the tcp handle on
 * io's loop, with out's byte limit set to out_limit (0 = none) and c->ops at
 * hub_conn_ops_none (set it before the loop runs again). Returns 0 or
 * HUB_EIO. After success c must be closed with hub_conn_close. */
int hub_conn_init(struct hub_conn *c, struct hub_io *io, size_t out_limit);

/* Prepares a detached conn for tests: no socket, sends only queue. */
void hub_conn_init_detached(struct hub_conn *c, size_t out_limit);

/* Accepts a pending connection from server into c and starts reading; the
 * peer's address is kept in binary (one getpeername), not formatted.
 * Returns 0 or HUB_EIO (then close c). */
int hub_conn_accept(struct hub_conn *c, uv_stream_t *server);

/* Makes c speak TLS with ctx's current certificate: call it after
 * hub_conn_accept, before the loop runs again (before any byte is read).
 * From then on on_read receives plaintext and out holds plaintext, which
 * each flush encrypts in one batch (see TLS above). ctx is borrowed for the
 * call (the connection keeps its own reference to the certificate, so a
 * reload or ctx's release does not affect it). Returns 0, HUB_ENOMEM, or
 * HUB_EINVAL when the hub was built without TLS or c is detached. */
int hub_conn_use_tls(struct hub_conn *c, struct hub_tls_ctx *ctx);

/* Accepts the pending connection of server and closes it at once, without
 * allocating: for when the memory for a hub_conn cannot be had. libuv stops
 * watching a listener whose connection callback did not accept, so a
 * callback that cannot take a connection must call this. The io keeps one
 * spare handle for it; while that spare is still closing, the rejection is
 * remembered and done from the spare's close callback (server must stay
 * open or closing until then, which an embedded listener does). Returns 0
 * (rejected, or rejection deferred) or HUB_EIO (no connection was pending,
 * or the accept failed: nothing to undo). */
int hub_io_reject(struct hub_io *io, uv_stream_t *server);

/* Queues a reference to chunk (the caller keeps its own). Returns 0,
 * HUB_ENOBUFS when the output limit would be passed (nothing queued: the
 * caller decides, usually a slow-client close), HUB_ECLOSED if closing,
 * HUB_ENOMEM. */
int hub_conn_send(struct hub_conn *c, struct hub_shared *chunk);

/* Queues a copy of len bytes. Same returns as hub_conn_send. */
int hub_conn_write(struct hub_conn *c, const void *data, size_t len);

/* Queues a copy of len bytes ahead of every queued chunk that has not
 * started going out (control frames: pong, ping), behind the urgent frames
 * already waiting there. The soft limit does not apply, and the hard limit
 * only from HUB_CONN_URGENT_ALLOWANCE bytes past it. Returns 0, HUB_ENOBUFS
 * (nothing queued: the peer does not read even its control frames),
 * HUB_ECLOSED, HUB_ENOMEM. data is copied. */
int hub_conn_write_urgent(struct hub_conn *c, const void *data, size_t len);

/* Like hub_conn_write_urgent, except that once HUB_CONN_LATEST_KEEP frames
 * queued by this function wait unsent, the newest of them is replaced in
 * place by the new one rather than joined by it. For pongs: RFC 6455 section
 * 5.5.3 lets an endpoint answer only the most recent ping, so a peer that
 * floods pings without reading holds at most HUB_CONN_LATEST_KEEP unsent
 * pongs, while one that sends a few pings at once still gets an answer to
 * each. Same returns. */
#define HUB_CONN_LATEST_KEEP 16
int hub_conn_write_urgent_latest(struct hub_conn *c, const void *data, size_t len);

/* Drops queued output that has not started going out (a slow client's
 * backlog, before its close frame is queued). */
void hub_conn_drop_backlog(struct hub_conn *c);

/* Sets the connection's only deadline to ms from now (0 cancels it). */
void hub_conn_set_timeout(struct hub_conn *c, uint64_t ms);

/* The loop's current time in ms (0 for a detached conn). */
uint64_t hub_conn_now(const struct hub_conn *c);

/* Queues a copy of len bytes even past the output limit. Only for the few
 * bytes that end the connection (a close frame, the error response before a
 * close, a 503 to a connection turned away): everything else goes through
 * the limit. Returns 0, HUB_ECLOSED, HUB_ENOMEM. */
int hub_conn_write_force(struct hub_conn *c, const void *data, size_t len);

/* Closes after everything queued so far is written (or at once if the peer
 * is gone). Further sends return HUB_ECLOSED. */
void hub_conn_close_after_flush(struct hub_conn *c);

/* Closes now, dropping queued output. Safe to call more than once and from
 * any callback; on_close fires later from the loop. */
void hub_conn_close(struct hub_conn *c);

/* The client's address as text, for logs: the peer's IP kept at accept, or
 * the one hub_conn_set_client_addr set. Formatted at each call into a
 * buffer shared by all connections, valid until the next call ("?" when
 * unknown, "detached" for a detached conn with none set). Works after the
 * socket is closed too (in on_close). */
const char *hub_conn_peer(const struct hub_conn *c);

/* Makes sa (AF_INET or AF_INET6, borrowed) the client's address of c: for a
 * connection from a trusted proxy, the client its headers name. The port is
 * not kept. Returns 0, or HUB_EINVAL for another family (c unchanged). */
int hub_conn_set_client_addr(struct hub_conn *c, const struct sockaddr *sa);

/* Pauses (paused != 0) or resumes reading at the owner's request
 * (backpressure on a client that sends too much). Reading actually resumes
 * only when the output watermarks do not hold it too. A no-op for a detached
 * or closing conn, or before hub_conn_accept. Returns 0, or HUB_EIO when
 * libuv cannot start reading again: then the connection is closed (on_close
 * follows). */
int hub_conn_pause(struct hub_conn *c, int paused);

/* Returns 1 while reading is stopped, for whichever reason. */
static inline int hub_conn_reading_paused(const struct hub_conn *c)
{
    return (c->flags & HUB_CONN_READ_STOPPED) != 0;
}

/* Writes the limit key of a peer address into out (at least
 * HUB_CONN_ADDR_KEY_SIZE bytes): IPv4 addresses stand for themselves, an
 * IPv4-mapped IPv6 address counts as its IPv4 address, and any other IPv6
 * address stands for its /64 (written "2001:db8:1:2::/64"), since one host
 * or subscriber is routinely given a whole /64. Returns 0, or HUB_EINVAL
 * for another address family (out is then "?"). sa is borrowed. */
#define HUB_CONN_ADDR_KEY_SIZE 64
int hub_conn_addr_key(const struct sockaddr *sa, char *out, size_t outsz);

/* Writes the limit key of c's client address (see hub_conn_addr_key and
 * hub_conn_peer) into out, without a system call. Returns 0, HUB_EINVAL
 * (out "detached" or "?") when unknown. */
int hub_conn_peer_key(const struct hub_conn *c, char *out, size_t outsz);

/* Returns 1 once hub_conn_close or hub_conn_close_after_flush was called. */
static inline int hub_conn_closing(const struct hub_conn *c)
{
    return (c->flags & (HUB_CONN_CLOSING | HUB_CONN_CLOSE_AFTER_FLUSH)) != 0;
}

#endif
