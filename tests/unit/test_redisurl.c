/*
 * test_redisurl.c: redis:// URL parsing, good and bad inputs.
 */
#include "hub/common.h"
#include "hub/redisurl.h"

#include "check.h"

static void good(const char *url, const char *host, int port, int db, const char *user,
                 const char *pw, int has_pw)
{
    struct hub_redisurl u;
    char err[200];
    int rc = hub_redisurl_parse(url, &u, err, sizeof(err));
    CHECK_EQ(rc, 0);
    if (rc != 0) {
        fprintf(stderr, "  %s: %s\n", url, err);
        return;
    }
    CHECK_STR(u.host, host);
    CHECK_EQ(u.port, port);
    CHECK_EQ(u.db, db);
    CHECK_STR(u.user, user);
    CHECK_STR(u.password, pw);
    CHECK_EQ(u.has_password, has_pw);
}

static void bad(const char *url)
{
    struct hub_redisurl u;
    char err[200] = "";
    CHECK_EQ(hub_redisurl_parse(url, &u, err, sizeof(err)), HUB_EINVAL);
    CHECK(err[0] != '\0');
}

int main(void)
{
    good("redis://127.0.0.1:6379", "127.0.0.1", 6379, 0, "", "", 0);
    good("redis://localhost", "localhost", 6379, 0, "", "", 0);
    good("redis://h:1/15", "h", 1, 15, "", "", 0);
    good("redis://:s3cret@10.0.0.2:7000/2", "10.0.0.2", 7000, 2, "", "s3cret", 1);
    good("redis://app:p%40ss@db:6380", "db", 6380, 0, "app", "p@ss", 1);
    good("redis://[::1]:6390/1", "::1", 6390, 1, "", "", 0);
    good("redis://[::1]", "::1", 6379, 0, "", "", 0);
    good("redis://h/", "h", 6379, 0, "", "", 0);
    bad("http://h:1");
    bad("redis://");
    bad("redis://:pw@");
    bad("redis://h:0");
    bad("redis://h:65536");
    bad("redis://h:12x");
    bad("redis://h/16");
    bad("redis://h/x");
    bad("redis://pw@h");
    bad("redis://[::1");
    bad("redis://[::1]x");
    bad("redis://h o:1");
    bad("redis://:%zz@h");
    bad("redis://:%4@h");
    bad("redis://:%00@h");
    return CHECK_DONE();
}
