/*
 * test_chat_auth.c: the chat side of connection tokens over detached
 * connections and the injected clock: hello with and without a token
 * (auth_required, bad_token, guests marked "~"), one nick claim per user
 * shared by its connections and released with the last, nick forbidden for
 * signed users, the raw upgrade's decision (401/403), and the expiry close
 * at exactly exp (not a millisecond before).
 *
 * Tokens are signed here with libcrypto's HMAC and the test's own base64url.
 */
#include "../../src/chat_int.h"
#include "check.h"
#include "hub/auth.h"
#include "hub/chat.h"
#include "hub/history.h"
#include "hub/ws.h"
#include "ws_script.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>

#define NOW_S 1800000000LL

static const char SECRET[] = "0123456789abcdef0123456789abcdef-chat-auth";

struct peer {
    struct hub_conn conn;
    struct hub_ws *ws;
    struct hub_chat_client *cl;
};

static void on_msg(struct hub_ws *ws, int opcode, const char *data, size_t len, void *user)
{
    (void)ws;
    struct peer *p = user;
    hub_chat_client_message(p->cl, opcode, data, len);
}

static struct hub_history *history;
static struct hub_auth *auth;
static int64_t fake_now = NOW_S * 1000;

static int64_t clock_now(void)
{
    return fake_now;
}

static struct hub_chat *new_chat(int guests)
{
    struct hub_history_config hcfg;
    hub_history_config_default(&hcfg);
    hub_history_open_memory(&history, &hcfg);
    char err[200];
    CHECK_EQ(hub_auth_open(&auth, SECRET, strlen(SECRET), err, sizeof(err)), 0);
    struct hub_chat_config cfg;
    hub_chat_config_default(&cfg);
    cfg.history = history;
    cfg.now_ms = clock_now;
    cfg.auth = auth;
    cfg.guests = guests;
    struct hub_chat *chat = NULL;
    CHECK_EQ(hub_chat_new(&chat, &cfg), 0);
    return chat;
}

static void free_chat(struct hub_chat *chat)
{
    hub_chat_free(chat);
    hub_history_free(history);
    hub_auth_free(auth);
}

static void peer_open(struct peer *p, struct hub_chat *chat)
{
    struct hub_ws_config cfg;
    hub_ws_config_default(&cfg);
    hub_conn_init_detached(&p->conn, 0);
    p->ws = hub_ws_new(&p->conn, &cfg, on_msg, p);
    p->cl = hub_chat_client_new(chat, p->ws, HUB_CHAT_JSON, (struct hub_iov){"", 0});
}

static void peer_close(struct peer *p)
{
    hub_chat_client_free(p->cl);
    hub_ws_free(p->ws);
    hub_outq_free(&p->conn.out);
}

static void peer_say(struct peer *p, const char *text)
{
    struct hub_buf b = {0};
    client_frame(&b, 1, HUB_WS_TEXT, text, strlen(text), 1);
    hub_ws_feed(p->ws, b.data, b.len);
    hub_buf_free(&b);
}

/* The frames queued for p as "<opcode>:<payload>|", NUL-terminated in log. */
static void peer_read(struct peer *p, struct hub_buf *log)
{
    struct hub_buf out = {0};
    drain_conn(&p->conn, &out);
    size_t off = 0;
    struct server_frame f;
    while (next_server_frame(&out, &off, &f)) {
        hub_buf_printf(log, "%d:", f.opcode);
        hub_buf_append(log, f.payload, f.len);
        hub_buf_puts(log, "|");
    }
    hub_buf_append(log, "", 1);
    hub_buf_free(&out);
}

/* 1 if what p got since the last read contains want. */
static int got(struct peer *p, const char *want)
{
    struct hub_buf log = {0};
    peer_read(p, &log);
    int ok = strstr(log.data, want) != NULL;
    if (!ok)
        fprintf(stderr, "got \"%s\", want it to contain \"%s\"\n", log.data, want);
    hub_buf_free(&log);
    return ok;
}

