/*
 * engine_impl.h: what an engine implements, and helpers the engines share
 * (internal to the engine module: engine.c dispatches and validates,
 * engine_memory.c and engine_redis.c implement).
 */
#ifndef HUB_ENGINE_IMPL_H
#define HUB_ENGINE_IMPL_H

#include "hub/engine.h"

struct engine_ops {
    void (*close)(struct hub_engine *e, void (*cb)(void *data), void *data);
    void (*free)(struct hub_engine *e);
    int (*subscribe)(struct hub_engine *e, struct hub_iov room);
    void (*unsubscribe)(struct hub_engine *e, struct hub_iov room);
    int (*publish)(struct hub_engine *e, const struct hub_engine_pub *p, hub_engine_publish_cb cb,
                   void *data);
    int (*read)(struct hub_engine *e, struct hub_iov room, int dir, uint64_t pos, unsigned limit,
                hub_history_read_cb cb, void *data);
    int (*join)(struct hub_engine *e, struct hub_iov room, struct hub_iov client,
                struct hub_iov nick);
    int (*leave)(struct hub_engine *e, struct hub_iov room, struct hub_iov client);
    int (*renick)(struct hub_engine *e, struct hub_iov room, struct hub_iov client,
                  struct hub_iov old_nick, struct hub_iov nick);
    int (*members)(struct hub_engine *e, struct hub_iov room, unsigned limit,
                   hub_engine_members_cb cb, void *data);
    int (*rooms)(struct hub_engine *e, unsigned limit, hub_engine_rooms_cb cb, void *data);
    int (*claim_nick)(struct hub_engine *e, struct hub_iov nick, struct hub_iov client,
                      hub_engine_done_cb cb, void *data);
    void (*release_nick)(struct hub_engine *e, struct hub_iov nick, struct hub_iov client);
    int (*typing)(struct hub_engine *e, struct hub_iov room, struct hub_iov client,
                  struct hub_iov nick);
    int (*invite)(struct hub_engine *e, struct hub_iov to_nick, struct hub_iov room,
                  struct hub_iov from, hub_engine_done_cb cb, void *data);
    void (*stats)(struct hub_engine *e, struct hub_engine_stats *st);
    /* Issue 13 and 15. engine.c has checked the arguments (see its checks);
     * an engine that lacks one of these leaves it NULL and the call returns
     * HUB_EINVAL (a stopgap until every engine has them). */
    int (*query)(struct hub_engine *e, struct hub_iov room, const struct hub_history_query *q,
                 hub_history_read_cb cb, void *data);
    int (*amend)(struct hub_engine *e, const struct hub_history_amend *a, struct hub_iov nick,
                 hub_engine_amend_cb cb, void *data);
    int (*search)(struct hub_engine *e, struct hub_iov room, struct hub_iov q, uint64_t before,
                  unsigned limit, hub_history_search_cb cb, void *data);
    int (*set_restriction)(struct hub_engine *e, const struct hub_history_restrict *r,
                           hub_engine_done_cb cb, void *data);
    int (*set_topic)(struct hub_engine *e, struct hub_iov room, struct hub_iov topic,
                     hub_engine_done_cb cb, void *data);
    int (*control)(struct hub_engine *e, const struct hub_engine_control *c);
};

/* Bounds engine.c checks for the calls above (both engines may rely on them). */
#define ENGINE_KEY_MAX 520         /* author/actor keys: "u:<sub>", "n:<claim key>", "g:<id>" */
#define ENGINE_TEXT_MAX (1u << 20) /* message text, edit text, control text, in bytes */
#define ENGINE_REASON_MAX 1024     /* restriction reasons and "by" */
#define ENGINE_QUERY_MAX 200       /* search query bytes */

/* Every engine starts with this header. */
struct hub_engine {
    const struct engine_ops *ops;             /* the implementation */
    struct hub_engine_events ev;              /* upcalls, copied */
    void *data;                               /* for the upcalls */
    int closing;                              /* hub_engine_close was called */
    int state;                                /* enum hub_engine_state */
    char node_id[HUB_ENGINE_NODE_ID_MAX + 1]; /* NUL-terminated */
};

/* Sets up the header. */
void engine_init(struct hub_engine *e, const struct engine_ops *ops,
                 const struct hub_engine_events *ev, void *data);

/* ---- a chained hash table of intrusive nodes keyed by bytes ---------- */

struct engine_map_node {
    struct engine_map_node *next; /* chain */
    uint64_t hash;                /* of the key */
    const char *key;              /* owned by the node's owner */
    size_t klen;                  /* key length */
};

struct engine_map {
    struct engine_map_node **buckets; /* chains, owned */
    size_t nbuckets;                  /* power of two (0 until the first insert) */
    size_t n;                         /* nodes held */
};

/* Finds the node with key k (hash h). */
struct engine_map_node *engine_map_find(const struct engine_map *m, const char *k, size_t len,
                                        uint64_t h);
/* Adds n (key, klen and hash set; not already present). Returns 0 or HUB_ENOMEM. */
int engine_map_insert(struct engine_map *m, struct engine_map_node *n);
/* Removes n (which must be in m). */
void engine_map_remove(struct engine_map *m, struct engine_map_node *n);
/* Frees the bucket array (the nodes are the caller's). */
void engine_map_free(struct engine_map *m);

/* Copies v into a fresh NUL-terminated string (NULL on ENOMEM). */
char *engine_strdup(struct hub_iov v);

/* Writes the ASCII-folded copy of nick into out (nick.len + 1 bytes). */
void engine_fold(struct hub_iov nick, char *out);

/* A consistent hash of room into [0, n): Lamping and Veach's jump hash over
 * hub_hash, so adding a shard moves only 1/(n+1) of the rooms. */
uint32_t engine_shard_of(struct hub_iov room, uint32_t n);

/* Writes a fresh random id of len hex digits and a NUL. */
void engine_random_hex(char *out, size_t len);

#endif
