/*
 * chat_join.c: joining and leaving rooms, and the join/resume state machine.
 *
 * A join (or a hello resume entry) joins the room at once (the first local
 * member subscribes it), asks the engine for the room's members on every
 * node, then reads its history; the reply is written by the read's
 * completion. The msg pushes that race the read are reconciled with it by
 * offset (chat_sub). A hello's entries are keys of one object, written as
 * each completes; with a local store, whose completions come in request
 * order, a refused entry still waits its turn behind the reads ahead of it
 * through a barrier.
 */
#include "chat_int.h"
#include "hub/conn.h"
#include "hub/engine.h"
#include "hub/history.h"
#include "hub/log.h"
#include "hub/metrics.h"
#include "hub/utf8.h"
#include "hub/ws.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Joins cl to a room; the engine tells the others. Returns as
 * hub_rooms_join, or the engine's HUB_EAGAIN/HUB_ENOMEM for a JSON client. */
int chat_join_room(struct hub_chat_client *cl, struct hub_iov name, struct hub_room **out)
{
    struct hub_chat *chat = cl->chat;
    struct hub_room *room;
    int rc = hub_rooms_join(chat->rooms, &cl->member, name.base, name.len, &room);
    if (rc != 0)
        return rc;
    int first = hub_room_size(room) == 1;
    if (first) {
        /* The room's first member on this node: this node wants its events
         * now (before the join's history read, which the engine orders
         * behind the subscription). */
        rc = hub_engine_subscribe(chat->engine, name);
        if (rc != 0)
            goto fail_leave;
        /* Its history must not be evicted while anyone is in it. Failing
         * that only leaves the room unprotected, so the join goes on. */
        if (chat->cfg.history != NULL && hub_history_hold(chat->cfg.history, name, 1) != 0)
            hub_log_debug("history: could not hold room %.*s", (int)name.len, name.base);
    }
    char id[CHAT_ID_MAX];
    struct hub_iov cid = {id, chat_client_id(cl, id)};
    rc = hub_engine_join(chat->engine, name, cid, (struct hub_iov){cl->nick, cl->nick_len});
    if (rc != 0 && cl->mode == HUB_CHAT_JSON)
        goto fail_unhold;
    /* A raw client stays in its room without presence: it has no way to be
     * told, and its lines still go through (or are counted as dropped). */
    if (out != NULL)
        *out = room;
    return 0;

fail_unhold:
    if (first && chat->cfg.history != NULL)
        hub_history_hold(chat->cfg.history, name, 0);
    if (first)
        hub_engine_unsubscribe(chat->engine, name);
fail_leave:
    hub_rooms_leave(chat->rooms, &cl->member, room);
    return rc;
}

/* Tells the others cl is leaving, then removes it. */
struct chat_sub *chat_sub_find(const struct hub_chat_client *cl, const struct hub_room *room)
{
    for (uint32_t i = 0; i < cl->nsubs; i++)
        if (cl->subs[i].room == room)
            return &cl->subs[i];
    return NULL;
}

void chat_sub_hold(struct chat_sub *s, uint64_t offset, struct hub_shared *frame)
{
    if (s->nheld == s->capheld) {
        /* Bounded: with an ordered store everything held is at or below
         * the reply's position anyway (the reply carries it). */
        uint32_t cap = s->capheld ? s->capheld * 2 : 8;
        struct chat_held *a = cap <= CHAT_HELD_MAX ? realloc(s->held, cap * sizeof(*a)) : NULL;
        if (a == NULL)
            return;
        s->held = a;
        s->capheld = cap;
    }
    s->held[s->nheld].offset = offset;
    s->held[s->nheld].frame = hub_shared_ref(frame);
    s->nheld++;
}

void chat_sub_remove(struct hub_chat_client *cl, const struct hub_room *room)
{
    struct chat_sub *s = chat_sub_find(cl, room);
    if (s == NULL)
        return;
    for (uint32_t i = 0; i < s->nheld; i++)
        hub_shared_unref(s->held[i].frame);
    free(s->held);
    *s = cl->subs[--cl->nsubs];
    if (cl->nsubs == 0) {
        free(cl->subs); /* joins are rare: idle clients keep no array */
        cl->subs = NULL;
    }
}

