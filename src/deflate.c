/*
 * deflate.c: permessage-deflate negotiation and whole-message zlib streams.
 *
 * The negotiation parser reads the RFC 6455 section 9.1 grammar
 * (extension *( ";" param [ "=" ( token / quoted-string ) ] ), in a
 * comma-separated list with optional whitespace and empty elements) in one
 * pass over the borrowed value, without allocating: quoted values are
 * unescaped into a small stack buffer, and one longer than any value we
 * accept only has to be recognised, not kept.
 *
 * The zlib streams: with no context takeover in both directions nothing
 * carries over from one message to the next, so one deflate stream and one
 * inflate stream per process serve every connection, each reset before a
 * message. They are created on first use (a hub with no deflate clients
 * never allocates them) and live until hub_deflate_release.
 */
#include "hub/deflate.h"

#include <stdio.h>
#include <string.h>

#ifdef HUB_HAVE_ZLIB
#include <zlib.h>
#endif

/* ---- Negotiation ------------------------------------------------------- */

/* A cursor over the header value. */
struct cur {
    const char *p;   /* next byte */
    const char *end; /* one past the last byte */
};

static int is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static void skip_ows(struct cur *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t'))
        c->p++;
}

/* Reads a token. Returns its length (0: none there). */
static size_t read_token(struct cur *c, const char **start)
{
    *start = c->p;
    while (c->p < c->end && is_tchar((unsigned char)*c->p))
        c->p++;
    return (size_t)(c->p - *start);
}

/* A parameter value after unescaping: short values are kept in buf, longer
 * ones only counted (none of the values we accept is longer than 2). */
struct pvalue {
    char buf[8];  /* the value, NUL-terminated when len < sizeof(buf) */
    size_t len;   /* its length after unescaping */
    int is_token; /* the unescaped value is a non-empty token */
};

static void pvalue_add(struct pvalue *v, char ch)
{
    if (v->len + 1 < sizeof(v->buf))
        v->buf[v->len] = ch;
    v->len++;
    if (!is_tchar((unsigned char)ch))
        v->is_token = 0;
}

/* Reads a token or a quoted-string (RFC 9110 5.6.4). Returns 0, or -1 on a
 * syntax error. */
static int read_value(struct cur *c, struct pvalue *v)
{
    memset(v, 0, sizeof(*v));
    v->is_token = 1;
    if (c->p < c->end && *c->p == '"') {
        c->p++;
        for (;;) {
            if (c->p >= c->end)
                return -1; /* unterminated */
            unsigned char ch = (unsigned char)*c->p++;
            if (ch == '"')
                break;
            if (ch == '\\') {
                if (c->p >= c->end)
                    return -1;
                ch = (unsigned char)*c->p++;
                if (ch < 0x20 && ch != '\t')
                    return -1;
            } else if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
                return -1;
            }
            pvalue_add(v, (char)ch);
        }
    } else {
        const char *s;
        size_t n = read_token(c, &s);
        if (n == 0)
            return -1;
        for (size_t i = 0; i < n; i++)
            pvalue_add(v, s[i]);
    }
    if (v->len == 0)
        v->is_token = 0;
    if (v->len < sizeof(v->buf))
        v->buf[v->len] = '\0';
    return 0;
}

static int token_is(const char *s, size_t n, const char *lit)
{
    size_t m = strlen(lit);
    if (n != m)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char a = s[i], b = lit[i];
        if (a >= 'A' && a <= 'Z')
            a = (char)(a - 'A' + 'a');
        if (a != b)
            return 0;
    }
    return 1;
}

/* A window-bits value: a decimal 8..15 without leading zeros (RFC 7692
 * sections 7.1.2.1 and 7.1.2.2). Returns it, or 0. */
static int window_bits(const struct pvalue *v)
{
    if (!v->is_token || v->len < 1 || v->len > 2)
        return 0;
    if (v->len == 1)
        return v->buf[0] >= '8' && v->buf[0] <= '9' ? v->buf[0] - '0' : 0;
    if (v->buf[0] != '1' || v->buf[1] < '0' || v->buf[1] > '5')
        return 0;
    return 10 + (v->buf[1] - '0');
}

/* What one permessage-deflate offer asked for. */
struct offer {
    int valid;       /* every parameter known, well-formed and given once */
    int seen;        /* bit per parameter, against repeats */
    int server_bits; /* server_max_window_bits, or 0 when absent */
    int client_bits; /* client_max_window_bits value, 15 when given without one */
    int has_client;  /* client_max_window_bits was given */
};

enum { P_SNCT = 1, P_CNCT = 2, P_SMWB = 4, P_CMWB = 8 };

