/*
 * engine_redis.c: the multi-node engine over one or more Redis servers.
 *
 * Each Redis server (a shard) gets two hiredis async contexts attached to the
 * loop with hiredis's libuv adapter: one for commands, one subscribed. Rooms
 * and nicks are placed on shards by a consistent hash of their name; node
 * leases, the node channel and the sweep of dead nodes run on every shard.
 * docs/engine.md has the keys, the scripts and the failure behaviour.
 *
 * Invariants:
 * - Replies on a connection come back in the order commands were sent; each
 *   connection keeps its requests in flight in that order (head = oldest), so
 *   a watchdog can see the oldest one's age and completions stay ordered.
 * - A request returns HUB_EAGAIN at once unless its shard is ready (both
 *   contexts up, scripts loaded, the node channel subscribed); once sent it
 *   completes exactly once: with the reply, or HUB_EAGAIN when the connection
 *   breaks or the watchdog gives up on it.
 * - A subscribed room delivers in offset order: messages arriving while a
 *   position read or a hole fill is in flight are buffered and offered again
 *   after it; next is the offset to deliver next.
 * - Requests about a room whose subscription is not confirmed yet are held
 *   and sent, in order, right after the room's position read, so that a
 *   join's history read sees every message the subscription does not.
 * - The engine keeps this node's memberships and nick claims, and writes them
 *   again whenever a command connection comes back (Redis may have lost
 *   them, or swept this node while it could not refresh its lease).
 */
#include "engine_impl.h"
#include "engine_redis_lua.h"
#include "hub/engine.h"
#include "hub/log.h"
#include "hub/redisurl.h"
#include "hub/sha1.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <uv.h>

#define OBUF_MAX (32u << 20)      /* bytes queued in hiredis's output buffer per connection */
#define BUFFERED_MAX 10000        /* messages buffered per room during a fill */
#define TICK_MAX_MS 250           /* watchdog and lease timer period (at most) */
#define REASON_MAX 640            /* bytes of a not-ready reason */
#define NODE_MARK_TTL_S "604800"  /* a node's mark (U:<node>) outlives its lease by this */
#define AUTHOR_MAX ENGINE_KEY_MAX /* bytes of an author, actor or viewer key */
#define MENTIONS_MAX (HUB_HISTORY_MENTIONS_MAX * (HUB_ENGINE_NICK_MAX + 1))
#define TEXT_MAX (1u << 20)    /* bytes of an edited text (chat limits it far lower) */
#define SEARCH_Q_MAX 1024      /* bytes of a search query (chat allows 200) */
#define CONTROL_FIELD_MAX 4096 /* bytes of each field of a control message */
/* The slack past a restriction's end before Redis frees its key: the hub's
 * clock and Redis's may differ; the stored until is what counts. */
#define RESTRICT_SLACK_S "3600"
#define RESTRICT_SLACK_MS (3600 * 1000LL)

enum script_id {
    S_PUBLISH,
    S_READ,
    S_JOIN,
    S_LEAVE,
    S_RENICK,
    S_MEMBERS,
    S_CLAIM,
    S_RELEASE,
    S_INVITE,
    S_LEASE,
    S_SWEEP,
    S_AMEND,
    S_SEARCH,
    S_RESTRICT,
    S_AFILL,
    S_HLIST,
    S_HEAL,
    S_COUNT
};

static const char *const script_src[S_COUNT] = {
    lua_publish, lua_read,     lua_join,   lua_leave, lua_renick, lua_members,
    lua_claim,   lua_release,  lua_invite, lua_lease, lua_sweep,  lua_amend,
    lua_search,  lua_restrict, lua_afill,  lua_hlist, lua_heal,
};

enum req_kind {
    R_SETUP,   /* AUTH, SELECT, SCRIPT LOAD, self-clean: failure breaks the connection */
    R_UP,      /* the first lease of a connection: its reply marks the connection up */
    R_LEASE,   /* the lease refresh; the last of the setup too */
    R_SWEEP,   /* sweep of dead nodes */
    R_PUBLISH, /* hub_engine_publish */
    R_RELAY,   /* hub_engine_publish of a binary relay */
    R_READ,    /* hub_engine_read */
    R_POS,     /* a room's position after its subscription */
    R_FILL,    /* a hole fill */
    R_MEMBERS, /* hub_engine_members */
    R_ROOMS,   /* one shard's part of hub_engine_rooms */
    R_CLAIM,   /* hub_engine_claim_nick (or a re-claim, without cb) */
    R_INVITE,  /* hub_engine_invite */
    R_FIRE,    /* fire-and-forget: join, leave, renick, release, typing, control */
    R_QUERY,   /* hub_engine_query */
    R_AMEND,   /* hub_engine_amend */
    R_SEARCH,  /* hub_engine_search */
    R_DONE,    /* restrict, set_topic: one part of a done_agg */
    R_AFILL,   /* a read of the room's amendment log (a gap in its sequence) */
    R_HLIST,   /* the first shard's hub-wide restrictions, to heal other shards */
};

struct redis_engine;
struct shard;
struct rroom;
struct rooms_agg;
struct done_agg;

struct rreq {
    struct rreq *next;     /* in a connection's in-flight list or a room's hold list */
    struct shard *sh;      /* where it goes */
    int kind;              /* enum req_kind */
    int script;            /* enum script_id, or -1 */
    int retried;           /* already resent as EVAL after NOSCRIPT */
    uint64_t t0;           /* uv_hrtime when sent (or held) */
    char *cmd;             /* the formatted command, owned */
    size_t len;            /* its length */
    struct rroom *room;    /* R_POS, R_FILL: the room (a reference) */
    struct rooms_agg *agg; /* R_ROOMS: the aggregate */
    struct done_agg *dagg; /* R_DONE: the aggregate */
    uint64_t want;         /* R_FILL: the offset the fill was for; R_HLIST: the shard to
                              heal (UINT64_MAX: every other shard) */
    union {
        hub_engine_publish_cb publish;
        hub_history_read_cb read;
        hub_engine_members_cb members;
        hub_engine_done_cb done;
        hub_engine_amend_cb amend;
        hub_history_search_cb search;
    } cb;       /* the caller's completion (may be NULL) */
    void *data; /* its argument */
};

struct rconn {
    struct shard *sh;         /* owner */
    redisAsyncContext *ac;    /* NULL while down */
    int is_sub;               /* the subscribed context */
    int up;                   /* connected and set up */
    int ever_up;              /* was up once (a later up is a reconnect) */
    struct rreq *head, *tail; /* in flight, oldest first */
    uint32_t inflight;        /* entries in that list */
    uv_timer_t retry;         /* reconnect backoff, embedded */
    uint32_t backoff_ms;      /* next delay */
    int retry_pending;        /* the retry timer is armed */
};

struct shard {
    struct redis_engine *e;  /* owner */
    uint32_t index;          /* position in e->shards */
    struct hub_redisurl url; /* parsed */
    char ip[64];             /* resolved address */
    char name[300];          /* "host:port" for messages */
    struct rconn cmd, sub;   /* the two connections */
    int cleaned;             /* this node's leftovers were swept (first connect) */
    int node_sub;            /* the node channel is subscribed */
    int ctl_sub;             /* shard 0: the control channel is subscribed */
    uint32_t held;           /* requests held in rooms of this shard */
    char reason[REASON_MAX]; /* why it is not ready */
};

enum sub_state {
    SUB_NONE,  /* not subscribed */
    SUB_SENT,  /* SUBSCRIBE sent, not confirmed */
    SUB_SYNC,  /* confirmed, position read in flight */
    SUB_LIVE,  /* delivering */
    SUB_UNSUB, /* UNSUBSCRIBE sent, not confirmed */
};

struct pmsg {
    struct pmsg *next; /* buffer order */
    size_t len;        /* payload bytes */
    char payload[];    /* the channel payload */
};

struct rroom {
    struct engine_map_node node;           /* in e->rooms */
    struct shard *sh;                      /* its shard */
    int wanted;                            /* chat subscribed it */
    int state;                             /* enum sub_state */
    int synced;                            /* next and epoch are known */
    int busy;                              /* a position read or fill is in flight */
    int need_pos;                          /* confirmed while the command connection was
                                              down: the position read waits for it */
    int overflow;                          /* the buffer overflowed: refill after the fill */
    char epoch[HUB_HISTORY_EPOCH_LEN + 1]; /* epoch of the messages delivered */
    uint64_t next;                         /* next offset to deliver */
    int asynced;                           /* anext is known */
    uint64_t anext;                        /* next amendment sequence number to deliver */
    uint64_t aupto;                        /* amendments up to this one are to be read
                                              from the log (after a message fill) */
    struct rreq *hold_head, *hold_tail;    /* requests held until the position read */
    struct pmsg *buf_head, *buf_tail;      /* messages waiting for a fill */
    uint32_t nbuf;                         /* entries in the buffer */
    uint32_t refs;                         /* requests pointing at the room */
    size_t name_len;                       /* bytes in name */
    char name[];                           /* room name, NUL-terminated */
};

/* This node's membership, kept to write it again after a reconnect. */
struct lmember {
    struct engine_map_node node; /* in e->members, key "<len>:<room><client>" */
    size_t room_len;             /* room = key + room_off */
    size_t room_off;             /* where the room name starts in key */
    char *nick;                  /* owned */
    size_t key_len;              /* bytes in key */
    char key[];                  /* the key */
};

/* A nick this node's client holds. */
struct lnick {
    struct engine_map_node node; /* in e->nicks, key fold */
    char *client;                /* owned */
    char *nick;                  /* owned */
    char fold[];                 /* folded nick */
};

struct rooms_agg {
    uint32_t waiting;                   /* shard replies still to come */
    int err;                            /* first error */
    unsigned limit;                     /* rooms asked for */
    struct hub_engine_room_count *list; /* merged, names owned (malloc'd) */
    size_t n, cap;                      /* used and allocated */
    hub_engine_rooms_cb cb;             /* completion */
    void *data;                         /* its argument */
};

/* Completion of a call sent to one shard or to every shard (a hub-wide
 * restriction): the first error wins, cb fires after the last part. */
struct done_agg {
    uint32_t waiting;      /* parts still to answer */
    int err;               /* first error */
    hub_engine_done_cb cb; /* completion */
    void *data;            /* its argument */
};

struct redis_engine {
    struct hub_engine base;        /* the interface header; must be first */
    uv_loop_t *loop;               /* borrowed */
    struct hub_engine_config cfg;  /* copied; urls not kept */
    char *prefix;                  /* owned copy of cfg.prefix */
    size_t prefix_len;             /* bytes in prefix */
    char sha[S_COUNT][41];         /* script SHA-1s in hex */
    struct shard *shards;          /* owned array */
    uint32_t nshards;              /* entries */
    struct engine_map rooms;       /* struct rroom */
    struct engine_map members;     /* struct lmember */
    struct engine_map nicks;       /* struct lnick */
    uv_timer_t tick;               /* watchdog and lease */
    uint64_t last_lease;           /* uv_now of the last lease refresh */
    uint32_t tick_ms;              /* period */
    int handles;                   /* timers not yet closed */
    int tick_closing;              /* uv_close was called on tick */
    void (*closed_cb)(void *data); /* close's callback */
    void *closed_data;             /* its argument */
    int close_fired;               /* closed_cb ran */
    char reason[REASON_MAX];       /* the engine's not-ready reason */
    uint64_t hub_gen;              /* hub-wide restrictions made by this node (heal races) */
    struct hub_engine_stats st;    /* counters (kind/state/reason filled on read) */
};

static const struct engine_ops redis_ops;

static struct hub_iov iov(const char *s, size_t len)
{
    struct hub_iov v = {s, len};
    return v;
}

static struct hub_iov iovs(const char *s)
{
    return iov(s, strlen(s));
}

/* ---- keys ----------------------------------------------------------- */

/* Writes prefix + tag + name into buf (cap bytes). Returns its length, or
 * 0 if it does not fit. */
static size_t key3(const struct redis_engine *e, char *buf, size_t cap, const char *tag,
                   struct hub_iov name)
{
    size_t tl = strlen(tag), n = e->prefix_len + tl + name.len;
    if (n + 1 > cap)
        return 0;
    memcpy(buf, e->prefix, e->prefix_len);
    memcpy(buf + e->prefix_len, tag, tl);
    if (name.len > 0)
        memcpy(buf + e->prefix_len + tl, name.base, name.len);
    buf[n] = '\0';
    return n;
}

#define KEY_MAX 1024

/* ---- requests ---------------------------------------------------------- */

static struct rreq *req_new(struct shard *sh, int kind, int script, int argc, const char **argv,
                            const size_t *lens)
{
    struct rreq *q = calloc(1, sizeof(*q));
    if (q == NULL)
        return NULL;
    q->sh = sh;
    q->kind = kind;
    q->script = script;
    int n = redisFormatCommandArgv(&q->cmd, argc, argv, lens);
    if (n < 0) {
        free(q);
        return NULL;
    }
    q->len = (size_t)n;
    return q;
}

static void room_unref(struct redis_engine *e, struct rroom *r);

static void req_free(struct rreq *q)
{
    if (q->cmd != NULL)
        redisFreeCommand(q->cmd);
    free(q);
}

/* Builds a script call: EVALSHA sha nkeys keys... args... */
static struct rreq *req_script(struct shard *sh, int kind, int script, int nkeys,
                               const struct hub_iov *keys, int nargs, const struct hub_iov *args)
{
    struct redis_engine *e = sh->e;
    const char *argv[40];
    size_t lens[40];
    char nk[16];
    int argc = 0;
    if (3 + nkeys + nargs > 40)
        return NULL;
    argv[argc] = "EVALSHA", lens[argc++] = 7;
    argv[argc] = e->sha[script], lens[argc++] = 40;
    snprintf(nk, sizeof(nk), "%d", nkeys);
    argv[argc] = nk, lens[argc++] = strlen(nk);
    for (int i = 0; i < nkeys; i++)
        argv[argc] = keys[i].base ? keys[i].base : "", lens[argc++] = keys[i].len;
    for (int i = 0; i < nargs; i++)
        argv[argc] = args[i].base ? args[i].base : "", lens[argc++] = args[i].len;
    return req_new(sh, kind, script, argc, argv, lens);
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata);

/* Hands q to the connection. Returns 0 or HUB_EAGAIN (q not taken). */
static int conn_send(struct rconn *c, struct rreq *q)
{
    if (c->ac == NULL)
        return HUB_EAGAIN;
    if (redisAsyncFormattedCommand(c->ac, on_reply, q, q->cmd, q->len) != REDIS_OK)
        return HUB_EAGAIN;
    q->t0 = uv_hrtime();
    q->next = NULL;
    if (c->tail)
        c->tail->next = q;
    else
        c->head = q;
    c->tail = q;
    c->inflight++;
    return 0;
}

static int shard_ready(const struct shard *sh)
{
    return sh->cmd.up && sh->sub.up && sh->node_sub && (sh->index != 0 || sh->ctl_sub);
}

static int room_pending(const struct rroom *r)
{
    return r != NULL && r->wanted && r->state != SUB_LIVE;
}

static struct rroom *find_room(struct redis_engine *e, struct hub_iov room)
{
    struct engine_map_node *n =
        engine_map_find(&e->rooms, room.base, room.len, hub_hash(room.base, room.len, 0));
    return n ? HUB_CONTAINER_OF(n, struct rroom, node) : NULL;
}

/* Sends q for a caller, or holds it behind its room's subscription. Returns
 * 0 or HUB_EAGAIN (q freed). */
static int submit(struct redis_engine *e, struct rreq *q, struct rroom *room)
{
    struct shard *sh = q->sh;
    struct rconn *c = &sh->cmd;
    if (!shard_ready(sh) || c->inflight + sh->held >= e->cfg.max_inflight ||
        (c->ac != NULL && c->ac->c.obuf != NULL && sdslen(c->ac->c.obuf) > OBUF_MAX)) {
        e->st.dropped++;
        req_free(q);
        return HUB_EAGAIN;
    }
    if (room_pending(room)) {
        q->t0 = uv_hrtime();
        q->next = NULL;
        if (room->hold_tail)
            room->hold_tail->next = q;
        else
            room->hold_head = q;
        room->hold_tail = q;
        sh->held++;
        return 0;
    }
    if (conn_send(c, q) != 0) {
        e->st.dropped++;
        req_free(q);
        return HUB_EAGAIN;
    }
    return 0;
}

