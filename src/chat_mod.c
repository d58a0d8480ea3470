/*
 * chat_mod.c: moderation (issue 13, part 2): kick, ban/unban, mute/unmute
 * and topic for clients whose token has role mod or admin, and the engine's
 * on_control upcall that applies kicks, bans, disconnects and topics to this
 * node's clients (the same upcall serves the server API's requests).
 *
 * A ban or mute is recorded through the engine (hub_engine_restrict, kept
 * by the store, so the SQLite store keeps it across restarts), and checked
 * by the engine at every publish and (a ban) at every join's query. A ban
 * also removes the target at once with a HUB_CONTROL_BAN to every node; a
 * mute goes out as a HUB_CONTROL_MUTE, which gives the target its muted (or
 * unmuted) push on whichever node it is.
 *
 * Targets are named by nick. A nick held on this node by a signed user is
 * restricted by its user id ("u:<sub>", every connection and every later
 * nick); any other nick by its claim key ("n:<key>", the key guests are
 * checked by). For a ban the BAN control carries the nick, and the node
 * where a signed user holds it records the ban (or, with until 0, the
 * unban) under the user id as well (restrict_holder), so a ban reaches a
 * signed user on any node; a MUTE control does the same for mutes.
 */
#include "chat_int.h"
#include "hub/engine.h"
#include "hub/history.h"
#include "hub/log.h"
#include "hub/ws.h"

#include <stdlib.h>
#include <string.h>

static const char *const action_names[CHAT_MOD_NACTIONS] = {
    "kick", "ban", "unban", "mute", "unmute", "delete", "topic", "edit",
};

const char *chat_mod_action_name(int action)
{
    return action >= 0 && action < CHAT_MOD_NACTIONS ? action_names[action] : "?";
}

/* What a moderation request asked for, parsed. Views borrow the request. */
struct mod_args {
    struct hub_iov room;   /* empty: the whole hub */
    struct hub_iov nick;   /* the target */
    struct hub_iov reason; /* may be empty */
    uint64_t duration;     /* seconds; 0: for good */
};

/* Checks role and fields. hub_ok: a hub-wide scope may be asked for (ban,
 * mute). Returns 0, or -1 after an error reply. */
static int mod_parse(struct request *rq, int hub_ok, int need_nick, int has_duration,
                     struct mod_args *a)
{
    struct hub_chat_client *cl = rq->cl;
    memset(a, 0, sizeof(*a));
    a->room.base = a->nick.base = a->reason.base = "";
    if (!chat_is_mod(cl)) {
        chat_send_error(cl, rq->id, "forbidden", "only moderators (token role mod or admin) may");
        return -1;
    }
    json_t *hub = json_object_get(rq->root, "hub");
    int rc = chat_req_str(rq, "room", &a->room);
    if (rc < 0) {
        chat_send_error(cl, rq->id, "bad_request", "\"room\" must be a string or null");
        return -1;
    }
    if (rc == 0) {
        if (!hub_ok || !json_is_true(hub)) {
            chat_send_error(cl, rq->id, "bad_request",
                            hub_ok ? "give \"room\", or \"hub\": true for the whole hub"
                                   : "\"room\" must be a string");
            return -1;
        }
        if (cl->user->id.role < HUB_AUTH_ADMIN) {
            chat_send_error(cl, rq->id, "forbidden", "only admins act on the whole hub");
            return -1;
        }
    } else {
        const char *why = chat_room_problem(cl, a->room);
        if (why != NULL) {
            chat_send_error(cl, rq->id, "bad_room", why);
            return -1;
        }
        if (a->room.base[0] != '@' &&
            !hub_auth_room_allowed(&cl->user->id, a->room.base, a->room.len)) {
            chat_send_error(cl, rq->id, "forbidden", "your token does not allow this room");
            return -1;
        }
    }
    if (need_nick && (chat_req_str(rq, "nick", &a->nick) != 1 || a->nick.len == 0 ||
                      a->nick.len > HUB_CHAT_NICK_BYTES)) {
        chat_send_error(cl, rq->id, "bad_request", "\"nick\" must name the user");
        return -1;
    }
    if (chat_req_str(rq, "reason", &a->reason) < 0 || a->reason.len > CHAT_REASON_MAX ||
        hub_ident_text_check(a->reason.base, a->reason.len) != NULL) {
        chat_send_error(cl, rq->id, "bad_request", "\"reason\" must be text of at most 512 bytes");
        return -1;
    }
    if (has_duration && chat_req_uint(rq, "duration", 100ull * 365 * 86400, &a->duration) < 0) {
        chat_send_error(cl, rq->id, "bad_request",
                        "\"duration\" must be seconds (0 or absent: for good)");
        return -1;
    }
    return 0;
}

