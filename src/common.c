/*
 * common.c: error strings and the small string helpers every layer needs.
 */
#include "hub/common.h"

#include <string.h>

const char *hub_strerror(int err)
{
    switch (err) {
    case HUB_OK: return "success";
    case HUB_ENOMEM: return "out of memory";
    case HUB_EINVAL: return "invalid argument or input";
    case HUB_ENOBUFS: return "buffer limit exceeded";
    case HUB_ECLOSED: return "connection closed";
    case HUB_ENOENT: return "not found";
    case HUB_EEXIST: return "already exists";
    case HUB_ELIMIT: return "limit reached";
    case HUB_EPROTO: return "protocol error";
    case HUB_EIO: return "input/output error";
    case HUB_EAGAIN: return "try again";
    }
    return "unknown error";
}

static int lower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

int hub_iov_eq_ci(struct hub_iov v, const char *lit)
{
    size_t n = strlen(lit);
    if (v.len != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)v.base[i]) != lower((unsigned char)lit[i]))
            return 0;
    return 1;
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
