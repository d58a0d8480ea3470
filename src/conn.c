/*
 * conn.c: TCP connections on the loop, with corked output.
 *
 * Reading: every connection reads into the one buffer its hub_io lends
 * (HUB_IO_READ_SIZE bytes). libuv calls alloc_cb and read_cb back to back for
 * one stream at a time on the loop thread, and on_read consumes the bytes
 * before returning, so a single buffer serves every connection and idle
 * connections hold none.
 *
 * Writing: hub_conn_send only queues a reference and links the connection
 * into io's flush list. Two loop watchers walk that list and write each
 * connection's whole queue at once (first uv_try_write, then one uv_write
 * for the rest): a uv_check handle, which runs right after the loop has
 * processed I/O, and a uv_prepare handle, which runs just before the loop
 * blocks in poll. The prepare flush matters for output queued outside the
 * poll phase: by timer callbacks (heartbeat pings, deferred pushes) and by
 * close callbacks (the leave pushes of a disconnect), which libuv runs after
 * the check handles; without it that output would wait for the next wake-up.
 * At most one uv_write is in flight per connection; its bytes stay
 * referenced in the queue until the write callback consumes them.
 *
 * Backpressure: every change of a queue goes through conn_queued, which
 * keeps the output gauge, the soft-limit clock and the read watermarks up to
 * date. Reading stops when the queue passes high_water and starts again when
 * it drains to low_water, so a peer that asks (HTTP requests, pings) without
 * reading the answers is simply no longer read.
 *
 * Closing: the memory of a connection belongs to its owner and may only be
 * freed from on_close, which fires from libuv's close callback. Between a
 * uv_close and its close callback libuv always runs the check handles (a
 * handle closed during the closing phase is finished in the next iteration,
 * after that iteration's prepare and check), and both flushes drain the list
 * completely, so a closed connection is never left linked.
 *
 * TLS: a connection with a hub_tls (hub_conn_use_tls) feeds what it reads to
 * hub_tls_feed, whose plaintext callback calls on_read, and its flush runs
 * the plaintext queue through hub_tls_flush: one batch of records, then the
 * ciphertext in one socket write (conn_flush_tls). The queue keeps holding
 * plaintext, so conn_queued and first_unstarted work as without TLS; the
 * bytes of the in-flight write are ciphertext owned by the hub_tls, so under
 * TLS `inflight` is acknowledged with hub_tls_sent instead of consumed from
 * the queue. Everything TLS is compiled only with HUB_HAVE_TLS.
 */
#include "hub/conn.h"
#include "hub/log.h"
#include "hub/metrics.h"
#ifdef HUB_HAVE_TLS
#include "hub/tls.h"
#endif

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HUB_IO_READ_SIZE (64 * 1024)
#define HUB_IO_MAX_IOVS 64
/* Bytes one write takes at most, so that `inflight` fits 32 bits. */
#define HUB_IO_MAX_BATCH (1u << 30)
/* Slices one TLS batch takes: the records are filled from all of them, so a
 * fan-out of many small frames in one iteration still makes full records
 * (512 frames of 32 bytes fill one). 16 KiB of stack for the three arrays. */
#define HUB_IO_TLS_IOVS 512
#define WHEEL_SLOTS 128   /* a power of two */
#define WHEEL_TICK_MS 500 /* resolution of connection deadlines */

struct hub_io {
    uv_loop_t *loop;                         /* the loop everything runs on */
    uv_check_t check;                        /* flushes corked output after I/O */
    uv_prepare_t prepare;                    /* flushes it again before the loop sleeps */
    uv_tcp_t spare;                          /* accepts and closes what cannot be served */
    uv_stream_t *reject_wait;                /* listener owed a rejection, or NULL */
    int spare_busy;                          /* the spare is open or closing */
    int closed;                              /* hub_io_close was called */
    uv_timer_t wheel_timer;                  /* advances the timer wheel */
    uint64_t wheel_tick;                     /* next tick of the wheel to process */
    struct hub_conn_link slots[WHEEL_SLOTS]; /* deadline lists, by tick */
    uv_write_t *free_wreqs;                  /* pooled write requests, linked through data */
    struct hub_conn *flush_head;             /* connections with output to write (LIFO) */
    void *data;                              /* the owner's pointer (hub_io_set_data) */
    int handles_open;                        /* handles whose close callback is still due */
    char rbuf[HUB_IO_READ_SIZE];             /* the read buffer lent to every connection */
};

static void conn_flush(struct hub_conn *c);
static void io_handle_closed(uv_handle_t *h);
static void conn_do_close(struct hub_conn *c);
static int conn_reads_update(struct hub_conn *c);
static void conn_schedule(struct hub_conn *c);

const struct hub_conn_ops hub_conn_ops_none = {0};

void hub_conn_ops_policy(struct hub_conn_ops *ops, size_t out_limit)
{
    size_t high = out_limit / 2, low = out_limit / 4;
    ops->soft_limit = 0;
    ops->soft_hold_ms = 0;
    ops->high_water = high > UINT32_MAX ? UINT32_MAX : (uint32_t)high;
    ops->low_water = low > UINT32_MAX ? UINT32_MAX : (uint32_t)low;
}

/* The loop's time in 32-bit ms (see hub_conn_ms_after). */
static uint32_t io_now32(const struct hub_io *io)
{
    return (uint32_t)uv_now(io->loop);
}

