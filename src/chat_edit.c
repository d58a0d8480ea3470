/*
 * chat_edit.c: message operations after sending (issue 15): edit, delete,
 * react, unreact and search; the keys that say whose a message is; the
 * mentions of a text; how one stored message is written; and the engine's
 * on_amend upcall that pushes edited, deleted and reaction events.
 *
 * Every check that depends on the stored message (its author, the 24 h
 * window, the emoji limit, whether it exists) is the engine's, made
 * atomically with the change (hub_engine_amend); chat checks the request's
 * shape and maps the engine's answer to error codes. The pushes come only
 * from on_amend, on every node with members, so every member (the actor
 * included) sees the change once, whichever node made it.
 */
#include "chat_int.h"
#include "hub/engine.h"
#include "hub/history.h"
#include "hub/log.h"
#include "hub/utf8.h"
#include "hub/ws.h"

#include <stdlib.h>
#include <string.h>

/* ---- keys and roles --------------------------------------------------- */

size_t chat_author_key(const struct hub_chat_client *cl, char *buf)
{
    if (cl->mode == HUB_CHAT_RAW) {
        buf[0] = '\0';
        return 0; /* raw lines are nobody's: only moderators delete them */
    }
    if (cl->user != NULL) {
        int n = snprintf(buf, CHAT_KEY_MAX, "u:%s", cl->user->id.sub);
        return n > 0 ? (size_t)n : 0;
    }
    /* A guest's messages are its connection's: a reconnect is somebody
     * else, as far as the hub can tell. */
    buf[0] = 'g';
    buf[1] = ':';
    return 2 + chat_client_id(cl, buf + 2);
}

size_t chat_actor_key(const struct hub_chat_client *cl, char *buf)
{
    if (cl->user != NULL) {
        /* A signed raw client too: its bans and mutes hold for its lines. */
        int n = snprintf(buf, CHAT_KEY_MAX, "u:%s", cl->user->id.sub);
        return n > 0 ? (size_t)n : 0;
    }
    if (cl->mode == HUB_CHAT_RAW) {
        buf[0] = '\0'; /* an unsigned raw line: guest-<n> names nobody twice */
        return 0;
    }
    /* A guest is restricted by its nick's claim key, so that a look-alike
     * nick does not escape a ban. */
    buf[0] = 'n';
    buf[1] = ':';
    return 2 + chat_nick_key(cl->nick, cl->nick_len, buf + 2);
}

int chat_is_mod(const struct hub_chat_client *cl)
{
    return cl->user != NULL && cl->user->id.role >= HUB_AUTH_MOD;
}

/* ---- mentions --------------------------------------------------------- */

/* Bytes that may be part of a nick after "@": anything but ASCII white
 * space and the punctuation that usually ends a mention. */
static int nick_byte(unsigned char c)
{
    return c > 0x20 && c != ',' && c != '.' && c != ':' && c != ';' && c != '!' && c != '?' &&
           c != ')' && c != '(' && c != '"' && c != '\'' && c != '@';
}

size_t chat_mentions(const struct hub_chat *chat, struct hub_iov text, char *out, size_t outsz)
{
    size_t len = 0, found = 0;
    const char *s = text.base, *end = text.base + text.len;
    for (const char *p = s; p < end && found < HUB_HISTORY_MENTIONS_MAX; p++) {
        if (*p != '@' || (p > s && nick_byte((unsigned char)p[-1])))
            continue;
        const char *q = p + 1;
        while (q < end && nick_byte((unsigned char)*q))
            q++;
        size_t n = (size_t)(q - (p + 1));
        if (n == 0 || n > HUB_CHAT_NICK_BYTES)
            continue;
        /* A member on this node, or a guest "~nick" named without its mark. */
        struct hub_chat_client *c = chat_nick_find(chat, p + 1, n);
        if (c == NULL && n < HUB_CHAT_NICK_BYTES) {
            char g[HUB_CHAT_NICK_BYTES + 1];
            g[0] = '~';
            memcpy(g + 1, p + 1, n);
            c = chat_nick_find(chat, g, n + 1);
        }
        if (c == NULL || c->nick_len + 1 > outsz - len)
            continue;
        /* Once per nick. */
        int dup = 0;
        for (size_t i = 0; i < len;) {
            const char *nl = memchr(out + i, '\n', len - i);
            size_t l = (size_t)(nl - (out + i));
            if (chat_nick_same(out + i, l, c->nick, c->nick_len))
                dup = 1;
            i += l + 1;
        }
        if (dup)
            continue;
        memcpy(out + len, c->nick, c->nick_len);
        len += c->nick_len;
        out[len++] = '\n';
        found++;
        p = q - 1;
    }
    return len;
}

