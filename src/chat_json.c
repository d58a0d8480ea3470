/*
 * chat_json.c: the chathub.v1 operations (docs/protocol.md) and their
 * dispatch: one JSON request per text frame, parsed with jansson, checked,
 * and answered through the writers of chat.c.
 */
#include "chat_int.h"
#include "hub/history.h"
#include "hub/log.h"
#include "hub/metrics.h"
#include "hub/utf8.h"
#include "hub/ws.h"

#include <stdlib.h>
#include <string.h>

/* ---- JSON requests --------------------------------------------------- */

/* Reads an optional string field. Returns 1 if present and a string, 0 if
 * absent, -1 if present with another type. */
static int get_str(const struct request *rq, const char *key, struct hub_iov *out)
{
    json_t *v = json_object_get(rq->root, key);
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return -1;
    out->base = json_string_value(v);
    out->len = json_string_length(v);
    return 1;
}

/* Reads an optional non-negative integer field, with the same returns. */
static int get_uint(const struct request *rq, const char *key, uint64_t max, uint64_t *out)
{
    json_t *v = json_object_get(rq->root, key);
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) > max)
        return -1;
    *out = (uint64_t)json_integer_value(v);
    return 1;
}

/* Checks that the client may use a room of this name: a public name, or a
 * direct-message room "@a,b" of which the client is a or b. Returns NULL or
 * the reason. */
const char *chat_room_problem(const struct hub_chat_client *cl, struct hub_iov room)
{
    if (hub_chat_valid_room(room.base, room.len))
        return NULL;
    if (room.len > 1 && room.base[0] == '@' && room.len <= HUB_ROOM_NAME_MAX) {
        /* A party stays a party after a rename. */
        struct hub_room *r = hub_rooms_find(cl->chat->rooms, room.base, room.len);
        if (r != NULL && hub_rooms_is_member(&cl->member, r))
            return NULL;
        if (r != NULL && hub_room_size(r) >= 2)
            return "this direct-message room already has its two parties";
        const char *comma = memchr(room.base, ',', room.len);
        if (comma != NULL) {
            size_t alen = (size_t)(comma - room.base) - 1;
            if (chat_nick_eq(room.base + 1, alen, cl->nick, cl->nick_len) ||
                chat_nick_eq(comma + 1, room.len - alen - 2, cl->nick, cl->nick_len))
                return NULL;
        }
        return "direct-message rooms are open to their two parties only";
    }
    return "room names are 1-64 characters of A-Z a-z 0-9 _ . : -";
}

/* Reads the required "room" field naming a room the client may use.
 * Returns 0, or -1 after an error reply. */
static int get_room(const struct request *rq, struct hub_iov *room)
{
    if (get_str(rq, "room", room) != 1) {
        chat_send_error(rq->cl, rq->id, "bad_request", "\"room\" must be a string");
        return -1;
    }
    const char *why = chat_room_problem(rq->cl, *room);
    if (why != NULL) {
        chat_send_error(rq->cl, rq->id, "bad_room", why);
        return -1;
    }
    return 0;
}

static struct hub_room *joined_room(struct hub_chat_client *cl, struct hub_iov name)
{
    struct hub_room *room = hub_rooms_find(cl->chat->rooms, name.base, name.len);
    if (room != NULL && hub_rooms_is_member(&cl->member, room))
        return room;
    return NULL;
}

static void op_join(struct request *rq)
{
    struct hub_iov name;
    if (get_room(rq, &name) != 0)
        return;
    uint64_t history = rq->cl->chat->cfg.history_default;
    if (get_uint(rq, "history", JOIN_HISTORY_MAX, &history) < 0) {
        chat_send_error(rq->cl, rq->id, "bad_request", "\"history\" must be an integer 0-100");
        return;
    }
    const char *epoch = NULL;
    size_t elen = 0;
    uint64_t since = 0;
    if (chat_parse_since(json_object_get(rq->root, "since"), &epoch, &elen, &since) < 0) {
        chat_send_error(rq->cl, rq->id, "bad_request",
                        "\"since\" must be {\"epoch\": string, \"offset\": integer}");
        return;
    }
    const char *code = NULL, *message = NULL;
    if (chat_start_join(rq->cl, rq->id, NULL, name, (unsigned)history, epoch, elen, since, &code,
                        &message) != 0)
        chat_send_error(rq->cl, rq->id, code, message);
}

