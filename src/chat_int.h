/*
 * chat_int.h: what the chat files share (private to src/chat*.c, nicks.c
 * and the chat unit test).
 *
 * chat.h is the contract with the server; this header holds the real structs
 * behind it and the calls the chat files make into each other, the way
 * wslay's wslay_event.h sits next to wslay_event.c. The files (DESIGN.md
 * section 2):
 * - chat.c: client lifetime, references, the rate limit, raw relay,
 *   publishing through the engine, the engine's upcalls, and the reply and
 *   error writers;
 * - chat_json.c: the chathub.v1 operations and their dispatch;
 * - chat_join.c: joining and leaving, and the join/resume state machine that
 *   assembles join and hello replies from history reads;
 * - chat_fanout.c: turning an event into frames, delivery, presence pushes;
 * - nicks.c: this node's nick table (the engine's claims make nicks unique
 *   across nodes; the table finds local clients by nick) and the nick rules.
 *
 * Everything that must be true across nodes goes through the engine
 * (hub/engine.h): messages are published to it and reach local members only
 * from its on_msg upcall; presence, nick claims, typing and DM invites are
 * its calls and upcalls. rooms is this node's delivery index.
 */
#ifndef HUB_CHAT_INT_H
#define HUB_CHAT_INT_H

#include "hub/chat.h"
#include "hub/auth.h"
#include "hub/buf.h"
#include "hub/engine.h"
#include "hub/ident.h"
#include "hub/jsonw.h"
#include "hub/rooms.h"

#include <jansson.h>
#include <string.h>

struct hub_history_msg;
struct hello_state;
struct pending_dm;
struct chat_backlog;

#define TYPING_INTERVAL_MS 3000        /* forward at most one typing per client and room */
#define TYPING_TTL_MS 6000             /* how long a receiver shows it */
#define COUNT_INTERVAL_MS 1000         /* at most one count push per big room */
#define JOIN_HISTORY_MAX 100           /* messages a join may ask for */
#define RESUME_MAX 100                 /* messages a resume reads at once (one history page) */
#define CHAT_PAGE_DEFAULT (256 * 1024) /* page bytes without an output limit */
#define CHAT_PAGE_SLACK 8192           /* output room kept for a reply's other fields */
#define ROOMS_LIST_MAX 200             /* rooms in a rooms reply */
/* Raw lines read past the rate bucket: up to this many seconds of the
 * rate are still relayed, on credit. */
#define CHAT_RATE_DEBT_S 10
#define DM_WAIT_MS 2000    /* a remote dm waits at most this for the peer's join */
#define ROOMS_ASK_MAX 1000 /* rooms asked of the engine (DM rooms are left out) */
#define CHAT_ID_MAX (HUB_ENGINE_NODE_ID_MAX + 24) /* bytes in a client id and its NUL */
#define CHAT_BACKLOG_MAX 64                       /* requests waiting behind a nick claim */
#define CHAT_BACKLOG_BYTES (256 * 1024)           /* their bytes */

/* Moderation (and edit) actions counted for /metrics
 * (chathub_moderation_total{action}); names in chat_mod_action_name. */
enum chat_mod_action {
    CHAT_MOD_KICK,
    CHAT_MOD_BAN,
    CHAT_MOD_UNBAN,
    CHAT_MOD_MUTE,
    CHAT_MOD_UNMUTE,
    CHAT_MOD_DELETE,
    CHAT_MOD_TOPIC,
    CHAT_MOD_EDIT,
    CHAT_MOD_NACTIONS,
};

#define CHAT_SEARCH_Q_MAX 200   /* bytes in a search query */
#define CHAT_SEARCH_DEFAULT 20  /* results of a search by default */
#define CHAT_SEARCH_MAX 50      /* results of a search at most */
#define CHAT_EMOJI_POINTS_MAX 8 /* code points in a reaction's emoji */
#define CHAT_REASON_MAX 512     /* bytes of a moderation reason */
#define CHAT_KEY_MAX (CHAT_OWNER_MAX + HUB_IDENT_KEY_MAX + 2) /* an author or actor key */

