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

/* One user's reaction (a reactor of one emoji on one message). */
struct rx_who {
    uint32_t len; /* key length */
    char s[];     /* the author key */
};

/* One emoji on a message, with the users who reacted with it. */
struct rx_emoji {
    uint8_t elen;                      /* bytes of emoji */
    char emoji[HUB_HISTORY_EMOJI_MAX]; /* the emoji */
    uint32_t n, cap;                   /* reactors held, slots in who */
    struct rx_who **who;               /* n reactors (in no order), owned */
};

struct record {
    uint64_t offset;     /* position in the stream */
    int64_t ts;          /* milliseconds since the epoch */
    uint64_t reply_to;   /* offset answered, or 0 */
    int64_t edited_ts;   /* last edit, or 0 */
    int deleted;         /* a tombstone */
    uint32_t nrx;        /* emoji in rx */
    struct rx_emoji *rx; /* reactions, oldest emoji first, owned; NULL if none */
    size_t rx_bytes;     /* block_bytes of rx and everything it points to */
    uint32_t from_len, text_len, cmid_len, author_len, mentions_len; /* string lengths */
    char bytes[]; /* from, text, cmid, author, mentions */
};

/* A restriction or a topic: a key and a value in one block. */
struct kv {
    struct hub_hnode node; /* in memory_store.restrictions or .topics */
    int64_t until;         /* restrictions: until when (INT64_MAX: for good) */
    uint32_t klen, vlen;   /* key and value lengths */
    char bytes[];          /* key, then value */
};

/* Restrictions and topics kept, at most, each (set by moderators only; a
 * full table first forgets expired restrictions, then refuses). */
#define KV_MAX 100000

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
    struct hub_hmap restrictions;  /* struct kv by kind, room and actor; owned */
    struct hub_hmap topics;        /* struct kv by room, value the topic; owned */
};

void hub_history_config_default(struct hub_history_config *cfg)
{
    cfg->max_per_room = 1000;
    cfg->search_index = HUB_HISTORY_SEARCH_AUTO;
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

int hub_history_append_ex(struct hub_history *h, const struct hub_history_new *m,
                          hub_history_append_cb cb, void *data)
{
    if (m->author.len > HISTORY_KEY_MAX || m->actor.len > HISTORY_KEY_MAX ||
        m->mentions.len > HUB_HISTORY_MENTIONS_MAX * 256u)
        return HUB_EINVAL;
    if (h->ops->append_ex == NULL) {
        /* A store without the new calls (a test double) takes plain messages. */
        if (m->author.len > 0 || m->actor.len > 0 || m->mentions.len > 0 || m->reply_to != 0)
            return HUB_EINVAL;
        return h->ops->append(h, m->room, m->from, m->text, m->cmid, m->ts, cb, data);
    }
    return h->ops->append_ex(h, m, cb, data);
}

int hub_history_query(struct hub_history *h, struct hub_iov room, const struct hub_history_query *q,
                      hub_history_read_cb cb, void *data)
{
    if (q->viewer.len > HISTORY_KEY_MAX || q->actor.len > HISTORY_KEY_MAX)
        return HUB_EINVAL;
    if (h->ops->query == NULL) /* a test double: no topics, restrictions, reactions */
        return h->ops->read(h, room, q->dir, q->pos, q->limit, cb, data);
    return h->ops->query(h, room, q, cb, data);
}

int hub_history_amend(struct hub_history *h, const struct hub_history_amend *a,
                      hub_history_amend_cb cb, void *data)
{
    if (a->who.len > HISTORY_KEY_MAX || a->text.len > UINT32_MAX ||
        a->emoji.len > HUB_HISTORY_EMOJI_MAX)
        return HUB_EINVAL;
    if (h->ops->amend == NULL)
        return HUB_EINVAL;
    return h->ops->amend(h, a, cb, data);
}

int hub_history_search(struct hub_history *h, struct hub_iov room, struct hub_iov q,
                       uint64_t before, unsigned limit, hub_history_search_cb cb, void *data)
{
    if (h->ops->search == NULL)
        return HUB_EINVAL;
    if (limit > HISTORY_SEARCH_LIMIT)
        limit = HISTORY_SEARCH_LIMIT;
    return h->ops->search(h, room, q, before, limit, cb, data);
}

int hub_history_restrict(struct hub_history *h, const struct hub_history_restrict *r,
                         hub_history_done_cb cb, void *data)
{
    if ((r->kind != HUB_RESTRICT_BAN && r->kind != HUB_RESTRICT_MUTE) || r->actor.len == 0 ||
        r->actor.len > HISTORY_KEY_MAX || r->room.len > HISTORY_KEY_MAX || r->until_ms < 0 ||
        r->by.len > HISTORY_KEY_MAX || r->reason.len > HISTORY_KEY_MAX)
        return HUB_EINVAL;
    if (h->ops->set_restriction == NULL)
        return HUB_EINVAL;
    return h->ops->set_restriction(h, r, cb, data);
}

int hub_history_set_topic(struct hub_history *h, struct hub_iov room, struct hub_iov topic,
                          hub_history_done_cb cb, void *data)
{
    if (topic.len > HUB_HISTORY_TOPIC_MAX || room.len == 0)
        return HUB_EINVAL;
    if (h->ops->set_topic == NULL)
        return HUB_EINVAL;
    return h->ops->set_topic(h, room, topic, cb, data);
}

/* ---- search words, shared by both stores ---- */

static unsigned char lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c;
}

