/*
 * common.c: error strings and the small string helpers every layer needs.
 */
#include "hub/common.h"

#include <string.h>

const char *hub_strerror(int err)
{
    switch (err) {
    case HUB_OK:
        return "success";
    case HUB_ENOMEM:
        return "out of memory";
    case HUB_EINVAL:
        return "invalid argument or input";
    case HUB_ENOBUFS:
        return "buffer limit exceeded";
    case HUB_ECLOSED:
        return "connection closed";
    case HUB_ENOENT:
        return "not found";
    case HUB_EEXIST:
        return "already exists";
    case HUB_ELIMIT:
        return "limit reached";
    case HUB_EPROTO:
        return "protocol error";
    case HUB_EIO:
        return "input/output error";
    case HUB_EAGAIN:
        return "try again";
    case HUB_EPERM:
        return "not allowed";
    }
    return "unknown error";
}

int hub_eq_ci(const char *a, size_t alen, const char *b, size_t blen)
{
    if (alen != blen)
        return 0;
    for (size_t i = 0; i < alen; i++)
        if (hub_ascii_lower((unsigned char)a[i]) != hub_ascii_lower((unsigned char)b[i]))
            return 0;
    return 1;
}

uint64_t hub_hash(const char *s, size_t len, int fold_case)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        h ^= fold_case ? (unsigned char)hub_ascii_lower(c) : c;
        h *= 0x100000001b3ull;
    }
    return h;
}

int hub_iov_eq_ci(struct hub_iov v, const char *lit)
{
    return hub_eq_ci(v.base, v.len, lit, strlen(lit));
}

int hub_iov_has_token(struct hub_iov v, const char *tok)
{
    size_t i = 0;
    while (i < v.len) {
        /* Skip leading whitespace, then take everything up to the next comma. */
        while (i < v.len && (v.base[i] == ' ' || v.base[i] == '\t'))
            i++;
        size_t start = i;
        while (i < v.len && v.base[i] != ',')
            i++;
        size_t end = i;
        while (end > start && (v.base[end - 1] == ' ' || v.base[end - 1] == '\t'))
            end--;
        struct hub_iov item = {v.base + start, end - start};
        if (hub_iov_eq_ci(item, tok))
            return 1;
        i++; /* Step over the comma. */
    }
    return 0;
}