static void op_leave(struct request *rq)
{
    struct hub_iov name;
    if (get_room(rq, &name) != 0)
        return;
    struct hub_room *room = joined_room(rq->cl, name);
    if (room == NULL) {
        chat_send_error(rq->cl, rq->id, "not_joined", "you are not in this room");
        return;
    }
    chat_leave_room(rq->cl, room);
    chat_send_ok(rq->cl, rq->id);
}

/* Checks a message text and cmid. Returns 0 or -1 after an error reply. */
static int get_text(const struct request *rq, struct hub_iov *text, struct hub_iov *cmid)
{
    if (get_str(rq, "text", text) != 1 || text->len == 0) {
        chat_send_error(rq->cl, rq->id, "bad_text", "\"text\" must be a non-empty string");
        return -1;
    }
    if (hub_utf8_length(text->base, text->len) > rq->cl->chat->cfg.max_text) {
        chat_send_error(rq->cl, rq->id, "too_long", "the text is longer than max_text characters");
        return -1;
    }
    cmid->base = "";
    cmid->len = 0;
    if (get_str(rq, "cmid", cmid) < 0 || cmid->len > HUB_CHAT_CMID_MAX) {
        chat_send_error(rq->cl, rq->id, "bad_request",
                        "\"cmid\" must be a string of at most 64 bytes");
        return -1;
    }
    return 0;
}

static void op_send(struct request *rq)
{
    struct hub_iov name, text, cmid;
    if (get_room(rq, &name) != 0)
        return;
    struct hub_room *room = joined_room(rq->cl, name);
    if (room == NULL) {
        chat_send_error(rq->cl, rq->id, "not_joined", "join the room before sending to it");
        return;
    }
    if (get_text(rq, &text, &cmid) != 0)
        return;
    chat_publish(rq->cl, rq->id, name, HUB_WS_TEXT, text, cmid);
}

/* A history request waiting for its read. */
struct pending_history {
    struct hub_chat_client *cl; /* the client (a reference) */
    struct req_id id;           /* the request's id */
    int dir;                    /* enum hub_history_dir */
    uint64_t anchor;            /* its before or after */
    size_t room_len;            /* length of room */
    char room[];                /* the room's name */
};

static void history_read_cb(void *data, int err, const struct hub_history_pos *pos,
                            const struct hub_history_msg *msgs, size_t n, int complete)
{
    struct pending_history *ph = data;
    struct hub_chat_client *cl = ph->cl;
    if (err != 0) {
        chat_send_error(cl, ph->id, "internal", "history is not available");
    } else if (ph->id.has) {
        struct hub_jsonw b = {0};
        chat_begin_reply(&b, ph->id);
        hub_jsonw_kstr(&b, "room", ph->room, ph->room_len);
        hub_jsonw_kstr(&b, "epoch", pos->epoch, strlen(pos->epoch));
        hub_jsonw_kint(&b, "offset", (long long)pos->last);
        /* A page bounded in bytes as well: the messages nearest to where
         * the client stands (the newest, or the oldest after "after"). */
        size_t room_left;
        size_t budget = chat_page_budget(cl, &room_left);
        int newest = ph->dir != HUB_HISTORY_AFTER;
        size_t k = chat_page_fit(msgs, n, newest, budget, room_left, NULL);
        /* msgs may be NULL when n == 0: no arithmetic on it then. */
        const struct hub_history_msg *page = newest && k > 0 ? msgs + (n - k) : msgs;
        chat_jw_messages(&b, page, k);
        if (k < n)
            complete = 0;
        if (!complete) {
            if (newest)
                chat_jw_next(&b, "before",
                             k > 0                           ? page[0].offset
                             : ph->dir == HUB_HISTORY_BEFORE ? ph->anchor
                                                             : pos->last + 1);
            else
                chat_jw_next(&b, "after", k > 0 ? page[k - 1].offset : ph->anchor);
        }
        hub_jsonw_kbool(&b, "complete", complete);
        hub_jsonw_raw(&b, "}");
        chat_send_json(cl, &b, ph->id);
        hub_jsonw_free(&b);
    }
    free(ph);
    chat_client_unref(cl);
}

