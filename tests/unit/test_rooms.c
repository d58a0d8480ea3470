/*
 * test_rooms.c: the registry with fake members: join, leave, leave-all on
 * disconnect, empty rooms reclaimed, broadcast reaching exactly the members.
 */
#include "check.h"
#include "hub/rooms.h"

#include <stdio.h>

struct fake {
    struct room_member member;   /* embedded, as the chat layer does */
    int got;                     /* deliveries received */
    struct hub_room_event *last; /* last event seen */
};

static void fake_deliver(struct room_member *m, struct hub_room *room, struct hub_room_event *ev)
{
    struct fake *f = HUB_CONTAINER_OF(m, struct fake, member);
    f->got++;
    f->last = ev;
}

/* Checks that every membership record points at the member's real slot. */
static int consistent(struct fake *fs, int n)
{
    for (int i = 0; i < n; i++) {
        struct room_member *m = &fs[i].member;
        for (uint32_t k = 0; k < m->nrooms; k++)
            if (hub_room_member(m->rooms[k].room, m->rooms[k].index) != m)
                return 0;
    }
    return 1;
}

static void count_room(struct hub_room *room, void *arg)
{
    CHECK(hub_room_size(room) > 0);
    ++*(size_t *)arg;
}

int main(void)
{
    struct hub_rooms *r;
    CHECK_EQ(hub_rooms_new(&r, 3), 0);
    struct fake fs[50];
    memset(fs, 0, sizeof(fs));
    for (int i = 0; i < 50; i++)
        fs[i].member.deliver = fake_deliver;

    struct hub_room *lobby = NULL, *other = NULL;
    CHECK_EQ(hub_rooms_join(r, &fs[0].member, "lobby", 5, &lobby), 0);
    CHECK(lobby != NULL);
    CHECK_STR(hub_room_name(lobby), "lobby");
    CHECK_EQ(hub_rooms_join(r, &fs[0].member, "lobby", 5, NULL), HUB_EEXIST);
    CHECK_EQ(hub_rooms_join(r, &fs[0].member, "", 0, NULL), HUB_EINVAL);
    for (int i = 1; i < 50; i++)
        CHECK_EQ(hub_rooms_join(r, &fs[i].member, "lobby", 5, NULL), 0);
    CHECK_EQ(hub_room_size(lobby), 50);
    CHECK(hub_rooms_find(r, "lobby", 5) == lobby);
    CHECK(hub_rooms_find(r, "lobb", 4) == NULL);

    /* Rooms per member are limited. */
    CHECK_EQ(hub_rooms_join(r, &fs[0].member, "a", 1, &other), 0);
    CHECK_EQ(hub_rooms_join(r, &fs[0].member, "b", 1, NULL), 0);
    CHECK_EQ(hub_rooms_join(r, &fs[0].member, "c", 1, NULL), HUB_ELIMIT);
    CHECK_EQ(hub_rooms_join(r, &fs[1].member, "a", 1, NULL), 0);
    CHECK_EQ(hub_rooms_count(r), 3);

    /* One room lives inside the member; a second join moves the list to
     * the heap with the first membership intact. */
    CHECK(fs[2].member.rooms == &fs[2].member.one);
    CHECK_EQ(fs[2].member.cap, 1);
    CHECK(fs[0].member.rooms != &fs[0].member.one);
    CHECK(fs[0].member.rooms[0].room == lobby);
    CHECK(fs[1].member.rooms[0].room == lobby);
    CHECK(fs[1].member.rooms[1].room == other);
    CHECK(consistent(fs, 50));

    /* Broadcast reaches every member once, except the excluded one. */
    struct hub_room_event *ev = (struct hub_room_event *)&fs; /* any token pointer */
    CHECK_EQ(hub_room_broadcast(lobby, ev, &fs[7].member), 49);
    int total = 0;
    for (int i = 0; i < 50; i++)
        total += fs[i].got;
    CHECK_EQ(total, 49);
    CHECK_EQ(fs[7].got, 0);
    CHECK(fs[8].last == ev);
    CHECK_EQ(hub_room_broadcast(other, ev, NULL), 2);

    /* Leaving from the middle keeps the index consistent. */
    for (int i = 10; i < 40; i += 3)
        CHECK_EQ(hub_rooms_leave(r, &fs[i].member, lobby), 0);
    CHECK_EQ(hub_room_size(lobby), 40);
    CHECK(consistent(fs, 50));
    CHECK_EQ(hub_rooms_leave(r, &fs[10].member, lobby), HUB_ENOENT);
    CHECK(!hub_rooms_is_member(&fs[10].member, lobby));
    CHECK(hub_rooms_is_member(&fs[11].member, lobby));

    /* Leave-all on disconnect: fs[0] was in three rooms; "b" had only it. */
    hub_rooms_leave_all(r, &fs[0].member);
    CHECK_EQ(fs[0].member.nrooms, 0);
    CHECK(fs[0].member.rooms == NULL);
    CHECK(hub_rooms_find(r, "b", 1) == NULL);
    CHECK_EQ(hub_room_size(other), 1);
    CHECK(consistent(fs, 50));

    /* Many rooms: the table grows and every room stays findable. */
    struct fake many[300];
    memset(many, 0, sizeof(many));
    char name[16];
    for (int i = 0; i < 300; i++) {
        many[i].member.deliver = fake_deliver;
        snprintf(name, sizeof(name), "room-%d", i);
        CHECK_EQ(hub_rooms_join(r, &many[i].member, name, strlen(name), NULL), 0);
    }
    CHECK_EQ(hub_rooms_count(r), 302);
    for (int i = 0; i < 300; i++) {
        snprintf(name, sizeof(name), "room-%d", i);
        struct hub_room *room = hub_rooms_find(r, name, strlen(name));
        CHECK(room != NULL && hub_room_size(room) == 1);
    }
    size_t visited = 0;
    hub_rooms_foreach(r, count_room, &visited);
    CHECK_EQ(visited, 302);
    for (int i = 0; i < 300; i++)
        hub_rooms_leave_all(r, &many[i].member);

    /* Everyone leaves: every room is reclaimed. */
    for (int i = 0; i < 50; i++)
        hub_rooms_leave_all(r, &fs[i].member);
    CHECK_EQ(hub_rooms_count(r), 0);
    CHECK(hub_rooms_find(r, "lobby", 5) == NULL);
    hub_rooms_free(r);
    return CHECK_DONE();
}