static void offer_param(struct offer *o, const char *name, size_t nlen, int has_value,
                        const struct pvalue *v)
{
    int bit = token_is(name, nlen, "server_no_context_takeover")   ? P_SNCT
              : token_is(name, nlen, "client_no_context_takeover") ? P_CNCT
              : token_is(name, nlen, "server_max_window_bits")     ? P_SMWB
              : token_is(name, nlen, "client_max_window_bits")     ? P_CMWB
                                                                   : 0;
    if (bit == 0 || (o->seen & bit)) {
        o->valid = 0; /* unknown or repeated (RFC 7692 section 7) */
        return;
    }
    o->seen |= bit;
    switch (bit) {
    case P_SNCT:
    case P_CNCT:
        if (has_value)
            o->valid = 0;
        break;
    case P_SMWB:
        o->server_bits = has_value ? window_bits(v) : 0;
        if (o->server_bits == 0)
            o->valid = 0;
        break;
    default: /* P_CMWB: the value is optional */
        o->has_client = 1;
        o->client_bits = has_value ? window_bits(v) : 15;
        if (o->client_bits == 0)
            o->valid = 0;
        break;
    }
}

int hub_deflate_negotiate(struct hub_iov offers, struct hub_deflate_params *out, char *line,
                          size_t linesz)
{
    if (!hub_deflate_available() || offers.len == 0)
        return 0;
    struct cur c = {offers.base, offers.base + offers.len};
    struct offer chosen = {0};
    int found = 0;
    for (;;) {
        /* Empty list elements (", ,") are allowed (RFC 9110 5.6.1). */
        while (c.p < c.end && (*c.p == ' ' || *c.p == '\t' || *c.p == ','))
            c.p++;
        if (c.p >= c.end)
            break;
        const char *name;
        size_t nlen = read_token(&c, &name);
        if (nlen == 0)
            return 0; /* not a token where an extension name must be */
        int pmd = token_is(name, nlen, "permessage-deflate");
        struct offer o = {1, 0, 0, 15, 0};
        for (;;) {
            skip_ows(&c);
            if (c.p >= c.end || *c.p != ';')
                break;
            c.p++;
            skip_ows(&c);
            const char *pname;
            size_t plen = read_token(&c, &pname);
            if (plen == 0)
                return 0;
            skip_ows(&c);
            struct pvalue v = {{0}, 0, 0};
            int has_value = 0;
            if (c.p < c.end && *c.p == '=') {
                c.p++;
                skip_ows(&c);
                if (read_value(&c, &v) != 0)
                    return 0;
                has_value = 1;
            }
            if (pmd)
                offer_param(&o, pname, plen, has_value, &v);
        }
        if (c.p < c.end && *c.p != ',')
            return 0; /* junk after an extension */
        if (pmd && o.valid && !found) {
            chosen = o;
            found = 1;
        }
    }
    if (!found)
        return 0;
    char buf[160];
    int n;
    if (chosen.server_bits != 0)
        n = snprintf(buf, sizeof(buf),
                     "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; "
                     "client_no_context_takeover; server_max_window_bits=%d\r\n",
                     chosen.server_bits);
    else
        n = snprintf(buf, sizeof(buf),
                     "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; "
                     "client_no_context_takeover\r\n");
    if (n < 0 || (size_t)n >= linesz)
        return 0;
    memcpy(line, buf, (size_t)n + 1);
    out->server_max_window_bits = (uint8_t)(chosen.server_bits ? chosen.server_bits : 15);
    out->client_max_window_bits = (uint8_t)chosen.client_bits;
    return 1;
}

/* ---- zlib streams ------------------------------------------------------ */

#ifdef HUB_HAVE_ZLIB

/* Level 6 (zlib's default): a broadcast is compressed once for all its
 * recipients, so a better ratio is worth more than the few microseconds a
 * faster level would save. memLevel 4 instead of zlib's 8: every message
 * starts with deflateReset, which clears the hash table, 64 KiB at 8 and
 * 4 KiB at 4; measured with callgrind that clearing was a third of the cost
 * of compressing a 1 KiB line, and on 1 KiB chat lines the output is the
 * same size (2048 hash chains are plenty for one message; a literal buffer
 * of 1024 symbols means longer messages get a block per kilobyte or so). */
#define DEFLATE_LEVEL 6
#define DEFLATE_MEMLEVEL 4

static z_stream zdef;  /* the process's deflate stream, while zdef_bits != 0 */
static int zdef_bits;  /* its window bits, or 0 when not made */
static z_stream zinf;  /* the process's inflate stream, while zinf_ready */
static int zinf_ready; /* zinf is initialised */

int hub_deflate_available(void)
{
    return 1;
}

