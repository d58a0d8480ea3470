/*
 * test_access.c: the Host name policy and CIDR networks (access.h).
 */
#include "check.h"
#include "hub/access.h"

#include <string.h>

static int host_ok(int loopback_only, const char *const *names, size_t n, const char *host)
{
    struct hub_host_policy p = {loopback_only, names, n};
    struct hub_iov h = {host, strlen(host)};
    return hub_host_allowed(&p, h);
}

static void test_hosts(void)
{
    /* A public hub without --server-name: anything goes, as before. */
    CHECK(host_ok(0, NULL, 0, "evil.example"));
    CHECK(host_ok(0, NULL, 0, ""));

    /* Loopback only: the three loopback names, any port, any case. */
    CHECK(host_ok(1, NULL, 0, "localhost"));
    CHECK(host_ok(1, NULL, 0, "LocalHost:8080"));
    CHECK(host_ok(1, NULL, 0, "localhost.:1"));
    CHECK(host_ok(1, NULL, 0, "127.0.0.1:65535"));
    CHECK(host_ok(1, NULL, 0, "[::1]"));
    CHECK(host_ok(1, NULL, 0, "[::1]:8080"));
    CHECK(!host_ok(1, NULL, 0, "evil.example"));
    CHECK(!host_ok(1, NULL, 0, "evil.example:8080"));
    CHECK(!host_ok(1, NULL, 0, "localhost.evil.example"));
    CHECK(!host_ok(1, NULL, 0, "127.0.0.1.nip.io"));
    CHECK(!host_ok(1, NULL, 0, "127.0.0.2"));
    CHECK(!host_ok(1, NULL, 0, "[::2]"));
    CHECK(!host_ok(1, NULL, 0, ""));
    CHECK(!host_ok(1, NULL, 0, ":8080"));
    CHECK(!host_ok(1, NULL, 0, "[::1"));

    /* --server-name: those names and the loopback names. */
    static const char *const names[] = {"chat.example", "Other.Example."};
    CHECK(host_ok(0, names, 2, "chat.example"));
    CHECK(host_ok(0, names, 2, "CHAT.example:443"));
    CHECK(host_ok(0, names, 2, "chat.example.:8080"));
    CHECK(host_ok(0, names, 2, "other.example"));
    CHECK(host_ok(0, names, 2, "localhost:8080"));
    CHECK(!host_ok(0, names, 2, "evil.example"));
    CHECK(!host_ok(0, names, 2, "x.chat.example"));
    CHECK(!host_ok(0, names, 2, "chat.example.evil"));
    CHECK(!host_ok(0, names, 2, ""));
    CHECK(host_ok(1, names, 2, "chat.example"));

    CHECK(hub_server_name_valid("chat.example"));
    CHECK(hub_server_name_valid("192.0.2.1"));
    CHECK(hub_server_name_valid("[2001:db8::1]"));
    CHECK(!hub_server_name_valid(""));
    CHECK(!hub_server_name_valid("chat.example:8080"));
    CHECK(!hub_server_name_valid("a b"));
    CHECK(!hub_server_name_valid("[nope]"));
    CHECK(!hub_server_name_valid("*.example"));
}

static struct sockaddr_storage v4(const char *ip)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    CHECK_EQ(uv_ip4_addr(ip, 1234, (struct sockaddr_in *)&ss), 0);
    return ss;
}

static struct sockaddr_storage v6(const char *ip)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    CHECK_EQ(uv_ip6_addr(ip, 1234, (struct sockaddr_in6 *)&ss), 0);
    return ss;
}

static int in(const char *cidr, struct sockaddr_storage ss)
{
    struct hub_cidr c;
    if (hub_cidr_parse(cidr, &c) != 0)
        return -1;
    return hub_cidr_match(&c, (const struct sockaddr *)&ss);
}

