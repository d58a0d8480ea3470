/*
 * loadgen.c: a WebSocket load generator for chathub and for any server that
 * relays messages to a room, such as the Node.js `ws` reference in
 * bench/reference/.
 *
 * It is an independent RFC 6455 client on libuv and shares no code with the
 * hub: an HTTP upgrade with a random key, masked frames of any length,
 * incremental parsing of server frames split anywhere, pongs for pings and
 * a reply to the server's close. Every published message carries, in text
 * that is also a valid JSON string, the CLOCK_MONOTONIC time it was sent,
 * the sender's number and a sequence number, so every receiver measures the
 * latency of every delivery into one log-linear histogram and checks order.
 *
 * A run goes through phases: connect (all connections, at --ramp per second
 * or as fast as --max-pending in-flight handshakes allow), warm-up, the
 * measured window, a grace period in which senders go on but nothing they
 * send is counted, and a drain in which late deliveries still arrive. A
 * delivery counts when the message was sent inside the measured window, so
 * expected = (messages published in the window) x (receivers per message)
 * and missing = expected - delivered. With --idle the run only connects,
 * holds the connections and reports the server's memory per connection.
 *
 * Several servers that share one chat (hubs over Redis) are measured as
 * one: --also-port spreads the connections round-robin over more ports of
 * the same host (connection i goes to port i mod n, so senders are spread
 * too), --also-pid adds those servers' CPU and memory to the samples.
 *
 * Senders either keep a fixed rate (open loop) or, with --rate 0, keep at
 * most --window messages each that have not yet reached every receiver:
 * receipts are counted per message in a small ring, so the window bounds
 * every receiver's backlog whatever order the server delivers in.
 *
 * The handshake key comes from getrandom(); masking keys only have to vary,
 * so they come from a per-connection xorshift generator seeded from it.
 *
 * Invariants that keep it cheap enough never to be the bottleneck:
 * - One read buffer for all connections: libuv reads into it and the frame
 *   parser consumes it before the read callback returns.
 * - No allocation per message: each connection has two output buffers that
 *   grow only when a burst outgrows them, and a received message is looked
 *   at through its first HEAD_MAX bytes, kept in the connection.
 * - Frames are appended to the connection's output buffer and written once
 *   per loop iteration, with at most one uv_write in flight per connection.
 * - The loop owns everything; there are no threads.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24 /* Linux 4.2; older headers lack it */
#endif

#define READ_BUF_SIZE (256 * 1024)   /* the one read buffer */
#define HEAD_MAX 512                 /* bytes of each received message looked at */
#define OUT_INITIAL 1024             /* first capacity of an output buffer */
#define OUT_MAX (64u * 1024 * 1024)  /* an output buffer never grows past this */
#define MAX_JOINS 16                 /* --join messages */
#define MAX_SIZE (16u * 1024 * 1024) /* largest --size; chathub itself takes 64 KiB */
#define TICK_MS 1                    /* sender and connector timer period */
#define MARK "LG"                    /* first bytes of every published payload */
#define MARK_LEN 2
#define STAMP_LEN (MARK_LEN + 16 + 6 + 10) /* "LG" ts(16 hex) sender(6 hex) seq(10 hex) */
#define NS_PER_SEC 1000000000.0
#define MAX_SERVERS 8 /* --port plus at most 7 --also-port */

/* Histogram: values below 2 * HIST_SUB are exact; above, every power of two
 * is split into HIST_SUB buckets, so a bucket is at most 1/64 of its value. */
#define HIST_SUB_BITS 6
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_BUCKETS (2 * HIST_SUB + 58 * HIST_SUB)

enum conn_state {
    CONN_IDLE,       /* not opened yet */
    CONN_CONNECTING, /* TCP connect in progress */
    CONN_HANDSHAKE,  /* upgrade request sent, waiting for the 101 */
    CONN_JOINING,    /* --json: waiting for the reply to join */
    CONN_READY,      /* in the room */
    CONN_CLOSED,     /* closed or closing; counted in failures if unplanned */
};

enum phase {
    PHASE_CONNECT, /* opening connections */
    PHASE_HOLD,    /* --idle: holding them before the memory sample */
    PHASE_WARMUP,  /* senders running, nothing counted */
    PHASE_MEASURE, /* senders running, everything counted */
    PHASE_GRACE,   /* senders running, nothing counted */
    PHASE_DRAIN,   /* senders stopped, late deliveries still counted */
    PHASE_DONE,    /* tearing down */
};

struct config {
    const char *host;                /* server address (numeric IPv4) */
    int port;                        /* server port */
    const char *path;                /* request target, e.g. /ws/bench */
    unsigned conns;                  /* connections, senders included */
    unsigned senders;                /* the first conns that also publish */
    double rate;                     /* messages per second per sender; 0: window mode */
    unsigned window;                 /* window mode: messages in flight per sender */
    size_t size;                     /* payload bytes */
    double duration;                 /* measured window, seconds */
    double warmup;                   /* seconds before it */
    double grace;                    /* seconds at the end of it not counted */
    double drain;                    /* seconds after senders stop */
    double hold;                     /* --idle: seconds held before the sample */
    double connect_timeout;          /* seconds the connect phase may take */
    double stall;                    /* seconds a window may stand still before it is reopened */
    const char *joins[MAX_JOINS];    /* messages sent after the upgrade */
    unsigned njoins;                 /* entries in joins */
    int json;                        /* chathub.v1: hello + join, no echo */
    int acks;                        /* --acks: senders pipeline acked `send`s (needs --json) */
    const char *room;                /* --json room */
    const char *protocol;            /* Sec-WebSocket-Protocol, or NULL */
    int echo;                        /* a sender receives its own messages */
    unsigned sources;                /* spread over 127.0.0.1..127.0.0.N */
    double ramp;                     /* connections opened per second; 0: no limit */
    unsigned max_pending;            /* handshakes in flight at once */
    int idle;                        /* only connect and hold */
    int server_pid;                  /* sampled in /proc, or 0 */
    int also_ports[MAX_SERVERS - 1]; /* more servers on the same host (--also-port) */
    unsigned nalso_ports;            /* entries in also_ports */
    int also_pids[MAX_SERVERS - 1];  /* their processes, sampled with server_pid */
    unsigned nalso_pids;             /* entries in also_pids */
    int watch_pid;                   /* another process (Redis) sampled apart, or 0 */
    int server_cpu;                  /* the core the server is pinned to, or -1 */
    int binary;                      /* publish binary frames instead of text */
};

/* Per-sender state; senders are conns[0 .. senders-1]. */
struct sender {
    uint64_t seq;         /* next sequence number (starts at 1) */
    uint64_t acked;       /* every message up to this one reached every receiver */
    uint64_t progress_ns; /* when acked last moved, or the window opened */
    uint64_t sent;        /* messages sent since the senders started */
    uint32_t *got;        /* [seq & ring_mask]: receivers that got seq, for the window */
};

struct conn {
    uv_tcp_t tcp;             /* the socket; freed with the array after close */
    uv_connect_t connect_req; /* the TCP connect */
    uv_write_t write_req;     /* the one write in flight */
    struct conn *next_dirty;  /* flush list link */
    char *out;                /* frames waiting to be written, owned */
    size_t out_len;           /* bytes in out */
    size_t out_cap;           /* capacity of out */
    char *inflight;           /* buffer of the write in flight (or spare), owned */
    size_t inflight_cap;      /* capacity of inflight */
    uint64_t rng;             /* xorshift state for masking keys */
    uint64_t t_start;         /* when the TCP connect began */
    uint64_t *ack_sent;       /* --acks: send time by id % window, owned */
    uint32_t ack_next;        /* --acks: id of the next send (ids 1, 2 are hello, join) */
    uint32_t ack_waiting;     /* --acks: sends not yet answered */
    uint32_t index;           /* position in conns */
    uint8_t state;            /* enum conn_state */
    uint8_t writing;          /* a uv_write is in flight */
    uint8_t dirty;            /* on the flush list */
    uint8_t close_sent;       /* we sent a close frame */
    uint8_t planned;          /* closed by us at the end, not a failure */
    /* Frame parser. */
    uint8_t in_frame;       /* the header is complete, payload follows */
    uint8_t hdr_len;        /* header bytes collected */
    uint8_t hdr_need;       /* header bytes needed (2 until the length is known) */
    uint8_t hdr[14];        /* the header being collected */
    uint8_t opcode;         /* opcode of the current frame */
    uint8_t fin;            /* FIN of the current frame */
    uint8_t in_message;     /* a data message is open (fragmented) */
    uint8_t ctl_len;        /* bytes in ctl */
    uint8_t crlf;           /* bytes of the 101 head's final CRLFCRLF matched */
    uint8_t head_truncated; /* the 101 head did not fit in head */
    uint64_t remaining;     /* payload bytes left in the current frame */
    uint64_t msg_len;       /* bytes of the current data message so far */
    uint16_t head_len;      /* bytes in head */
    char head[HEAD_MAX];    /* first bytes of the current message, or the 101 */
    uint8_t ctl[125];       /* payload of the current control frame */
    char key[25];           /* Sec-WebSocket-Key, base64 */
};

/* Log-linear latency histogram in nanoseconds. */
struct histogram {
    uint64_t counts[HIST_BUCKETS]; /* deliveries per bucket */
    uint64_t total;                /* deliveries recorded */
    uint64_t max;                  /* largest value recorded */
};

/* A /proc sample of the server. */
struct proc_sample {
    int ok;                      /* the sample was read */
    uint64_t cpu_ticks;          /* utime + stime */
    uint64_t rss_kb;             /* VmRSS */
    int core_ok;                 /* the core's line of /proc/stat was read */
    uint64_t core_total;         /* all ticks of the server's core */
    uint64_t core_idle;          /* its idle and iowait ticks */
    uint64_t core_soft;          /* its softirq ticks */
    uint64_t ticks[MAX_SERVERS]; /* utime + stime of each sampled server */
    int watch_ok;                /* --watch-pid was read */
    uint64_t watch_ticks;        /* its utime + stime */
};

