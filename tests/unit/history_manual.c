/*
 * history_manual.c: the test store of history_manual.h.
 *
 * It implements the ops of src/history_impl.h: each call copies its
 * arguments into a request on a FIFO, and history_manual_release pops
 * requests from the head and runs them against the backing memory store,
 * whose completions fire before the call returns. The FIFO is the only
 * ordering: a request popped is finished (its callback has fired) before the
 * next is popped, also when a callback releases more itself.
 */
#include "history_manual.h"
#include "history_impl.h"

#include <stdlib.h>
#include <string.h>

enum mreq_type {
    MREQ_APPEND,
    MREQ_READ,
    MREQ_BARRIER,
    MREQ_CLOSE,
};

struct mreq {
    struct mreq *next; /* FIFO link */
    int type;          /* enum mreq_type */
    union {
        hub_history_append_cb append;
        hub_history_read_cb read;
        hub_history_barrier_cb barrier;
        hub_history_closed_cb closed;
    } cb;                /* the user's completion */
    void *data;          /* the user's pointer */
    struct hub_iov room; /* views into bytes */
    struct hub_iov from; /* append */
    struct hub_iov text; /* append */
    struct hub_iov cmid; /* append */
    int64_t ts;          /* append */
    int dir;             /* read */
    uint64_t pos;        /* read */
    unsigned limit;      /* read */
    char bytes[];        /* room, from, text, cmid */
};

struct manual_store {
    struct hub_history base;     /* the interface header; must be first */
    struct hub_history *backing; /* the memory store that gives results, owned */
    struct mreq *head, *tail;    /* requests not yet completed */
    size_t pending;              /* requests on the FIFO */
    int closing;                 /* close was requested: refuse new requests */
    int fail_err;                /* nonzero: the next append or read fails so */
};

static const struct history_ops manual_ops;

int history_manual_open(struct hub_history **out, const struct hub_history_config *cfg)
{
    struct manual_store *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return HUB_ENOMEM;
    int rc = hub_history_open_memory(&m->backing, cfg);
    if (rc != 0) {
        free(m);
        return rc;
    }
    m->base.ops = &manual_ops;
    *out = &m->base;
    return 0;
}

static struct mreq *mreq_new(struct manual_store *m, int type, struct hub_iov room,
                             struct hub_iov from, struct hub_iov text, struct hub_iov cmid)
{
    if (m->closing)
        return NULL;
    struct hub_iov in[4] = {room, from, text, cmid};
    size_t total = 0;
    for (int i = 0; i < 4; i++)
        total += in[i].len;
    struct mreq *r = calloc(1, sizeof(*r) + total + 1);
    if (r == NULL)
        return NULL;
    r->type = type;
    struct hub_iov *outv[4] = {&r->room, &r->from, &r->text, &r->cmid};
    size_t at = 0;
    for (int i = 0; i < 4; i++) {
        if (in[i].len > 0)
            memcpy(r->bytes + at, in[i].base, in[i].len);
        outv[i]->base = r->bytes + at;
        outv[i]->len = in[i].len;
        at += in[i].len;
    }
    return r;
}

static void push(struct manual_store *m, struct mreq *r)
{
    if (m->tail != NULL)
        m->tail->next = r;
    else
        m->head = r;
    m->tail = r;
    m->pending++;
}

static const struct hub_iov none = {NULL, 0};

static int manual_append(struct hub_history *base, struct hub_iov room, struct hub_iov from,
                         struct hub_iov text, struct hub_iov cmid, int64_t ts,
                         hub_history_append_cb cb, void *data)
{
    struct manual_store *m = (struct manual_store *)base;
    if (m->closing)
        return HUB_ECLOSED;
    struct mreq *r = mreq_new(m, MREQ_APPEND, room, from, text, cmid);
    if (r == NULL)
        return HUB_ENOMEM;
    r->ts = ts;
    r->cb.append = cb;
    r->data = data;
    push(m, r);
    return 0;
}

