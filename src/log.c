/*
 * log.c: leveled logging to stderr with UTC timestamps, as text or JSON
 * lines, and the per-address rate limit of connection events (see log.h).
 *
 * The rate limit keeps a small table of token buckets, one per address hash
 * slot; two addresses sharing a slot share a bucket, which errs on the side
 * of fewer lines. The table is fixed in size: a flood from many addresses
 * costs no memory.
 */
#include "hub/log.h"
#include "hub/common.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#define ADDR_SLOTS 1024 /* rate-limit buckets */
#define FIELD_MAX 200   /* longest string field written */

static int current_level = HUB_LOG_INFO;
static int current_format = HUB_LOG_TEXT;
static FILE *out_file; /* NULL: stderr */
static uint64_t (*clock_fn)(void);

static const char *const level_names[] = {"error", "warn", "info", "debug"};

struct addr_bucket {
    uint64_t refilled_ms; /* when tokens were last topped up */
    uint32_t tokens;      /* lines this slot may still log now */
    uint32_t suppressed;  /* lines dropped since the last one logged */
    uint8_t used;         /* the slot has been initialised */
};
static struct addr_bucket buckets[ADDR_SLOTS];

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

void hub_log_set_format(int format)
{
    current_format = format;
}

int hub_log_parse_format(const char *name)
{
    if (strcmp(name, "text") == 0)
        return HUB_LOG_TEXT;
    if (strcmp(name, "json") == 0)
        return HUB_LOG_JSON;
    return HUB_EINVAL;
}

void hub_log_set_output(FILE *f)
{
    out_file = f;
}

void hub_log_set_clock(uint64_t (*now)(void))
{
    clock_fn = now;
}

static uint64_t now_ms(void)
{
    return clock_fn != NULL ? clock_fn() : uv_hrtime() / 1000000;
}