/* Sends the room's held requests, in order (after its position read). */
static void release_holds(struct redis_engine *e, struct rroom *r)
{
    struct rreq *q = r->hold_head;
    r->hold_head = r->hold_tail = NULL;
    while (q != NULL) {
        struct rreq *next = q->next;
        q->sh->held--;
        if (conn_send(&q->sh->cmd, q) != 0) {
            /* The connection went away in between: complete it as failed. */
            e->st.dropped++;
            on_reply(NULL, NULL, q);
        }
        q = next;
    }
}

/* ---- replies: parsing helpers ------------------------------------------ */

static int reply_u64(const redisReply *r, uint64_t *out)
{
    if (r == NULL)
        return -1;
    if (r->type == REDIS_REPLY_INTEGER) {
        *out = r->integer < 0 ? 0 : (uint64_t)r->integer;
        return 0;
    }
    if (r->type != REDIS_REPLY_STRING || r->len == 0 || r->len > 20)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < r->len; i++) {
        if (r->str[i] < '0' || r->str[i] > '9')
            return -1;
        v = v * 10 + (uint64_t)(r->str[i] - '0');
    }
    *out = v;
    return 0;
}

static int reply_i64(const redisReply *r, int64_t *out)
{
    if (r != NULL && r->type == REDIS_REPLY_STRING && r->len > 0 && r->str[0] == '-') {
        redisReply copy = *r;
        copy.str++;
        copy.len--;
        uint64_t v;
        if (reply_u64(&copy, &v) != 0)
            return -1;
        *out = -(int64_t)v;
        return 0;
    }
    uint64_t v;
    if (reply_u64(r, &v) != 0)
        return -1;
    *out = (int64_t)v;
    return 0;
}

static struct hub_iov reply_iov(const redisReply *r)
{
    if (r == NULL || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_STATUS))
        return iov("", 0);
    return iov(r->str, r->len);
}

/* A parsed read, query or search reply: position, rows with their clients
 * and reactions (owned arrays; the views point into the reply). */
struct read_result {
    struct hub_history_pos pos;
    struct hub_history_msg *msgs;
    struct hub_iov *clients;
    struct hub_history_reaction *rx;
    size_t n;
    int complete;
    uint64_t aseq; /* the room's amendment sequence number (read script) */
};

static void read_result_free(struct read_result *rr)
{
    free(rr->msgs);
    free(rr->clients);
    free(rr->rx);
    rr->msgs = NULL;
    rr->clients = NULL;
    rr->rx = NULL;
}

/* Parses one row of the read script: {offset, ts, from, text, cmid,
 * client, author, mentions, reply_to, edited_ts, deleted, {emoji, count,
 * mine, ...}}; its reactions go to rx (room for all of them). */
static int parse_row(const redisReply *row, struct hub_history_msg *m, struct hub_iov *client,
                     struct hub_history_reaction *rx)
{
    if (row == NULL || row->type != REDIS_REPLY_ARRAY || row->elements != 12)
        return -1;
    redisReply *const *f = row->element;
    memset(m, 0, sizeof(*m));
    if (reply_u64(f[0], &m->offset) != 0 || m->offset == 0)
        return -1;
    if (reply_i64(f[1], &m->ts) != 0)
        m->ts = 0;
    m->from = reply_iov(f[2]);
    m->text = reply_iov(f[3]);
    m->cmid = reply_iov(f[4]);
    *client = reply_iov(f[5]);
    m->author = reply_iov(f[6]);
    m->mentions = reply_iov(f[7]);
    if (reply_u64(f[8], &m->reply_to) != 0)
        m->reply_to = 0;
    if (reply_i64(f[9], &m->edited_ts) != 0)
        m->edited_ts = 0;
    uint64_t del = 0;
    m->deleted = reply_u64(f[10], &del) == 0 && del != 0;
    const redisReply *x = f[11];
    m->reactions = rx;
    if (x->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i + 2 < x->elements; i += 3) {
            uint64_t count = 0, mine = 0;
            if (reply_u64(x->element[i + 1], &count) != 0 || count == 0)
                continue;
            reply_u64(x->element[i + 2], &mine);
            rx[m->nreactions].emoji = reply_iov(x->element[i]);
            rx[m->nreactions].count = count > UINT32_MAX ? UINT32_MAX : (uint32_t)count;
            rx[m->nreactions].mine = mine != 0;
            m->nreactions++;
        }
    if (m->nreactions == 0)
        m->reactions = NULL;
    return 0;
}

/* Parses the rows of r from element from on. */
static int parse_rows(const redisReply *r, size_t from, struct read_result *out)
{
    size_t n = r->elements > from ? r->elements - from : 0, nrx = 0;
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        const redisReply *row = r->element[from + i];
        if (row->type == REDIS_REPLY_ARRAY && row->elements == 12 &&
            row->element[11]->type == REDIS_REPLY_ARRAY)
            nrx += row->element[11]->elements / 3;
    }
    out->msgs = malloc(n * sizeof(*out->msgs));
    out->clients = malloc(n * sizeof(*out->clients));
    out->rx = nrx ? malloc(nrx * sizeof(*out->rx)) : NULL;
    if (out->msgs == NULL || out->clients == NULL || (nrx > 0 && out->rx == NULL)) {
        read_result_free(out);
        return HUB_ENOMEM;
    }
    size_t used = 0;
    for (size_t i = 0; i < n; i++)
        if (parse_row(r->element[from + i], &out->msgs[out->n], &out->clients[out->n],
                      out->rx ? out->rx + used : NULL) == 0) {
            used += out->msgs[out->n].nreactions;
            out->n++;
        }
    return 0;
}

/* Parses a read script reply {epoch, last, first, complete, topic,
 * ban_until, mute_until, amendment sequence, rows...}. */
static int parse_read(const redisReply *r, struct read_result *out)
{
    memset(out, 0, sizeof(*out));
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 8)
        return HUB_EAGAIN;
    struct hub_iov ep = reply_iov(r->element[0]);
    if (ep.len > HUB_HISTORY_EPOCH_LEN)
        ep.len = HUB_HISTORY_EPOCH_LEN;
    memcpy(out->pos.epoch, ep.base, ep.len);
    out->pos.epoch[ep.len] = '\0';
    uint64_t complete = 1;
    if (reply_u64(r->element[1], &out->pos.last) != 0 ||
        reply_u64(r->element[2], &out->pos.first) != 0 || reply_u64(r->element[3], &complete) != 0)
        return HUB_EAGAIN;
    out->complete = complete != 0;
    out->pos.topic = reply_iov(r->element[4]);
    if (reply_i64(r->element[5], &out->pos.ban_until) != 0)
        out->pos.ban_until = 0;
    if (reply_i64(r->element[6], &out->pos.mute_until) != 0)
        out->pos.mute_until = 0;
    if (reply_u64(r->element[7], &out->aseq) != 0)
        out->aseq = 0;
    return parse_rows(r, 8, out);
}

/* ---- channel payloads ---------------------------------------------------- */

/* Reads netstrings from a payload. */
struct nsreader {
    const char *p, *end;
    int bad;
};

static struct hub_iov ns_next(struct nsreader *rd)
{
    size_t len = 0;
    const char *p = rd->p;
    while (p < rd->end && *p >= '0' && *p <= '9' && len < (1u << 30))
        len = len * 10 + (size_t)(*p++ - '0');
    if (p >= rd->end || *p != ':' || p == rd->p || (size_t)(rd->end - p - 1) < len) {
        rd->bad = 1;
        return iov("", 0);
    }
    rd->p = p + 1 + len;
    return iov(p + 1, len);
}

static uint64_t iov_u64(struct hub_iov v, int *bad)
{
    uint64_t x = 0;
    size_t i = 0;
    int neg = v.len > 0 && v.base[0] == '-';
    for (i = neg; i < v.len; i++) {
        if (v.base[i] < '0' || v.base[i] > '9') {
            *bad = 1;
            return 0;
        }
        x = x * 10 + (uint64_t)(v.base[i] - '0');
    }
    if (v.len == (size_t)neg)
        *bad = 1;
    return neg ? (uint64_t)(-(int64_t)x) : x;
}

/* Writes a netstring of v into b at *w (b has room). */
static void ns_put(char *b, size_t *w, struct hub_iov v)
{
    *w += (size_t)sprintf(b + *w, "%zu:", v.len);
    if (v.len > 0)
        memcpy(b + *w, v.base, v.len);
    *w += v.len;
}

/* ---- delivery in offset order ------------------------------------------- */

static void deliver(struct redis_engine *e, struct rroom *r, const struct hub_engine_msg *m)
{
    e->st.received++;
    e->base.ev.on_msg(e->base.data, m);
    (void)r;
}

static void deliver_amend(struct redis_engine *e, const struct hub_engine_amended *a)
{
    if (e->base.ev.on_amend != NULL)
        e->base.ev.on_amend(e->base.data, a);
}

static void set_epoch(struct redis_engine *e, struct rroom *r, struct hub_iov ep, int announce)
{
    size_t n = ep.len > HUB_HISTORY_EPOCH_LEN ? HUB_HISTORY_EPOCH_LEN : ep.len;
    memcpy(r->epoch, ep.base, n);
    r->epoch[n] = '\0';
    r->asynced = 0; /* amendments are numbered per epoch */
    r->aupto = 0;
    if (announce) {
        e->st.epochs++;
        if (e->base.ev.on_epoch != NULL)
            e->base.ev.on_epoch(e->base.data, iov(r->name, r->name_len), iov(r->epoch, n));
    }
}

static int start_fill(struct redis_engine *e, struct rroom *r, uint64_t upto);
static void drain_buffer(struct redis_engine *e, struct rroom *r);
static void buffer_msg(struct redis_engine *e, struct rroom *r, const char *payload, size_t len);
static void offer_amend(struct redis_engine *e, struct rroom *r, const char *payload, size_t len,
                        struct nsreader *rd);
static void offer(struct redis_engine *e, struct rroom *r, const char *payload, size_t len,
                  int buffered);

static void buffer_msg(struct redis_engine *e, struct rroom *r, const char *payload, size_t len)
{
    if (r->nbuf >= BUFFERED_MAX) {
        /* Too far behind: drop the buffer, read everything from the store. */
        r->overflow = 1;
        return;
    }
    struct pmsg *pm = malloc(sizeof(*pm) + len);
    if (pm == NULL) {
        r->overflow = 1;
        return;
    }
    pm->next = NULL;
    pm->len = len;
    memcpy(pm->payload, payload, len);
    if (r->buf_tail)
        r->buf_tail->next = pm;
    else
        r->buf_head = pm;
    r->buf_tail = pm;
    r->nbuf++;
    (void)e;
}

/* Offers the buffered messages again, until one of them starts a fill. */
static void drain_buffer(struct redis_engine *e, struct rroom *r)
{
    while (r->buf_head != NULL && !r->busy) {
        struct pmsg *pm = r->buf_head;
        r->buf_head = pm->next;
        if (r->buf_head == NULL)
            r->buf_tail = NULL;
        r->nbuf--;
        offer(e, r, pm->payload, pm->len, 1);
        free(pm);
    }
}

/* Parses an amendment payload ('a' already consumed by rd). seq is 0 in
 * payloads of older nodes. Returns 0, or -1 if it is malformed. */
static int parse_amend(struct nsreader *rd, struct hub_engine_amended *a, struct hub_iov *ep,
                       uint64_t *seq)
{
    *ep = ns_next(rd);
    struct hub_iov off = ns_next(rd), kind = ns_next(rd);
    a->text = ns_next(rd);
    struct hub_iov ets = ns_next(rd);
    a->emoji = ns_next(rd);
    struct hub_iov count = ns_next(rd);
    a->who = ns_next(rd);
    a->nick = ns_next(rd);
    int bad = rd->bad;
    *seq = 0;
    if (!bad && rd->p < rd->end) {
        struct hub_iov sq = ns_next(rd);
        bad = rd->bad;
        *seq = iov_u64(sq, &bad);
    }
    a->offset = iov_u64(off, &bad);
    a->kind = (int)iov_u64(kind, &bad);
    a->edited_ts = (int64_t)iov_u64(ets, &bad);
    uint64_t c = iov_u64(count, &bad);
    a->count = c > UINT32_MAX ? UINT32_MAX : (uint32_t)c;
    return bad || a->offset == 0 ? -1 : 0;
}

static int start_afill(struct redis_engine *e, struct rroom *r);

/* An amendment of the room's channel: delivered after the on_msg of its
 * offset, each sequence number once, in order. One for an offset not
 * delivered yet means that message's publication was lost (both come from
 * scripts of the same shard, the message first): the hole is filled first.
 * A gap in the sequence (a lost publication) is read from the room's
 * amendment log first. An amendment of another epoch is of messages this
 * node no longer shows, and is dropped. */
static void offer_amend(struct redis_engine *e, struct rroom *r, const char *payload, size_t len,
                        struct nsreader *rd)
{
    struct hub_engine_amended a = {0};
    a.room = iov(r->name, r->name_len);
    struct hub_iov ep;
    uint64_t seq;
    if (parse_amend(rd, &a, &ep, &seq) != 0)
        return;
    if (r->synced && (ep.len != strlen(r->epoch) || memcmp(ep.base, r->epoch, ep.len) != 0))
        return;
    if (seq > 0 && r->asynced) {
        if (seq < r->anext)
            return; /* delivered already (from the log) */
        if (seq > r->anext) {
            buffer_msg(e, r, payload, len);
            r->aupto = seq - 1;
            if (start_afill(e, r) != 0) {
                r->anext = seq; /* cannot read the log now: skip the gap */
                r->aupto = 0;
                drain_buffer(e, r);
            }
            return;
        }
    }
    if (r->synced && a.offset >= r->next) {
        buffer_msg(e, r, payload, len);
        if (start_fill(e, r, a.offset) != 0) {
            e->st.skipped += a.offset + 1 - r->next;
            r->next = a.offset + 1;
            drain_buffer(e, r);
        }
        return;
    }
    if (seq > 0) {
        r->anext = seq + 1;
        r->asynced = 1;
    }
    deliver_amend(e, &a);
}

/* Message fills are done: read the amendments the log has and this node
 * has not delivered (after a resubscription), then go on. */
static void settle(struct redis_engine *e, struct rroom *r)
{
    if (r->asynced && r->aupto >= r->anext && start_afill(e, r) == 0)
        return;
    r->aupto = 0;
    drain_buffer(e, r);
}

/* Handles one message or relay payload of a room's channel. */
static void offer(struct redis_engine *e, struct rroom *r, const char *payload, size_t len,
                  int buffered)
{
    if (!r->wanted || r->state == SUB_UNSUB || len == 0)
        return;
    if (r->busy || (!buffered && r->buf_head != NULL)) {
        buffer_msg(e, r, payload, len);
        return;
    }
    struct nsreader rd = {payload + 1, payload + len, 0};
    struct hub_engine_msg m = {0};
    m.room = iov(r->name, r->name_len);
    if (payload[0] == 'r') {
        m.from = ns_next(&rd);
        m.text = ns_next(&rd);
        m.client = ns_next(&rd);
        m.binary = 1;
        if (!rd.bad)
            deliver(e, r, &m);
        return;
    }
    if (payload[0] == 'a') {
        offer_amend(e, r, payload, len, &rd);
        return;
    }
    if (payload[0] != 'm')
        return;
    m.epoch = ns_next(&rd);
    struct hub_iov off = ns_next(&rd), ts = ns_next(&rd);
    m.from = ns_next(&rd);
    m.text = ns_next(&rd);
    m.cmid = ns_next(&rd);
    m.client = ns_next(&rd);
    int bad = rd.bad;
    if (!bad && rd.p < rd.end) {
        /* Issue 15's fields (absent from payloads of older nodes). */
        m.author = ns_next(&rd);
        m.mentions = ns_next(&rd);
        struct hub_iov rt = ns_next(&rd);
        bad = rd.bad;
        m.reply_to = iov_u64(rt, &bad);
    }
    m.offset = iov_u64(off, &bad);
    m.ts = (int64_t)iov_u64(ts, &bad);
    if (bad || m.offset == 0)
        return;
    if (!r->synced) {
        /* No position read answered: this message is where delivery starts. */
        set_epoch(e, r, m.epoch, 0);
        r->next = m.offset;
        r->synced = 1;
    }
    if (m.epoch.len != strlen(r->epoch) || memcmp(m.epoch.base, r->epoch, m.epoch.len) != 0) {
        /* Redis lost the room: positions of the old epoch are void. */
        set_epoch(e, r, m.epoch, 1);
        r->next = m.offset;
    }
    if (m.offset < r->next)
        return; /* already delivered (a fill got it first) */
    if (m.offset > r->next) {
        /* A hole: read the missing range before going on. */
        buffer_msg(e, r, payload, len);
        if (start_fill(e, r, m.offset - 1) != 0) {
            /* Cannot fill now: skip the hole rather than stall the room. */
            e->st.skipped += m.offset - r->next;
            r->next = m.offset;
            drain_buffer(e, r);
        }
        return;
    }
    r->next = m.offset + 1;
    deliver(e, r, &m);
}