/* Per-room bookkeeping for presence in big rooms, kept only for rooms that
 * passed HUB_CHAT_LIST_MAX members. */
struct count_entry {
    char name[HUB_ROOM_NAME_MAX + 1]; /* room name */
    uint64_t members;                 /* members on all nodes, from the engine */
    int64_t last_push;                /* when the last count went out */
    int dirty;                        /* membership changed since */
};

/* A signed client's identity (only signed clients have one: idle
 * unsigned connections pay one pointer). The list lets the tick find
 * expired tokens without walking every client. */
struct chat_user {
    struct hub_auth_identity id;     /* the token's claims, owned */
    struct chat_user *next, **pprev; /* in chat->users */
    struct hub_chat_client *cl;      /* whose it is */
    int closed;                      /* the expiry close was sent */
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
    uint64_t rooms_refused;         /* joins and upgrades refused by max_total_rooms */
    struct hub_engine *engine;      /* the engine: owned if own_engine, else borrowed */
    int own_engine;                 /* opened by hub_chat_new over cfg.history */
    struct pending_dm *dm_waits;    /* remote dms waiting for their peer's join, owned */
    char id_prefix[HUB_ENGINE_NODE_ID_MAX + 2]; /* "<node id>-", or "" (memory engine) */
    size_t id_prefix_len;                       /* bytes in id_prefix */
    struct chat_user *users;                    /* signed clients, for expiry */
    uint64_t mod_count[CHAT_MOD_NACTIONS];      /* moderation actions by enum chat_mod_action */
    uint64_t searches;                          /* search requests answered */
};

struct typing_mark {
    struct hub_room *room; /* a room the client is in */
    int64_t last;          /* when its last typing was forwarded */
};

/* A msg push held back while its room's join reply is on its way. */
struct chat_held {
    uint64_t offset;          /* the message's offset */
    struct hub_shared *frame; /* its JSON frame, a reference */
};

/* A membership whose join read and live pushes are being reconciled by
 * offset. Pushes arrive in offset order per room, but a read and the pushes
 * are not ordered against each other in general (another node's engine
 * answers them on different connections): while the reply is pending,
 * pushes are held; once it is out, the ones at or below delivered_upto (the
 * reply's position) are dropped, the rest delivered. The entry goes with
 * the first push past delivered_upto, after which none can be at or below. */
struct chat_sub {
    struct hub_room *room;     /* the room */
    uint64_t delivered_upto;   /* msg pushes at or below this offset are dropped */
    struct hello_state *hello; /* the hello whose reply carries the room, or NULL */
    int pending;               /* the reply has not been sent: hold pushes */
    struct chat_held *held;    /* owned: pushes held while pending, oldest first */
    uint32_t nheld;            /* entries in held */
    uint32_t capheld;          /* capacity of held */
};

#define CHAT_HELD_MAX 4096 /* pushes held per pending join; later ones are dropped */

struct hub_chat_client {
    struct room_member member;         /* membership, embedded */
    struct hub_chat *chat;             /* the hub, borrowed */
    struct hub_ws *ws;                 /* the client's WebSocket, borrowed */
    int mode;                          /* enum hub_chat_mode */
    int hello;                         /* JSON: hello succeeded */
    int claiming;                      /* a nick claim (hello or nick) is in flight */
    int waiting;                       /* replies of joins and hellos still on their way
                                          (multi-node engine): later requests wait */
    struct chat_backlog *backlog;      /* owned: requests that came during a claim, or NULL */
    struct hub_chat_client *nick_next; /* nick table chain */
    uint64_t nick_hash;                /* hash of the nick's claim key */
    size_t nick_len;                   /* bytes in nick */
    char *nick;                        /* current nick, NUL-terminated, owned */
    uint64_t id;                       /* the client id is "<id_prefix>c-<id>" */
    struct typing_mark *typing;        /* owned, one per room typed in */
    uint32_t ntyping;                  /* entries in typing */
    double tokens;                     /* rate limit: messages it may send now */
    int64_t refilled;                  /* rate limit: when tokens was last topped up */
    uint32_t strikes;                  /* messages refused in a row */
    uint32_t refs;                     /* the connection's plus one per request in flight */
    int dead;                          /* the connection is gone: send nothing */
    struct chat_user *user;            /* owned: the token's identity, or NULL (unsigned) */
    int guest;                         /* tokens are on and this client has none */
    struct chat_sub *subs;             /* owned: memberships being reconciled with a read */
    uint32_t nsubs;                    /* entries in subs */
};

