/*
 * proxy.h: the client's address behind a trusted reverse proxy.
 *
 * Behind nginx or a load balancer every connection comes from the proxy, so
 * per-address limits and logs would see one client. --trust-proxy CIDR
 * (repeatable) names the proxies; from those peers only, the client address
 * is taken from X-Forwarded-For or, when that is absent, Forwarded (RFC
 * 7239 "for="). Both list one hop per proxy, the nearest last; the client is
 * the rightmost hop that is not itself a trusted proxy, since everything to
 * its left was written by the client and proves nothing. A hop that does not
 * parse (a name, "unknown", an obfuscated "_id") ends the walk: the address
 * is then that of the nearest trusted hop seen so far. Peers outside the list
 * are never asked: their headers are ignored. Nothing is trusted by default.
 *
 * Sans-I/O: addresses are struct sockaddr_storage values, text in and out.
 */
#ifndef HUB_PROXY_H
#define HUB_PROXY_H

#include "hub/common.h"

#include <uv.h>

/* The proxies are networks of access.h (struct hub_cidr, parsed by
 * hub_cidr_parse and matched by hub_cidr_match_any), as for --metrics-allow. */
struct hub_cidr;

/* Parses one hop of X-Forwarded-For or Forwarded's for= ("192.0.2.1",
 * "192.0.2.1:4711", "2001:db8::1", "[2001:db8::1]:4711", optionally in
 * double quotes) into out (port 0). Returns 0 or HUB_EINVAL. */
int hub_proxy_parse_hop(struct hub_iov hop, struct sockaddr_storage *out);

/* The client address of a request that came from peer through the trusted
 * proxies in list (n entries): when peer is trusted and xff (X-Forwarded-For,
 * len 0 if absent) or else forwarded (Forwarded) names a client, writes it
 * to out and returns 1; otherwise returns 0 and leaves out alone (use the
 * peer). Everything is borrowed. */
int hub_proxy_client(const struct hub_cidr *list, size_t n, const struct sockaddr *peer,
                     struct hub_iov xff, struct hub_iov forwarded, struct sockaddr_storage *out);

#endif
