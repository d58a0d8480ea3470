/*
 * tls_bench.c: a load generator for chathub with and without TLS.
 *
 * A client of its own (libuv plus, for wss, OpenSSL through memory BIOs; it
 * shares no code with the hub), so that the same loads run over ws:// and
 * wss:// and the two can be put side by side (bench/tls_run.sh does). Two
 * modes:
 *
 * - fanout: --conns connections in raw mode on /ws/bench (every message is
 *   relayed to the whole room, sender included); the first --senders of
 *   them publish --size-byte messages, each keeping at most --window of its
 *   own messages on their way (a message is "home" when its copy comes back
 *   to its sender). After --warmup seconds, deliveries (text frames
 *   received, by anyone) and the server's CPU (utime + stime from
 *   /proc/PID/stat) are counted for --duration seconds. Prints deliveries/s
 *   and server CPU ns per delivery.
 * - handshake: keeps --inflight connections opening for --duration seconds:
 *   TCP connect, the TLS handshake (full, no resumption), the WebSocket
 *   upgrade until 101, then a close with RST (SO_LINGER 0, so that no
 *   TIME_WAIT piles up). Prints handshakes/s and server CPU us per
 *   handshake.
 *
 * Output is key=value lines. Only loopback; nothing here is a test.
 */
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <uv.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct client {
    uv_tcp_t tcp;      /* the socket */
    uv_connect_t creq; /* its connect */
    SSL *ssl;          /* NULL without TLS */
    BIO *rbio, *wbio;  /* ciphertext in / out when TLS */
    int index;         /* which connection */
    int upgraded;      /* the 101 arrived */
    int in_flight;     /* sender: own messages on their way */
    uint32_t seq;      /* sender: next sequence number */
    char *buf;         /* received plaintext not parsed yet */
    size_t len, cap;   /* of buf */
};

static struct {
    uv_loop_t *loop;
    SSL_CTX *ctx;
    struct sockaddr_in addr;
    int tls, handshake_mode, conns, senders, window, size, inflight;
    double duration, warmup;
    int server_pid;
    int ready;           /* fanout: connections upgraded */
    int measuring, done; /* phase flags */
    uint64_t deliveries; /* text frames received while measuring */
    uint64_t handshakes; /* handshake mode: 101s while measuring */
    uint64_t errors;     /* connections that failed */
    double cpu0, t0;     /* server CPU and wall clock at the start */
    uv_timer_t timer;    /* phase changes */
    char *payload;       /* the message body */
} G;

static const char upgrade_req[] = "GET /ws/bench HTTP/1.1\r\n"
                                  "Host: 127.0.0.1\r\n"
                                  "Upgrade: websocket\r\n"
                                  "Connection: Upgrade\r\n"
                                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                  "Sec-WebSocket-Version: 13\r\n\r\n";

static double now_s(void)
{
    return (double)uv_hrtime() / 1e9;
}

/* The server's user + system CPU seconds. */
static double server_cpu(void)
{
    char path[64], line[2048];
    snprintf(path, sizeof(path), "/proc/%d/stat", G.server_pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    size_t n = fread(line, 1, sizeof(line) - 1, f);
    fclose(f);
    line[n] = '\0';
    char *p = strrchr(line, ')');
    unsigned long long ut = 0, st = 0;
    if (p != NULL)
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st);
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static void on_write(uv_write_t *w, int status)
{
    free(w->data);
    free(w);
}

/* Writes bytes to the socket (copied). */
static void raw_write(struct client *c, const char *data, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n == (int)len)
        return;
    if (n < 0)
        n = 0;
    uv_write_t *w = malloc(sizeof(*w));
    char *copy = malloc(len - (size_t)n);
    memcpy(copy, data + n, len - (size_t)n);
    w->data = copy;
    b = uv_buf_init(copy, (unsigned)(len - (size_t)n));
    uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, on_write);
}

