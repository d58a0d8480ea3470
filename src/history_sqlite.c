/*
 * history_sqlite.c: the SQLite history store, durable across restarts.
 *
 * One writer thread owns the database connection and every piece of state
 * derived from it (prepared statements, the per-room position cache). The
 * loop thread never touches the disk once the store is open: it copies each
 * request into a FIFO guarded by a mutex and signals a condition variable.
 * The writer takes everything queued at once and runs it as one transaction
 * (group commit), in request order, so a read sees every append requested
 * before it. After the commit it moves the batch, completions filled in, to
 * a done-queue and wakes the loop with uv_async_send; the async callback
 * fires the user callbacks in the same order. An append is therefore
 * completed only after the transaction holding it committed.
 *
 * Invariants:
 * - A room's row in rooms holds its epoch and last offset; messages holds
 *   only kept rows, keyed by (room, offset). The cache mirrors rooms as of
 *   the open transaction; a rolled-back transaction marks the entries it
 *   touched stale so that they are read again from the database.
 * - A room gets its rooms row with its first message. Until then its epoch
 *   lives only in the cache, which is enough: an empty stream loses nothing
 *   when its epoch changes.
 * - If a group transaction fails, nothing of it is reported: it is rolled
 *   back and the batch runs again with one transaction per append, so only
 *   the appends the disk refused complete with HUB_EIO.
 * - The database is opened in exclusive locking mode and a write
 *   transaction is run at open, so the file lock is held for the life of
 *   the store and a second hub on the same directory fails at start.
 * - rooms.bytes and rooms.msgs are the sum of ROW_EST and the count of the
 *   room's rows in messages: every transaction that inserts or deletes rows
 *   moves them before it commits. Appends do so once per room and
 *   transaction (room_flush, with the retention by count), not once per
 *   message: a room's row and its rooms_bytes index entry are the costliest
 *   part of an append otherwise. The writer's totals (tot_*) are their
 *   sums as of the last commit; a transaction's changes to them wait in d_*
 *   until it commits.
 *
 * The disk budget (max_bytes, see history.h) is split into a share for the
 * write-ahead log (wal_max: the log is checkpointed and truncated past it)
 * and one for the database (db_high). After each batch, quota_pass() looks
 * at the page counts, which cost nothing to read; only when the database
 * has more than db_high bytes of pages does it delete: it cuts the largest
 * rooms down to a common size (water-filling over rooms.bytes, through a
 * partial index) so that the live pages fall to db_low, 1/8 below db_high,
 * then returns the free pages beyond db_high to the file system
 * (auto_vacuum=INCREMENTAL, which old databases are converted to once at
 * open) and checkpoints. Between passes, new rows reuse the free pages, so
 * deletions happen once per db_high/8 of new history, not per append.
 * Batches are capped (batch_max: BATCH_MAX_BYTES, and a quarter of the
 * log's share under a budget) so that one batch cannot take the files far
 * past the budget before the pass after it. The pass measures only after
 * check_every bytes of new rows (1/64 of the database's share, at most
 * 1 MiB), so small transactions do not pay for it one by one.
 */
#include "hub/history.h"
#include "hub/hmap.h"
#include "hub/log.h"
#include "hub/lru.h"
#include "history_impl.h"

#include <assert.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <uv.h>

#ifndef _WIN32
#include <unistd.h>
#endif
#ifndef W_OK
#define W_OK 2
#endif

#define DB_NAME "chathub.db"

/* The TTL sweep runs at most this often, over 64 rooms a pass (see
 * ST_SWEEP): bounded work per batch. */
#define SWEEP_INTERVAL_MS 1000

/* Completions fired per wake-up of the loop: bounded work per iteration. */
#define FIRE_PER_WAKEUP 1024

/* The schema this file writes (PRAGMA user_version; upgrade_sql and
 * schema_open write the figure literally). Version 0 is the schema before
 * rooms counted their bytes; it is upgraded at open. */
#define SCHEMA_VERSION 3

/* The search index's rowid of a message: the room's number (rooms.rid) in
 * the high bits, the offset in the low FID_SHIFT bits, so that one room's
 * messages are one rowid range and newest first is rowid order. Messages of
 * rooms numbered FID_ROOMS or more, or with offsets of 2^FID_SHIFT or more,
 * are not indexed (search misses them: 2^27 rooms, 2^36 messages a room). */
#define FID_SHIFT 36
#define FID_ROOMS ((int64_t)1 << 27)
#define FID_OFFSETS ((uint64_t)1 << FID_SHIFT)

/* Without FTS5 (a SQLite built without it), a search scans at most this
 * many of the room's newest messages and says it is not complete if it
 * stopped there. */
#define SCAN_MAX HUB_HISTORY_SCAN_MAX

/* The writer takes at most this many bytes of requests (their strings and
 * REQ_COST each) into one transaction, less under a small budget (see
 * budget_open); a lone bigger request goes alone. */
#define BATCH_MAX_BYTES (1u << 20)
#define REQ_COST 64

/* Rooms cut per round of a quota pass, and rounds per pass: bounded work
 * per batch. A pass that did not reach db_low is continued after the next
 * batch. */
#define QUOTA_ROOMS 256
#define QUOTA_ROUNDS 4

/* What one message row costs, in the units of rooms.bytes: its strings, the
 * copies of the key and of the dedupe index's columns, and a fixed part for
 * the integers and the record headers. It only has to rank rooms and be
 * proportional to the pages used; the pages themselves are what the budget
 * is enforced on. ROW_EST is the same figure computed by SQL from a row
 * (CAST AS BLOB: length() of a TEXT counts characters). */
#define ROW_FIXED 32 /* the 32 in ROW_EST */
#define ROW_EST                                                                                    \
    "(32 + 2 * length(CAST(room AS BLOB)) + 2 * length(CAST(sender AS BLOB))"                      \
    " + length(CAST(text AS BLOB)) + 2 * length(CAST(cmid AS BLOB)))"

enum req_type {
    REQ_APPEND,
    REQ_READ,
    REQ_BARRIER,
    REQ_CLOSE,
    REQ_AMEND,
    REQ_SEARCH,
    REQ_RESTRICT,
    REQ_TOPIC,
};

/* The emoji of a reaction handed out by a read (req.rxv[i] points here). */
struct rrx {
    char emoji[HUB_HISTORY_EMOJI_MAX];
};

/* One request, allocated by the loop, filled in by the writer, completed
 * and freed by the loop. Its strings live in bytes[]. */
struct req {
    struct req *next; /* FIFO link */
    int type;         /* enum req_type */
    union {
        hub_history_append_cb append;
        hub_history_read_cb read;
        hub_history_barrier_cb barrier;
        hub_history_amend_cb amend;
        hub_history_search_cb search;
        hub_history_done_cb done;
    } cb;                         /* the user's completion */
    void *data;                   /* the user's pointer */
    struct hub_iov room;          /* views into bytes */
    struct hub_iov from;          /* append only */
    struct hub_iov text;          /* append only */
    struct hub_iov cmid;          /* append only */
    int64_t ts;                   /* append: the message's time */
    int dir;                      /* read: enum hub_history_dir */
    uint64_t pos;                 /* read: relative to this offset */
    unsigned limit;               /* read: at most this many messages */
    int err;                      /* result: 0 or HUB_E* */
    uint64_t offset;              /* append result */
    int64_t out_ts;               /* append result */
    int duplicate;                /* append result */
    struct hub_history_pos rp;    /* read result */
    struct hub_history_msg *msgs; /* read result, owned */
    size_t n;                     /* read result: messages */
    int complete;                 /* read result */
    char *blob;                   /* read result: the messages' strings, owned */
    /* Issue 13 and 15. The strings are, by type: append: author, actor,
     * mentions; read: author = viewer, actor; amend: text, author = who,
     * mentions = emoji; search: text = q; restrict: actor, from = by, text =
     * reason; topic: text. */
    struct hub_iov author, actor, mentions;
    uint64_t reply_to;                /* append */
    int meta;                         /* read: a query (topic, restrictions, mine) */
    int64_t now;                      /* read: for restrictions */
    int kind;                         /* amend, restrict */
    int moderator;                    /* amend */
    int64_t window_ms;                /* amend */
    uint32_t max_emoji;               /* amend */
    int64_t until;                    /* restrict */
    uint64_t before;                  /* search */
    struct hub_history_amended am;    /* amend result (views into blob) */
    struct hub_history_reaction *rxv; /* read/search result: reactions, owned */
    struct rrx *rx;                   /* ... their emoji, owned */
    size_t nrx;                       /* ... how many */
    char *topic;                      /* read result: the topic, owned */
    char bytes[];                     /* the strings */
};

/* The writer's cache of one room's position. */
struct room {
    struct hub_hnode node;                 /* in sqlite_store.rooms, by name */
    struct hub_lru_node lru;               /* in sqlite_store.lru */
    uint64_t last;                         /* newest offset */
    int64_t rid;                           /* rooms.rid, once persisted */
    uint64_t dirty_gen;                    /* transaction that last changed it */
    int persisted;                         /* the rooms row exists */
    int stale;                             /* reload from the database before use */
    int pend;                              /* its rooms row awaits the changes below */
    int64_t pend_bytes, pend_msgs;         /* ... to bytes and msgs, written at commit */
    struct room *pend_next;                /* in sqlite_store.pend_head */
    char epoch[HUB_HISTORY_EPOCH_LEN + 1]; /* this incarnation */
    size_t name_len;                       /* length of name */
    char name[];                           /* NUL-terminated */
};

enum stmt_id {
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_ROOM_GET,
    ST_ROOM_INS,
    ST_ROOM_UPD,
    ST_ROOM_SUB,
    ST_DEDUPE,
    ST_INSERT,
    ST_TRIM_SIZE,
    ST_TRIM,
    ST_FIRST,
    ST_READ_DESC,
    ST_READ_ASC,
    ST_SWEEP_PAGE,
    ST_SWEEP_SIZE,
    ST_SWEEP_DEL,
    ST_BIG_ROOMS,
    ST_OLDEST,
    ST_PAGE_COUNT,
    ST_FREELIST,
    ST_MSG_GET,
    ST_MSG_EDIT,
    ST_MSG_TOMB,
    ST_SCAN,
    ST_RX_DEL_TO,
    ST_RX_DEL_OLD,
    ST_RX_DEL_MSG,
    ST_RX_OF,
    ST_RX_HAS,
    ST_RX_EMOJI,
    ST_RX_NEMOJI,
    ST_RX_INS,
    ST_RX_DEL,
    ST_RESTRICTED,
    ST_RESTRICT_SET,
    ST_RESTRICT_DEL,
    ST_RESTRICT_PURGE,
    ST_TOPIC_GET,
    ST_TOPIC_SET,
    ST_TOPIC_DEL,
    ST_FTS_INS, /* from here on: only with FTS5 (see ST_FTS_FIRST) */
    ST_FTS_DEL,
    ST_FTS_DEL_RANGE,
    ST_FTS_DEL_OLD,
    ST_FTS_SEARCH,
    ST_COUNT,
};

#define ST_FTS_FIRST ST_FTS_INS

/* The columns a read hands out, in collect order. */
#define MSG_COLS "offset, ts, sender, text, cmid, author, mentions, reply_to, edited_ts, deleted"