/* The whole generator; one per process. */
struct loadgen {
    struct config cfg;                      /* parsed options */
    uv_loop_t *loop;                        /* the default loop */
    uv_timer_t tick;                        /* connector and sender pacing */
    uv_timer_t phase_timer;                 /* phase transitions */
    uv_check_t flusher;                     /* writes dirty connections once per iteration */
    uv_signal_t sigint;                     /* stops the run early */
    struct sockaddr_in server[MAX_SERVERS]; /* resolved --host with --port, --also-port */
    unsigned nservers;                      /* entries in server and request */
    struct conn *conns;                     /* cfg.conns connections, owned */
    struct sender *senders;                 /* cfg.senders senders, owned */
    uint64_t *last_seq;                     /* [receiver * senders + sender]: order check, owned */
    struct conn *dirty;                     /* flush list head */
    enum phase phase;                       /* where the run is */
    uint64_t t_connect_begin;               /* first TCP connect started */
    uint64_t t_connect_end;                 /* last connection became ready */
    uint64_t t_last_handshake;              /* last 101 accepted */
    uint64_t t_send_begin;                  /* senders started */
    uint64_t win_start;                     /* measured window start (ns), UINT64_MAX until then */
    uint64_t win_stop;                      /* measured window stop, UINT64_MAX until known */
    unsigned opened;                        /* connections started */
    unsigned pending;                       /* connections between start and ready */
    unsigned handshakes;                    /* 101 responses accepted */
    unsigned ready;                         /* connections in the room */
    unsigned failures;                      /* failed or unexpectedly closed connections */
    unsigned closed;                        /* close callbacks seen */
    unsigned receivers;                     /* receivers per message, fixed at window start */
    uint64_t published;                     /* messages sent inside the window */
    uint64_t published_total;               /* messages sent overall */
    uint64_t delivered;                     /* deliveries of messages sent inside the window */
    uint64_t delivered_total;               /* deliveries overall */
    uint64_t out_of_order;        /* deliveries not after the previous one of their sender */
    uint64_t gaps;                /* deliveries that skipped sequence numbers */
    uint64_t stalls;              /* windows given up after --stall seconds */
    uint32_t ring_mask;           /* size of each sender's got ring, minus one */
    unsigned fanout;              /* receivers per message now (ready, less the sender
                                     without echo) */
    uint64_t json_errors;         /* error replies or pushes in --json */
    uint64_t acked;               /* --acks: ok replies to sends inside the window */
    uint64_t acked_total;         /* --acks: ok replies to sends over the run */
    struct histogram hist;        /* latency of counted deliveries */
    struct proc_sample before;    /* server sample at the start of the window */
    struct proc_sample after;     /* server sample at its end */
    struct rusage self_before;    /* our own CPU at the start of the window */
    struct rusage self_after;     /* and at its end */
    char *send_prefix;            /* bytes before the payload in a published message */
    size_t send_prefix_len;       /* length of send_prefix */
    const char *send_suffix;      /* bytes after it */
    size_t send_suffix_len;       /* length of send_suffix */
    char *request[MAX_SERVERS];   /* the upgrade request per server without the key line, owned */
    int exit_code;                /* 0, or 1 when the run could not be measured */
    int opening;                  /* open_more is on the stack */
    unsigned ready_at_end;        /* connections still in the room at the end */
    char read_buf[READ_BUF_SIZE]; /* the one read buffer */
};

static struct loadgen *lg;

__attribute__((format(printf, 1, 2))) static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "loadgen: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* Fills buf with random bytes from the kernel; the key of each handshake
 * must be unpredictable, the masking keys only need to vary. */
static void random_bytes(void *buf, size_t len)
{
    unsigned char *p = buf;
    while (len > 0) {
        ssize_t n = getrandom(p, len, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            /* No kernel randomness is not worth stopping a benchmark for. */
            for (size_t i = 0; i < len; i++)
                p[i] = (unsigned char)rand();
            return;
        }
        p += n;
        len -= (size_t)n;
    }
}

static void base64_encode(const unsigned char *in, size_t len, char *out)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < len)
            v |= in[i + 2];
        out[o++] = tbl[(v >> 18) & 63];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = i + 1 < len ? tbl[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < len ? tbl[v & 63] : '=';
    }
    out[o] = '\0';
}

/* ---- histogram -------------------------------------------------------- */

static unsigned hist_index(uint64_t v)
{
    if (v < 2 * HIST_SUB)
        return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = e - HIST_SUB_BITS;
    unsigned idx = 2 * HIST_SUB + (shift - 1) * HIST_SUB + (unsigned)((v >> shift) - HIST_SUB);
    return idx < HIST_BUCKETS ? idx : HIST_BUCKETS - 1;
}

/* The middle of bucket idx, the value reported for everything in it. */
static uint64_t hist_value(unsigned idx)
{
    if (idx < 2 * HIST_SUB)
        return idx;
    unsigned shift = (idx - 2 * HIST_SUB) / HIST_SUB + 1;
    uint64_t sub = (idx - 2 * HIST_SUB) % HIST_SUB + HIST_SUB;
    return (sub << shift) + ((1ull << shift) >> 1);
}

static void hist_record(struct histogram *h, uint64_t v)
{
    h->counts[hist_index(v)]++;
    h->total++;
    if (v > h->max)
        h->max = v;
}

/* The value at or below which a fraction q of the recorded values lie. */
static uint64_t hist_quantile(const struct histogram *h, double q)
{
    if (h->total == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)h->total + 0.999999);
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t v = hist_value(i);
            return v < h->max ? v : h->max;
        }
    }
    return h->max;
}

/* ---- /proc ------------------------------------------------------------ */

/* Reads the line of core cpu in /proc/stat into s. Softirq time, where the
 * kernel carries loopback packets to the receiving socket, is not in the
 * server's own utime and stime; the core's figures show it. */
static void core_sample(int cpu, struct proc_sample *s)
{
    if (cpu < 0)
        return;
    FILE *f = fopen("/proc/stat", "r");
    if (f == NULL)
        return;
    char line[512], name[16];
    snprintf(name, sizeof(name), "cpu%d ", cpu);
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, name, strlen(name)) != 0)
            continue;
        unsigned long long v[8] = {0};
        if (sscanf(line + strlen(name), "%llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1],
                   &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) == 8) {
            s->core_total = v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
            s->core_idle = v[3] + v[4];
            s->core_soft = v[6];
            s->core_ok = 1;
        }
        break;
    }
    fclose(f);
}

static struct proc_sample proc_sample(int pid)
{
    struct proc_sample s = {0};
    core_sample(lg->cfg.server_cpu, &s);
    if (pid <= 0)
        return s;
    char path[64], buf[4096];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return s;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The command name may hold spaces and parentheses: fields are counted
     * after the last ')', where field 3 (state) begins. */
    char *p = strrchr(buf, ')');
    if (p == NULL)
        return s;
    p++;
    unsigned long long utime = 0, stime = 0;
    for (int field = 3; field <= 15; field++) {
        while (*p == ' ')
            p++;
        if (field == 14)
            utime = strtoull(p, NULL, 10);
        if (field == 15)
            stime = strtoull(p, NULL, 10);
        while (*p != ' ' && *p != '\0')
            p++;
    }
    s.cpu_ticks = utime + stime;

    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    f = fopen(path, "r");
    if (f == NULL)
        return s;
    while (fgets(buf, sizeof(buf), f) != NULL)
        if (strncmp(buf, "VmRSS:", 6) == 0)
            s.rss_kb = strtoull(buf + 6, NULL, 10);
    fclose(f);
    s.ok = 1;
    return s;
}

/* Samples every server (--server-pid and --also-pid): CPU and memory are
 * summed, ticks are also kept per server; ok only if every one was read. */
static struct proc_sample sample_servers(void)
{
    struct proc_sample s = proc_sample(lg->cfg.server_pid);
    s.ticks[0] = s.cpu_ticks;
    for (unsigned i = 0; i < lg->cfg.nalso_pids; i++) {
        struct proc_sample o = proc_sample(lg->cfg.also_pids[i]);
        s.ok = s.ok && o.ok;
        s.cpu_ticks += o.cpu_ticks;
        s.rss_kb += o.rss_kb;
        s.ticks[i + 1] = o.cpu_ticks;
    }
    if (lg->cfg.watch_pid > 0) {
        struct proc_sample w = proc_sample(lg->cfg.watch_pid);
        s.watch_ok = w.ok;
        s.watch_ticks = w.cpu_ticks;
    }
    return s;
}

/* ---- output ----------------------------------------------------------- */

static void conn_close(struct conn *c, int failed, const char *why);

/* Returns room for n more bytes at the end of c's output buffer, or NULL
 * (and closes c) if the buffer would pass OUT_MAX. */
static char *out_reserve(struct conn *c, size_t n)
{
    if (c->out_len + n > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : OUT_INITIAL;
        while (cap < c->out_len + n)
            cap *= 2;
        char *p = cap <= OUT_MAX ? realloc(c->out, cap) : NULL;
        if (p == NULL) {
            conn_close(c, 1, "output buffer limit");
            return NULL;
        }
        c->out = p;
        c->out_cap = cap;
    }
    return c->out + c->out_len;
}

static void mark_dirty(struct conn *c)
{
    if (!c->dirty) {
        c->dirty = 1;
        c->next_dirty = lg->dirty;
        lg->dirty = c;
    }
}

/* Appends a raw byte string (the upgrade request). */
static int out_put(struct conn *c, const void *data, size_t len)
{
    char *p = out_reserve(c, len);
    if (p == NULL)
        return -1;
    memcpy(p, data, len);
    c->out_len += len;
    mark_dirty(c);
    return 0;
}