/* The local holder of nick, or of "~nick" (a guest named without its
 * mark), or NULL. */
static struct hub_chat_client *find_target(const struct hub_chat *chat, struct hub_iov nick)
{
    struct hub_chat_client *c = chat_nick_find(chat, nick.base, nick.len);
    if (c != NULL || nick.len == 0 || nick.base[0] == '~' || nick.len >= HUB_CHAT_NICK_BYTES)
        return c;
    char g[HUB_CHAT_NICK_BYTES + 1];
    g[0] = '~';
    memcpy(g + 1, nick.base, nick.len);
    return chat_nick_find(chat, g, nick.len + 1);
}

/* 1 if the member's nick m is nick, or "~nick". */
static int same_target(struct hub_iov m, struct hub_iov nick)
{
    if (chat_nick_same(m.base, m.len, nick.base, nick.len))
        return 1;
    return m.len == nick.len + 1 && m.base[0] == '~' && nick.len > 0 && nick.base[0] != '~' &&
           chat_nick_same(m.base + 1, m.len - 1, nick.base, nick.len);
}

/* The target of a control message for nick: "u:<sub>" when a signed user
 * holds it on this node, else the nick. Returns its length in buf. */
static size_t control_target(const struct hub_chat *chat, struct hub_iov nick, char *buf)
{
    struct hub_chat_client *c = find_target(chat, nick);
    if (c != NULL && c->user != NULL) {
        int n = snprintf(buf, CHAT_KEY_MAX, "u:%s", c->user->id.sub);
        return n > 0 ? (size_t)n : 0;
    }
    memcpy(buf, nick.base, nick.len);
    return nick.len;
}

/* The restriction key for nick (see the file comment). */
static size_t restrict_key(const struct hub_chat *chat, struct hub_iov nick, char *buf)
{
    struct hub_chat_client *c = find_target(chat, nick);
    if (c != NULL)
        return chat_actor_key(c, buf);
    buf[0] = 'n';
    buf[1] = ':';
    return 2 + chat_nick_key(nick.base, nick.len, buf + 2);
}

/* A moderation request waiting for the engine: the control message (or
 * push) it sends once the record is stored, with its strings. */
struct pending_mod {
    struct hub_chat_client *cl; /* the moderator (a reference) */
    struct req_id id;           /* the request's id */
    int action;                 /* enum chat_mod_action */
    int kind;                   /* HUB_RESTRICT_BAN/MUTE */
    int64_t until;              /* ban/mute until (0: lifted) */
    struct hub_iov room, nick, reason, target;
    char buf[]; /* room, nick, reason, target */
};