static const char *const stmt_sql[ST_COUNT] = {
    [ST_BEGIN] = "BEGIN",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_ROOM_GET] = "SELECT epoch, last, rid FROM rooms WHERE name = ?1",
    [ST_ROOM_INS] =
        "INSERT INTO rooms(name, epoch, last, bytes, msgs, rid) VALUES(?1, ?2, ?3, ?4, 1, ?5)",
    [ST_ROOM_UPD] =
        "UPDATE rooms SET last = ?2, bytes = bytes + ?3, msgs = msgs + ?4 WHERE name = ?1",
    [ST_ROOM_SUB] = "UPDATE rooms SET bytes = bytes - ?2, msgs = msgs - ?3 WHERE name = ?1",
    /* The cmid <> '' term lets the planner use the partial index. */
    /* INDEXED BY: with the columns of schema 3 the planner took the
     * primary key's offset range instead (a scan of up to max_per_room
     * rows per append: acked sends fell from ~40k/s to ~3k/s). */
    [ST_DEDUPE] = "SELECT offset, ts FROM messages INDEXED BY messages_cmid WHERE room = ?1 "
                  "AND sender = ?2 AND cmid = ?3 "
                  "AND cmid <> '' AND offset > ?4 LIMIT 1",
    [ST_INSERT] = "INSERT INTO messages(room, offset, ts, sender, text, cmid, author, mentions, "
                  "reply_to) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    [ST_TRIM_SIZE] = "SELECT count(*), coalesce(sum(" ROW_EST "), 0) FROM messages "
                     "WHERE room = ?1 AND offset <= ?2",
    [ST_TRIM] = "DELETE FROM messages WHERE room = ?1 AND offset <= ?2",
    [ST_FIRST] = "SELECT offset FROM messages WHERE room = ?1 AND offset > ?2 AND ts >= ?3 "
                 "ORDER BY offset LIMIT 1",
    [ST_READ_DESC] = "SELECT " MSG_COLS " FROM messages WHERE room = ?1 "
                     "AND offset > ?2 AND offset < ?3 AND ts >= ?4 ORDER BY offset DESC LIMIT ?5",
    [ST_READ_ASC] = "SELECT " MSG_COLS " FROM messages WHERE room = ?1 "
                    "AND offset > ?2 AND offset < ?3 AND ts >= ?4 ORDER BY offset LIMIT ?5",
    [ST_SWEEP_PAGE] = "SELECT name FROM rooms WHERE name > ?1 ORDER BY name LIMIT 64",
    [ST_SWEEP_SIZE] = "SELECT count(*), coalesce(sum(" ROW_EST "), 0) FROM messages "
                      "WHERE room = ?1 AND ts < ?2",
    [ST_SWEEP_DEL] = "DELETE FROM messages WHERE room = ?1 AND ts < ?2",
    /* msgs > 1 matches the partial index rooms_bytes: rooms down to their
     * newest message have nothing left to give and are not in it. */
    [ST_BIG_ROOMS] = "SELECT name, bytes FROM rooms WHERE msgs > 1 ORDER BY bytes DESC LIMIT ?1",
    /* Every row of the room but its newest, oldest first. */
    [ST_OLDEST] = "SELECT offset, " ROW_EST " FROM messages WHERE room = ?1 AND offset < "
                  "(SELECT max(offset) FROM messages WHERE room = ?1) ORDER BY offset",
    [ST_PAGE_COUNT] = "PRAGMA page_count",
    [ST_FREELIST] = "PRAGMA freelist_count",
    [ST_MSG_GET] = "SELECT " MSG_COLS " FROM messages WHERE room = ?1 AND offset = ?2 "
                   "AND offset > ?3 AND ts >= ?4",
    [ST_MSG_EDIT] = "UPDATE messages SET text = ?3, edited_ts = ?4 WHERE room = ?1 AND offset = ?2",
    [ST_MSG_TOMB] = "UPDATE messages SET text = '', mentions = '', deleted = 1 "
                    "WHERE room = ?1 AND offset = ?2",
    [ST_SCAN] = "SELECT offset, text FROM messages WHERE room = ?1 AND offset > ?2 AND offset < ?3 "
                "AND ts >= ?4 AND deleted = 0 ORDER BY offset DESC LIMIT ?5",
    [ST_RX_DEL_TO] = "DELETE FROM reactions WHERE room = ?1 AND offset <= ?2",
    [ST_RX_DEL_OLD] = "DELETE FROM reactions WHERE room = ?1 AND offset IN "
                      "(SELECT offset FROM messages WHERE room = ?1 AND ts < ?2)",
    [ST_RX_DEL_MSG] = "DELETE FROM reactions WHERE room = ?1 AND offset = ?2",
    /* Emoji in the order they first appeared (every reactor of an emoji
     * shares the seq of its first one, see do_amend). */
    [ST_RX_OF] = "SELECT emoji, count(*), max(who = ?3), min(seq) AS s FROM reactions "
                 "WHERE room = ?1 AND offset = ?2 GROUP BY emoji ORDER BY s",
    [ST_RX_HAS] = "SELECT 1 FROM reactions WHERE room = ?1 AND offset = ?2 AND emoji = ?3 "
                  "AND who = ?4",
    [ST_RX_EMOJI] = "SELECT coalesce(min(seq), 0), count(*) FROM reactions WHERE room = ?1 "
                    "AND offset = ?2 AND emoji = ?3",
    [ST_RX_NEMOJI] = "SELECT count(DISTINCT emoji) FROM reactions WHERE room = ?1 AND offset = ?2",
    [ST_RX_INS] = "INSERT INTO reactions(room, offset, emoji, who, seq) VALUES(?1, ?2, ?3, ?4, ?5)",
    [ST_RX_DEL] = "DELETE FROM reactions WHERE room = ?1 AND offset = ?2 AND emoji = ?3 "
                  "AND who = ?4",
    [ST_RESTRICTED] = "SELECT coalesce(max(until), 0) FROM restrictions WHERE kind = ?1 "
                      "AND actor = ?2 AND room IN (?3, '') AND until > ?4",
    [ST_RESTRICT_SET] = "INSERT OR REPLACE INTO restrictions(kind, room, actor, until, by, "
                        "reason, ts) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [ST_RESTRICT_DEL] = "DELETE FROM restrictions WHERE kind = ?1 AND room = ?2 AND actor = ?3",
    [ST_RESTRICT_PURGE] = "DELETE FROM restrictions WHERE until <= ?1",
    [ST_TOPIC_GET] = "SELECT topic FROM topics WHERE room = ?1",
    [ST_TOPIC_SET] = "INSERT OR REPLACE INTO topics(room, topic, ts) VALUES(?1, ?2, ?3)",
    [ST_TOPIC_DEL] = "DELETE FROM topics WHERE room = ?1",
    [ST_FTS_INS] = "INSERT INTO msg_fts(rowid, text) VALUES(?1, ?2)",
    [ST_FTS_DEL] = "DELETE FROM msg_fts WHERE rowid = ?1",
    [ST_FTS_DEL_RANGE] = "DELETE FROM msg_fts WHERE rowid > ?1 AND rowid <= ?2",
    [ST_FTS_DEL_OLD] = "DELETE FROM msg_fts WHERE rowid IN (SELECT (r.rid << 36) + m.offset "
                       "FROM messages m, rooms r WHERE r.name = ?1 AND m.room = ?1 AND m.ts < ?2)",
    [ST_FTS_SEARCH] = "SELECT rowid FROM msg_fts WHERE msg_fts MATCH ?1 AND rowid > ?2 "
                      "AND rowid < ?3 ORDER BY rowid DESC",
};

/* The current schema, for a new file (and harmless on a current one). An
 * older file is upgraded by upgrade_sql first. */
static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS rooms(name TEXT PRIMARY KEY, epoch TEXT NOT NULL,"
    " last INTEGER NOT NULL, bytes INTEGER NOT NULL DEFAULT 0, msgs INTEGER NOT NULL DEFAULT 0,"
    " rid INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE IF NOT EXISTS messages(room TEXT, offset INTEGER, ts INTEGER, sender TEXT,"
    " text TEXT, cmid TEXT, author TEXT NOT NULL DEFAULT '', mentions TEXT NOT NULL DEFAULT '',"
    " reply_to INTEGER NOT NULL DEFAULT 0, edited_ts INTEGER NOT NULL DEFAULT 0,"
    " deleted INTEGER NOT NULL DEFAULT 0, PRIMARY KEY(room, offset)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS messages_cmid ON messages(room, sender, cmid)"
    " WHERE cmid <> '';"
    "CREATE INDEX IF NOT EXISTS rooms_bytes ON rooms(bytes) WHERE msgs > 1;"
    "CREATE TABLE IF NOT EXISTS reactions(room TEXT, offset INTEGER, emoji TEXT, who TEXT,"
    " seq INTEGER NOT NULL, PRIMARY KEY(room, offset, emoji, who)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS restrictions(kind INTEGER, room TEXT, actor TEXT,"
    " until INTEGER NOT NULL, by TEXT, reason TEXT, ts INTEGER,"
    " PRIMARY KEY(kind, actor, room)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS topics(room TEXT PRIMARY KEY, topic TEXT NOT NULL, ts INTEGER)"
    " WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v INTEGER) WITHOUT ROWID;";

/* The search index (no prefix indexes: they tripled the cost of an append
 * and made searches slower, see bench/search.c): a full-text table of every kept, not deleted
 * message's text, rowid as FID_SHIFT says. It keeps its own copy of the text (an external-content
 * table needs a rowid table of messages), kept in step by every statement that changes messages.
 * Only where SQLite has FTS5. */
static const char fts_sql[] = "CREATE VIRTUAL TABLE IF NOT EXISTS msg_fts USING fts5(text,"
                              " tokenize = 'unicode61 remove_diacritics 0');";

/* Fills the search index from messages (after an upgrade, or after a run
 * without FTS5 left it behind). */
static const char fts_fill_sql[] =
    "DELETE FROM msg_fts;"
    "INSERT INTO msg_fts(rowid, text) SELECT (r.rid << 36) + m.offset, m.text"
    " FROM messages m JOIN rooms r ON r.name = m.room"
    " WHERE m.deleted = 0 AND r.rid < 134217728 AND m.offset < 68719476736;"
    "DELETE FROM meta WHERE k = 'fts_stale';";

/* From schema 2 to 3: the columns and tables of issues 13 and 15. */
static const char upgrade3_sql[] =
    "BEGIN;"
    "ALTER TABLE messages ADD COLUMN author TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE messages ADD COLUMN mentions TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE messages ADD COLUMN reply_to INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE messages ADD COLUMN edited_ts INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE messages ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE rooms ADD COLUMN rid INTEGER NOT NULL DEFAULT 0;"
    "UPDATE rooms SET rid = rowid;"
    "CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v INTEGER) WITHOUT ROWID;"
    "INSERT OR REPLACE INTO meta(k, v) VALUES('fts_stale', 1);"
    "PRAGMA user_version = 3;"
    "COMMIT;";

/* From schema 0 (no room sizes) to SCHEMA_VERSION, in one transaction. */
static const char upgrade_sql[] =
    "BEGIN;"
    "ALTER TABLE rooms ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE rooms ADD COLUMN msgs INTEGER NOT NULL DEFAULT 0;"
    "UPDATE rooms SET bytes = (SELECT coalesce(sum(" ROW_EST "), 0) FROM messages"
    " WHERE room = rooms.name), msgs = (SELECT count(*) FROM messages WHERE room = rooms.name);"
    "CREATE INDEX rooms_bytes ON rooms(bytes) WHERE msgs > 1;"
    "PRAGMA user_version = 2;"
    "COMMIT;";

enum store_state {
    STATE_RUNNING,       /* requests accepted */
    STATE_CLOSING,       /* close requested; the writer is finishing */
    STATE_ASYNC_CLOSING, /* writer joined; the async handle is closing */
    STATE_CLOSED,        /* everything released but the memory */
};

struct sqlite_store {
    struct hub_history base;       /* the interface header; must be first */
    struct hub_history_config cfg; /* copied */
    char *path;                    /* dir/chathub.db, owned */

    /* Loop thread only. */
    uv_async_t async;               /* wakes the loop for completions */
    int state;                      /* enum store_state */
    int free_on_close;              /* free was called while the handle closed */
    unsigned inflight;              /* requests not yet completed; refs async */
    struct req *ready;              /* taken from the done-queue, not yet fired */
    uv_thread_t thread;             /* the writer, joined by the loop */
    struct req *close_req;          /* allocated at open, so close needs no memory */
    hub_history_closed_cb close_cb; /* fired once everything is released */
    void *close_data;               /* for close_cb */

    /* Shared, under mu. */
    uv_mutex_t mu;                     /* guards the queues, stop and pub */
    uv_cond_t cv;                      /* signals the writer: work or stop */
    struct req *in_head, *in_tail;     /* requests not yet taken by the writer */
    struct req *done_head, *done_tail; /* completions not yet fired */
    int stop;                          /* the writer must exit without more work */
    struct hub_history_stats pub;      /* the writer's figures after its last batch */

    /* Writer thread only (the opening thread until it starts). */
    sqlite3 *db;                /* the connection, owned */
    sqlite3_stmt *st[ST_COUNT]; /* prepared statements, owned */
    struct hub_hmap rooms;      /* the position cache, by name; entries owned */
    struct hub_lru lru;         /* the cache's recency */
    uint64_t txn_gen;           /* counts transactions begun */
    int64_t last_sweep_ms;      /* when the TTL sweep last ran */
    char *sweep_cursor;         /* the sweep resumes after this room, owned */
    int64_t tot_rooms;          /* rows in rooms, as of the last commit */
    int64_t tot_msgs;           /* rows in messages, as of the last commit */
    int64_t tot_est;            /* sum of rooms.bytes, as of the last commit */
    int64_t tot_dropped;        /* rows deleted by the quota since open */
    int64_t d_rooms, d_msgs;    /* the open transaction's changes to tot_rooms, tot_msgs */
    int64_t d_est, d_dropped;   /* ... to tot_est, tot_dropped */
    struct room *pend_head;     /* rooms whose row the open transaction must still update */
    int64_t page_size;          /* the database's page size in bytes */
    uint64_t wal_max;           /* the log is truncated past this (0: no budget) */
    uint64_t db_high;           /* the database's share of max_bytes */
    uint64_t db_low;            /* a pass that deletes brings live pages down to this */
    size_t batch_max;           /* request bytes per batch (read under mu) */
    int64_t check_every;        /* ROW_EST bytes committed between two measurements */
    int64_t since_check;        /* ROW_EST bytes committed since the last one */
    uint64_t bytes_seen;        /* the files' size at the last measurement */
    int quota_warned;           /* a pass fell short; cleared once one reaches db_low */
    int fts;                    /* SQLite has FTS5: msg_fts is the search index */
    int64_t next_rid;           /* rooms.rid of the next new room */
    int64_t next_seq;           /* reactions.seq of the next new emoji on a message */

    /* Loop thread, once the writer has exited. */
    struct hub_history_stats final; /* pub as the writer left it */
};

static const struct history_ops sqlite_ops;

/* ---- Small helpers ---- */

static uint64_t hash_name(struct hub_iov n)
{
    return hub_hash(n.base, n.len, 0);
}

/* Translates a SQLite result code at the module edge. */
static int db_error(int rc)
{
    return rc == SQLITE_NOMEM ? HUB_ENOMEM : HUB_EIO;
}

/* Steps a statement that returns no rows, then resets it. */
static int step_int(sqlite3_stmt *st, int64_t *out);

static int step_done(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : db_error(rc);
}

/* Binds a view as text. The view outlives the statement's use. */
static void bind_iov(sqlite3_stmt *st, int i, struct hub_iov v)
{
    sqlite3_bind_text(st, i, v.len > 0 ? v.base : "", (int)v.len, SQLITE_STATIC);
}

/* ---- The position cache (writer thread) ---- */

static struct room *room_of_lru(struct hub_lru_node *n)
{
    return n != NULL ? HUB_CONTAINER_OF(n, struct room, lru) : NULL;
}

/* Dropping an entry is always safe: its next use reads the database, which
 * the same connection sees including the open transaction. Only the epoch
 * of a room without messages is forgotten, as the memory store forgets it. */
static void room_evict(struct sqlite_store *h, struct room *e)
{
    hub_hmap_remove(&h->rooms, &e->node);
    hub_lru_remove(&h->lru, &e->lru);
    free(e);
}

static void cache_free(struct sqlite_store *h)
{
    struct room *e;
    while ((e = room_of_lru(hub_lru_back(&h->lru))) != NULL)
        room_evict(h, e);
    hub_hmap_destroy(&h->rooms);
}

/* Reads a room's row into e. With no row the room has no messages yet: it
 * keeps the epoch it has in memory. */
static int room_load(struct sqlite_store *h, struct room *e)
{
    sqlite3_stmt *st = h->st[ST_ROOM_GET];
    struct hub_iov name = {e->name, e->name_len};
    int ret = 0;

    bind_iov(st, 1, name);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const unsigned char *epoch = sqlite3_column_text(st, 0);
        sqlite3_int64 last = sqlite3_column_int64(st, 1);
        if (epoch == NULL || sqlite3_column_bytes(st, 0) != HUB_HISTORY_EPOCH_LEN || last < 0) {
            /* quick_check cannot see a bad value in a valid row. */
            ret = HUB_EIO;
        } else {
            memcpy(e->epoch, epoch, HUB_HISTORY_EPOCH_LEN);
            e->epoch[HUB_HISTORY_EPOCH_LEN] = '\0';
            e->last = (uint64_t)last;
            e->rid = sqlite3_column_int64(st, 2);
            e->persisted = 1;
        }
    } else if (rc == SQLITE_DONE) {
        e->last = 0;
        e->rid = 0;
        e->persisted = 0;
    } else {
        ret = db_error(rc);
    }
    sqlite3_reset(st);
    return ret;
}

