/*
 * test_jsonw.c: the JSON writer: escaping of every control byte, quotes and
 * backslashes, commas between keys and array items, integers at their
 * limits, truncation back to a mark, the size estimate matching what is
 * written, and the sticky error flag after a failed allocation. Each
 * written text is also parsed back with jansson, so "valid JSON" is checked
 * by a parser rather than by eye.
 */
#include "check.h"
#include "hub/jsonw.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>

static int text_is(const struct hub_jsonw *w, const char *want)
{
    int ok = hub_jsonw_error(w) == 0 && w->b.len == strlen(want) &&
             (w->b.len == 0 || memcmp(w->b.data, want, w->b.len) == 0);
    if (!ok)
        fprintf(stderr, "got \"%.*s\" (err %d), want \"%s\"\n", (int)w->b.len,
                w->b.data ? w->b.data : "", hub_jsonw_error(w), want);
    return ok;
}

static json_t *parse(const struct hub_jsonw *w)
{
    return json_loadb(w->b.data, w->b.len, JSON_ALLOW_NUL | JSON_DECODE_ANY, NULL);
}

static void test_object(void)
{
    struct hub_jsonw w;
    hub_jsonw_init(&w);
    hub_jsonw_raw(&w, "{");
    hub_jsonw_kstr(&w, "t", "msg", 3);
    hub_jsonw_kint(&w, "neg", -9223372036854775807LL - 1);
    hub_jsonw_kuint(&w, "big", UINT64_MAX);
    hub_jsonw_kbool(&w, "yes", 1);
    hub_jsonw_kbool(&w, "no", 0);
    hub_jsonw_key(&w, "list");
    hub_jsonw_raw(&w, "[");
    for (int i = 0; i < 3; i++) {
        hub_jsonw_item(&w);
        hub_jsonw_int(&w, i);
    }
    hub_jsonw_raw(&w, "]");
    hub_jsonw_key(&w, "o");
    hub_jsonw_raw(&w, "{}");
    hub_jsonw_raw(&w, "}");
    CHECK(text_is(&w, "{\"t\":\"msg\",\"neg\":-9223372036854775808,"
                      "\"big\":18446744073709551615,\"yes\":true,\"no\":false,"
                      "\"list\":[0,1,2],\"o\":{}}"));
    hub_jsonw_free(&w);
    CHECK_EQ(hub_jsonw_len(&w), 0);
}

static void test_escapes(void)
{
    /* Every byte 0x00-0x7f, a quote and a backslash among them, plus UTF-8. */
    char s[128 + 4];
    for (int i = 0; i < 128; i++)
        s[i] = (char)i;
    memcpy(s + 128, "\xc3\xa9\xe2\x82", 4); /* é and the start of € */
    size_t len = 128 + 2;                   /* é only: stay valid UTF-8 */
    struct hub_jsonw w = {0};
    hub_jsonw_str(&w, s, len);
    CHECK_EQ(hub_jsonw_error(&w), 0);
    CHECK_EQ(hub_jsonw_len(&w), hub_jsonw_str_size(s, len));
    json_t *v = parse(&w);
    CHECK(v != NULL && json_is_string(v));
    CHECK(v != NULL && json_string_length(v) == len && memcmp(json_string_value(v), s, len) == 0);
    json_decref(v);
    /* The short escapes are used where JSON has them. */
    hub_jsonw_truncate(&w, 0);
    hub_jsonw_str(&w, "\"\\\n\r\t\b\f\x01\x1f/", 10);
    CHECK(text_is(&w, "\"\\\"\\\\\\n\\r\\t\\b\\f\\u0001\\u001f/\""));
    CHECK_EQ(hub_jsonw_str_size("\"\\\n\r\t\b\f\x01\x1f/", 10), hub_jsonw_len(&w));
    /* A key is escaped like any string (room names become keys). */
    hub_jsonw_truncate(&w, 0);
    hub_jsonw_raw(&w, "{");
    hub_jsonw_kint(&w, "a\"b", 1);
    hub_jsonw_raw(&w, "}");
    CHECK(text_is(&w, "{\"a\\\"b\":1}"));
    hub_jsonw_free(&w);
}

static void test_truncate(void)
{
    struct hub_jsonw w = {0};
    hub_jsonw_raw(&w, "[");
    hub_jsonw_item(&w);
    hub_jsonw_str(&w, "keep", 4);
    size_t mark = hub_jsonw_len(&w);
    hub_jsonw_item(&w);
    hub_jsonw_str(&w, "drop", 4);
    hub_jsonw_truncate(&w, mark);
    hub_jsonw_truncate(&w, mark + 100); /* past the end: nothing happens */
    hub_jsonw_raw(&w, "]");
    CHECK(text_is(&w, "[\"keep\"]"));
    hub_jsonw_free(&w);
}

static void test_sticky_error(void)
{
    struct hub_jsonw w = {0};
    hub_jsonw_raw(&w, "{");
    hub_jsonw_kstr(&w, "a", "x", 1);
    size_t before = hub_jsonw_len(&w);
    /* A string too large to allocate fails the writer (the bytes are never
     * read: the reservation fails first). */
    static const char dummy[1] = {'x'};
    hub_jsonw_key(&w, "huge");
    hub_jsonw_str(&w, dummy, SIZE_MAX / 2);
    CHECK_EQ(hub_jsonw_error(&w), HUB_ENOMEM);
    size_t at = hub_jsonw_len(&w);
    CHECK(at >= before);
    /* Everything after the failure is ignored, so the text never looks
     * finished: the caller must not send it. */
    hub_jsonw_kint(&w, "b", 2);
    hub_jsonw_raw(&w, "}");
    hub_jsonw_item(&w);
    hub_jsonw_kbool(&w, "c", 1);
    CHECK_EQ(hub_jsonw_len(&w), at);
    CHECK_EQ(hub_jsonw_error(&w), HUB_ENOMEM);
    /* Truncating keeps the flag; freeing clears it. */
    hub_jsonw_truncate(&w, before);
    CHECK_EQ(hub_jsonw_error(&w), HUB_ENOMEM);
    hub_jsonw_free(&w);
    CHECK_EQ(hub_jsonw_error(&w), 0);
    hub_jsonw_raw(&w, "{}");
    CHECK(text_is(&w, "{}"));
    hub_jsonw_free(&w);
}

int main(void)
{
    test_object();
    test_escapes();
    test_truncate();
    test_sticky_error();
    return CHECK_DONE();
}