static int sub_add(struct hub_chat_client *cl, struct hub_room *room, struct hello_state *hello)
{
    struct chat_sub *a = realloc(cl->subs, (cl->nsubs + 1) * sizeof(*a));
    if (a == NULL)
        return HUB_ENOMEM;
    cl->subs = a;
    memset(&a[cl->nsubs], 0, sizeof(*a));
    a[cl->nsubs].room = room;
    a[cl->nsubs].hello = hello;
    a[cl->nsubs].pending = 1;
    cl->nsubs++;
    return 0;
}

/* The reply carrying s's room went out: deliver what was held past it. */
static void sub_release(struct hub_chat_client *cl, struct chat_sub *s)
{
    s->pending = 0;
    for (uint32_t i = 0; i < s->nheld; i++) {
        if (s->held[i].offset > s->delivered_upto && !cl->dead)
            hub_ws_send_frame(cl->ws, s->held[i].frame);
        hub_shared_unref(s->held[i].frame);
    }
    free(s->held);
    s->held = NULL;
    s->nheld = s->capheld = 0;
}

void chat_leave_room(struct hub_chat_client *cl, struct hub_room *room)
{
    chat_sub_remove(cl, room);
    for (uint32_t i = 0; i < cl->ntyping; i++)
        if (cl->typing[i].room == room) {
            cl->typing[i] = cl->typing[--cl->ntyping];
            break;
        }
    chat_remove_member(cl, room);
}

void chat_jw_messages(struct hub_jsonw *b, const struct hub_history_msg *msgs, size_t n)
{
    hub_jsonw_key(b, "messages");
    hub_jsonw_raw(b, "[");
    for (size_t i = 0; i < n; i++) {
        if (i)
            hub_jsonw_raw(b, ",");
        chat_jw_message(b, &msgs[i]);
    }
    hub_jsonw_raw(b, "]");
}

size_t chat_msg_size(const struct hub_history_msg *m)
{
    /* The exact bytes, by writing it: with replies, mentions, edits and
     * reactions there are too many optional fields to count by hand, and a
     * page's bound must stay true. The comma is counted too. */
    struct hub_jsonw w = {0};
    chat_jw_message(&w, m);
    size_t n = hub_jsonw_len(&w) + 1;
    hub_jsonw_free(&w);
    return n;
}

size_t chat_page_bytes(const struct hub_chat_client *cl)
{
    if (cl->chat->cfg.page_bytes > 0)
        return cl->chat->cfg.page_bytes;
    size_t limit = cl->dead ? 0 : hub_ws_conn(cl->ws)->out.limit;
    return limit > 0 ? limit / 4 : CHAT_PAGE_DEFAULT;
}

size_t chat_page_budget(const struct hub_chat_client *cl, size_t *room_left)
{
    size_t page = chat_page_bytes(cl);
    size_t limit = 0, queued = 0;
    if (!cl->dead) {
        const struct hub_conn *c = hub_ws_conn(cl->ws);
        limit = c->out.limit;
        queued = c->out.bytes;
    }
    *room_left = SIZE_MAX;
    if (limit > 0) {
        /* What the output queue can still take, less room for the reply's
         * other fields and for pushes: a reply never closes its reader. */
        size_t space = queued < limit ? limit - queued : 0;
        *room_left = space > CHAT_PAGE_SLACK ? space - CHAT_PAGE_SLACK : 0;
        if (page > *room_left / 2)
            page = *room_left / 2;
    }
    return page;
}

size_t chat_page_fit(const struct hub_history_msg *msgs, size_t n, int newest, size_t budget,
                     size_t one_max, size_t *used)
{
    size_t k = 0, bytes = 0;
    while (k < n) {
        const struct hub_history_msg *m = newest ? &msgs[n - 1 - k] : &msgs[k];
        size_t sz = chat_msg_size(m);
        /* Past the budget only a first message goes, alone, if the
         * output queue can take it. */
        if (bytes + sz > budget && (k > 0 || sz > one_max))
            break;
        bytes += sz;
        k++;
    }
    if (used != NULL)
        *used = bytes;
    return k;
}

