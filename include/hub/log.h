/*
 * log.h: leveled logging to stderr.
 *
 * One process-wide level, set once at start-up from --log-level, and one
 * format from --log-format: text lines like
 *   "2026-11-21T16:30:00Z info  listening on http://0.0.0.0:8080/"
 * or JSON lines for log shippers:
 *   {"ts":"2026-11-21T16:30:00Z","level":"info","msg":"listening on ..."}
 * Logging is for operators: it never carries message text of users.
 *
 * Connection events (a WebSocket opened or closed, a refusal) go through
 * hub_log_conn, one call per event, so that both formats carry the same
 * fields (addr, event, mode, room, code, reason, duration, bytes). Lines
 * about one address are rate-limited: HUB_LOG_ADDR_BURST lines, then one per
 * HUB_LOG_ADDR_EVERY_MS; the next line that gets through says how many were
 * suppressed, so a flood from one address cannot flood the log.
 */
#ifndef HUB_LOG_H
#define HUB_LOG_H

#include "hub/common.h"

#include <stdio.h>

enum hub_log_level {
    HUB_LOG_ERROR = 0,
    HUB_LOG_WARN = 1,
    HUB_LOG_INFO = 2,
    HUB_LOG_DEBUG = 3,
};

enum hub_log_format {
    HUB_LOG_TEXT = 0, /* one human-readable line per entry (default) */
    HUB_LOG_JSON = 1, /* one JSON object per line */
};

#define HUB_LOG_ADDR_BURST 20     /* lines one address may log at once */
#define HUB_LOG_ADDR_EVERY_MS 500 /* then one line per this many ms */

/* Sets the level below which lines are dropped (default HUB_LOG_INFO). */
void hub_log_set_level(int level);

/* Returns the current level. */
int hub_log_get_level(void);

/* Parses "error", "warn", "info" or "debug". Returns the level or HUB_EINVAL. */
int hub_log_parse_level(const char *name);

/* Sets the format (default HUB_LOG_TEXT). */
void hub_log_set_format(int format);

/* Parses "text" or "json". Returns the format or HUB_EINVAL. */
int hub_log_parse_format(const char *name);

/* For tests: lines go to f instead of stderr (NULL: stderr again), and the
 * rate limit reads the time in ms from now (NULL: the real clock). f is
 * borrowed until replaced. */
void hub_log_set_output(FILE *f);
void hub_log_set_clock(uint64_t (*now)(void));

/* Writes one line at level if enabled. fmt is printf-style, no trailing newline. */
void hub_log(int level, const char *fmt, ...) HUB_PRINTF_LIKE(2, 3);

#define hub_log_error(...) hub_log(HUB_LOG_ERROR, __VA_ARGS__)
#define hub_log_warn(...) hub_log(HUB_LOG_WARN, __VA_ARGS__)
#define hub_log_info(...) hub_log(HUB_LOG_INFO, __VA_ARGS__)
#define hub_log_debug(...) hub_log(HUB_LOG_DEBUG, __VA_ARGS__)

/* One event about one connection. Unset fields (NULL, or -1 for numbers)
 * are left out of the line. All strings are borrowed for the call; they are
 * written escaped (control characters, quotes) and cut at 200 bytes. */
struct hub_log_conn {
    const char *event;   /* "open", "close", "refused" */
    const char *addr;    /* the client's address (forwarded through a trusted proxy) */
    const char *mode;    /* "raw", "json" or "http", or NULL */
    const char *room;    /* the raw client's room, or NULL */
    int code;            /* close code or HTTP status, or -1 */
    const char *reason;  /* why: close reason, refusal cause, or NULL */
    const char *by;      /* who closed: "hub" or "client", or NULL */
    int64_t duration_ms; /* how long the WebSocket was open, or -1 */
    int64_t bytes_in;    /* bytes read from the client, or -1 */
    int64_t bytes_out;   /* bytes written to the client, or -1 */
};

/* Logs e at level, subject to the per-address rate limit (by e->addr). */
void hub_log_conn(int level, const struct hub_log_conn *e);

/* Shorthand for an event with only an address and a reason (the other
 * fields unset), e.g. hub_log_addr(HUB_LOG_INFO, addr, "refused", "over --rate"). */
void hub_log_addr(int level, const char *addr, const char *event, const char *reason);

#endif