static struct pending_mod *pm_new(struct request *rq, int action, const struct mod_args *a)
{
    char target[CHAT_KEY_MAX];
    size_t tlen = control_target(rq->cl->chat, a->nick, target);
    struct pending_mod *pm =
        malloc(sizeof(*pm) + a->room.len + a->nick.len + a->reason.len + tlen + 4);
    if (pm == NULL) {
        chat_send_error(rq->cl, rq->id, "internal", "out of memory");
        return NULL;
    }
    pm->cl = rq->cl;
    pm->id = rq->id;
    pm->action = action;
    pm->kind = 0;
    pm->until = 0;
    char *w = pm->buf;
    const struct hub_iov *src[4] = {&a->room, &a->nick, &a->reason, NULL};
    struct hub_iov t = {target, tlen};
    src[3] = &t;
    struct hub_iov *dst[4] = {&pm->room, &pm->nick, &pm->reason, &pm->target};
    for (int i = 0; i < 4; i++) {
        memcpy(w, src[i]->base, src[i]->len);
        w[src[i]->len] = '\0';
        dst[i]->base = w;
        dst[i]->len = src[i]->len;
        w += src[i]->len + 1;
    }
    chat_client_ref(rq->cl);
    return pm;
}

static void pm_done(struct pending_mod *pm)
{
    chat_client_unref(pm->cl);
    free(pm);
}

/* Logs and counts a done action, and answers the moderator. */
static void mod_succeeded(struct pending_mod *pm)
{
    struct hub_chat_client *cl = pm->cl;
    cl->chat->mod_count[pm->action]++;
    hub_log_info("moderation: %s by %s (%s) on %.*s in %.*s: %.*s",
                 chat_mod_action_name(pm->action), cl->nick,
                 hub_auth_role_name(cl->user != NULL ? cl->user->id.role : 0), (int)pm->nick.len,
                 pm->nick.base, pm->room.len > 0 ? (int)pm->room.len : 5,
                 pm->room.len > 0 ? pm->room.base : "(hub)", (int)pm->reason.len, pm->reason.base);
    chat_send_ok(cl, pm->id);
}

static void send_control(struct pending_mod *pm, int kind, struct hub_iov text, int64_t until)
{
    struct hub_engine_control c = {0};
    c.kind = kind;
    c.target = kind == HUB_CONTROL_TOPIC ? (struct hub_iov){"", 0} : pm->target;
    c.room = pm->room;
    c.text = text;
    c.by.base = pm->cl->nick;
    c.by.len = pm->cl->nick_len;
    c.until_ms = until;
    int rc = hub_engine_control(pm->cl->chat->engine, &c);
    if (rc != 0)
        hub_log_warn("moderation: control message not sent: %s", hub_strerror(rc));
}

/* ---- kick --------------------------------------------------------------- */

static void kick_members_cb(void *data, int err, uint64_t total, const struct hub_engine_member *m,
                            size_t n)
{
    struct pending_mod *pm = data;
    if (err != 0) {
        chat_send_engine_error(pm->cl, pm->id, err, "the members could not be listed");
        pm_done(pm);
        return;
    }
    int found = total > HUB_CHAT_LIST_MAX; /* too many to list: let every node look */
    for (size_t i = 0; i < n && !found; i++)
        found = same_target(m[i].nick, pm->nick);
    if (!found) {
        chat_send_error(pm->cl, pm->id, "no_such_nick", "nobody of that nick is in the room");
    } else {
        mod_succeeded(pm);
        send_control(pm, HUB_CONTROL_KICK, pm->reason, 0);
    }
    pm_done(pm);
}

void chat_op_kick(struct request *rq)
{
    struct mod_args a;
    if (mod_parse(rq, 0, 1, 0, &a) != 0)
        return;
    struct pending_mod *pm = pm_new(rq, CHAT_MOD_KICK, &a);
    if (pm == NULL)
        return;
    int rc =
        hub_engine_members(rq->cl->chat->engine, a.room, HUB_CHAT_LIST_MAX, kick_members_cb, pm);
    if (rc != 0) {
        chat_send_engine_error(rq->cl, rq->id, rc, "the members could not be listed");
        pm_done(pm);
    }
}

/* ---- ban, unban, mute, unmute ------------------------------------------- */

