/*
 * history.c: the history interface's dispatch, and the in-memory store.
 *
 * The memory store completes every request before returning, which keeps
 * the interface's ordering promise trivially.
 *
 * Each stream is a ring of message records, one allocation per record
 * holding its strings; the ring grows by doubling up to max_per_room slots
 * and is freed when it empties. Offsets in a ring are contiguous, so the
 * record for an offset is found by arithmetic. Streams live in an intrusive
 * hash table by room name (hmap.h) and on exactly one of three lists
 * (lru.h), chosen by their state:
 * - held: rooms with local members (hub_history_hold). Never dropped.
 * - rings: rooms without members that hold messages, least recently used
 *   at the back. The first to lose their ring when the byte budget is hit.
 * - bare: rooms without members whose messages are all gone but whose
 *   position (epoch, last) still tells a resume that it missed some. Dropped
 *   least recently used first, past max_rooms or the byte budget.
 * A room without members and without a single message ever needs no state
 * at all: its epoch is derived from its name, the store's random seed and a
 * generation counter, which goes up whenever a stream that had messages is
 * dropped, so such a room's epoch never comes back with its offsets reused.
 * A read never creates a stream; only an append or a hold does.
 *
 * Invariants:
 * - bytes is the sum of block_bytes() of every allocation the store holds
 *   (the store itself, the bucket array, headers, rings, records), and
 *   enforce() brings it back under max_bytes after anything that grew it,
 *   except for the newest message of each held room (and of the stream
 *   being appended to), which is never dropped.
 * - A stream is on held iff it is held; else on rings iff count > 0; else
 *   on bare, and then last > 0 (an empty, unheld, never written stream is
 *   freed at once).
 */
#include "hub/history.h"
#include "hub/hmap.h"
#include "hub/lru.h"
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
    struct hub_hnode node;                 /* in memory_store.streams, by name */
    struct hub_lru_node lru;               /* on held, rings or bare */
    struct hub_lru *list;                  /* the list lru is on, NULL if none */
    char epoch[HUB_HISTORY_EPOCH_LEN + 1]; /* this incarnation */
    int held;                              /* the room has local members */
    uint64_t last;                         /* newest offset */
    struct record **ring;                  /* cap slots, owned; NULL when cap is 0 */
    uint32_t cap;                          /* slots in ring, at most max_per_room */
    uint32_t count;                        /* records held */
    uint32_t head;                         /* slot of the oldest record */
    size_t bytes;                          /* block_bytes of the ring and the records */
    size_t name_len;                       /* length of name */
    char name[];                           /* room name, NUL-terminated */
};

struct memory_store {
    struct hub_history base;       /* the interface header; must be first */
    struct hub_history_config cfg; /* copied */
    struct hub_hmap streams;       /* every stream, by name; owned */
    struct hub_lru held;           /* held streams, recency order */
    struct hub_lru rings;          /* unheld streams with messages, recency order */
    struct hub_lru bare;           /* unheld streams without messages, recency order */
    uint64_t seed;                 /* random, for derived epochs */
    uint64_t gen;                  /* streams with messages dropped so far */
    size_t bytes;                  /* everything held, as block_bytes (see invariants) */
    uint64_t messages;             /* records held */
    uint64_t dropped;              /* records dropped by the bounds */
};

void hub_history_config_default(struct hub_history_config *cfg)
{
    cfg->max_per_room = 1000;
    cfg->max_rooms = 10000;
    cfg->ttl_ms = 0;
    cfg->max_bytes = HUB_HISTORY_MAX_BYTES_DEFAULT;
    cfg->now_ms = NULL;
}

