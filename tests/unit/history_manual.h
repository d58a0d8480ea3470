/*
 * history_manual.h: a history store for tests, whose completions the test
 * releases.
 *
 * Every request (append, read, barrier, close) is queued, its strings
 * copied, and nothing completes until the test calls history_manual_release:
 * then the next requests, in the order they were made, run against an
 * in-memory store (hub_history_open_memory with the same config) and their
 * callbacks fire. Results are therefore real (offsets, dedupe, positions,
 * paging), and a test can stop the store at any point of a sequence of
 * joins, resumes and acks, do something else, and release the rest: every
 * interleaving the SQLite store's asynchrony allows can be produced on
 * purpose. hub_history_hold and hub_history_stats act at once on the backing
 * store, as they do on the real ones.
 *
 * A request runs when it is released, not when it was made, so a read sees
 * exactly the appends made before it (the interface's promise), whatever the
 * test did in between. Callbacks may make new requests (they queue behind the
 * others) and may release more. The store may be freed when no release is
 * running, or from the close callback when that release is not itself
 * running inside another request's callback.
 */
#ifndef HUB_TEST_HISTORY_MANUAL_H
#define HUB_TEST_HISTORY_MANUAL_H

#include "hub/history.h"

/* Opens a manual store backed by a memory store with cfg (copied). Returns
 * 0 or HUB_ENOMEM. Free it with hub_history_free. */
int history_manual_open(struct hub_history **out, const struct hub_history_config *cfg);

/* Requests made and not yet completed (the close request included). */
size_t history_manual_pending(const struct hub_history *h);

/* Completes the next n requests in order (fewer if fewer are queued,
 * counting those that callbacks queue meanwhile). Returns how many
 * completed. A released close fires its callback last: nothing touches the
 * store after it, so the callback may free it. */
size_t history_manual_release(struct hub_history *h, size_t n);

/* Completes everything queued, also what callbacks queue meanwhile. */
size_t history_manual_release_all(struct hub_history *h);

/* Makes the next released append or read (in queue order, whenever it
 * comes) complete with err instead of running: a storage failure on
 * purpose. err is a HUB_E* code, e.g. HUB_EIO. */
void history_manual_fail_next(struct hub_history *h, int err);

#endif
