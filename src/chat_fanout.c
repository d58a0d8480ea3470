/*
 * chat_fanout.c: events to frames, delivery, presence pushes.
 *
 * One struct hub_room_event per broadcast; each wire format (raw, JSON) is
 * encoded at most once per event, by its first recipient, into a shared
 * frame that every other recipient of that format queues by reference.
 * Rooms up to HUB_CHAT_LIST_MAX members get join/leave pushes; bigger ones
 * get a coalesced count push at most once per COUNT_INTERVAL_MS.
 */
#include "chat_int.h"
#include "hub/flow.h"
#include "hub/history.h"
#include "hub/log.h"
#include "hub/metrics.h"
#include "hub/utf8.h"
#include "hub/ws.h"

#include <stdlib.h>
#include <string.h>

/* ---- events and delivery -------------------------------------------- */

static struct hub_shared *encode_json(struct hub_room_event *ev)
{
    struct hub_jsonw b = {0};
    const char *room = hub_room_name(ev->room);
    size_t room_len = hub_room_name_len(ev->room);
    hub_jsonw_raw(&b, "{");
    switch (ev->kind) {
    case EV_MSG:
        hub_jsonw_kstr(&b, "t", "msg", 3);
        hub_jsonw_kstr(&b, "room", room, room_len);
        hub_jsonw_kint(&b, "offset", (long long)ev->offset);
        hub_jsonw_kint(&b, "ts", ev->ts);
        hub_jsonw_kstr(&b, "from", ev->from.base, ev->from.len);
        hub_jsonw_kstr(&b, "text", ev->text.base, ev->text.len);
        if (ev->cmid.len > 0)
            hub_jsonw_kstr(&b, "cmid", ev->cmid.base, ev->cmid.len);
        break;
    case EV_JOIN:
    case EV_LEAVE:
        hub_jsonw_kstr(&b, "t", ev->kind == EV_JOIN ? "join" : "leave",
                       ev->kind == EV_JOIN ? 4 : 5);
        hub_jsonw_kstr(&b, "room", room, room_len);
        hub_jsonw_kstr(&b, "nick", ev->who->nick, ev->who->nick_len);
        chat_jw_client_id(&b, ev->who);
        break;
    case EV_TYPING:
        hub_jsonw_kstr(&b, "t", "typing", 6);
        hub_jsonw_kstr(&b, "room", room, room_len);
        hub_jsonw_kstr(&b, "nick", ev->who->nick, ev->who->nick_len);
        hub_jsonw_kint(&b, "ttl", TYPING_TTL_MS);
        break;
    case EV_NICK:
        hub_jsonw_kstr(&b, "t", "nick", 4);
        hub_jsonw_kstr(&b, "room", room, room_len);
        hub_jsonw_kstr(&b, "old", ev->old_nick.base, ev->old_nick.len);
        hub_jsonw_kstr(&b, "new", ev->who->nick, ev->who->nick_len);
        break;
    case EV_COUNT:
        hub_jsonw_kstr(&b, "t", "count", 5);
        hub_jsonw_kstr(&b, "room", room, room_len);
        hub_jsonw_kint(&b, "members", (long long)hub_room_size(ev->room));
        break;
    }
    hub_jsonw_raw(&b, "}");
    /* A writer that failed holds a cut-off text: no frame rather than a
     * broken one. */
    struct hub_shared *f =
        hub_jsonw_error(&b) == 0 ? hub_ws_frame(HUB_WS_TEXT, b.b.data, b.b.len) : NULL;
    hub_jsonw_free(&b);
    return f;
}

void chat_deliver(struct room_member *m, struct hub_room *room, struct hub_room_event *ev)
{
    struct hub_chat_client *cl = HUB_CONTAINER_OF(m, struct hub_chat_client, member);
    struct hub_shared **slot;
    if (ev->kind == EV_MSG && cl->nsubs > 0) {
        struct chat_sub *s = chat_sub_find(cl, room);
        if (s != NULL && ev->offset <= s->delivered_upto)
            return; /* the join reply carries this message */
        if (s != NULL && s->pending) {
            if (ev->opcode == HUB_WS_TEXT && ev->json == NULL)
                ev->json = encode_json(ev);
            if (ev->opcode == HUB_WS_TEXT && ev->json != NULL)
                chat_sub_hold(s, ev->offset, ev->json);
            return; /* it goes out behind the reply */
        }
        if (s != NULL)
            chat_sub_remove(cl, room); /* past the reply: nothing more to reconcile */
    }
    if (cl->mode == HUB_CHAT_RAW) {
        if (ev->kind != EV_MSG)
            return; /* raw clients see messages only */
        if (ev->raw == NULL)
            ev->raw = hub_ws_frame(ev->opcode, ev->text.base, ev->text.len);
        slot = &ev->raw;
    } else {
        if (ev->kind == EV_MSG && ev->opcode != HUB_WS_TEXT)
            return; /* JSON has no binary messages */
        if (ev->json == NULL)
            ev->json = encode_json(ev);
        slot = &ev->json;
    }
    /* A full queue closes that client inside hub_ws_send_frame; the others
     * are unaffected. A failed encode loses this event for this format. */
    if (*slot != NULL && hub_ws_send_frame(cl->ws, *slot) == 0)
        hub_flow_delivered(cl->chat->cfg.flow, hub_ws_conn(cl->ws), hub_room_name(room),
                           hub_room_name_len(room)); /* over its soft limit: hold the senders */
}