static void link_init(struct hub_conn_link *l)
{
    l->prev = l->next = l;
}

static void link_remove(struct hub_conn_link *l)
{
    l->prev->next = l->next;
    l->next->prev = l->prev;
    link_init(l);
}

static void link_append(struct hub_conn_link *head, struct hub_conn_link *l)
{
    l->prev = head->prev;
    l->next = head;
    head->prev->next = l;
    head->prev = l;
}

/* Fires the deadlines of every tick up to now. Expired connections move to
 * a private list first: a timeout callback may close or reschedule any
 * connection, including the ones that expire in the same tick. */
static void wheel_timer_cb(uv_timer_t *t)
{
    struct hub_io *io = HUB_CONTAINER_OF(t, struct hub_io, wheel_timer);
    uint64_t now64 = uv_now(io->loop);
    uint32_t now = (uint32_t)now64;
    uint64_t until = now64 / WHEEL_TICK_MS;
    struct hub_conn_link expired;
    link_init(&expired);
    for (; io->wheel_tick <= until; io->wheel_tick++) {
        struct hub_conn_link *head = &io->slots[io->wheel_tick & (WHEEL_SLOTS - 1)];
        struct hub_conn_link *l = head->next;
        while (l != head) {
            struct hub_conn_link *next = l->next;
            struct hub_conn *c = HUB_CONTAINER_OF(l, struct hub_conn, wheel);
            if (!hub_conn_ms_after(c->due, now)) {
                link_remove(l);
                link_append(&expired, l);
            }
            l = next;
        }
        if (io->wheel_tick == until)
            break;
    }
    while (expired.next != &expired) {
        struct hub_conn *c = HUB_CONTAINER_OF(expired.next, struct hub_conn, wheel);
        link_remove(&c->wheel);
        if (!(c->flags & HUB_CONN_CLOSING))
            c->ops->on_timeout(c);
    }
}

void hub_conn_set_timeout(struct hub_conn *c, uint64_t ms)
{
    if (c->wheel.next != &c->wheel)
        link_remove(&c->wheel);
    if (ms == 0 || c->io == NULL || (c->flags & HUB_CONN_CLOSING))
        return;
    struct hub_io *io = c->io;
    if (ms > INT32_MAX)
        ms = INT32_MAX; /* 24 days: what 32-bit times compare (conn.h) */
    uint64_t due = uv_now(io->loop) + ms;
    c->due = (uint32_t)due;
    /* Round up to a tick boundary, never into a tick already processed. */
    uint64_t tick = (due + WHEEL_TICK_MS - 1) / WHEEL_TICK_MS;
    if (tick < io->wheel_tick)
        tick = io->wheel_tick;
    link_append(&io->slots[tick & (WHEEL_SLOTS - 1)], &c->wheel);
}

uint64_t hub_conn_now(const struct hub_conn *c)
{
    return c->io != NULL ? uv_now(c->io->loop) : 0;
}

/* Notes when the queue crosses the soft limit, in either direction. */
static void conn_track_soft(struct hub_conn *c)
{
    uint32_t soft = c->ops->soft_limit;
    if (soft == 0)
        return;
    if (c->out.bytes <= soft) {
        c->over_soft_since = 0;
    } else if (c->over_soft_since == 0) {
        c->over_soft_since = (uint32_t)hub_conn_now(c) + 1; /* + 1: set, even at 0 */
        if (c->over_soft_since == 0)
            c->over_soft_since = 1; /* the 32-bit clock wrapped: off by 1 ms */
    }
}

/* Called after every change of c's queue, with its byte count before the
 * change: keeps the output gauge, the soft-limit clock and the read
 * watermarks in step with out.bytes. */
static void conn_queued(struct hub_conn *c, size_t before)
{
    if (c->io == NULL)
        return;
    hub_metrics.output_queued += c->out.bytes;
    hub_metrics.output_queued -= before;
    conn_track_soft(c);
    const struct hub_conn_ops *ops = c->ops;
    if (ops->high_water == 0 || (c->flags & HUB_CONN_CLOSING))
        return;
    if (!(c->flags & HUB_CONN_PAUSED_OUTPUT) && c->out.bytes > ops->high_water) {
        c->flags |= HUB_CONN_PAUSED_OUTPUT;
        hub_metrics.read_pauses++;
        conn_reads_update(c);
    } else if ((c->flags & HUB_CONN_PAUSED_OUTPUT) &&
               c->out.bytes <=
                   (ops->low_water <= ops->high_water ? ops->low_water : ops->high_water)) {
        c->flags &= ~HUB_CONN_PAUSED_OUTPUT;
        conn_reads_update(c);
    }
}

/* Writes every connection on the flush list. */
static void io_flush_all(struct hub_io *io)
{
    /* Take each connection off the list before flushing it: a failed write
     * closes the connection, and a write that completes at once may queue
     * more (a close after flush), which must find it unlinked. */
    while (io->flush_head != NULL) {
        struct hub_conn *c = io->flush_head;
        io->flush_head = c->flush_next;
        c->flush_next = NULL;
        c->flags &= ~HUB_CONN_IN_FLUSH_LIST;
        if (c->flags & HUB_CONN_CLOSING)
            continue;
        conn_flush(c);
        if ((c->flags & HUB_CONN_PAUSED_BATCH) && !(c->flags & HUB_CONN_CLOSING)) {
            c->flags &= ~HUB_CONN_PAUSED_BATCH;
            conn_reads_update(c);
        }
    }
}

