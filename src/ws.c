/*
 * ws.c: wslay driven from a hub_conn.
 *
 * Input: hub_ws_feed points `in` at the lent bytes and runs
 * wslay_event_recv, whose recv callback copies from `in` until it is empty
 * and then reports WOULDBLOCK. wslay keeps any partial frame itself, so
 * nothing here outlives the feed call.
 *
 * Output: the send callback copies the bytes wslay produces (pongs, close
 * frames; they are at most 127 bytes) into the connection's queue with
 * hub_conn_write_force, which ignores the output limit: a close frame must
 * get out even to a client whose queue is full. It always accepts every
 * byte, so wslay never holds a partially sent frame, and data frames queued
 * with hub_ws_send_frame interleave with control frames in call order.
 */
#include "hub/ws.h"
#include "hub/conn.h"
#include "hub/log.h"
#include "hub/utf8.h"

#include <stdlib.h>
#include <string.h>
#include <wslay/wslay.h>

struct hub_ws {
    wslay_event_context_ptr ctx; /* owned wslay state */
    struct hub_conn *conn;       /* borrowed */
    hub_ws_message_cb on_message; /* upcall for messages */
    void *user;                  /* passed to on_message */
    const char *in;              /* bytes being fed, borrowed during hub_ws_feed */
    size_t in_len;               /* bytes left at in */
    struct hub_ws_config cfg;    /* copied limits */
    int close_sent;              /* our close frame is queued or sent */
    int finished;                /* the connection is set to close */
    uint16_t fail_code;          /* a protocol error wslay reports without a code */
};

void hub_ws_config_default(struct hub_ws_config *cfg)
{
    cfg->max_message = 64 * 1024;
}

static ssize_t ws_recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                          void *user)
{
    struct hub_ws *ws = user;
    if (ws->in_len == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = len < ws->in_len ? len : ws->in_len;
    memcpy(buf, ws->in, n);
    ws->in += n;
    ws->in_len -= n;
    return (ssize_t)n;
}

static ssize_t ws_send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                          void *user)
{
    struct hub_ws *ws = user;
    /* A closing connection drops its output anyway; claiming the bytes keeps
     * wslay's state consistent. */
    if (hub_conn_write_force(ws->conn, data, len) == HUB_ENOMEM) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return (ssize_t)len;
}

static void ws_msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                      void *user)
{
    struct hub_ws *ws = user;
    if (arg->opcode == WSLAY_PING) {
        /* wslay has queued the pong: send it now, so that it goes out
         * before whatever the messages after this ping produce. */
        wslay_event_send(ctx);
        return;
    }
    if (arg->opcode == WSLAY_CONNECTION_CLOSE && arg->msg_length == 1) {
        /* RFC 6455 5.5.1: a close body is empty or starts with a 2-byte
         * code. wslay answers a 1-byte body as if it were empty. */
        ws->fail_code = HUB_WS_PROTOCOL_ERROR;
        return;
    }
    if (arg->opcode == WSLAY_CONNECTION_CLOSE && arg->msg_length > 2 &&
        !hub_utf8_valid((const char *)arg->msg + 2, arg->msg_length - 2)) {
        /* wslay checks the reason per received chunk and misses bytes at
         * the start of a later chunk; check the whole reason here. */
        ws->fail_code = HUB_WS_INVALID_PAYLOAD;
        return;
    }
    if (arg->opcode != WSLAY_TEXT_FRAME && arg->opcode != WSLAY_BINARY_FRAME)
        return; /* pong and close are handled by wslay itself */
    if (ws->close_sent)
        return; /* we are closing: what the peer says now has no audience */
    ws->on_message(ws, arg->opcode == WSLAY_TEXT_FRAME ? HUB_WS_TEXT : HUB_WS_BINARY,
                   (const char *)arg->msg, arg->msg_length, ws->user);
}

struct hub_ws *hub_ws_new(struct hub_conn *conn, const struct hub_ws_config *cfg,
                          hub_ws_message_cb on_message, void *user)
{
    struct hub_ws *ws = calloc(1, sizeof(*ws));
    if (ws == NULL)
        return NULL;
    struct wslay_event_callbacks cbs = {
        .recv_callback = ws_recv_cb,
        .send_callback = ws_send_cb,
        .on_msg_recv_callback = ws_msg_cb,
    };
    if (wslay_event_context_server_init(&ws->ctx, &cbs, ws) != 0) {
        free(ws);
        return NULL;
    }
    ws->cfg = *cfg;
    wslay_event_config_set_max_recv_msg_length(ws->ctx, cfg->max_message);
    ws->conn = conn;
    ws->on_message = on_message;
    ws->user = user;
    return ws;
}

void hub_ws_free(struct hub_ws *ws)
{
    if (ws == NULL)
        return;
    wslay_event_context_free(ws->ctx);
    free(ws);
}

/* Ends the WebSocket with our own close frame carrying code, bypassing
 * wslay's queue (which may hold a close without a code at this point). */
static void ws_fail(struct hub_ws *ws, uint16_t code)
{
    uint8_t frame[4] = {0x88, 2, (uint8_t)(code >> 8), (uint8_t)code};
    if (!ws->close_sent)
        hub_conn_write_force(ws->conn, frame, sizeof(frame));
    ws->close_sent = 1;
    ws->finished = 1;
    wslay_event_shutdown_read(ws->ctx);
    wslay_event_shutdown_write(ws->ctx);
    hub_conn_close_after_flush(ws->conn);
}

