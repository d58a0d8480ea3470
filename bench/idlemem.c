/*
 * idlemem: prints every byte an idle connection holds, by layer.
 *
 *   build/bench/idlemem [--json] [--conns N] [--persist DIR] [--loadgen PATH]
 *
 * The tool runs a hub_server in this process, on 127.0.0.1 and a free port,
 * and starts bench/loadgen (a child process, stopped by its PID) to open N
 * idle connections against it (raw mode, or chathub.v1 clients that say
 * hello and join one room with --json). Once every connection is up and the
 * heap has stopped changing, it prints, per idle connection:
 *
 * - the resident set (VmRSS of /proc/self/statm) and glibc's mallinfo2()
 *   in-use bytes, after minus before;
 * - every heap allocation made since the server started and still alive,
 *   grouped by the hub source file that asked for it (the first frame of
 *   its call stack inside this executable) and by call site, with the bytes
 *   requested and the bytes the allocator really holds for them (usable
 *   size plus its 8-byte chunk header);
 * - the sizes of the public structs that are embedded rather than
 *   allocated (uv_tcp_t inside hub_conn inside the server's client).
 *
 * How: this executable defines malloc, calloc, realloc, free and the aligned
 * allocators itself (they call glibc's __libc_* functions), so every
 * allocation of the hub, of libuv, jansson and SQLite passes through it. Each
 * live allocation is kept in a hash table with its size and call stack;
 * freeing a block that existed before tracking began is recorded as a
 * negative entry at the freeing call site, so a realloc that grows a
 * pre-existing array (libuv's watcher table) counts only its growth.
 * Function names come from addr2line (binutils): build with debug info
 * (meson's default debug or debugoptimized build) to get them.
 *
 * This is a measuring tool, not a test: it never fails on a figure.
 */
#define _GNU_SOURCE
#include "hub/conn.h"
#include "hub/log.h"
#include "hub/metrics.h"
#include "hub/server.h"

#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- the allocator hooks ------------------------------------------------ */

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
extern void *__libc_memalign(size_t, size_t);

#define DEPTH 8          /* frames kept per allocation */
#define TABLE (1u << 20) /* live-allocation slots (power of two) */

struct rec {
    void *ptr;          /* the block, NULL = free slot, TOMB = deleted */
    long size;          /* bytes asked for (negative: a pre-existing block freed) */
    long held;          /* bytes the allocator holds (usable + header) */
    void *stack[DEPTH]; /* return addresses, innermost first */
};

#define TOMB ((void *)1)
static struct rec *table;     /* open addressing, linear probing */
static size_t nfreed_old;     /* negative entries used */
static struct rec *freed_old; /* frees of blocks from before tracking */
#define FREED_MAX (1u << 16)
static int tracking; /* 1 between the baseline and the report */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static __thread int in_hook; /* this thread is inside a hook: do not record */

static size_t slot_of(void *p)
{
    uintptr_t x = (uintptr_t)p;
    x ^= x >> 17;
    x *= 0xed5ad4bbu;
    x ^= x >> 11;
    return (size_t)x & (TABLE - 1);
}

static void record(void *p, size_t size)
{
    if (p == NULL || !tracking || in_hook)
        return;
    in_hook = 1;
    struct rec r = {p, (long)size, (long)malloc_usable_size(p) + 8, {0}};
    backtrace(r.stack, DEPTH);
    pthread_mutex_lock(&lock);
    size_t i = slot_of(p);
    while (table[i].ptr != NULL && table[i].ptr != TOMB)
        i = (i + 1) & (TABLE - 1);
    table[i] = r;
    pthread_mutex_unlock(&lock);
    in_hook = 0;
}

/* Forgets p; a block not in the table that existed before tracking began
 * is noted as a negative entry. */