static void io_check_cb(uv_check_t *h)
{
    io_flush_all(HUB_CONTAINER_OF(h, struct hub_io, check));
}

static void io_prepare_cb(uv_prepare_t *h)
{
    io_flush_all(HUB_CONTAINER_OF(h, struct hub_io, prepare));
}

int hub_io_init(struct hub_io **out, uv_loop_t *loop)
{
    struct hub_io *io = calloc(1, sizeof(*io));
    if (io == NULL)
        return HUB_ENOMEM;
    io->loop = loop;
    /* Initialising these handles cannot fail on libuv's supported
     * platforms, but their results are checked like any other. A handle
     * once initialised must be closed, and io must outlive its close
     * callback, so a failure after the first one closes what was opened
     * and lets the last close callback free io (run the loop afterwards). */
    io->closed = 1;
    int rc = uv_check_init(loop, &io->check);
    if (rc != 0) {
        free(io);
        return HUB_EIO;
    }
    io->check.data = io->prepare.data = io->wheel_timer.data = io;
    io->handles_open = 1;
    rc = uv_prepare_init(loop, &io->prepare);
    if (rc != 0)
        goto fail_check;
    io->handles_open = 2;
    rc = uv_timer_init(loop, &io->wheel_timer);
    if (rc != 0)
        goto fail_prepare;
    io->handles_open = 3;
    io->closed = 0;
    for (int i = 0; i < WHEEL_SLOTS; i++)
        link_init(&io->slots[i]);
    io->wheel_tick = uv_now(loop) / WHEEL_TICK_MS;
    if (uv_check_start(&io->check, io_check_cb) != 0 ||
        uv_prepare_start(&io->prepare, io_prepare_cb) != 0 ||
        uv_timer_start(&io->wheel_timer, wheel_timer_cb, WHEEL_TICK_MS, WHEEL_TICK_MS) != 0) {
        hub_io_close(io);
        return HUB_EIO;
    }
    /* None of them may keep the loop alive on its own. */
    uv_unref((uv_handle_t *)&io->check);
    uv_unref((uv_handle_t *)&io->prepare);
    uv_unref((uv_handle_t *)&io->wheel_timer);
    *out = io;
    return 0;

fail_prepare:
    uv_close((uv_handle_t *)&io->prepare, io_handle_closed);
fail_check:
    uv_close((uv_handle_t *)&io->check, io_handle_closed);
    return HUB_EIO;
}

static void io_handle_closed(uv_handle_t *h)
{
    struct hub_io *io = h->data;
    if (--io->handles_open > 0 || !io->closed)
        return;
    while (io->free_wreqs != NULL) {
        uv_write_t *w = io->free_wreqs;
        io->free_wreqs = w->data;
        free(w);
    }
    free(io);
}

/* Lends a write request from the pool (or a new one). NULL when out of memory. */
static uv_write_t *wreq_get(struct hub_io *io)
{
    uv_write_t *w = io->free_wreqs;
    if (w != NULL) {
        io->free_wreqs = w->data;
        return w;
    }
    return malloc(sizeof(*w));
}

static void wreq_put(struct hub_io *io, uv_write_t *w)
{
    w->data = io->free_wreqs;
    io->free_wreqs = w;
}

void hub_io_close(struct hub_io *io)
{
    assert(io->flush_head == NULL);
    io->closed = 1;
    io->reject_wait = NULL;
    uv_close((uv_handle_t *)&io->check, io_handle_closed);
    uv_close((uv_handle_t *)&io->prepare, io_handle_closed);
    uv_close((uv_handle_t *)&io->wheel_timer, io_handle_closed);
}

static void spare_closed(uv_handle_t *h)
{
    struct hub_io *io = h->data;
    io->spare_busy = 0;
    uv_stream_t *wait = io->reject_wait;
    io->reject_wait = NULL;
    if (wait != NULL && !io->closed && !uv_is_closing((uv_handle_t *)wait))
        hub_io_reject(io, wait);
    io_handle_closed(h);
}

int hub_io_reject(struct hub_io *io, uv_stream_t *server)
{
    if (io->closed)
        return HUB_EIO;
    if (io->spare_busy) {
        /* The connection stays pending in libuv (which meanwhile does not
         * watch the listener) until the spare is free again. */
        io->reject_wait = server;
        return 0;
    }
    if (uv_tcp_init(io->loop, &io->spare) != 0)
        return HUB_EIO;
    io->spare.data = io;
    io->spare_busy = 1;
    io->handles_open++;
    int rc = uv_accept(server, (uv_stream_t *)&io->spare);
    uv_close((uv_handle_t *)&io->spare, spare_closed);
    return rc == 0 ? 0 : HUB_EIO;
}

uv_loop_t *hub_io_loop(struct hub_io *io)
{
    return io->loop;
}

void hub_io_set_data(struct hub_io *io, void *data)
{
    io->data = data;
}

void *hub_io_data(const struct hub_io *io)
{
    return io->data;
}