enum event_kind {
    EV_MSG,    /* a message was sequenced */
    EV_JOIN,   /* a member joined */
    EV_LEAVE,  /* a member left */
    EV_TYPING, /* a member is typing */
    EV_NICK,   /* a member changed nick */
    EV_COUNT,  /* member count of a big room */
    EV_GAP,    /* the room's epoch changed: a gap push with reason "epoch" */
    /* Issue 15 (JSON members only): */
    EV_EDITED,   /* a message's text was edited */
    EV_DELETED,  /* a message was deleted */
    EV_REACTION, /* a reaction was added or taken back */
    EV_TOPIC,    /* the room's topic changed */
};

/* One broadcast, with its frames encoded lazily once per wire format. */
struct hub_room_event {
    int kind;                /* enum event_kind */
    struct hub_room *room;   /* where it happens */
    uint64_t skip;           /* a local client id that does not get it (0: none); for
                                EV_MSG only a JSON sender is skipped (raw ones get
                                their own lines back) */
    struct hub_iov nick;     /* EV_JOIN/LEAVE/TYPING: the actor's nick; EV_NICK: the
                                new one (borrowed) */
    struct hub_iov client;   /* EV_JOIN/LEAVE: the actor's client id, borrowed */
    uint64_t members;        /* EV_COUNT: members on all nodes */
    struct hub_iov epoch;    /* EV_GAP: the new epoch, borrowed */
    int opcode;              /* EV_MSG: HUB_WS_TEXT or HUB_WS_BINARY */
    struct hub_iov text;     /* EV_MSG: the payload, borrowed */
    struct hub_iov cmid;     /* EV_MSG: client message id, borrowed */
    struct hub_iov from;     /* EV_MSG: the sender's nick when it was sent, borrowed */
    uint64_t offset;         /* EV_MSG: position in history (0 for binary) */
    int64_t ts;              /* EV_MSG: when it was sequenced */
    struct hub_iov old_nick; /* EV_NICK: the previous nick, borrowed */
    struct hub_iov mentions; /* EV_MSG: '\n'-terminated nicks mentioned, borrowed */
    uint64_t reply_to;       /* EV_MSG: offset answered, or 0 */
    int64_t edited_ts;       /* EV_EDITED: when (EV_EDITED's text is in text) */
    struct hub_iov emoji;    /* EV_REACTION: the emoji (nick: who), borrowed */
    uint32_t count;          /* EV_REACTION: users with the emoji now */
    int on;                  /* EV_REACTION: 1 added, 0 taken back */
    struct hub_shared *raw;  /* the raw frame once encoded, owned */
    struct hub_shared *json; /* the JSON frame once encoded, owned */
};

/* A request's id: present (has) and its value. */
struct req_id {
    int has;
    long long v;
};

/* The id of a request that had none (errors become pushes). */
#define NO_ID ((struct req_id){0, 0})

struct request {
    struct hub_chat_client *cl; /* who asked */
    json_t *root;               /* the parsed object, owned by the dispatcher */
    struct req_id id;           /* its id */
};

static inline struct hub_iov chat_iov_str(const char *s)
{
    struct hub_iov v = {s, strlen(s)};
    return v;
}

/* ---- chat.c: helpers, lifetime, sequencing ------------------------------ */

/* The hub's wall clock in ms (the injected one in tests). */
int64_t chat_now(const struct hub_chat *chat);