int hub_deflate_compress(const void *in, size_t len, int wbits, struct hub_buf *out)
{
    if (wbits < 9 || wbits > 15 || len > UINT32_MAX / 2)
        return HUB_EINVAL;
    if (zdef_bits != wbits) {
        if (zdef_bits != 0)
            deflateEnd(&zdef);
        zdef_bits = 0;
        memset(&zdef, 0, sizeof(zdef));
        if (deflateInit2(&zdef, DEFLATE_LEVEL, Z_DEFLATED, -wbits, DEFLATE_MEMLEVEL,
                         Z_DEFAULT_STRATEGY) != Z_OK)
            return HUB_ENOMEM;
        zdef_bits = wbits;
    }
    size_t start = out->len;
    int rc = hub_buf_reserve(out, (size_t)deflateBound(&zdef, (uLong)len) + 16);
    if (rc != 0)
        return rc;
    zdef.next_in = (Bytef *)(uintptr_t)in;
    zdef.avail_in = (uInt)len;
    for (;;) {
        zdef.next_out = (Bytef *)out->data + out->len;
        zdef.avail_out = (uInt)(out->cap - out->len);
        int zr = deflate(&zdef, Z_SYNC_FLUSH);
        out->len = out->cap - zdef.avail_out;
        if (zr != Z_OK && zr != Z_BUF_ERROR) {
            rc = HUB_ENOMEM;
            break;
        }
        if (zdef.avail_in == 0 && zdef.avail_out > 0)
            break; /* everything flushed */
        rc = hub_buf_reserve(out, 64);
        if (rc != 0)
            break;
    }
    deflateReset(&zdef);
    if (rc != 0) {
        out->len = start;
        return rc;
    }
    /* RFC 7692 7.2.1: remove the empty stored block the flush ended with. */
    if (out->len - start >= 4 && memcmp(out->data + out->len - 4, "\0\0\xff\xff", 4) == 0)
        out->len -= 4;
    return 0;
}

int hub_deflate_inflate(const void *in, size_t len, size_t max, struct hub_buf *out)
{
    static const unsigned char tail[4] = {0, 0, 0xff, 0xff};
    out->len = 0;
    if (len > UINT32_MAX / 2 || max > SIZE_MAX / 4)
        return HUB_EINVAL;
    if (!zinf_ready) {
        memset(&zinf, 0, sizeof(zinf));
        if (inflateInit2(&zinf, -15) != Z_OK)
            return HUB_ENOMEM;
        zinf_ready = 1;
    } else {
        inflateReset(&zinf);
    }
    zinf.next_in = (Bytef *)(uintptr_t)in;
    zinf.avail_in = (uInt)len;
    int tail_fed = 0, rc = 0;
    for (;;) {
        if (zinf.avail_in == 0 && !tail_fed) {
            zinf.next_in = (Bytef *)(uintptr_t)tail;
            zinf.avail_in = sizeof(tail);
            tail_fed = 1;
        }
        /* Room for at most one byte past max, which tells "too big" apart
         * from "exactly max"; the buffer grows by doubling, from 1 KiB. */
        size_t cap_left = max + 1 - out->len;
        if (out->cap == out->len) {
            size_t grow = out->cap < 1024 ? 1024 : out->cap;
            rc = hub_buf_reserve(out, grow < cap_left ? grow : cap_left);
            if (rc != 0)
                break;
        }
        size_t room = out->cap - out->len;
        if (room > cap_left)
            room = cap_left;
        if (room > UINT32_MAX / 2)
            room = UINT32_MAX / 2;
        zinf.next_out = (Bytef *)out->data + out->len;
        zinf.avail_out = (uInt)room;
        int zr = inflate(&zinf, Z_SYNC_FLUSH);
        out->len += room - zinf.avail_out;
        if (out->len > max) {
            rc = HUB_ENOBUFS;
            break;
        }
        if (zr == Z_STREAM_END)
            break; /* a final block: whatever follows it is not part of the message */
        if (zr != Z_OK && zr != Z_BUF_ERROR) {
            rc = zr == Z_MEM_ERROR ? HUB_ENOMEM : HUB_EPROTO;
            break;
        }
        if (tail_fed && zinf.avail_in == 0 && zinf.avail_out > 0)
            break; /* all input used and all output out */
        if (zr == Z_BUF_ERROR && zinf.avail_out > 0 && zinf.avail_in > 0) {
            rc = HUB_EPROTO; /* no progress possible */
            break;
        }
    }
    if (rc != 0)
        out->len = 0;
    return rc;
}

void hub_deflate_release(void)
{
    if (zdef_bits != 0)
        deflateEnd(&zdef);
    zdef_bits = 0;
    if (zinf_ready)
        inflateEnd(&zinf);
    zinf_ready = 0;
}

#else /* no zlib */

int hub_deflate_available(void)
{
    return 0;
}

int hub_deflate_compress(const void *in, size_t len, int wbits, struct hub_buf *out)
{
    return HUB_EINVAL;
}

int hub_deflate_inflate(const void *in, size_t len, size_t max, struct hub_buf *out)
{
    out->len = 0;
    return HUB_EINVAL;
}

void hub_deflate_release(void)
{
}

#endif
