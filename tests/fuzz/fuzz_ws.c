/*
 * fuzz_ws.c: libFuzzer target for everything a client can send after the
 * handshake: WebSocket frames through ws (wslay) into chat, in raw and JSON
 * mode, and JSON requests straight into chat.
 *
 * The first input byte picks the path and a split point; the rest is fed as
 * client bytes (or as one text message). A second client sits in the same
 * rooms so that broadcasts, presence and direct messages are exercised, and
 * everything is torn down after each input so leaks show up.
 *
 * permessage-deflate: bit 0x40 of the first byte turns it on for both
 * clients (compressed input is inflated, broadcasts are compressed), and
 * with bit 0x20 as well the input is first compressed into one RSV1 text
 * frame, so that what inflates (rather than only corrupt DEFLATE) reaches
 * chat. Every input is also parsed as a Sec-WebSocket-Extensions value.
 */
#include "hub/chat.h"
#include "hub/conn.h"
#include "hub/deflate.h"
#include "hub/history.h"
#include "hub/utf8.h"
#include "hub/ws.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct peer {
    struct hub_conn conn;       /* detached: output only queues */
    struct hub_ws *ws;          /* frames */
    struct hub_chat_client *cl; /* chat state */
};

static void on_msg(struct hub_ws *ws, int opcode, const char *d, size_t n, void *user)
{
    struct peer *p = user;
    hub_chat_client_message(p->cl, opcode, d, n);
}

static void peer_open(struct peer *p, struct hub_chat *chat, int mode, int deflate)
{
    struct hub_ws_config cfg;
    hub_ws_config_default(&cfg);
    hub_conn_init_detached(&p->conn, 1 << 20);
    p->ws = hub_ws_new(&p->conn, &cfg, on_msg, p);
    if (deflate)
        hub_ws_set_deflate(p->ws, 15);
    struct hub_iov room = {"lobby", 5};
    p->cl = hub_chat_client_new(chat, p->ws, mode, room);
}

static void peer_close(struct peer *p)
{
    hub_chat_client_free(p->cl);
    hub_ws_free(p->ws);
    hub_outq_free(&p->conn.out);
}

static void say(struct peer *p, const char *json)
{
    hub_chat_client_message(p->cl, HUB_WS_TEXT, json, strlen(json));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int path = data[0] % 3;
    int deflate = (data[0] & 0x40) != 0 && hub_deflate_available();
    int wrap = deflate && (data[0] & 0x20) != 0;
    size_t split = size > 1 ? (data[0] * 131u) % size : 0;
    data++;
    size--;
    if (split > size)
        split = size;

    struct hub_deflate_params dp;
    char line[160];
    hub_deflate_negotiate((struct hub_iov){(const char *)data, size}, &dp, line, sizeof(line));

    /* The wrapped input: one masked RSV1 text frame whose payload is the
     * input compressed (mask key 0, so the payload is as is). */
    struct hub_buf wrapped = {0};
    if (wrap) {
        struct hub_buf z = {0};
        if (hub_deflate_compress(data, size, 15, &z) == 0) {
            uint8_t h[14] = {0xc1};
            size_t n = 2;
            if (z.len < 126) {
                h[1] = 0x80 | (uint8_t)z.len;
            } else if (z.len <= 0xffff) {
                h[1] = 0x80 | 126;
                h[2] = (uint8_t)(z.len >> 8);
                h[3] = (uint8_t)z.len;
                n = 4;
            } else {
                h[1] = 0x80 | 127;
                for (int i = 0; i < 8; i++)
                    h[2 + i] = (uint8_t)((uint64_t)z.len >> (56 - 8 * i));
                n = 10;
            }
            memset(h + n, 0, 4);
            hub_buf_append(&wrapped, h, n + 4);
            hub_buf_append(&wrapped, z.data, z.len);
        }
        hub_buf_free(&z);
        if (wrapped.len > 0) {
            data = (const uint8_t *)wrapped.data;
            size = wrapped.len;
            if (split > size)
                split = size;
        }
    }

    struct hub_history *history;
    struct hub_history_config hcfg;
    hub_history_config_default(&hcfg);
    hcfg.max_per_room = 8;
    if (hub_history_open_memory(&history, &hcfg) != 0) {
        hub_buf_free(&wrapped);
        return 0;
    }
    struct hub_chat_config cfg;
    hub_chat_config_default(&cfg);
    cfg.history = history;
    cfg.rate = 0;
    struct hub_chat *chat;
    if (hub_chat_new(&chat, &cfg) != 0) {
        hub_history_free(history);
        hub_buf_free(&wrapped);
        return 0;
    }
    struct peer other, me;
    peer_open(&other, chat, HUB_CHAT_JSON, deflate);
    say(&other, "{\"op\":\"hello\",\"id\":1,\"nick\":\"other\"}");
    say(&other, "{\"op\":\"join\",\"id\":2,\"room\":\"lobby\"}");
    peer_open(&me, chat, path == 0 ? HUB_CHAT_RAW : HUB_CHAT_JSON, deflate);
    if (path != 0) {
        say(&me, "{\"op\":\"hello\",\"id\":1,\"nick\":\"fuzz\"}");
        say(&me, "{\"op\":\"join\",\"id\":2,\"room\":\"lobby\"}");
    }
    if (path == 2) {
        /* The WebSocket layer only ever hands chat valid UTF-8 text. */
        if (hub_utf8_valid((const char *)data, size))
            hub_chat_client_message(me.cl, HUB_WS_TEXT, (const char *)data, size);
    } else if (hub_ws_feed(me.ws, (const char *)data, split) == 0) {
        hub_ws_feed(me.ws, (const char *)data + split, size - split);
    }
    peer_close(&me);
    peer_close(&other);
    hub_chat_free(chat);
    hub_history_free(history);
    hub_buf_free(&wrapped);
    return 0;
}