static void test_cidr(void)
{
    struct hub_cidr c;
    CHECK_EQ(hub_cidr_parse("127.0.0.1/32", &c), 0);
    CHECK_EQ(c.family, AF_INET);
    CHECK_EQ(c.prefix, 32);
    CHECK_EQ(hub_cidr_parse("10.1.2.3", &c), 0);
    CHECK_EQ(c.prefix, 32);
    CHECK_EQ(hub_cidr_parse("::1", &c), 0);
    CHECK_EQ(c.prefix, 128);
    CHECK_EQ(hub_cidr_parse("0.0.0.0/0", &c), 0);
    CHECK_EQ(hub_cidr_parse("2001:db8::/32", &c), 0);
    CHECK_EQ(hub_cidr_parse("10.0.0.1/8", &c), HUB_EINVAL); /* host bits set */
    CHECK_EQ(hub_cidr_parse("10.0.0.0/33", &c), HUB_EINVAL);
    CHECK_EQ(hub_cidr_parse("10.0.0.0/", &c), HUB_EINVAL);
    CHECK_EQ(hub_cidr_parse("10.0.0.0/x", &c), HUB_EINVAL);
    CHECK_EQ(hub_cidr_parse("10.0.0.0/-1", &c), HUB_EINVAL);
    CHECK_EQ(hub_cidr_parse("/8", &c), HUB_EINVAL);
    CHECK_EQ(hub_cidr_parse("", &c), HUB_EINVAL);
    CHECK_EQ(hub_cidr_parse("example.org/8", &c), HUB_EINVAL);
    CHECK_EQ(hub_cidr_parse("::/129", &c), HUB_EINVAL);

    CHECK_EQ(in("127.0.0.1/32", v4("127.0.0.1")), 1);
    CHECK_EQ(in("127.0.0.1/32", v4("127.0.0.2")), 0);
    CHECK_EQ(in("10.0.0.0/8", v4("10.255.1.2")), 1);
    CHECK_EQ(in("10.0.0.0/8", v4("11.0.0.0")), 0);
    CHECK_EQ(in("192.168.4.0/22", v4("192.168.7.255")), 1);
    CHECK_EQ(in("192.168.4.0/22", v4("192.168.8.0")), 0);
    CHECK_EQ(in("0.0.0.0/0", v4("8.8.8.8")), 1);
    CHECK_EQ(in("10.0.0.0/8", v6("::ffff:10.1.1.1")), 1); /* mapped */
    CHECK_EQ(in("10.0.0.0/8", v6("2001:db8::1")), 0);
    CHECK_EQ(in("2001:db8::/32", v6("2001:db8:ffff::1")), 1);
    CHECK_EQ(in("2001:db8::/32", v6("2001:db9::1")), 0);
    CHECK_EQ(in("2001:db8::/33", v6("2001:db8:8000::")), 0);
    CHECK_EQ(in("::/0", v4("1.2.3.4")), 0); /* families differ */

    struct sockaddr_storage ss = v4("127.0.0.3");
    CHECK_EQ(hub_addr_is_loopback((struct sockaddr *)&ss), 1);
    ss = v4("127.255.255.254");
    CHECK_EQ(hub_addr_is_loopback((struct sockaddr *)&ss), 1);
    ss = v4("128.0.0.1");
    CHECK_EQ(hub_addr_is_loopback((struct sockaddr *)&ss), 0);
    ss = v6("::1");
    CHECK_EQ(hub_addr_is_loopback((struct sockaddr *)&ss), 1);
    ss = v6("::ffff:127.0.0.2");
    CHECK_EQ(hub_addr_is_loopback((struct sockaddr *)&ss), 1);
    ss = v6("::2");
    CHECK_EQ(hub_addr_is_loopback((struct sockaddr *)&ss), 0);
    ss.ss_family = AF_UNSPEC;
    CHECK_EQ(hub_addr_is_loopback((struct sockaddr *)&ss), 0);
}

int main(void)
{
    test_hosts();
    test_cidr();
    return CHECK_DONE();
}
