/*
 * base64.h: RFC 4648 base64 (standard alphabet, with padding), for the
 * WebSocket handshake key and accept value, and base64url for tokens.
 */
#ifndef HUB_BASE64_H
#define HUB_BASE64_H

#include <stddef.h>
#include <stdint.h>

/* Bytes needed to encode n bytes, plus one for the NUL. */
#define HUB_BASE64_ENCODED_SIZE(n) ((((n) + 2) / 3) * 4 + 1)

/* Encodes len bytes of src into out (NUL-terminated; out must hold
 * HUB_BASE64_ENCODED_SIZE(len) bytes). Returns the length without the NUL. */
size_t hub_base64_encode(const uint8_t *src, size_t len, char *out);

/* Decodes len characters of strict, padded base64 into out (capacity outsz).
 * Returns the decoded length, or -1 if src is not valid padded base64 or
 * does not fit. */
long hub_base64_decode(const char *src, size_t len, uint8_t *out, size_t outsz);

/* Decodes len characters of base64url without padding (RFC 4648 section 5,
 * as JWS uses it) into out (capacity outsz). Strict: no padding, nothing
 * outside the alphabet, and the unused low bits of the last character must
 * be zero (one encoding per value). Returns the decoded length, or -1 if src
 * is not valid or does not fit. */
long hub_base64url_decode(const char *src, size_t len, uint8_t *out, size_t outsz);

#endif