/* Sends a finished JSON text (w borrowed) to cl; id is the request the text
 * answers (NO_ID for a push). A writer in error is never sent: a reply
 * becomes an "internal" error, a push is lost. */
void chat_send_json(struct hub_chat_client *cl, struct hub_jsonw *w, struct req_id id);

/* Starts a success reply {"id":N,"ok":true in b. */
void chat_begin_reply(struct hub_jsonw *b, struct req_id id);

/* Answers a failed request: an error reply when it had an id, an error push
 * otherwise (code and message are borrowed for the call). */
void chat_send_error(struct hub_chat_client *cl, struct req_id id, const char *code,
                     const char *message);

void chat_send_ok(struct hub_chat_client *cl, struct req_id id);

/* Appends ,"client":"<id>". */
void chat_jw_client_id(struct hub_jsonw *b, const struct hub_chat_client *cl);

/* Writes cl's client id ("<node id>-c-<n>", or "c-<n>" with the memory
 * engine) and a NUL into buf (CHAT_ID_MAX bytes). Returns its length. */
size_t chat_client_id(const struct hub_chat_client *cl, char *buf);

/* The local client number n of a client id of this node, or 0 if the id is
 * another node's (or not a client id). */
uint64_t chat_local_id(const struct hub_chat *chat, struct hub_iov client);

/* The error reply for an engine failure err (HUB_EAGAIN: "unavailable";
 * HUB_EIO: "storage"; anything else "internal"), with what as the message
 * of the non-temporary codes. */
void chat_send_engine_error(struct hub_chat_client *cl, struct req_id id, int err,
                            const char *what);

/* A reference for work in flight, and its release (the last one frees). */
void chat_client_ref(struct hub_chat_client *cl);

void chat_client_unref(struct hub_chat_client *cl);

/* Publishes text (or a raw binary message) from cl into room through the
 * engine; the ack (for an id) follows its completion, the pushes come from
 * on_msg. Views borrowed. */
void chat_publish(struct hub_chat_client *cl, struct req_id id, struct hub_iov room, int opcode,
                  struct hub_iov text, struct hub_iov cmid);

/* chat_publish with a reply_to (0: none); JSON text also gets its mentions,
 * and every text its author and actor keys (chat_edit.c). */
void chat_publish_ex(struct hub_chat_client *cl, struct req_id id, struct hub_iov room, int opcode,
                     struct hub_iov text, struct hub_iov cmid, uint64_t reply_to);

/* ---- tokens (chat.c) ---------------------------------------------------- */

/* Bytes of a claim owner and its NUL: a client id, or "u:<sub>". */
#define CHAT_OWNER_MAX (HUB_AUTH_SUB_MAX + 3 > CHAT_ID_MAX ? HUB_AUTH_SUB_MAX + 3 : CHAT_ID_MAX)

/* Writes who owns cl's nick claims into buf (CHAT_OWNER_MAX bytes): "u:"
 * and the sub for a signed client (all connections of one user share its
 * claim), else its client id. Returns the length. */
size_t chat_claim_owner(const struct hub_chat_client *cl, char *buf);

/* Releases cl's claim on its nick, unless another local connection of the
 * same signed user still holds it (call after unlinking cl). */
void chat_release_own_nick(struct hub_chat_client *cl);

/* 1 if a and b are connections of one signed user. */
int chat_same_user(const struct hub_chat_client *a, const struct hub_chat_client *b);

/* Appends ,"user":{"sub","name","role"} for a signed client, ,"guest":true
 * for a guest, nothing otherwise. */
void chat_jw_user(struct hub_jsonw *b, const struct hub_chat_client *cl);

/* Closes (HUB_CHAT_CLOSE_EXPIRED) the connections whose token's exp has
 * come; hub_chat_tick calls it. */
void chat_expire_users(struct hub_chat *chat);

/* Drops cl's identity (a refused hello): it is unsigned again. */
void chat_clear_user(struct hub_chat_client *cl);

/* Takes id (emptied) as cl's signed identity. Returns 0 or HUB_ENOMEM. */
int chat_set_user(struct hub_chat_client *cl, struct hub_auth_identity *id);

