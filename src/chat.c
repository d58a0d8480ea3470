/*
 * chat.c: raw relay and the chathub.v1 JSON protocol over rooms and history.
 *
 * Every client embeds a room_member. Anything said in a room becomes one
 * struct hub_room_event; the rooms module hands it to every member, and the
 * first recipient of each wire format encodes the frame that the others of
 * that format then share. Requests are parsed with jansson; replies and
 * pushes are written by hand with the jsonw writer, which keeps the per-message
 * path to one encode and one copy into the frame.
 *
 * Invariants:
 * - A client joins or leaves rooms only from its own request handler or from
 *   its close path, never from a deliver callback (rooms asserts this).
 * - Nicks are unique hub-wide under ASCII case folding; the nick table holds
 *   JSON clients that said hello. Raw clients use reserved guest-<n> nicks.
 * - A message is sequenced into history before anyone sees it, so offsets in
 *   pushes, replies and history always agree. History completes requests in
 *   the order they were made (history.h), so messages are delivered and
 *   acknowledged in the order they were received, whatever the store.
 * - A join answers with the history read that follows it in that order;
 *   until the read completes, the room's msg pushes are held back from the
 *   joiner (they are in the read), so each message reaches it exactly once.
 * - A client outlives its connection while history requests it made are in
 *   flight (a reference each); once the connection is gone it sends nothing.
 */
#include "hub/chat.h"
#include "hub/buf.h"
#include "hub/history.h"
#include "hub/jsonw.h"
#include "hub/log.h"
#include "hub/metrics.h"
#include "hub/rooms.h"
#include "hub/utf8.h"
#include "hub/ws.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define TYPING_INTERVAL_MS 3000 /* forward at most one typing per client and room */
#define TYPING_TTL_MS 6000      /* how long a receiver shows it */
#define COUNT_INTERVAL_MS 1000  /* at most one count push per big room */
#define JOIN_HISTORY_MAX 100    /* messages a join may ask for */
#define RESUME_MAX 1000         /* messages a resume hands out at once */
#define ROOMS_LIST_MAX 200      /* rooms in a rooms reply */

/* Per-room bookkeeping for presence in big rooms, kept only for rooms that
 * passed HUB_CHAT_LIST_MAX members. */
struct count_entry {
    char name[HUB_ROOM_NAME_MAX + 1]; /* room name */
    int64_t last_push;                /* when the last count went out */
    int dirty;                        /* membership changed since */
};

struct hub_chat {
    struct hub_rooms *rooms;        /* room registry, owned */
    struct hub_chat_config cfg;     /* copied configuration */
    struct hub_chat_client **nicks; /* nick table buckets (chained) */
    size_t nnick_buckets;           /* power of two */
    size_t nnicks;                  /* clients in the table */
    size_t nclients;                /* live clients */
    uint64_t client_seq;            /* ids handed out */
    uint64_t guest_seq;             /* guest nicks handed out */
    struct count_entry *counts;     /* big rooms, owned */
    size_t ncounts;                 /* entries in counts */
    int64_t storage_warned;         /* when a failed store was last logged */
};

struct typing_mark {
    struct hub_room *room; /* a room the client is in */
    int64_t last;          /* when its last typing was forwarded */
};

struct hub_chat_client {
    struct room_member member;         /* membership, embedded */
    struct hub_chat *chat;             /* the hub, borrowed */
    struct hub_ws *ws;                 /* the client's WebSocket, borrowed */
    int mode;                          /* enum hub_chat_mode */
    int hello;                         /* JSON: hello succeeded */
    struct hub_chat_client *nick_next; /* nick table chain */
    uint64_t nick_hash;                /* hash of the folded nick */
    size_t nick_len;                   /* bytes in nick */
    char *nick;                        /* current nick, NUL-terminated, owned */
    uint64_t id;                       /* the client id is "c-<id>" */
    struct typing_mark *typing;        /* owned, one per room typed in */
    uint32_t ntyping;                  /* entries in typing */
    double tokens;                     /* rate limit: messages it may send now */
    int64_t refilled;                  /* rate limit: when tokens was last topped up */
    uint32_t strikes;                  /* messages refused in a row */
    uint32_t refs;                     /* the connection's plus one per request in flight */
    int dead;                          /* the connection is gone: send nothing */
    struct hub_room **joining;         /* owned: rooms whose join read is in flight */
    uint32_t njoining;                 /* entries in joining */
};

enum event_kind {
    EV_MSG,    /* a message was sequenced */
    EV_JOIN,   /* a member joined */
    EV_LEAVE,  /* a member left */
    EV_TYPING, /* a member is typing */
    EV_NICK,   /* a member changed nick */
    EV_COUNT,  /* member count of a big room */
};

/* One broadcast, with its frames encoded lazily once per wire format. */
struct hub_room_event {
    int kind;                    /* enum event_kind */
    struct hub_room *room;       /* where it happens */
    struct hub_chat_client *who; /* the actor (NULL for counts) */
    int opcode;                  /* EV_MSG: HUB_WS_TEXT or HUB_WS_BINARY */
    struct hub_iov text;         /* EV_MSG: the payload, borrowed */
    struct hub_iov cmid;         /* EV_MSG: client message id, borrowed */
    struct hub_iov from;         /* EV_MSG: the sender's nick when it was sent, borrowed */
    uint64_t offset;             /* EV_MSG: position in history (0 for binary) */
    int64_t ts;                  /* EV_MSG: when it was sequenced */
    struct hub_iov old_nick;     /* EV_NICK: the previous nick, borrowed */
    struct hub_shared *raw;      /* the raw frame once encoded, owned */
    struct hub_shared *json;     /* the JSON frame once encoded, owned */
};

/* ---- small helpers -------------------------------------------------- */