/* ---- rooms lifetime --------------------------------------------------- */

static void free_buffer(struct rroom *r)
{
    while (r->buf_head != NULL) {
        struct pmsg *pm = r->buf_head;
        r->buf_head = pm->next;
        free(pm);
    }
    r->buf_tail = NULL;
    r->nbuf = 0;
}

static void room_maybe_free(struct redis_engine *e, struct rroom *r)
{
    if (r->wanted || r->state != SUB_NONE || r->refs > 0 || r->hold_head != NULL)
        return;
    engine_map_remove(&e->rooms, &r->node);
    free_buffer(r);
    e->st.rooms = e->rooms.n;
    free(r);
}

static void room_unref(struct redis_engine *e, struct rroom *r)
{
    r->refs--;
    room_maybe_free(e, r);
}

static void on_sub_reply(redisAsyncContext *ac, void *reply, void *privdata);

static void send_subscribe(struct shard *sh, int unsub, struct hub_iov channel)
{
    if (sh->sub.ac == NULL)
        return;
    const char *argv[2] = {unsub ? "UNSUBSCRIBE" : "SUBSCRIBE", channel.base};
    size_t lens[2] = {unsub ? 11u : 9u, channel.len};
    redisAsyncCommandArgv(sh->sub.ac, on_sub_reply, sh, 2, argv, lens);
}

static void room_channel(struct redis_engine *e, struct rroom *r, char *buf, size_t cap,
                         struct hub_iov *out)
{
    size_t n = key3(e, buf, cap, "c:", iov(r->name, r->name_len));
    *out = iov(buf, n);
}

static void room_subscribe(struct redis_engine *e, struct rroom *r)
{
    char ch[KEY_MAX];
    struct hub_iov c;
    room_channel(e, r, ch, sizeof(ch), &c);
    send_subscribe(r->sh, 0, c);
    r->state = SUB_SENT;
}

static int redis_subscribe(struct hub_engine *base, struct hub_iov room)
{
    struct redis_engine *e = (struct redis_engine *)base;
    struct rroom *r = find_room(e, room);
    if (r == NULL) {
        if (e->prefix_len + room.len + 8 > KEY_MAX)
            return HUB_EINVAL;
        r = calloc(1, sizeof(*r) + room.len + 1);
        if (r == NULL)
            return HUB_ENOMEM;
        memcpy(r->name, room.base, room.len);
        r->name_len = room.len;
        r->node.key = r->name;
        r->node.klen = room.len;
        r->node.hash = hub_hash(room.base, room.len, 0);
        r->sh = &e->shards[engine_shard_of(room, e->nshards)];
        if (engine_map_insert(&e->rooms, &r->node) != 0) {
            free(r);
            return HUB_ENOMEM;
        }
        e->st.rooms = e->rooms.n;
    }
    if (r->wanted)
        return 0;
    r->wanted = 1;
    /* While UNSUBSCRIBE is in flight, subscribe again once it is confirmed
     * (hiredis drops the channel's callback on the unsubscribe reply). */
    if (r->state == SUB_NONE && r->sh->sub.up)
        room_subscribe(e, r);
    return 0;
}

static void redis_unsubscribe(struct hub_engine *base, struct hub_iov room)
{
    struct redis_engine *e = (struct redis_engine *)base;
    struct rroom *r = find_room(e, room);
    if (r == NULL || !r->wanted)
        return;
    r->wanted = 0;
    free_buffer(r);
    /* Held requests no longer wait for the subscription. */
    release_holds(e, r);
    if (r->state == SUB_SENT || r->state == SUB_SYNC || r->state == SUB_LIVE) {
        char ch[KEY_MAX];
        struct hub_iov c;
        room_channel(e, r, ch, sizeof(ch), &c);
        send_subscribe(r->sh, 1, c);
        r->state = r->sh->sub.ac != NULL ? SUB_UNSUB : SUB_NONE;
    }
    room_maybe_free(e, r);
}

/* Builds a read script call for room (a query when q is not NULL: with the
 * topic and the actor's restriction keys). */
static struct rreq *read_req(struct redis_engine *e, struct shard *sh, int kind,
                             struct hub_iov room, int dir, uint64_t pos, unsigned limit,
                             const struct hub_history_query *qy);

/* Sends the position read of a freshly confirmed subscription, then the
 * requests held behind it. */
static void room_confirmed(struct redis_engine *e, struct rroom *r)
{
    r->state = SUB_SYNC;
    if (!r->sh->cmd.up) {
        /* The command connection is not back yet (both went, the subscribed
         * one came back first): read the position when it is (cmd_up), so
         * that an epoch change or a hole is seen without waiting for the
         * room's next message. Messages wait in the buffer meanwhile. */
        r->need_pos = 1;
        r->busy = 1;
        return;
    }
    r->need_pos = 0;
    struct rreq *q =
        read_req(e, r->sh, R_POS, iov(r->name, r->name_len), HUB_HISTORY_LATEST, 0, 0, NULL);
    r->busy = 1;
    if (q != NULL) {
        q->room = r;
        r->refs++;
        if (conn_send(&r->sh->cmd, q) == 0)
            goto sent;
        r->refs--;
        req_free(q);
    }
    /* No position: deliver from the first message that comes. */
    r->busy = 0;
sent:
    r->state = SUB_LIVE;
    release_holds(e, r);
}

/* The position read answered: start delivering (filling what a
 * resubscription missed). */
static void pos_done(struct redis_engine *e, struct rroom *r, const redisReply *reply)
{
    r->busy = 0;
    struct read_result rr;
    if (parse_read(reply, &rr) != 0) {
        /* Unknown position: carry on from next (or from the first message
         * that comes, if the room was never synced); holes are filled later. */
        drain_buffer(e, r);
        return;
    }
    read_result_free(&rr);
    struct hub_iov ep = iovs(rr.pos.epoch);
    int same = r->synced && strcmp(r->epoch, rr.pos.epoch) == 0;
    if (!r->synced) {
        set_epoch(e, r, ep, 0);
        r->next = rr.pos.last + 1;
        r->synced = 1;
    } else if (!same) {
        set_epoch(e, r, ep, 1);
        r->next = rr.pos.last + 1;
    }
    if (same && r->asynced) {
        /* Amendments made while this node was not subscribed: read from
         * the log once the messages are filled. */
        r->aupto = rr.aseq >= r->anext ? rr.aseq : 0;
    } else {
        r->anext = rr.aseq + 1;
        r->asynced = 1;
        r->aupto = 0;
    }
    if (same && rr.pos.last >= r->next) {
        /* Missed while unsubscribed (a reconnect): fill before going on. */
        if (start_fill(e, r, rr.pos.last) == 0)
            return;
        e->st.skipped += rr.pos.last + 1 - r->next;
        r->next = rr.pos.last + 1;
    }
    settle(e, r);
}

static int start_fill(struct redis_engine *e, struct rroom *r, uint64_t upto)
{
    uint64_t want = upto - r->next + 1;
    if (want > e->cfg.fill_max)
        want = e->cfg.fill_max;
    struct rreq *q = read_req(e, r->sh, R_FILL, iov(r->name, r->name_len), HUB_HISTORY_AFTER,
                              r->next - 1, (unsigned)want, NULL);
    if (q == NULL)
        return HUB_ENOMEM;
    q->room = r;
    q->want = upto;
    r->refs++;
    if (conn_send(&r->sh->cmd, q) != 0) {
        r->refs--;
        req_free(q);
        return HUB_EAGAIN;
    }
    r->busy = 1;
    e->st.fills++;
    return 0;
}

static void fill_done(struct redis_engine *e, struct rroom *r, const redisReply *reply,
                      uint64_t upto)
{
    r->busy = 0;
    if (!r->wanted)
        return;
    struct read_result rr;
    int parsed = parse_read(reply, &rr) == 0;
    if (parsed && strcmp(rr.pos.epoch, r->epoch) != 0) {
        read_result_free(&rr);
        parsed = 0;
    }
    if (parsed) {
        for (size_t i = 0; i < rr.n; i++) {
            struct hub_history_msg *hm = &rr.msgs[i];
            if (hm->offset < r->next)
                continue;
            if (hm->offset > r->next)
                e->st.skipped += hm->offset - r->next; /* trimmed from the stream */
            struct hub_engine_msg m = {0};
            m.room = iov(r->name, r->name_len);
            m.from = hm->from;
            m.text = hm->text; /* the edited text; empty for a tombstone */
            m.cmid = hm->cmid;
            m.client = rr.clients[i];
            m.epoch = iovs(r->epoch);
            m.offset = hm->offset;
            m.ts = hm->ts;
            m.author = hm->author;
            m.mentions = hm->mentions;
            m.reply_to = hm->reply_to;
            r->next = hm->offset + 1;
            e->st.filled++;
            deliver(e, r, &m);
            if (hm->deleted || hm->edited_ts != 0) {
                /* The message changed since it was sent: say so, as the
                 * missed amendment's publication would have (its own may
                 * still follow: on_amend is idempotent for chat). */
                struct hub_engine_amended a = {0};
                a.room = m.room;
                a.offset = hm->offset;
                a.kind = hm->deleted ? HUB_AMEND_DELETE : HUB_AMEND_EDIT;
                a.text = hm->deleted ? iov("", 0) : hm->text;
                a.edited_ts = hm->deleted ? 0 : hm->edited_ts;
                deliver_amend(e, &a);
            }
        }
        if (r->next < rr.pos.first && rr.pos.first <= upto + 1) {
            e->st.skipped += rr.pos.first - r->next;
            r->next = rr.pos.first;
        }
        read_result_free(&rr);
        if (r->next <= upto && rr.n > 0 && start_fill(e, r, upto) == 0)
            return; /* the hole was longer than fill_max */
    }
    if (r->next <= upto) {
        /* The store does not have it (or the read failed): skip the rest. */
        e->st.skipped += upto + 1 - r->next;
        r->next = upto + 1;
    }
    if (r->overflow) {
        /* The buffer overflowed during the fill: its messages are in the
         * stream; read up to the newest before going on. */
        r->overflow = 0;
        free_buffer(r);
        r->state = SUB_SYNC;
        room_confirmed(e, r);
        return;
    }
    settle(e, r);
}

static struct hub_iov amend_log_key(const struct redis_engine *e, char *buf, struct hub_iov room)
{
    return iov(buf, key3(e, buf, KEY_MAX, "al:", room));
}

static int start_afill(struct redis_engine *e, struct rroom *r)
{
    char meta[KEY_MAX], log[KEY_MAX], from[24], lim[16];
    struct hub_iov name = iov(r->name, r->name_len);
    struct hub_iov keys[2] = {iov(meta, key3(e, meta, sizeof(meta), "r:", name)),
                              amend_log_key(e, log, name)};
    uint64_t want = r->aupto - r->anext + 1;
    if (want > e->cfg.fill_max)
        want = e->cfg.fill_max;
    snprintf(from, sizeof(from), "%llu", (unsigned long long)r->anext);
    snprintf(lim, sizeof(lim), "%llu", (unsigned long long)want);
    struct hub_iov args[2] = {iovs(from), iovs(lim)};
    struct rreq *q = req_script(r->sh, R_AFILL, S_AFILL, 2, keys, 2, args);
    if (q == NULL)
        return HUB_ENOMEM;
    q->room = r;
    r->refs++;
    if (conn_send(&r->sh->cmd, q) != 0) {
        r->refs--;
        req_free(q);
        return HUB_EAGAIN;
    }
    r->busy = 1;
    e->st.fills++;
    return 0;
}

/* The amendment log answered {epoch, sequence, payloads...}: deliver what
 * this node missed, in order, up to the first one whose message is not
 * delivered yet (that one's publication follows the message's in the
 * buffer). Sequence numbers the log no longer has (trimmed) are skipped. */
static void afill_done(struct redis_engine *e, struct rroom *r, const redisReply *reply)
{
    r->busy = 0;
    if (!r->wanted)
        return;
    int blocked = 0, more = 0;
    int ok = reply != NULL && reply->type == REDIS_REPLY_ARRAY && reply->elements >= 2;
    struct hub_iov ep0 = ok ? reply_iov(reply->element[0]) : iov("", 0);
    if (ok && ep0.len == strlen(r->epoch) && memcmp(ep0.base, r->epoch, ep0.len) == 0) {
        for (size_t i = 2; i < reply->elements && !blocked; i++) {
            struct hub_iov p = reply_iov(reply->element[i]);
            if (p.len == 0 || p.base[0] != 'a')
                continue;
            struct nsreader rd = {p.base + 1, p.base + p.len, 0};
            struct hub_engine_amended a = {0};
            a.room = iov(r->name, r->name_len);
            struct hub_iov ep;
            uint64_t seq;
            if (parse_amend(&rd, &a, &ep, &seq) != 0 || seq < r->anext || seq > r->aupto)
                continue;
            if (a.offset >= r->next) {
                r->anext = seq; /* its message comes first, from the buffer */
                blocked = 1;
                break;
            }
            r->anext = seq + 1;
            e->st.filled++;
            deliver_amend(e, &a);
        }
        /* A full page that did not reach aupto: read on. */
        more = !blocked && r->anext <= r->aupto && reply->elements - 2 >= e->cfg.fill_max;
    }
    if (more && start_afill(e, r) == 0)
        return;
    if (!blocked && r->anext <= r->aupto)
        r->anext = r->aupto + 1; /* the log no longer has them, or the read failed */
    r->aupto = 0;
    drain_buffer(e, r);
}

/* ---- the subscribed connection ----------------------------------------- */

static void check_ready(struct redis_engine *e);

static void node_message(struct redis_engine *e, const char *p, size_t len)
{
    if (len == 0 || p[0] != 'i' || e->base.ev.on_invite == NULL)
        return;
    struct nsreader rd = {p + 1, p + len, 0};
    struct hub_iov client = ns_next(&rd), nick = ns_next(&rd), room = ns_next(&rd),
                   from = ns_next(&rd);
    if (!rd.bad)
        e->base.ev.on_invite(e->base.data, client, nick, room, from);
}

/* A control message: 'k' then kind, target, room, text, by, until. */
static void control_message(struct redis_engine *e, const char *p, size_t len)
{
    if (len == 0 || p[0] != 'k' || e->base.ev.on_control == NULL)
        return;
    struct nsreader rd = {p + 1, p + len, 0};
    struct hub_engine_control c = {0};
    struct hub_iov kind = ns_next(&rd);
    c.target = ns_next(&rd);
    c.room = ns_next(&rd);
    c.text = ns_next(&rd);
    c.by = ns_next(&rd);
    struct hub_iov until = ns_next(&rd);
    int bad = rd.bad;
    c.kind = (int)iov_u64(kind, &bad);
    c.until_ms = (int64_t)iov_u64(until, &bad);
    if (!bad)
        e->base.ev.on_control(e->base.data, &c);
}

static void room_event(struct redis_engine *e, struct rroom *r, const char *p, size_t len)
{
    if (len == 0 || !r->wanted || r->state == SUB_UNSUB)
        return;
    if (p[0] == 'm' || p[0] == 'r' || p[0] == 'a') {
        offer(e, r, p, len, 0);
        return;
    }
    struct nsreader rd = {p + 1, p + len, 0};
    struct hub_iov room = iov(r->name, r->name_len);
    if (p[0] == 'y') {
        struct hub_iov client = ns_next(&rd), nick = ns_next(&rd);
        if (!rd.bad && e->base.ev.on_typing != NULL)
            e->base.ev.on_typing(e->base.data, room, client, nick);
        return;
    }
    struct hub_engine_presence pr = {0};
    pr.room = room;
    pr.client = ns_next(&rd);
    if (p[0] == 'j' || p[0] == 'l') {
        pr.kind = p[0] == 'j' ? HUB_ENGINE_JOIN : HUB_ENGINE_LEAVE;
        pr.nick = ns_next(&rd);
    } else if (p[0] == 'n') {
        pr.kind = HUB_ENGINE_NICK;
        pr.old_nick = ns_next(&rd);
        pr.nick = ns_next(&rd);
    } else {
        return;
    }
    struct hub_iov count = ns_next(&rd), node = ns_next(&rd);
    int bad = rd.bad;
    pr.members = iov_u64(count, &bad);
    pr.local =
        node.len == strlen(e->base.node_id) && memcmp(node.base, e->base.node_id, node.len) == 0;
    if (!bad && e->base.ev.on_presence != NULL)
        e->base.ev.on_presence(e->base.data, &pr);
}