static int room_name_eq(const struct hub_hnode *n, const void *key, size_t len)
{
    const struct room *e = HUB_CONTAINER_OF(n, struct room, node);
    return e->name_len == len && memcmp(e->name, key, len) == 0;
}

/* Finds room's cache entry, loading it from the database on first use or
 * after a rollback. */
static int room_get(struct sqlite_store *h, struct hub_iov room, struct room **out)
{
    uint64_t x = hash_name(room);
    struct hub_hnode *n = hub_hmap_find(&h->rooms, x, room.base, room.len, room_name_eq);
    struct room *e;
    int rc;

    if (n != NULL) {
        e = HUB_CONTAINER_OF(n, struct room, node);
        hub_lru_touch(&h->lru, &e->lru);
        if (e->stale) {
            rc = room_load(h, e);
            if (rc != 0)
                return rc;
            e->stale = 0;
        }
        *out = e;
        return 0;
    }

    /* A room whose row still awaits this transaction's update stays: the
     * cache then passes max_rooms by at most the rooms of one batch. */
    if (h->rooms.count >= h->cfg.max_rooms && !hub_lru_empty(&h->lru) &&
        !room_of_lru(hub_lru_back(&h->lru))->pend)
        room_evict(h, room_of_lru(hub_lru_back(&h->lru)));
    e = calloc(1, sizeof(*e) + room.len + 1);
    if (e == NULL)
        return HUB_ENOMEM;
    if (room.len > 0)
        memcpy(e->name, room.base, room.len);
    e->name_len = room.len;
    history_new_epoch(e->epoch);
    rc = room_load(h, e);
    if (rc != 0) {
        free(e);
        return rc;
    }
    hub_hmap_insert(&h->rooms, &e->node, x);
    hub_lru_node_init(&e->lru);
    hub_lru_push_front(&h->lru, &e->lru);
    *out = e;
    return 0;
}

/* After a rollback, entries changed by the transaction no longer match the
 * database. */
static void cache_mark_stale(struct sqlite_store *h)
{
    for (struct hub_lru_node *n = hub_lru_front(&h->lru); n != NULL; n = hub_lru_older(&h->lru, n))
        if (room_of_lru(n)->dirty_gen == h->txn_gen)
            room_of_lru(n)->stale = 1;
}

/* ---- Requests, run by the writer ---- */

/* Offsets at or below this are beyond max_per_room. */
static uint64_t kept_floor(const struct sqlite_store *h, uint64_t last)
{
    return last > h->cfg.max_per_room ? last - h->cfg.max_per_room : 0;
}

/* ROW_EST of the row an append writes. */
static int64_t row_est(const struct req *r)
{
    return ROW_FIXED + 2 * (int64_t)r->room.len + 2 * (int64_t)r->from.len + (int64_t)r->text.len +
           2 * (int64_t)r->cmid.len;
}

/* Reads the count and the ROW_EST sum of a size statement (bound by the
 * caller), then resets it. */
static int step_size(sqlite3_stmt *st, int64_t *n, int64_t *est)
{
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *n = sqlite3_column_int64(st, 0);
        *est = sqlite3_column_int64(st, 1);
    }
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? 0 : db_error(rc);
}

/* Takes n rows of est bytes off room's row in rooms. */
static int room_sub(struct sqlite_store *h, struct hub_iov room, int64_t n, int64_t est)
{
    sqlite3_stmt *st = h->st[ST_ROOM_SUB];
    bind_iov(st, 1, room);
    sqlite3_bind_int64(st, 2, est);
    sqlite3_bind_int64(st, 3, n);
    int rc = step_done(st);
    if (rc == 0) {
        h->d_msgs -= n;
        h->d_est -= est;
    }
    return rc;
}

/* The search index's rowid base of a room (FID_SHIFT), or -1 when the
 * room's messages are not indexed. */
static int64_t fid_base(const struct room *e)
{
    return e->rid > 0 && e->rid < FID_ROOMS ? e->rid << FID_SHIFT : -1;
}

/* Removes the search index's rows and the reactions of room's offsets up to
 * cut (the trimming by count and by the disk budget). */
static int drop_extras_to(struct sqlite_store *h, struct hub_iov room, int64_t base, int64_t cut)
{
    sqlite3_stmt *st = h->st[ST_RX_DEL_TO];
    bind_iov(st, 1, room);
    sqlite3_bind_int64(st, 2, cut);
    int rc = step_done(st);
    if (rc != 0 || !h->fts || base < 0)
        return rc;
    st = h->st[ST_FTS_DEL_RANGE];
    sqlite3_bind_int64(st, 1, base);
    sqlite3_bind_int64(st, 2, base + (cut < (int64_t)FID_OFFSETS ? cut : (int64_t)FID_OFFSETS - 1));
    return step_done(st);
}

/* Until when actor is restricted (kind) in room or the whole hub at now
 * (0: not). */
static int restricted(struct sqlite_store *h, int kind, struct hub_iov room, struct hub_iov actor,
                      int64_t now, int64_t *until)
{
    *until = 0;
    if (actor.len == 0)
        return 0;
    sqlite3_stmt *st = h->st[ST_RESTRICTED];
    sqlite3_bind_int(st, 1, kind);
    bind_iov(st, 2, actor);
    bind_iov(st, 3, room);
    sqlite3_bind_int64(st, 4, now);
    return step_int(st, until);
}

static int do_append(struct sqlite_store *h, struct req *r)
{
    struct room *e;
    sqlite3_stmt *st;
    int rc = room_get(h, r->room, &e);
    if (rc != 0)
        return rc;
    e->dirty_gen = h->txn_gen;

    int64_t ban = 0, mute = 0;
    rc = restricted(h, HUB_RESTRICT_BAN, r->room, r->actor, r->ts, &ban);
    if (rc == 0)
        rc = restricted(h, HUB_RESTRICT_MUTE, r->room, r->actor, r->ts, &mute);
    if (rc != 0)
        return rc;
    if (ban != 0 || mute != 0) {
        r->err = HUB_EPERM;
        return 0;
    }
    if (r->reply_to > e->last) {
        r->err = HUB_EINVAL;
        return 0;
    }

    if (r->cmid.len > 0) {
        st = h->st[ST_DEDUPE];
        bind_iov(st, 1, r->room);
        bind_iov(st, 2, r->from);
        bind_iov(st, 3, r->cmid);
        sqlite3_bind_int64(st, 4, (sqlite3_int64)kept_floor(h, e->last));
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            r->offset = (uint64_t)sqlite3_column_int64(st, 0);
            r->out_ts = sqlite3_column_int64(st, 1);
            r->duplicate = 1;
        }
        sqlite3_reset(st);
        if (rc == SQLITE_ROW)
            return 0;
        if (rc != SQLITE_DONE)
            return db_error(rc);
    }

    uint64_t off = e->last + 1;
    int64_t est = row_est(r);
    st = h->st[ST_INSERT];
    bind_iov(st, 1, r->room);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)off);
    sqlite3_bind_int64(st, 3, r->ts);
    bind_iov(st, 4, r->from);
    bind_iov(st, 5, r->text);
    bind_iov(st, 6, r->cmid);
    bind_iov(st, 7, r->author);
    bind_iov(st, 8, r->mentions);
    sqlite3_bind_int64(st, 9, (sqlite3_int64)r->reply_to);
    rc = step_done(st);
    if (rc != 0)
        return rc;

    /* Retention by count (rows at or below kept_floor) is applied once per
     * room and transaction, by room_flush at commit: reads and the dedupe
     * never look below kept_floor, so the rows that wait for it are
     * invisible, and the table holds no more than max_per_room rows of a
     * room between transactions. */

    if (e->persisted) {
        /* The room's row (last, bytes, msgs, and the rooms_bytes index
         * entry) is updated once per transaction, at commit, not once per
         * message: see room_flush. */
        if (!e->pend) {
            e->pend = 1;
            e->pend_next = h->pend_head;
            h->pend_head = e;
        }
        e->pend_bytes += est;
        e->pend_msgs += 1;
        rc = 0;
    } else {
        /* No row yet means no messages yet, so nothing was trimmed. */
        st = h->st[ST_ROOM_INS];
        bind_iov(st, 1, r->room);
        sqlite3_bind_text(st, 2, e->epoch, HUB_HISTORY_EPOCH_LEN, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, (sqlite3_int64)off);
        sqlite3_bind_int64(st, 4, est);
        sqlite3_bind_int64(st, 5, h->next_rid);
        rc = step_done(st);
        if (rc == 0)
            e->rid = h->next_rid++;
    }
    if (rc == 0 && h->fts && fid_base(e) >= 0 && off < FID_OFFSETS) {
        st = h->st[ST_FTS_INS];
        sqlite3_bind_int64(st, 1, fid_base(e) + (int64_t)off);
        bind_iov(st, 2, r->text);
        rc = step_done(st);
    }
    if (rc != 0)
        return rc;
    h->d_rooms += e->persisted ? 0 : 1;
    h->d_msgs += 1;
    h->d_est += est;

    /* The cache moves only once every statement succeeded; if the
     * transaction later rolls back, dirty_gen marks the entry stale. */
    e->last = off;
    e->persisted = 1;
    r->offset = off;
    r->out_ts = r->ts;
    r->duplicate = 0;
    return 0;
}

static void read_reset(struct req *r)
{
    free(r->msgs);
    free(r->blob);
    free(r->rx);
    free(r->rxv);
    free(r->topic);
    r->msgs = NULL;
    r->blob = NULL;
    r->rx = NULL;
    r->rxv = NULL;
    r->topic = NULL;
    r->nrx = 0;
    r->n = 0;
    r->err = 0;
    r->rp.topic.base = NULL;
    r->rp.topic.len = 0;
    r->rp.ban_until = r->rp.mute_until = 0;
}

/* Appends n bytes to the read's blob. */
static int blob_put(char **blob, size_t *len, size_t *cap, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    if (*blob == NULL || *len + n > *cap) {
        size_t c = *cap > 0 ? *cap * 2 : 256;
        while (c < *len + n)
            c *= 2;
        char *b = realloc(*blob, c);
        if (b == NULL)
            return HUB_ENOMEM;
        *blob = b;
        *cap = c;
    }
    memcpy(*blob + *len, p, n);
    *len += n;
    return 0;
}

/* A result being collected: messages, their strings, and the room left. */
struct rows {
    size_t len, cap, ncap;
};

#define MSG_STRINGS 5 /* sender, text, cmid, author, mentions: columns 2..6 of MSG_COLS */

static struct hub_iov *msg_string(struct hub_history_msg *m, int i)
{
    struct hub_iov *cols[MSG_STRINGS] = {&m->from, &m->text, &m->cmid, &m->author, &m->mentions};
    return cols[i];
}

/* Copies the row st is on (MSG_COLS) into r as its next message. */
static int row_put(struct req *r, sqlite3_stmt *st, struct rows *w, size_t max)
{
    if (r->n == w->ncap) {
        size_t c = w->ncap == 0 ? 16 : w->ncap * 2;
        if (c > max)
            c = max;
        struct hub_history_msg *m = realloc(r->msgs, c * sizeof(*m));
        if (m == NULL)
            return HUB_ENOMEM;
        r->msgs = m;
        w->ncap = c;
    }
    struct hub_history_msg *m = &r->msgs[r->n];
    *m = (struct hub_history_msg){
        .offset = (uint64_t)sqlite3_column_int64(st, 0),
        .ts = sqlite3_column_int64(st, 1),
        .reply_to = (uint64_t)sqlite3_column_int64(st, 7),
        .edited_ts = sqlite3_column_int64(st, 8),
        .deleted = sqlite3_column_int(st, 9) != 0,
        .reactions = NULL,
        .nreactions = 0,
    };
    for (int i = 0; i < MSG_STRINGS; i++) {
        const unsigned char *p = sqlite3_column_text(st, 2 + i);
        size_t n = p != NULL ? (size_t)sqlite3_column_bytes(st, 2 + i) : 0;
        /* Bases are set once the blob stops moving (rows_done). */
        msg_string(m, i)->base = NULL;
        msg_string(m, i)->len = n;
        int rc = blob_put(&r->blob, &w->len, &w->cap, p, n);
        if (rc != 0)
            return rc;
    }
    r->n++;
    return 0;
}

/* Points the messages' strings into the blob, in the order the rows came. */
static void rows_done(struct req *r)
{
    size_t at = 0;
    for (size_t i = 0; i < r->n; i++)
        for (int j = 0; j < MSG_STRINGS; j++) {
            struct hub_iov *v = msg_string(&r->msgs[i], j);
            v->base = r->blob != NULL ? r->blob + at : "";
            at += v->len;
        }
}

/* Copies the rows of a read statement into r. One row beyond the limit
 * tells whether more exist in the direction asked. */
static int collect_rows(struct req *r, sqlite3_stmt *st, int desc)
{
    struct rows w = {0, 0, 0};
    int more = 0, rc, ret = 0;

    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (r->n == r->limit) {
            more = 1;
            break;
        }
        ret = row_put(r, st, &w, r->limit);
        if (ret != 0)
            goto out;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        ret = db_error(rc);
        goto out;
    }
    r->complete = !more;
    rows_done(r);
    if (desc)
        for (size_t i = 0; i < r->n / 2; i++) {
            struct hub_history_msg t = r->msgs[i];
            r->msgs[i] = r->msgs[r->n - 1 - i];
            r->msgs[r->n - 1 - i] = t;
        }
out:
    sqlite3_reset(st);
    if (ret != 0)
        read_reset(r);
    return ret;
}

/* Adds every message's reactions (mine for viewer) to r. */
static int attach_reactions(struct sqlite_store *h, struct req *r, struct hub_iov viewer)
{
    size_t cap = 0;
    sqlite3_stmt *st = h->st[ST_RX_OF];
    for (size_t i = 0; i < r->n; i++) {
        struct hub_history_msg *m = &r->msgs[i];
        if (m->deleted)
            continue;
        bind_iov(st, 1, r->room);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)m->offset);
        bind_iov(st, 3, viewer);
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            const unsigned char *e = sqlite3_column_text(st, 0);
            size_t elen = e != NULL ? (size_t)sqlite3_column_bytes(st, 0) : 0;
            if (elen == 0 || elen > HUB_HISTORY_EMOJI_MAX)
                continue;
            if (r->nrx == cap) {
                size_t c = cap == 0 ? 16 : cap * 2;
                struct rrx *x = realloc(r->rx, c * sizeof(*x));
                if (x != NULL)
                    r->rx = x;
                struct hub_history_reaction *v = x != NULL ? realloc(r->rxv, c * sizeof(*v)) : NULL;
                if (v == NULL) {
                    sqlite3_reset(st);
                    return HUB_ENOMEM;
                }
                r->rxv = v;
                cap = c;
            }
            memcpy(r->rx[r->nrx].emoji, e, elen);
            r->rxv[r->nrx++] = (struct hub_history_reaction){
                .emoji = {NULL, elen},
                .count = (uint32_t)sqlite3_column_int64(st, 1),
                .mine = viewer.len > 0 && sqlite3_column_int(st, 2) != 0,
            };
            m->nreactions++;
        }
        sqlite3_reset(st);
        if (rc != SQLITE_DONE)
            return db_error(rc);
    }
    /* The arrays have stopped moving: point messages and emoji into them
     * (the reactions are in the order of r->msgs). */
    size_t k = 0;
    for (size_t i = 0; i < r->n; i++) {
        struct hub_history_msg *m = &r->msgs[i];
        if (m->nreactions == 0)
            continue;
        m->reactions = &r->rxv[k];
        for (size_t x = 0; x < m->nreactions; x++, k++)
            r->rxv[k].emoji.base = r->rx[k].emoji;
    }
    return 0;
}