int hub_conn_init(struct hub_conn *c, struct hub_io *io, size_t out_limit)
{
    memset(c, 0, sizeof(*c));
    if (uv_tcp_init(io->loop, &c->tcp) != 0)
        return HUB_EIO;
    c->tcp.data = c;
    c->io = io;
    c->ops = &hub_conn_ops_none;
    c->last_rx = io_now32(io);
    link_init(&c->wheel);
    hub_outq_init(&c->out, out_limit);
    return 0;
}

void hub_conn_init_detached(struct hub_conn *c, size_t out_limit)
{
    memset(c, 0, sizeof(*c));
    c->ops = &hub_conn_ops_none;
    link_init(&c->wheel);
    hub_outq_init(&c->out, out_limit);
}

static void conn_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct hub_conn *c = h->data;
    buf->base = c->io->rbuf;
    buf->len = sizeof(c->io->rbuf);
}

#ifdef HUB_HAVE_TLS
/* Plaintext from the TLS layer goes up exactly as socket bytes do without
 * TLS. Returns nonzero once the connection is closing, which makes
 * hub_tls_feed drop the rest (see conn_read_cb). */
static int conn_tls_plain(void *user, const char *data, size_t len)
{
    struct hub_conn *c = user;
    if (hub_conn_closing(c) || c->ops->on_read == NULL)
        return 1;
    c->ops->on_read(c, data, len);
    return hub_conn_closing(c);
}

/* Ciphertext arrived: decrypt it, and flush whatever the TLS layer now has
 * due (a handshake flight, a ticket, an alert). A failure or the peer's
 * close_notify ends the connection once the bytes due are out; the layers
 * above are not told anything but on_close. */
static void conn_tls_read(struct hub_conn *c, const char *data, size_t len)
{
    int rc = hub_tls_feed(c->tls, data, len, conn_tls_plain, c);
    if (c->flags & HUB_CONN_CLOSING)
        return;
    if (rc != 0) {
        if (rc != HUB_ECLOSED)
            hub_log_debug("%s: TLS: %s", hub_conn_peer(c), hub_tls_failure_text(c->tls));
        /* Not hub_conn_close_after_flush's "nothing queued: close now": the
         * alert or the 400 is in the TLS layer, not in out. */
        c->flags |= HUB_CONN_CLOSE_AFTER_FLUSH;
        conn_schedule(c);
        return;
    }
    if (hub_tls_pending(c->tls) > 0 || c->out.bytes > 0)
        conn_schedule(c);
}
#endif

int hub_conn_use_tls(struct hub_conn *c, struct hub_tls_ctx *ctx)
{
#ifdef HUB_HAVE_TLS
    if (c->io == NULL)
        return HUB_EINVAL;
    assert(c->tls == NULL);
    c->tls = hub_tls_new(ctx, 0);
    return c->tls != NULL ? 0 : HUB_ENOMEM;
#else
    (void)c;
    (void)ctx;
    return HUB_EINVAL;
#endif
}

/* Hands bytes read from the socket up: through TLS when it is on. */
static void conn_deliver(struct hub_conn *c, const char *data, size_t len)
{
#ifdef HUB_HAVE_TLS
    if (c->tls != NULL) {
        conn_tls_read(c, data, len);
        return;
    }
#endif
    if (c->ops->on_read != NULL)
        c->ops->on_read(c, data, len);
}

static void conn_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct hub_conn *c = s->data;
    if (nread > 0) {
        c->last_rx = io_now32(c->io);
        hub_metrics.bytes_in += (uint64_t)nread;
        c->bytes_in += (uint64_t)nread;
        /* Input after a close decision is discarded: the peer is being
         * dropped and nothing it says can matter any more. */
        if (!hub_conn_closing(c))
            conn_deliver(c, buf->base, (size_t)nread);
        if ((size_t)nread == sizeof(c->io->rbuf) && !(c->flags & HUB_CONN_CLOSING)) {
            /* There may be more: libuv would read on, up to 32 buffers in
             * one go. Take no more from this peer until what this input
             * produced has been flushed (see conn.h, Backpressure). */
            c->flags |= HUB_CONN_PAUSED_BATCH;
            conn_reads_update(c);
            conn_schedule(c);
        }
        return;
    }
    if (nread == 0)
        return; /* EAGAIN; not an end of stream */
    hub_conn_close(c);
}

/* Starts or stops reading so that it runs exactly when nobody asks for a
 * pause. Returns 0, or HUB_EIO when reading cannot start (the connection is
 * then closed). */
static int conn_reads_update(struct hub_conn *c)
{
    if (c->io == NULL || !(c->flags & HUB_CONN_ACCEPTED) || (c->flags & HUB_CONN_CLOSING))
        return 0;
    int want =
        !(c->flags & (HUB_CONN_PAUSED_OWNER | HUB_CONN_PAUSED_OUTPUT | HUB_CONN_PAUSED_BATCH));
    if (want && (c->flags & HUB_CONN_READ_STOPPED)) {
        int rc = uv_read_start((uv_stream_t *)&c->tcp, conn_alloc_cb, conn_read_cb);
        if (rc != 0) {
            hub_log_debug("cannot read from %s: %s", hub_conn_peer(c), uv_strerror(rc));
            hub_conn_close(c);
            return HUB_EIO;
        }
        c->flags &= ~HUB_CONN_READ_STOPPED;
    } else if (!want && !(c->flags & HUB_CONN_READ_STOPPED)) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->flags |= HUB_CONN_READ_STOPPED;
    }
    return 0;
}

