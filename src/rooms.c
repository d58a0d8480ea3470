/*
 * rooms.c: a chained hash table of rooms, each with a dense member array.
 *
 * Members sit in a room's array in no particular order so that a leave is a
 * swap with the last member: the moved member's membership record is found
 * by scanning its (short, bounded) list of rooms and its index fixed. The
 * table is an intrusive hub_hmap (hmap.h): it starts with 16 buckets,
 * doubles when the load passes 1 and never shrinks.
 */
#include "hub/rooms.h"
#include "hub/hmap.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

struct hub_room {
    struct hub_hnode node;        /* in hub_rooms.table, keyed by name */
    struct room_member **members; /* owned array of borrowed members */
    uint32_t nmembers;            /* members in the room */
    uint32_t cap;                 /* capacity of members */
    int broadcasting;             /* nonzero while hub_room_broadcast runs */
    size_t name_len;              /* length of name */
    char name[];                  /* NUL-terminated name */
};

struct hub_rooms {
    struct hub_hmap table;   /* rooms by name; the rooms are owned */
    uint32_t max_per_member; /* rooms a member may be in */
};

static uint64_t name_hash(const char *s, size_t len)
{
    /* Names are attacker-chosen, but the table only holds rooms that have
     * members, which the per-connection room limit bounds. */
    return hub_hash(s, len, 0);
}

int hub_rooms_new(struct hub_rooms **out, uint32_t max_rooms_per_member)
{
    struct hub_rooms *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return HUB_ENOMEM;
    if (hub_hmap_init(&r->table, 16) != 0) {
        free(r);
        return HUB_ENOMEM;
    }
    r->max_per_member = max_rooms_per_member;
    *out = r;
    return 0;
}

void hub_rooms_free(struct hub_rooms *r)
{
    if (r == NULL)
        return;
    assert(r->table.count == 0);
    hub_hmap_destroy(&r->table);
    free(r);
}

static int name_eq(const struct hub_hnode *node, const void *key, size_t len)
{
    const struct hub_room *room = HUB_CONTAINER_OF(node, struct hub_room, node);
    return room->name_len == len && memcmp(room->name, key, len) == 0;
}

struct hub_room *hub_rooms_find(const struct hub_rooms *r, const char *name, size_t len)
{
    struct hub_hnode *n = hub_hmap_find(&r->table, name_hash(name, len), name, len, name_eq);
    return n != NULL ? HUB_CONTAINER_OF(n, struct hub_room, node) : NULL;
}

static struct hub_room *room_create(struct hub_rooms *r, const char *name, size_t len)
{
    struct hub_room *room = calloc(1, sizeof(*room) + len + 1);
    if (room == NULL)
        return NULL;
    memcpy(room->name, name, len);
    room->name[len] = '\0';
    room->name_len = len;
    hub_hmap_insert(&r->table, &room->node, name_hash(name, len));
    return room;
}

static void room_destroy(struct hub_rooms *r, struct hub_room *room)
{
    int rc = hub_hmap_remove(&r->table, &room->node);
    assert(rc == 0);
    (void)rc;
    free(room->members);
    free(room);
}

int hub_rooms_is_member(const struct room_member *m, const struct hub_room *room)
{
    for (uint32_t i = 0; i < m->nrooms; i++)
        if (m->rooms[i].room == room)
            return 1;
    return 0;
}

