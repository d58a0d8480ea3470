/*
 * common.h: error codes and small value types shared by every chathub module.
 *
 * Errors are plain ints: 0 means success and a negative HUB_E* code names the
 * failure (libuv's convention). Library error codes (libuv, wslay, http-parser,
 * jansson) are translated into these at the edge of the module that calls the
 * library, so callers never see a foreign code.
 */
#ifndef HUB_COMMON_H
#define HUB_COMMON_H

#include <stddef.h>
#include <stdint.h>

enum hub_error {
    HUB_OK = 0,
    HUB_ENOMEM = -1,  /* an allocation failed */
    HUB_EINVAL = -2,  /* an argument or input is malformed */
    HUB_ENOBUFS = -3, /* a queue or buffer limit would be exceeded */
    HUB_ECLOSED = -4, /* the connection is closing or closed */
    HUB_ENOENT = -5,  /* the named thing does not exist */
    HUB_EEXIST = -6,  /* the named thing already exists */
    HUB_ELIMIT = -7,  /* a configured count limit was reached */
    HUB_EPROTO = -8,  /* the peer broke the protocol */
    HUB_EIO = -9,     /* an operating-system call failed */
    HUB_EAGAIN = -10, /* try again later; nothing was done */
    HUB_EPERM = -11,  /* the caller may not do this (not the author, banned, muted) */
};

/* Returns a static, human-readable description of a HUB_E* code. */
const char *hub_strerror(int err);

/* A borrowed view of bytes: whoever hands one out says how long it lives. */
struct hub_iov {
    const char *base; /* first byte, not NUL-terminated in general */
    size_t len;       /* number of bytes */
};

/* Recovers the enclosing struct from a pointer to one of its fields. */
#define HUB_CONTAINER_OF(ptr, type, field) ((type *)((char *)(ptr)-offsetof(type, field)))

#define HUB_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Marks a printf-like function for format checking. On mingw-w64 the
 * "printf" archetype is msvcrt's dialect (no %zu, %lld); with mingw's own C99
 * stdio (__USE_MINGW_ANSI_STDIO, which _POSIX_C_SOURCE turns on) the printf
 * family really is GNU's, so check against that. */
#if defined(__MINGW32__) && defined(__USE_MINGW_ANSI_STDIO) && __USE_MINGW_ANSI_STDIO
#define HUB_PRINTF_LIKE(fmt, first) __attribute__((format(gnu_printf, fmt, first)))
#else
#define HUB_PRINTF_LIKE(fmt, first) __attribute__((format(printf, fmt, first)))
#endif

/* Folds an ASCII upper-case letter to lower case; other bytes are unchanged. */
static inline int hub_ascii_lower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

/* Returns 1 if the two byte strings are equal under ASCII case folding. */
int hub_eq_ci(const char *a, size_t alen, const char *b, size_t blen);

/* FNV-1a over len bytes, optionally ASCII-case-folded: the hash of every
 * table keyed by names (rooms, nicks, streams, addresses). */
uint64_t hub_hash(const char *s, size_t len, int fold_case);

/* Case-insensitive ASCII comparison of a view against a NUL-terminated literal. */
int hub_iov_eq_ci(struct hub_iov v, const char *lit);

/* Returns 1 if the comma-separated header value v contains token tok
 * (case-insensitive, surrounding spaces and tabs ignored), else 0. */
int hub_iov_has_token(struct hub_iov v, const char *tok);

#endif
