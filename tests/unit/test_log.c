/*
 * test_log.c: text and JSON lines, escaping, connection events, and the
 * per-address rate limit against an injected clock.
 */
#include "check.h"
#include "hub/log.h"

#include <stdlib.h>

static uint64_t fake_now;
static uint64_t fake_clock(void)
{
    return fake_now;
}

static FILE *sink;

/* Everything logged since the last call, then the sink starts empty. */
static char *drain(void)
{
    static char buf[65536];
    fflush(sink);
    long n = ftell(sink);
    rewind(sink);
    size_t got = fread(buf, 1, n > 0 ? (size_t)n : 0, sink);
    buf[got] = '\0';
    fclose(sink);
    sink = tmpfile();
    hub_log_set_output(sink);
    return buf;
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

int main(void)
{
    sink = tmpfile();
    if (sink == NULL) {
        /* Some platforms (Windows without a writable root) have no tmpfile. */
        puts("1..0 # SKIP tmpfile() failed");
        return 77;
    }
    hub_log_set_output(sink);
    hub_log_set_clock(fake_clock);
    fake_now = 1000000;

    CHECK(hub_log_parse_format("text") == HUB_LOG_TEXT);
    CHECK(hub_log_parse_format("json") == HUB_LOG_JSON);
    CHECK(hub_log_parse_format("xml") == HUB_EINVAL);

    /* Text: "<ts> info  <msg>"; debug is dropped at the default level. */
    hub_log_info("listening on %s", "http://x/");
    hub_log_debug("not shown");
    char *t = drain();
    CHECK(count_lines(t) == 1);
    CHECK(strstr(t, "Z info  listening on http://x/\n") != NULL);

    struct hub_log_conn e = {"close",          "203.0.113.7", "json", NULL, 1000,
                             "normal closure", "client",      1234,   10,   20};
    hub_log_conn(HUB_LOG_INFO, &e);
    t = drain();
    CHECK(strstr(t, "info  203.0.113.7: close mode=json code=1000 reason=\"normal closure\" "
                    "by=client duration_ms=1234 bytes_in=10 bytes_out=20\n") != NULL);

    /* Unset fields are left out; odd bytes are escaped, never raw. */
    struct hub_log_conn r = {"refused", "127.0.0.1", NULL, "a\"b", 403, "x\ny", NULL, -1, -1, -1};
    hub_log_conn(HUB_LOG_INFO, &r);
    t = drain();
    CHECK(strstr(t, "127.0.0.1: refused room=\"a\\\"b\" code=403 reason=\"x\\u000ay\"\n") != NULL);

    /* JSON lines. */
    hub_log_set_format(HUB_LOG_JSON);
    hub_log_warn("a \"quoted\"\tmessage");
    hub_log_conn(HUB_LOG_INFO, &e);
    t = drain();
    CHECK(count_lines(t) == 2);
    CHECK(strstr(t, "\",\"level\":\"warn\",\"msg\":\"a \\\"quoted\\\"\\u0009message\"}\n") != NULL);
    CHECK(strstr(t, "\"level\":\"info\",\"event\":\"close\",\"addr\":\"203.0.113.7\","
                    "\"mode\":\"json\",\"code\":1000,\"reason\":\"normal closure\","
                    "\"by\":\"client\",\"duration_ms\":1234,\"bytes_in\":10,\"bytes_out\":20}\n") !=
          NULL);
    CHECK(strncmp(t, "{\"ts\":\"", 7) == 0);
    hub_log_set_format(HUB_LOG_TEXT);

    /* Rate limit: a burst per address, then one per HUB_LOG_ADDR_EVERY_MS;
     * the next line out says how many were dropped. Other addresses are not
     * affected. */
    fake_now += 100000; /* a full bucket for everyone */
    struct hub_log_conn f = {"refused", "198.51.100.9", NULL, NULL, 503,
                             "per_ip",  NULL,           -1,   -1,   -1};
    for (int i = 0; i < 1000; i++)
        hub_log_conn(HUB_LOG_INFO, &f);
    struct hub_log_conn other = f;
    other.addr = "198.51.100.10";
    hub_log_conn(HUB_LOG_INFO, &other);
    t = drain();
    CHECK_EQ(count_lines(t), HUB_LOG_ADDR_BURST + 1);
    CHECK(strstr(t, "198.51.100.10: refused") != NULL);
    CHECK(strstr(t, "suppressed=") == NULL);
    fake_now += HUB_LOG_ADDR_EVERY_MS - 1;
    hub_log_conn(HUB_LOG_INFO, &f);
    CHECK(drain()[0] == '\0');
    fake_now += 1;
    hub_log_conn(HUB_LOG_INFO, &f);
    hub_log_conn(HUB_LOG_INFO, &f);
    t = drain();
    CHECK_EQ(count_lines(t), 1);
    char want[64];
    snprintf(want, sizeof(want), "suppressed=%d\n", 1000 - HUB_LOG_ADDR_BURST + 1);
    CHECK(strstr(t, want) != NULL);
    /* Plain hub_log lines are never rate-limited. */
    for (int i = 0; i < 100; i++)
        hub_log_info("line %d", i);
    CHECK_EQ(count_lines(drain()), 100);
    /* A level filter applies before the bucket: dropped debug lines cost no tokens. */
    fake_now += 100000;
    for (int i = 0; i < 100; i++)
        hub_log_conn(HUB_LOG_DEBUG, &f);
    for (int i = 0; i < HUB_LOG_ADDR_BURST; i++)
        hub_log_conn(HUB_LOG_INFO, &f);
    t = drain();
    CHECK_EQ(count_lines(t), HUB_LOG_ADDR_BURST);
    /* Only the one line dropped after the last report is reported. */
    CHECK(strstr(t, "suppressed=1\n") != NULL);
    CHECK(strstr(strstr(t, "suppressed=") + 1, "suppressed=") == NULL);

    /* A very long line is cut, still one line. */
    char big[4000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    hub_log_info("%s", big);
    CHECK_EQ(count_lines(drain()), 1);

    hub_log_set_output(NULL);
    fclose(sink);
    return CHECK_DONE();
}