void chat_broadcast(struct hub_room_event *ev, struct hub_chat_client *except)
{
    hub_room_broadcast(ev->room, ev, except ? &except->member : NULL);
    hub_shared_unref(ev->raw);
    hub_shared_unref(ev->json);
    ev->raw = ev->json = NULL;
}

static struct count_entry *count_entry(struct hub_chat *chat, struct hub_room *room, int create)
{
    const char *name = hub_room_name(room);
    for (size_t i = 0; i < chat->ncounts; i++)
        if (strcmp(chat->counts[i].name, name) == 0)
            return &chat->counts[i];
    if (!create)
        return NULL;
    struct count_entry *a = realloc(chat->counts, (chat->ncounts + 1) * sizeof(*a));
    if (a == NULL)
        return NULL;
    chat->counts = a;
    struct count_entry *e = &a[chat->ncounts++];
    memset(e, 0, sizeof(*e));
    memcpy(e->name, name, hub_room_name_len(room) + 1);
    return e;
}

static void push_count(struct hub_chat *chat, struct hub_room *room, struct count_entry *e)
{
    struct hub_room_event ev = {.kind = EV_COUNT, .room = room};
    chat_broadcast(&ev, NULL);
    e->last_push = chat_now(chat);
    e->dirty = 0;
}

/* A big room's membership changed: push its count now, or mark it for the
 * tick if one went out less than COUNT_INTERVAL_MS ago. */
static void count_changed(struct hub_chat *chat, struct hub_room *room)
{
    struct count_entry *e = count_entry(chat, room, 1);
    if (e == NULL)
        return;
    if (chat_now(chat) - e->last_push >= COUNT_INTERVAL_MS)
        push_count(chat, room, e);
    else
        e->dirty = 1;
}

/* Tells a room that who joined: one push per member while the room is
 * small, a coalesced count push once it is big. */
void chat_announce_join(struct hub_chat_client *who, struct hub_room *room)
{
    if (hub_room_size(room) <= HUB_CHAT_LIST_MAX) {
        struct hub_room_event ev = {.kind = EV_JOIN, .room = room, .who = who};
        chat_broadcast(&ev, who);
        return;
    }
    count_changed(who->chat, room);
}

void chat_remove_member(struct hub_chat_client *who, struct hub_room *room)
{
    struct hub_chat *chat = who->chat;
    size_t n = hub_room_size(room);
    if (n > 1 && n <= HUB_CHAT_LIST_MAX) {
        struct hub_room_event ev = {.kind = EV_LEAVE, .room = room, .who = who};
        chat_broadcast(&ev, who);
    }
    /* A big room's count is taken after the leaver is gone, so it is right
     * and the leaver does not get it. The room outlives the leave (it has
     * other members) but rooms.h lends it only until then: find it again. */
    char name[HUB_ROOM_NAME_MAX + 1];
    size_t len = hub_room_name_len(room);
    memcpy(name, hub_room_name(room), len + 1);
    if (n == 1) {
        /* The last member leaves: the store may evict the room again. */
        struct hub_iov v = {name, len};
        hub_history_hold(chat->cfg.history, v, 0);
    }
    hub_rooms_leave(chat->rooms, &who->member, room);
    if (n > HUB_CHAT_LIST_MAX) {
        struct hub_room *r = hub_rooms_find(chat->rooms, name, len);
        if (r != NULL)
            count_changed(chat, r);
    }
}

void hub_chat_tick(struct hub_chat *chat)
{
    int64_t now = chat_now(chat);
    for (size_t i = 0; i < chat->ncounts;) {
        struct count_entry *e = &chat->counts[i];
        struct hub_room *room = hub_rooms_find(chat->rooms, e->name, strlen(e->name));
        if (room == NULL || hub_room_size(room) <= HUB_CHAT_LIST_MAX) {
            /* Gone or small again: per-member pushes take over. */
            if (room != NULL && e->dirty)
                push_count(chat, room, e);
            chat->counts[i] = chat->counts[--chat->ncounts];
            continue;
        }
        if (e->dirty && now - e->last_push >= COUNT_INTERVAL_MS)
            push_count(chat, room, e);
        i++;
    }
}