static void forget(void *p)
{
    if (p == NULL || table == NULL || in_hook)
        return;
    in_hook = 1;
    int found = 0;
    pthread_mutex_lock(&lock);
    size_t i = slot_of(p);
    while (table[i].ptr != NULL) {
        if (table[i].ptr == p) {
            table[i].ptr = TOMB;
            found = 1;
            break;
        }
        i = (i + 1) & (TABLE - 1);
    }
    pthread_mutex_unlock(&lock);
    if (!found && tracking) {
        struct rec r = {p, -(long)malloc_usable_size(p), -((long)malloc_usable_size(p) + 8), {0}};
        backtrace(r.stack, DEPTH);
        pthread_mutex_lock(&lock);
        if (nfreed_old < FREED_MAX)
            freed_old[nfreed_old++] = r;
        pthread_mutex_unlock(&lock);
    }
    in_hook = 0;
}

void *malloc(size_t n)
{
    void *p = __libc_malloc(n);
    record(p, n);
    return p;
}

void *calloc(size_t a, size_t b)
{
    void *p = __libc_calloc(a, b);
    record(p, a * b);
    return p;
}

void *realloc(void *old, size_t n)
{
    if (old == NULL)
        return malloc(n);
    forget(old);
    void *p = __libc_realloc(old, n);
    record(p, n);
    return p;
}

void free(void *p)
{
    forget(p);
    __libc_free(p);
}

void *memalign(size_t align, size_t n)
{
    void *p = __libc_memalign(align, n);
    record(p, n);
    return p;
}

void *aligned_alloc(size_t align, size_t n)
{
    return memalign(align, n);
}

int posix_memalign(void **out, size_t align, size_t n)
{
    void *p = __libc_memalign(align, n);
    if (p == NULL)
        return ENOMEM;
    record(p, n);
    *out = p;
    return 0;
}

/* ---- symbols -------------------------------------------------------------- */

struct sym {
    void *addr;
    char func[128];
    char file[64]; /* basename of the source file, or the library */
    int in_hub;    /* the address is in this executable's src/ code */
};

static struct sym *syms;
static size_t nsyms, capsyms;

static struct sym *sym_find(void *addr)
{
    for (size_t i = 0; i < nsyms; i++)
        if (syms[i].addr == addr)
            return &syms[i];
    return NULL;
}

static void sym_add(void *addr)
{
    if (addr == NULL || sym_find(addr) != NULL)
        return;
    if (nsyms == capsyms) {
        capsyms = capsyms ? capsyms * 2 : 256;
        syms = __libc_realloc(syms, capsyms * sizeof(*syms));
    }
    struct sym *s = &syms[nsyms++];
    memset(s, 0, sizeof(*s));
    s->addr = addr;
}

/* Names every collected address: addr2line for this executable, dladdr for
 * the shared libraries. */
static void sym_resolve(void)
{
    char tmp[] = "/tmp/idlemem.XXXXXX";
    int fd = mkstemp(tmp);
    if (fd < 0)
        return;
    FILE *f = fdopen(fd, "w");
    Dl_info self;
    dladdr((void *)sym_resolve, &self);
    for (size_t i = 0; i < nsyms; i++) {
        Dl_info di;
        struct sym *s = &syms[i];
        if (dladdr(s->addr, &di) && di.dli_fname && strcmp(di.dli_fname, self.dli_fname) != 0) {
            const char *b = strrchr(di.dli_fname, '/');
            snprintf(s->file, sizeof(s->file), "%s", b ? b + 1 : di.dli_fname);
            snprintf(s->func, sizeof(s->func), "%s", di.dli_sname ? di.dli_sname : "?");
            s->in_hub = -1;
            continue;
        }
        /* A return address points after the call: ask about the call. */
        fprintf(f, "%lx\n", (unsigned long)((char *)s->addr - (char *)self.dli_fbase - 1));
    }
    fclose(f);
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "addr2line -f -s -e /proc/%d/exe < %s", (int)getpid(), tmp);
    FILE *p = popen(cmd, "r");
    for (size_t i = 0; p != NULL && i < nsyms; i++) {
        struct sym *s = &syms[i];
        if (s->in_hub == -1)
            continue;
        char fn[256] = "?", fl[256] = "?";
        if (!fgets(fn, sizeof(fn), p) || !fgets(fl, sizeof(fl), p))
            break;
        fn[strcspn(fn, "\n")] = 0;
        fl[strcspn(fl, ":\n")] = 0;
        snprintf(s->func, sizeof(s->func), "%s", fn);
        snprintf(s->file, sizeof(s->file), "%s", fl);
        s->in_hub = strcmp(fl, "idlemem.c") != 0 && strcmp(fl, "?") != 0;
    }
    if (p != NULL)
        pclose(p);
    unlink(tmp);
}