void chat_jw_mentions(struct hub_jsonw *b, struct hub_iov mentions)
{
    if (mentions.len == 0)
        return;
    hub_jsonw_key(b, "mentions");
    hub_jsonw_raw(b, "[");
    for (size_t i = 0; i < mentions.len;) {
        const char *nl = memchr(mentions.base + i, '\n', mentions.len - i);
        size_t l = nl != NULL ? (size_t)(nl - (mentions.base + i)) : mentions.len - i;
        hub_jsonw_item(b);
        hub_jsonw_str(b, mentions.base + i, l);
        i += l + 1;
    }
    hub_jsonw_raw(b, "]");
}

void chat_jw_message(struct hub_jsonw *b, const struct hub_history_msg *m)
{
    hub_jsonw_raw(b, "{");
    hub_jsonw_kint(b, "offset", (long long)m->offset);
    hub_jsonw_kint(b, "ts", m->ts);
    hub_jsonw_kstr(b, "from", m->from.base, m->from.len);
    if (m->deleted) {
        /* A tombstone keeps its place (and its replies' target). */
        hub_jsonw_kbool(b, "deleted", 1);
        if (m->reply_to > 0)
            hub_jsonw_kuint(b, "reply_to", m->reply_to);
        hub_jsonw_raw(b, "}");
        return;
    }
    hub_jsonw_kstr(b, "text", m->text.base, m->text.len);
    if (m->cmid.len > 0)
        hub_jsonw_kstr(b, "cmid", m->cmid.base, m->cmid.len);
    if (m->reply_to > 0)
        hub_jsonw_kuint(b, "reply_to", m->reply_to);
    chat_jw_mentions(b, m->mentions);
    if (m->edited_ts != 0)
        hub_jsonw_kint(b, "edited_ts", m->edited_ts);
    if (m->nreactions > 0) {
        int mine = 0;
        hub_jsonw_key(b, "reactions");
        hub_jsonw_raw(b, "{");
        for (size_t i = 0; i < m->nreactions; i++) {
            const struct hub_history_reaction *r = &m->reactions[i];
            if (i)
                hub_jsonw_raw(b, ",");
            hub_jsonw_str(b, r->emoji.base, r->emoji.len);
            hub_jsonw_raw(b, ":");
            hub_jsonw_uint(b, r->count);
            mine |= r->mine;
        }
        hub_jsonw_raw(b, "}");
        if (mine) {
            hub_jsonw_key(b, "mine");
            hub_jsonw_raw(b, "[");
            for (size_t i = 0; i < m->nreactions; i++)
                if (m->reactions[i].mine) {
                    hub_jsonw_item(b);
                    hub_jsonw_str(b, m->reactions[i].emoji.base, m->reactions[i].emoji.len);
                }
            hub_jsonw_raw(b, "]");
        }
    }
    hub_jsonw_raw(b, "}");
}

/* ---- edit, delete, react, unreact -------------------------------------- */

/* An amendment waiting for the engine. */
struct pending_amend {
    struct hub_chat_client *cl; /* the client (a reference) */
    struct req_id id;           /* the request's id */
    int kind;                   /* enum hub_history_amend_kind */
    int moderator;              /* a moderator asked */
    uint64_t offset;            /* the message */
    size_t who_len;             /* bytes in who */
    char who[CHAT_KEY_MAX];     /* the asker's author key */
    size_t room_len;            /* bytes in room */
    char room[];                /* the room */
};

static const char *amend_what(int kind)
{
    return kind == HUB_AMEND_EDIT ? "edit" : kind == HUB_AMEND_DELETE ? "delete" : "react to";
}

/* The message a refused edit or delete named, read back to say which rule
 * refused it: not the asker's, or past the window. */
