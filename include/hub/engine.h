/*
 * engine.h: what must be true across nodes: sequencing and storing room
 * messages, fan-out to every node with members, history reads, presence,
 * nick claims, typing and direct-message invites.
 *
 * Two engines sit behind this one header:
 * - memory (the default): one node. Messages are sequenced and stored by the
 *   hub_history store it is given (memory or SQLite, borrowed), fan-out is an
 *   upcall on this node, presence and nicks are tables of this process.
 * - redis: several nodes share one or more Redis servers. A Lua script
 *   sequences, stores (a stream per room) and publishes each message
 *   atomically; each node subscribes once per room that has local members,
 *   so a message crosses Redis once per node. Rooms are sharded over several
 *   independent Redis servers by a consistent hash of the room name.
 *   docs/engine.md describes the keys, the scripts and the failure modes.
 *
 * Identities. A client is named by an opaque string (chat uses its client id;
 * it must be unique across nodes, e.g. prefixed by the node id). Nicks are
 * compared under ASCII case folding. Room names are 1..HUB_ROOM_NAME_MAX bytes.
 *
 * Ordering (the same promise from both engines):
 * - For one room, on_msg fires on every node in offset order, each offset
 *   once, starting after the room was subscribed. A node that notices a hole
 *   (a lost publication) reads the missing range from the store first. If the
 *   store no longer has part of it (trimmed), delivery skips it.
 * - A publish completes after its message is durable and sequenced (acked by
 *   Redis, committed by SQLite). Nothing orders a publish completion against
 *   the on_msg of the same message, or events of different rooms.
 * - Publishes and reads of one room complete in the order they were made.
 *   join/leave/renick/members calls of one room take effect in call order,
 *   and a members completion sees every join and leave made before it. Claims
 *   and releases of one nick take effect in call order.
 * - on_presence fires on every node subscribed to the room, for the members
 *   of every node including this one (local is 1 for this node's members).
 *
 * Conventions (those of history.h): every string passed in is copied before
 * the call returns; views handed to callbacks and upcalls are borrowed for
 * that call only; if a call returns an error its callback never fires.
 * Callbacks and upcalls run on the loop thread. The memory engine completes
 * presence, nick, typing and invite calls before returning (and publishes and
 * reads as its history store does); callers must accept a callback from
 * inside the call, as with the memory history store. Its hub_engine_control
 * fires on_control before returning, so the caller must not be in the middle
 * of something the handler changes (walking a room's members, say): send the
 * control message last, after the caller's own state is consistent. Its
 * on_amend fires right after the amendment's completion callback.
 *
 * Errors. HUB_EAGAIN means the engine is not connected to the Redis server
 * that owns the room or nick (or the request timed out, or its connection
 * broke, or the outgoing queue is full): a temporary failure, reported
 * promptly. A publish that fails with HUB_EAGAIN after it was sent may still
 * have been applied: clients resend with the same cmid, which deduplicates.
 * HUB_EIO is a store failure (disk full). HUB_ECLOSED: the engine is closing.
 */
#ifndef HUB_ENGINE_H
#define HUB_ENGINE_H

#include "hub/common.h"
#include "hub/history.h"

#include <uv.h>

struct hub_engine;

/* A sequenced message, or an unstored binary relay (offset 0). Views are
 * borrowed for the upcall. */
struct hub_engine_msg {
    struct hub_iov room;   /* the room */
    struct hub_iov from;   /* sender's nick when it was sent */
    struct hub_iov text;   /* payload: UTF-8 text, or bytes of a binary relay */
    struct hub_iov cmid;   /* client message id, or empty */
    struct hub_iov client; /* sender's client id (to skip the sender), or empty */
    struct hub_iov epoch;  /* the room's epoch; empty for relays and from the memory engine */
    uint64_t offset;       /* position in the room, from 1; 0 for a binary relay */
    int64_t ts;            /* ms since the Unix epoch when sequenced (0 for relays) */
    int binary;            /* 1: a binary relay (never stored) */
    /* Issue 15 (empty/0 when not given): */
    struct hub_iov author;   /* author key (hub_history_msg.author) */
    struct hub_iov mentions; /* '\n'-terminated nicks */
    uint64_t reply_to;       /* offset answered, or 0 */
};

