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
 * into io's flush list. A uv_check handle, which runs right after the loop
 * has processed I/O, walks that list once per iteration and writes each
 * connection's whole queue at once: first uv_try_write, then one uv_write for
 * the rest. At most one uv_write is in flight per connection; its bytes stay
 * referenced in the queue until the write callback consumes them.
 *
 * Closing: the memory of a connection belongs to its owner and may only be
 * freed from on_close, which fires from libuv's close callback. The flush list
 * is drained completely by every check callback, which libuv runs before the
 * iteration's close callbacks, so a closed connection is never left linked.
 */
#include "hub/conn.h"
#include "hub/log.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#define HUB_IO_READ_SIZE (64 * 1024)
#define HUB_IO_MAX_IOVS 64

struct hub_io {
    uv_loop_t *loop;             /* the loop everything runs on */
    uv_check_t check;            /* flushes corked output once per iteration */
    struct hub_conn *flush_head; /* connections with output to write (LIFO) */
    int handles_open;            /* handles still to be closed by hub_io_close */
    char rbuf[HUB_IO_READ_SIZE]; /* the read buffer lent to every connection */
};

static void conn_flush(struct hub_conn *c);
static void conn_do_close(struct hub_conn *c);

static void io_check_cb(uv_check_t *h)
{
    struct hub_io *io = HUB_CONTAINER_OF(h, struct hub_io, check);
    /* Take the whole list first: flushing may queue nothing new, but a
     * failed write closes a connection, which must not touch the list. */
    while (io->flush_head != NULL) {
        struct hub_conn *c = io->flush_head;
        io->flush_head = c->flush_next;
        c->flush_next = NULL;
        c->flags &= ~HUB_CONN_IN_FLUSH_LIST;
        if (!(c->flags & HUB_CONN_CLOSING))
            conn_flush(c);
    }
}

int hub_io_init(struct hub_io **out, uv_loop_t *loop)
{
    struct hub_io *io = calloc(1, sizeof(*io));
    if (io == NULL)
        return HUB_ENOMEM;
    io->loop = loop;
    if (uv_check_init(loop, &io->check) != 0 || uv_check_start(&io->check, io_check_cb) != 0) {
        free(io);
        return HUB_EIO;
    }
    /* The check handle must not keep the loop alive on its own. */
    uv_unref((uv_handle_t *)&io->check);
    io->handles_open = 1;
    *out = io;
    return 0;
}

static void io_handle_closed(uv_handle_t *h)
{
    struct hub_io *io = HUB_CONTAINER_OF((uv_check_t *)h, struct hub_io, check);
    if (--io->handles_open == 0)
        free(io);
}

void hub_io_close(struct hub_io *io)
{
    assert(io->flush_head == NULL);
    uv_close((uv_handle_t *)&io->check, io_handle_closed);
}

uv_loop_t *hub_io_loop(struct hub_io *io)
{
    return io->loop;
}

int hub_conn_init(struct hub_conn *c, struct hub_io *io, size_t out_limit)
{
    memset(c, 0, sizeof(*c));
    if (uv_tcp_init(io->loop, &c->tcp) != 0)
        return HUB_EIO;
    c->tcp.data = c;
    c->io = io;
    hub_outq_init(&c->out, out_limit);
    return 0;
}

void hub_conn_init_detached(struct hub_conn *c, size_t out_limit)
{
    memset(c, 0, sizeof(*c));
    hub_outq_init(&c->out, out_limit);
}

static void conn_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct hub_conn *c = h->data;
    buf->base = c->io->rbuf;
    buf->len = sizeof(c->io->rbuf);
}

static void conn_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct hub_conn *c = s->data;
    if (nread > 0) {
        /* Input after a close decision is discarded: the peer is being
         * dropped and nothing it says can matter any more. */
        if (!hub_conn_closing(c) && c->on_read != NULL)
            c->on_read(c, buf->base, (size_t)nread);
        return;
    }
    if (nread == 0)
        return; /* EAGAIN; not an end of stream */
    if (c->on_end != NULL && !(c->flags & HUB_CONN_CLOSING))
        c->on_end(c, (int)nread);
    hub_conn_close(c);
}

int hub_conn_accept(struct hub_conn *c, uv_stream_t *server)
{
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0)
        return HUB_EIO;
    uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET6)
            uv_ip6_name((struct sockaddr_in6 *)&ss, c->peer, sizeof(c->peer));
        else
            uv_ip4_name((struct sockaddr_in *)&ss, c->peer, sizeof(c->peer));
    }
    if (uv_read_start((uv_stream_t *)&c->tcp, conn_alloc_cb, conn_read_cb) != 0)
        return HUB_EIO;
    return 0;
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
    int rc = hub_outq_push(&c->out, chunk);
    if (rc == 0)
        conn_schedule(c);
    return rc;
}