static void on_sub_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct shard *sh = privdata;
    struct redis_engine *e = sh->e;
    redisReply *r = reply;
    (void)ac;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 3)
        return;
    struct hub_iov kind = reply_iov(r->element[0]), ch = reply_iov(r->element[1]);
    size_t pl = e->prefix_len;
    if (ch.len < pl + 2 || memcmp(ch.base, e->prefix, pl) != 0)
        return;
    struct hub_iov tag = iov(ch.base + pl, 2), rest = iov(ch.base + pl + 2, ch.len - pl - 2);
    int is_room = memcmp(tag.base, "c:", 2) == 0, is_node = memcmp(tag.base, "n:", 2) == 0;
    int is_ctl = ch.len == pl + 3 && memcmp(ch.base + pl, "ctl", 3) == 0;
    if (is_ctl) {
        is_room = is_node = 0;
        if (hub_iov_eq_ci(kind, "subscribe")) {
            sh->ctl_sub = 1;
            check_ready(e);
        } else if (hub_iov_eq_ci(kind, "message")) {
            struct hub_iov payload = reply_iov(r->element[2]);
            control_message(e, payload.base, payload.len);
        }
        return;
    }
    if (hub_iov_eq_ci(kind, "message")) {
        struct hub_iov payload = reply_iov(r->element[2]);
        if (is_node) {
            node_message(e, payload.base, payload.len);
        } else if (is_room) {
            struct rroom *room = find_room(e, rest);
            if (room != NULL)
                room_event(e, room, payload.base, payload.len);
        }
        return;
    }
    if (hub_iov_eq_ci(kind, "subscribe")) {
        if (is_node) {
            sh->node_sub = 1;
            check_ready(e);
            return;
        }
        struct rroom *room = is_room ? find_room(e, rest) : NULL;
        if (room != NULL && room->state == SUB_SENT)
            room_confirmed(e, room);
        return;
    }
    if (hub_iov_eq_ci(kind, "unsubscribe") && is_room) {
        struct rroom *room = find_room(e, rest);
        if (room == NULL || room->state != SUB_UNSUB)
            return;
        room->state = SUB_NONE;
        room->synced = 0;
        if (room->wanted && sh->sub.up)
            room_subscribe(e, room);
        else
            room_maybe_free(e, room);
    }
}

static void on_sub_auth(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct shard *sh = privdata;
    redisReply *r = reply;
    if (r != NULL && r->type == REDIS_REPLY_ERROR) {
        snprintf(sh->reason, sizeof(sh->reason), "redis %s: %.*s", sh->name, (int)r->len, r->str);
        hub_log_warn("%s", sh->reason);
        redisAsyncDisconnect(ac);
    }
}

/* The subscribed connection is up: authenticate, subscribe the node channel
 * and every wanted room of this shard. */
static void sub_setup(struct shard *sh)
{
    struct redis_engine *e = sh->e;
    redisAsyncContext *ac = sh->sub.ac;
    if (sh->url.has_password) {
        if (sh->url.user[0])
            redisAsyncCommand(ac, on_sub_auth, sh, "AUTH %s %s", sh->url.user, sh->url.password);
        else
            redisAsyncCommand(ac, on_sub_auth, sh, "AUTH %s", sh->url.password);
    }
    char ch[KEY_MAX];
    size_t n = key3(e, ch, sizeof(ch), "n:", iovs(e->base.node_id));
    send_subscribe(sh, 0, iov(ch, n));
    if (sh->index == 0) {
        /* The control channel lives on the first shard (docs/engine.md). */
        n = key3(e, ch, sizeof(ch), "ctl", iov("", 0));
        send_subscribe(sh, 0, iov(ch, n));
    }
    if (sh->sub.ever_up)
        e->st.reconnects++;
    sh->sub.up = 1;
    sh->sub.ever_up = 1;
    for (size_t i = 0; i < e->rooms.nbuckets; i++)
        for (struct engine_map_node *x = e->rooms.buckets[i]; x; x = x->next) {
            struct rroom *r = HUB_CONTAINER_OF(x, struct rroom, node);
            if (r->sh == sh && r->wanted)
                room_subscribe(e, r);
        }
}

/* ---- the command connection ------------------------------------------- */

static void send_lease(struct shard *sh, int kind)
{
    struct redis_engine *e = sh->e;
    char lease[KEY_MAX], nodes[KEY_MAX], mark[KEY_MAX], ms[16];
    snprintf(ms, sizeof(ms), "%u", e->cfg.lease_ms);
    struct hub_iov keys[3] = {
        iov(lease, key3(e, lease, sizeof(lease), "L:", iovs(e->base.node_id))),
        iov(nodes, key3(e, nodes, sizeof(nodes), "nodes", iov("", 0))),
        iov(mark, key3(e, mark, sizeof(mark), "U:", iovs(e->base.node_id)))};
    struct hub_iov args[3] = {iovs(e->base.node_id), iovs(ms), iovs(NODE_MARK_TTL_S)};
    struct rreq *q = req_script(sh, kind, S_LEASE, 3, keys, 3, args);
    if (q != NULL && conn_send(&sh->cmd, q) != 0)
        req_free(q);
}

static void send_sweep(struct shard *sh, const char *node, int kind)
{
    struct redis_engine *e = sh->e;
    char nodes[KEY_MAX];
    struct hub_iov keys[1] = {iov(nodes, key3(e, nodes, sizeof(nodes), "nodes", iov("", 0)))};
    struct hub_iov args[2] = {iov(e->prefix, e->prefix_len), iovs(node)};
    struct rreq *q = req_script(sh, kind, S_SWEEP, 1, keys, 2, args);
    if (q != NULL && conn_send(&sh->cmd, q) != 0)
        req_free(q);
}

static void send_join_script(struct shard *sh, struct hub_iov room, struct hub_iov client,
                             struct hub_iov nick, int silent, struct rreq **out);
static void send_claim(struct shard *sh, struct hub_iov nick, struct hub_iov client,
                       struct rreq **out);

/* Writes this node's memberships and nick claims on sh again; silent when
 * Redis lost its data (every node still shows these members: a join push
 * would announce people who never left). */
static void reassert(struct shard *sh, int silent)
{
    struct redis_engine *e = sh->e;
    for (size_t i = 0; i < e->members.nbuckets; i++)
        for (struct engine_map_node *x = e->members.buckets[i]; x; x = x->next) {
            struct lmember *m = HUB_CONTAINER_OF(x, struct lmember, node);
            struct hub_iov room = iov(m->key + m->room_off, m->room_len);
            if (&e->shards[engine_shard_of(room, e->nshards)] != sh)
                continue;
            size_t coff = m->room_off + m->room_len;
            struct rreq *q = NULL;
            send_join_script(sh, room, iov(m->key + coff, m->key_len - coff), iovs(m->nick), silent,
                             &q);
            if (q != NULL && conn_send(&sh->cmd, q) != 0)
                req_free(q);
        }
    for (size_t i = 0; i < e->nicks.nbuckets; i++)
        for (struct engine_map_node *x = e->nicks.buckets[i]; x; x = x->next) {
            struct lnick *k = HUB_CONTAINER_OF(x, struct lnick, node);
            if (&e->shards[engine_shard_of(iovs(k->fold), e->nshards)] != sh)
                continue;
            struct rreq *q = NULL;
            send_claim(sh, iovs(k->nick), iovs(k->client), &q);
            if (q != NULL && conn_send(&sh->cmd, q) != 0)
                req_free(q);
        }
}

static void cmd_setup(struct shard *sh)
{
    struct redis_engine *e = sh->e;
    struct rreq *q;
    if (sh->url.has_password) {
        const char *argv[3] = {"AUTH", sh->url.user, sh->url.password};
        size_t lens[3] = {4, strlen(sh->url.user), strlen(sh->url.password)};
        if (sh->url.user[0])
            q = req_new(sh, R_SETUP, -1, 3, argv, lens);
        else {
            argv[1] = sh->url.password;
            lens[1] = lens[2];
            q = req_new(sh, R_SETUP, -1, 2, argv, lens);
        }
        if (q != NULL && conn_send(&sh->cmd, q) != 0)
            req_free(q);
    }
    if (sh->url.db != 0) {
        char db[8];
        snprintf(db, sizeof(db), "%d", sh->url.db);
        const char *argv[2] = {"SELECT", db};
        size_t lens[2] = {6, strlen(db)};
        q = req_new(sh, R_SETUP, -1, 2, argv, lens);
        if (q != NULL && conn_send(&sh->cmd, q) != 0)
            req_free(q);
    }
    for (int i = 0; i < S_COUNT; i++) {
        const char *argv[3] = {"SCRIPT", "LOAD", script_src[i]};
        size_t lens[3] = {6, 4, strlen(script_src[i])};
        q = req_new(sh, R_SETUP, -1, 3, argv, lens);
        if (q != NULL && conn_send(&sh->cmd, q) != 0)
            req_free(q);
    }
    if (!sh->cleaned) {
        /* A node restarted under the same id: its old members are stale. */
        send_sweep(sh, e->base.node_id, R_SETUP);
        sh->cleaned = 1;
    }
    /* The lease reply marks the connection up. */
    send_lease(sh, R_UP);
}

/* ---- connecting and reconnecting ------------------------------------- */

static void conn_start(struct rconn *c);

static void on_retry(uv_timer_t *t)
{
    struct rconn *c = t->data;
    c->retry_pending = 0;
    if (!c->sh->e->base.closing)
        conn_start(c);
}

static void schedule_retry(struct rconn *c)
{
    struct redis_engine *e = c->sh->e;
    if (e->base.closing || c->retry_pending)
        return;
    c->retry_pending = 1;
    uv_timer_start(&c->retry, on_retry, c->backoff_ms, 0);
    c->backoff_ms *= 2;
    if (c->backoff_ms > e->cfg.backoff_max_ms)
        c->backoff_ms = e->cfg.backoff_max_ms;
}

static void maybe_closed(struct redis_engine *e);
static void on_timer_closed(uv_handle_t *h);

/* The connection is gone (hiredis frees the context after this returns). */
static void conn_lost(struct rconn *c, const char *why)
{
    struct shard *sh = c->sh;
    struct redis_engine *e = sh->e;
    c->ac = NULL;
    int was_up = c->up;
    c->up = 0;
    if (c->is_sub) {
        sh->node_sub = 0;
        sh->ctl_sub = 0;
        /* Every room must subscribe and sync again. */
        for (size_t i = 0; i < e->rooms.nbuckets; i++)
            for (struct engine_map_node *x = e->rooms.buckets[i], *next; x; x = next) {
                next = x->next;
                struct rroom *r = HUB_CONTAINER_OF(x, struct rroom, node);
                if (r->sh != sh)
                    continue;
                r->state = SUB_NONE;
                free_buffer(r);
                release_holds(e, r); /* the cmd connection answers them or fails them */
                room_maybe_free(e, r);
            }
    }
    if (why != NULL && !e->base.closing) {
        snprintf(sh->reason, sizeof(sh->reason), "redis %s: %s", sh->name, why);
        if (was_up)
            hub_log_warn("%s", sh->reason);
    }
    check_ready(e);
    if (e->base.closing)
        maybe_closed(e);
    else
        schedule_retry(c);
}

/* Drops a connection at once, failing what is in flight (hiredis calls the
 * disconnect callback only for contexts that were connected). */
static void conn_kill(struct rconn *c, const char *why)
{
    redisAsyncContext *ac = c->ac;
    if (ac == NULL)
        return;
    redisAsyncFree(ac);
    if (c->ac == ac)
        conn_lost(c, why);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct rconn *c = ac->data;
    if (status != REDIS_OK) {
        conn_lost(c, ac->errstr[0] ? ac->errstr : "cannot connect");
        return;
    }
    if (c->sh->e->base.closing) {
        redisAsyncDisconnect(c->ac);
        return;
    }
    c->backoff_ms = c->sh->e->cfg.backoff_min_ms;
    if (c->is_sub)
        sub_setup(c->sh);
    else
        cmd_setup(c->sh);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct rconn *c = ac->data;
    (void)status;
    conn_lost(c, ac->errstr[0] ? ac->errstr : "connection closed");
}

/* ---- hiredis on the loop ------------------------------------------------ */

/* A uv_poll_t per context, as in hiredis's adapters/libuv.h, with one fix:
 * libuv reports a socket error (a refused connect, a reset) as a negative
 * status with no events, which that adapter ignores, so a refused connect
 * would never complete. Here an error wakes hiredis up as if the socket were
 * readable and writable; its handlers then find the error. The handles are
 * counted in e->handles, so hub_engine_close's callback fires only after
 * every handle the engine made is closed. */
struct rpoll {
    uv_poll_t handle;       /* the poll, freed in its close callback */
    redisAsyncContext *ac;  /* NULL once hiredis cleaned up */
    struct redis_engine *e; /* for the handle count */
    int events;             /* UV_READABLE | UV_WRITABLE wanted */
};

static void rp_io(uv_poll_t *h, int status, int events)
{
    struct rpoll *p = h->data;
    if (status < 0)
        events = UV_READABLE | UV_WRITABLE;
    if (p->ac != NULL && (events & UV_READABLE))
        redisAsyncHandleRead(p->ac);
    if (p->ac != NULL && (events & UV_WRITABLE))
        redisAsyncHandleWrite(p->ac);
}

static void rp_update(struct rpoll *p)
{
    if (p->events)
        uv_poll_start(&p->handle, p->events, rp_io);
    else
        uv_poll_stop(&p->handle);
}

static void rp_add_read(void *privdata)
{
    struct rpoll *p = privdata;
    p->events |= UV_READABLE;
    rp_update(p);
}

static void rp_del_read(void *privdata)
{
    struct rpoll *p = privdata;
    p->events &= ~UV_READABLE;
    rp_update(p);
}

static void rp_add_write(void *privdata)
{
    struct rpoll *p = privdata;
    p->events |= UV_WRITABLE;
    rp_update(p);
}

static void rp_del_write(void *privdata)
{
    struct rpoll *p = privdata;
    p->events &= ~UV_WRITABLE;
    rp_update(p);
}

static void rp_closed(uv_handle_t *h)
{
    struct rpoll *p = h->data;
    struct redis_engine *e = p->e;
    free(p);
    e->handles--;
    maybe_closed(e);
}

static void rp_cleanup(void *privdata)
{
    struct rpoll *p = privdata;
    p->ac = NULL;
    uv_close((uv_handle_t *)&p->handle, rp_closed);
}

static int rp_attach(struct redis_engine *e, redisAsyncContext *ac)
{
    struct rpoll *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return -1;
    if (uv_poll_init(e->loop, &p->handle, ac->c.fd) != 0) {
        free(p);
        return -1;
    }
    p->handle.data = p;
    p->ac = ac;
    p->e = e;
    e->handles++;
    ac->ev.data = p;
    ac->ev.addRead = rp_add_read;
    ac->ev.delRead = rp_del_read;
    ac->ev.addWrite = rp_add_write;
    ac->ev.delWrite = rp_del_write;
    ac->ev.cleanup = rp_cleanup;
    return 0;
}