/* The push a muted (or unmuted, or banned) local user gets. */
static void push_restriction(struct hub_chat_client *c, const char *t, struct hub_iov room,
                             int64_t until, struct hub_iov by, struct hub_iov reason)
{
    struct hub_jsonw b = {0};
    hub_jsonw_raw(&b, "{");
    hub_jsonw_kstr(&b, "t", t, strlen(t));
    hub_jsonw_key(&b, "room");
    if (room.len > 0)
        hub_jsonw_str(&b, room.base, room.len);
    else
        hub_jsonw_raw(&b, "null");
    if (strcmp(t, "unmuted") != 0) {
        hub_jsonw_key(&b, "until");
        if (until == INT64_MAX || until == 0)
            hub_jsonw_raw(&b, "null");
        else
            hub_jsonw_int(&b, until);
    }
    hub_jsonw_kstr(&b, "by", by.base, by.len);
    hub_jsonw_kstr(&b, "reason", reason.base, reason.len);
    hub_jsonw_raw(&b, "}");
    chat_send_json(c, &b, NO_ID);
    hub_jsonw_free(&b);
}

/* Calls fn for every local connection target names: "u:<sub>" (all of that
 * user's), or a nick (whoever holds it, and the other connections of that
 * holder's user). */
static void for_targets(struct hub_chat *chat, struct hub_iov target,
                        void (*fn)(struct hub_chat_client *c, const struct hub_engine_control *ctl),
                        const struct hub_engine_control *ctl)
{
    const char *sub = NULL;
    size_t sublen = 0;
    if (target.len > 2 && memcmp(target.base, "u:", 2) == 0) {
        sub = target.base + 2;
        sublen = target.len - 2;
    } else {
        struct hub_chat_client *c = find_target(chat, target);
        if (c == NULL)
            return;
        if (c->user == NULL) {
            fn(c, ctl);
            return;
        }
        sub = c->user->id.sub;
        sublen = strlen(sub);
    }
    /* Collected first: fn may leave rooms (never frees a client). */
    for (struct chat_user *u = chat->users; u != NULL; u = u->next)
        if (!u->cl->dead && strlen(u->id.sub) == sublen && memcmp(u->id.sub, sub, sublen) == 0)
            fn(u->cl, ctl);
}

static void mute_push_one(struct hub_chat_client *c, const struct hub_engine_control *ctl)
{
    push_restriction(c, ctl->until_ms != 0 ? "muted" : "unmuted", ctl->room, ctl->until_ms, ctl->by,
                     ctl->text);
}

static void restrict_cb(void *data, int err)
{
    struct pending_mod *pm = data;
    if (err != 0) {
        chat_send_engine_error(pm->cl, pm->id, err, "the restriction could not be stored");
        pm_done(pm);
        return;
    }
    mod_succeeded(pm);
    if (pm->kind == HUB_RESTRICT_BAN) {
        /* An unban goes out too (until 0): the node holding the nick lifts
         * what it recorded under the user id (restrict_holder). */
        send_control(pm, HUB_CONTROL_BAN, pm->reason, pm->until);
    } else if (pm->kind == HUB_RESTRICT_MUTE) {
        /* The holder's node, wherever it is, records the mute under the
         * holder's key and pushes muted/unmuted (restrict_holder). */
        send_control(pm, HUB_CONTROL_MUTE, pm->reason, pm->until);
    }
    pm_done(pm);
}

static void restrict_op(struct request *rq, int kind, int lift)
{
    struct mod_args a;
    if (mod_parse(rq, 1, 1, !lift, &a) != 0)
        return;
    int action = kind == HUB_RESTRICT_BAN ? (lift ? CHAT_MOD_UNBAN : CHAT_MOD_BAN)
                                          : (lift ? CHAT_MOD_UNMUTE : CHAT_MOD_MUTE);
    struct pending_mod *pm = pm_new(rq, action, &a);
    if (pm == NULL)
        return;
    struct hub_chat *chat = rq->cl->chat;
    int64_t now = chat_now(chat);
    char key[CHAT_KEY_MAX];
    struct hub_history_restrict r = {0};
    r.kind = kind;
    r.room = a.room;
    r.actor.base = key;
    r.actor.len = restrict_key(chat, a.nick, key);
    r.until_ms = lift ? 0 : a.duration == 0 ? INT64_MAX : now + (int64_t)a.duration * 1000;
    r.by.base = rq->cl->nick;
    r.by.len = rq->cl->nick_len;
    r.reason = a.reason;
    r.ts = now;
    pm->kind = kind;
    pm->until = r.until_ms;
    int rc = hub_engine_restrict(chat->engine, &r, restrict_cb, pm);
    if (rc != 0) {
        chat_send_engine_error(rq->cl, rq->id, rc, "the restriction could not be stored");
        pm_done(pm);
    }
}