static void op_history(struct request *rq)
{
    struct hub_iov name;
    if (get_room(rq, &name) != 0)
        return;
    uint64_t before = 0, after = 0, limit = 50;
    int hb = get_uint(rq, "before", UINT64_MAX >> 11, &before);
    int ha = get_uint(rq, "after", UINT64_MAX >> 11, &after);
    int hl = get_uint(rq, "limit", 100, &limit);
    if (hb < 0 || ha < 0 || hl < 0 || (hb > 0 && ha > 0) || (hl > 0 && limit == 0)) {
        chat_send_error(rq->cl, rq->id, "bad_request",
                        "use one of \"before\" or \"after\" (integers) and \"limit\" 1-100");
        return;
    }
    struct pending_history *ph = malloc(sizeof(*ph) + name.len);
    if (ph == NULL) {
        chat_send_error(rq->cl, rq->id, "internal", "out of memory");
        return;
    }
    ph->cl = rq->cl;
    ph->id = rq->id;
    ph->room_len = name.len;
    memcpy(ph->room, name.base, name.len);
    chat_client_ref(rq->cl);
    int dir = hb > 0 ? HUB_HISTORY_BEFORE : ha > 0 ? HUB_HISTORY_AFTER : HUB_HISTORY_LATEST;
    ph->dir = dir;
    ph->anchor = hb > 0 ? before : after;
    if (hub_history_read(rq->cl->chat->cfg.history, name, dir, hb > 0 ? before : after,
                         (unsigned)limit, history_read_cb, ph) != 0) {
        chat_send_error(rq->cl, rq->id, "internal", "history is not available");
        free(ph);
        chat_client_unref(rq->cl);
    }
}

static void op_typing(struct request *rq)
{
    struct hub_chat_client *cl = rq->cl;
    struct hub_iov name;
    if (get_room(rq, &name) != 0)
        return;
    struct hub_room *room = joined_room(cl, name);
    if (room == NULL) {
        chat_send_error(cl, rq->id, "not_joined", "you are not in this room");
        return;
    }
    int64_t now = chat_now(cl->chat);
    struct typing_mark *mark = NULL;
    for (uint32_t i = 0; i < cl->ntyping; i++)
        if (cl->typing[i].room == room)
            mark = &cl->typing[i];
    if (mark == NULL) {
        struct typing_mark *a = realloc(cl->typing, (cl->ntyping + 1) * sizeof(*a));
        if (a == NULL)
            return;
        cl->typing = a;
        mark = &a[cl->ntyping++];
        mark->room = room;
        mark->last = now - TYPING_INTERVAL_MS;
    }
    /* Coalesce: receivers show it for TYPING_TTL_MS, so one per interval
     * keeps the indicator on without a push per keystroke. */
    if (now - mark->last >= TYPING_INTERVAL_MS) {
        mark->last = now;
        struct hub_room_event ev = {.kind = EV_TYPING, .room = room, .who = cl};
        chat_broadcast(&ev, cl);
    }
    /* No success reply: typing is fire-and-forget (docs/protocol.md). */
}

