/*
 * chat.h: what the hub does with WebSocket messages.
 *
 * Raw mode (no subprotocol): the client is in one room, named by the upgrade
 * path, and every text or binary message it sends is relayed verbatim, same
 * type and bytes, to every member of that room, the sender included, in the
 * order received (what the classic tutorial servers do).
 *
 * A broadcast is one struct hub_room_event handed to every member through
 * the rooms module; each wire format is encoded at most once per event into
 * a reference-counted frame that all recipients of that format share.
 */
#ifndef HUB_CHAT_H
#define HUB_CHAT_H

#include "hub/common.h"

struct hub_chat;
struct hub_chat_client;
struct hub_ws;

#define HUB_CHAT_ROOM_MAX 64

enum hub_chat_mode {
    HUB_CHAT_RAW = 0,  /* no subprotocol: verbatim relay */
};

struct hub_chat_config {
    const char *welcome;        /* greeting sent to each new raw client, or NULL (borrowed) */
    uint32_t max_rooms_per_client; /* rooms one connection may be in (64) */
};

void hub_chat_config_default(struct hub_chat_config *cfg);

/* Creates the hub-wide chat state. cfg is copied (welcome stays borrowed and
 * must outlive chat). Returns 0 or HUB_ENOMEM. */
int hub_chat_new(struct hub_chat **out, const struct hub_chat_config *cfg);

/* Frees chat; every client must have been freed. */
void hub_chat_free(struct hub_chat *chat);

/* Returns 1 if name is a valid room name: 1-64 bytes of [A-Za-z0-9_.:-]. */
int hub_chat_valid_room(const char *name, size_t len);

/* Maps an upgrade request path to a room: "/", "/ws" and "/ws/" mean
 * "lobby"; "/ws/<room>" and "/<room>" name a room. Returns 0 with *room
 * pointing into path (or at a static "lobby"), or HUB_EINVAL if the name is
 * not valid (the caller answers 400). */
int hub_chat_room_from_path(struct hub_iov path, struct hub_iov *room);

/* Creates a client for ws (borrowed; must outlive the client) in mode and
 * joins it to room (copied). Sends the welcome line if configured. Returns
 * NULL when out of memory (the caller closes the connection). */
struct hub_chat_client *hub_chat_client_new(struct hub_chat *chat, struct hub_ws *ws, int mode,
                                            struct hub_iov room);

/* Handles one complete message from the client (data borrowed for the call). */
void hub_chat_client_message(struct hub_chat_client *cl, int opcode, const char *data, size_t len);

/* Removes the client from every room and frees it. Call only from the
 * connection's close path, never during a broadcast. NULL is ignored. */
void hub_chat_client_free(struct hub_chat_client *cl);

/* Number of rooms that have members. */
size_t hub_chat_room_count(const struct hub_chat *chat);

#endif