static void forbidden_cb(void *data, int err, const struct hub_history_pos *pos,
                         const struct hub_history_msg *msgs, size_t n, int complete)
{
    struct pending_amend *pa = data;
    (void)pos;
    (void)complete;
    char msg[200];
    const char *what = amend_what(pa->kind);
    if (err == 0 && n > 0 && msgs[0].offset == pa->offset && msgs[0].author.len == pa->who_len &&
        pa->who_len > 0 && memcmp(msgs[0].author.base, pa->who, pa->who_len) == 0)
        snprintf(msg, sizeof(msg), "too late to %s this message: authors may within 24 hours",
                 what);
    else if (pa->who[0] == 'g')
        snprintf(msg, sizeof(msg),
                 "you may %s only your own messages (a guest: only from the connection that "
                 "sent them)",
                 what);
    else
        snprintf(msg, sizeof(msg), "you may %s only your own messages", what);
    chat_send_error(pa->cl, pa->id, "forbidden", msg);
    chat_client_unref(pa->cl);
    free(pa);
}

static void amend_cb(void *data, int err, const struct hub_history_amended *r)
{
    struct pending_amend *pa = data;
    struct hub_chat_client *cl = pa->cl;
    const char *what = amend_what(pa->kind);
    char msg[160];
    if (err == HUB_ENOENT) {
        snprintf(msg, sizeof(msg),
                 "no message %llu to %s in this room (never sent, gone or deleted)",
                 (unsigned long long)pa->offset, what);
        chat_send_error(cl, pa->id, "no_such_message", msg);
    } else if (err == HUB_EPERM) {
        struct hub_history_query q = {.dir = HUB_HISTORY_AFTER, .pos = pa->offset - 1, .limit = 1};
        q.now_ms = chat_now(cl->chat);
        struct hub_iov room = {pa->room, pa->room_len};
        if (!cl->dead && hub_engine_query(cl->chat->engine, room, &q, forbidden_cb, pa) == 0)
            return; /* forbidden_cb answers and frees */
        snprintf(msg, sizeof(msg),
                 "you may %s only your own messages, within 24 hours of sending them", what);
        chat_send_error(cl, pa->id, "forbidden", msg);
    } else if (err == HUB_ELIMIT) {
        chat_send_error(cl, pa->id, "too_many_reactions",
                        "this message has as many different reactions as it may (20)");
    } else if (err == HUB_EINVAL) {
        chat_send_error(cl, pa->id, "bad_request", "the amendment is not valid");
    } else if (err != 0) {
        chat_send_engine_error(cl, pa->id, err, "the message could not be changed");
    } else {
        char by[CHAT_KEY_MAX];
        size_t bylen = chat_author_key(cl, by);
        int others = r->author.len != bylen || memcmp(r->author.base, by, bylen) != 0;
        if (r->changed && pa->kind == HUB_AMEND_EDIT)
            cl->chat->mod_count[CHAT_MOD_EDIT]++;
        if (r->changed && pa->kind == HUB_AMEND_DELETE) {
            cl->chat->mod_count[CHAT_MOD_DELETE]++;
            if (others)
                hub_log_info("moderation: %s deleted message %llu of %.*s in %.*s", cl->nick,
                             (unsigned long long)pa->offset, (int)r->from.len, r->from.base,
                             (int)pa->room_len, pa->room);
        }
        if (pa->id.has) {
            struct hub_jsonw b = {0};
            chat_begin_reply(&b, pa->id);
            if (pa->kind == HUB_AMEND_EDIT)
                hub_jsonw_kint(&b, "edited_ts", r->edited_ts);
            if (pa->kind == HUB_AMEND_REACT || pa->kind == HUB_AMEND_UNREACT)
                hub_jsonw_kuint(&b, "count", r->count);
            hub_jsonw_raw(&b, "}");
            chat_send_json(cl, &b, pa->id);
            hub_jsonw_free(&b);
        }
    }
    free(pa);
    chat_client_unref(cl);
}

/* Checks a reaction's emoji: 1..32 bytes of UTF-8, at most 8 code points,
 * no white space or control characters. Returns NULL or the reason. */
