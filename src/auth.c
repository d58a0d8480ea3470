/*
 * auth.c: HS256 JSON Web Tokens (see auth.h).
 *
 * A token is three base64url parts, header.payload.signature. The order of
 * the checks matters: size, shape, header (alg), then the signature over
 * the first two parts, and only then the payload's claims, so nothing an
 * attacker wrote without the secret is interpreted beyond the header.
 * The HMAC is OpenSSL's; only the JWT framing is done here.
 */
#include "hub/auth.h"
#include "hub/base64.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef HUB_HAVE_AUTH
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#endif

struct hub_auth {
    size_t len;
    unsigned char secret[];
};

int hub_auth_available(void)
{
#ifdef HUB_HAVE_AUTH
    return 1;
#else
    return 0;
#endif
}

static void set_err(char *err, size_t errsz, const char *msg)
{
    if (err != NULL && errsz > 0)
        snprintf(err, errsz, "%s", msg);
}

int hub_auth_open(struct hub_auth **out, const void *secret, size_t len, char *err, size_t errsz)
{
    *out = NULL;
    if (!hub_auth_available()) {
        set_err(err, errsz, "this build has no token support (built without libcrypto)");
        return HUB_EINVAL;
    }
    if (len < HUB_AUTH_SECRET_MIN) {
        if (err != NULL && errsz > 0)
            snprintf(err, errsz, "the secret has %zu bytes; at least %d are needed", len,
                     HUB_AUTH_SECRET_MIN);
        return HUB_EINVAL;
    }
    if (len > HUB_AUTH_SECRET_MAX) {
        set_err(err, errsz, "the secret is longer than 4096 bytes");
        return HUB_EINVAL;
    }
    struct hub_auth *a = malloc(sizeof(*a) + len);
    if (a == NULL)
        return HUB_ENOMEM;
    a->len = len;
    memcpy(a->secret, secret, len);
    *out = a;
    return 0;
}

static int is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

int hub_auth_open_file(struct hub_auth **out, const char *path, char *err, size_t errsz)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        if (err != NULL && errsz > 0)
            snprintf(err, errsz, "%s: %s", path, strerror(errno));
        return HUB_EIO;
    }
    /* One byte more than the limit tells a file that is too long. */
    unsigned char buf[HUB_AUTH_SECRET_MAX + 1];
    size_t n = fread(buf, 1, sizeof(buf), f);
    int failed = ferror(f);
    fclose(f);
    if (failed) {
        if (err != NULL && errsz > 0)
            snprintf(err, errsz, "%s: read error", path);
        return HUB_EIO;
    }
    size_t start = 0, end = n;
    while (start < end && is_space(buf[start]))
        start++;
    while (end > start && is_space(buf[end - 1]))
        end--;
    char why[160] = "";
    int rc;
    if (n > HUB_AUTH_SECRET_MAX) {
        snprintf(why, sizeof(why), "the file is longer than %d bytes", HUB_AUTH_SECRET_MAX);
        rc = HUB_EINVAL;
    } else {
        rc = hub_auth_open(out, buf + start, end - start, why, sizeof(why));
    }
    if (rc == HUB_EINVAL && err != NULL && errsz > 0)
        snprintf(err, errsz, "%s: %s", path, why);
#ifdef HUB_HAVE_AUTH
    OPENSSL_cleanse(buf, sizeof(buf));
#else
    memset(buf, 0, sizeof(buf));
#endif
    return rc;
}

void hub_auth_free(struct hub_auth *a)
{
    if (a == NULL)
        return;
#ifdef HUB_HAVE_AUTH
    OPENSSL_cleanse(a->secret, a->len);
#endif
    free(a);
}

void hub_auth_identity_clear(struct hub_auth_identity *id)
{
    free(id->sub);
    free(id->name);
    for (size_t i = 0; i < id->nrooms; i++)
        free(id->rooms[i]);
    free(id->rooms);
    free(id->prefix);
    memset(id, 0, sizeof(*id));
}

/* Everything below up to hub_auth_verify needs libcrypto's verifier, so a
 * build without it leaves it out (it would be unused). */
#ifdef HUB_HAVE_AUTH

/* ---- claims ------------------------------------------------------------ */

/* A NumericDate (RFC 7519 section 2): an integer or a real number of
 * seconds. Returns 1 and sets *v, or 0 if j is not a number in range. */
static int numeric_date(const json_t *j, int64_t *v)
{
    if (json_is_integer(j)) {
        *v = (int64_t)json_integer_value(j);
        return 1;
    }
    if (json_is_real(j)) {
        double d = json_real_value(j);
        if (!(d > -9.0e15 && d < 9.0e15))
            return 0;
        *v = (int64_t)d;
        return 1;
    }
    return 0;
}

