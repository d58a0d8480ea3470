/*
 * test_history_quota.c: the SQLite history store's disk budget (max_bytes).
 *
 * Fills real stores in fresh directories far past small budgets and checks
 * what the budget promises: the files (database and log) stay under it
 * after every batch, the newest message of every room stays readable and
 * intact, the rooms that were cut report it through pos.first, the largest
 * rooms are cut first (small rooms keep everything), and the sizes the
 * store keeps per room (rooms.bytes, rooms.msgs) match the rows, which is
 * checked by reading the closed file with SQLite directly. A database in
 * the format of earlier versions (no room sizes, no incremental vacuum) is
 * converted at open and shrinks once a budget applies.
 *
 * The fill of issue 14 ("40 MiB of history into 200 rooms with
 * --history-max-bytes 8388608 leaves the data dir under about 12 MiB") is
 * reproduced directly against the store, and the figures are printed.
 */
#include "hub/history.h"

#include "check.h"
#include "tmpfs.h"

#include <sqlite3.h>
#include <uv.h>

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static uv_loop_t loop;
static char root[512];
static int dir_seq;

/* ROW_EST of src/history_sqlite.c: what rooms.bytes must add up to. */
#define ROW_EST_SQL                                                                                \
    "(32 + 2 * length(CAST(room AS BLOB)) + 2 * length(CAST(sender AS BLOB))"                      \
    " + length(CAST(text AS BLOB)) + 2 * length(CAST(cmid AS BLOB)))"

/* ---- Files ---- */

static void fresh_dir(char *out, size_t outsz, const char *what)
{
    snprintf(out, outsz, "%s/%s-%d", root, what, ++dir_seq);
}

static void db_path(char *out, size_t outsz, const char *dir)
{
    snprintf(out, outsz, "%s/chathub.db", dir);
}

static uint64_t file_bytes(const char *path)
{
    uv_fs_t req;
    uint64_t n = 0;
    if (uv_fs_stat(&loop, &req, path, NULL) == 0)
        n = req.statbuf.st_size;
    uv_fs_req_cleanup(&req);
    return n;
}

/* What `du -b dir` prints: the apparent sizes of the directory and of
 * everything in it (the store makes no subdirectories). */
static uint64_t du_b(const char *dir)
{
    uv_fs_t req;
    uv_dirent_t ent;
    uint64_t total = file_bytes(dir);
    if (uv_fs_scandir(&loop, &req, dir, 0, NULL) >= 0) {
        while (uv_fs_scandir_next(&req, &ent) == 0) {
            char path[1024];
            snprintf(path, sizeof(path), "%s/%s", dir, ent.name);
            total += file_bytes(path);
        }
    }
    uv_fs_req_cleanup(&req);
    return total;
}

/* Runs one query returning one integer on a closed store's file. */
static long long db_int(const char *dir, const char *sql)
{
    char path[700];
    sqlite3 *db;
    sqlite3_stmt *st;
    long long n = -1;
    db_path(path, sizeof(path), dir);
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        sqlite3_close(db);
        return -1;
    }
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW)
            n = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return n;
}

/* The per-room sizes of a closed store match its rows, and the file is in
 * the current format. */
static void check_accounting(const char *dir)
{
    CHECK_EQ(db_int(dir,
                    "SELECT count(*) FROM rooms WHERE bytes <> (SELECT coalesce(sum(" ROW_EST_SQL
                    "), 0) FROM messages WHERE room = rooms.name) OR msgs <> (SELECT count(*) "
                    "FROM messages WHERE room = rooms.name)"),
             0);
    CHECK_EQ(db_int(dir, "PRAGMA auto_vacuum"), 2);
    CHECK_EQ(db_int(dir, "PRAGMA user_version"), 3);
}

/* ---- Stores ---- */

static struct hub_iov iov(const char *s)
{
    struct hub_iov v = {s, s != NULL ? strlen(s) : 0};
    return v;
}

static void on_closed(void *data)
{
    ++*(int *)data;
}