/* Starts a masked client frame of len payload bytes in c's output buffer
 * and returns where the payload goes; frame_end masks it. NULL on failure. */
static char *frame_begin(struct conn *c, unsigned opcode, size_t len, uint8_t **mask)
{
    char *p = out_reserve(c, 14 + len);
    if (p == NULL)
        return NULL;
    unsigned char *h = (unsigned char *)p;
    size_t n = 0;
    h[n++] = (unsigned char)(0x80 | opcode);
    if (len < 126) {
        h[n++] = (unsigned char)(0x80 | len);
    } else if (len <= 0xffff) {
        h[n++] = 0x80 | 126;
        h[n++] = (unsigned char)(len >> 8);
        h[n++] = (unsigned char)len;
    } else {
        h[n++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            h[n++] = (unsigned char)((uint64_t)len >> (8 * i));
    }
    uint32_t key = (uint32_t)xorshift(&c->rng);
    memcpy(h + n, &key, 4);
    *mask = h + n;
    n += 4;
    c->out_len += n + len;
    return p + n;
}

/* Masks len payload bytes at p with the 4-byte key and queues the frame. */
static void frame_end(struct conn *c, char *p, size_t len, const uint8_t *mask)
{
    unsigned char *u = (unsigned char *)p;
    size_t i = 0;
    uint32_t k;
    memcpy(&k, mask, 4);
    for (; i + 4 <= len; i += 4) {
        uint32_t w;
        memcpy(&w, u + i, 4);
        w ^= k;
        memcpy(u + i, &w, 4);
    }
    for (; i < len; i++)
        u[i] ^= mask[i & 3];
    mark_dirty(c);
}

static int frame_put(struct conn *c, unsigned opcode, const void *payload, size_t len)
{
    uint8_t *mask;
    char *p = frame_begin(c, opcode, len, &mask);
    if (p == NULL)
        return -1;
    memcpy(p, payload, len);
    frame_end(c, p, len, mask);
    return 0;
}

static void flush(struct conn *c);

static void on_write(uv_write_t *req, int status)
{
    struct conn *c = req->data;
    c->writing = 0;
    if (status < 0) {
        if (status != UV_ECANCELED)
            conn_close(c, 1, uv_strerror(status));
        return;
    }
    if (c->out_len > 0)
        flush(c);
}

/* Writes c's output buffer: directly if the socket takes it all, otherwise
 * the rest goes out with one uv_write while new frames collect in the other
 * buffer. */
static void flush(struct conn *c)
{
    if (c->writing || c->out_len == 0 || c->state == CONN_CLOSED || c->state == CONN_CONNECTING)
        return;
    int n = uv_try_write((uv_stream_t *)&c->tcp, &(uv_buf_t){.base = c->out, .len = c->out_len}, 1);
    if (n == UV_EAGAIN)
        n = 0;
    if (n < 0) {
        conn_close(c, 1, uv_strerror(n));
        return;
    }
    if ((size_t)n == c->out_len) {
        c->out_len = 0;
        return;
    }
    char *buf = c->out;
    size_t cap = c->out_cap;
    size_t len = c->out_len;
    c->out = c->inflight;
    c->out_cap = c->inflight_cap;
    c->out_len = 0;
    c->inflight = buf;
    c->inflight_cap = cap;
    uv_buf_t b = uv_buf_init(buf + n, (unsigned)(len - (size_t)n));
    c->write_req.data = c;
    int rc = uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (rc != 0) {
        conn_close(c, 1, uv_strerror(rc));
        return;
    }
    c->writing = 1;
}

static void on_check(uv_check_t *h)
{
    while (lg->dirty != NULL) {
        struct conn *c = lg->dirty;
        lg->dirty = c->next_dirty;
        c->dirty = 0;
        flush(c);
    }
}

/* ---- publishing ------------------------------------------------------- */

static void put_hex(char *p, uint64_t v, int digits)
{
    static const char hex[] = "0123456789abcdef";
    for (int i = digits - 1; i >= 0; i--) {
        p[i] = hex[v & 15];
        v >>= 4;
    }
}

/* Returns the value of digits hex characters, or UINT64_MAX if one is not. */
static uint64_t get_hex(const char *p, int digits)
{
    uint64_t v = 0;
    for (int i = 0; i < digits; i++) {
        char ch = p[i];
        unsigned d;
        if (ch >= '0' && ch <= '9')
            d = (unsigned)(ch - '0');
        else if (ch >= 'a' && ch <= 'f')
            d = (unsigned)(ch - 'a' + 10);
        else
            return UINT64_MAX;
        v = (v << 4) | d;
    }
    return v;
}

/* Sends sender s's next message: prefix, stamped payload padded with 'x'
 * to --size, suffix. The stamp is taken last, just before the frame is
 * queued, so latency starts when the bytes are ready to go. */
static void publish(uint32_t s)
{
    struct conn *c = &lg->conns[s];
    struct sender *sd = &lg->senders[s];
    if (c->state != CONN_READY)
        return;
    size_t len = lg->send_prefix_len + lg->cfg.size + lg->send_suffix_len;
    uint8_t *mask;
    char *p = frame_begin(c, lg->cfg.binary ? 2 : 1, len, &mask);
    if (p == NULL)
        return;
    memcpy(p, lg->send_prefix, lg->send_prefix_len);
    char *pl = p + lg->send_prefix_len;
    memset(pl + STAMP_LEN, 'x', lg->cfg.size - STAMP_LEN);
    memcpy(pl + lg->cfg.size, lg->send_suffix, lg->send_suffix_len);
    memcpy(pl, MARK, MARK_LEN);
    put_hex(pl + MARK_LEN + 16, s, 6);
    put_hex(pl + MARK_LEN + 22, sd->seq, 10);
    uint64_t t = now_ns();
    put_hex(pl + MARK_LEN, t, 16);
    frame_end(c, p, len, mask);
    sd->seq++;
    sd->sent++;
    lg->published_total++;
    if (lg->phase == PHASE_MEASURE)
        lg->published++;
}

static int sending(void)
{
    return lg->phase == PHASE_WARMUP || lg->phase == PHASE_MEASURE || lg->phase == PHASE_GRACE;
}

/* Window mode: sends while fewer than --window of s's messages have not yet
 * reached every receiver. Counting all receivers, not just one, bounds what
 * waits in every receiver's queue whatever order the server delivers in. */
static void pump(uint32_t s)
{
    struct sender *sd = &lg->senders[s];
    while (sending() && lg->conns[s].state == CONN_READY &&
           sd->seq - 1 - sd->acked < lg->cfg.window)
        publish(s);
}

/* ---- receiving -------------------------------------------------------- */

/* Counts one receipt of sender s's message seq and opens the window past
 * every message that has now reached all receivers. */
static void window_receipt(uint32_t s, uint64_t seq, uint64_t now)
{
    struct sender *sd = &lg->senders[s];
    if (seq <= sd->acked || seq >= sd->seq || seq - sd->acked > lg->ring_mask)
        return; /* given up on already, or not from this run */
    sd->got[seq & lg->ring_mask]++;
    if (seq != sd->acked + 1)
        return;
    uint64_t was = sd->acked;
    while (sd->acked + 1 < sd->seq && sd->got[(sd->acked + 1) & lg->ring_mask] >= lg->fanout) {
        sd->acked++;
        sd->got[sd->acked & lg->ring_mask] = 0;
    }
    if (sd->acked != was) {
        sd->progress_ns = now;
        pump(s);
    }
}

/* Looks at a published payload that conn c received. */
static void on_stamp(struct conn *c, const char *p)
{
    uint64_t t = get_hex(p + MARK_LEN, 16);
    uint64_t s = get_hex(p + MARK_LEN + 16, 6);
    uint64_t seq = get_hex(p + MARK_LEN + 22, 10);
    if (t == UINT64_MAX || s >= lg->cfg.senders || seq == UINT64_MAX)
        return;
    uint64_t now = now_ns();
    lg->delivered_total++;
    uint64_t *last = &lg->last_seq[(size_t)c->index * lg->cfg.senders + s];
    if (seq <= *last)
        lg->out_of_order++;
    else if (*last != 0 && seq != *last + 1)
        lg->gaps++;
    if (seq > *last)
        *last = seq;
    if (t >= lg->win_start && t < lg->win_stop) {
        lg->delivered++;
        hist_record(&lg->hist, now > t ? now - t : 0);
    }
    if (lg->cfg.rate == 0)
        window_receipt((uint32_t)s, seq, now);
}

/* Finds `"key":` in a JSON head and returns what follows, or NULL. */
static const char *json_after(const char *h, size_t len, const char *key)
{
    size_t klen = strlen(key);
    for (size_t i = 0; i + klen + 3 <= len; i++)
        if (h[i] == '"' && memcmp(h + i + 1, key, klen) == 0 && h[i + 1 + klen] == '"') {
            size_t j = i + klen + 2;
            while (j < len && (h[j] == ' ' || h[j] == ':'))
                j++;
            return h + j;
        }
    return NULL;
}

static void became_ready(struct conn *c);
static void send_join(struct conn *c);

/* --acks: keeps --window sends with cmids unanswered on sender c, while
 * warming up or measuring. Each reply frees one slot; replies come back
 * in order, so the send time of id is kept at id % window. */
static void ack_pump(struct conn *c)
{
    const struct config *cfg = &lg->cfg;
    if (lg->phase != PHASE_WARMUP && lg->phase != PHASE_MEASURE)
        return;
    if (c->ack_sent == NULL) {
        c->ack_sent = calloc(cfg->window, sizeof(*c->ack_sent));
        if (c->ack_sent == NULL)
            return;
        c->ack_next = 3;
    }
    static char *msg;
    static size_t cap;
    if (msg == NULL) {
        cap = cfg->size + strlen(cfg->room) + 128;
        msg = malloc(cap);
        if (msg == NULL)
            return;
    }
    while (c->ack_waiting < cfg->window && c->state == CONN_READY) {
        uint32_t id = c->ack_next++;
        int n = snprintf(
            msg, cap, "{\"op\":\"send\",\"id\":%u,\"room\":\"%s\",\"cmid\":\"lg%u-%u\",\"text\":\"",
            id, cfg->room, c->index, id);
        size_t o = (size_t)n;
        memset(msg + o, 'x', cfg->size);
        o += cfg->size;
        msg[o++] = '"';
        msg[o++] = '}';
        c->ack_sent[id % cfg->window] = now_ns();
        c->ack_waiting++;
        frame_put(c, 1, msg, o);
    }
}

/* --acks: the reply to send id arrived (ok or not). */
static void ack_reply(struct conn *c, uint32_t id, int ok)
{
    if (c->ack_sent == NULL || c->ack_waiting == 0)
        return;
    c->ack_waiting--;
    if (ok) {
        lg->acked_total++;
        if (lg->phase == PHASE_MEASURE) {
            uint64_t now = now_ns(), t = c->ack_sent[id % lg->cfg.window];
            lg->acked++;
            hist_record(&lg->hist, now > t ? now - t : 0);
        }
    }
    ack_pump(c);
}

/* A JSON message other than a published one: replies to hello and join,
 * errors. Only the head is looked at; replies start with their id. */
static void on_json(struct conn *c, const char *h, size_t len)
{
    const char *end = h + len;
    const char *id = json_after(h, len, "id");
    const char *ok = json_after(h, len, "ok");
    /* Replies start with their id; a push may carry an "id" further on. */
    if (lg->cfg.acks && len > 6 && memcmp(h, "{\"id\":", 6) == 0 && id == h + 6) {
        uint32_t n = (uint32_t)strtoul(id, NULL, 10);
        if (n >= 3) {
            if (ok != NULL && ok < end && *ok == 'f') {
                lg->json_errors++;
                if (lg->json_errors <= 5)
                    say("conn %u: send refused: %.*s", c->index, (int)len, h);
            }
            ack_reply(c, n, ok != NULL && ok < end && *ok == 't');
            return;
        }
    }
    if (ok != NULL && ok < end && *ok == 'f') {
        lg->json_errors++;
        if (lg->json_errors <= 5)
            say("conn %u: error reply: %.*s", c->index, (int)len, h);
        if (c->state == CONN_JOINING)
            conn_close(c, 1, "hello or join refused");
        return;
    }
    int one_digit = id != NULL && id < end && (id + 1 == end || id[1] < '0' || id[1] > '9');
    if (one_digit && *id == '1' && c->state == CONN_JOINING)
        send_join(c);
    else if (one_digit && *id == '2' && c->state == CONN_JOINING)
        became_ready(c);
    else if (id == NULL && json_after(h, len, "t") != NULL) {
        const char *t = json_after(h, len, "t");
        if (t + 7 <= end && memcmp(t, "\"error\"", 7) == 0) {
            lg->json_errors++;
            if (lg->json_errors <= 5)
                say("conn %u: error push: %.*s", c->index, (int)len, h);
        }
    }
}

/* A complete data message; head holds its first min(len, HEAD_MAX) bytes. */
static void on_message(struct conn *c)
{
    const char *h = c->head;
    size_t len = c->head_len;
    if (len >= STAMP_LEN && memcmp(h, MARK, MARK_LEN) == 0) {
        on_stamp(c, h); /* raw relay: the payload itself */
        return;
    }
    if (len == 0 || h[0] != '{')
        return;
    /* A JSON push carries the payload as its "text" (with --json, or with
     * --join messages that speak chathub.v1 by hand). */
    static const char needle[] = "\"text\":\"" MARK;
    for (size_t i = 0; i + sizeof(needle) - 1 + STAMP_LEN - MARK_LEN <= len; i++)
        if (h[i] == '"' && memcmp(h + i, needle, sizeof(needle) - 1) == 0) {
            on_stamp(c, h + i + sizeof(needle) - 1 - MARK_LEN);
            return;
        }
    if (lg->cfg.json)
        on_json(c, h, len);
}

static void on_control(struct conn *c)
{
    if (c->opcode == 9) {
        frame_put(c, 10, c->ctl, c->ctl_len);
    } else if (c->opcode == 8) {
        if (!c->close_sent) {
            c->close_sent = 1;
            frame_put(c, 8, c->ctl, c->ctl_len >= 2 ? 2 : 0);
            flush(c);
        }
        unsigned code = c->ctl_len >= 2 ? (unsigned)(c->ctl[0] << 8 | c->ctl[1]) : 1005;
        char why[64];
        snprintf(why, sizeof(why), "server closed with %u", code);
        conn_close(c, lg->phase != PHASE_DONE, why);
    }
}

/* Decodes a complete frame header. Returns 0 or -1 for a protocol error. */
static int frame_header(struct conn *c)
{
    const uint8_t *h = c->hdr;
    c->fin = h[0] >> 7;
    c->opcode = h[0] & 15;
    if (h[0] & 0x70)
        return -1; /* no extension was negotiated */
    uint64_t len = h[1] & 127;
    if (len == 126)
        len = (uint64_t)h[2] << 8 | h[3];
    else if (len == 127)
        for (int i = 0; i < 8; i++)
            len = len << 8 | h[2 + i];
    if (c->opcode >= 8) {
        if (!c->fin || len > 125 || c->opcode > 10)
            return -1;
        c->ctl_len = 0;
    } else if (c->opcode == 0) {
        if (!c->in_message)
            return -1;
    } else if (c->opcode <= 2) {
        if (c->in_message)
            return -1;
        c->in_message = 1;
        c->head_len = 0;
        c->msg_len = 0;
    } else {
        return -1;
    }
    c->remaining = len;
    return 0;
}

static void frame_done(struct conn *c)
{
    if (c->opcode >= 8) {
        on_control(c);
    } else if (c->fin) {
        c->in_message = 0;
        on_message(c);
    }
}

/* Consumes server frames from len bytes at p, split anywhere. */
static void parse_frames(struct conn *c, const uint8_t *p, size_t len)
{
    while (len > 0 && c->state != CONN_CLOSED) {
        if (!c->in_frame) {
            if (c->hdr_need == 0)
                c->hdr_need = 2;
            while (len > 0 && c->hdr_len < c->hdr_need) {
                c->hdr[c->hdr_len++] = *p++;
                len--;
                if (c->hdr_len == 2) {
                    if (c->hdr[1] & 0x80) {
                        conn_close(c, 1, "server sent a masked frame");
                        return;
                    }
                    unsigned l7 = c->hdr[1] & 127;
                    c->hdr_need = (uint8_t)(2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0));
                }
            }
            if (c->hdr_len < c->hdr_need)
                return;
            c->hdr_len = 0;
            c->hdr_need = 2;
            if (frame_header(c) != 0) {
                conn_close(c, 1, "protocol error in a server frame");
                return;
            }
            c->in_frame = 1;
            if (c->remaining == 0) {
                c->in_frame = 0;
                frame_done(c);
            }
            continue;
        }
        size_t n = len < c->remaining ? len : (size_t)c->remaining;
        if (c->opcode >= 8) {
            memcpy(c->ctl + c->ctl_len, p, n);
            c->ctl_len = (uint8_t)(c->ctl_len + n);
        } else {
            size_t room = HEAD_MAX - c->head_len;
            size_t k = n < room ? n : room;
            memcpy(c->head + c->head_len, p, k);
            c->head_len = (uint16_t)(c->head_len + k);
            c->msg_len += n;
        }
        p += n;
        len -= n;
        c->remaining -= n;
        if (c->remaining == 0) {
            c->in_frame = 0;
            frame_done(c);
        }
    }
}

