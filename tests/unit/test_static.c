/*
 * test_static.c: unit tests of the static site: the path-safety table, MIME
 * types, ETags, reading a --public directory (hidden files, subdirectories,
 * symlinks) and its limits, and the embedded site.
 *
 * Directories are built under a fresh temporary directory with libuv's
 * synchronous fs calls and removed again at the end.
 */
#include "hub/static.h"

#include "check.h"
#include "tmpfs.h"

#include <uv.h>

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static uv_loop_t loop;

/* ---- Temporary files ---- */

static void make_dir(const char *dir, const char *rel)
{
    char path[1024];
    uv_fs_t req;
    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    CHECK_EQ(uv_fs_mkdir(&loop, &req, path, 0755, NULL), 0);
    uv_fs_req_cleanup(&req);
}

static int make_link(const char *target, const char *dir, const char *rel)
{
    char path[1024];
    uv_fs_t req;
    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    int rc = uv_fs_symlink(&loop, &req, target, path, 0, NULL);
    uv_fs_req_cleanup(&req);
    if (rc != 0)
        return rc;
    /* Wine reports success without creating the link: check it is there. */
    rc = uv_fs_lstat(&loop, &req, path, NULL);
    uv_fs_req_cleanup(&req);
    return rc;
}

/* ---- hub_static_resolve ---- */

struct resolve_row {
    const char *in;  /* raw URL path */
    size_t len;      /* 0: strlen(in) */
    int rc;          /* expected result */
    const char *out; /* expected output when rc == 0 */
};

static const struct resolve_row resolve_rows[] = {
    {"/", 0, 0, "index.html"},
    {"/index.html", 0, 0, "index.html"},
    {"/a/b.css", 0, 0, "a/b.css"},
    {"/a/", 0, 0, "a/index.html"},
    {"/a/b/", 0, 0, "a/b/index.html"},
    {"/%41", 0, 0, "A"},
    {"/a%20b.txt", 0, 0, "a b.txt"},
    {"/caf%C3%A9", 0, 0, "caf\xc3\xa9"},
    {"/...", 0, 0, "..."},
    {"/a..b", 0, 0, "a..b"},
    {"/.well-known/x", 0, 0, ".well-known/x"},
    {"/a/b:c", 0, 0, "a/b:c"},
    {"/a+b", 0, 0, "a+b"},
    {"/../etc/passwd", 0, HUB_EINVAL, NULL},
    {"/%2e%2e/x", 0, HUB_EINVAL, NULL},
    {"/%2E%2e/x", 0, HUB_EINVAL, NULL},
    {"/%2e./x", 0, HUB_EINVAL, NULL},
    {"/a/..", 0, HUB_EINVAL, NULL},
    {"/a/../b", 0, HUB_EINVAL, NULL},
    {"/a/%2e%2e", 0, HUB_EINVAL, NULL},
    {"/a/./b", 0, HUB_EINVAL, NULL},
    {"/.", 0, HUB_EINVAL, NULL},
    {"/..", 0, HUB_EINVAL, NULL},
    {"/%2e", 0, HUB_EINVAL, NULL},
    {"/a%2fb", 0, HUB_EINVAL, NULL},
    {"/a%2Fb", 0, HUB_EINVAL, NULL},
    {"/..%2f", 0, HUB_EINVAL, NULL},
    {"/a%5cb", 0, HUB_EINVAL, NULL},
    {"/a%5Cb", 0, HUB_EINVAL, NULL},
    {"/a\\b", 0, HUB_EINVAL, NULL},
    {"/..\\x", 0, HUB_EINVAL, NULL},
    {"/%00", 0, HUB_EINVAL, NULL},
    {"/a\0b", 4, HUB_EINVAL, NULL},
    {"/a%0ab", 0, HUB_EINVAL, NULL},
    {"/a%0Db", 0, HUB_EINVAL, NULL},
    {"/a\tb", 0, HUB_EINVAL, NULL},
    {"/a\x7f", 0, HUB_EINVAL, NULL},
    {"/a%7f", 0, HUB_EINVAL, NULL},
    {"//etc/passwd", 0, HUB_EINVAL, NULL},
    {"/a//b", 0, HUB_EINVAL, NULL},
    {"/a//", 0, HUB_EINVAL, NULL},
    {"/C:/x", 0, HUB_EINVAL, NULL},
    {"/c:", 0, HUB_EINVAL, NULL},
    {"/c%3a/x", 0, HUB_EINVAL, NULL},
    {"/file:x", 0, HUB_EINVAL, NULL},
    {"x", 0, HUB_EINVAL, NULL},
    {"", 0, HUB_EINVAL, NULL},
    {"\\a", 0, HUB_EINVAL, NULL},
    {"/%", 0, HUB_EINVAL, NULL},
    {"/%4", 0, HUB_EINVAL, NULL},
    {"/%zz", 0, HUB_EINVAL, NULL},
    {"/%g1", 0, HUB_EINVAL, NULL},
    {"/a%", 0, HUB_EINVAL, NULL},
};

