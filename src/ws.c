/*
 * ws.c: wslay driven from a hub_conn.
 *
 * Input: hub_ws_feed points `in` at the lent bytes and runs
 * wslay_event_recv, whose recv callback copies from `in` until it is empty
 * and then reports WOULDBLOCK. wslay keeps any partial frame itself, so
 * nothing here outlives the feed call.
 *
 * Output: the send callback stages the bytes wslay produces (pongs, close
 * replies; each at most 127 bytes) and accepts every byte, so wslay never
 * holds a partially sent frame. After each wslay_event_send the staged
 * frames go into the connection's queue: pongs jump ahead of queued data
 * that has not started going out (a backlog must not delay them), and an
 * unsent pong is replaced by the answer to a newer ping (RFC 6455 5.5.3), so
 * a ping flood cannot grow the queue; urgent frames count against the hard
 * output limit with a small allowance. A close frame goes behind everything
 * already queued, because nothing may follow it on the wire, and past the
 * limit, because it ends the connection.
 *
 * Memory: a wslay context carries two 4 KiB buffers, too much to keep for
 * each of many idle connections. A hub_ws therefore creates its context only
 * when bytes arrive and frees it again once the input ends on a frame
 * boundary with no fragmented message open, which a small shadow parser of
 * frame headers tracks (it never touches payload bytes). The frames the hub
 * starts itself (ping, close) are written here without wslay, so an idle
 * connection needs no context at all.
 *
 * Closing: nothing may follow a close frame, so a close waits for the work
 * the layer above still has in flight for this connection (hub_ws_hold):
 * a message read just before a close is still relayed and acknowledged, and
 * then the close goes out. Input that arrives once a close is decided is
 * ignored, except for the peer's answering close.
 *
 * permessage-deflate (RFC 7692, negotiated with no context takeover both
 * ways, see deflate.h): wslay checks the RSV1 rules (allowed only on the
 * first frame of a data message, and only once the extension is on) and
 * hands over the compressed message whole; it is inflated here into one
 * buffer shared by every connection, bounded by max_message, and a text
 * message is checked for UTF-8 after inflation (wslay cannot before it).
 * Outgoing data frames are replaced by their compressed form, made once per
 * frame and kept on the shared chunk (hub_shared's alt), so the zlib work of
 * a broadcast does not grow with its recipients. No zlib state lives in a
 * hub_ws: deflate.c keeps one stream per process.
 */
#include "hub/ws.h"
#include "hub/conn.h"
#include "hub/deflate.h"
#include "hub/log.h"
#include "hub/metrics.h"
#include "hub/utf8.h"

#include <stdlib.h>
#include <string.h>
#include <wslay/wslay.h>

struct hub_ws {
    wslay_event_context_ptr ctx;  /* owned wslay state, only while input is in flight */
    struct hub_conn *conn;        /* borrowed */
    hub_ws_message_cb on_message; /* upcall for messages */
    void *user;                   /* passed to on_message */
    uint64_t payload_left;        /* shadow parser: payload bytes of the current frame */
    uint8_t *pending_close;       /* owned: its length byte, then the close frame that
                                     waits for the holds */
    /* The limits of hub_ws_config, copied field by field in 32 bits each:
     * every idle connection carries them (bench/RESULTS.md). */
    uint32_t max_message;        /* max_message, at most UINT32_MAX */
    uint32_t max_fragments;      /* max_fragments */
    uint32_t deflate_min;        /* deflate_min */
    uint32_t fragments;          /* frames of the message being received */
    uint32_t holds;              /* work in flight that the close must wait for */
    uint16_t fail_code;          /* a protocol error wslay reports without a code */
    uint16_t close_code_rx;      /* close code the peer sent (1006 until it does) */
    uint16_t close_code_tx;      /* code of a close this side started (0: none, or an echo) */
    uint8_t hdr[14];             /* shadow parser: partial frame header */
    unsigned hdr_len : 4;        /* bytes in hdr */
    unsigned closing : 1;        /* a close was requested: input is ignored */
    unsigned close_sent : 1;     /* our close frame is in the connection's queue */
    unsigned fatal : 1;          /* end the TCP connection once the close is out */
    unsigned finished : 1;       /* the connection is set to close */
    unsigned close_received : 1; /* the peer's close frame arrived */
    unsigned in_message : 1;     /* shadow parser: a fragmented data message is open */
    unsigned deflate : 1;        /* permessage-deflate was negotiated */
    unsigned deflate_bits : 4;   /* its server_max_window_bits (8..15) */
};

