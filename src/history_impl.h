/*
 * history_impl.h: what a history store implements (internal to the history
 * module: history.c dispatches, history.c and history_sqlite.c implement).
 */
#ifndef HUB_HISTORY_IMPL_H
#define HUB_HISTORY_IMPL_H

#include "hub/history.h"

struct history_ops {
    int (*append)(struct hub_history *h, struct hub_iov room, struct hub_iov from,
                  struct hub_iov text, struct hub_iov cmid, int64_t ts, hub_history_append_cb cb,
                  void *data);
    int (*read)(struct hub_history *h, struct hub_iov room, int dir, uint64_t pos, unsigned limit,
                hub_history_read_cb cb, void *data);
    int (*barrier)(struct hub_history *h, hub_history_barrier_cb cb, void *data);
    void (*close)(struct hub_history *h, hub_history_closed_cb cb, void *data);
    void (*free)(struct hub_history *h);
    int (*hold)(struct hub_history *h, struct hub_iov room, int held);         /* NULL: no-op */
    void (*stats)(const struct hub_history *h, struct hub_history_stats *out); /* NULL: zeros */
};

/* The configured clock, or the system's. */
int64_t history_now_ms(const struct hub_history_config *cfg);

/* Writes a fresh random epoch (HUB_HISTORY_EPOCH_LEN hex digits and a NUL),
 * for a stream whose earlier history, if any, is gone. */
void history_new_epoch(char out[HUB_HISTORY_EPOCH_LEN + 1]);

/* Every store starts with this header. */
struct hub_history {
    const struct history_ops *ops; /* the implementation */
};

#endif
