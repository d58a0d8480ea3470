/*
 * sha1.c: a compact SHA-1, written from FIPS 180-4, for the handshake key.
 */
#include "hub/sha1.h"

#include <string.h>

static uint32_t rol(uint32_t x, int n)
{
    return (x << n) | (x >> (32 - n));
}

/* One 64-byte block. The four rounds are four loops, so that no round
 * chooses its function and constant per step (a third of the handshake's
 * SHA-1 time went to those branches, bench/RESULTS.md). */
static void sha1_block(struct hub_sha1 *s, const uint8_t *p)
{
    uint32_t w[80];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 80; i++)
        w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3], e = s->h[4], t;
#define SHA1_STEP(f, k, i)                                                                         \
    do {                                                                                           \
        t = rol(a, 5) + (f) + e + (k) + w[i];                                                      \
        e = d;                                                                                     \
        d = c;                                                                                     \
        c = rol(b, 30);                                                                            \
        b = a;                                                                                     \
        a = t;                                                                                     \
    } while (0)
    for (int i = 0; i < 20; i++)
        SHA1_STEP(d ^ (b & (c ^ d)), 0x5a827999u, i);
    for (int i = 20; i < 40; i++)
        SHA1_STEP(b ^ c ^ d, 0x6ed9eba1u, i);
    for (int i = 40; i < 60; i++)
        SHA1_STEP((b & c) | (d & (b | c)), 0x8f1bbcdcu, i);
    for (int i = 60; i < 80; i++)
        SHA1_STEP(b ^ c ^ d, 0xca62c1d6u, i);
#undef SHA1_STEP
    s->h[0] += a;
    s->h[1] += b;
    s->h[2] += c;
    s->h[3] += d;
    s->h[4] += e;
}

void hub_sha1_init(struct hub_sha1 *s)
{
    static const uint32_t iv[5] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0};
    memcpy(s->h, iv, sizeof(iv));
    s->total = 0;
    s->used = 0;
}

void hub_sha1_update(struct hub_sha1 *s, const void *data, size_t len)
{
    const uint8_t *p = data;
    s->total += len;
    while (len > 0) {
        size_t n = 64 - s->used;
        if (n > len)
            n = len;
        memcpy(s->block + s->used, p, n);
        s->used += n;
        p += n;
        len -= n;
        if (s->used == 64) {
            sha1_block(s, s->block);
            s->used = 0;
        }
    }
}

void hub_sha1_final(struct hub_sha1 *s, uint8_t out[20])
{
    uint64_t bits = s->total * 8;
    /* The padding in place: 0x80, zeros up to 56 bytes of the last block
     * (in a block of its own when fewer than 9 bytes are left), then the
     * length in bits, big-endian. */
    s->block[s->used++] = 0x80;
    if (s->used > 56) {
        memset(s->block + s->used, 0, 64 - s->used);
        sha1_block(s, s->block);
        s->used = 0;
    }
    memset(s->block + s->used, 0, 56 - s->used);
    for (int i = 0; i < 8; i++)
        s->block[56 + i] = (uint8_t)(bits >> (56 - 8 * i));
    sha1_block(s, s->block);
    s->used = 0;
    for (int i = 0; i < 5; i++) {
        out[4 * i] = (uint8_t)(s->h[i] >> 24);
        out[4 * i + 1] = (uint8_t)(s->h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(s->h[i] >> 8);
        out[4 * i + 3] = (uint8_t)s->h[i];
    }
}
