/*
 * chat_fanout.c: events to frames, delivery, and the engine's presence,
 * typing and epoch upcalls.
 *
 * One struct hub_room_event per broadcast; each wire format (raw, JSON) is
 * encoded at most once per event, by its first recipient, into a shared
 * frame that every other recipient of that format queues by reference.
 * Rooms up to HUB_CHAT_LIST_MAX members (on all nodes, as the engine counts
 * them) get join/leave pushes; bigger ones get a coalesced count push at
 * most once per COUNT_INTERVAL_MS.
 */
#include "chat_int.h"
#include "hub/flow.h"
#include "hub/engine.h"
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
        if (ev->reply_to > 0)
            hub_jsonw_kuint(&b, "reply_to", ev->reply_to);
        chat_jw_mentions(&b, ev->mentions);
        break;
    case EV_EDITED:
        hub_jsonw_kstr(&b, "t", "edited", 6);
        hub_jsonw_kstr(&b, "room", room, room_len);
        hub_jsonw_kuint(&b, "offset", ev->offset);
        hub_jsonw_kstr(&b, "text", ev->text.base, ev->text.len);
        hub_jsonw_kint(&b, "edited_ts", ev->edited_ts);
        break;
    case EV_DELETED:
        hub_jsonw_kstr(&b, "t", "deleted", 7);
        hub_jsonw_kstr(&b, "room", room, room_len);
        hub_jsonw_kuint(&b, "offset", ev->offset);
        break;
    case EV_REACTION:
        hub_jsonw_kstr(&b, "t", "reaction", 8);
        hub_jsonw_kstr(&b, "room", room, room_len);
        hub_jsonw_kuint(&b, "offset", ev->offset);
        hub_jsonw_kstr(&b, "emoji", ev->emoji.base, ev->emoji.len);
        hub_jsonw_kstr(&b, "nick", ev->nick.base, ev->nick.len);
        hub_jsonw_kuint(&b, "count", ev->count);
        hub_jsonw_kbool(&b, "on", ev->on);
        break;
    case EV_TOPIC:
        hub_jsonw_kstr(&b, "t", "topic", 5);
        hub_jsonw_kstr(&b, "room", room, room_len);
        hub_jsonw_kstr(&b, "topic", ev->text.base, ev->text.len);
        hub_jsonw_kstr(&b, "by", ev->nick.base, ev->nick.len);
        break;
    case EV_JOIN:
    case EV_LEAVE:
        hub_jsonw_kstr(&b, "t", ev->kind == EV_JOIN ? "join" : "leave",
                       ev->kind == EV_JOIN ? 4 : 5);
        hub_jsonw_kstr(&b, "room", room, room_len);
        hub_jsonw_kstr(&b, "nick", ev->nick.base, ev->nick.len);
        hub_jsonw_kstr(&b, "client", ev->client.base, ev->client.len);
        break;
    case EV_TYPING:
        hub_jsonw_kstr(&b, "t", "typing", 6);
        hub_jsonw_kstr(&b, "room", room, room_len);
        hub_jsonw_kstr(&b, "nick", ev->nick.base, ev->nick.len);
        hub_jsonw_kint(&b, "ttl", TYPING_TTL_MS);
        break;
    case EV_NICK:
        hub_jsonw_kstr(&b, "t", "nick", 4);
        hub_jsonw_kstr(&b, "room", room, room_len);
        hub_jsonw_kstr(&b, "old", ev->old_nick.base, ev->old_nick.len);
        hub_jsonw_kstr(&b, "new", ev->nick.base, ev->nick.len);
        break;
    case EV_COUNT:
        hub_jsonw_kstr(&b, "t", "count", 5);
        hub_jsonw_kstr(&b, "room", room, room_len);
        hub_jsonw_kint(&b, "members", (long long)ev->members);
        break;
    case EV_GAP:
        hub_jsonw_kstr(&b, "t", "gap", 3);
        hub_jsonw_kstr(&b, "room", room, room_len);
        hub_jsonw_kstr(&b, "epoch", ev->epoch.base, ev->epoch.len);
        hub_jsonw_kstr(&b, "reason", "epoch", 5);
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
    if (ev->skip != 0 && cl->id == ev->skip && (ev->kind != EV_MSG || cl->mode == HUB_CHAT_JSON))
        return; /* the actor itself (a JSON sender gets its ack instead) */
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