/* Validates a requested nick. Returns 0, or -1 after an error reply. */
static int check_nick(const struct request *rq, struct hub_iov *nick)
{
    if (get_str(rq, "nick", nick) != 1) {
        chat_send_error(rq->cl, rq->id, "bad_nick", "\"nick\" must be a string");
        return -1;
    }
    const char *why = chat_nick_problem(nick->base, nick->len);
    if (why != NULL) {
        chat_send_error(rq->cl, rq->id, "bad_nick", why);
        return -1;
    }
    const struct hub_chat_client *owner = chat_nick_find(rq->cl->chat, nick->base, nick->len);
    if (owner != NULL && owner != rq->cl) {
        chat_send_error(rq->cl, rq->id, "nick_taken", "another client uses this nick");
        return -1;
    }
    return 0;
}

static void op_nick(struct request *rq)
{
    struct hub_chat_client *cl = rq->cl;
    struct hub_iov nick;
    if (check_nick(rq, &nick) != 0)
        return;
    char old[HUB_CHAT_NICK_BYTES + 1];
    size_t old_len = cl->nick_len;
    memcpy(old, cl->nick, old_len + 1);
    chat_nick_unlink(cl->chat, cl);
    int rc = chat_set_nick(cl, nick.base, nick.len);
    chat_nick_link(cl->chat, cl);
    if (rc != 0) {
        chat_send_error(cl, rq->id, "internal", "out of memory");
        return;
    }
    struct hub_jsonw b = {0};
    chat_begin_reply(&b, rq->id);
    hub_jsonw_kstr(&b, "nick", cl->nick, cl->nick_len);
    hub_jsonw_raw(&b, "}");
    if (rq->id.has)
        chat_send_json(cl, &b, rq->id);
    hub_jsonw_free(&b);
    for (uint32_t i = 0; i < cl->member.nrooms; i++) {
        struct hub_room_event ev = {.kind = EV_NICK, .room = cl->member.rooms[i].room, .who = cl};
        ev.old_nick.base = old;
        ev.old_nick.len = old_len;
        chat_broadcast(&ev, cl);
    }
}

/* Makes sure c is in the room, telling it so with a dm push. */
static int dm_ensure_member(struct hub_chat_client *c, struct hub_chat_client *from,
                            struct hub_iov name, struct hub_room **room)
{
    struct hub_room *r = hub_rooms_find(c->chat->rooms, name.base, name.len);
    if (r != NULL && hub_rooms_is_member(&c->member, r)) {
        *room = r;
        return 0;
    }
    int rc = chat_join_room(c, name, room);
    if (rc != 0 || c == from)
        return rc;
    struct hub_jsonw b = {0};
    hub_jsonw_raw(&b, "{");
    hub_jsonw_kstr(&b, "t", "dm", 2);
    hub_jsonw_kstr(&b, "room", name.base, name.len);
    hub_jsonw_kstr(&b, "from", from->nick, from->nick_len);
    hub_jsonw_raw(&b, "}");
    chat_send_json(c, &b, NO_ID);
    hub_jsonw_free(&b);
    return 0;
}