/* A query's topic and the viewer's restrictions. */
static int read_meta(struct sqlite_store *h, struct req *r)
{
    sqlite3_stmt *st = h->st[ST_TOPIC_GET];
    bind_iov(st, 1, r->room);
    int rc = sqlite3_step(st), ret = 0;
    if (rc == SQLITE_ROW) {
        const unsigned char *p = sqlite3_column_text(st, 0);
        size_t n = p != NULL ? (size_t)sqlite3_column_bytes(st, 0) : 0;
        r->topic = malloc(n + 1);
        if (r->topic == NULL) {
            ret = HUB_ENOMEM;
        } else {
            if (n > 0)
                memcpy(r->topic, p, n);
            r->topic[n] = '\0';
            r->rp.topic.base = r->topic;
            r->rp.topic.len = n;
        }
    } else if (rc != SQLITE_DONE) {
        ret = db_error(rc);
    }
    sqlite3_reset(st);
    if (ret == 0 && r->actor.len > 0) {
        int64_t now = r->now != 0 ? r->now : history_now_ms(&h->cfg);
        ret = restricted(h, HUB_RESTRICT_BAN, r->room, r->actor, now, &r->rp.ban_until);
        if (ret == 0)
            ret = restricted(h, HUB_RESTRICT_MUTE, r->room, r->actor, now, &r->rp.mute_until);
    }
    return ret;
}

static int do_read(struct sqlite_store *h, struct req *r)
{
    struct room *e;
    sqlite3_stmt *st;
    int rc = room_get(h, r->room, &e);
    if (rc != 0)
        return rc;

    uint64_t last = e->last;
    uint64_t floor = kept_floor(h, last);
    /* Rows past the TTL may wait for the sweep; reads never show them. */
    int64_t cutoff = h->cfg.ttl_ms > 0 ? history_now_ms(&h->cfg) - h->cfg.ttl_ms : INT64_MIN;

    memcpy(r->rp.epoch, e->epoch, sizeof(r->rp.epoch));
    r->rp.last = last;
    r->rp.first = last + 1;
    r->n = 0;
    r->complete = 1;
    if (r->meta) {
        rc = read_meta(h, r);
        if (rc != 0)
            return rc;
    }
    if (last == 0)
        return 0;

    st = h->st[ST_FIRST];
    bind_iov(st, 1, r->room);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)floor);
    sqlite3_bind_int64(st, 3, cutoff);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        r->rp.first = (uint64_t)sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return db_error(rc);
    if (r->limit == 0 || r->rp.first > last)
        return 0;

    /* Exclusive bounds lo < offset < hi, clamped to [0, last + 1] so that
     * they fit SQLite's signed integers. */
    uint64_t lo = floor, hi = last + 1;
    int desc = 1;
    if (r->dir == HUB_HISTORY_BEFORE) {
        if (r->pos < hi)
            hi = r->pos;
    } else if (r->dir == HUB_HISTORY_AFTER) {
        if (r->pos >= last)
            return 0;
        if (r->pos > lo)
            lo = r->pos;
        desc = 0;
    }
    st = h->st[desc ? ST_READ_DESC : ST_READ_ASC];
    bind_iov(st, 1, r->room);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)lo);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)hi);
    sqlite3_bind_int64(st, 4, cutoff);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)r->limit + 1);
    rc = collect_rows(r, st, desc);
    if (rc == 0)
        rc = attach_reactions(h, r, r->meta ? r->author : (struct hub_iov){NULL, 0});
    return rc;
}

/* ---- Amendments, search, restrictions, topics (writer thread) ---- */

/* The message at offset in room, kept and visible (not past max_per_room
 * or the TTL), as r's only message; *found says whether there is one. */
static int msg_get(struct sqlite_store *h, struct req *r, struct room *e, uint64_t offset,
                   int *found)
{
    int64_t cutoff = h->cfg.ttl_ms > 0 ? history_now_ms(&h->cfg) - h->cfg.ttl_ms : INT64_MIN;
    sqlite3_stmt *st = h->st[ST_MSG_GET];
    struct rows w = {0, 0, 0};
    *found = 0;
    if (offset == 0 || offset > e->last)
        return 0;
    bind_iov(st, 1, r->room);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)offset);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)kept_floor(h, e->last));
    sqlite3_bind_int64(st, 4, cutoff);
    int rc = sqlite3_step(st), ret = 0;
    if (rc == SQLITE_ROW) {
        ret = row_put(r, st, &w, (size_t)-1);
        *found = ret == 0;
    } else if (rc != SQLITE_DONE) {
        ret = db_error(rc);
    }
    sqlite3_reset(st);
    if (ret == 0)
        rows_done(r);
    return ret;
}

/* As may_change in history.c: the author within the window, or a moderator. */
static int may_change(const struct hub_history_msg *m, const struct req *r)
{
    if (r->moderator)
        return 1;
    if (m->author.len == 0 || m->author.len != r->author.len ||
        memcmp(m->author.base, r->author.base, r->author.len) != 0)
        return 0;
    int64_t win = r->window_ms > 0 ? r->window_ms : HUB_HISTORY_EDIT_WINDOW_MS;
    return r->ts - m->ts <= win;
}

/* Users with emoji on the message now (and the emoji's seq, 0 if none). */
static int emoji_count(struct sqlite_store *h, struct req *r, int64_t *seq, int64_t *count)
{
    sqlite3_stmt *st = h->st[ST_RX_EMOJI];
    bind_iov(st, 1, r->room);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)r->offset);
    bind_iov(st, 3, r->mentions);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *seq = sqlite3_column_int64(st, 0);
        *count = sqlite3_column_int64(st, 1);
    }
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? 0 : db_error(rc);
}

/* Runs st (bound to room, offset, emoji, who). */
static int rx_step(struct req *r, sqlite3_stmt *st)
{
    bind_iov(st, 1, r->room);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)r->offset);
    bind_iov(st, 3, r->mentions);
    bind_iov(st, 4, r->author);
    return step_done(st);
}

/* Takes the message's text out of the search index (fid: its rowid). */
static int fts_drop(struct sqlite_store *h, int64_t fid)
{
    if (!h->fts || fid < 0)
        return 0;
    sqlite3_stmt *st = h->st[ST_FTS_DEL];
    sqlite3_bind_int64(st, 1, fid);
    return step_done(st);
}

static int do_amend(struct sqlite_store *h, struct req *r)
{
    struct room *e;
    int found = 0;
    int react = r->kind == HUB_AMEND_REACT || r->kind == HUB_AMEND_UNREACT;
    if (r->kind < HUB_AMEND_EDIT || r->kind > HUB_AMEND_UNREACT ||
        (r->kind == HUB_AMEND_EDIT && r->text.len == 0) ||
        (react && (r->mentions.len == 0 || r->author.len == 0))) {
        r->err = HUB_EINVAL;
        return 0;
    }
    int rc = room_get(h, r->room, &e);
    if (rc == 0)
        rc = msg_get(h, r, e, r->offset, &found);
    if (rc != 0)
        return rc;
    e->dirty_gen = h->txn_gen;
    struct hub_history_msg *m = found ? &r->msgs[0] : NULL;
    if (m == NULL || (m->deleted && r->kind != HUB_AMEND_DELETE && r->kind != HUB_AMEND_UNREACT)) {
        r->err = HUB_ENOENT;
        return 0;
    }
    if (!react && !may_change(m, r)) {
        r->err = HUB_EPERM;
        return 0;
    }
    r->am = (struct hub_history_amended){.changed = 0, .author = m->author, .from = m->from};
    int64_t fid =
        fid_base(e) >= 0 && r->offset < FID_OFFSETS ? fid_base(e) + (int64_t)r->offset : -1;
    int64_t seq = 0, count = 0;
    sqlite3_stmt *st;
    switch (r->kind) {
    case HUB_AMEND_EDIT:
        st = h->st[ST_MSG_EDIT];
        bind_iov(st, 1, r->room);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)r->offset);
        bind_iov(st, 3, r->text);
        sqlite3_bind_int64(st, 4, r->ts);
        rc = step_done(st);
        if (rc == 0)
            rc = fts_drop(h, fid);
        if (rc == 0 && h->fts && fid >= 0) {
            st = h->st[ST_FTS_INS];
            sqlite3_bind_int64(st, 1, fid);
            bind_iov(st, 2, r->text);
            rc = step_done(st);
        }
        /* rooms.bytes follows the text's size (ROW_EST). */
        if (rc == 0 && r->text.len != m->text.len)
            rc = room_sub(h, r->room, 0, (int64_t)m->text.len - (int64_t)r->text.len);
        r->am.changed = 1;
        r->am.edited_ts = r->ts;
        break;
    case HUB_AMEND_DELETE:
        if (m->deleted)
            break;
        st = h->st[ST_MSG_TOMB];
        bind_iov(st, 1, r->room);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)r->offset);
        rc = step_done(st);
        if (rc == 0)
            rc = fts_drop(h, fid);
        if (rc == 0) {
            st = h->st[ST_RX_DEL_MSG];
            bind_iov(st, 1, r->room);
            sqlite3_bind_int64(st, 2, (sqlite3_int64)r->offset);
            rc = step_done(st);
        }
        if (rc == 0 && m->text.len > 0)
            rc = room_sub(h, r->room, 0, (int64_t)m->text.len);
        r->am.changed = 1;
        break;
    case HUB_AMEND_REACT:
        rc = emoji_count(h, r, &seq, &count);
        if (rc != 0)
            break;
        if (count == 0) {
            int64_t distinct = 0;
            st = h->st[ST_RX_NEMOJI];
            bind_iov(st, 1, r->room);
            sqlite3_bind_int64(st, 2, (sqlite3_int64)r->offset);
            rc = step_int(st, &distinct);
            if (rc == 0 && distinct >= (int64_t)r->max_emoji) {
                r->err = HUB_ELIMIT;
                return 0;
            }
            seq = h->next_seq++;
        } else {
            int64_t has = 0;
            st = h->st[ST_RX_HAS];
            bind_iov(st, 1, r->room);
            sqlite3_bind_int64(st, 2, (sqlite3_int64)r->offset);
            bind_iov(st, 3, r->mentions);
            bind_iov(st, 4, r->author);
            rc = sqlite3_step(st);
            has = rc == SQLITE_ROW;
            sqlite3_reset(st);
            rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : db_error(rc);
            if (rc != 0 || has) {
                r->am.count = (uint32_t)count;
                break;
            }
        }
        if (rc != 0)
            break;
        st = h->st[ST_RX_INS];
        sqlite3_bind_int64(st, 5, seq);
        rc = rx_step(r, st);
        r->am.changed = 1;
        r->am.count = (uint32_t)count + 1;
        break;
    default:
        st = h->st[ST_RX_DEL];
        rc = rx_step(r, st);
        if (rc == 0)
            r->am.changed = sqlite3_changes(h->db) > 0;
        if (rc == 0)
            rc = emoji_count(h, r, &seq, &count);
        r->am.count = (uint32_t)count;
        break;
    }
    return rc;
}

/* Builds the FTS5 query of words: each word a quoted string (quotes
 * doubled) with a prefix star, all of them ANDed. */
static int fts_query(const struct history_words *w, char *out, size_t outsz)
{
    size_t k = 0;
    for (size_t i = 0; i < w->n; i++) {
        if (k + 4 >= outsz)
            return HUB_EINVAL;
        if (i > 0)
            out[k++] = ' ';
        out[k++] = '"';
        for (size_t j = 0; j < w->word[i].len; j++) {
            char c = w->word[i].base[j];
            if (k + 5 >= outsz)
                return HUB_EINVAL;
            if (c == '"')
                out[k++] = '"';
            out[k++] = c;
        }
        out[k++] = '"';
        out[k++] = '*';
    }
    out[k] = '\0';
    return 0;
}

/* Adds the message at offset to a search's results if it matches (kept,
 * not deleted). Returns 1 when it was added. */
static int search_take(struct sqlite_store *h, struct req *r, struct room *e,
                       const struct history_words *w, uint64_t offset, struct rows *rw, int *ret)
{
    int64_t cutoff = h->cfg.ttl_ms > 0 ? history_now_ms(&h->cfg) - h->cfg.ttl_ms : INT64_MIN;
    sqlite3_stmt *st = h->st[ST_MSG_GET];
    bind_iov(st, 1, r->room);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)offset);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)kept_floor(h, e->last));
    sqlite3_bind_int64(st, 4, cutoff);
    int rc = sqlite3_step(st), took = 0;
    *ret = 0;
    if (rc == SQLITE_ROW && sqlite3_column_int(st, 9) == 0) {
        const unsigned char *t = sqlite3_column_text(st, 3);
        struct hub_iov text = {(const char *)t,
                               t != NULL ? (size_t)sqlite3_column_bytes(st, 3) : 0};
        /* FTS5's tokens are a superset of ours (history_impl.h): the
         * shared matcher makes the answer the memory store's. */
        if (history_search_match(w, text)) {
            if (r->n == r->limit)
                took = 2; /* one more than asked: not complete */
            else if ((*ret = row_put(r, st, rw, r->limit)) == 0)
                took = 1;
        }
    } else if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        *ret = db_error(rc);
    }
    sqlite3_reset(st);
    return took;
}