/* A change to a stored message, fanned out like a message (on_amend on
 * every subscribed node, after the on_msg of that offset on that node).
 * Views are borrowed for the upcall. */
struct hub_engine_amended {
    struct hub_iov room;
    uint64_t offset;
    int kind;             /* enum hub_history_amend_kind */
    struct hub_iov text;  /* EDIT: the new text */
    int64_t edited_ts;    /* EDIT */
    struct hub_iov emoji; /* REACT/UNREACT */
    uint32_t count;       /* REACT/UNREACT: users with the emoji now */
    struct hub_iov who;   /* the actor's author key */
    struct hub_iov nick;  /* the actor's nick */
};

/* Control messages reach every node (including this one), each of which
 * applies them to its own clients; they are rare (moderation, the API). */
enum hub_engine_control_kind {
    HUB_CONTROL_KICK = 1,       /* target leaves room (a kicked push with reason) */
    HUB_CONTROL_BAN = 2,        /* target was banned from room (empty room: the hub): it
                                   leaves the room (every room) with a banned push */
    HUB_CONTROL_DISCONNECT = 3, /* every connection of target is closed (reason given) */
    HUB_CONTROL_TOPIC = 4,      /* room's topic is now text: a topic push to its members */
    HUB_CONTROL_MUTE = 5,       /* target was muted in room (empty room: the hub) until until_ms,
                                   or unmuted (until_ms 0): a muted/unmuted push to it */
};

/* Views are copied by hub_engine_control and borrowed for on_control. */
struct hub_engine_control {
    int kind;              /* enum hub_engine_control_kind */
    struct hub_iov target; /* "u:<sub>" (every connection of that user), or a nick (whoever
                              holds it, compared by claim key); empty for TOPIC */
    struct hub_iov room;   /* the room; empty for a hub-wide BAN or a DISCONNECT */
    struct hub_iov text;   /* the reason (KICK, BAN, DISCONNECT) or the topic (TOPIC) */
    struct hub_iov by;     /* who did it (a nick or "api") */
    int64_t until_ms;      /* BAN: until when (INT64_MAX: for good) */
};

enum hub_engine_presence_kind {
    HUB_ENGINE_JOIN = 0,  /* client joined room */
    HUB_ENGINE_LEAVE = 1, /* client left room (or its node died) */
    HUB_ENGINE_NICK = 2,  /* client, a member of room, changed nick */
};

/* A membership change. Views are borrowed for the upcall. */
struct hub_engine_presence {
    int kind;                /* enum hub_engine_presence_kind */
    struct hub_iov room;     /* the room */
    struct hub_iov client;   /* the member's client id */
    struct hub_iov nick;     /* its nick (the new one for HUB_ENGINE_NICK) */
    struct hub_iov old_nick; /* HUB_ENGINE_NICK: the previous nick; else empty */
    uint64_t members;        /* members of the room on all nodes after the change */
    int local;               /* 1 if the member is a client of this node */
};

/* Upcalls, registered once at open; data is the opener's. Every pointer may
 * be NULL except on_msg. */
struct hub_engine_events {
    /* A message for a subscribed room, in offset order (see above). */
    void (*on_msg)(void *data, const struct hub_engine_msg *m);
    /* A membership change in a subscribed room. */
    void (*on_presence)(void *data, const struct hub_engine_presence *p);
    /* client (nick) is typing in a subscribed room; fire-and-forget. */
    void (*on_typing)(void *data, struct hub_iov room, struct hub_iov client, struct hub_iov nick);
    /* The room's epoch changed (its history was lost in the store): every
     * position held for the room is void; chat sends gap reason "epoch".
     * Fires before the first on_msg of the new epoch. */
    void (*on_epoch)(void *data, struct hub_iov room, struct hub_iov epoch);
    /* A direct message invite for client (nick), a client of this node:
     * from (a nick) wants it in room. */
    void (*on_invite)(void *data, struct hub_iov client, struct hub_iov nick, struct hub_iov room,
                      struct hub_iov from);
    /* The engine's readiness changed (ready 1/0, reason borrowed). */
    void (*on_state)(void *data, int ready, const char *reason);
    /* A stored message of a subscribed room was edited, deleted or reacted
     * to (hub_engine_amend on any node). */
    void (*on_amend)(void *data, const struct hub_engine_amended *a);
    /* A control message (hub_engine_control on any node). */
    void (*on_control)(void *data, const struct hub_engine_control *c);
};

