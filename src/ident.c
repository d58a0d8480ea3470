/*
 * ident.c: nick rules, nick keys and the message text rule (see ident.h).
 *
 * Two builds share this file. With HUB_HAVE_ICU the character classes,
 * NFKC_Casefold, the script rule and the UTS #39 skeleton come from ICU
 * (libicuuc and libicui18n). Without it, nicks are printable ASCII and keys
 * come from ascii_key below.
 *
 * Invariants:
 * - A pure-ASCII nick takes the ascii_key path in both builds. The table is
 *   what ICU 72 computes for each printable ASCII character (test_ident
 *   checks every entry against ICU in builds that have it), and the key of
 *   an ASCII string is the concatenation of its characters' keys, because
 *   case folding and the skeleton both map ASCII character by character.
 * - The ICU spoof checker is opened on first use and kept for the life of
 *   the process; it is only read afterwards. The hub calls this module from
 *   its one loop thread, so the lazy opening needs no lock.
 */
#include "hub/ident.h"

#include "hub/common.h"
#include "hub/sha1.h"
#include "hub/utf8.h"

#include <string.h>

#ifdef HUB_HAVE_ICU
#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/uspoof.h>
#include <unicode/ustring.h>
#endif

/* Decodes the code point at s[*i] of valid UTF-8 and moves *i past it. */
static uint32_t next_cp(const char *s, size_t len, size_t *i)
{
    const unsigned char *p = (const unsigned char *)s + *i;
    size_t left = len - *i;
    uint32_t c = p[0];
    size_t n = c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
    if (n > left)
        n = left; /* cannot happen for valid UTF-8; never read past the end */
    if (n == 2)
        c = ((c & 0x1f) << 6) | (p[1] & 0x3f);
    else if (n == 3)
        c = ((c & 0x0f) << 12) | ((uint32_t)(p[1] & 0x3f) << 6) | (p[2] & 0x3f);
    else if (n == 4)
        c = ((c & 0x07) << 18) | ((uint32_t)(p[1] & 0x3f) << 12) | ((uint32_t)(p[2] & 0x3f) << 6) |
            (p[3] & 0x3f);
    *i += n;
    return c;
}

static int all_ascii(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] >= 0x80)
            return 0;
    return 1;
}

/* ---- ASCII keys ---- */

/* The key of each printable ASCII character that is not its own key,
 * generated with ICU 72 (NFKC_Casefold and uspoof_getSkeleton repeated to a
 * fixed point, as icu_key does). Letters fold to lower case; among the rest
 * only these look like something else. */
static const char *ascii_special(unsigned char c)
{
    switch (c) {
    case '"':
        return "''";
    case '%':
        return "o/o";
    case '0':
        return "o";
    case '1':
        return "l";
    case 'M':
    case 'm':
        return "rn";
    case '`':
        return "'";
    case '|':
        return "l";
    }
    return NULL;
}

/* Appends the key of one ASCII character; returns 0 or HUB_ENOBUFS. */
static int ascii_key_char(unsigned char c, char *out, size_t outsz, size_t *n)
{
    const char *sp = ascii_special(c);
    char one[2] = {(char)hub_ascii_lower(c), '\0'};
    const char *k = sp != NULL ? sp : one;
    size_t klen = strlen(k);
    if (klen >= outsz - *n)
        return HUB_ENOBUFS;
    memcpy(out + *n, k, klen);
    *n += klen;
    return 0;
}

static int ascii_key(const char *s, size_t len, char *out, size_t outsz, size_t *outlen)
{
    size_t n = 0;
    if (outsz == 0)
        return HUB_ENOBUFS;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        /* Controls never pass the nick check; they stand for themselves. */
        int rc = c < 0x20 || c == 0x7f ? (n + 1 < outsz ? (out[n++] = (char)c, 0) : HUB_ENOBUFS)
                                       : ascii_key_char(c, out, outsz, &n);
        if (rc != 0)
            return rc;
    }
    out[n] = '\0';
    *outlen = n;
    return 0;
}

/* ---- ICU ---- */

#ifdef HUB_HAVE_ICU