static int do_search(struct sqlite_store *h, struct req *r)
{
    struct history_words w;
    struct room *e;
    struct rows rw = {0, 0, 0};
    r->complete = 1;
    if (history_search_words(r->text, &w) != 0) {
        r->err = HUB_EINVAL;
        return 0;
    }
    int rc = room_get(h, r->room, &e);
    if (rc != 0 || e->last == 0)
        return rc;
    uint64_t floor = kept_floor(h, e->last);
    uint64_t hi = r->before == 0 || r->before > e->last ? e->last + 1 : r->before;
    int took = 0, ret = 0;
    if (h->fts && fid_base(e) >= 0) {
        char q[4 * HISTORY_SEARCH_BYTES + 8 * HISTORY_SEARCH_WORDS];
        if (fts_query(&w, q, sizeof(q)) != 0) {
            r->err = HUB_EINVAL;
            return 0;
        }
        sqlite3_stmt *st = h->st[ST_FTS_SEARCH];
        int64_t base = fid_base(e);
        sqlite3_bind_text(st, 1, q, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, base + (int64_t)floor);
        sqlite3_bind_int64(st, 3, base + (int64_t)(hi < FID_OFFSETS ? hi : FID_OFFSETS));
        /* Candidates newest first; each is checked against the message. A
         * statement on msg_fts and one on messages may step together: they
         * only read. */
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            uint64_t off = (uint64_t)(sqlite3_column_int64(st, 0) - base);
            took = search_take(h, r, e, &w, off, &rw, &ret);
            if (ret != 0 || took == 2)
                break;
        }
        sqlite3_reset(st);
        if (ret == 0 && rc != SQLITE_ROW && rc != SQLITE_DONE)
            ret = db_error(rc);
    } else {
        /* No index: the newest SCAN_MAX messages, checked one by one. */
        int64_t cutoff = h->cfg.ttl_ms > 0 ? history_now_ms(&h->cfg) - h->cfg.ttl_ms : INT64_MIN;
        sqlite3_stmt *st = h->st[ST_SCAN];
        bind_iov(st, 1, r->room);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)floor);
        sqlite3_bind_int64(st, 3, (sqlite3_int64)hi);
        sqlite3_bind_int64(st, 4, cutoff);
        sqlite3_bind_int64(st, 5, SCAN_MAX);
        uint64_t offs[64];
        int scanned = 0;
        /* Offsets are copied in chunks: msgs rows are read by another
         * statement of the same table. */
        for (;;) {
            int n = 0;
            while (n < 64 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
                const unsigned char *t = sqlite3_column_text(st, 1);
                struct hub_iov text = {(const char *)t,
                                       t != NULL ? (size_t)sqlite3_column_bytes(st, 1) : 0};
                scanned++;
                if (history_search_match(&w, text))
                    offs[n++] = (uint64_t)sqlite3_column_int64(st, 0);
            }
            int end = rc != SQLITE_ROW;
            for (int i = 0; i < n && ret == 0 && took != 2; i++)
                took = search_take(h, r, e, &w, offs[i], &rw, &ret);
            if (end || ret != 0 || took == 2)
                break;
        }
        sqlite3_reset(st);
        if (ret == 0 && rc != SQLITE_ROW && rc != SQLITE_DONE)
            ret = db_error(rc);
        if (scanned >= SCAN_MAX && took != 2)
            took = 2; /* stopped at the bound: there may be older matches */
    }
    if (ret != 0) {
        read_reset(r);
        return ret;
    }
    r->complete = took != 2;
    rows_done(r);
    return attach_reactions(h, r, (struct hub_iov){NULL, 0});
}

static int do_restrict(struct sqlite_store *h, struct req *r)
{
    sqlite3_stmt *st;
    /* Expired restrictions are forgotten here: they are rare writes. */
    st = h->st[ST_RESTRICT_PURGE];
    sqlite3_bind_int64(st, 1, history_now_ms(&h->cfg));
    int rc = step_done(st);
    if (rc != 0)
        return rc;
    if (r->until == 0) {
        st = h->st[ST_RESTRICT_DEL];
        sqlite3_bind_int(st, 1, r->kind);
        bind_iov(st, 2, r->room);
        bind_iov(st, 3, r->actor);
        return step_done(st);
    }
    st = h->st[ST_RESTRICT_SET];
    sqlite3_bind_int(st, 1, r->kind);
    bind_iov(st, 2, r->room);
    bind_iov(st, 3, r->actor);
    sqlite3_bind_int64(st, 4, r->until);
    bind_iov(st, 5, r->from);
    bind_iov(st, 6, r->text);
    sqlite3_bind_int64(st, 7, r->ts);
    return step_done(st);
}

static int do_topic(struct sqlite_store *h, struct req *r)
{
    sqlite3_stmt *st = h->st[r->text.len > 0 ? ST_TOPIC_SET : ST_TOPIC_DEL];
    bind_iov(st, 1, r->room);
    if (r->text.len > 0) {
        bind_iov(st, 2, r->text);
        sqlite3_bind_int64(st, 3, r->ts);
    }
    return step_done(st);
}

/* Deletes rows past the TTL in the next 64 rooms, at most once a
 * second, so that a large database never stalls a batch. Each room's rows
 * are measured before they go, for rooms.bytes. */
static int maybe_sweep(struct sqlite_store *h)
{
    if (h->cfg.ttl_ms <= 0)
        return 0;
    int64_t now = history_now_ms(&h->cfg);
    if (now - h->last_sweep_ms < SWEEP_INTERVAL_MS)
        return 0;
    h->last_sweep_ms = now;
    int64_t cutoff = now - h->cfg.ttl_ms;

    /* The page is copied before any row changes: no statement reads a
     * table while another one writes it. */
    char *names[64];
    int n = 0, rc;
    const char *cursor = h->sweep_cursor != NULL ? h->sweep_cursor : "";
    sqlite3_stmt *st = h->st[ST_SWEEP_PAGE];
    sqlite3_bind_text(st, 1, cursor, -1, SQLITE_STATIC);
    while (n < 64 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const unsigned char *p = sqlite3_column_text(st, 0);
        names[n] = strdup(p != NULL ? (const char *)p : "");
        if (names[n] == NULL) {
            rc = SQLITE_NOMEM;
            break;
        }
        n++;
    }
    sqlite3_reset(st);
    int ret = rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : db_error(rc);

    for (int i = 0; i < n && ret == 0; i++) {
        struct hub_iov room = {names[i], strlen(names[i])};
        int64_t gone = 0, est = 0;
        st = h->st[ST_SWEEP_SIZE];
        bind_iov(st, 1, room);
        sqlite3_bind_int64(st, 2, cutoff);
        ret = step_size(st, &gone, &est);
        if (ret != 0 || gone == 0)
            continue;
        st = h->st[ST_RX_DEL_OLD];
        bind_iov(st, 1, room);
        sqlite3_bind_int64(st, 2, cutoff);
        ret = step_done(st);
        if (ret == 0 && h->fts) {
            st = h->st[ST_FTS_DEL_OLD];
            bind_iov(st, 1, room);
            sqlite3_bind_int64(st, 2, cutoff);
            ret = step_done(st);
        }
        if (ret != 0)
            continue;
        st = h->st[ST_SWEEP_DEL];
        bind_iov(st, 1, room);
        sqlite3_bind_int64(st, 2, cutoff);
        ret = step_done(st);
        if (ret == 0)
            ret = room_sub(h, room, gone, est);
    }
    if (ret == 0) {
        /* A short page was the last: start from the first room again. */
        free(h->sweep_cursor);
        h->sweep_cursor = n == 64 ? names[63] : NULL;
        if (n == 64)
            n = 63;
    }
    for (int i = 0; i < n; i++)
        free(names[i]);
    return ret;
}

/* Forgets the row updates that the transaction did not write. */
static void pend_clear(struct sqlite_store *h)
{
    while (h->pend_head != NULL) {
        struct room *e = h->pend_head;
        h->pend_head = e->pend_next;
        e->pend = 0;
        e->pend_bytes = e->pend_msgs = 0;
        e->pend_next = NULL;
    }
}

/* Finishes the appends of the open transaction room by room: deletes the
 * rows past max_per_room (measured first, for rooms.bytes) and writes the
 * room's row, once per room rather than once per message (group commit of
 * the retention and of the room sizes). Returns 0 or an error, after which
 * the transaction rolls back. */
static int room_flush(struct sqlite_store *h)
{
    while (h->pend_head != NULL) {
        struct room *e = h->pend_head;
        struct hub_iov name = {e->name, e->name_len};
        uint64_t floor = kept_floor(h, e->last);
        if (floor > 0) {
            int64_t gone = 0, gone_est = 0;
            sqlite3_stmt *st = h->st[ST_TRIM_SIZE];
            bind_iov(st, 1, name);
            sqlite3_bind_int64(st, 2, (sqlite3_int64)floor);
            int rc = step_size(st, &gone, &gone_est);
            if (rc == 0 && gone > 0) {
                st = h->st[ST_TRIM];
                bind_iov(st, 1, name);
                sqlite3_bind_int64(st, 2, (sqlite3_int64)floor);
                rc = step_done(st);
                if (rc == 0)
                    rc = drop_extras_to(h, name, fid_base(e), (int64_t)floor);
            }
            if (rc != 0)
                return rc;
            e->pend_bytes -= gone_est;
            e->pend_msgs -= gone;
            h->d_msgs -= gone;
            h->d_est -= gone_est;
        }
        sqlite3_stmt *st = h->st[ST_ROOM_UPD];
        bind_iov(st, 1, name);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)e->last);
        sqlite3_bind_int64(st, 3, e->pend_bytes);
        sqlite3_bind_int64(st, 4, e->pend_msgs);
        int rc = step_done(st);
        if (rc != 0)
            return rc;
        h->pend_head = e->pend_next;
        e->pend = 0;
        e->pend_bytes = e->pend_msgs = 0;
        e->pend_next = NULL;
    }
    return 0;
}

static void txn_rollback(struct sqlite_store *h)
{
    pend_clear(h);
    /* Some errors (SQLITE_FULL, SQLITE_IOERR) may already have rolled the
     * transaction back; then there is nothing to undo in the file. */
    if (!sqlite3_get_autocommit(h->db))
        (void)step_done(h->st[ST_ROLLBACK]);
    cache_mark_stale(h);
    h->d_rooms = h->d_msgs = h->d_est = h->d_dropped = 0;
}

static int txn_begin(struct sqlite_store *h)
{
    h->txn_gen++;
    h->d_rooms = h->d_msgs = h->d_est = h->d_dropped = 0;
    return step_done(h->st[ST_BEGIN]);
}

/* Commits, and only then counts what the transaction changed. */
static int txn_commit(struct sqlite_store *h)
{
    int rc = room_flush(h);
    if (rc != 0)
        return rc;
    rc = step_done(h->st[ST_COMMIT]);
    if (rc != 0)
        return rc;
    h->tot_rooms += h->d_rooms;
    h->tot_msgs += h->d_msgs;
    h->tot_est += h->d_est;
    h->tot_dropped += h->d_dropped;
    if (h->d_est > 0)
        h->since_check += h->d_est;
    h->d_rooms = h->d_msgs = h->d_est = h->d_dropped = 0;
    return 0;
}

/* ---- The disk budget (writer thread) ---- */

/* Runs a statement that returns one integer. */
static int step_int(sqlite3_stmt *st, int64_t *out)
{
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? 0 : db_error(rc);
}

/* The database's pages in all, and the free ones, both as seen by this
 * connection (the log included). */
static int page_counts(struct sqlite_store *h, int64_t *pages, int64_t *free_pages)
{
    int rc = step_int(h->st[ST_PAGE_COUNT], pages);
    if (rc == 0)
        rc = step_int(h->st[ST_FREELIST], free_pages);
    return rc;
}

/* The size of the database file (SQLITE_FCNTL_FILE_POINTER) or of its
 * log (SQLITE_FCNTL_JOURNAL_POINTER) through SQLite's own handle, 0 when
 * it is not open. */
static uint64_t file_size(sqlite3 *db, int op)
{
    sqlite3_file *f = NULL;
    sqlite3_int64 n = 0;
    if (sqlite3_file_control(db, "main", op, &f) != SQLITE_OK || f == NULL || f->pMethods == NULL)
        return 0;
    if (f->pMethods->xFileSize(f, &n) != SQLITE_OK || n < 0)
        return 0;
    return (uint64_t)n;
}

/* Copies everything the log holds into the database and empties it. */
static void checkpoint(struct sqlite_store *h)
{
    (void)sqlite3_exec(h->db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL);
}

/* Publishes the figures for hub_history_stats, measuring the files first
 * when measure is set (else their size is the last one measured). */
static void publish(struct sqlite_store *h, int locked, int measure)
{
    struct hub_history_stats st;
    if (measure)
        h->bytes_seen = file_size(h->db, SQLITE_FCNTL_FILE_POINTER) +
                        file_size(h->db, SQLITE_FCNTL_JOURNAL_POINTER);
    st.bytes = h->bytes_seen;
    st.rooms = h->tot_rooms > 0 ? (uint64_t)h->tot_rooms : 0;
    st.held = 0;
    st.messages = h->tot_msgs > 0 ? (uint64_t)h->tot_msgs : 0;
    st.dropped = (uint64_t)h->tot_dropped;
    if (locked)
        uv_mutex_lock(&h->mu);
    h->pub = st;
    if (locked)
        uv_mutex_unlock(&h->mu);
}

struct big_room {
    char *name;    /* owned */
    int64_t bytes; /* rooms.bytes */
};

/* Deletes the oldest rows of room, but never its newest, until about want
 * bytes (ROW_EST) are gone. */
static int trim_room(struct sqlite_store *h, struct hub_iov room, int64_t want)
{
    sqlite3_stmt *st = h->st[ST_OLDEST];
    int64_t gone = 0, est = 0, cut = -1;
    int rc = SQLITE_DONE;

    bind_iov(st, 1, room);
    while (est < want && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        cut = sqlite3_column_int64(st, 0);
        est += sqlite3_column_int64(st, 1);
        gone++;
    }
    if (est < want && rc != SQLITE_DONE) {
        sqlite3_reset(st);
        return db_error(rc);
    }
    sqlite3_reset(st);
    if (gone == 0)
        return 0;
    struct room *e;
    rc = room_get(h, room, &e);
    if (rc != 0)
        return rc;
    e->dirty_gen = h->txn_gen;
    st = h->st[ST_TRIM];
    bind_iov(st, 1, room);
    sqlite3_bind_int64(st, 2, cut);
    rc = step_done(st);
    if (rc == 0)
        rc = drop_extras_to(h, room, fid_base(e), cut);
    if (rc == 0)
        rc = room_sub(h, room, gone, est);
    if (rc == 0)
        h->d_dropped += gone;
    return rc;
}

/* Frees about need bytes (ROW_EST) from the largest rooms: the rooms over
 * a common size T are cut down to T, T chosen so that the cuts add up to
 * need (water-filling). At most QUOTA_ROOMS rooms are cut; *progress says
 * whether any room had something to give. */
