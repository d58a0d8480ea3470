/*
 * test_origin.c: the Origin policy table.
 */
#include "check.h"
#include "hub/origin.h"

static int allowed(const char *const *allow, size_t n, const char *origin, const char *host)
{
    struct hub_origin_policy p = {allow, n};
    struct hub_iov o = {origin, strlen(origin)}, h = {host, strlen(host)};
    return hub_origin_allowed(&p, o, h);
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
    return CHECK_DONE();
}