static void test_resolve_table(void)
{
    for (size_t i = 0; i < HUB_ARRAY_SIZE(resolve_rows); i++) {
        const struct resolve_row *r = &resolve_rows[i];
        char out[256];
        size_t len = r->len ? r->len : strlen(r->in);
        memset(out, 'X', sizeof(out));
        int rc = hub_static_resolve(r->in, len, out, sizeof(out));
        if (rc != r->rc)
            fprintf(stderr, "resolve row %zu (\"%s\"): rc %d, want %d\n", i, r->in, rc, r->rc);
        CHECK_EQ(rc, r->rc);
        if (r->rc == 0 && rc == 0)
            CHECK_STR(out, r->out);
    }
}

static void test_resolve_sizes(void)
{
    char out[16];
    /* "abc" plus its NUL fits in exactly 4 bytes, not in 3. */
    CHECK_EQ(hub_static_resolve("/abc", 4, out, 4), 0);
    CHECK_STR(out, "abc");
    CHECK_EQ(hub_static_resolve("/abc", 4, out, 3), HUB_ENOBUFS);
    CHECK_EQ(hub_static_resolve("/abc", 4, out, 0), HUB_ENOBUFS);
    /* The appended index name counts too. */
    CHECK_EQ(hub_static_resolve("/", 1, out, 11), 0);
    CHECK_STR(out, "index.html");
    CHECK_EQ(hub_static_resolve("/", 1, out, 10), HUB_ENOBUFS);

    /* A long path does not fit HUB_STATIC_MAX_PATH. */
    static char longpath[3000];
    longpath[0] = '/';
    for (size_t i = 1; i < sizeof(longpath); i++)
        longpath[i] = (i % 50 == 0) ? '/' : 'a';
    char big[HUB_STATIC_MAX_PATH];
    CHECK_EQ(hub_static_resolve(longpath, sizeof(longpath), big, sizeof(big)), HUB_ENOBUFS);
    /* An unsafe path is reported as unsafe even when it is also too long. */
    memcpy(longpath + sizeof(longpath) - 4, "/..", 3);
    longpath[sizeof(longpath) - 1] = '/';
    CHECK_EQ(hub_static_resolve(longpath, sizeof(longpath), big, sizeof(big)), HUB_EINVAL);
    /* Percent escapes shrink: 3 input bytes give one output byte. */
    CHECK_EQ(hub_static_resolve("/%61%62%63", 10, out, 4), 0);
    CHECK_STR(out, "abc");
}

/* ---- MIME and ETag ---- */

static void test_mime(void)
{
    CHECK_STR(hub_static_mime("index.html"), "text/html; charset=utf-8");
    CHECK_STR(hub_static_mime("a/b.htm"), "text/html; charset=utf-8");
    CHECK_STR(hub_static_mime("INDEX.HTML"), "text/html; charset=utf-8");
    CHECK_STR(hub_static_mime("app.js"), "text/javascript; charset=utf-8");
    CHECK_STR(hub_static_mime("mod.mjs"), "text/javascript; charset=utf-8");
    CHECK_STR(hub_static_mime("style.css"), "text/css; charset=utf-8");
    CHECK_STR(hub_static_mime("d.json"), "application/json; charset=utf-8");
    CHECK_STR(hub_static_mime("app.js.map"), "application/json; charset=utf-8");
    CHECK_STR(hub_static_mime("logo.svg"), "image/svg+xml; charset=utf-8");
    CHECK_STR(hub_static_mime("r.txt"), "text/plain; charset=utf-8");
    CHECK_STR(hub_static_mime("a.png"), "image/png");
    CHECK_STR(hub_static_mime("a.jpg"), "image/jpeg");
    CHECK_STR(hub_static_mime("a.JPEG"), "image/jpeg");
    CHECK_STR(hub_static_mime("a.gif"), "image/gif");
    CHECK_STR(hub_static_mime("a.webp"), "image/webp");
    CHECK_STR(hub_static_mime("favicon.ico"), "image/x-icon");
    CHECK_STR(hub_static_mime("m.wasm"), "application/wasm");
    CHECK_STR(hub_static_mime("f.woff"), "font/woff");
    CHECK_STR(hub_static_mime("f.woff2"), "font/woff2");
    CHECK_STR(hub_static_mime("a.tar.gz"), "application/octet-stream");
    CHECK_STR(hub_static_mime("README"), "application/octet-stream");
    CHECK_STR(hub_static_mime("dir.html/file"), "application/octet-stream");
    CHECK_STR(hub_static_mime(".html"), "application/octet-stream");
    CHECK_STR(hub_static_mime("a.htmlx"), "application/octet-stream");
    CHECK_STR(hub_static_mime("a.ht"), "application/octet-stream");
    CHECK_STR(hub_static_mime("a."), "application/octet-stream");
}