static char *dup_str(const char *s, size_t len)
{
    char *p = malloc(len + 1);
    if (p != NULL) {
        memcpy(p, s, len);
        p[len] = '\0';
    }
    return p;
}

/* Copies the rooms claim. Returns 0, HUB_EINVAL (*why set) or HUB_ENOMEM. */
static int take_rooms(struct hub_auth_identity *id, const json_t *rooms, const char **why)
{
    if (!json_is_array(rooms)) {
        *why = "rooms must be a list of room names";
        return HUB_EINVAL;
    }
    size_t n = json_array_size(rooms);
    if (n > HUB_AUTH_ROOMS_MAX) {
        *why = "rooms lists more than 64 entries";
        return HUB_EINVAL;
    }
    /* One more than needed so an empty claim still allocates: rooms is
     * non-NULL exactly when the token has the claim. */
    id->rooms = calloc(n + 1, sizeof(*id->rooms));
    id->prefix = calloc(n + 1, 1);
    if (id->rooms == NULL || id->prefix == NULL)
        return HUB_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const json_t *r = json_array_get(rooms, i);
        size_t len = json_string_length(r);
        if (!json_is_string(r) || len == 0 || len > 256) {
            *why = "rooms entries must be room names (1 to 255 bytes, or a prefix ending in *)";
            return HUB_EINVAL;
        }
        const char *s = json_string_value(r);
        int prefix = s[len - 1] == '*';
        if (prefix)
            len--;
        if (!prefix && len > 255) {
            *why = "rooms entries must be room names (1 to 255 bytes, or a prefix ending in *)";
            return HUB_EINVAL;
        }
        id->rooms[i] = dup_str(s, len);
        if (id->rooms[i] == NULL)
            return HUB_ENOMEM;
        id->prefix[i] = (unsigned char)prefix;
        id->nrooms = i + 1;
    }
    return 0;
}

/* Reads the verified payload's claims into id. Returns 0, HUB_EINVAL (*why
 * set) or HUB_ENOMEM. */
static int take_claims(struct hub_auth_identity *id, const json_t *p, int64_t now, const char **why)
{
    const json_t *exp = json_object_get(p, "exp");
    const json_t *nbf = json_object_get(p, "nbf");
    const json_t *iat = json_object_get(p, "iat");
    int64_t t;
    if (exp == NULL) {
        *why = "missing exp (tokens must expire)";
        return HUB_EINVAL;
    }
    if (!numeric_date(exp, &t)) {
        *why = "exp must be a number of seconds";
        return HUB_EINVAL;
    }
    if (now > t + HUB_AUTH_LEEWAY_S) {
        *why = "token expired";
        return HUB_EINVAL;
    }
    id->exp = t;
    if (nbf != NULL) {
        if (!numeric_date(nbf, &t)) {
            *why = "nbf must be a number of seconds";
            return HUB_EINVAL;
        }
        if (now + HUB_AUTH_LEEWAY_S < t) {
            *why = "token not yet valid (nbf)";
            return HUB_EINVAL;
        }
    }
    if (iat != NULL && !numeric_date(iat, &t)) {
        *why = "iat must be a number of seconds";
        return HUB_EINVAL;
    }

    const json_t *sub = json_object_get(p, "sub");
    if (!json_is_string(sub) || json_string_length(sub) == 0) {
        *why = "missing sub (the user id)";
        return HUB_EINVAL;
    }
    if (json_string_length(sub) > HUB_AUTH_SUB_MAX) {
        *why = "sub is longer than 128 bytes";
        return HUB_EINVAL;
    }
    const json_t *name = json_object_get(p, "name");
    if (name != NULL && (!json_is_string(name) || json_string_length(name) == 0)) {
        *why = "name must be a non-empty string";
        return HUB_EINVAL;
    }
    if (name != NULL && json_string_length(name) > HUB_AUTH_NAME_MAX) {
        *why = "name is longer than 100 bytes";
        return HUB_EINVAL;
    }
    const json_t *role = json_object_get(p, "role");
    id->role = HUB_AUTH_USER;
    if (role != NULL) {
        const char *r = json_string_value(role);
        if (r != NULL && strcmp(r, "user") == 0)
            id->role = HUB_AUTH_USER;
        else if (r != NULL && strcmp(r, "mod") == 0)
            id->role = HUB_AUTH_MOD;
        else if (r != NULL && strcmp(r, "admin") == 0)
            id->role = HUB_AUTH_ADMIN;
        else {
            *why = "role must be \"user\", \"mod\" or \"admin\"";
            return HUB_EINVAL;
        }
    }
    const json_t *rooms = json_object_get(p, "rooms");
    if (rooms != NULL) {
        int rc = take_rooms(id, rooms, why);
        if (rc != 0)
            return rc;
    }
    if (name == NULL)
        name = sub;
    id->sub = dup_str(json_string_value(sub), json_string_length(sub));
    id->name = dup_str(json_string_value(name), json_string_length(name));
    if (id->sub == NULL || id->name == NULL)
        return HUB_ENOMEM;
    return 0;
}