void chat_jw_next(struct hub_jsonw *b, const char *dir, uint64_t pos)
{
    hub_jsonw_key(b, "next");
    hub_jsonw_raw(b, "{");
    hub_jsonw_kuint(b, dir, pos);
    hub_jsonw_raw(b, "}");
}

/* Members on every node, as the engine listed them for the join. */
static void chat_jw_members(struct hub_jsonw *b, uint64_t total, const struct hub_engine_member *m,
                            size_t n)
{
    if (total > HUB_CHAT_LIST_MAX) {
        hub_jsonw_kint(b, "count", (long long)total);
        return;
    }
    hub_jsonw_key(b, "members");
    hub_jsonw_raw(b, "[");
    for (size_t i = 0; i < n; i++) {
        hub_jsonw_raw(b, i ? ",{" : "{");
        hub_jsonw_kstr(b, "nick", m[i].nick.base, m[i].nick.len);
        hub_jsonw_kstr(b, "client", m[i].client.base, m[i].client.len);
        hub_jsonw_raw(b, "}");
    }
    hub_jsonw_raw(b, "]");
}

/* Parses a position {"epoch": string, "offset": integer}. Returns 1 if
 * present, 0 if absent (NULL or null), -1 if malformed. */
int chat_parse_since(json_t *since, const char **epoch, size_t *elen, uint64_t *offset)
{
    if (since == NULL || json_is_null(since))
        return 0;
    json_t *e = json_object_get(since, "epoch");
    json_t *o = json_object_get(since, "offset");
    if (!json_is_object(since) || !json_is_string(e) || !json_is_integer(o) ||
        json_integer_value(o) < 0)
        return -1;
    *epoch = json_string_value(e);
    *elen = json_string_length(e);
    *offset = (uint64_t)json_integer_value(o);
    return 1;
}

/* A hello whose reply waits for the history reads of its resumed rooms. */
struct hello_state {
    struct hub_chat_client *cl; /* the client (a reference) */
    struct req_id id;           /* the hello's id */
    struct hub_jsonw b;         /* the reply under construction */
    unsigned outstanding;       /* reads not yet completed */
    int gate;                   /* counted in cl->waiting */
    size_t budget;              /* message bytes the reply may still hold */
    size_t room_left;           /* the most one message alone may take */
    size_t nmsgs;               /* messages in the reply so far */
    int issued;                 /* every read has been requested */
};

/* A join, or one resumed room of a hello, waiting for its history read. */
struct pending_join {
    struct hub_chat_client *cl;            /* the client (a reference) */
    struct req_id id;                      /* the join's id */
    struct hello_state *hello;             /* the hello it belongs to, or NULL */
    int has_since;                         /* the client gave a position */
    uint64_t since;                        /* its offset */
    char epoch[HUB_HISTORY_EPOCH_LEN + 2]; /* its epoch (longer ones cannot match) */
    unsigned history;                      /* messages wanted without a position */
    uint64_t total;                        /* members on all nodes (the engine's answer) */
    struct hub_engine_member *members;     /* owned copy, when total <= HUB_CHAT_LIST_MAX */
    size_t nmembers;                       /* entries in members */
    int gate;                              /* counted in cl->waiting */
    size_t room_len;                       /* length of room */
    char room[];                           /* the room's name */
};

/* A reply counted in cl->waiting is out: the requests behind it go. */
static void ungate(struct hub_chat_client *cl, int *gate)
{
    if (!*gate)
        return;
    *gate = 0;
    cl->waiting--;
    chat_backlog_drain(cl);
}

/* With a multi-node engine a join takes round trips: the requests that
 * follow wait for its reply (cl->waiting), so replies keep request order. */
static void gate_on(struct hub_chat_client *cl, int *gate)
{
    if (cl->chat->id_prefix_len > 0) {
        *gate = 1;
        cl->waiting++;
    }
}

static void chat_hello_finish(struct hello_state *hs)
{
    struct hub_chat_client *cl = hs->cl;
    hub_jsonw_raw(&hs->b, "}}");
    chat_send_json(cl, &hs->b, hs->id);
    for (uint32_t i = 0; i < cl->nsubs; i++)
        if (cl->subs[i].hello == hs) {
            cl->subs[i].hello = NULL;
            sub_release(cl, &cl->subs[i]);
        }
    hub_jsonw_free(&hs->b);
    int gate = hs->gate;
    free(hs);
    ungate(cl, &gate);
    chat_client_unref(cl);
}

