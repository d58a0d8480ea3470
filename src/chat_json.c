/*
 * chat_json.c: the chathub.v1 operations (docs/protocol.md) and their
 * dispatch: one JSON request per text frame, parsed with jansson, checked,
 * and answered through the writers of chat.c.
 *
 * Operations that need the engine's answer (hello and nick claim a nick,
 * history reads, rooms counts, a dm to a client of another node) keep a
 * reference to the client and answer from the completion, which may come
 * after the connection is gone (then nothing is sent, and a nick claimed
 * for a dead client is released again).
 */
#include "chat_int.h"
#include "hub/engine.h"
#include "hub/history.h"
#include "hub/ident.h"
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
        if (cl->user != NULL) {
            /* A signed party is named by its user id, "u:<sub>", so a
             * later holder of the name is no party. */
            char me[CHAT_OWNER_MAX];
            size_t n = chat_claim_owner(cl, me);
            if ((room.len > n + 1 && memcmp(room.base + 1, me, n) == 0 &&
                 room.base[n + 1] == ',') ||
                (room.len > n + 1 && memcmp(room.base + room.len - n, me, n) == 0 &&
                 room.base[room.len - n - 1] == ','))
                return NULL;
            return "direct-message rooms are open to their two parties only";
        }
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

int chat_req_str(const struct request *rq, const char *key, struct hub_iov *out)
{
    return get_str(rq, key, out);
}

int chat_req_uint(const struct request *rq, const char *key, uint64_t max, uint64_t *out)
{
    return get_uint(rq, key, max, out);
}

int chat_req_room(const struct request *rq, struct hub_iov *room)
{
    return get_room(rq, room);
}

