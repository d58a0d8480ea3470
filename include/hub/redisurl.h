/*
 * redisurl.h: parsing of redis://[[user]:password@]host[:port][/db] URLs.
 *
 * A separate module so it can be tested without hiredis and so server.c can
 * check --redis values before it opens the engine. The parser accepts only
 * what the engine can use: a host name or IPv4 literal or [IPv6] literal,
 * a port 1..65535 (6379 when absent), a database 0..15 (0 when absent), and an
 * optional password (with an optional ACL user name before the colon).
 * Percent-escapes are decoded in the user and password.
 */
#ifndef HUB_REDISURL_H
#define HUB_REDISURL_H

#include <stddef.h>

#define HUB_REDISURL_FIELD_MAX 255

struct hub_redisurl {
    char host[HUB_REDISURL_FIELD_MAX + 1];     /* host name or IP literal, no brackets */
    char user[HUB_REDISURL_FIELD_MAX + 1];     /* ACL user, "" for none */
    char password[HUB_REDISURL_FIELD_MAX + 1]; /* "" for none */
    int has_password;                          /* 1 if the URL gave one (may be empty) */
    int port;                                  /* 1..65535 */
    int db;                                    /* 0..15 */
};

/* Parses url (borrowed) into out. Returns 0, or HUB_EINVAL with a one-line
 * reason in err (errsz bytes, may be 0). */
int hub_redisurl_parse(const char *url, struct hub_redisurl *out, char *err, size_t errsz);

#endif