/* Announces messages that cannot be delivered: offsets from..to of the
 * current stream ("expired"), or, with to < from, an unknown part of a
 * stream that was reset ("epoch", which carries no range). */
/* A resumed room that was refused on the spot, waiting for its turn in
 * the reply behind the reads requested before it. */
struct hello_refusal {
    struct hello_state *hs; /* the hello */
    const char *code;       /* error code (a static string) */
    const char *message;    /* error message (a static string) */
    char room[];            /* the entry's key */
};

static void jw_refusal(struct hub_jsonw *b, const char *room, const char *code, const char *message)
{
    hub_jsonw_key(b, room);
    hub_jsonw_raw(b, "{");
    hub_jsonw_key(b, "error");
    hub_jsonw_raw(b, "{");
    hub_jsonw_kstr(b, "code", code, strlen(code));
    hub_jsonw_kstr(b, "message", message, strlen(message));
    hub_jsonw_raw(b, "}}");
}

static void refusal_cb(void *data)
{
    struct hello_refusal *r = data;
    struct hello_state *hs = r->hs;
    jw_refusal(&hs->b, r->room, r->code, r->message);
    free(r);
    if (--hs->outstanding == 0 && hs->issued)
        chat_hello_finish(hs);
}

/* Writes a refused entry into the hello reply: at once if nothing is ahead
 * of it, else in order behind the pending reads, through a barrier. */
static void chat_hello_refuse(struct hello_state *hs, const char *room, const char *code,
                              const char *message)
{
    if (hs->outstanding > 0 && hs->cl->chat->cfg.history != NULL) {
        size_t n = strlen(room);
        struct hello_refusal *r = malloc(sizeof(*r) + n + 1);
        if (r != NULL) {
            r->hs = hs;
            r->code = code;
            r->message = message;
            memcpy(r->room, room, n + 1);
            hs->outstanding++;
            if (hub_history_barrier(hs->cl->chat->cfg.history, refusal_cb, r) == 0)
                return;
            hs->outstanding--;
            free(r);
        }
        return; /* out of memory: the entry is left out */
    }
    jw_refusal(&hs->b, room, code, message);
}

static void send_gap(struct hub_chat_client *cl, struct hub_iov room, const char *epoch,
                     uint64_t from, uint64_t to, const char *reason)
{
    struct hub_jsonw g = {0};
    hub_jsonw_raw(&g, "{");
    hub_jsonw_kstr(&g, "t", "gap", 3);
    hub_jsonw_kstr(&g, "room", room.base, room.len);
    hub_jsonw_kstr(&g, "epoch", epoch, strlen(epoch));
    if (to >= from) {
        hub_jsonw_kint(&g, "from", (long long)from);
        hub_jsonw_kint(&g, "to", (long long)to);
    }
    hub_jsonw_kstr(&g, "reason", reason, strlen(reason));
    hub_jsonw_raw(&g, "}");
    chat_send_json(cl, &g, NO_ID);
    hub_jsonw_free(&g);
}

/* Writes a joined room's state (after its name): position, messages and
 * members. Without a resume position the page holds the newest of the
 * history messages asked for; with one, the newest of those after it. Each
 * page is bounded in bytes (chat_page_budget, shared by all the rooms of a
 * hello) and when something is left out the reply says "complete": false
 * and where to continue ("next": {"before": N}); the client pages the rest
 * with history. What cannot be delivered at all is announced with a gap
 * push. */