static int manual_read(struct hub_history *base, struct hub_iov room, int dir, uint64_t pos,
                       unsigned limit, hub_history_read_cb cb, void *data)
{
    struct manual_store *m = (struct manual_store *)base;
    if (m->closing)
        return HUB_ECLOSED;
    struct mreq *r = mreq_new(m, MREQ_READ, room, none, none, none);
    if (r == NULL)
        return HUB_ENOMEM;
    r->dir = dir;
    r->pos = pos;
    r->limit = limit;
    r->cb.read = cb;
    r->data = data;
    push(m, r);
    return 0;
}

static int manual_barrier(struct hub_history *base, hub_history_barrier_cb cb, void *data)
{
    struct manual_store *m = (struct manual_store *)base;
    if (m->closing)
        return HUB_ECLOSED;
    struct mreq *r = mreq_new(m, MREQ_BARRIER, none, none, none, none);
    if (r == NULL)
        return HUB_ENOMEM;
    r->cb.barrier = cb;
    r->data = data;
    push(m, r);
    return 0;
}

static void manual_close(struct hub_history *base, hub_history_closed_cb cb, void *data)
{
    struct manual_store *m = (struct manual_store *)base;
    struct mreq *r = mreq_new(m, MREQ_CLOSE, none, none, none, none);
    if (r == NULL)
        abort(); /* a test store: out of memory here is not worth a path */
    m->closing = 1;
    r->cb.closed = cb;
    r->data = data;
    push(m, r);
}

static void manual_free(struct hub_history *base)
{
    struct manual_store *m = (struct manual_store *)base;
    while (m->head != NULL) {
        struct mreq *r = m->head;
        m->head = r->next;
        free(r);
    }
    hub_history_free(m->backing);
    free(m);
}

static int manual_hold(struct hub_history *base, struct hub_iov room, int held)
{
    struct manual_store *m = (struct manual_store *)base;
    return hub_history_hold(m->backing, room, held);
}

static void manual_stats(const struct hub_history *base, struct hub_history_stats *out)
{
    const struct manual_store *m = (const struct manual_store *)base;
    hub_history_stats(m->backing, out);
}

size_t history_manual_pending(const struct hub_history *h)
{
    return ((const struct manual_store *)h)->pending;
}

void history_manual_fail_next(struct hub_history *h, int err)
{
    ((struct manual_store *)h)->fail_err = err;
}

/* Runs one popped request: its callback fires exactly once. */
static void run(struct manual_store *m, struct mreq *r)
{
    int err = 0;
    if ((r->type == MREQ_APPEND || r->type == MREQ_READ) && m->fail_err != 0) {
        err = m->fail_err;
        m->fail_err = 0;
    }
    switch (r->type) {
    case MREQ_APPEND:
        if (err == 0)
            err = hub_history_append(m->backing, r->room, r->from, r->text, r->cmid, r->ts,
                                     r->cb.append, r->data);
        /* The backing store's callback fired unless it refused. */
        if (err != 0)
            r->cb.append(r->data, err, 0, 0, 0);
        break;
    case MREQ_READ:
        if (err == 0)
            err = hub_history_read(m->backing, r->room, r->dir, r->pos, r->limit, r->cb.read,
                                   r->data);
        if (err != 0)
            r->cb.read(r->data, err, NULL, NULL, 0, 0);
        break;
    case MREQ_BARRIER:
        r->cb.barrier(r->data);
        break;
    }
}

size_t history_manual_release(struct hub_history *h, size_t n)
{
    struct manual_store *m = (struct manual_store *)h;
    size_t done = 0;
    while (done < n && m->head != NULL) {
        struct mreq *r = m->head;
        m->head = r->next;
        if (m->head == NULL)
            m->tail = NULL;
        m->pending--;
        done++;
        if (r->type == MREQ_CLOSE) {
            /* Last by construction; the callback may free the store. */
            hub_history_closed_cb cb = r->cb.closed;
            void *data = r->data;
            free(r);
            cb(data);
            return done;
        }
        run(m, r);
        free(r);
    }
    return done;
}

size_t history_manual_release_all(struct hub_history *h)
{
    return history_manual_release(h, SIZE_MAX);
}

static const struct history_ops manual_ops = {
    .append = manual_append,
    .read = manual_read,
    .barrier = manual_barrier,
    .close = manual_close,
    .free = manual_free,
    .hold = manual_hold,
    .stats = manual_stats,
};