static int64_t system_now_ms(void)
{
    uv_timeval64_t tv;
    if (uv_gettimeofday(&tv) != 0)
        return 0;
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static int64_t chat_now(const struct hub_chat *chat)
{
    return chat->cfg.now_ms ? chat->cfg.now_ms() : system_now_ms();
}

static struct hub_iov iov_str(const char *s)
{
    struct hub_iov v = {s, strlen(s)};
    return v;
}

/* A request's id: present (has) and its value. */
struct req_id {
    int has;
    long long v;
};

static const struct req_id NO_ID = {0, 0};

/* Sends a finished JSON text to one client. A writer that failed holds a
 * truncated text, which is never sent: a reply (id present) becomes an
 * "internal" error reply instead, a push is lost. */
static void send_error(struct hub_chat_client *cl, struct req_id id, const char *code,
                       const char *message);
static void send_json(struct hub_chat_client *cl, struct hub_jsonw *w, struct req_id id)
{
    if (cl->dead)
        return; /* nobody to send to */
    if (hub_jsonw_error(w) != 0) {
        hub_log_warn("a JSON %s could not be written: out of memory", id.has ? "reply" : "push");
        if (id.has)
            send_error(cl, id, "internal", "out of memory");
        return;
    }
    hub_ws_send(cl->ws, HUB_WS_TEXT, w->b.data, w->b.len);
}

static void begin_reply(struct hub_jsonw *b, struct req_id id)
{
    hub_jsonw_raw(b, "{");
    hub_jsonw_kint(b, "id", id.v);
    hub_jsonw_key(b, "ok");
    hub_jsonw_raw(b, "true");
}

/* Answers a failed request: an error reply when it had an id, an error
 * push otherwise. */
static void send_error(struct hub_chat_client *cl, struct req_id id, const char *code,
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
    send_json(cl, &b, NO_ID);
    hub_jsonw_free(&b);
}

static void send_ok(struct hub_chat_client *cl, struct req_id id)
{
    if (!id.has)
        return;
    struct hub_jsonw b = {0};
    begin_reply(&b, id);
    hub_jsonw_raw(&b, "}");
    send_json(cl, &b, id);
    hub_jsonw_free(&b);
}

/* ---- nick table ----------------------------------------------------- */

static uint64_t nick_hash(const char *s, size_t len)
{
    return hub_hash(s, len, 1);
}

static int nick_eq(const char *a, size_t alen, const char *b, size_t blen)
{
    return hub_eq_ci(a, alen, b, blen);
}

static struct hub_chat_client *nick_find(const struct hub_chat *chat, const char *s, size_t len)
{
    uint64_t h = nick_hash(s, len);
    for (struct hub_chat_client *c = chat->nicks[h & (chat->nnick_buckets - 1)]; c;
         c = c->nick_next)
        if (c->nick_hash == h && nick_eq(c->nick, c->nick_len, s, len))
            return c;
    return NULL;
}

static void nick_unlink(struct hub_chat *chat, struct hub_chat_client *cl)
{
    struct hub_chat_client **pp = &chat->nicks[cl->nick_hash & (chat->nnick_buckets - 1)];
    while (*pp != NULL && *pp != cl)
        pp = &(*pp)->nick_next;
    if (*pp == cl) {
        *pp = cl->nick_next;
        chat->nnicks--;
    }
    cl->nick_next = NULL;
}

static void nick_link(struct hub_chat *chat, struct hub_chat_client *cl)
{
    if (chat->nnicks >= chat->nnick_buckets) {
        size_t n = chat->nnick_buckets * 2;
        struct hub_chat_client **b = calloc(n, sizeof(*b));
        if (b != NULL) {
            for (size_t i = 0; i < chat->nnick_buckets; i++)
                for (struct hub_chat_client *c = chat->nicks[i], *next; c; c = next) {
                    next = c->nick_next;
                    c->nick_next = b[c->nick_hash & (n - 1)];
                    b[c->nick_hash & (n - 1)] = c;
                }
            free(chat->nicks);
            chat->nicks = b;
            chat->nnick_buckets = n;
        }
    }
    cl->nick_hash = nick_hash(cl->nick, cl->nick_len);
    size_t i = cl->nick_hash & (chat->nnick_buckets - 1);
    cl->nick_next = chat->nicks[i];
    chat->nicks[i] = cl;
    chat->nnicks++;
}

/* Checks the nick rules of docs/protocol.md. Returns NULL or a reason. */
static const char *nick_problem(const char *s, size_t len)
{
    if (len == 0)
        return "the nick is empty";
    if (len > HUB_CHAT_NICK_BYTES || hub_utf8_length(s, len) > HUB_CHAT_NICK_MAX)
        return "the nick is longer than 32 characters";
    if (!hub_utf8_valid(s, len))
        return "the nick is not valid UTF-8";
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        /* C0 controls, DEL, and C1 controls (U+0080-U+009F, encoded C2 80-9F). */
        if (c < 0x20 || c == 0x7f || (c == 0xc2 && i + 1 < len && (unsigned char)s[i + 1] < 0xa0))
            return "the nick contains control characters";
    }
    if (s[0] == ' ' || s[len - 1] == ' ')
        return "the nick starts or ends with a space";
    if (memchr(s, ',', len) != NULL)
        return "the nick contains a comma";
    if (s[0] == '@' || (len >= 6 && nick_eq(s, 6, "guest-", 6)))
        return "nicks starting with @ or guest- are reserved";
    return NULL;
}

/* Replaces the nick (copied). Returns 0, or HUB_ENOMEM with the old one kept. */
static int set_nick(struct hub_chat_client *cl, const char *s, size_t len)
{
    char *n = realloc(cl->nick, len + 1);
    if (n == NULL)
        return HUB_ENOMEM;
    memcpy(n, s, len);
    n[len] = '\0';
    cl->nick = n;
    cl->nick_len = len;
    return 0;
}

/* Appends ,"client":"c-<id>". */
static void jw_client_id(struct hub_jsonw *b, const struct hub_chat_client *cl)
{
    char id[24];
    int n = snprintf(id, sizeof(id), "c-%llu", (unsigned long long)cl->id);
    hub_jsonw_kstr(b, "client", id, (size_t)n);
}

/* ---- events and delivery -------------------------------------------- */