static void conn_start(struct rconn *c)
{
    struct shard *sh = c->sh;
    redisAsyncContext *ac = redisAsyncConnect(sh->ip, sh->url.port);
    if (ac == NULL || ac->err) {
        snprintf(sh->reason, sizeof(sh->reason), "redis %s: %s", sh->name,
                 ac ? ac->errstr : "out of memory");
        if (ac != NULL)
            redisAsyncFree(ac);
        schedule_retry(c);
        return;
    }
    ac->data = c;
    if (rp_attach(sh->e, ac) != 0) {
        snprintf(sh->reason, sizeof(sh->reason), "redis %s: cannot attach to the loop", sh->name);
        redisAsyncFree(ac);
        schedule_retry(c);
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    c->ac = ac;
}

/* ---- replies on the command connection ------------------------------ */

/* Resends q as EVAL with the script's text (Redis lost its script cache). */
static int resend_eval(struct rreq *q)
{
    struct rconn *c = &q->sh->cmd;
    const char *src = script_src[q->script];
    /* "*N\r\n$7\r\nEVALSHA\r\n$40\r\n<sha>\r\n..." -> "*N\r\n$4\r\nEVAL\r\n$L\r\n<src>\r\n..." */
    const char *nl = memchr(q->cmd, '\n', q->len);
    if (nl == NULL)
        return -1;
    size_t head = (size_t)(nl + 1 - q->cmd), skip = head + 13 + 47;
    if (skip > q->len)
        return -1;
    size_t sl = strlen(src);
    char *cmd = malloc(q->len - skip + head + sl + 48);
    if (cmd == NULL)
        return -1;
    size_t w = 0;
    memcpy(cmd, q->cmd, head);
    w = head;
    w += (size_t)sprintf(cmd + w, "$4\r\nEVAL\r\n$%zu\r\n", sl);
    memcpy(cmd + w, src, sl);
    w += sl;
    memcpy(cmd + w, "\r\n", 2);
    w += 2;
    memcpy(cmd + w, q->cmd + skip, q->len - skip);
    w += q->len - skip;
    redisFreeCommand(q->cmd);
    q->cmd = cmd; /* malloc'd: redisFreeCommand is free() in hiredis 0.14 */
    q->len = w;
    q->retried = 1;
    return conn_send(c, q);
}

static void rooms_part(struct redis_engine *e, struct rooms_agg *a, const redisReply *r);

/* ---- hub-wide restrictions on every shard ------------------------------ */

/* The first shard's list of hub-wide restrictions (P hr) is the reference:
 * when another shard's command connection comes up (Redis restarted empty,
 * or a shard was added), the ones it lacks are copied to it, so that its
 * rooms' publish scripts check them again. Add-only: lifts are written to
 * every shard when they are made. target: a shard index, or UINT64_MAX for
 * every other shard (the first one came up). */
static void heal_hub(struct redis_engine *e, uint64_t target)
{
    struct shard *s0 = &e->shards[0];
    if (e->nshards < 2 || !s0->cmd.up)
        return;
    char hr[KEY_MAX], now[24];
    struct hub_iov keys[1] = {iov(hr, key3(e, hr, sizeof(hr), "hr", iov("", 0)))};
    snprintf(now, sizeof(now), "%lld", (long long)time(NULL) * 1000);
    struct hub_iov args[1] = {iovs(now)};
    struct rreq *q = req_script(s0, R_HLIST, S_HLIST, 1, keys, 1, args);
    if (q == NULL)
        return;
    q->want = target;
    q->data = (void *)(uintptr_t)e->hub_gen;
    if (conn_send(&s0->cmd, q) != 0)
        req_free(q);
}

/* Sends the heal script with the first shard's list r to sh. */
static void heal_shard(struct redis_engine *e, struct shard *sh, const redisReply *r)
{
    size_t n = 8 + r->elements;
    const char **argv = malloc(n * sizeof(*argv));
    size_t *lens = malloc(n * sizeof(*lens));
    char hr[KEY_MAX], now[24];
    static const char slack[] = RESTRICT_SLACK_S "000";
    struct rreq *q = calloc(1, sizeof(*q));
    if (argv == NULL || lens == NULL || q == NULL) {
        free(argv);
        free(lens);
        free(q);
        return;
    }
    size_t hn = key3(e, hr, sizeof(hr), "hr", iov("", 0));
    snprintf(now, sizeof(now), "%lld", (long long)time(NULL) * 1000);
    size_t k = 0;
    argv[k] = "EVALSHA", lens[k++] = 7;
    argv[k] = e->sha[S_HEAL], lens[k++] = 40;
    argv[k] = "1", lens[k++] = 1;
    argv[k] = hr, lens[k++] = hn;
    argv[k] = e->prefix, lens[k++] = e->prefix_len;
    argv[k] = now, lens[k++] = strlen(now);
    argv[k] = slack, lens[k++] = sizeof(slack) - 1;
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        struct hub_iov f = reply_iov(r->element[i]), u = reply_iov(r->element[i + 1]);
        argv[k] = f.base, lens[k++] = f.len;
        argv[k] = u.base, lens[k++] = u.len;
    }
    q->sh = sh;
    q->kind = R_FIRE;
    q->script = S_HEAL;
    int len = redisFormatCommandArgv(&q->cmd, (int)k, argv, lens);
    free(argv);
    free(lens);
    if (len < 0) {
        free(q);
        return;
    }
    q->len = (size_t)len;
    if (conn_send(&sh->cmd, q) != 0)
        req_free(q);
}

static void heal_done(struct redis_engine *e, struct rreq *q, const redisReply *r)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements == 0)
        return;
    if ((uint64_t)(uintptr_t)q->data != e->hub_gen) {
        /* A hub-wide restriction was made meanwhile: the list may predate
         * its lift on the first shard; read it again. */
        heal_hub(e, q->want);
        return;
    }
    for (uint32_t i = 1; i < e->nshards; i++)
        if ((q->want == UINT64_MAX || q->want == i) && e->shards[i].cmd.up)
            heal_shard(e, &e->shards[i], r);
}
static void amend_done(struct rreq *q, int err, const redisReply *r);
static void done_part(struct done_agg *a, int err);

/* The command connection of sh is up again: every subscribed room of the
 * shard reads its position now (one confirmed meanwhile was waiting for
 * it), so that an epoch change (Redis lost the data) or messages missed
 * while it was down are seen at once, not at the room's next message. */
static void cmd_up(struct redis_engine *e, struct shard *sh)
{
    for (size_t i = 0; i < e->rooms.nbuckets; i++)
        for (struct engine_map_node *x = e->rooms.buckets[i]; x; x = x->next) {
            struct rroom *r = HUB_CONTAINER_OF(x, struct rroom, node);
            if (r->sh != sh || !r->wanted)
                continue;
            if ((r->state == SUB_SYNC && r->need_pos) || (r->state == SUB_LIVE && !r->busy))
                room_confirmed(e, r);
        }
}

static void complete(struct redis_engine *e, struct rreq *q, redisReply *r)
{
    int err = r == NULL ? HUB_EAGAIN : r->type == REDIS_REPLY_ERROR ? HUB_EAGAIN : 0;
    if (r != NULL && r->type == REDIS_REPLY_ERROR && q->kind != R_SETUP)
        hub_log_warn("redis %s: %.*s", q->sh->name, (int)r->len, r->str);
    if (err != 0 && q->kind != R_POS && q->kind != R_FILL && q->kind != R_AFILL &&
        q->kind != R_ROOMS)
        e->st.dropped++;
    switch (q->kind) {
    case R_SETUP:
    case R_UP:
        if (err != 0) {
            if (r != NULL) {
                snprintf(q->sh->reason, sizeof(q->sh->reason), "redis %s: %.*s", q->sh->name,
                         (int)r->len, r->str);
                hub_log_warn("%s", q->sh->reason);
                if (q->sh->cmd.ac != NULL)
                    redisAsyncDisconnect(q->sh->cmd.ac);
            }
            break;
        }
        if (q->kind == R_UP) {
            struct rconn *c = &q->sh->cmd;
            if (c->ever_up)
                e->st.reconnects++;
            c->up = 1;
            c->ever_up = 1;
            long long v = r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
            reassert(q->sh, (v & 2) == 0);
            cmd_up(e, q->sh);
            heal_hub(e, q->sh->index == 0 ? UINT64_MAX : q->sh->index);
            check_ready(e);
        }
        break;
    case R_LEASE:
        if (err == 0 && r->type == REDIS_REPLY_INTEGER && (r->integer & 1) == 0) {
            int lost = (r->integer & 2) == 0;
            /* The lease had lapsed: others may have swept this node (then
             * they were told its members left), or Redis lost its data
             * (flushed: nobody was told, and every room has a new epoch). */
            hub_log_warn("redis %s: node lease %s; restoring members and nicks", q->sh->name,
                         lost ? "gone with the data" : "lapsed");
            reassert(q->sh, lost);
            if (lost) {
                cmd_up(e, q->sh);
                heal_hub(e, q->sh->index == 0 ? UINT64_MAX : q->sh->index);
            }
        }
        break;
    case R_SWEEP:
        if (err == 0 && r->type == REDIS_REPLY_INTEGER)
            e->st.swept += (uint64_t)(r->integer > 0 ? r->integer : 0);
        break;
    case R_PUBLISH: {
        uint64_t off = 0, dup = 0;
        int64_t ts = 0;
        if (err == 0 && (r->type != REDIS_REPLY_ARRAY || r->elements < 3 ||
                         reply_u64(r->element[0], &off) != 0 ||
                         reply_i64(r->element[1], &ts) != 0 || reply_u64(r->element[2], &dup) != 0))
            err = HUB_EAGAIN;
        if (err == 0 && dup >= 2) {
            /* Refused by the script, nothing stored: 2 banned, 3 muted,
             * 4 a reply_to past the room's newest offset. */
            err = dup == 4 ? HUB_EINVAL : HUB_EPERM;
        } else if (err == 0) {
            dup ? e->st.duplicates++ : e->st.published++;
        }
        q->cb.publish(q->data, err, err ? 0 : off, err ? 0 : ts, err ? 0 : (int)dup);
        break;
    }
    case R_RELAY:
        q->cb.publish(q->data, err, 0, 0, 0);
        break;
    case R_READ: {
        struct read_result rr;
        if (err == 0)
            err = parse_read(r, &rr);
        if (err != 0)
            q->cb.read(q->data, err, NULL, NULL, 0, 0);
        else
            q->cb.read(q->data, 0, &rr.pos, rr.msgs, rr.n, rr.complete);
        if (err == 0)
            read_result_free(&rr);
        break;
    }
    case R_QUERY: {
        struct read_result rr;
        if (err == 0)
            err = parse_read(r, &rr);
        if (err != 0)
            q->cb.read(q->data, err, NULL, NULL, 0, 0);
        else
            q->cb.read(q->data, 0, &rr.pos, rr.msgs, rr.n, rr.complete);
        if (err == 0)
            read_result_free(&rr);
        break;
    }
    case R_SEARCH: {
        struct read_result rr;
        memset(&rr, 0, sizeof(rr));
        int64_t complete = 1;
        if (err == 0 && (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
                         r->element[0]->type != REDIS_REPLY_INTEGER))
            err = HUB_EAGAIN;
        if (err == 0 && (complete = r->element[0]->integer) < 0)
            err = HUB_EINVAL;
        if (err == 0)
            err = parse_rows(r, 1, &rr);
        if (err != 0)
            q->cb.search(q->data, err, NULL, 0, 0);
        else
            q->cb.search(q->data, 0, rr.msgs, rr.n, complete != 0);
        read_result_free(&rr);
        break;
    }
    case R_AMEND:
        amend_done(q, err, r);
        break;
    case R_DONE:
        done_part(q->dagg, err);
        break;
    case R_POS:
        if (q->room->wanted && q->room->state == SUB_LIVE)
            pos_done(e, q->room, err ? NULL : r);
        else
            q->room->busy = 0;
        room_unref(e, q->room);
        break;
    case R_FILL:
        fill_done(e, q->room, err ? NULL : r, q->want);
        room_unref(e, q->room);
        break;
    case R_AFILL:
        afill_done(e, q->room, err ? NULL : r);
        room_unref(e, q->room);
        break;
    case R_HLIST:
        if (err == 0)
            heal_done(e, q, r);
        break;
    case R_MEMBERS: {
        uint64_t total = 0;
        if (err == 0 && (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
                         reply_u64(r->element[0], &total) != 0))
            err = HUB_EAGAIN;
        if (err != 0) {
            q->cb.members(q->data, err, 0, NULL, 0);
            break;
        }
        size_t n = (r->elements - 1) / 2;
        struct hub_engine_member *list = n ? malloc(n * sizeof(*list)) : NULL;
        if (n > 0 && list == NULL) {
            q->cb.members(q->data, HUB_ENOMEM, 0, NULL, 0);
            break;
        }
        for (size_t i = 0; i < n; i++) {
            list[i].client = reply_iov(r->element[1 + 2 * i]);
            list[i].nick = reply_iov(r->element[2 + 2 * i]);
        }
        q->cb.members(q->data, 0, total, list, n);
        free(list);
        break;
    }
    case R_ROOMS:
        rooms_part(e, q->agg, err ? NULL : r);
        break;
    case R_CLAIM:
        if (err == 0)
            err = r->type == REDIS_REPLY_INTEGER && r->integer == 1 ? 0 : HUB_EEXIST;
        if (q->cb.done != NULL)
            q->cb.done(q->data, err);
        else if (err == HUB_EEXIST)
            hub_log_warn("redis %s: a nick of this node was taken while it was away", q->sh->name);
        break;
    case R_INVITE:
        if (err == 0)
            err = r->type == REDIS_REPLY_INTEGER && r->integer == 1 ? 0 : HUB_ENOENT;
        q->cb.done(q->data, err);
        break;
    default:
        break;
    }
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct rreq *q = privdata;
    struct shard *sh = q->sh;
    struct redis_engine *e = sh->e;
    redisReply *r = reply;
    struct rconn *c = &sh->cmd;
    if (ac != NULL) {
        /* Replies come in send order: q is the oldest in flight. */
        if (c->head == q) {
            c->head = q->next;
            if (c->head == NULL)
                c->tail = NULL;
            c->inflight--;
        }
        uint64_t us = (uv_hrtime() - q->t0) / 1000;
        e->st.rtt_us = e->st.rtt_us ? (e->st.rtt_us * 7 + us) / 8 : us;
        if (us > e->st.rtt_max_us)
            e->st.rtt_max_us = us;
        if (r != NULL && r->type == REDIS_REPLY_ERROR && q->script >= 0 && !q->retried &&
            r->len >= 8 && memcmp(r->str, "NOSCRIPT", 8) == 0) {
            if (resend_eval(q) == 0)
                return;
        }
    }
    complete(e, q, r);
    req_free(q);
}

/* ---- timers: watchdog and lease -------------------------------------- */

static void on_tick(uv_timer_t *t)
{
    struct redis_engine *e = t->data;
    uint64_t now = uv_hrtime();
    uint64_t limit = (uint64_t)e->cfg.timeout_ms * 1000000u;
    for (uint32_t i = 0; i < e->nshards; i++) {
        struct shard *sh = &e->shards[i];
        struct rconn *c = &sh->cmd;
        int stuck = c->ac != NULL && c->head != NULL && now - c->head->t0 > limit;
        /* A held request older than the timeout means the subscription stalls. */
        for (size_t b = 0; !stuck && sh->held > 0 && b < e->rooms.nbuckets; b++)
            for (struct engine_map_node *x = e->rooms.buckets[b]; x && !stuck; x = x->next) {
                struct rroom *r = HUB_CONTAINER_OF(x, struct rroom, node);
                stuck = r->sh == sh && r->hold_head != NULL && now - r->hold_head->t0 > limit;
            }
        if (stuck) {
            snprintf(sh->reason, sizeof(sh->reason), "redis %s: no answer within %u ms", sh->name,
                     e->cfg.timeout_ms);
            hub_log_warn("%s; reconnecting", sh->reason);
            /* Free, not disconnect: a stalled server would never let a
             * graceful disconnect finish. Every request fails with EAGAIN. */
            conn_kill(c, "no answer in time");
            conn_kill(&sh->sub, "no answer in time");
        }
    }
    if (!e->base.closing && uv_now(e->loop) - e->last_lease >= e->cfg.lease_ms / 3) {
        e->last_lease = uv_now(e->loop);
        for (uint32_t i = 0; i < e->nshards; i++)
            if (e->shards[i].cmd.up) {
                send_lease(&e->shards[i], R_LEASE);
                send_sweep(&e->shards[i], "", R_SWEEP);
            }
    }
}

static void check_ready(struct redis_engine *e)
{
    uint32_t ready = 0;
    const char *why = NULL;
    for (uint32_t i = 0; i < e->nshards; i++) {
        if (shard_ready(&e->shards[i]))
            ready++;
        else if (why == NULL)
            why = e->shards[i].reason[0] ? e->shards[i].reason : "connecting to redis";
    }
    e->st.shards_ready = ready;
    if (e->base.closing)
        return;
    int state = ready == e->nshards ? HUB_ENGINE_READY : HUB_ENGINE_CONNECTING;
    snprintf(e->reason, sizeof(e->reason), "%s", why ? why : "");
    if (state != e->base.state) {
        e->base.state = state;
        if (state == HUB_ENGINE_READY)
            hub_log_info("redis engine ready (%u shard%s, node %s)", e->nshards,
                         e->nshards == 1 ? "" : "s", e->base.node_id);
        if (e->base.ev.on_state != NULL)
            e->base.ev.on_state(e->base.data, state == HUB_ENGINE_READY, e->reason);
    }
}

/* ---- open and close ---------------------------------------------------- */

