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
 *   "null"                       pages with an opaque origin: files opened from
 *                                disk (file://) and sandboxed frames
 * Requests without Origin come from non-browser clients and are allowed:
 * anyone can fake the header there, so it protects nothing.
 *
 * Local development: when the hub listens on a loopback address only (and
 * --strict-origin is not given), nobody but this machine can reach it, so it
 * also admits "Origin: null" (the tutorial page opened from disk) and the
 * pages of other local dev servers, http(s)://localhost, 127.0.0.1 and [::1]
 * on any port. A refusal names the origin and the exact --allow-origin that
 * would admit it (hub_origin_suggest).
 */
#ifndef HUB_ORIGIN_H
#define HUB_ORIGIN_H

#include "hub/common.h"

struct sockaddr;

struct hub_origin_policy {
    const char *const *allow; /* patterns, borrowed */
    size_t n;                 /* number of patterns */
    int local_dev;            /* 1: also admit null and local dev origins (loopback hub) */
};

/* Returns 1 if a handshake with this Origin (empty if absent) and Host may
 * proceed, else 0. */
int hub_origin_allowed(const struct hub_origin_policy *p, struct hub_iov origin,
                       struct hub_iov host);

/* Returns 1 if a handshake may proceed: what hub_origin_allowed admits, plus
 * a "null" pattern matching Origin: null, plus, with p->local_dev, the local
 * development origins (hub_origin_is_local_dev). Else 0. */
int hub_origin_admit(const struct hub_origin_policy *p, struct hub_iov origin, struct hub_iov host);

/* Returns 1 for "null" and for http:// or https:// with host localhost,
 * 127.0.0.1 or [::1] and an optional port; else 0. */
int hub_origin_is_local_dev(struct hub_iov origin);

/* Whether a listener is loopback-only is hub_addr_is_loopback (hub/access.h). */

/* Writes the refused origin as it is safe to show in a log line or a
 * text/plain body (printable ASCII, at most 200 bytes, anything else as '?')
 * into out, NUL-terminated. Returns the length written. The --allow-origin
 * value that admits exactly this origin is the same text. */
size_t hub_origin_suggest(struct hub_iov origin, char *out, size_t outsz);

/* Writes the 403 body for a refused origin into out (NUL-terminated): which
 * origin was refused and the flag to add. Returns the length written. */
size_t hub_origin_refusal(struct hub_iov origin, char *out, size_t outsz);

#endif
