/*
 * lru.h: an intrusive recency list, header-only (in the manner of libuv's
 * queue.h).
 *
 * A circular doubly linked list with a sentinel: the owner embeds a struct
 * hub_lru_node in each entry, touches an entry when it is used, and takes
 * the least recently used one from the back when something must go. Every
 * operation is O(1) and none allocates. HUB_CONTAINER_OF turns a node back
 * into its entry.
 *
 * Invariants: the sentinel links to itself when the list is empty; a node is
 * linked into at most one list, and an unlinked node (hub_lru_node_init, or
 * after hub_lru_remove) points at itself, so removing it twice is harmless.
 */
#ifndef HUB_LRU_H
#define HUB_LRU_H

#include "hub/common.h"

/* Embedded in each entry; also the list's sentinel. Set up with
 * hub_lru_node_init (zeroed memory is not an unlinked node). */
struct hub_lru_node {
    struct hub_lru_node *prev; /* towards the most recently used */
    struct hub_lru_node *next; /* towards the least recently used */
};

/* A list: its sentinel. Front = most recently used, back = least. */
struct hub_lru {
    struct hub_lru_node head; /* sentinel; head.next is the front */
    size_t count;             /* nodes linked */
};

static inline void hub_lru_init(struct hub_lru *l)
{
    l->head.prev = l->head.next = &l->head;
    l->count = 0;
}

/* Marks a node as linked nowhere. */
static inline void hub_lru_node_init(struct hub_lru_node *n)
{
    n->prev = n->next = n;
}

static inline int hub_lru_empty(const struct hub_lru *l)
{
    return l->head.next == &l->head;
}

/* Returns 1 if n is linked into some list. */
static inline int hub_lru_linked(const struct hub_lru_node *n)
{
    return n->next != n;
}

/* Unlinks n from l (n must be in l, or unlinked: then nothing happens). */
static inline void hub_lru_remove(struct hub_lru *l, struct hub_lru_node *n)
{
    if (!hub_lru_linked(n))
        return;
    n->prev->next = n->next;
    n->next->prev = n->prev;
    hub_lru_node_init(n);
    l->count--;
}

/* Links an unlinked n at the front (the most recently used end). */
static inline void hub_lru_push_front(struct hub_lru *l, struct hub_lru_node *n)
{
    n->next = l->head.next;
    n->prev = &l->head;
    l->head.next->prev = n;
    l->head.next = n;
    l->count++;
}

/* Moves n, linked into l or unlinked, to the front of l. */
static inline void hub_lru_touch(struct hub_lru *l, struct hub_lru_node *n)
{
    hub_lru_remove(l, n);
    hub_lru_push_front(l, n);
}

/* The least recently used node, or NULL when l is empty. */
static inline struct hub_lru_node *hub_lru_back(const struct hub_lru *l)
{
    return hub_lru_empty(l) ? NULL : l->head.prev;
}

/* The node used just before n (towards the back), or NULL at the back. */
static inline struct hub_lru_node *hub_lru_older(const struct hub_lru *l,
                                                 const struct hub_lru_node *n)
{
    return n->next == &l->head ? NULL : n->next;
}

/* The most recently used node, or NULL when l is empty. */
static inline struct hub_lru_node *hub_lru_front(const struct hub_lru *l)
{
    return hub_lru_empty(l) ? NULL : l->head.next;
}

#endif