static int valid_node_id(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > HUB_ENGINE_NODE_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static int resolve(struct shard *sh, char *err, size_t errsz)
{
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    uv_getaddrinfo_t req;
    /* Synchronous (no callback): this runs once, at start-up. */
    int rc = uv_getaddrinfo(sh->e->loop, &req, NULL, sh->url.host, NULL, &hints);
    if (rc != 0) {
        snprintf(err, errsz, "cannot resolve Redis host %s: %s", sh->url.host, uv_strerror(rc));
        return HUB_EINVAL;
    }
    rc = uv_ip_name(req.addrinfo->ai_addr, sh->ip, sizeof(sh->ip));
    uv_freeaddrinfo(req.addrinfo);
    if (rc != 0) {
        snprintf(err, errsz, "cannot resolve Redis host %s", sh->url.host);
        return HUB_EINVAL;
    }
    return 0;
}

int hub_engine_have_redis(void)
{
    return 1;
}

static void sha_hex(const char *src, char out[41])
{
    static const char hex[] = "0123456789abcdef";
    struct hub_sha1 s;
    uint8_t d[20];
    hub_sha1_init(&s);
    hub_sha1_update(&s, src, strlen(src));
    hub_sha1_final(&s, d);
    for (int i = 0; i < 20; i++) {
        out[2 * i] = hex[d[i] >> 4];
        out[2 * i + 1] = hex[d[i] & 15];
    }
    out[40] = '\0';
}

int hub_engine_open_redis(struct hub_engine **out, uv_loop_t *loop,
                          const struct hub_engine_config *cfg, const struct hub_engine_events *ev,
                          void *data, char *err, size_t errsz)
{
    if (errsz > 0)
        err[0] = '\0';
    if (cfg->nurls == 0 || cfg->nurls > HUB_ENGINE_MAX_SHARDS) {
        snprintf(err, errsz, "give 1..%d Redis URLs", HUB_ENGINE_MAX_SHARDS);
        return HUB_EINVAL;
    }
    if (cfg->node_id != NULL && !valid_node_id(cfg->node_id)) {
        snprintf(err, errsz, "bad node id \"%.70s\": use 1..%d of A-Z a-z 0-9 . _ -", cfg->node_id,
                 HUB_ENGINE_NODE_ID_MAX);
        return HUB_EINVAL;
    }
    const char *prefix = cfg->prefix ? cfg->prefix : "chathub:";
    if (strlen(prefix) > 64 || strchr(prefix, '\n') != NULL) {
        snprintf(err, errsz, "the Redis key prefix must be at most 64 bytes");
        return HUB_EINVAL;
    }
    struct redis_engine *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return HUB_ENOMEM;
    engine_init(&e->base, &redis_ops, ev, data);
    e->loop = loop;
    e->cfg = *cfg;
    e->cfg.urls = NULL;
    struct hub_engine_config def;
    hub_engine_config_default(&def);
    if (e->cfg.history_max == 0)
        e->cfg.history_max = def.history_max;
    if (e->cfg.lease_ms < 300)
        e->cfg.lease_ms = e->cfg.lease_ms ? 300 : def.lease_ms;
    if (e->cfg.timeout_ms == 0)
        e->cfg.timeout_ms = def.timeout_ms;
    if (e->cfg.max_inflight == 0)
        e->cfg.max_inflight = def.max_inflight;
    if (e->cfg.dedupe_ttl_s == 0)
        e->cfg.dedupe_ttl_s = def.dedupe_ttl_s;
    if (e->cfg.backoff_min_ms == 0)
        e->cfg.backoff_min_ms = def.backoff_min_ms;
    if (e->cfg.backoff_max_ms < e->cfg.backoff_min_ms)
        e->cfg.backoff_max_ms = e->cfg.backoff_min_ms;
    if (e->cfg.fill_max == 0)
        e->cfg.fill_max = def.fill_max;
    e->prefix = engine_strdup(iovs(prefix));
    e->shards = calloc(cfg->nurls, sizeof(*e->shards));
    if (e->prefix == NULL || e->shards == NULL) {
        free(e->prefix);
        free(e->shards);
        free(e);
        return HUB_ENOMEM;
    }
    e->prefix_len = strlen(e->prefix);
    e->nshards = (uint32_t)cfg->nurls;
    if (cfg->node_id != NULL) {
        snprintf(e->base.node_id, sizeof(e->base.node_id), "%s", cfg->node_id);
    } else {
        engine_random_hex(e->base.node_id, 12);
    }
    for (int i = 0; i < S_COUNT; i++)
        sha_hex(script_src[i], e->sha[i]);
    for (uint32_t i = 0; i < e->nshards; i++) {
        struct shard *sh = &e->shards[i];
        sh->e = e;
        sh->index = i;
        if (hub_redisurl_parse(cfg->urls[i], &sh->url, err, errsz) != 0 ||
            resolve(sh, err, errsz) != 0) {
            free(e->prefix);
            free(e->shards);
            free(e);
            return HUB_EINVAL;
        }
        snprintf(sh->name, sizeof(sh->name), "%s:%d", sh->url.host, sh->url.port);
        snprintf(sh->reason, sizeof(sh->reason), "redis %s: connecting", sh->name);
    }
    /* Nothing below fails: start the timers and the connections. */
    e->tick_ms = e->cfg.lease_ms / 3 < TICK_MAX_MS ? e->cfg.lease_ms / 3 : TICK_MAX_MS;
    uv_timer_init(loop, &e->tick);
    e->tick.data = e;
    e->handles = 1;
    uv_timer_start(&e->tick, on_tick, e->tick_ms, e->tick_ms);
    e->last_lease = uv_now(loop);
    for (uint32_t i = 0; i < e->nshards; i++) {
        struct shard *sh = &e->shards[i];
        struct rconn *cs[2] = {&sh->cmd, &sh->sub};
        for (int k = 0; k < 2; k++) {
            cs[k]->sh = sh;
            cs[k]->is_sub = k;
            cs[k]->backoff_ms = e->cfg.backoff_min_ms;
            uv_timer_init(loop, &cs[k]->retry);
            cs[k]->retry.data = cs[k];
            e->handles++;
            conn_start(cs[k]);
        }
    }
    check_ready(e);
    *out = &e->base;
    return 0;
}

static void on_timer_closed(uv_handle_t *h)
{
    struct redis_engine *e = h->data;
    e->handles--;
    maybe_closed(e);
}

static void maybe_closed(struct redis_engine *e)
{
    if (!e->base.closing || e->close_fired)
        return;
    for (uint32_t i = 0; i < e->nshards; i++)
        if (e->shards[i].cmd.ac != NULL || e->shards[i].sub.ac != NULL)
            return;
    /* The watchdog ran until every context was gone; now it goes too. */
    if (!e->tick_closing) {
        e->tick_closing = 1;
        uv_close((uv_handle_t *)&e->tick, on_timer_closed);
    }
    if (e->handles > 0)
        return;
    e->close_fired = 1;
    if (e->closed_cb != NULL)
        e->closed_cb(e->closed_data);
}

static void redis_close(struct hub_engine *base, void (*cb)(void *data), void *data)
{
    struct redis_engine *e = (struct redis_engine *)base;
    e->closed_cb = cb;
    e->closed_data = data;
    /* Held requests can no longer wait for subscriptions. */
    for (size_t i = 0; i < e->rooms.nbuckets; i++)
        for (struct engine_map_node *x = e->rooms.buckets[i]; x; x = x->next) {
            struct rroom *r = HUB_CONTAINER_OF(x, struct rroom, node);
            r->wanted = 0;
            release_holds(e, r);
        }
    for (uint32_t i = 0; i < e->nshards; i++) {
        struct shard *sh = &e->shards[i];
        struct rconn *cs[2] = {&sh->cmd, &sh->sub};
        for (int k = 0; k < 2; k++) {
            cs[k]->retry.data = e;
            uv_close((uv_handle_t *)&cs[k]->retry, on_timer_closed);
            /* Graceful for a connected context: replies already asked for
             * still arrive (the watchdog frees a stalled one). A context
             * still connecting is dropped. */
            if (cs[k]->ac != NULL) {
                if (cs[k]->ac->c.flags & REDIS_CONNECTED)
                    redisAsyncDisconnect(cs[k]->ac);
                else
                    conn_kill(cs[k], NULL);
            }
        }
    }
    maybe_closed(e);
}

static void redis_free(struct hub_engine *base)
{
    struct redis_engine *e = (struct redis_engine *)base;
    for (size_t i = 0; i < e->rooms.nbuckets; i++)
        for (struct engine_map_node *x = e->rooms.buckets[i], *next; x; x = next) {
            next = x->next;
            struct rroom *r = HUB_CONTAINER_OF(x, struct rroom, node);
            free_buffer(r);
            free(r);
        }
    for (size_t i = 0; i < e->members.nbuckets; i++)
        for (struct engine_map_node *x = e->members.buckets[i], *next; x; x = next) {
            next = x->next;
            struct lmember *m = HUB_CONTAINER_OF(x, struct lmember, node);
            free(m->nick);
            free(m);
        }
    for (size_t i = 0; i < e->nicks.nbuckets; i++)
        for (struct engine_map_node *x = e->nicks.buckets[i], *next; x; x = next) {
            next = x->next;
            struct lnick *k = HUB_CONTAINER_OF(x, struct lnick, node);
            free(k->client);
            free(k->nick);
            free(k);
        }
    engine_map_free(&e->rooms);
    engine_map_free(&e->members);
    engine_map_free(&e->nicks);
    free(e->shards);
    free(e->prefix);
    free(e);
}

/* ---- the calls ---------------------------------------------------------- */

static struct shard *room_shard(struct redis_engine *e, struct hub_iov room)
{
    return &e->shards[engine_shard_of(room, e->nshards)];
}

static struct hub_iov amend_prefix(const struct redis_engine *e, char *buf, struct hub_iov room);
static struct hub_iov amend_log_key(const struct redis_engine *e, char *buf, struct hub_iov room);
static int restrict_keys(const struct redis_engine *e, struct hub_iov room, struct hub_iov actor,
                         char buf[4][KEY_MAX], struct hub_iov *out);

static int redis_publish(struct hub_engine *base, const struct hub_engine_pub *p,
                         hub_engine_publish_cb cb, void *data)
{
    struct redis_engine *e = (struct redis_engine *)base;
    struct shard *sh = room_shard(e, p->room);
    char ch[KEY_MAX];
    size_t chn = key3(e, ch, sizeof(ch), "c:", p->room);
    if (chn == 0)
        return HUB_EINVAL;
    struct rreq *q;
    if (p->binary) {
        size_t cap = p->from.len + p->text.len + p->client.len + 64;
        char *pl = malloc(cap);
        if (pl == NULL)
            return HUB_ENOMEM;
        size_t w = 0;
        pl[w++] = 'r';
        ns_put(pl, &w, p->from);
        ns_put(pl, &w, p->text);
        ns_put(pl, &w, p->client);
        const char *argv[3] = {"PUBLISH", ch, pl};
        size_t lens[3] = {7, chn, w};
        q = req_new(sh, R_RELAY, -1, 3, argv, lens);
        free(pl);
    } else {
        if (p->author.len > AUTHOR_MAX || p->actor.len > AUTHOR_MAX ||
            p->mentions.len > MENTIONS_MAX)
            return HUB_EINVAL;
        char meta[KEY_MAX], stream[KEY_MAX], dd[KEY_MAX + 600], ep[HUB_HISTORY_EPOCH_LEN + 1];
        char ts[24], maxlen[16], ttl[16];
        size_t dn = key3(e, dd, KEY_MAX, "d:", p->room);
        /* The dedupe key: room, then the sender's nick as a netstring, then the cmid. */
        dn += (size_t)sprintf(dd + dn, ":%zu:", p->from.len);
        memcpy(dd + dn, p->from.base, p->from.len);
        dn += p->from.len;
        memcpy(dd + dn, p->cmid.base, p->cmid.len);
        dn += p->cmid.len;
        char ai[KEY_MAX], xp[KEY_MAX], rk[4][KEY_MAX], rt[24], al[KEY_MAX];
        struct hub_iov keys[9] = {iov(meta, key3(e, meta, sizeof(meta), "r:", p->room)),
                                  iov(stream, key3(e, stream, sizeof(stream), "s:", p->room)),
                                  iov(dd, dn), iov(ai, key3(e, ai, sizeof(ai), "ai:", p->room))};
        if (restrict_keys(e, p->room, p->actor, rk, keys + 4) != 0)
            return HUB_EINVAL;
        keys[8] = amend_log_key(e, al, p->room);
        engine_random_hex(ep, HUB_HISTORY_EPOCH_LEN);
        snprintf(ts, sizeof(ts), "%lld", (long long)p->ts);
        snprintf(maxlen, sizeof(maxlen), "%u", e->cfg.history_max);
        snprintf(ttl, sizeof(ttl), "%u", e->cfg.dedupe_ttl_s);
        snprintf(rt, sizeof(rt), "%llu", (unsigned long long)p->reply_to);
        struct hub_iov args[14] = {iovs(ep),     iovs(ts),
                                   p->from,      p->text,
                                   p->cmid,      p->client,
                                   iovs(maxlen), iovs(ttl),
                                   iov(ch, chn), p->author,
                                   p->actor,     p->mentions,
                                   iovs(rt),     amend_prefix(e, xp, p->room)};
        q = req_script(sh, R_PUBLISH, S_PUBLISH, 9, keys, 14, args);
    }
    if (q == NULL)
        return HUB_ENOMEM;
    q->cb.publish = cb;
    q->data = data;
    return submit(e, q, find_room(e, p->room));
}

/* Writes P x:<room>: (the prefix of the room's per-message amendment
 * hashes) into buf (KEY_MAX bytes). */
static struct hub_iov amend_prefix(const struct redis_engine *e, char *buf, struct hub_iov room)
{
    size_t n = key3(e, buf, KEY_MAX - 1, "x:", room);
    buf[n++] = ':';
    buf[n] = '\0';
    return iov(buf, n);
}

/* Builds the four restriction keys of actor in room and in the hub: room
 * ban, room mute, hub ban, hub mute (P ban:<room length>:<room><actor>,
 * room length 0 for the hub). Returns 0, or -1 if they do not fit. */
static int restrict_keys(const struct redis_engine *e, struct hub_iov room, struct hub_iov actor,
                         char buf[4][KEY_MAX], struct hub_iov *out)
{
    static const char *const tags[2] = {"ban:", "mute:"};
    for (int i = 0; i < 4; i++) {
        struct hub_iov scope = i < 2 ? room : iov("", 0);
        size_t need = e->prefix_len + 5 + 24 + scope.len + actor.len;
        if (need >= KEY_MAX)
            return -1;
        size_t n = key3(e, buf[i], KEY_MAX, tags[i % 2], iov("", 0));
        n += (size_t)sprintf(buf[i] + n, "%zu:", scope.len);
        if (scope.len > 0)
            memcpy(buf[i] + n, scope.base, scope.len);
        n += scope.len;
        if (actor.len > 0)
            memcpy(buf[i] + n, actor.base, actor.len);
        n += actor.len;
        buf[i][n] = '\0';
        out[i] = iov(buf[i], n);
    }
    return 0;
}

static struct rreq *read_req(struct redis_engine *e, struct shard *sh, int kind,
                             struct hub_iov room, int dir, uint64_t pos, unsigned limit,
                             const struct hub_history_query *qy)
{
    char meta[KEY_MAX], stream[KEY_MAX], ai[KEY_MAX], topic[KEY_MAX], xp[KEY_MAX], rk[4][KEY_MAX];
    char al[KEY_MAX];
    char ep[HUB_HISTORY_EPOCH_LEN + 1], sd[4], sp[24], sl[16], now[24];
    size_t mn = key3(e, meta, sizeof(meta), "r:", room);
    if (mn == 0)
        return NULL;
    struct hub_iov keys[8] = {iov(meta, mn),
                              iov(stream, key3(e, stream, sizeof(stream), "s:", room)),
                              iov(ai, key3(e, ai, sizeof(ai), "ai:", room)),
                              iov(topic, key3(e, topic, sizeof(topic), "t:", room))};
    struct hub_iov viewer = iov("", 0), actor = iov("", 0);
    int nkeys = 3;
    if (qy != NULL) {
        viewer = qy->viewer;
        actor = qy->actor;
        if (restrict_keys(e, room, actor, rk, keys + 4) != 0)
            return NULL;
        nkeys = 8;
    }
    engine_random_hex(ep, HUB_HISTORY_EPOCH_LEN);
    snprintf(sd, sizeof(sd), "%d", dir);
    snprintf(sp, sizeof(sp), "%llu", (unsigned long long)pos);
    snprintf(sl, sizeof(sl), "%u", limit);
    snprintf(now, sizeof(now), "%lld", (long long)(qy ? qy->now_ms : 0));
    struct hub_iov args[9] = {iovs(ep),
                              iovs(sd),
                              iovs(sp),
                              iovs(sl),
                              amend_prefix(e, xp, room),
                              viewer,
                              actor,
                              iovs(now),
                              amend_log_key(e, al, room)};
    return req_script(sh, kind, S_READ, nkeys, keys, 9, args);
}

static int redis_read(struct hub_engine *base, struct hub_iov room, int dir, uint64_t pos,
                      unsigned limit, hub_history_read_cb cb, void *data)
{
    struct redis_engine *e = (struct redis_engine *)base;
    struct shard *sh = room_shard(e, room);
    if (e->prefix_len + room.len + 8 > KEY_MAX)
        return HUB_EINVAL;
    struct rreq *q = read_req(e, sh, R_READ, room, dir, pos, limit, NULL);
    if (q == NULL)
        return HUB_ENOMEM;
    q->cb.read = cb;
    q->data = data;
    return submit(e, q, find_room(e, room));
}

static int redis_query(struct hub_engine *base, struct hub_iov room,
                       const struct hub_history_query *qy, hub_history_read_cb cb, void *data)
{
    struct redis_engine *e = (struct redis_engine *)base;
    struct shard *sh = room_shard(e, room);
    if (qy->dir < HUB_HISTORY_LATEST || qy->dir > HUB_HISTORY_AFTER ||
        qy->viewer.len > AUTHOR_MAX || qy->actor.len > AUTHOR_MAX ||
        e->prefix_len + room.len + 8 > KEY_MAX)
        return HUB_EINVAL;
    struct rreq *q = read_req(e, sh, R_QUERY, room, qy->dir, qy->pos, qy->limit, qy);
    if (q == NULL)
        return HUB_ENOMEM;
    q->cb.read = cb;
    q->data = data;
    return submit(e, q, find_room(e, room));
}

/* Completion of an amendment: the script's {"ok", changed, edited_ts,
 * count, author, from} or its refusal. */
static void amend_done(struct rreq *q, int err, const redisReply *r)
{
    struct hub_history_amended res = {0};
    if (err == 0 && (r->type != REDIS_REPLY_ARRAY || r->elements < 1))
        err = HUB_EAGAIN;
    if (err == 0) {
        struct hub_iov st = reply_iov(r->element[0]);
        if (hub_iov_eq_ci(st, "noent"))
            err = HUB_ENOENT;
        else if (hub_iov_eq_ci(st, "perm"))
            err = HUB_EPERM;
        else if (hub_iov_eq_ci(st, "limit"))
            err = HUB_ELIMIT;
        else if (!hub_iov_eq_ci(st, "ok") || r->elements < 6)
            err = HUB_EAGAIN;
    }
    if (err == 0) {
        uint64_t changed = 0, count = 0;
        reply_u64(r->element[1], &changed);
        if (reply_i64(r->element[2], &res.edited_ts) != 0)
            res.edited_ts = 0;
        reply_u64(r->element[3], &count);
        res.changed = changed != 0;
        res.count = count > UINT32_MAX ? UINT32_MAX : (uint32_t)count;
        res.author = reply_iov(r->element[4]);
        res.from = reply_iov(r->element[5]);
    }
    q->cb.amend(q->data, err, err ? NULL : &res);
}

static int redis_amend(struct hub_engine *base, const struct hub_history_amend *a,
                       struct hub_iov nick, hub_engine_amend_cb cb, void *data)
{
    struct redis_engine *e = (struct redis_engine *)base;
    if (a->kind < HUB_AMEND_EDIT || a->kind > HUB_AMEND_UNREACT || a->offset == 0 ||
        a->who.len > AUTHOR_MAX || nick.len > HUB_ENGINE_NICK_MAX ||
        e->prefix_len + a->room.len + 32 > KEY_MAX)
        return HUB_EINVAL;
    if (a->kind == HUB_AMEND_EDIT && (a->text.len == 0 || a->text.len > TEXT_MAX))
        return HUB_EINVAL;
    if ((a->kind == HUB_AMEND_REACT || a->kind == HUB_AMEND_UNREACT) &&
        (a->emoji.len == 0 || a->emoji.len > HUB_HISTORY_EMOJI_MAX || a->who.len == 0))
        return HUB_EINVAL;
    struct shard *sh = room_shard(e, a->room);
    char meta[KEY_MAX], stream[KEY_MAX], ai[KEY_MAX], xk[KEY_MAX], ch[KEY_MAX], al[KEY_MAX];
    char off[24], kind[4], ts[24], win[24], maxe[16], loglen[16];
    struct hub_iov xp = amend_prefix(e, xk, a->room);
    size_t xn = xp.len + (size_t)sprintf(xk + xp.len, "%llu", (unsigned long long)a->offset);
    struct hub_iov keys[5] = {iov(meta, key3(e, meta, sizeof(meta), "r:", a->room)),
                              iov(stream, key3(e, stream, sizeof(stream), "s:", a->room)),
                              iov(ai, key3(e, ai, sizeof(ai), "ai:", a->room)), iov(xk, xn),
                              amend_log_key(e, al, a->room)};
    snprintf(loglen, sizeof(loglen), "%u", e->cfg.history_max);
    snprintf(off, sizeof(off), "%llu", (unsigned long long)a->offset);
    snprintf(kind, sizeof(kind), "%d", a->kind);
    snprintf(ts, sizeof(ts), "%lld", (long long)a->ts);
    snprintf(win, sizeof(win), "%lld",
             (long long)(a->window_ms > 0 ? a->window_ms : HUB_HISTORY_EDIT_WINDOW_MS));
    snprintf(maxe, sizeof(maxe), "%u", a->max_emoji ? a->max_emoji : HUB_HISTORY_REACTIONS_MAX);
    struct hub_iov args[12] = {iovs(off),
                               iovs(kind),
                               a->who,
                               iovs(a->moderator ? "1" : "0"),
                               a->kind == HUB_AMEND_EDIT ? a->text : iov("", 0),
                               a->kind >= HUB_AMEND_REACT ? a->emoji : iov("", 0),
                               iovs(ts),
                               iovs(win),
                               iovs(maxe),
                               nick,
                               iov(ch, key3(e, ch, sizeof(ch), "c:", a->room)),
                               iovs(loglen)};
    struct rreq *q = req_script(sh, R_AMEND, S_AMEND, 5, keys, 12, args);
    if (q == NULL)
        return HUB_ENOMEM;
    q->cb.amend = cb;
    q->data = data;
    return submit(e, q, find_room(e, a->room));
}

static int redis_search(struct hub_engine *base, struct hub_iov room, struct hub_iov qtext,
                        uint64_t before, unsigned limit, hub_history_search_cb cb, void *data)
{
    struct redis_engine *e = (struct redis_engine *)base;
    if (qtext.len == 0 || qtext.len > SEARCH_Q_MAX || e->prefix_len + room.len + 8 > KEY_MAX)
        return HUB_EINVAL;
    struct shard *sh = room_shard(e, room);
    char meta[KEY_MAX], stream[KEY_MAX], ai[KEY_MAX], xp[KEY_MAX], sb[24], sl[16], cap[16];
    struct hub_iov keys[3] = {iov(meta, key3(e, meta, sizeof(meta), "r:", room)),
                              iov(stream, key3(e, stream, sizeof(stream), "s:", room)),
                              iov(ai, key3(e, ai, sizeof(ai), "ai:", room))};
    snprintf(sb, sizeof(sb), "%llu", (unsigned long long)before);
    snprintf(sl, sizeof(sl), "%u", limit);
    /* The whole stream: MAXLEN ~ keeps up to a node of entries more. */
    snprintf(cap, sizeof(cap), "%u", e->cfg.history_max + e->cfg.history_max / 4 + 200);
    struct hub_iov args[5] = {iovs(sb), iovs(sl), iovs(cap), amend_prefix(e, xp, room), qtext};
    struct rreq *q = req_script(sh, R_SEARCH, S_SEARCH, 3, keys, 5, args);
    if (q == NULL)
        return HUB_ENOMEM;
    q->cb.search = cb;
    q->data = data;
    return submit(e, q, find_room(e, room));
}

static void done_part(struct done_agg *a, int err)
{
    if (err != 0 && a->err == 0)
        a->err = err;
    if (--a->waiting > 0)
        return;
    if (a->cb != NULL)
        a->cb(a->data, a->err);
    free(a);
}

/* Sends one R_DONE request per shard in qs (all ready), completing a. */
static int send_parts(struct redis_engine *e, struct rreq **qs, uint32_t n, struct done_agg *a)
{
    for (uint32_t i = 0; i < n; i++)
        if (qs[i] == NULL) {
            for (uint32_t k = 0; k < n; k++)
                if (qs[k] != NULL)
                    req_free(qs[k]);
            free(a);
            return HUB_ENOMEM;
        }
    for (uint32_t i = 0; i < n; i++) {
        struct rconn *c = &qs[i]->sh->cmd;
        if (!shard_ready(qs[i]->sh) || c->inflight + qs[i]->sh->held >= e->cfg.max_inflight) {
            e->st.dropped++;
            for (uint32_t k = 0; k < n; k++)
                req_free(qs[k]);
            free(a);
            return HUB_EAGAIN;
        }
    }
    a->waiting = n;
    for (uint32_t i = 0; i < n; i++) {
        qs[i]->dagg = a;
        if (conn_send(&qs[i]->sh->cmd, qs[i]) != 0) {
            e->st.dropped++;
            on_reply(NULL, NULL, qs[i]);
        }
    }
    return 0;
}

static int redis_restrict(struct hub_engine *base, const struct hub_history_restrict *r,
                          hub_engine_done_cb cb, void *data)
{
    struct redis_engine *e = (struct redis_engine *)base;
    if ((r->kind != HUB_RESTRICT_BAN && r->kind != HUB_RESTRICT_MUTE) || r->actor.len == 0 ||
        r->actor.len > AUTHOR_MAX || r->until_ms < 0)
        return HUB_EINVAL;
    char rk[4][KEY_MAX], until[24], exp[24] = "";
    struct hub_iov keys[4];
    if (restrict_keys(e, r->room, r->actor, rk, keys) != 0)
        return HUB_EINVAL;
    struct hub_iov key = keys[(r->room.len == 0 ? 2 : 0) + (r->kind == HUB_RESTRICT_MUTE)];
    snprintf(until, sizeof(until), "%lld", (long long)r->until_ms);
    if (r->until_ms != 0 && r->until_ms != INT64_MAX &&
        r->until_ms < INT64_MAX - RESTRICT_SLACK_MS) {
        /* Relative to the restriction's own clock (ts, else this host's),
         * so that Redis's clock only matters by the slack. */
        int64_t t0 = r->ts > 0 ? r->ts : (int64_t)time(NULL) * 1000;
        int64_t ttl = r->until_ms - t0;
        if (ttl < 0)
            ttl = 0;
        snprintf(exp, sizeof(exp), "%lld", (long long)(ttl + RESTRICT_SLACK_MS));
    }
    char now[24];
    snprintf(now, sizeof(now), "%lld", (long long)(r->ts > 0 ? r->ts : (int64_t)time(NULL) * 1000));
    struct hub_iov args[4] = {iovs(until), iovs(exp),
                              iov(key.base + e->prefix_len, key.len - e->prefix_len), iovs(now)};
    char hr[KEY_MAX];
    struct hub_iov hkeys[2] = {key, iov(hr, key3(e, hr, sizeof(hr), "hr", iov("", 0)))};
    struct done_agg *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return HUB_ENOMEM;
    a->cb = cb;
    a->data = data;
    struct rreq *qs[HUB_ENGINE_MAX_SHARDS];
    uint32_t n = 0;
    if (r->room.len > 0) {
        /* A room's restriction lives with the room, where its publishes
         * are sequenced. */
        qs[n++] = req_script(room_shard(e, r->room), R_DONE, S_RESTRICT, 1, &key, 4, args);
    } else {
        /* A hub-wide one is written to every shard, so that every room's
         * publish script checks it atomically, in the same round trip. */
        for (uint32_t i = 0; i < e->nshards; i++)
            qs[n++] = req_script(&e->shards[i], R_DONE, S_RESTRICT, 2, hkeys, 4, args);
        e->hub_gen++;
    }
    if (r->room.len > 0) {
        /* Sent like the room's other requests (held behind its subscription). */
        if (qs[0] == NULL) {
            free(a);
            return HUB_ENOMEM;
        }
        a->waiting = 1;
        qs[0]->dagg = a;
        int rc = submit(e, qs[0], find_room(e, r->room));
        if (rc != 0)
            free(a);
        return rc;
    }
    return send_parts(e, qs, n, a);
}

static int redis_set_topic(struct hub_engine *base, struct hub_iov room, struct hub_iov topic,
                           hub_engine_done_cb cb, void *data)
{
    struct redis_engine *e = (struct redis_engine *)base;
    if (topic.len > HUB_HISTORY_TOPIC_MAX || e->prefix_len + room.len + 8 > KEY_MAX)
        return HUB_EINVAL;
    struct shard *sh = room_shard(e, room);
    char tk[KEY_MAX];
    size_t tn = key3(e, tk, sizeof(tk), "t:", room);
    const char *argv[3] = {topic.len ? "SET" : "DEL", tk, topic.base ? topic.base : ""};
    size_t lens[3] = {3, tn, topic.len};
    struct rreq *q = req_new(sh, R_DONE, -1, topic.len ? 3 : 2, argv, lens);
    struct done_agg *a = calloc(1, sizeof(*a));
    if (q == NULL || a == NULL) {
        if (q != NULL)
            req_free(q);
        free(a);
        return HUB_ENOMEM;
    }
    a->cb = cb;
    a->data = data;
    a->waiting = 1;
    q->dagg = a;
    int rc = submit(e, q, find_room(e, room));
    if (rc != 0)
        free(a);
    return rc;
}

static int redis_control(struct hub_engine *base, const struct hub_engine_control *c)
{
    struct redis_engine *e = (struct redis_engine *)base;
    if (c->kind < HUB_CONTROL_KICK || c->kind > HUB_CONTROL_MUTE ||
        c->target.len > CONTROL_FIELD_MAX || c->room.len > CONTROL_FIELD_MAX ||
        c->text.len > CONTROL_FIELD_MAX || c->by.len > CONTROL_FIELD_MAX)
        return HUB_EINVAL;
    char ch[KEY_MAX], kind[4], until[24];
    snprintf(kind, sizeof(kind), "%d", c->kind);
    snprintf(until, sizeof(until), "%lld", (long long)(c->until_ms < 0 ? 0 : c->until_ms));
    size_t cap = c->target.len + c->room.len + c->text.len + c->by.len + 128;
    char *pl = malloc(cap);
    if (pl == NULL)
        return HUB_ENOMEM;
    size_t w = 0;
    pl[w++] = 'k';
    ns_put(pl, &w, iovs(kind));
    ns_put(pl, &w, c->target);
    ns_put(pl, &w, c->room);
    ns_put(pl, &w, c->text);
    ns_put(pl, &w, c->by);
    ns_put(pl, &w, iovs(until));
    const char *argv[3] = {"PUBLISH", ch, pl};
    size_t lens[3] = {7, key3(e, ch, sizeof(ch), "ctl", iov("", 0)), w};
    struct rreq *q = req_new(&e->shards[0], R_FIRE, -1, 3, argv, lens);
    free(pl);
    if (q == NULL)
        return HUB_ENOMEM;
    return submit(e, q, NULL);
}

static void send_join_script(struct shard *sh, struct hub_iov room, struct hub_iov client,
                             struct hub_iov nick, int silent, struct rreq **out)
{
    struct redis_engine *e = sh->e;
    char mk[KEY_MAX], nm[KEY_MAX], z[KEY_MAX], ch[KEY_MAX];
    struct hub_iov keys[3] = {iov(mk, key3(e, mk, sizeof(mk), "m:", room)),
                              iov(nm, key3(e, nm, sizeof(nm), "nm:", iovs(e->base.node_id))),
                              iov(z, key3(e, z, sizeof(z), "z", iov("", 0)))};
    struct hub_iov args[6] = {client,
                              iovs(e->base.node_id),
                              nick,
                              room,
                              iov(ch, key3(e, ch, sizeof(ch), "c:", room)),
                              iovs(silent ? "1" : "0")};
    *out = req_script(sh, R_FIRE, S_JOIN, 3, keys, 6, args);
}

/* Builds "<room length>:<room><client>" into buf. */
static size_t lmember_key(char *buf, struct hub_iov room, struct hub_iov client, size_t *room_off)
{
    int n = sprintf(buf, "%zu:", room.len);
    *room_off = (size_t)n;
    memcpy(buf + n, room.base, room.len);
    memcpy(buf + n + room.len, client.base, client.len);
    buf[n + room.len + client.len] = '\0';
    return (size_t)n + room.len + client.len;
}

static struct lmember *find_lmember(struct redis_engine *e, struct hub_iov room,
                                    struct hub_iov client)
{
    char buf[2 * 256 + 16];
    size_t off, n = lmember_key(buf, room, client, &off);
    struct engine_map_node *x = engine_map_find(&e->members, buf, n, hub_hash(buf, n, 0));
    return x ? HUB_CONTAINER_OF(x, struct lmember, node) : NULL;
}

static int redis_join(struct hub_engine *base, struct hub_iov room, struct hub_iov client,
                      struct hub_iov nick)
{
    struct redis_engine *e = (struct redis_engine *)base;
    struct shard *sh = room_shard(e, room);
    if (!shard_ready(sh)) {
        e->st.dropped++;
        return HUB_EAGAIN;
    }
    /* Remember it first: a reconnect writes it again. */
    struct lmember *m = find_lmember(e, room, client);
    char *nk = engine_strdup(nick);
    if (nk == NULL)
        return HUB_ENOMEM;
    if (m == NULL) {
        m = malloc(sizeof(*m) + room.len + client.len + 24);
        if (m == NULL) {
            free(nk);
            return HUB_ENOMEM;
        }
        m->key_len = lmember_key(m->key, room, client, &m->room_off);
        m->room_len = room.len;
        m->nick = NULL;
        m->node.key = m->key;
        m->node.klen = m->key_len;
        m->node.hash = hub_hash(m->key, m->key_len, 0);
        if (engine_map_insert(&e->members, &m->node) != 0) {
            free(m);
            free(nk);
            return HUB_ENOMEM;
        }
    }
    free(m->nick);
    m->nick = nk;
    struct rreq *q = NULL;
    send_join_script(sh, room, client, nick, 0, &q);
    if (q == NULL)
        return HUB_ENOMEM;
    return submit(e, q, find_room(e, room));
}

static int redis_leave(struct hub_engine *base, struct hub_iov room, struct hub_iov client)
{
    struct redis_engine *e = (struct redis_engine *)base;
    struct lmember *m = find_lmember(e, room, client);
    if (m != NULL) {
        engine_map_remove(&e->members, &m->node);
        free(m->nick);
        free(m);
    }
    struct shard *sh = room_shard(e, room);
    char mk[KEY_MAX], z[KEY_MAX], ch[KEY_MAX];
    struct hub_iov keys[2] = {iov(mk, key3(e, mk, sizeof(mk), "m:", room)),
                              iov(z, key3(e, z, sizeof(z), "z", iov("", 0)))};
    struct hub_iov args[4] = {client, room, iov(ch, key3(e, ch, sizeof(ch), "c:", room)),
                              iov(e->prefix, e->prefix_len)};
    struct rreq *q = req_script(sh, R_FIRE, S_LEAVE, 2, keys, 4, args);
    if (q == NULL)
        return HUB_ENOMEM;
    /* If this fails the member stays in Redis until this node's lease
     * lapses or it reconnects (the reassert no longer lists it, and the
     * self-clean at start removes it after a restart). */
    return submit(e, q, find_room(e, room));
}

static int redis_renick(struct hub_engine *base, struct hub_iov room, struct hub_iov client,
                        struct hub_iov old_nick, struct hub_iov nick)
{
    struct redis_engine *e = (struct redis_engine *)base;
    struct lmember *m = find_lmember(e, room, client);
    if (m != NULL) {
        char *nk = engine_strdup(nick);
        if (nk == NULL)
            return HUB_ENOMEM;
        free(m->nick);
        m->nick = nk;
    }
    struct shard *sh = room_shard(e, room);
    char mk[KEY_MAX], ch[KEY_MAX];
    struct hub_iov keys[1] = {iov(mk, key3(e, mk, sizeof(mk), "m:", room))};
    struct hub_iov args[5] = {client, iovs(e->base.node_id), nick, old_nick,
                              iov(ch, key3(e, ch, sizeof(ch), "c:", room))};
    struct rreq *q = req_script(sh, R_FIRE, S_RENICK, 1, keys, 5, args);
    if (q == NULL)
        return HUB_ENOMEM;
    return submit(e, q, find_room(e, room));
}

static int redis_members(struct hub_engine *base, struct hub_iov room, unsigned limit,
                         hub_engine_members_cb cb, void *data)
{
    struct redis_engine *e = (struct redis_engine *)base;
    struct shard *sh = room_shard(e, room);
    char mk[KEY_MAX], sl[16];
    snprintf(sl, sizeof(sl), "%u", limit);
    struct hub_iov keys[1] = {iov(mk, key3(e, mk, sizeof(mk), "m:", room))};
    struct hub_iov args[1] = {iovs(sl)};
    struct rreq *q = req_script(sh, R_MEMBERS, S_MEMBERS, 1, keys, 1, args);
    if (q == NULL)
        return HUB_ENOMEM;
    q->cb.members = cb;
    q->data = data;
    return submit(e, q, find_room(e, room));
}

static int by_members_desc(const void *x, const void *y)
{
    const struct hub_engine_room_count *a = x, *b = y;
    return a->members < b->members ? 1 : a->members > b->members ? -1 : 0;
}

static void rooms_part(struct redis_engine *e, struct rooms_agg *a, const redisReply *r)
{
    (void)e;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        if (a->err == 0)
            a->err = HUB_EAGAIN;
    } else {
        for (size_t i = 0; i + 1 < r->elements; i += 2) {
            if (a->n == a->cap) {
                size_t cap = a->cap ? a->cap * 2 : 16;
                struct hub_engine_room_count *l = realloc(a->list, cap * sizeof(*l));
                if (l == NULL) {
                    a->err = HUB_ENOMEM;
                    break;
                }
                a->list = l;
                a->cap = cap;
            }
            struct hub_iov name = reply_iov(r->element[i]);
            char *s = engine_strdup(name);
            uint64_t n = 0;
            struct hub_iov score = reply_iov(r->element[i + 1]);
            int bad = 0;
            n = iov_u64(score, &bad);
            if (s == NULL) {
                a->err = HUB_ENOMEM;
                break;
            }
            a->list[a->n].room = iov(s, name.len);
            a->list[a->n++].members = bad ? 0 : n;
        }
    }
    if (--a->waiting > 0)
        return;
    if (a->err == 0) {
        qsort(a->list, a->n, sizeof(*a->list), by_members_desc);
        a->cb(a->data, 0, a->list, a->n < a->limit ? a->n : a->limit);
    } else {
        a->cb(a->data, a->err, NULL, 0);
    }
    for (size_t i = 0; i < a->n; i++)
        free((char *)a->list[i].room.base);
    free(a->list);
    free(a);
}