/* Writes whatever control frames wslay has queued, then ends the connection
 * if the WebSocket is over: both close frames exchanged, or wslay gave up. */
static void ws_pump(struct hub_ws *ws)
{
    if (wslay_event_want_write(ws->ctx) && wslay_event_send(ws->ctx) != 0) {
        ws->finished = 1;
        hub_conn_close(ws->conn);
        return;
    }
    if (wslay_event_get_close_sent(ws->ctx))
        ws->close_sent = 1;
    int over = (wslay_event_get_close_sent(ws->ctx) && wslay_event_get_close_received(ws->ctx)) ||
               (!wslay_event_want_read(ws->ctx) && !wslay_event_want_write(ws->ctx));
    if (over && !ws->finished) {
        ws->finished = 1;
        hub_conn_close_after_flush(ws->conn);
    }
}

int hub_ws_feed(struct hub_ws *ws, const char *data, size_t len)
{
    if (ws->finished)
        return HUB_ECLOSED;
    ws->in = data;
    ws->in_len = len;
    int rc = wslay_event_recv(ws->ctx);
    ws->in = NULL;
    ws->in_len = 0;
    if (rc == WSLAY_ERR_CALLBACK_FAILURE) {
        /* Our recv callback never fails, so this is a frame-level protocol
         * error (a control frame over 125 bytes or fragmented); wslay has
         * queued a close without a code, which we replace with 1002. */
        ws_fail(ws, HUB_WS_PROTOCOL_ERROR);
        return HUB_ECLOSED;
    }
    if (rc != 0) {
        hub_log_debug("wslay_event_recv failed: %d", rc);
        ws->finished = 1;
        hub_conn_close(ws->conn);
        return HUB_ECLOSED;
    }
    if (ws->fail_code != 0) {
        ws_fail(ws, ws->fail_code);
        return HUB_ECLOSED;
    }
    ws_pump(ws);
    return ws->finished ? HUB_ECLOSED : 0;
}

struct hub_shared *hub_ws_frame_alloc(int opcode, size_t len, char **payload)
{
    size_t hdr = len < 126 ? 2 : len <= 0xffff ? 4 : 10;
    struct hub_shared *s = hub_shared_new(hdr + len);
    if (s == NULL)
        return NULL;
    uint8_t *p = (uint8_t *)s->data;
    p[0] = 0x80 | (uint8_t)opcode;
    if (hdr == 2) {
        p[1] = (uint8_t)len;
    } else if (hdr == 4) {
        p[1] = 126;
        p[2] = (uint8_t)(len >> 8);
        p[3] = (uint8_t)len;
    } else {
        p[1] = 127;
        for (int i = 0; i < 8; i++)
            p[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
    }
    *payload = s->data + hdr;
    return s;
}

struct hub_shared *hub_ws_frame(int opcode, const void *payload, size_t len)
{
    char *dst;
    struct hub_shared *s = hub_ws_frame_alloc(opcode, len, &dst);
    if (s != NULL && len > 0)
        memcpy(dst, payload, len);
    return s;
}

int hub_ws_send_frame(struct hub_ws *ws, struct hub_shared *frame)
{
    if (ws->close_sent || ws->finished)
        return HUB_ECLOSED;
    int rc = hub_conn_send(ws->conn, frame);
    if (rc == HUB_ENOBUFS) {
        /* The client does not read fast enough for what its rooms produce.
         * Its queue cannot drain in useful time, so drop it now; 4008 tells
         * a well-behaved client that a reconnect is fine. */
        hub_log_info("closing slow client %s (%zu bytes queued)", ws->conn->peer,
                     ws->conn->out.bytes);
        hub_ws_close(ws, HUB_WS_SLOW_CLIENT, "slow client");
        ws->finished = 1;
        hub_conn_close(ws->conn);
    }
    return rc;
}

int hub_ws_send(struct hub_ws *ws, int opcode, const void *data, size_t len)
{
    struct hub_shared *f = hub_ws_frame(opcode, data, len);
    if (f == NULL)
        return HUB_ENOMEM;
    int rc = hub_ws_send_frame(ws, f);
    hub_shared_unref(f);
    return rc;
}

int hub_ws_close(struct hub_ws *ws, uint16_t code, const char *reason)
{
    if (ws->close_sent)
        return HUB_ECLOSED;
    size_t rlen = reason ? strlen(reason) : 0;
    if (rlen > 123)
        rlen = 123;
    int rc = wslay_event_queue_close(ws->ctx, code, (const uint8_t *)reason, rlen);
    ws->close_sent = 1;
    if (rc != 0)
        return HUB_ECLOSED;
    ws_pump(ws);
    return 0;
}

int hub_ws_close_sent(const struct hub_ws *ws)
{
    return ws->close_sent;
}

int hub_ws_ping(struct hub_ws *ws)
{
    if (ws->close_sent || ws->finished)
        return HUB_ECLOSED;
    struct wslay_event_msg msg = {WSLAY_PING, NULL, 0};
    if (wslay_event_queue_msg(ws->ctx, &msg) != 0)
        return HUB_ECLOSED;
    ws_pump(ws);
    return 0;
}

uint16_t hub_ws_close_code_received(const struct hub_ws *ws)
{
    return wslay_event_get_status_code_received(ws->ctx);
}

struct hub_conn *hub_ws_conn(const struct hub_ws *ws)
{
    return ws->conn;
}