/* ---- nicks.c ------------------------------------------------------------ */

/* Bytes of a claim key and its NUL (the ident key, see hub/ident.h). */
#define CHAT_NICK_KEY_MAX HUB_IDENT_KEY_MAX

int chat_nick_eq(const char *a, size_t alen, const char *b, size_t blen);

/* Writes the name under which the nick s is claimed, in the local table and
 * in the engine, into key (CHAT_NICK_KEY_MAX bytes, NUL-terminated): its
 * ident key (NFKC, case folding, UTS #39 skeleton), or "#" and the hex SHA-1
 * of the key when that is longer than HUB_ENGINE_NICK_MAX bytes. Look-alike
 * nicks have the same claim key. Returns its length (a string that is no
 * nick at all keeps its own bytes). */
size_t chat_nick_key(const char *s, size_t len, char *key);

/* 1 if the nicks a and b have the same claim key (look-alikes). */
int chat_nick_same(const char *a, size_t alen, const char *b, size_t blen);

/* The local client holding the nick s (or a look-alike), or NULL. */
struct hub_chat_client *chat_nick_find(const struct hub_chat *chat, const char *s, size_t len);

/* The local client whose nick has the claim key key (klen bytes), or NULL. */
struct hub_chat_client *chat_nick_find_key(const struct hub_chat *chat, const char *key,
                                           size_t klen);

void chat_nick_link(struct hub_chat *chat, struct hub_chat_client *cl);

void chat_nick_unlink(struct hub_chat *chat, struct hub_chat_client *cl);

/* Checks the nick rules of docs/protocol.md. Returns NULL or a reason. */
const char *chat_nick_problem(const char *s, size_t len);

/* Replaces cl's nick (copied). Returns 0, or HUB_ENOMEM with the old one kept. */
int chat_set_nick(struct hub_chat_client *cl, const char *s, size_t len);

/* ---- chat_fanout.c ------------------------------------------------------ */

/* The room_member deliver callback of every client. */
void chat_deliver(struct room_member *m, struct hub_room *room, struct hub_room_event *ev);

/* Hands ev to every member of ev->room but ev->skip, then frees the frames
 * encoded for it. */
void chat_broadcast(struct hub_room_event *ev);

/* Removes who from room: the engine hears of the leave (its on_presence
 * tells the others), and the room's last local member unsubscribes. room
 * must not be used afterwards. */
void chat_remove_member(struct hub_chat_client *who, struct hub_room *room);

/* The engine's upcalls (the engine's data is the hub_chat). */
void chat_on_msg(void *data, const struct hub_engine_msg *m);
void chat_on_presence(void *data, const struct hub_engine_presence *p);
void chat_on_typing(void *data, struct hub_iov room, struct hub_iov client, struct hub_iov nick);
void chat_on_epoch(void *data, struct hub_iov room, struct hub_iov epoch);

/* ---- chat_join.c -------------------------------------------------------- */

/* Joins cl to a room (name copied): the first local member subscribes the
 * room, and the engine hears of the join (its on_presence tells the
 * others). Returns as hub_rooms_join, or HUB_EAGAIN/HUB_ENOMEM from the
 * engine for a JSON client (nothing joined then; a raw client stays in the
 * room without presence); *out (may be NULL) receives the room. */
int chat_join_room(struct hub_chat_client *cl, struct hub_iov name, struct hub_room **out);

/* Tells the others cl is leaving, then removes it from room. */
void chat_leave_room(struct hub_chat_client *cl, struct hub_room *room);

/* Appends "messages":[...] (msgs borrowed). */
void chat_jw_messages(struct hub_jsonw *b, const struct hub_history_msg *msgs, size_t n);

/* Bytes msg takes in a "messages" array (with its separating comma). */
size_t chat_msg_size(const struct hub_history_msg *m);

/* The page size announced to cl in hello.limits.page_bytes. */
size_t chat_page_bytes(const struct hub_chat_client *cl);