static int redis_rooms(struct hub_engine *base, unsigned limit, hub_engine_rooms_cb cb, void *data)
{
    struct redis_engine *e = (struct redis_engine *)base;
    for (uint32_t i = 0; i < e->nshards; i++)
        if (!shard_ready(&e->shards[i])) {
            e->st.dropped++;
            return HUB_EAGAIN;
        }
    struct rooms_agg *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return HUB_ENOMEM;
    a->limit = limit;
    a->cb = cb;
    a->data = data;
    struct rreq *qs[HUB_ENGINE_MAX_SHARDS];
    char z[KEY_MAX], stop[16];
    size_t zn = key3(e, z, sizeof(z), "z", iov("", 0));
    snprintf(stop, sizeof(stop), "%d", limit == 0 ? 0 : (int)limit - 1);
    for (uint32_t i = 0; i < e->nshards; i++) {
        const char *argv[5] = {"ZREVRANGE", z, "0", stop, "WITHSCORES"};
        size_t lens[5] = {9, zn, 1, strlen(stop), 10};
        qs[i] = req_new(&e->shards[i], R_ROOMS, -1, 5, argv, lens);
        if (qs[i] == NULL) {
            while (i-- > 0)
                req_free(qs[i]);
            free(a);
            return HUB_ENOMEM;
        }
        qs[i]->agg = a;
    }
    if (limit == 0) {
        for (uint32_t i = 0; i < e->nshards; i++)
            req_free(qs[i]);
        free(a);
        cb(data, 0, NULL, 0);
        return 0;
    }
    /* Every shard is ready: from here on each part completes the aggregate. */
    a->waiting = e->nshards;
    for (uint32_t i = 0; i < e->nshards; i++)
        if (conn_send(&e->shards[i].cmd, qs[i]) != 0) {
            on_reply(NULL, NULL, qs[i]);
        }
    return 0;
}

