/*
 * test_utf8.c: the validator against RFC 3629's edge cases.
 */
#include "check.h"
#include "hub/common.h"
#include "hub/utf8.h"

int main(void)
{
    static const struct {
        const char *s;
        int valid;
    } rows[] = {
        {"", 1},
        {"plain ascii", 1},
        {"caf\xc3\xa9", 1},      /* é */
        {"\xe2\x82\xac", 1},     /* € */
        {"\xf0\x9f\x98\x80", 1}, /* an emoji */
        {"\xf4\x8f\xbf\xbf", 1}, /* U+10FFFF */
        {"\xed\x9f\xbf", 1},     /* U+D7FF, just below the surrogates */
        {"\xc3", 0},             /* truncated */
        {"\xe2\x82", 0},         /* truncated */
        {"\xc3\x28", 0},         /* bad continuation */
        {"\xc0\xaf", 0},         /* overlong '/' */
        {"\xc1\xbf", 0},         /* overlong */
        {"\xe0\x80\xaf", 0},     /* overlong */
        {"\xf0\x80\x80\xaf", 0}, /* overlong */
        {"\xed\xa0\x80", 0},     /* surrogate U+D800 */
        {"\xed\xbf\xbf", 0},     /* surrogate U+DFFF */
        {"\xf4\x90\x80\x80", 0}, /* above U+10FFFF */
        {"\xf5\x80\x80\x80", 0}, /* invalid lead */
        {"\xff", 0},
        {"\x80", 0}, /* lone continuation */
        {"ok\xe2\x82\xacok\xc3", 0},
    };
    for (size_t i = 0; i < HUB_ARRAY_SIZE(rows); i++) {
        int got = hub_utf8_valid(rows[i].s, strlen(rows[i].s));
        if (got != rows[i].valid)
            fprintf(stderr, "row %zu: got %d\n", i, got);
        CHECK_EQ(got, rows[i].valid);
    }
    CHECK_EQ(hub_utf8_valid("a\0b", 3), 1); /* NUL is a valid code point */
    CHECK_EQ(hub_utf8_length("caf\xc3\xa9 \xf0\x9f\x98\x80", 10), 6);
    return CHECK_DONE();
}
