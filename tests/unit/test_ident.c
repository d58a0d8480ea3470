/*
 * test_ident.c: the nick rules, nick keys and the text rule (ident.h).
 *
 * The look-alikes of issue 20 are checked in both builds: with ICU each one
 * is refused or collides with "alice"; without ICU every non-ASCII nick is
 * refused. With ICU the ASCII key table is also checked, character by
 * character, against ICU's own NFKC_Casefold and skeleton.
 */
#include "check.h"
#include "hub/common.h"
#include "hub/ident.h"

#include <string.h>

#ifdef HUB_HAVE_ICU
#include <unicode/unorm2.h>
#include <unicode/uspoof.h>
#include <unicode/ustring.h>
#endif

static int key_of(const char *s, char *out)
{
    size_t n = 0;
    int rc = hub_ident_nick_key(s, strlen(s), out, HUB_IDENT_KEY_MAX, &n);
    if (rc == 0 && n != strlen(out))
        return -100;
    return rc;
}

/* 1 when a and b have equal keys. */
static int same_key(const char *a, const char *b)
{
    char ka[HUB_IDENT_KEY_MAX], kb[HUB_IDENT_KEY_MAX];
    if (key_of(a, ka) != 0 || key_of(b, kb) != 0)
        return -1;
    return strcmp(ka, kb) == 0;
}

static int ok(const char *s)
{
    const char *why = hub_ident_nick_check(s, strlen(s));
    if (why != NULL)
        fprintf(stderr, "  refused \"%s\": %s\n", s, why);
    return why == NULL;
}

static int refused(const char *s)
{
    return hub_ident_nick_check(s, strlen(s)) != NULL;
}

static void test_ascii(void)
{
    CHECK(ok("alice"));
    CHECK(ok("Bob_2"));
    CHECK(ok("mary jane"));
    CHECK(ok("x-y.z!"));
    CHECK(refused("al\tice"));
    CHECK(refused("al\x7f"
                  "ice"));
    CHECK_EQ(hub_ident_nick_check("a\0b", 3) != NULL, 1);
    CHECK(refused("guest-3"));
    CHECK(refused("GUEST-3"));
    CHECK(refused("@x"));
    CHECK(refused("a,b"));
    CHECK(refused("\xc3"));

    char k[HUB_IDENT_KEY_MAX];
    CHECK_EQ(key_of("Alice", k), 0);
    CHECK_STR(k, "alice");
    CHECK_EQ(key_of("M0|1", k), 0);
    CHECK_STR(k, "rnoll");
    CHECK_EQ(same_key("alice", "ALICE"), 1);
    CHECK_EQ(same_key("alice", "a1ice"), 1);
    CHECK_EQ(same_key("alice", "a|ice"), 1);
    CHECK_EQ(same_key("bob", "b0b"), 1);
    CHECK_EQ(same_key("rnary", "mary"), 1);
    CHECK_EQ(same_key("alice", "alicf"), 0);
    CHECK_EQ(same_key("alice", "alice "), 0);

    /* Buffers: exact fit, one short, nothing. */
    size_t n = 99;
    CHECK_EQ(hub_ident_nick_key("abc", 3, k, 4, &n), 0);
    CHECK_EQ(n, 3);
    CHECK_EQ(hub_ident_nick_key("abc", 3, k, 3, &n), HUB_ENOBUFS);
    CHECK_EQ(hub_ident_nick_key("m", 1, k, 2, &n), HUB_ENOBUFS);
    CHECK_EQ(hub_ident_nick_key("abc", 3, k, 0, &n), HUB_ENOBUFS);
    CHECK_EQ(hub_ident_nick_key("\xff", 1, k, sizeof(k), &n), HUB_EINVAL);
}

/* The look-alikes of "alice" from issue 20. Each must be refused or share
 * alice's key (the chat then answers nick_taken). */
static const char *const lookalikes[] = {
    "\xd0\xb0lice",      /* Cyrillic a (U+0430) */
    "alice\xe2\x80\x8b", /* zero-width space (U+200B) */
    "\xe2\x80\xae"
    "ecila",            /* right-to-left override (U+202E) */
    "\xef\xbd\x81lice", /* fullwidth a (U+FF41) */
    "al\xc2\xad"
    "ice",               /* soft hyphen (U+00AD) */
    "alice\xe2\x80\x8d", /* zero-width joiner (U+200D) */
    "\xe2\x81\xa6"
    "alice",             /* left-to-right isolate (U+2066) */
    "alice\xef\xbb\xbf", /* BOM / zero-width no-break space */
    "alic\xd0\xb5",      /* Cyrillic e (U+0435) */
    "ALICE",
    "a1ice",
};

static void test_lookalikes(void)
{
    for (size_t i = 0; i < HUB_ARRAY_SIZE(lookalikes); i++) {
        const char *s = lookalikes[i];
        int blocked = refused(s) || same_key(s, "alice") == 1;
        if (!blocked)
            fprintf(stderr, "  look-alike %zu passes\n", i);
        CHECK(blocked);
    }
}