/* ---- handshake and connection life ------------------------------------ */

static void open_more(void);
static void maybe_connected(void);

/* Sends what a connection says after the upgrade, with %d in each --join
 * message replaced by the connection's index. */
static void send_joins(struct conn *c)
{
    char msg[1024];
    for (unsigned j = 0; j < lg->cfg.njoins; j++) {
        size_t o = 0;
        for (const char *t = lg->cfg.joins[j]; *t != '\0' && o < sizeof(msg) - 16; t++) {
            if (t[0] == '%' && t[1] == 'd') {
                o += (size_t)snprintf(msg + o, sizeof(msg) - o, "%u", c->index);
                t++;
            } else {
                msg[o++] = *t;
            }
        }
        frame_put(c, 1, msg, o);
    }
    if (lg->cfg.json) {
        int n =
            snprintf(msg, sizeof(msg), "{\"op\":\"hello\",\"id\":1,\"nick\":\"lg-%u\"}", c->index);
        frame_put(c, 1, msg, (size_t)n);
    }
}

/* --json: the join follows the hello's reply, as a browser client does; a
 * hub with a shared engine answers hello only once the nick is claimed. */
static void send_join(struct conn *c)
{
    char msg[256];
    int n = snprintf(msg, sizeof(msg), "{\"op\":\"join\",\"id\":2,\"room\":\"%s\",\"history\":0}",
                     lg->cfg.room);
    frame_put(c, 1, msg, (size_t)n);
}

static void became_ready(struct conn *c)
{
    c->state = CONN_READY;
    lg->ready++;
    lg->pending--;
    uint64_t t = now_ns();
    if (t > lg->t_connect_end)
        lg->t_connect_end = t;
    open_more();
    maybe_connected();
}

/* Whether the response head has the header name (lowercase) with exactly
 * value, compared case-insensitively, spaces around it allowed. */
