/*
 * history.h: per-room message streams with positions (epoch, offset).
 *
 * Every room that ever had a message has a stream: an epoch string that names
 * this incarnation of the stream, and messages with offsets 1, 2, 3, ... in
 * the order they were sequenced. Only the newest max_per_room messages (and,
 * with a TTL, only recent ones) are kept. The epoch changes only when a
 * stream's history is lost (a memory store restarted, a database deleted), so
 * a client holding {epoch, offset} can tell a gap from a quiet room.
 *
 * The interface is asynchronous and ordered: every request (append, read,
 * barrier) completes through its callback on the loop thread, and callbacks
 * fire in exactly the order the requests were made. An append completes once
 * the message is durable (committed, for the SQLite store); a read sees every
 * append requested before it. The memory store completes each request before
 * the call returns; the SQLite store completes them later, from its writer
 * thread by way of uv_async. If a call returns an error its callback never
 * fires. Strings passed in are copied; records handed to callbacks are
 * borrowed for the duration of the callback.
 *
 * Memory bounds (the memory store, --no-persist). A read never creates
 * state: a room the store holds nothing for reads as empty, with an epoch
 * derived from the room's name and the store's secret (stable until some
 * stream that had messages is dropped, which changes it, so a dropped
 * stream's clients see a new epoch, never an old one with offsets reused).
 * The store keeps at most max_per_room messages per room, at most max_rooms
 * streams of rooms without members, and at most max_bytes in all, counted
 * honestly (records, strings, rings, stream headers, the table, and the
 * allocator's per-block cost). Rooms with members are "held"
 * (hub_history_hold) and never dropped. Past the byte budget, in this
 * order: rooms without members lose their whole ring, least recently used
 * first (their position stays, so a resume sees a gap); then the streams of
 * rooms without members go, least recently used first; then, if the held
 * rooms alone are over the budget, the largest of them loses its oldest
 * message, one at a time. The newest message of a held room is never
 * dropped, so the budget can be passed only by one message per held room.
 * Any message dropped this way moves the room's pos.first up, which a
 * resume across it reports as a gap.
 *
 * Disk bounds (the SQLite store). max_bytes is a budget for the files the
 * store keeps in its directory: the database and its write-ahead log
 * (HUB_HISTORY_DISK_MAX_BYTES_DEFAULT, 1 GiB, is the default the server
 * should give it; 0 = no limit). After each batch of requests the writer
 * measures the files; once the database passes its share of the budget, the
 * oldest messages of the largest rooms (by stored bytes) are deleted first,
 * every room over a common size being cut down to it, until the live pages
 * are about 1/8 under that share. The newest message of every room is never
 * deleted, so the budget can be passed only by the newest message of each
 * room and the table of room positions (a room's epoch and last offset are
 * kept for good, so that no offset is ever reused). Freed pages are reused
 * for new messages; those beyond the database's share are returned to the
 * file system (incremental vacuum), and the log is checkpointed and
 * truncated when it passes its share, so the files do not keep growing. At
 * rest (after a batch) the files fit the budget; while a batch is written
 * they may pass it by that batch (at most about 1 MiB of messages). As in
 * the memory store, a deleted message moves its room's pos.first up. A full
 * disk is not the budget: an append the disk refuses fails with HUB_EIO.
 */
#ifndef HUB_HISTORY_H
#define HUB_HISTORY_H

#include "hub/common.h"

#include <uv.h>

struct hub_history;

#define HUB_HISTORY_EPOCH_LEN 16

/* One stored message. Views are borrowed from the store. */
struct hub_history_msg {
    uint64_t offset;     /* position in the room's stream, from 1 */
    int64_t ts;          /* milliseconds since the Unix epoch */
    struct hub_iov from; /* sender's nick */
    struct hub_iov text; /* UTF-8 text */
    struct hub_iov cmid; /* the sender's client message id, or empty */
    /* Added for edits, deletes, reactions, replies and mentions (issue 15).
     * Messages stored through hub_history_append have these empty/0. */
    struct hub_iov author;   /* who may edit or delete it: the author key chat gave at append
                                ("u:<sub>" for a signed user, "g:<client id>" for a guest), or
                                empty (raw mode, binary relays) */
    struct hub_iov mentions; /* nicks the text mentions, each followed by '\n', or empty */
    uint64_t reply_to;       /* offset of the message this one answers, 0 if none */
    int64_t edited_ts;       /* ms since the Unix epoch of the last edit, 0 if never edited */
    int deleted;             /* 1: a tombstone: text, mentions and reactions are empty */
    const struct hub_history_reaction *reactions; /* nreactions entries, oldest emoji first */
    size_t nreactions;
};