static struct hub_shared *encode_json(struct hub_room_event *ev)
{
    struct hub_jsonw b = {0};
    const char *room = hub_room_name(ev->room);
    size_t room_len = hub_room_name_len(ev->room);
    hub_jsonw_raw(&b, "{");
    switch (ev->kind) {
    case EV_MSG:
        hub_jsonw_kstr(&b, "t", "msg", 3);
        hub_jsonw_kstr(&b, "room", room, room_len);
        hub_jsonw_kint(&b, "offset", (long long)ev->offset);
        hub_jsonw_kint(&b, "ts", ev->ts);
        hub_jsonw_kstr(&b, "from", ev->from.base, ev->from.len);
        hub_jsonw_kstr(&b, "text", ev->text.base, ev->text.len);
        if (ev->cmid.len > 0)
            hub_jsonw_kstr(&b, "cmid", ev->cmid.base, ev->cmid.len);
        break;
    case EV_JOIN:
    case EV_LEAVE:
        hub_jsonw_kstr(&b, "t", ev->kind == EV_JOIN ? "join" : "leave",
                       ev->kind == EV_JOIN ? 4 : 5);
        hub_jsonw_kstr(&b, "room", room, room_len);
        hub_jsonw_kstr(&b, "nick", ev->who->nick, ev->who->nick_len);
        jw_client_id(&b, ev->who);
        break;
    case EV_TYPING:
        hub_jsonw_kstr(&b, "t", "typing", 6);
        hub_jsonw_kstr(&b, "room", room, room_len);
        hub_jsonw_kstr(&b, "nick", ev->who->nick, ev->who->nick_len);
        hub_jsonw_kint(&b, "ttl", TYPING_TTL_MS);
        break;
    case EV_NICK:
        hub_jsonw_kstr(&b, "t", "nick", 4);
        hub_jsonw_kstr(&b, "room", room, room_len);
        hub_jsonw_kstr(&b, "old", ev->old_nick.base, ev->old_nick.len);
        hub_jsonw_kstr(&b, "new", ev->who->nick, ev->who->nick_len);
        break;
    case EV_COUNT:
        hub_jsonw_kstr(&b, "t", "count", 5);
        hub_jsonw_kstr(&b, "room", room, room_len);
        hub_jsonw_kint(&b, "members", (long long)hub_room_size(ev->room));
        break;
    }
    hub_jsonw_raw(&b, "}");
    /* A writer that failed holds a cut-off text: no frame rather than a
     * broken one. */
    struct hub_shared *f =
        hub_jsonw_error(&b) == 0 ? hub_ws_frame(HUB_WS_TEXT, b.b.data, b.b.len) : NULL;
    hub_jsonw_free(&b);
    return f;
}

static void deliver(struct room_member *m, struct hub_room *room, struct hub_room_event *ev)
{
    struct hub_chat_client *cl = HUB_CONTAINER_OF(m, struct hub_chat_client, member);
    struct hub_shared **slot;
    if (ev->kind == EV_MSG && cl->njoining > 0)
        for (uint32_t i = 0; i < cl->njoining; i++)
            if (cl->joining[i] == room)
                return; /* the pending join reply carries this message */
    if (cl->mode == HUB_CHAT_RAW) {
        if (ev->kind != EV_MSG)
            return; /* raw clients see messages only */
        if (ev->raw == NULL)
            ev->raw = hub_ws_frame(ev->opcode, ev->text.base, ev->text.len);
        slot = &ev->raw;
    } else {
        if (ev->kind == EV_MSG && ev->opcode != HUB_WS_TEXT)
            return; /* JSON has no binary messages */
        if (ev->json == NULL)
            ev->json = encode_json(ev);
        slot = &ev->json;
    }
    /* A full queue closes that client inside hub_ws_send_frame; the others
     * are unaffected. A failed encode loses this event for this format. */
    if (*slot != NULL)
        hub_ws_send_frame(cl->ws, *slot);
}

static void broadcast(struct hub_room_event *ev, struct hub_chat_client *except)
{
    hub_room_broadcast(ev->room, ev, except ? &except->member : NULL);
    hub_shared_unref(ev->raw);
    hub_shared_unref(ev->json);
    ev->raw = ev->json = NULL;
}

static struct count_entry *count_entry(struct hub_chat *chat, struct hub_room *room, int create)
{
    const char *name = hub_room_name(room);
    for (size_t i = 0; i < chat->ncounts; i++)
        if (strcmp(chat->counts[i].name, name) == 0)
            return &chat->counts[i];
    if (!create)
        return NULL;
    struct count_entry *a = realloc(chat->counts, (chat->ncounts + 1) * sizeof(*a));
    if (a == NULL)
        return NULL;
    chat->counts = a;
    struct count_entry *e = &a[chat->ncounts++];
    memset(e, 0, sizeof(*e));
    memcpy(e->name, name, hub_room_name_len(room) + 1);
    return e;
}

static void push_count(struct hub_chat *chat, struct hub_room *room, struct count_entry *e)
{
    struct hub_room_event ev = {.kind = EV_COUNT, .room = room};
    broadcast(&ev, NULL);
    e->last_push = chat_now(chat);
    e->dirty = 0;
}

/* Tells a room that who joined or is leaving: one push per member while the
 * room is small, a coalesced count push once it is big. */
static void announce_presence(struct hub_chat_client *who, struct hub_room *room, int kind)
{
    struct hub_chat *chat = who->chat;
    if (hub_room_size(room) <= HUB_CHAT_LIST_MAX) {
        struct hub_room_event ev = {.kind = kind, .room = room, .who = who};
        broadcast(&ev, who);
        return;
    }
    struct count_entry *e = count_entry(chat, room, 1);
    if (e == NULL)
        return;
    if (chat_now(chat) - e->last_push >= COUNT_INTERVAL_MS)
        push_count(chat, room, e);
    else
        e->dirty = 1;
}