static void op_dm(struct request *rq)
{
    struct hub_chat_client *cl = rq->cl;
    struct hub_iov to, text, cmid;
    if (get_str(rq, "to", &to) != 1) {
        chat_send_error(cl, rq->id, "bad_request", "\"to\" must be a nick");
        return;
    }
    struct hub_chat_client *peer = chat_nick_find(cl->chat, to.base, to.len);
    if (peer == NULL) {
        chat_send_error(cl, rq->id, "no_such_nick", "no connected client has that nick");
        return;
    }
    if (peer == cl) {
        chat_send_error(cl, rq->id, "bad_request", "a direct message needs another nick");
        return;
    }
    if (get_text(rq, &text, &cmid) != 0)
        return;
    /* "@a,b" with both nicks folded and sorted, so both sides name it alike. */
    char a[HUB_CHAT_NICK_BYTES + 1], b[HUB_CHAT_NICK_BYTES + 1];
    for (size_t i = 0; i <= cl->nick_len; i++)
        a[i] = (char)hub_ascii_lower((unsigned char)cl->nick[i]);
    for (size_t i = 0; i <= peer->nick_len; i++)
        b[i] = (char)hub_ascii_lower((unsigned char)peer->nick[i]);
    char name[2 * HUB_CHAT_NICK_BYTES + 3];
    int cmp = strcmp(a, b);
    int n = snprintf(name, sizeof(name), "@%s,%s", cmp < 0 ? a : b, cmp < 0 ? b : a);
    struct hub_iov room_name = {name, (size_t)n};
    struct hub_room *room = hub_rooms_find(cl->chat->rooms, name, (size_t)n);
    uint32_t max = cl->chat->cfg.max_rooms_per_client;
    int cl_in = room != NULL && hub_rooms_is_member(&cl->member, room);
    int peer_in = room != NULL && hub_rooms_is_member(&peer->member, room);
    /* Check both sides first, so that a refused dm joins nobody. */
    if ((!cl_in && cl->member.nrooms >= max) || (!peer_in && peer->member.nrooms >= max)) {
        chat_send_error(cl, rq->id, "too_many_rooms",
                        !cl_in && cl->member.nrooms >= max
                            ? "you are in the maximum number of rooms"
                            : "the recipient is in the maximum number of rooms");
        return;
    }
    if (!hub_chat_room_admits(cl->chat, room_name)) { /* --max-total-rooms */
        cl->chat->rooms_refused++;
        chat_send_error(cl, rq->id, "too_many_rooms_total",
                        "the hub has as many rooms as it may; try again later");
        return;
    }
    if (dm_ensure_member(cl, cl, room_name, &room) != 0 ||
        dm_ensure_member(peer, cl, room_name, &room) != 0) {
        chat_send_error(cl, rq->id, "internal", "out of memory");
        return;
    }
    chat_publish(cl, rq->id, room_name, HUB_WS_TEXT, text, cmid);
}

struct room_count {
    const char *name; /* borrowed from the room */
    size_t members;   /* its size */
};

struct rooms_list {
    struct room_count *items; /* owned */
    size_t n, cap;            /* used and allocated */
};

static void collect_room(struct hub_room *room, void *arg)
{
    struct rooms_list *l = arg;
    if (hub_room_name(room)[0] == '@')
        return; /* direct-message rooms are private */
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        struct room_count *a = realloc(l->items, cap * sizeof(*a));
        if (a == NULL)
            return;
        l->items = a;
        l->cap = cap;
    }
    l->items[l->n].name = hub_room_name(room);
    l->items[l->n].members = hub_room_size(room);
    l->n++;
}

static int by_size_desc(const void *x, const void *y)
{
    const struct room_count *a = x, *b = y;
    if (a->members != b->members)
        return a->members < b->members ? 1 : -1;
    return strcmp(a->name, b->name);
}

static void op_rooms(struct request *rq)
{
    struct rooms_list l = {0};
    hub_rooms_foreach(rq->cl->chat->rooms, collect_room, &l);
    if (l.n > 1)
        qsort(l.items, l.n, sizeof(*l.items), by_size_desc);
    struct hub_jsonw b = {0};
    chat_begin_reply(&b, rq->id);
    hub_jsonw_key(&b, "rooms");
    hub_jsonw_raw(&b, "[");
    for (size_t i = 0; i < l.n && i < ROOMS_LIST_MAX; i++) {
        hub_jsonw_raw(&b, i ? ",{" : "{");
        hub_jsonw_kstr(&b, "room", l.items[i].name, strlen(l.items[i].name));
        hub_jsonw_kint(&b, "members", (long long)l.items[i].members);
        hub_jsonw_raw(&b, "}");
    }
    hub_jsonw_raw(&b, "]}");
    if (rq->id.has)
        chat_send_json(rq->cl, &b, rq->id);
    hub_jsonw_free(&b);
    free(l.items);
}