/* A reaction on a message: how many users reacted with emoji, and whether
 * the viewer of the read (hub_history_query's viewer) is one of them. */
struct hub_history_reaction {
    struct hub_iov emoji; /* 1..HUB_HISTORY_EMOJI_MAX bytes of UTF-8 */
    uint32_t count;       /* users with this reaction, >= 1 */
    int mine;             /* 1 if the viewer reacted with it */
};

#define HUB_HISTORY_EMOJI_MAX 32     /* bytes of one reaction's emoji */
#define HUB_HISTORY_REACTIONS_MAX 20 /* distinct emoji on one message (default) */
#define HUB_HISTORY_MENTIONS_MAX 16  /* nicks in one message's mentions */
#define HUB_HISTORY_EDIT_WINDOW_MS (24 * 3600 * 1000LL) /* authors edit and delete within */

/* A room's position. */
struct hub_history_pos {
    char epoch[HUB_HISTORY_EPOCH_LEN + 1]; /* NUL-terminated epoch */
    uint64_t last;                         /* newest offset, 0 if none yet */
    uint64_t first;                        /* oldest offset still kept (last + 1 if none) */
    /* Filled by hub_history_query (empty/0 from hub_history_read): */
    struct hub_iov topic; /* the room's topic (borrowed for the callback), or empty */
    int64_t ban_until;    /* the viewer is banned from the room (or the hub) until this
                             ms since the Unix epoch; 0: not banned; INT64_MAX: for good */
    int64_t mute_until;   /* likewise muted (may read, may not send) */
};

#define HUB_HISTORY_MAX_BYTES_DEFAULT (64u << 20) /* 64 MiB: the memory store's budget */
/* The disk budget the server gives the SQLite store unless told otherwise:
 * a fixed figure rather than a share of the free space, so that the bound
 * does not depend on what else happens to be on the disk at start. */
#define HUB_HISTORY_DISK_MAX_BYTES_DEFAULT ((uint64_t)1 << 30) /* 1 GiB */

struct hub_history_config {
    uint32_t max_per_room;   /* messages kept per room (1000) */
    uint32_t max_rooms;      /* memory store: streams of rooms without members kept, the least
                                recently used goes; SQLite: rooms in the position cache (10000) */
    int64_t ttl_ms;          /* messages older than this are dropped (0 = no age limit) */
    uint64_t max_bytes;      /* memory store: byte budget for everything it holds
                                (HUB_HISTORY_MAX_BYTES_DEFAULT); SQLite store: budget for
                                its files on disk (give it
                                HUB_HISTORY_DISK_MAX_BYTES_DEFAULT); 0 = no byte limit */
    int64_t (*now_ms)(void); /* wall clock in ms since the Unix epoch, for the TTL; NULL = the
                                system clock. The SQLite store calls it from its writer
                                thread, so it must be safe to call from any thread. */
    int search_index;        /* SQLite store: 1 = keep an FTS5 full-text index for search;
                                0 = none: a search scans the room's newest
                                HUB_HISTORY_SCAN_MAX messages (all of them unless max_per_room
                                is larger); HUB_HISTORY_SEARCH_AUTO (the default) = an index
                                only when max_per_room > HUB_HISTORY_SCAN_MAX. The index costs
                                disk (about twice the text) and append speed, and the disk
                                budget (max_bytes) is kept less tightly with it: FTS5 frees
                                the pages of deleted rows only as it merges segments. */
};

#define HUB_HISTORY_SEARCH_AUTO (-1)
#define HUB_HISTORY_SCAN_MAX 20000 /* messages a search without an index scans, newest first */

void hub_history_config_default(struct hub_history_config *cfg);

