/*
 * test_history.c: unit tests of the history stores through the public
 * interface.
 *
 * The same bodies run against the memory store and the SQLite store (in a
 * fresh directory under a temporary root), driving a real uv_loop_t until
 * the callbacks have fired: the memory store completes before each call
 * returns, the SQLite store through its writer thread. The SQLite store then
 * gets what only it can do: positions that survive a restart, a new epoch
 * after the file is lost, refusal to start on a locked, corrupted or
 * unwritable database, a full disk, and a throughput figure (printed, never
 * asserted).
 *
 * Run with "--try-open DIR", the executable opens DIR as a SQLite store and
 * exits 0 (opened), 2 (HUB_EIO with "locked" in the message) or 1 (any other
 * failure): the lock test starts it as a second process.
 */
#include "hub/history.h"

#include "check.h"
#include "history_manual.h"
#include "tmpfs.h"

#include <sqlite3.h>
#include <uv.h>

#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

enum kind {
    MEMORY,
    SQLITE,
};

static const char *const kind_name[] = {"memory", "sqlite"};

/* Appends the --crash-after child acknowledges before it kills itself. */
#define CRASH_ACKED 25

static uv_loop_t loop;
static const char *self_path;
static char root[512];
static int dir_seq;

/* ---- Temporary directories ---- */

static void make_temp_root(void)
{
    if (tmp_make_dir(&loop, "hub_history", root, sizeof(root)) != 0)
        snprintf(root, sizeof(root), "/tmp");
}

/* Names a new, not yet existing, directory under the root. */
static void fresh_dir(char *out, size_t outsz, const char *what)
{
    snprintf(out, outsz, "%s/%s-%d", root, what, ++dir_seq);
}

static void write_file(const char *path, const void *data, size_t len, long at)
{
    FILE *f = fopen(path, at < 0 ? "wb" : "r+b");
    CHECK(f != NULL);
    if (f == NULL)
        return;
    if (at >= 0)
        CHECK_EQ(fseek(f, at, SEEK_SET), 0);
    CHECK_EQ(fwrite(data, 1, len, f), len);
    fclose(f);
}

static void db_path(char *out, size_t outsz, const char *dir)
{
    snprintf(out, outsz, "%s/chathub.db", dir);
}

/* Counts rows in a closed store's file, read directly with SQLite. */
static long long count_rows(const char *dir, const char *room)
{
    char path[700];
    sqlite3 *db;
    sqlite3_stmt *st;
    long long n = -1;
    db_path(path, sizeof(path), dir);
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        sqlite3_close(db);
        return -1;
    }
    if (sqlite3_prepare_v2(db, "SELECT count(*) FROM messages WHERE room = ?1", -1, &st, NULL) ==
        SQLITE_OK) {
        sqlite3_bind_text(st, 1, room, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW)
            n = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return n;
}

/* ---- Stores and synchronous helpers ---- */

static struct hub_iov iov(const char *s)
{
    struct hub_iov v = {s, s != NULL ? strlen(s) : 0};
    return v;
}