/* Settings of the Redis engine. Strings are copied by open. */
struct hub_engine_config {
    const char *const *urls; /* redis://[:password@]host:port[/db], one per shard (borrowed) */
    size_t nurls;            /* 1..HUB_ENGINE_MAX_SHARDS */
    const char *node_id;     /* this node's id (1..64 of [A-Za-z0-9._-]); NULL: random */
    const char *prefix;      /* key and channel prefix ("chathub:") */
    uint32_t history_max;    /* stream length kept per room, XADD MAXLEN ~ (1000) */
    uint32_t lease_ms;       /* node lease: a dead node's members vanish after it (30000) */
    uint32_t timeout_ms;     /* a request unanswered this long breaks its connection (5000) */
    uint32_t max_inflight;   /* requests in flight or held per connection (10000) */
    uint32_t dedupe_ttl_s;   /* how long a cmid is remembered (86400) */
    uint32_t backoff_min_ms; /* first reconnect delay (100) */
    uint32_t backoff_max_ms; /* longest reconnect delay (5000) */
    uint32_t fill_max;       /* messages one hole-fill read asks for (1000) */
};

#define HUB_ENGINE_MAX_SHARDS 64
#define HUB_ENGINE_NICK_MAX 255 /* longest nick (claim name) the engine takes, in bytes */
#define HUB_ENGINE_NODE_ID_MAX 64

/* Fills cfg with the defaults above (urls NULL, nurls 0). */
void hub_engine_config_default(struct hub_engine_config *cfg);

/* Opens the memory engine over store (borrowed; it must outlive the engine
 * and is not closed by it). ev is copied; data is passed to every upcall.
 * Returns 0 or HUB_ENOMEM. */
int hub_engine_open_memory(struct hub_engine **out, struct hub_history *store,
                           const struct hub_engine_events *ev, void *data);

/* Returns 1 if this build has the Redis engine (meson -Dredis). */
int hub_engine_have_redis(void);

/* Opens the Redis engine on loop and starts connecting to every shard; it
 * returns before any connection is up (the engine is not ready until every
 * shard is connected, see hub_engine_stats). Host names are resolved here,
 * once (this may block at start-up, like opening the SQLite store). Returns
 * 0; HUB_EINVAL with a one-line reason in err (bad URL, bad node id, no
 * shards, or a build without Redis); HUB_ENOMEM. */
int hub_engine_open_redis(struct hub_engine **out, uv_loop_t *loop,
                          const struct hub_engine_config *cfg, const struct hub_engine_events *ev,
                          void *data, char *err, size_t errsz);

/* Starts closing: requests in flight complete (with HUB_EAGAIN if their
 * answer does not come), the Redis connections are closed and their timers
 * stopped, and then cb fires (the memory engine calls it before returning).
 * No call may be made afterwards except hub_engine_free. Note for the drain:
 * the Redis engine owns uv_poll_t handles (hiredis's libuv adapter) and
 * uv_timer_t handles that are not clients; all are closed by the time their
 * close callbacks have run, which is after cb (one more loop iteration). */
void hub_engine_close(struct hub_engine *e, void (*cb)(void *data), void *data);

/* Frees the engine: after hub_engine_close's cb, or if nothing was ever
 * requested of a memory engine. NULL is ignored. */
void hub_engine_free(struct hub_engine *e);

/* The node id (NUL-terminated, owned by the engine): "local" for memory. */
const char *hub_engine_node_id(const struct hub_engine *e);