static size_t b64url(const unsigned char *src, size_t len, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t n = 0, i = 0;
    for (; i + 2 < len; i += 3) {
        uint32_t v = (uint32_t)src[i] << 16 | (uint32_t)src[i + 1] << 8 | src[i + 2];
        out[n++] = tab[v >> 18];
        out[n++] = tab[(v >> 12) & 63];
        out[n++] = tab[(v >> 6) & 63];
        out[n++] = tab[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)src[i] << 16;
        out[n++] = tab[v >> 18];
        out[n++] = tab[(v >> 12) & 63];
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)src[i] << 16 | (uint32_t)src[i + 1] << 8;
        out[n++] = tab[v >> 18];
        out[n++] = tab[(v >> 12) & 63];
        out[n++] = tab[(v >> 6) & 63];
    }
    out[n] = '\0';
    return n;
}

/* An HS256 token with the claims (a JSON object) in out (1024 bytes). */
static void sign(const char *claims, char *out)
{
    static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    size_t n = b64url((const unsigned char *)header, strlen(header), out);
    out[n++] = '.';
    n += b64url((const unsigned char *)claims, strlen(claims), out + n);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    HMAC(EVP_sha256(), SECRET, (int)strlen(SECRET), (const unsigned char *)out, n, mac, &maclen);
    out[n++] = '.';
    b64url(mac, maclen, out + n);
}

/* Sends hello with a token for sub/name expiring at exp. */
static void hello_as(struct peer *p, const char *sub, const char *name, long long exp)
{
    char claims[300], tok[1024], req[1200];
    snprintf(claims, sizeof(claims), "{\"sub\":\"%s\",\"name\":\"%s\",\"exp\":%lld}", sub, name,
             exp);
    sign(claims, tok);
    snprintf(req, sizeof(req), "{\"op\":\"hello\",\"id\":1,\"token\":\"%s\"}", tok);
    peer_say(p, req);
}

static void test_hello_errors(void)
{
    struct hub_chat *chat = new_chat(0);
    struct peer a;
    peer_open(&a, chat);
    CHECK(got(&a, "welcome"));
    peer_say(&a, "{\"op\":\"hello\",\"id\":1,\"nick\":\"x\"}");
    CHECK(got(&a, "\"code\":\"auth_required\""));
    peer_say(&a, "{\"op\":\"hello\",\"id\":2,\"token\":\"a.b.c\"}");
    CHECK(got(&a, "\"code\":\"bad_token\""));
    hello_as(&a, "u1", "Ann", NOW_S - 31); /* past the leeway */
    CHECK(got(&a, "token expired"));
    hello_as(&a, "u1", "~Ann", NOW_S + 60);
    CHECK(got(&a, "guests"));
    /* A refused hello leaves the client as it was: the next one works. */
    hello_as(&a, "u1", "Ann", NOW_S + 60);
    CHECK(got(&a, "\"nick\":\"Ann\",\"user\":{\"sub\":\"u1\",\"name\":\"Ann\",\"role\":\"user\"}"));
    peer_say(&a, "{\"op\":\"nick\",\"id\":3,\"nick\":\"Bea\"}");
    CHECK(got(&a, "\"code\":\"forbidden\""));
    peer_close(&a);
    free_chat(chat);
}

static void test_guests(void)
{
    struct hub_chat *chat = new_chat(1);
    struct peer g, u;
    peer_open(&g, chat);
    peer_open(&u, chat);
    peer_say(&g, "{\"op\":\"hello\",\"id\":1,\"nick\":\"bob\"}");
    CHECK(got(&g, "\"nick\":\"~bob\",\"guest\":true"));
    /* The guest holds "~bob", so a signed bob is no clash. */
    hello_as(&u, "id-bob", "bob", NOW_S + 60);
    CHECK(got(&u, "\"nick\":\"bob\",\"user\""));
    peer_say(&g, "{\"op\":\"nick\",\"id\":2,\"nick\":\"bob2\"}");
    CHECK(got(&g, "\"nick\":\"~bob2\""));
    peer_close(&g);
    peer_close(&u);
    free_chat(chat);
}

