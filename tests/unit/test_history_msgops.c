/*
 * test_history_msgops.c: replies, mentions, edits, deletes, reactions,
 * search, bans, mutes and topics (issues 13 and 15) through the public
 * history interface.
 *
 * The same bodies run against the memory store and the SQLite store (each
 * in a fresh directory under a temporary root), with an injected clock, so
 * both stores are held to the same answers. The SQLite store then has to
 * keep all of it across a close and a reopen, and its search index has to
 * follow the trimming by count and by age.
 */
#include "hub/history.h"

#include "check.h"
#include "tmpfs.h"

#include <uv.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum kind {
    MEMORY,
    SQLITE,
};

static const char *const kind_name[] = {"memory", "sqlite"};

static uv_loop_t loop;
static char root[512];
static int dir_seq;
static int64_t fake_now = 1000000;

static int64_t fake_clock(void)
{
    return fake_now;
}

static struct hub_iov iov(const char *s)
{
    struct hub_iov v = {s, s != NULL ? strlen(s) : 0};
    return v;
}

static void copy_iov(char *out, size_t outsz, struct hub_iov v)
{
    size_t n = v.len < outsz - 1 ? v.len : outsz - 1;
    if (n > 0)
        memcpy(out, v.base, n);
    out[n] = '\0';
}

/* ---- stores ---- */

struct store {
    int kind;
    char dir[600];
    struct hub_history_config cfg;
    struct hub_history *h;
};

/* The SQLite store runs every test twice: with its FTS5 index (1) and
 * without, scanning (0): both must give the same answers. */
static int sqlite_index = 1;

static void store_open(struct store *s, int kind, const struct hub_history_config *cfg)
{
    char err[256] = "";
    s->kind = kind;
    if (cfg != NULL) {
        s->cfg = *cfg;
    } else {
        hub_history_config_default(&s->cfg);
        s->cfg.now_ms = fake_clock;
    }
    s->cfg.search_index = sqlite_index;
    if (s->dir[0] == '\0')
        snprintf(s->dir, sizeof(s->dir), "%s/msgops-%d", root, ++dir_seq);
    int rc = kind == MEMORY
                 ? hub_history_open_memory(&s->h, &s->cfg)
                 : hub_history_open_sqlite(&s->h, &loop, s->dir, &s->cfg, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "open %s: %s\n", kind_name[kind], err);
    CHECK_EQ(rc, 0);
}

static void on_closed(void *data)
{
    ++*(int *)data;
}

