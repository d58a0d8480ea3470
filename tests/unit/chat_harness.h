/*
 * chat_harness.h: the chat unit tests' shared harness (for new tests; the
 * older test_chat*.c files keep their own copies for now): peers over
 * detached connections, a memory history, an auth verifier with a fixed
 * secret, an injected clock, scripted frames in and the frames queued out,
 * and HS256 tokens signed with libcrypto.
 */
#ifndef CHAT_HARNESS_H
#define CHAT_HARNESS_H

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

#if defined(__GNUC__) || defined(__clang__)
#define HARNESS_UNUSED __attribute__((unused))
#else
#define HARNESS_UNUSED
#endif

#define NOW_S 1800000000LL

static const char SECRET[] = "0123456789abcdef0123456789abcdef-chat-auth";

struct peer {
    struct hub_conn conn;
    struct hub_ws *ws;
    struct hub_chat_client *cl;
};

HARNESS_UNUSED static void on_msg(struct hub_ws *ws, int opcode, const char *data, size_t len,
                                  void *user)
{
    (void)ws;
    struct peer *p = user;
    hub_chat_client_message(p->cl, opcode, data, len);
}

static struct hub_history *history;
static struct hub_auth *auth;
static int64_t fake_now = NOW_S * 1000;

HARNESS_UNUSED static int64_t clock_now(void)
{
    return fake_now;
}

HARNESS_UNUSED static struct hub_chat *new_chat(int guests)
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

HARNESS_UNUSED static void free_chat(struct hub_chat *chat)
{
    hub_chat_free(chat);
    hub_history_free(history);
    hub_auth_free(auth);
}

HARNESS_UNUSED static void peer_open(struct peer *p, struct hub_chat *chat)
{
    struct hub_ws_config cfg;
    hub_ws_config_default(&cfg);
    hub_conn_init_detached(&p->conn, 0);
    p->ws = hub_ws_new(&p->conn, &cfg, on_msg, p);
    p->cl = hub_chat_client_new(chat, p->ws, HUB_CHAT_JSON, (struct hub_iov){"", 0});
}

HARNESS_UNUSED static void peer_close(struct peer *p)
{
    hub_chat_client_free(p->cl);
    hub_ws_free(p->ws);
    hub_outq_free(&p->conn.out);
}

HARNESS_UNUSED static void peer_say(struct peer *p, const char *text)
{
    struct hub_buf b = {0};
    client_frame(&b, 1, HUB_WS_TEXT, text, strlen(text), 1);
    hub_ws_feed(p->ws, b.data, b.len);
    hub_buf_free(&b);
}

/* The frames queued for p as "<opcode>:<payload>|", NUL-terminated in log. */
HARNESS_UNUSED static void peer_read(struct peer *p, struct hub_buf *log)
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
HARNESS_UNUSED static int got(struct peer *p, const char *want)
{
    struct hub_buf log = {0};
    peer_read(p, &log);
    int ok = strstr(log.data, want) != NULL;
    if (!ok)
        fprintf(stderr, "got \"%s\", want it to contain \"%s\"\n", log.data, want);
    hub_buf_free(&log);
    return ok;
}

HARNESS_UNUSED static size_t b64url(const unsigned char *src, size_t len, char *out)
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
HARNESS_UNUSED static void sign(const char *claims, char *out)
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
HARNESS_UNUSED static void hello_as(struct peer *p, const char *sub, const char *name,
                                    long long exp)
{
    char claims[300], tok[1024], req[1200];
    snprintf(claims, sizeof(claims), "{\"sub\":\"%s\",\"name\":\"%s\",\"exp\":%lld}", sub, name,
             exp);
    sign(claims, tok);
    snprintf(req, sizeof(req), "{\"op\":\"hello\",\"id\":1,\"token\":\"%s\"}", tok);
    peer_say(p, req);
}

#endif