/* ---- grouping ------------------------------------------------------------- */

struct site {
    char layer[64];  /* hub source file that asked (or the library) */
    char where[256]; /* innermost frames */
    long size, held, count;
};

static struct site *sites;
static size_t nsites, capsites;

static void add_to_site(const struct rec *r)
{
    char layer[64] = "(outside the hub)", where[256] = "";
    size_t wl = 0;
    int have_layer = 0;
    /* Frame 0 is record() or forget(), frame 1 the hook: skip this file. */
    for (int d = 0; d < DEPTH && r->stack[d] != NULL; d++) {
        struct sym *s = sym_find(r->stack[d]);
        if (s == NULL || strcmp(s->file, "idlemem.c") == 0)
            continue;
        if (wl < sizeof(where) - 1 && wl < 120)
            wl +=
                (size_t)snprintf(where + wl, sizeof(where) - wl, "%s%s", wl ? " < " : "", s->func);
        if (!have_layer && s->in_hub == 1) {
            snprintf(layer, sizeof(layer), "%s", s->file);
            have_layer = 1;
            break;
        }
        if (!have_layer && s->in_hub == -1)
            snprintf(layer, sizeof(layer), "%s", s->file);
    }
    for (size_t i = 0; i < nsites; i++) {
        if (strcmp(sites[i].layer, layer) == 0 && strcmp(sites[i].where, where) == 0) {
            sites[i].size += r->size;
            sites[i].held += r->held;
            sites[i].count += r->size < 0 ? -1 : 1;
            return;
        }
    }
    if (nsites == capsites) {
        capsites = capsites ? capsites * 2 : 128;
        sites = __libc_realloc(sites, capsites * sizeof(*sites));
    }
    struct site *s = &sites[nsites++];
    snprintf(s->layer, sizeof(s->layer), "%s", layer);
    snprintf(s->where, sizeof(s->where), "%s", where);
    s->size = r->size;
    s->held = r->held;
    s->count = r->size < 0 ? -1 : 1;
}

static int by_layer_then_held(const void *a, const void *b)
{
    const struct site *x = a, *y = b;
    int c = strcmp(x->layer, y->layer);
    if (c != 0)
        return c;
    return (y->held > x->held) - (y->held < x->held);
}

/* ---- the run ---------------------------------------------------------------- */

static struct {
    int json;
    unsigned conns;
    const char *persist;
    const char *loadgen;
    struct hub_server *server;
    pid_t child;
    long rss0;
    size_t heap0;
    int ticks_stable;
    size_t last_live;
    int done;
    int waited;
} run = {.conns = 2000};

static long rss_bytes(void)
{
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f != NULL) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    return rss * sysconf(_SC_PAGESIZE);
}

static size_t live_count(void)
{
    size_t n = 0;
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < TABLE; i++)
        if (table[i].ptr != NULL && table[i].ptr != TOMB)
            n++;
    pthread_mutex_unlock(&lock);
    return n + nfreed_old;
}

