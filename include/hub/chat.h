/*
 * chat.h: what the hub does with WebSocket messages (docs/protocol.md).
 *
 * Raw mode (no subprotocol): the client is in one room, named by the upgrade
 * path, under a guest nick, and every text or binary message it sends is
 * relayed verbatim to every raw member of that room, the sender included, in
 * the order received. Text messages are also sequenced into history and
 * reach JSON members as msg pushes.
 *
 * JSON mode (chathub.v1): one JSON request per text frame, replies and
 * pushes as documented; nicks, rooms, history with positions, presence,
 * typing, direct messages.
 *
 * A broadcast is one struct hub_room_event handed to every member through
 * the rooms module; each wire format (raw, JSON) is encoded at most once per
 * event into a reference-counted frame that all recipients of that format
 * share. The chat layer never touches a socket or a timer: the server calls
 * hub_chat_tick once a second for the work that is due later.
 *
 * Everything that must hold across nodes goes through an engine
 * (hub/engine.h): a message is published to it and reaches this node's
 * members only from its on_msg upcall, in offset order; presence, nick
 * claims, typing and direct-message invites are engine calls and upcalls.
 * By default chat opens the memory engine over cfg.history itself; a server
 * with another engine opens it with hub_chat_engine_events and hands it
 * over with hub_chat_use_engine. A request the engine cannot serve now
 * (HUB_EAGAIN) is answered with the error code "unavailable" (temporary:
 * resend, with the same cmid for a send); raw lines that cannot be
 * published are dropped and counted (hub_metrics.raw_dropped).
 */
#ifndef HUB_CHAT_H
#define HUB_CHAT_H

#include "hub/common.h"

struct hub_auth;
struct hub_auth_identity;
struct hub_chat;
struct hub_chat_client;
struct hub_flow;
struct hub_engine;
struct hub_engine_events;
struct hub_history;
struct hub_ws;

#define HUB_CHAT_ROOM_MAX 64    /* bytes in a public room name */
#define HUB_CHAT_NICK_MAX 32    /* characters in a nick */
#define HUB_CHAT_NICK_BYTES 100 /* bytes in a nick */
#define HUB_CHAT_CMID_MAX 64    /* bytes in a client message id */
#define HUB_CHAT_LIST_MAX 200   /* members listed, and presence pushed, up to this size */

enum hub_chat_mode {
    HUB_CHAT_RAW = 0,  /* no subprotocol: verbatim relay */
    HUB_CHAT_JSON = 1, /* chathub.v1 */
};

struct hub_chat_config {
    const char *welcome;             /* raw greeting / JSON motd, or NULL (borrowed) */
    const char *server_name;         /* e.g. "chathub 0.1.0" (borrowed) */
    struct hub_history *history;     /* the message store, borrowed: chat opens the memory
                                        engine over it; NULL: hub_chat_use_engine must give
                                        an engine before the first client */
    uint32_t max_rooms_per_client;   /* rooms one connection may be in (64) */
    size_t max_text;                 /* characters in a message text (4000) */
    size_t max_message;              /* WebSocket message limit, announced in hello */
    unsigned history_default;        /* messages in a join reply (50) */
    unsigned history_max_rooms_kept; /* announced "history" limit (1000) */
    size_t page_bytes;               /* bytes of messages per reply page; 0 = a quarter of
                                        the connection's output limit (256 KiB if none) */
    int64_t (*now_ms)(void);         /* wall clock in ms; NULL = the system clock */
    uint32_t ping_interval_s;        /* WebSocket ping period, announced in hello (25) */
    uint32_t rate;                   /* messages per second per client (20; 0 = no limit) */
    uint32_t burst;                  /* messages a client may send at once (40) */
    struct hub_flow *flow;           /* backpressure on senders (flow.h), borrowed; NULL =
                                        none: the rate limit then only refuses */
    uint32_t max_total_rooms;        /* rooms that exist at once (0 = no limit) */
    const struct hub_auth *auth;     /* connection tokens (hub/auth.h), borrowed; NULL:
                                        no tokens, everything as without them */
    int guests;                      /* with auth: a hello without a token makes a guest
                                        (nick shown with a "~" in front) */
};

#define HUB_CHAT_CLOSE_EXPIRED                                                                     \
    4401 /* close code: the token expired, reconnect with a                                        \
            fresh one (docs/protocol.md) */

/* Close code of a connection a moderator or the server API disconnected
 * (HUB_CONTROL_DISCONNECT); the reason is the close reason. */
#define HUB_CHAT_CLOSE_DISCONNECTED 4003

void hub_chat_config_default(struct hub_chat_config *cfg);