/* The byte budget for the messages of one reply to cl: cfg.page_bytes, or a
 * quarter of the connection's output limit (CHAT_PAGE_DEFAULT without one),
 * and never more than half of what its output queue can still take. Sets
 * *room_left to what the queue can take (SIZE_MAX: no limit), the most a
 * single message alone may take. */
size_t chat_page_budget(const struct hub_chat_client *cl, size_t *room_left);

/* How many of msgs[0..n) (oldest first) one page holds: the newest run
 * (newest != 0) or the oldest run whose sizes add up to at most budget, or
 * a first message alone that is bigger, if it takes at most one_max. Sets
 * *used (may be NULL) to their bytes. The page is msgs[n-k..n) or msgs[0..k). */
size_t chat_page_fit(const struct hub_history_msg *msgs, size_t n, int newest, size_t budget,
                     size_t one_max, size_t *used);

/* Appends ,"next":{"<dir>":pos}: where the client continues with history. */
void chat_jw_next(struct hub_jsonw *b, const char *dir, uint64_t pos);

/* The reconciliation entry of cl in room, or NULL. */
struct chat_sub *chat_sub_find(const struct hub_chat_client *cl, const struct hub_room *room);

/* Holds a msg push (frame referenced) for a pending sub. */
void chat_sub_hold(struct chat_sub *s, uint64_t offset, struct hub_shared *frame);

/* Drops cl's reconciliation entry for room (leaving, or done). */
void chat_sub_remove(struct hub_chat_client *cl, const struct hub_room *room);

/* Parses a position {"epoch": string, "offset": integer}. Returns 1 if
 * present, 0 if absent (NULL or null), -1 if malformed. */
int chat_parse_since(json_t *since, const char **epoch, size_t *elen, uint64_t *offset);

/* Joins a room for a join request (hello NULL) or a hello resume entry and
 * requests its history; the reply is written when the read completes.
 * Returns 0, or -1 with *code and *message saying why (nothing sent). */
int chat_start_join(struct hub_chat_client *cl, struct req_id id, struct hello_state *hello,
                    struct hub_iov name, unsigned history, const char *since_epoch, size_t elen,
                    uint64_t since, const char **code, const char **message);

/* The state of a hello reply for cl (borrowed) answering id: allocated
 * first, so that a hello that cannot be answered commits nothing. Returns
 * NULL when out of memory. */
struct hello_state *chat_hello_new(struct hub_chat_client *cl, struct req_id id);

/* Frees a hello state that chat_hello_resume was not given. */
void chat_hello_discard(struct hello_state *hs);

/* Writes the hello reply of hs (taken) for its client, whose nick is set:
 * identity, limits, and each room of resume (an object or NULL, borrowed for
 * the call) answered like a join with since. It goes out once every read is
 * done. */
void chat_hello_resume(struct hello_state *hs, json_t *resume);

/* calloc(1, size) for the chat layer's request state. Unit tests set
 * chat_alloc_fail_in to n > 0 to make the n-th call from then on fail
 * (fault injection; 0, the default, never fails). */
extern unsigned chat_alloc_fail_in;
void *chat_calloc(size_t size);

/* ---- chat_json.c -------------------------------------------------------- */

/* Request field readers shared with chat_edit.c and chat_mod.c. chat_req_str
 * and chat_req_uint return 1 (present), 0 (absent or null), -1 (wrong type
 * or out of range); chat_req_room returns 0, or -1 after an error reply
 * (bad_request, bad_room); chat_req_text checks a message text as send does
 * (0, or -1 after bad_text/too_long). */
int chat_req_str(const struct request *rq, const char *key, struct hub_iov *out);
int chat_req_uint(const struct request *rq, const char *key, uint64_t max, uint64_t *out);
int chat_req_room(const struct request *rq, struct hub_iov *room);
int chat_req_text(const struct request *rq, struct hub_iov *text);

/* The room name if cl is a member of it, else NULL. */
struct hub_room *chat_joined_room(struct hub_chat_client *cl, struct hub_iov name);

