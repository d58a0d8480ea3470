/*
 * jsonw.h: a small JSON text writer with a sticky error flag.
 *
 * The hub writes its replies and pushes by hand rather than through a DOM,
 * which keeps the per-message path to one encode and one copy into the
 * frame. Each call appends to the writer's buffer; the first allocation
 * failure sets err, and every later call does nothing, so a caller writes a
 * whole object without checking each step and checks hub_jsonw_error once
 * before the text is used. A writer in error never hands out truncated text
 * as if it were complete.
 *
 * The writer does not track nesting: the caller opens and closes objects and
 * arrays with hub_jsonw_raw. hub_jsonw_key puts the separating comma before a
 * key unless the text so far ends with '{' or '[' (the start of a container),
 * and hub_jsonw_item does the same for array elements. Strings handed in must
 * be valid UTF-8 (the hub validates every input); they are escaped as RFC 8259
 * section 7 requires and copied.
 *
 * struct hub_jsonw is a value type meant to live on the stack or inside the
 * state of a pending reply. Zero-initialising it is the same as
 * hub_jsonw_init.
 */
#ifndef HUB_JSONW_H
#define HUB_JSONW_H

#include "hub/buf.h"

struct hub_jsonw {
    struct hub_buf b; /* the text so far, owned */
    int err;          /* 0, or the first HUB_E* code met (sticky) */
};

void hub_jsonw_init(struct hub_jsonw *w);

/* Frees the text and clears the error: w is empty and reusable. */
void hub_jsonw_free(struct hub_jsonw *w);

/* Appends len bytes (or a NUL-terminated string) verbatim: punctuation and
 * literals such as "{", "]}" or "true". s is borrowed for the call. */
void hub_jsonw_rawn(struct hub_jsonw *w, const char *s, size_t len);
void hub_jsonw_raw(struct hub_jsonw *w, const char *s);

/* Appends s (len bytes of UTF-8, borrowed) as a JSON string literal. */
void hub_jsonw_str(struct hub_jsonw *w, const char *s, size_t len);

/* Appends a signed or unsigned decimal integer. */
void hub_jsonw_int(struct hub_jsonw *w, long long v);
void hub_jsonw_uint(struct hub_jsonw *w, unsigned long long v);

/* Appends ,"key": or just "key": at the start of an object (key is a
 * NUL-terminated UTF-8 string, borrowed; it may be any room name). */
void hub_jsonw_key(struct hub_jsonw *w, const char *key);

/* Appends the comma before an array element unless it is the first. */
void hub_jsonw_item(struct hub_jsonw *w);

/* A key and its value in one call. */
void hub_jsonw_kstr(struct hub_jsonw *w, const char *key, const char *s, size_t len);
void hub_jsonw_kint(struct hub_jsonw *w, const char *key, long long v);
void hub_jsonw_kuint(struct hub_jsonw *w, const char *key, unsigned long long v);
void hub_jsonw_kbool(struct hub_jsonw *w, const char *key, int v);

/* Returns 0, or the HUB_E* code of the first failure (HUB_ENOMEM). */
static inline int hub_jsonw_error(const struct hub_jsonw *w)
{
    return w->err;
}

/* Bytes written so far (a mark for hub_jsonw_truncate). */
static inline size_t hub_jsonw_len(const struct hub_jsonw *w)
{
    return w->b.len;
}

/* Drops everything after mark (a value hub_jsonw_len returned earlier, not
 * more than the current length): takes back an element that turned out not
 * to fit. The error flag stays as it is. */
void hub_jsonw_truncate(struct hub_jsonw *w, size_t mark);

/* Returns the number of bytes s (len bytes of UTF-8) takes as a JSON string
 * literal, quotes included, without writing it. */
size_t hub_jsonw_str_size(const char *s, size_t len);

#endif
