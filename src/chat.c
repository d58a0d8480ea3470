/*
 * chat.c: raw relay and the chathub.v1 JSON protocol over rooms and the
 * engine: client lifetime, references, the rate limit, publishing, the
 * engine's message upcall, the reply writers (chat_int.h lists the files
 * that do the rest).
 *
 * Every client embeds a room_member. Anything said in a room becomes one
 * struct hub_room_event; the rooms module hands it to every local member, and the
 * first recipient of each wire format encodes the frame that the others of
 * that format then share. Requests are parsed with jansson; replies and
 * pushes are written by hand with the jsonw writer, which keeps the per-message
 * path to one encode and one copy into the frame.
 *
 * Invariants:
 * - A client joins or leaves rooms only from its own request handler or from
 *   its close path, never from a deliver callback (rooms asserts this).
 * - Nicks are unique across nodes under ASCII case folding (the engine's
 *   claims); the local nick table holds this node's JSON clients that said
 *   hello. Raw clients use reserved guest-<n> nicks (guest-<node>-<n> when
 *   the engine has several nodes).
 * - A message is sequenced and stored by the engine before anyone sees it,
 *   so offsets in pushes, replies and history always agree. Local members
 *   get it only from on_msg, which fires in offset order per room; the
 *   sender's ack comes from the publish completion.
 * - A join answers with a history read made after the room was subscribed;
 *   msg pushes for the joiner are reconciled with that read by offset (its
 *   chat_sub), so each message reaches it exactly once.
 * - A client outlives its connection while engine requests it made are in
 *   flight (a reference each); once the connection is gone it sends nothing.
 */
#include "chat_int.h"
#include "hub/conn.h"
#include "hub/flow.h"
#include "hub/engine.h"
#include "hub/history.h"
#include "hub/log.h"
#include "hub/metrics.h"
#include "hub/ws.h"

#include <stdlib.h>
#include <string.h>
#include <uv.h>

/* ---- small helpers -------------------------------------------------- */