/* ---- Directory sites ---- */

static void test_open_dir(void)
{
    char dir[512], outside[512], path[1024];
    tmp_make_dir(&loop, "hub_static", dir, sizeof(dir));
    tmp_make_dir(&loop, "hub_static", outside, sizeof(outside));

    tmp_write_file(dir, "index.html", "<h1>hi</h1>\n", 12);
    tmp_write_file(dir, "a.txt", "a", 1);
    tmp_write_file(dir, "empty.txt", "", 0);
    tmp_write_file(dir, "copy.txt", "a", 1);
    tmp_write_file(dir, "b.txt", "b", 1);
    tmp_write_file(dir, ".env", "SECRET=1", 8);
    make_dir(dir, "sub");
    tmp_write_file(dir, "sub/style.css", "body{}", 6);
    make_dir(dir, "sub/deeper");
    tmp_write_file(dir, "sub/deeper/index.html", "deep", 4);
    make_dir(dir, ".git");
    tmp_write_file(dir, ".git/config", "[core]", 6);
    make_dir(dir, "sub/.hidden");
    tmp_write_file(dir, "sub/.hidden/x.js", "x", 1);
    tmp_write_file(outside, "secret.txt", "top secret", 10);

    snprintf(path, sizeof(path), "%s/index.html", dir);
    int links = make_link(path, dir, "link.html") == 0;
    snprintf(path, sizeof(path), "%s/secret.txt", outside);
    links = links && make_link(path, dir, "escape.txt") == 0;
    snprintf(path, sizeof(path), "%s/sub", dir);
    links = links && make_link(path, dir, "subloop") == 0;
    links = links && make_link(outside, dir, "outdir") == 0;

    struct hub_static *site = NULL;
    CHECK_EQ(hub_static_open_dir(&site, dir), 0);
    CHECK(site != NULL);
    if (site != NULL) {
        const struct hub_static_file *f = hub_static_find(site, "index.html");
        CHECK(f != NULL);
        if (f != NULL) {
            CHECK_EQ(f->len, 12);
            CHECK(memcmp(f->data, "<h1>hi</h1>\n", 12) == 0);
            CHECK_STR(f->path, "index.html");
            CHECK_STR(f->mime, "text/html; charset=utf-8");
        }
        f = hub_static_find(site, "sub/style.css");
        CHECK(f != NULL);
        if (f != NULL) {
            CHECK_STR(f->mime, "text/css; charset=utf-8");
            CHECK_EQ(f->len, 6);
        }
        f = hub_static_find(site, "sub/deeper/index.html");
        CHECK(f != NULL && f->len == 4 && memcmp(f->data, "deep", 4) == 0);
        f = hub_static_find(site, "empty.txt");
        CHECK(f != NULL && f->len == 0);

        /* Hidden files and everything under hidden directories stay out. */
        CHECK(hub_static_find(site, ".env") == NULL);
        CHECK(hub_static_find(site, ".git/config") == NULL);
        CHECK(hub_static_find(site, "sub/.hidden/x.js") == NULL);
        /* Lookups are exact. */
        CHECK(hub_static_find(site, "sub") == NULL);
        CHECK(hub_static_find(site, "sub/") == NULL);
        CHECK(hub_static_find(site, "/index.html") == NULL);
        CHECK(hub_static_find(site, "INDEX.HTML") == NULL);
        CHECK(hub_static_find(site, "missing.html") == NULL);

        if (links) {
            /* A link to a file inside the root is served; one leading out,
             * and links to directories, are not. */
            f = hub_static_find(site, "link.html");
            CHECK(f != NULL && f->len == 12);
            CHECK(hub_static_find(site, "escape.txt") == NULL);
            CHECK(hub_static_find(site, "subloop/style.css") == NULL);
            CHECK(hub_static_find(site, "outdir/secret.txt") == NULL);
        }

        /* ETags: strong, quoted, 16 hex digits of FNV-1a 64. The values are
         * the published FNV-1a test vectors for "" and "a". */
        const struct hub_static_file *a = hub_static_find(site, "a.txt");
        const struct hub_static_file *copy = hub_static_find(site, "copy.txt");
        const struct hub_static_file *b = hub_static_find(site, "b.txt");
        const struct hub_static_file *empty = hub_static_find(site, "empty.txt");
        CHECK(a != NULL && copy != NULL && b != NULL && empty != NULL);
        if (a != NULL && copy != NULL && b != NULL && empty != NULL) {
            CHECK_STR(a->etag, "\"af63dc4c8601ec8c\"");
            CHECK_STR(empty->etag, "\"cbf29ce484222325\"");
            CHECK_STR(a->etag, copy->etag);
            CHECK(strcmp(a->etag, b->etag) != 0);
            CHECK_EQ(strlen(b->etag), 18);
        }

        /* Reading the same directory again gives the same ETags. */
        struct hub_static *again = NULL;
        CHECK_EQ(hub_static_open_dir(&again, dir), 0);
        if (again != NULL) {
            const struct hub_static_file *x = hub_static_find(site, "index.html");
            const struct hub_static_file *y = hub_static_find(again, "index.html");
            CHECK(x != NULL && y != NULL && strcmp(x->etag, y->etag) == 0);
            hub_static_free(again);
        }

        /* A changed file gets a new ETag. */
        tmp_write_file(dir, "index.html", "<h1>ho</h1>\n", 12);
        CHECK_EQ(hub_static_open_dir(&again, dir), 0);
        if (again != NULL) {
            const struct hub_static_file *x = hub_static_find(site, "index.html");
            const struct hub_static_file *y = hub_static_find(again, "index.html");
            CHECK(x != NULL && y != NULL && strcmp(x->etag, y->etag) != 0);
            hub_static_free(again);
        }
        hub_static_free(site);
    }

    /* Missing directories and plain files are not sites. */
    struct hub_static *none = (struct hub_static *)&none;
    snprintf(path, sizeof(path), "%s/nope", dir);
    CHECK_EQ(hub_static_open_dir(&none, path), HUB_ENOENT);
    CHECK(none == NULL);
    snprintf(path, sizeof(path), "%s/a.txt", dir);
    CHECK_EQ(hub_static_open_dir(&none, path), HUB_ENOENT);

    tmp_remove_tree(&loop, dir);
    tmp_remove_tree(&loop, outside);
}

