/*
 * history.c: the history interface's dispatch, and the in-memory store.
 *
 * The memory store completes every request before returning, which keeps
 * the interface's ordering promise trivially.
 *
 * Each stream is a ring of message records, one allocation per record
 * holding its strings. Streams live in a chained hash table by room name and
 * on an LRU list, so that at most max_rooms streams are kept: a flood of
 * one-message rooms cannot grow memory without bound. Offsets in a ring are
 * contiguous, so the record for an offset is found by arithmetic.
 */
#include "hub/history.h"
#include "history_impl.h"

#include <stdlib.h>
#include <string.h>
#include <uv.h>

struct record {
    uint64_t offset;                       /* position in the stream */
    int64_t ts;                            /* milliseconds since the epoch */
    uint32_t from_len, text_len, cmid_len; /* string lengths */
    char bytes[];                          /* from, then text, then cmid */
};

struct stream {
    struct stream *next;                   /* hash chain */
    struct stream *lru_prev, *lru_next;    /* LRU list, most recent at the head */
    uint64_t hash;                         /* of name */
    char epoch[HUB_HISTORY_EPOCH_LEN + 1]; /* this incarnation */
    uint64_t last;                         /* newest offset */
    struct record **ring;                  /* max_per_room slots, owned */
    uint32_t count;                        /* records held */
    uint32_t head;                         /* slot of the oldest record */
    size_t name_len;                       /* length of name */
    char name[];                           /* room name, NUL-terminated */
};

struct memory_store {
    struct hub_history base;            /* the interface header; must be first */
    struct hub_history_config cfg;      /* copied */
    struct stream **buckets;            /* chains */
    size_t nbuckets;                    /* power of two */
    size_t nstreams;                    /* streams held */
    struct stream *lru_head, *lru_tail; /* recency list */
};

void hub_history_config_default(struct hub_history_config *cfg)
{
    cfg->max_per_room = 1000;
    cfg->max_rooms = 10000;
    cfg->ttl_ms = 0;
}

int hub_history_append(struct hub_history *h, struct hub_iov room, struct hub_iov from,
                       struct hub_iov text, struct hub_iov cmid, int64_t ts,
                       hub_history_append_cb cb, void *data)
{
    return h->ops->append(h, room, from, text, cmid, ts, cb, data);
}

int hub_history_read(struct hub_history *h, struct hub_iov room, int dir, uint64_t pos,
                     unsigned limit, hub_history_read_cb cb, void *data)
{
    return h->ops->read(h, room, dir, pos, limit, cb, data);
}

int hub_history_barrier(struct hub_history *h, hub_history_barrier_cb cb, void *data)
{
    return h->ops->barrier(h, cb, data);
}

void hub_history_close(struct hub_history *h, hub_history_closed_cb cb, void *data)
{
    h->ops->close(h, cb, data);
}

void hub_history_free(struct hub_history *h)
{
    if (h != NULL)
        h->ops->free(h);
}

static const struct history_ops memory_ops;

int hub_history_open_memory(struct hub_history **out, const struct hub_history_config *cfg)
{
    struct memory_store *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return HUB_ENOMEM;
    h->cfg = *cfg;
    if (h->cfg.max_per_room == 0)
        h->cfg.max_per_room = 1;
    h->nbuckets = 64;
    h->buckets = calloc(h->nbuckets, sizeof(*h->buckets));
    if (h->buckets == NULL) {
        free(h);
        return HUB_ENOMEM;
    }
    h->base.ops = &memory_ops;
    *out = &h->base;
    return 0;
}

static void stream_free(struct stream *s, uint32_t cap)
{
    for (uint32_t i = 0; i < s->count; i++)
        free(s->ring[(s->head + i) % cap]);
    free(s->ring);
    free(s);
}

static void memory_free(struct hub_history *base)
{
    struct memory_store *h = (struct memory_store *)base;
    for (size_t i = 0; i < h->nbuckets; i++) {
        struct stream *s = h->buckets[i];
        while (s != NULL) {
            struct stream *next = s->next;
            stream_free(s, h->cfg.max_per_room);
            s = next;
        }
    }
    free(h->buckets);
    free(h);
}

static uint64_t hash_name(struct hub_iov n)
{
    return hub_hash(n.base, n.len, 0);
}

static void lru_unlink(struct memory_store *h, struct stream *s)
{
    if (s->lru_prev)
        s->lru_prev->lru_next = s->lru_next;
    else
        h->lru_head = s->lru_next;
    if (s->lru_next)
        s->lru_next->lru_prev = s->lru_prev;
    else
        h->lru_tail = s->lru_prev;
    s->lru_prev = s->lru_next = NULL;
}