static int64_t now_ms(void)
{
    uv_timeval64_t tv;
    uv_gettimeofday(&tv);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static int open_store(struct hub_history **h, int kind, const char *dir,
                      const struct hub_history_config *cfg, char *err, size_t errsz)
{
    if (kind == MEMORY)
        return hub_history_open_memory(h, cfg);
    return hub_history_open_sqlite(h, &loop, dir, cfg, err, errsz);
}

static void on_closed(void *data)
{
    ++*(int *)data;
}

static void close_store(struct hub_history *h)
{
    int closed = 0;
    hub_history_close(h, on_closed, &closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ(closed, 1);
    hub_history_free(h);
}

/* The outcome of one request, and where it came in the completion order. */
#define MAX_MSGS 64

struct op {
    int done;                   /* completions seen (must end at 1) */
    int seq;                    /* this request's place in the issue order */
    int err;                    /* append/read result */
    uint64_t offset;            /* append */
    int64_t ts;                 /* append */
    int dup;                    /* append */
    struct hub_history_pos pos; /* read */
    size_t n;                   /* read: messages */
    int complete;               /* read */
    uint64_t offs[MAX_MSGS];    /* read: offsets */
    int64_t tss[MAX_MSGS];      /* read: times */
    char texts[MAX_MSGS][32];   /* read: texts, truncated */
    char froms[MAX_MSGS][16];   /* read: senders, truncated */
};

static int order_log[256];
static int order_n;

static void log_order(struct op *o)
{
    o->done++;
    if (order_n < (int)HUB_ARRAY_SIZE(order_log))
        order_log[order_n++] = o->seq;
}

static void on_append(void *data, int err, uint64_t offset, int64_t ts, int dup)
{
    struct op *o = data;
    o->err = err;
    o->offset = offset;
    o->ts = ts;
    o->dup = dup;
    log_order(o);
}

static void copy_iov(char *out, size_t outsz, struct hub_iov v)
{
    size_t n = v.len < outsz - 1 ? v.len : outsz - 1;
    if (n > 0)
        memcpy(out, v.base, n);
    out[n] = '\0';
}

static void on_read(void *data, int err, const struct hub_history_pos *pos,
                    const struct hub_history_msg *msgs, size_t n, int complete)
{
    struct op *o = data;
    o->err = err;
    if (err == 0) {
        o->pos = *pos;
        o->n = n;
        o->complete = complete;
        for (size_t i = 0; i < n && i < MAX_MSGS; i++) {
            o->offs[i] = msgs[i].offset;
            o->tss[i] = msgs[i].ts;
            copy_iov(o->texts[i], sizeof(o->texts[i]), msgs[i].text);
            copy_iov(o->froms[i], sizeof(o->froms[i]), msgs[i].from);
        }
    }
    log_order(o);
}

static void on_barrier(void *data)
{
    log_order(data);
}

static struct op append_sync(struct hub_history *h, const char *room, const char *from,
                             const char *text, const char *cmid, int64_t ts)
{
    struct op o;
    memset(&o, 0, sizeof(o));
    CHECK_EQ(hub_history_append(h, iov(room), iov(from), iov(text), iov(cmid), ts, on_append, &o),
             0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ(o.done, 1);
    return o;
}

static struct op read_sync(struct hub_history *h, const char *room, int dir, uint64_t pos,
                           unsigned limit)
{
    struct op o;
    memset(&o, 0, sizeof(o));
    CHECK_EQ(hub_history_read(h, iov(room), dir, pos, limit, on_read, &o), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ(o.done, 1);
    return o;
}

static int is_epoch(const char *e)
{
    if (strlen(e) != HUB_HISTORY_EPOCH_LEN)
        return 0;
    for (const char *p = e; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return 0;
    return 1;
}

/* Checks that a read returned exactly offsets lo..hi. */
static void check_range(const struct op *o, uint64_t lo, uint64_t hi, int complete)
{
    CHECK_EQ(o->err, 0);
    CHECK_EQ(o->n, hi >= lo ? hi - lo + 1 : 0);
    for (size_t i = 0; i < o->n && i < MAX_MSGS; i++)
        CHECK_EQ(o->offs[i], lo + i);
    CHECK_EQ(o->complete, complete);
}

/* ---- Bodies run against both stores ---- */

/* Completions in request order, offsets 1..N, read-your-writes, dedupe. */
static void test_order(int kind)
{
    struct hub_history_config cfg;
    struct hub_history *h;
    char dir[600], err[256];
    struct op ops[12];
    int64_t t0 = now_ms();

    hub_history_config_default(&cfg);
    fresh_dir(dir, sizeof(dir), "order");
    CHECK_EQ(open_store(&h, kind, dir, &cfg, err, sizeof(err)), 0);
    memset(ops, 0, sizeof(ops));
    order_n = 0;
    for (int i = 0; i < 12; i++)
        ops[i].seq = i;

    /* Everything is issued before the loop runs, so the SQLite store sees
     * reads and barriers queued between appends. */
    CHECK_EQ(hub_history_append(h, iov("lobby"), iov("alice"), iov("hello"), iov("c1"), t0,
                                on_append, &ops[0]),
             0);
    CHECK_EQ(hub_history_append(h, iov("lobby"), iov("bob"), iov("hi"), iov(""), t0 + 1, on_append,
                                &ops[1]),
             0);
    CHECK_EQ(hub_history_read(h, iov("lobby"), HUB_HISTORY_LATEST, 0, 10, on_read, &ops[2]), 0);
    CHECK_EQ(hub_history_barrier(h, on_barrier, &ops[3]), 0);
    CHECK_EQ(hub_history_append(h, iov("lobby"), iov("alice"), iov("hello again"), iov("c1"),
                                t0 + 2, on_append, &ops[4]),
             0);
    CHECK_EQ(hub_history_append(h, iov("lobby"), iov("bob"), iov("x"), iov("c1"), t0 + 3, on_append,
                                &ops[5]),
             0);
    CHECK_EQ(hub_history_append(h, iov("other"), iov("alice"), iov("o1"), iov("c1"), t0 + 4,
                                on_append, &ops[6]),
             0);
    CHECK_EQ(hub_history_read(h, iov("lobby"), HUB_HISTORY_AFTER, 1, 10, on_read, &ops[7]), 0);
    CHECK_EQ(hub_history_barrier(h, on_barrier, &ops[8]), 0);
    CHECK_EQ(hub_history_append(h, iov("lobby"), iov("alice"), iov("m4"), iov(""), t0 + 5,
                                on_append, &ops[9]),
             0);
    CHECK_EQ(hub_history_read(h, iov("lobby"), HUB_HISTORY_LATEST, 0, 0, on_read, &ops[10]), 0);
    CHECK_EQ(hub_history_read(h, iov("lobby"), HUB_HISTORY_LATEST, 0, 10, on_read, &ops[11]), 0);
    uv_run(&loop, UV_RUN_DEFAULT);

    CHECK_EQ(order_n, 12);
    for (int i = 0; i < order_n; i++)
        CHECK_EQ(order_log[i], i);
    for (int i = 0; i < 12; i++)
        CHECK_EQ(ops[i].done, 1);

    CHECK_EQ(ops[0].err, 0);
    CHECK_EQ(ops[0].offset, 1);
    CHECK_EQ(ops[0].ts, t0);
    CHECK_EQ(ops[0].dup, 0);
    CHECK_EQ(ops[1].offset, 2);
    CHECK_EQ(ops[1].dup, 0);
    /* The read sees both appends made before it. */
    check_range(&ops[2], 1, 2, 1);
    CHECK_STR(ops[2].texts[0], "hello");
    CHECK_STR(ops[2].froms[0], "alice");
    CHECK_STR(ops[2].texts[1], "hi");
    CHECK_EQ(ops[2].pos.last, 2);
    CHECK_EQ(ops[2].pos.first, 1);
    CHECK(is_epoch(ops[2].pos.epoch));
    /* Same sender and cmid: the original's offset and time, nothing stored. */
    CHECK_EQ(ops[4].err, 0);
    CHECK_EQ(ops[4].dup, 1);
    CHECK_EQ(ops[4].offset, 1);
    CHECK_EQ(ops[4].ts, t0);
    /* The same cmid from another sender, or in another room, is new. */
    CHECK_EQ(ops[5].dup, 0);
    CHECK_EQ(ops[5].offset, 3);
    CHECK_EQ(ops[6].dup, 0);
    CHECK_EQ(ops[6].offset, 1);
    check_range(&ops[7], 2, 3, 1);
    CHECK_STR(ops[7].texts[1], "x");
    CHECK_EQ(ops[9].offset, 4);
    CHECK_EQ(ops[10].err, 0);
    CHECK_EQ(ops[10].n, 0);
    CHECK_EQ(ops[10].complete, 1);
    CHECK_EQ(ops[10].pos.last, 4);
    check_range(&ops[11], 1, 4, 1);
    CHECK_EQ(ops[11].tss[3], t0 + 5);
    CHECK_STR(ops[11].pos.epoch, ops[2].pos.epoch);
    CHECK_STR(ops[10].pos.epoch, ops[2].pos.epoch);
    close_store(h);
}

/* LATEST, BEFORE and AFTER paging with complete, and limit 0. */
static void test_paging(int kind)
{
    struct hub_history_config cfg;
    struct hub_history *h;
    char dir[600], err[256], text[16];
    int64_t t0 = now_ms();

    hub_history_config_default(&cfg);
    fresh_dir(dir, sizeof(dir), "paging");
    CHECK_EQ(open_store(&h, kind, dir, &cfg, err, sizeof(err)), 0);
    for (int i = 1; i <= 12; i++) {
        snprintf(text, sizeof(text), "m%d", i);
        struct op a = append_sync(h, "r", "ann", text, "", t0 + i);
        CHECK_EQ(a.err, 0);
        CHECK_EQ(a.offset, (uint64_t)i);
    }
    struct op o = read_sync(h, "r", HUB_HISTORY_LATEST, 0, 5);
    check_range(&o, 8, 12, 0);
    CHECK_STR(o.texts[0], "m8");
    CHECK_EQ(o.tss[4], t0 + 12);
    CHECK_EQ(o.pos.last, 12);
    CHECK_EQ(o.pos.first, 1);
    char epoch[HUB_HISTORY_EPOCH_LEN + 1];
    memcpy(epoch, o.pos.epoch, sizeof(epoch));
    CHECK(is_epoch(epoch));

    o = read_sync(h, "r", HUB_HISTORY_BEFORE, 8, 5);
    check_range(&o, 3, 7, 0);
    o = read_sync(h, "r", HUB_HISTORY_BEFORE, 3, 5);
    check_range(&o, 1, 2, 1);
    o = read_sync(h, "r", HUB_HISTORY_BEFORE, 6, 5);
    check_range(&o, 1, 5, 1);
    o = read_sync(h, "r", HUB_HISTORY_BEFORE, 1, 5);
    check_range(&o, 1, 0, 1);
    o = read_sync(h, "r", HUB_HISTORY_BEFORE, 0, 5);
    check_range(&o, 1, 0, 1);
    o = read_sync(h, "r", HUB_HISTORY_BEFORE, 1000, 3);
    check_range(&o, 10, 12, 0);
    o = read_sync(h, "r", HUB_HISTORY_BEFORE, UINT64_MAX, 3);
    check_range(&o, 10, 12, 0);

    o = read_sync(h, "r", HUB_HISTORY_AFTER, 0, 5);
    check_range(&o, 1, 5, 0);
    o = read_sync(h, "r", HUB_HISTORY_AFTER, 5, 5);
    check_range(&o, 6, 10, 0);
    o = read_sync(h, "r", HUB_HISTORY_AFTER, 10, 5);
    check_range(&o, 11, 12, 1);
    o = read_sync(h, "r", HUB_HISTORY_AFTER, 7, 5);
    check_range(&o, 8, 12, 1);
    o = read_sync(h, "r", HUB_HISTORY_AFTER, 12, 5);
    check_range(&o, 1, 0, 1);
    o = read_sync(h, "r", HUB_HISTORY_AFTER, UINT64_MAX, 5);
    check_range(&o, 1, 0, 1);

    o = read_sync(h, "r", HUB_HISTORY_LATEST, 0, 12);
    check_range(&o, 1, 12, 1);
    o = read_sync(h, "r", HUB_HISTORY_LATEST, 0, 100);
    check_range(&o, 1, 12, 1);
    o = read_sync(h, "r", HUB_HISTORY_LATEST, 0, 0);
    check_range(&o, 1, 0, 1);
    CHECK_EQ(o.pos.last, 12);
    CHECK_EQ(o.pos.first, 1);
    /* The epoch does not move while nothing is lost. */
    CHECK_STR(o.pos.epoch, epoch);

    /* A room nobody wrote to: position only, and a stable epoch. */
    struct op e1 = read_sync(h, "empty", HUB_HISTORY_LATEST, 0, 10);
    check_range(&e1, 1, 0, 1);
    CHECK_EQ(e1.pos.last, 0);
    CHECK_EQ(e1.pos.first, 1);
    CHECK(is_epoch(e1.pos.epoch));
    struct op e2 = read_sync(h, "empty", HUB_HISTORY_AFTER, 0, 10);
    CHECK_STR(e2.pos.epoch, e1.pos.epoch);
    CHECK(strcmp(e1.pos.epoch, epoch) != 0);
    /* Its first message keeps the epoch already handed out. */
    struct op a = append_sync(h, "empty", "ann", "first", "", t0);
    CHECK_EQ(a.offset, 1);
    e2 = read_sync(h, "empty", HUB_HISTORY_LATEST, 0, 10);
    check_range(&e2, 1, 1, 1);
    CHECK_STR(e2.pos.epoch, e1.pos.epoch);

    /* Strings with embedded NUL bytes and empty ones come back intact. */
    struct hub_iov nul_text = {"a\0b", 3};
    struct op z;
    memset(&z, 0, sizeof(z));
    CHECK_EQ(hub_history_append(h, iov("nul"), iov(""), nul_text, iov(""), t0, on_append, &z), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ(z.offset, 1);
    close_store(h);
}

/* max_per_room 5: first = last - 4, and a trimmed cmid no longer dedupes. */
static void test_retention(int kind)
{
    struct hub_history_config cfg;
    struct hub_history *h;
    char dir[600], err[256], text[16];
    int64_t t0 = now_ms();

    hub_history_config_default(&cfg);
    cfg.max_per_room = 5;
    fresh_dir(dir, sizeof(dir), "retention");
    CHECK_EQ(open_store(&h, kind, dir, &cfg, err, sizeof(err)), 0);
    CHECK_EQ(append_sync(h, "r", "ann", "m1", "old", t0).offset, 1);
    for (int i = 2; i <= 12; i++) {
        snprintf(text, sizeof(text), "m%d", i);
        CHECK_EQ(append_sync(h, "r", "ann", text, "", t0 + i).offset, (uint64_t)i);
    }
    struct op o = read_sync(h, "r", HUB_HISTORY_LATEST, 0, 100);
    check_range(&o, 8, 12, 1);
    CHECK_EQ(o.pos.first, 8);
    CHECK_EQ(o.pos.last, 12);
    CHECK_EQ(o.pos.first, o.pos.last - 4);
    CHECK_STR(o.texts[0], "m8");
    o = read_sync(h, "r", HUB_HISTORY_LATEST, 0, 3);
    check_range(&o, 10, 12, 0);
    o = read_sync(h, "r", HUB_HISTORY_BEFORE, 8, 10);
    check_range(&o, 1, 0, 1);
    o = read_sync(h, "r", HUB_HISTORY_BEFORE, 10, 10);
    check_range(&o, 8, 9, 1);
    o = read_sync(h, "r", HUB_HISTORY_AFTER, 0, 2);
    check_range(&o, 8, 9, 0);
    o = read_sync(h, "r", HUB_HISTORY_AFTER, 3, 10);
    check_range(&o, 8, 12, 1);

    struct op a = append_sync(h, "r", "ann", "resend", "old", t0);
    CHECK_EQ(a.dup, 0);
    CHECK_EQ(a.offset, 13);
    o = read_sync(h, "r", HUB_HISTORY_LATEST, 0, 100);
    check_range(&o, 9, 13, 1);
    close_store(h);
    if (kind == SQLITE)
        CHECK_EQ(count_rows(dir, "r"), 5);
}

/* The stores' injected clock. The SQLite writer reads it too, but only
 * while it runs a batch, and the test moves it only while no request is
 * pending (the queue's mutex orders the two). */
static int64_t fake_now;

static int64_t fake_clock(void)
{
    return fake_now;
}

/* With a TTL, older messages are never returned: exact at the boundary,
 * with the injected clock. */
static void test_ttl(int kind)
{
    struct hub_history_config cfg;
    struct hub_history *h;
    char dir[600], err[256];
    const int64_t t0 = 1700000000000;

    hub_history_config_default(&cfg);
    cfg.ttl_ms = 1000;
    cfg.now_ms = fake_clock;
    fake_now = t0;
    fresh_dir(dir, sizeof(dir), "ttl");
    CHECK_EQ(open_store(&h, kind, dir, &cfg, err, sizeof(err)), 0);
    CHECK_EQ(append_sync(h, "r", "ann", "old1", "", t0 - 10000).offset, 1);
    CHECK_EQ(append_sync(h, "r", "ann", "old2", "", t0 - 1001).offset, 2);
    CHECK_EQ(append_sync(h, "r", "ann", "new3", "", t0 - 1000).offset, 3);
    CHECK_EQ(append_sync(h, "r", "ann", "new4", "", t0).offset, 4);
    /* Exactly ttl_ms old is still kept; one millisecond more is not. */
    struct op o = read_sync(h, "r", HUB_HISTORY_LATEST, 0, 10);
    check_range(&o, 3, 4, 1);
    CHECK_EQ(o.pos.first, 3);
    CHECK_EQ(o.pos.last, 4);
    o = read_sync(h, "r", HUB_HISTORY_AFTER, 0, 10);
    check_range(&o, 3, 4, 1);
    o = read_sync(h, "r", HUB_HISTORY_BEFORE, 4, 10);
    check_range(&o, 3, 3, 1);

    fake_now = t0 + 1;
    o = read_sync(h, "r", HUB_HISTORY_LATEST, 0, 10);
    check_range(&o, 4, 4, 1);
    CHECK_EQ(o.pos.first, 4);
    fake_now = t0 + 1000;
    o = read_sync(h, "r", HUB_HISTORY_LATEST, 0, 10);
    check_range(&o, 4, 4, 1);
    fake_now = t0 + 1001;
    o = read_sync(h, "r", HUB_HISTORY_LATEST, 0, 10);
    check_range(&o, 1, 0, 1);
    CHECK_EQ(o.pos.last, 4);
    CHECK_EQ(o.pos.first, 5);
    o = read_sync(h, "r", HUB_HISTORY_AFTER, 2, 10);
    check_range(&o, 1, 0, 1);
    /* Offsets keep counting after everything expired. */
    CHECK_EQ(append_sync(h, "r", "ann", "new5", "", fake_now).offset, 5);
    o = read_sync(h, "r", HUB_HISTORY_LATEST, 0, 10);
    check_range(&o, 5, 5, 1);
    CHECK_EQ(o.pos.first, 5);

    if (kind == SQLITE) {
        /* The sweep runs at most once a second of the store's clock and
         * deletes the rows themselves. */
        fake_now += 1000;
        struct op b;
        memset(&b, 0, sizeof(b));
        CHECK_EQ(hub_history_barrier(h, on_barrier, &b), 0);
        uv_run(&loop, UV_RUN_DEFAULT);
        CHECK_EQ(b.done, 1);
    }
    close_store(h);
    if (kind == SQLITE)
        CHECK_EQ(count_rows(dir, "r"), 1); /* the four expired rows are gone; new5 stays */
}

/* Close finishes what was asked before it; nothing is accepted after it. */
static void test_close(int kind)
{
    struct hub_history_config cfg;
    struct hub_history *h;
    char dir[600], err[256];
    struct op ops[5];
    int closed = 0;

    hub_history_config_default(&cfg);
    fresh_dir(dir, sizeof(dir), "close");
    CHECK_EQ(open_store(&h, kind, dir, &cfg, err, sizeof(err)), 0);
    memset(ops, 0, sizeof(ops));
    order_n = 0;
    for (int i = 0; i < 4; i++) {
        ops[i].seq = i;
        CHECK_EQ(
            hub_history_append(h, iov("r"), iov("ann"), iov("x"), iov(""), 1, on_append, &ops[i]),
            0);
    }
    hub_history_close(h, on_closed, &closed);
    if (kind == SQLITE) {
        CHECK_EQ(closed, 0);
        CHECK_EQ(
            hub_history_append(h, iov("r"), iov("ann"), iov("x"), iov(""), 1, on_append, &ops[4]),
            HUB_ECLOSED);
        CHECK_EQ(hub_history_read(h, iov("r"), 0, 0, 1, on_read, &ops[4]), HUB_ECLOSED);
        CHECK_EQ(hub_history_barrier(h, on_barrier, &ops[4]), HUB_ECLOSED);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ(closed, 1);
    CHECK_EQ(order_n, 4);
    for (int i = 0; i < 4; i++) {
        CHECK_EQ(ops[i].done, 1);
        CHECK_EQ(ops[i].offset, (uint64_t)i + 1);
    }
    CHECK_EQ(ops[4].done, 0);
    hub_history_free(h);
}

/* ---- Memory store bounds ---- */

static struct hub_history_stats stats_of(struct hub_history *h)
{
    struct hub_history_stats st;
    hub_history_stats(h, &st);
    return st;
}

/* Reads never create state, and reads of made-up rooms cannot push a live
 * room out (issue 17, item 7: 10,000 made-up names used to reset its
 * epoch). */
static void test_read_creates_nothing(void)
{
    struct hub_history_config cfg;
    struct hub_history *h;
    char name[32];

    hub_history_config_default(&cfg);
    cfg.max_rooms = 4;
    CHECK_EQ(hub_history_open_memory(&h, &cfg), 0);
    CHECK_EQ(append_sync(h, "live", "ann", "m1", "", 1).offset, 1);
    struct op before = read_sync(h, "live", HUB_HISTORY_LATEST, 0, 10);
    struct hub_history_stats st0 = stats_of(h);
    CHECK_EQ(st0.rooms, 1);
    CHECK_EQ(st0.messages, 1);
    for (int i = 0; i < 10000; i++) {
        snprintf(name, sizeof(name), "made-up-%d", i);
        struct op o = read_sync(h, name, HUB_HISTORY_LATEST, 0, 100);
        CHECK_EQ(o.pos.last, 0);
        CHECK_EQ(o.pos.first, 1);
        CHECK_EQ(o.n, 0);
    }
    struct hub_history_stats st1 = stats_of(h);
    CHECK_EQ(st1.rooms, 1);
    CHECK_EQ(st1.bytes, st0.bytes);
    struct op after = read_sync(h, "live", HUB_HISTORY_LATEST, 0, 10);
    check_range(&after, 1, 1, 1);
    CHECK_STR(after.pos.epoch, before.pos.epoch);
    /* An unknown room's epoch is the same from one read to the next, and
     * becomes the epoch of its stream when it gets a message. */
    struct op u1 = read_sync(h, "quiet", HUB_HISTORY_LATEST, 0, 1);
    struct op u2 = read_sync(h, "quiet", HUB_HISTORY_AFTER, 0, 1);
    CHECK(is_epoch(u1.pos.epoch));
    CHECK_STR(u1.pos.epoch, u2.pos.epoch);
    CHECK(strcmp(u1.pos.epoch, after.pos.epoch) != 0);
    CHECK_EQ(append_sync(h, "quiet", "ann", "q", "", 1).offset, 1);
    CHECK_STR(read_sync(h, "quiet", HUB_HISTORY_LATEST, 0, 1).pos.epoch, u1.pos.epoch);
    close_store(h);
}

/* max_rooms counts rooms without members: held rooms are never dropped,
 * the least recently used unheld stream goes, and a dropped stream's room
 * comes back with a new epoch. */
static void test_hold_and_room_cap(void)
{
    struct hub_history_config cfg;
    struct hub_history *h;
    char name[32];

    hub_history_config_default(&cfg);
    cfg.max_rooms = 3;
    CHECK_EQ(hub_history_open_memory(&h, &cfg), 0);
    CHECK_EQ(hub_history_hold(h, iov("live"), 1), 0);
    CHECK_EQ(hub_history_hold(h, iov("live"), 1), 0); /* twice: harmless */
    /* A held room has state (its epoch) before its first message. */
    struct op e0 = read_sync(h, "live", HUB_HISTORY_LATEST, 0, 1);
    CHECK_EQ(stats_of(h).rooms, 1);
    CHECK_EQ(stats_of(h).held, 1);
    CHECK_EQ(append_sync(h, "live", "ann", "hello", "", 1).offset, 1);
    CHECK_STR(read_sync(h, "live", HUB_HISTORY_LATEST, 0, 1).pos.epoch, e0.pos.epoch);

    CHECK_EQ(append_sync(h, "gone", "ann", "g", "", 1).offset, 1);
    struct op g0 = read_sync(h, "gone", HUB_HISTORY_LATEST, 0, 1);
    for (int i = 0; i < 20; i++) {
        snprintf(name, sizeof(name), "flood-%d", i);
        CHECK_EQ(append_sync(h, name, "eve", "x", "", 1).offset, 1);
        CHECK(stats_of(h).rooms <= 4);
    }
    struct hub_history_stats st = stats_of(h);
    CHECK_EQ(st.rooms, 4); /* three unheld and the held one */
    CHECK_EQ(st.held, 1);
    CHECK_EQ(st.dropped, 18);
    struct op live = read_sync(h, "live", HUB_HISTORY_LATEST, 0, 10);
    check_range(&live, 1, 1, 1);
    CHECK_STR(live.pos.epoch, e0.pos.epoch);
    /* "gone" was the least recently used: it starts again, in a new epoch. */
    struct op g1 = read_sync(h, "gone", HUB_HISTORY_LATEST, 0, 1);
    CHECK_EQ(g1.pos.last, 0);
    CHECK(strcmp(g1.pos.epoch, g0.pos.epoch) != 0);
    /* The newest flood rooms are there; the oldest are gone. */
    CHECK_EQ(read_sync(h, "flood-19", HUB_HISTORY_LATEST, 0, 1).pos.last, 1);
    CHECK_EQ(read_sync(h, "flood-0", HUB_HISTORY_LATEST, 0, 1).pos.last, 0);

    /* Let go, the room is an ordinary one again and may be dropped. */
    CHECK_EQ(hub_history_hold(h, iov("live"), 0), 0);
    CHECK_EQ(stats_of(h).held, 0);
    CHECK(stats_of(h).rooms <= 3);
    /* A held room that never had a message needs no state once let go. */
    size_t rooms = stats_of(h).rooms;
    CHECK_EQ(hub_history_hold(h, iov("brief"), 1), 0);
    CHECK_EQ(stats_of(h).rooms, rooms + 1);
    CHECK_EQ(hub_history_hold(h, iov("brief"), 0), 0);
    CHECK_EQ(stats_of(h).rooms, rooms);
    CHECK_EQ(hub_history_hold(h, iov("never-held"), 0), 0);
    close_store(h);
}

/* The byte budget with rooms without members: whole rings go, least
 * recently used first, and the position stays (a resume sees a gap). */
static void test_byte_budget_unheld(void)
{
    struct hub_history_config cfg;
    struct hub_history *h;
    static char big[65536 + 1];
    char name[32];

    memset(big, 'b', sizeof(big) - 1);
    hub_history_config_default(&cfg);
    cfg.max_bytes = 1 << 20;
    CHECK_EQ(hub_history_open_memory(&h, &cfg), 0);
    CHECK_EQ(append_sync(h, "first", "ann", big, "", 1).offset, 1);
    struct op f0 = read_sync(h, "first", HUB_HISTORY_LATEST, 0, 1);
    uint64_t peak = 0;
    for (int i = 0; i < 200; i++) {
        snprintf(name, sizeof(name), "room-%d", i % 50);
        CHECK_EQ(append_sync(h, name, "ann", big, "", 1).err, 0);
        struct hub_history_stats st = stats_of(h);
        if (st.bytes > peak)
            peak = st.bytes;
        CHECK(st.bytes <= cfg.max_bytes);
    }
    fprintf(stderr,
            "byte budget, no members: 201 appends of 64 KiB under a 1 MiB budget, peak %llu "
            "bytes, %llu messages kept, %llu dropped\n",
            (unsigned long long)peak, (unsigned long long)stats_of(h).messages,
            (unsigned long long)stats_of(h).dropped);
    CHECK(stats_of(h).messages >= 14);
    /* Rooms lose whole rings, least recently used first: the newest room
     * keeps its newest message only (its older ones went with its ring on
     * an earlier round), and the first one lost its ring but kept its
     * position and epoch, so a resume across it is a gap. */
    struct op n = read_sync(h, "room-49", HUB_HISTORY_LATEST, 0, 10);
    check_range(&n, 4, 4, 1);
    CHECK_EQ(n.pos.first, 4);
    struct op f1 = read_sync(h, "first", HUB_HISTORY_LATEST, 0, 10);
    CHECK_EQ(f1.n, 0);
    CHECK_EQ(f1.pos.last, 1);
    CHECK_EQ(f1.pos.first, 2);
    CHECK_STR(f1.pos.epoch, f0.pos.epoch);
    CHECK_EQ(append_sync(h, "first", "ann", "again", "", 1).offset, 2);
    close_store(h);
}

/* Held rooms alone over the budget: the largest loses its oldest messages,
 * never the newest of any held room. */
static void test_byte_budget_held(void)
{
    struct hub_history_config cfg;
    struct hub_history *h;
    static char big[65536 + 1];
    char name[32];

    memset(big, 'h', sizeof(big) - 1);
    hub_history_config_default(&cfg);
    cfg.max_bytes = 1 << 20;
    CHECK_EQ(hub_history_open_memory(&h, &cfg), 0);
    for (int r = 0; r < 4; r++) {
        snprintf(name, sizeof(name), "held-%d", r);
        CHECK_EQ(hub_history_hold(h, iov(name), 1), 0);
    }
    /* held-0 gets most of the traffic; the others a few each. */
    for (int i = 0; i < 60; i++) {
        snprintf(name, sizeof(name), "held-%d", i % 10 == 0 ? 1 + (i / 10) % 3 : 0);
        CHECK_EQ(append_sync(h, name, "ann", big, "", 1).err, 0);
        CHECK(stats_of(h).bytes <= cfg.max_bytes);
    }
    struct op o[4];
    for (int r = 0; r < 4; r++) {
        snprintf(name, sizeof(name), "held-%d", r);
        o[r] = read_sync(h, name, HUB_HISTORY_LATEST, 0, MAX_MSGS);
        CHECK(o[r].n >= 1);
        CHECK_EQ(o[r].offs[o[r].n - 1], o[r].pos.last); /* the newest is there */
        CHECK_EQ(o[r].pos.first, o[r].pos.last - o[r].n + 1);
        fprintf(stderr, "byte budget, held: %s last %llu first %llu\n", name,
                (unsigned long long)o[r].pos.last, (unsigned long long)o[r].pos.first);
    }
    /* The busy room paid: it was trimmed, the quiet ones kept theirs. */
    CHECK_EQ(o[0].pos.last, 54);
    CHECK(o[0].pos.first > 1);
    for (int r = 1; r < 4; r++)
        CHECK_EQ(o[r].pos.first, 1);

    /* With a budget smaller than one message per held room, every held
     * room still keeps its newest message, and nothing else. */
    for (int r = 0; r < 4; r++) {
        snprintf(name, sizeof(name), "held-%d", r);
        CHECK_EQ(append_sync(h, name, "ann", big, "", 1).err, 0);
    }
    struct hub_history_config tiny = cfg;
    tiny.max_bytes = 100000;
    struct hub_history *t;
    CHECK_EQ(hub_history_open_memory(&t, &tiny), 0);
    for (int r = 0; r < 4; r++) {
        snprintf(name, sizeof(name), "held-%d", r);
        CHECK_EQ(hub_history_hold(t, iov(name), 1), 0);
        for (int i = 0; i < 3; i++)
            CHECK_EQ(append_sync(t, name, "ann", big, "", 1).err, 0);
    }
    CHECK_EQ(stats_of(t).messages, 4);
    for (int r = 0; r < 4; r++) {
        snprintf(name, sizeof(name), "held-%d", r);
        struct op x = read_sync(t, name, HUB_HISTORY_LATEST, 0, 10);
        check_range(&x, 3, 3, 1);
    }
    close_store(t);
    close_store(h);
}

#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33)) &&          \
    !defined(__SANITIZE_ADDRESS__)
#include <malloc.h>
#define HAVE_MALLINFO2 1
static size_t heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}
#endif

/* The byte count is honest: it matches what the allocator reports, and the
 * default budget holds under 64 KiB lines in many rooms. */
static void test_byte_accounting(void)
{
    struct hub_history_config cfg;
    struct hub_history *h;
    static char big[65536 + 1];
    char name[32], text[64], cmid[32];

    hub_history_config_default(&cfg);
#ifdef HAVE_MALLINFO2
    size_t heap0 = heap_in_use();
#endif
    CHECK_EQ(hub_history_open_memory(&h, &cfg), 0);
    /* Small messages in many rooms: headers, rings and the table count. */
    for (int i = 0; i < 20000; i++) {
        snprintf(name, sizeof(name), "r%d", i % 2000);
        snprintf(text, sizeof(text), "message %d", i);
        snprintf(cmid, sizeof(cmid), "c%d", i);
        CHECK_EQ(append_sync(h, name, "someone", text, i % 3 ? "" : cmid, i).dup, 0);
    }
    struct hub_history_stats st = stats_of(h);
    CHECK_EQ(st.messages, 20000);
    CHECK_EQ(st.rooms, 2000);
#ifdef HAVE_MALLINFO2
    if (getenv("CHATHUB_SANITIZED") == NULL) {
        size_t heap = heap_in_use() - heap0;
        double ratio = (double)st.bytes / (double)heap;
        fprintf(stderr,
                "byte accounting, 20000 small messages in 2000 rooms: counted %llu, allocator "
                "%zu (ratio %.4f)\n",
                (unsigned long long)st.bytes, heap, ratio);
        CHECK(ratio > 0.97 && ratio < 1.03);
    }
#endif
    close_store(h);

    /* 40 writers filling rooms with 64 KiB lines, as the --no-persist RSS
     * check does: 160 MiB offered to the default 64 MiB budget. */
    memset(big, 'x', sizeof(big) - 1);
#ifdef HAVE_MALLINFO2
    heap0 = heap_in_use();
#endif
    CHECK_EQ(hub_history_open_memory(&h, &cfg), 0);
    uint64_t peak = 0;
    for (int i = 0; i < 2560; i++) {
        snprintf(name, sizeof(name), "fill-%d-%d", i % 40, (i / 40) % 8);
        CHECK_EQ(append_sync(h, name, "filler", big, "", i).err, 0);
        st = stats_of(h);
        if (st.bytes > peak)
            peak = st.bytes;
    }
    CHECK(peak <= cfg.max_bytes);
    fprintf(stderr,
            "byte budget, default %llu: 2560 lines of 64 KiB in 320 rooms: peak counted %llu, "
            "%llu messages kept, %llu dropped\n",
            (unsigned long long)cfg.max_bytes, (unsigned long long)peak,
            (unsigned long long)st.messages, (unsigned long long)st.dropped);
#ifdef HAVE_MALLINFO2
    if (getenv("CHATHUB_SANITIZED") == NULL) {
        size_t heap = heap_in_use() - heap0;
        fprintf(stderr, "byte budget: allocator reports %zu bytes held (counted %llu)\n", heap,
                (unsigned long long)st.bytes);
        CHECK(heap <= cfg.max_bytes + cfg.max_bytes / 32);
        CHECK((double)st.bytes / (double)heap > 0.97);
    }
#endif
    close_store(h);
}

/* ---- The test store whose completions the test releases ---- */

struct chained {
    struct hub_history *h; /* the store */
    int left;              /* appends still to make from callbacks */
    int done;              /* completions seen */
    uint64_t last;         /* newest offset seen */
};

/* Each completion queues the next append, as a join reply that starts a
 * resend would. */
static void on_chained(void *data, int err, uint64_t offset, int64_t ts, int dup)
{
    struct chained *c = data;
    (void)ts, (void)dup;
    CHECK_EQ(err, 0);
    CHECK_EQ(offset, c->last + 1);
    c->last = offset;
    c->done++;
    if (c->left-- > 0)
        CHECK_EQ(
            hub_history_append(c->h, iov("c"), iov("ann"), iov("x"), iov(""), 1, on_chained, c), 0);
}

static void test_manual(void)
{
    struct hub_history_config cfg;
    struct hub_history *h;
    struct op ops[8];
    int closed = 0;

    hub_history_config_default(&cfg);
    CHECK_EQ(history_manual_open(&h, &cfg), 0);
    memset(ops, 0, sizeof(ops));
    order_n = 0;
    for (int i = 0; i < 8; i++)
        ops[i].seq = i;
    CHECK_EQ(
        hub_history_append(h, iov("r"), iov("ann"), iov("one"), iov("c1"), 10, on_append, &ops[0]),
        0);
    CHECK_EQ(hub_history_read(h, iov("r"), HUB_HISTORY_LATEST, 0, 10, on_read, &ops[1]), 0);
    CHECK_EQ(
        hub_history_append(h, iov("r"), iov("ann"), iov("two"), iov(""), 11, on_append, &ops[2]),
        0);
    CHECK_EQ(hub_history_barrier(h, on_barrier, &ops[3]), 0);
    CHECK_EQ(hub_history_append(h, iov("r"), iov("ann"), iov("one again"), iov("c1"), 12, on_append,
                                &ops[4]),
             0);
    /* Nothing completes until released. */
    CHECK_EQ(history_manual_pending(h), 5);
    CHECK_EQ(order_n, 0);
    CHECK_EQ(history_manual_release(h, 1), 1);
    CHECK_EQ(ops[0].done, 1);
    CHECK_EQ(ops[0].offset, 1);
    CHECK_EQ(ops[1].done, 0);
    /* The read sees the append made before it and not the one made after
     * it, which is still queued behind it. */
    CHECK_EQ(history_manual_release(h, 1), 1);
    check_range(&ops[1], 1, 1, 1);
    CHECK_EQ(ops[2].done, 0);
    CHECK_EQ(history_manual_release(h, 2), 2);
    CHECK_EQ(ops[2].offset, 2);
    CHECK_EQ(ops[3].done, 1);
    /* A storage failure on purpose, then a real duplicate. */
    CHECK_EQ(
        hub_history_append(h, iov("r"), iov("bob"), iov("fails"), iov(""), 13, on_append, &ops[5]),
        0);
    history_manual_fail_next(h, HUB_EIO);
    CHECK_EQ(history_manual_release(h, 1), 1);
    CHECK_EQ(ops[4].err, HUB_EIO); /* the next one released was ops[4] */
    CHECK_EQ(ops[4].offset, 0);
    CHECK_EQ(history_manual_release_all(h), 1);
    CHECK_EQ(ops[5].err, 0);
    CHECK_EQ(ops[5].offset, 3);
    CHECK_EQ(
        hub_history_append(h, iov("r"), iov("ann"), iov("dup"), iov("c1"), 14, on_append, &ops[6]),
        0);
    CHECK_EQ(history_manual_release_all(h), 1);
    CHECK_EQ(ops[6].dup, 1);
    CHECK_EQ(ops[6].offset, 1);
    CHECK_EQ(ops[6].ts, 10);
    /* Hold and stats reach the backing store at once. */
    CHECK_EQ(hub_history_hold(h, iov("r"), 1), 0);
    struct hub_history_stats st;
    hub_history_stats(h, &st);
    CHECK_EQ(st.held, 1);
    CHECK_EQ(st.messages, 3);
    /* Close is queued behind the rest; nothing is accepted after it. */
    CHECK_EQ(hub_history_read(h, iov("r"), HUB_HISTORY_LATEST, 0, 10, on_read, &ops[7]), 0);
    hub_history_close(h, on_closed, &closed);
    CHECK_EQ(hub_history_barrier(h, on_barrier, &ops[7]), HUB_ECLOSED);
    CHECK_EQ(history_manual_pending(h), 2);
    CHECK_EQ(history_manual_release(h, 1), 1);
    check_range(&ops[7], 1, 3, 1);
    CHECK_EQ(closed, 0);
    CHECK_EQ(history_manual_release(h, 5), 1);
    CHECK_EQ(closed, 1);
    CHECK_EQ(history_manual_pending(h), 0);
    for (int i = 1; i < order_n; i++)
        CHECK(order_log[i] > order_log[i - 1]);
    CHECK_EQ(order_n, 8);
    hub_history_free(h);

    /* Requests made from callbacks queue behind the rest, and
     * release_all runs them too. */
    struct chained c = {NULL, 4, 0, 0};
    CHECK_EQ(history_manual_open(&c.h, &cfg), 0);
    CHECK_EQ(hub_history_append(c.h, iov("c"), iov("ann"), iov("x"), iov(""), 1, on_chained, &c),
             0);
    CHECK_EQ(history_manual_release(c.h, 2), 2);
    CHECK_EQ(c.done, 2);
    CHECK_EQ(history_manual_pending(c.h), 1);
    CHECK_EQ(history_manual_release_all(c.h), 3);
    CHECK_EQ(c.done, 5);
    CHECK_EQ(history_manual_pending(c.h), 0);
    hub_history_free(c.h);
}

/* ---- SQLite only ---- */

/* Positions survive a restart; a lost file means new epochs. */
static void test_restart(void)
{
    struct hub_history_config cfg;
    struct hub_history *h;
    char dir[600], err[256], path[700];
    int64_t t0 = now_ms();

    hub_history_config_default(&cfg);
    fresh_dir(dir, sizeof(dir), "restart");
    CHECK_EQ(hub_history_open_sqlite(&h, &loop, dir, &cfg, err, sizeof(err)), 0);
    CHECK_EQ(append_sync(h, "lobby", "ann", "one", "c1", t0).offset, 1);
    CHECK_EQ(append_sync(h, "lobby", "bob", "two", "c2", t0 + 1).offset, 2);
    CHECK_EQ(append_sync(h, "lobby", "ann", "three", "", t0 + 2).offset, 3);
    CHECK_EQ(append_sync(h, "dev", "ann", "d1", "", t0 + 3).offset, 1);
    struct op before = read_sync(h, "lobby", HUB_HISTORY_LATEST, 0, 0);
    struct op dev = read_sync(h, "dev", HUB_HISTORY_LATEST, 0, 0);
    close_store(h);

    CHECK_EQ(hub_history_open_sqlite(&h, &loop, dir, &cfg, err, sizeof(err)), 0);
    struct op after = read_sync(h, "lobby", HUB_HISTORY_LATEST, 0, 10);
    check_range(&after, 1, 3, 1);
    CHECK_STR(after.pos.epoch, before.pos.epoch);
    CHECK_EQ(after.pos.last, 3);
    CHECK_STR(after.texts[1], "two");
    CHECK_STR(after.froms[1], "bob");
    CHECK_EQ(after.tss[2], t0 + 2);
    struct op dev2 = read_sync(h, "dev", HUB_HISTORY_LATEST, 0, 10);
    CHECK_STR(dev2.pos.epoch, dev.pos.epoch);
    CHECK_EQ(dev2.pos.last, 1);
    /* Offsets continue, and a resend from before the restart is known. */
    CHECK_EQ(append_sync(h, "lobby", "ann", "four", "", t0 + 4).offset, 4);
    struct op dup = append_sync(h, "lobby", "bob", "two again", "c2", t0 + 5);
    CHECK_EQ(dup.dup, 1);
    CHECK_EQ(dup.offset, 2);
    CHECK_EQ(dup.ts, t0 + 1);
    close_store(h);

    /* The history is lost: every room starts a new epoch. */
    db_path(path, sizeof(path), dir);
    uv_fs_t req;
    CHECK_EQ(uv_fs_unlink(&loop, &req, path, NULL), 0);
    uv_fs_req_cleanup(&req);
    CHECK_EQ(hub_history_open_sqlite(&h, &loop, dir, &cfg, err, sizeof(err)), 0);
    struct op lost = read_sync(h, "lobby", HUB_HISTORY_LATEST, 0, 10);
    check_range(&lost, 1, 0, 1);
    CHECK_EQ(lost.pos.last, 0);
    CHECK(is_epoch(lost.pos.epoch));
    CHECK(strcmp(lost.pos.epoch, before.pos.epoch) != 0);
    CHECK_EQ(append_sync(h, "lobby", "ann", "fresh", "c1", t0).offset, 1);
    close_store(h);
}

static int64_t child_status;

static void on_child_exit(uv_process_t *p, int64_t status, int signal)
{
    child_status = signal != 0 ? -signal : status;
    uv_close((uv_handle_t *)p, NULL);
}

/* Runs this executable with args and returns its exit status, or minus the
 * signal that ended it. */
static int64_t run_child(char **args)
{
    uv_process_t proc;
    uv_process_options_t opts;
    uv_stdio_container_t stdio[3];
    memset(&opts, 0, sizeof(opts));
    for (int i = 0; i < 3; i++) {
        stdio[i].flags = UV_INHERIT_FD;
        stdio[i].data.fd = i;
    }
    opts.file = self_path;
    opts.args = args;
    opts.exit_cb = on_child_exit;
    opts.stdio = stdio;
    opts.stdio_count = 3;
    child_status = -100;
    CHECK_EQ(uv_spawn(&loop, &proc, &opts), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    return child_status;
}

/* A second hub on the same directory fails at start, in this process and
 * in another one. */
static void test_lock(void)
{
    struct hub_history_config cfg;
    struct hub_history *h, *h2 = NULL;
    char dir[600], err[256];

    hub_history_config_default(&cfg);
    fresh_dir(dir, sizeof(dir), "lock");
    CHECK_EQ(hub_history_open_sqlite(&h, &loop, dir, &cfg, err, sizeof(err)), 0);
    CHECK_EQ(append_sync(h, "r", "ann", "x", "", 1).offset, 1);

    uint64_t t = uv_hrtime();
    CHECK_EQ(hub_history_open_sqlite(&h2, &loop, dir, &cfg, err, sizeof(err)), HUB_EIO);
    CHECK(strstr(err, "locked by another running chathub") != NULL);
    CHECK(strstr(err, "chathub.db") != NULL);
    CHECK(h2 == NULL);
    fprintf(stderr, "second open in-process (%.1f ms): %s\n", (uv_hrtime() - t) / 1e6, err);

    char *args[] = {(char *)self_path, "--try-open", dir, NULL};
    t = uv_hrtime();
    CHECK_EQ(run_child(args), 2);
    fprintf(stderr, "second open in another process exited %lld after %.1f ms\n",
            (long long)child_status, (uv_hrtime() - t) / 1e6);

    /* The first store is unharmed and, once closed, frees the directory. */
    CHECK_EQ(append_sync(h, "r", "ann", "y", "", 2).offset, 2);
    close_store(h);
    CHECK_EQ(hub_history_open_sqlite(&h2, &loop, dir, &cfg, err, sizeof(err)), 0);
    CHECK_EQ(read_sync(h2, "r", HUB_HISTORY_LATEST, 0, 0).pos.last, 2);
    close_store(h2);
}

static void test_corrupt(void)
{
    struct hub_history_config cfg;
    struct hub_history *h;
    char dir[600], err[256], path[700], junk[8192];

    hub_history_config_default(&cfg);

    /* Garbage from the first byte: not a database at all. */
    fresh_dir(dir, sizeof(dir), "garbage");
    uv_fs_t req;
    CHECK_EQ(uv_fs_mkdir(&loop, &req, dir, 0755, NULL), 0);
    uv_fs_req_cleanup(&req);
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (char)("not a database! "[i % 16] ^ (i / 16));
    db_path(path, sizeof(path), dir);
    write_file(path, junk, sizeof(junk), -1);
    CHECK_EQ(hub_history_open_sqlite(&h, &loop, dir, &cfg, err, sizeof(err)), HUB_EIO);
    CHECK(strstr(err, "is corrupted") != NULL);
    CHECK(strchr(err, '\n') == NULL);
    fprintf(stderr, "garbage file: %s\n", err);

    /* A valid file with one table page overwritten. */
    fresh_dir(dir, sizeof(dir), "damaged");
    CHECK_EQ(hub_history_open_sqlite(&h, &loop, dir, &cfg, err, sizeof(err)), 0);
    for (int i = 0; i < 200; i++)
        CHECK_EQ(append_sync(h, i % 2 ? "a" : "b", "ann", "some text to fill pages", "", i).err, 0);
    close_store(h);
    db_path(path, sizeof(path), dir);
    memset(junk, 0x5a, sizeof(junk));
    write_file(path, junk, 4096, 4096);
    CHECK_EQ(hub_history_open_sqlite(&h, &loop, dir, &cfg, err, sizeof(err)), HUB_EIO);
    CHECK(strstr(err, "is corrupted") != NULL);
    CHECK(strchr(err, '\n') == NULL);
    fprintf(stderr, "damaged page: %s\n", err);
}

static void test_unwritable(void)
{
    struct hub_history_config cfg;
    struct hub_history *h;
    char dir[600], child[700], err[256];
    uv_fs_t req;

    hub_history_config_default(&cfg);

    /* A path under a regular file can never be created, root or not. */
    fresh_dir(dir, sizeof(dir), "plainfile");
    write_file(dir, "x", 1, -1);
    snprintf(child, sizeof(child), "%s/data", dir);
    CHECK_EQ(hub_history_open_sqlite(&h, &loop, child, &cfg, err, sizeof(err)), HUB_EIO);
    CHECK(strstr(err, "cannot open history in") != NULL);
    CHECK(strstr(err, "not a directory") != NULL);
    fprintf(stderr, "path under a file: %s\n", err);
    CHECK_EQ(hub_history_open_sqlite(&h, &loop, dir, &cfg, err, sizeof(err)), HUB_EIO);
    CHECK(strstr(err, "not a directory") != NULL);
    fprintf(stderr, "path is a file: %s\n", err);

    /* Missing parents are created. */
    fresh_dir(dir, sizeof(dir), "parents");
    snprintf(child, sizeof(child), "%s/a/b/", dir);
    CHECK_EQ(hub_history_open_sqlite(&h, &loop, child, &cfg, err, sizeof(err)), 0);
    close_store(h);

    /* Permission bits: root bypasses them, so this part only runs for
     * other users. */
    fresh_dir(dir, sizeof(dir), "readonly");
    CHECK_EQ(uv_fs_mkdir(&loop, &req, dir, 0500, NULL), 0);
    uv_fs_req_cleanup(&req);
#ifdef _WIN32
    /* Windows does not apply POSIX permission bits to directories. */
    fprintf(stderr, "windows: directory permission bits are not enforced, the chmod 0500 "
                    "case is skipped\n");
    return;
#else
    if (geteuid() == 0) {
        fprintf(stderr, "running as root: permission bits are not enforced, the chmod 0500 "
                        "case is skipped\n");
        return;
    }
#endif
    snprintf(child, sizeof(child), "%s/data", dir);
    CHECK_EQ(hub_history_open_sqlite(&h, &loop, child, &cfg, err, sizeof(err)), HUB_EIO);
    CHECK(strstr(err, "directory not writable") != NULL);
    fprintf(stderr, "child of a 0500 directory: %s\n", err);
    CHECK_EQ(hub_history_open_sqlite(&h, &loop, dir, &cfg, err, sizeof(err)), HUB_EIO);
    CHECK(strstr(err, "directory not writable") != NULL);
    fprintf(stderr, "0500 directory: %s\n", err);
}

/* Every acknowledged append survives the process being killed: no close,
 * no checkpoint, only the WAL. */
static void test_crash(void)
{
    struct hub_history_config cfg;
    struct hub_history *h;
    char dir[600], err[256];

    hub_history_config_default(&cfg);
    fresh_dir(dir, sizeof(dir), "crash");
    char *args[] = {(char *)self_path, "--crash-after", dir, NULL};
#ifdef _WIN32
    CHECK_EQ(run_child(args), 128 + SIGKILL); /* TerminateProcess's exit code */
#else
    CHECK_EQ(run_child(args), -SIGKILL);
#endif
    CHECK_EQ(hub_history_open_sqlite(&h, &loop, dir, &cfg, err, sizeof(err)), 0);
    struct op o = read_sync(h, "r", HUB_HISTORY_LATEST, 0, MAX_MSGS);
    CHECK(o.pos.last == CRASH_ACKED || o.pos.last == CRASH_ACKED + 1);
    check_range(&o, 1, o.pos.last, 1);
    CHECK_STR(o.texts[CRASH_ACKED - 1], "acked");
    CHECK_EQ(append_sync(h, "r", "ann", "after", "", 0).offset, o.pos.last + 1);
    close_store(h);
    fprintf(stderr,
            "killed with %d appends acknowledged and 1 queued: %llu found on reopen, offsets "
            "continue\n",
            CRASH_ACKED, (unsigned long long)o.pos.last);
}

/* A full disk fails the appends it refuses, alone and temporarily. */
static void test_disk_full(void)
{
    struct hub_history_config cfg;
    struct hub_history *h;
    char dir[600], err[256], text[1500];
    enum { N = 40, MID = 20 };
    struct op ops[N], mid;

    hub_history_config_default(&cfg);
    fresh_dir(dir, sizeof(dir), "full");
#ifdef _WIN32
    CHECK_EQ(_putenv_s("CHATHUB_TEST_MAX_PAGES", "30"), 0);
#else
    CHECK_EQ(setenv("CHATHUB_TEST_MAX_PAGES", "30", 1), 0);
#endif
    CHECK_EQ(hub_history_open_sqlite(&h, &loop, dir, &cfg, err, sizeof(err)), 0);
#ifdef _WIN32
    _putenv_s("CHATHUB_TEST_MAX_PAGES", "");
#else
    unsetenv("CHATHUB_TEST_MAX_PAGES");
#endif
    memset(text, 'x', sizeof(text) - 1);
    text[sizeof(text) - 1] = '\0';
    memset(ops, 0, sizeof(ops));
    order_n = 0;

    /* All at once: the group transaction fails and is redone one by one.
     * The read in the middle must see only what was really stored. */
    memset(&mid, 0, sizeof(mid));
    mid.seq = N;
    for (int i = 0; i < N; i++) {
        ops[i].seq = i;
        CHECK_EQ(hub_history_append(h, iov("big"), iov("ann"), iov(text), iov(""), i, on_append,
                                    &ops[i]),
                 0);
        if (i == MID - 1)
            CHECK_EQ(
                hub_history_read(h, iov("big"), HUB_HISTORY_LATEST, 0, MAX_MSGS, on_read, &mid), 0);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ(order_n, N + 1);
    CHECK_EQ(order_log[MID], N);
    int ok = 0, eio = 0, other = 0;
    for (int i = 0; i < N; i++) {
        CHECK_EQ(order_log[i < MID ? i : i + 1], i);
        if (ops[i].err == 0)
            CHECK_EQ(ops[i].offset, (uint64_t)++ok);
        else if (ops[i].err == HUB_EIO)
            eio++;
        else
            other++;
    }
    fprintf(stderr, "disk full: %d appends stored, %d refused with HUB_EIO\n", ok, eio);
    CHECK(ok > 0);
    CHECK(eio > 0);
    CHECK_EQ(other, 0);
    CHECK(ok < MID);
    check_range(&mid, 1, (uint64_t)ok, 1);
    CHECK_EQ(mid.pos.last, (uint64_t)ok);

    /* Reads and barriers still work, and see exactly what was stored. */
    struct op o = read_sync(h, "big", HUB_HISTORY_LATEST, 0, MAX_MSGS);
    check_range(&o, 1, (uint64_t)ok, 1);
    CHECK_EQ(o.pos.last, (uint64_t)ok);
    struct op b;
    memset(&b, 0, sizeof(b));
    CHECK_EQ(hub_history_barrier(h, on_barrier, &b), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ(b.done, 1);
    /* One more alone still fails, and leaves the counter where it was. */
    CHECK_EQ(append_sync(h, "big", "ann", text, "", 0).err, HUB_EIO);
    CHECK_EQ(append_sync(h, "other", "ann", text, "", 0).err, HUB_EIO);
    o = read_sync(h, "big", HUB_HISTORY_LATEST, 0, 1);
    CHECK_EQ(o.err, 0);
    CHECK_EQ(o.pos.last, (uint64_t)ok);
    o = read_sync(h, "other", HUB_HISTORY_LATEST, 0, 1);
    CHECK_EQ(o.err, 0);
    CHECK_EQ(o.pos.last, 0);
    close_store(h);

    /* With room again, the stored ones are there and offsets continue. */
    CHECK_EQ(hub_history_open_sqlite(&h, &loop, dir, &cfg, err, sizeof(err)), 0);
    o = read_sync(h, "big", HUB_HISTORY_LATEST, 0, MAX_MSGS);
    check_range(&o, 1, (uint64_t)ok, 1);
    CHECK_EQ(append_sync(h, "big", "ann", "small", "", 0).offset, (uint64_t)ok + 1);
    close_store(h);
}

/* free without close stops the writer; the memory goes on the next loop
 * turn, and the directory's lock with the connection. */
static void test_free_without_close(void)
{
    struct hub_history_config cfg;
    struct hub_history *h;
    char dir[600], err[256];

    hub_history_config_default(&cfg);
    fresh_dir(dir, sizeof(dir), "free");
    CHECK_EQ(hub_history_open_sqlite(&h, &loop, dir, &cfg, err, sizeof(err)), 0);
    hub_history_free(h);
    uv_run(&loop, UV_RUN_DEFAULT);

    CHECK_EQ(hub_history_open_sqlite(&h, &loop, dir, &cfg, err, sizeof(err)), 0);
    CHECK_EQ(append_sync(h, "r", "ann", "kept", "", 1).offset, 1);
    hub_history_free(h);
    uv_run(&loop, UV_RUN_DEFAULT);

    CHECK_EQ(hub_history_open_sqlite(&h, &loop, dir, &cfg, err, sizeof(err)), 0);
    struct op o = read_sync(h, "r", HUB_HISTORY_LATEST, 0, 10);
    check_range(&o, 1, 1, 1);
    CHECK_STR(o.texts[0], "kept");
    close_store(h);
}

/* More completions than one wake-up fires (1,024), and a barrier queued
 * from the first of them. The writer finishes the barrier while the loop is
 * still firing the first wake-up, so its uv_async_send folds into the one the
 * loop sends itself to continue: the barrier must still fire, from the done
 * queue, once the ready list runs dry. */
#define STRAND_N 3000

struct strand {
    struct hub_history *h; /* the store */
    unsigned appended;     /* append completions */
    unsigned errors;       /* failed appends */
    int barrier_fired;     /* the barrier's completions */
    int barrier_queued;    /* hub_history_barrier's result, once issued */
    uv_timer_t watchdog;   /* stops the loop if the barrier never fires */
};

static void on_strand_barrier(void *data)
{
    struct strand *st = data;
    st->barrier_fired++;
    if (!uv_is_closing((uv_handle_t *)&st->watchdog))
        uv_close((uv_handle_t *)&st->watchdog, NULL);
}

static void on_strand_append(void *data, int err, uint64_t offset, int64_t ts, int dup)
{
    struct strand *st = data;
    (void)offset, (void)ts, (void)dup;
    if (err != 0)
        st->errors++;
    if (st->appended++ == 0) {
        st->barrier_queued = hub_history_barrier(st->h, on_strand_barrier, st);
        /* Give the writer the time to commit the barrier while this
         * wake-up still has more than 1,000 completions to fire. */
        uv_sleep(200);
    }
}

static void on_strand_watchdog(uv_timer_t *t)
{
    uv_stop(t->loop);
}

static void test_stranded(void)
{
    struct hub_history_config cfg;
    struct strand st;
    char dir[600], err[256];

    hub_history_config_default(&cfg);
    fresh_dir(dir, sizeof(dir), "strand");
    memset(&st, 0, sizeof(st));
    st.barrier_queued = 1;
    CHECK_EQ(hub_history_open_sqlite(&st.h, &loop, dir, &cfg, err, sizeof(err)), 0);
    for (unsigned i = 0; i < STRAND_N; i++)
        CHECK_EQ(hub_history_append(st.h, iov("r"), iov("ann"), iov("x"), iov(""), (int64_t)i,
                                    on_strand_append, &st),
                 0);
    /* Let the writer commit all of them, so that the first wake-up takes
     * every completion at once. */
    uv_sleep(500);
    CHECK_EQ(uv_timer_init(&loop, &st.watchdog), 0);
    CHECK_EQ(uv_timer_start(&st.watchdog, on_strand_watchdog, 5000, 0), 0);
    uv_unref((uv_handle_t *)&st.watchdog);
    uv_run(&loop, UV_RUN_DEFAULT);
    fprintf(stderr, "stranded: %u of %d appends completed, barrier_fired=%d\n", st.appended,
            STRAND_N, st.barrier_fired);
    CHECK_EQ(st.appended, STRAND_N);
    CHECK_EQ(st.errors, 0);
    CHECK_EQ(st.barrier_queued, 0);
    CHECK_EQ(st.barrier_fired, 1);
    if (st.barrier_fired == 0)
        uv_close((uv_handle_t *)&st.watchdog, NULL);
    close_store(st.h);
    CHECK_EQ(st.barrier_fired, 1);
}

/* ---- Throughput (printed, never asserted) ---- */

struct bench {
    unsigned done;         /* completions */
    unsigned errors;       /* failed appends */
    unsigned next;         /* serial mode: appends issued */
    unsigned total;        /* serial mode: appends wanted */
    uint64_t last[8];      /* newest offset seen per room */
    unsigned disorder;     /* offsets that went backwards */
    struct hub_history *h; /* serial mode: where to append next */
};

static const char *const bench_rooms[8] = {"r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7"};

static void on_bench_append(void *data, int err, uint64_t offset, int64_t ts, int dup);

static void bench_issue(struct bench *b, unsigned i)
{
    char text[64];
    snprintf(text, sizeof(text), "message number %u with a little text", i);
    CHECK_EQ(hub_history_append(b->h, iov(bench_rooms[i % 8]), iov("bench"), iov(text), iov(""),
                                (int64_t)i, on_bench_append, b),
             0);
}

static void on_bench_append(void *data, int err, uint64_t offset, int64_t ts, int dup)
{
    struct bench *b = data;
    unsigned room = (unsigned)ts % 8;
    if (err != 0)
        b->errors++;
    if (offset <= b->last[room])
        b->disorder++;
    b->last[room] = offset;
    b->done++;
    if (b->next < b->total)
        bench_issue(b, b->next++);
}

static double bench_run(int kind, unsigned n, int serial)
{
    struct hub_history_config cfg;
    struct bench b;
    char dir[600], err[256];

    hub_history_config_default(&cfg);
    fresh_dir(dir, sizeof(dir), "bench");
    memset(&b, 0, sizeof(b));
    CHECK_EQ(open_store(&b.h, kind, dir, &cfg, err, sizeof(err)), 0);
    uint64_t t = uv_hrtime();
    if (serial) {
        /* One append in flight at a time: each is its own transaction. */
        b.total = n;
        b.next = 1;
        bench_issue(&b, 0);
    } else {
        for (unsigned i = 0; i < n; i++)
            bench_issue(&b, i);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    double secs = (uv_hrtime() - t) / 1e9;
    CHECK_EQ(b.done, n);
    CHECK_EQ(b.errors, 0);
    CHECK_EQ(b.disorder, 0);
    for (int i = 0; i < 8; i++)
        CHECK_EQ(b.last[i], n / 8);
    close_store(b.h);
    return n / secs;
}

static void test_throughput(void)
{
    double grouped = bench_run(SQLITE, 50000, 0);
    double serial = bench_run(SQLITE, 5000, 1);
    double memory = bench_run(MEMORY, 50000, 0);
    fprintf(stderr,
            "throughput: sqlite %.0f appends/s with 50000 queued at once (group commit), "
            "%.0f appends/s with one in flight (a transaction each); memory %.0f appends/s\n",
            grouped, serial, memory);
}

/* ---- Main ---- */

static int try_open(const char *dir)
{
    struct hub_history_config cfg;
    struct hub_history *h;
    char err[256];
    int status;

    hub_history_config_default(&cfg);
    if (uv_loop_init(&loop) != 0)
        return 1;
    int rc = hub_history_open_sqlite(&h, &loop, dir, &cfg, err, sizeof(err));
    if (rc == 0) {
        close_store(h);
        status = 0;
    } else {
        fprintf(stderr, "child: %s\n", err);
        status = rc == HUB_EIO && strstr(err, "locked") != NULL ? 2 : 1;
    }
    uv_loop_close(&loop);
    return status;
}

/* Appends CRASH_ACKED messages, waiting for each acknowledgement, then
 * dies without closing anything. */
static int crash_after(const char *dir)
{
    struct hub_history_config cfg;
    struct hub_history *h;
    char err[256];

    hub_history_config_default(&cfg);
    if (uv_loop_init(&loop) != 0)
        return 1;
    if (hub_history_open_sqlite(&h, &loop, dir, &cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "child: %s\n", err);
        return 1;
    }
    for (int i = 1; i <= CRASH_ACKED; i++) {
        struct op a = append_sync(h, "r", "ann", i == CRASH_ACKED ? "acked" : "x", "", i);
        if (a.err != 0 || a.offset != (uint64_t)i)
            return 1;
    }
    /* Queued but never acknowledged: it may or may not survive. */
    struct op pending;
    memset(&pending, 0, sizeof(pending));
    hub_history_append(h, iov("r"), iov("ann"), iov("pending"), iov(""), 0, on_append, &pending);
#ifdef _WIN32
    /* No signals on Windows: end just as abruptly, with a telling exit code. */
    TerminateProcess(GetCurrentProcess(), 128 + SIGKILL);
#else
    raise(SIGKILL);
#endif
    return 1;
}

int main(int argc, char **argv)
{
    self_path = argv[0];
    if (argc == 3 && strcmp(argv[1], "--try-open") == 0)
        return try_open(argv[2]);
    if (argc == 3 && strcmp(argv[1], "--crash-after") == 0)
        return crash_after(argv[2]);
    if (uv_loop_init(&loop) != 0)
        return 1;
    make_temp_root();

    for (int kind = MEMORY; kind <= SQLITE; kind++) {
        int before = check_failures;
        test_order(kind);
        test_paging(kind);
        test_retention(kind);
        test_ttl(kind);
        test_close(kind);
        fprintf(stderr, "%s store: common tests %s\n", kind_name[kind],
                check_failures == before ? "passed" : "FAILED");
    }
    test_manual();
    test_read_creates_nothing();
    test_hold_and_room_cap();
    test_byte_budget_unheld();
    test_byte_budget_held();
    test_byte_accounting();
    test_restart();
    test_crash();
    test_lock();
    test_corrupt();
    test_unwritable();
    test_disk_full();
    test_free_without_close();
    test_stranded();
    test_throughput();

    tmp_remove_tree(&loop, root);
    CHECK_EQ(uv_loop_close(&loop), 0);
    return CHECK_DONE();
}
