/*
 * jsonw.c: the JSON text writer of jsonw.h.
 *
 * Every entry point returns at once once err is set, so the buffer holds a
 * prefix of the intended text and nobody may use it; hub_jsonw_error is the
 * one check a caller makes. Escaping copies runs of bytes that need none in
 * one append, so ordinary text costs one memcpy.
 */
#include "hub/jsonw.h"

#include <stdio.h>
#include <string.h>

void hub_jsonw_init(struct hub_jsonw *w)
{
    hub_buf_init(&w->b);
    w->err = 0;
}

void hub_jsonw_free(struct hub_jsonw *w)
{
    hub_buf_free(&w->b);
    w->err = 0;
}

void hub_jsonw_rawn(struct hub_jsonw *w, const char *s, size_t len)
{
    if (w->err != 0)
        return;
    int rc = hub_buf_append(&w->b, s, len);
    if (rc != 0)
        w->err = rc;
}

void hub_jsonw_raw(struct hub_jsonw *w, const char *s)
{
    hub_jsonw_rawn(w, s, strlen(s));
}

/* The escape for byte c, or NULL if c stands for itself. */
static const char *escape(unsigned char c, char tmp[7])
{
    static const char hex[] = "0123456789abcdef";
    switch (c) {
    case '"':
        return "\\\"";
    case '\\':
        return "\\\\";
    case '\n':
        return "\\n";
    case '\r':
        return "\\r";
    case '\t':
        return "\\t";
    case '\b':
        return "\\b";
    case '\f':
        return "\\f";
    default:
        if (c >= 0x20)
            return NULL;
        memcpy(tmp, "\\u00", 4);
        tmp[4] = hex[c >> 4];
        tmp[5] = hex[c & 15];
        tmp[6] = '\0';
        return tmp;
    }
}

size_t hub_jsonw_str_size(const char *s, size_t len)
{
    size_t n = len + 2;
    char tmp[7];
    for (size_t i = 0; i < len; i++) {
        const char *e = escape((unsigned char)s[i], tmp);
        if (e != NULL)
            n += strlen(e) - 1;
    }
    return n;
}

void hub_jsonw_str(struct hub_jsonw *w, const char *s, size_t len)
{
    if (w->err != 0)
        return;
    /* One reservation for the common case of nothing to escape. */
    if (hub_buf_reserve(&w->b, len + 2) != 0) {
        w->err = HUB_ENOMEM;
        return;
    }
    hub_jsonw_rawn(w, "\"", 1);
    size_t run = 0; /* start of the bytes not yet copied */
    char tmp[7];
    for (size_t i = 0; i < len; i++) {
        const char *e = escape((unsigned char)s[i], tmp);
        if (e == NULL)
            continue;
        hub_jsonw_rawn(w, s + run, i - run);
        hub_jsonw_raw(w, e);
        run = i + 1;
    }
    hub_jsonw_rawn(w, s + run, len - run);
    hub_jsonw_rawn(w, "\"", 1);
}

void hub_jsonw_int(struct hub_jsonw *w, long long v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof(tmp), "%lld", v);
    hub_jsonw_rawn(w, tmp, (size_t)n);
}

void hub_jsonw_uint(struct hub_jsonw *w, unsigned long long v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof(tmp), "%llu", v);
    hub_jsonw_rawn(w, tmp, (size_t)n);
}

void hub_jsonw_item(struct hub_jsonw *w)
{
    if (w->err != 0)
        return;
    size_t n = w->b.len;
    if (n > 0 && w->b.data[n - 1] != '{' && w->b.data[n - 1] != '[')
        hub_jsonw_rawn(w, ",", 1);
}

void hub_jsonw_key(struct hub_jsonw *w, const char *key)
{
    hub_jsonw_item(w);
    hub_jsonw_str(w, key, strlen(key));
    hub_jsonw_rawn(w, ":", 1);
}

void hub_jsonw_kstr(struct hub_jsonw *w, const char *key, const char *s, size_t len)
{
    hub_jsonw_key(w, key);
    hub_jsonw_str(w, s, len);
}

void hub_jsonw_kint(struct hub_jsonw *w, const char *key, long long v)
{
    hub_jsonw_key(w, key);
    hub_jsonw_int(w, v);
}

void hub_jsonw_kuint(struct hub_jsonw *w, const char *key, unsigned long long v)
{
    hub_jsonw_key(w, key);
    hub_jsonw_uint(w, v);
}

void hub_jsonw_kbool(struct hub_jsonw *w, const char *key, int v)
{
    hub_jsonw_key(w, key);
    hub_jsonw_raw(w, v ? "true" : "false");
}

void hub_jsonw_truncate(struct hub_jsonw *w, size_t mark)
{
    if (mark < w->b.len)
        w->b.len = mark;
}