/* ---- rooms: interest, messages, history ---------------------------- */

/* This node wants the room's events (on_msg, on_presence, on_typing,
 * on_epoch): call when the room's first local member joins. Idempotent.
 * Returns 0, HUB_EINVAL (bad name), HUB_ENOMEM. The Redis engine subscribes
 * (now, or when the shard connects); requests about the room made before the
 * subscription is confirmed are held and sent after it, so a join's history
 * read never misses a message published between the read and the
 * subscription. */
int hub_engine_subscribe(struct hub_engine *e, struct hub_iov room);

/* No more events for room: call when its last local member left. Requests
 * already made complete as usual. Unknown rooms are ignored. */
void hub_engine_unsubscribe(struct hub_engine *e, struct hub_iov room);

/* What to publish. Views are copied by hub_engine_publish. */
struct hub_engine_pub {
    struct hub_iov room;   /* the room */
    struct hub_iov from;   /* sender's nick */
    struct hub_iov text;   /* payload */
    struct hub_iov cmid;   /* client message id (deduplicates resends), or empty */
    struct hub_iov client; /* sender's client id, handed to on_msg */
    int64_t ts;            /* ms since the Unix epoch (the engine's clock, not the store's) */
    int binary;            /* 1: relay without storing (no offset, no dedupe) */
    /* Issue 13/15, as in struct hub_history_new (empty/0: none, no check): */
    struct hub_iov author;
    struct hub_iov actor; /* refused with HUB_EPERM if banned/muted in room or hub */
    struct hub_iov mentions;
    uint64_t reply_to; /* refused with HUB_EINVAL unless 0 or 1..last */
};

/* Completion of a publish: err 0, HUB_EAGAIN, HUB_EIO, HUB_ENOMEM. On success
 * offset and ts are the message's (0 for a binary relay); duplicate is 1 when an earlier message in
 * the room from the same nick carried the same cmid: nothing was stored, offset and ts are the
 * original's, and no on_msg follows. */
typedef void (*hub_engine_publish_cb)(void *data, int err, uint64_t offset, int64_t ts,
                                      int duplicate);

/* Sequences, stores and fans out a message (a binary relay is only fanned
 * out, in order with the room's messages on each node). Returns 0;
 * HUB_EINVAL (bad room); HUB_EAGAIN (not connected, queue full); HUB_ENOMEM;
 * HUB_ECLOSED. */
int hub_engine_publish(struct hub_engine *e, const struct hub_engine_pub *p,
                       hub_engine_publish_cb cb, void *data);

/* Reads the room's position and up to limit messages in direction dir
 * (enum hub_history_dir) relative to pos, with hub_history_read's meaning
 * and callback (position {epoch, last, first}, oldest first, complete flag).
 * A room never seen gets an epoch and last 0. The Redis engine keeps no age
 * limit (ttl_ms). Returns 0, HUB_EINVAL, HUB_EAGAIN, HUB_ENOMEM, HUB_ECLOSED. */
int hub_engine_read(struct hub_engine *e, struct hub_iov room, int dir, uint64_t pos,
                    unsigned limit, hub_history_read_cb cb, void *data);

/* Completion of calls that only succeed or fail (see each call). */
typedef void (*hub_engine_done_cb)(void *data, int err);

/* hub_engine_read with a viewer (struct hub_history_query: topic, the
 * viewer's ban/mute, reactions' mine). Returns as hub_engine_read. */
int hub_engine_query(struct hub_engine *e, struct hub_iov room, const struct hub_history_query *q,
                     hub_history_read_cb cb, void *data);

/* Completion of an amendment: as hub_history_amend_cb (err adds
 * HUB_EAGAIN). On success with r->changed, on_amend follows on every node
 * with members, this one included. */
typedef void (*hub_engine_amend_cb)(void *data, int err, const struct hub_history_amended *r);

/* Edits, deletes or reacts to a stored message (struct hub_history_amend,
 * copied), atomically with its checks (author, window, emoji limit), and
 * fans the change out. nick is the actor's nick for the push. Returns 0,
 * HUB_EINVAL, HUB_EAGAIN, HUB_ENOMEM, HUB_ECLOSED. */
