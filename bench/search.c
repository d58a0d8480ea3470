/*
 * search.c: search latency of the SQLite history store (issue 15).
 *
 * Builds a store of N messages (100,000 by default) in one room from a
 * fixed seed, with chat-like text drawn from a small vocabulary, and prints
 * the durable append throughput; then runs 1000 searches of one or two
 * words (whole words and prefixes) and prints the p50, p90, p99 and max
 * latency in milliseconds, each search measured from the call to its
 * completion on the loop. Figures are printed, never asserted.
 *
 * Usage: search [DIR] [N]   (DIR: an empty directory; default a temporary one)
 */
#include "hub/history.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

static const char *const words[] = {
    "release", "notes",    "deploy", "server", "bug",     "fix",    "lunch",   "meeting",
    "today",   "tomorrow", "build",  "test",   "merge",   "branch", "review",  "coffee",
    "docker",  "kernel",   "patch",  "search", "index",   "hello",  "thanks",  "please",
    "issue",   "ticket",   "urgent", "later",  "weekend", "friday", "metrics", "latency",
    "chat",    "hub",      "room",   "nick",   "emoji",   "topic",  "ban",     "mute",
    "the",     "a",        "is",     "to",     "and",     "of",     "we",      "it",
};
#define NWORDS (sizeof(words) / sizeof(words[0]))

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint32_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

static unsigned done, errors;

static void on_append(void *data, int err, uint64_t offset, int64_t ts, int dup)
{
    (void)data, (void)offset, (void)ts, (void)dup;
    done++;
    errors += err != 0;
}

static size_t found;

static void on_search(void *data, int err, const struct hub_history_msg *m, size_t n, int complete)
{
    (void)m, (void)complete;
    *(int *)data = 1;
    errors += err != 0;
    found += n;
}

static void on_closed(void *data)
{
    *(int *)data = 1;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    char dir[512];
    if (argc > 1) {
        snprintf(dir, sizeof(dir), "%s", argv[1]);
    } else {
        const char *tmp = getenv("TMPDIR");
        snprintf(dir, sizeof(dir), "%s/chathub-search-XXXXXX", tmp ? tmp : "/tmp");
        uv_fs_t req;
        if (uv_fs_mkdtemp(NULL, &req, dir, NULL) < 0)
            return 1;
        snprintf(dir, sizeof(dir), "%s", req.path);
        uv_fs_req_cleanup(&req);
    }
    unsigned n = argc > 2 ? (unsigned)atoi(argv[2]) : 100000;
    struct hub_history_config cfg;
    hub_history_config_default(&cfg);
    cfg.max_per_room = n;
    cfg.max_bytes = HUB_HISTORY_DISK_MAX_BYTES_DEFAULT;
    cfg.search_index = 1; /* what --search-index on (or auto, at this --history) keeps */
    struct hub_history *h;
    char err[256];
    if (hub_history_open_sqlite(&h, &loop, dir, &cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "open: %s\n", err);
        return 1;
    }
    char text[256];
    uint64_t t0 = uv_hrtime();
    for (unsigned i = 0; i < n; i++) {
        size_t k = 0;
        unsigned len = 3 + next() % 12;
        for (unsigned j = 0; j < len; j++)
            k += (size_t)snprintf(text + k, sizeof(text) - k, "%s%s", j ? " " : "",
                                  words[next() % NWORDS]);
        struct hub_history_new m = {.room = {"lobby", 5},
                                    .from = {"ann", 3},
                                    .text = {text, k},
                                    .author = {"u:ann", 5},
                                    .ts = 1700000000000LL + i};
        hub_history_append_ex(h, &m, on_append, NULL);
        if (i % 5000 == 4999)
            uv_run(&loop, UV_RUN_DEFAULT);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    double secs = (double)(uv_hrtime() - t0) / 1e9;
    printf("built %u messages in one room in %.2f s: %.0f durable appends/s (with the FTS5 "
           "index), %u errors\n",
           done, secs, done / secs, errors);

    enum { SEARCHES = 1000 };
    static double ms[SEARCHES];
    char q[128];
    for (int i = 0; i < SEARCHES; i++) {
        const char *a = words[next() % NWORDS], *b = words[next() % NWORDS];
        int kind = (int)(next() % 3);
        if (kind == 0)
            snprintf(q, sizeof(q), "%s", a);
        else if (kind == 1)
            snprintf(q, sizeof(q), "%s %s", a, b);
        else
            snprintf(q, sizeof(q), "%.3s", a); /* a prefix */
        int fired = 0;
        uint64_t s0 = uv_hrtime();
        hub_history_search(h, (struct hub_iov){"lobby", 5}, (struct hub_iov){q, strlen(q)}, 0, 20,
                           on_search, &fired);
        while (!fired)
            uv_run(&loop, UV_RUN_ONCE);
        ms[i] = (double)(uv_hrtime() - s0) / 1e6;
    }
    qsort(ms, SEARCHES, sizeof(ms[0]), cmp);
    printf("%d searches (limit 20, 1-2 words or a 3-letter prefix), %zu results: p50 %.2f ms, "
           "p90 %.2f ms, p99 %.2f ms, max %.2f ms, %u errors\n",
           SEARCHES, found, ms[SEARCHES / 2], ms[SEARCHES * 9 / 10], ms[SEARCHES * 99 / 100],
           ms[SEARCHES - 1], errors);
    int closed = 0;
    hub_history_close(h, on_closed, &closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    hub_history_free(h);
    uv_loop_close(&loop);
    return 0;
}
