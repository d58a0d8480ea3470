/*
 * test_origin.c: the Origin policy table.
 */
#include "check.h"
#include "hub/access.h"
#include "hub/origin.h"

#include <uv.h>

static int allowed(const char *const *allow, size_t n, const char *origin, const char *host)
{
    struct hub_origin_policy p = {allow, n, 0};
    struct hub_iov o = {origin, strlen(origin)}, h = {host, strlen(host)};
    return hub_origin_allowed(&p, o, h);
}

/* hub_origin_admit with local_dev set as on a loopback-only hub. */
static int admitted(const char *const *allow, size_t n, int local_dev, const char *origin,
                    const char *host)
{
    struct hub_origin_policy p = {allow, n, local_dev};
    struct hub_iov o = {origin, strlen(origin)}, h = {host, strlen(host)};
    return hub_origin_admit(&p, o, h);
}

static int is_local(const char *origin)
{
    struct hub_iov o = {origin, strlen(origin)};
    return hub_origin_is_local_dev(o);
}

static int v4_loopback(const char *text)
{
    struct sockaddr_in in;
    CHECK(uv_ip4_addr(text, 80, &in) == 0);
    return hub_addr_is_loopback((const struct sockaddr *)&in);
}

static int v6_loopback(const char *text)
{
    struct sockaddr_in6 in;
    CHECK(uv_ip6_addr(text, 80, &in) == 0);
    return hub_addr_is_loopback((const struct sockaddr *)&in);
}

static void test_local_dev(void)
{
    /* Which origins count as local development. */
    CHECK(is_local("null"));
    CHECK(is_local("NULL"));
    CHECK(is_local("http://localhost"));
    CHECK(is_local("http://localhost:3000"));
    CHECK(is_local("https://localhost:8443"));
    CHECK(is_local("http://127.0.0.1:5500"));
    CHECK(is_local("http://[::1]:8000"));
    CHECK(is_local("http://LocalHost:1"));
    CHECK(!is_local("http://localhost.evil.example"));
    CHECK(!is_local("http://localhost.:3000"));
    CHECK(!is_local("http://127.0.0.1.evil.example:80"));
    CHECK(!is_local("http://127.0.0.2:3000"));
    CHECK(!is_local("http://localhost:3000x"));
    CHECK(!is_local("http://localhost:"));
    CHECK(!is_local("http://localhost:123456"));
    CHECK(!is_local("http://localhost:3000/"));
    CHECK(!is_local("ftp://localhost:21"));
    CHECK(!is_local("chrome-extension://abc"));
    CHECK(!is_local("nullx"));
    CHECK(!is_local(""));

    /* Admitted on a loopback hub only. */
    CHECK(admitted(NULL, 0, 1, "null", "127.0.0.1:8080"));
    CHECK(admitted(NULL, 0, 1, "http://localhost:5173", "127.0.0.1:8080"));
    CHECK(!admitted(NULL, 0, 0, "null", "127.0.0.1:8080"));
    CHECK(!admitted(NULL, 0, 0, "http://localhost:5173", "127.0.0.1:8080"));
    CHECK(!admitted(NULL, 0, 1, "http://evil.example", "127.0.0.1:8080"));
    /* hub_origin_admit keeps everything hub_origin_allowed admits. */
    CHECK(admitted(NULL, 0, 0, "", "hub:80"));
    CHECK(admitted(NULL, 0, 0, "http://hub:80", "hub:80"));
    /* The "null" pattern admits opaque origins anywhere, and only those. */
    static const char *const null_only[] = {"null"};
    CHECK(admitted(null_only, 1, 0, "null", "hub:80"));
    CHECK(!admitted(null_only, 1, 0, "http://evil.example", "hub:80"));

    CHECK(v4_loopback("127.0.0.1"));
    CHECK(v4_loopback("127.1.2.3"));
    CHECK(!v4_loopback("0.0.0.0"));
    CHECK(!v4_loopback("10.0.0.1"));
    CHECK(!v4_loopback("128.0.0.1"));
    CHECK(v6_loopback("::1"));
    CHECK(v6_loopback("::ffff:127.0.0.1"));
    CHECK(!v6_loopback("::"));
    CHECK(!v6_loopback("::ffff:10.0.0.1"));
    CHECK(!v6_loopback("fe80::1"));
}

