/*
 * test_auth.c: HS256 token verification. The RFC 7515 appendix A.1 token
 * checks the signature against a published vector; tokens signed here
 * (base64url + HMAC-SHA-256 written in the test) check every claim rule;
 * every truncation and every one-character change of a valid token fails.
 */
#include "hub/auth.h"
#include "hub/common.h"

#include "check.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NOW 1800000000LL

static const char SECRET[] = "0123456789abcdef0123456789abcdef-test-secret";

static size_t b64url(const unsigned char *src, size_t len, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t n = 0, i = 0;
    for (; i + 2 < len; i += 3) {
        uint32_t v = (uint32_t)src[i] << 16 | (uint32_t)src[i + 1] << 8 | src[i + 2];
        out[n++] = tab[v >> 18];
        out[n++] = tab[(v >> 12) & 63];
        out[n++] = tab[(v >> 6) & 63];
        out[n++] = tab[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)src[i] << 16;
        out[n++] = tab[v >> 18];
        out[n++] = tab[(v >> 12) & 63];
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)src[i] << 16 | (uint32_t)src[i + 1] << 8;
        out[n++] = tab[v >> 18];
        out[n++] = tab[(v >> 12) & 63];
        out[n++] = tab[(v >> 6) & 63];
    }
    out[n] = '\0';
    return n;
}

/* Signs header.payload with key into out (capacity 8192). */
static void sign(const char *header, const char *payload, const char *key, char *out)
{
    size_t n = b64url((const unsigned char *)header, strlen(header), out);
    out[n++] = '.';
    n += b64url((const unsigned char *)payload, strlen(payload), out + n);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    HMAC(EVP_sha256(), key, (int)strlen(key), (const unsigned char *)out, n, mac, &maclen);
    out[n++] = '.';
    b64url(mac, maclen, out + n);
}

