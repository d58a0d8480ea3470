/*
 * hmap.h: an intrusive chained hash table, header-only (in the manner of
 * libuv's queue.h).
 *
 * The owner embeds a struct hub_hnode in each of its entries and keeps the
 * key itself; the table stores only the node, its cached hash and the chain
 * link, and never allocates or frees an entry. Lookups take the caller's
 * hash of the key and the caller's equality test, so one table type serves
 * names compared exactly (rooms, streams) and nicks compared without case.
 * HUB_CONTAINER_OF turns a node back into its entry.
 *
 * Invariants:
 * - nbuckets is a power of two; a node sits in chain hash & (nbuckets - 1).
 * - The table doubles when an insert would take the load past 1. A failed
 *   doubling keeps the longer chains, which is slower but still correct, so
 *   an insert never fails. The table never shrinks.
 * - A node is in at most one table at a time; the table never reads the
 *   entry around it except through the caller's equality test.
 */
#ifndef HUB_HMAP_H
#define HUB_HMAP_H

#include "hub/common.h"

#include <stdlib.h>

/* Embedded in each entry. Zero-initialising it is enough; insert sets it. */
struct hub_hnode {
    struct hub_hnode *next; /* chain link */
    uint64_t hash;          /* the entry's hash, cached by insert */
};

/* The table. Embed it or allocate it; hub_hmap_init sets it up. */
struct hub_hmap {
    struct hub_hnode **buckets; /* chains, owned */
    size_t nbuckets;            /* a power of two */
    size_t count;               /* nodes in the table */
};

/* Tells whether node's entry has the key (key, len), whatever the caller
 * means by that (bytes, case-folded text). */
typedef int (*hub_hmap_eq_fn)(const struct hub_hnode *node, const void *key, size_t len);

/* Sets up an empty table with nbuckets chains (rounded up to a power of two,
 * at least 1). Returns 0 or HUB_ENOMEM. */
static inline int hub_hmap_init(struct hub_hmap *m, size_t nbuckets)
{
    size_t n = 1;
    while (n < nbuckets)
        n *= 2;
    m->count = 0;
    m->buckets = calloc(n, sizeof(*m->buckets));
    m->nbuckets = m->buckets != NULL ? n : 0;
    return m->buckets != NULL ? 0 : HUB_ENOMEM;
}

/* Frees the bucket array. The entries are the caller's: remove or free them
 * first (or let them go with the table, if nothing else points at them). */
static inline void hub_hmap_destroy(struct hub_hmap *m)
{
    free(m->buckets);
    m->buckets = NULL;
    m->nbuckets = 0;
    m->count = 0;
}

/* Bytes the table itself holds (the bucket array), for memory accounting. */
static inline size_t hub_hmap_bytes(const struct hub_hmap *m)
{
    return m->nbuckets * sizeof(*m->buckets);
}

/* Returns the node whose cached hash is hash and for which eq(node, key, len)
 * holds, or NULL. key is borrowed for the call. */
static inline struct hub_hnode *hub_hmap_find(const struct hub_hmap *m, uint64_t hash,
                                              const void *key, size_t len, hub_hmap_eq_fn eq)
{
    for (struct hub_hnode *n = m->buckets[hash & (m->nbuckets - 1)]; n != NULL; n = n->next)
        if (n->hash == hash && eq(n, key, len))
            return n;
    return NULL;
}

/* Doubles the bucket array; on allocation failure keeps the old one. */
static inline void hub_hmap_grow_(struct hub_hmap *m)
{
    size_t n = m->nbuckets * 2;
    struct hub_hnode **b = calloc(n, sizeof(*b));
    if (b == NULL)
        return;
    for (size_t i = 0; i < m->nbuckets; i++)
        for (struct hub_hnode *e = m->buckets[i], *next; e != NULL; e = next) {
            next = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
        }
    free(m->buckets);
    m->buckets = b;
    m->nbuckets = n;
}

/* Adds node under hash. The caller has made sure no equal key is present
 * (find first) and that node is in no table. Never fails. */
static inline void hub_hmap_insert(struct hub_hmap *m, struct hub_hnode *node, uint64_t hash)
{
    if (m->count >= m->nbuckets)
        hub_hmap_grow_(m);
    struct hub_hnode **head = &m->buckets[hash & (m->nbuckets - 1)];
    node->hash = hash;
    node->next = *head;
    *head = node;
    m->count++;
}

/* Takes node out of the table. Returns 0, or HUB_ENOENT (and changes
 * nothing) if node is not in this table. */
static inline int hub_hmap_remove(struct hub_hmap *m, struct hub_hnode *node)
{
    struct hub_hnode **pp = &m->buckets[node->hash & (m->nbuckets - 1)];
    while (*pp != NULL && *pp != node)
        pp = &(*pp)->next;
    if (*pp == NULL)
        return HUB_ENOENT;
    *pp = node->next;
    node->next = NULL;
    m->count--;
    return 0;
}

/* Visits every node, in no particular order: for (size_t i = 0; ...) over
 * chains. The body must not insert or remove (use hub_hmap_pop to empty a
 * table); `break` leaves only the inner loop. */
#define HUB_HMAP_FOREACH(node, m)                                                                  \
    for (size_t hub_hmap_i_ = 0; hub_hmap_i_ < (m)->nbuckets; hub_hmap_i_++)                       \
        for ((node) = (m)->buckets[hub_hmap_i_]; (node) != NULL; (node) = (node)->next)

/* Removes and returns some node, or NULL when the table is empty: for
 * tearing a table down. */
static inline struct hub_hnode *hub_hmap_pop(struct hub_hmap *m)
{
    for (size_t i = 0; i < m->nbuckets && m->count > 0; i++)
        if (m->buckets[i] != NULL) {
            struct hub_hnode *n = m->buckets[i];
            m->buckets[i] = n->next;
            n->next = NULL;
            m->count--;
            return n;
        }
    return NULL;
}

#endif