/* Finds the next token of s at or after *pos; returns 0 when there is none. */
static int next_token(struct hub_iov s, size_t *pos, struct hub_iov *tok)
{
    size_t i = *pos;
    while (i < s.len && !history_tok_char((unsigned char)s.base[i]))
        i++;
    if (i == s.len) {
        *pos = i;
        return 0;
    }
    size_t j = i;
    while (j < s.len && history_tok_char((unsigned char)s.base[j]))
        j++;
    tok->base = s.base + i;
    tok->len = j - i;
    *pos = j;
    return 1;
}

/* 1 if a equals b (prefix: b starts with a), folding ASCII case. */
static int tok_eq(struct hub_iov a, struct hub_iov b, int prefix)
{
    if (prefix ? a.len > b.len : a.len != b.len)
        return 0;
    for (size_t i = 0; i < a.len; i++)
        if (lower((unsigned char)a.base[i]) != lower((unsigned char)b.base[i]))
            return 0;
    return 1;
}

int history_search_words(struct hub_iov q, struct history_words *out)
{
    out->n = 0;
    if (q.len > HISTORY_SEARCH_BYTES)
        return HUB_EINVAL;
    size_t i = 0;
    while (i < q.len && out->n < HISTORY_SEARCH_WORDS) {
        while (i < q.len && (q.base[i] == ' ' || (q.base[i] >= '\t' && q.base[i] <= '\r')))
            i++;
        size_t j = i;
        while (j < q.len && !(q.base[j] == ' ' || (q.base[j] >= '\t' && q.base[j] <= '\r')))
            j++;
        struct hub_iov w = {q.base + i, j - i}, tok;
        size_t p = 0;
        if (w.len > 0 && next_token(w, &p, &tok))
            out->word[out->n++] = w;
        i = j;
    }
    return out->n > 0 ? 0 : HUB_EINVAL;
}

/* 1 if the tokens of text from *tp on begin with the phrase of word. */
static int phrase_at(struct hub_iov text, size_t tp, struct hub_iov word)
{
    size_t wp = 0;
    struct hub_iov wt, tt;
    if (!next_token(word, &wp, &wt))
        return 0;
    for (;;) {
        struct hub_iov next;
        size_t wq = wp;
        int more = next_token(word, &wq, &next);
        if (!next_token(text, &tp, &tt) || !tok_eq(wt, tt, !more))
            return 0;
        if (!more)
            return 1;
        wt = next;
        wp = wq;
    }
}