static void test_limits(void)
{
    char dir[512];
    struct hub_static *site = NULL;

    /* One file more than HUB_STATIC_MAX_FILES. */
    tmp_make_dir(&loop, "hub_static", dir, sizeof(dir));
    for (int i = 0; i <= HUB_STATIC_MAX_FILES; i++) {
        char name[32];
        snprintf(name, sizeof(name), "f%04d.txt", i);
        tmp_write_file(dir, name, "x", 1);
    }
    CHECK_EQ(hub_static_open_dir(&site, dir), HUB_ELIMIT);
    CHECK(site == NULL);
    /* Exactly the limit is fine. */
    char path[1024];
    snprintf(path, sizeof(path), "%s/f0000.txt", dir);
    uv_fs_t req;
    uv_fs_unlink(&loop, &req, path, NULL);
    uv_fs_req_cleanup(&req);
    CHECK_EQ(hub_static_open_dir(&site, dir), 0);
    CHECK(site != NULL && hub_static_find(site, "f1024.txt") != NULL);
    hub_static_free(site);
    site = NULL;
    tmp_remove_tree(&loop, dir);

    /* One byte more than HUB_STATIC_MAX_BYTES, as a sparse file so the test
     * stays cheap: the size is refused before anything is read. */
    tmp_make_dir(&loop, "hub_static", dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/big.bin", dir);
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f != NULL) {
        CHECK_EQ(fseek(f, (long)HUB_STATIC_MAX_BYTES, SEEK_SET), 0);
        fputc('x', f);
        fclose(f);
    }
    CHECK_EQ(hub_static_open_dir(&site, dir), HUB_ELIMIT);
    CHECK(site == NULL);
    tmp_remove_tree(&loop, dir);
}

static void test_embedded(void)
{
    struct hub_static *site = NULL;
    CHECK_EQ(hub_static_open_embedded(&site), 0);
    CHECK(site != NULL);
    if (site == NULL)
        return;
    const struct hub_static_file *f = hub_static_find(site, "index.html");
    CHECK(f != NULL);
    if (f != NULL) {
        CHECK(f->len > 0);
        CHECK_STR(f->mime, "text/html; charset=utf-8");
        CHECK_EQ(strlen(f->etag), 18);
        CHECK_EQ(f->etag[0], '"');
    }
    CHECK(hub_static_find(site, "nope.html") == NULL);
    hub_static_free(site);
}

int main(void)
{
    if (uv_loop_init(&loop) != 0)
        return 1;
    test_resolve_table();
    test_resolve_sizes();
    test_mime();
    test_open_dir();
    test_limits();
    test_embedded();
    CHECK_EQ(uv_loop_close(&loop), 0);
    return CHECK_DONE();
}