/* UTF-16 units of the working buffers: far more than a nick's expansion. */
#define ICU_UNITS 512

/* Rounds of case folding and skeleton before a key is taken as final; real
 * data reaches its fixed point in two or three. */
#define ICU_MAX_ROUNDS 8

static USpoofChecker *checker(void)
{
    static USpoofChecker *sc;
    if (sc == NULL) {
        UErrorCode st = U_ZERO_ERROR;
        USpoofChecker *c = uspoof_open(&st);
        if (U_FAILURE(st))
            return NULL;
        /* Single script (with the CJK combinations of UTS #39 section 5.1),
         * no mixed numbering systems, no repeated combining marks. */
        uspoof_setRestrictionLevel(c, USPOOF_SINGLE_SCRIPT_RESTRICTIVE);
        uspoof_setChecks(c, USPOOF_RESTRICTION_LEVEL | USPOOF_MIXED_NUMBERS | USPOOF_INVISIBLE,
                         &st);
        if (U_FAILURE(st)) {
            uspoof_close(c);
            return NULL;
        }
        sc = c;
    }
    return sc;
}

static int icu_key(const char *s, size_t len, char *out, size_t outsz, size_t *outlen)
{
    UChar a[ICU_UNITS], b[ICU_UNITS], c[ICU_UNITS];
    UErrorCode st = U_ZERO_ERROR;
    USpoofChecker *sc = checker();
    const UNormalizer2 *cf = unorm2_getNFKCCasefoldInstance(&st);
    if (sc == NULL || U_FAILURE(st))
        return HUB_ENOMEM;
    if (len > INT32_MAX)
        return HUB_ENOBUFS;
    int32_t n = 0;
    u_strFromUTF8(a, ICU_UNITS, &n, s, (int32_t)len, &st);
    if (st == U_BUFFER_OVERFLOW_ERROR || st == U_STRING_NOT_TERMINATED_WARNING)
        return HUB_ENOBUFS;
    if (U_FAILURE(st))
        return HUB_EINVAL;
    for (int round = 0; round < ICU_MAX_ROUNDS; round++) {
        int32_t m = unorm2_normalize(cf, a, n, b, ICU_UNITS, &st);
        if (U_SUCCESS(st))
            m = uspoof_getSkeleton(sc, 0, b, m, c, ICU_UNITS, &st);
        if (st == U_BUFFER_OVERFLOW_ERROR || st == U_STRING_NOT_TERMINATED_WARNING)
            return HUB_ENOBUFS;
        if (U_FAILURE(st))
            return HUB_EINVAL;
        int same = m == n && memcmp(a, c, (size_t)n * sizeof(UChar)) == 0;
        memcpy(a, c, (size_t)m * sizeof(UChar));
        n = m;
        if (same)
            break;
    }
    int32_t olen = 0;
    if (outsz > INT32_MAX)
        outsz = INT32_MAX;
    u_strToUTF8(out, (int32_t)outsz, &olen, a, n, &st);
    if (st == U_BUFFER_OVERFLOW_ERROR || st == U_STRING_NOT_TERMINATED_WARNING)
        return HUB_ENOBUFS;
    if (U_FAILURE(st))
        return HUB_EINVAL;
    *outlen = (size_t)olen;
    return 0;
}

/* The character rules of ident.h for one code point. */
static const char *icu_char_problem(uint32_t cp)
{
    UChar32 c = (UChar32)cp;
    int8_t type = u_charType(c);
    if (type == U_CONTROL_CHAR)
        return "the nick contains control characters";
    if (type == U_FORMAT_CHAR)
        return "the nick contains invisible formatting characters (such as zero-width or "
               "direction controls, or a soft hyphen)";
    if (u_hasBinaryProperty(c, UCHAR_DEFAULT_IGNORABLE_CODE_POINT))
        return "the nick contains characters that are normally invisible";
    if (type == U_UNASSIGNED || type == U_PRIVATE_USE_CHAR || type == U_SURROGATE ||
        u_hasBinaryProperty(c, UCHAR_NONCHARACTER_CODE_POINT))
        return "the nick contains unassigned or private-use characters";
    if (c != ' ' && u_isUWhiteSpace(c))
        return "the nick contains white space other than a plain space";
    return NULL;
}