int hub_engine_amend(struct hub_engine *e, const struct hub_history_amend *a, struct hub_iov nick,
                     hub_engine_amend_cb cb, void *data);

/* Full-text search of a room's kept messages (hub_history_search's meaning;
 * the Redis engine scans the room's stream). Returns 0, HUB_EINVAL,
 * HUB_EAGAIN, HUB_ENOMEM, HUB_ECLOSED. */
int hub_engine_search(struct hub_engine *e, struct hub_iov room, struct hub_iov q, uint64_t before,
                      unsigned limit, hub_history_search_cb cb, void *data);

/* Records a ban or mute (or lifts it, until_ms 0) for every node: later
 * queries report it and publishes of that actor are refused (HUB_EPERM).
 * It does not remove anyone: send a HUB_CONTROL_BAN for that. cb: 0,
 * HUB_EAGAIN, HUB_EIO. Returns 0, HUB_EINVAL, HUB_EAGAIN, HUB_ENOMEM,
 * HUB_ECLOSED. */
int hub_engine_restrict(struct hub_engine *e, const struct hub_history_restrict *r,
                        hub_engine_done_cb cb, void *data);

/* Sets a room's topic for every node (queries report it). It pushes
 * nothing: send a HUB_CONTROL_TOPIC. Returns as hub_engine_restrict. */
int hub_engine_set_topic(struct hub_engine *e, struct hub_iov room, struct hub_iov topic,
                         hub_engine_done_cb cb, void *data);

/* Sends a control message to every node (on_control there and here).
 * Fire-and-forget. Returns 0, HUB_EINVAL, HUB_EAGAIN, HUB_ENOMEM, HUB_ECLOSED. */
int hub_engine_control(struct hub_engine *e, const struct hub_engine_control *c);

/* ---- presence ------------------------------------------------------- */

/* client (nick) joined room on this node: every subscribed node gets
 * on_presence JOIN with the new count (if client was a member already, only
 * its nick is updated, silently). Returns 0, HUB_EINVAL, HUB_EAGAIN,
 * HUB_ENOMEM. Fire-and-forget: a failure after sending is counted (stats). */
int hub_engine_join(struct hub_engine *e, struct hub_iov room, struct hub_iov client,
                    struct hub_iov nick);

/* client left room (LEAVE pushes follow if it was a member). Returns as join. */
int hub_engine_leave(struct hub_engine *e, struct hub_iov room, struct hub_iov client);

/* client, a member of room, is now nick (NICK pushes with old_nick). Returns
 * as join. */
int hub_engine_renick(struct hub_engine *e, struct hub_iov room, struct hub_iov client,
                      struct hub_iov old_nick, struct hub_iov nick);

struct hub_engine_member {
    struct hub_iov client; /* client id */
    struct hub_iov nick;   /* its nick */
};

/* Completion of a members query: total members on all nodes, and the
 * members themselves (borrowed, in no order) when total <= limit; n is 0
 * otherwise. err 0, HUB_EAGAIN, HUB_ENOMEM. */
typedef void (*hub_engine_members_cb)(void *data, int err, uint64_t total,
                                      const struct hub_engine_member *m, size_t n);

/* Lists the room's members on every node. Returns 0, HUB_EINVAL, HUB_EAGAIN,
 * HUB_ENOMEM, HUB_ECLOSED. */
int hub_engine_members(struct hub_engine *e, struct hub_iov room, unsigned limit,
                       hub_engine_members_cb cb, void *data);

struct hub_engine_room_count {
    struct hub_iov room; /* room name */
    uint64_t members;    /* members on all nodes */
};

/* Completion of a rooms query: up to limit rooms with members, biggest first
 * (borrowed). err 0, HUB_EAGAIN, HUB_ENOMEM. */
typedef void (*hub_engine_rooms_cb)(void *data, int err, const struct hub_engine_room_count *r,
                                    size_t n);

/* Lists the biggest rooms across nodes (every shard). Returns 0, HUB_EAGAIN,
 * HUB_ENOMEM, HUB_ECLOSED. */