void chat_broadcast(struct hub_room_event *ev)
{
    hub_room_broadcast(ev->room, ev, NULL);
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

static void push_count(struct hub_chat *chat, struct hub_room *room, struct count_entry *e,
                       uint64_t skip)
{
    struct hub_room_event ev = {.kind = EV_COUNT, .room = room, .skip = skip};
    ev.members = e->members;
    chat_broadcast(&ev);
    e->last_push = chat_now(chat);
    e->dirty = 0;
}

/* A big room's membership changed (members on all nodes now): push its
 * count now, or mark it for the tick if one went out less than
 * COUNT_INTERVAL_MS ago. skip: a local leaver that must not get it. */
static void count_changed(struct hub_chat *chat, struct hub_room *room, uint64_t members,
                          uint64_t skip)
{
    struct count_entry *e = count_entry(chat, room, 1);
    if (e == NULL)
        return;
    e->members = members;
    if (chat_now(chat) - e->last_push >= COUNT_INTERVAL_MS)
        push_count(chat, room, e, skip);
    else
        e->dirty = 1;
}

void chat_remove_member(struct hub_chat_client *who, struct hub_room *room)
{
    struct hub_chat *chat = who->chat;
    /* rooms.h lends the room only until the leave: keep its name. */
    char name[HUB_ROOM_NAME_MAX + 1];
    size_t len = hub_room_name_len(room);
    memcpy(name, hub_room_name(room), len + 1);
    struct hub_iov v = {name, len};
    size_t n = hub_room_size(room);
    char id[CHAT_ID_MAX];
    struct hub_iov cid = {id, chat_client_id(who, id)};
    /* The memory engine tells the others from inside the call, while who is
     * still a member here: the pushes skip it (on_presence). A failure
     * (the broker is unreachable) leaves the entry to the node lease. */
    if (hub_engine_leave(chat->engine, v, cid) != 0)
        hub_log_debug("engine: could not record a leave from %s", name);
    hub_rooms_leave(chat->rooms, &who->member, room);
    if (n == 1) {
        /* The last local member left: no more events for the room here,
         * and the store may evict it again. */
        hub_engine_unsubscribe(chat->engine, v);
        if (chat->cfg.history != NULL)
            hub_history_hold(chat->cfg.history, v, 0);
    }
}

/* ---- the engine's upcalls -------------------------------------------- */

void chat_on_presence(void *data, const struct hub_engine_presence *p)
{
    struct hub_chat *chat = data;
    struct hub_room *room = hub_rooms_find(chat->rooms, p->room.base, p->room.len);
    if (room == NULL)
        return; /* nobody here to tell */
    struct hub_room_event ev = {.room = room};
    ev.skip = chat_local_id(chat, p->client);
    ev.nick = p->nick;
    ev.client = p->client;
    switch (p->kind) {
    case HUB_ENGINE_JOIN:
        if (chat->dm_waits != NULL && p->room.len > 0 && p->room.base[0] == '@')
            chat_dm_peer_joined(chat, p->room, p->nick);
        if (p->members > HUB_CHAT_LIST_MAX) {
            count_changed(chat, room, p->members, 0);
            return;
        }
        ev.kind = EV_JOIN;
        break;
    case HUB_ENGINE_LEAVE:
        /* Sizes before the leave: a leave push while it was small, a count
         * (taken after the leave, which the leaver does not get) when big. */
        if (p->members + 1 > HUB_CHAT_LIST_MAX) {
            count_changed(chat, room, p->members, ev.skip);
            return;
        }
        if (p->members == 0)
            return;
        ev.kind = EV_LEAVE;
        break;
    case HUB_ENGINE_NICK:
        ev.kind = EV_NICK;
        ev.old_nick = p->old_nick;
        break;
    default:
        return;
    }
    chat_broadcast(&ev);
}

void chat_on_typing(void *data, struct hub_iov room, struct hub_iov client, struct hub_iov nick)
{
    struct hub_chat *chat = data;
    struct hub_room *r = hub_rooms_find(chat->rooms, room.base, room.len);
    if (r == NULL)
        return;
    struct hub_room_event ev = {.kind = EV_TYPING, .room = r};
    ev.skip = chat_local_id(chat, client);
    ev.nick = nick;
    chat_broadcast(&ev);
}

/* The room's history was lost in the store: every position its members hold
 * is void. They get a gap push with reason "epoch" (before the first
 * message of the new epoch), and reconciliation by offset restarts. */
void chat_on_epoch(void *data, struct hub_iov room, struct hub_iov epoch)
{
    struct hub_chat *chat = data;
    struct hub_room *r = hub_rooms_find(chat->rooms, room.base, room.len);
    if (r == NULL)
        return;
    size_t n = hub_room_size(r);
    for (size_t i = 0; i < n; i++) {
        struct hub_chat_client *cl =
            HUB_CONTAINER_OF(hub_room_member(r, i), struct hub_chat_client, member);
        struct chat_sub *s = chat_sub_find(cl, r);
        if (s != NULL)
            s->delivered_upto = 0; /* old offsets mean nothing in the new epoch */
    }
    struct hub_room_event ev = {.kind = EV_GAP, .room = r};
    ev.epoch = epoch;
    chat_broadcast(&ev);
}

void hub_chat_tick(struct hub_chat *chat)
{
    int64_t now = chat_now(chat);
    if (chat->dm_waits != NULL)
        chat_dm_tick(chat, now, 0);
    if (chat->users != NULL)
        chat_expire_users(chat);
    for (size_t i = 0; i < chat->ncounts;) {
        struct count_entry *e = &chat->counts[i];
        struct hub_room *room = hub_rooms_find(chat->rooms, e->name, strlen(e->name));
        if (room == NULL || e->members <= HUB_CHAT_LIST_MAX) {
            /* Gone or small again: per-member pushes take over. */
            if (room != NULL && e->dirty)
                push_count(chat, room, e, 0);
            chat->counts[i] = chat->counts[--chat->ncounts];
            continue;
        }
        if (e->dirty && now - e->last_push >= COUNT_INTERVAL_MS)
            push_count(chat, room, e, 0);
        i++;
    }
}