int hub_conn_write(struct hub_conn *c, const void *data, size_t len)
{
    if (hub_conn_closing(c))
        return HUB_ECLOSED;
    int rc = hub_outq_push_copy(&c->out, data, len);
    if (rc == 0)
        conn_schedule(c);
    return rc;
}

int hub_conn_write_force(struct hub_conn *c, const void *data, size_t len)
{
    if (hub_conn_closing(c))
        return HUB_ECLOSED;
    size_t limit = c->out.limit;
    c->out.limit = 0;
    int rc = hub_outq_push_copy(&c->out, data, len);
    c->out.limit = limit;
    if (rc == 0)
        conn_schedule(c);
    return rc;
}

static void conn_write_cb(uv_write_t *req, int status)
{
    struct hub_conn *c = HUB_CONTAINER_OF(req, struct hub_conn, wreq);
    c->flags &= ~HUB_CONN_WRITING;
    if (c->flags & HUB_CONN_CLOSING)
        return; /* cancelled by uv_close; close_cb releases the queue */
    if (status < 0) {
        hub_log_debug("write to %s failed: %s", c->peer, uv_strerror(status));
        hub_conn_close(c);
        return;
    }
    hub_outq_consume(&c->out, c->inflight);
    c->inflight = 0;
    conn_flush(c);
}

static void conn_flush(struct hub_conn *c)
{
    if (c->flags & (HUB_CONN_WRITING | HUB_CONN_CLOSING))
        return;
    while (c->out.bytes > 0) {
        const char *bases[HUB_IO_MAX_IOVS];
        size_t lens[HUB_IO_MAX_IOVS];
        uv_buf_t bufs[HUB_IO_MAX_IOVS];
        unsigned n = hub_outq_peek(&c->out, bases, lens, HUB_IO_MAX_IOVS);
        size_t total = 0;
        for (unsigned i = 0; i < n; i++) {
            bufs[i] = uv_buf_init((char *)bases[i], (unsigned)lens[i]);
            total += lens[i];
        }
        int w = uv_try_write((uv_stream_t *)&c->tcp, bufs, n);
        if (w > 0) {
            hub_outq_consume(&c->out, (size_t)w);
            if ((size_t)w == total)
                continue; /* maybe more than HUB_IO_MAX_IOVS slices queued */
        } else if (w != UV_EAGAIN && w != UV_ENOSYS) {
            hub_log_debug("write to %s failed: %s", c->peer, uv_strerror(w));
            hub_conn_close(c);
            return;
        }
        /* The socket is full: hand what is left of this batch to one
         * uv_write, which completes when the kernel takes it. */
        n = hub_outq_peek(&c->out, bases, lens, HUB_IO_MAX_IOVS);
        total = 0;
        for (unsigned i = 0; i < n; i++) {
            bufs[i] = uv_buf_init((char *)bases[i], (unsigned)lens[i]);
            total += lens[i];
        }
        int rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, bufs, n, conn_write_cb);
        if (rc != 0) {
            hub_conn_close(c);
            return;
        }
        c->inflight = total;
        c->flags |= HUB_CONN_WRITING;
        return;
    }
    if (c->flags & HUB_CONN_CLOSE_AFTER_FLUSH)
        conn_do_close(c);
}

static void conn_close_cb(uv_handle_t *h)
{
    struct hub_conn *c = h->data;
    assert(!(c->flags & HUB_CONN_IN_FLUSH_LIST));
    hub_outq_free(&c->out);
    c->on_close(c);
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
    if (c->out.bytes == 0 && !(c->flags & HUB_CONN_WRITING))
        conn_do_close(c);
    else
        conn_schedule(c);
}

void hub_conn_close(struct hub_conn *c)
{
    if (c->flags & HUB_CONN_CLOSING)
        return;
    c->flags |= HUB_CONN_CLOSING;
    if (c->io == NULL)
        return;
    uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
}

void hub_conn_pause(struct hub_conn *c, int paused)
{
    if (c->io == NULL || (c->flags & HUB_CONN_CLOSING))
        return;
    if (paused && !(c->flags & HUB_CONN_READ_STOPPED)) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->flags |= HUB_CONN_READ_STOPPED;
    } else if (!paused && (c->flags & HUB_CONN_READ_STOPPED)) {
        uv_read_start((uv_stream_t *)&c->tcp, conn_alloc_cb, conn_read_cb);
        c->flags &= ~HUB_CONN_READ_STOPPED;
    }
}
