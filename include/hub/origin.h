/*
 * origin.h: which web pages may open a WebSocket to the hub.
 *
 * Browsers send Origin with every WebSocket handshake; a page on another site
 * must not be able to use a visitor's browser to chat in their name. By
 * default only same-origin pages are allowed (the Origin's host and port equal
 * the Host header). --allow-origin adds patterns:
 *   "https://chat.example.com"   that exact origin (scheme, host, port)
 *   "https:// *.example.com"     (written without the space) any subdomain, that scheme
 *   "*.example.com"              any subdomain, any scheme
 *   "chat.example.com:8443"      that host and port, any scheme
 *   "*"                          every origin (not recommended)
 * Requests without Origin come from non-browser clients and are allowed:
 * anyone can fake the header there, so it protects nothing.
 */
#ifndef HUB_ORIGIN_H
#define HUB_ORIGIN_H

#include "hub/common.h"

struct hub_origin_policy {
    const char *const *allow; /* patterns, borrowed */
    size_t n;                 /* number of patterns */
};

/* Returns 1 if a handshake with this Origin (empty if absent) and Host may
 * proceed, else 0. */
int hub_origin_allowed(const struct hub_origin_policy *p, struct hub_iov origin,
                       struct hub_iov host);

#endif