static const char *icu_spoof_problem(const char *s, size_t len)
{
    USpoofChecker *sc = checker();
    if (sc == NULL)
        return "the nick cannot be checked right now (out of memory)";
    UErrorCode st = U_ZERO_ERROR;
    int32_t r = uspoof_check2UTF8(sc, s, (int32_t)len, NULL, &st);
    if (U_FAILURE(st))
        return "the nick cannot be checked";
    if (r & USPOOF_MIXED_NUMBERS)
        return "the nick mixes digits of different numbering systems";
    if (r & USPOOF_RESTRICTION_LEVEL)
        return "the nick mixes scripts: use letters of one script (plus digits and "
               "punctuation)";
    if (r & USPOOF_INVISIBLE)
        return "the nick repeats a combining mark";
    return NULL;
}

#endif /* HUB_HAVE_ICU */

/* ---- Public entry points ---- */

int hub_ident_unicode(void)
{
#ifdef HUB_HAVE_ICU
    return 1;
#else
    return 0;
#endif
}

int hub_ident_nick_key(const char *s, size_t len, char *out, size_t outsz, size_t *outlen)
{
    if (!hub_utf8_valid(s, len))
        return HUB_EINVAL;
    if (all_ascii(s, len))
        return ascii_key(s, len, out, outsz, outlen);
#ifdef HUB_HAVE_ICU
    return icu_key(s, len, out, outsz, outlen);
#else
    return HUB_EINVAL;
#endif
}

const char *hub_ident_nick_check(const char *s, size_t len)
{
    if (!hub_utf8_valid(s, len))
        return "the nick is not valid UTF-8";
    for (size_t i = 0; i < len;) {
        uint32_t c = next_cp(s, len, &i);
        if (c < 0x20 || c == 0x7f)
            return "the nick contains control characters";
        if (c < 0x80)
            continue;
#ifdef HUB_HAVE_ICU
        const char *why = icu_char_problem(c);
        if (why != NULL)
            return why;
#else
        return "this hub accepts only ASCII nicks (it was built without Unicode support)";
#endif
    }
#ifdef HUB_HAVE_ICU
    if (!all_ascii(s, len)) {
        const char *why = icu_spoof_problem(s, len);
        if (why != NULL)
            return why;
    }
#endif
    char key[HUB_IDENT_KEY_MAX];
    size_t klen = 0;
    int rc = hub_ident_nick_key(s, len, key, sizeof(key), &klen);
    if (rc == HUB_ENOMEM)
        return "the nick cannot be checked right now (out of memory)";
    if (rc != 0)
        return "the nick is too long once normalised";
    /* The reserved spellings, whichever characters make them up: "@" starts
     * direct-message rooms, "guest-" names raw clients, "," separates the
     * two nicks of a direct-message room. */
    if ((klen >= 1 && key[0] == '@') || (klen >= 6 && memcmp(key, "guest-", 6) == 0))
        return "nicks starting with @ or guest- are reserved";
    if (memchr(key, ',', klen) != NULL)
        return "the nick contains a comma";
    return NULL;
}

const char *hub_ident_text_check(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 && c != '\t' && c != '\n')
            return "the text contains control characters (only tab and newline are allowed)";
    }
    return NULL;
}

int hub_ident_claim_key(const char *s, size_t len, size_t max, char *out, size_t outsz,
                        size_t *outlen)
{
    int rc = hub_ident_nick_key(s, len, out, outsz, outlen);
    if (rc != 0 || *outlen <= max)
        return rc;
    if (outsz < 42)
        return HUB_EINVAL;
    uint8_t d[20];
    struct hub_sha1 h;
    hub_sha1_init(&h);
    hub_sha1_update(&h, out, *outlen);
    hub_sha1_final(&h, d);
    static const char hex[] = "0123456789abcdef";
    out[0] = '#';
    for (size_t i = 0; i < 20; i++) {
        out[1 + 2 * i] = hex[d[i] >> 4];
        out[2 + 2 * i] = hex[d[i] & 15];
    }
    out[41] = '\0';
    *outlen = 41;
    return 0;
}