void chat_op_ban(struct request *rq)
{
    restrict_op(rq, HUB_RESTRICT_BAN, 0);
}

void chat_op_unban(struct request *rq)
{
    restrict_op(rq, HUB_RESTRICT_BAN, 1);
}

void chat_op_mute(struct request *rq)
{
    restrict_op(rq, HUB_RESTRICT_MUTE, 0);
}

void chat_op_unmute(struct request *rq)
{
    restrict_op(rq, HUB_RESTRICT_MUTE, 1);
}

/* ---- topic -------------------------------------------------------------- */

static void topic_cb(void *data, int err)
{
    struct pending_mod *pm = data;
    if (err != 0) {
        chat_send_engine_error(pm->cl, pm->id, err, "the topic could not be stored");
    } else {
        mod_succeeded(pm);
        send_control(pm, HUB_CONTROL_TOPIC, pm->reason, 0); /* the topic rides in reason */
    }
    pm_done(pm);
}

void chat_op_topic(struct request *rq)
{
    struct mod_args a;
    if (mod_parse(rq, 0, 0, 0, &a) != 0)
        return;
    struct hub_iov topic = {"", 0};
    if (chat_req_str(rq, "topic", &topic) < 0 || topic.len > HUB_HISTORY_TOPIC_MAX ||
        hub_ident_text_check(topic.base, topic.len) != NULL) {
        chat_send_error(rq->cl, rq->id, "bad_request",
                        "\"topic\" must be text of at most 512 bytes (empty clears it)");
        return;
    }
    a.reason = topic;
    struct pending_mod *pm = pm_new(rq, CHAT_MOD_TOPIC, &a);
    if (pm == NULL)
        return;
    int rc = hub_engine_set_topic(rq->cl->chat->engine, a.room, topic, topic_cb, pm);
    if (rc != 0) {
        chat_send_engine_error(rq->cl, rq->id, rc, "the topic could not be stored");
        pm_done(pm);
    }
}

/* ---- on_control ---------------------------------------------------------- */

static void kick_one(struct hub_chat_client *c, const struct hub_engine_control *ctl)
{
    struct hub_room *room = chat_joined_room(c, ctl->room);
    if (room == NULL)
        return;
    struct hub_jsonw b = {0};
    hub_jsonw_raw(&b, "{");
    hub_jsonw_kstr(&b, "t", "kicked", 6);
    hub_jsonw_kstr(&b, "room", ctl->room.base, ctl->room.len);
    hub_jsonw_kstr(&b, "by", ctl->by.base, ctl->by.len);
    hub_jsonw_kstr(&b, "reason", ctl->text.base, ctl->text.len);
    hub_jsonw_raw(&b, "}");
    chat_send_json(c, &b, NO_ID);
    hub_jsonw_free(&b);
    chat_sub_remove(c, room);
    chat_leave_room(c, room);
}

