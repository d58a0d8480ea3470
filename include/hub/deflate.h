/*
 * deflate.h: permessage-deflate (RFC 7692): the extension negotiation and
 * the compression of whole messages with zlib.
 *
 * Negotiation: hub_deflate_negotiate reads the client's
 * Sec-WebSocket-Extensions offers and, when one of them is an acceptable
 * permessage-deflate offer, writes the response line for the 101. The hub
 * always answers with server_no_context_takeover and
 * client_no_context_takeover: every message is compressed on its own, so a
 * broadcast is compressed once and the same frame serves every recipient,
 * and a message that arrives is inflated whole, with no state kept between
 * messages. The parser is plain code, built even without zlib.
 *
 * Compression: hub_deflate_compress and hub_deflate_inflate work on whole
 * message payloads with one zlib stream each per process, reset for every
 * message, so no connection ever holds zlib state (an idle connection costs
 * nothing). Both are for the loop thread only (not thread-safe).
 *
 * Without zlib (-Ddeflate=disabled, or a cross build that has none)
 * hub_deflate_available returns 0, negotiation always declines and the
 * compression calls return HUB_EINVAL.
 */
#ifndef HUB_DEFLATE_H
#define HUB_DEFLATE_H

#include "hub/buf.h"

/* What an accepted offer settled. */
struct hub_deflate_params {
    uint8_t server_max_window_bits; /* window the hub may use to compress (8..15) */
    uint8_t client_max_window_bits; /* window the client said it uses (8..15; 15 if not said) */
};

/* Returns 1 when this build has zlib (permessage-deflate can be offered). */
int hub_deflate_available(void);

/* Parses a Sec-WebSocket-Extensions value (offers borrowed for the call; when
 * the header came several times, the values joined with ", "). Offers are
 * tried in the client's order; the first permessage-deflate offer whose
 * parameters are all known, valid and not repeated is accepted (RFC 7692
 * section 5: an invalid offer is declined, the next one is tried). Other
 * extensions are ignored. A value that breaks the RFC 6455 section 9.1
 * grammar declines everything rather than failing the upgrade.
 *
 * On acceptance, sets *out and copies a NUL-terminated header line
 * ("Sec-WebSocket-Extensions: permessage-deflate; ...\r\n", at most 160
 * bytes with the NUL) into line, and returns 1. Returns 0 when nothing is
 * accepted (out and line unchanged), also when zlib is missing. */
int hub_deflate_negotiate(struct hub_iov offers, struct hub_deflate_params *out, char *line,
                          size_t linesz);

/* Compresses len bytes at in (borrowed) as one message of a connection
 * without context takeover (RFC 7692 section 7.2.1: a sync-flushed raw
 * DEFLATE stream whose trailing 00 00 ff ff is removed), with a window of
 * 2^wbits bytes (wbits 9..15), and appends the result to out. Returns 0,
 * HUB_ENOMEM (out may have grown but its length is unchanged) or HUB_EINVAL
 * (no zlib, or wbits out of range). */
int hub_deflate_compress(const void *in, size_t len, int wbits, struct hub_buf *out);

/* Inflates one compressed message payload (borrowed; the 00 00 ff ff tail
 * is added here) into out, which is emptied first, never letting it grow
 * past max bytes of output: the input is inflated incrementally, so a small
 * message that would expand enormously (a zip bomb) costs at most max bytes
 * of memory. Returns 0; HUB_ENOBUFS when the message inflates to more than
 * max bytes; HUB_EPROTO when the data is not valid DEFLATE; HUB_ENOMEM;
 * HUB_EINVAL without zlib. */
int hub_deflate_inflate(const void *in, size_t len, size_t max, struct hub_buf *out);

/* Frees the per-process zlib streams (they are made again on next use).
 * Called at shutdown so that the process ends with nothing allocated. */
void hub_deflate_release(void);

#endif