static void report(void)
{
    struct mallinfo2 mi = mallinfo2();
    long rss = rss_bytes();
    tracking = 0;
    in_hook = 1;
    double n = run.conns;
    /* Copy the live records out, then name their frames. */
    for (size_t i = 0; i < TABLE; i++)
        if (table[i].ptr != NULL && table[i].ptr != TOMB)
            for (int d = 0; d < DEPTH; d++)
                sym_add(table[i].stack[d]);
    for (size_t i = 0; i < nfreed_old; i++)
        for (int d = 0; d < DEPTH; d++)
            sym_add(freed_old[i].stack[d]);
    sym_resolve();
    for (size_t i = 0; i < TABLE; i++)
        if (table[i].ptr != NULL && table[i].ptr != TOMB)
            add_to_site(&table[i]);
    for (size_t i = 0; i < nfreed_old; i++)
        add_to_site(&freed_old[i]);
    qsort(sites, nsites, sizeof(*sites), by_layer_then_held);

    printf("mode=%s conns=%u connected_raw=%llu connected_json=%llu\n", run.json ? "json" : "raw",
           run.conns, (unsigned long long)hub_metrics.conns_raw,
           (unsigned long long)hub_metrics.conns_json);
    printf("rss_per_conn_bytes=%.0f\n", (double)(rss - run.rss0) / n);
    printf("mallinfo2_inuse_per_conn_bytes=%.0f\n", ((double)mi.uordblks - (double)run.heap0) / n);
    printf("\nembedded (sizeof): uv_tcp_t=%zu hub_conn=%zu (incl. uv_tcp_t and hub_outq=%zu)\n",
           sizeof(uv_tcp_t), sizeof(struct hub_conn), sizeof(struct hub_outq));
    printf(
        "\nheap held per connection, by the hub file that asked (held = usable + 8 B header):\n");
    printf("%-22s %10s %10s %8s  %s\n", "layer", "held B", "asked B", "allocs", "call site");
    long tot_held = 0, tot_size = 0;
    const char *cur = "";
    double lh = 0, ls = 0;
    for (size_t i = 0; i <= nsites; i++) {
        if (i == nsites || strcmp(sites[i].layer, cur) != 0) {
            if (cur[0] != 0)
                printf("%-22s %10.1f %10.1f          (layer total)\n", cur, lh, ls);
            if (i == nsites)
                break;
            cur = sites[i].layer;
            lh = ls = 0;
        }
        struct site *s = &sites[i];
        tot_held += s->held;
        tot_size += s->size;
        lh += s->held / n;
        ls += s->size / n;
        if (s->held / n >= 0.5 || s->held / n <= -0.5)
            printf("  %-20s %10.1f %10.1f %8.2f  %s\n", "", s->held / n, s->size / n, s->count / n,
                   s->where);
    }
    printf("%-22s %10.1f %10.1f\n", "TOTAL", tot_held / n, tot_size / n);
    fflush(stdout);
}

static void on_tick(uv_timer_t *t)
{
    uint64_t up = run.json ? hub_metrics.conns_json : hub_metrics.conns_raw;
    if (run.done)
        return;
    if (++run.waited > 600) {
        fprintf(stderr, "idlemem: only %llu of %u connections after 60 s\n", (unsigned long long)up,
                run.conns);
        run.done = 1;
    } else {
        size_t live = live_count();
        if (up >= run.conns && hub_metrics.output_queued == 0 && live == run.last_live)
            run.ticks_stable++;
        else
            run.ticks_stable = 0;
        run.last_live = live;
        if (run.ticks_stable < 5)
            return;
        report();
        run.done = 1;
    }
    if (run.child > 0) {
        kill(run.child, SIGTERM);
        waitpid(run.child, NULL, 0);
        run.child = 0;
    }
    uv_timer_stop(t);
    uv_close((uv_handle_t *)t, NULL);
    hub_server_shutdown(run.server);
}