/* The bytes being fed and the control frames wslay makes are only ever
 * in use during one call on the loop thread (hub_ws_feed, or one send), so
 * one buffer of each serves every connection instead of one each. */
static const char *feed_in;  /* bytes being fed, borrowed during hub_ws_feed */
static size_t feed_len;      /* bytes left at feed_in */
static struct hub_buf stage; /* control frames made by wslay, not yet queued */

/* permessage-deflate scratch space, in use during one call at a time like
 * the above: the message being inflated (lent to on_message), and the
 * compressed payload of a frame being made. Either is freed after a message
 * that made it larger than this, so a rare big message does not pin its
 * size for the life of the process. */
static struct hub_buf inflated; /* the inflated incoming message */
static struct hub_buf zpayload; /* a compressed outgoing payload */
#define SCRATCH_KEEP (64 * 1024)

static void scratch_trim(struct hub_buf *b)
{
    if (b->cap > SCRATCH_KEEP)
        hub_buf_free(b);
    b->len = 0;
}

/* How long a peer gets to answer our close frame before the TCP connection
 * is cut. */
#define CLOSE_TIMEOUT_MS 5000

void hub_ws_config_default(struct hub_ws_config *cfg)
{
    cfg->max_message = 64 * 1024;
    cfg->max_fragments = 128;
    cfg->deflate_min = 128;
}

