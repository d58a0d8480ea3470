/*
 * test_sha1.c: SHA-1 against FIPS 180 vectors, base64 against RFC 4648, and
 * the two together against RFC 6455's handshake sample.
 */
#include "check.h"
#include "hub/base64.h"
#include "hub/common.h"
#include "hub/sha1.h"

static void hex(const uint8_t *d, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

static void sha1_hex(const char *msg, size_t len, size_t split, char out[41])
{
    struct hub_sha1 s;
    uint8_t d[20];
    hub_sha1_init(&s);
    hub_sha1_update(&s, msg, split);
    hub_sha1_update(&s, msg + split, len - split);
    hub_sha1_final(&s, d);
    hex(d, 20, out);
}

int main(void)
{
    char out[41];
    sha1_hex("abc", 3, 1, out);
    CHECK_STR(out, "a9993e364706816aba3e25717850c26c9cd0d89d");
    sha1_hex("", 0, 0, out);
    CHECK_STR(out, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    for (size_t split = 0; split <= strlen(m); split++) {
        sha1_hex(m, strlen(m), split, out);
        CHECK_STR(out, "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
    }
    /* Lengths around the padding boundaries (55: the length fits in the
     * block; 56-63: the padding needs a block of its own; 64 and 120:
     * whole blocks). */
    static const struct {
        size_t n;
        const char *hex;
    } as[] = {{55, "c1c8bbdc22796e28c0e15163d20899b65621d65a"},
              {63, "03f09f5b158a7a8cdad920bddc29b81c18a551f5"},
              {64, "0098ba824b5c16427bd7a1122a5a442a25ec644d"},
              {119, "ee971065aaa017e0632a8ca6c77bb3bf8b1dfc56"},
              {120, "f34c1488385346a55709ba056ddd08280dd4c6d6"}};
    char as_msg[120];
    memset(as_msg, 'a', sizeof(as_msg));
    for (size_t i = 0; i < HUB_ARRAY_SIZE(as); i++) {
        for (size_t split = 0; split <= as[i].n; split += 7) {
            sha1_hex(as_msg, as[i].n, split, out);
            CHECK_STR(out, as[i].hex);
        }
    }
    /* One million 'a': exercises many blocks and the 64-bit length. */
    struct hub_sha1 s;
    uint8_t d[20];
    char a[1000];
    memset(a, 'a', sizeof(a));
    hub_sha1_init(&s);
    for (int i = 0; i < 1000; i++)
        hub_sha1_update(&s, a, sizeof(a));
    hub_sha1_final(&s, d);
    hex(d, 20, out);
    CHECK_STR(out, "34aa973cd4c4daa4f61eeb2bdbad27316534016f");

    static const char *const vec[][2] = {{"", ""},
                                         {"f", "Zg=="},
                                         {"fo", "Zm8="},
                                         {"foo", "Zm9v"},
                                         {"foob", "Zm9vYg=="},
                                         {"fooba", "Zm9vYmE="},
                                         {"foobar", "Zm9vYmFy"}};
    for (size_t i = 0; i < HUB_ARRAY_SIZE(vec); i++) {
        char enc[16];
        hub_base64_encode((const uint8_t *)vec[i][0], strlen(vec[i][0]), enc);
        CHECK_STR(enc, vec[i][1]);
        uint8_t dec[16];
        long n = hub_base64_decode(vec[i][1], strlen(vec[i][1]), dec, sizeof(dec));
        CHECK_EQ(n, (long)strlen(vec[i][0]));
        CHECK(memcmp(dec, vec[i][0], (size_t)n) == 0);
    }
    uint8_t dec[32];
    CHECK_EQ(hub_base64_decode("Zm9", 3, dec, sizeof(dec)), -1);
    CHECK_EQ(hub_base64_decode("Zm=v", 4, dec, sizeof(dec)), -1);
    CHECK_EQ(hub_base64_decode("Z===", 4, dec, sizeof(dec)), -1);
    CHECK_EQ(hub_base64_decode("Zm9v!!==", 8, dec, sizeof(dec)), -1);
    CHECK_EQ(hub_base64_decode("Zg==Zg==", 8, dec, sizeof(dec)), -1);
    CHECK_EQ(hub_base64_decode("Zm9vYmFy", 8, dec, 5), -1);

    /* base64url without padding (JWS): the URL-safe alphabet, strict bits. */
    CHECK_EQ(hub_base64url_decode("Zm9vYmE", 7, dec, sizeof(dec)), 5);
    CHECK(memcmp(dec, "fooba", 5) == 0);
    CHECK_EQ(hub_base64url_decode("-_8", 3, dec, sizeof(dec)), 2);
    CHECK(dec[0] == 0xfb && dec[1] == 0xff);
    CHECK_EQ(hub_base64url_decode("", 0, dec, sizeof(dec)), 0);
    CHECK_EQ(hub_base64url_decode("Zm9vYg==", 8, dec, sizeof(dec)), -1); /* padding */
    CHECK_EQ(hub_base64url_decode("+/8", 3, dec, sizeof(dec)), -1);      /* standard alphabet */
    CHECK_EQ(hub_base64url_decode("Zm9vY", 5, dec, sizeof(dec)), -1);    /* 4n+1 characters */
    CHECK_EQ(hub_base64url_decode("Zh", 2, dec, sizeof(dec)), -1);       /* low bits set */
    CHECK_EQ(hub_base64url_decode("Zm9vYmE", 7, dec, 4), -1);            /* does not fit */

    /* RFC 6455 section 1.3: the sample key and its accept value. */
    const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
    CHECK_EQ(hub_base64_decode(key, strlen(key), dec, sizeof(dec)), 16);
    const char *guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    hub_sha1_init(&s);
    hub_sha1_update(&s, key, strlen(key));
    hub_sha1_update(&s, guid, strlen(guid));
    hub_sha1_final(&s, d);
    char accept[HUB_BASE64_ENCODED_SIZE(20)];
    hub_base64_encode(d, 20, accept);
    CHECK_STR(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    return CHECK_DONE();
}