static const char HS256[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

static struct hub_auth *verifier(void)
{
    struct hub_auth *a = NULL;
    char err[200];
    CHECK_EQ(hub_auth_open(&a, SECRET, strlen(SECRET), err, sizeof(err)), 0);
    return a;
}

/* Expects token to fail with a reason containing want. */
static void refused(struct hub_auth *a, const char *token, const char *want)
{
    struct hub_auth_identity id;
    const char *why = NULL;
    CHECK_EQ(hub_auth_verify(a, token, strlen(token), NOW, &id, &why), HUB_EINVAL);
    CHECK(why != NULL && strstr(why, want) != NULL);
    if (why == NULL || strstr(why, want) == NULL)
        fprintf(stderr, "  wanted \"%s\", got \"%s\" for %.80s\n", want, why ? why : "(null)",
                token);
    CHECK(id.sub == NULL && id.rooms == NULL);
}

static void claims_refused(struct hub_auth *a, const char *payload, const char *want)
{
    char tok[8192];
    sign(HS256, payload, SECRET, tok);
    refused(a, tok, want);
}

static void rfc7515_vector(void)
{
    /* RFC 7515 appendix A.1: the JWK's "k" is the key, base64url. */
    static const char k[] =
        "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
    static const char token[] = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9"
                                ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtc"
                                "GxlLmNvbS9pc19yb290Ijp0cnVlfQ"
                                ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    /* Decode k by hand (a test-side decoder, independent of auth.c). */
    unsigned char key[64];
    size_t n = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (const char *p = k; *p; p++) {
        const char *tab = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        acc = acc << 6 | (uint32_t)(strchr(tab, *p) - tab);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            key[n++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    CHECK_EQ(n, 64);
    struct hub_auth *a = NULL;
    char err[200];
    CHECK_EQ(hub_auth_open(&a, key, n, err, sizeof(err)), 0);
    struct hub_auth_identity id;
    const char *why = NULL;
    /* The signature verifies; the token then lacks the sub chathub needs. */
    CHECK_EQ(hub_auth_verify(a, token, strlen(token), 1300819380 - 100, &id, &why), HUB_EINVAL);
    CHECK_STR(why, "missing sub (the user id)");
    /* And at the vector's own time plus the leeway and one, it is expired. */
    CHECK_EQ(hub_auth_verify(a, token, strlen(token), 1300819380 + 31, &id, &why), HUB_EINVAL);
    CHECK_STR(why, "token expired");
    char bad[sizeof(token)];
    memcpy(bad, token, sizeof(token));
    bad[sizeof(token) - 3] = bad[sizeof(token) - 3] == 'X' ? 'Y' : 'X';
    CHECK_EQ(hub_auth_verify(a, bad, strlen(bad), 1300819380 - 100, &id, &why), HUB_EINVAL);
    CHECK_STR(why, "bad signature");
    hub_auth_free(a);
}

static void good_token(void)
{
    struct hub_auth *a = verifier();
    char tok[8192];
    char payload[512];
    snprintf(
        payload, sizeof(payload),
        "{\"sub\":\"u-42\",\"name\":\"Alice\",\"role\":\"mod\",\"rooms\":[\"lobby\",\"team-*\"],"
        "\"exp\":%lld,\"nbf\":%lld,\"iat\":%lld}",
        NOW + 60, NOW - 5, NOW - 5);
    sign(HS256, payload, SECRET, tok);
    struct hub_auth_identity id;
    const char *why = NULL;
    CHECK_EQ(hub_auth_verify(a, tok, strlen(tok), NOW, &id, &why), 0);
    CHECK_STR(id.sub, "u-42");
    CHECK_STR(id.name, "Alice");
    CHECK_EQ(id.role, HUB_AUTH_MOD);
    CHECK_STR(hub_auth_role_name(id.role), "mod");
    CHECK_EQ(id.exp, NOW + 60);
    CHECK_EQ(id.nrooms, 2);
    CHECK(hub_auth_room_allowed(&id, "lobby", 5));
    CHECK(!hub_auth_room_allowed(&id, "lobby2", 6));
    CHECK(!hub_auth_room_allowed(&id, "lobb", 4));
    CHECK(hub_auth_room_allowed(&id, "team-a", 6));
    CHECK(hub_auth_room_allowed(&id, "team-", 5));
    CHECK(!hub_auth_room_allowed(&id, "team", 4));
    CHECK(!hub_auth_room_allowed(&id, "other", 5));
    hub_auth_identity_clear(&id);
    CHECK(id.sub == NULL);
    hub_auth_identity_clear(&id); /* twice is fine */

    /* Defaults: name is sub, role user, any room; a real-valued exp. */
    snprintf(payload, sizeof(payload), "{\"sub\":\"bob\",\"exp\":%lld.5}", NOW + 1);
    sign("{\"alg\":\"HS256\"}", payload, SECRET, tok);
    CHECK_EQ(hub_auth_verify(a, tok, strlen(tok), NOW, &id, &why), 0);
    CHECK_STR(id.name, "bob");
    CHECK_EQ(id.role, HUB_AUTH_USER);
    CHECK(id.rooms == NULL);
    CHECK(hub_auth_room_allowed(&id, "anything", 8));
    hub_auth_identity_clear(&id);

    /* An empty rooms claim allows no room at all. */
    snprintf(payload, sizeof(payload), "{\"sub\":\"c\",\"rooms\":[],\"exp\":%lld}", NOW + 1);
    sign(HS256, payload, SECRET, tok);
    CHECK_EQ(hub_auth_verify(a, tok, strlen(tok), NOW, &id, &why), 0);
    CHECK(id.rooms != NULL);
    CHECK(!hub_auth_room_allowed(&id, "lobby", 5));
    hub_auth_identity_clear(&id);

    /* The leeway: 29 s past exp and 29 s before nbf are accepted. */
    snprintf(payload, sizeof(payload), "{\"sub\":\"d\",\"exp\":%lld,\"nbf\":%lld}", NOW - 29,
             NOW + 29);
    sign(HS256, payload, SECRET, tok);
    CHECK_EQ(hub_auth_verify(a, tok, strlen(tok), NOW, &id, &why), 0);
    hub_auth_identity_clear(&id);
    hub_auth_free(a);
}

static void bad_tokens(void)
{
    struct hub_auth *a = verifier();
    char tok[8192];
    char payload[512];
    snprintf(payload, sizeof(payload), "{\"sub\":\"eve\",\"exp\":%lld}", NOW + 60);

    /* alg none, with and without a signature; other algorithms. */
    size_t n = b64url((const unsigned char *)"{\"alg\":\"none\"}", 14, tok);
    tok[n++] = '.';
    n += b64url((const unsigned char *)payload, strlen(payload), tok + n);
    tok[n++] = '.';
    tok[n] = '\0';
    refused(a, tok, "unsupported alg");
    sign("{\"alg\":\"none\"}", payload, SECRET, tok);
    refused(a, tok, "unsupported alg");
    sign("{\"alg\":\"HS512\"}", payload, SECRET, tok);
    refused(a, tok, "unsupported alg");
    sign("{\"alg\":\"RS256\"}", payload, SECRET, tok);
    refused(a, tok, "unsupported alg");
    sign("{\"typ\":\"JWT\"}", payload, SECRET, tok);
    refused(a, tok, "unsupported alg");
    sign("{\"alg\":\"HS256\",\"typ\":\"JOSE+JSON\"}", payload, SECRET, tok);
    refused(a, tok, "unsupported typ");
    sign("{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", payload, SECRET, tok);
    refused(a, tok, "crit");
    sign("{\"alg\":\"HS256\",\"alg\":\"none\"}", payload, SECRET, tok);
    refused(a, tok, "malformed");
    sign("[\"HS256\"]", payload, SECRET, tok);
    refused(a, tok, "malformed");

    /* A wrong key. */
    sign(HS256, payload, "another-secret-of-more-than-32-bytes!!", tok);
    refused(a, tok, "bad signature");

    /* Shapes. */
    refused(a, "", "malformed");
    refused(a, "abc", "malformed");
    refused(a, "a.b", "malformed");
    refused(a, "..", "malformed");
    refused(a, "a.b.c.d", "malformed");
    sign(HS256, payload, SECRET, tok);
    char padded[8200];
    snprintf(padded, sizeof(padded), "%s=", tok);
    refused(a, padded, "malformed"); /* padding is not base64url as JWS uses it */
    char *dot = strchr(tok, '.');
    char plus[8200];
    snprintf(plus, sizeof(plus), "%.*s+%s", (int)(dot - tok), tok, dot);
    refused(a, plus, "malformed");

    /* Too long: 64 KiB of token is refused before anything is decoded. */
    size_t big = 64 * 1024;
    char *huge = malloc(big + 1);
    memset(huge, 'A', big);
    huge[10] = '.';
    huge[20] = '.';
    huge[big] = '\0';
    refused(a, huge, "too long");
    free(huge);

    /* Claims. */
    claims_refused(a, "{\"sub\":\"x\"}", "missing exp");
    char p[512];
    snprintf(p, sizeof(p), "{\"sub\":\"x\",\"exp\":%lld}", NOW - 31);
    claims_refused(a, p, "token expired");
    snprintf(p, sizeof(p), "{\"sub\":\"x\",\"exp\":%lld,\"nbf\":%lld}", NOW + 60, NOW + 31);
    claims_refused(a, p, "not yet valid");
    snprintf(p, sizeof(p), "{\"sub\":\"x\",\"exp\":\"%lld\"}", NOW + 60);
    claims_refused(a, p, "exp must be a number");
    snprintf(p, sizeof(p), "{\"sub\":\"x\",\"exp\":%lld,\"iat\":\"now\"}", NOW + 60);
    claims_refused(a, p, "iat must be a number");
    snprintf(p, sizeof(p), "{\"exp\":%lld}", NOW + 60);
    claims_refused(a, p, "missing sub");
    snprintf(p, sizeof(p), "{\"sub\":42,\"exp\":%lld}", NOW + 60);
    claims_refused(a, p, "missing sub");
    snprintf(p, sizeof(p), "{\"sub\":\"\",\"exp\":%lld}", NOW + 60);
    claims_refused(a, p, "missing sub");
    snprintf(p, sizeof(p), "{\"sub\":\"%0129d\",\"exp\":%lld}", 0, NOW + 60);
    claims_refused(a, p, "sub is longer");
    snprintf(p, sizeof(p), "{\"sub\":\"x\",\"name\":\"\",\"exp\":%lld}", NOW + 60);
    claims_refused(a, p, "name must be");
    snprintf(p, sizeof(p), "{\"sub\":\"x\",\"name\":\"%0101d\",\"exp\":%lld}", 0, NOW + 60);
    claims_refused(a, p, "name is longer");
    snprintf(p, sizeof(p), "{\"sub\":\"x\",\"role\":\"root\",\"exp\":%lld}", NOW + 60);
    claims_refused(a, p, "role must be");
    snprintf(p, sizeof(p), "{\"sub\":\"x\",\"rooms\":\"lobby\",\"exp\":%lld}", NOW + 60);
    claims_refused(a, p, "rooms must be a list");
    snprintf(p, sizeof(p), "{\"sub\":\"x\",\"rooms\":[\"\"],\"exp\":%lld}", NOW + 60);
    claims_refused(a, p, "rooms entries");
    snprintf(p, sizeof(p), "{\"sub\":\"x\",\"rooms\":[1],\"exp\":%lld}", NOW + 60);
    claims_refused(a, p, "rooms entries");
    snprintf(p, sizeof(p), "{\"sub\":\"x\",\"sub\":\"admin\",\"exp\":%lld}", NOW + 60);
    claims_refused(a, p, "malformed claims");
    claims_refused(a, "[1,2]", "malformed claims");
    {
        char many[2048];
        size_t m = (size_t)snprintf(many, sizeof(many), "{\"sub\":\"x\",\"rooms\":[");
        for (int i = 0; i < 65; i++)
            m += (size_t)snprintf(many + m, sizeof(many) - m, "%s\"r%d\"", i ? "," : "", i);
        snprintf(many + m, sizeof(many) - m, "],\"exp\":%lld}", NOW + 60);
        claims_refused(a, many, "more than 64");
    }
    hub_auth_free(a);
}

/* A valid token cut at every length, and with each character replaced by
 * another base64url character, never verifies. */
static void every_change_fails(void)
{
    struct hub_auth *a = verifier();
    char tok[8192];
    char payload[256];
    snprintf(payload, sizeof(payload), "{\"sub\":\"frank\",\"role\":\"admin\",\"exp\":%lld}",
             NOW + 60);
    sign(HS256, payload, SECRET, tok);
    size_t len = strlen(tok);
    struct hub_auth_identity id;
    const char *why;
    CHECK_EQ(hub_auth_verify(a, tok, len, NOW, &id, &why), 0);
    hub_auth_identity_clear(&id);
    int cut_ok = 0, change_ok = 0;
    for (size_t i = 0; i < len; i++) {
        if (hub_auth_verify(a, tok, i, NOW, &id, &why) == 0) {
            cut_ok++;
            hub_auth_identity_clear(&id);
        }
        if (tok[i] == '.')
            continue;
        char saved = tok[i];
        tok[i] = saved == 'A' ? 'B' : 'A';
        if (hub_auth_verify(a, tok, len, NOW, &id, &why) == 0) {
            change_ok++;
            hub_auth_identity_clear(&id);
        }
        tok[i] = saved;
    }
    CHECK_EQ(cut_ok, 0);
    CHECK_EQ(change_ok, 0);
    hub_auth_free(a);
}

static void secrets(void)
{
    struct hub_auth *a = NULL;
    char err[300] = "";
    CHECK_EQ(hub_auth_open(&a, "short", 5, err, sizeof(err)), HUB_EINVAL);
    CHECK(strstr(err, "at least 32") != NULL);
    CHECK(a == NULL);

    char path[] = "/tmp/chathub-auth-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    /* Surrounding whitespace is not part of the secret. */
    char content[128];
    int clen = snprintf(content, sizeof(content), "  \n%s\r\n\n", SECRET);
    CHECK_EQ(write(fd, content, (size_t)clen), clen);
    close(fd);
    CHECK_EQ(hub_auth_open_file(&a, path, err, sizeof(err)), 0);
    char tok[8192], payload[128];
    snprintf(payload, sizeof(payload), "{\"sub\":\"g\",\"exp\":%lld}", NOW + 60);
    sign(HS256, payload, SECRET, tok);
    struct hub_auth_identity id;
    const char *why;
    CHECK_EQ(hub_auth_verify(a, tok, strlen(tok), NOW, &id, &why), 0);
    hub_auth_identity_clear(&id);
    hub_auth_free(a);

    /* Only whitespace, or a short secret in the file. */
    FILE *f = fopen(path, "w");
    fputs(" short \n", f);
    fclose(f);
    CHECK_EQ(hub_auth_open_file(&a, path, err, sizeof(err)), HUB_EINVAL);
    CHECK(strstr(err, path) != NULL && strstr(err, "at least 32") != NULL);
    f = fopen(path, "w");
    for (int i = 0; i < 5000; i++)
        fputc('k', f);
    fclose(f);
    CHECK_EQ(hub_auth_open_file(&a, path, err, sizeof(err)), HUB_EINVAL);
    CHECK(strstr(err, "longer than") != NULL);
    unlink(path);
    CHECK_EQ(hub_auth_open_file(&a, path, err, sizeof(err)), HUB_EIO);
    CHECK(strstr(err, path) != NULL && strstr(err, "No such file") != NULL);
    hub_auth_free(NULL);
}

int main(void)
{
    if (!hub_auth_available()) {
        fprintf(stderr, "built without libcrypto: skipped\n");
        return 77;
    }
    rfc7515_vector();
    good_token();
    bad_tokens();
    every_change_fails();
    secrets();
    return CHECK_DONE();
}