/* The engine's on_invite: puts the local client holding nick in room. */
void chat_on_invite(void *data, struct hub_iov client, struct hub_iov nick, struct hub_iov room,
                    struct hub_iov from);

/* nick joined room (on_presence): remote dms waiting for that releases go. */
void chat_dm_peer_joined(struct hub_chat *chat, struct hub_iov room, struct hub_iov nick);

/* Sends the remote dms that waited DM_WAIT_MS for their peer's join (or,
 * with all, frees every waiting one: the hub is going). */
void chat_dm_tick(struct hub_chat *chat, int64_t now, int all);

/* Checks that cl may use a room of this name. Returns NULL or the reason. */
const char *chat_room_problem(const struct hub_chat_client *cl, struct hub_iov room);

/* Reads a request's optional id. Returns 0, or -1 if present but unusable. */
int chat_parse_id(json_t *root, struct req_id *id);

/* Handles one chathub.v1 text frame (data borrowed). While a nick claim
 * (hello or nick) is on its way, or (with a multi-node engine, whose join
 * takes several round trips) a join's or hello's reply, frames wait in cl's backlog (copied, at
 * most CHAT_BACKLOG_MAX of them and CHAT_BACKLOG_BYTES; past that a request
 * is refused with rate_limited) and are handled in order once it is done. */
void chat_json_message(struct hub_chat_client *cl, const char *data, size_t len);

/* Frees cl's backlog (the client is going). */
void chat_backlog_free(struct hub_chat_client *cl);

/* Handles cl's waiting requests in order, while nothing they wait for is on
 * its way (call when a claim completes or cl->waiting drops). */
void chat_backlog_drain(struct hub_chat_client *cl);

/* ---- chat_edit.c: edits, deletes, reactions, search, mentions -------- */

/* cl's author key ("u:<sub>" signed, "g:<client id>" otherwise; empty for
 * raw mode) into buf (CHAT_KEY_MAX bytes). Returns its length. */
size_t chat_author_key(const struct hub_chat_client *cl, char *buf);

/* cl's actor key for bans and mutes ("u:<sub>" signed, raw mode included;
 * "n:<claim key of its nick>" for other JSON clients; empty for unsigned raw
 * clients). Returns its length. */
size_t chat_actor_key(const struct hub_chat_client *cl, char *buf);

/* 1 if cl's token has role mod or admin. */
int chat_is_mod(const struct hub_chat_client *cl);

/* Finds the @nick tokens of text that name a local member of room or a
 * nick held on this node, writes them '\n'-terminated (as shown) into out
 * (outsz bytes), at most HUB_HISTORY_MENTIONS_MAX. Returns the length. */
size_t chat_mentions(const struct hub_chat *chat, struct hub_iov text, char *out, size_t outsz);

/* Writes one stored message as a JSON object (tombstones without text). */
void chat_jw_message(struct hub_jsonw *b, const struct hub_history_msg *m);

/* Writes ,"mentions":[...] from a '\n'-terminated list (nothing if empty). */
void chat_jw_mentions(struct hub_jsonw *b, struct hub_iov mentions);

void chat_op_edit(struct request *rq);
void chat_op_delete(struct request *rq);
void chat_op_react(struct request *rq);
void chat_op_unreact(struct request *rq);
void chat_op_search(struct request *rq);

/* The engine's on_amend: edited/deleted/reaction pushes to JSON members. */
void chat_on_amend(void *data, const struct hub_engine_amended *a);

/* ---- chat_mod.c: moderation -------------------------------------------- */

void chat_op_kick(struct request *rq);
void chat_op_ban(struct request *rq);
void chat_op_unban(struct request *rq);
void chat_op_mute(struct request *rq);
void chat_op_unmute(struct request *rq);
void chat_op_topic(struct request *rq);

/* The engine's on_control: kicks, bans, disconnects and topics applied to
 * this node's clients. */
void chat_on_control(void *data, const struct hub_engine_control *c);

/* The label of a counted action ("kick", "ban", ...). */
const char *chat_mod_action_name(int action);

#endif