struct hub_room *chat_joined_room(struct hub_chat_client *cl, struct hub_iov name)
{
    return joined_room(cl, name);
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

/* Checks a message text. Returns 0 or -1 after an error reply. */
int chat_req_text(const struct request *rq, struct hub_iov *text)
{
    if (get_str(rq, "text", text) != 1 || text->len == 0) {
        chat_send_error(rq->cl, rq->id, "bad_text", "\"text\" must be a non-empty string");
        return -1;
    }
    const char *why = hub_ident_text_check(text->base, text->len);
    if (why != NULL) {
        chat_send_error(rq->cl, rq->id, "bad_text", why);
        return -1;
    }
    if (hub_utf8_length(text->base, text->len) > rq->cl->chat->cfg.max_text) {
        chat_send_error(rq->cl, rq->id, "too_long", "the text is longer than max_text characters");
        return -1;
    }
    return 0;
}

/* Checks a message text (chat_req_text) and its optional cmid. Returns 0
 * or -1 after an error reply. */
static int get_text(const struct request *rq, struct hub_iov *text, struct hub_iov *cmid)
{
    if (chat_req_text(rq, text) != 0)
        return -1;
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
    uint64_t reply_to = 0;
    if (get_uint(rq, "reply_to", UINT64_MAX >> 11, &reply_to) < 0) {
        chat_send_error(rq->cl, rq->id, "bad_request",
                        "reply_to must be the offset of an earlier message of this room");
        return;
    }
    chat_publish_ex(rq->cl, rq->id, name, HUB_WS_TEXT, text, cmid, reply_to);
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
        chat_send_engine_error(cl, ph->id, err, "history is not available");
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
    /* A query with the viewer: reactions carry "mine". */
    char viewer[CHAT_KEY_MAX];
    struct hub_history_query q = {.dir = dir, .pos = hb > 0 ? before : after};
    q.limit = (unsigned)limit;
    q.viewer.base = viewer;
    q.viewer.len = chat_author_key(rq->cl, viewer);
    q.now_ms = chat_now(rq->cl->chat);
    int rc = hub_engine_query(rq->cl->chat->engine, name, &q, history_read_cb, ph);
    if (rc != 0) {
        chat_send_engine_error(rq->cl, rq->id, rc, "history is not available");
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
        char id[CHAT_ID_MAX];
        struct hub_iov cid = {id, chat_client_id(cl, id)};
        /* Fire-and-forget: a typing lost in an outage is not worth an error. */
        hub_engine_typing(cl->chat->engine, name, cid, (struct hub_iov){cl->nick, cl->nick_len});
    }
    /* No success reply: typing is fire-and-forget (docs/protocol.md). */
}

/* Checks that nick is free for rq's client (or held by another connection
 * of the same signed user). Returns 0, or -1 after an error reply. */
static int check_nick_free(const struct request *rq, struct hub_iov nick)
{
    const struct hub_chat_client *owner = chat_nick_find(rq->cl->chat, nick.base, nick.len);
    if (owner != NULL && owner != rq->cl && !chat_same_user(owner, rq->cl)) {
        chat_send_error(rq->cl, rq->id, "nick_taken", "another client uses this nick");
        return -1;
    }
    return 0;
}

/* With tokens, a guest's nick is shown with "~" in front: no signed name
 * starts with it, so a guest is told apart everywhere and can never hold a
 * signed user's name. Writes "~" and nick into buf (HUB_CHAT_NICK_BYTES + 1
 * bytes). Returns 0, or -1 after an error reply. */
static int guest_nick(const struct request *rq, struct hub_iov *nick, char *buf)
{
    if (nick->len + 1 > HUB_CHAT_NICK_BYTES) {
        chat_send_error(rq->cl, rq->id, "bad_nick", "the nick is too long");
        return -1;
    }
    buf[0] = '~';
    memcpy(buf + 1, nick->base, nick->len);
    buf[nick->len + 1] = '\0';
    nick->base = buf;
    nick->len++;
    return check_nick_free(rq, *nick);
}

/* Validates a requested nick. Returns 0, or -1 after an error reply. */
static int check_nick(const struct request *rq, struct hub_iov *nick)
{
    if (get_str(rq, "nick", nick) != 1) {
        chat_send_error(rq->cl, rq->id, "bad_nick", "\"nick\" must be a string");
        return -1;
    }
    const char *why = chat_nick_problem(nick->base, nick->len);
    if (why == NULL)
        why = hub_ident_nick_check(nick->base, nick->len); /* scripts, invisibles */
    if (why != NULL) {
        chat_send_error(rq->cl, rq->id, "bad_nick", why);
        return -1;
    }
    if (rq->cl->guest)
        return 0; /* checked once prefixed (guest_nick) */
    return check_nick_free(rq, *nick);
}

/* A nick claim (hello or nick) waiting for the engine. */
struct pending_claim {
    struct hub_chat_client *cl; /* the client (a reference) */
    struct req_id id;           /* the request's id */
    struct hello_state *hs;     /* hello: its reply state (owned until resumed); nick: NULL */
    json_t *resume;             /* hello: its resume object (a reference), or NULL */
    size_t nick_len;            /* bytes in nick */
    char nick[];                /* the nick claimed, NUL-terminated */
};

static void claim_free(struct pending_claim *pc)
{
    if (pc->hs != NULL)
        chat_hello_discard(pc->hs);
    json_decref(pc->resume);
    chat_client_unref(pc->cl);
    free(pc);
}

/* The claim of a nick change succeeded: switch, answer, tell the rooms. */
static void nick_claimed(struct pending_claim *pc)
{
    struct hub_chat_client *cl = pc->cl;
    struct hub_chat *chat = cl->chat;
    char id[CHAT_OWNER_MAX];
    struct hub_iov cid = {id, chat_claim_owner(cl, id)};
    char old[HUB_CHAT_NICK_BYTES + 1];
    size_t old_len = cl->nick_len;
    memcpy(old, cl->nick, old_len + 1);
    struct hub_iov old_v = {old, old_len}, new_v = {pc->nick, pc->nick_len};
    /* Claims are by key: a new spelling of the same key is the same claim. */
    char old_key[CHAT_NICK_KEY_MAX], new_key[CHAT_NICK_KEY_MAX];
    struct hub_iov old_k = {old_key, chat_nick_key(old, old_len, old_key)};
    struct hub_iov new_k = {new_key, chat_nick_key(pc->nick, pc->nick_len, new_key)};
    int same = old_k.len == new_k.len && memcmp(old_key, new_key, old_k.len) == 0;
    chat_nick_unlink(chat, cl);
    int rc = chat_set_nick(cl, pc->nick, pc->nick_len);
    chat_nick_link(chat, cl);
    if (rc != 0) {
        if (!same)
            hub_engine_release_nick(chat->engine, new_k, cid);
        chat_send_error(cl, pc->id, "internal", "out of memory");
        return;
    }
    /* The old claim goes, unless it is the same key (one claim, kept with
     * its new spelling). */
    if (!same)
        hub_engine_release_nick(chat->engine, old_k, cid);
    struct hub_jsonw b = {0};
    chat_begin_reply(&b, pc->id);
    hub_jsonw_kstr(&b, "nick", cl->nick, cl->nick_len);
    hub_jsonw_raw(&b, "}");
    if (pc->id.has)
        chat_send_json(cl, &b, pc->id);
    hub_jsonw_free(&b);
    /* Every node with members in these rooms pushes the change (on_presence). */
    for (uint32_t i = 0; i < cl->member.nrooms; i++) {
        struct hub_room *r = cl->member.rooms[i].room;
        struct hub_iov name = {hub_room_name(r), hub_room_name_len(r)};
        if (hub_engine_renick(chat->engine, name, cid, old_v, new_v) != 0)
            hub_log_debug("engine: could not record a nick change in %s", hub_room_name(r));
    }
}

/* The claim of a hello's nick succeeded: the client is in. */
static void hello_claimed(struct pending_claim *pc)
{
    struct hub_chat_client *cl = pc->cl;
    struct hub_chat *chat = cl->chat;
    if (chat_set_nick(cl, pc->nick, pc->nick_len) != 0) {
        char id[CHAT_OWNER_MAX], key[CHAT_NICK_KEY_MAX];
        struct hub_iov cid = {id, chat_claim_owner(cl, id)};
        struct hub_iov k = {key, chat_nick_key(pc->nick, pc->nick_len, key)};
        hub_engine_release_nick(chat->engine, k, cid);
        chat_send_error(cl, pc->id, "internal", "out of memory");
        return;
    }
    chat_nick_link(chat, cl);
    cl->hello = 1;
    struct hello_state *hs = pc->hs;
    pc->hs = NULL; /* taken by chat_hello_resume */
    chat_hello_resume(hs, pc->resume);
}

static void claim_done(void *data, int err)
{
    struct pending_claim *pc = data;
    struct hub_chat_client *cl = pc->cl;
    chat_client_ref(cl); /* past claim_free, for the backlog */
    cl->claiming = 0;
    if (cl->dead) {
        /* The client went while the claim was on its way: give it back. */
        if (err == 0) {
            char id[CHAT_OWNER_MAX], key[CHAT_NICK_KEY_MAX];
            struct hub_iov cid = {id, chat_claim_owner(cl, id)};
            struct hub_iov k = {key, chat_nick_key(pc->nick, pc->nick_len, key)};
            struct hub_chat_client *other = chat_nick_find_key(cl->chat, key, k.len);
            if (other == NULL || !chat_same_user(other, cl))
                hub_engine_release_nick(cl->chat->engine, k, cid);
        }
    } else if (err != 0 && pc->hs != NULL && cl->user != NULL) {
        /* A refused hello leaves the client unsigned, so a retry starts over. */
        chat_clear_user(cl);
        if (err == HUB_EEXIST)
            chat_send_error(cl, pc->id, "nick_taken", "another user has this name");
        else
            chat_send_engine_error(cl, pc->id, err, "the nick could not be claimed");
    } else if (err == HUB_EEXIST) {
        chat_send_error(cl, pc->id, "nick_taken", "another client uses this nick");
    } else if (err != 0) {
        chat_send_engine_error(cl, pc->id, err, "the nick could not be claimed");
    } else if (pc->hs != NULL) {
        hello_claimed(pc);
    } else {
        nick_claimed(pc);
    }
    claim_free(pc);
    /* The requests that came meanwhile, in order (until one claims again). */
    chat_backlog_drain(cl);
    chat_client_unref(cl);
}

/* Claims nick for cl through the engine (unique across nodes); the reply
 * comes from claim_done. hs and resume (hello only) are taken. */
static void start_claim(struct request *rq, struct hub_iov nick, struct hello_state *hs,
                        json_t *resume)
{
    struct hub_chat_client *cl = rq->cl;
    struct pending_claim *pc = malloc(sizeof(*pc) + nick.len + 1);
    if (pc == NULL) {
        if (hs != NULL)
            chat_hello_discard(hs);
        chat_send_error(cl, rq->id, "internal", "out of memory");
        return;
    }
    pc->cl = cl;
    pc->id = rq->id;
    pc->hs = hs;
    pc->resume = resume != NULL && json_is_object(resume) ? json_incref(resume) : NULL;
    pc->nick_len = nick.len;
    memcpy(pc->nick, nick.base, nick.len);
    pc->nick[nick.len] = '\0';
    chat_client_ref(cl);
    cl->claiming = 1;
    char id[CHAT_OWNER_MAX], key[CHAT_NICK_KEY_MAX];
    struct hub_iov cid = {id, chat_claim_owner(cl, id)};
    /* Claimed by key, so that a look-alike on another node is refused too. */
    struct hub_iov k = {key, chat_nick_key(nick.base, nick.len, key)};
    int rc = hub_engine_claim_nick(cl->chat->engine, k, cid, claim_done, pc);
    if (rc != 0) {
        cl->claiming = 0;
        chat_send_engine_error(cl, rq->id, rc, "the nick could not be claimed");
        claim_free(pc);
    }
}

static void op_nick(struct request *rq)
{
    struct hub_iov nick;
    if (rq->cl->claiming) {
        chat_send_error(rq->cl, rq->id, "unavailable", "a nick change is on its way; try again");
        return;
    }
    if (rq->cl->user != NULL) {
        chat_send_error(rq->cl, rq->id, "forbidden",
                        "a signed user's nick is the name in its token");
        return;
    }
    char buf[HUB_CHAT_NICK_BYTES + 1];
    if (check_nick(rq, &nick) != 0 || (rq->cl->guest && guest_nick(rq, &nick, buf) != 0))
        return;
    start_claim(rq, nick, NULL, NULL);
}

/* Makes sure c is in the room, telling it so with a dm push. */
static int dm_ensure_member(struct hub_chat_client *c, struct hub_iov from, int self,
                            struct hub_iov name, struct hub_room **room)
{
    struct hub_room *r = hub_rooms_find(c->chat->rooms, name.base, name.len);
    if (r != NULL && hub_rooms_is_member(&c->member, r)) {
        *room = r;
        return 0;
    }
    int rc = chat_join_room(c, name, room);
    if (rc != 0 || self)
        return rc;
    struct hub_jsonw b = {0};
    hub_jsonw_raw(&b, "{");
    hub_jsonw_kstr(&b, "t", "dm", 2);
    hub_jsonw_kstr(&b, "room", name.base, name.len);
    hub_jsonw_kstr(&b, "from", from.base, from.len);
    hub_jsonw_raw(&b, "}");
    chat_send_json(c, &b, NO_ID);
    hub_jsonw_free(&b);
    return 0;
}

/* Bytes of a DM room name buffer. */
#define DM_NAME_MAX (HUB_ROOM_NAME_MAX + 1)

/* One party of a DM room name: a signed client's "u:<sub>" (as is: ids are
 * exact), else the nick folded to lower case. Writes it into buf
 * (CHAT_OWNER_MAX bytes). Returns its length, 0 if it does not fit. */
static size_t dm_party(char *buf, const struct hub_chat_client *c, struct hub_iov nick)
{
    if (c != NULL && c->user != NULL)
        return chat_claim_owner(c, buf);
    if (nick.len >= CHAT_OWNER_MAX || nick.len > HUB_CHAT_NICK_BYTES)
        return 0;
    for (size_t i = 0; i < nick.len; i++)
        buf[i] = (char)hub_ascii_lower((unsigned char)nick.base[i]);
    buf[nick.len] = '\0';
    return nick.len;
}

/* "@a,b" for the parties x and y (client, or NULL for a nick held on
 * another node), sorted so that both sides name it alike: with tokens a
 * signed party is its user id, so the room stays the user's whatever name
 * it has and whoever has that name later. Returns its length (0 if it is
 * longer than a room name may be). */
static size_t dm_room_name(char *name, const struct hub_chat_client *xc, struct hub_iov x,
                           const struct hub_chat_client *yc, struct hub_iov y)
{
    char a[CHAT_OWNER_MAX], b[CHAT_OWNER_MAX];
    if (dm_party(a, xc, x) == 0 || dm_party(b, yc, y) == 0)
        return 0;
    int cmp = strcmp(a, b);
    int n = snprintf(name, DM_NAME_MAX, "@%s,%s", cmp < 0 ? a : b, cmp < 0 ? b : a);
    return n > 0 && n < DM_NAME_MAX ? (size_t)n : 0;
}

/* A dm to a nick no client of this node holds. The message may go out only
 * once the peer's node is subscribed to the room, or the peer would miss
 * it: the peer's join (which its node makes after subscribing) comes back
 * here as on_presence, and releases the message (chat_dm_peer_joined). If
 * the peer is a member already, the message goes at once; if its join does
 * not come within DM_WAIT_MS, the message goes anyway (the peer's client
 * reads the room on the dm push). */
struct pending_dm {
    struct pending_dm *next;    /* in chat->dm_waits while waiting for the join */
    struct hub_chat_client *cl; /* the sender (a reference) */
    struct req_id id;           /* the request's id */
    int64_t since;              /* when it started waiting */
    int joined_self;            /* the sender joined the room for it */
    int behind;                 /* it waits behind an earlier dm to the room (no invite) */
    size_t room_len, text_len;  /* bytes of room and text in bytes[] */
    size_t cmid_len, to_len;    /* bytes of cmid and of the peer's nick in bytes[] */
    char bytes[];               /* room, text, cmid, to */
};

static struct hub_iov pd_room(const struct pending_dm *pd)
{
    return (struct hub_iov){pd->bytes, pd->room_len};
}

static struct hub_iov pd_to(const struct pending_dm *pd)
{
    return (struct hub_iov){pd->bytes + pd->room_len + pd->text_len + pd->cmid_len, pd->to_len};
}

static void pd_free(struct pending_dm *pd)
{
    struct hub_chat_client *cl = pd->cl;
    free(pd);
    chat_client_unref(cl);
}

/* The dm failed before its message went out: the sender leaves a room it
 * joined for it (a refused dm joins nobody) and gets the error. */
static void pd_fail(struct pending_dm *pd, const char *code, const char *message, int err)
{
    struct hub_chat_client *cl = pd->cl;
    if (!cl->dead) {
        struct hub_iov room = pd_room(pd);
        struct hub_room *r = hub_rooms_find(cl->chat->rooms, room.base, room.len);
        if (pd->joined_self && r != NULL && hub_rooms_is_member(&cl->member, r))
            chat_leave_room(cl, r);
        if (code != NULL)
            chat_send_error(cl, pd->id, code, message);
        else
            chat_send_engine_error(cl, pd->id, err, message);
    }
    pd_free(pd);
}

/* Publishes the dm's message (the sender is in the room). */
static void pd_send(struct pending_dm *pd)
{
    struct hub_chat_client *cl = pd->cl;
    if (!cl->dead) {
        struct hub_room *r;
        struct hub_iov room = pd_room(pd);
        int rc = dm_ensure_member(cl, (struct hub_iov){cl->nick, cl->nick_len}, 1, room, &r);
        if (rc == HUB_ELIMIT)
            chat_send_error(cl, pd->id, "too_many_rooms", "you are in the maximum number of rooms");
        else if (rc != 0)
            chat_send_engine_error(cl, pd->id, rc, "out of memory");
        else
            chat_publish(cl, pd->id, room, HUB_WS_TEXT,
                         (struct hub_iov){pd->bytes + pd->room_len, pd->text_len},
                         (struct hub_iov){pd->bytes + pd->room_len + pd->text_len, pd->cmid_len});
    }
    pd_free(pd);
}

static void pd_unlink(struct pending_dm *pd)
{
    struct pending_dm **pp = &pd->cl->chat->dm_waits;
    while (*pp != NULL && *pp != pd)
        pp = &(*pp)->next;
    if (*pp == pd)
        *pp = pd->next;
    pd->next = NULL;
}

/* Takes the waiting dms that match out of the list first, then sends them:
 * sending may join rooms, whose presence upcalls may come back here. */
void chat_dm_peer_joined(struct hub_chat *chat, struct hub_iov room, struct hub_iov nick)
{
    struct pending_dm *due = NULL, **tail = &due;
    for (struct pending_dm **pp = &chat->dm_waits; *pp != NULL;) {
        struct pending_dm *pd = *pp;
        struct hub_iov r = pd_room(pd), to = pd_to(pd);
        if (r.len == room.len && memcmp(r.base, room.base, r.len) == 0 &&
            chat_nick_same(to.base, to.len, nick.base, nick.len)) {
            *pp = pd->next;
            pd->next = NULL;
            *tail = pd;
            tail = &pd->next;
            continue;
        }
        pp = &pd->next;
    }
    while (due != NULL) {
        struct pending_dm *pd = due;
        due = pd->next;
        pd->next = NULL;
        pd_send(pd);
    }
}

void chat_dm_tick(struct hub_chat *chat, int64_t now, int all)
{
    struct pending_dm *due = NULL, **tail = &due;
    for (struct pending_dm **pp = &chat->dm_waits; *pp != NULL;) {
        struct pending_dm *pd = *pp;
        if (all || pd->cl->dead || now - pd->since >= DM_WAIT_MS) {
            *pp = pd->next;
            pd->next = NULL;
            *tail = pd;
            tail = &pd->next;
            continue;
        }
        pp = &pd->next;
    }
    while (due != NULL) {
        struct pending_dm *pd = due;
        due = pd->next;
        pd->next = NULL;
        if (all)
            pd_free(pd);
        else
            pd_send(pd); /* no join seen in time: send anyway */
    }
}

static void dm_invited(void *data, int err)
{
    struct pending_dm *pd = data;
    if (err == 0)
        return; /* it waits for the peer's join (or the tick) */
    pd_unlink(pd);
    /* The dms queued behind it fail alike. */
    struct hub_chat *chat = pd->cl->chat;
    for (struct pending_dm **pp = &chat->dm_waits; *pp != NULL;) {
        struct pending_dm *w = *pp;
        if (w->behind && w->room_len == pd->room_len &&
            memcmp(w->bytes, pd->bytes, pd->room_len) == 0) {
            *pp = w->next;
            w->next = NULL;
            if (err == HUB_ENOENT)
                pd_fail(w, "no_such_nick", "no connected client has that nick", 0);
            else
                pd_fail(w, NULL, "the direct message could not be sent", err);
            continue;
        }
        pp = &w->next;
    }
    if (err == HUB_ENOENT)
        pd_fail(pd, "no_such_nick", "no connected client has that nick", 0);
    else
        pd_fail(pd, NULL, "the direct message could not be sent", err);
}

/* The room's members: is the peer in it already (then its node is
 * subscribed and the message can go), or must it be invited first? */
static void dm_members_cb(void *data, int err, uint64_t total, const struct hub_engine_member *m,
                          size_t n)
{
    (void)total;
    struct pending_dm *pd = data;
    struct hub_chat_client *cl = pd->cl;
    struct hub_iov to = pd_to(pd), room = pd_room(pd);
    if (cl->dead) {
        pd_free(pd);
        return;
    }
    if (err != 0) {
        pd_fail(pd, NULL, "the direct message could not be sent", err);
        return;
    }
    /* Behind an earlier dm to the same room still waiting, whatever the
     * members say: the messages keep their order. */
    int behind = 0;
    for (struct pending_dm *w = cl->chat->dm_waits; w != NULL; w = w->next)
        if (w->room_len == room.len && memcmp(w->bytes, room.base, room.len) == 0)
            behind = 1;
    for (size_t i = 0; i < n && !behind; i++)
        if (chat_nick_same(m[i].nick.base, m[i].nick.len, to.base, to.len)) {
            pd_send(pd);
            return;
        }
    /* The sender joins first, so that this node is subscribed to the room
     * and hears the peer's join. */
    struct hub_room *r = hub_rooms_find(cl->chat->rooms, room.base, room.len);
    pd->joined_self = !behind && (r == NULL || !hub_rooms_is_member(&cl->member, r));
    int rc = dm_ensure_member(cl, (struct hub_iov){cl->nick, cl->nick_len}, 1, room, &r);
    if (rc != 0) {
        pd->joined_self = 0;
        pd_fail(pd, NULL, "out of memory", rc);
        return;
    }
    pd->since = chat_now(cl->chat);
    /* Oldest first, so that several dms to one peer go out in order. */
    struct pending_dm **pp = &cl->chat->dm_waits;
    while (*pp != NULL)
        pp = &(*pp)->next;
    pd->next = NULL;
    *pp = pd;
    pd->behind = behind;
    if (behind)
        return; /* released with the one ahead of it */
    char key[CHAT_NICK_KEY_MAX];
    struct hub_iov to_k = {key, chat_nick_key(to.base, to.len, key)};
    rc = hub_engine_invite(cl->chat->engine, to_k, room, (struct hub_iov){cl->nick, cl->nick_len},
                           dm_invited, pd);
    if (rc != 0) {
        pd_unlink(pd);
        pd_fail(pd, NULL, "the direct message could not be sent", rc);
    }
}

/* A dm to a nick held on another node (if anywhere). */
static void dm_remote(struct request *rq, struct hub_iov to)
{
    struct hub_chat_client *cl = rq->cl;
    struct hub_iov text, cmid;
    if (chat_nick_same(to.base, to.len, cl->nick, cl->nick_len)) {
        chat_send_error(cl, rq->id, "bad_request", "a direct message needs another nick");
        return;
    }
    if (to.len == 0 || to.len > HUB_CHAT_NICK_BYTES || memchr(to.base, ',', to.len) != NULL) {
        chat_send_error(cl, rq->id, "no_such_nick", "no connected client has that nick");
        return;
    }
    if (get_text(rq, &text, &cmid) != 0)
        return;
    char name[DM_NAME_MAX];
    size_t n = dm_room_name(name, cl, (struct hub_iov){cl->nick, cl->nick_len}, NULL, to);
    if (n == 0) {
        chat_send_error(cl, rq->id, "bad_request", "the direct-message room name is too long");
        return;
    }
    struct hub_room *room = hub_rooms_find(cl->chat->rooms, name, n);
    if ((room == NULL || !hub_rooms_is_member(&cl->member, room)) &&
        cl->member.nrooms >= cl->chat->cfg.max_rooms_per_client) {
        chat_send_error(cl, rq->id, "too_many_rooms", "you are in the maximum number of rooms");
        return;
    }
    struct pending_dm *pd = calloc(1, sizeof(*pd) + n + text.len + cmid.len + to.len);
    if (pd == NULL) {
        chat_send_error(cl, rq->id, "internal", "out of memory");
        return;
    }
    pd->cl = cl;
    pd->id = rq->id;
    pd->room_len = n;
    pd->text_len = text.len;
    pd->cmid_len = cmid.len;
    pd->to_len = to.len;
    char *w = pd->bytes;
    memcpy(w, name, n);
    memcpy(w += n, text.base, text.len);
    if (cmid.len > 0)
        memcpy(w + text.len, cmid.base, cmid.len);
    memcpy(w + text.len + cmid.len, to.base, to.len);
    chat_client_ref(cl);
    int rc = hub_engine_members(cl->chat->engine, (struct hub_iov){name, n}, HUB_CHAT_LIST_MAX,
                                dm_members_cb, pd);
    if (rc != 0) {
        chat_send_engine_error(cl, rq->id, rc, "the direct message could not be sent");
        pd_free(pd);
    }
}

/* The engine's on_invite: the local holder of nick joins room (a dm push
 * tells it), wherever the sender is. nick is the claim key (what chat
 * claims), so the client is found by that key and must be the client the
 * claim names. */
void chat_on_invite(void *data, struct hub_iov client, struct hub_iov nick, struct hub_iov room,
                    struct hub_iov from)
{
    struct hub_chat *chat = data;
    struct hub_chat_client *c = chat_nick_find_key(chat, nick.base, nick.len);
    if (c == NULL || c->dead)
        return; /* gone, or renamed since */
    char owner[CHAT_OWNER_MAX];
    size_t olen = chat_claim_owner(c, owner);
    if (c->user != NULL ? client.len != olen || memcmp(client.base, owner, olen) != 0
                        : chat_local_id(chat, client) != c->id)
        return; /* the claim is someone else's */
    struct hub_room *r;
    if (room.len == 0 || room.len > HUB_ROOM_NAME_MAX || room.base[0] != '@')
        return;
    if (dm_ensure_member(c, from, 0, room, &r) != 0)
        hub_log_debug("dm: could not join %s to %.*s", c->nick, (int)room.len, room.base);
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
    if (peer == NULL && cl->chat->id_prefix_len == 0) {
        /* The memory engine is one node: every nick is in the local table. */
        chat_send_error(cl, rq->id, "no_such_nick", "no connected client has that nick");
        return;
    }
    if (peer == NULL) {
        dm_remote(rq, to);
        return;
    }
    if (peer == cl) {
        chat_send_error(cl, rq->id, "bad_request", "a direct message needs another nick");
        return;
    }
    if (get_text(rq, &text, &cmid) != 0)
        return;
    struct hub_iov me = {cl->nick, cl->nick_len};
    char name[DM_NAME_MAX];
    size_t n = dm_room_name(name, cl, me, peer, (struct hub_iov){peer->nick, peer->nick_len});
    if (n == 0) {
        chat_send_error(cl, rq->id, "bad_request", "the direct-message room name is too long");
        return;
    }
    struct hub_iov room_name = {name, n};
    struct hub_room *room = hub_rooms_find(cl->chat->rooms, name, n);
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
    int rc = dm_ensure_member(cl, me, 1, room_name, &room);
    if (rc == 0)
        rc = dm_ensure_member(peer, me, 0, room_name, &room);
    if (rc != 0) {
        chat_send_engine_error(cl, rq->id, rc, "out of memory");
        return;
    }
    chat_publish(cl, rq->id, room_name, HUB_WS_TEXT, text, cmid);
}

/* A rooms request waiting for the engine's counts. */
struct pending_rooms {
    struct hub_chat_client *cl; /* the client (a reference) */
    struct req_id id;           /* the request's id */
};

static int by_size_desc(const void *x, const void *y)
{
    const struct hub_engine_room_count *a = x, *b = y;
    if (a->members != b->members)
        return a->members < b->members ? 1 : -1;
    size_t n = a->room.len < b->room.len ? a->room.len : b->room.len;
    int c = memcmp(a->room.base, b->room.base, n);
    if (c != 0)
        return c;
    return a->room.len < b->room.len ? -1 : a->room.len > b->room.len;
}

static void rooms_cb(void *data, int err, const struct hub_engine_room_count *r, size_t n)
{
    struct pending_rooms *pr = data;
    struct hub_chat_client *cl = pr->cl;
    struct hub_engine_room_count *l = NULL;
    size_t k = 0;
    if (err == 0 && n > 0 && (l = malloc(n * sizeof(*l))) == NULL)
        err = HUB_ENOMEM;
    if (err != 0) {
        chat_send_engine_error(cl, pr->id, err, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++)
        if (r[i].room.len > 0 && r[i].room.base[0] != '@') /* direct-message rooms are private */
            l[k++] = r[i];
    if (k > 1)
        qsort(l, k, sizeof(*l), by_size_desc);
    struct hub_jsonw b = {0};
    chat_begin_reply(&b, pr->id);
    hub_jsonw_key(&b, "rooms");
    hub_jsonw_raw(&b, "[");
    for (size_t i = 0; i < k && i < ROOMS_LIST_MAX; i++) {
        hub_jsonw_raw(&b, i ? ",{" : "{");
        hub_jsonw_kstr(&b, "room", l[i].room.base, l[i].room.len);
        hub_jsonw_kint(&b, "members", (long long)l[i].members);
        hub_jsonw_raw(&b, "}");
    }
    hub_jsonw_raw(&b, "]}");
    if (pr->id.has)
        chat_send_json(cl, &b, pr->id);
    hub_jsonw_free(&b);
done:
    free(l);
    free(pr);
    chat_client_unref(cl);
}

static void op_rooms(struct request *rq)
{
    struct pending_rooms *pr = malloc(sizeof(*pr));
    if (pr == NULL) {
        chat_send_error(rq->cl, rq->id, "internal", "out of memory");
        return;
    }
    pr->cl = rq->cl;
    pr->id = rq->id;
    chat_client_ref(rq->cl);
    int rc = hub_engine_rooms(rq->cl->chat->engine, ROOMS_ASK_MAX, rooms_cb, pr);
    if (rc != 0) {
        chat_send_engine_error(rq->cl, rq->id, rc, "out of memory");
        free(pr);
        chat_client_unref(rq->cl);
    }
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

/* hello with tokens on: verifies "token" and makes the client signed, its
 * nick the token's name. Returns 1 (signed, *nick set), 0 (no token, and
 * guests are allowed), or -1 after an error reply (auth_required,
 * bad_token, nick_taken). */
static int hello_token(struct request *rq, struct hub_iov *nick)
{
    struct hub_chat_client *cl = rq->cl;
    struct hub_iov tok;
    int has = get_str(rq, "token", &tok);
    if (has < 0) {
        chat_send_error(cl, rq->id, "bad_token", "\"token\" must be a string");
        return -1;
    }
    if (has == 0 || tok.len == 0) {
        if (cl->chat->cfg.guests)
            return 0;
        chat_send_error(cl, rq->id, "auth_required",
                        "this hub needs a token: give \"token\" in hello (the site you came from "
                        "signs one for you)");
        return -1;
    }
    struct hub_auth_identity id = {0};
    const char *why = NULL;
    int rc = hub_auth_verify(cl->chat->cfg.auth, tok.base, tok.len, chat_now(cl->chat) / 1000, &id,
                             &why);
    if (rc == HUB_ENOMEM) {
        chat_send_error(cl, rq->id, "internal", "out of memory");
        return -1;
    }
    if (rc != 0) {
        chat_send_error(cl, rq->id, "bad_token", why != NULL ? why : "invalid token");
        return -1;
    }
    /* The name is shown as a nick, so it follows the nick rules; "~" is
     * the guests' mark. */
    const char *bad = chat_nick_problem(id.name, strlen(id.name));
    if (bad == NULL)
        bad = hub_ident_nick_check(id.name, strlen(id.name));
    if (bad == NULL && id.name[0] == '~')
        bad = "names starting with ~ are the guests'";
    if (bad != NULL) {
        char msg[160];
        snprintf(msg, sizeof(msg), "the name claim is not a valid nick: %s", bad);
        hub_auth_identity_clear(&id);
        chat_send_error(cl, rq->id, "bad_token", msg);
        return -1;
    }
    if (chat_set_user(cl, &id) != 0) {
        hub_auth_identity_clear(&id);
        chat_send_error(cl, rq->id, "internal", "out of memory");
        return -1;
    }
    *nick = chat_iov_str(cl->user->id.name);
    if (check_nick_free(rq, *nick) != 0) {
        chat_clear_user(cl);
        return -1;
    }
    return 1;
}

static void op_hello(struct request *rq)
{
    struct hub_chat_client *cl = rq->cl;
    if (cl->hello) {
        chat_send_error(cl, rq->id, "already_hello", "hello was already done");
        return;
    }
    if (cl->claiming) {
        chat_send_error(cl, rq->id, "unavailable", "a hello is on its way; try again");
        return;
    }
    struct hub_iov nick;
    char buf[HUB_CHAT_NICK_BYTES + 1];
    int signed_in = 0;
    if (cl->chat->cfg.auth != NULL) {
        if ((signed_in = hello_token(rq, &nick)) < 0)
            return;
        if (!signed_in && (check_nick(rq, &nick) != 0 || guest_nick(rq, &nick, buf) != 0))
            return;
    } else if (check_nick(rq, &nick) != 0) {
        return;
    }
    json_t *resume = json_object_get(rq->root, "resume");
    if (resume != NULL && !json_is_null(resume) && !json_is_object(resume)) {
        chat_send_error(cl, rq->id, "bad_request",
                        "\"resume\" must be an object of room positions");
        chat_clear_user(cl);
        return;
    }
    /* Everything that can fail comes before the nick is committed, so a
     * refused hello leaves the client as it was and a retry can succeed. */
    struct hello_state *hs = chat_hello_new(cl, rq->id);
    if (hs == NULL) {
        chat_send_error(cl, rq->id, "internal", "out of memory");
        chat_clear_user(cl);
        return;
    }
    start_claim(rq, nick, hs, resume);
}

/* ---- dispatch ------------------------------------------------------- */

static const struct {
    const char *name;
    void (*fn)(struct request *rq);
} ops[] = {
    {"hello", op_hello},
    {"join", op_join},
    {"leave", op_leave},
    {"send", op_send},
    {"history", op_history},
    {"typing", op_typing},
    {"nick", op_nick},
    {"dm", op_dm},
    {"rooms", op_rooms},
    {"ping", op_ping},
    /* Issue 15: message operations (chat_edit.c). */
    {"edit", chat_op_edit},
    {"delete", chat_op_delete},
    {"react", chat_op_react},
    {"unreact", chat_op_unreact},
    {"search", chat_op_search},
    /* Issue 13 part 2: moderation (chat_mod.c). */
    {"kick", chat_op_kick},
    {"ban", chat_op_ban},
    {"unban", chat_op_unban},
    {"mute", chat_op_mute},
    {"unmute", chat_op_unmute},
    {"topic", chat_op_topic},
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

/* ---- the backlog behind a nick claim ----------------------------------- */

/* A request that came while a nick claim was on its way. */
struct backlog_item {
    struct backlog_item *next; /* the next one to handle */
    size_t len;                /* bytes in data */
    char data[];               /* the frame's payload */
};

struct chat_backlog {
    struct backlog_item *head, *tail; /* oldest first */
    uint32_t n;                       /* items */
    size_t bytes;                     /* their payload bytes */
    int draining;                     /* backlog_drain is running (it may re-enter) */
};

void chat_backlog_free(struct hub_chat_client *cl)
{
    struct chat_backlog *bl = cl->backlog;
    if (bl == NULL)
        return;
    while (bl->head != NULL) {
        struct backlog_item *it = bl->head;
        bl->head = it->next;
        free(it);
    }
    free(bl);
    cl->backlog = NULL;
}

static void json_handle(struct hub_chat_client *cl, const char *data, size_t len);

/* Handles the waiting requests in order while no claim or reply is on its
 * way: a request that starts one (a nick behind the hello, a join) stops
 * the walk, and its completion walks on. */
void chat_backlog_drain(struct hub_chat_client *cl)
{
    struct chat_backlog *bl = cl->backlog;
    if (bl == NULL || bl->draining)
        return;
    bl->draining = 1;
    while (!cl->dead && !cl->claiming && cl->waiting == 0 && bl->head != NULL) {
        struct backlog_item *it = bl->head;
        bl->head = it->next;
        if (bl->head == NULL)
            bl->tail = NULL;
        bl->n--;
        bl->bytes -= it->len;
        json_handle(cl, it->data, it->len);
        free(it);
    }
    bl->draining = 0;
    if (bl->head == NULL || cl->dead)
        chat_backlog_free(cl);
}

/* Keeps a frame that came during a claim. Past the limits the request is
 * refused (rate_limited, with its id when it has one) and nothing kept. */
static void backlog_push(struct hub_chat_client *cl, const char *data, size_t len)
{
    struct chat_backlog *bl = cl->backlog;
    if (bl == NULL && (bl = cl->backlog = calloc(1, sizeof(*bl))) == NULL) {
        chat_send_error(cl, NO_ID, "internal", "out of memory");
        return;
    }
    struct backlog_item *it = NULL;
    if (bl->n < CHAT_BACKLOG_MAX && bl->bytes + len <= CHAT_BACKLOG_BYTES)
        it = malloc(sizeof(*it) + len);
    if (it == NULL) {
        struct req_id id = NO_ID;
        json_t *root = json_loadb(data, len, JSON_ALLOW_NUL, NULL);
        if (root == NULL || !json_is_object(root) || chat_parse_id(root, &id) != 0)
            id = NO_ID;
        json_decref(root);
        chat_send_error(cl, id, "rate_limited",
                        "too many requests while the nick claim is on its way: slow down");
        return;
    }
    it->next = NULL;
    it->len = len;
    memcpy(it->data, data, len);
    if (bl->tail != NULL)
        bl->tail->next = it;
    else
        bl->head = it;
    bl->tail = it;
    bl->n++;
    bl->bytes += len;
}

void chat_json_message(struct hub_chat_client *cl, const char *data, size_t len)
{
    /* A hello's (or nick's) claim is asynchronous with several nodes: what
     * was pipelined behind it waits, rather than meeting hello_required;
     * and behind a join's reply, so that replies come in request order. */
    if (cl->claiming || cl->waiting > 0 || (cl->backlog != NULL && cl->backlog->head != NULL)) {
        backlog_push(cl, data, len);
        return;
    }
    json_handle(cl, data, len);
}

static void json_handle(struct hub_chat_client *cl, const char *data, size_t len)
{
    json_error_t err;
    struct request rq = {cl, NULL, {0, 0}};
    /* JSON allows \u0000 in strings; the nick, room and text rules refuse
     * it (message text: bad_text, see hub_ident_text_check). */
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
