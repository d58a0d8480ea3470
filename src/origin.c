/*
 * origin.c: the Origin policy (see origin.h). Everything compares ASCII
 * case-insensitively, as host names and schemes do.
 */
#include "hub/origin.h"

#include <stdio.h>
#include <string.h>

static int eq_ci(const char *a, size_t alen, const char *b, size_t blen)
{
    return hub_eq_ci(a, alen, b, blen);
}

/* Splits "scheme://hostport" (no path allowed). Returns 0 or -1. */
static int split_origin(struct hub_iov o, struct hub_iov *scheme, struct hub_iov *hostport)
{
    for (size_t i = 0; i + 2 < o.len; i++)
        if (o.base[i] == ':' && o.base[i + 1] == '/' && o.base[i + 2] == '/') {
            scheme->base = o.base;
            scheme->len = i;
            hostport->base = o.base + i + 3;
            hostport->len = o.len - i - 3;
            if (i == 0 || hostport->len == 0 || memchr(hostport->base, '/', hostport->len))
                return -1;
            return 0;
        }
    return -1;
}

/* The host part of "host[:port]" or "[v6]:port". */
static struct hub_iov host_only(struct hub_iov hp)
{
    size_t end = hp.len;
    if (hp.len > 0 && hp.base[0] == '[') {
        const char *close = memchr(hp.base, ']', hp.len);
        if (close != NULL)
            end = (size_t)(close - hp.base) + 1;
    } else {
        const char *colon = memchr(hp.base, ':', hp.len);
        if (colon != NULL)
            end = (size_t)(colon - hp.base);
    }
    struct hub_iov h = {hp.base, end};
    return h;
}

/* Matches a host[:port] pattern, possibly "*.suffix", against hostport. */
static int host_matches(const char *pat, size_t plen, struct hub_iov hostport)
{
    int has_port = memchr(pat, ':', plen) != NULL && pat[0] != '[';
    struct hub_iov subject = has_port ? hostport : host_only(hostport);
    if (plen >= 2 && pat[0] == '*' && pat[1] == '.') {
        size_t slen = plen - 1; /* ".suffix" */
        return subject.len > slen && eq_ci(subject.base + subject.len - slen, slen, pat + 1, slen);
    }
    return eq_ci(subject.base, subject.len, pat, plen);
}

static int pattern_matches(const char *pat, struct hub_iov scheme, struct hub_iov hostport)
{
    size_t plen = strlen(pat);
    const char *sep = strstr(pat, "://");
    if (sep == NULL)
        return host_matches(pat, plen, hostport);
    size_t slen = (size_t)(sep - pat);
    if (!eq_ci(pat, slen, scheme.base, scheme.len))
        return 0;
    return host_matches(sep + 3, plen - slen - 3, hostport);
}

int hub_origin_allowed(const struct hub_origin_policy *p, struct hub_iov origin,
                       struct hub_iov host)
{
    if (origin.len == 0)
        return 1;
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->allow[i], "*") == 0)
            return 1;
    struct hub_iov scheme, hostport;
    if (split_origin(origin, &scheme, &hostport) != 0)
        return 0; /* "null" (sandboxed pages, files) and anything malformed */
    /* Same origin: the page came from this very server. */
    if (host.len > 0 && eq_ci(hostport.base, hostport.len, host.base, host.len))
        return 1;
    for (size_t i = 0; i < p->n; i++)
        if (pattern_matches(p->allow[i], scheme, hostport))
            return 1;
    return 0;
}

/* ---- local development and refusal messages ------------------------------ */

int hub_origin_is_local_dev(struct hub_iov origin)
{
    if (hub_iov_eq_ci(origin, "null"))
        return 1;
    struct hub_iov scheme, hostport;
    if (split_origin(origin, &scheme, &hostport) != 0)
        return 0;
    if (!eq_ci(scheme.base, scheme.len, "http", 4) && !eq_ci(scheme.base, scheme.len, "https", 5))
        return 0;
    struct hub_iov host = host_only(hostport);
    if (!hub_iov_eq_ci(host, "localhost") && !hub_iov_eq_ci(host, "127.0.0.1") &&
        !hub_iov_eq_ci(host, "[::1]"))
        return 0;
    /* After the host: nothing, or ':' and 1-5 digits. */
    size_t rest = hostport.len - host.len;
    const char *p = hostport.base + host.len;
    if (rest == 0)
        return 1;
    if (p[0] != ':' || rest < 2 || rest > 6)
        return 0;
    for (size_t i = 1; i < rest; i++)
        if (p[i] < '0' || p[i] > '9')
            return 0;
    return 1;
}

int hub_origin_admit(const struct hub_origin_policy *p, struct hub_iov origin, struct hub_iov host)
{
    if (hub_origin_allowed(p, origin, host))
        return 1;
    if (p->local_dev && hub_origin_is_local_dev(origin))
        return 1;
    if (hub_iov_eq_ci(origin, "null"))
        for (size_t i = 0; i < p->n; i++)
            if (strcmp(p->allow[i], "null") == 0)
                return 1;
    return 0;
}

size_t hub_origin_suggest(struct hub_iov origin, char *out, size_t outsz)
{
    if (outsz == 0)
        return 0;
    size_t n = origin.len > 200 ? 200 : origin.len;
    if (n > outsz - 1)
        n = outsz - 1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)origin.base[i];
        /* Printable ASCII except the quote characters a shell or a log
         * parser would trip over. */
        out[i] = (c > 0x20 && c < 0x7f && c != '"' && c != '\'' && c != '\\') ? (char)c : '?';
    }
    out[n] = '\0';
    return n;
}

size_t hub_origin_refusal(struct hub_iov origin, char *out, size_t outsz)
{
    char o[201];
    hub_origin_suggest(origin, o, sizeof(o));
    int n = snprintf(out, outsz,
                     "403 Forbidden: this hub does not accept WebSockets from pages at %s.\n"
                     "To allow them, start chathub with --allow-origin %s\n"
                     "(see \"Origin policy\" in docs/operations.md).\n",
                     o, o);
    if (n < 0)
        return 0;
    return (size_t)n < outsz ? (size_t)n : outsz - 1;
}