static void test_messages(void)
{
    char out[512];
    struct hub_iov o = {"http://example.com:3000", 23};
    size_t n = hub_origin_refusal(o, out, sizeof(out));
    CHECK(n == strlen(out));
    CHECK(strstr(out, "pages at http://example.com:3000.") != NULL);
    CHECK(strstr(out, "--allow-origin http://example.com:3000\n") != NULL);
    /* Control bytes, quotes and anything past 200 bytes never reach a log. */
    struct hub_iov bad = {"http://a\r\n\"b'", 13};
    n = hub_origin_suggest(bad, out, sizeof(out));
    CHECK(n == 13);
    CHECK(strcmp(out, "http://a???b?") == 0);
    char longer[300];
    memset(longer, 'a', sizeof(longer));
    struct hub_iov big = {longer, sizeof(longer)};
    CHECK(hub_origin_suggest(big, out, sizeof(out)) == 200);
    CHECK(hub_origin_suggest(big, out, 10) == 9 && strlen(out) == 9);
    /* A small buffer truncates and stays NUL-terminated. */
    n = hub_origin_refusal(o, out, 20);
    CHECK(n == 19 && strlen(out) == 19);
}

int main(void)
{
    /* Default: same origin only; no Origin means not a browser. */
    CHECK(allowed(NULL, 0, "", "localhost:8080"));
    CHECK(allowed(NULL, 0, "http://localhost:8080", "localhost:8080"));
    CHECK(allowed(NULL, 0, "http://LOCALHOST:8080", "localhost:8080"));
    CHECK(!allowed(NULL, 0, "http://localhost:8081", "localhost:8080"));
    CHECK(!allowed(NULL, 0, "http://evil.example", "localhost:8080"));
    CHECK(!allowed(NULL, 0, "null", "localhost:8080"));
    CHECK(!allowed(NULL, 0, "http://localhost:8080/path", "localhost:8080"));
    CHECK(!allowed(NULL, 0, "localhost:8080", "localhost:8080"));

    static const char *const list[] = {"https://chat.example.com", "https://*.corp.example",
                                       "*.dev.example", "box.example:8443"};
    size_t n = HUB_ARRAY_SIZE(list);
    CHECK(allowed(list, n, "https://chat.example.com", "hub:80"));
    CHECK(!allowed(list, n, "http://chat.example.com", "hub:80"));
    CHECK(!allowed(list, n, "https://chat.example.com.evil", "hub:80"));
    CHECK(allowed(list, n, "https://a.corp.example", "hub:80"));
    CHECK(allowed(list, n, "https://a.b.corp.example", "hub:80"));
    CHECK(!allowed(list, n, "https://corp.example", "hub:80"));
    CHECK(!allowed(list, n, "https://evilcorp.example", "hub:80"));
    CHECK(!allowed(list, n, "http://a.corp.example", "hub:80"));
    CHECK(allowed(list, n, "http://x.dev.example:3000", "hub:80"));
    CHECK(allowed(list, n, "https://x.dev.example", "hub:80"));
    CHECK(allowed(list, n, "http://box.example:8443", "hub:80"));
    CHECK(!allowed(list, n, "http://box.example:8444", "hub:80"));

    static const char *const any[] = {"*"};
    CHECK(allowed(any, 1, "http://anything.example", "hub:80"));
    CHECK(allowed(any, 1, "null", "hub:80"));
    test_local_dev();
    test_messages();
    return CHECK_DONE();
}