int history_search_match(const struct history_words *w, struct hub_iov text)
{
    for (size_t k = 0; k < w->n; k++) {
        size_t p = 0, start;
        struct hub_iov tok;
        int found = 0;
        for (;;) {
            start = p;
            if (!next_token(text, &p, &tok))
                break;
            if (phrase_at(text, start, w->word[k])) {
                found = 1;
                break;
            }
        }
        if (!found)
            return 0;
    }
    return 1;
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

static size_t record_strings(const struct record *r)
{
    return (size_t)r->from_len + r->text_len + r->cmid_len + r->author_len + r->mentions_len;
}

static size_t record_bytes(const struct record *r)
{
    return block_bytes(sizeof(*r) + record_strings(r)) + r->rx_bytes;
}

/* Frees r's reactions (not r->rx_bytes' accounting). */
static void rx_free(struct record *r)
{
    for (uint32_t i = 0; i < r->nrx; i++) {
        for (uint32_t j = 0; j < r->rx[i].n; j++)
            free(r->rx[i].who[j]);
        free(r->rx[i].who);
    }
    free(r->rx);
    r->rx = NULL;
    r->nrx = 0;
}

static void record_free(struct record *r)
{
    rx_free(r);
    free(r);
}

/* What r's reactions cost, counted as block_bytes of each allocation. */
static size_t rx_count_bytes(const struct record *r)
{
    if (r->nrx == 0)
        return 0;
    size_t b = block_bytes(r->nrx * sizeof(*r->rx));
    for (uint32_t i = 0; i < r->nrx; i++) {
        b += block_bytes(r->rx[i].cap * sizeof(*r->rx[i].who));
        for (uint32_t j = 0; j < r->rx[i].n; j++)
            b += block_bytes(sizeof(struct rx_who) + r->rx[i].who[j]->len);
    }
    return b;
}

static size_t kv_bytes(const struct kv *k)
{
    return block_bytes(sizeof(*k) + k->klen + k->vlen);
}

/* The bytes held beyond streams and records: the store and its buckets. */
static size_t fixed_bytes(const struct memory_store *h)
{
    return block_bytes(sizeof(*h)) + block_bytes(hub_hmap_bytes(&h->streams)) +
           block_bytes(hub_hmap_bytes(&h->restrictions)) + block_bytes(hub_hmap_bytes(&h->topics));
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
    if (hub_hmap_init(&h->restrictions, 8) != 0 || hub_hmap_init(&h->topics, 8) != 0) {
        hub_hmap_destroy(&h->restrictions);
        hub_hmap_destroy(&h->streams);
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
    record_free(r);
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
            record_free(ring_at(s, i));
        free(s->ring);
        free(s);
    }
    hub_hmap_destroy(&h->streams);
    while ((n = hub_hmap_pop(&h->restrictions)) != NULL)
        free(HUB_CONTAINER_OF(n, struct kv, node));
    hub_hmap_destroy(&h->restrictions);
    while ((n = hub_hmap_pop(&h->topics)) != NULL)
        free(HUB_CONTAINER_OF(n, struct kv, node));
    hub_hmap_destroy(&h->topics);
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

/* Fills m from r; reactions are added by the caller (rx_view). */
static void record_view(const struct record *r, struct hub_history_msg *m)
{
    const char *p = r->bytes;
    *m = (struct hub_history_msg){
        .offset = r->offset,
        .ts = r->ts,
        .from = {p, r->from_len},
        .text = {p + r->from_len, r->text_len},
        .cmid = {p + r->from_len + r->text_len, r->cmid_len},
        .author = {p + r->from_len + r->text_len + r->cmid_len, r->author_len},
        .mentions = {p + r->from_len + r->text_len + r->cmid_len + r->author_len, r->mentions_len},
        .reply_to = r->reply_to,
        .edited_ts = r->edited_ts,
        .deleted = r->deleted,
        .reactions = NULL,
        .nreactions = 0,
    };
}

/* 1 if who reacted to r with emoji i. */
static int rx_has(const struct rx_emoji *e, struct hub_iov who, uint32_t *at)
{
    for (uint32_t j = 0; j < e->n; j++)
        if (e->who[j]->len == who.len &&
            (who.len == 0 || memcmp(e->who[j]->s, who.base, who.len) == 0)) {
            if (at != NULL)
                *at = j;
            return 1;
        }
    return 0;
}

/* Fills n messages' views from records, with their reactions (mine for
 * viewer) in one array, which the caller frees (*rxs, NULL if none). */
static int views_fill(const struct record *const *recs, size_t n, struct hub_iov viewer,
                      struct hub_history_msg *msgs, struct hub_history_reaction **rxs)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += recs[i]->nrx;
    *rxs = NULL;
    if (total > 0 && (*rxs = malloc(total * sizeof(**rxs))) == NULL)
        return HUB_ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const struct record *r = recs[i];
        record_view(r, &msgs[i]);
        if (r->nrx == 0)
            continue;
        msgs[i].reactions = *rxs + k;
        msgs[i].nreactions = r->nrx;
        for (uint32_t j = 0; j < r->nrx; j++)
            (*rxs)[k++] = (struct hub_history_reaction){
                .emoji = {r->rx[j].emoji, r->rx[j].elen},
                .count = r->rx[j].n,
                .mine = viewer.len > 0 && rx_has(&r->rx[j], viewer, NULL),
            };
    }
    return 0;
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
        if (r->cmid_len == cmid.len && r->from_len == from.len && cmid.len > 0 &&
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

/* ---- restrictions and topics ---- */

static int kv_eq(const struct hub_hnode *n, const void *key, size_t len)
{
    const struct kv *k = HUB_CONTAINER_OF(n, struct kv, node);
    return k->klen == len && memcmp(k->bytes, key, len) == 0;
}

/* Builds a restriction's key: kind, room length (2 bytes), room, actor.
 * Returns its length (out has 3 + 2 * HISTORY_KEY_MAX bytes). */
static size_t restrict_key(int kind, struct hub_iov room, struct hub_iov actor, char *out)
{
    out[0] = (char)kind;
    out[1] = (char)(room.len >> 8);
    out[2] = (char)(room.len & 255);
    if (room.len > 0)
        memcpy(out + 3, room.base, room.len);
    if (actor.len > 0)
        memcpy(out + 3 + room.len, actor.base, actor.len);
    return 3 + room.len + actor.len;
}

#define RKEY_MAX (3 + 2 * HISTORY_KEY_MAX)

static struct kv *kv_find(const struct hub_hmap *m, const char *key, size_t len)
{
    struct hub_hnode *n = hub_hmap_find(m, hub_hash(key, len, 0), key, len, kv_eq);
    return n != NULL ? HUB_CONTAINER_OF(n, struct kv, node) : NULL;
}

static void kv_remove(struct memory_store *h, struct hub_hmap *m, struct kv *k)
{
    hub_hmap_remove(m, &k->node);
    h->bytes -= kv_bytes(k);
    free(k);
}

/* Replaces (or adds) key's entry with value; returns 0 or HUB_ENOMEM. */
static int kv_put(struct memory_store *h, struct hub_hmap *m, const char *key, size_t klen,
                  struct hub_iov value, int64_t until)
{
    struct kv *old = kv_find(m, key, klen);
    if (old == NULL && m->count >= KV_MAX)
        return HUB_ENOMEM;
    struct kv *k = malloc(sizeof(*k) + klen + value.len);
    if (k == NULL)
        return HUB_ENOMEM;
    memset(&k->node, 0, sizeof(k->node));
    k->until = until;
    k->klen = (uint32_t)klen;
    k->vlen = (uint32_t)value.len;
    memcpy(k->bytes, key, klen);
    if (value.len > 0)
        memcpy(k->bytes + klen, value.base, value.len);
    if (old != NULL)
        kv_remove(h, m, old);
    size_t before = hub_hmap_bytes(m);
    hub_hmap_insert(m, &k->node, hub_hash(key, klen, 0));
    if (hub_hmap_bytes(m) != before)
        h->bytes += block_bytes(hub_hmap_bytes(m)) - block_bytes(before);
    h->bytes += kv_bytes(k);
    return 0;
}

/* Forgets every restriction that has expired by now. */
static void restrict_sweep(struct memory_store *h, int64_t now)
{
    for (size_t b = 0; b < h->restrictions.nbuckets; b++) {
        struct hub_hnode *n = h->restrictions.buckets[b];
        while (n != NULL) {
            struct hub_hnode *next = n->next;
            struct kv *k = HUB_CONTAINER_OF(n, struct kv, node);
            if (k->until <= now)
                kv_remove(h, &h->restrictions, k);
            n = next;
        }
    }
}

/* Until when actor is restricted (kind) in room or the hub at now: the later
 * of the two, 0 if neither is in force. */
static int64_t restricted_until(const struct memory_store *h, int kind, struct hub_iov room,
                                struct hub_iov actor, int64_t now)
{
    if (actor.len == 0 || h->restrictions.count == 0)
        return 0;
    char key[RKEY_MAX];
    int64_t until = 0;
    struct hub_iov scopes[2] = {room, {NULL, 0}};
    for (int i = 0; i < 2; i++) {
        size_t len = restrict_key(kind, scopes[i], actor, key);
        const struct kv *k = kv_find(&h->restrictions, key, len);
        if (k != NULL && k->until > now && k->until > until)
            until = k->until;
    }
    return until;
}

static int memory_restrict(struct hub_history *base, const struct hub_history_restrict *r,
                           hub_history_done_cb cb, void *data)
{
    struct memory_store *h = (struct memory_store *)base;
    char key[RKEY_MAX];
    size_t len = restrict_key(r->kind, r->room, r->actor, key);
    if (r->until_ms == 0) {
        struct kv *k = kv_find(&h->restrictions, key, len);
        if (k != NULL)
            kv_remove(h, &h->restrictions, k);
    } else {
        if (h->restrictions.count >= KV_MAX)
            restrict_sweep(h, history_now_ms(&h->cfg));
        /* The value is only kept for the log's sake: by and reason. */
        int rc = kv_put(h, &h->restrictions, key, len, (struct hub_iov){NULL, 0}, r->until_ms);
        if (rc != 0)
            return rc;
        enforce(h, NULL);
    }
    cb(data, 0);
    return 0;
}

static int memory_set_topic(struct hub_history *base, struct hub_iov room, struct hub_iov topic,
                            hub_history_done_cb cb, void *data)
{
    struct memory_store *h = (struct memory_store *)base;
    if (topic.len == 0) {
        struct kv *k = kv_find(&h->topics, room.base, room.len);
        if (k != NULL)
            kv_remove(h, &h->topics, k);
    } else {
        int rc = kv_put(h, &h->topics, room.base, room.len, topic, 0);
        if (rc != 0)
            return rc;
        enforce(h, NULL);
    }
    cb(data, 0);
    return 0;
}

/* ---- appends ---- */

static struct record *record_new(struct hub_iov from, struct hub_iov text, struct hub_iov cmid,
                                 struct hub_iov author, struct hub_iov mentions)
{
    size_t n = from.len + text.len + cmid.len + author.len + mentions.len;
    struct record *r = malloc(sizeof(*r) + n);
    if (r == NULL)
        return NULL;
    *r = (struct record){
        .from_len = (uint32_t)from.len,
        .text_len = (uint32_t)text.len,
        .cmid_len = (uint32_t)cmid.len,
        .author_len = (uint32_t)author.len,
        .mentions_len = (uint32_t)mentions.len,
    };
    char *p = r->bytes;
    struct hub_iov parts[5] = {from, text, cmid, author, mentions};
    for (int i = 0; i < 5; i++) {
        if (parts[i].len > 0)
            memcpy(p, parts[i].base, parts[i].len);
        p += parts[i].len;
    }
    return r;
}

static int memory_append_ex(struct hub_history *base, const struct hub_history_new *m,
                            hub_history_append_cb cb, void *data)
{
    struct memory_store *h = (struct memory_store *)base;
    if (m->from.len > UINT32_MAX || m->text.len > UINT32_MAX || m->cmid.len > UINT32_MAX)
        return HUB_EINVAL;
    if (restricted_until(h, HUB_RESTRICT_BAN, m->room, m->actor, m->ts) != 0 ||
        restricted_until(h, HUB_RESTRICT_MUTE, m->room, m->actor, m->ts) != 0) {
        cb(data, HUB_EPERM, 0, 0, 0);
        return 0;
    }
    struct stream *s = find_stream(h, m->room);
    if (m->reply_to != 0 && (s == NULL || m->reply_to > s->last)) {
        cb(data, HUB_EINVAL, 0, 0, 0);
        return 0;
    }
    if (s == NULL && (s = create_stream(h, m->room)) == NULL)
        return HUB_ENOMEM;
    expire(h, s);
    if (m->cmid.len > 0) {
        const struct record *prev = find_cmid(s, m->from, m->cmid);
        if (prev != NULL) {
            cb(data, 0, prev->offset, prev->ts, 1);
            return 0;
        }
    }
    struct record *r = record_new(m->from, m->text, m->cmid, m->author, m->mentions);
    if (r == NULL || ring_reserve(h, s) != 0) {
        free(r);
        maybe_forget(h, s);
        return HUB_ENOMEM;
    }
    r->offset = ++s->last;
    r->ts = m->ts;
    r->reply_to = m->reply_to;
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

static int memory_append(struct hub_history *base, struct hub_iov room, struct hub_iov from,
                         struct hub_iov text, struct hub_iov cmid, int64_t ts,
                         hub_history_append_cb cb, void *data)
{
    struct hub_history_new m = {
        .room = room,
        .from = from,
        .text = text,
        .cmid = cmid,
        .ts = ts,
    };
    return memory_append_ex(base, &m, cb, data);
}

/* ---- reads ---- */

/* A read (meta 0: hub_history_read, no topic nor restrictions) or a query. */
static int memory_page(struct memory_store *h, struct hub_iov room,
                       const struct hub_history_query *q, int meta, hub_history_read_cb cb,
                       void *data)
{
    struct stream *s = find_stream(h, room);
    struct hub_history_pos p = {.last = 0, .first = 1};
    const struct kv *topic = meta ? kv_find(&h->topics, room.base, room.len) : NULL;
    if (topic != NULL)
        p.topic = (struct hub_iov){topic->bytes + topic->klen, topic->vlen};
    if (meta && q->actor.len > 0) {
        int64_t now = q->now_ms != 0 ? q->now_ms : history_now_ms(&h->cfg);
        p.ban_until = restricted_until(h, HUB_RESTRICT_BAN, room, q->actor, now);
        p.mute_until = restricted_until(h, HUB_RESTRICT_MUTE, room, q->actor, now);
    }
    if (s == NULL) {
        /* A read creates nothing: an unknown room is empty. */
        derived_epoch(h, room, p.epoch);
        cb(data, 0, &p, NULL, 0, 1);
        return 0;
    }
    expire(h, s);
    fill_pos(s, &p);
    unsigned limit = q->limit;
    uint64_t pos = q->pos;
    if (s->count == 0 || limit == 0) {
        cb(data, 0, &p, NULL, 0, 1);
        return 0;
    }
    uint64_t first = p.first;
    /* Work out the offset range [lo, hi] to hand out. */
    uint64_t lo, hi;
    int complete;
    if (q->dir == HUB_HISTORY_BEFORE) {
        hi = pos == 0 ? 0 : pos - 1;
        if (hi > s->last)
            hi = s->last;
        if (hi < first) {
            cb(data, 0, &p, NULL, 0, 1);
            return 0;
        }
        lo = hi - first + 1 > limit ? hi - limit + 1 : first;
        complete = lo == first;
    } else if (q->dir == HUB_HISTORY_AFTER) {
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
    const struct record **recs = malloc(n * sizeof(*recs));
    struct hub_history_reaction *rxs = NULL;
    if (msgs == NULL || recs == NULL) {
        free(msgs);
        free(recs);
        return HUB_ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        recs[i] = ring_at(s, (uint32_t)(lo - first + i));
    if (views_fill(recs, n, q->viewer, msgs, &rxs) != 0) {
        free(msgs);
        free(recs);
        return HUB_ENOMEM;
    }
    cb(data, 0, &p, msgs, n, complete);
    free(rxs);
    free(recs);
    free(msgs);
    return 0;
}

static int memory_read(struct hub_history *base, struct hub_iov room, int dir, uint64_t pos,
                       unsigned limit, hub_history_read_cb cb, void *data)
{
    struct hub_history_query q = {.dir = dir, .pos = pos, .limit = limit};
    return memory_page((struct memory_store *)base, room, &q, 0, cb, data);
}

static int memory_query(struct hub_history *base, struct hub_iov room,
                        const struct hub_history_query *q, hub_history_read_cb cb, void *data)
{
    return memory_page((struct memory_store *)base, room, q, 1, cb, data);
}

static int memory_search(struct hub_history *base, struct hub_iov room, struct hub_iov q,
                         uint64_t before, unsigned limit, hub_history_search_cb cb, void *data)
{
    struct memory_store *h = (struct memory_store *)base;
    struct history_words w;
    if (history_search_words(q, &w) != 0) {
        cb(data, HUB_EINVAL, NULL, 0, 1);
        return 0;
    }
    struct stream *s = find_stream(h, room);
    if (s != NULL)
        expire(h, s);
    if (s == NULL || s->count == 0) {
        cb(data, 0, NULL, 0, 1);
        return 0;
    }
    const struct record **recs = NULL;
    if (limit > 0 && (recs = malloc(limit * sizeof(*recs))) == NULL)
        return HUB_ENOMEM;
    size_t n = 0;
    int complete = 1;
    for (uint32_t i = s->count; i-- > 0;) {
        const struct record *r = ring_at(s, i);
        if ((before != 0 && r->offset >= before) || r->deleted)
            continue;
        if (!history_search_match(&w, (struct hub_iov){r->bytes + r->from_len, r->text_len}))
            continue;
        if (n == limit) {
            complete = 0;
            break;
        }
        recs[n++] = r;
    }
    struct hub_history_msg *msgs = n > 0 ? malloc(n * sizeof(*msgs)) : NULL;
    struct hub_history_reaction *rxs = NULL;
    if ((n > 0 && msgs == NULL) ||
        views_fill(recs, n, (struct hub_iov){NULL, 0}, msgs, &rxs) != 0) {
        free(msgs);
        free(recs);
        return HUB_ENOMEM;
    }
    cb(data, 0, msgs, n, complete);
    free(rxs);
    free(msgs);
    free(recs);
    return 0;
}

/* ---- amendments ---- */

/* 1 if a may edit or delete r (history.h: author within the window, or a
 * moderator). */
static int may_change(const struct record *r, const struct hub_history_amend *a)
{
    if (a->moderator)
        return 1;
    if (r->author_len == 0 || a->who.len != r->author_len ||
        memcmp(r->bytes + r->from_len + r->text_len + r->cmid_len, a->who.base, a->who.len) != 0)
        return 0;
    int64_t win = a->window_ms > 0 ? a->window_ms : HUB_HISTORY_EDIT_WINDOW_MS;
    return a->ts - r->ts <= win;
}

/* Replaces *slot (in s) by a copy with text (and, for a tombstone, no
 * mentions); reactions move over. Returns the new record or NULL. */
static struct record *record_rewrite(struct memory_store *h, struct stream *s, struct record **slot,
                                     struct hub_iov text, int tombstone)
{
    struct record *o = *slot;
    const char *p = o->bytes;
    struct hub_iov from = {p, o->from_len};
    struct hub_iov cmid = {p + o->from_len + o->text_len, o->cmid_len};
    struct hub_iov author = {cmid.base + o->cmid_len, o->author_len};
    struct hub_iov mentions = {author.base + o->author_len, tombstone ? 0 : o->mentions_len};
    struct record *r = record_new(from, text, cmid, author, mentions);
    if (r == NULL)
        return NULL;
    r->offset = o->offset;
    r->ts = o->ts;
    r->reply_to = o->reply_to;
    r->edited_ts = o->edited_ts;
    r->deleted = o->deleted;
    r->rx = o->rx;
    r->nrx = o->nrx;
    r->rx_bytes = o->rx_bytes;
    size_t old = record_bytes(o);
    o->rx = NULL;
    o->nrx = 0;
    free(o);
    *slot = r;
    s->bytes = s->bytes - old + record_bytes(r);
    h->bytes = h->bytes - old + record_bytes(r);
    return r;
}

/* Re-counts r's reactions after a change. */
static void rx_recount(struct memory_store *h, struct stream *s, struct record *r)
{
    size_t b = rx_count_bytes(r);
    s->bytes = s->bytes - r->rx_bytes + b;
    h->bytes = h->bytes - r->rx_bytes + b;
    r->rx_bytes = b;
}

static int rx_find(const struct record *r, struct hub_iov emoji, uint32_t *at)
{
    for (uint32_t i = 0; i < r->nrx; i++)
        if (r->rx[i].elen == emoji.len && memcmp(r->rx[i].emoji, emoji.base, emoji.len) == 0) {
            *at = i;
            return 1;
        }
    return 0;
}

/* Adds who's reaction emoji to r. Returns 0, HUB_ELIMIT or HUB_ENOMEM; sets
 * *changed and *count. */
static int rx_add(struct record *r, struct hub_iov emoji, struct hub_iov who, uint32_t max,
                  int *changed, uint32_t *count)
{
    uint32_t i;
    if (!rx_find(r, emoji, &i)) {
        if (r->nrx >= max)
            return HUB_ELIMIT;
        struct rx_emoji *rx = realloc(r->rx, (r->nrx + 1) * sizeof(*rx));
        if (rx == NULL)
            return HUB_ENOMEM;
        r->rx = rx;
        i = r->nrx++;
        rx[i] = (struct rx_emoji){.elen = (uint8_t)emoji.len};
        memcpy(rx[i].emoji, emoji.base, emoji.len);
    }
    struct rx_emoji *e = &r->rx[i];
    if (rx_has(e, who, NULL)) {
        *count = e->n;
        return 0;
    }
    struct rx_who *w = malloc(sizeof(*w) + who.len);
    if (w == NULL)
        goto fail;
    w->len = (uint32_t)who.len;
    memcpy(w->s, who.base, who.len);
    if (e->n == e->cap) {
        uint32_t cap = e->cap == 0 ? 2 : e->cap * 2;
        struct rx_who **ws = realloc(e->who, cap * sizeof(*ws));
        if (ws == NULL) {
            free(w);
            goto fail;
        }
        e->who = ws;
        e->cap = cap;
    }
    e->who[e->n++] = w;
    *changed = 1;
    *count = e->n;
    return 0;
fail:
    if (e->n == 0) /* the emoji was added for this reaction: take it back */
        r->nrx--;
    if (r->nrx == 0) {
        free(r->rx);
        r->rx = NULL;
    }
    return HUB_ENOMEM;
}

/* Takes who's reaction emoji off r; sets *changed and *count. */
static void rx_remove(struct record *r, struct hub_iov emoji, struct hub_iov who, int *changed,
                      uint32_t *count)
{
    uint32_t i, j;
    if (!rx_find(r, emoji, &i))
        return;
    struct rx_emoji *e = &r->rx[i];
    if (!rx_has(e, who, &j)) {
        *count = e->n;
        return;
    }
    free(e->who[j]);
    e->who[j] = e->who[--e->n];
    *changed = 1;
    *count = e->n;
    if (e->n > 0)
        return;
    free(e->who);
    memmove(&r->rx[i], &r->rx[i + 1], (r->nrx - i - 1) * sizeof(*r->rx));
    if (--r->nrx == 0) {
        free(r->rx);
        r->rx = NULL;
    }
}

static int memory_amend(struct hub_history *base, const struct hub_history_amend *a,
                        hub_history_amend_cb cb, void *data)
{
    struct memory_store *h = (struct memory_store *)base;
    struct hub_history_amended res = {.changed = 0};
    struct stream *s = find_stream(h, a->room);
    if (s != NULL)
        expire(h, s);
    int react = a->kind == HUB_AMEND_REACT || a->kind == HUB_AMEND_UNREACT;
    if ((a->kind == HUB_AMEND_EDIT && a->text.len == 0) ||
        (react && (a->emoji.len == 0 || a->who.len == 0)) || a->kind < HUB_AMEND_EDIT ||
        a->kind > HUB_AMEND_UNREACT) {
        cb(data, HUB_EINVAL, NULL);
        return 0;
    }
    uint64_t first = s != NULL ? s->last - s->count + 1 : 1;
    if (s == NULL || a->offset < first || a->offset > s->last) {
        cb(data, HUB_ENOENT, NULL);
        return 0;
    }
    uint32_t idx = (s->head + (uint32_t)(a->offset - first)) % s->cap;
    struct record *r = s->ring[idx];
    if (r->deleted && a->kind != HUB_AMEND_DELETE && a->kind != HUB_AMEND_UNREACT) {
        cb(data, HUB_ENOENT, NULL);
        return 0;
    }
    if (!react && !may_change(r, a)) {
        cb(data, HUB_EPERM, NULL);
        return 0;
    }
    int rc = 0;
    switch (a->kind) {
    case HUB_AMEND_EDIT:
        if ((r = record_rewrite(h, s, &s->ring[idx], a->text, 0)) == NULL)
            return HUB_ENOMEM;
        r->edited_ts = a->ts;
        res.changed = 1;
        res.edited_ts = a->ts;
        break;
    case HUB_AMEND_DELETE:
        if (r->deleted)
            break;
        if ((r = record_rewrite(h, s, &s->ring[idx], (struct hub_iov){NULL, 0}, 1)) == NULL)
            return HUB_ENOMEM;
        r->deleted = 1;
        rx_free(r);
        rx_recount(h, s, r);
        res.changed = 1;
        break;
    case HUB_AMEND_REACT:
        rc =
            rx_add(r, a->emoji, a->who, a->max_emoji > 0 ? a->max_emoji : HUB_HISTORY_REACTIONS_MAX,
                   &res.changed, &res.count);
        rx_recount(h, s, r);
        if (rc == HUB_ENOMEM)
            return rc;
        break;
    default:
        rx_remove(r, a->emoji, a->who, &res.changed, &res.count);
        rx_recount(h, s, r);
        break;
    }
    if (rc != 0) {
        cb(data, rc, NULL);
        return 0;
    }
    const char *p = r->bytes;
    res.from = (struct hub_iov){p, r->from_len};
    res.author = (struct hub_iov){p + r->from_len + r->text_len + r->cmid_len, r->author_len};
    cb(data, 0, &res);
    /* After the callback: enforcing may free r, whose views it borrowed. */
    enforce(h, s);
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
    .append = memory_append,
    .read = memory_read,
    .barrier = memory_barrier,
    .close = memory_close,
    .free = memory_free,
    .hold = memory_hold,
    .stats = memory_stats,
    .append_ex = memory_append_ex,
    .query = memory_query,
    .amend = memory_amend,
    .search = memory_search,
    .set_restriction = memory_restrict,
    .set_topic = memory_set_topic,
};