/* Opens an in-memory store. Returns 0 or HUB_ENOMEM. */
int hub_history_open_memory(struct hub_history **out, const struct hub_history_config *cfg);

/* Opens the SQLite store in dir (created if missing) as dir/chathub.db in WAL
 * mode, with a writer thread that commits appends in batches and answers
 * reads; completions come back to loop through uv_async. Runs once at start
 * and may touch the disk. Returns 0, or HUB_EIO with a one-line reason in err
 * (directory not writable, database locked by another hub, corrupted file). */
int hub_history_open_sqlite(struct hub_history **out, uv_loop_t *loop, const char *dir,
                            const struct hub_history_config *cfg, char *err, size_t errsz);

/* Frees the store. Call after hub_history_close has completed (or when no
 * request was ever made). */
void hub_history_free(struct hub_history *h);

/* Completion of an append: err is 0 or a HUB_E* code (HUB_EIO when the disk
 * refused the write: a temporary failure). On success offset and ts are the
 * message's; duplicate is 1 when an earlier message in the room from the same
 * sender carried the same non-empty cmid, in which case nothing was stored and
 * offset/ts are the original's. */
typedef void (*hub_history_append_cb)(void *data, int err, uint64_t offset, int64_t ts,
                                      int duplicate);

/* Sequences a message into room after every request made before it. from,
 * text and cmid are copied. Returns 0 or HUB_ENOMEM/HUB_ECLOSED. */
int hub_history_append(struct hub_history *h, struct hub_iov room, struct hub_iov from,
                       struct hub_iov text, struct hub_iov cmid, int64_t ts,
                       hub_history_append_cb cb, void *data);

enum hub_history_dir {
    HUB_HISTORY_LATEST = 0, /* the newest messages */
    HUB_HISTORY_BEFORE = 1, /* offsets below pos */
    HUB_HISTORY_AFTER = 2,  /* offsets above pos */
};

/* Completion of a read: the room's position when the read ran, and up to
 * limit messages, oldest first (msgs borrowed for the call). complete is 1
 * when no more messages exist in the direction asked. err is 0 or a HUB_E*
 * code (then pos, msgs and n are meaningless). */
typedef void (*hub_history_read_cb)(void *data, int err, const struct hub_history_pos *pos,
                                    const struct hub_history_msg *msgs, size_t n, int complete);

/* Reads up to limit messages of room in direction dir relative to pos, after
 * every request made before it. limit 0 reads only the position. Returns 0
 * or HUB_ENOMEM/HUB_ECLOSED. */
int hub_history_read(struct hub_history *h, struct hub_iov room, int dir, uint64_t pos,
                     unsigned limit, hub_history_read_cb cb, void *data);

/* ---- issue 13 and 15: replies, amendments, search, bans, topics ------ */

/* A message to append with everything hub_history_append cannot carry.
 * Views are copied by the call. */
struct hub_history_new {
    struct hub_iov room, from, text, cmid;
    struct hub_iov author;   /* see hub_history_msg.author; may be empty */
    struct hub_iov actor;    /* the key restrictions are checked against: "u:<sub>" for a
                                signed user, "n:<claim key>" for a guest (hub/ident.h); empty:
                                no check (raw mode) */
    struct hub_iov mentions; /* '\n'-terminated nicks, at most HUB_HISTORY_MENTIONS_MAX */
    uint64_t reply_to;       /* 0, or an offset 1..last of the room */
    int64_t ts;
};

/* As hub_history_append, plus: fails (callback err) with HUB_EINVAL when
 * reply_to is not 0 and not in 1..last (the room's newest offset before this
 * message; a trimmed or deleted target is allowed: the reply keeps its
 * number), and with HUB_EPERM when actor is banned or muted in the room or
 * in the whole hub at ts (nothing stored). Deduplication by cmid as
 * hub_history_append. Returns 0 or HUB_ENOMEM/HUB_ECLOSED. */
int hub_history_append_ex(struct hub_history *h, const struct hub_history_new *m,
                          hub_history_append_cb cb, void *data);