static int trim_largest(struct sqlite_store *h, int64_t need, int *progress)
{
    struct big_room rooms[QUOTA_ROOMS + 1];
    sqlite3_stmt *st = h->st[ST_BIG_ROOMS];
    int n = 0, rc = SQLITE_DONE, ret = 0;

    *progress = 0;
    /* Copied first: the cuts write rooms, which this statement reads. */
    sqlite3_bind_int64(st, 1, QUOTA_ROOMS + 1);
    while (n < QUOTA_ROOMS + 1 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const unsigned char *p = sqlite3_column_text(st, 0);
        rooms[n].name = strdup(p != NULL ? (const char *)p : "");
        rooms[n].bytes = sqlite3_column_int64(st, 1);
        if (rooms[n].name == NULL) {
            rc = SQLITE_NOMEM;
            break;
        }
        n++;
    }
    sqlite3_reset(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        ret = db_error(rc);

    /* sizes are in descending order: with the k largest cut to the size of
     * the next one, they give sum - k * next; the first k for which that
     * covers need fixes T between the two. */
    int k = 0;
    int64_t sum = 0, level = 0;
    while (ret == 0 && k < n && k < QUOTA_ROOMS) {
        sum += rooms[k].bytes;
        k++;
        int64_t next = k < n ? rooms[k].bytes : 0;
        level = next;
        if (sum - k * next >= need) {
            level = (sum - need) / k;
            break;
        }
    }
    for (int i = 0; i < k && ret == 0; i++) {
        if (rooms[i].bytes <= level)
            continue;
        struct hub_iov room = {rooms[i].name, strlen(rooms[i].name)};
        ret = trim_room(h, room, rooms[i].bytes - level);
        *progress = 1;
    }
    for (int i = 0; i < n; i++)
        free(rooms[i].name);
    return ret;
}

/* Brings the files back under the budget after a batch (see the top of the
 * file), then publishes the figures. Unless forced, it looks at the files
 * only once check_every bytes were committed since it last did: a trickle
 * of small appends, a transaction each, does not pay for it every time. */
static void quota_pass(struct sqlite_store *h, int locked, int force)
{
    int64_t pages = 0, free_pages = 0;
    int64_t ps = h->page_size;

    if (!force && h->since_check < h->check_every) {
        publish(h, locked, 0);
        return;
    }
    h->since_check = 0;
    if (h->wal_max == 0 || page_counts(h, &pages, &free_pages) != 0)
        goto out;
    if ((uint64_t)(pages * ps) <= h->db_high)
        goto wal;

    int64_t live = (pages - free_pages) * ps;
    int reached = (uint64_t)live <= h->db_low, stuck = 0;
    for (int round = 0; round < QUOTA_ROUNDS && !reached && !stuck; round++) {
        /* From page bytes to ROW_EST bytes, at the file's current ratio. */
        int64_t need = (int64_t)(((double)live - (double)h->db_low) * (double)h->tot_est /
                                 (double)(live > 0 ? live : 1)) +
                       1;
        int progress = 0;
        int rc = txn_begin(h);
        if (rc == 0)
            rc = trim_largest(h, need, &progress);
        /* FTS5 records deletions as tombstones in new segments: merging
         * them away (bounded work) is what frees the index's pages. */
        if (rc == 0 && h->fts && progress)
            rc = sqlite3_exec(h->db, "INSERT INTO msg_fts(msg_fts, rank) VALUES('merge', -2000)",
                              NULL, NULL, NULL);
        if (rc == 0)
            rc = txn_commit(h);
        if (rc != 0) {
            txn_rollback(h);
            if (!h->quota_warned)
                hub_log_warn("history: cannot delete old messages to keep --history-max-bytes: %s",
                             sqlite3_errmsg(h->db));
            h->quota_warned = 1;
            goto out;
        }
        if (page_counts(h, &pages, &free_pages) != 0)
            goto out;
        live = (pages - free_pages) * ps;
        reached = (uint64_t)live <= h->db_low;
        stuck = !progress;
    }
    /* Stuck: every room is down to its newest message. */
    if (stuck && !reached && !h->quota_warned) {
        hub_log_warn("history: %lld bytes of history remain over --history-max-bytes %llu; "
                     "every room keeps its newest message",
                     (long long)live, (unsigned long long)(h->db_high + h->wal_max));
        h->quota_warned = 1;
    } else if (reached) {
        h->quota_warned = 0;
    }

    /* Free pages past the database's share go back to the file system;
     * the rest are kept for the next messages. */
    int64_t high_pages = (int64_t)(h->db_high / (uint64_t)ps);
    if (pages > high_pages && free_pages > 0) {
        char sql[64];
        int64_t n = pages - high_pages < free_pages ? pages - high_pages : free_pages;
        snprintf(sql, sizeof(sql), "PRAGMA incremental_vacuum(%lld)", (long long)n);
        (void)sqlite3_exec(h->db, sql, NULL, NULL, NULL);
    }
    /* The database file shrinks, and the log empties, at the checkpoint. */
    checkpoint(h);
    goto out;

wal:
    if (file_size(h->db, SQLITE_FCNTL_JOURNAL_POINTER) > h->wal_max)
        checkpoint(h);
out:
    publish(h, locked, 1);
}

/* Runs one request in the open transaction. A refusal (HUB_EPERM, ...) is
 * the request's r->err, not a failure of the transaction. */
static int run_one(struct sqlite_store *h, struct req *r)
{
    switch (r->type) {
    case REQ_APPEND:
        return do_append(h, r);
    case REQ_READ:
        return do_read(h, r);
    case REQ_AMEND:
        return do_amend(h, r);
    case REQ_SEARCH:
        return do_search(h, r);
    case REQ_RESTRICT:
        return do_restrict(h, r);
    case REQ_TOPIC:
        return do_topic(h, r);
    default:
        return 0;
    }
}

/* Runs the whole batch in one transaction. Returns 0 once it committed. */
static int run_group(struct sqlite_store *h, struct req *batch)
{
    int rc = txn_begin(h);
    if (rc != 0)
        return rc;
    for (struct req *r = batch; r != NULL; r = r->next) {
        rc = run_one(h, r);
        if (rc != 0)
            return rc;
    }
    return txn_commit(h);
}

/* 1 for requests that write (and so get a transaction of their own when a
 * batch is run again one by one). */
static int writes(const struct req *r)
{
    return r->type == REQ_APPEND || r->type == REQ_AMEND || r->type == REQ_RESTRICT ||
           r->type == REQ_TOPIC;
}

/* Runs the batch again with one transaction per append, so that one write
 * the disk refuses fails alone. Reads run on their own. */
static void run_single(struct sqlite_store *h, struct req *batch)
{
    for (struct req *r = batch; r != NULL; r = r->next) {
        int rc = 0;
        read_reset(r);
        if (writes(r)) {
            rc = txn_begin(h);
            if (rc == 0)
                rc = run_one(h, r);
            if (rc == 0)
                rc = txn_commit(h);
            if (rc != 0) {
                txn_rollback(h);
                read_reset(r);
                r->offset = 0;
                r->out_ts = 0;
                r->duplicate = 0;
            }
        } else {
            rc = run_one(h, r);
        }
        if (rc != 0)
            r->err = rc;
    }
}

static void run_batch(struct sqlite_store *h, struct req *batch)
{
    /* Expired messages go first, in a transaction of their own: on a full
     * disk the space they free is what lets the appends through, and a
     * failing append must not roll the sweep back. */
    if (h->cfg.ttl_ms > 0 && txn_begin(h) == 0) {
        if (maybe_sweep(h) != 0 || txn_commit(h) != 0)
            txn_rollback(h);
    }
    if (run_group(h, batch) == 0)
        return;
    txn_rollback(h);
    run_single(h, batch);
}

static void db_close(struct sqlite_store *h)
{
    for (int i = 0; i < ST_COUNT; i++) {
        sqlite3_finalize(h->st[i]);
        h->st[i] = NULL;
    }
    if (h->db != NULL)
        sqlite3_close(h->db);
    h->db = NULL;
}

/* Detaches the next batch from the queue: requests up to batch_max bytes,
 * at least one. Returns its last request. Called with mu held. */
static struct req *take_batch(struct sqlite_store *h)
{
    struct req *r = h->in_head;
    size_t bytes = 0;
    for (;;) {
        bytes += REQ_COST + r->room.len + r->from.len + r->text.len + r->cmid.len + r->author.len +
                 r->actor.len + r->mentions.len;
        if (r->next == NULL || bytes >= h->batch_max)
            break;
        r = r->next;
    }
    h->in_head = r->next;
    if (h->in_head == NULL)
        h->in_tail = NULL;
    r->next = NULL;
    return r;
}

static void writer_main(void *arg)
{
    struct sqlite_store *h = arg;

    for (;;) {
        uv_mutex_lock(&h->mu);
        while (h->in_head == NULL && !h->stop)
            uv_cond_wait(&h->cv, &h->mu);
        if (h->stop) {
            uv_mutex_unlock(&h->mu);
            return;
        }
        struct req *batch = h->in_head, *tail = take_batch(h);
        uv_mutex_unlock(&h->mu);

        run_batch(h, batch);
        /* The loop refuses requests after close, so close is last. */
        int closing = tail->type == REQ_CLOSE;
        if (closing) {
            /* The last batch gets its pass too; then one self-contained
             * file is left behind for backups and tools. */
            quota_pass(h, 1, 1);
            checkpoint(h);
            publish(h, 1, 1);
            db_close(h);
            cache_free(h);
        }

        uv_mutex_lock(&h->mu);
        if (h->done_tail != NULL)
            h->done_tail->next = batch;
        else
            h->done_head = batch;
        h->done_tail = tail;
        uv_mutex_unlock(&h->mu);
        uv_async_send(&h->async);
        if (closing)
            return;
        /* After the completions are on their way: the acks do not wait for
         * the deletions, and the next batch sees them. */
        quota_pass(h, 1, 0);
    }
}

/* ---- The loop side ---- */

static void req_free(struct req *r)
{
    read_reset(r);
    free(r);
}

static void free_list(struct req *r)
{
    while (r != NULL) {
        struct req *next = r->next;
        req_free(r);
        r = next;
    }
}

static void store_release(struct sqlite_store *h)
{
    free(h->close_req);
    free(h->sweep_cursor);
    free(h->path);
    free(h);
}

static void on_async_closed(uv_handle_t *handle)
{
    struct sqlite_store *h = HUB_CONTAINER_OF(handle, struct sqlite_store, async);
    hub_history_closed_cb cb = h->close_cb;
    void *data = h->close_data;

    h->state = STATE_CLOSED;
    if (h->free_on_close) {
        store_release(h);
        return;
    }
    /* The callback may free the store: nothing touches h after it. */
    if (cb != NULL)
        cb(data);
}

/* Joins the writer (which has exited or been told to) and tears down what
 * is left; the memory goes in the handle's close callback. */
static void store_shutdown(struct sqlite_store *h)
{
    uv_thread_join(&h->thread);
    h->final = h->pub;
    uv_cond_destroy(&h->cv);
    uv_mutex_destroy(&h->mu);
    db_close(h);
    cache_free(h);
    free_list(h->ready);
    free_list(h->in_head);
    free_list(h->done_head);
    h->ready = NULL;
    h->in_head = h->in_tail = h->done_head = h->done_tail = NULL;
    h->state = STATE_ASYNC_CLOSING;
    uv_close((uv_handle_t *)&h->async, on_async_closed);
}

static void fire(struct req *r)
{
    switch (r->type) {
    case REQ_APPEND:
        r->cb.append(r->data, r->err, r->offset, r->out_ts, r->duplicate);
        break;
    case REQ_READ:
        if (r->err != 0)
            r->cb.read(r->data, r->err, NULL, NULL, 0, 0);
        else
            r->cb.read(r->data, 0, &r->rp, r->msgs, r->n, r->complete);
        break;
    case REQ_BARRIER:
        r->cb.barrier(r->data);
        break;
    case REQ_AMEND:
        r->cb.amend(r->data, r->err, r->err == 0 ? &r->am : NULL);
        break;
    case REQ_SEARCH:
        if (r->err != 0)
            r->cb.search(r->data, r->err, NULL, 0, 1);
        else
            r->cb.search(r->data, 0, r->msgs, r->n, r->complete);
        break;
    case REQ_RESTRICT:
    case REQ_TOPIC:
        r->cb.done(r->data, r->err);
        break;
    }
}

static void on_async(uv_async_t *async)
{
    struct sqlite_store *h = HUB_CONTAINER_OF(async, struct sqlite_store, async);

    for (unsigned fired = 0;; fired++) {
        /* New completions are taken only once the earlier ones have fired,
         * which keeps them in request order across wake-ups, and whenever
         * the ready list runs dry, also in the middle of a wake-up: the
         * writer's uv_async_send for them may have been folded into the one
         * this callback sent itself, so no later wake-up is owed to them. */
        if (h->ready == NULL) {
            uv_mutex_lock(&h->mu);
            h->ready = h->done_head;
            h->done_head = h->done_tail = NULL;
            uv_mutex_unlock(&h->mu);
            if (h->ready == NULL)
                return;
        }
        if (fired == FIRE_PER_WAKEUP) {
            /* Let the loop serve sockets before the rest of a big batch. */
            uv_async_send(&h->async);
            return;
        }
        struct req *r = h->ready;
        h->ready = r->next;
        if (r->type == REQ_CLOSE) {
            /* Everything before it has fired; the writer has exited. */
            assert(h->ready == NULL);
            req_free(r);
            store_shutdown(h);
            return;
        }
        fire(r);
        req_free(r);
        if (h->state == STATE_ASYNC_CLOSING)
            return; /* the callback freed the store against the rules */
        /* Unreferenced while idle, so an idle store never keeps the loop
         * alive, and referenced while a completion is owed. */
        if (--h->inflight == 0)
            uv_unref((uv_handle_t *)&h->async);
    }
}

static void enqueue(struct sqlite_store *h, struct req *r)
{
    if (h->inflight++ == 0)
        uv_ref((uv_handle_t *)&h->async);
    r->next = NULL;
    uv_mutex_lock(&h->mu);
    if (h->in_tail != NULL)
        h->in_tail->next = r;
    else
        h->in_head = r;
    h->in_tail = r;
    uv_cond_signal(&h->cv);
    uv_mutex_unlock(&h->mu);
}

/* Allocates a request with copies of the given views: room, from, text,
 * cmid, author, actor, mentions (see struct req for their uses). */
static struct req *req_new7(int type, const struct hub_iov in[7])
{
    size_t total = 0;
    for (int i = 0; i < 7; i++) {
        if (in[i].len > SIZE_MAX / 2 - total || in[i].len > INT32_MAX)
            return NULL;
        total += in[i].len;
    }
    struct req *r = calloc(1, sizeof(*r) + total + 1);
    if (r == NULL)
        return NULL;
    r->type = type;
    struct hub_iov *out[7] = {&r->room,   &r->from,  &r->text,    &r->cmid,
                              &r->author, &r->actor, &r->mentions};
    size_t at = 0;
    for (int i = 0; i < 7; i++) {
        if (in[i].len > 0)
            memcpy(r->bytes + at, in[i].base, in[i].len);
        out[i]->base = r->bytes + at;
        out[i]->len = in[i].len;
        at += in[i].len;
    }
    return r;
}

static const struct hub_iov no_iov = {NULL, 0};

static struct req *req_new(int type, struct hub_iov room, struct hub_iov from, struct hub_iov text,
                           struct hub_iov cmid)
{
    struct hub_iov in[7] = {room, from, text, cmid, no_iov, no_iov, no_iov};
    return req_new7(type, in);
}

static int sqlite_append(struct hub_history *base, struct hub_iov room, struct hub_iov from,
                         struct hub_iov text, struct hub_iov cmid, int64_t ts,
                         hub_history_append_cb cb, void *data)
{
    struct sqlite_store *h = (struct sqlite_store *)base;
    if (h->state != STATE_RUNNING)
        return HUB_ECLOSED;
    struct req *r = req_new(REQ_APPEND, room, from, text, cmid);
    if (r == NULL)
        return HUB_ENOMEM;
    r->ts = ts;
    r->cb.append = cb;
    r->data = data;
    enqueue(h, r);
    return 0;
}

static int sqlite_read(struct hub_history *base, struct hub_iov room, int dir, uint64_t pos,
                       unsigned limit, hub_history_read_cb cb, void *data)
{
    struct sqlite_store *h = (struct sqlite_store *)base;
    if (h->state != STATE_RUNNING)
        return HUB_ECLOSED;
    struct req *r = req_new(REQ_READ, room, no_iov, no_iov, no_iov);
    if (r == NULL)
        return HUB_ENOMEM;
    r->dir = dir;
    r->pos = pos;
    r->limit = limit;
    r->cb.read = cb;
    r->data = data;
    enqueue(h, r);
    return 0;
}

static int sqlite_barrier(struct hub_history *base, hub_history_barrier_cb cb, void *data)
{
    struct sqlite_store *h = (struct sqlite_store *)base;
    if (h->state != STATE_RUNNING)
        return HUB_ECLOSED;
    struct req *r = req_new(REQ_BARRIER, no_iov, no_iov, no_iov, no_iov);
    if (r == NULL)
        return HUB_ENOMEM;
    r->cb.barrier = cb;
    r->data = data;
    enqueue(h, r);
    return 0;
}

static void sqlite_close(struct hub_history *base, hub_history_closed_cb cb, void *data)
{
    struct sqlite_store *h = (struct sqlite_store *)base;
    assert(h->state == STATE_RUNNING);
    h->close_cb = cb;
    h->close_data = data;
    h->state = STATE_CLOSING;
    /* The interface gives close no way to fail, so its request was
     * allocated at open: every request queued before it completes, in
     * order, and then cb fires. */
    struct req *r = h->close_req;
    h->close_req = NULL;
    enqueue(h, r);
}

/* Safe in every state. Without a completed close the writer is stopped
 * synchronously (requests still queued never complete) and the memory is
 * released from the async handle's close callback, so the caller must run
 * the loop once more. */
static void sqlite_free(struct hub_history *base)
{
    struct sqlite_store *h = (struct sqlite_store *)base;

    switch (h->state) {
    case STATE_CLOSED:
        store_release(h);
        return;
    case STATE_ASYNC_CLOSING:
        h->free_on_close = 1;
        return;
    default:
        break;
    }
    uv_mutex_lock(&h->mu);
    h->stop = 1;
    uv_cond_signal(&h->cv);
    uv_mutex_unlock(&h->mu);
    h->free_on_close = 1;
    store_shutdown(h);
}

static void sqlite_stats(const struct hub_history *base, struct hub_history_stats *out)
{
    struct sqlite_store *h = (struct sqlite_store *)base;
    /* The mutex lives only while the writer may run. */
    if (h->state == STATE_RUNNING || h->state == STATE_CLOSING) {
        uv_mutex_lock(&h->mu);
        *out = h->pub;
        uv_mutex_unlock(&h->mu);
    } else {
        *out = h->final;
    }
}

static int sqlite_append_ex(struct hub_history *base, const struct hub_history_new *m,
                            hub_history_append_cb cb, void *data)
{
    struct sqlite_store *h = (struct sqlite_store *)base;
    if (h->state != STATE_RUNNING)
        return HUB_ECLOSED;
    struct hub_iov in[7] = {m->room, m->from, m->text, m->cmid, m->author, m->actor, m->mentions};
    struct req *r = req_new7(REQ_APPEND, in);
    if (r == NULL)
        return HUB_ENOMEM;
    r->ts = m->ts;
    r->reply_to = m->reply_to;
    r->cb.append = cb;
    r->data = data;
    enqueue(h, r);
    return 0;
}

static int sqlite_query(struct hub_history *base, struct hub_iov room,
                        const struct hub_history_query *q, hub_history_read_cb cb, void *data)
{
    struct sqlite_store *h = (struct sqlite_store *)base;
    if (h->state != STATE_RUNNING)
        return HUB_ECLOSED;
    struct hub_iov in[7] = {room, no_iov, no_iov, no_iov, q->viewer, q->actor, no_iov};
    struct req *r = req_new7(REQ_READ, in);
    if (r == NULL)
        return HUB_ENOMEM;
    r->dir = q->dir;
    r->pos = q->pos;
    r->limit = q->limit;
    r->meta = 1;
    r->now = q->now_ms;
    r->cb.read = cb;
    r->data = data;
    enqueue(h, r);
    return 0;
}

static int sqlite_amend(struct hub_history *base, const struct hub_history_amend *a,
                        hub_history_amend_cb cb, void *data)
{
    struct sqlite_store *h = (struct sqlite_store *)base;
    if (h->state != STATE_RUNNING)
        return HUB_ECLOSED;
    int react = a->kind == HUB_AMEND_REACT || a->kind == HUB_AMEND_UNREACT;
    struct hub_iov in[7] = {a->room,
                            no_iov,
                            a->kind == HUB_AMEND_EDIT ? a->text : no_iov,
                            no_iov,
                            a->who,
                            no_iov,
                            react ? a->emoji : no_iov};
    struct req *r = req_new7(REQ_AMEND, in);
    if (r == NULL)
        return HUB_ENOMEM;
    r->offset = a->offset;
    r->kind = a->kind;
    r->moderator = a->moderator;
    r->ts = a->ts;
    r->window_ms = a->window_ms;
    r->max_emoji = a->max_emoji > 0 ? a->max_emoji : HUB_HISTORY_REACTIONS_MAX;
    r->cb.amend = cb;
    r->data = data;
    enqueue(h, r);
    return 0;
}

static int sqlite_search(struct hub_history *base, struct hub_iov room, struct hub_iov q,
                         uint64_t before, unsigned limit, hub_history_search_cb cb, void *data)
{
    struct sqlite_store *h = (struct sqlite_store *)base;
    if (h->state != STATE_RUNNING)
        return HUB_ECLOSED;
    struct req *r = req_new(REQ_SEARCH, room, no_iov, q, no_iov);
    if (r == NULL)
        return HUB_ENOMEM;
    r->before = before;
    r->limit = limit;
    r->cb.search = cb;
    r->data = data;
    enqueue(h, r);
    return 0;
}

static int sqlite_restrict(struct hub_history *base, const struct hub_history_restrict *x,
                           hub_history_done_cb cb, void *data)
{
    struct sqlite_store *h = (struct sqlite_store *)base;
    if (h->state != STATE_RUNNING)
        return HUB_ECLOSED;
    struct hub_iov in[7] = {x->room, x->by, x->reason, no_iov, no_iov, x->actor, no_iov};
    struct req *r = req_new7(REQ_RESTRICT, in);
    if (r == NULL)
        return HUB_ENOMEM;
    r->kind = x->kind;
    r->until = x->until_ms;
    r->ts = x->ts;
    r->cb.done = cb;
    r->data = data;
    enqueue(h, r);
    return 0;
}

static int sqlite_set_topic(struct hub_history *base, struct hub_iov room, struct hub_iov topic,
                            hub_history_done_cb cb, void *data)
{
    struct sqlite_store *h = (struct sqlite_store *)base;
    if (h->state != STATE_RUNNING)
        return HUB_ECLOSED;
    struct req *r = req_new(REQ_TOPIC, room, no_iov, topic, no_iov);
    if (r == NULL)
        return HUB_ENOMEM;
    r->ts = history_now_ms(&h->cfg);
    r->cb.done = cb;
    r->data = data;
    enqueue(h, r);
    return 0;
}

static const struct history_ops sqlite_ops = {
    .append = sqlite_append,
    .read = sqlite_read,
    .barrier = sqlite_barrier,
    .close = sqlite_close,
    .free = sqlite_free,
    .hold = NULL,
    .stats = sqlite_stats,
    .append_ex = sqlite_append_ex,
    .query = sqlite_query,
    .amend = sqlite_amend,
    .search = sqlite_search,
    .set_restriction = sqlite_restrict,
    .set_topic = sqlite_set_topic,
};

/* ---- Opening ---- */

static int dir_error(const char *dir, int uverr, char *err, size_t errsz)
{
    if (uverr == UV_EACCES || uverr == UV_EPERM || uverr == UV_EROFS)
        snprintf(err, errsz, "cannot open history in %s: directory not writable", dir);
    else
        snprintf(err, errsz, "cannot open history in %s: %s", dir, uv_strerror(uverr));
    return HUB_EIO;
}

/* Creates path and any missing parents. path is modified and restored. */
static int mkdir_p(uv_loop_t *loop, char *path)
{
    uv_fs_t req;
    int rc = uv_fs_mkdir(loop, &req, path, 0755, NULL);
    uv_fs_req_cleanup(&req);
    if (rc != UV_ENOENT)
        return rc == UV_EEXIST ? 0 : rc;
    char *slash = strrchr(path, '/');
#ifdef _WIN32
    char *bslash = strrchr(path, '\\');
    if (bslash != NULL && (slash == NULL || bslash > slash))
        slash = bslash;
#endif
    if (slash == NULL || slash == path)
        return rc;
    char sep = *slash;
    *slash = '\0';
    rc = mkdir_p(loop, path);
    *slash = sep;
    if (rc != 0)
        return rc;
    rc = uv_fs_mkdir(loop, &req, path, 0755, NULL);
    uv_fs_req_cleanup(&req);
    /* The parent exists now, so "no such file" means it is not a directory
     * (Windows reports ERROR_PATH_NOT_FOUND where POSIX says ENOTDIR). */
    if (rc == UV_ENOENT)
        rc = UV_ENOTDIR;
    return rc == UV_EEXIST ? 0 : rc;
}

/* Makes sure dir exists, is a directory and can take new files (SQLite
 * creates the -wal file beside the database). */
static int prepare_dir(uv_loop_t *loop, const char *dir, char *err, size_t errsz)
{
    uv_fs_t req;
    int rc = uv_fs_stat(loop, &req, dir, NULL);
    uint64_t mode = rc == 0 ? req.statbuf.st_mode : 0;
    uv_fs_req_cleanup(&req);
    if (rc == UV_ENOENT) {
        char *copy = strdup(dir);
        if (copy == NULL) {
            snprintf(err, errsz, "cannot open history in %s: out of memory", dir);
            return HUB_ENOMEM;
        }
        rc = mkdir_p(loop, copy);
        free(copy);
        if (rc != 0)
            return dir_error(dir, rc, err, errsz);
    } else if (rc != 0) {
        return dir_error(dir, rc, err, errsz);
    } else if ((mode & S_IFMT) != S_IFDIR) {
        return dir_error(dir, UV_ENOTDIR, err, errsz);
    }
    rc = uv_fs_access(loop, &req, dir, W_OK, NULL);
    uv_fs_req_cleanup(&req);
    if (rc != 0)
        return dir_error(dir, rc, err, errsz);
    return 0;
}

/* Messages from SQLite (quick_check's above all) may span lines; a start-up
 * error is one line in the log. */
static void one_line(char *s)
{
    for (; *s != '\0'; s++)
        if (*s == '\n' || *s == '\r' || *s == '\t')
            *s = ' ';
}

/* Words a SQLite failure during open as one line naming the cause. */
static void open_error(struct sqlite_store *h, int rc, char *err, size_t errsz)
{
    const char *msg = h->db != NULL ? sqlite3_errmsg(h->db) : sqlite3_errstr(rc);
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        snprintf(err, errsz, "history database %s is locked by another running chathub", h->path);
        break;
    case SQLITE_NOTADB:
    case SQLITE_CORRUPT:
        snprintf(err, errsz, "history database %s is corrupted: %s", h->path, msg);
        break;
    case SQLITE_READONLY:
    case SQLITE_PERM:
        snprintf(err, errsz, "history database %s is not writable: %s", h->path, msg);
        break;
    default:
        snprintf(err, errsz, "cannot open history database %s: %s", h->path, msg);
        break;
    }
}