static void jw_join_state(struct pending_join *pj, struct hub_jsonw *b,
                          const struct hub_history_pos *pos, const struct hub_history_msg *msgs,
                          size_t n)
{
    struct hub_iov name = {pj->room, pj->room_len};
    hub_jsonw_kstr(b, "epoch", pos->epoch, strlen(pos->epoch));
    hub_jsonw_kint(b, "offset", (long long)pos->last);
    if (pos->topic.len > 0)
        hub_jsonw_kstr(b, "topic", pos->topic.base, pos->topic.len);
    size_t skip = n > pj->history ? n - pj->history : 0;
    int reached = 1; /* the read reached back as far as the reply must */
    if (pj->has_since) {
        if (strcmp(pj->epoch, pos->epoch) != 0) {
            /* Another incarnation of the stream: old offsets mean nothing. */
            send_gap(pj->cl, name, pos->epoch, 1, 0, "epoch");
        } else {
            if (pj->since + 1 < pos->first)
                send_gap(pj->cl, name, pos->epoch, pj->since + 1, pos->first - 1, "expired");
            skip = 0;
            while (skip < n && msgs[skip].offset <= pj->since)
                skip++;
            /* More was missed than one read holds: the client pages back. */
            reached = !(n > 0 && msgs[0].offset > pj->since + 1 && msgs[0].offset > pos->first);
        }
    }
    struct hello_state *hs = pj->hello;
    size_t room_left, used;
    size_t budget = chat_page_budget(pj->cl, &room_left);
    if (hs != NULL) {
        budget = hs->budget;
        room_left = hs->room_left;
    }
    /* A read with no messages may hand out msgs == NULL; pointer arithmetic
     * on it is undefined even with a zero offset, so point at an empty array. */
    static const struct hub_history_msg no_msgs[1];
    if (msgs == NULL)
        msgs = no_msgs;
    /* At least one message per reply, so that paging always progresses. */
    size_t one_max = hs == NULL || hs->nmsgs == 0 ? room_left : 0;
    size_t k = chat_page_fit(msgs + skip, n - skip, 1, budget, one_max, &used);
    if (hs != NULL) {
        hs->budget = used < hs->budget ? hs->budget - used : 0;
        hs->nmsgs += k;
    }
    chat_jw_messages(b, msgs + (n - k), k);
    if (k < n - skip || !reached) {
        /* Resumed or not, what is left out lies below the page. */
        chat_jw_next(b, "before", k > 0 ? msgs[n - k].offset : pos->last + 1);
        hub_jsonw_kbool(b, "complete", 0);
    }
    chat_jw_members(b, pj->total, pj->members, pj->nmembers);
}

static void pending_join_free(struct pending_join *pj)
{
    free(pj->members);
    free(pj);
}

/* A join's members query or history request failed with err before any
 * reply: the client gets an error (or the hello entry does) and leaves the
 * room again, so that a resend can join it. */
static void join_failed(struct pending_join *pj, int err)
{
    struct hub_chat_client *cl = pj->cl;
    struct hub_room *room = hub_rooms_find(cl->chat->rooms, pj->room, pj->room_len);
    if (room != NULL && !hub_rooms_is_member(&cl->member, room))
        room = NULL;
    const char *code = err == HUB_EAGAIN ? "unavailable" : "internal";
    const char *message =
        err == HUB_EAGAIN
            ? "the message broker cannot take requests right now (unreachable or full); try again"
            : "history is not available";
    if (room != NULL)
        chat_leave_room(cl, room); /* the join did not happen: a resend may try again */
    if (pj->hello != NULL) {
        struct hello_state *hs = pj->hello;
        if (err == HUB_EAGAIN)
            hub_metrics.unavailable++;
        jw_refusal(&hs->b, pj->room, code, message);
        if (--hs->outstanding == 0 && hs->issued)
            chat_hello_finish(hs);
    } else {
        chat_send_engine_error(cl, pj->id, err, message);
    }
    int gate = pj->gate;
    pending_join_free(pj);
    ungate(cl, &gate);
    chat_client_unref(cl);
}

/* The viewer is banned from the room (or the hub) until until (INT64_MAX:
 * for good): the join is undone and refused with "banned". */
