/*
 * auth.h: connection tokens. The application a chat lives in signs a JSON
 * Web Token (RFC 7519) with a secret it shares with the hub, HS256 only
 * (HMAC-SHA-256, RFC 7518 section 3.2); the client hands the token to the
 * hub in hello (or as ?token= on a raw-mode URL), and the hub trusts its
 * claims: who the user is (sub), the name shown (name), the role, the rooms
 * the user may join, and until when (exp).
 *
 * Sans-I/O and pure except hub_auth_open_file: the caller passes the time.
 * The signature is checked in constant time (CRYPTO_memcmp) before anything
 * of the payload is believed; the header must say alg HS256 (never "none",
 * never another algorithm: the key type is fixed by the hub, not the token).
 *
 * Built only with libcrypto (OpenSSL 3, meson -Dauth=auto): without it
 * hub_auth_available() is 0 and the open calls fail with HUB_EINVAL and a
 * reason, so the hub refuses --auth-secret-file clearly.
 */
#ifndef HUB_AUTH_H
#define HUB_AUTH_H

#include "hub/common.h"

#include <stddef.h>
#include <stdint.h>

#define HUB_AUTH_SECRET_MIN 32   /* bytes of secret, at least (RFC 7518 3.2) */
#define HUB_AUTH_SECRET_MAX 4096 /* bytes of secret file, at most */
#define HUB_AUTH_TOKEN_MAX 4096  /* bytes of a token, at most */
#define HUB_AUTH_SUB_MAX 128     /* bytes of the sub claim */
#define HUB_AUTH_NAME_MAX 100    /* bytes of the name claim (a nick's byte cap) */
#define HUB_AUTH_ROOMS_MAX 64    /* entries of the rooms claim */
#define HUB_AUTH_LEEWAY_S 30     /* clock skew allowed for exp and nbf */

enum hub_auth_role {
    HUB_AUTH_USER = 0,  /* the default */
    HUB_AUTH_MOD = 1,   /* may moderate */
    HUB_AUTH_ADMIN = 2, /* may moderate, hub-wide */
};

struct hub_auth;

/* What a valid token says. Strings are NUL-terminated copies owned by the
 * identity; free with hub_auth_identity_clear. */
struct hub_auth_identity {
    char *sub;             /* the user id (1..HUB_AUTH_SUB_MAX bytes) */
    char *name;            /* the name to show: the name claim, else sub */
    int role;              /* enum hub_auth_role */
    int64_t exp;           /* expiry, seconds since the Unix epoch */
    char **rooms;          /* the rooms claim: names, or prefixes where the entry
                              ended in '*' (the '*' removed, see prefix[]);
                              NULL when the token has no rooms claim (any room) */
    unsigned char *prefix; /* prefix[i] is 1 if rooms[i] is a prefix */
    size_t nrooms;         /* entries in rooms (0 with a claim of []: no room) */
};

/* Returns 1 if this build can verify tokens (it has libcrypto). */
int hub_auth_available(void);

/* Makes a verifier for secret (len bytes, copied). Returns 0; HUB_EINVAL
 * with a reason in err when the secret is shorter than HUB_AUTH_SECRET_MIN
 * or the build has no libcrypto; HUB_ENOMEM. */
int hub_auth_open(struct hub_auth **out, const void *secret, size_t len, char *err, size_t errsz);

/* Reads the secret from path (surrounding whitespace stripped) and opens a
 * verifier. Returns 0; HUB_EIO (the file cannot be read: err names the path
 * and the reason); HUB_EINVAL (too short, too long, or no libcrypto; err
 * says which); HUB_ENOMEM. */
int hub_auth_open_file(struct hub_auth **out, const char *path, char *err, size_t errsz);

/* Frees the verifier, wiping the secret. NULL is ignored. */
void hub_auth_free(struct hub_auth *a);

/* Verifies token (len bytes, need not be NUL-terminated) at time now
 * (seconds since the Unix epoch) and fills id. Returns 0; HUB_EINVAL with
 * *why set to a static one-line reason that never contains the secret:
 * "token too long", "malformed token", "unsupported alg (HS256 only)",
 * "bad signature", "token expired", "token not yet valid", "missing sub",
 * "missing exp", and the like; HUB_ENOMEM. On failure id is left empty. */
int hub_auth_verify(const struct hub_auth *a, const char *token, size_t len, int64_t now,
                    struct hub_auth_identity *id, const char **why);

/* Frees what id holds and empties it. Safe on an empty identity. */
void hub_auth_identity_clear(struct hub_auth_identity *id);

/* Returns 1 if id may join room (len bytes): no rooms claim, or a name in
 * it equals room, or a prefix in it starts room. */
int hub_auth_room_allowed(const struct hub_auth_identity *id, const char *room, size_t len);

/* Returns the role's name ("user", "mod", "admin"). */
const char *hub_auth_role_name(int role);

#endif