/* Runs a statement and copies the first column of its first row. */
static int query_text(sqlite3 *db, const char *sql, char *out, size_t outsz)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        return rc;
    out[0] = '\0';
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const unsigned char *p = sqlite3_column_text(st, 0);
        snprintf(out, outsz, "%s", p != NULL ? (const char *)p : "");
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    return rc;
}

/* Runs a statement and reads the first column of its first row as an
 * integer (0 without rows). */
static int query_int(sqlite3 *db, const char *sql, int64_t *out)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        return rc;
    *out = 0;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Sets up the search index where SQLite has FTS5 (h->fts), filling it
 * when an upgrade (or a run of a build without FTS5) left it behind; without
 * FTS5, marks it behind for the next build that has it. */
static int fts_open(struct sqlite_store *h)
{
    int64_t stale = 0;
    int want =
        h->cfg.search_index > 0 || (h->cfg.search_index < 0 && h->cfg.max_per_room > SCAN_MAX);
    if (!want) {
        /* No index wanted: an index an earlier run left is dropped (its
         * pages are reused), and marked behind for a run that wants one. */
        h->fts = 0;
        int rc = sqlite3_exec(h->db,
                              "DROP TABLE IF EXISTS msg_fts;"
                              "INSERT OR REPLACE INTO meta(k, v) VALUES('fts_stale', 1)",
                              NULL, NULL, NULL);
        return rc;
    }
    h->fts = sqlite3_exec(h->db, fts_sql, NULL, NULL, NULL) == SQLITE_OK;
    if (!h->fts) {
        hub_log_warn("history: this SQLite has no FTS5: search scans the newest %d messages of "
                     "a room",
                     SCAN_MAX);
        return sqlite3_exec(h->db, "INSERT OR REPLACE INTO meta(k, v) VALUES('fts_stale', 1)", NULL,
                            NULL, NULL);
    }
    int rc = query_int(h->db, "SELECT count(*) FROM meta WHERE k = 'fts_stale'", &stale);
    if (rc != SQLITE_OK || stale == 0)
        return rc;
    hub_log_info("history: building the search index of %s", h->path);
    rc = sqlite3_exec(h->db, "BEGIN", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(h->db, fts_fill_sql, NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(h->db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK && !sqlite3_get_autocommit(h->db))
        (void)sqlite3_exec(h->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

/* Creates the schema in a new file, or brings an older one up to date:
 * schema 0 gets the room sizes (one transaction), and a file without
 * incremental vacuum is rebuilt with it (VACUUM, once: it needs free space
 * about the size of the file, and if that fails the hub runs on with a
 * file that reuses its free pages but cannot shrink, and tries again at
 * the next start). Returns a SQLite code, or SQLITE_ABORT with err set. */
static int schema_open(struct sqlite_store *h, char *err, size_t errsz)
{
    int64_t tables, version, av;
    int rc = query_int(h->db, "SELECT count(*) FROM sqlite_master WHERE type = 'table'", &tables);
    if (rc == SQLITE_OK)
        rc = query_int(h->db, "PRAGMA user_version", &version);
    if (rc != SQLITE_OK)
        return rc;
    if (version > SCHEMA_VERSION) {
        snprintf(err, errsz, "history database %s was written by a newer chathub (schema %lld)",
                 h->path, (long long)version);
        return SQLITE_ABORT;
    }
    if (tables > 0 && version < 2) {
        hub_log_info("history: upgrading %s to schema 2 (room sizes, for the disk budget)",
                     h->path);
        rc = sqlite3_exec(h->db, upgrade_sql, NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
            if (!sqlite3_get_autocommit(h->db))
                (void)sqlite3_exec(h->db, "ROLLBACK", NULL, NULL, NULL);
            return rc;
        }
        version = 2;
    }
    if (tables > 0 && version < 3) {
        hub_log_info("history: upgrading %s to schema 3 (replies, edits, reactions, search, "
                     "bans, topics)",
                     h->path);
        rc = sqlite3_exec(h->db, upgrade3_sql, NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
            if (!sqlite3_get_autocommit(h->db))
                (void)sqlite3_exec(h->db, "ROLLBACK", NULL, NULL, NULL);
            return rc;
        }
    } else if (tables == 0) {
        rc = sqlite3_exec(h->db, "PRAGMA user_version = 3", NULL, NULL, NULL);
        if (rc != SQLITE_OK)
            return rc;
    }
    rc = sqlite3_exec(h->db, schema_sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return rc;
    rc = fts_open(h);
    if (rc != SQLITE_OK)
        return rc;
    rc = query_int(h->db, "SELECT coalesce(max(rid), 0) + 1 FROM rooms", &h->next_rid);
    if (rc == SQLITE_OK)
        rc = query_int(h->db, "SELECT coalesce(max(seq), 0) + 1 FROM reactions", &h->next_seq);
    if (rc != SQLITE_OK)
        return rc;

    rc = query_int(h->db, "PRAGMA auto_vacuum", &av);
    if (rc != SQLITE_OK)
        return rc;
    if (av != 2) {
        uint64_t size = file_size(h->db, SQLITE_FCNTL_FILE_POINTER);
        hub_log_info("history: converting %s (%llu bytes) to incremental vacuum, once", h->path,
                     (unsigned long long)size);
        rc = sqlite3_exec(h->db, "PRAGMA auto_vacuum=INCREMENTAL; VACUUM", NULL, NULL, NULL);
        if (rc == SQLITE_OK)
            rc = query_int(h->db, "PRAGMA auto_vacuum", &av);
        if (rc == SQLITE_NOMEM)
            return rc;
        if (rc != SQLITE_OK || av != 2)
            hub_log_warn("history: could not convert %s to incremental vacuum (%s): its free "
                         "pages are reused but the file cannot shrink; next start tries again",
                         h->path, rc != SQLITE_OK ? sqlite3_errmsg(h->db) : "no effect");
        else {
            checkpoint(h);
            hub_log_info("history: %s converted, now %llu bytes", h->path,
                         (unsigned long long)file_size(h->db, SQLITE_FCNTL_FILE_POINTER));
        }
    }
    return SQLITE_OK;
}

/* Reads the totals and the page size, and splits the budget: the log gets
 * 1/8 of it (between 64 KiB and 4 MiB, at most half) and is checkpointed at
 * that size by SQLite itself as well; the database the rest, and a pass
 * that deletes goes 1/8 below that, so that deletions come in chunks. */
static int budget_open(struct sqlite_store *h)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(h->db,
                                "SELECT count(*), coalesce(sum(bytes), 0),"
                                " coalesce(sum(msgs), 0) FROM rooms",
                                -1, &st, NULL);
    if (rc != SQLITE_OK)
        return rc;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        h->tot_rooms = sqlite3_column_int64(st, 0);
        h->tot_est = sqlite3_column_int64(st, 1);
        h->tot_msgs = sqlite3_column_int64(st, 2);
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_OK)
        return rc;
    rc = query_int(h->db, "PRAGMA page_size", &h->page_size);
    if (rc != SQLITE_OK)
        return rc;
    if (h->page_size <= 0)
        h->page_size = 4096;

    h->batch_max = BATCH_MAX_BYTES;
    h->check_every = BATCH_MAX_BYTES;
    uint64_t b = h->cfg.max_bytes;
    if (b == 0)
        return SQLITE_OK;
    uint64_t w = b / 8;
    if (w < (64u << 10))
        w = 64u << 10;
    if (w > (4u << 20))
        w = 4u << 20;
    if (w > b / 2)
        w = b / 2;
    h->wal_max = w > 0 ? w : 1;
    h->db_high = b - w;
    h->db_low = h->db_high - h->db_high / 8;
    /* A batch's pages land in the log and, at SQLite's own checkpoint, in
     * the database, before the pass after it can delete: keep it small
     * next to the log's share. */
    if (h->batch_max > w / 4)
        h->batch_max = w / 4 > (16u << 10) ? (size_t)(w / 4) : (16u << 10);
    /* Measured often enough that the files pass db_high by little more
     * than a batch before a pass sees it. */
    int64_t every = (int64_t)((h->db_high - h->db_low) / 8);
    h->check_every = every < (16 << 10) ? (16 << 10) : every > (1 << 20) ? (1 << 20) : every;

    char sql[96];
    snprintf(sql, sizeof(sql), "PRAGMA journal_size_limit=%llu", (unsigned long long)h->wal_max);
    rc = sqlite3_exec(h->db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return rc;
    int64_t pages = (int64_t)(h->wal_max / (uint64_t)h->page_size);
    snprintf(sql, sizeof(sql), "PRAGMA wal_autocheckpoint=%lld",
             (long long)(pages > 1 ? pages : 1));
    return sqlite3_exec(h->db, sql, NULL, NULL, NULL);
}

/* Opens the database, takes its lock for good, checks it and prepares the
 * statements. On failure h->db is closed again. */
static int db_open(struct sqlite_store *h, char *err, size_t errsz)
{
    char buf[256], sql[64];
    int rc;

    if (!sqlite3_threadsafe()) {
        snprintf(err, errsz, "cannot open history database %s: SQLite built without threads",
                 h->path);
        return HUB_EIO;
    }
    /* The connection is used by one thread at a time (this one, then the
     * writer), so SQLite's own mutexes are not needed. */
    rc = sqlite3_open_v2(h->path, &h->db,
                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK)
        goto fail_db;
    if (sqlite3_db_readonly(h->db, "main") == 1) {
        rc = SQLITE_READONLY;
        goto fail_db;
    }
    /* Another hub holding the lock is an error at start, not a wait. */
    sqlite3_busy_timeout(h->db, 0);
    /* Exclusive before WAL: the WAL index then lives in this process's
     * heap, and no second process can open the file while we run. */
    rc = query_text(h->db, "PRAGMA locking_mode=EXCLUSIVE", buf, sizeof(buf));
    if (rc != SQLITE_OK)
        goto fail_db;
    /* Takes effect only on a new file, and only before the switch to WAL
     * writes its header; an older file is converted by schema_open. */
    rc = sqlite3_exec(h->db, "PRAGMA auto_vacuum=INCREMENTAL", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        goto fail_db;
    rc = query_text(h->db, "PRAGMA journal_mode=WAL", buf, sizeof(buf));
    if (rc != SQLITE_OK)
        goto fail_db;
    if (strcmp(buf, "wal") != 0) {
        snprintf(err, errsz, "cannot open history database %s: journal mode is %s, not wal",
                 h->path, buf);
        rc = SQLITE_ERROR;
        goto fail_reported;
    }
    /* NORMAL in WAL mode survives a crash of the process, not of the
     * machine: a power cut may lose the last commits, never corrupt. */
    rc = sqlite3_exec(h->db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        goto fail_db;
    /* A write transaction takes the exclusive lock, which locking_mode
     * keeps until the connection closes. */
    rc = sqlite3_exec(h->db, "BEGIN IMMEDIATE; COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        goto fail_db;
    rc = query_text(h->db, "PRAGMA quick_check", buf, sizeof(buf));
    if (rc != SQLITE_OK)
        goto fail_db;
    if (strcmp(buf, "ok") != 0) {
        snprintf(err, errsz, "history database %s is corrupted: %s", h->path, buf);
        goto fail_reported;
    }
    rc = schema_open(h, err, errsz);
    if (rc == SQLITE_ABORT)
        goto fail_reported;
    if (rc != SQLITE_OK)
        goto fail_db;
    rc = budget_open(h);
    if (rc != SQLITE_OK)
        goto fail_db;

    /* Test only: CHATHUB_TEST_MAX_PAGES caps the file at that many pages so
     * that tests can make the disk "full" (SQLITE_FULL) on purpose. */
    const char *pages = getenv("CHATHUB_TEST_MAX_PAGES");
    if (pages != NULL && *pages != '\0') {
        char *end;
        long n = strtol(pages, &end, 10);
        if (*end == '\0' && n > 0) {
            snprintf(sql, sizeof(sql), "PRAGMA max_page_count=%ld", n);
            rc = query_text(h->db, sql, buf, sizeof(buf));
            if (rc != SQLITE_OK)
                goto fail_db;
        }
    }

    for (int i = 0; i < (h->fts ? ST_COUNT : ST_FTS_FIRST); i++) {
        rc = sqlite3_prepare_v3(h->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &h->st[i], NULL);
        if (rc != SQLITE_OK)
            goto fail_db;
    }
    /* A budget lowered since the last run applies at once. */
    quota_pass(h, 0, 1);
    return 0;

fail_db:
    open_error(h, rc, err, errsz);
fail_reported:
    db_close(h);
    return rc == SQLITE_NOMEM ? HUB_ENOMEM : HUB_EIO;
}

int hub_history_open_sqlite(struct hub_history **out, uv_loop_t *loop, const char *dir,
                            const struct hub_history_config *cfg, char *err, size_t errsz)
{
    struct sqlite_store *h;
    int rc;
    char scratch[1];

    assert(out != NULL && loop != NULL && dir != NULL && cfg != NULL);
    if (err == NULL || errsz == 0) {
        err = scratch;
        errsz = sizeof(scratch);
    }
    err[0] = '\0';

    rc = prepare_dir(loop, dir, err, errsz);
    if (rc != 0)
        return rc;

    rc = HUB_ENOMEM;
    h = calloc(1, sizeof(*h));
    if (h == NULL)
        goto fail_memory;
    h->base.ops = &sqlite_ops;
    h->cfg = *cfg;
    if (h->cfg.max_per_room == 0)
        h->cfg.max_per_room = 1;
    if (h->cfg.max_rooms == 0)
        h->cfg.max_rooms = 1;
    size_t dlen = strlen(dir);
    const char *sep = dlen > 0 && dir[dlen - 1] == '/' ? "" : "/";
    size_t plen = dlen + strlen(sep) + sizeof(DB_NAME);
    h->path = malloc(plen);
    if (h->path == NULL)
        goto fail_free;
    snprintf(h->path, plen, "%s%s%s", dir, sep, DB_NAME);
    hub_lru_init(&h->lru);
    if (hub_hmap_init(&h->rooms, 64) != 0)
        goto fail_free;
    h->close_req = req_new(REQ_CLOSE, no_iov, no_iov, no_iov, no_iov);
    if (h->close_req == NULL)
        goto fail_free;

    rc = db_open(h, err, errsz);
    if (rc != 0)
        goto fail_free;

    rc = HUB_EIO;
    if (uv_mutex_init(&h->mu) != 0) {
        snprintf(err, errsz, "cannot start history writer: mutex");
        goto fail_db;
    }
    if (uv_cond_init(&h->cv) != 0) {
        snprintf(err, errsz, "cannot start history writer: condition variable");
        goto fail_mutex;
    }
    /* The thread comes before the async handle: a handle, once
     * initialised, can only go away through the loop, but a thread that has
     * been given no work can be stopped right here. */
    if (uv_thread_create(&h->thread, writer_main, h) != 0) {
        snprintf(err, errsz, "cannot start history writer: thread");
        goto fail_cond;
    }
    if (uv_async_init(loop, &h->async, on_async) != 0) {
        snprintf(err, errsz, "cannot start history writer: async handle");
        goto fail_thread;
    }
    uv_unref((uv_handle_t *)&h->async);
    h->state = STATE_RUNNING;
    *out = &h->base;
    return 0;

fail_thread:
    uv_mutex_lock(&h->mu);
    h->stop = 1;
    uv_cond_signal(&h->cv);
    uv_mutex_unlock(&h->mu);
    uv_thread_join(&h->thread);
fail_cond:
    uv_cond_destroy(&h->cv);
fail_mutex:
    uv_mutex_destroy(&h->mu);
fail_db:
    db_close(h);
fail_free:
    free(h->close_req);
    hub_hmap_destroy(&h->rooms);
    free(h->path);
    free(h);
fail_memory:
    if (rc == HUB_ENOMEM && err[0] == '\0')
        snprintf(err, errsz, "cannot open history in %s: out of memory", dir);
    one_line(err);
    return rc;
}