static void usage(void)
{
    fprintf(stderr, "usage: idlemem [--json] [--conns N] [--persist DIR] [--loadgen PATH]\n"
                    "  --json          chathub.v1 clients (hello + join one room), not raw mode\n"
                    "  --conns N       idle connections (default 2000)\n"
                    "  --persist DIR   SQLite history in DIR (default: --no-persist)\n"
                    "  --loadgen PATH  the load generator (default: loadgen beside idlemem)\n");
}

int main(int argc, char **argv)
{
    static char lg[4096];
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            run.json = 1;
        } else if (strcmp(argv[i], "--conns") == 0 && i + 1 < argc) {
            run.conns = (unsigned)strtoul(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--persist") == 0 && i + 1 < argc) {
            run.persist = argv[++i];
        } else if (strcmp(argv[i], "--loadgen") == 0 && i + 1 < argc) {
            run.loadgen = argv[++i];
        } else {
            usage();
            return 2;
        }
    }
    if (run.conns == 0) {
        usage();
        return 2;
    }
    if (run.loadgen == NULL) {
        ssize_t k = readlink("/proc/self/exe", lg, sizeof(lg) - 16);
        if (k <= 0)
            return 1;
        lg[k] = 0;
        char *slash = strrchr(lg, '/');
        strcpy(slash + 1, "loadgen");
        run.loadgen = lg;
    }
    table = __libc_calloc(TABLE, sizeof(*table));
    freed_old = __libc_calloc(FREED_MAX, sizeof(*freed_old));
    if (table == NULL || freed_old == NULL)
        return 1;
    /* Touch every page of the tables now, so that the resident set taken
     * as the baseline already holds them. */
    memset(table, 0, TABLE * sizeof(*table));
    memset(freed_old, 0, FREED_MAX * sizeof(*freed_old));
    void *warm[1];
    backtrace(warm, 1); /* loads libgcc's unwinder before any hook needs it */
    signal(SIGPIPE, SIG_IGN);
    hub_log_set_level(HUB_LOG_WARN);

    uv_loop_t loop;
    uv_loop_init(&loop);
    struct hub_server_config cfg;
    hub_server_config_default(&cfg);
    cfg.host = "127.0.0.1";
    cfg.port = 0;
    cfg.rate = 0;
    cfg.max_conns = 0;
    cfg.max_conns_per_ip = 0;
    cfg.drain_ms = 1000;
    cfg.persist = run.persist != NULL;
    cfg.data_dir = run.persist;
    char err[256];
    if (hub_server_new(&run.server, &loop, &cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "idlemem: %s\n", err);
        return 1;
    }
    char port[16], conns[16];
    snprintf(port, sizeof(port), "%d", hub_server_port(run.server));
    snprintf(conns, sizeof(conns), "%u", run.conns);
    /* Let the server settle (history opened, first tick), then take the
     * baseline and start the clients. */
    uv_run(&loop, UV_RUN_NOWAIT);
    run.rss0 = rss_bytes();
    run.heap0 = mallinfo2().uordblks;
    tracking = 1;
    run.child = fork();
    if (run.child == 0) {
        tracking = 0;
        const char *a[] = {run.loadgen,
                           "--host",
                           "127.0.0.1",
                           "--port",
                           port,
                           "--path",
                           "/ws/bench",
                           "--conns",
                           conns,
                           "--idle",
                           "--hold",
                           "3600",
                           "--ramp",
                           "0",
                           "--max-pending",
                           "256",
                           run.json ? "--json" : NULL,
                           "--room",
                           "bench",
                           NULL};
        int fd = open("/dev/null", 1);
        if (fd >= 0)
            dup2(fd, 1);
        execv(run.loadgen, (char *const *)a);
        _exit(127);
    }
    uv_timer_t tick;
    uv_timer_init(&loop, &tick);
    uv_timer_start(&tick, on_tick, 100, 100);
    uv_run(&loop, UV_RUN_DEFAULT);
    hub_server_free(run.server);
    uv_loop_close(&loop);
    return run.done ? 0 : 1;
}