static void test_one_claim_per_user(void)
{
    struct hub_chat *chat = new_chat(0);
    struct peer a1, a2, m;
    peer_open(&a1, chat);
    peer_open(&a2, chat);
    peer_open(&m, chat);
    hello_as(&a1, "alice-id", "alice", NOW_S + 600);
    CHECK(got(&a1, "\"ok\":true"));
    hello_as(&a2, "alice-id", "alice", NOW_S + 600);
    CHECK(got(&a2, "\"ok\":true"));
    hello_as(&m, "mallory", "ALICE", NOW_S + 600);
    CHECK(got(&m, "\"code\":\"nick_taken\""));
    peer_close(&a1);
    hello_as(&m, "mallory", "alice", NOW_S + 600);
    CHECK(got(&m, "\"code\":\"nick_taken\""));
    peer_close(&a2);
    hello_as(&m, "mallory", "alice", NOW_S + 600);
    CHECK(got(&m, "\"ok\":true"));
    peer_close(&m);
    free_chat(chat);
}

static void test_expiry(void)
{
    struct hub_chat *chat = new_chat(1);
    struct peer a, g;
    peer_open(&a, chat);
    peer_open(&g, chat);
    hello_as(&a, "u1", "Ann", NOW_S + 10);
    CHECK(got(&a, "\"ok\":true"));
    peer_say(&g, "{\"op\":\"hello\",\"id\":1,\"nick\":\"gus\"}");
    CHECK(got(&g, "\"ok\":true"));
    fake_now = (NOW_S + 10) * 1000 - 1;
    hub_chat_tick(chat);
    CHECK(!hub_ws_close_sent(a.ws));
    fake_now = (NOW_S + 10) * 1000;
    hub_chat_tick(chat);
    CHECK(hub_ws_close_sent(a.ws));
    CHECK_EQ(hub_ws_close_code_sent(a.ws), HUB_CHAT_CLOSE_EXPIRED);
    CHECK(got(&a, "8:\x11\x31token expired|"));
    CHECK(!hub_ws_close_sent(g.ws)); /* a guest has no exp */
    hub_chat_tick(chat);             /* once only */
    peer_close(&a);
    peer_close(&g);
    fake_now = NOW_S * 1000;
    free_chat(chat);
}

static void test_raw_admit(void)
{
    struct hub_chat *chat = new_chat(0);
    struct hub_auth_identity id = {0};
    const char *why = NULL;
    struct hub_iov lobby = {"lobby", 5};
    CHECK_EQ(hub_chat_raw_admit(chat, lobby, (struct hub_iov){"", 0}, &id, &why), 401);
    CHECK(why != NULL);
    CHECK_EQ(hub_chat_raw_admit(chat, lobby, (struct hub_iov){"token=x.y.z", 11}, &id, &why), 401);
    char tok[1024], q[1100];
    sign("{\"sub\":\"r\",\"exp\":1800000600,\"rooms\":[\"team-*\"]}", tok);
    int n = snprintf(q, sizeof(q), "a=1&token=%s&b=2", tok);
    struct hub_iov query = {q, (size_t)n};
    CHECK_EQ(hub_chat_raw_admit(chat, lobby, query, &id, &why), 403);
    CHECK(id.sub == NULL);
    CHECK_EQ(hub_chat_raw_admit(chat, (struct hub_iov){"team-x", 6}, query, &id, &why), 0);
    CHECK(id.sub != NULL && strcmp(id.sub, "r") == 0);
    hub_auth_identity_clear(&id);
    free_chat(chat);
}

int main(void)
{
    test_hello_errors();
    test_guests();
    test_one_claim_per_user();
    test_expiry();
    test_raw_admit();
    return CHECK_DONE();
}
