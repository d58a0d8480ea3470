/*
 * log.h: leveled logging to stderr.
 *
 * One process-wide level, set once at start-up from --log-level. Lines look
 * like "2026-11-21T16:30:00Z info  listening on http://0.0.0.0:8080/".
 * Logging is for operators: it never carries message text of users.
 */
#ifndef HUB_LOG_H
#define HUB_LOG_H

#include "hub/common.h"

enum hub_log_level {
    HUB_LOG_ERROR = 0,
    HUB_LOG_WARN = 1,
    HUB_LOG_INFO = 2,
    HUB_LOG_DEBUG = 3,
};

/* Sets the level below which lines are dropped (default HUB_LOG_INFO). */
void hub_log_set_level(int level);

/* Returns the current level. */
int hub_log_get_level(void);

/* Parses "error", "warn", "info" or "debug". Returns the level or HUB_EINVAL. */
int hub_log_parse_level(const char *name);

/* Writes one line at level if enabled. fmt is printf-style, no trailing newline. */
void hub_log(int level, const char *fmt, ...) HUB_PRINTF_LIKE(2, 3);

#define hub_log_error(...) hub_log(HUB_LOG_ERROR, __VA_ARGS__)
#define hub_log_warn(...) hub_log(HUB_LOG_WARN, __VA_ARGS__)
#define hub_log_info(...) hub_log(HUB_LOG_INFO, __VA_ARGS__)
#define hub_log_debug(...) hub_log(HUB_LOG_DEBUG, __VA_ARGS__)

#endif
