/*
 * history.h: per-room message streams with positions (epoch, offset).
 *
 * Every room that ever had a message has a stream: an epoch string that names
 * this incarnation of the stream, and messages with offsets 1, 2, 3, ... in
 * the order they were sequenced. Only the newest max_per_room messages are
 * kept. The epoch changes only when a stream's history is lost (a memory
 * store restarted), so a client holding {epoch, offset} can tell a gap from
 * a quiet room.
 *
 * Sequencing is synchronous and runs on the loop: hub_history_append assigns
 * the offset at once, which fixes the order of delivery. This header is the
 * interface the chat layer uses; this version keeps everything in memory.
 * Strings passed in are copied; records handed out are borrowed for the
 * duration of the callback or call that returns them.
 */
#ifndef HUB_HISTORY_H
#define HUB_HISTORY_H

#include "hub/common.h"

struct hub_history;

#define HUB_HISTORY_EPOCH_LEN 16

/* One stored message. Views are borrowed from the store. */
struct hub_history_msg {
    uint64_t offset;     /* position in the room's stream, from 1 */
    int64_t ts;          /* milliseconds since the Unix epoch */
    struct hub_iov from; /* sender's nick */
    struct hub_iov text; /* UTF-8 text */
    struct hub_iov cmid; /* the sender's client message id, or empty */
};

/* A room's position. */
struct hub_history_pos {
    char epoch[HUB_HISTORY_EPOCH_LEN + 1]; /* NUL-terminated epoch */
    uint64_t last;                         /* newest offset, 0 if none yet */
    uint64_t first;                        /* oldest offset still kept (last + 1 if none) */
};

struct hub_history_config {
    uint32_t max_per_room; /* messages kept per room (1000) */
    uint32_t max_rooms;    /* streams kept; the least recently used is dropped (10000) */
};

void hub_history_config_default(struct hub_history_config *cfg);

/* Opens an in-memory store. Returns 0 or HUB_ENOMEM. */
int hub_history_open_memory(struct hub_history **out, const struct hub_history_config *cfg);

void hub_history_free(struct hub_history *h);

/* Fills *pos for room (created empty if unknown). Returns 0 or HUB_ENOMEM. */
int hub_history_position(struct hub_history *h, struct hub_iov room, struct hub_history_pos *pos);

/* Looks for an earlier message in room from the same sender with the same
 * non-empty cmid that is still kept. Returns 1 and fills *msg (borrowed until
 * the next append) if found, else 0. */
int hub_history_find_cmid(struct hub_history *h, struct hub_iov room, struct hub_iov from,
                          struct hub_iov cmid, struct hub_history_msg *msg);

/* Sequences a message into room: copies from, text and cmid, assigns the
 * next offset and stores ts. Drops the oldest message past max_per_room.
 * Returns 0 with *offset set, or HUB_ENOMEM. */
int hub_history_append(struct hub_history *h, struct hub_iov room, struct hub_iov from,
                       struct hub_iov text, struct hub_iov cmid, int64_t ts, uint64_t *offset);

enum hub_history_dir {
    HUB_HISTORY_LATEST = 0, /* the newest messages */
    HUB_HISTORY_BEFORE = 1, /* offsets below pos */
    HUB_HISTORY_AFTER = 2,  /* offsets above pos */
};

/* Receives a page of messages, oldest first; msgs is borrowed for the call.
 * complete is 1 when no more messages exist in the direction asked. */
typedef void (*hub_history_read_cb)(void *data, const struct hub_history_msg *msgs, size_t n,
                                    int complete);

/* Reads up to limit messages of room in direction dir relative to pos and
 * hands them to cb. The memory store calls cb before returning. Returns 0,
 * or HUB_ENOMEM (cb not called). */
int hub_history_read(struct hub_history *h, struct hub_iov room, int dir, uint64_t pos,
                     unsigned limit, hub_history_read_cb cb, void *data);

#endif