/* Moves whatever OpenSSL wrote to the socket. */
static void tls_push(struct client *c)
{
    char buf[65536];
    int n;
    while ((n = BIO_read(c->wbio, buf, sizeof(buf))) > 0)
        raw_write(c, buf, (size_t)n);
}

/* Sends plaintext (through TLS when on). */
static void send_plain(struct client *c, const char *data, size_t len)
{
    if (c->ssl == NULL) {
        raw_write(c, data, len);
        return;
    }
    SSL_write(c->ssl, data, (int)len);
    tls_push(c);
}

/* Sends one masked text frame (a zero mask: the payload goes as is). */
static void send_message(struct client *c)
{
    char frame[16 + 65536];
    size_t n = (size_t)G.size, h = 0;
    frame[h++] = (char)0x81;
    if (n < 126) {
        frame[h++] = (char)(0x80 | n);
    } else {
        frame[h++] = (char)(0x80 | 126);
        frame[h++] = (char)(n >> 8);
        frame[h++] = (char)n;
    }
    memset(frame + h, 0, 4);
    h += 4;
    memcpy(frame + h, G.payload, n);
    /* The sender's index and sequence at the start, so it knows its own. */
    char tag[24];
    int t = snprintf(tag, sizeof(tag), "S%06d:%08u", c->index, c->seq++);
    memcpy(frame + h, tag, (size_t)t);
    send_plain(c, frame, h + n);
    c->in_flight++;
}

static void client_start(void);

static void on_closed(uv_handle_t *h)
{
    struct client *c = h->data;
    if (c->ssl != NULL)
        SSL_free(c->ssl);
    free(c->buf);
    free(c);
    if (G.handshake_mode && !G.done)
        client_start();
}