static struct lnick *find_lnick(struct redis_engine *e, const char *fold, size_t len)
{
    struct engine_map_node *x = engine_map_find(&e->nicks, fold, len, hub_hash(fold, len, 0));
    return x ? HUB_CONTAINER_OF(x, struct lnick, node) : NULL;
}

static void send_claim(struct shard *sh, struct hub_iov nick, struct hub_iov client,
                       struct rreq **out)
{
    struct redis_engine *e = sh->e;
    char fold[256], nk[KEY_MAX], set[KEY_MAX];
    engine_fold(nick, fold);
    struct hub_iov keys[2] = {iov(nk, key3(e, nk, sizeof(nk), "k:", iov(fold, nick.len))),
                              iov(set, key3(e, set, sizeof(set), "nk:", iovs(e->base.node_id)))};
    struct hub_iov args[4] = {iovs(e->base.node_id), client, nick, iov(fold, nick.len)};
    *out = req_script(sh, R_CLAIM, S_CLAIM, 2, keys, 4, args);
}

/* Completion of a caller's claim: record it locally on success. */
struct claim_ctx {
    struct redis_engine *e;
    hub_engine_done_cb cb;
    void *data;
    size_t nick_len, client_len;
    char bytes[]; /* nick, client */
};

static void claim_done(void *data, int err)
{
    struct claim_ctx *cc = data;
    struct redis_engine *e = cc->e;
    if (err == 0) {
        struct hub_iov nick = iov(cc->bytes, cc->nick_len);
        struct hub_iov client = iov(cc->bytes + cc->nick_len, cc->client_len);
        char fold[256];
        engine_fold(nick, fold);
        struct lnick *k = find_lnick(e, fold, nick.len);
        char *cl = engine_strdup(client), *nk = engine_strdup(nick);
        if (cl != NULL && nk != NULL && k == NULL) {
            k = malloc(sizeof(*k) + nick.len + 1);
            if (k != NULL) {
                memcpy(k->fold, fold, nick.len + 1);
                k->node.key = k->fold;
                k->node.klen = nick.len;
                k->node.hash = hub_hash(fold, nick.len, 0);
                k->client = k->nick = NULL;
                if (engine_map_insert(&e->nicks, &k->node) != 0) {
                    free(k);
                    k = NULL;
                }
            }
        }
        if (k != NULL && cl != NULL && nk != NULL) {
            free(k->client);
            free(k->nick);
            k->client = cl;
            k->nick = nk;
        } else {
            free(cl);
            free(nk);
        }
    }
    cc->cb(cc->data, err);
    free(cc);
}

static int redis_claim_nick(struct hub_engine *base, struct hub_iov nick, struct hub_iov client,
                            hub_engine_done_cb cb, void *data)
{
    struct redis_engine *e = (struct redis_engine *)base;
    char fold[256];
    engine_fold(nick, fold);
    struct shard *sh = &e->shards[engine_shard_of(iov(fold, nick.len), e->nshards)];
    struct claim_ctx *cc = malloc(sizeof(*cc) + nick.len + client.len);
    if (cc == NULL)
        return HUB_ENOMEM;
    cc->e = e;
    cc->cb = cb;
    cc->data = data;
    cc->nick_len = nick.len;
    cc->client_len = client.len;
    memcpy(cc->bytes, nick.base, nick.len);
    memcpy(cc->bytes + nick.len, client.base, client.len);
    struct rreq *q = NULL;
    send_claim(sh, nick, client, &q);
    if (q == NULL) {
        free(cc);
        return HUB_ENOMEM;
    }
    q->cb.done = claim_done;
    q->data = cc;
    int rc = submit(e, q, NULL);
    if (rc != 0)
        free(cc);
    return rc;
}

static void redis_release_nick(struct hub_engine *base, struct hub_iov nick, struct hub_iov client)
{
    struct redis_engine *e = (struct redis_engine *)base;
    char fold[256], nk[KEY_MAX], set[KEY_MAX];
    engine_fold(nick, fold);
    struct lnick *k = find_lnick(e, fold, nick.len);
    if (k != NULL && strlen(k->client) == client.len &&
        memcmp(k->client, client.base, client.len) == 0) {
        engine_map_remove(&e->nicks, &k->node);
        free(k->client);
        free(k->nick);
        free(k);
    }
    struct shard *sh = &e->shards[engine_shard_of(iov(fold, nick.len), e->nshards)];
    struct hub_iov keys[2] = {iov(nk, key3(e, nk, sizeof(nk), "k:", iov(fold, nick.len))),
                              iov(set, key3(e, set, sizeof(set), "nk:", iovs(e->base.node_id)))};
    struct hub_iov args[3] = {iovs(e->base.node_id), client, iov(fold, nick.len)};
    struct rreq *q = req_script(sh, R_FIRE, S_RELEASE, 2, keys, 3, args);
    if (q != NULL)
        submit(e, q, NULL);
}

static int redis_typing(struct hub_engine *base, struct hub_iov room, struct hub_iov client,
                        struct hub_iov nick)
{
    struct redis_engine *e = (struct redis_engine *)base;
    struct shard *sh = room_shard(e, room);
    char ch[KEY_MAX], pl[600];
    size_t w = 0;
    pl[w++] = 'y';
    ns_put(pl, &w, client);
    ns_put(pl, &w, nick);
    const char *argv[3] = {"PUBLISH", ch, pl};
    size_t lens[3] = {7, key3(e, ch, sizeof(ch), "c:", room), w};
    struct rreq *q = req_new(sh, R_FIRE, -1, 3, argv, lens);
    if (q == NULL)
        return HUB_ENOMEM;
    return submit(e, q, NULL);
}

static int redis_invite(struct hub_engine *base, struct hub_iov to_nick, struct hub_iov room,
                        struct hub_iov from, hub_engine_done_cb cb, void *data)
{
    struct redis_engine *e = (struct redis_engine *)base;
    char fold[256], nk[KEY_MAX];
    engine_fold(to_nick, fold);
    struct shard *sh = &e->shards[engine_shard_of(iov(fold, to_nick.len), e->nshards)];
    struct hub_iov keys[1] = {iov(nk, key3(e, nk, sizeof(nk), "k:", iov(fold, to_nick.len)))};
    struct hub_iov args[3] = {room, from, iov(e->prefix, e->prefix_len)};
    struct rreq *q = req_script(sh, R_INVITE, S_INVITE, 1, keys, 3, args);
    if (q == NULL)
        return HUB_ENOMEM;
    q->cb.done = cb;
    q->data = data;
    return submit(e, q, NULL);
}

static void redis_stats(struct hub_engine *base, struct hub_engine_stats *st)
{
    struct redis_engine *e = (struct redis_engine *)base;
    *st = e->st;
    st->kind = "redis";
    st->reason = e->reason;
    st->shards = e->nshards;
    uint64_t q = 0;
    for (uint32_t i = 0; i < e->nshards; i++)
        q += e->shards[i].cmd.inflight + e->shards[i].held;
    st->queue = q;
    st->rooms = e->rooms.n;
    e->st.rtt_max_us = 0;
}

static const struct engine_ops redis_ops = {
    .close = redis_close,
    .free = redis_free,
    .subscribe = redis_subscribe,
    .unsubscribe = redis_unsubscribe,
    .publish = redis_publish,
    .read = redis_read,
    .join = redis_join,
    .leave = redis_leave,
    .renick = redis_renick,
    .members = redis_members,
    .rooms = redis_rooms,
    .claim_nick = redis_claim_nick,
    .release_nick = redis_release_nick,
    .typing = redis_typing,
    .invite = redis_invite,
    .stats = redis_stats,
    .query = redis_query,
    .amend = redis_amend,
    .search = redis_search,
    .set_restriction = redis_restrict,
    .set_topic = redis_set_topic,
    .control = redis_control,
};