static void op_ping(struct request *rq)
{
    chat_send_ok(rq->cl, rq->id);
    struct hub_jsonw b = {0};
    hub_jsonw_raw(&b, "{");
    hub_jsonw_kstr(&b, "t", "pong", 4);
    hub_jsonw_kint(&b, "ts", chat_now(rq->cl->chat));
    hub_jsonw_raw(&b, "}");
    chat_send_json(rq->cl, &b, NO_ID);
    hub_jsonw_free(&b);
}

static void op_hello(struct request *rq)
{
    struct hub_chat_client *cl = rq->cl;
    struct hub_chat *chat = cl->chat;
    if (cl->hello) {
        chat_send_error(cl, rq->id, "already_hello", "hello was already done");
        return;
    }
    struct hub_iov nick;
    if (check_nick(rq, &nick) != 0)
        return;
    json_t *resume = json_object_get(rq->root, "resume");
    if (resume != NULL && !json_is_null(resume) && !json_is_object(resume)) {
        chat_send_error(cl, rq->id, "bad_request",
                        "\"resume\" must be an object of room positions");
        return;
    }
    /* Everything that can fail comes before the nick is committed, so a
     * refused hello leaves the client as it was and a retry can succeed. */
    struct hello_state *hs = chat_hello_new(cl, rq->id);
    if (hs == NULL || chat_set_nick(cl, nick.base, nick.len) != 0) {
        if (hs != NULL)
            chat_hello_discard(hs);
        chat_send_error(cl, rq->id, "internal", "out of memory");
        return;
    }
    chat_nick_link(chat, cl);
    cl->hello = 1;
    chat_hello_resume(hs, resume);
}

/* ---- dispatch ------------------------------------------------------- */

static const struct {
    const char *name;
    void (*fn)(struct request *rq);
} ops[] = {
    {"hello", op_hello},     {"join", op_join},     {"leave", op_leave}, {"send", op_send},
    {"history", op_history}, {"typing", op_typing}, {"nick", op_nick},   {"dm", op_dm},
    {"rooms", op_rooms},     {"ping", op_ping},
};

/* Reads a request's optional id: an integer 0 <= id < 2^53 (what a
 * JavaScript number holds exactly). Returns 0 (id filled, has set if
 * present) or -1 if present but unusable. */
int chat_parse_id(json_t *root, struct req_id *id)
{
    json_t *v = json_object_get(root, "id");
    id->has = 0;
    id->v = 0;
    if (v == NULL)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= (1ll << 53))
        return -1;
    id->has = 1;
    id->v = json_integer_value(v);
    return 0;
}

void chat_json_message(struct hub_chat_client *cl, const char *data, size_t len)
{
    json_error_t err;
    struct request rq = {cl, NULL, {0, 0}};
    /* JSON allows \u0000 in strings; the nick and room rules refuse it where
     * it matters, and message text may carry it. */
    rq.root = json_loadb(data, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &err);
    if (rq.root == NULL || !json_is_object(rq.root)) {
        chat_send_error(cl, rq.id, "bad_json", "each frame must hold one JSON object");
        json_decref(rq.root);
        return;
    }
    if (chat_parse_id(rq.root, &rq.id) != 0) {
        chat_send_error(cl, rq.id, "bad_request", "\"id\" must be an integer from 0 to 2^53 - 1");
        json_decref(rq.root);
        return;
    }
    const char *op = json_string_value(json_object_get(rq.root, "op"));
    if (op == NULL) {
        chat_send_error(cl, rq.id, "bad_request", "\"op\" must be a string");
    } else {
        size_t i;
        for (i = 0; i < HUB_ARRAY_SIZE(ops); i++)
            if (strcmp(op, ops[i].name) == 0)
                break;
        if (i == HUB_ARRAY_SIZE(ops))
            chat_send_error(cl, rq.id, "unknown_op", "no such operation");
        else if (!cl->hello && ops[i].fn != op_hello && ops[i].fn != op_ping)
            chat_send_error(cl, rq.id, "hello_required", "the first request must be hello");
        else
            ops[i].fn(&rq);
    }
    json_decref(rq.root);
}