static void client_close(struct client *c)
{
    if (uv_is_closing((uv_handle_t *)&c->tcp))
        return;
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0) {
        struct linger l = {1, 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    }
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

/* Parses what arrived: the 101, then server frames. */
static void parse(struct client *c)
{
    size_t off = 0;
    if (!c->upgraded) {
        char *end = c->len >= 4 ? memmem(c->buf, c->len, "\r\n\r\n", 4) : NULL;
        if (end == NULL)
            return;
        if (c->len < 12 || memcmp(c->buf, "HTTP/1.1 101", 12) != 0) {
            G.errors++;
            client_close(c);
            return;
        }
        c->upgraded = 1;
        off = (size_t)(end - c->buf) + 4;
        if (G.handshake_mode) {
            if (G.measuring)
                G.handshakes++;
            client_close(c);
            return;
        }
        G.ready++;
    }
    while (c->len - off >= 2) {
        const unsigned char *p = (const unsigned char *)c->buf + off;
        size_t avail = c->len - off, hl = 2, pl = p[1] & 0x7f;
        if (pl == 126) {
            if (avail < 4)
                break;
            pl = (size_t)p[2] << 8 | p[3];
            hl = 4;
        } else if (pl == 127) {
            if (avail < 10)
                break;
            pl = 0;
            for (int i = 2; i < 10; i++)
                pl = pl << 8 | p[i];
            hl = 10;
        }
        if (avail < hl + pl)
            break;
        if ((p[0] & 0x0f) == 1) {
            if (G.measuring)
                G.deliveries++;
            int idx = -1;
            if (pl > 7 && p[hl] == 'S')
                idx = atoi((const char *)p + hl + 1);
            if (idx == c->index && c->in_flight > 0) {
                c->in_flight--;
                if (!G.done)
                    send_message(c);
            }
        }
        off += hl + pl;
    }
    memmove(c->buf, c->buf + off, c->len - off);
    c->len -= off;
}

static void take(struct client *c, const char *data, size_t len)
{
    if (c->len + len > c->cap) {
        c->cap = (c->len + len) * 2;
        c->buf = realloc(c->buf, c->cap);
    }
    memcpy(c->buf + c->len, data, len);
    c->len += len;
}

static void on_alloc(uv_handle_t *h, size_t s, uv_buf_t *b)
{
    static char buf[65536];
    *b = uv_buf_init(buf, sizeof(buf));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct client *c = s->data;
    if (n < 0) {
        if (!G.done && !G.handshake_mode)
            G.errors++;
        client_close(c);
        return;
    }
    if (n == 0)
        return;
    if (c->ssl == NULL) {
        take(c, b->base, (size_t)n);
        parse(c);
        return;
    }
    BIO_write(c->rbio, b->base, (int)n);
    if (!SSL_is_init_finished(c->ssl)) {
        int r = SSL_do_handshake(c->ssl);
        if (r != 1) {
            tls_push(c);
            if (SSL_get_error(c->ssl, r) != SSL_ERROR_WANT_READ) {
                G.errors++;
                client_close(c);
            }
            return;
        }
        /* The Finished and the request leave in one write. */
        send_plain(c, upgrade_req, sizeof(upgrade_req) - 1);
    }
    char plain[16384];
    int r;
    while ((r = SSL_read(c->ssl, plain, sizeof(plain))) > 0) {
        take(c, plain, (size_t)r);
        parse(c);
        if (uv_is_closing((uv_handle_t *)&c->tcp))
            return;
    }
    tls_push(c);
}

static void on_connect(uv_connect_t *req, int status)
{
    struct client *c = req->data;
    if (status != 0) {
        G.errors++;
        client_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (c->ssl == NULL) {
        send_plain(c, upgrade_req, sizeof(upgrade_req) - 1);
        return;
    }
    SSL_do_handshake(c->ssl); /* the ClientHello */
    tls_push(c);
}

static int next_index;

static void client_start(void)
{
    struct client *c = calloc(1, sizeof(*c));
    c->index = next_index++;
    uv_tcp_init(G.loop, &c->tcp);
    c->tcp.data = c;
    uv_tcp_nodelay(&c->tcp, 1);
    if (G.tls) {
        c->ssl = SSL_new(G.ctx);
        c->rbio = BIO_new(BIO_s_mem());
        c->wbio = BIO_new(BIO_s_mem());
        SSL_set_bio(c->ssl, c->rbio, c->wbio);
        SSL_set_connect_state(c->ssl);
    }
    c->creq.data = c;
    uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&G.addr, on_connect);
}

static void walk_start_senders(uv_handle_t *h, void *arg)
{
    if (h->type != UV_TCP || uv_is_closing(h))
        return;
    struct client *c = h->data;
    if (c->index < G.senders)
        for (int i = 0; i < G.window; i++)
            send_message(c);
}

static void walk_close(uv_handle_t *h, void *arg)
{
    if (h->type == UV_TCP && !uv_is_closing(h))
        client_close(h->data);
    else if (h->type == UV_TIMER && !uv_is_closing(h))
        uv_close(h, NULL);
}

static void on_timer(uv_timer_t *t);

static void report(void)
{
    double dt = now_s() - G.t0;
    double cpu = server_cpu() - G.cpu0;
    printf("tls=%d\nmode=%s\n", G.tls, G.handshake_mode ? "handshake" : "fanout");
    if (G.handshake_mode) {
        printf("inflight=%d\nhandshakes=%llu\nhandshakes_per_s=%.0f\n"
               "server_cpu_us_per_handshake=%.1f\n",
               G.inflight, (unsigned long long)G.handshakes, (double)G.handshakes / dt,
               G.handshakes ? cpu * 1e6 / (double)G.handshakes : 0.0);
    } else {
        printf("conns=%d\nsenders=%d\nwindow=%d\nsize=%d\ndeliveries=%llu\n"
               "deliveries_per_s=%.0f\nserver_cpu_ns_per_delivery=%.1f\n",
               G.conns, G.senders, G.window, G.size, (unsigned long long)G.deliveries,
               (double)G.deliveries / dt, G.deliveries ? cpu * 1e9 / (double)G.deliveries : 0.0);
    }
    printf("server_cpu_s=%.3f\nwall_s=%.3f\nerrors=%llu\n", cpu, dt, (unsigned long long)G.errors);
    fflush(stdout);
}

/* Phases: connecting (fanout only: until every connection is upgraded),
 * warm-up, measuring, done. */
static int phase;

static void on_timer(uv_timer_t *t)
{
    if (phase == 0) {
        if (!G.handshake_mode && G.ready < G.conns) {
            if (now_s() - G.t0 > 60) {
                fprintf(stderr, "tls_bench: only %d of %d connections upgraded\n", G.ready,
                        G.conns);
                exit(1);
            }
            uv_timer_start(&G.timer, on_timer, 50, 0);
            return;
        }
        if (!G.handshake_mode)
            uv_walk(G.loop, walk_start_senders, NULL);
        phase = 1;
        uv_timer_start(&G.timer, on_timer, (uint64_t)(G.warmup * 1000), 0);
        return;
    }
    if (phase == 1) {
        phase = 2;
        G.measuring = 1;
        G.t0 = now_s();
        G.cpu0 = server_cpu();
        uv_timer_start(&G.timer, on_timer, (uint64_t)(G.duration * 1000), 0);
        return;
    }
    G.measuring = 0;
    G.done = 1;
    report();
    uv_walk(G.loop, walk_close, NULL);
}

static void usage(void)
{
    fprintf(stderr, "usage: tls_bench --port N [--tls] [--handshake] [--conns N] [--senders N]\n"
                    "                 [--window N] [--size BYTES] [--inflight N] [--duration S]\n"
                    "                 [--warmup S] --server-pid PID\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int port = 0;
    G.conns = 1000;
    G.senders = 10;
    G.window = 16;
    G.size = 64;
    G.inflight = 64;
    G.duration = 5;
    G.warmup = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--tls") == 0)
            G.tls = 1;
        else if (strcmp(a, "--handshake") == 0)
            G.handshake_mode = 1;
        else if (v == NULL)
            usage();
        else if (strcmp(a, "--port") == 0)
            port = atoi(v), i++;
        else if (strcmp(a, "--conns") == 0)
            G.conns = atoi(v), i++;
        else if (strcmp(a, "--senders") == 0)
            G.senders = atoi(v), i++;
        else if (strcmp(a, "--window") == 0)
            G.window = atoi(v), i++;
        else if (strcmp(a, "--size") == 0)
            G.size = atoi(v), i++;
        else if (strcmp(a, "--inflight") == 0)
            G.inflight = atoi(v), i++;
        else if (strcmp(a, "--duration") == 0)
            G.duration = atof(v), i++;
        else if (strcmp(a, "--warmup") == 0)
            G.warmup = atof(v), i++;
        else if (strcmp(a, "--server-pid") == 0)
            G.server_pid = atoi(v), i++;
        else
            usage();
    }
    if (port <= 0 || G.server_pid <= 0 || G.size < 20 || G.size > 65535)
        usage();
    G.payload = malloc((size_t)G.size);
    memset(G.payload, 'x', (size_t)G.size);
    uv_ip4_addr("127.0.0.1", port, &G.addr);
    G.loop = uv_default_loop();
    if (G.tls) {
        G.ctx = SSL_CTX_new(TLS_client_method());
        SSL_CTX_set_verify(G.ctx, SSL_VERIFY_NONE, NULL);
        SSL_CTX_set_session_cache_mode(G.ctx, SSL_SESS_CACHE_OFF); /* full handshakes */
        SSL_CTX_set_options(G.ctx, SSL_OP_NO_TICKET);
    }
    uv_timer_init(G.loop, &G.timer);
    G.t0 = now_s();
    int n = G.handshake_mode ? G.inflight : G.conns;
    for (int i = 0; i < n; i++)
        client_start();
    uv_timer_start(&G.timer, on_timer, G.handshake_mode ? 0 : 50, 0);
    uv_run(G.loop, UV_RUN_DEFAULT);
    SSL_CTX_free(G.ctx);
    free(G.payload);
    return G.errors > 0 && !G.handshake_mode ? 1 : 0;
}