static void ban_one(struct hub_chat_client *c, const struct hub_engine_control *ctl)
{
    if (ctl->room.len > 0) {
        struct hub_room *room = chat_joined_room(c, ctl->room);
        if (room != NULL) {
            chat_sub_remove(c, room);
            chat_leave_room(c, room);
        }
    } else {
        while (c->member.nrooms > 0) {
            struct hub_room *room = c->member.rooms[c->member.nrooms - 1].room;
            chat_sub_remove(c, room);
            chat_leave_room(c, room);
        }
    }
    if (c->mode == HUB_CHAT_JSON)
        push_restriction(c, "banned", ctl->room, ctl->until_ms, ctl->by, ctl->text);
    else if (c->ws != NULL)
        hub_ws_close(c->ws, HUB_CHAT_CLOSE_DISCONNECTED, "banned"); /* raw: its one room */
}

static void disconnect_one(struct hub_chat_client *c, const struct hub_engine_control *ctl)
{
    char reason[124]; /* a close reason fits in a control frame (125 bytes) */
    size_t n = ctl->text.len < sizeof(reason) - 1 ? ctl->text.len : sizeof(reason) - 1;
    /* Never cut a UTF-8 sequence in two. */
    while (n > 0 && n < ctl->text.len && ((unsigned char)ctl->text.base[n] & 0xc0) == 0x80)
        n--;
    memcpy(reason, ctl->text.base, n);
    reason[n] = '\0';
    if (c->ws != NULL)
        hub_ws_close(c->ws, HUB_CHAT_CLOSE_DISCONNECTED, n > 0 ? reason : "disconnected");
}

static void holder_restricted(void *data, int err)
{
    (void)data;
    if (err != 0)
        hub_log_warn("moderation: a ban or mute by nick could not be recorded for its user: %s",
                     hub_strerror(err));
}

/* A ban or mute (or, until_ms 0, its lifting) named a nick held on this node: the
 * moderator's node, which may be another, could record it only under the
 * key of the nick as given, so this node records it under the holder's own
 * actor key as well (the user id of a signed user, the key of "~nick" for a
 * guest named without its mark), which is what its joins and sends are
 * checked by. On the moderator's node this writes the same record twice. */
static void restrict_holder(struct hub_chat *chat, const struct hub_engine_control *c, int kind)
{
    if (c->target.len > 2 && memcmp(c->target.base, "u:", 2) == 0)
        return; /* already the user id */
    struct hub_chat_client *holder = find_target(chat, c->target);
    if (holder == NULL || holder->mode != HUB_CHAT_JSON)
        return;
    char key[CHAT_KEY_MAX];
    struct hub_history_restrict r = {.kind = kind};
    r.room = c->room;
    r.actor.base = key;
    r.actor.len = chat_actor_key(holder, key);
    r.until_ms = c->until_ms;
    r.by = c->by;
    r.reason = c->text;
    r.ts = chat_now(chat);
    int rc = hub_engine_restrict(chat->engine, &r, holder_restricted, NULL);
    if (rc != 0)
        holder_restricted(NULL, rc);
}

void chat_on_control(void *data, const struct hub_engine_control *c)
{
    struct hub_chat *chat = data;
    switch (c->kind) {
    case HUB_CONTROL_KICK:
        for_targets(chat, c->target, kick_one, c);
        break;
    case HUB_CONTROL_BAN:
        restrict_holder(chat, c, HUB_RESTRICT_BAN);
        if (c->until_ms != 0) /* 0: an unban, recorded above; nobody is removed */
            for_targets(chat, c->target, ban_one, c);
        break;
    case HUB_CONTROL_MUTE:
        restrict_holder(chat, c, HUB_RESTRICT_MUTE);
        for_targets(chat, c->target, mute_push_one, c);
        break;
    case HUB_CONTROL_DISCONNECT:
        for_targets(chat, c->target, disconnect_one, c);
        break;
    case HUB_CONTROL_TOPIC: {
        struct hub_room *r = hub_rooms_find(chat->rooms, c->room.base, c->room.len);
        if (r == NULL)
            return;
        struct hub_room_event ev = {.kind = EV_TOPIC, .room = r};
        ev.text = c->text;
        ev.nick = c->by;
        chat_broadcast(&ev);
        break;
    }
    default:
        break;
    }
}
