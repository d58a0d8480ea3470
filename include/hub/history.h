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
};

/* A room's position. */
struct hub_history_pos {
    char epoch[HUB_HISTORY_EPOCH_LEN + 1]; /* NUL-terminated epoch */
    uint64_t last;                         /* newest offset, 0 if none yet */
    uint64_t first;                        /* oldest offset still kept (last + 1 if none) */
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
};

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
