/*
 * test_proxy.c: CIDR parsing and matching, forwarded hops, and which client
 * address a request through trusted proxies gets.
 */
#include "check.h"
#include "hub/access.h"
#include "hub/proxy.h"

static struct sockaddr_storage addr(const char *text)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (strchr(text, ':') != NULL)
        CHECK(uv_ip6_addr(text, 0, (struct sockaddr_in6 *)&ss) == 0);
    else
        CHECK(uv_ip4_addr(text, 0, (struct sockaddr_in *)&ss) == 0);
    return ss;
}

static int in(const char *cidr, const char *ip)
{
    struct hub_cidr c;
    CHECK(hub_cidr_parse(cidr, &c) == 0);
    struct sockaddr_storage ss = addr(ip);
    return hub_cidr_match_any(&c, 1, (struct sockaddr *)&ss);
}

/* The client hub_proxy_client picks, as text ("-" when it keeps the peer). */
static const char *client(const char *const *trusted, size_t n, const char *peer, const char *xff,
                          const char *fwd)
{
    static char out[64];
    struct hub_cidr list[8];
    for (size_t i = 0; i < n; i++)
        CHECK(hub_cidr_parse(trusted[i], &list[i]) == 0);
    struct sockaddr_storage p = addr(peer), got;
    struct hub_iov x = {xff, strlen(xff)}, f = {fwd, strlen(fwd)};
    if (!hub_proxy_client(list, n, (struct sockaddr *)&p, x, f, &got))
        return "-";
    if (got.ss_family == AF_INET6)
        uv_ip6_name((struct sockaddr_in6 *)&got, out, sizeof(out));
    else
        uv_ip4_name((struct sockaddr_in *)&got, out, sizeof(out));
    return out;
}