/* Creates the hub-wide chat state. cfg is copied; its pointers stay borrowed
 * and must outlive chat. With cfg->history, chat opens (and owns) the memory
 * engine over it. Returns 0 or HUB_ENOMEM. */
int hub_chat_new(struct hub_chat **out, const struct hub_chat_config *cfg);

/* Fills ev with chat's engine upcalls; open an engine with them and the
 * chat as data, then hand it over with hub_chat_use_engine. */
void hub_chat_engine_events(struct hub_engine_events *ev);

/* Makes chat use engine (borrowed: the caller closes and frees it after
 * chat is done with it, i.e. after the last client was freed) instead of
 * its own memory engine, which is freed. Call before the first client.
 * Client ids become "<node id>-c-<n>" unless the engine is a memory one
 * ("c-<n>"). */
void hub_chat_use_engine(struct hub_chat *chat, struct hub_engine *engine);

/* The engine chat uses (borrowed), or NULL. */
struct hub_engine *hub_chat_engine(const struct hub_chat *chat);

/* Frees chat (and the memory engine it opened); every client must have been
 * freed. */
void hub_chat_free(struct hub_chat *chat);

/* Returns 1 if name is a valid public room name: 1-64 bytes of [A-Za-z0-9_.:-]. */
int hub_chat_valid_room(const char *name, size_t len);

/* Maps an upgrade request path to a room: "/", "/ws" and "/ws/" mean
 * "lobby"; "/ws/<room>" and "/<room>" name a room. Returns 0 with *room
 * pointing into path (or at a static "lobby"), or HUB_EINVAL if the name is
 * not valid (the caller answers 400). */
int hub_chat_room_from_path(struct hub_iov path, struct hub_iov *room);

/* Creates a client for ws (borrowed; must outlive the client). A raw client
 * joins room (copied) at once and gets the welcome line if configured; a
 * JSON client gets the welcome push and waits for hello (room is ignored).
 * Returns NULL when out of memory (the caller closes the connection). */
struct hub_chat_client *hub_chat_client_new(struct hub_chat *chat, struct hub_ws *ws, int mode,
                                            struct hub_iov room);

/* Like hub_chat_client_new, for a client a token signed (id, taken and
 * emptied, as hub_chat_raw_admit filled it; NULL or an empty identity: as
 * hub_chat_client_new). Only raw mode uses it: JSON clients give their
 * token in hello. */
struct hub_chat_client *hub_chat_client_new_as(struct hub_chat *chat, struct hub_ws *ws, int mode,
                                               struct hub_iov room, struct hub_auth_identity *id);

/* Decides a raw-mode upgrade to room when tokens are on: the token is the
 * query's token= parameter. Returns 0 (admitted; id filled when a valid
 * token came, else left empty: a guest, only with cfg.guests), 401 (no
 * token without guests, or a bad one; *why says which check failed, never
 * the secret) or 403 (the token's rooms claim does not include room).
 * Without tokens it returns 0 and leaves id empty. */
int hub_chat_raw_admit(struct hub_chat *chat, struct hub_iov room, struct hub_iov query,
                       struct hub_auth_identity *id, const char **why);

/* Handles one complete message from the client (data borrowed for the call). */
void hub_chat_client_message(struct hub_chat_client *cl, int opcode, const char *data, size_t len);

/* Tells the client's rooms it left, removes it everywhere and frees it. Call
 * only from the connection's close path, never during a broadcast. NULL is
 * ignored. */
void hub_chat_client_free(struct hub_chat_client *cl);

/* Does the work that is due: coalesced member-count pushes of big rooms,
 * and closing (HUB_CHAT_CLOSE_EXPIRED) the connections whose token expired.
 * The server calls it about once a second. */
void hub_chat_tick(struct hub_chat *chat);

/* Number of rooms that have members. */
size_t hub_chat_room_count(const struct hub_chat *chat);

/* Returns 1 if a client may enter the room called name (borrowed): it exists
 * already, or max_total_rooms leaves room for one more; 0 otherwise (the
 * server then answers a raw upgrade 503, a join gets too_many_rooms_total). */
int hub_chat_room_admits(const struct hub_chat *chat, struct hub_iov name);

/* Moderation figures for /metrics. */
struct hub_chat_mod_stats {
    uint64_t kick, ban, unban, mute, unmute, del, topic, edit; /* actions done on this node */
    uint64_t search;                                           /* search requests answered */
};

/* Fills st with what this node's clients did (chathub_moderation_total and
 * chathub_search_total). */
void hub_chat_mod_stats(const struct hub_chat *chat, struct hub_chat_mod_stats *st);

/* Joins and upgrades refused by max_total_rooms so far. */
uint64_t hub_chat_rooms_refused(const struct hub_chat *chat);

#endif
