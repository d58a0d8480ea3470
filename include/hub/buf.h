/*
 * buf.h: the three ways chathub holds bytes.
 *
 * - struct hub_buf: a growable byte buffer with exactly one owner, for
 *   building a response or accumulating a partial input.
 * - struct hub_shared: immutable, reference-counted bytes. A broadcast is
 *   encoded once into one hub_shared and every recipient's output queue holds
 *   a reference to it; the bytes are freed when the last reference goes.
 *   Reference counts are not atomic: hub_shared lives on the loop thread only.
 * - struct hub_outq: one connection's output queue, a FIFO of references to
 *   hub_shared chunks with a running byte count and a hard byte limit.
 *
 * All three are value types meant to be embedded in their owner's struct.
 */
#ifndef HUB_BUF_H
#define HUB_BUF_H

#include "hub/common.h"

#include <stdarg.h>

/* A growable buffer. Zero-initialise it (or hub_buf_init) before use. */
struct hub_buf {
    char *data; /* owned heap block, or NULL while cap == 0 */
    size_t len; /* bytes in use */
    size_t cap; /* bytes allocated */
};

void hub_buf_init(struct hub_buf *b);

/* Frees the storage and leaves b empty and reusable. */
void hub_buf_free(struct hub_buf *b);

/* Ensures room for extra more bytes. Returns 0, or HUB_ENOMEM (b unchanged). */
int hub_buf_reserve(struct hub_buf *b, size_t extra);

/* Appends len bytes copied from data. Returns 0 or HUB_ENOMEM. */
int hub_buf_append(struct hub_buf *b, const void *data, size_t len);

/* Appends a NUL-terminated string (without its NUL). Returns 0 or HUB_ENOMEM. */
int hub_buf_puts(struct hub_buf *b, const char *s);

/* Appends printf-formatted text. Returns 0, HUB_ENOMEM or HUB_EINVAL (bad format). */
int hub_buf_printf(struct hub_buf *b, const char *fmt, ...) HUB_PRINTF_LIKE(2, 3);

/* Drops the first n bytes (n <= len), moving the rest to the front. */
void hub_buf_consume(struct hub_buf *b, size_t n);

/* Immutable reference-counted bytes. Fields are read-only for users, except
 * alt and alt_tag, which hub_shared_set_alt sets.
 *
 * alt is another form of the same content that a consumer derived once and
 * keeps with the chunk, so that every later consumer reuses it: ws.c hangs a
 * broadcast frame's permessage-deflate form here, so that a thousand
 * recipients who negotiated compression cost one compression. The chunk owns
 * one reference to alt and drops it when the chunk is freed; alt can carry
 * its own alt (a list of forms, told apart by alt_tag). */
struct hub_shared {
    uint32_t refs;          /* live references; the creator holds the first */
    uint16_t is_static;     /* 1: data points at memory this object does not own */
    uint16_t alt_tag;       /* what this chunk is as someone's alt (its user's code), else 0 */
    size_t len;             /* payload length */
    char *data;             /* payload: the inline tail, or static memory */
    struct hub_shared *alt; /* a derived form of these bytes, owned (one reference), or NULL */
};

/* Allocates a chunk of len uninitialised bytes with one reference. The
 * creator fills data before sharing it. Returns NULL when out of memory. */
struct hub_shared *hub_shared_new(size_t len);

/* Allocates a chunk holding a copy of len bytes from data (one reference). */
struct hub_shared *hub_shared_copy(const void *data, size_t len);

/* Wraps len bytes at data, which must outlive every reference (embedded files,
 * string literals); the bytes are borrowed, never freed. One reference. */
struct hub_shared *hub_shared_static(const void *data, size_t len);

/* Takes another reference and returns s. */
static inline struct hub_shared *hub_shared_ref(struct hub_shared *s)
{
    s->refs++;
    return s;
}

/* Drops a reference; the last one frees the chunk. NULL is ignored. */
void hub_shared_unref(struct hub_shared *s);

/* Hangs alt (the chunk takes one reference, the caller keeps its own) at the
 * end of s's list of derived forms, tagged tag (non-zero). The list is
 * released with s. */
void hub_shared_set_alt(struct hub_shared *s, struct hub_shared *alt, uint16_t tag);

/* Returns the derived form of s tagged tag (borrowed; valid while s is), or
 * NULL. */
struct hub_shared *hub_shared_find_alt(const struct hub_shared *s, uint16_t tag);

/* One queued slice of a chunk: the queue owns one reference to chunk. */
struct hub_outq_item {
    struct hub_shared *chunk; /* referenced bytes */
    size_t off;               /* first byte still to send */
    int urgent;               /* queued ahead of the backlog (a control frame) */
};

/* A FIFO of chunks waiting to be written to one socket. */
struct hub_outq {
    struct hub_outq_item *items; /* ring storage, owned */
    uint32_t head;               /* index of the oldest item */
    uint32_t count;              /* items queued */
    uint32_t cap;                /* ring capacity (a power of two, or 0) */
    size_t bytes;                /* unsent bytes over all items */
    size_t limit;                /* hub_outq_push refuses to pass this; 0 = none */
};

void hub_outq_init(struct hub_outq *q, size_t limit);

/* Releases every queued reference and the ring storage. */
void hub_outq_free(struct hub_outq *q);

/* Appends a reference to chunk (the queue takes a new reference; the caller
 * keeps its own). Returns 0; HUB_ENOBUFS if the byte limit would be passed
 * (nothing queued); HUB_ENOMEM. Empty chunks are accepted and ignored. */
int hub_outq_push(struct hub_outq *q, struct hub_shared *chunk);

/* Copies len bytes into a new chunk and queues it. Same returns as push. */
int hub_outq_push_copy(struct hub_outq *q, const void *data, size_t len);

/* Describes up to max leading unsent slices as (base, len) pairs in bases/lens
 * without consuming them. Returns the number filled. Pointers are valid until
 * the next consume or free. */
unsigned hub_outq_peek(const struct hub_outq *q, const char **bases, size_t *lens, unsigned max);

/* Frees the ring storage of an empty queue (a no-op otherwise), so that an
 * idle connection holds none; the next push allocates it again. */
void hub_outq_trim(struct hub_outq *q);

/* Marks n leading bytes as sent, releasing chunks that are fully sent. */
void hub_outq_consume(struct hub_outq *q, size_t n);

#endif
