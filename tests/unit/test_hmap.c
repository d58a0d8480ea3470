/*
 * test_hmap.c: the intrusive hash table (hmap.h) and recency list (lru.h).
 *
 * Entries are string-keyed like every user's (rooms, streams, nicks): exact
 * and case-folded comparison, a hash that puts everything in one chain, the
 * doubling, removal in every position of a chain, and teardown by pop. The
 * LRU checks order after touches and removals, and that a node removed
 * twice or never linked leaves the list intact.
 */
#include "check.h"
#include "hub/hmap.h"
#include "hub/lru.h"

#include <stdio.h>
#include <string.h>

struct entry {
    struct hub_hnode node;   /* in the table */
    struct hub_lru_node lru; /* in the list */
    char name[16];           /* the key */
    size_t len;              /* its length */
};

static int eq_exact(const struct hub_hnode *n, const void *key, size_t len)
{
    const struct entry *e = HUB_CONTAINER_OF(n, struct entry, node);
    return e->len == len && memcmp(e->name, key, len) == 0;
}

static int eq_ci(const struct hub_hnode *n, const void *key, size_t len)
{
    const struct entry *e = HUB_CONTAINER_OF(n, struct entry, node);
    return hub_eq_ci(e->name, e->len, key, len);
}

static struct entry *find(struct hub_hmap *m, const char *s, int fold, int one_chain)
{
    size_t len = strlen(s);
    uint64_t h = one_chain ? 42 : hub_hash(s, len, fold);
    struct hub_hnode *n = hub_hmap_find(m, h, s, len, fold ? eq_ci : eq_exact);
    return n != NULL ? HUB_CONTAINER_OF(n, struct entry, node) : NULL;
}

static void test_table(int fold, int one_chain)
{
    enum { N = 300 };
    static struct entry es[N];
    struct hub_hmap m;
    char key[16];

    if (hub_hmap_init(&m, 3) != 0) {
        CHECK(!"hub_hmap_init");
        return;
    }
    CHECK_EQ(m.nbuckets, 4); /* rounded up to a power of two */
    for (int i = 0; i < N; i++) {
        es[i].len = (size_t)snprintf(es[i].name, sizeof(es[i].name), "Room%d", i);
        CHECK(find(&m, es[i].name, fold, one_chain) == NULL);
        hub_hmap_insert(&m, &es[i].node, one_chain ? 42 : hub_hash(es[i].name, es[i].len, fold));
        CHECK_EQ(m.count, (size_t)i + 1);
        CHECK(m.count <= m.nbuckets); /* doubled as the load passed 1 */
    }
    CHECK_EQ(m.nbuckets, 512);
    CHECK_EQ(hub_hmap_bytes(&m), 512 * sizeof(void *));
    for (int i = 0; i < N; i++) {
        CHECK(find(&m, es[i].name, fold, one_chain) == &es[i]);
        snprintf(key, sizeof(key), "ROOM%d", i);
        CHECK(find(&m, key, fold, one_chain) == (fold ? &es[i] : NULL));
    }
    CHECK(find(&m, "Room300", fold, one_chain) == NULL);
    CHECK(find(&m, "Room", fold, one_chain) == NULL);

    /* Every third entry out: heads, middles and tails of chains. */
    for (int i = 0; i < N; i += 3)
        CHECK_EQ(hub_hmap_remove(&m, &es[i].node), 0);
    CHECK_EQ(hub_hmap_remove(&m, &es[0].node), HUB_ENOENT);
    CHECK_EQ(m.count, N - N / 3);
    for (int i = 0; i < N; i++)
        CHECK(find(&m, es[i].name, fold, one_chain) == (i % 3 == 0 ? NULL : &es[i]));

    size_t seen = 0;
    struct hub_hnode *n;
    HUB_HMAP_FOREACH(n, &m)
    {
        struct entry *e = HUB_CONTAINER_OF(n, struct entry, node);
        CHECK((e - es) % 3 != 0);
        seen++;
    }
    CHECK_EQ(seen, m.count);
    while ((n = hub_hmap_pop(&m)) != NULL)
        seen--;
    CHECK_EQ(seen, 0);
    CHECK_EQ(m.count, 0);
    CHECK(find(&m, es[1].name, fold, one_chain) == NULL);
    hub_hmap_destroy(&m);
}

/* Walks l from the front and writes the entries' indexes into out. */
static size_t lru_order(const struct hub_lru *l, const struct entry *base, int *out, size_t max)
{
    size_t k = 0;
    for (struct hub_lru_node *n = hub_lru_front(l); n != NULL && k < max; n = hub_lru_older(l, n))
        out[k++] = (int)(HUB_CONTAINER_OF(n, struct entry, lru) - base);
    return k;
}

static void test_lru(void)
{
    struct entry es[5];
    struct hub_lru l;
    int order[8];

    hub_lru_init(&l);
    CHECK(hub_lru_empty(&l));
    CHECK(hub_lru_back(&l) == NULL);
    CHECK(hub_lru_front(&l) == NULL);
    for (int i = 0; i < 5; i++) {
        hub_lru_node_init(&es[i].lru);
        CHECK(!hub_lru_linked(&es[i].lru));
        hub_lru_push_front(&l, &es[i].lru);
    }
    CHECK_EQ(l.count, 5);
    CHECK_EQ(lru_order(&l, es, order, 8), 5);
    for (int i = 0; i < 5; i++)
        CHECK_EQ(order[i], 4 - i);
    CHECK(hub_lru_back(&l) == &es[0].lru);

    hub_lru_touch(&l, &es[0].lru); /* 0 4 3 2 1 */
    hub_lru_touch(&l, &es[2].lru); /* 2 0 4 3 1 */
    hub_lru_remove(&l, &es[4].lru);
    hub_lru_remove(&l, &es[4].lru); /* twice: harmless */
    CHECK(!hub_lru_linked(&es[4].lru));
    CHECK_EQ(l.count, 4);
    static const int want[] = {2, 0, 3, 1};
    CHECK_EQ(lru_order(&l, es, order, 8), 4);
    for (int i = 0; i < 4; i++)
        CHECK_EQ(order[i], want[i]);
    CHECK(hub_lru_back(&l) == &es[1].lru);
    hub_lru_touch(&l, &es[4].lru); /* an unlinked node is linked at the front */
    CHECK(hub_lru_front(&l) == &es[4].lru);
    CHECK_EQ(l.count, 5);

    /* Emptying from the back, as eviction does. */
    int k = 0;
    for (struct hub_lru_node *n; (n = hub_lru_back(&l)) != NULL; k++)
        hub_lru_remove(&l, n);
    CHECK_EQ(k, 5);
    CHECK(hub_lru_empty(&l));
    CHECK_EQ(l.count, 0);
}

int main(void)
{
    for (int fold = 0; fold <= 1; fold++)
        for (int one_chain = 0; one_chain <= 1; one_chain++)
            test_table(fold, one_chain);
    test_lru();
    return CHECK_DONE();
}