static int has_header_value(const char *h, size_t len, const char *name, const char *value)
{
    size_t nl = strlen(name), vl = strlen(value);
    for (size_t i = 0; i + 2 + nl + 1 <= len; i++) {
        if (h[i] != '\r' || h[i + 1] != '\n' || strncasecmp(h + i + 2, name, nl) != 0 ||
            h[i + 2 + nl] != ':')
            continue;
        size_t j = i + 2 + nl + 1;
        while (j < len && h[j] == ' ')
            j++;
        if (j + vl <= len && strncasecmp(h + j, value, vl) == 0) {
            j += vl;
            while (j < len && h[j] == ' ')
                j++;
            return j + 1 < len && h[j] == '\r' && h[j + 1] == '\n';
        }
    }
    return 0;
}

/* Checks the head of the 101 response collected in head. Returns 0, or -1
 * with a reason. */
static int check_upgrade(struct conn *c, const char *h, size_t len, const char **why)
{
    if (len < 12 || memcmp(h, "HTTP/1.1 101", 12) != 0) {
        *why = "no 101 Switching Protocols";
        return -1;
    }
    if (c->head_truncated)
        return 0; /* a head longer than HEAD_MAX: only its status line was checked */
    /* A light check of the headers: each must be present, case-insensitive. */
    static const char *const need[] = {"\r\nupgrade: websocket", "\r\nsec-websocket-accept: "};
    for (size_t k = 0; k < sizeof(need) / sizeof(need[0]); k++) {
        size_t nl = strlen(need[k]);
        int found = 0;
        for (size_t i = 0; i + nl <= len && !found; i++)
            found = strncasecmp(h + i, need[k], nl) == 0;
        if (!found) {
            *why = k == 0 ? "101 without Upgrade: websocket" : "101 without Sec-WebSocket-Accept";
            return -1;
        }
    }
    /* --json only works if the server picked the JSON protocol. */
    if (lg->cfg.json && !has_header_value(h, len, "sec-websocket-protocol", lg->cfg.protocol)) {
        *why = "101 without the requested Sec-WebSocket-Protocol";
        return -1;
    }
    return 0;
}

/* Consumes the 101 response head, which may be split anywhere and be longer
 * than head: its end is found by counting the bytes of "\r\n\r\n" matched
 * so far, and only its first HEAD_MAX bytes are kept for the checks. Bytes
 * after the head are already frames. */
static void on_handshake_bytes(struct conn *c, const char *p, size_t len)
{
    static const char term[] = "\r\n\r\n";
    size_t used = 0;
    while (used < len && c->crlf < 4) {
        char ch = p[used++];
        c->crlf = ch == term[c->crlf] ? (uint8_t)(c->crlf + 1) : ch == '\r' ? 1 : 0;
        if (c->head_len < HEAD_MAX)
            c->head[c->head_len++] = ch;
        else
            c->head_truncated = 1;
    }
    if (c->crlf < 4)
        return;
    const char *why;
    if (check_upgrade(c, c->head, c->head_len, &why) != 0) {
        if (lg->failures < 5)
            say("conn %u: %s: %.*s", c->index, why, (int)(c->head_len > 80 ? 80 : c->head_len),
                c->head);
        conn_close(c, 1, why);
        return;
    }
    lg->handshakes++;
    lg->t_last_handshake = now_ns();
    c->head_len = 0;
    if (lg->cfg.json || lg->cfg.njoins > 0)
        send_joins(c);
    if (lg->cfg.json)
        c->state = CONN_JOINING;
    else
        became_ready(c);
    if (used < len && c->state != CONN_CLOSED)
        parse_frames(c, (const uint8_t *)p + used, len - used);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    buf->base = lg->read_buf;
    buf->len = sizeof(lg->read_buf);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = s->data;
    if (nread < 0) {
        conn_close(c, c->state != CONN_CLOSED && lg->phase != PHASE_DONE,
                   nread == UV_EOF ? "server closed the connection" : uv_strerror((int)nread));
        return;
    }
    if (c->state == CONN_HANDSHAKE)
        on_handshake_bytes(c, buf->base, (size_t)nread);
    else
        parse_frames(c, (const uint8_t *)buf->base, (size_t)nread);
}

static void on_closed(uv_handle_t *h)
{
    lg->closed++;
}

/* Closes c once. failed counts it as a failure and says why (the first
 * few reasons are printed). */
static void conn_close(struct conn *c, int failed, const char *why)
{
    if (c->state == CONN_CLOSED)
        return;
    int was_pending = c->state != CONN_READY && c->state != CONN_IDLE;
    int was_ready = c->state == CONN_READY;
    c->state = CONN_CLOSED;
    if (failed) {
        lg->failures++;
        if (lg->failures <= 5)
            say("conn %u closed: %s", c->index, why);
    }
    if (was_ready) {
        lg->ready--;
        if (lg->fanout > 0)
            lg->fanout--; /* messages in flight need one receipt fewer now */
    }
    if (was_pending) {
        lg->pending--;
    }
    if (!failed && uv_tcp_close_reset(&c->tcp, on_closed) == 0)
        return;
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, on_closed);
    if (was_pending) {
        open_more();
        maybe_connected();
    }
}

static void on_connect(uv_connect_t *req, int status)
{
    struct conn *c = req->data;
    if (status < 0) {
        if (status != UV_ECANCELED)
            conn_close(c, 1, uv_strerror(status));
        return;
    }
    if (c->state != CONN_CONNECTING)
        return;
    c->state = CONN_HANDSHAKE;
    int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (rc == 0)
        rc = out_put(c, lg->request[c->index % lg->nservers],
                     strlen(lg->request[c->index % lg->nservers]));
    if (rc == 0) {
        char line[64];
        int n = snprintf(line, sizeof(line), "Sec-WebSocket-Key: %s\r\n\r\n", c->key);
        rc = out_put(c, line, (size_t)n);
    }
    if (rc != 0)
        conn_close(c, 1, "cannot start the handshake");
}

