/*
 * chat.c: raw-mode relay over the rooms module.
 *
 * Every client embeds a room_member. A message from a raw client becomes one
 * hub_room_event; the first raw recipient encodes the frame, the others share
 * it, and the event releases it when the broadcast is over.
 */
#include "hub/chat.h"
#include "hub/buf.h"
#include "hub/log.h"
#include "hub/rooms.h"
#include "hub/ws.h"

#include <stdlib.h>
#include <string.h>

struct hub_chat {
    struct hub_rooms *rooms;    /* room registry, owned */
    struct hub_chat_config cfg; /* copied configuration */
    size_t nclients;            /* live clients */
};

struct hub_chat_client {
    struct room_member member; /* membership, embedded */
    struct hub_chat *chat;     /* the hub, borrowed */
    struct hub_ws *ws;         /* the client's WebSocket, borrowed */
    int mode;                  /* enum hub_chat_mode */
};

/* One broadcast, with its frames encoded lazily once per wire format. */
struct hub_room_event {
    int opcode;                /* HUB_WS_TEXT or HUB_WS_BINARY */
    const char *data;          /* the message, borrowed for the broadcast */
    size_t len;                /* its length */
    struct hub_shared *frame;  /* the raw frame once encoded, owned by the event */
};

void hub_chat_config_default(struct hub_chat_config *cfg)
{
    cfg->welcome = NULL;
    cfg->max_rooms_per_client = 64;
}

int hub_chat_new(struct hub_chat **out, const struct hub_chat_config *cfg)
{
    struct hub_chat *chat = calloc(1, sizeof(*chat));
    if (chat == NULL)
        return HUB_ENOMEM;
    chat->cfg = *cfg;
    if (hub_rooms_new(&chat->rooms, cfg->max_rooms_per_client) != 0) {
        free(chat);
        return HUB_ENOMEM;
    }
    *out = chat;
    return 0;
}

void hub_chat_free(struct hub_chat *chat)
{
    if (chat == NULL)
        return;
    hub_rooms_free(chat->rooms);
    free(chat);
}

int hub_chat_valid_room(const char *name, size_t len)
{
    if (len == 0 || len > HUB_CHAT_ROOM_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '_' || c == '.' || c == ':' || c == '-';
        if (!ok)
            return 0;
    }
    return 1;
}

int hub_chat_room_from_path(struct hub_iov path, struct hub_iov *room)
{
    static const char lobby[] = "lobby";
    if (path.len == 0 || path.base[0] != '/')
        return HUB_EINVAL;
    struct hub_iov rest = {path.base + 1, path.len - 1};
    /* "/ws" is the documented endpoint; "/ws/<room>" names a room under it. */
    if (rest.len >= 2 && memcmp(rest.base, "ws", 2) == 0 && (rest.len == 2 || rest.base[2] == '/')) {
        rest.base += rest.len == 2 ? 2 : 3;
        rest.len -= rest.len == 2 ? 2 : 3;
    }
    if (rest.len == 0) {
        room->base = lobby;
        room->len = sizeof(lobby) - 1;
        return 0;
    }
    if (!hub_chat_valid_room(rest.base, rest.len))
        return HUB_EINVAL;
    *room = rest;
    return 0;
}

static void raw_deliver(struct room_member *m, struct hub_room *room, struct hub_room_event *ev)
{
    struct hub_chat_client *cl = HUB_CONTAINER_OF(m, struct hub_chat_client, member);
    if (ev->frame == NULL) {
        ev->frame = hub_ws_frame(ev->opcode, ev->data, ev->len);
        if (ev->frame == NULL)
            return; /* out of memory: this message is lost for everyone */
    }
    /* A full queue closes that client inside hub_ws_send_frame; the others
     * are unaffected. */
    hub_ws_send_frame(cl->ws, ev->frame);
}

struct hub_chat_client *hub_chat_client_new(struct hub_chat *chat, struct hub_ws *ws, int mode,
                                            struct hub_iov room)
{
    struct hub_chat_client *cl = calloc(1, sizeof(*cl));
    if (cl == NULL)
        return NULL;
    cl->chat = chat;
    cl->ws = ws;
    cl->mode = mode;
    cl->member.deliver = raw_deliver;
    if (hub_rooms_join(chat->rooms, &cl->member, room.base, room.len, NULL) != 0) {
        free(cl);
        return NULL;
    }
    chat->nclients++;
    if (chat->cfg.welcome != NULL)
        hub_ws_send(ws, HUB_WS_TEXT, chat->cfg.welcome, strlen(chat->cfg.welcome));
    return cl;
}

void hub_chat_client_message(struct hub_chat_client *cl, int opcode, const char *data, size_t len)
{
    /* A raw client is in exactly one room: the one its path named. */
    if (cl->member.nrooms == 0)
        return;
    struct hub_room_event ev = {opcode, data, len, NULL};
    hub_room_broadcast(cl->member.rooms[0].room, &ev, NULL);
    hub_shared_unref(ev.frame);
}

void hub_chat_client_free(struct hub_chat_client *cl)
{
    if (cl == NULL)
        return;
    hub_rooms_leave_all(cl->chat->rooms, &cl->member);
    cl->chat->nclients--;
    free(cl);
}

size_t hub_chat_room_count(const struct hub_chat *chat)
{
    return hub_rooms_count(chat->rooms);
}
