/*
 * proxy.c: trusted proxies and the forwarded client address (see proxy.h).
 *
 * The headers are walked from the right (the hop the nearest proxy added)
 * to the left, never the other way: a client can write anything into the
 * left part, but not into what a proxy it cannot control appended.
 */
#include "hub/proxy.h"
#include "hub/access.h"

#include <stdlib.h>
#include <string.h>

#define HOP_MAX 64 /* longest address text considered, with port and brackets */

static int is_space(char c)
{
    return c == ' ' || c == '\t';
}

static struct hub_iov trim(struct hub_iov v)
{
    while (v.len > 0 && is_space(v.base[0])) {
        v.base++;
        v.len--;
    }
    while (v.len > 0 && is_space(v.base[v.len - 1]))
        v.len--;
    return v;
}

int hub_proxy_parse_hop(struct hub_iov hop, struct sockaddr_storage *out)
{
    hop = trim(hop);
    if (hop.len >= 2 && hop.base[0] == '"' && hop.base[hop.len - 1] == '"') {
        hop.base++;
        hop.len -= 2;
    }
    if (hop.len == 0 || hop.len >= HOP_MAX)
        return HUB_EINVAL;
    char text[HOP_MAX];
    size_t n = 0;
    const char *colon = memchr(hop.base, ':', hop.len);
    if (hop.base[0] == '[') {
        /* "[v6]" or "[v6]:port" */
        const char *close = memchr(hop.base, ']', hop.len);
        if (close == NULL)
            return HUB_EINVAL;
        n = (size_t)(close - hop.base) - 1;
        memcpy(text, hop.base + 1, n);
    } else if (colon != NULL &&
               memchr(colon + 1, ':', hop.len - (size_t)(colon - hop.base) - 1) == NULL) {
        /* Exactly one colon: "v4:port". */
        n = (size_t)(colon - hop.base);
        memcpy(text, hop.base, n);
    } else {
        n = hop.len;
        memcpy(text, hop.base, n);
    }
    text[n] = '\0';
    memset(out, 0, sizeof(*out));
    struct sockaddr_in *in4 = (struct sockaddr_in *)out;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;
    if (strchr(text, ':') == NULL && uv_inet_pton(AF_INET, text, &in4->sin_addr) == 0) {
        in4->sin_family = AF_INET;
        return 0;
    }
    if (strchr(text, ':') != NULL && uv_inet_pton(AF_INET6, text, &in6->sin6_addr) == 0) {
        in6->sin6_family = AF_INET6;
        return 0;
    }
    return HUB_EINVAL;
}

/* The next hop from the right of a comma-separated list: shrinks *list to
 * what lies left of it. Returns 0, or -1 when the list is used up. */
static int take_last(struct hub_iov *list, struct hub_iov *hop)
{
    if (list->len == 0)
        return -1;
    size_t i = list->len;
    while (i > 0 && list->base[i - 1] != ',')
        i--;
    hop->base = list->base + i;
    hop->len = list->len - i;
    list->len = i > 0 ? i - 1 : 0; /* drop the comma too */
    return 0;
}

/* Forwarded: one element per hop, "for=X;proto=https;by=Y": the for= value
 * of an element, or an empty view when it has none. */
static struct hub_iov forwarded_for(struct hub_iov element)
{
    struct hub_iov rest = element, none = {NULL, 0};
    while (rest.len > 0) {
        const char *semi = memchr(rest.base, ';', rest.len);
        struct hub_iov pair = {rest.base, semi ? (size_t)(semi - rest.base) : rest.len};
        rest.base += pair.len + (semi ? 1 : 0);
        rest.len -= pair.len + (semi ? 1 : 0);
        pair = trim(pair);
        if (pair.len > 4 && hub_eq_ci(pair.base, 4, "for=", 4)) {
            struct hub_iov v = {pair.base + 4, pair.len - 4};
            return v;
        }
    }
    return none;
}

int hub_proxy_client(const struct hub_cidr *list, size_t n, const struct sockaddr *peer,
                     struct hub_iov xff, struct hub_iov forwarded, struct sockaddr_storage *out)
{
    if (n == 0 || !hub_cidr_match_any(list, n, peer))
        return 0;
    int use_xff = trim(xff).len > 0;
    struct hub_iov rest = use_xff ? xff : forwarded;
    struct sockaddr_storage hop_addr;
    int found = 0;
    struct hub_iov hop;
    while (take_last(&rest, &hop) == 0) {
        struct hub_iov text = use_xff ? hop : forwarded_for(hop);
        if (trim(hop).len == 0)
            continue; /* an empty list element ("a, , b") */
        if (hub_proxy_parse_hop(text, &hop_addr) != 0)
            break; /* unknown or obfuscated: nothing further left is usable */
        *out = hop_addr;
        found = 1;
        if (!hub_cidr_match_any(list, n, (const struct sockaddr *)&hop_addr))
            break; /* the first untrusted hop from the right: the client */
    }
    return found;
}
