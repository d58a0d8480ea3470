/*
 * access.c: the Host name policy and address networks (see access.h).
 *
 * Host values come from the network and are only compared, never assumed
 * well-formed: the HTTP layer has already refused characters outside
 * RFC 3986 host:port, but nothing here relies on it. Addresses are parsed
 * with libuv's inet_pton, which works alike on every platform the hub builds
 * for.
 */
#include "hub/access.h"

#include <stdlib.h>
#include <string.h>

/* ---- Host names ---- */

/* The host part of a Host value: "[v6]" with its brackets, else up to the
 * port's colon; a trailing dot of a domain name is dropped. */
static struct hub_iov host_name(struct hub_iov host)
{
    struct hub_iov n = host;
    if (n.len > 0 && n.base[0] == '[') {
        const char *close = memchr(n.base, ']', n.len);
        n.len = close != NULL ? (size_t)(close - n.base) + 1 : n.len;
        return n;
    }
    const char *colon = memchr(n.base, ':', n.len);
    if (colon != NULL)
        n.len = (size_t)(colon - n.base);
    if (n.len > 1 && n.base[n.len - 1] == '.')
        n.len--;
    return n;
}

static int name_is(struct hub_iov n, const char *lit)
{
    size_t len = strlen(lit);
    if (len > 1 && lit[len - 1] == '.')
        len--;
    return hub_eq_ci(n.base, n.len, lit, len);
}

int hub_host_allowed(const struct hub_host_policy *p, struct hub_iov host)
{
    if (!p->loopback_only && p->nnames == 0)
        return 1;
    struct hub_iov n = host_name(host);
    if (n.len == 0)
        return 0;
    if (name_is(n, "localhost") || name_is(n, "127.0.0.1") || name_is(n, "[::1]"))
        return 1;
    for (size_t i = 0; i < p->nnames; i++)
        if (name_is(n, p->names[i]))
            return 1;
    return 0;
}

int hub_server_name_valid(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len > 253)
        return 0;
    if (name[0] == '[') {
        char inner[64];
        if (name[len - 1] != ']' || len - 2 >= sizeof(inner))
            return 0;
        memcpy(inner, name + 1, len - 2);
        inner[len - 2] = '\0';
        unsigned char buf[16];
        return uv_inet_pton(AF_INET6, inner, buf) == 0;
    }
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '-' || c == '.';
        if (!ok)
            return 0;
    }
    return 1;
}

/* ---- Networks ---- */

int hub_cidr_parse(const char *text, struct hub_cidr *out)
{
    char addr[64];
    const char *slash = strchr(text, '/');
    size_t alen = slash != NULL ? (size_t)(slash - text) : strlen(text);
    if (alen == 0 || alen >= sizeof(addr))
        return HUB_EINVAL;
    memcpy(addr, text, alen);
    addr[alen] = '\0';
    memset(out, 0, sizeof(*out));
    unsigned max;
    if (uv_inet_pton(AF_INET, addr, out->addr) == 0) {
        out->family = AF_INET;
        max = 32;
    } else if (uv_inet_pton(AF_INET6, addr, out->addr) == 0) {
        out->family = AF_INET6;
        max = 128;
    } else {
        return HUB_EINVAL;
    }
    out->prefix = max;
    if (slash != NULL) {
        const char *d = slash + 1;
        if (*d == '\0' || strlen(d) > 3)
            return HUB_EINVAL;
        unsigned v = 0;
        for (; *d; d++) {
            if (*d < '0' || *d > '9')
                return HUB_EINVAL;
            v = v * 10 + (unsigned)(*d - '0');
        }
        if (v > max)
            return HUB_EINVAL;
        out->prefix = v;
    }
    /* Host bits must be clear. */
    for (unsigned bit = out->prefix; bit < max; bit++)
        if (out->addr[bit / 8] & (0x80u >> (bit % 8)))
            return HUB_EINVAL;
    return 0;
}

/* The address of sa as family and bytes; IPv4-mapped IPv6 becomes IPv4.
 * Returns 0, or -1 for another family. */
static int addr_bytes(const struct sockaddr *sa, int *family, uint8_t out[16])
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        memcpy(out, &s4->sin_addr, 4);
        *family = AF_INET;
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        const uint8_t *b = (const uint8_t *)&s6->sin6_addr;
        if (memcmp(b, mapped, sizeof(mapped)) == 0) {
            memcpy(out, b + 12, 4);
            *family = AF_INET;
        } else {
            memcpy(out, b, 16);
            *family = AF_INET6;
        }
        return 0;
    }
    return -1;
}

int hub_cidr_match(const struct hub_cidr *c, const struct sockaddr *sa)
{
    int family;
    uint8_t b[16];
    if (addr_bytes(sa, &family, b) != 0 || family != c->family)
        return 0;
    unsigned full = c->prefix / 8, rest = c->prefix % 8;
    if (memcmp(b, c->addr, full) != 0)
        return 0;
    if (rest == 0)
        return 1;
    uint8_t mask = (uint8_t)(0xff00u >> rest);
    return (b[full] & mask) == (c->addr[full] & mask);
}

int hub_addr_is_loopback(const struct sockaddr *sa)
{
    static const uint8_t v6_loopback[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    int family;
    uint8_t b[16];
    if (addr_bytes(sa, &family, b) != 0)
        return 0;
    if (family == AF_INET)
        return b[0] == 127;
    return memcmp(b, v6_loopback, 16) == 0;
}