static void join_banned(struct pending_join *pj, int64_t until)
{
    struct hub_chat_client *cl = pj->cl;
    char message[160];
    if (until == INT64_MAX) {
        snprintf(message, sizeof(message), "banned from %.*s for good", (int)pj->room_len,
                 pj->room);
    } else {
        time_t t = (time_t)(until / 1000);
        struct tm tm;
        char iso[32] = "?";
#ifdef _WIN32
        if (gmtime_s(&tm, &t) == 0)
#else
        if (gmtime_r(&t, &tm) != NULL)
#endif
            strftime(iso, sizeof(iso), "%Y-%m-%dT%H:%M:%SZ", &tm);
        snprintf(message, sizeof(message), "banned from %.*s until %s", (int)pj->room_len, pj->room,
                 iso);
    }
    struct hub_room *room = hub_rooms_find(cl->chat->rooms, pj->room, pj->room_len);
    if (room != NULL && hub_rooms_is_member(&cl->member, room)) {
        chat_sub_remove(cl, room);
        chat_leave_room(cl, room);
    }
    if (pj->hello != NULL) {
        struct hello_state *hs = pj->hello;
        jw_refusal(&hs->b, pj->room, "banned", message);
        if (--hs->outstanding == 0 && hs->issued)
            chat_hello_finish(hs);
    } else {
        chat_send_error(cl, pj->id, "banned", message);
    }
    int gate = pj->gate;
    pending_join_free(pj);
    ungate(cl, &gate);
    chat_client_unref(cl);
}

static void join_read_cb(void *data, int err, const struct hub_history_pos *pos,
                         const struct hub_history_msg *msgs, size_t n, int complete)
{
    struct pending_join *pj = data;
    struct hub_chat_client *cl = pj->cl;
    if (err == HUB_EAGAIN) {
        join_failed(pj, err);
        return;
    }
    if (err == 0 && pos->ban_until != 0) {
        join_banned(pj, pos->ban_until);
        return;
    }
    struct hub_room *room = hub_rooms_find(cl->chat->rooms, pj->room, pj->room_len);
    struct chat_sub *sub = NULL;
    if (room != NULL && hub_rooms_is_member(&cl->member, room))
        sub = chat_sub_find(cl, room);
    else
        room = NULL;
    if (sub != NULL && err == 0)
        sub->delivered_upto = pos->last; /* the reply carries everything up to here */
    struct hub_jsonw own = {0};
    struct hub_jsonw *b = pj->hello != NULL ? &pj->hello->b : &own;
    if (pj->hello != NULL) {
        hub_jsonw_key(b, pj->room);
        hub_jsonw_raw(b, "{");
    } else {
        chat_begin_reply(b, pj->id);
    }
    if (err != 0) {
        if (pj->hello == NULL) {
            chat_send_error(cl, pj->id, "internal", "history is not available");
        } else {
            hub_jsonw_key(b, "error");
            hub_jsonw_raw(b, "{\"code\":\"internal\",\"message\":\"history is not available\"}");
        }
    } else {
        if (pj->hello == NULL)
            hub_jsonw_kstr(b, "room", pj->room, pj->room_len);
        jw_join_state(pj, b, pos, msgs, n);
    }
    hub_jsonw_raw(b, "}");
    if (pj->hello != NULL) {
        struct hello_state *hs = pj->hello;
        if (--hs->outstanding == 0 && hs->issued)
            chat_hello_finish(hs);
    } else if (err == 0 && pj->id.has) {
        chat_send_json(cl, b, pj->id);
    }
    if (sub != NULL && pj->hello == NULL)
        sub_release(cl, sub); /* a hello's rooms wait for the whole reply */
    hub_jsonw_free(&own);
    int gate = pj->gate;
    pending_join_free(pj);
    ungate(cl, &gate);
    chat_client_unref(cl);
}

/* The members of the joined room, on every node: kept for the reply, then
 * the history read (the engine orders it behind the join's subscription). */