static void lru_push_front(struct memory_store *h, struct stream *s)
{
    s->lru_next = h->lru_head;
    if (h->lru_head)
        h->lru_head->lru_prev = s;
    h->lru_head = s;
    if (h->lru_tail == NULL)
        h->lru_tail = s;
}

static void drop_stream(struct memory_store *h, struct stream *s)
{
    struct stream **pp = &h->buckets[s->hash & (h->nbuckets - 1)];
    while (*pp != s)
        pp = &(*pp)->next;
    *pp = s->next;
    lru_unlink(h, s);
    h->nstreams--;
    stream_free(s, h->cfg.max_per_room);
}

void history_new_epoch(char out[HUB_HISTORY_EPOCH_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char r[HUB_HISTORY_EPOCH_LEN / 2];
    if (uv_random(NULL, NULL, r, sizeof(r), 0, NULL) != 0) {
        /* No entropy source: the time still differs between runs. */
        uint64_t t = uv_hrtime();
        memcpy(r, &t, sizeof(r) < sizeof(t) ? sizeof(r) : sizeof(t));
    }
    for (size_t i = 0; i < sizeof(r); i++) {
        out[2 * i] = hex[r[i] >> 4];
        out[2 * i + 1] = hex[r[i] & 15];
    }
    out[HUB_HISTORY_EPOCH_LEN] = '\0';
}

/* Finds the stream for room, creating it when create is set. Marks it used. */
static struct stream *get_stream(struct memory_store *h, struct hub_iov room, int create)
{
    uint64_t x = hash_name(room);
    for (struct stream *s = h->buckets[x & (h->nbuckets - 1)]; s; s = s->next)
        if (s->hash == x && s->name_len == room.len && memcmp(s->name, room.base, room.len) == 0) {
            lru_unlink(h, s);
            lru_push_front(h, s);
            return s;
        }
    if (!create)
        return NULL;
    if (h->nstreams >= h->cfg.max_rooms && h->lru_tail != NULL)
        drop_stream(h, h->lru_tail);
    if (h->nstreams >= h->nbuckets) {
        size_t n = h->nbuckets * 2;
        struct stream **b = calloc(n, sizeof(*b));
        if (b != NULL) {
            for (size_t i = 0; i < h->nbuckets; i++)
                for (struct stream *s = h->buckets[i], *next; s; s = next) {
                    next = s->next;
                    s->next = b[s->hash & (n - 1)];
                    b[s->hash & (n - 1)] = s;
                }
            free(h->buckets);
            h->buckets = b;
            h->nbuckets = n;
        }
    }
    struct stream *s = calloc(1, sizeof(*s) + room.len + 1);
    if (s == NULL)
        return NULL;
    s->ring = calloc(h->cfg.max_per_room, sizeof(*s->ring));
    if (s->ring == NULL) {
        free(s);
        return NULL;
    }
    memcpy(s->name, room.base, room.len);
    s->name_len = room.len;
    s->hash = x;
    history_new_epoch(s->epoch);
    s->next = h->buckets[x & (h->nbuckets - 1)];
    h->buckets[x & (h->nbuckets - 1)] = s;
    lru_push_front(h, s);
    h->nstreams++;
    return s;
}

static void fill_pos(const struct stream *s, struct hub_history_pos *pos)
{
    memcpy(pos->epoch, s->epoch, sizeof(pos->epoch));
    pos->last = s->last;
    pos->first = s->last - s->count + 1;
}

static void record_view(const struct record *r, struct hub_history_msg *m)
{
    m->offset = r->offset;
    m->ts = r->ts;
    m->from.base = r->bytes;
    m->from.len = r->from_len;
    m->text.base = r->bytes + r->from_len;
    m->text.len = r->text_len;
    m->cmid.base = r->bytes + r->from_len + r->text_len;
    m->cmid.len = r->cmid_len;
}

/* Drops records older than the TTL from the head of the ring. */
static void expire(struct memory_store *h, struct stream *s)
{
    if (h->cfg.ttl_ms <= 0)
        return;
    uv_timeval64_t tv;
    if (uv_gettimeofday(&tv) != 0)
        return;
    int64_t cutoff = (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000 - h->cfg.ttl_ms;
    while (s->count > 0 && s->ring[s->head]->ts < cutoff) {
        free(s->ring[s->head]);
        s->ring[s->head] = NULL;
        s->head = (s->head + 1) % h->cfg.max_per_room;
        s->count--;
    }
}

/* Finds an earlier message in s from the same sender with the same cmid. */
static const struct record *find_cmid(const struct memory_store *h, const struct stream *s,
                                      struct hub_iov from, struct hub_iov cmid)
{
    /* Newest first: a resend after a reconnect is nearly always recent. */
    for (uint32_t i = s->count; i-- > 0;) {
        const struct record *r = s->ring[(s->head + i) % h->cfg.max_per_room];
        if (r->cmid_len == cmid.len && r->from_len == from.len &&
            memcmp(r->bytes + r->from_len + r->text_len, cmid.base, cmid.len) == 0 &&
            memcmp(r->bytes, from.base, from.len) == 0)
            return r;
    }
    return NULL;
}

static int memory_append(struct hub_history *base, struct hub_iov room, struct hub_iov from,
                         struct hub_iov text, struct hub_iov cmid, int64_t ts,
                         hub_history_append_cb cb, void *data)
{
    struct memory_store *h = (struct memory_store *)base;
    struct stream *s = get_stream(h, room, 1);
    if (s == NULL)
        return HUB_ENOMEM;
    if (cmid.len > 0) {
        const struct record *prev = find_cmid(h, s, from, cmid);
        if (prev != NULL) {
            cb(data, 0, prev->offset, prev->ts, 1);
            return 0;
        }
    }
    struct record *r = malloc(sizeof(*r) + from.len + text.len + cmid.len);
    if (r == NULL)
        return HUB_ENOMEM;
    r->offset = ++s->last;
    r->ts = ts;
    r->from_len = (uint32_t)from.len;
    r->text_len = (uint32_t)text.len;
    r->cmid_len = (uint32_t)cmid.len;
    memcpy(r->bytes, from.base, from.len);
    memcpy(r->bytes + from.len, text.base, text.len);
    memcpy(r->bytes + from.len + text.len, cmid.base, cmid.len);
    uint32_t cap = h->cfg.max_per_room;
    if (s->count == cap) {
        free(s->ring[s->head]);
        s->ring[s->head] = r;
        s->head = (s->head + 1) % cap;
    } else {
        s->ring[(s->head + s->count) % cap] = r;
        s->count++;
    }
    cb(data, 0, r->offset, r->ts, 0);
    return 0;
}

static int memory_read(struct hub_history *base, struct hub_iov room, int dir, uint64_t pos,
                       unsigned limit, hub_history_read_cb cb, void *data)
{
    struct memory_store *h = (struct memory_store *)base;
    struct stream *s = get_stream(h, room, 1);
    if (s == NULL)
        return HUB_ENOMEM;
    expire(h, s);
    struct hub_history_pos p;
    fill_pos(s, &p);
    if (s->count == 0 || limit == 0) {
        cb(data, 0, &p, NULL, 0, 1);
        return 0;
    }
    uint64_t first = p.first;
    /* Work out the offset range [lo, hi] to hand out. */
    uint64_t lo, hi;
    int complete;
    if (dir == HUB_HISTORY_BEFORE) {
        hi = pos == 0 ? 0 : pos - 1;
        if (hi > s->last)
            hi = s->last;
        if (hi < first) {
            cb(data, 0, &p, NULL, 0, 1);
            return 0;
        }
        lo = hi - first + 1 > limit ? hi - limit + 1 : first;
        complete = lo == first;
    } else if (dir == HUB_HISTORY_AFTER) {
        if (pos >= s->last) {
            cb(data, 0, &p, NULL, 0, 1);
            return 0;
        }
        lo = pos + 1 < first ? first : pos + 1;
        if (lo > s->last) {
            cb(data, 0, &p, NULL, 0, 1);
            return 0;
        }
        hi = s->last - lo + 1 > limit ? lo + limit - 1 : s->last;
        complete = hi == s->last;
    } else {
        hi = s->last;
        lo = s->count > limit ? s->last - limit + 1 : first;
        complete = lo == first;
    }
    size_t n = (size_t)(hi - lo + 1);
    struct hub_history_msg *msgs = malloc(n * sizeof(*msgs));
    if (msgs == NULL)
        return HUB_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        uint64_t idx = (lo - first) + i;
        record_view(s->ring[(s->head + idx) % h->cfg.max_per_room], &msgs[i]);
    }
    cb(data, 0, &p, msgs, n, complete);
    free(msgs);
    return 0;
}

static int memory_barrier(struct hub_history *base, hub_history_barrier_cb cb, void *data)
{
    cb(data);
    return 0;
}

static void memory_close(struct hub_history *base, hub_history_closed_cb cb, void *data)
{
    cb(data);
}

static const struct history_ops memory_ops = {
    memory_append, memory_read, memory_barrier, memory_close, memory_free,
};
