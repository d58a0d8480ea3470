/*
 * tmpfs.h: temporary files for the unit tests that need a real directory
 * (static sites, SQLite stores). Everything goes through libuv's synchronous
 * file calls on the test's loop, so it also works under Wine.
 */
#ifndef HUB_TEST_TMPFS_H
#define HUB_TEST_TMPFS_H

#include "check.h"

#include <stdio.h>
#include <stdlib.h>
#include <uv.h>

/* Creates a fresh directory $TMPDIR/<prefix>_XXXXXX and writes its path to
 * out. Returns 0 or a libuv error (out then holds ""). */
static inline int tmp_make_dir(uv_loop_t *loop, const char *prefix, char *out, size_t outsz)
{
    const char *tmp = getenv("TMPDIR");
    char tmpl[512];
    uv_fs_t req;
    snprintf(tmpl, sizeof(tmpl), "%s/%s_XXXXXX", tmp && *tmp ? tmp : "/tmp", prefix);
    int rc = uv_fs_mkdtemp(loop, &req, tmpl, NULL);
    CHECK_EQ(rc, 0);
    snprintf(out, outsz, "%s", rc == 0 ? req.path : "");
    uv_fs_req_cleanup(&req);
    return rc;
}

/* Writes len bytes of data to dir/rel (or to rel alone when dir is NULL),
 * replacing the file. */
static inline void tmp_write_file(const char *dir, const char *rel, const void *data, size_t len)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s%s%s", dir ? dir : "", dir ? "/" : "", rel);
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f == NULL)
        return;
    CHECK_EQ(fwrite(data, 1, len, f), len);
    fclose(f);
}

/* Removes a tree without following symlinks, making read-only directories
 * writable first. */
static inline void tmp_remove_tree(uv_loop_t *loop, const char *path)
{
    uv_fs_t req;
    uv_dirent_t ent;
    int rc = uv_fs_lstat(loop, &req, path, NULL);
    int is_dir = rc == 0 && (req.statbuf.st_mode & S_IFMT) == S_IFDIR;
    uv_fs_req_cleanup(&req);
    if (!is_dir) {
        uv_fs_unlink(loop, &req, path, NULL);
        uv_fs_req_cleanup(&req);
        return;
    }
    uv_fs_chmod(loop, &req, path, 0700, NULL);
    uv_fs_req_cleanup(&req);
    if (uv_fs_scandir(loop, &req, path, 0, NULL) >= 0) {
        while (uv_fs_scandir_next(&req, &ent) == 0) {
            char child[1024];
            int n = snprintf(child, sizeof(child), "%s/%s", path, ent.name);
            if (n > 0 && (size_t)n < sizeof(child)) /* test paths are short */
                tmp_remove_tree(loop, child);
        }
    }
    uv_fs_req_cleanup(&req);
    uv_fs_rmdir(loop, &req, path, NULL);
    uv_fs_req_cleanup(&req);
}

#endif
