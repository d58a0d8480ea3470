/*
 * buf.c: growable buffers, reference-counted chunks and output queues.
 *
 * Invariants: hub_buf.len <= hub_buf.cap; a hub_shared is freed exactly when
 * its reference count drops to zero; hub_outq.bytes always equals the sum of
 * the unsent bytes of its items, so the limit check is O(1).
 */
#include "hub/buf.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void hub_buf_init(struct hub_buf *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void hub_buf_free(struct hub_buf *b)
{
    free(b->data);
    hub_buf_init(b);
}

int hub_buf_reserve(struct hub_buf *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return 0;
    if (extra > SIZE_MAX / 2 - b->len)
        return HUB_ENOMEM;
    size_t want = b->len + extra;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < want)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (p == NULL)
        return HUB_ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int hub_buf_append(struct hub_buf *b, const void *data, size_t len)
{
    if (len == 0)
        return 0;
    int rc = hub_buf_reserve(b, len);
    if (rc != 0)
        return rc;
    memcpy(b->data + b->len, data, len);
    b->len += len;
    return 0;
}

int hub_buf_puts(struct hub_buf *b, const char *s)
{
    return hub_buf_append(b, s, strlen(s));
}

int hub_buf_printf(struct hub_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char small[256];
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0)
        return HUB_EINVAL;
    if ((size_t)n < sizeof(small))
        return hub_buf_append(b, small, (size_t)n);
    /* The text did not fit the stack buffer: format straight into b. */
    int rc = hub_buf_reserve(b, (size_t)n + 1);
    if (rc != 0)
        return rc;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

void hub_buf_consume(struct hub_buf *b, size_t n)
{
    assert(n <= b->len);
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

struct hub_shared *hub_shared_new(size_t len)
{
    struct hub_shared *s = malloc(sizeof(*s) + (len ? len : 1));
    if (s == NULL)
        return NULL;
    s->refs = 1;
    s->is_static = 0;
    s->alt_tag = 0;
    s->len = len;
    s->data = (char *)(s + 1);
    s->alt = NULL;
    return s;
}

struct hub_shared *hub_shared_copy(const void *data, size_t len)
{
    struct hub_shared *s = hub_shared_new(len);
    if (s != NULL && len > 0)
        memcpy(s->data, data, len);
    return s;
}

struct hub_shared *hub_shared_static(const void *data, size_t len)
{
    struct hub_shared *s = malloc(sizeof(*s));
    if (s == NULL)
        return NULL;
    s->refs = 1;
    s->is_static = 1;
    s->alt_tag = 0;
    s->len = len;
    s->data = (char *)data;
    s->alt = NULL;
    return s;
}

void hub_shared_unref(struct hub_shared *s)
{
    if (s == NULL)
        return;
    /* The derived forms are a list each of whose links owns the next: drop
     * them iteratively, so a long list cannot recurse deeply. */
    while (s != NULL) {
        assert(s->refs > 0);
        if (--s->refs != 0)
            return;
        struct hub_shared *next = s->alt;
        free(s);
        s = next;
    }
}

void hub_shared_set_alt(struct hub_shared *s, struct hub_shared *alt, uint16_t tag)
{
    assert(tag != 0 && alt->alt == NULL);
    while (s->alt != NULL)
        s = s->alt;
    alt->alt_tag = tag;
    s->alt = hub_shared_ref(alt);
}

struct hub_shared *hub_shared_find_alt(const struct hub_shared *s, uint16_t tag)
{
    for (struct hub_shared *a = s->alt; a != NULL; a = a->alt)
        if (a->alt_tag == tag)
            return a;
    return NULL;
}

void hub_outq_init(struct hub_outq *q, size_t limit)
{
    memset(q, 0, sizeof(*q));
    q->limit = limit;
}

void hub_outq_free(struct hub_outq *q)
{
    for (uint32_t i = 0; i < q->count; i++)
        hub_shared_unref(q->items[(q->head + i) & (q->cap - 1)].chunk);
    free(q->items);
    hub_outq_init(q, q->limit);
}

static int outq_grow(struct hub_outq *q)
{
    uint32_t cap = q->cap ? q->cap * 2 : 4;
    struct hub_outq_item *items = malloc(sizeof(*items) * cap);
    if (items == NULL)
        return HUB_ENOMEM;
    /* Unwrap the ring into the new storage, oldest first. */
    for (uint32_t i = 0; i < q->count; i++)
        items[i] = q->items[(q->head + i) & (q->cap - 1)];
    free(q->items);
    q->items = items;
    q->cap = cap;
    q->head = 0;
    return 0;
}

int hub_outq_push(struct hub_outq *q, struct hub_shared *chunk)
{
    if (chunk->len == 0)
        return 0;
    if (q->limit != 0 && q->bytes + chunk->len > q->limit)
        return HUB_ENOBUFS;
    if (q->count == q->cap) {
        int rc = outq_grow(q);
        if (rc != 0)
            return rc;
    }
    struct hub_outq_item *it = &q->items[(q->head + q->count) & (q->cap - 1)];
    it->chunk = hub_shared_ref(chunk);
    it->off = 0;
    it->urgent = 0;
    q->count++;
    q->bytes += chunk->len;
    return 0;
}

int hub_outq_push_copy(struct hub_outq *q, const void *data, size_t len)
{
    if (len == 0)
        return 0;
    if (q->limit != 0 && q->bytes + len > q->limit)
        return HUB_ENOBUFS;
    struct hub_shared *s = hub_shared_copy(data, len);
    if (s == NULL)
        return HUB_ENOMEM;
    int rc = hub_outq_push(q, s);
    hub_shared_unref(s);
    return rc;
}

unsigned hub_outq_peek(const struct hub_outq *q, const char **bases, size_t *lens, unsigned max)
{
    unsigned n = 0;
    for (uint32_t i = 0; i < q->count && n < max; i++, n++) {
        const struct hub_outq_item *it = &q->items[(q->head + i) & (q->cap - 1)];
        bases[n] = it->chunk->data + it->off;
        lens[n] = it->chunk->len - it->off;
    }
    return n;
}

void hub_outq_trim(struct hub_outq *q)
{
    if (q->count > 0)
        return;
    free(q->items);
    q->items = NULL;
    q->cap = 0;
    q->head = 0;
}

void hub_outq_consume(struct hub_outq *q, size_t n)
{
    assert(n <= q->bytes);
    q->bytes -= n;
    while (n > 0) {
        struct hub_outq_item *it = &q->items[q->head];
        size_t left = it->chunk->len - it->off;
        if (n < left) {
            it->off += n;
            return;
        }
        n -= left;
        hub_shared_unref(it->chunk);
        q->head = (q->head + 1) & (q->cap - 1);
        q->count--;
    }
}
