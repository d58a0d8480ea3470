/*
 * ws.h: the WebSocket side of a connection after the upgrade (RFC 6455).
 *
 * The only module that includes wslay. wslay parses and validates incoming
 * frames (masking, reserved bits and opcodes, control-frame rules, UTF-8 of
 * text, the message size limit) and runs the close handshake and ping/pong.
 *
 * Outgoing data frames do not go through wslay's queue, which would copy the
 * payload for every recipient: a server frame is unmasked, so its bytes are
 * the same for every receiver, and hub_ws_frame encodes it once into a
 * reference-counted chunk that any number of connections queue. Control
 * frames that wslay produces are written straight into the connection's
 * output as they are made, so the order on the wire is the order of calls.
 *
 * Sans-I/O: a hub_ws reads only what hub_ws_feed gives it and writes only
 * into its hub_conn's output queue, so tests drive it with a detached conn.
 */
#ifndef HUB_WS_H
#define HUB_WS_H

#include "hub/buf.h"

struct hub_conn;
struct hub_ws;

enum hub_ws_opcode {
    HUB_WS_TEXT = 1,
    HUB_WS_BINARY = 2,
};

/* Close codes the hub sends (RFC 6455 section 7.4 and the hub's own range:
 * 4000-4499 mean a reconnect is fine, 4500-4999 mean do not reconnect). */
enum hub_ws_close_code {
    HUB_WS_NORMAL = 1000,
    HUB_WS_GOING_AWAY = 1001,
    HUB_WS_PROTOCOL_ERROR = 1002,
    HUB_WS_UNSUPPORTED_DATA = 1003,
    HUB_WS_INVALID_PAYLOAD = 1007,
    HUB_WS_POLICY = 1008,
    HUB_WS_TOO_BIG = 1009,
    HUB_WS_INTERNAL_ERROR = 1011,
    HUB_WS_SERVICE_RESTART = 1012,
    HUB_WS_SLOW_CLIENT = 4008,
};

struct hub_ws_config {
    size_t max_message;     /* largest message accepted; larger ones close 1009 (65536); with
                               permessage-deflate it bounds the inflated size too */
    uint32_t max_fragments; /* frames per message; more close 1008 (128) */
    uint32_t deflate_min;   /* with permessage-deflate, payloads shorter than this go out
                               uncompressed (128) */
};

/* A complete text or binary message arrived. data is borrowed for the call.
 * The callback may send, and may call hub_ws_close on this ws. */
typedef void (*hub_ws_message_cb)(struct hub_ws *ws, int opcode, const char *data, size_t len,
                                  void *user);

void hub_ws_config_default(struct hub_ws_config *cfg);

/* Creates the WebSocket state for conn (borrowed; must outlive ws). cfg is
 * copied (max_message capped at UINT32_MAX). Returns NULL when out of memory. */
struct hub_ws *hub_ws_new(struct hub_conn *conn, const struct hub_ws_config *cfg,
                          hub_ws_message_cb on_message, void *user);

/* Turns on permessage-deflate (RFC 7692) for ws, as negotiated by
 * hub_deflate_negotiate, with no context takeover in both directions:
 * incoming messages with RSV1 set are inflated (bounded by max_message:
 * beyond it the close is 1009; corrupt data closes 1007), and data frames
 * of at least deflate_min payload bytes go out compressed when that makes
 * them smaller. server_max_window_bits (8..15) is the window the hub may
 * use. Call before the first hub_ws_feed. Without it, RSV1 closes 1002. */
void hub_ws_set_deflate(struct hub_ws *ws, int server_max_window_bits);

/* Frees ws. Does not close the connection. */
void hub_ws_free(struct hub_ws *ws);

/* Processes len received bytes (borrowed), calling on_message for each
 * complete message. Protocol violations make wslay queue the right close
 * frame; once the close handshake is over (or cannot happen) the connection
 * is set to close after its output is flushed. Returns 0, or HUB_ECLOSED
 * once the WebSocket is finished (feed no more). */
int hub_ws_feed(struct hub_ws *ws, const char *data, size_t len);

/* Encodes one unfragmented server frame (FIN set, unmasked) around a copy of
 * payload. Returns a chunk with one reference (the caller's), or NULL when
 * out of memory. */
struct hub_shared *hub_ws_frame(int opcode, const void *payload, size_t len);

/* Like hub_ws_frame, but leaves the len payload bytes for the caller to fill
 * through *payload before the chunk is shared. */
struct hub_shared *hub_ws_frame_alloc(int opcode, size_t len, char **payload);

/* Queues a frame made by hub_ws_frame (the queue takes its own reference).
 * On a connection with permessage-deflate, a text or binary frame of at
 * least deflate_min payload bytes is replaced by its compressed form, which
 * is made on first use and kept with the frame (see hub_shared's alt), so a
 * broadcast frame is compressed once however many recipients it has.
 * Returns 0; HUB_ECLOSED if a close frame was already sent or received;
 * HUB_ENOBUFS if the connection's output limit is reached, in which case
 * the client is too slow: its unsent backlog is dropped and the close
 * handshake starts with 4008. */
int hub_ws_send_frame(struct hub_ws *ws, struct hub_shared *frame);

/* Encodes and queues one message. Returns as hub_ws_send_frame, or HUB_ENOMEM. */
int hub_ws_send(struct hub_ws *ws, int opcode, const void *data, size_t len);

/* Starts the close handshake with code and reason (NUL-terminated, at most
 * 123 bytes, borrowed), once held work is done (hub_ws_hold). Incoming
 * messages are ignored from now on and nothing is sent after the close;
 * the connection closes once the peer answers. The connection's timeout is
 * set to 5 s when the close goes out: when it fires the owner should cut
 * the connection (hub_ws_close_sent tells it apart).
 * Returns 0, or HUB_ECLOSED if a close was already sent. */
int hub_ws_close(struct hub_ws *ws, uint16_t code, const char *reason);

/* Returns 1 once this side has decided to close (its close frame is queued,
 * or waiting for held work). */
int hub_ws_close_sent(const struct hub_ws *ws);

/* Holds back any close frame until the matching hub_ws_release: the layer
 * above has work in flight (a message being stored) whose result must reach
 * the peer before the close does. Holds nest. */
void hub_ws_hold(struct hub_ws *ws);
void hub_ws_release(struct hub_ws *ws);

/* Queues a ping with an empty payload. Returns 0 or HUB_ECLOSED. */
int hub_ws_ping(struct hub_ws *ws);

/* The close code the peer sent (1005 if it sent none, 1006 if none yet). */
uint16_t hub_ws_close_code_received(const struct hub_ws *ws);

/* The code of a close this side started (hub_ws_close, or a protocol error
 * such as 1009), or 0 when it started none (no close, or only the echo of
 * the peer's). */
uint16_t hub_ws_close_code_sent(const struct hub_ws *ws);

/* A short description of a close code for logs ("slow client"); static. */
const char *hub_ws_close_name(uint16_t code);

/* The connection this ws writes to (borrowed). */
struct hub_conn *hub_ws_conn(const struct hub_ws *ws);

#endif
