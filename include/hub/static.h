/*
 * static.h: the files the hub serves over plain HTTP (the browser client).
 *
 * A site is an immutable, in-memory set of files: either the public/ folder
 * embedded into the binary at build time, or a directory named by --public,
 * read once at start-up (the loop never touches the disk afterwards). Each
 * file carries its MIME type and a strong ETag computed when it is loaded.
 *
 * URL paths are resolved with hub_static_resolve, which percent-decodes and
 * refuses anything that could escape the root: "..", "%2e%2e", encoded
 * slashes or backslashes, NUL bytes, absolute or drive-letter paths.
 */
#ifndef HUB_STATIC_H
#define HUB_STATIC_H

#include "hub/common.h"

struct hub_static;

/* Limits for --public DIR, so a wrong directory cannot exhaust memory. */
#define HUB_STATIC_MAX_FILES 1024
#define HUB_STATIC_MAX_BYTES (64u * 1024 * 1024)
#define HUB_STATIC_MAX_PATH 1024

/* One file of a site. All fields are owned by the site and live as long as it. */
struct hub_static_file {
    const char *path; /* relative path with '/' separators, e.g. "index.html" */
    const char *data; /* contents */
    size_t len;       /* length of data */
    const char *mime; /* Content-Type value, e.g. "text/html; charset=utf-8" */
    char etag[24];    /* strong ETag including its quotes, NUL-terminated */
};

/* Builds a site from the files embedded at build time (public/). Returns 0 or
 * HUB_ENOMEM. *out is owned by the caller (hub_static_free). */
int hub_static_open_embedded(struct hub_static **out);

/* Builds a site by reading every regular file under dir (recursively, hidden
 * files and symlinks leaving dir skipped) into memory. Returns 0; HUB_ENOENT
 * if dir does not exist or is not a directory; HUB_ELIMIT past the file or
 * byte limits above; HUB_EIO on a read error; HUB_ENOMEM. dir is borrowed. */
int hub_static_open_dir(struct hub_static **out, const char *dir);

void hub_static_free(struct hub_static *site);

/* Turns a raw URL path (without query) into a safe relative file path in out
 * (NUL-terminated, at most outsz bytes including the NUL). "/" and paths that
 * end in "/" get "index.html" appended. Returns 0; HUB_EINVAL if the path is
 * malformed or unsafe (does not start with '/', bad %-escape, "..", encoded
 * '/' or '\\', NUL, control characters, a ':' drive prefix, "//");
 * HUB_ENOBUFS if out is too small. */
int hub_static_resolve(const char *path, size_t len, char *out, size_t outsz);

/* Finds the file for a resolved relative path. Returns NULL if absent. The
 * result is borrowed from site. */
const struct hub_static_file *hub_static_find(const struct hub_static *site, const char *rel);

/* Returns the MIME type for a file name by its extension
 * ("application/octet-stream" when unknown). */
const char *hub_static_mime(const char *name);

#endif