static const char *emoji_problem(struct hub_iov e)
{
    if (e.len == 0 || e.len > HUB_HISTORY_EMOJI_MAX)
        return "\"emoji\" must be 1-32 bytes";
    if (!hub_utf8_valid(e.base, e.len))
        return "\"emoji\" must be UTF-8";
    if (hub_utf8_length(e.base, e.len) > CHAT_EMOJI_POINTS_MAX)
        return "\"emoji\" must be at most 8 characters";
    for (size_t i = 0; i < e.len; i++) {
        unsigned char c = (unsigned char)e.base[i];
        if (c <= 0x20 || c == 0x7f)
            return "\"emoji\" must not hold spaces or control characters";
        /* U+0080..U+009F (C1 controls) and U+00A0 (no-break space). */
        if (c == 0xc2 && i + 1 < e.len && (unsigned char)e.base[i + 1] <= 0xa0)
            return "\"emoji\" must not hold spaces or control characters";
    }
    return NULL;
}

static void amend_op(struct request *rq, int kind)
{
    struct hub_chat_client *cl = rq->cl;
    struct hub_iov name, text = {"", 0}, emoji = {"", 0};
    if (chat_req_room(rq, &name) != 0)
        return;
    if (chat_joined_room(cl, name) == NULL) {
        chat_send_error(cl, rq->id, "not_joined", "join the room first");
        return;
    }
    uint64_t offset = 0;
    if (chat_req_uint(rq, "offset", UINT64_MAX >> 11, &offset) != 1 || offset == 0) {
        chat_send_error(cl, rq->id, "bad_request", "\"offset\" must be a message's offset");
        return;
    }
    if (kind == HUB_AMEND_EDIT && chat_req_text(rq, &text) != 0)
        return;
    if (kind == HUB_AMEND_REACT || kind == HUB_AMEND_UNREACT) {
        if (chat_req_str(rq, "emoji", &emoji) != 1) {
            chat_send_error(cl, rq->id, "bad_request", "\"emoji\" must be a string");
            return;
        }
        const char *why = emoji_problem(emoji);
        if (why != NULL) {
            chat_send_error(cl, rq->id, "bad_request", why);
            return;
        }
    }
    char who[CHAT_KEY_MAX];
    struct hub_history_amend a = {0};
    a.room = name;
    a.offset = offset;
    a.kind = kind;
    a.who.base = who;
    a.who.len = chat_author_key(cl, who);
    /* Moderators edit nothing but their own; they delete anyone's. */
    a.moderator = kind == HUB_AMEND_DELETE && chat_is_mod(cl);
    a.text = text;
    a.emoji = emoji;
    a.ts = chat_now(cl->chat);
    struct pending_amend *pa = malloc(sizeof(*pa) + name.len);
    if (pa == NULL) {
        chat_send_error(cl, rq->id, "internal", "out of memory");
        return;
    }
    pa->cl = cl;
    pa->id = rq->id;
    pa->kind = kind;
    pa->moderator = a.moderator;
    pa->offset = offset;
    pa->who_len = a.who.len;
    memcpy(pa->who, who, a.who.len + 1);
    pa->room_len = name.len;
    memcpy(pa->room, name.base, name.len);
    chat_client_ref(cl);
    struct hub_iov nick = {cl->nick, cl->nick_len};
    int rc = hub_engine_amend(cl->chat->engine, &a, nick, amend_cb, pa);
    if (rc != 0) {
        chat_send_engine_error(cl, rq->id, rc, "the message could not be changed");
        free(pa);
        chat_client_unref(cl);
    }
}

void chat_op_edit(struct request *rq)
{
    amend_op(rq, HUB_AMEND_EDIT);
}

void chat_op_delete(struct request *rq)
{
    amend_op(rq, HUB_AMEND_DELETE);
}

void chat_op_react(struct request *rq)
{
    amend_op(rq, HUB_AMEND_REACT);
}

void chat_op_unreact(struct request *rq)
{
    amend_op(rq, HUB_AMEND_UNREACT);
}

void chat_on_amend(void *data, const struct hub_engine_amended *a)
{
    struct hub_chat *chat = data;
    struct hub_room *r = hub_rooms_find(chat->rooms, a->room.base, a->room.len);
    if (r == NULL)
        return;
    struct hub_room_event ev = {.room = r, .offset = a->offset};
    switch (a->kind) {
    case HUB_AMEND_EDIT:
        ev.kind = EV_EDITED;
        ev.text = a->text;
        ev.edited_ts = a->edited_ts;
        break;
    case HUB_AMEND_DELETE:
        ev.kind = EV_DELETED;
        break;
    case HUB_AMEND_REACT:
    case HUB_AMEND_UNREACT:
        ev.kind = EV_REACTION;
        ev.emoji = a->emoji;
        ev.nick = a->nick;
        ev.count = a->count;
        ev.on = a->kind == HUB_AMEND_REACT;
        break;
    default:
        return;
    }
    chat_broadcast(&ev);
}