int hub_conn_accept(struct hub_conn *c, uv_stream_t *server)
{
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0)
        return HUB_EIO;
    uv_tcp_nodelay(&c->tcp, 1);
    /* The address in binary only: formatting it (inet_ntop) costs more than
     * the rest of the accept, and only a log line or a proxy needs text. */
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0)
        hub_conn_set_client_addr(c, (const struct sockaddr *)&ss);
    c->flags |= HUB_CONN_ACCEPTED | HUB_CONN_READ_STOPPED;
    return conn_reads_update(c) == 0 || (c->flags & HUB_CONN_CLOSING) ? 0 : HUB_EIO;
}

static void conn_schedule(struct hub_conn *c)
{
    if (c->io == NULL || (c->flags & HUB_CONN_IN_FLUSH_LIST))
        return;
    c->flags |= HUB_CONN_IN_FLUSH_LIST;
    c->flush_next = c->io->flush_head;
    c->io->flush_head = c;
}

int hub_conn_send(struct hub_conn *c, struct hub_shared *chunk)
{
    if (hub_conn_closing(c))
        return HUB_ECLOSED;
    if (c->over_soft_since != 0 &&
        (uint32_t)hub_conn_now(c) + 1 - c->over_soft_since >= c->ops->soft_hold_ms)
        return HUB_ENOBUFS;
    size_t before = c->out.bytes;
    int rc = hub_outq_push(&c->out, chunk);
    if (rc == 0) {
        conn_schedule(c);
        conn_queued(c, before);
    }
    return rc;
}

/* Index (from the head) of the first queued chunk that no write has touched:
 * the in-flight write covers c->inflight bytes, and a partly sent head chunk
 * must be finished before anything else. */
static uint32_t first_unstarted(const struct hub_conn *c)
{
    const struct hub_outq *q = &c->out;
    /* Under TLS the in-flight bytes are ciphertext, outside the queue. */
    size_t skip = c->tls != NULL ? 0 : c->inflight;
    uint32_t i = 0;
    while (i < q->count) {
        const struct hub_outq_item *it = &q->items[(q->head + i) & (q->cap - 1)];
        size_t left = it->chunk->len - it->off;
        if (skip == 0 && it->off == 0)
            break;
        skip = skip > left ? skip - left : 0;
        i++;
    }
    return i;
}

/* Values of hub_outq_item.urgent (buf.h only distinguishes zero). */
enum {
    URGENT_NONE = 0,   /* ordinary output */
    URGENT_ORDER = 1,  /* an urgent frame that keeps its place */
    URGENT_LATEST = 2, /* an urgent frame a newer one replaces (a pong) */
};

/* Queues an urgent frame of the given kind (see hub_conn_write_urgent). */
static int conn_write_urgent(struct hub_conn *c, const void *data, size_t len, int kind)
{
    if (hub_conn_closing(c))
        return HUB_ECLOSED;
    struct hub_outq *q = &c->out;
    uint32_t mask = q->cap - 1;
    /* Behind the control frames already waiting there, so that pongs keep
     * the order of their pings. */
    uint32_t at = first_unstarted(c);
    struct hub_outq_item *last = NULL; /* the newest unsent URGENT_LATEST frame */
    unsigned latest = 0;               /* how many of them wait */
    while (at < q->count && q->items[(q->head + at) & mask].urgent) {
        struct hub_outq_item *it = &q->items[(q->head + at) & mask];
        if (it->urgent == URGENT_LATEST) {
            last = it;
            latest++;
        }
        at++;
    }
    if (kind == URGENT_LATEST && latest >= HUB_CONN_LATEST_KEEP) {
        /* Enough unsent answers to older pings: the new one takes the
         * place of the newest, and the queue does not grow. */
        size_t old = last->chunk->len - last->off;
        if (q->limit != 0 && len > old &&
            q->bytes - old + len > q->limit + HUB_CONN_URGENT_ALLOWANCE)
            return HUB_ENOBUFS;
        struct hub_shared *s = hub_shared_copy(data, len);
        if (s == NULL)
            return HUB_ENOMEM;
        size_t before = q->bytes;
        hub_shared_unref(last->chunk);
        last->chunk = s;
        last->off = 0;
        q->bytes = q->bytes - old + len;
        conn_queued(c, before);
        return 0;
    }
    if (q->limit != 0 && q->bytes + len > q->limit + HUB_CONN_URGENT_ALLOWANCE)
        return HUB_ENOBUFS;
    size_t before = q->bytes;
    size_t limit = q->limit;
    q->limit = 0;
    int rc = hub_outq_push_copy(q, data, len);
    q->limit = limit;
    if (rc != 0)
        return rc;
    /* Rotate the new tail item back to position at (the push may have
     * grown the ring, so the mask is taken again). */
    mask = q->cap - 1;
    struct hub_outq_item tmp = q->items[(q->head + q->count - 1) & mask];
    for (uint32_t i = q->count - 1; i > at; i--)
        q->items[(q->head + i) & mask] = q->items[(q->head + i - 1) & mask];
    tmp.urgent = kind;
    q->items[(q->head + at) & mask] = tmp;
    conn_schedule(c);
    conn_queued(c, before);
    return 0;
}

int hub_conn_write_urgent(struct hub_conn *c, const void *data, size_t len)
{
    return conn_write_urgent(c, data, len, URGENT_ORDER);
}