int64_t history_now_ms(const struct hub_history_config *cfg)
{
    if (cfg->now_ms != NULL)
        return cfg->now_ms();
    uv_timeval64_t tv;
    if (uv_gettimeofday(&tv) != 0)
        return 0;
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
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

int hub_history_hold(struct hub_history *h, struct hub_iov room, int held)
{
    return h->ops->hold != NULL ? h->ops->hold(h, room, held) : 0;
}

void hub_history_stats(const struct hub_history *h, struct hub_history_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (h->ops->stats != NULL)
        h->ops->stats(h, out);
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

/* ---- The memory store ---- */

static const struct history_ops memory_ops;

/* What an allocation of n bytes costs: glibc's malloc chunk on 64-bit
 * systems (an 8-byte header, 16-byte alignment, 32 bytes at least). Other
 * allocators differ by a few bytes a block; the budget stays honest to
 * within that. */
static size_t block_bytes(size_t n)
{
    size_t b = (n + 8 + 15) & ~(size_t)15;
    return b < 32 ? 32 : b;
}

static size_t header_bytes(size_t name_len)
{
    return block_bytes(sizeof(struct stream) + name_len + 1);
}

static size_t record_bytes(const struct record *r)
{
    return block_bytes(sizeof(*r) + r->from_len + r->text_len + r->cmid_len);
}

/* The bytes held beyond streams and records: the store and its buckets. */
static size_t fixed_bytes(const struct memory_store *h)
{
    return block_bytes(sizeof(*h)) + block_bytes(hub_hmap_bytes(&h->streams));
}

/* SplitMix64's finaliser: a bijection that spreads every input bit. */
static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

/* The epoch of a room the store holds nothing for. For one room, two
 * generations always give different epochs (mix64 is a bijection). */
static void derived_epoch(const struct memory_store *h, struct hub_iov room,
                          char out[HUB_HISTORY_EPOCH_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    uint64_t x = mix64(hub_hash(room.base, room.len, 0) ^ mix64(h->seed + h->gen));
    for (int i = HUB_HISTORY_EPOCH_LEN - 1; i >= 0; i--) {
        out[i] = hex[x & 15];
        x >>= 4;
    }
    out[HUB_HISTORY_EPOCH_LEN] = '\0';
}

int hub_history_open_memory(struct hub_history **out, const struct hub_history_config *cfg)
{
    struct memory_store *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return HUB_ENOMEM;
    h->cfg = *cfg;
    if (h->cfg.max_per_room == 0)
        h->cfg.max_per_room = 1;
    if (hub_hmap_init(&h->streams, 64) != 0) {
        free(h);
        return HUB_ENOMEM;
    }
    hub_lru_init(&h->held);
    hub_lru_init(&h->rings);
    hub_lru_init(&h->bare);
    if (uv_random(NULL, NULL, &h->seed, sizeof(h->seed), 0, NULL) != 0)
        h->seed = uv_hrtime();
    h->bytes = fixed_bytes(h);
    h->base.ops = &memory_ops;
    *out = &h->base;
    return 0;
}

static struct stream *stream_of(struct hub_hnode *n)
{
    return HUB_CONTAINER_OF(n, struct stream, node);
}

static struct stream *stream_of_lru(struct hub_lru_node *n)
{
    return n != NULL ? HUB_CONTAINER_OF(n, struct stream, lru) : NULL;
}

static struct record *ring_at(const struct stream *s, uint32_t i)
{
    return s->ring[(s->head + i) % s->cap];
}

/* Frees the oldest record of s. */
static void drop_oldest(struct memory_store *h, struct stream *s)
{
    struct record *r = s->ring[s->head];
    size_t b = record_bytes(r);
    s->bytes -= b;
    h->bytes -= b;
    free(r);
    s->ring[s->head] = NULL;
    s->head = (s->head + 1) % s->cap;
    s->count--;
    h->messages--;
}

/* Frees every record and the ring of s. */
static void free_ring(struct memory_store *h, struct stream *s)
{
    while (s->count > 0)
        drop_oldest(h, s);
    if (s->ring != NULL) {
        size_t b = block_bytes(s->cap * sizeof(*s->ring));
        s->bytes -= b;
        h->bytes -= b;
        free(s->ring);
    }
    s->ring = NULL;
    s->cap = 0;
    s->head = 0;
}

/* Puts s at the front of the list its state says (see the invariants). */
static void place(struct memory_store *h, struct stream *s)
{
    struct hub_lru *l = s->held ? &h->held : s->count > 0 ? &h->rings : &h->bare;
    if (s->list != NULL)
        hub_lru_remove(s->list, &s->lru);
    hub_lru_push_front(l, &s->lru);
    s->list = l;
}

static void drop_stream(struct memory_store *h, struct stream *s)
{
    if (s->last > 0)
        h->gen++; /* its epoch must not come back with offsets from 1 */
    free_ring(h, s);
    if (s->list != NULL)
        hub_lru_remove(s->list, &s->lru);
    hub_hmap_remove(&h->streams, &s->node);
    h->bytes -= header_bytes(s->name_len);
    free(s);
}

/* Returns an empty, unheld, never written stream's memory: it needs none. */
static void maybe_forget(struct memory_store *h, struct stream *s)
{
    if (!s->held && s->last == 0 && s->count == 0)
        drop_stream(h, s);
}

static void memory_free(struct hub_history *base)
{
    struct memory_store *h = (struct memory_store *)base;
    struct hub_hnode *n;
    while ((n = hub_hmap_pop(&h->streams)) != NULL) {
        struct stream *s = stream_of(n);
        for (uint32_t i = 0; i < s->count; i++)
            free(ring_at(s, i));
        free(s->ring);
        free(s);
    }
    hub_hmap_destroy(&h->streams);
    free(h);
}

/* The held stream (or keep, when it is not held) with the most bytes that
 * has more than its newest message, or NULL. */
static struct stream *largest_trimmable(struct memory_store *h, struct stream *keep)
{
    struct stream *best = NULL;
    for (struct hub_lru_node *n = hub_lru_front(&h->held); n != NULL;
         n = hub_lru_older(&h->held, n)) {
        struct stream *s = stream_of_lru(n);
        if (s->count > 1 && (best == NULL || s->bytes > best->bytes))
            best = s;
    }
    if (keep != NULL && !keep->held && keep->count > 1 &&
        (best == NULL || keep->bytes > best->bytes))
        best = keep;
    return best;
}

/* Brings the store back within max_rooms and max_bytes, in the order the
 * header gives. keep (may be NULL) is the stream just appended to: it is
 * spared like a held one, so an append never loses its own message. */
static void enforce(struct memory_store *h, struct stream *keep)
{
    while (h->rings.count + h->bare.count > h->cfg.max_rooms) {
        struct stream *v = stream_of_lru(hub_lru_back(&h->bare));
        if (v == NULL)
            v = stream_of_lru(hub_lru_back(&h->rings));
        if (v == NULL || v == keep)
            break;
        h->dropped += v->count;
        drop_stream(h, v);
    }
    if (h->cfg.max_bytes == 0)
        return;
    while (h->bytes > h->cfg.max_bytes) {
        struct stream *v = stream_of_lru(hub_lru_back(&h->rings));
        if (v == keep && v != NULL)
            v = stream_of_lru(hub_lru_older(&h->rings, &v->lru));
        if (v != NULL) {
            /* A room without members loses its ring but keeps its
             * position, so a resume across it sees a gap. */
            h->dropped += v->count;
            free_ring(h, v);
            place(h, v);
            continue;
        }
        v = stream_of_lru(hub_lru_back(&h->bare));
        if (v != NULL) {
            drop_stream(h, v);
            continue;
        }
        v = largest_trimmable(h, keep);
        if (v == NULL)
            break; /* only newest messages of held rooms are left */
        drop_oldest(h, v);
        h->dropped++;
    }
}

static int name_eq(const struct hub_hnode *n, const void *key, size_t len)
{
    const struct stream *s = HUB_CONTAINER_OF(n, struct stream, node);
    return s->name_len == len && memcmp(s->name, key, len) == 0;
}

/* Finds the stream for room, or NULL. Marks it used. */
static struct stream *find_stream(struct memory_store *h, struct hub_iov room)
{
    struct hub_hnode *n =
        hub_hmap_find(&h->streams, hub_hash(room.base, room.len, 0), room.base, room.len, name_eq);
    if (n == NULL)
        return NULL;
    struct stream *s = stream_of(n);
    place(h, s);
    return s;
}

/* Creates the stream for room (absent), with the epoch a read of it has
 * been showing, on its list. Returns NULL without memory. */
static struct stream *create_stream(struct memory_store *h, struct hub_iov room)
{
    struct stream *s = calloc(1, sizeof(*s) + room.len + 1);
    if (s == NULL)
        return NULL;
    if (room.len > 0)
        memcpy(s->name, room.base, room.len);
    s->name_len = room.len;
    derived_epoch(h, room, s->epoch);
    hub_lru_node_init(&s->lru);
    size_t before = hub_hmap_bytes(&h->streams);
    hub_hmap_insert(&h->streams, &s->node, hub_hash(room.base, room.len, 0));
    h->bytes += header_bytes(room.len);
    if (hub_hmap_bytes(&h->streams) != before)
        h->bytes += block_bytes(hub_hmap_bytes(&h->streams)) - block_bytes(before);
    place(h, s);
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
    if (h->cfg.ttl_ms <= 0 || s->count == 0)
        return;
    int64_t cutoff = history_now_ms(&h->cfg) - h->cfg.ttl_ms;
    while (s->count > 0 && s->ring[s->head]->ts < cutoff)
        drop_oldest(h, s);
    if (s->count == 0) {
        free_ring(h, s);
        place(h, s);
    }
}

/* Finds an earlier message in s from the same sender with the same cmid. */
static const struct record *find_cmid(const struct stream *s, struct hub_iov from,
                                      struct hub_iov cmid)
{
    /* Newest first: a resend after a reconnect is nearly always recent. */
    for (uint32_t i = s->count; i-- > 0;) {
        const struct record *r = ring_at(s, i);
        if (r->cmid_len == cmid.len && r->from_len == from.len &&
            memcmp(r->bytes + r->from_len + r->text_len, cmid.base, cmid.len) == 0 &&
            memcmp(r->bytes, from.base, from.len) == 0)
            return r;
    }
    return NULL;
}

/* Makes room in s's ring for one more record, growing it while it is below
 * max_per_room. Returns 0 or HUB_ENOMEM. */
static int ring_reserve(struct memory_store *h, struct stream *s)
{
    uint32_t max = h->cfg.max_per_room;
    if (s->count < s->cap || s->cap == max)
        return 0;
    uint32_t cap = s->cap == 0 ? 4 : s->cap * 2;
    if (cap > max || cap < s->cap)
        cap = max;
    struct record **ring = malloc(cap * sizeof(*ring));
    if (ring == NULL)
        return HUB_ENOMEM;
    for (uint32_t i = 0; i < s->count; i++)
        ring[i] = ring_at(s, i);
    size_t grown = block_bytes(cap * sizeof(*ring));
    if (s->ring != NULL) {
        size_t b = block_bytes(s->cap * sizeof(*s->ring));
        s->bytes -= b;
        h->bytes -= b;
        free(s->ring);
    }
    s->ring = ring;
    s->cap = cap;
    s->head = 0;
    s->bytes += grown;
    h->bytes += grown;
    return 0;
}

static int memory_append(struct hub_history *base, struct hub_iov room, struct hub_iov from,
                         struct hub_iov text, struct hub_iov cmid, int64_t ts,
                         hub_history_append_cb cb, void *data)
{
    struct memory_store *h = (struct memory_store *)base;
    if (from.len > UINT32_MAX || text.len > UINT32_MAX || cmid.len > UINT32_MAX)
        return HUB_EINVAL;
    struct stream *s = find_stream(h, room);
    if (s == NULL && (s = create_stream(h, room)) == NULL)
        return HUB_ENOMEM;
    expire(h, s);
    if (cmid.len > 0) {
        const struct record *prev = find_cmid(s, from, cmid);
        if (prev != NULL) {
            cb(data, 0, prev->offset, prev->ts, 1);
            return 0;
        }
    }
    struct record *r = malloc(sizeof(*r) + from.len + text.len + cmid.len);
    if (r == NULL || ring_reserve(h, s) != 0) {
        free(r);
        maybe_forget(h, s);
        return HUB_ENOMEM;
    }
    r->offset = ++s->last;
    r->ts = ts;
    r->from_len = (uint32_t)from.len;
    r->text_len = (uint32_t)text.len;
    r->cmid_len = (uint32_t)cmid.len;
    if (from.len > 0)
        memcpy(r->bytes, from.base, from.len);
    if (text.len > 0)
        memcpy(r->bytes + from.len, text.base, text.len);
    if (cmid.len > 0)
        memcpy(r->bytes + from.len + text.len, cmid.base, cmid.len);
    if (s->count == s->cap)
        drop_oldest(h, s); /* the ring is at max_per_room */
    s->ring[(s->head + s->count) % s->cap] = r;
    s->count++;
    s->bytes += record_bytes(r);
    h->bytes += record_bytes(r);
    h->messages++;
    place(h, s);
    enforce(h, s);
    cb(data, 0, r->offset, r->ts, 0);
    return 0;
}

static int memory_read(struct hub_history *base, struct hub_iov room, int dir, uint64_t pos,
                       unsigned limit, hub_history_read_cb cb, void *data)
{
    struct memory_store *h = (struct memory_store *)base;
    struct stream *s = find_stream(h, room);
    struct hub_history_pos p;
    if (s == NULL) {
        /* A read creates nothing: an unknown room is empty. */
        derived_epoch(h, room, p.epoch);
        p.last = 0;
        p.first = 1;
        cb(data, 0, &p, NULL, 0, 1);
        return 0;
    }
    expire(h, s);
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
    for (size_t i = 0; i < n; i++)
        record_view(ring_at(s, (uint32_t)(lo - first + i)), &msgs[i]);
    cb(data, 0, &p, msgs, n, complete);
    free(msgs);
    return 0;
}

static int memory_hold(struct hub_history *base, struct hub_iov room, int held)
{
    struct memory_store *h = (struct memory_store *)base;
    struct stream *s = find_stream(h, room);
    if (!held) {
        if (s != NULL && s->held) {
            s->held = 0;
            place(h, s);
            maybe_forget(h, s);
            enforce(h, NULL);
        }
        return 0;
    }
    if (s == NULL && (s = create_stream(h, room)) == NULL)
        return HUB_ENOMEM;
    if (!s->held) {
        s->held = 1;
        place(h, s);
        enforce(h, NULL);
    }
    return 0;
}

static void memory_stats(const struct hub_history *base, struct hub_history_stats *out)
{
    const struct memory_store *h = (const struct memory_store *)base;
    out->bytes = h->bytes;
    out->rooms = h->streams.count;
    out->held = h->held.count;
    out->messages = h->messages;
    out->dropped = h->dropped;
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
    memory_append, memory_read, memory_barrier, memory_close,
    memory_free,   memory_hold, memory_stats,
};