void hub_chat_tick(struct hub_chat *chat)
{
    int64_t now = chat_now(chat);
    for (size_t i = 0; i < chat->ncounts;) {
        struct count_entry *e = &chat->counts[i];
        struct hub_room *room = hub_rooms_find(chat->rooms, e->name, strlen(e->name));
        if (room == NULL || hub_room_size(room) <= HUB_CHAT_LIST_MAX) {
            /* Gone or small again: per-member pushes take over. */
            if (room != NULL && e->dirty)
                push_count(chat, room, e);
            chat->counts[i] = chat->counts[--chat->ncounts];
            continue;
        }
        if (e->dirty && now - e->last_push >= COUNT_INTERVAL_MS)
            push_count(chat, room, e);
        i++;
    }
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

int hub_chat_new(struct hub_chat **out, const struct hub_chat_config *cfg)
{
    if (cfg->history == NULL)
        return HUB_EINVAL;
    struct hub_chat *chat = calloc(1, sizeof(*chat));
    if (chat == NULL)
        return HUB_ENOMEM;
    chat->cfg = *cfg;
    chat->nnick_buckets = 64;
    chat->nicks = calloc(chat->nnick_buckets, sizeof(*chat->nicks));
    if (chat->nicks == NULL || hub_rooms_new(&chat->rooms, cfg->max_rooms_per_client) != 0) {
        free(chat->nicks);
        free(chat);
        return HUB_ENOMEM;
    }
    *out = chat;
    return 0;
}

void hub_chat_free(struct hub_chat *chat)
{
    if (chat == NULL)
        return;
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

/* Joins cl to a room and tells the others. Returns as hub_rooms_join. */
static int join_room(struct hub_chat_client *cl, struct hub_iov name, struct hub_room **out)
{
    struct hub_room *room;
    int rc = hub_rooms_join(cl->chat->rooms, &cl->member, name.base, name.len, &room);
    if (rc != 0)
        return rc;
    announce_presence(cl, room, EV_JOIN);
    if (out != NULL)
        *out = room;
    return 0;
}

/* Tells the others cl is leaving, then removes it. */
static void unmark_joining(struct hub_chat_client *cl, struct hub_room *room)
{
    for (uint32_t i = 0; i < cl->njoining; i++)
        if (cl->joining[i] == room) {
            cl->joining[i] = cl->joining[--cl->njoining];
            if (cl->njoining == 0) {
                free(cl->joining); /* joins are rare: idle clients keep no array */
                cl->joining = NULL;
            }
            return;
        }
}

static int mark_joining(struct hub_chat_client *cl, struct hub_room *room)
{
    struct hub_room **a = realloc(cl->joining, (cl->njoining + 1) * sizeof(*a));
    if (a == NULL)
        return HUB_ENOMEM;
    cl->joining = a;
    a[cl->njoining++] = room;
    return 0;
}

static void leave_room(struct hub_chat_client *cl, struct hub_room *room)
{
    unmark_joining(cl, room);
    for (uint32_t i = 0; i < cl->ntyping; i++)
        if (cl->typing[i].room == room) {
            cl->typing[i] = cl->typing[--cl->ntyping];
            break;
        }
    if (hub_room_size(room) > 1)
        announce_presence(cl, room, EV_LEAVE);
    hub_rooms_leave(cl->chat->rooms, &cl->member, room);
}

struct hub_chat_client *hub_chat_client_new(struct hub_chat *chat, struct hub_ws *ws, int mode,
                                            struct hub_iov room)
{
    struct hub_chat_client *cl = calloc(1, sizeof(*cl));
    if (cl == NULL)
        return NULL;
    if (set_nick(cl, "", 0) != 0) {
        free(cl);
        return NULL;
    }
    cl->chat = chat;
    cl->ws = ws;
    cl->mode = mode;
    cl->member.deliver = deliver;
    cl->tokens = chat->cfg.burst;
    cl->refilled = chat_now(chat);
    cl->refs = 1;
    cl->id = ++chat->client_seq;
    chat->nclients++;
    if (mode == HUB_CHAT_RAW) {
        char guest[32];
        int n = snprintf(guest, sizeof(guest), "guest-%llu", (unsigned long long)++chat->guest_seq);
        if (set_nick(cl, guest, (size_t)n) != 0) {
            hub_chat_client_free(cl);
            return NULL;
        }
        if (chat->cfg.welcome != NULL)
            hub_ws_send(ws, HUB_WS_TEXT, chat->cfg.welcome, strlen(chat->cfg.welcome));
        if (join_room(cl, room, NULL) != 0) {
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
    send_json(cl, &b, NO_ID);
    hub_jsonw_free(&b);
    return cl;
}

/* A reference for work in flight; while the connection lives it also holds
 * back any close frame until the work's reply or relay has gone out. */
static void client_ref(struct hub_chat_client *cl)
{
    cl->refs++;
    if (!cl->dead)
        hub_ws_hold(cl->ws);
}

static void client_unref(struct hub_chat_client *cl)
{
    if (!cl->dead && cl->refs > 1)
        hub_ws_release(cl->ws);
    if (--cl->refs > 0)
        return;
    free(cl->typing);
    free(cl->joining);
    free(cl->nick);
    free(cl);
}

void hub_chat_client_free(struct hub_chat_client *cl)
{
    if (cl == NULL)
        return;
    struct hub_chat *chat = cl->chat;
    while (cl->member.nrooms > 0)
        leave_room(cl, cl->member.rooms[cl->member.nrooms - 1].room);
    hub_rooms_leave_all(chat->rooms, &cl->member);
    if (cl->hello)
        nick_unlink(chat, cl);
    chat->nclients--;
    cl->dead = 1;
    cl->ws = NULL;
    client_unref(cl);
}

size_t hub_chat_room_count(const struct hub_chat *chat)
{
    return hub_rooms_count(chat->rooms);
}

/* ---- sequencing ------------------------------------------------------ */

/* A message on its way through history: everything the completion needs,
 * copied, because the request that carried it is gone by then. */
struct pending_msg {
    struct hub_chat_client *cl;                    /* the sender (a reference) */
    struct req_id id;                              /* the send request's id, for the ack */
    int opcode;                                    /* HUB_WS_TEXT or HUB_WS_BINARY */
    size_t room_len, from_len, text_len, cmid_len; /* lengths in bytes[] */
    char bytes[];                                  /* room, from, text, cmid */
};

static struct hub_iov pm_part(const struct pending_msg *pm, int k)
{
    size_t lens[4] = {pm->room_len, pm->from_len, pm->text_len, pm->cmid_len};
    size_t off = 0;
    for (int i = 0; i < k; i++)
        off += lens[i];
    struct hub_iov v = {pm->bytes + off, lens[k]};
    return v;
}

/* Delivers a sequenced message to the room it was sent to (if anyone is
 * still there). Raw senders get their own message back (the tutorial relay);
 * JSON senders get the ack instead. */
static void pm_broadcast(struct pending_msg *pm, uint64_t offset, int64_t ts)
{
    struct hub_chat_client *cl = pm->cl;
    struct hub_iov room = pm_part(pm, 0);
    struct hub_room *r = hub_rooms_find(cl->chat->rooms, room.base, room.len);
    if (r == NULL)
        return;
    struct hub_room_event ev = {.kind = EV_MSG, .room = r, .who = cl, .opcode = pm->opcode};
    ev.from = pm_part(pm, 1);
    ev.text = pm_part(pm, 2);
    ev.cmid = pm_part(pm, 3);
    ev.offset = offset;
    ev.ts = ts;
    broadcast(&ev, cl->mode == HUB_CHAT_RAW ? NULL : cl);
}

static void pm_appended(void *data, int err, uint64_t offset, int64_t ts, int duplicate)
{
    struct pending_msg *pm = data;
    struct hub_chat_client *cl = pm->cl;
    if (err != 0) {
        int64_t now = chat_now(cl->chat);
        if (now - cl->chat->storage_warned >= 10000) {
            /* Once per 10 s: a full disk fails every send. */
            cl->chat->storage_warned = now;
            hub_log_warn("cannot store messages: %s", hub_strerror(err));
        }
        send_error(cl, pm->id, err == HUB_EIO ? "storage" : "internal",
                   "the message could not be stored; try again");
    } else {
        if (!duplicate) {
            hub_metrics.published++;
            pm_broadcast(pm, offset, ts);
        }
        if (pm->id.has && !cl->dead) {
            struct hub_iov room = pm_part(pm, 0);
            struct hub_jsonw b = {0};
            begin_reply(&b, pm->id);
            hub_jsonw_kstr(&b, "room", room.base, room.len);
            hub_jsonw_kint(&b, "offset", (long long)offset);
            hub_jsonw_kint(&b, "ts", ts);
            if (duplicate) {
                /* A resend after a reconnect: the original stands. */
                hub_jsonw_key(&b, "duplicate");
                hub_jsonw_raw(&b, "true");
            }
            hub_jsonw_raw(&b, "}");
            send_json(cl, &b, pm->id);
            hub_jsonw_free(&b);
        }
    }
    free(pm);
    client_unref(cl);
}

/* Binary relays are not stored; a barrier keeps them in order with the
 * text messages around them. */
static void pm_relay(void *data)
{
    struct pending_msg *pm = data;
    struct hub_chat_client *cl = pm->cl;
    pm_broadcast(pm, 0, 0);
    free(pm);
    client_unref(cl);
}

/* Sends text (or a raw binary message) from cl into room through history.
 * The ack (for requests with an id) and the pushes follow its completion. */
static void publish(struct hub_chat_client *cl, struct req_id id, struct hub_iov room, int opcode,
                    struct hub_iov text, struct hub_iov cmid)
{
    struct hub_chat *chat = cl->chat;
    struct pending_msg *pm = malloc(sizeof(*pm) + room.len + cl->nick_len + text.len + cmid.len);
    if (pm == NULL) {
        send_error(cl, id, "internal", "out of memory");
        return;
    }
    pm->cl = cl;
    pm->id = id;
    pm->opcode = opcode;
    pm->room_len = room.len;
    pm->from_len = cl->nick_len;
    pm->text_len = text.len;
    pm->cmid_len = cmid.len;
    char *p = pm->bytes;
    memcpy(p, room.base, room.len);
    memcpy(p += room.len, cl->nick, cl->nick_len);
    memcpy(p += cl->nick_len, text.base, text.len);
    memcpy(p + text.len, cmid.base, cmid.len);
    client_ref(cl);
    int rc = opcode == HUB_WS_TEXT
                 ? hub_history_append(chat->cfg.history, room, pm_part(pm, 1), pm_part(pm, 2),
                                      pm_part(pm, 3), chat_now(chat), pm_appended, pm)
                 : hub_history_barrier(chat->cfg.history, pm_relay, pm);
    if (rc != 0) {
        send_error(cl, id, "internal", "the message could not be queued");
        free(pm);
        client_unref(cl);
    }
}

/* ---- JSON requests --------------------------------------------------- */

struct request {
    struct hub_chat_client *cl; /* who asked */
    json_t *root;               /* the parsed object, owned by the dispatcher */
    struct req_id id;           /* its id */
};

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
static const char *room_problem(const struct hub_chat_client *cl, struct hub_iov room)
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
            if (nick_eq(room.base + 1, alen, cl->nick, cl->nick_len) ||
                nick_eq(comma + 1, room.len - alen - 2, cl->nick, cl->nick_len))
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
        send_error(rq->cl, rq->id, "bad_request", "\"room\" must be a string");
        return -1;
    }
    const char *why = room_problem(rq->cl, *room);
    if (why != NULL) {
        send_error(rq->cl, rq->id, "bad_room", why);
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

static void jw_messages(struct hub_jsonw *b, const struct hub_history_msg *msgs, size_t n)
{
    hub_jsonw_key(b, "messages");
    hub_jsonw_raw(b, "[");
    for (size_t i = 0; i < n; i++) {
        hub_jsonw_raw(b, i ? ",{" : "{");
        hub_jsonw_kint(b, "offset", (long long)msgs[i].offset);
        hub_jsonw_kint(b, "ts", msgs[i].ts);
        hub_jsonw_kstr(b, "from", msgs[i].from.base, msgs[i].from.len);
        hub_jsonw_kstr(b, "text", msgs[i].text.base, msgs[i].text.len);
        if (msgs[i].cmid.len > 0)
            hub_jsonw_kstr(b, "cmid", msgs[i].cmid.base, msgs[i].cmid.len);
        hub_jsonw_raw(b, "}");
    }
    hub_jsonw_raw(b, "]");
}

static void jw_members(struct hub_jsonw *b, struct hub_room *room)
{
    size_t n = room != NULL ? hub_room_size(room) : 0;
    if (n > HUB_CHAT_LIST_MAX) {
        hub_jsonw_kint(b, "count", (long long)n);
        return;
    }
    hub_jsonw_key(b, "members");
    hub_jsonw_raw(b, "[");
    for (size_t i = 0; i < n; i++) {
        struct hub_chat_client *m =
            HUB_CONTAINER_OF(hub_room_member(room, i), struct hub_chat_client, member);
        hub_jsonw_raw(b, i ? ",{" : "{");
        hub_jsonw_kstr(b, "nick", m->nick, m->nick_len);
        jw_client_id(b, m);
        hub_jsonw_raw(b, "}");
    }
    hub_jsonw_raw(b, "]");
}

/* Parses a position {"epoch": string, "offset": integer}. Returns 1 if
 * present, 0 if absent (NULL or null), -1 if malformed. */
static int parse_since(json_t *since, const char **epoch, size_t *elen, uint64_t *offset)
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
    size_t room_len;                       /* length of room */
    char room[];                           /* the room's name */
};

static void hello_finish(struct hello_state *hs)
{
    hub_jsonw_raw(&hs->b, "}}");
    send_json(hs->cl, &hs->b, hs->id);
    hub_jsonw_free(&hs->b);
    client_unref(hs->cl);
    free(hs);
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

static void hello_finish(struct hello_state *hs);

static void refusal_cb(void *data)
{
    struct hello_refusal *r = data;
    struct hello_state *hs = r->hs;
    jw_refusal(&hs->b, r->room, r->code, r->message);
    free(r);
    if (--hs->outstanding == 0 && hs->issued)
        hello_finish(hs);
}

/* Writes a refused entry into the hello reply: at once if nothing is ahead
 * of it, else in order behind the pending reads, through a barrier. */
static void hello_refuse(struct hello_state *hs, const char *room, const char *code,
                         const char *message)
{
    if (hs->outstanding > 0) {
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
    send_json(cl, &g, NO_ID);
    hub_jsonw_free(&g);
}

/* Writes a joined room's state (after its name): position, messages and
 * members. With a resume position it keeps only what came after it, and
 * announces with a gap push what cannot be delivered. */
static void jw_join_state(struct pending_join *pj, struct hub_jsonw *b,
                          const struct hub_history_pos *pos, const struct hub_history_msg *msgs,
                          size_t n, struct hub_room *room)
{
    struct hub_iov name = {pj->room, pj->room_len};
    hub_jsonw_kstr(b, "epoch", pos->epoch, strlen(pos->epoch));
    hub_jsonw_kint(b, "offset", (long long)pos->last);
    size_t skip = n > pj->history ? n - pj->history : 0;
    int complete = 1;
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
            /* More was missed than one page holds: the client pages back. */
            complete = !(n > 0 && msgs[0].offset > pj->since + 1 && msgs[0].offset > pos->first);
        }
    }
    jw_messages(b, skip < n ? msgs + skip : NULL, n - skip);
    if (!complete) {
        hub_jsonw_key(b, "complete");
        hub_jsonw_raw(b, "false");
    }
    jw_members(b, room);
}

static void join_read_cb(void *data, int err, const struct hub_history_pos *pos,
                         const struct hub_history_msg *msgs, size_t n, int complete)
{
    struct pending_join *pj = data;
    struct hub_chat_client *cl = pj->cl;
    struct hub_room *room = hub_rooms_find(cl->chat->rooms, pj->room, pj->room_len);
    if (room != NULL && hub_rooms_is_member(&cl->member, room))
        unmark_joining(cl, room); /* from now on the pushes carry the news */
    else
        room = NULL;
    struct hub_jsonw own = {0};
    struct hub_jsonw *b = pj->hello != NULL ? &pj->hello->b : &own;
    if (pj->hello != NULL) {
        hub_jsonw_key(b, pj->room);
        hub_jsonw_raw(b, "{");
    } else {
        begin_reply(b, pj->id);
    }
    if (err != 0) {
        if (pj->hello == NULL) {
            send_error(cl, pj->id, "internal", "history is not available");
        } else {
            hub_jsonw_key(b, "error");
            hub_jsonw_raw(b, "{\"code\":\"internal\",\"message\":\"history is not available\"}");
        }
    } else {
        if (pj->hello == NULL)
            hub_jsonw_kstr(b, "room", pj->room, pj->room_len);
        jw_join_state(pj, b, pos, msgs, n, room);
    }
    hub_jsonw_raw(b, "}");
    if (pj->hello != NULL) {
        struct hello_state *hs = pj->hello;
        if (--hs->outstanding == 0 && hs->issued)
            hello_finish(hs);
    } else if (err == 0 && pj->id.has) {
        send_json(cl, b, pj->id);
    }
    hub_jsonw_free(&own);
    free(pj);
    client_unref(cl);
}

/* Joins a room for a join request or a hello resume entry and requests its
 * history; the reply is written when the read completes. Returns 0, or -1
 * with *code and *message describing why it failed (nothing sent). */
static int start_join(struct hub_chat_client *cl, struct req_id id, struct hello_state *hello,
                      struct hub_iov name, unsigned history, const char *since_epoch, size_t elen,
                      uint64_t since, const char **code, const char **message)
{
    struct hub_chat *chat = cl->chat;
    struct pending_join *pj = calloc(1, sizeof(*pj) + name.len + 1);
    if (pj == NULL)
        goto fail_memory;
    struct hub_room *room;
    int rc = join_room(cl, name, &room);
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
    if (rc != 0 || mark_joining(cl, room) != 0)
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
    client_ref(cl);
    if (hello != NULL)
        hello->outstanding++;
    unsigned limit = since_epoch != NULL ? RESUME_MAX : history;
    if (hub_history_read(chat->cfg.history, name, HUB_HISTORY_LATEST, 0, limit, join_read_cb, pj) ==
        0)
        return 0;
    if (hello != NULL)
        hello->outstanding--;
    client_unref(cl);
    unmark_joining(cl, room);
fail_leave:
    if (rc == 0)
        leave_room(cl, room);
fail_free:
    free(pj);
    if (*code != NULL)
        return -1;
fail_memory:
    *code = "internal";
    *message = "out of memory";
    return -1;
}

static void op_join(struct request *rq)
{
    struct hub_iov name;
    if (get_room(rq, &name) != 0)
        return;
    uint64_t history = rq->cl->chat->cfg.history_default;
    if (get_uint(rq, "history", JOIN_HISTORY_MAX, &history) < 0) {
        send_error(rq->cl, rq->id, "bad_request", "\"history\" must be an integer 0-100");
        return;
    }
    const char *epoch = NULL;
    size_t elen = 0;
    uint64_t since = 0;
    if (parse_since(json_object_get(rq->root, "since"), &epoch, &elen, &since) < 0) {
        send_error(rq->cl, rq->id, "bad_request",
                   "\"since\" must be {\"epoch\": string, \"offset\": integer}");
        return;
    }
    const char *code = NULL, *message = NULL;
    if (start_join(rq->cl, rq->id, NULL, name, (unsigned)history, epoch, elen, since, &code,
                   &message) != 0)
        send_error(rq->cl, rq->id, code, message);
}

static void op_leave(struct request *rq)
{
    struct hub_iov name;
    if (get_room(rq, &name) != 0)
        return;
    struct hub_room *room = joined_room(rq->cl, name);
    if (room == NULL) {
        send_error(rq->cl, rq->id, "not_joined", "you are not in this room");
        return;
    }
    leave_room(rq->cl, room);
    send_ok(rq->cl, rq->id);
}

/* Checks a message text and cmid. Returns 0 or -1 after an error reply. */
static int get_text(const struct request *rq, struct hub_iov *text, struct hub_iov *cmid)
{
    if (get_str(rq, "text", text) != 1 || text->len == 0) {
        send_error(rq->cl, rq->id, "bad_text", "\"text\" must be a non-empty string");
        return -1;
    }
    if (hub_utf8_length(text->base, text->len) > rq->cl->chat->cfg.max_text) {
        send_error(rq->cl, rq->id, "too_long", "the text is longer than max_text characters");
        return -1;
    }
    cmid->base = "";
    cmid->len = 0;
    if (get_str(rq, "cmid", cmid) < 0 || cmid->len > HUB_CHAT_CMID_MAX) {
        send_error(rq->cl, rq->id, "bad_request", "\"cmid\" must be a string of at most 64 bytes");
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
        send_error(rq->cl, rq->id, "not_joined", "join the room before sending to it");
        return;
    }
    if (get_text(rq, &text, &cmid) != 0)
        return;
    publish(rq->cl, rq->id, name, HUB_WS_TEXT, text, cmid);
}

/* A history request waiting for its read. */
struct pending_history {
    struct hub_chat_client *cl; /* the client (a reference) */
    struct req_id id;           /* the request's id */
    size_t room_len;            /* length of room */
    char room[];                /* the room's name */
};

static void history_read_cb(void *data, int err, const struct hub_history_pos *pos,
                            const struct hub_history_msg *msgs, size_t n, int complete)
{
    struct pending_history *ph = data;
    struct hub_chat_client *cl = ph->cl;
    if (err != 0) {
        send_error(cl, ph->id, "internal", "history is not available");
    } else if (ph->id.has) {
        struct hub_jsonw b = {0};
        begin_reply(&b, ph->id);
        hub_jsonw_kstr(&b, "room", ph->room, ph->room_len);
        hub_jsonw_kstr(&b, "epoch", pos->epoch, strlen(pos->epoch));
        hub_jsonw_kint(&b, "offset", (long long)pos->last);
        jw_messages(&b, msgs, n);
        hub_jsonw_key(&b, "complete");
        hub_jsonw_raw(&b, complete ? "true" : "false");
        hub_jsonw_raw(&b, "}");
        send_json(cl, &b, ph->id);
        hub_jsonw_free(&b);
    }
    free(ph);
    client_unref(cl);
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
        send_error(rq->cl, rq->id, "bad_request",
                   "use one of \"before\" or \"after\" (integers) and \"limit\" 1-100");
        return;
    }
    struct pending_history *ph = malloc(sizeof(*ph) + name.len);
    if (ph == NULL) {
        send_error(rq->cl, rq->id, "internal", "out of memory");
        return;
    }
    ph->cl = rq->cl;
    ph->id = rq->id;
    ph->room_len = name.len;
    memcpy(ph->room, name.base, name.len);
    client_ref(rq->cl);
    int dir = hb > 0 ? HUB_HISTORY_BEFORE : ha > 0 ? HUB_HISTORY_AFTER : HUB_HISTORY_LATEST;
    if (hub_history_read(rq->cl->chat->cfg.history, name, dir, hb > 0 ? before : after,
                         (unsigned)limit, history_read_cb, ph) != 0) {
        send_error(rq->cl, rq->id, "internal", "history is not available");
        free(ph);
        client_unref(rq->cl);
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
        send_error(cl, rq->id, "not_joined", "you are not in this room");
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
        broadcast(&ev, cl);
    }
    /* No success reply: typing is fire-and-forget (docs/protocol.md). */
}

/* Validates a requested nick. Returns 0, or -1 after an error reply. */
static int check_nick(const struct request *rq, struct hub_iov *nick)
{
    if (get_str(rq, "nick", nick) != 1) {
        send_error(rq->cl, rq->id, "bad_nick", "\"nick\" must be a string");
        return -1;
    }
    const char *why = nick_problem(nick->base, nick->len);
    if (why != NULL) {
        send_error(rq->cl, rq->id, "bad_nick", why);
        return -1;
    }
    const struct hub_chat_client *owner = nick_find(rq->cl->chat, nick->base, nick->len);
    if (owner != NULL && owner != rq->cl) {
        send_error(rq->cl, rq->id, "nick_taken", "another client uses this nick");
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
    nick_unlink(cl->chat, cl);
    int rc = set_nick(cl, nick.base, nick.len);
    nick_link(cl->chat, cl);
    if (rc != 0) {
        send_error(cl, rq->id, "internal", "out of memory");
        return;
    }
    struct hub_jsonw b = {0};
    begin_reply(&b, rq->id);
    hub_jsonw_kstr(&b, "nick", cl->nick, cl->nick_len);
    hub_jsonw_raw(&b, "}");
    if (rq->id.has)
        send_json(cl, &b, rq->id);
    hub_jsonw_free(&b);
    for (uint32_t i = 0; i < cl->member.nrooms; i++) {
        struct hub_room_event ev = {.kind = EV_NICK, .room = cl->member.rooms[i].room, .who = cl};
        ev.old_nick.base = old;
        ev.old_nick.len = old_len;
        broadcast(&ev, cl);
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
    int rc = join_room(c, name, room);
    if (rc != 0 || c == from)
        return rc;
    struct hub_jsonw b = {0};
    hub_jsonw_raw(&b, "{");
    hub_jsonw_kstr(&b, "t", "dm", 2);
    hub_jsonw_kstr(&b, "room", name.base, name.len);
    hub_jsonw_kstr(&b, "from", from->nick, from->nick_len);
    hub_jsonw_raw(&b, "}");
    send_json(c, &b, NO_ID);
    hub_jsonw_free(&b);
    return 0;
}

static void op_dm(struct request *rq)
{
    struct hub_chat_client *cl = rq->cl;
    struct hub_iov to, text, cmid;
    if (get_str(rq, "to", &to) != 1) {
        send_error(cl, rq->id, "bad_request", "\"to\" must be a nick");
        return;
    }
    struct hub_chat_client *peer = nick_find(cl->chat, to.base, to.len);
    if (peer == NULL) {
        send_error(cl, rq->id, "no_such_nick", "no connected client has that nick");
        return;
    }
    if (peer == cl) {
        send_error(cl, rq->id, "bad_request", "a direct message needs another nick");
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
        send_error(cl, rq->id, "too_many_rooms",
                   !cl_in && cl->member.nrooms >= max
                       ? "you are in the maximum number of rooms"
                       : "the recipient is in the maximum number of rooms");
        return;
    }
    if (dm_ensure_member(cl, cl, room_name, &room) != 0 ||
        dm_ensure_member(peer, cl, room_name, &room) != 0) {
        send_error(cl, rq->id, "internal", "out of memory");
        return;
    }
    publish(cl, rq->id, room_name, HUB_WS_TEXT, text, cmid);
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
    begin_reply(&b, rq->id);
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
        send_json(rq->cl, &b, rq->id);
    hub_jsonw_free(&b);
    free(l.items);
}

static void op_ping(struct request *rq)
{
    send_ok(rq->cl, rq->id);
    struct hub_jsonw b = {0};
    hub_jsonw_raw(&b, "{");
    hub_jsonw_kstr(&b, "t", "pong", 4);
    hub_jsonw_kint(&b, "ts", chat_now(rq->cl->chat));
    hub_jsonw_raw(&b, "}");
    send_json(rq->cl, &b, NO_ID);
    hub_jsonw_free(&b);
}

static void op_hello(struct request *rq)
{
    struct hub_chat_client *cl = rq->cl;
    struct hub_chat *chat = cl->chat;
    if (cl->hello) {
        send_error(cl, rq->id, "already_hello", "hello was already done");
        return;
    }
    struct hub_iov nick;
    if (check_nick(rq, &nick) != 0)
        return;
    json_t *resume = json_object_get(rq->root, "resume");
    if (resume != NULL && !json_is_null(resume) && !json_is_object(resume)) {
        send_error(cl, rq->id, "bad_request", "\"resume\" must be an object of room positions");
        return;
    }
    if (set_nick(cl, nick.base, nick.len) != 0) {
        send_error(cl, rq->id, "internal", "out of memory");
        return;
    }
    nick_link(chat, cl);
    cl->hello = 1;

    struct hello_state *hs = calloc(1, sizeof(*hs));
    if (hs == NULL) {
        send_error(cl, rq->id, "internal", "out of memory");
        return;
    }
    hs->cl = cl;
    hs->id = rq->id;
    client_ref(cl);
    struct hub_jsonw *b = &hs->b;
    begin_reply(b, rq->id);
    jw_client_id(b, cl);
    hub_jsonw_kstr(b, "nick", cl->nick, cl->nick_len);
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
    hub_jsonw_kint(b, "history_page", 100);
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
        struct hub_iov name = iov_str(key);
        const char *epoch = NULL, *code = "bad_request", *message = NULL;
        size_t elen = 0;
        uint64_t offset = 0;
        const char *why = room_problem(cl, name);
        if (why != NULL) {
            code = "bad_room";
            message = why;
        } else if (parse_since(since, &epoch, &elen, &offset) < 0) {
            message = "a resume position must be {\"epoch\": string, \"offset\": integer}";
        } else {
            code = NULL;
            if (start_join(cl, rq->id, hs, name, chat->cfg.history_default, epoch, elen, offset,
                           &code, &message) == 0)
                continue;
        }
        hello_refuse(hs, key, code, message);
    }
    hs->issued = 1;
    if (hs->outstanding == 0)
        hello_finish(hs);
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
static int parse_id(json_t *root, struct req_id *id)
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

static void json_message(struct hub_chat_client *cl, const char *data, size_t len)
{
    json_error_t err;
    struct request rq = {cl, NULL, {0, 0}};
    /* JSON allows \u0000 in strings; the nick and room rules refuse it where
     * it matters, and message text may carry it. */
    rq.root = json_loadb(data, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &err);
    if (rq.root == NULL || !json_is_object(rq.root)) {
        send_error(cl, rq.id, "bad_json", "each frame must hold one JSON object");
        json_decref(rq.root);
        return;
    }
    if (parse_id(rq.root, &rq.id) != 0) {
        send_error(cl, rq.id, "bad_request", "\"id\" must be an integer from 0 to 2^53 - 1");
        json_decref(rq.root);
        return;
    }
    const char *op = json_string_value(json_object_get(rq.root, "op"));
    if (op == NULL) {
        send_error(cl, rq.id, "bad_request", "\"op\" must be a string");
    } else {
        size_t i;
        for (i = 0; i < HUB_ARRAY_SIZE(ops); i++)
            if (strcmp(op, ops[i].name) == 0)
                break;
        if (i == HUB_ARRAY_SIZE(ops))
            send_error(cl, rq.id, "unknown_op", "no such operation");
        else if (!cl->hello && ops[i].fn != op_hello && ops[i].fn != op_ping)
            send_error(cl, rq.id, "hello_required", "the first request must be hello");
        else
            ops[i].fn(&rq);
    }
    json_decref(rq.root);
}

/* Token bucket: rate tokens a second, at most burst saved up. Returns 1 if
 * the client may send one more message now. */
static int take_token(struct hub_chat_client *cl)
{
    const struct hub_chat_config *cfg = &cl->chat->cfg;
    if (cfg->rate == 0)
        return 1;
    int64_t now = chat_now(cl->chat);
    if (now > cl->refilled) {
        cl->tokens += (double)(now - cl->refilled) * cfg->rate / 1000.0;
        if (cl->tokens > cfg->burst)
            cl->tokens = cfg->burst;
        cl->refilled = now;
    }
    if (cl->tokens < 1.0)
        return 0;
    cl->tokens -= 1.0;
    return 1;
}

/* A message over the rate limit: JSON clients get an error reply, raw ones
 * lose it silently; a client that keeps going after a whole burst of
 * refusals is closed with 4013 (it may reconnect and slow down). */
static void refuse_rate(struct hub_chat_client *cl, const char *data, size_t len)
{
    hub_metrics.rate_limited++;
    if (++cl->strikes > cl->chat->cfg.burst) {
        hub_ws_close(cl->ws, 4013, "too many requests");
        return;
    }
    if (cl->mode != HUB_CHAT_JSON)
        return;
    struct req_id id = {0, 0};
    json_t *root = json_loadb(data, len, JSON_ALLOW_NUL, NULL);
    if (parse_id(root, &id) != 0)
        id.has = 0; /* an unusable id gets an error push instead */
    json_decref(root);
    send_error(cl, id, "rate_limited", "too many requests: slow down");
}

void hub_chat_client_message(struct hub_chat_client *cl, int opcode, const char *data, size_t len)
{
    if (data == NULL)
        data = ""; /* an empty message may come without a buffer */
    if (!take_token(cl)) {
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
        json_message(cl, data, len);
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
    publish(cl, no_id, name, opcode, text, none);
}
