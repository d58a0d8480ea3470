/*
 * ws_script.h: helpers shared by the WebSocket-level unit tests: build
 * masked client frames, and parse the server frames a detached connection
 * has queued.
 */
#ifndef HUB_TEST_WS_SCRIPT_H
#define HUB_TEST_WS_SCRIPT_H

#include "hub/buf.h"
#include "hub/conn.h"

#include <stdint.h>
#include <string.h>

/* Appends one client frame (masked with a fixed key unless unmasked) to b. */
static inline void client_frame(struct hub_buf *b, int fin, int opcode, const void *payload,
                                size_t len, int masked)
{
    uint8_t h[14];
    size_t n = 0;
    h[n++] = (uint8_t)((fin ? 0x80 : 0) | opcode);
    uint8_t mbit = masked ? 0x80 : 0;
    if (len < 126) {
        h[n++] = mbit | (uint8_t)len;
    } else if (len <= 0xffff) {
        h[n++] = mbit | 126;
        h[n++] = (uint8_t)(len >> 8);
        h[n++] = (uint8_t)len;
    } else {
        h[n++] = mbit | 127;
        for (int i = 0; i < 8; i++)
            h[n++] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
    }
    static const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
    if (masked) {
        memcpy(h + n, key, 4);
        n += 4;
    }
    hub_buf_append(b, h, n);
    size_t at = b->len;
    hub_buf_append(b, payload, len);
    if (masked)
        for (size_t i = 0; i < len; i++)
            b->data[at + i] ^= key[i % 4];
}

/* Moves everything queued on a detached conn into b. */
static inline void drain_conn(struct hub_conn *c, struct hub_buf *b)
{
    const char *bases[16];
    size_t lens[16];
    while (c->out.bytes > 0) {
        unsigned n = hub_outq_peek(&c->out, bases, lens, 16);
        size_t total = 0;
        for (unsigned i = 0; i < n; i++) {
            hub_buf_append(b, bases[i], lens[i]);
            total += lens[i];
        }
        hub_outq_consume(&c->out, total);
    }
}

/* One parsed server frame. */
struct server_frame {
    int fin, opcode, masked;
    const uint8_t *payload;
    size_t len;
};

/* Parses the frame at *off in b. Returns 1 and advances *off, or 0 at the end
 * or on a truncated frame. */
static inline int next_server_frame(const struct hub_buf *b, size_t *off, struct server_frame *f)
{
    const uint8_t *p = (const uint8_t *)b->data + *off;
    size_t left = b->len - *off;
    if (left < 2)
        return 0;
    f->fin = p[0] >> 7;
    f->opcode = p[0] & 15;
    f->masked = p[1] >> 7;
    size_t len = p[1] & 127, h = 2;
    if (len == 126) {
        if (left < 4)
            return 0;
        len = (size_t)p[2] << 8 | p[3];
        h = 4;
    } else if (len == 127) {
        if (left < 10)
            return 0;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | p[2 + i];
        h = 10;
    }
    if (left < h + len)
        return 0;
    f->payload = p + h;
    f->len = len;
    *off += h + len;
    return 1;
}

#endif