int hub_rooms_join(struct hub_rooms *r, struct room_member *m, const char *name, size_t len,
                   struct hub_room **room_out)
{
    if (len == 0 || len > HUB_ROOM_NAME_MAX)
        return HUB_EINVAL;
    struct hub_room *room = hub_rooms_find(r, name, len);
    if (room != NULL && hub_rooms_is_member(m, room))
        return HUB_EEXIST;
    if (m->nrooms >= r->max_per_member)
        return HUB_ELIMIT;
    /* Make room on the member's side first, so that a failure leaves
     * nothing half-linked. */
    if (m->nrooms == m->cap) {
        if (m->cap == 0) {
            m->rooms = &m->one;
            m->cap = 1;
        } else {
            uint32_t cap = m->cap < 4 ? 4 : m->cap * 2;
            struct room_membership *a = m->rooms == &m->one ? malloc(cap * sizeof(*a))
                                                            : realloc(m->rooms, cap * sizeof(*a));
            if (a == NULL)
                return HUB_ENOMEM;
            if (m->rooms == &m->one)
                a[0] = m->one;
            m->rooms = a;
            m->cap = cap;
        }
    }
    int created = 0;
    if (room == NULL) {
        room = room_create(r, name, len);
        if (room == NULL)
            return HUB_ENOMEM;
        created = 1;
    }
    assert(!room->broadcasting);
    if (room->nmembers == room->cap) {
        uint32_t cap = room->cap ? room->cap * 2 : 4;
        struct room_member **a = realloc(room->members, cap * sizeof(*a));
        if (a == NULL) {
            if (created)
                room_destroy(r, room);
            return HUB_ENOMEM;
        }
        room->members = a;
        room->cap = cap;
    }
    room->members[room->nmembers] = m;
    m->rooms[m->nrooms].room = room;
    m->rooms[m->nrooms].index = room->nmembers;
    room->nmembers++;
    m->nrooms++;
    if (room_out != NULL)
        *room_out = room;
    return 0;
}

/* Unlinks the membership at position k of m's list. */
static void leave_at(struct hub_rooms *r, struct room_member *m, uint32_t k)
{
    struct hub_room *room = m->rooms[k].room;
    uint32_t idx = m->rooms[k].index;
    assert(!room->broadcasting);
    assert(room->members[idx] == m);
    /* Swap the room's last member into the hole and repoint its record. */
    uint32_t last = room->nmembers - 1;
    if (idx != last) {
        struct room_member *moved = room->members[last];
        room->members[idx] = moved;
        for (uint32_t j = 0; j < moved->nrooms; j++)
            if (moved->rooms[j].room == room) {
                moved->rooms[j].index = idx;
                break;
            }
    }
    room->nmembers--;
    m->rooms[k] = m->rooms[m->nrooms - 1];
    m->nrooms--;
    if (room->nmembers == 0)
        room_destroy(r, room);
}

int hub_rooms_leave(struct hub_rooms *r, struct room_member *m, struct hub_room *room)
{
    for (uint32_t k = 0; k < m->nrooms; k++)
        if (m->rooms[k].room == room) {
            leave_at(r, m, k);
            return 0;
        }
    return HUB_ENOENT;
}

void hub_rooms_leave_all(struct hub_rooms *r, struct room_member *m)
{
    while (m->nrooms > 0)
        leave_at(r, m, m->nrooms - 1);
    if (m->rooms != &m->one)
        free(m->rooms);
    m->rooms = NULL;
    m->cap = 0;
}

size_t hub_room_broadcast(struct hub_room *room, struct hub_room_event *ev,
                          struct room_member *except)
{
    size_t n = 0;
    room->broadcasting++;
    for (uint32_t i = 0; i < room->nmembers; i++) {
        struct room_member *m = room->members[i];
        if (m == except)
            continue;
        m->deliver(m, room, ev);
        n++;
    }
    room->broadcasting--;
    return n;
}

const char *hub_room_name(const struct hub_room *room)
{
    return room->name;
}

size_t hub_room_name_len(const struct hub_room *room)
{
    return room->name_len;
}

size_t hub_room_size(const struct hub_room *room)
{
    return room->nmembers;
}

struct room_member *hub_room_member(const struct hub_room *room, size_t i)
{
    assert(i < room->nmembers);
    return room->members[i];
}

size_t hub_rooms_count(const struct hub_rooms *r)
{
    return r->table.count;
}

void hub_rooms_foreach(const struct hub_rooms *r, void (*fn)(struct hub_room *room, void *arg),
                       void *arg)
{
    struct hub_hnode *n;
    HUB_HMAP_FOREACH(n, &r->table)
    {
        fn(HUB_CONTAINER_OF(n, struct hub_room, node), arg);
    }
}
