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
    /* Issue 13 and 15. history.c has checked what does not depend on the
     * store (see history_search_words and hub_history_* there). */
    int (*append_ex)(struct hub_history *h, const struct hub_history_new *m,
                     hub_history_append_cb cb, void *data);
    int (*query)(struct hub_history *h, struct hub_iov room, const struct hub_history_query *q,
                 hub_history_read_cb cb, void *data);
    int (*amend)(struct hub_history *h, const struct hub_history_amend *a, hub_history_amend_cb cb,
                 void *data);
    int (*search)(struct hub_history *h, struct hub_iov room, struct hub_iov q, uint64_t before,
                  unsigned limit, hub_history_search_cb cb, void *data);
    int (*set_restriction)(struct hub_history *h, const struct hub_history_restrict *r,
                           hub_history_done_cb cb, void *data);
    int (*set_topic)(struct hub_history *h, struct hub_iov room, struct hub_iov topic,
                     hub_history_done_cb cb, void *data);
};

/* Search queries (both stores tokenize alike, so they give the same answers).
 * A token is a maximal run of ASCII letters and digits and bytes >= 0x80
 * (the FTS5 unicode61 tokenizer's idea of a word, give or take non-ASCII
 * punctuation), folded to lower case for ASCII. A query is split on white
 * space into at most HISTORY_SEARCH_WORDS words; each word is the phrase of
 * its tokens, the last of them a prefix; every word must match. */
#define HISTORY_SEARCH_WORDS 16
#define HISTORY_SEARCH_BYTES 200
#define HISTORY_SEARCH_LIMIT 1000 /* results one search hands out, at most */

/* 1 if c is part of a token. */
static inline int history_tok_char(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80;
}

struct history_words {
    size_t n;                                  /* words with at least one token */
    struct hub_iov word[HISTORY_SEARCH_WORDS]; /* views into the query */
};

/* Splits q into words (see above); words without a token are skipped.
 * Returns 0, or HUB_EINVAL when q is longer than HISTORY_SEARCH_BYTES or
 * has no word with a token. */
int history_search_words(struct hub_iov q, struct history_words *out);

/* 1 if text matches every word of w (see above). */
int history_search_match(const struct history_words *w, struct hub_iov text);

/* Restriction and reaction keys the stores take, in bytes. */
#define HISTORY_KEY_MAX 1024

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