static void join_members_cb(void *data, int err, uint64_t total, const struct hub_engine_member *m,
                            size_t n)
{
    struct pending_join *pj = data;
    if (err != 0) {
        join_failed(pj, err);
        return;
    }
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++)
        bytes += m[i].client.len + m[i].nick.len;
    pj->total = total;
    if (n > 0) {
        pj->members = malloc(n * sizeof(*pj->members) + bytes);
        if (pj->members == NULL) {
            join_failed(pj, HUB_ENOMEM);
            return;
        }
        char *w = (char *)(pj->members + n);
        for (size_t i = 0; i < n; i++) {
            memcpy(w, m[i].client.base, m[i].client.len);
            pj->members[i].client.base = w;
            pj->members[i].client.len = m[i].client.len;
            w += m[i].client.len;
            memcpy(w, m[i].nick.base, m[i].nick.len);
            pj->members[i].nick.base = w;
            pj->members[i].nick.len = m[i].nick.len;
            w += m[i].nick.len;
        }
        pj->nmembers = n;
    }
    struct hub_iov name = {pj->room, pj->room_len};
    unsigned limit = pj->has_since ? RESUME_MAX : pj->history;
    /* A query with the viewer: the topic, a ban (refused), reactions' mine. */
    char viewer[CHAT_KEY_MAX], actor[CHAT_KEY_MAX];
    struct hub_history_query q = {.dir = HUB_HISTORY_LATEST, .limit = limit};
    q.viewer.base = viewer;
    q.viewer.len = chat_author_key(pj->cl, viewer);
    q.actor.base = actor;
    q.actor.len = chat_actor_key(pj->cl, actor);
    q.now_ms = chat_now(pj->cl->chat);
    int rc = hub_engine_query(pj->cl->chat->engine, name, &q, join_read_cb, pj);
    if (rc != 0)
        join_failed(pj, rc);
}

/* Joins a room for a join request or a hello resume entry and requests its
 * history; the reply is written when the read completes. Returns 0, or -1
 * with *code and *message describing why it failed (nothing sent). */
int chat_start_join(struct hub_chat_client *cl, struct req_id id, struct hello_state *hello,
                    struct hub_iov name, unsigned history, const char *since_epoch, size_t elen,
                    uint64_t since, const char **code, const char **message)
{
    struct hub_chat *chat = cl->chat;
    /* A token's rooms claim limits the public rooms (DM rooms have their
     * own rule, chat_room_problem). */
    if (cl->user != NULL && name.len > 0 && name.base[0] != '@' &&
        !hub_auth_room_allowed(&cl->user->id, name.base, name.len)) {
        *code = "forbidden";
        *message = "your token does not allow this room";
        return -1;
    }
    struct pending_join *pj = calloc(1, sizeof(*pj) + name.len + 1);
    if (pj == NULL)
        goto fail_memory;
    struct hub_room *room;
    if (!hub_chat_room_admits(chat, name)) {
        chat->rooms_refused++; /* --max-total-rooms: a new room would pass it */
        *code = "too_many_rooms_total";
        *message = "the hub has as many rooms as it may; try again later";
        goto fail_free;
    }
    int rc = chat_join_room(cl, name, &room);
    if (rc == HUB_EEXIST) {
        *code = "already_joined";
        *message = "you are already in this room";
        goto fail_free;
    }
    if (rc == HUB_ELIMIT) {
        *code = "too_many_rooms";
        *message = "you are in the maximum number of rooms already";
        goto fail_free;
    }
    if (rc != 0 || sub_add(cl, room, hello) != 0)
        goto fail_leave;
    pj->cl = cl;
    pj->id = id;
    pj->hello = hello;
    pj->history = history;
    pj->has_since = since_epoch != NULL;
    pj->since = since;
    if (since_epoch != NULL)
        snprintf(pj->epoch, sizeof(pj->epoch), "%.*s",
                 (int)(elen > HUB_HISTORY_EPOCH_LEN + 1 ? HUB_HISTORY_EPOCH_LEN + 1 : elen),
                 since_epoch);
    pj->room_len = name.len;
    memcpy(pj->room, name.base, name.len);
    chat_client_ref(cl);
    if (hello != NULL)
        hello->outstanding++;
    else
        gate_on(cl, &pj->gate);
    /* From here on the completions answer: join_failed if they fail. */
    rc = hub_engine_members(chat->engine, name, HUB_CHAT_LIST_MAX, join_members_cb, pj);
    if (rc == 0)
        return 0;
    if (hello != NULL)
        hello->outstanding--;
    else if (pj->gate)
        cl->waiting--; /* nothing came in between: no drain */
    chat_client_unref(cl);
    chat_sub_remove(cl, room);
    chat_leave_room(cl, room);
    if (rc == HUB_EAGAIN) {
        *code = "unavailable";
        *message =
            "the message broker cannot take requests right now (unreachable or full); try again";
        hub_metrics.unavailable++;
    }
    free(pj);
    if (*code != NULL)
        return -1;
    goto fail_memory;
fail_leave:
    if (rc == 0)
        chat_leave_room(cl, room);
    if (rc == HUB_EAGAIN) {
        *code = "unavailable";
        *message =
            "the message broker cannot take requests right now (unreachable or full); try again";
        hub_metrics.unavailable++;
    }
fail_free:
    free(pj);
    if (*code != NULL)
        return -1;
fail_memory:
    *code = "internal";
    *message = "out of memory";
    return -1;
}