static void stamp(char out[32])
{
    time_t now = time(NULL);
    struct tm tm;
#ifdef _WIN32
    gmtime_s(&tm, &now);
#else
    gmtime_r(&now, &tm);
#endif
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* A bounded line being built; overflow truncates. */
struct line {
    char b[1536]; /* the text */
    size_t n;     /* bytes used */
};

HUB_PRINTF_LIKE(2, 3) static void put(struct line *l, const char *fmt, ...)
{
    if (l->n >= sizeof(l->b) - 1)
        return;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(l->b + l->n, sizeof(l->b) - l->n, fmt, ap);
    va_end(ap);
    if (k > 0)
        l->n += (size_t)k < sizeof(l->b) - l->n ? (size_t)k : sizeof(l->b) - 1 - l->n;
}

/* Appends s escaped for a JSON string (json) or a quoted text value, at
 * most FIELD_MAX bytes of it. Control bytes become \u00XX; bytes >= 0x80 are
 * kept (the inputs are addresses, room names and reasons the hub wrote or
 * validated as UTF-8). */
static void put_escaped(struct line *l, const char *s)
{
    for (size_t i = 0; s[i] != '\0' && i < FIELD_MAX; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            put(l, "\\%c", c);
        else if (c < 0x20 || c == 0x7f)
            put(l, "\\u%04x", c);
        else
            put(l, "%c", c);
    }
}

/* A text value: bare when it is a plain token, else in quotes. */
static void put_text_value(struct line *l, const char *s)
{
    int plain = s[0] != '\0';
    for (size_t i = 0; s[i] != '\0' && plain; i++)
        plain = s[i] > 0x20 && s[i] < 0x7f && s[i] != '"' && s[i] != '\\' && s[i] != '=';
    if (plain && strlen(s) <= FIELD_MAX) {
        put(l, "%s", s);
        return;
    }
    put(l, "\"");
    put_escaped(l, s);
    put(l, "\"");
}

static void emit(struct line *l)
{
    /* One fwrite per line keeps lines whole even when stderr is a pipe. */
    put(l, "\n");
    if (l->b[l->n - 1] != '\n')
        l->b[l->n - 1] = '\n';
    fwrite(l->b, 1, l->n, out_file != NULL ? out_file : stderr);
}

static void begin(struct line *l, int level)
{
    char ts[32];
    stamp(ts);
    l->n = 0;
    if (current_format == HUB_LOG_JSON)
        put(l, "{\"ts\":\"%s\",\"level\":\"%s\"", ts, level_names[level]);
    else
        put(l, "%s %-5s ", ts, level_names[level]);
}

void hub_log(int level, const char *fmt, ...)
{
    if (level > current_level || level < 0)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    struct line l;
    begin(&l, level);
    if (current_format == HUB_LOG_JSON) {
        put(&l, ",\"msg\":\"");
        /* The whole message, not just FIELD_MAX of it. */
        for (const char *p = msg; *p != '\0'; p += strlen(p) < FIELD_MAX ? strlen(p) : FIELD_MAX)
            put_escaped(&l, p);
        put(&l, "\"}");
    } else {
        put(&l, "%s", msg);
    }
    emit(&l);
}

/* Takes one token from addr's bucket. Returns 1 if the line may go out (and
 * sets *suppressed to the lines dropped before it), else 0. */
static int addr_allow(const char *addr, uint32_t *suppressed)
{
    struct addr_bucket *b = &buckets[hub_hash(addr, strlen(addr), 0) % ADDR_SLOTS];
    uint64_t now = now_ms();
    if (!b->used) {
        b->used = 1;
        b->tokens = HUB_LOG_ADDR_BURST;
        b->refilled_ms = now;
    } else if (now > b->refilled_ms) {
        uint64_t add = (now - b->refilled_ms) / HUB_LOG_ADDR_EVERY_MS;
        if (add > 0) {
            b->tokens = add >= HUB_LOG_ADDR_BURST - b->tokens ? HUB_LOG_ADDR_BURST
                                                              : b->tokens + (uint32_t)add;
            b->refilled_ms += add * HUB_LOG_ADDR_EVERY_MS;
        }
    }
    if (b->tokens == 0) {
        b->suppressed++;
        return 0;
    }
    b->tokens--;
    *suppressed = b->suppressed;
    b->suppressed = 0;
    return 1;
}

static void field_str(struct line *l, const char *key, const char *v)
{
    if (v == NULL)
        return;
    if (current_format == HUB_LOG_JSON) {
        put(l, ",\"%s\":\"", key);
        put_escaped(l, v);
        put(l, "\"");
    } else {
        put(l, " %s=", key);
        put_text_value(l, v);
    }
}

static void field_int(struct line *l, const char *key, int64_t v)
{
    if (v < 0)
        return;
    if (current_format == HUB_LOG_JSON)
        put(l, ",\"%s\":%" PRId64, key, v);
    else
        put(l, " %s=%" PRId64, key, v);
}

void hub_log_conn(int level, const struct hub_log_conn *e)
{
    if (level > current_level || level < 0)
        return;
    const char *addr = e->addr != NULL ? e->addr : "?";
    uint32_t suppressed = 0;
    if (!addr_allow(addr, &suppressed))
        return;
    struct line l;
    begin(&l, level);
    if (current_format == HUB_LOG_JSON) {
        put(&l, ",\"event\":\"");
        put_escaped(&l, e->event);
        put(&l, "\",\"addr\":\"");
        put_escaped(&l, addr);
        put(&l, "\"");
    } else {
        /* "203.0.113.7: close ...": the address first, as in the other lines. */
        put(&l, "%s: ", addr);
        put_text_value(&l, e->event);
    }
    field_str(&l, "mode", e->mode);
    field_str(&l, "room", e->room);
    field_int(&l, "code", e->code);
    field_str(&l, "reason", e->reason);
    field_str(&l, "by", e->by);
    field_int(&l, "duration_ms", e->duration_ms);
    field_int(&l, "bytes_in", e->bytes_in);
    field_int(&l, "bytes_out", e->bytes_out);
    field_int(&l, "suppressed", suppressed > 0 ? (int64_t)suppressed : -1);
    if (current_format == HUB_LOG_JSON)
        put(&l, "}");
    emit(&l);
}

void hub_log_addr(int level, const char *addr, const char *event, const char *reason)
{
    struct hub_log_conn e = {event, addr, NULL, NULL, -1, reason, NULL, -1, -1, -1};
    hub_log_conn(level, &e);
}
