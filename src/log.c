/*
 * log.c: leveled logging to stderr with UTC timestamps.
 */
#include "hub/log.h"
#include "hub/common.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static int current_level = HUB_LOG_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void hub_log_set_level(int level)
{
    current_level = level;
}

int hub_log_get_level(void)
{
    return current_level;
}

int hub_log_parse_level(const char *name)
{
    for (int i = 0; i < (int)HUB_ARRAY_SIZE(level_names); i++)
        if (strcmp(name, level_names[i]) == 0)
            return i;
    return HUB_EINVAL;
}

void hub_log(int level, const char *fmt, ...)
{
    if (level > current_level || level < 0)
        return;
    char stamp[32];
    time_t now = time(NULL);
    struct tm tm;
#ifdef _WIN32
    gmtime_s(&tm, &now);
#else
    gmtime_r(&now, &tm);
#endif
    strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm);
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    /* One fprintf per line keeps lines whole even when stderr is a pipe. */
    fprintf(stderr, "%s %-5s %s\n", stamp, level_names[level], line);
}
