/*
 * nicks.c: this node's nick table and the nick rules.
 *
 * A chained hash keyed by the nick's ident key (NFKC, case folding and the
 * UTS #39 confusable skeleton, see ident.h), doubled when it fills, that
 * holds every JSON client of this node that said hello. Uniqueness across
 * nodes is the engine's (hub_engine_claim_nick, which chat calls with the
 * same key, chat_nick_key): a nick enters the table only once its claim succeeded,
 * so the table is the local part of the engine's claims, used to find local
 * clients by nick (DMs, invites) and to refuse a local duplicate without a
 * round trip. Raw clients use reserved guest-<n> nicks (guest-<node>-<n>
 * with several nodes) and are not in the table.
 */
#include "chat_int.h"
#include "hub/history.h"
#include "hub/ident.h"
#include "hub/log.h"
#include "hub/metrics.h"
#include "hub/utf8.h"
#include "hub/ws.h"

#include <stdlib.h>
#include <string.h>

/* ---- nick table ----------------------------------------------------- */

/* The table compares nicks by their claim key (the ident key: confusable
 * skeleton, see ident.h; hashed when long), the name the engine claims, so
 * look-alikes of a held nick are taken here and on every node alike.
 * Writes the claim key of s into key (CHAT_NICK_KEY_MAX bytes) and returns
 * its length, or returns SIZE_MAX when s has no key (not a nick at all:
 * never found). */
static size_t nick_key(const char *s, size_t len, char *key)
{
    size_t n = 0;
    if (hub_ident_claim_key(s, len, HUB_ENGINE_NICK_MAX, key, CHAT_NICK_KEY_MAX, &n) != 0)
        return SIZE_MAX;
    return n;
}

size_t chat_nick_key(const char *s, size_t len, char *key)
{
    size_t n = nick_key(s, len, key);
    if (n != SIZE_MAX)
        return n;
    /* No key (never a nick that passed the rules): the bytes themselves,
     * at most what the engine takes. */
    n = len < HUB_ENGINE_NICK_MAX ? len : HUB_ENGINE_NICK_MAX;
    memcpy(key, s, n);
    key[n] = '\0';
    return n;
}

static uint64_t nick_hash(const char *s, size_t len)
{
    char key[CHAT_NICK_KEY_MAX];
    size_t n = nick_key(s, len, key);
    return n == SIZE_MAX ? hub_hash(s, len, 1) : hub_hash(key, n, 1);
}

/* Do the nick at a (whose key is b_key, b_len bytes) and b share a key? */
static int nick_key_eq(const char *a, size_t alen, const char *b_key, size_t b_len)
{
    char key[CHAT_NICK_KEY_MAX];
    size_t n = nick_key(a, alen, key);
    return n != SIZE_MAX && n == b_len && memcmp(key, b_key, n) == 0;
}

int chat_nick_eq(const char *a, size_t alen, const char *b, size_t blen)
{
    return hub_eq_ci(a, alen, b, blen);
}

int chat_nick_same(const char *a, size_t alen, const char *b, size_t blen)
{
    char key[CHAT_NICK_KEY_MAX];
    size_t n = nick_key(b, blen, key);
    return n != SIZE_MAX && nick_key_eq(a, alen, key, n);
}

struct hub_chat_client *chat_nick_find_key(const struct hub_chat *chat, const char *key,
                                           size_t klen)
{
    uint64_t h = hub_hash(key, klen, 1);
    for (struct hub_chat_client *c = chat->nicks[h & (chat->nnick_buckets - 1)]; c;
         c = c->nick_next)
        if (c->nick_hash == h && nick_key_eq(c->nick, c->nick_len, key, klen))
            return c;
    return NULL;
}

struct hub_chat_client *chat_nick_find(const struct hub_chat *chat, const char *s, size_t len)
{
    char key[CHAT_NICK_KEY_MAX];
    size_t klen = nick_key(s, len, key);
    if (klen == SIZE_MAX)
        return NULL;
    return chat_nick_find_key(chat, key, klen);
}

void chat_nick_unlink(struct hub_chat *chat, struct hub_chat_client *cl)
{
    struct hub_chat_client **pp = &chat->nicks[cl->nick_hash & (chat->nnick_buckets - 1)];
    while (*pp != NULL && *pp != cl)
        pp = &(*pp)->nick_next;
    if (*pp == cl) {
        *pp = cl->nick_next;
        chat->nnicks--;
    }
    cl->nick_next = NULL;
}

void chat_nick_link(struct hub_chat *chat, struct hub_chat_client *cl)
{
    if (chat->nnicks >= chat->nnick_buckets) {
        size_t n = chat->nnick_buckets * 2;
        struct hub_chat_client **b = calloc(n, sizeof(*b));
        if (b != NULL) {
            for (size_t i = 0; i < chat->nnick_buckets; i++)
                for (struct hub_chat_client *c = chat->nicks[i], *next; c; c = next) {
                    next = c->nick_next;
                    c->nick_next = b[c->nick_hash & (n - 1)];
                    b[c->nick_hash & (n - 1)] = c;
                }
            free(chat->nicks);
            chat->nicks = b;
            chat->nnick_buckets = n;
        }
    }
    cl->nick_hash = nick_hash(cl->nick, cl->nick_len);
    size_t i = cl->nick_hash & (chat->nnick_buckets - 1);
    cl->nick_next = chat->nicks[i];
    chat->nicks[i] = cl;
    chat->nnicks++;
}

/* Checks the nick rules of docs/protocol.md. Returns NULL or a reason. */
const char *chat_nick_problem(const char *s, size_t len)
{
    if (len == 0)
        return "the nick is empty";
    if (len > HUB_CHAT_NICK_BYTES || hub_utf8_length(s, len) > HUB_CHAT_NICK_MAX)
        return "the nick is longer than 32 characters";
    if (!hub_utf8_valid(s, len))
        return "the nick is not valid UTF-8";
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        /* C0 controls, DEL, and C1 controls (U+0080-U+009F, encoded C2 80-9F). */
        if (c < 0x20 || c == 0x7f || (c == 0xc2 && i + 1 < len && (unsigned char)s[i + 1] < 0xa0))
            return "the nick contains control characters";
    }
    if (s[0] == ' ' || s[len - 1] == ' ')
        return "the nick starts or ends with a space";
    if (memchr(s, ',', len) != NULL)
        return "the nick contains a comma";
    if (s[0] == '@' || (len >= 6 && chat_nick_eq(s, 6, "guest-", 6)))
        return "nicks starting with @ or guest- are reserved";
    return NULL;
}

/* Replaces the nick (copied). Returns 0, or HUB_ENOMEM with the old one kept. */
int chat_set_nick(struct hub_chat_client *cl, const char *s, size_t len)
{
    char *n = realloc(cl->nick, len + 1);
    if (n == NULL)
        return HUB_ENOMEM;
    memcpy(n, s, len);
    n[len] = '\0';
    cl->nick = n;
    cl->nick_len = len;
    return 0;
}
