/*
 * rooms.h: the room registry and its two-way membership index.
 *
 * A room is a named set of members; a member is a struct room_member that
 * the layer above embeds in its own per-client state (the chat layer does).
 * Rooms never see sockets, frames or protocols: a broadcast hands the same
 * event to each member's deliver callback, and the member decides how to put
 * it on the wire. The event type is opaque here and defined by the layer that
 * broadcasts.
 *
 * Invariants:
 * - Membership is recorded on both sides (room -> members, member -> rooms),
 *   so a join, a leave and a leave-all are O(rooms of that member).
 * - A room exists exactly while it has members: the first join creates it
 *   and the last leave frees it. Per-room state that must outlive membership
 *   (history, offsets) lives elsewhere, keyed by name.
 * - Nobody joins or leaves a room while it is being broadcast to (asserted).
 *   Deliver callbacks that want a member gone mark it and let the close path
 *   leave later.
 */
#ifndef HUB_ROOMS_H
#define HUB_ROOMS_H

#include "hub/common.h"

struct hub_rooms;
struct hub_room;
struct hub_room_event; /* defined by the broadcaster; rooms only pass it on */
struct room_member;

#define HUB_ROOM_NAME_MAX 255

/* Hands ev to member m, a member of room. Must not join or leave rooms. */
typedef void (*hub_room_deliver_cb)(struct room_member *m, struct hub_room *room,
                                    struct hub_room_event *ev);

/* One room a member is in, and where the member sits in that room's array. */
struct room_membership {
    struct hub_room *room; /* the room */
    uint32_t index;        /* position of the member in room's member array */
};

/* Embedded by the member's owner. Zero-initialise, then set deliver. The
 * first membership lives inside the struct (rooms then points at one), so a
 * member of a single room, which is what nearly every connection is, holds
 * no heap block for it; a second join moves the list to the heap. A member
 * must therefore stay where it is in memory while it is in any room. */
struct room_member {
    hub_room_deliver_cb deliver;   /* required */
    struct room_membership *rooms; /* &one, an owned array, or NULL (cap 0) */
    uint32_t nrooms;               /* rooms joined */
    uint32_t cap;                  /* capacity of rooms */
    struct room_membership one;    /* the list while cap is 1 */
};

/* Creates an empty registry; each member may be in at most max_rooms_per_member
 * rooms. Returns 0 or HUB_ENOMEM. */
int hub_rooms_new(struct hub_rooms **out, uint32_t max_rooms_per_member);

/* Frees the registry. Every member must have left every room. */
void hub_rooms_free(struct hub_rooms *r);

/* Looks a room up by name (borrowed). Returns NULL if it has no members. */
struct hub_room *hub_rooms_find(const struct hub_rooms *r, const char *name, size_t len);

/* Adds m to the room called name (copied; 1..HUB_ROOM_NAME_MAX bytes), creating
 * it if needed. Returns 0; HUB_EEXIST if m is already in it; HUB_ELIMIT if m is
 * in max_rooms_per_member rooms; HUB_EINVAL for a bad name length; HUB_ENOMEM.
 * *room_out (may be NULL) receives the room, borrowed. */
int hub_rooms_join(struct hub_rooms *r, struct room_member *m, const char *name, size_t len,
                   struct hub_room **room_out);

/* Removes m from room; frees the room if it became empty. Returns 0 or
 * HUB_ENOENT if m was not in it. room must not be used after it returns. */
int hub_rooms_leave(struct hub_rooms *r, struct room_member *m, struct hub_room *room);

/* Removes m from every room it is in and frees its membership array (used
 * when a client disconnects). */
void hub_rooms_leave_all(struct hub_rooms *r, struct room_member *m);

/* Returns 1 if m is in room. */
int hub_rooms_is_member(const struct room_member *m, const struct hub_room *room);

/* Calls every member's deliver with ev, except `except` (may be NULL).
 * Returns the number of deliveries. */
size_t hub_room_broadcast(struct hub_room *room, struct hub_room_event *ev,
                          struct room_member *except);

/* The room's name (NUL-terminated, owned by the room). */
const char *hub_room_name(const struct hub_room *room);
size_t hub_room_name_len(const struct hub_room *room);

/* Number of members. */
size_t hub_room_size(const struct hub_room *room);

/* The i-th member (i < size), in no particular order. Borrowed. */
struct room_member *hub_room_member(const struct hub_room *room, size_t i);

/* Number of rooms that have members. */
size_t hub_rooms_count(const struct hub_rooms *r);

/* Visits every room (order unspecified); fn must not join or leave. */
void hub_rooms_foreach(const struct hub_rooms *r, void (*fn)(struct hub_room *room, void *arg),
                       void *arg);

#endif