/* Starts connection i: socket, optional source address, connect. */
static void conn_open(struct conn *c)
{
    unsigned char key[16];
    random_bytes(key, sizeof(key));
    base64_encode(key, sizeof(key), c->key);
    random_bytes(&c->rng, sizeof(c->rng));
    c->rng |= 1;
    c->tcp.data = c;
    c->connect_req.data = c;
    c->hdr_need = 2;
    c->state = CONN_CONNECTING;
    c->t_start = now_ns();
    lg->opened++;
    lg->pending++;
    if (lg->t_connect_begin == 0)
        lg->t_connect_begin = c->t_start;
    int rc = uv_tcp_init_ex(lg->loop, &c->tcp, AF_INET);
    if (rc != 0) {
        /* The handle was never initialised; count it as failed by hand. */
        c->state = CONN_CLOSED;
        lg->pending--;
        lg->failures++;
        lg->closed++;
        if (lg->failures <= 5)
            say("conn %u: %s", c->index, uv_strerror(rc));
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    if (lg->cfg.sources > 1) {
        uv_os_fd_t fd;
        int one = 1;
        if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
            setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(0x7f000001u + c->index % lg->cfg.sources);
        rc = uv_tcp_bind(&c->tcp, (const struct sockaddr *)&src, 0);
    }
    if (rc == 0)
        rc = uv_tcp_connect(&c->connect_req, &c->tcp,
                            (const struct sockaddr *)&lg->server[c->index % lg->nservers],
                            on_connect);
    if (rc != 0)
        conn_close(c, 1, uv_strerror(rc));
}

/* Opens connections as --ramp and --max-pending allow. */
static void open_more(void)
{
    if (lg->phase != PHASE_CONNECT)
        return;
    unsigned target = lg->cfg.conns;
    if (lg->cfg.ramp > 0) {
        uint64_t elapsed = lg->t_connect_begin ? now_ns() - lg->t_connect_begin : 0;
        double allowed = 1 + lg->cfg.ramp * (double)elapsed / NS_PER_SEC;
        if (allowed < target)
            target = (unsigned)allowed;
    }
    /* A connection that fails at once calls back here: open it in this loop. */
    if (lg->opening)
        return;
    lg->opening = 1;
    while (lg->opened < target && lg->pending < lg->cfg.max_pending)
        conn_open(&lg->conns[lg->opened]);
    lg->opening = 0;
    maybe_connected(); /* the last ones may have failed before connecting */
}

/* ---- phases ----------------------------------------------------------- */

static void phase_next(uv_timer_t *t);

static void phase_after(double seconds)
{
    uint64_t ms = seconds > 0 ? (uint64_t)(seconds * 1000 + 0.5) : 0;
    uv_timer_start(&lg->phase_timer, phase_next, ms, 0);
}

/* Called whenever a connection stops being pending: moves on once all are. */
static void maybe_connected(void)
{
    if (lg->phase != PHASE_CONNECT || lg->opened < lg->cfg.conns || lg->pending > 0)
        return;
    if (lg->t_connect_end == 0)
        lg->t_connect_end = now_ns();
    if (lg->cfg.idle) {
        lg->phase = PHASE_HOLD;
        phase_after(lg->cfg.hold);
        return;
    }
    lg->phase = PHASE_WARMUP;
    lg->t_send_begin = now_ns();
    lg->fanout = lg->ready - (lg->cfg.echo || lg->ready == 0 ? 0 : 1);
    for (uint32_t s = 0; s < lg->cfg.senders; s++)
        lg->senders[s].progress_ns = lg->t_send_begin;
    if (lg->cfg.acks) {
        for (uint32_t s = 0; s < lg->cfg.senders && s < lg->opened; s++)
            ack_pump(&lg->conns[s]);
    } else if (lg->cfg.rate == 0) {
        for (uint32_t s = 0; s < lg->cfg.senders; s++)
            pump(s);
    }
    phase_after(lg->cfg.warmup);
}

static void finish(void)
{
    lg->phase = PHASE_DONE;
    lg->ready_at_end = lg->ready;
    uv_timer_stop(&lg->tick);
    uv_timer_stop(&lg->phase_timer);
    uv_close((uv_handle_t *)&lg->tick, NULL);
    uv_close((uv_handle_t *)&lg->phase_timer, NULL);
    uv_close((uv_handle_t *)&lg->flusher, NULL);
    uv_close((uv_handle_t *)&lg->sigint, NULL);
    for (unsigned i = 0; i < lg->opened; i++)
        conn_close(&lg->conns[i], 0, NULL);
}

static void phase_next(uv_timer_t *t)
{
    switch (lg->phase) {
    case PHASE_CONNECT:
        /* The connect timeout: whatever is still pending has failed. */
        say("connect phase timed out with %u of %u connections pending", lg->pending,
            lg->cfg.conns);
        lg->cfg.conns = lg->opened;
        for (unsigned i = 0; i < lg->opened; i++) {
            struct conn *c = &lg->conns[i];
            if (c->state != CONN_READY && c->state != CONN_CLOSED)
                conn_close(c, 1, "connect timeout");
        }
        maybe_connected();
        break;
    case PHASE_HOLD:
        lg->after = sample_servers();
        getrusage(RUSAGE_SELF, &lg->self_after);
        finish();
        break;
    case PHASE_WARMUP:
        lg->phase = PHASE_MEASURE;
        lg->win_start = now_ns();
        lg->receivers = lg->ready - (lg->cfg.echo ? 0 : 1);
        lg->before = sample_servers();
        getrusage(RUSAGE_SELF, &lg->self_before);
        phase_after(lg->cfg.duration - lg->cfg.grace);
        break;
    case PHASE_MEASURE:
        lg->phase = PHASE_GRACE;
        lg->win_stop = now_ns();
        lg->after = sample_servers();
        getrusage(RUSAGE_SELF, &lg->self_after);
        phase_after(lg->cfg.grace);
        break;
    case PHASE_GRACE:
        lg->phase = PHASE_DRAIN;
        phase_after(lg->cfg.drain);
        break;
    case PHASE_DRAIN:
        finish();
        break;
    case PHASE_DONE:
        break;
    }
}

/* Every TICK_MS: opens connections, paces senders in rate mode, and gives
 * up windows that made no progress for STALL_NS (a lost message would
 * otherwise stop its sender for good). */
static void on_tick(uv_timer_t *t)
{
    if (lg->phase == PHASE_CONNECT) {
        open_more();
        return;
    }
    if (lg->phase == PHASE_DRAIN && lg->delivered >= lg->published * lg->receivers) {
        finish(); /* everything counted has arrived: no need to wait longer */
        return;
    }
    if (!sending())
        return;
    uint64_t now = now_ns();
    double elapsed = (double)(now - lg->t_send_begin) / NS_PER_SEC;
    for (uint32_t s = 0; s < lg->cfg.senders; s++) {
        struct sender *sd = &lg->senders[s];
        if (lg->cfg.rate > 0) {
            /* Senders are spread evenly over each period, not all due at once. */
            uint64_t due = (uint64_t)(lg->cfg.rate * elapsed + (double)s / lg->cfg.senders);
            while (sd->sent < due && lg->conns[s].state == CONN_READY)
                publish(s);
        } else if (sd->seq - 1 > sd->acked &&
                   (double)(now - sd->progress_ns) > lg->cfg.stall * NS_PER_SEC) {
            /* Deliveries were lost (or a receiver left): give them up. */
            lg->stalls++;
            while (sd->acked + 1 < sd->seq)
                sd->got[++sd->acked & lg->ring_mask] = 0;
            sd->progress_ns = now;
            pump(s);
        }
    }
}

static void on_sigint(uv_signal_t *h, int signum)
{
    say("interrupted");
    lg->exit_code = 1;
    if (lg->phase != PHASE_DONE)
        finish();
}

/* ---- options and report ----------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(
        f,
        "Usage: loadgen [options]\n"
        "\n"
        "Opens WebSocket connections to one room, publishes stamped messages from some\n"
        "of them and prints key=value results (see bench/README.md).\n"
        "\n"
        "Target:\n"
        "  --url ws://HOST:PORT/PATH  server and path (default ws://127.0.0.1:8080/ws/bench)\n"
        "  --host ADDR --port N --path P   the same, separately (HOST must be numeric IPv4)\n"
        "  --protocol NAME            offer this Sec-WebSocket-Protocol\n"
        "  --json                     chathub.v1: offer the subprotocol, send hello (nick\n"
        "                             lg-<i>) and join --room, wait for the join reply; a\n"
        "                             sender receives no copy of its own messages\n"
        "  --room NAME                room for --json (default bench)\n"
        "  --acks                     with --json: each sender pipelines `send`s with cmids,\n"
        "                             --window of them unanswered; prints acks_per_sec and\n"
        "                             the send -> ack latency (durable sends)\n"
        "  --join MSG                 text message sent after the upgrade, %%d replaced by\n"
        "                             the connection index (repeatable, before --json's);\n"
        "                             publishing stays raw text: chathub.v1 needs --json\n"
        "  --no-echo                  senders get no copy of their messages (implied by --json)\n"
        "Load:\n"
        "  --conns N                  connections, all receivers (default 100)\n"
        "  --senders N                how many of them also publish (default 1)\n"
        "  --rate R                   messages per second per sender; 0 = as fast as the\n"
        "                             window allows (default 0)\n"
        "  --window W                 rate 0: messages of one sender that may still be on\n"
        "                             their way to some receiver (default 32)\n"
        "  --stall S                  reopen a window that stood still S seconds (default 5)\n"
        "  --size BYTES               payload size, at least %d (default 64)\n"
        "  --binary                   publish binary frames\n"
        "  --duration S               measured seconds (default 10)\n"
        "  --warmup S                 seconds before measuring (default 2)\n"
        "  --grace S                  last seconds of the window not counted (default 0.5)\n"
        "  --drain S                  at most this many seconds to wait for late deliveries\n"
        "                             (default 2; ends once all counted ones arrived)\n"
        "Connections:\n"
        "  --sources N                bind to 127.0.0.1 .. 127.0.0.N in turn (default 1)\n"
        "  --ramp R                   connections opened per second (default 0: no limit)\n"
        "  --max-pending N            handshakes in flight at once (default 64)\n"
        "  --connect-timeout S        give up on connecting after S seconds (default 60)\n"
        "  --idle                     only connect, hold --hold seconds, report memory\n"
        "  --hold S                   --idle: seconds before the memory sample (default 2)\n"
        "Measuring:\n"
        "  --server-pid PID           sample the server's CPU and memory in /proc\n"
        "  --server-cpu N             also sample core N (the server's) in /proc/stat\n"
        "  --also-port N              one more server on the same host (repeatable, 7 at\n"
        "                             most): connection i goes to port i mod servers\n"
        "  --also-pid PID             sample that server too (CPU and memory are summed)\n"
        "  --watch-pid PID            sample another process (Redis) apart: its CPU per\n"
        "                             message published in the window\n",
        STAMP_LEN);
}

static int parse_double(const char *s, double min, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || v < min)
        return -1;
    *out = v;
    return 0;
}

static int parse_uint(const char *s, unsigned long max, unsigned *out)
{
    char *end;
    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno != 0 || *end != '\0' || v > max)
        return -1;
    *out = (unsigned)v;
    return 0;
}

/* Splits ws://HOST[:PORT][/PATH]. Returns 0 or -1; host points into a
 * static copy. */
static int parse_url(const char *url, struct config *cfg)
{
    static char host[256];
    if (strncmp(url, "ws://", 5) != 0)
        return -1;
    const char *p = url + 5;
    const char *slash = strchr(p, '/');
    size_t hl = slash ? (size_t)(slash - p) : strlen(p);
    if (hl == 0 || hl >= sizeof(host))
        return -1;
    memcpy(host, p, hl);
    host[hl] = '\0';
    char *colon = strrchr(host, ':');
    if (colon != NULL) {
        *colon = '\0';
        unsigned port;
        if (parse_uint(colon + 1, 65535, &port) != 0)
            return -1;
        cfg->port = (int)port;
    } else {
        cfg->port = 80;
    }
    if (strcmp(host, "localhost") == 0)
        cfg->host = "127.0.0.1";
    else
        cfg->host = host;
    cfg->path = slash ? slash : "/";
    return 0;
}

enum {
    OPT_URL = 256,
    OPT_HOST,
    OPT_PORT,
    OPT_PATH,
    OPT_CONNS,
    OPT_SENDERS,
    OPT_RATE,
    OPT_WINDOW,
    OPT_SIZE,
    OPT_DURATION,
    OPT_WARMUP,
    OPT_GRACE,
    OPT_DRAIN,
    OPT_JOIN,
    OPT_JSON,
    OPT_ACKS,
    OPT_ROOM,
    OPT_PROTOCOL,
    OPT_NO_ECHO,
    OPT_SOURCES,
    OPT_RAMP,
    OPT_MAX_PENDING,
    OPT_CONNECT_TIMEOUT,
    OPT_IDLE,
    OPT_HOLD,
    OPT_SERVER_PID,
    OPT_BINARY,
    OPT_STALL,
    OPT_SERVER_CPU,
    OPT_ALSO_PORT,
    OPT_ALSO_PID,
    OPT_WATCH_PID,
    OPT_HELP,
};

static int parse_options(int argc, char **argv, struct config *cfg)
{
    static const struct option opts[] = {
        {"url", required_argument, NULL, OPT_URL},
        {"host", required_argument, NULL, OPT_HOST},
        {"port", required_argument, NULL, OPT_PORT},
        {"path", required_argument, NULL, OPT_PATH},
        {"conns", required_argument, NULL, OPT_CONNS},
        {"senders", required_argument, NULL, OPT_SENDERS},
        {"rate", required_argument, NULL, OPT_RATE},
        {"window", required_argument, NULL, OPT_WINDOW},
        {"size", required_argument, NULL, OPT_SIZE},
        {"duration", required_argument, NULL, OPT_DURATION},
        {"warmup", required_argument, NULL, OPT_WARMUP},
        {"grace", required_argument, NULL, OPT_GRACE},
        {"drain", required_argument, NULL, OPT_DRAIN},
        {"join", required_argument, NULL, OPT_JOIN},
        {"json", no_argument, NULL, OPT_JSON},
        {"acks", no_argument, NULL, OPT_ACKS},
        {"room", required_argument, NULL, OPT_ROOM},
        {"protocol", required_argument, NULL, OPT_PROTOCOL},
        {"no-echo", no_argument, NULL, OPT_NO_ECHO},
        {"sources", required_argument, NULL, OPT_SOURCES},
        {"ramp", required_argument, NULL, OPT_RAMP},
        {"max-pending", required_argument, NULL, OPT_MAX_PENDING},
        {"connect-timeout", required_argument, NULL, OPT_CONNECT_TIMEOUT},
        {"idle", no_argument, NULL, OPT_IDLE},
        {"hold", required_argument, NULL, OPT_HOLD},
        {"server-pid", required_argument, NULL, OPT_SERVER_PID},
        {"binary", no_argument, NULL, OPT_BINARY},
        {"stall", required_argument, NULL, OPT_STALL},
        {"server-cpu", required_argument, NULL, OPT_SERVER_CPU},
        {"also-port", required_argument, NULL, OPT_ALSO_PORT},
        {"also-pid", required_argument, NULL, OPT_ALSO_PID},
        {"watch-pid", required_argument, NULL, OPT_WATCH_PID},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    int opt;
    unsigned u;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int bad = 0;
        switch (opt) {
        case OPT_URL:
            bad = parse_url(optarg, cfg);
            break;
        case OPT_HOST:
            cfg->host = optarg;
            break;
        case OPT_PORT:
            bad = parse_uint(optarg, 65535, &u);
            cfg->port = (int)u;
            break;
        case OPT_PATH:
            cfg->path = optarg;
            bad = optarg[0] != '/';
            break;
        case OPT_CONNS:
            bad = parse_uint(optarg, 10000000, &cfg->conns) || cfg->conns == 0;
            break;
        case OPT_SENDERS:
            bad = parse_uint(optarg, 0xffffff, &cfg->senders);
            break;
        case OPT_RATE:
            bad = parse_double(optarg, 0, &cfg->rate);
            break;
        case OPT_WINDOW:
            bad = parse_uint(optarg, 1000000, &cfg->window) || cfg->window == 0;
            break;
        case OPT_SIZE:
            bad = parse_uint(optarg, MAX_SIZE, &u) || u < STAMP_LEN;
            cfg->size = u;
            break;
        case OPT_DURATION:
            bad = parse_double(optarg, 0.1, &cfg->duration);
            break;
        case OPT_WARMUP:
            bad = parse_double(optarg, 0, &cfg->warmup);
            break;
        case OPT_GRACE:
            bad = parse_double(optarg, 0, &cfg->grace);
            break;
        case OPT_DRAIN:
            bad = parse_double(optarg, 0, &cfg->drain);
            break;
        case OPT_JOIN:
            bad = cfg->njoins == MAX_JOINS || strlen(optarg) > 900;
            if (!bad)
                cfg->joins[cfg->njoins++] = optarg;
            break;
        case OPT_JSON:
            cfg->json = 1;
            cfg->echo = 0;
            if (cfg->protocol == NULL)
                cfg->protocol = "chathub.v1";
            break;
        case OPT_ACKS:
            cfg->acks = 1;
            break;
        case OPT_ROOM:
            cfg->room = optarg;
            bad = strlen(optarg) == 0 || strlen(optarg) > 64 || strpbrk(optarg, "\"\\") != NULL;
            break;
        case OPT_PROTOCOL:
            cfg->protocol = optarg;
            break;
        case OPT_NO_ECHO:
            cfg->echo = 0;
            break;
        case OPT_SOURCES:
            bad = parse_uint(optarg, 254, &cfg->sources) || cfg->sources == 0;
            break;
        case OPT_RAMP:
            bad = parse_double(optarg, 0, &cfg->ramp);
            break;
        case OPT_MAX_PENDING:
            bad = parse_uint(optarg, 1000000, &cfg->max_pending) || cfg->max_pending == 0;
            break;
        case OPT_CONNECT_TIMEOUT:
            bad = parse_double(optarg, 0.1, &cfg->connect_timeout);
            break;
        case OPT_IDLE:
            cfg->idle = 1;
            break;
        case OPT_HOLD:
            bad = parse_double(optarg, 0, &cfg->hold);
            break;
        case OPT_SERVER_PID:
            bad = parse_uint(optarg, INT_MAX, &u);
            cfg->server_pid = (int)u;
            break;
        case OPT_BINARY:
            cfg->binary = 1;
            break;
        case OPT_STALL:
            bad = parse_double(optarg, 0.01, &cfg->stall);
            break;
        case OPT_SERVER_CPU:
            bad = parse_uint(optarg, 4095, &u);
            cfg->server_cpu = (int)u;
            break;
        case OPT_ALSO_PORT:
            bad = cfg->nalso_ports == MAX_SERVERS - 1 || parse_uint(optarg, 65535, &u) || u == 0;
            if (!bad)
                cfg->also_ports[cfg->nalso_ports++] = (int)u;
            break;
        case OPT_ALSO_PID:
            bad = cfg->nalso_pids == MAX_SERVERS - 1 || parse_uint(optarg, INT_MAX, &u) || u == 0;
            if (!bad)
                cfg->also_pids[cfg->nalso_pids++] = (int)u;
            break;
        case OPT_WATCH_PID:
            bad = parse_uint(optarg, INT_MAX, &u) || u == 0;
            cfg->watch_pid = (int)u;
            break;
        case OPT_HELP:
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return -1;
        }
        if (bad) {
            say("invalid value for --%s: '%s'", opts[opt - OPT_URL].name, optarg);
            return -1;
        }
    }
    if (optind < argc) {
        say("unexpected argument '%s'", argv[optind]);
        return -1;
    }
    if (cfg->idle)
        cfg->senders = 0;
    if (cfg->senders > cfg->conns) {
        say("--senders (%u) cannot exceed --conns (%u)", cfg->senders, cfg->conns);
        return -1;
    }
    if (cfg->grace >= cfg->duration) {
        say("--grace must be shorter than --duration");
        return -1;
    }
    if (cfg->acks && (!cfg->json || cfg->window == 0 || cfg->rate > 0)) {
        say("--acks needs --json and a --window (and no --rate)");
        return -1;
    }
    if (cfg->json && cfg->binary) {
        say("--json cannot publish --binary frames");
        return -1;
    }
    return 0;
}

/* Builds the constant parts of requests and published messages. */
static int prepare(void)
{
    struct config *cfg = &lg->cfg;
    lg->nservers = 1 + cfg->nalso_ports;
    for (unsigned i = 0; i < lg->nservers; i++) {
        int port = i == 0 ? cfg->port : cfg->also_ports[i - 1];
        int rc = uv_ip4_addr(cfg->host, port, &lg->server[i]);
        if (rc != 0) {
            say("--host must be a numeric IPv4 address: %s", cfg->host);
            return -1;
        }
        size_t cap = 512 + strlen(cfg->path) + strlen(cfg->host) +
                     (cfg->protocol ? strlen(cfg->protocol) : 0);
        lg->request[i] = malloc(cap);
        if (lg->request[i] == NULL)
            return -1;
        snprintf(lg->request[i], cap,
                 "GET %s HTTP/1.1\r\n"
                 "Host: %s:%d\r\n"
                 "Upgrade: websocket\r\n"
                 "Connection: Upgrade\r\n"
                 "Sec-WebSocket-Version: 13\r\n"
                 "%s%s%s",
                 cfg->path, cfg->host, port, cfg->protocol ? "Sec-WebSocket-Protocol: " : "",
                 cfg->protocol ? cfg->protocol : "", cfg->protocol ? "\r\n" : "");
    }
    if (cfg->json) {
        size_t n = strlen(cfg->room) + 64;
        lg->send_prefix = malloc(n);
        if (lg->send_prefix == NULL)
            return -1;
        lg->send_prefix_len = (size_t)snprintf(
            lg->send_prefix, n, "{\"op\":\"send\",\"room\":\"%s\",\"text\":\"", cfg->room);
        lg->send_suffix = "\"}";
    } else {
        lg->send_prefix = calloc(1, 1);
        if (lg->send_prefix == NULL)
            return -1;
        lg->send_suffix = "";
    }
    lg->send_suffix_len = strlen(lg->send_suffix);
    return 0;
}

/* Raises the open-file limit to its hard limit: each connection is a fd. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)lg->cfg.conns + 64)
        say("open-file limit %llu is below --conns %u: expect failures",
            (unsigned long long)rl.rlim_cur, lg->cfg.conns);
}

static double tv_sec(struct timeval tv)
{
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static double cpu_sec(const struct rusage *r)
{
    return tv_sec(r->ru_utime) + tv_sec(r->ru_stime);
}

/* The server's core over the window: how busy, how much of it softirq, and
 * busy time per delivery (everything on that core, the kernel's share of
 * loopback included, and anything else that ran there). */
static void report_core(void)
{
    const struct proc_sample *a = &lg->before, *b = &lg->after;
    if (!a->core_ok || !b->core_ok || b->core_total <= a->core_total)
        return;
    double total = (double)(b->core_total - a->core_total);
    double busy = total - (double)(b->core_idle - a->core_idle);
    double soft = (double)(b->core_soft - a->core_soft);
    long hz = sysconf(_SC_CLK_TCK);
    printf("server_core_busy_pct=%.1f\n", 100.0 * busy / total);
    printf("server_core_softirq_pct=%.1f\n", 100.0 * soft / total);
    if (!lg->cfg.idle && lg->delivered > 0 && hz > 0)
        printf("server_core_ns_per_delivery=%.1f\n", busy / (double)hz * 1e9 / lg->delivered);
}

static void report(void)
{
    const struct config *cfg = &lg->cfg;
    long hz = sysconf(_SC_CLK_TCK);
    if (hz <= 0)
        hz = 100;
    double connect_sec = lg->t_connect_end > lg->t_connect_begin
                             ? (double)(lg->t_connect_end - lg->t_connect_begin) / NS_PER_SEC
                             : 0;
    printf("mode=%s\n", cfg->idle ? "idle" : cfg->rate > 0 ? "rate" : "window");
    printf("conns=%u\n", cfg->conns);
    printf("connected=%u\n", lg->handshakes);
    printf("ready=%u\n", lg->ready_at_end);
    printf("failures=%u\n", lg->failures);
    printf("connect_sec=%.3f\n", connect_sec);
    double hs_sec = lg->t_last_handshake > lg->t_connect_begin
                        ? (double)(lg->t_last_handshake - lg->t_connect_begin) / NS_PER_SEC
                        : 0;
    printf("handshakes_per_sec=%.0f\n", hs_sec > 0 ? lg->handshakes / hs_sec : 0);
    int have = lg->before.ok && lg->after.ok;
    if (cfg->idle) {
        double cpu = have ? (double)(lg->after.cpu_ticks - lg->before.cpu_ticks) / (double)hz : 0;
        printf("server_cpu_sec=%.2f\n", cpu);
        printf("server_cpu_us_per_handshake=%.1f\n",
               lg->handshakes ? cpu * 1e6 / lg->handshakes : 0);
        printf("server_rss_before_kb=%" PRIu64 "\n", lg->before.rss_kb);
        printf("server_rss_kb=%" PRIu64 "\n", lg->after.rss_kb);
        unsigned n = lg->ready_at_end;
        double per =
            n && have ? ((double)lg->after.rss_kb - (double)lg->before.rss_kb) * 1024.0 / n : 0;
        printf("rss_per_conn_bytes=%.0f\n", per);
        report_core();
        return;
    }
    double window =
        lg->win_stop > lg->win_start ? (double)(lg->win_stop - lg->win_start) / NS_PER_SEC : 0;
    uint64_t expected = lg->published * lg->receivers;
    double missing = expected ? 100.0 * ((double)expected - (double)lg->delivered) / expected : 0;
    double cpu = have ? (double)(lg->after.cpu_ticks - lg->before.cpu_ticks) / (double)hz : 0;
    printf("senders=%u\n", cfg->senders);
    printf("receivers=%u\n", lg->receivers);
    printf("size=%zu\n", cfg->size);
    printf("rate=%g\n", cfg->rate);
    printf("window=%u\n", cfg->rate > 0 ? 0 : cfg->window);
    printf("window_sec=%.3f\n", window);
    printf("published=%" PRIu64 "\n", lg->published);
    printf("published_total=%" PRIu64 "\n", lg->published_total);
    printf("delivered_total=%" PRIu64 "\n", lg->delivered_total);
    printf("delivered=%" PRIu64 "\n", lg->delivered);
    printf("expected=%" PRIu64 "\n", expected);
    printf("missing_pct=%.4f\n", missing);
    printf("out_of_order=%" PRIu64 "\n", lg->out_of_order);
    printf("gaps=%" PRIu64 "\n", lg->gaps);
    printf("window_stalls=%" PRIu64 "\n", lg->stalls);
    printf("json_errors=%" PRIu64 "\n", lg->json_errors);
    if (cfg->acks) {
        /* Acked durable sends: the latency figures below are send -> ack. */
        printf("acks=%" PRIu64 "\n", lg->acked);
        printf("acks_total=%" PRIu64 "\n", lg->acked_total);
        printf("acks_per_sec=%.0f\n", window > 0 ? lg->acked / window : 0);
    }
    printf("publishes_per_sec=%.0f\n", window > 0 ? lg->published / window : 0);
    printf("deliveries_per_sec=%.0f\n", window > 0 ? lg->delivered / window : 0);
    const struct histogram *h = &lg->hist;
    printf("latency_p50_us=%.1f\n", hist_quantile(h, 0.50) / 1e3);
    printf("latency_p90_us=%.1f\n", hist_quantile(h, 0.90) / 1e3);
    printf("latency_p99_us=%.1f\n", hist_quantile(h, 0.99) / 1e3);
    printf("latency_p999_us=%.1f\n", hist_quantile(h, 0.999) / 1e3);
    printf("latency_max_us=%.1f\n", h->max / 1e3);
    printf("server_cpu_sec=%.2f\n", cpu);
    printf("server_cpu_ns_per_delivery=%.1f\n", lg->delivered ? cpu * 1e9 / lg->delivered : 0);
    printf("servers=%u\n", lg->nservers);
    for (unsigned i = 0; have && i < 1 + cfg->nalso_pids; i++)
        printf("server%u_cpu_sec=%.2f\n", i,
               (double)(lg->after.ticks[i] - lg->before.ticks[i]) / (double)hz);
    if (lg->before.watch_ok && lg->after.watch_ok) {
        double w = (double)(lg->after.watch_ticks - lg->before.watch_ticks) / (double)hz;
        printf("watch_cpu_sec=%.2f\n", w);
        printf("watch_cpu_us_per_published=%.2f\n", lg->published ? w * 1e6 / lg->published : 0);
    }
    printf("server_rss_kb=%" PRIu64 "\n", lg->after.rss_kb);
    printf("loadgen_cpu_sec=%.2f\n", cpu_sec(&lg->self_after) - cpu_sec(&lg->self_before));
    report_core();
    if (!have && cfg->server_pid > 0)
        say("could not read /proc/%d", cfg->server_pid);
}

int main(int argc, char **argv)
{
    lg = calloc(1, sizeof(*lg));
    if (lg == NULL)
        return 1;
    struct config *cfg = &lg->cfg;
    *cfg = (struct config){
        .host = "127.0.0.1",
        .port = 8080,
        .path = "/ws/bench",
        .conns = 100,
        .senders = 1,
        .window = 32,
        .size = 64,
        .duration = 10,
        .warmup = 2,
        .grace = 0.5,
        .drain = 2,
        .hold = 2,
        .connect_timeout = 60,
        .stall = 5,
        .server_cpu = -1,
        .room = "bench",
        .echo = 1,
        .sources = 1,
        .max_pending = 64,
    };
    if (parse_options(argc, argv, cfg) != 0 || prepare() != 0)
        return 2;
    raise_nofile();
    signal(SIGPIPE, SIG_IGN);
    lg->loop = uv_default_loop();
    lg->win_start = UINT64_MAX; /* nothing counts before the window opens */
    lg->win_stop = UINT64_MAX;
    lg->conns = calloc(cfg->conns, sizeof(*lg->conns));
    lg->senders = calloc(cfg->senders ? cfg->senders : 1, sizeof(*lg->senders));
    lg->last_seq = calloc((size_t)cfg->conns * (cfg->senders ? cfg->senders : 1), sizeof(uint64_t));
    if (lg->conns == NULL || lg->senders == NULL || lg->last_seq == NULL) {
        say("out of memory for %u connections", cfg->conns);
        return 1;
    }
    for (unsigned i = 0; i < cfg->conns; i++)
        lg->conns[i].index = i;
    lg->ring_mask = 1;
    while (lg->ring_mask < cfg->window)
        lg->ring_mask = lg->ring_mask * 2 + 1;
    for (unsigned s = 0; s < cfg->senders; s++) {
        lg->senders[s].seq = 1;
        lg->senders[s].got = calloc((size_t)lg->ring_mask + 1, sizeof(uint32_t));
        if (lg->senders[s].got == NULL)
            return 1;
    }
    if (!cfg->echo && !cfg->acks && cfg->conns < 2 && cfg->senders > 0) {
        say("without echo a sender needs another connection to receive");
        return 2;
    }

    uv_timer_init(lg->loop, &lg->tick);
    uv_timer_init(lg->loop, &lg->phase_timer);
    uv_check_init(lg->loop, &lg->flusher);
    uv_check_start(&lg->flusher, on_check);
    uv_signal_init(lg->loop, &lg->sigint);
    uv_signal_start(&lg->sigint, on_sigint, SIGINT);
    uv_timer_start(&lg->tick, on_tick, TICK_MS, TICK_MS);

    lg->phase = PHASE_CONNECT;
    if (cfg->idle) {
        lg->before = sample_servers();
        getrusage(RUSAGE_SELF, &lg->self_before);
    }
    phase_after(cfg->connect_timeout);
    open_more();
    uv_run(lg->loop, UV_RUN_DEFAULT);

    if (lg->phase != PHASE_DONE || lg->handshakes == 0)
        lg->exit_code = 1;
    report();
    fflush(stdout);
    int rc = uv_loop_close(lg->loop);
    if (rc != 0)
        say("event loop closed with live handles: %s", uv_strerror(rc));
    for (unsigned i = 0; i < cfg->conns; i++) {
        free(lg->conns[i].out);
        free(lg->conns[i].inflight);
        free(lg->conns[i].ack_sent);
    }
    free(lg->conns);
    for (unsigned s = 0; s < cfg->senders; s++)
        free(lg->senders[s].got);
    free(lg->senders);
    free(lg->last_seq);
    free(lg->send_prefix);
    for (unsigned i = 0; i < lg->nservers; i++)
        free(lg->request[i]);
    int exit_code = rc != 0 ? 1 : lg->exit_code;
    free(lg);
    return exit_code;
}