int hub_conn_write_urgent_latest(struct hub_conn *c, const void *data, size_t len)
{
    return conn_write_urgent(c, data, len, URGENT_LATEST);
}

void hub_conn_drop_backlog(struct hub_conn *c)
{
    struct hub_outq *q = &c->out;
    size_t before = q->bytes;
    uint32_t keep = first_unstarted(c);
    while (q->count > keep) {
        struct hub_outq_item *it = &q->items[(q->head + q->count - 1) & (q->cap - 1)];
        q->bytes -= it->chunk->len - it->off;
        hub_shared_unref(it->chunk);
        q->count--;
    }
    conn_queued(c, before);
}

int hub_conn_write(struct hub_conn *c, const void *data, size_t len)
{
    if (hub_conn_closing(c))
        return HUB_ECLOSED;
    size_t before = c->out.bytes;
    int rc = hub_outq_push_copy(&c->out, data, len);
    if (rc == 0) {
        conn_schedule(c);
        conn_queued(c, before);
    }
    return rc;
}

int hub_conn_write_force(struct hub_conn *c, const void *data, size_t len)
{
    if (hub_conn_closing(c))
        return HUB_ECLOSED;
    size_t before = c->out.bytes;
    size_t limit = c->out.limit;
    c->out.limit = 0;
    int rc = hub_outq_push_copy(&c->out, data, len);
    c->out.limit = limit;
    if (rc == 0) {
        conn_schedule(c);
        conn_queued(c, before);
    }
    return rc;
}

static void conn_write_cb(uv_write_t *req, int status)
{
    struct hub_conn *c = req->data;
    wreq_put(c->io, req);
    c->flags &= ~HUB_CONN_WRITING;
    if (c->flags & HUB_CONN_CLOSING)
        return; /* cancelled by uv_close; close_cb releases the queue */
    if (status < 0) {
        hub_log_debug("write to %s failed: %s", hub_conn_peer(c), uv_strerror(status));
        hub_conn_close(c);
        return;
    }
    hub_metrics.bytes_out += c->inflight;
    c->bytes_out += c->inflight;
#ifdef HUB_HAVE_TLS
    if (c->tls != NULL) {
        hub_tls_sent(c->tls, c->inflight);
        c->inflight = 0;
        conn_flush(c);
        return;
    }
#endif
    size_t before = c->out.bytes;
    hub_outq_consume(&c->out, c->inflight);
    c->inflight = 0;
    conn_queued(c, before);
    conn_flush(c);
}

/* Hands bytes to one uv_write (the socket took none or part of them). On
 * failure the connection is closed. Returns 0 or HUB_EIO. */
static int conn_start_write(struct hub_conn *c, uv_buf_t *bufs, unsigned n, size_t total)
{
    uv_write_t *w = wreq_get(c->io);
    if (w == NULL) {
        hub_conn_close(c);
        return HUB_EIO;
    }
    w->data = c;
    int rc = uv_write(w, (uv_stream_t *)&c->tcp, bufs, n, conn_write_cb);
    if (rc != 0) {
        wreq_put(c->io, w);
        hub_conn_close(c);
        return HUB_EIO;
    }
    c->inflight = (uint32_t)total; /* batches stay below HUB_IO_MAX_BATCH */
    c->flags |= HUB_CONN_WRITING;
    return 0;
}

#ifdef HUB_HAVE_TLS
/* The flush of a TLS connection: the leading plaintext of the queue goes
 * through one hub_tls_flush batch, and the ciphertext due out in one socket
 * write (uv_try_write, then one uv_write for what the socket did not take).
 * It loops only when the socket took everything and plaintext is left (more
 * than HUB_IO_TLS_IOVS slices, or more than the ciphertext bound): the same
 * rule as the plain flush. */
static void conn_flush_tls(struct hub_conn *c)
{
    for (;;) {
        const char *bases[HUB_IO_TLS_IOVS];
        size_t lens[HUB_IO_TLS_IOVS];
        struct hub_iov iov[HUB_IO_TLS_IOVS];
        unsigned n = hub_outq_peek(&c->out, bases, lens, HUB_IO_TLS_IOVS);
        for (unsigned i = 0; i < n; i++) {
            iov[i].base = bases[i];
            iov[i].len = lens[i];
        }
        /* close_notify goes behind the last plaintext byte (a no-op unless
         * the session is open). */
        if ((c->flags & HUB_CONN_CLOSE_AFTER_FLUSH) && c->out.bytes == 0)
            hub_tls_shutdown(c->tls);
        size_t taken = 0;
        struct hub_iov wire;
        int rc = hub_tls_flush(c->tls, iov, n, &taken, &wire);
        if (taken > 0) {
            size_t before = c->out.bytes;
            hub_outq_consume(&c->out, taken);
            conn_queued(c, before);
            if (c->flags & HUB_CONN_CLOSING)
                return; /* resuming reads failed */
        }
        if (rc != 0) {
            hub_log_debug("%s: TLS: %s", hub_conn_peer(c), hub_tls_failure_text(c->tls));
            hub_conn_close(c);
            return;
        }
        if (wire.len == 0) {
            if (taken > 0 && c->out.bytes > 0)
                continue; /* dropped after a failure or close_notify */
            break;        /* nothing due; plaintext may wait for the handshake */
        }
        uv_buf_t b = uv_buf_init((char *)wire.base, (unsigned)wire.len);
        int w = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (w > 0) {
            hub_metrics.bytes_out += (uint64_t)w;
            hub_tls_sent(c->tls, (size_t)w);
            if ((size_t)w == wire.len)
                continue;
        } else if (w != UV_EAGAIN && w != UV_ENOSYS) {
            hub_log_debug("write to %s failed: %s", hub_conn_peer(c), uv_strerror(w));
            hub_conn_close(c);
            return;
        }
        /* The socket is full: the rest of the view goes to one uv_write;
         * the view stays valid and unchanged until hub_tls_sent. */
        size_t done = w > 0 ? (size_t)w : 0;
        b = uv_buf_init((char *)wire.base + done, (unsigned)(wire.len - done));
        conn_start_write(c, &b, 1, wire.len - done);
        return;
    }
    /* Everything due is written: an idle connection keeps no ring. */
    hub_outq_trim(&c->out);
    /* Plaintext still queued once the session has ended (a failure, the
     * peer's close_notify, or a close before the handshake finished) can
     * never be sent: close without it. */
    if ((c->flags & HUB_CONN_CLOSE_AFTER_FLUSH) && hub_tls_pending(c->tls) == 0 &&
        (c->out.bytes == 0 || hub_tls_state(c->tls) != HUB_TLS_OPEN))
        conn_do_close(c);
}
#endif