/* A read with a viewer: as hub_history_read, and in addition pos carries the
 * room's topic and the viewer's ban_until/mute_until (room or hub scope,
 * whichever ends later, 0 once expired at now_ms), and each reaction its
 * mine flag. viewer may be empty (mine 0, ban/mute 0). */
struct hub_history_query {
    int dir;               /* enum hub_history_dir */
    uint64_t pos;          /* as hub_history_read */
    unsigned limit;        /* as hub_history_read */
    struct hub_iov viewer; /* author key for reactions' mine ("u:<sub>", "g:<client id>") */
    struct hub_iov actor;  /* restriction key for ban_until/mute_until, or empty */
    int64_t now_ms;        /* for expiring restrictions */
};
int hub_history_query(struct hub_history *h, struct hub_iov room, const struct hub_history_query *q,
                      hub_history_read_cb cb, void *data);

enum hub_history_amend_kind {
    HUB_AMEND_EDIT = 1,    /* replace the text */
    HUB_AMEND_DELETE = 2,  /* make it a tombstone (text, mentions, reactions dropped for good) */
    HUB_AMEND_REACT = 3,   /* who reacts with emoji (once per user per emoji) */
    HUB_AMEND_UNREACT = 4, /* who takes that reaction back */
};

/* A change to a stored message. Views are copied by the call. */
struct hub_history_amend {
    struct hub_iov room;
    uint64_t offset;
    int kind;             /* enum hub_history_amend_kind */
    struct hub_iov who;   /* the actor's author key (edit/delete: compared to the author;
                             react: the reacting user) */
    int moderator;        /* 1: EDIT/DELETE of anyone's message, no time window */
    struct hub_iov text;  /* EDIT: the new text (non-empty) */
    struct hub_iov emoji; /* REACT/UNREACT: 1..HUB_HISTORY_EMOJI_MAX bytes */
    int64_t ts;           /* when (ms); edited_ts of an edit */
    int64_t window_ms;    /* EDIT/DELETE by the author: refused if ts - msg.ts > window_ms
                             (0: HUB_HISTORY_EDIT_WINDOW_MS) */
    uint32_t max_emoji;   /* REACT: distinct emoji per message (0: HUB_HISTORY_REACTIONS_MAX) */
};

/* What an amendment did. Views borrowed for the callback. */
struct hub_history_amended {
    int changed;           /* 0: nothing to do (react twice, unreact without a reaction,
                              delete of a tombstone): no push should follow */
    int64_t edited_ts;     /* EDIT: the new edited_ts */
    uint32_t count;        /* REACT/UNREACT: users with this emoji now (0: gone) */
    struct hub_iov author; /* the message's author key */
    struct hub_iov from;   /* the message's sender nick */
};

/* Completion of an amendment: err 0; HUB_ENOENT (no such message is kept:
 * never sent, trimmed; or a tombstone for EDIT/REACT); HUB_EPERM (not the
 * author, or past the window, and not a moderator; an empty author is
 * nobody's); HUB_ELIMIT (REACT: the message has max_emoji distinct emoji and
 * this is a new one); HUB_EINVAL (bad kind, empty text or emoji); HUB_EIO. */
typedef void (*hub_history_amend_cb)(void *data, int err, const struct hub_history_amended *r);

/* Applies a after every request made before it (durable before cb, like an
 * append). The search index follows edits and deletes. Returns 0 or
 * HUB_ENOMEM/HUB_ECLOSED. */
int hub_history_amend(struct hub_history *h, const struct hub_history_amend *a,
                      hub_history_amend_cb cb, void *data);

/* Completion of a search: up to limit messages (not tombstones), NEWEST
 * first, each with reactions as a query without viewer; complete 1 when no
 * older match exists. err 0, HUB_EINVAL (q has no word), HUB_EIO. */
typedef void (*hub_history_search_cb)(void *data, int err, const struct hub_history_msg *msgs,
                                      size_t n, int complete);

/* Searches room's kept messages for q: words separated by white space, all
 * of which must occur (case-insensitively for ASCII; a word matches as a
 * prefix of a word of the text), among offsets below before (0: from the
 * newest). q is plain text: no operators are interpreted. SQLite: FTS5
 * (kept in step with appends, edits, deletes and trimming); memory store: a
 * scan. Returns 0 or HUB_ENOMEM/HUB_ECLOSED. */
