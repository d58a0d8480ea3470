/*
 * sha1.h: SHA-1 (FIPS 180-4), used only for the WebSocket handshake's
 * Sec-WebSocket-Accept (RFC 6455 section 4.2.2). Not for security.
 */
#ifndef HUB_SHA1_H
#define HUB_SHA1_H

#include <stddef.h>
#include <stdint.h>

struct hub_sha1 {
    uint32_t h[5];     /* chaining state */
    uint64_t total;    /* bytes hashed so far */
    uint8_t block[64]; /* pending partial block */
    size_t used;       /* bytes in block */
};

void hub_sha1_init(struct hub_sha1 *s);
/* Hashes len bytes of data (borrowed). */
void hub_sha1_update(struct hub_sha1 *s, const void *data, size_t len);
/* Writes the 20-byte digest; s must be re-initialised before reuse. */
void hub_sha1_final(struct hub_sha1 *s, uint8_t out[20]);

#endif