static int64_t system_now_ms(void)
{
    uv_timeval64_t tv;
    if (uv_gettimeofday(&tv) != 0)
        return 0;
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

int64_t chat_now(const struct hub_chat *chat)
{
    return chat->cfg.now_ms ? chat->cfg.now_ms() : system_now_ms();
}

/* A writer that failed holds a truncated text, which is never sent: a reply
 * (id present) becomes an "internal" error reply instead, a push is lost. */
void chat_send_json(struct hub_chat_client *cl, struct hub_jsonw *w, struct req_id id)
{
    if (cl->dead)
        return; /* nobody to send to */
    if (hub_jsonw_error(w) != 0) {
        hub_log_warn("a JSON %s could not be written: out of memory", id.has ? "reply" : "push");
        if (id.has)
            chat_send_error(cl, id, "internal", "out of memory");
        return;
    }
    hub_ws_send(cl->ws, HUB_WS_TEXT, w->b.data, w->b.len);
}

void chat_begin_reply(struct hub_jsonw *b, struct req_id id)
{
    hub_jsonw_raw(b, "{");
    hub_jsonw_kint(b, "id", id.v);
    hub_jsonw_key(b, "ok");
    hub_jsonw_raw(b, "true");
}

/* Answers a failed request: an error reply when it had an id, an error
 * push otherwise. */
void chat_send_error(struct hub_chat_client *cl, struct req_id id, const char *code,
                     const char *message)
{
    if (cl->mode != HUB_CHAT_JSON)
        return; /* raw mode has no error messages: the line is dropped */
    struct hub_jsonw b = {0};
    hub_jsonw_raw(&b, "{");
    if (id.has) {
        hub_jsonw_kint(&b, "id", id.v);
        hub_jsonw_key(&b, "ok");
        hub_jsonw_raw(&b, "false");
    } else {
        hub_jsonw_kstr(&b, "t", "error", 5);
    }
    hub_jsonw_key(&b, "error");
    hub_jsonw_raw(&b, "{");
    hub_jsonw_kstr(&b, "code", code, strlen(code));
    hub_jsonw_kstr(&b, "message", message, strlen(message));
    hub_jsonw_raw(&b, "}}");
    chat_send_json(cl, &b, NO_ID);
    hub_jsonw_free(&b);
}

void chat_send_ok(struct hub_chat_client *cl, struct req_id id)
{
    if (!id.has)
        return;
    struct hub_jsonw b = {0};
    chat_begin_reply(&b, id);
    hub_jsonw_raw(&b, "}");
    chat_send_json(cl, &b, id);
    hub_jsonw_free(&b);
}

void chat_send_engine_error(struct hub_chat_client *cl, struct req_id id, int err, const char *what)
{
    if (err == HUB_EAGAIN && cl->mode == HUB_CHAT_JSON)
        hub_metrics.unavailable++;
    if (err == HUB_EAGAIN)
        chat_send_error(
            cl, id, "unavailable",
            "the message broker cannot take requests right now (unreachable or full); try again");
    else
        chat_send_error(cl, id, err == HUB_EIO ? "storage" : "internal", what);
}

size_t chat_client_id(const struct hub_chat_client *cl, char *buf)
{
    int n = snprintf(buf, CHAT_ID_MAX, "%sc-%llu", cl->chat->id_prefix, (unsigned long long)cl->id);
    return n > 0 && n < CHAT_ID_MAX ? (size_t)n : 0;
}

uint64_t chat_local_id(const struct hub_chat *chat, struct hub_iov client)
{
    size_t p = chat->id_prefix_len;
    if (client.len <= p + 2 || client.len > p + 22 ||
        memcmp(client.base, chat->id_prefix, p) != 0 || client.base[p] != 'c' ||
        client.base[p + 1] != '-')
        return 0;
    uint64_t v = 0;
    for (size_t i = p + 2; i < client.len; i++) {
        char c = client.base[i];
        if (c < '0' || c > '9')
            return 0;
        v = v * 10 + (uint64_t)(c - '0');
    }
    return v;
}

/* Appends ,"client":"<id>". */
void chat_jw_client_id(struct hub_jsonw *b, const struct hub_chat_client *cl)
{
    char id[CHAT_ID_MAX];
    size_t n = chat_client_id(cl, id);
    hub_jsonw_kstr(b, "client", id, n);
}

/* ---- configuration and lifetime ------------------------------------- */

void hub_chat_config_default(struct hub_chat_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->server_name = "chathub";
    cfg->max_rooms_per_client = 64;
    cfg->max_text = 4000;
    cfg->max_message = 64 * 1024;
    cfg->history_default = 50;
    cfg->history_max_rooms_kept = 1000;
    cfg->rate = 20;
    cfg->burst = 40;
    cfg->ping_interval_s = 25;
}

/* The engine's readiness changed. The engine logs the reason itself; chat
 * has nothing to change (requests it cannot serve answer "unavailable"). */
static void chat_on_state(void *data, int ready, const char *reason)
{
    (void)data;
    hub_log_debug("engine %s%s%s", ready ? "ready" : "not ready", ready ? "" : ": ",
                  ready    ? ""
                  : reason ? reason
                           : "");
}

void hub_chat_engine_events(struct hub_engine_events *ev)
{
    memset(ev, 0, sizeof(*ev));
    ev->on_msg = chat_on_msg;
    ev->on_presence = chat_on_presence;
    ev->on_typing = chat_on_typing;
    ev->on_epoch = chat_on_epoch;
    ev->on_invite = chat_on_invite;
    ev->on_state = chat_on_state;
    ev->on_amend = chat_on_amend;
    ev->on_control = chat_on_control;
}

void hub_chat_mod_stats(const struct hub_chat *chat, struct hub_chat_mod_stats *st)
{
    st->kick = chat->mod_count[CHAT_MOD_KICK];
    st->ban = chat->mod_count[CHAT_MOD_BAN];
    st->unban = chat->mod_count[CHAT_MOD_UNBAN];
    st->mute = chat->mod_count[CHAT_MOD_MUTE];
    st->unmute = chat->mod_count[CHAT_MOD_UNMUTE];
    st->del = chat->mod_count[CHAT_MOD_DELETE];
    st->topic = chat->mod_count[CHAT_MOD_TOPIC];
    st->edit = chat->mod_count[CHAT_MOD_EDIT];
    st->search = chat->searches;
}

int hub_chat_new(struct hub_chat **out, const struct hub_chat_config *cfg)
{
    struct hub_chat *chat = calloc(1, sizeof(*chat));
    if (chat == NULL)
        return HUB_ENOMEM;
    chat->cfg = *cfg;
    chat->nnick_buckets = 64;
    chat->nicks = calloc(chat->nnick_buckets, sizeof(*chat->nicks));
    if (chat->nicks == NULL || hub_rooms_new(&chat->rooms, cfg->max_rooms_per_client) != 0)
        goto fail;
    if (cfg->history != NULL) {
        struct hub_engine_events ev;
        hub_chat_engine_events(&ev);
        if (hub_engine_open_memory(&chat->engine, cfg->history, &ev, chat) != 0)
            goto fail;
        chat->own_engine = 1;
    }
    *out = chat;
    return 0;

fail:
    hub_rooms_free(chat->rooms);
    free(chat->nicks);
    free(chat);
    return HUB_ENOMEM;
}

/* Closing a memory engine with nothing in flight completes at once. */
static void own_engine_closed(void *data)
{
    (void)data;
}

static void free_own_engine(struct hub_chat *chat)
{
    if (!chat->own_engine)
        return;
    hub_engine_close(chat->engine, own_engine_closed, NULL);
    hub_engine_free(chat->engine);
    chat->engine = NULL;
    chat->own_engine = 0;
}

void hub_chat_use_engine(struct hub_chat *chat, struct hub_engine *engine)
{
    free_own_engine(chat);
    chat->engine = engine;
    struct hub_engine_stats st;
    hub_engine_stats(engine, &st);
    /* The memory engine is one node: its client ids stay "c-<n>". */
    chat->id_prefix[0] = '\0';
    if (strcmp(st.kind, "memory") != 0)
        snprintf(chat->id_prefix, sizeof(chat->id_prefix), "%s-", hub_engine_node_id(engine));
    chat->id_prefix_len = strlen(chat->id_prefix);
}

struct hub_engine *hub_chat_engine(const struct hub_chat *chat)
{
    return chat->engine;
}

void hub_chat_free(struct hub_chat *chat)
{
    if (chat == NULL)
        return;
    chat_dm_tick(chat, 0, 1);
    free_own_engine(chat);
    hub_rooms_free(chat->rooms);
    free(chat->nicks);
    free(chat->counts);
    free(chat);
}

int hub_chat_valid_room(const char *name, size_t len)
{
    if (len == 0 || len > HUB_CHAT_ROOM_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '_' || c == '.' || c == ':' || c == '-';
        if (!ok)
            return 0;
    }
    return 1;
}

int hub_chat_room_from_path(struct hub_iov path, struct hub_iov *room)
{
    static const char lobby[] = "lobby";
    if (path.len == 0 || path.base[0] != '/')
        return HUB_EINVAL;
    struct hub_iov rest = {path.base + 1, path.len - 1};
    /* "/ws" is the documented endpoint; "/ws/<room>" names a room under it. */
    if (rest.len >= 2 && memcmp(rest.base, "ws", 2) == 0 &&
        (rest.len == 2 || rest.base[2] == '/')) {
        size_t skip = rest.len == 2 ? 2 : 3;
        rest.base += skip;
        rest.len -= skip;
    }
    if (rest.len == 0) {
        room->base = lobby;
        room->len = sizeof(lobby) - 1;
        return 0;
    }
    if (!hub_chat_valid_room(rest.base, rest.len))
        return HUB_EINVAL;
    *room = rest;
    return 0;
}

/* ---- tokens ------------------------------------------------------------ */

size_t chat_claim_owner(const struct hub_chat_client *cl, char *buf)
{
    if (cl->user == NULL)
        return chat_client_id(cl, buf);
    int n = snprintf(buf, CHAT_OWNER_MAX, "u:%s", cl->user->id.sub);
    return n > 0 ? (size_t)n : 0;
}

int chat_same_user(const struct hub_chat_client *a, const struct hub_chat_client *b)
{
    return a->user != NULL && b->user != NULL && strcmp(a->user->id.sub, b->user->id.sub) == 0;
}

void chat_release_own_nick(struct hub_chat_client *cl)
{
    struct hub_chat *chat = cl->chat;
    char owner[CHAT_OWNER_MAX], key[CHAT_NICK_KEY_MAX];
    struct hub_iov k = {key, chat_nick_key(cl->nick, cl->nick_len, key)};
    struct hub_chat_client *other = chat_nick_find_key(chat, key, k.len);
    if (other != NULL && other != cl && chat_same_user(other, cl))
        return; /* another connection of this user still holds the claim */
    struct hub_iov o = {owner, chat_claim_owner(cl, owner)};
    hub_engine_release_nick(chat->engine, k, o);
}

void chat_jw_user(struct hub_jsonw *b, const struct hub_chat_client *cl)
{
    if (cl->user != NULL) {
        const struct hub_auth_identity *id = &cl->user->id;
        hub_jsonw_key(b, "user");
        hub_jsonw_raw(b, "{");
        hub_jsonw_kstr(b, "sub", id->sub, strlen(id->sub));
        hub_jsonw_kstr(b, "name", id->name, strlen(id->name));
        const char *role = hub_auth_role_name(id->role);
        hub_jsonw_kstr(b, "role", role, strlen(role));
        hub_jsonw_raw(b, "}");
    } else if (cl->guest) {
        hub_jsonw_kbool(b, "guest", 1);
    }
}

int chat_set_user(struct hub_chat_client *cl, struct hub_auth_identity *id)
{
    struct hub_chat *chat = cl->chat;
    struct chat_user *u = calloc(1, sizeof(*u));
    if (u == NULL)
        return HUB_ENOMEM;
    u->id = *id;
    memset(id, 0, sizeof(*id));
    u->cl = cl;
    u->next = chat->users;
    if (u->next != NULL)
        u->next->pprev = &u->next;
    u->pprev = &chat->users;
    chat->users = u;
    cl->user = u;
    cl->guest = 0;
    return 0;
}

/* Takes cl's identity out of the expiry list (the struct stays until the
 * last reference: completions still ask who owned a claim). */
static void user_unlink(struct hub_chat_client *cl)
{
    struct chat_user *u = cl->user;
    if (u == NULL || u->pprev == NULL)
        return;
    *u->pprev = u->next;
    if (u->next != NULL)
        u->next->pprev = u->pprev;
    u->next = NULL;
    u->pprev = NULL;
}

void chat_clear_user(struct hub_chat_client *cl)
{
    if (cl->user == NULL)
        return;
    user_unlink(cl);
    hub_auth_identity_clear(&cl->user->id);
    free(cl->user);
    cl->user = NULL;
    cl->guest = cl->chat->cfg.auth != NULL;
}

/* Closes the connections whose token is past its exp (exp itself: the
 * leeway is for the verification's clock skew, not for extending a
 * session). A list walk over signed clients once a tick. */
void chat_expire_users(struct hub_chat *chat)
{
    int64_t now = chat_now(chat);
    for (struct chat_user *u = chat->users; u != NULL; u = u->next) {
        if (u->closed || now < u->id.exp * 1000 || u->cl->dead)
            continue;
        u->closed = 1;
        hub_ws_close(u->cl->ws, HUB_CHAT_CLOSE_EXPIRED, "token expired");
    }
}

/* The value of the token= parameter of a query, or an empty view. */
static struct hub_iov query_token(struct hub_iov q)
{
    size_t i = 0;
    while (i < q.len) {
        size_t end = i;
        while (end < q.len && q.base[end] != '&')
            end++;
        if (end - i >= 6 && memcmp(q.base + i, "token=", 6) == 0)
            return (struct hub_iov){q.base + i + 6, end - i - 6};
        i = end + 1;
    }
    return (struct hub_iov){"", 0};
}

int hub_chat_raw_admit(struct hub_chat *chat, struct hub_iov room, struct hub_iov query,
                       struct hub_auth_identity *id, const char **why)
{
    *why = NULL;
    if (chat->cfg.auth == NULL)
        return 0;
    struct hub_iov tok = query_token(query);
    if (tok.len == 0) {
        if (chat->cfg.guests)
            return 0;
        *why = "a token is required (?token=)";
        return 401;
    }
    int rc = hub_auth_verify(chat->cfg.auth, tok.base, tok.len, chat_now(chat) / 1000, id, why);
    if (rc != 0) {
        if (*why == NULL)
            *why = "the token could not be checked";
        return 401;
    }
    if (!hub_auth_room_allowed(id, room.base, room.len)) {
        hub_auth_identity_clear(id);
        *why = "the token does not allow this room";
        return 403;
    }
    return 0;
}

struct hub_chat_client *hub_chat_client_new(struct hub_chat *chat, struct hub_ws *ws, int mode,
                                            struct hub_iov room)
{
    return hub_chat_client_new_as(chat, ws, mode, room, NULL);
}

struct hub_chat_client *hub_chat_client_new_as(struct hub_chat *chat, struct hub_ws *ws, int mode,
                                               struct hub_iov room, struct hub_auth_identity *id)
{
    struct hub_chat_client *cl = calloc(1, sizeof(*cl));
    if (cl == NULL)
        return NULL;
    if (chat_set_nick(cl, "", 0) != 0) {
        free(cl);
        return NULL;
    }
    cl->chat = chat;
    cl->ws = ws;
    cl->mode = mode;
    cl->member.deliver = chat_deliver;
    cl->tokens = chat->cfg.burst;
    cl->refilled = chat_now(chat);
    cl->refs = 1;
    cl->id = ++chat->client_seq;
    chat->nclients++;
    cl->guest = chat->cfg.auth != NULL;
    if (id != NULL && id->sub != NULL && chat_set_user(cl, id) != 0) {
        hub_chat_client_free(cl);
        return NULL;
    }
    if (mode == HUB_CHAT_RAW) {
        /* Several nodes: the node id makes the guest nick unique across
         * them ("guest-<node>-<n>"; id_prefix is "<node>-"). A signed raw
         * client goes by its name (it claims no nick: it cannot rename). */
        char guest[sizeof(chat->id_prefix) + 32];
        int n = snprintf(guest, sizeof(guest), "guest-%s%llu", chat->id_prefix,
                         (unsigned long long)++chat->guest_seq);
        const char *nick = cl->user != NULL ? cl->user->id.name : guest;
        if (chat_set_nick(cl, nick, cl->user != NULL ? strlen(nick) : (size_t)n) != 0) {
            hub_chat_client_free(cl);
            return NULL;
        }
        if (chat->cfg.welcome != NULL)
            hub_ws_send(ws, HUB_WS_TEXT, chat->cfg.welcome, strlen(chat->cfg.welcome));
        if (chat_join_room(cl, room, NULL) != 0) {
            hub_chat_client_free(cl);
            return NULL;
        }
        return cl;
    }
    struct hub_jsonw b = {0};
    hub_jsonw_raw(&b, "{");
    hub_jsonw_kstr(&b, "t", "welcome", 7);
    hub_jsonw_kstr(&b, "server", chat->cfg.server_name, strlen(chat->cfg.server_name));
    if (chat->cfg.welcome != NULL)
        hub_jsonw_kstr(&b, "motd", chat->cfg.welcome, strlen(chat->cfg.welcome));
    hub_jsonw_raw(&b, "}");
    chat_send_json(cl, &b, NO_ID);
    hub_jsonw_free(&b);
    return cl;
}

/* A reference for work in flight; while the connection lives it also holds
 * back any close frame until the work's reply or relay has gone out. */
void chat_client_ref(struct hub_chat_client *cl)
{
    cl->refs++;
    if (!cl->dead)
        hub_ws_hold(cl->ws);
}

void chat_client_unref(struct hub_chat_client *cl)
{
    if (!cl->dead && cl->refs > 1)
        hub_ws_release(cl->ws);
    if (--cl->refs > 0)
        return;
    free(cl->typing);
    chat_backlog_free(cl);
    while (cl->nsubs > 0)
        chat_sub_remove(cl, cl->subs[0].room);
    if (cl->user != NULL) {
        hub_auth_identity_clear(&cl->user->id);
        free(cl->user);
    }
    free(cl->nick);
    free(cl);
}

void hub_chat_client_free(struct hub_chat_client *cl)
{
    if (cl == NULL)
        return;
    struct hub_chat *chat = cl->chat;
    while (cl->member.nrooms > 0)
        chat_leave_room(cl, cl->member.rooms[cl->member.nrooms - 1].room);
    hub_rooms_leave_all(chat->rooms, &cl->member);
    if (cl->hello) {
        chat_nick_unlink(chat, cl);
        chat_release_own_nick(cl);
    }
    user_unlink(cl);
    chat->nclients--;
    cl->dead = 1;
    cl->ws = NULL;
    chat_client_unref(cl);
}

size_t hub_chat_room_count(const struct hub_chat *chat)
{
    return hub_rooms_count(chat->rooms);
}

int hub_chat_room_admits(const struct hub_chat *chat, struct hub_iov name)
{
    uint32_t max = chat->cfg.max_total_rooms;
    return max == 0 || hub_rooms_count(chat->rooms) < max ||
           hub_rooms_find(chat->rooms, name.base, name.len) != NULL;
}

uint64_t hub_chat_rooms_refused(const struct hub_chat *chat)
{
    return chat->rooms_refused;
}

/* ---- publishing ------------------------------------------------------ */

/* A message on its way through the engine: what the ack needs, because the
 * request that carried it is gone by then (the engine copied the rest). */
struct pending_msg {
    struct hub_chat_client *cl; /* the sender (a reference) */
    struct req_id id;           /* the send request's id, for the ack */
    size_t room_len;            /* bytes in room */
    size_t text_len;            /* bytes of text counted in flight (flow.h) */
    size_t actor_len;           /* bytes of actor */
    char actor[CHAT_KEY_MAX];   /* the sender's actor key, to tell a ban from a mute */
    char room[];                /* the room */
};

/* A publish refused with HUB_EPERM: a query with the sender's actor key
 * tells a ban (the stronger, reported first) from a mute. */
static void perm_query_cb(void *data, int err, const struct hub_history_pos *pos,
                          const struct hub_history_msg *msgs, size_t n, int complete)
{
    struct pending_msg *pm = data;
    (void)msgs;
    (void)n;
    (void)complete;
    if (err == 0 && pos->ban_until != 0)
        chat_send_error(pm->cl, pm->id, "banned", "you are banned from this room");
    else
        chat_send_error(pm->cl, pm->id, "muted", "you are muted in this room");
    chat_client_unref(pm->cl);
    free(pm);
}

/* A publish failed with err: a JSON sender gets an error reply; a raw line
 * is dropped, and counted when the engine was unreachable. */
static void publish_failed(struct hub_chat_client *cl, struct req_id id, int err)
{
    if (err == HUB_EAGAIN && cl->mode == HUB_CHAT_RAW)
        hub_metrics.raw_dropped++;
    if (err == HUB_EIO) {
        int64_t now = chat_now(cl->chat);
        if (now - cl->chat->storage_warned >= 10000) {
            /* Once per 10 s: a full disk fails every send. */
            cl->chat->storage_warned = now;
            hub_log_warn("cannot store messages: %s", hub_strerror(err));
        }
    }
    chat_send_engine_error(cl, id, err, "the message could not be stored; try again");
}

static void pm_published(void *data, int err, uint64_t offset, int64_t ts, int duplicate)
{
    struct pending_msg *pm = data;
    struct hub_chat_client *cl = pm->cl;
    if (!cl->dead) /* sequenced (or failed): no longer in flight (flow.h) */
        hub_flow_published(cl->chat->cfg.flow, hub_ws_conn(cl->ws), pm->text_len);
    if (err == HUB_EPERM && cl->mode == HUB_CHAT_RAW) {
        /* A banned or muted signed raw client's line: dropped, as raw lines
         * that cannot be accepted are. */
    } else if (err == HUB_EPERM && !cl->dead) {
        struct hub_history_query q = {.dir = HUB_HISTORY_LATEST, .limit = 0};
        q.actor.base = pm->actor;
        q.actor.len = pm->actor_len;
        q.now_ms = chat_now(cl->chat);
        struct hub_iov room = {pm->room, pm->room_len};
        if (hub_engine_query(cl->chat->engine, room, &q, perm_query_cb, pm) == 0)
            return; /* perm_query_cb answers and frees */
        chat_send_error(cl, pm->id, "muted", "you are muted or banned in this room");
    } else if (err == HUB_EINVAL) {
        chat_send_error(cl, pm->id, "bad_request",
                        "reply_to must be the offset of an earlier message of this room");
    } else if (err != 0) {
        publish_failed(cl, pm->id, err);
    } else {
        if (!duplicate && offset > 0)
            hub_metrics.published++;
        if (pm->id.has && !cl->dead) {
            struct hub_jsonw b = {0};
            chat_begin_reply(&b, pm->id);
            hub_jsonw_kstr(&b, "room", pm->room, pm->room_len);
            hub_jsonw_kint(&b, "offset", (long long)offset);
            hub_jsonw_kint(&b, "ts", ts);
            if (duplicate) {
                /* A resend after a reconnect: the original stands. */
                hub_jsonw_key(&b, "duplicate");
                hub_jsonw_raw(&b, "true");
            }
            hub_jsonw_raw(&b, "}");
            chat_send_json(cl, &b, pm->id);
            hub_jsonw_free(&b);
        }
    }
    free(pm);
    chat_client_unref(cl);
}

/* Publishes text (or a raw binary message) from cl into room through the
 * engine. The ack (for requests with an id) follows its completion; the
 * pushes, the sender's raw echo included, come from on_msg. */
void chat_publish(struct hub_chat_client *cl, struct req_id id, struct hub_iov room, int opcode,
                  struct hub_iov text, struct hub_iov cmid)
{
    chat_publish_ex(cl, id, room, opcode, text, cmid, 0);
}

void chat_publish_ex(struct hub_chat_client *cl, struct req_id id, struct hub_iov room, int opcode,
                     struct hub_iov text, struct hub_iov cmid, uint64_t reply_to)
{
    struct hub_chat *chat = cl->chat;
    struct pending_msg *pm = malloc(sizeof(*pm) + room.len);
    if (pm == NULL) {
        chat_send_error(cl, id, "internal", "out of memory");
        return;
    }
    pm->cl = cl;
    pm->id = id;
    pm->room_len = room.len;
    pm->text_len = text.len;
    memcpy(pm->room, room.base, room.len);
    char cid[CHAT_ID_MAX];
    struct hub_engine_pub pub = {0};
    pub.room = room;
    pub.from.base = cl->nick;
    pub.from.len = cl->nick_len;
    pub.text = text;
    pub.cmid = cmid;
    pub.client.base = cid;
    pub.client.len = chat_client_id(cl, cid);
    pub.ts = chat_now(chat);
    pub.binary = opcode != HUB_WS_TEXT;
    /* Issue 15: who may edit it, whose bans apply, whom it mentions. */
    char author[CHAT_KEY_MAX], mentions[HUB_HISTORY_MENTIONS_MAX * (HUB_CHAT_NICK_BYTES + 2)];
    pm->actor_len = chat_actor_key(cl, pm->actor);
    if (!pub.binary) {
        pub.author.base = author;
        pub.author.len = chat_author_key(cl, author);
        pub.actor.base = pm->actor;
        pub.actor.len = pm->actor_len;
        if (cl->mode == HUB_CHAT_JSON) {
            pub.mentions.base = mentions;
            pub.mentions.len = chat_mentions(chat, text, mentions, sizeof(mentions));
        }
        pub.reply_to = reply_to;
    }
    chat_client_ref(cl);
    /* Backpressure (flow.h): counted in flight until sequenced (before the
     * call, since the memory engine completes within it); a sender into a
     * congested room, or with too much in flight, stops being read. */
    struct hub_conn *conn = hub_ws_conn(cl->ws);
    hub_flow_publish(chat->cfg.flow, conn, room.base, room.len, text.len);
    int rc = hub_engine_publish(chat->engine, &pub, pm_published, pm);
    if (rc != 0) {
        hub_flow_published(chat->cfg.flow, conn, text.len);
        if (rc == HUB_EAGAIN)
            publish_failed(cl, id, rc);
        else
            chat_send_error(cl, id, "internal", "the message could not be queued");
        free(pm);
        chat_client_unref(cl);
    }
}

/* The engine's on_msg: a message for a room this node subscribed, in offset
 * order. One event for every local member; the frames are encoded once per
 * wire format by the first recipient. */
void chat_on_msg(void *data, const struct hub_engine_msg *m)
{
    struct hub_chat *chat = data;
    struct hub_room *r = hub_rooms_find(chat->rooms, m->room.base, m->room.len);
    if (r == NULL)
        return;
    struct hub_room_event ev = {.kind = EV_MSG, .room = r};
    ev.opcode = m->binary ? HUB_WS_BINARY : HUB_WS_TEXT;
    ev.skip = m->client.len > 0 ? chat_local_id(chat, m->client) : 0;
    ev.from = m->from;
    ev.text = m->text;
    ev.cmid = m->cmid;
    ev.offset = m->offset;
    ev.ts = m->ts;
    ev.mentions = m->mentions;
    ev.reply_to = m->reply_to;
    chat_broadcast(&ev);
}

/* Token bucket: rate tokens a second, at most burst saved up. Returns 1 if
 * the client may send one more message now. Over the limit the hub stops
 * reading the connection until the bucket holds a token again (*pause_ms,
 * 0 for no pause; TCP then slows the sender), but the messages already read
 * must be handled: a JSON request is refused (rate_limited, which the client
 * can retry), while a raw line, which has no way to be refused but to be
 * lost, is relayed on credit, up to CHAT_RATE_DEBT_S seconds of the rate,
 * and the pause lasts until the debt is paid back. */
static int take_token(struct hub_chat_client *cl, uint32_t *pause_ms)
{
    const struct hub_chat_config *cfg = &cl->chat->cfg;
    *pause_ms = 0;
    if (cfg->rate == 0)
        return 1;
    int64_t now = chat_now(cl->chat);
    if (now > cl->refilled) {
        cl->tokens += (double)(now - cl->refilled) * cfg->rate / 1000.0;
        if (cl->tokens > cfg->burst)
            cl->tokens = cfg->burst;
        cl->refilled = now;
    }
    double floor = cl->mode == HUB_CHAT_RAW ? -(double)cfg->rate * CHAT_RATE_DEBT_S : 0.0;
    int ok = cl->tokens - 1.0 >= floor;
    if (ok)
        cl->tokens -= 1.0;
    if (cl->tokens < 1.0)
        *pause_ms = (uint32_t)((1.0 - cl->tokens) * 1000.0 / cfg->rate) + 1;
    return ok;
}

/* A message over the rate limit: JSON clients get an error reply, raw ones
 * (past their credit) lose it; a client that keeps going after a whole
 * burst of refusals, all read before the hub could stop reading it, is
 * closed with 4013 (it may reconnect and slow down). */
static void refuse_rate(struct hub_chat_client *cl, const char *data, size_t len)
{
    hub_metrics.rate_limited++;
    if (cl->strikes == 0) /* one line per run of refusals (log.h) */
        hub_log_addr(HUB_LOG_INFO, hub_conn_peer(hub_ws_conn(cl->ws)), "refused", "over --rate");
    if (++cl->strikes > cl->chat->cfg.burst) {
        hub_ws_close(cl->ws, 4013, "too many requests");
        return;
    }
    if (cl->mode != HUB_CHAT_JSON)
        return;
    struct req_id id = {0, 0};
    json_t *root = json_loadb(data, len, JSON_ALLOW_NUL, NULL);
    if (chat_parse_id(root, &id) != 0)
        id.has = 0; /* an unusable id gets an error push instead */
    json_decref(root);
    chat_send_error(cl, id, "rate_limited", "too many requests: slow down");
}

void hub_chat_client_message(struct hub_chat_client *cl, int opcode, const char *data, size_t len)
{
    if (data == NULL)
        data = ""; /* an empty message may come without a buffer */
    uint32_t pause_ms;
    int ok = take_token(cl, &pause_ms);
    if (pause_ms > 0) /* backpressure: no more reads until the bucket refills */
        hub_flow_rate_hold(cl->chat->cfg.flow, hub_ws_conn(cl->ws), pause_ms);
    if (!ok) {
        refuse_rate(cl, data, len);
        return;
    }
    cl->strikes = 0;
    if (cl->mode == HUB_CHAT_JSON) {
        if (opcode != HUB_WS_TEXT) {
            hub_ws_close(cl->ws, HUB_WS_UNSUPPORTED_DATA,
                         "binary frames are not part of chathub.v1");
            return;
        }
        chat_json_message(cl, data, len);
        return;
    }
    /* A raw client is in exactly one room: the one its path named. */
    if (cl->member.nrooms == 0)
        return;
    struct hub_room *room = cl->member.rooms[0].room;
    struct hub_iov name = {hub_room_name(room), hub_room_name_len(room)};
    struct hub_iov text = {data, len};
    struct hub_iov none = {"", 0};
    struct req_id no_id = {0, 0};
    chat_publish(cl, no_id, name, opcode, text, none);
}
