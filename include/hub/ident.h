/*
 * ident.h: which nicks and message texts the hub accepts, and when two nicks
 * are "the same" (Unicode UTS #39 confusable skeletons).
 *
 * Pure functions on borrowed bytes: no state the caller can see, no I/O.
 *
 * A nick is refused (hub_ident_nick_check) when it holds a control
 * character, a format character (bidi controls such as U+202E, zero-width
 * characters such as U+200B, the soft hyphen U+00AD), a default-ignorable
 * code point, an unassigned or private-use code point, or white space other
 * than U+0020; when its characters are not from one script plus Common and
 * Inherited (UTS #39 "single script": Japanese Han + Hiragana + Katakana,
 * Korean Han + Hangul and Chinese Han + Bopomofo count as one script); when
 * it mixes digits of different numbering systems or stacks the same
 * combining mark twice; and when its key starts with "@" or "guest-" or holds
 * a comma, which are reserved whatever characters spell them.
 *
 * Nicks are unique by key (hub_ident_nick_key): NFKC with case folding
 * (NFKC_Casefold), then the UTS #39 skeleton, repeated until nothing changes.
 * So "Alice", "ａlice" (fullwidth) and "a1ice" all have the key of "alice";
 * Cyrillic "аlice" is refused outright as mixed-script. Case is folded before
 * the skeleton, so a capital I counts as i, not as l.
 *
 * With ICU (meson -Dicu=auto finds libicu) every script is handled as above.
 * Without ICU (the Windows and macOS cross builds) only printable ASCII
 * nicks are accepted, and their keys come from a table generated from ICU
 * (ident.c), so an ASCII nick has the same key in both builds and hubs of
 * either build can share one nick space.
 */
#ifndef HUB_IDENT_H
#define HUB_IDENT_H

#include <stddef.h>

/* Largest key in bytes, including the NUL that hub_ident_nick_key writes. */
#define HUB_IDENT_KEY_MAX 512

/* Returns 1 when the hub was built with ICU (any script), 0 when nicks are
 * limited to ASCII. */
int hub_ident_unicode(void);

/* Checks the len bytes at s (borrowed; need not be NUL-terminated) against
 * the nick rules above. It does not check length, spaces at the ends or the
 * hub's other rules (chat_nick_problem does). Returns NULL when the nick is
 * acceptable, else a static sentence saying why not, for a bad_nick error. */
const char *hub_ident_nick_check(const char *s, size_t len);

/* Writes the uniqueness key of the nick s (len bytes, borrowed) into out
 * (outsz bytes, HUB_IDENT_KEY_MAX is always enough for a nick that passed
 * hub_ident_nick_check) as UTF-8 with a NUL, and its length without the NUL
 * into *outlen. Two nicks collide exactly when their keys are equal bytes.
 * Returns 0; HUB_EINVAL when s is not valid UTF-8 (or, without ICU, not
 * ASCII); HUB_ENOBUFS when out is too small; HUB_ENOMEM. */
int hub_ident_nick_key(const char *s, size_t len, char *out, size_t outsz, size_t *outlen);

/* The name the nick s is claimed under across nodes (chat's nick table, the
 * engine's claims, bans by nick): its key (hub_ident_nick_key) when that is
 * at most max bytes, else "#" and the key's hex SHA-1 (41 bytes, as unique
 * as SHA-1 is). out (outsz bytes, at least 42) is NUL-terminated. Returns
 * 0 with *outlen set, or HUB_EINVAL as hub_ident_nick_key does. */
int hub_ident_claim_key(const char *s, size_t len, size_t max, char *out, size_t outsz,
                        size_t *outlen);

/* Checks a message text (len bytes, borrowed): C0 control characters other
 * than tab (U+0009) and line feed (U+000A) are refused, NUL included;
 * everything else is kept. Returns NULL or a static reason for bad_text. */
const char *hub_ident_text_check(const char *s, size_t len);

#endif