/* ---- search ------------------------------------------------------------ */

struct pending_search {
    struct hub_chat_client *cl; /* the client (a reference) */
    struct req_id id;           /* the request's id */
    size_t room_len;            /* bytes in room */
    char room[];                /* the room */
};

static void search_cb(void *data, int err, const struct hub_history_msg *msgs, size_t n,
                      int complete)
{
    struct pending_search *ps = data;
    struct hub_chat_client *cl = ps->cl;
    if (err == HUB_EINVAL) {
        chat_send_error(cl, ps->id, "bad_request", "\"q\" must hold at least one word");
    } else if (err != 0) {
        chat_send_engine_error(cl, ps->id, err, "search is not available");
    } else if (ps->id.has) {
        cl->chat->searches++;
        /* Newest first, as the engine gives them, bounded like a page. */
        size_t room_left;
        size_t budget = chat_page_budget(cl, &room_left);
        size_t k = chat_page_fit(msgs, n, 0, budget, room_left, NULL);
        struct hub_jsonw b = {0};
        chat_begin_reply(&b, ps->id);
        hub_jsonw_kstr(&b, "room", ps->room, ps->room_len);
        hub_jsonw_key(&b, "results");
        hub_jsonw_raw(&b, "[");
        for (size_t i = 0; i < k; i++) {
            if (i)
                hub_jsonw_raw(&b, ",");
            chat_jw_message(&b, &msgs[i]);
        }
        hub_jsonw_raw(&b, "]");
        if (k < n) {
            complete = 0;
            chat_jw_next(&b, "before", msgs[k > 0 ? k - 1 : 0].offset);
        } else if (!complete && k > 0) {
            chat_jw_next(&b, "before", msgs[k - 1].offset);
        }
        hub_jsonw_kbool(&b, "complete", complete);
        hub_jsonw_raw(&b, "}");
        chat_send_json(cl, &b, ps->id);
        hub_jsonw_free(&b);
    }
    free(ps);
    chat_client_unref(cl);
}

void chat_op_search(struct request *rq)
{
    struct hub_chat_client *cl = rq->cl;
    struct hub_iov name, q;
    if (chat_req_room(rq, &name) != 0)
        return;
    if (cl->user != NULL && name.base[0] != '@' &&
        !hub_auth_room_allowed(&cl->user->id, name.base, name.len)) {
        chat_send_error(cl, rq->id, "forbidden", "your token does not allow this room");
        return;
    }
    if (chat_joined_room(cl, name) == NULL) {
        chat_send_error(cl, rq->id, "not_joined", "join the room before searching it");
        return;
    }
    if (chat_req_str(rq, "q", &q) != 1 || q.len == 0 || q.len > CHAT_SEARCH_Q_MAX ||
        hub_ident_text_check(q.base, q.len) != NULL) {
        chat_send_error(cl, rq->id, "bad_request", "\"q\" must be a string of 1-200 bytes");
        return;
    }
    uint64_t before = 0, limit = CHAT_SEARCH_DEFAULT;
    if (chat_req_uint(rq, "before", UINT64_MAX >> 11, &before) < 0 ||
        chat_req_uint(rq, "limit", CHAT_SEARCH_MAX, &limit) < 0 || limit == 0) {
        chat_send_error(cl, rq->id, "bad_request",
                        "\"before\" must be an offset and \"limit\" 1-50");
        return;
    }
    struct pending_search *ps = malloc(sizeof(*ps) + name.len);
    if (ps == NULL) {
        chat_send_error(cl, rq->id, "internal", "out of memory");
        return;
    }
    ps->cl = cl;
    ps->id = rq->id;
    ps->room_len = name.len;
    memcpy(ps->room, name.base, name.len);
    chat_client_ref(cl);
    int rc = hub_engine_search(cl->chat->engine, name, q, before, (unsigned)limit, search_cb, ps);
    if (rc != 0) {
        if (rc == HUB_EINVAL)
            chat_send_error(cl, rq->id, "bad_request", "\"q\" must hold at least one word");
        else
            chat_send_engine_error(cl, rq->id, rc, "search is not available");
        free(ps);
        chat_client_unref(cl);
    }
}