unsigned chat_alloc_fail_in;

void *chat_calloc(size_t size)
{
    if (chat_alloc_fail_in > 0 && --chat_alloc_fail_in == 0)
        return NULL;
    return calloc(1, size);
}

struct hello_state *chat_hello_new(struct hub_chat_client *cl, struct req_id id)
{
    struct hello_state *hs = chat_calloc(sizeof(*hs));
    if (hs == NULL)
        return NULL;
    hs->cl = cl;
    hs->id = id;
    return hs;
}

void chat_hello_discard(struct hello_state *hs)
{
    free(hs);
}

void chat_hello_resume(struct hello_state *hs, json_t *resume)
{
    struct hub_chat_client *cl = hs->cl;
    struct hub_chat *chat = cl->chat;
    struct req_id id = hs->id;
    chat_client_ref(cl);
    gate_on(cl, &hs->gate);
    /* One budget for the messages of every resumed room: the reply is one
     * frame. */
    hs->budget = chat_page_budget(cl, &hs->room_left);
    struct hub_jsonw *b = &hs->b;
    chat_begin_reply(b, id);
    chat_jw_client_id(b, cl);
    hub_jsonw_kstr(b, "nick", cl->nick, cl->nick_len);
    chat_jw_user(b, cl);
    hub_jsonw_kstr(b, "server", chat->cfg.server_name, strlen(chat->cfg.server_name));
    hub_jsonw_key(b, "limits");
    hub_jsonw_raw(b, "{");
    hub_jsonw_kint(b, "max_message", (long long)chat->cfg.max_message);
    hub_jsonw_kint(b, "max_text", (long long)chat->cfg.max_text);
    hub_jsonw_kint(b, "max_rooms", chat->cfg.max_rooms_per_client);
    hub_jsonw_kint(b, "rate", chat->cfg.rate);
    hub_jsonw_kint(b, "burst", chat->cfg.burst);
    hub_jsonw_kint(b, "ping_interval", chat->cfg.ping_interval_s);
    hub_jsonw_kint(b, "history", chat->cfg.history_max_rooms_kept);
    hub_jsonw_kint(b, "history_page", RESUME_MAX);
    hub_jsonw_kuint(b, "page_bytes", chat_page_bytes(cl));
    hub_jsonw_raw(b, "}");
    hub_jsonw_key(b, "rooms");
    hub_jsonw_raw(b, "{");
    const char *key;
    json_t *since;
    /* Each resumed room is written into the reply by its read's completion,
     * and completions come in request order, so the reply assembles in
     * order whether the store completes at once (memory) or later (SQLite).
     * An entry refused on the spot is written at once only if no read is
     * still pending ahead of it. */
    json_object_foreach(resume, key, since)
    {
        struct hub_iov name = chat_iov_str(key);
        const char *epoch = NULL, *code = "bad_request", *message = NULL;
        size_t elen = 0;
        uint64_t offset = 0;
        const char *why = chat_room_problem(cl, name);
        if (why != NULL) {
            code = "bad_room";
            message = why;
        } else if (chat_parse_since(since, &epoch, &elen, &offset) < 0) {
            message = "a resume position must be {\"epoch\": string, \"offset\": integer}";
        } else {
            code = NULL;
            if (chat_start_join(cl, id, hs, name, chat->cfg.history_default, epoch, elen, offset,
                                &code, &message) == 0)
                continue;
        }
        chat_hello_refuse(hs, key, code, message);
    }
    hs->issued = 1;
    if (hs->outstanding == 0)
        chat_hello_finish(hs);
}