static void store_close(struct store *s)
{
    int closed = 0;
    hub_history_close(s->h, on_closed, &closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ(closed, 1);
    hub_history_free(s->h);
    s->h = NULL;
}

/* Closes and opens again on the same directory (the memory store: no-op). */
static void store_reopen(struct store *s)
{
    if (s->kind == MEMORY)
        return;
    store_close(s);
    store_open(s, s->kind, &s->cfg);
}

/* ---- synchronous helpers ---- */

struct app {
    int done, err, dup;
    uint64_t offset;
};

static void on_append(void *data, int err, uint64_t offset, int64_t ts, int dup)
{
    struct app *a = data;
    (void)ts;
    a->done++;
    a->err = err;
    a->offset = offset;
    a->dup = dup;
}

struct msgx {
    const char *room, *from, *text, *cmid, *author, *actor, *mentions;
    uint64_t reply_to;
};

/* Appends and returns the offset, or -err when it failed. */
static long long add(struct store *s, const struct msgx *m)
{
    struct hub_history_new n = {
        .room = iov(m->room != NULL ? m->room : "lobby"),
        .from = iov(m->from != NULL ? m->from : "alice"),
        .text = iov(m->text),
        .cmid = iov(m->cmid),
        .author = iov(m->author),
        .actor = iov(m->actor),
        .mentions = iov(m->mentions),
        .reply_to = m->reply_to,
        .ts = fake_now,
    };
    struct app a = {0};
    CHECK_EQ(hub_history_append_ex(s->h, &n, on_append, &a), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ(a.done, 1);
    return a.err != 0 ? (long long)a.err : (long long)a.offset; /* errors are negative */
}

/* Shorthand: a message of alice ("u:alice") in lobby. */
static long long say(struct store *s, const char *text)
{
    struct msgx m = {.text = text, .author = "u:alice", .actor = "u:alice"};
    return add(s, &m);
}

#define MAXM 64

/* A page as the tests look at it: one line per message. */
struct page {
    int done, err, complete;
    size_t n;
    struct hub_history_pos pos;
    char topic[600];
    uint64_t off[MAXM];
    char line[MAXM][256]; /* "from|text|author|mentions|reply|edited|deleted|reactions" */
};

static void describe(const struct hub_history_msg *m, char *out, size_t outsz)
{
    char from[64], text[100], author[64], mentions[100];
    copy_iov(from, sizeof(from), m->from);
    copy_iov(text, sizeof(text), m->text);
    copy_iov(author, sizeof(author), m->author);
    copy_iov(mentions, sizeof(mentions), m->mentions);
    for (char *p = mentions; *p; p++)
        if (*p == '\n')
            *p = ',';
    int k = snprintf(out, outsz, "%s|%s|%s|%s|%llu|%lld|%d|", from, text, author, mentions,
                     (unsigned long long)m->reply_to, (long long)m->edited_ts, m->deleted);
    for (size_t i = 0; i < m->nreactions && k > 0 && (size_t)k < outsz; i++) {
        char e[40];
        copy_iov(e, sizeof(e), m->reactions[i].emoji);
        k += snprintf(out + k, outsz - (size_t)k, "%s%s=%u%s", i ? "," : "", e,
                      m->reactions[i].count, m->reactions[i].mine ? "*" : "");
    }
}

static void on_page(void *data, int err, const struct hub_history_pos *pos,
                    const struct hub_history_msg *msgs, size_t n, int complete)
{
    struct page *p = data;
    p->done++;
    p->err = err;
    if (err != 0)
        return;
    p->pos = *pos;
    copy_iov(p->topic, sizeof(p->topic), pos->topic);
    p->pos.topic.base = NULL;
    p->n = n;
    p->complete = complete;
    for (size_t i = 0; i < n && i < MAXM; i++) {
        p->off[i] = msgs[i].offset;
        describe(&msgs[i], p->line[i], sizeof(p->line[i]));
    }
}

static void on_found(void *data, int err, const struct hub_history_msg *msgs, size_t n,
                     int complete)
{
    struct hub_history_pos none = {.last = 0};
    on_page(data, err, &none, msgs, n, complete);
}

static struct page query(struct store *s, const char *room, int dir, uint64_t pos, unsigned limit,
                         const char *viewer, const char *actor)
{
    struct page p;
    memset(&p, 0, sizeof(p));
    struct hub_history_query q = {
        .dir = dir,
        .pos = pos,
        .limit = limit,
        .viewer = iov(viewer),
        .actor = iov(actor),
        .now_ms = fake_now,
    };
    CHECK_EQ(hub_history_query(s->h, iov(room), &q, on_page, &p), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ(p.done, 1);
    return p;
}

static struct page readp(struct store *s, const char *room, int dir, uint64_t pos, unsigned limit)
{
    struct page p;
    memset(&p, 0, sizeof(p));
    CHECK_EQ(hub_history_read(s->h, iov(room), dir, pos, limit, on_page, &p), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ(p.done, 1);
    return p;
}

/* Searches and returns the offsets found, newest first, as "5,3,1" (with
 * "+" at the end when the answer is not complete), or "E<err>". */
static const char *search(struct store *s, const char *room, const char *q, uint64_t before,
                          unsigned limit)
{
    static char out[512];
    struct page p;
    memset(&p, 0, sizeof(p));
    CHECK_EQ(hub_history_search(s->h, iov(room), iov(q), before, limit, on_found, &p), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ(p.done, 1);
    if (p.err != 0) {
        snprintf(out, sizeof(out), "E%d", p.err);
        return out;
    }
    size_t k = 0;
    out[0] = '\0';
    for (size_t i = 0; i < p.n && i < MAXM; i++)
        k += (size_t)snprintf(out + k, sizeof(out) - k, "%s%llu", i ? "," : "",
                              (unsigned long long)p.off[i]);
    if (!p.complete)
        snprintf(out + k, sizeof(out) - k, "+");
    return out;
}

struct amd {
    int done, err, changed;
    uint32_t count;
    int64_t edited_ts;
    char author[64], from[64];
};

static void on_amended(void *data, int err, const struct hub_history_amended *r)
{
    struct amd *a = data;
    a->done++;
    a->err = err;
    if (err == 0) {
        a->changed = r->changed;
        a->count = r->count;
        a->edited_ts = r->edited_ts;
        copy_iov(a->author, sizeof(a->author), r->author);
        copy_iov(a->from, sizeof(a->from), r->from);
    }
}

static struct amd amend(struct store *s, int kind, uint64_t offset, const char *who, int moderator,
                        const char *text, const char *emoji)
{
    struct amd a;
    memset(&a, 0, sizeof(a));
    struct hub_history_amend am = {
        .room = iov("lobby"),
        .offset = offset,
        .kind = kind,
        .who = iov(who),
        .moderator = moderator,
        .text = iov(text),
        .emoji = iov(emoji),
        .ts = fake_now,
        .max_emoji = 3,
    };
    CHECK_EQ(hub_history_amend(s->h, &am, on_amended, &a), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ(a.done, 1);
    return a;
}

static void on_done(void *data, int err)
{
    int *d = data;
    d[0]++;
    d[1] = err;
}

static int restrict_(struct store *s, int kind, const char *room, const char *actor, int64_t until)
{
    int d[2] = {0, -1};
    struct hub_history_restrict r = {
        .kind = kind,
        .room = iov(room),
        .actor = iov(actor),
        .until_ms = until,
        .by = iov("mod"),
        .reason = iov("spam"),
        .ts = fake_now,
    };
    CHECK_EQ(hub_history_restrict(s->h, &r, on_done, d), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ(d[0], 1);
    return d[1];
}

static int topic(struct store *s, const char *room, const char *t)
{
    int d[2] = {0, -1};
    CHECK_EQ(hub_history_set_topic(s->h, iov(room), iov(t), on_done, d), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ(d[0], 1);
    return d[1];
}

/* ---- bodies for both stores ---- */

/* append_ex stores author, mentions and reply_to; reads show them; a plain
 * append leaves them empty; a bad reply_to is refused. */
static void test_append_ex(int kind)
{
    struct store s = {0};
    store_open(&s, kind, NULL);
    struct msgx none_yet = {.text = "early", .reply_to = 1};
    CHECK_EQ(add(&s, &none_yet), HUB_EINVAL);
    CHECK_EQ(say(&s, "hello @bob"), 1);
    struct msgx reply = {
        .from = "bob", .text = "hi", .author = "g:c7", .mentions = "alice\ncarol\n", .reply_to = 1};
    CHECK_EQ(add(&s, &reply), 2);
    struct msgx bad = {.text = "x", .reply_to = 3};
    CHECK_EQ(add(&s, &bad), HUB_EINVAL);
    struct app a = {0};
    CHECK_EQ(hub_history_append(s.h, iov("lobby"), iov("raw"), iov("plain"), iov(NULL), fake_now,
                                on_append, &a),
             0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ(a.offset, 3);
    struct page p = readp(&s, "lobby", HUB_HISTORY_LATEST, 0, 10);
    CHECK_EQ(p.n, 3);
    CHECK_STR(p.line[0], "alice|hello @bob|u:alice||0|0|0|");
    CHECK_STR(p.line[1], "bob|hi|g:c7|alice,carol,|1|0|0|");
    CHECK_STR(p.line[2], "raw|plain|||0|0|0|");
    CHECK_EQ(p.topic[0], '\0');
    CHECK_EQ(p.pos.ban_until, 0);
    /* A reply to a message that is gone keeps its number. */
    struct msgx late = {.text = "re", .reply_to = 1};
    CHECK_EQ(add(&s, &late), 4);
    store_close(&s);
}

/* Edits and deletes: who may, within which window, and what a tombstone
 * looks like. */
static void test_edit_delete(int kind)
{
    struct store s = {0};
    store_open(&s, kind, NULL);
    int64_t t0 = fake_now;
    CHECK_EQ(say(&s, "frist post"), 1);
    struct msgx raw = {.from = "r", .text = "raw line"};
    CHECK_EQ(add(&s, &raw), 2);
    CHECK_EQ(say(&s, "third"), 3);

    fake_now = t0 + 5000;
    struct amd a = amend(&s, HUB_AMEND_EDIT, 1, "u:alice", 0, "first post", NULL);
    CHECK_EQ(a.err, 0);
    CHECK_EQ(a.changed, 1);
    CHECK_EQ(a.edited_ts, t0 + 5000);
    CHECK_STR(a.author, "u:alice");
    CHECK_STR(a.from, "alice");
    CHECK_EQ(amend(&s, HUB_AMEND_EDIT, 1, "u:bob", 0, "mine now", NULL).err, HUB_EPERM);
    CHECK_EQ(amend(&s, HUB_AMEND_EDIT, 2, "", 0, "nobody's", NULL).err, HUB_EPERM);
    CHECK_EQ(amend(&s, HUB_AMEND_DELETE, 2, "u:alice", 0, NULL, NULL).err, HUB_EPERM);
    CHECK_EQ(amend(&s, HUB_AMEND_EDIT, 9, "u:alice", 0, "x", NULL).err, HUB_ENOENT);
    CHECK_EQ(amend(&s, HUB_AMEND_EDIT, 1, "u:alice", 0, "", NULL).err, HUB_EINVAL);

    /* The window: exactly 24 h after the message is still in. */
    fake_now = t0 + HUB_HISTORY_EDIT_WINDOW_MS;
    CHECK_EQ(amend(&s, HUB_AMEND_EDIT, 3, "u:alice", 0, "third!", NULL).err, 0);
    fake_now = t0 + HUB_HISTORY_EDIT_WINDOW_MS + 1;
    CHECK_EQ(amend(&s, HUB_AMEND_EDIT, 3, "u:alice", 0, "too late", NULL).err, HUB_EPERM);
    CHECK_EQ(amend(&s, HUB_AMEND_DELETE, 3, "u:alice", 0, NULL, NULL).err, HUB_EPERM);
    /* A moderator: anyone's, any time. */
    a = amend(&s, HUB_AMEND_DELETE, 2, "u:mod", 1, NULL, NULL);
    CHECK_EQ(a.err, 0);
    CHECK_EQ(a.changed, 1);
    CHECK_EQ(amend(&s, HUB_AMEND_DELETE, 2, "u:mod", 1, NULL, NULL).changed, 0);
    CHECK_EQ(amend(&s, HUB_AMEND_EDIT, 2, "u:mod", 1, "back", NULL).err, HUB_ENOENT);
    CHECK_EQ(amend(&s, HUB_AMEND_REACT, 2, "u:bob", 0, NULL, "x").err, HUB_ENOENT);

    struct page p = query(&s, "lobby", HUB_HISTORY_LATEST, 0, 10, "u:alice", NULL);
    CHECK_EQ(p.n, 3);
    char want[128];
    snprintf(want, sizeof(want), "alice|first post|u:alice||0|%lld|0|", (long long)(t0 + 5000));
    CHECK_STR(p.line[0], want);
    CHECK_STR(p.line[1], "r||||0|0|1|");
    snprintf(want, sizeof(want), "alice|third!|u:alice||0|%lld|0|",
             (long long)(t0 + HUB_HISTORY_EDIT_WINDOW_MS));
    CHECK_STR(p.line[2], want);
    fake_now = t0;
    store_close(&s);
}

/* Reactions: once per user and emoji, counts, mine, the emoji limit. */
static void test_reactions(int kind)
{
    struct store s = {0};
    store_open(&s, kind, NULL);
    CHECK_EQ(say(&s, "vote"), 1);
    struct amd a = amend(&s, HUB_AMEND_REACT, 1, "u:bob", 0, NULL, "\xf0\x9f\x91\x8d");
    CHECK_EQ(a.err, 0);
    CHECK_EQ(a.changed, 1);
    CHECK_EQ(a.count, 1);
    a = amend(&s, HUB_AMEND_REACT, 1, "u:bob", 0, NULL, "\xf0\x9f\x91\x8d");
    CHECK_EQ(a.changed, 0);
    CHECK_EQ(a.count, 1);
    CHECK_EQ(amend(&s, HUB_AMEND_REACT, 1, "g:c1", 0, NULL, "\xf0\x9f\x91\x8d").count, 2);
    CHECK_EQ(amend(&s, HUB_AMEND_REACT, 1, "u:bob", 0, NULL, "ok").count, 1);
    CHECK_EQ(amend(&s, HUB_AMEND_REACT, 1, "u:bob", 0, NULL, "lol").count, 1);
    /* max_emoji is 3 in these tests: a fourth emoji is refused, not a
     * further user of one that is there. */
    CHECK_EQ(amend(&s, HUB_AMEND_REACT, 1, "u:bob", 0, NULL, "new").err, HUB_ELIMIT);
    CHECK_EQ(amend(&s, HUB_AMEND_REACT, 1, "u:carol", 0, NULL, "ok").count, 2);
    struct page p = query(&s, "lobby", HUB_HISTORY_LATEST, 0, 10, "u:bob", NULL);
    CHECK_STR(p.line[0], "alice|vote|u:alice||0|0|0|\xf0\x9f\x91\x8d=2*,ok=2*,lol=1*");
    p = query(&s, "lobby", HUB_HISTORY_LATEST, 0, 10, "u:carol", NULL);
    CHECK_STR(p.line[0], "alice|vote|u:alice||0|0|0|\xf0\x9f\x91\x8d=2,ok=2*,lol=1");
    p = readp(&s, "lobby", HUB_HISTORY_LATEST, 0, 10);
    CHECK_STR(p.line[0], "alice|vote|u:alice||0|0|0|\xf0\x9f\x91\x8d=2,ok=2,lol=1");
    a = amend(&s, HUB_AMEND_UNREACT, 1, "u:bob", 0, NULL, "lol");
    CHECK_EQ(a.changed, 1);
    CHECK_EQ(a.count, 0);
    a = amend(&s, HUB_AMEND_UNREACT, 1, "u:bob", 0, NULL, "lol");
    CHECK_EQ(a.err, 0);
    CHECK_EQ(a.changed, 0);
    a = amend(&s, HUB_AMEND_UNREACT, 1, "u:nobody", 0, NULL, "ok");
    CHECK_EQ(a.changed, 0);
    CHECK_EQ(a.count, 2);
    /* Room for a new emoji again. */
    CHECK_EQ(amend(&s, HUB_AMEND_REACT, 1, "u:bob", 0, NULL, "new").err, 0);
    p = query(&s, "lobby", HUB_HISTORY_LATEST, 0, 10, "g:c1", NULL);
    CHECK_STR(p.line[0], "alice|vote|u:alice||0|0|0|\xf0\x9f\x91\x8d=2*,ok=2,new=1");
    CHECK_EQ(amend(&s, HUB_AMEND_REACT, 7, "u:bob", 0, NULL, "ok").err, HUB_ENOENT);
    /* A delete takes the reactions with it. */
    CHECK_EQ(amend(&s, HUB_AMEND_DELETE, 1, "u:alice", 0, NULL, NULL).changed, 1);
    p = query(&s, "lobby", HUB_HISTORY_LATEST, 0, 10, "g:c1", NULL);
    CHECK_STR(p.line[0], "alice||u:alice||0|0|1|");
    store_close(&s);
}

/* Search: prefixes, AND, case, newest first, before, limit, tombstones,
 * edits, punctuation, no words. */
static void test_search(int kind)
{
    struct store s = {0};
    store_open(&s, kind, NULL);
    CHECK_EQ(say(&s, "Release notes are out"), 1);
    CHECK_EQ(say(&s, "the release-notes draft"), 2);
    CHECK_EQ(say(&s, "nothing here"), 3);
    CHECK_EQ(say(&s, "RELEASED today, notes later"), 4);
    CHECK_EQ(say(&s, "notes"), 5);
    struct msgx other = {.room = "other", .text = "release notes elsewhere"};
    CHECK_EQ(add(&s, &other), 1);

    CHECK_STR(search(&s, "lobby", "release", 0, 20), "4,2,1");
    CHECK_STR(search(&s, "lobby", "rel NOT", 0, 20), "4,2,1");
    CHECK_STR(search(&s, "lobby", "release notes", 0, 20), "4,2,1");
    CHECK_STR(search(&s, "lobby", "  notes\trelease  ", 0, 20), "4,2,1");
    CHECK_STR(search(&s, "lobby", "release-notes", 0, 20), "2,1"); /* a phrase */
    CHECK_STR(search(&s, "lobby", "notes", 0, 2), "5,4+");
    CHECK_STR(search(&s, "lobby", "notes", 4, 2), "2,1");
    CHECK_STR(search(&s, "lobby", "notes", 4, 1), "2+");
    CHECK_STR(search(&s, "lobby", "otes", 0, 20), "");
    CHECK_STR(search(&s, "lobby", "zebra", 0, 20), "");
    CHECK_STR(search(&s, "lobby", "\"release\" OR", 0, 20), "");
    CHECK_STR(search(&s, "lobby", "\"release*", 0, 20), "4,2,1");
    CHECK_STR(search(&s, "nowhere", "release", 0, 20), "");
    char err[16];
    snprintf(err, sizeof(err), "E%d", HUB_EINVAL);
    CHECK_STR(search(&s, "lobby", " - ! ", 0, 20), err);
    CHECK_STR(search(&s, "lobby", "", 0, 20), err);

    /* Edits and deletes move the index. */
    CHECK_EQ(amend(&s, HUB_AMEND_EDIT, 3, "u:alice", 0, "release party", NULL).err, 0);
    CHECK_STR(search(&s, "lobby", "release", 0, 20), "4,3,2,1");
    CHECK_STR(search(&s, "lobby", "nothing", 0, 20), "");
    CHECK_EQ(amend(&s, HUB_AMEND_DELETE, 2, "u:alice", 0, NULL, NULL).err, 0);
    CHECK_STR(search(&s, "lobby", "release", 0, 20), "4,3,1");
    CHECK_STR(search(&s, "lobby", "draft", 0, 20), "");

    /* Reactions come with results (no viewer: nothing is mine). */
    CHECK_EQ(amend(&s, HUB_AMEND_REACT, 4, "u:bob", 0, NULL, "ok").err, 0);
    struct page p;
    memset(&p, 0, sizeof(p));
    CHECK_EQ(hub_history_search(s.h, iov("lobby"), iov("today"), 0, 5, on_found, &p), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ(p.n, 1);
    CHECK_STR(p.line[0], "alice|RELEASED today, notes later|u:alice||0|0|0|ok=1");
    store_close(&s);
}

/* The search index follows trimming by count and by age. */
static void test_search_trim(int kind)
{
    struct store s = {0};
    struct hub_history_config cfg;
    hub_history_config_default(&cfg);
    cfg.now_ms = fake_clock;
    cfg.max_per_room = 3;
    cfg.ttl_ms = 60000;
    int64_t t0 = fake_now;
    store_open(&s, kind, &cfg);
    CHECK_EQ(say(&s, "apple one"), 1);
    CHECK_EQ(say(&s, "apple two"), 2);
    fake_now = t0 + 30000;
    CHECK_EQ(say(&s, "apple three"), 3);
    CHECK_EQ(say(&s, "apple four"), 4);
    CHECK_STR(search(&s, "lobby", "apple", 0, 20), "4,3,2");
    fake_now = t0 + 60001;
    CHECK_STR(search(&s, "lobby", "apple", 0, 20), "4,3");
    CHECK_EQ(amend(&s, HUB_AMEND_EDIT, 2, "u:alice", 0, "x", NULL).err, HUB_ENOENT);
    fake_now = t0;
    store_close(&s);
}

/* Bans and mutes: refusals, scopes, expiry, lifting; queries report them. */
static void test_restrict(int kind)
{
    struct store s = {0};
    store_open(&s, kind, NULL);
    int64_t t0 = fake_now;
    struct msgx bob = {.from = "bob", .text = "hi", .author = "u:bob", .actor = "u:bob"};
    struct msgx bob2 = bob;
    bob2.room = "other";
    CHECK_EQ(add(&s, &bob), 1);
    CHECK_EQ(restrict_(&s, HUB_RESTRICT_MUTE, "lobby", "u:bob", t0 + 1000), 0);
    CHECK_EQ(add(&s, &bob), HUB_EPERM);
    CHECK_EQ(add(&s, &bob2), 1);
    struct msgx raw = {.from = "bob", .text = "raw, no actor"};
    CHECK_EQ(add(&s, &raw), 2);
    struct page p = query(&s, "lobby", HUB_HISTORY_LATEST, 0, 0, NULL, "u:bob");
    CHECK_EQ(p.pos.mute_until, t0 + 1000);
    CHECK_EQ(p.pos.ban_until, 0);
    p = query(&s, "other", HUB_HISTORY_LATEST, 0, 0, NULL, "u:bob");
    CHECK_EQ(p.pos.mute_until, 0);
    /* Exactly at until it is over. */
    fake_now = t0 + 1000;
    CHECK_EQ(add(&s, &bob), 3);
    p = query(&s, "lobby", HUB_HISTORY_LATEST, 0, 0, NULL, "u:bob");
    CHECK_EQ(p.pos.mute_until, 0);
    /* A hub ban for good, and a room ban ending sooner: the later wins. */
    CHECK_EQ(restrict_(&s, HUB_RESTRICT_BAN, "", "n:bob", INT64_MAX), 0);
    CHECK_EQ(restrict_(&s, HUB_RESTRICT_BAN, "lobby", "n:bob", t0 + 5000), 0);
    struct msgx guest = {.from = "bob", .text = "hi", .author = "g:9", .actor = "n:bob"};
    CHECK_EQ(add(&s, &guest), HUB_EPERM);
    guest.room = "other";
    CHECK_EQ(add(&s, &guest), HUB_EPERM);
    p = query(&s, "lobby", HUB_HISTORY_LATEST, 0, 0, NULL, "n:bob");
    CHECK_EQ(p.pos.ban_until, INT64_MAX);
    CHECK_EQ(restrict_(&s, HUB_RESTRICT_BAN, "", "n:bob", 0), 0);
    p = query(&s, "lobby", HUB_HISTORY_LATEST, 0, 0, NULL, "n:bob");
    CHECK_EQ(p.pos.ban_until, t0 + 5000);
    CHECK_EQ(add(&s, &guest), 2);
    /* A plain read never shows restrictions. */
    p = readp(&s, "lobby", HUB_HISTORY_LATEST, 0, 0);
    CHECK_EQ(p.pos.ban_until, 0);
    fake_now = t0;
    store_close(&s);
}

static void test_topic(int kind)
{
    struct store s = {0};
    store_open(&s, kind, NULL);
    CHECK_EQ(topic(&s, "lobby", "Release day"), 0);
    struct page p = query(&s, "lobby", HUB_HISTORY_LATEST, 0, 5, NULL, NULL);
    CHECK_STR(p.topic, "Release day");
    CHECK_EQ(p.pos.last, 0);
    p = readp(&s, "lobby", HUB_HISTORY_LATEST, 0, 5);
    CHECK_STR(p.topic, "");
    CHECK_EQ(topic(&s, "lobby", "Second"), 0);
    p = query(&s, "lobby", HUB_HISTORY_LATEST, 0, 5, NULL, NULL);
    CHECK_STR(p.topic, "Second");
    CHECK_EQ(topic(&s, "lobby", ""), 0);
    p = query(&s, "lobby", HUB_HISTORY_LATEST, 0, 5, NULL, NULL);
    CHECK_STR(p.topic, "");
    char big[HUB_HISTORY_TOPIC_MAX + 2];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    CHECK_EQ(hub_history_set_topic(s.h, iov("lobby"), iov(big), on_done, NULL), HUB_EINVAL);
    store_close(&s);
}

/* Everything survives a close and a reopen (the SQLite store). */
static void test_restart(int kind)
{
    struct store s = {0};
    store_open(&s, kind, NULL);
    int64_t t0 = fake_now;
    CHECK_EQ(say(&s, "keep me"), 1);
    struct msgx r = {.from = "bob",
                     .text = "gone soon",
                     .author = "u:bob",
                     .mentions = "alice\n",
                     .reply_to = 1};
    CHECK_EQ(add(&s, &r), 2);
    CHECK_EQ(say(&s, "typo heer"), 3);
    fake_now = t0 + 10;
    CHECK_EQ(amend(&s, HUB_AMEND_EDIT, 3, "u:alice", 0, "typo here", NULL).err, 0);
    CHECK_EQ(amend(&s, HUB_AMEND_DELETE, 2, "u:bob", 0, NULL, NULL).err, 0);
    CHECK_EQ(amend(&s, HUB_AMEND_REACT, 1, "u:bob", 0, NULL, "ok").err, 0);
    CHECK_EQ(amend(&s, HUB_AMEND_REACT, 1, "u:carol", 0, NULL, "ok").err, 0);
    CHECK_EQ(amend(&s, HUB_AMEND_REACT, 1, "u:carol", 0, NULL, "hm").err, 0);
    CHECK_EQ(restrict_(&s, HUB_RESTRICT_BAN, "lobby", "u:eve", INT64_MAX), 0);
    CHECK_EQ(restrict_(&s, HUB_RESTRICT_MUTE, "", "u:mal", t0 + 100000), 0);
    CHECK_EQ(topic(&s, "lobby", "Persisted"), 0);
    store_reopen(&s);
    struct page p = query(&s, "lobby", HUB_HISTORY_LATEST, 0, 10, "u:carol", "u:eve");
    CHECK_EQ(p.n, 3);
    CHECK_STR(p.topic, "Persisted");
    CHECK_EQ(p.pos.ban_until, INT64_MAX);
    CHECK_STR(p.line[0], "alice|keep me|u:alice||0|0|0|ok=2*,hm=1*");
    CHECK_STR(p.line[1], "bob||u:bob||1|0|1|");
    char want[128];
    snprintf(want, sizeof(want), "alice|typo here|u:alice||0|%lld|0|", (long long)(t0 + 10));
    CHECK_STR(p.line[2], want);
    p = query(&s, "x", HUB_HISTORY_LATEST, 0, 0, NULL, "u:mal");
    CHECK_EQ(p.pos.mute_until, t0 + 100000);
    struct msgx eve = {.text = "let me in", .actor = "u:eve"};
    CHECK_EQ(add(&s, &eve), HUB_EPERM);
    CHECK_STR(search(&s, "lobby", "here", 0, 10), "3");
    CHECK_STR(search(&s, "lobby", "heer", 0, 10), "");
    CHECK_STR(search(&s, "lobby", "gone", 0, 10), "");
    CHECK_EQ(amend(&s, HUB_AMEND_REACT, 1, "u:bob", 0, NULL, "ok").changed, 0);
    CHECK_EQ(amend(&s, HUB_AMEND_UNREACT, 1, "u:bob", 0, NULL, "ok").count, 1);
    fake_now = t0;
    store_close(&s);
}

/* ---- memory store only ---- */

static uint64_t bytes_of(struct store *s)
{
    struct hub_history_stats st;
    hub_history_stats(s->h, &st);
    return st.bytes;
}

/* Reactions, restrictions and topics are counted in the byte budget, and
 * given back exactly when they go. */
static void test_memory_bytes(void)
{
    struct store s = {0};
    store_open(&s, MEMORY, NULL);
    CHECK_EQ(say(&s, "count me"), 1);
    uint64_t b0 = bytes_of(&s);
    CHECK_EQ(amend(&s, HUB_AMEND_REACT, 1, "u:bob", 0, NULL, "ok").err, 0);
    uint64_t b1 = bytes_of(&s);
    CHECK(b1 > b0);
    char who[32];
    for (int i = 0; i < 50; i++) {
        snprintf(who, sizeof(who), "u:user%d", i);
        CHECK_EQ(amend(&s, HUB_AMEND_REACT, 1, who, 0, NULL, "ok").count, (uint32_t)i + 2);
    }
    CHECK(bytes_of(&s) >= b1 + 50 * 32);
    for (int i = 0; i < 50; i++) {
        snprintf(who, sizeof(who), "u:user%d", i);
        CHECK_EQ(amend(&s, HUB_AMEND_UNREACT, 1, who, 0, NULL, "ok").err, 0);
    }
    CHECK_EQ(amend(&s, HUB_AMEND_UNREACT, 1, "u:bob", 0, NULL, "ok").count, 0);
    CHECK_EQ(bytes_of(&s), b0);
    CHECK_EQ(topic(&s, "lobby", "a topic"), 0);
    CHECK_EQ(restrict_(&s, HUB_RESTRICT_BAN, "lobby", "u:x", INT64_MAX), 0);
    CHECK(bytes_of(&s) > b0);
    CHECK_EQ(topic(&s, "lobby", ""), 0);
    CHECK_EQ(restrict_(&s, HUB_RESTRICT_BAN, "lobby", "u:x", 0), 0);
    /* The tables' bucket arrays may have grown; nothing else is left. */
    CHECK(bytes_of(&s) - b0 < 1024);
    store_close(&s);
}

/* Under a tight budget, reactions push out old messages like text does. */
static void test_memory_budget(void)
{
    struct store s = {0};
    struct hub_history_config cfg;
    hub_history_config_default(&cfg);
    cfg.now_ms = fake_clock;
    cfg.max_bytes = 64 * 1024;
    store_open(&s, MEMORY, &cfg);
    CHECK_EQ(hub_history_hold(s.h, iov("lobby"), 1), 0);
    for (int i = 0; i < 20; i++)
        CHECK(say(&s, "message with some text in it") > 0);
    char who[32];
    for (int i = 0; i < 3000; i++) {
        snprintf(who, sizeof(who), "u:user%d", i);
        struct amd a = amend(&s, HUB_AMEND_REACT, 20, who, 0, NULL, "ok");
        CHECK_EQ(a.err, 0);
    }
    struct hub_history_stats st;
    hub_history_stats(s.h, &st);
    CHECK(st.dropped > 0);
    /* The newest message (with its reactions) may pass the budget alone. */
    struct page p = query(&s, "lobby", HUB_HISTORY_LATEST, 0, 50, NULL, NULL);
    CHECK(p.n < 20);
    CHECK_EQ(p.off[p.n - 1], 20);
    store_close(&s);
}

int main(void)
{
    if (uv_loop_init(&loop) != 0)
        return 1;
    if (tmp_make_dir(&loop, "hub_msgops", root, sizeof(root)) != 0)
        snprintf(root, sizeof(root), "/tmp");
    for (int pass = 0; pass < 3; pass++) {
        int kind = pass == 0 ? MEMORY : SQLITE;
        sqlite_index = pass == 1;
        int before = check_failures;
        test_append_ex(kind);
        test_edit_delete(kind);
        test_reactions(kind);
        test_search(kind);
        test_search_trim(kind);
        test_restrict(kind);
        test_topic(kind);
        test_restart(kind);
        fprintf(stderr, "%s store%s: message ops %s\n", kind_name[kind],
                pass == 2 ? " without a search index" : "",
                check_failures == before ? "passed" : "FAILED");
    }
    test_memory_bytes();
    test_memory_budget();
    tmp_remove_tree(&loop, root);
    CHECK_EQ(uv_loop_close(&loop), 0);
    return CHECK_DONE();
}
