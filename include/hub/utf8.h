/*
 * utf8.h: strict UTF-8 validation (RFC 3629: no overlong forms, no UTF-16
 * surrogates, nothing above U+10FFFF).
 */
#ifndef HUB_UTF8_H
#define HUB_UTF8_H

#include <stddef.h>

/* Returns 1 if the len bytes at s (borrowed) are valid UTF-8, else 0. */
int hub_utf8_valid(const char *s, size_t len);

/* Returns the number of code points in valid UTF-8 text. */
size_t hub_utf8_length(const char *s, size_t len);

#endif