int main(void)
{
    struct hub_cidr c;
    CHECK(hub_cidr_parse("10.0.0.0/8", &c) == 0 && c.family == AF_INET && c.prefix == 8);
    CHECK(hub_cidr_parse("10.1.2.3/8", &c) == HUB_EINVAL); /* host bits set: a likely typo */
    CHECK(hub_cidr_parse("192.0.2.7", &c) == 0 && c.prefix == 32);
    CHECK(hub_cidr_parse("::1", &c) == 0 && c.family == AF_INET6 && c.prefix == 128);
    CHECK(hub_cidr_parse("fd00::/8", &c) == 0 && c.prefix == 8);
    CHECK(hub_cidr_parse("0.0.0.0/0", &c) == 0 && c.prefix == 0);
    CHECK(hub_cidr_parse("10.0.0.0/33", &c) == HUB_EINVAL);
    CHECK(hub_cidr_parse("10.0.0.0/", &c) == HUB_EINVAL);
    CHECK(hub_cidr_parse("10.0.0.0/-1", &c) == HUB_EINVAL);
    CHECK(hub_cidr_parse("10.0.0.0/8x", &c) == HUB_EINVAL);
    CHECK(hub_cidr_parse("::/129", &c) == HUB_EINVAL);
    CHECK(hub_cidr_parse("proxy.example", &c) == HUB_EINVAL);
    CHECK(hub_cidr_parse("", &c) == HUB_EINVAL);
    CHECK(hub_cidr_parse("/8", &c) == HUB_EINVAL);

    CHECK(in("10.0.0.0/8", "10.200.1.1"));
    CHECK(!in("10.0.0.0/8", "11.0.0.1"));
    CHECK(in("172.16.0.0/12", "172.31.255.255"));
    CHECK(!in("172.16.0.0/12", "172.32.0.0"));
    CHECK(in("127.0.0.1/32", "127.0.0.1"));
    CHECK(!in("127.0.0.1/32", "127.0.0.2"));
    CHECK(in("127.0.0.1/32", "::ffff:127.0.0.1")); /* v4-mapped counts as v4 */
    CHECK(!in("127.0.0.1/32", "::1"));
    CHECK(in("fd00::/8", "fd12:3456::1"));
    CHECK(!in("fd00::/8", "fe80::1"));
    CHECK(in("0.0.0.0/0", "203.0.113.9"));
    CHECK(!in("0.0.0.0/0", "2001:db8::1"));

    struct sockaddr_storage ss;
    struct hub_iov h1 = {"192.0.2.1:4711", 14}, h2 = {"[2001:db8::1]:80", 16},
                   h3 = {"\"[2001:db8::2]\"", 15}, h4 = {" 2001:db8::3 ", 13},
                   bad1 = {"unknown", 7}, bad2 = {"_hidden", 7}, bad3 = {"[::1", 4},
                   bad4 = {"1.2.3.4.5", 9}, bad5 = {"", 0};
    CHECK(hub_proxy_parse_hop(h1, &ss) == 0 && ss.ss_family == AF_INET);
    CHECK(hub_proxy_parse_hop(h2, &ss) == 0 && ss.ss_family == AF_INET6);
    CHECK(hub_proxy_parse_hop(h3, &ss) == 0 && ss.ss_family == AF_INET6);
    CHECK(hub_proxy_parse_hop(h4, &ss) == 0 && ss.ss_family == AF_INET6);
    CHECK(hub_proxy_parse_hop(bad1, &ss) == HUB_EINVAL);
    CHECK(hub_proxy_parse_hop(bad2, &ss) == HUB_EINVAL);
    CHECK(hub_proxy_parse_hop(bad3, &ss) == HUB_EINVAL);
    CHECK(hub_proxy_parse_hop(bad4, &ss) == HUB_EINVAL);
    CHECK(hub_proxy_parse_hop(bad5, &ss) == HUB_EINVAL);

    static const char *const lo[] = {"127.0.0.1/32"};
    static const char *const two[] = {"127.0.0.1/32", "10.0.0.0/8"};
    /* Untrusted peers: their headers mean nothing. */
    CHECK(strcmp(client(lo, 1, "192.0.2.50", "203.0.113.1", ""), "-") == 0);
    CHECK(strcmp(client(NULL, 0, "127.0.0.1", "203.0.113.1", ""), "-") == 0);
    /* One proxy: the last hop. */
    CHECK(strcmp(client(lo, 1, "127.0.0.1", "203.0.113.1", ""), "203.0.113.1") == 0);
    /* The client wrote a fake hop on the left: the rightmost untrusted wins. */
    CHECK(strcmp(client(lo, 1, "127.0.0.1", "6.6.6.6, 203.0.113.1", ""), "203.0.113.1") == 0);
    /* Two proxies: skip the trusted inner hop. */
    CHECK(strcmp(client(two, 2, "127.0.0.1", "6.6.6.6, 203.0.113.1, 10.1.1.1", ""),
                 "203.0.113.1") == 0);
    /* Everything trusted: the leftmost. */
    CHECK(strcmp(client(two, 2, "127.0.0.1", "10.0.0.9,10.1.1.1", ""), "10.0.0.9") == 0);
    /* A hop that does not parse stops the walk at the last good trusted hop. */
    CHECK(strcmp(client(two, 2, "127.0.0.1", "203.0.113.1, unknown, 10.1.1.1", ""), "10.1.1.1") ==
          0);
    CHECK(strcmp(client(lo, 1, "127.0.0.1", "garbage", ""), "-") == 0);
    /* Empty elements are skipped; ports and IPv6 are understood. */
    CHECK(strcmp(client(lo, 1, "127.0.0.1", "203.0.113.1:5555 , ", ""), "203.0.113.1") == 0);
    CHECK(strcmp(client(lo, 1, "127.0.0.1", "2001:db8::7", ""), "2001:db8::7") == 0);
    /* Forwarded, when there is no X-Forwarded-For. */
    CHECK(strcmp(client(lo, 1, "127.0.0.1", "", "for=203.0.113.2;proto=https"), "203.0.113.2") ==
          0);
    CHECK(strcmp(client(lo, 1, "127.0.0.1", "",
                        "for=6.6.6.6, for=\"[2001:db8::9]:4711\";proto=https;by=10.0.0.1"),
                 "2001:db8::9") == 0);
    CHECK(strcmp(client(lo, 1, "127.0.0.1", "", "For=203.0.113.3"), "203.0.113.3") == 0);
    CHECK(strcmp(client(lo, 1, "127.0.0.1", "", "for=unknown"), "-") == 0);
    CHECK(strcmp(client(lo, 1, "127.0.0.1", "", "proto=https"), "-") == 0);
    /* X-Forwarded-For wins over Forwarded. */
    CHECK(strcmp(client(lo, 1, "127.0.0.1", "203.0.113.4", "for=203.0.113.5"), "203.0.113.4") == 0);
    /* A v4-mapped peer is matched as IPv4. */
    CHECK(strcmp(client(lo, 1, "::ffff:127.0.0.1", "203.0.113.6", ""), "203.0.113.6") == 0);
    return CHECK_DONE();
}
