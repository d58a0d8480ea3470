/*
 * base64.c: strict RFC 4648 base64. Decoding rejects anything but whole
 * 4-character groups of the standard alphabet with correct padding, so a
 * handshake key must be exactly what the RFC asks for.
 */
#include "hub/base64.h"

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t hub_base64_encode(const uint8_t *src, size_t len, char *out)
{
    size_t o = 0;
    size_t i = 0;
    for (; i + 2 < len; i += 3) {
        uint32_t v = (uint32_t)src[i] << 16 | (uint32_t)src[i + 1] << 8 | src[i + 2];
        out[o++] = alphabet[v >> 18];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = alphabet[(v >> 6) & 63];
        out[o++] = alphabet[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)src[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)src[i + 1] << 8;
        out[o++] = alphabet[v >> 18];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = (i + 1 < len) ? alphabet[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}

/* The value of c in the standard alphabet (url = 0) or the URL-safe one
 * (url = 1: '-' and '_' instead of '+' and '/'), or -1. */
static int value_of(char c, int url)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == (url ? '-' : '+'))
        return 62;
    if (c == (url ? '_' : '/'))
        return 63;
    return -1;
}

long hub_base64_decode(const char *src, size_t len, uint8_t *out, size_t outsz)
{
    if (len % 4 != 0)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        int last = (i + 4 == len);
        int v[4];
        int pad = 0;
        for (int j = 0; j < 4; j++) {
            char c = src[i + j];
            if (c == '=' && last && j >= 2) {
                v[j] = 0;
                pad++;
            } else if (pad > 0 || (v[j] = value_of(c, 0)) < 0) {
                return -1; /* a character after padding, or outside the alphabet */
            }
        }
        uint32_t bits = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | v[3];
        size_t n = 3 - (size_t)pad;
        if (o + n > outsz)
            return -1;
        out[o++] = (uint8_t)(bits >> 16);
        if (n > 1)
            out[o++] = (uint8_t)(bits >> 8);
        if (n > 2)
            out[o++] = (uint8_t)bits;
    }
    return (long)o;
}

long hub_base64url_decode(const char *src, size_t len, uint8_t *out, size_t outsz)
{
    if (len % 4 == 1)
        return -1;
    uint32_t acc = 0;
    int bits = 0;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        int v = value_of(src[i], 1);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n == outsz)
                return -1;
            out[n++] = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0)
        return -1; /* unused low bits must be zero: one encoding per value */
    return (long)n;
}