/* Parses a decoded part as a JSON object (duplicate keys refused: two
 * readers could disagree on which one counts). NULL if it is not one. */
static json_t *parse_part(const unsigned char *buf, size_t len)
{
    json_t *j = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, NULL);
    if (j != NULL && !json_is_object(j)) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

/* Checks the header: alg must be HS256; typ, if present, JWT; a crit
 * header names extensions the hub does not know, so it is refused
 * (RFC 7515 section 4.1.11). */
static const char *check_header(const json_t *h)
{
    const char *alg = json_string_value(json_object_get(h, "alg"));
    if (alg == NULL || strcmp(alg, "HS256") != 0)
        return "unsupported alg (HS256 only)";
    const json_t *typ = json_object_get(h, "typ");
    if (typ != NULL && (!json_is_string(typ) || (strcmp(json_string_value(typ), "JWT") != 0 &&
                                                 strcmp(json_string_value(typ), "jwt") != 0)))
        return "unsupported typ (JWT only)";
    if (json_object_get(h, "crit") != NULL)
        return "unsupported crit header";
    return NULL;
}

#endif /* HUB_HAVE_AUTH */

int hub_auth_verify(const struct hub_auth *a, const char *token, size_t len, int64_t now,
                    struct hub_auth_identity *id, const char **why)
{
    memset(id, 0, sizeof(*id));
    *why = "malformed token";
    if (len > HUB_AUTH_TOKEN_MAX) {
        *why = "token too long";
        return HUB_EINVAL;
    }
#ifndef HUB_HAVE_AUTH
    (void)a;
    (void)token;
    (void)now;
    *why = "this build has no token support";
    return HUB_EINVAL;
#else
    const char *dot1 = memchr(token, '.', len);
    if (dot1 == NULL)
        return HUB_EINVAL;
    const char *dot2 = memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token));
    if (dot2 == NULL || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)) != NULL)
        return HUB_EINVAL;
    size_t hlen = (size_t)(dot1 - token);
    size_t plen = (size_t)(dot2 - dot1 - 1);
    size_t slen = len - (size_t)(dot2 + 1 - token);
    /* An empty signature ("alg":"none" tokens have one) is judged after
     * the header, so the reason names the alg. */
    if (hlen == 0 || plen == 0)
        return HUB_EINVAL;

    unsigned char part[HUB_AUTH_TOKEN_MAX];
    long n = hub_base64url_decode(token, hlen, part, sizeof(part));
    if (n <= 0)
        return HUB_EINVAL;
    json_t *header = parse_part(part, (size_t)n);
    if (header == NULL)
        return HUB_EINVAL;
    const char *bad = check_header(header);
    json_decref(header);
    if (bad != NULL) {
        *why = bad;
        return HUB_EINVAL;
    }

    unsigned char sig[HUB_AUTH_TOKEN_MAX];
    long sn = slen == 0 ? 0 : hub_base64url_decode(dot2 + 1, slen, sig, sizeof(sig));
    if (sn < 0)
        return HUB_EINVAL;
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    if (HMAC(EVP_sha256(), a->secret, (int)a->len, (const unsigned char *)token, hlen + 1 + plen,
             mac, &maclen) == NULL)
        return HUB_ENOMEM;
    /* The length is public (32 for HS256); the bytes are compared in
     * constant time. */
    if (sn != (long)maclen || CRYPTO_memcmp(sig, mac, maclen) != 0) {
        *why = "bad signature";
        return HUB_EINVAL;
    }

    n = hub_base64url_decode(dot1 + 1, plen, part, sizeof(part));
    if (n <= 0)
        return HUB_EINVAL;
    json_t *payload = parse_part(part, (size_t)n);
    if (payload == NULL) {
        *why = "malformed claims (not a JSON object)";
        return HUB_EINVAL;
    }
    int rc = take_claims(id, payload, now, why);
    json_decref(payload);
    if (rc != 0)
        hub_auth_identity_clear(id);
    return rc;
#endif
}

int hub_auth_room_allowed(const struct hub_auth_identity *id, const char *room, size_t len)
{
    if (id->rooms == NULL)
        return 1;
    for (size_t i = 0; i < id->nrooms; i++) {
        size_t rl = strlen(id->rooms[i]);
        if (id->prefix[i] ? (rl <= len && memcmp(id->rooms[i], room, rl) == 0)
                          : (rl == len && memcmp(id->rooms[i], room, len) == 0))
            return 1;
    }
    return 0;
}

const char *hub_auth_role_name(int role)
{
    switch (role) {
    case HUB_AUTH_MOD:
        return "mod";
    case HUB_AUTH_ADMIN:
        return "admin";
    default:
        return "user";
    }
}