/* Closes h and returns its figures as it left the files; h is freed. */
static struct hub_history_stats close_store(struct hub_history *h)
{
    struct hub_history_stats st;
    int closed = 0;
    hub_history_close(h, on_closed, &closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ(closed, 1);
    hub_history_stats(h, &st);
    hub_history_free(h);
    return st;
}

static struct hub_history *open_store(const char *dir, const struct hub_history_config *cfg)
{
    struct hub_history *h = NULL;
    char err[256];
    int rc = hub_history_open_sqlite(&h, &loop, dir, cfg, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "open %s: %s\n", dir, err);
    CHECK_EQ(rc, 0);
    return h;
}

/* ---- Messages that can be recognised ---- */

static uint32_t mix(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

/* The text of message off of room r: between min and min + spread - 1
 * bytes, self-describing, its body derived from (r, off). Returns its
 * length. */
static size_t text_of(unsigned r, uint64_t off, size_t min, size_t spread, char *out)
{
    uint32_t x = mix((uint32_t)r * 2654435761U ^ (uint32_t)off);
    size_t len = min + (spread > 0 ? x % spread : 0);
    int head = snprintf(out, len + 1, "r%u#%llu|", r, (unsigned long long)off);
    for (size_t i = (size_t)head; i < len; i++) {
        x = x * 1103515245U + 12345U;
        out[i] = "abcdefghijklmnopqrstuvwxyz0123456789"[(x >> 16) % 36];
    }
    out[len] = '\0';
    return len;
}

static void room_name(unsigned r, char *out, size_t outsz)
{
    snprintf(out, outsz, "room-%03u", r);
}

static void cmid_of(uint64_t off, char *out, size_t outsz)
{
    snprintf(out, outsz, "c%llu", (unsigned long long)off);
}

/* ---- Filling ---- */

struct fill {
    struct hub_history *h;
    unsigned done;      /* completions */
    unsigned errors;    /* failed appends */
    uint64_t max_bytes; /* largest stats.bytes seen at a completion */
    const char *dir;    /* sampled with du_b at completions, when set */
    uint64_t max_du;    /* largest du_b(dir) seen at a completion */
    size_t min, spread; /* text sizes */
    int with_cmid;      /* appends carry a cmid */
};

static void on_fill(void *data, int err, uint64_t offset, int64_t ts, int dup)
{
    struct fill *f = data;
    struct hub_history_stats st;
    (void)offset;
    (void)ts;
    if (err != 0 || dup)
        f->errors++;
    f->done++;
    hub_history_stats(f->h, &st);
    if (st.bytes > f->max_bytes)
        f->max_bytes = st.bytes;
    /* The writer may be in the middle of the next batch: this sees the
     * files as they really are, between the passes. */
    if (f->dir != NULL && f->done % 16 == 0) {
        uint64_t du = du_b(f->dir);
        if (du > f->max_du)
            f->max_du = du;
    }
}

/* Appends message counts[r] + 1 of room r. */
static void fill_one(struct fill *f, unsigned r, uint64_t *counts, char *text, int64_t ts)
{
    char room[32], cmid[32];
    room_name(r, room, sizeof(room));
    uint64_t off = ++counts[r];
    size_t len = text_of(r, off, f->min, f->spread, text);
    cmid_of(off, cmid, sizeof(cmid));
    struct hub_iov t = {text, len};
    CHECK_EQ(hub_history_append(f->h, iov(room), iov("ann"), t, iov(f->with_cmid ? cmid : ""), ts,
                                on_fill, f),
             0);
}

/* ---- Reading back ---- */

struct room_check {
    unsigned r;         /* the room */
    uint64_t count;     /* messages appended to it */
    size_t min, spread; /* text sizes */
    int with_cmid;      /* appends carried a cmid */
    int done;           /* completions */
    int err;            /* the read's error */
    uint64_t first;     /* pos.first */
    uint64_t last;      /* pos.last */
    size_t n;           /* messages read */
    uint64_t text;      /* bytes of text read */
    int bad;            /* messages that were not as written, or out of place */
};

static void on_room_read(void *data, int err, const struct hub_history_pos *pos,
                         const struct hub_history_msg *msgs, size_t n, int complete)
{
    struct room_check *c = data;
    char *text = malloc(c->min + c->spread + 1);
    char cmid[32];
    c->done++;
    c->err = err;
    if (err != 0 || text == NULL) {
        free(text);
        return;
    }
    c->first = pos->first;
    c->last = pos->last;
    c->n = n;
    if (!complete || n != pos->last - pos->first + 1)
        c->bad++;
    for (size_t i = 0; i < n; i++) {
        const struct hub_history_msg *m = &msgs[i];
        size_t len = text_of(c->r, m->offset, c->min, c->spread, text);
        c->text += m->text.len;
        cmid_of(m->offset, cmid, sizeof(cmid));
        if (!c->with_cmid)
            cmid[0] = '\0';
        if (m->offset != pos->first + i || m->text.len != len ||
            memcmp(m->text.base, text, len) != 0 || m->from.len != 3 ||
            memcmp(m->from.base, "ann", 3) != 0 || m->cmid.len != strlen(cmid) ||
            memcmp(m->cmid.base, cmid, m->cmid.len) != 0)
            c->bad++;
    }
    free(text);
}

/* Reads every kept message of room r and checks it. */
static struct room_check read_room(struct hub_history *h, unsigned r, uint64_t count,
                                   const struct fill *f)
{
    struct room_check c;
    char room[32];
    memset(&c, 0, sizeof(c));
    c.r = r;
    c.count = count;
    c.min = f->min;
    c.spread = f->spread;
    c.with_cmid = f->with_cmid;
    room_name(r, room, sizeof(room));
    CHECK_EQ(hub_history_read(h, iov(room), HUB_HISTORY_LATEST, 0, 100000, on_room_read, &c), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ(c.done, 1);
    CHECK_EQ(c.err, 0);
    CHECK_EQ(c.bad, 0);
    /* The newest message is there, whatever was cut. */
    CHECK_EQ(c.last, count);
    CHECK(c.n >= 1);
    return c;
}

/* ---- Tests ---- */

#define FILL_ROOMS 200
#define FILL_SMALL 10 /* rooms that get only SMALL_MSGS messages, first */
#define SMALL_MSGS 4

/* Issue 14's check against the store: 40 MiB of text into 200 rooms with
 * an 8 MiB budget. Ten rooms get four messages first, then the other 190
 * share the rest at random: the largest rooms are cut, evenly, and the
 * small ones keep everything although they are the oldest. */
static void test_fill(void)
{
    struct hub_history_config cfg;
    struct fill f;
    uint64_t counts[FILL_ROOMS] = {0};
    char dir[600], path[700], text[4096];
    const uint64_t budget = 8388608, total = 40u << 20;

    hub_history_config_default(&cfg);
    cfg.max_bytes = budget;
    fresh_dir(dir, sizeof(dir), "fill");
    memset(&f, 0, sizeof(f));
    f.min = 512;
    f.spread = 1537; /* 512..2048 bytes, 1280 on average */
    f.with_cmid = 1;
    f.dir = dir;
    f.h = open_store(dir, &cfg);
    if (f.h == NULL)
        return;

    uint64_t t0 = uv_hrtime(), written = 0;
    unsigned issued = 0;
    uint32_t x = 12345;
    for (unsigned r = 0; r < FILL_SMALL; r++)
        for (int i = 0; i < SMALL_MSGS; i++) {
            fill_one(&f, r, counts, text, (int64_t)issued++);
            written += strlen(text);
        }
    while (written < total) {
        /* A chunk at a time, as clients would send them. */
        for (int i = 0; i < 2000 && written < total; i++) {
            x = mix(x + 1);
            unsigned r = FILL_SMALL + x % (FILL_ROOMS - FILL_SMALL);
            fill_one(&f, r, counts, text, (int64_t)issued++);
            written += strlen(text);
        }
        uv_run(&loop, UV_RUN_DEFAULT);
    }
    CHECK_EQ(f.done, issued);
    CHECK_EQ(f.errors, 0);
    double secs = (uv_hrtime() - t0) / 1e9;

    uint64_t kept = 0, kept_min = UINT64_MAX, kept_max = 0, trimmed = 0;
    uint64_t text_min = UINT64_MAX, text_max = 0;
    for (unsigned r = 0; r < FILL_ROOMS; r++) {
        struct room_check c = read_room(f.h, r, counts[r], &f);
        kept += c.n;
        if (r < FILL_SMALL) {
            /* Small rooms are never the largest: nothing of theirs goes. */
            CHECK_EQ(c.first, 1);
            CHECK_EQ(c.n, SMALL_MSGS);
            continue;
        }
        /* Every large room was cut, and a resume from its start sees it. */
        CHECK(c.first > 1);
        trimmed += c.first > 1;
        if (c.n < kept_min)
            kept_min = c.n;
        if (c.n > kept_max)
            kept_max = c.n;
        if (c.text < text_min)
            text_min = c.text;
        if (c.text > text_max)
            text_max = c.text;
    }
    /* Evenly, by bytes: the large rooms differ by what arrived since the
     * last cut, and by the one message a cut goes past its level. */
    CHECK(text_max <= 2 * text_min + 2 * (f.min + f.spread));

    struct hub_history_stats run;
    hub_history_stats(f.h, &run);
    struct hub_history_stats st = close_store(f.h);
    db_path(path, sizeof(path), dir);
    uint64_t du = du_b(dir);
    fprintf(stderr,
            "quota fill: %.1f MiB of text in %u messages into %d rooms, --history-max-bytes %llu, "
            "%.1f s\n"
            "  peak stats.bytes at a completion %llu (db + wal, after a batch)\n"
            "  peak du -b sampled at every 16th completion %llu (also during batches)\n"
            "  at rest, closed: chathub.db %llu bytes, data dir %llu bytes (du -b)\n"
            "  kept %llu messages (stats.messages %llu), dropped %llu (stats.dropped %llu), "
            "%llu rooms cut, large rooms keep %llu..%llu messages, %llu..%llu bytes of text\n",
            written / 1048576.0, issued, FILL_ROOMS, (unsigned long long)budget, secs,
            (unsigned long long)f.max_bytes, (unsigned long long)f.max_du,
            (unsigned long long)file_bytes(path), (unsigned long long)du, (unsigned long long)kept,
            (unsigned long long)st.messages, (unsigned long long)(issued - kept),
            (unsigned long long)st.dropped, (unsigned long long)trimmed,
            (unsigned long long)kept_min, (unsigned long long)kept_max,
            (unsigned long long)text_min, (unsigned long long)text_max);
    /* The bound, and the store's own: under the budget at rest. */
    CHECK(f.max_bytes <= 12u << 20);
    CHECK(f.max_du <= 12u << 20);
    CHECK(du <= 12u << 20);
    CHECK(st.bytes <= budget);
    CHECK_EQ(st.bytes, file_bytes(path));
    CHECK_EQ(st.rooms, FILL_ROOMS);
    CHECK_EQ(st.messages, kept);
    CHECK_EQ(st.dropped, issued - kept);
    CHECK_EQ(run.messages, kept);
    check_accounting(dir);

    /* Across a restart: the figures come back, and more history keeps the
     * files where they were. */
    f.h = open_store(dir, &cfg);
    if (f.h == NULL)
        return;
    struct hub_history_stats again;
    hub_history_stats(f.h, &again);
    CHECK_EQ(again.rooms, FILL_ROOMS);
    CHECK_EQ(again.messages, kept);
    CHECK_EQ(again.dropped, 0);
    f.done = 0;
    f.max_bytes = 0;
    issued = 0;
    for (int i = 0; i < 8000; i++) {
        x = mix(x + 1);
        fill_one(&f, FILL_SMALL + x % (FILL_ROOMS - FILL_SMALL), counts, text, (int64_t)i);
        issued++;
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ(f.done, issued);
    CHECK_EQ(f.errors, 0);
    for (unsigned r = 0; r < FILL_ROOMS; r++)
        read_room(f.h, r, counts[r], &f);
    st = close_store(f.h);
    fprintf(stderr, "quota fill, 8000 more after a restart: peak %llu, at rest %llu bytes\n",
            (unsigned long long)f.max_bytes, (unsigned long long)st.bytes);
    CHECK(f.max_bytes <= 12u << 20);
    CHECK(st.bytes <= budget);
    check_accounting(dir);
}

/* A small budget, every kind of deletion at once: cmids (the dedupe index
 * is counted), count retention (max_per_room) and the quota. */
static void test_small_budget(void)
{
    struct hub_history_config cfg;
    struct fill f;
    enum { ROOMS = 64, N = 3000 };
    uint64_t counts[ROOMS] = {0};
    char dir[600], text[512];
    const uint64_t budget = 256u << 10;

    hub_history_config_default(&cfg);
    cfg.max_bytes = budget;
    cfg.max_per_room = 40;
    fresh_dir(dir, sizeof(dir), "small");
    memset(&f, 0, sizeof(f));
    f.min = 100;
    f.spread = 400;
    f.with_cmid = 1;
    f.h = open_store(dir, &cfg);
    if (f.h == NULL)
        return;
    uint32_t x = 99;
    for (int i = 0; i < N; i++) {
        x = mix(x + 1);
        /* Uneven: a quarter of the rooms get most of the traffic. */
        unsigned r = x % 4 != 0 ? x % (ROOMS / 4) : x % ROOMS;
        fill_one(&f, r, counts, text, i);
        if (i % 100 == 99)
            uv_run(&loop, UV_RUN_DEFAULT);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ(f.done, N);
    CHECK_EQ(f.errors, 0);
    uint64_t kept = 0;
    int cut = 0;
    for (unsigned r = 0; r < ROOMS; r++) {
        if (counts[r] == 0)
            continue;
        struct room_check c = read_room(f.h, r, counts[r], &f);
        CHECK(c.n <= cfg.max_per_room);
        kept += c.n;
        cut += c.first > 1 && c.n < cfg.max_per_room;
    }
    /* A resend of the newest message of room 0 is still recognised. */
    char room[32], cmid[32];
    room_name(0, room, sizeof(room));
    cmid_of(counts[0], cmid, sizeof(cmid));
    size_t len = text_of(0, counts[0], f.min, f.spread, text);
    struct hub_iov t = {text, len};
    f.done = 0;
    f.errors = 0;
    CHECK_EQ(hub_history_append(f.h, iov(room), iov("ann"), t, iov(cmid), 0, on_fill, &f), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ(f.errors, 1); /* counted as an error by on_fill: it was a duplicate */

    struct hub_history_stats st = close_store(f.h);
    fprintf(stderr,
            "small budget %llu: peak %llu, at rest %llu bytes, %llu messages kept, %d rooms cut "
            "below max_per_room by the quota\n",
            (unsigned long long)budget, (unsigned long long)f.max_bytes,
            (unsigned long long)st.bytes, (unsigned long long)kept, cut);
    CHECK(cut > 0);
    CHECK_EQ(st.messages, kept);
    CHECK(st.bytes <= budget);
    /* Slack: one batch can pass the budget before the pass after it. */
    CHECK(f.max_bytes <= budget + (1u << 20));
    check_accounting(dir);
}

/* A room's newest message is never deleted, even when it alone is larger
 * than the budget: the budget is passed, and nothing else breaks. */
static void test_floor(void)
{
    struct hub_history_config cfg;
    struct fill f;
    uint64_t counts[2] = {0};
    char dir[600];
    const uint64_t budget = 128u << 10;
    enum { HUGE = 200 << 10 };
    char *text = malloc(HUGE + 1);
    CHECK(text != NULL);
    if (text == NULL)
        return;

    hub_history_config_default(&cfg);
    cfg.max_bytes = budget;
    fresh_dir(dir, sizeof(dir), "floor");
    memset(&f, 0, sizeof(f));
    f.min = HUGE;
    f.h = open_store(dir, &cfg);
    if (f.h == NULL) {
        free(text);
        return;
    }
    fill_one(&f, 0, counts, text, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    f.min = 1000;
    for (int i = 0; i < 50; i++)
        fill_one(&f, 1, counts, text, i);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ(f.done, 51);
    CHECK_EQ(f.errors, 0);
    f.min = HUGE;
    struct room_check c = read_room(f.h, 0, 1, &f);
    CHECK_EQ(c.first, 1);
    CHECK_EQ(c.n, 1);
    f.min = 1000;
    c = read_room(f.h, 1, 50, &f);
    CHECK(c.first > 1);
    struct hub_history_stats st = close_store(f.h);
    fprintf(stderr, "floor: a %d-byte message under a %llu-byte budget: %llu bytes at rest\n", HUGE,
            (unsigned long long)budget, (unsigned long long)st.bytes);
    CHECK(st.bytes > budget);
    CHECK(st.dropped > 0);
    check_accounting(dir);
    free(text);
}

static int64_t fake_now;

static int64_t fake_clock(void)
{
    return fake_now;
}

static void on_append_err(void *data, int err, uint64_t offset, int64_t ts, int dup)
{
    (void)offset;
    (void)ts;
    (void)dup;
    *(int *)data += err != 0;
}

/* The TTL sweep keeps the room sizes right too. */
static void test_ttl_accounting(void)
{
    struct hub_history_config cfg;
    struct hub_history *h;
    char dir[600], room[32];
    int errors = 0;

    hub_history_config_default(&cfg);
    cfg.ttl_ms = 10000;
    cfg.now_ms = fake_clock;
    fake_now = 1000000;
    fresh_dir(dir, sizeof(dir), "ttl");
    h = open_store(dir, &cfg);
    if (h == NULL)
        return;
    for (int i = 0; i < 300; i++) {
        room_name((unsigned)i % 7, room, sizeof(room));
        CHECK_EQ(hub_history_append(h, iov(room), iov("ann"), iov("some text"), iov(""), fake_now,
                                    on_append_err, &errors),
                 0);
        uv_run(&loop, UV_RUN_DEFAULT);
        fake_now += 100; /* the sweep runs once a second */
    }
    CHECK_EQ(errors, 0);
    struct hub_history_stats st = close_store(h);
    /* 300 appends over 30 s with a 10 s TTL: the oldest went. */
    CHECK(st.messages < 300);
    CHECK(st.messages >= 100);
    CHECK_EQ(st.dropped, 0); /* not the quota's doing */
    CHECK_EQ((long long)st.messages, db_int(dir, "SELECT count(*) FROM messages"));
    check_accounting(dir);
}

/* The schema of earlier versions, made by them with auto_vacuum off. */
static const char old_schema[] =
    "PRAGMA journal_mode=WAL;"
    "CREATE TABLE rooms(name TEXT PRIMARY KEY, epoch TEXT NOT NULL, last INTEGER NOT NULL);"
    "CREATE TABLE messages(room TEXT, offset INTEGER, ts INTEGER, sender TEXT,"
    " text TEXT, cmid TEXT, PRIMARY KEY(room, offset)) WITHOUT ROWID;"
    "CREATE INDEX messages_cmid ON messages(room, sender, cmid) WHERE cmid <> '';";

/* Writes an old-format database: room 0 with offsets 11..60 kept (1..10
 * deleted, leaving free pages), room 1 with 1..5. */
static void make_old_db(const char *dir, const struct fill *f)
{
    char path[700], room[32], cmid[32], text[4096];
    sqlite3 *db;
    sqlite3_stmt *st;
    uv_fs_t req;
    CHECK_EQ(uv_fs_mkdir(&loop, &req, dir, 0755, NULL), 0);
    uv_fs_req_cleanup(&req);
    db_path(path, sizeof(path), dir);
    CHECK_EQ(sqlite3_open(path, &db), SQLITE_OK);
    CHECK_EQ(sqlite3_exec(db, old_schema, NULL, NULL, NULL), SQLITE_OK);
    CHECK_EQ(sqlite3_exec(db,
                          "BEGIN; INSERT INTO rooms VALUES('room-000', '0123456789abcdef', 60);"
                          "INSERT INTO rooms VALUES('room-001', 'fedcba9876543210', 5)",
                          NULL, NULL, NULL),
             SQLITE_OK);
    CHECK_EQ(sqlite3_prepare_v2(db, "INSERT INTO messages VALUES(?1, ?2, ?3, 'ann', ?4, ?5)", -1,
                                &st, NULL),
             SQLITE_OK);
    for (unsigned r = 0; r < 2; r++)
        for (uint64_t off = 1; off <= (r == 0 ? 60u : 5u); off++) {
            room_name(r, room, sizeof(room));
            size_t len = text_of(r, off, f->min, f->spread, text);
            cmid_of(off, cmid, sizeof(cmid));
            sqlite3_bind_text(st, 1, room, -1, SQLITE_TRANSIENT);
            sqlite3_bind_int64(st, 2, (sqlite3_int64)off);
            sqlite3_bind_int64(st, 3, (sqlite3_int64)off);
            sqlite3_bind_text(st, 4, text, (int)len, SQLITE_TRANSIENT);
            sqlite3_bind_text(st, 5, cmid, -1, SQLITE_TRANSIENT);
            CHECK_EQ(sqlite3_step(st), SQLITE_DONE);
            sqlite3_reset(st);
        }
    sqlite3_finalize(st);
    CHECK_EQ(sqlite3_exec(db,
                          "DELETE FROM messages WHERE room = 'room-000' AND offset <= 10; COMMIT;"
                          "PRAGMA wal_checkpoint(TRUNCATE)",
                          NULL, NULL, NULL),
             SQLITE_OK);
    sqlite3_close(db);
}

/* An old file is converted once at open (room sizes, incremental vacuum),
 * keeps its positions and messages, and shrinks once a budget cuts it. */
static void test_migrate(void)
{
    struct hub_history_config cfg;
    struct fill f;
    char dir[600], path[700], text[4096];

    memset(&f, 0, sizeof(f));
    f.min = 1500;
    f.spread = 1000;
    f.with_cmid = 1;
    fresh_dir(dir, sizeof(dir), "old");
    make_old_db(dir, &f);
    db_path(path, sizeof(path), dir);
    CHECK_EQ(db_int(dir, "PRAGMA auto_vacuum"), 0);
    CHECK_EQ(db_int(dir, "PRAGMA user_version"), 0);
    CHECK(db_int(dir, "PRAGMA freelist_count") > 0);
    uint64_t old_size = file_bytes(path);

    hub_history_config_default(&cfg);
    cfg.max_bytes = 0;
    f.h = open_store(dir, &cfg);
    if (f.h == NULL)
        return;
    struct hub_history_stats st;
    hub_history_stats(f.h, &st);
    CHECK_EQ(st.rooms, 2);
    CHECK_EQ(st.messages, 55);
    struct room_check c = read_room(f.h, 0, 60, &f);
    CHECK_EQ(c.first, 11);
    c = read_room(f.h, 1, 5, &f);
    CHECK_EQ(c.first, 1);
    /* Offsets go on, under the old epoch. */
    uint64_t counts[2] = {60, 5};
    fill_one(&f, 0, counts, text, 61);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ(f.errors, 0);
    read_room(f.h, 0, 61, &f);
    st = close_store(f.h);
    check_accounting(dir);
    CHECK_EQ(db_int(dir, "PRAGMA freelist_count"), 0);
    CHECK_EQ(db_int(dir, "SELECT count(*) FROM rooms WHERE name = 'room-000' AND epoch = "
                         "'0123456789abcdef' AND last = 61"),
             1);
    uint64_t converted = file_bytes(path);
    fprintf(stderr, "migrate: old file %llu bytes (free pages kept), converted %llu bytes\n",
            (unsigned long long)old_size, (unsigned long long)converted);
    CHECK(converted < old_size);

    /* A budget under the file's size applies at open: the largest room is
     * cut, the file shrinks below the budget. */
    cfg.max_bytes = converted * 3 / 4;
    if (cfg.max_bytes < (128u << 10))
        cfg.max_bytes = 128u << 10;
    f.h = open_store(dir, &cfg);
    if (f.h == NULL)
        return;
    c = read_room(f.h, 0, 61, &f);
    CHECK(c.first > 11);
    struct room_check c1 = read_room(f.h, 1, 5, &f);
    st = close_store(f.h);
    fprintf(stderr,
            "migrate: budget %llu: file %llu bytes, room 0 keeps %llu..61, room 1 keeps "
            "%llu..5\n",
            (unsigned long long)cfg.max_bytes, (unsigned long long)file_bytes(path),
            (unsigned long long)c.first, (unsigned long long)c1.first);
    CHECK(file_bytes(path) <= cfg.max_bytes);
    CHECK_EQ(st.bytes, file_bytes(path));
    check_accounting(dir);

    /* A file from a newer version is refused, not guessed at. */
    CHECK_EQ(db_int(dir, "PRAGMA user_version = 4"), -1);
    CHECK_EQ(db_int(dir, "PRAGMA user_version"), 4);
    struct hub_history *h = NULL;
    char err[256];
    CHECK_EQ(hub_history_open_sqlite(&h, &loop, dir, &cfg, err, sizeof(err)), HUB_EIO);
    CHECK(strstr(err, "newer chathub") != NULL);
}

int main(void)
{
    if (uv_loop_init(&loop) != 0)
        return 1;
    if (tmp_make_dir(&loop, "hub_quota", root, sizeof(root)) != 0)
        return 1;

    test_migrate();
    test_ttl_accounting();
    test_floor();
    test_small_budget();
    test_fill();

    tmp_remove_tree(&loop, root);
    CHECK_EQ(uv_loop_close(&loop), 0);
    return CHECK_DONE();
}