#ifdef HUB_HAVE_ICU
/* ICU's key of s computed here on its own: NFKC_Casefold and skeleton,
 * repeated until they change nothing. */
static void icu_reference_key(const char *s, char *out, size_t outsz)
{
    UErrorCode st = U_ZERO_ERROR;
    UChar a[256], b[256], c[256];
    int32_t n = 0;
    USpoofChecker *sc = uspoof_open(&st);
    const UNormalizer2 *cf = unorm2_getNFKCCasefoldInstance(&st);
    u_strFromUTF8(a, 256, &n, s, -1, &st);
    for (int r = 0; r < 8 && U_SUCCESS(st); r++) {
        int32_t m = unorm2_normalize(cf, a, n, b, 256, &st);
        m = uspoof_getSkeleton(sc, 0, b, m, c, 256, &st);
        int same = m == n && memcmp(a, c, (size_t)n * sizeof(UChar)) == 0;
        memcpy(a, c, (size_t)m * sizeof(UChar));
        n = m;
        if (same)
            break;
    }
    u_strToUTF8(out, (int32_t)outsz, NULL, a, n, &st);
    uspoof_close(sc);
    CHECK(U_SUCCESS(st));
}

static void test_ascii_table_matches_icu(void)
{
    char s[3] = {0};
    for (int c = 0x20; c < 0x7f; c++) {
        char mine[HUB_IDENT_KEY_MAX], ref[HUB_IDENT_KEY_MAX];
        s[0] = (char)c;
        CHECK_EQ(key_of(s, mine), 0);
        icu_reference_key(s, ref, sizeof(ref));
        if (strcmp(mine, ref) != 0)
            fprintf(stderr, "  ASCII %02x: table \"%s\", ICU \"%s\"\n", c, mine, ref);
        CHECK_STR(mine, ref);
    }
    /* Whole strings too, including ones whose pieces meet ("r" "n"). */
    static const char *const words[] = {"Mary", "rn0ld", "A|1ce", "\"quote\"", "50%off"};
    for (size_t i = 0; i < HUB_ARRAY_SIZE(words); i++) {
        char mine[HUB_IDENT_KEY_MAX], ref[HUB_IDENT_KEY_MAX];
        CHECK_EQ(key_of(words[i], mine), 0);
        icu_reference_key(words[i], ref, sizeof(ref));
        CHECK_STR(mine, ref);
    }
}

static void test_unicode(void)
{
    CHECK_EQ(hub_ident_unicode(), 1);
    /* One script plus Common and Inherited is fine. */
    CHECK(ok("caf\xc3\xa9"));                                      /* café, precomposed */
    CHECK(ok("\xd0\xb0\xd0\xbb\xd0\xb8\xd1\x81\xd0\xb0"));         /* алиса */
    CHECK(ok("\xce\xb1\xce\xbb\xce\xb9\xce\xba\xce\xb7 2"));       /* αλικη 2 */
    CHECK(ok("\xe5\xb1\xb1\xe7\x94\xb0\xe3\x81\x95\xe3\x82\x93")); /* 山田さん: Han + Hiragana */
    CHECK(ok("\xed\x95\x9c\xea\xb8\x80"));                         /* 한글 */
    CHECK(ok("bob \xf0\x9f\x98\x80"));                             /* an emoji is Common */
    CHECK(ok("e\xcc\x81")); /* e + combining acute (Inherited) */

    /* Refused: the classes of ident.h. */
    CHECK(refused("\xd0\xb0lice"));      /* Cyrillic + Latin */
    CHECK(refused("ab\xce\xb1"));        /* Latin + Greek */
    CHECK(refused("alice\xe2\x80\x8b")); /* ZWSP: format */
    CHECK(refused("al\xc2\xad"
                  "ice")); /* soft hyphen: format */
    CHECK(refused("\xe2\x80\xae"
                  "abc"));           /* RLO: format */
    CHECK(refused("a\xe2\x80\x8f")); /* RLM: format */
    CHECK(refused("a\xcd\x8f"
                  "b"));             /* combining grapheme joiner: default ignorable */
    CHECK(refused("a\xef\xb8\x8f")); /* variation selector 16: default ignorable */
    CHECK(refused("a\xe3\x85\xa4"
                  "b"));         /* Hangul filler U+3164 */
    CHECK(refused("a\xc2\x85")); /* NEL, a C1 control */
    CHECK(refused("a\xc2\xa0"
                  "b")); /* no-break space */
    CHECK(refused("a\xe3\x80\x80"
                  "b"));                  /* ideographic space */
    CHECK(refused("a\xee\x80\x80"));      /* private use U+E000 */
    CHECK(refused("a\xf0\xbf\xbf\xbd"));  /* U+3FFFD, unassigned */
    CHECK(refused("a\xef\xbf\xbe"));      /* noncharacter U+FFFE */
    CHECK(refused("1\xd9\xa1"));          /* ASCII 1 and Arabic-Indic 1 */
    CHECK(refused("e\xcc\x81\xcc\x81"));  /* the same combining mark twice */
    CHECK(refused("\xef\xbc\xa0x"));      /* fullwidth @ reads as the reserved @ */
    CHECK(refused("\xef\xbd\x87uest-1")); /* fullwidth g: "guest-1" */
    CHECK(refused("a\xef\xbc\x8c"
                  "b")); /* fullwidth comma */

    /* Keys: NFKC, case folding and the skeleton. */
    CHECK_EQ(same_key("\xef\xbd\x81lice", "alice"), 1);   /* fullwidth */
    CHECK_EQ(same_key("caf\xc3\xa9", "cafe\xcc\x81"), 1); /* NFC and NFD */
    CHECK_EQ(same_key("\xef\xac\x81ne", "fine"), 1);      /* the fi ligature */
    CHECK_EQ(same_key("STRASSE", "stra\xc3\x9f"
                                 "e"),
             1);                                                   /* ß folds to ss */
    CHECK_EQ(same_key("\xd0\x90\xd0\x92", "\xd0\xb0\xd0\xb2"), 1); /* АВ / ав */
    CHECK_EQ(same_key("\xd0\xb0\xd1\x80\xd0\xb5", "ape"), 1); /* Cyrillic аре looks like ape */
    CHECK_EQ(same_key("\xd0\xb0\xd0\xbb\xd0\xb8\xd1\x81\xd0\xb0", "alice"), 0);

    /* A long nick still fits the key buffer, and a tiny buffer is refused. */
    char k[HUB_IDENT_KEY_MAX];
    size_t n = 0;
    const char *wide = "\xef\xbc\xa1\xef\xbc\xa1\xef\xbc\xa1\xef\xbc\xa1\xef\xbc\xa1\xef\xbc\xa1";
    CHECK_EQ(hub_ident_nick_key(wide, strlen(wide), k, sizeof(k), &n), 0);
    CHECK_STR(k, "aaaaaa");
    CHECK_EQ(hub_ident_nick_key(wide, strlen(wide), k, 3, &n), HUB_ENOBUFS);
}
#else
static void test_ascii_only(void)
{
    CHECK_EQ(hub_ident_unicode(), 0);
    CHECK(refused("caf\xc3\xa9"));
    CHECK(refused("\xef\xbd\x81lice"));
    char k[HUB_IDENT_KEY_MAX];
    size_t n = 0;
    CHECK_EQ(hub_ident_nick_key("caf\xc3\xa9", 5, k, sizeof(k), &n), HUB_EINVAL);
}
#endif