/* The next write's slices of c's queue, into bufs (HUB_IO_MAX_IOVS of
 * them, at most HUB_IO_MAX_BATCH bytes unless one chunk alone is more);
 * their total into *total. */
static unsigned batch(struct hub_conn *c, const char **bases, size_t *lens, uv_buf_t *bufs,
                      size_t *total)
{
    unsigned n = hub_outq_peek(&c->out, bases, lens, HUB_IO_MAX_IOVS);
    size_t sum = 0;
    for (unsigned i = 0; i < n; i++) {
        if (i > 0 && sum + lens[i] > HUB_IO_MAX_BATCH) {
            n = i;
            break;
        }
        bufs[i] = uv_buf_init((char *)bases[i], (unsigned)lens[i]);
        sum += lens[i];
    }
    *total = sum;
    return n;
}

static void conn_flush(struct hub_conn *c)
{
    if (c->flags & (HUB_CONN_WRITING | HUB_CONN_CLOSING))
        return;
#ifdef HUB_HAVE_TLS
    if (c->tls != NULL) {
        conn_flush_tls(c);
        return;
    }
#endif
    while (c->out.bytes > 0) {
        const char *bases[HUB_IO_MAX_IOVS];
        size_t lens[HUB_IO_MAX_IOVS];
        uv_buf_t bufs[HUB_IO_MAX_IOVS];
        size_t total = 0;
        unsigned n = batch(c, bases, lens, bufs, &total);
        int w = uv_try_write((uv_stream_t *)&c->tcp, bufs, n);
        if (w > 0) {
            hub_metrics.bytes_out += (uint64_t)w;
            c->bytes_out += (uint64_t)w;
            size_t before = c->out.bytes;
            hub_outq_consume(&c->out, (size_t)w);
            conn_queued(c, before);
            if (c->flags & HUB_CONN_CLOSING)
                return; /* resuming reads failed */
            if ((size_t)w == total)
                continue; /* maybe more than HUB_IO_MAX_IOVS slices queued */
        } else if (w != UV_EAGAIN && w != UV_ENOSYS) {
            hub_log_debug("write to %s failed: %s", hub_conn_peer(c), uv_strerror(w));
            hub_conn_close(c);
            return;
        }
        /* The socket is full: hand what is left of this batch to one
         * uv_write, which completes when the kernel takes it. */
        n = batch(c, bases, lens, bufs, &total);
        conn_start_write(c, bufs, n, total);
        return;
    }
    /* Everything is written: an idle connection keeps no ring. */
    hub_outq_trim(&c->out);
    if (c->flags & HUB_CONN_CLOSE_AFTER_FLUSH)
        conn_do_close(c);
}

static void conn_close_cb(uv_handle_t *h)
{
    struct hub_conn *c = h->data;
    assert(!(c->flags & HUB_CONN_IN_FLUSH_LIST));
    hub_metrics.output_queued -= c->out.bytes;
    hub_outq_free(&c->out);
#ifdef HUB_HAVE_TLS
    hub_tls_free(c->tls);
    c->tls = NULL;
#endif
    if (c->ops->on_close != NULL)
        c->ops->on_close(c);
}

static void conn_shutdown_cb(uv_shutdown_t *req, int status)
{
    struct hub_conn *c = req->data;
    free(req);
    hub_conn_close(c);
}

/* Ends a connection whose output is fully written: a TCP shutdown first, so
 * the peer reads everything before it sees the end, then the close. */
static void conn_do_close(struct hub_conn *c)
{
    if (c->flags & HUB_CONN_SHUTDOWN)
        return;
    c->flags |= HUB_CONN_SHUTDOWN;
    uv_shutdown_t *req = malloc(sizeof(*req));
    if (req != NULL) {
        req->data = c;
        if (uv_shutdown(req, (uv_stream_t *)&c->tcp, conn_shutdown_cb) == 0)
            return;
        free(req);
    }
    hub_conn_close(c);
}

