/*
 * access.h: who may reach the hub by which name, and who may read /metrics.
 *
 * Host names (DNS rebinding). A page on evil.example whose name the attacker
 * re-points at 127.0.0.1 is, to the browser, same-origin with whatever
 * listens there, and its requests carry "Host: evil.example". So a hub that
 * listens only on loopback answers only to the loopback names "localhost",
 * "127.0.0.1" and "[::1]" (any port), and a hub given --server-name answers
 * only to those names (and the loopback names); anything else gets 421
 * Misdirected Request. A public hub without --server-name accepts any Host.
 *
 * Peer addresses (/metrics). By default only loopback peers (127.0.0.0/8 and
 * ::1, IPv4-mapped forms included) may read /metrics; --metrics-allow CIDR
 * (repeatable) sets the networks instead, so "--metrics-allow 10.0.0.0/8
 * --metrics-allow 127.0.0.0/8" widens the default. The server answers 403
 * to the rest.
 *
 * Pure functions on borrowed values, no I/O.
 */
#ifndef HUB_ACCESS_H
#define HUB_ACCESS_H

#include "hub/common.h"

#include <uv.h>

/* ---- Host names ---- */

struct hub_host_policy {
    int loopback_only;        /* 1 when the listener is bound to a loopback address */
    const char *const *names; /* --server-name values (borrowed), without port */
    size_t nnames;            /* number of names */
};

/* Returns 1 when a request whose Host header is host (empty when absent) may
 * be served under p, else 0. The port, a trailing dot and letter case are
 * ignored. A policy that restricts names (loopback_only, or nnames > 0)
 * refuses an empty Host. */
int hub_host_allowed(const struct hub_host_policy *p, struct hub_iov host);

/* Returns 1 when name is usable as --server-name: 1-253 characters of
 * letters, digits, '-', '.', or an IP literal ("[::1]", "192.0.2.1"); no
 * port. name is borrowed. */
int hub_server_name_valid(const char *name);

/* ---- Networks ---- */

struct hub_cidr {
    int family;       /* AF_INET or AF_INET6 */
    uint8_t addr[16]; /* network address, first 4 bytes for AF_INET */
    unsigned prefix;  /* prefix length: 0-32 or 0-128 */
};

/* Parses "ADDR/LEN" or a lone "ADDR" (a host: /32 or /128) into *out. The
 * host bits below the prefix must be zero ("10.0.0.1/8" is refused as a
 * likely typo). Returns 0 or HUB_EINVAL. text is borrowed. */
int hub_cidr_parse(const char *text, struct hub_cidr *out);

/* Returns 1 when the address sa (borrowed) lies in c. An IPv4-mapped IPv6
 * address (::ffff:a.b.c.d) is matched as its IPv4 address. */
int hub_cidr_match(const struct hub_cidr *c, const struct sockaddr *sa);

/* Returns 1 for loopback addresses: 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104. */
int hub_addr_is_loopback(const struct sockaddr *sa);

#endif