int hub_history_search(struct hub_history *h, struct hub_iov room, struct hub_iov q,
                       uint64_t before, unsigned limit, hub_history_search_cb cb, void *data);

enum hub_history_restrict_kind {
    HUB_RESTRICT_BAN = 1,  /* may not join (and is removed) */
    HUB_RESTRICT_MUTE = 2, /* may join and read, may not send */
};

/* A ban or mute, or (until 0) its lifting. Views copied. Stored with the
 * history (the SQLite store keeps it across restarts). */
struct hub_history_restrict {
    int kind;              /* enum hub_history_restrict_kind */
    struct hub_iov room;   /* the room, or empty for the whole hub */
    struct hub_iov actor;  /* the restricted key ("u:<sub>" or "n:<claim key>") */
    int64_t until_ms;      /* ms since the Unix epoch; INT64_MAX: for good; 0: lift */
    struct hub_iov by;     /* who did it (a nick or "api"), for the log */
    struct hub_iov reason; /* free text, may be empty */
    int64_t ts;
};

typedef void (*hub_history_done_cb)(void *data, int err);

/* Records r (replacing an earlier one of the same kind, room and actor).
 * cb: 0, HUB_EIO. Returns 0, HUB_EINVAL, HUB_ENOMEM, HUB_ECLOSED. */
int hub_history_restrict(struct hub_history *h, const struct hub_history_restrict *r,
                         hub_history_done_cb cb, void *data);

/* Sets room's topic (empty clears it; at most HUB_HISTORY_TOPIC_MAX bytes),
 * kept across restarts by the SQLite store. cb: 0, HUB_EIO. Returns 0,
 * HUB_EINVAL, HUB_ENOMEM, HUB_ECLOSED. */
#define HUB_HISTORY_TOPIC_MAX 512
int hub_history_set_topic(struct hub_history *h, struct hub_iov room, struct hub_iov topic,
                          hub_history_done_cb cb, void *data);

/* Tells the store whether room has local members (held = 1: the first
 * member joined; held = 0: the last one left). A held room's stream is never
 * dropped and its newest message never trimmed (see the memory bounds
 * above); a room that is let go keeps its messages until the bounds want
 * the space. Setting the same state twice is harmless. It takes effect at
 * once, outside the request order, and has no callback. room is copied.
 * Returns 0, or HUB_ENOMEM when holding a room the store had no state for
 * (the room still works, unprotected). The SQLite store returns 0 and
 * ignores it: its disk budget keeps the newest message of every room,
 * held or not. */
int hub_history_hold(struct hub_history *h, struct hub_iov room, int held);

/* What the store holds, for /metrics and tests. */
struct hub_history_stats {
    uint64_t bytes;    /* bytes counted against max_bytes: memory store, bytes held;
                          SQLite store, the size of the database and its log on disk */
    uint64_t rooms;    /* memory store: streams held; SQLite: rooms with a stored position */
    uint64_t held;     /* memory store: streams of rooms with members; SQLite: 0 */
    uint64_t messages; /* messages held */
    uint64_t dropped;  /* messages dropped to keep max_bytes (and, memory store, max_rooms)
                          since the store was opened */
};

/* Fills *out (every field 0 where a store does not count it). The SQLite
 * store's figures are those its writer published after the last batch it
 * finished, so they may lag the newest requests by one batch; once close
 * has completed they describe the files as they were left. Safe to call in
 * any state until hub_history_free. */
void hub_history_stats(const struct hub_history *h, struct hub_history_stats *out);

/* Completes after every request made before it, doing nothing else: it keeps
 * the order of things that are not stored (binary relays) with the rest. */
typedef void (*hub_history_barrier_cb)(void *data);
int hub_history_barrier(struct hub_history *h, hub_history_barrier_cb cb, void *data);

/* Finishes every pending request (their callbacks fire), makes everything
 * durable, and then calls cb; no request may be made afterwards. The memory
 * store calls cb before returning. */
typedef void (*hub_history_closed_cb)(void *data);
void hub_history_close(struct hub_history *h, hub_history_closed_cb cb, void *data);

#endif