static void test_text(void)
{
    CHECK(hub_ident_text_check("hello", 5) == NULL);
    CHECK(hub_ident_text_check("a\tb\nc", 5) == NULL);
    CHECK(hub_ident_text_check("caf\xc3\xa9 \xe2\x80\xae", 9) == NULL); /* non-C0 kept */
    CHECK(hub_ident_text_check("a\x7f", 2) == NULL);                    /* DEL is not C0 */
    CHECK(hub_ident_text_check("a\0b", 3) != NULL);
    CHECK(hub_ident_text_check("a\rb", 3) != NULL);
    CHECK(hub_ident_text_check("\x1b[31m", 5) != NULL);
    CHECK(hub_ident_text_check("\x01", 1) != NULL);
    CHECK(hub_ident_text_check("", 0) == NULL);
}

/* Claim keys: the nick key up to max bytes, else "#" and its SHA-1. */
static void test_claim_key(void)
{
    char key[HUB_IDENT_KEY_MAX], plain[HUB_IDENT_KEY_MAX];
    size_t n = 0, pn = 0;
    CHECK_EQ(hub_ident_claim_key("Alice", 5, 255, key, sizeof(key), &n), 0);
    CHECK_EQ(hub_ident_nick_key("Alice", 5, plain, sizeof(plain), &pn), 0);
    CHECK_EQ(n, pn);
    CHECK(memcmp(key, plain, n) == 0);
    /* Over max: hashed, 41 bytes, the same for look-alikes of one nick. */
    CHECK_EQ(hub_ident_claim_key("Alice", 5, 3, key, sizeof(key), &n), 0);
    CHECK_EQ(n, 41);
    CHECK(key[0] == '#' && key[41] == '\0');
    for (size_t i = 1; i < 41; i++)
        CHECK((key[i] >= '0' && key[i] <= '9') || (key[i] >= 'a' && key[i] <= 'f'));
    char again[HUB_IDENT_KEY_MAX];
    CHECK_EQ(hub_ident_claim_key("ALICE", 5, 3, again, sizeof(again), &n), 0);
    CHECK(strcmp(key, again) == 0);
    CHECK_EQ(hub_ident_claim_key("Bob", 3, 2, again, sizeof(again), &n), 0);
    CHECK(strcmp(key, again) != 0);
}

int main(void)
{
    test_claim_key();
    test_ascii();
    test_lookalikes();
#ifdef HUB_HAVE_ICU
    test_ascii_table_matches_icu();
    test_unicode();
#else
    test_ascii_only();
#endif
    test_text();
    return CHECK_DONE();
}