void hub_conn_close_after_flush(struct hub_conn *c)
{
    if (hub_conn_closing(c))
        return;
    c->flags |= HUB_CONN_CLOSE_AFTER_FLUSH;
    if (c->io == NULL)
        return;
    /* Under TLS the flush decides: close_notify is still to go out. */
    if (c->out.bytes == 0 && !(c->flags & HUB_CONN_WRITING) && c->tls == NULL)
        conn_do_close(c);
    else
        conn_schedule(c);
}

void hub_conn_close(struct hub_conn *c)
{
    if (c->flags & HUB_CONN_CLOSING)
        return;
    hub_conn_set_timeout(c, 0);
    c->flags |= HUB_CONN_CLOSING;
    if (c->io == NULL)
        return;
    uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
}

int hub_conn_set_client_addr(struct hub_conn *c, const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        memcpy(c->addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        c->addr_family = HUB_CONN_AF_INET;
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        memcpy(c->addr, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        c->addr_family = HUB_CONN_AF_INET6;
        return 0;
    }
    return HUB_EINVAL;
}

/* Copies src into out (outsz bytes), cut short if it must be. */
static void copy_text(char *out, size_t outsz, const char *src)
{
    if (outsz == 0)
        return;
    size_t n = strlen(src);
    n = n < outsz - 1 ? n : outsz - 1;
    memcpy(out, src, n);
    out[n] = '\0';
}

/* Writes b[0..3] as a dotted quad; out has room for 16 bytes. Returns the
 * length. By hand: snprintf and inet_ntop cost ten times as much. */
static size_t format_ip4(const uint8_t *b, char *out)
{
    char *p = out;
    for (int i = 0; i < 4; i++) {
        unsigned v = b[i];
        if (v >= 100)
            *p++ = (char)('0' + v / 100);
        if (v >= 10)
            *p++ = (char)('0' + v / 10 % 10);
        *p++ = (char)('0' + v % 10);
        *p++ = i < 3 ? '.' : '\0';
    }
    return (size_t)(p - out - 1);
}

/* The text of c's address into out (outsz >= 16; an IPv6 address needs 46). */
static void format_addr(const struct hub_conn *c, char *out, size_t outsz)
{
    if (c->addr_family == HUB_CONN_AF_INET) {
        char tmp[16];
        format_ip4(c->addr, outsz >= sizeof(tmp) ? out : tmp);
        if (outsz < sizeof(tmp))
            copy_text(out, outsz, tmp);
    } else if (c->addr_family == HUB_CONN_AF_INET6) {
        if (uv_inet_ntop(AF_INET6, c->addr, out, outsz) != 0)
            snprintf(out, outsz, "?");
    } else {
        snprintf(out, outsz, "%s", c->io == NULL ? "detached" : "?");
    }
}

const char *hub_conn_peer(const struct hub_conn *c)
{
    /* Asked for only on rare paths (logs), so the text is not kept in every
     * connection, nor made at accept. */
    static char text[64];
    format_addr(c, text, sizeof(text));
    return text;
}

int hub_conn_pause(struct hub_conn *c, int paused)
{
    if (c->io == NULL || (c->flags & HUB_CONN_CLOSING))
        return 0;
    if (paused)
        c->flags |= HUB_CONN_PAUSED_OWNER;
    else
        c->flags &= ~HUB_CONN_PAUSED_OWNER;
    return conn_reads_update(c);
}

/* The limit key of an address in binary (see hub_conn_addr_key). */
static int addr_key(int family, const uint8_t *b, char *out, size_t outsz)
{
    static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (family == HUB_CONN_AF_INET6 && memcmp(b, v4mapped, sizeof(v4mapped)) == 0) {
        family = HUB_CONN_AF_INET;
        b += 12;
    }
    if (family == HUB_CONN_AF_INET) {
        char tmp[16];
        format_ip4(b, outsz >= sizeof(tmp) ? out : tmp);
        if (outsz < sizeof(tmp))
            copy_text(out, outsz, tmp);
        return 0;
    }
    if (family != HUB_CONN_AF_INET6) {
        snprintf(out, outsz, "?");
        return HUB_EINVAL;
    }
    /* The /64: the first four groups, in the same lower-case hex without
     * leading zeros that inet_ntop uses. */
    snprintf(out, outsz, "%x:%x:%x:%x::/64", (unsigned)(b[0] << 8 | b[1]),
             (unsigned)(b[2] << 8 | b[3]), (unsigned)(b[4] << 8 | b[5]),
             (unsigned)(b[6] << 8 | b[7]));
    return 0;
}

int hub_conn_addr_key(const struct sockaddr *sa, char *out, size_t outsz)
{
    if (sa->sa_family == AF_INET)
        return addr_key(HUB_CONN_AF_INET,
                        (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr, out, outsz);
    if (sa->sa_family == AF_INET6)
        return addr_key(HUB_CONN_AF_INET6, ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr,
                        out, outsz);
    snprintf(out, outsz, "?");
    return HUB_EINVAL;
}

int hub_conn_peer_key(const struct hub_conn *c, char *out, size_t outsz)
{
    if (c->addr_family == HUB_CONN_AF_NONE) {
        snprintf(out, outsz, "%s", c->io == NULL ? "detached" : "?");
        return HUB_EINVAL;
    }
    return addr_key(c->addr_family, c->addr, out, outsz);
}