int hub_engine_rooms(struct hub_engine *e, unsigned limit, hub_engine_rooms_cb cb, void *data);

/* ---- nicks, typing, invites ---------------------------------------- */

/* A nick claim completes with hub_engine_done_cb: err 0 (client now holds
 * nick), HUB_EEXIST (another client holds it), HUB_EAGAIN, HUB_ENOMEM. */
/* Claims nick for client, unique across nodes under ASCII case folding;
 * claiming a nick client already holds succeeds. The claim lasts until
 * released or until this node's lease lapses. A client holds any number of
 * claims: release the old nick after a rename. Returns 0, HUB_EINVAL (empty
 * or longer than HUB_ENGINE_NICK_MAX bytes), HUB_EAGAIN, HUB_ENOMEM, HUB_ECLOSED. */
int hub_engine_claim_nick(struct hub_engine *e, struct hub_iov nick, struct hub_iov client,
                          hub_engine_done_cb cb, void *data);

/* Releases client's claim on nick (nothing if another client holds it). */
void hub_engine_release_nick(struct hub_engine *e, struct hub_iov nick, struct hub_iov client);

/* client (nick) is typing in room: on_typing on every subscribed node,
 * including this one. Fire-and-forget. Returns 0, HUB_EINVAL, HUB_EAGAIN,
 * HUB_ENOMEM. */
int hub_engine_typing(struct hub_engine *e, struct hub_iov room, struct hub_iov client,
                      struct hub_iov nick);

/* Asks the node of whoever holds to_nick to put that client in room (its
 * on_invite fires there, possibly on this node). cb: 0 (sent), HUB_ENOENT
 * (nobody holds to_nick), HUB_EAGAIN, HUB_ENOMEM. Returns 0, HUB_EINVAL,
 * HUB_EAGAIN, HUB_ENOMEM, HUB_ECLOSED. */
int hub_engine_invite(struct hub_engine *e, struct hub_iov to_nick, struct hub_iov room,
                      struct hub_iov from, hub_engine_done_cb cb, void *data);

/* ---- health and metrics --------------------------------------------- */

enum hub_engine_state {
    HUB_ENGINE_READY = 0,      /* every shard connected, subscribed and scripts loaded */
    HUB_ENGINE_CONNECTING = 1, /* at least one shard is not (yet) connected */
    HUB_ENGINE_CLOSING = 2,    /* hub_engine_close was called */
};

struct hub_engine_stats {
    const char *kind;      /* "memory" or "redis" (static) */
    int state;             /* enum hub_engine_state */
    const char *reason;    /* why not ready ("" when ready); owned by the engine,
                              valid until the next engine call */
    uint32_t shards;       /* Redis servers (0 for memory) */
    uint32_t shards_ready; /* of which connected */
    uint64_t published;    /* messages this node published (acked) */
    uint64_t duplicates;   /* publishes answered as duplicates */
    uint64_t received;     /* messages delivered to on_msg */
    uint64_t dropped;      /* requests failed with HUB_EAGAIN (not connected, timeout, full) */
    uint64_t fills;        /* hole-fill reads issued */
    uint64_t filled;       /* messages delivered from hole fills */
    uint64_t skipped;      /* offsets skipped because the store no longer had them */
    uint64_t reconnects;   /* connections re-established after a loss */
    uint64_t epochs;       /* epoch changes seen */
    uint64_t swept;        /* dead nodes whose members this node removed */
    uint64_t queue;        /* requests in flight or held, all connections (gauge) */
    uint64_t rooms;        /* subscribed rooms (gauge) */
    uint64_t rtt_us;       /* moving average of request round trips, microseconds */
    uint64_t rtt_max_us;   /* largest round trip since the last stats call */
};

/* Fills st. The reason string is owned by the engine. */
void hub_engine_stats(struct hub_engine *e, struct hub_engine_stats *st);

/* Returns 1 if the engine is ready (HUB_ENGINE_READY). */
int hub_engine_ready(const struct hub_engine *e);

#endif
