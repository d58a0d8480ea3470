/*
 * redisurl.c: redis:// URL parsing for the Redis engine (see redisurl.h).
 */
#include "hub/redisurl.h"
#include "hub/common.h"

#include <stdio.h>
#include <string.h>

static int fail(char *err, size_t errsz, const char *url, const char *why)
{
    if (errsz > 0)
        snprintf(err, errsz, "bad Redis URL \"%.80s\": %s", url, why);
    return HUB_EINVAL;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = hub_ascii_lower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Copies [s, s+len) into out, decoding %XX. Returns 0 or -1. */
static int copy_decoded(char *out, const char *s, size_t len)
{
    size_t w = 0;
    for (size_t i = 0; i < len; i++) {
        int c = (unsigned char)s[i];
        if (c == '%') {
            if (i + 2 >= len)
                return -1;
            int hi = hexval((unsigned char)s[i + 1]), lo = hexval((unsigned char)s[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            c = hi * 16 + lo;
            if (c == 0)
                return -1;
            i += 2;
        }
        if (w >= HUB_REDISURL_FIELD_MAX)
            return -1;
        out[w++] = (char)c;
    }
    out[w] = '\0';
    return 0;
}

/* Parses a decimal number of [s, s+len) within [lo, hi]. Returns it or -1. */
static long number(const char *s, size_t len, long lo, long hi)
{
    if (len == 0 || len > 6)
        return -1;
    long v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v >= lo && v <= hi ? v : -1;
}

int hub_redisurl_parse(const char *url, struct hub_redisurl *out, char *err, size_t errsz)
{
    memset(out, 0, sizeof(*out));
    out->port = 6379;
    static const char scheme[] = "redis://";
    if (strncmp(url, scheme, sizeof(scheme) - 1) != 0)
        return fail(err, errsz, url, "it must start with redis://");
    const char *p = url + sizeof(scheme) - 1;
    const char *end = p + strlen(p);
    /* The authority ends at the first '/'. */
    const char *slash = memchr(p, '/', (size_t)(end - p));
    const char *auth_end = slash ? slash : end;
    const char *at = NULL;
    for (const char *q = p; q < auth_end; q++)
        if (*q == '@')
            at = q;
    if (at != NULL) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon == NULL)
            return fail(err, errsz, url, "credentials must be [user]:password@");
        if (copy_decoded(out->user, p, (size_t)(colon - p)) != 0 ||
            copy_decoded(out->password, colon + 1, (size_t)(at - colon - 1)) != 0)
            return fail(err, errsz, url, "bad user or password");
        out->has_password = 1;
        p = at + 1;
    }
    /* Host: [v6] or up to the last ':'. */
    const char *host_end, *port_start = NULL;
    if (p < auth_end && *p == '[') {
        const char *close = memchr(p, ']', (size_t)(auth_end - p));
        if (close == NULL)
            return fail(err, errsz, url, "unterminated [IPv6] host");
        if (close + 1 < auth_end && close[1] != ':')
            return fail(err, errsz, url, "junk after ]");
        host_end = close;
        if (close + 1 < auth_end)
            port_start = close + 2;
        p++;
    } else {
        const char *colon = memchr(p, ':', (size_t)(auth_end - p));
        host_end = colon ? colon : auth_end;
        if (colon)
            port_start = colon + 1;
    }
    size_t hlen = (size_t)(host_end - p);
    if (hlen == 0)
        return fail(err, errsz, url, "no host");
    if (hlen > HUB_REDISURL_FIELD_MAX)
        return fail(err, errsz, url, "host too long");
    for (size_t i = 0; i < hlen; i++) {
        unsigned char c = (unsigned char)p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == ':' || c == '_'))
            return fail(err, errsz, url, "bad character in host");
    }
    memcpy(out->host, p, hlen);
    out->host[hlen] = '\0';
    if (port_start != NULL) {
        long port = number(port_start, (size_t)(auth_end - port_start), 1, 65535);
        if (port < 0)
            return fail(err, errsz, url, "port must be 1..65535");
        out->port = (int)port;
    }
    if (slash != NULL && slash + 1 < end) {
        long db = number(slash + 1, (size_t)(end - slash - 1), 0, 15);
        if (db < 0)
            return fail(err, errsz, url, "database must be 0..15");
        out->db = (int)db;
    }
    return 0;
}