static ssize_t ws_recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                          void *user)
{
    if (feed_len == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = len < feed_len ? len : feed_len;
    memcpy(buf, feed_in, n);
    feed_in += n;
    feed_len -= n;
    return (ssize_t)n;
}

static ssize_t ws_send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                          void *user)
{
    if (hub_buf_append(&stage, data, len) != 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return (ssize_t)len;
}

/* Queues the control frames wslay produced (see the file comment). */
static void ws_emit_close(struct hub_ws *ws, const uint8_t *frame, size_t len, int fatal);

static void ws_slow(struct hub_ws *ws);

/* Handles the result of queueing an urgent frame: a peer whose queue is past
 * the hard limit even for control frames is a slow client. Returns rc. */
static int ws_urgent_result(struct hub_ws *ws, int rc)
{
    if (rc == HUB_ENOBUFS)
        ws_slow(ws);
    return rc;
}

/* Queues the control frames wslay produced (see the file comment). */
static void ws_flush_stage(struct hub_ws *ws)
{
    const uint8_t *p = (const uint8_t *)stage.data;
    size_t len = stage.len, i = 0;
    /* Server control frames are unmasked with 7-bit lengths. */
    while (i + 2 <= len && !ws->close_sent) {
        size_t flen = 2 + (p[i + 1] & 127);
        if (i + flen > len)
            break;
        if ((p[i] & 15) == WSLAY_PONG) {
            /* Only the most recent ping needs an answer (RFC 6455 5.5.3):
             * a pong still waiting in the queue is replaced, so a peer that
             * floods pings without reading holds one pong, not one each. */
            if (ws_urgent_result(ws, hub_conn_write_urgent_latest(ws->conn, p + i, flen)) != 0)
                break;
        } else if ((p[i] & 15) != WSLAY_CONNECTION_CLOSE) {
            if (ws_urgent_result(ws, hub_conn_write_urgent(ws->conn, p + i, flen)) != 0)
                break;
        } else if (!ws->closing) {
            /* wslay answers the peer's close, or gives up on a protocol
             * error (reading disabled): then the connection ends with it. */
            int fatal = ws->ctx != NULL && !wslay_event_get_read_enabled(ws->ctx) &&
                        !wslay_event_get_close_received(ws->ctx);
            if (fatal && flen >= 4)
                ws->close_code_tx = (uint16_t)(p[i + 2] << 8 | p[i + 3]);
            ws_emit_close(ws, p + i, flen, fatal);
        }
        i += flen;
    }
    stage.len = 0; /* keep the capacity for the next one */
}

/* Runs wslay_event_send and queues what it made. Returns its result. */
static int ws_send_control(struct hub_ws *ws)
{
    int rc = wslay_event_send(ws->ctx);
    ws_flush_stage(ws);
    return rc;
}

/* Counts the frames of each incoming message, against fragment floods. */
static void ws_frame_start_cb(wslay_event_context_ptr ctx,
                              const struct wslay_event_on_frame_recv_start_arg *arg, void *user)
{
    struct hub_ws *ws = user;
    if (arg->opcode == WSLAY_TEXT_FRAME || arg->opcode == WSLAY_BINARY_FRAME)
        ws->fragments = 1;
    else if (arg->opcode == WSLAY_CONTINUATION_FRAME && ++ws->fragments > ws->max_fragments) {
        ws->fail_code = HUB_WS_POLICY;
        wslay_event_shutdown_read(ctx); /* stop parsing after this frame */
    }
}

static void ws_msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                      void *user)
{
    struct hub_ws *ws = user;
    if (arg->opcode == WSLAY_PING) {
        /* wslay has queued the pong: send it now, so that it goes out
         * before whatever the messages after this ping produce. */
        ws_send_control(ws);
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
    if (ws->closing || ws->fail_code != 0)
        return; /* we are closing: what the peer says now has no audience */
    const char *msg = (const char *)arg->msg;
    size_t len = arg->msg_length;
    int compressed = (arg->rsv & WSLAY_RSV1_BIT) != 0;
    if (compressed) {
        /* wslay lets RSV1 through only when deflate is on (allowed bits). */
        int rc = hub_deflate_inflate(arg->msg, arg->msg_length, ws->max_message, &inflated);
        if (rc == 0 && arg->opcode == WSLAY_TEXT_FRAME &&
            !hub_utf8_valid(inflated.data, inflated.len))
            rc = HUB_EINVAL;
        if (rc != 0) {
            ws->fail_code = rc == HUB_ENOBUFS  ? HUB_WS_TOO_BIG
                            : rc == HUB_ENOMEM ? HUB_WS_INTERNAL_ERROR
                                               : HUB_WS_INVALID_PAYLOAD;
            scratch_trim(&inflated);
            wslay_event_shutdown_read(ctx); /* stop parsing after this frame */
            return;
        }
        msg = inflated.data ? inflated.data : "";
        len = inflated.len;
    }
    hub_metrics.messages_in++;
    ws->on_message(ws, arg->opcode == WSLAY_TEXT_FRAME ? HUB_WS_TEXT : HUB_WS_BINARY, msg, len,
                   ws->user);
    if (compressed)
        scratch_trim(&inflated);
}

/* Creates the wslay context when input arrives. Returns 0 or HUB_ENOMEM. */
static int ws_ctx_open(struct hub_ws *ws)
{
    if (ws->ctx != NULL)
        return 0;
    struct wslay_event_callbacks cbs = {
        .recv_callback = ws_recv_cb,
        .send_callback = ws_send_cb,
        .on_msg_recv_callback = ws_msg_cb,
        .on_frame_recv_start_callback = ws_frame_start_cb,
    };
    if (wslay_event_context_server_init(&ws->ctx, &cbs, ws) != 0)
        return HUB_ENOMEM;
    wslay_event_config_set_max_recv_msg_length(ws->ctx, ws->max_message);
    if (ws->deflate)
        wslay_event_config_set_allowed_rsv_bits(ws->ctx, WSLAY_RSV1_BIT);
    return 0;
}

static void ws_ctx_drop(struct hub_ws *ws)
{
    wslay_event_context_free(ws->ctx);
    ws->ctx = NULL;
}

/* Follows frame headers through len bytes of input, skipping payloads, so
 * that we know whether wslay holds anything worth keeping when they end. */
static void ws_shadow(struct hub_ws *ws, const uint8_t *p, size_t len)
{
    while (len > 0) {
        if (ws->payload_left > 0) {
            size_t n = ws->payload_left < len ? (size_t)ws->payload_left : len;
            ws->payload_left -= n;
            p += n;
            len -= n;
            continue;
        }
        ws->hdr[ws->hdr_len++] = *p++;
        len--;
        if (ws->hdr_len < 2)
            continue;
        size_t need = 2 + ((ws->hdr[1] & 0x80) ? 4 : 0);
        uint8_t l7 = ws->hdr[1] & 127;
        need += l7 == 126 ? 2 : l7 == 127 ? 8 : 0;
        if (ws->hdr_len < need)
            continue;
        uint64_t plen = l7;
        if (l7 == 126)
            plen = (uint64_t)ws->hdr[2] << 8 | ws->hdr[3];
        else if (l7 == 127)
            for (int i = 0; i < 8; i++)
                plen = plen << 8 | ws->hdr[2 + i];
        int opcode = ws->hdr[0] & 15, fin = ws->hdr[0] >> 7;
        if (opcode < 8)
            ws->in_message = !fin; /* data and continuation frames */
        ws->payload_left = plen;
        ws->hdr_len = 0;
    }
}

struct hub_ws *hub_ws_new(struct hub_conn *conn, const struct hub_ws_config *cfg,
                          hub_ws_message_cb on_message, void *user)
{
    struct hub_ws *ws = calloc(1, sizeof(*ws));
    if (ws == NULL)
        return NULL;
    ws->max_message = cfg->max_message > UINT32_MAX ? UINT32_MAX : (uint32_t)cfg->max_message;
    ws->max_fragments = cfg->max_fragments;
    ws->deflate_min = cfg->deflate_min;
    ws->conn = conn;
    ws->on_message = on_message;
    ws->user = user;
    ws->close_code_rx = 1006;
    return ws;
}

void hub_ws_set_deflate(struct hub_ws *ws, int server_max_window_bits)
{
    ws->deflate = 1;
    ws->deflate_bits = (unsigned)(server_max_window_bits < 8    ? 8
                                  : server_max_window_bits > 15 ? 15
                                                                : server_max_window_bits) &
                       15;
    if (ws->ctx != NULL)
        wslay_event_config_set_allowed_rsv_bits(ws->ctx, WSLAY_RSV1_BIT);
}

void hub_ws_free(struct hub_ws *ws)
{
    if (ws == NULL)
        return;
    if (ws->ctx != NULL)
        ws_ctx_drop(ws);
    free(ws->pending_close);
    free(ws);
}

/* Writes a ping, ahead of any backlog that has not started going out. */
static void ws_write_ping(struct hub_ws *ws)
{
    static const uint8_t ping[2] = {0x80 | WSLAY_PING, 0};
    ws_urgent_result(ws, hub_conn_write_urgent(ws->conn, ping, sizeof(ping)));
}

/* The close is in the queue: end the connection once it is written if the
 * close was fatal or answers the peer's, else give the peer a while to
 * answer before the connection is cut. */
static void ws_settle(struct hub_ws *ws)
{
    if (ws->finished)
        return;
    if (ws->fatal || ws->close_received) {
        ws->finished = 1;
        hub_conn_close_after_flush(ws->conn);
    } else {
        hub_conn_set_timeout(ws->conn, CLOSE_TIMEOUT_MS);
    }
}

static void ws_put_close(struct hub_ws *ws, const uint8_t *frame, size_t len)
{
    hub_conn_write_force(ws->conn, frame, len);
    hub_metrics_close(len >= 4 ? (uint16_t)(frame[2] << 8 | frame[3]) : 1005);
    ws->close_sent = 1;
    ws_settle(ws);
}

/* Sends a close frame (at most 127 bytes), now or, while work is in flight
 * for this connection, once it is done. Only the first close counts. */
static void ws_emit_close(struct hub_ws *ws, const uint8_t *frame, size_t len, int fatal)
{
    if (ws->closing)
        return;
    ws->closing = 1;
    ws->fatal = fatal != 0;
    if (ws->holds > 0) {
        ws->pending_close = malloc(len + 1);
        if (ws->pending_close != NULL) {
            ws->pending_close[0] = (uint8_t)len;
            memcpy(ws->pending_close + 1, frame, len);
            return;
        }
    }
    ws_put_close(ws, frame, len);
}

void hub_ws_hold(struct hub_ws *ws)
{
    ws->holds++;
}

void hub_ws_release(struct hub_ws *ws)
{
    if (--ws->holds > 0 || ws->pending_close == NULL)
        return;
    uint8_t *frame = ws->pending_close;
    ws->pending_close = NULL;
    ws_put_close(ws, frame + 1, frame[0]);
    free(frame);
}

/* Ends the WebSocket with our own close frame carrying code: wslay's queue
 * may hold a close without a code at this point. */
static void ws_fail(struct hub_ws *ws, uint16_t code)
{
    uint8_t frame[4] = {0x88, 2, (uint8_t)(code >> 8), (uint8_t)code};
    ws_emit_close(ws, frame, sizeof(frame), 1);
    if (ws->ctx != NULL)
        ws_ctx_drop(ws);
}

/* After wslay has read: writes the control frames it queued, notes a close
 * from the peer, and drops the context once the WebSocket is over or the
 * input stopped between messages. */
static void ws_after_recv(struct hub_ws *ws)
{
    if (wslay_event_want_write(ws->ctx) && ws_send_control(ws) != 0) {
        ws->finished = 1;
        ws_ctx_drop(ws);
        hub_conn_close(ws->conn);
        return;
    }
    if (wslay_event_get_close_received(ws->ctx) && !ws->close_received) {
        ws->close_received = 1;
        ws->close_code_rx = wslay_event_get_status_code_received(ws->ctx);
        if (ws->close_sent)
            ws_settle(ws); /* the peer answered our close */
    }
    if (ws->finished || ws->closing ||
        (ws->hdr_len == 0 && ws->payload_left == 0 && !ws->in_message))
        ws_ctx_drop(ws); /* over, or between messages: nothing worth its memory */
}

int hub_ws_feed(struct hub_ws *ws, const char *data, size_t len)
{
    if (ws->finished || ws->close_received || (ws->closing && ws->fatal))
        return HUB_ECLOSED;
    if (ws_ctx_open(ws) != 0) {
        ws->finished = 1;
        hub_conn_close(ws->conn);
        return HUB_ECLOSED;
    }
    ws_shadow(ws, (const uint8_t *)data, len);
    feed_in = data;
    feed_len = len;
    int rc = wslay_event_recv(ws->ctx);
    feed_in = NULL;
    feed_len = 0;
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
        ws_ctx_drop(ws);
        hub_conn_close(ws->conn);
        return HUB_ECLOSED;
    }
    if (ws->fail_code != 0) {
        ws_fail(ws, ws->fail_code);
        return HUB_ECLOSED;
    }
    ws_after_recv(ws);
    return ws->finished || ws->close_received || (ws->closing && ws->fatal) ? HUB_ECLOSED : 0;
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

/* The tag of a frame's compressed form made with a window of 2^bits bytes
 * (hub_shared alt). An empty form marks a frame that compression would not
 * make smaller. */
#define ALT_DEFLATE(bits) ((uint16_t)(0x7700 | (bits)))

/* Returns the compressed form of frame (a chunk made by hub_ws_frame) for a
 * peer whose window is 2^bits bytes, making and keeping it on first use;
 * NULL when the frame goes out as it is: not a data frame, shorter than min,
 * not made smaller by compression, or out of memory. Borrowed: valid while
 * frame is. */
static struct hub_shared *ws_deflated(struct hub_shared *frame, int bits, uint32_t min)
{
    const uint8_t *p = (const uint8_t *)frame->data;
    if (frame->len < 2 || (p[0] & 0xf0) != 0x80)
        return NULL; /* not FIN with clear RSV bits: not one of ours */
    int opcode = p[0] & 15;
    if (opcode != HUB_WS_TEXT && opcode != HUB_WS_BINARY)
        return NULL;
    size_t hdr = (p[1] & 127) < 126 ? 2 : (p[1] & 127) == 126 ? 4 : 10;
    if (frame->len < hdr || frame->len - hdr < min)
        return NULL;
    size_t plen = frame->len - hdr;
    /* Without context takeover no match reaches back past the payload's
     * start, so for a payload no longer than the peer's window the 15-bit
     * form, the one every other recipient shares, is valid as well. zlib
     * cannot make a 256-byte raw window: such a peer gets longer payloads
     * uncompressed, which RFC 7692 allows. */
    int use = plen <= ((size_t)1 << bits) ? 15 : bits;
    if (use < 9)
        return NULL;
    struct hub_shared *z = hub_shared_find_alt(frame, ALT_DEFLATE(use));
    if (z == NULL) {
        zpayload.len = 0;
        if (hub_deflate_compress(frame->data + hdr, plen, use, &zpayload) != 0) {
            scratch_trim(&zpayload);
            return NULL;
        }
        if (zpayload.len < plen) {
            z = hub_ws_frame(opcode, zpayload.data, zpayload.len);
            if (z != NULL)
                z->data[0] |= 0x40; /* RSV1: a compressed message */
        } else {
            z = hub_shared_new(0); /* not worth it: remember that */
        }
        scratch_trim(&zpayload);
        if (z == NULL)
            return NULL;
        hub_shared_set_alt(frame, z, ALT_DEFLATE(use));
        hub_shared_unref(z); /* frame holds it now */
    }
    return z->len > 0 ? z : NULL;
}

int hub_ws_send_frame(struct hub_ws *ws, struct hub_shared *frame)
{
    if (ws->close_sent || ws->finished)
        return HUB_ECLOSED;
    if (ws->deflate) {
        struct hub_shared *z = ws_deflated(frame, (int)ws->deflate_bits, ws->deflate_min);
        if (z != NULL)
            frame = z;
    }
    int rc = hub_conn_send(ws->conn, frame);
    if (rc == 0)
        hub_metrics.messages_out++;
    else if (rc == HUB_ENOBUFS)
        ws_slow(ws);
    return rc;
}

/* The client does not read fast enough for what its rooms (or its own
 * pings) produce. Its backlog is dropped and 4008 tells it that a reconnect
 * (and a resume from its last offset) is fine; if it does not even read the
 * close frame, the close timeout cuts it. */
static void ws_slow(struct hub_ws *ws)
{
    if (ws->closing || ws->finished)
        return;
    /* Messages are lost here (the client may resume them): warn. */
    hub_log_warn("%s: slow client: dropping %zu queued bytes and closing 4008",
                 hub_conn_peer(ws->conn), ws->conn->out.bytes);
    hub_metrics.slow_closes++;
    hub_conn_drop_backlog(ws->conn);
    hub_ws_close(ws, HUB_WS_SLOW_CLIENT, "slow client");
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
    if (ws->closing || ws->finished)
        return HUB_ECLOSED;
    uint8_t frame[2 + 125];
    size_t rlen = reason ? strlen(reason) : 0;
    if (rlen > 123)
        rlen = 123;
    frame[0] = 0x80 | WSLAY_CONNECTION_CLOSE;
    frame[1] = (uint8_t)(2 + rlen);
    frame[2] = (uint8_t)(code >> 8);
    frame[3] = (uint8_t)code;
    if (rlen > 0)
        memcpy(frame + 4, reason, rlen);
    ws->close_code_tx = code;
    ws_emit_close(ws, frame, 4 + rlen, 0);
    return 0;
}

int hub_ws_close_sent(const struct hub_ws *ws)
{
    return ws->closing;
}

int hub_ws_ping(struct hub_ws *ws)
{
    if (ws->closing || ws->finished)
        return HUB_ECLOSED;
    ws_write_ping(ws);
    return 0;
}

uint16_t hub_ws_close_code_received(const struct hub_ws *ws)
{
    return ws->close_code_rx;
}

uint16_t hub_ws_close_code_sent(const struct hub_ws *ws)
{
    return ws->close_code_tx;
}

const char *hub_ws_close_name(uint16_t code)
{
    switch (code) {
    case 1000:
        return "normal closure";
    case 1001:
        return "going away";
    case 1002:
        return "protocol error";
    case 1003:
        return "unsupported data";
    case 1005:
        return "no code";
    case 1006:
        return "connection lost";
    case 1007:
        return "invalid payload";
    case 1008:
        return "policy violation";
    case 1009:
        return "message too big";
    case 1011:
        return "internal error";
    case 1012:
        return "server restart";
    case 4008:
        return "slow client";
    case 4012:
        return "no pong";
    case 4013:
        return "too many requests";
    default:
        return code >= 4500 && code <= 4999 ? "do not reconnect" : "other";
    }
}

struct hub_conn *hub_ws_conn(const struct hub_ws *ws)
{
    return ws->conn;
}
