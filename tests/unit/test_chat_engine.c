/*
 * test_chat_engine.c: chat wired to a scripted fake engine (one that
 * implements src/engine_impl.h and completes requests when the test says
 * so), for what the memory engine never does: a nick claim that completes
 * after its client closed, HUB_EAGAIN turned into "unavailable" replies (and
 * raw lines dropped and counted), an epoch change turned into a gap push,
 * presence and messages of clients of another node, client ids named after
 * the node, and a join's history read racing on_msg (reconciled by offset).
 */
#include "../../src/chat_int.h"
#include "../../src/engine_impl.h"
#include "check.h"
#include "hub/chat.h"
#include "hub/ident.h"
#include "hub/metrics.h"
#include "hub/ws.h"
#include "ws_script.h"

#include <stdlib.h>

/* ---- the fake engine ------------------------------------------------- */

struct fake {
    struct hub_engine base;          /* must be first */
    int publish_rc;                  /* what publish returns (0: held for the test) */
    hub_engine_publish_cb pub_cb[4]; /* the held publishes, oldest first */
    void *pub_data[4];               /* their arguments */
    unsigned npub;                   /* publishes held */
    char pub_text[64];               /* the newest one's text */
    char pub_log[256];               /* every text published, "<text>|" each */
    int members_rc;                  /* what members returns */
    struct hub_engine_member m[4];   /* what members lists */
    size_t nm;                       /* entries in m */
    uint64_t total;                  /* the total it reports */
    hub_engine_done_cb claim_cb;     /* the held claim */
    void *claim_data;                /* its argument */
    char claimed[64];                /* its nick */
    char released[64];               /* the last nick released */
    char released_by[64];            /* by whom */
    int hold_reads;                  /* 1: reads wait for read_done */
    hub_history_read_cb read_cb;     /* the held read */
    void *read_data;                 /* its argument */
    int subs;                        /* subscribed rooms */
    int joins, leaves;               /* presence calls */
};

static void fake_close(struct hub_engine *e, void (*cb)(void *), void *data)
{
    (void)e;
    cb(data);
}

static void fake_free(struct hub_engine *e)
{
    free(e);
}

static int fake_subscribe(struct hub_engine *e, struct hub_iov room)
{
    (void)room;
    ((struct fake *)e)->subs++;
    return 0;
}

static void fake_unsubscribe(struct hub_engine *e, struct hub_iov room)
{
    (void)room;
    ((struct fake *)e)->subs--;
}

static int fake_publish(struct hub_engine *e, const struct hub_engine_pub *p,
                        hub_engine_publish_cb cb, void *data)
{
    struct fake *f = (struct fake *)e;
    if (f->publish_rc != 0)
        return f->publish_rc;
    if (f->npub == 4)
        return HUB_EAGAIN; /* a full queue */
    f->pub_cb[f->npub] = cb;
    f->pub_data[f->npub++] = data;
    snprintf(f->pub_text, sizeof(f->pub_text), "%.*s", (int)p->text.len, p->text.base);
    size_t used = strlen(f->pub_log);
    snprintf(f->pub_log + used, sizeof(f->pub_log) - used, "%s|", f->pub_text);
    return 0;
}

static int fake_read(struct hub_engine *e, struct hub_iov room, int dir, uint64_t pos,
                     unsigned limit, hub_history_read_cb cb, void *data)
{
    (void)room, (void)dir, (void)pos, (void)limit;
    struct fake *f = (struct fake *)e;
    if (f->hold_reads) {
        f->read_cb = cb;
        f->read_data = data;
        return 0;
    }
    struct hub_history_pos p = {.epoch = "e1", .last = 0, .first = 1};
    cb(data, 0, &p, NULL, 0, 1);
    return 0;
}

/* Joins and history ask with a viewer (hub_engine_query): the fake answers
 * them as reads (no topic, no bans). */
static int fake_query(struct hub_engine *e, struct hub_iov room, const struct hub_history_query *q,
                      hub_history_read_cb cb, void *data)
{
    return fake_read(e, room, q->dir, q->pos, q->limit, cb, data);
}

static int fake_join(struct hub_engine *e, struct hub_iov room, struct hub_iov client,
                     struct hub_iov nick)
{
    (void)room, (void)client, (void)nick;
    ((struct fake *)e)->joins++;
    return 0;
}

static int fake_leave(struct hub_engine *e, struct hub_iov room, struct hub_iov client)
{
    (void)room, (void)client;
    ((struct fake *)e)->leaves++;
    return 0;
}

static int fake_renick(struct hub_engine *e, struct hub_iov room, struct hub_iov client,
                       struct hub_iov old_nick, struct hub_iov nick)
{
    (void)e, (void)room, (void)client, (void)old_nick, (void)nick;
    return 0;
}

static int fake_members(struct hub_engine *e, struct hub_iov room, unsigned limit,
                        hub_engine_members_cb cb, void *data)
{
    (void)room, (void)limit;
    struct fake *f = (struct fake *)e;
    if (f->members_rc != 0)
        return f->members_rc;
    cb(data, 0, f->total, f->m, f->nm);
    return 0;
}

static int fake_rooms(struct hub_engine *e, unsigned limit, hub_engine_rooms_cb cb, void *data)
{
    (void)e, (void)limit;
    struct hub_engine_room_count r[2] = {{{"lobby", 5}, 7}, {{"@a,b", 4}, 2}};
    cb(data, 0, r, 2);
    return 0;
}

static int fake_claim(struct hub_engine *e, struct hub_iov nick, struct hub_iov client,
                      hub_engine_done_cb cb, void *data)
{
    (void)client;
    struct fake *f = (struct fake *)e;
    f->claim_cb = cb;
    f->claim_data = data;
    snprintf(f->claimed, sizeof(f->claimed), "%.*s", (int)nick.len, nick.base);
    return 0;
}

static void fake_release(struct hub_engine *e, struct hub_iov nick, struct hub_iov client)
{
    struct fake *f = (struct fake *)e;
    snprintf(f->released, sizeof(f->released), "%.*s", (int)nick.len, nick.base);
    snprintf(f->released_by, sizeof(f->released_by), "%.*s", (int)client.len, client.base);
}

static int fake_typing(struct hub_engine *e, struct hub_iov room, struct hub_iov client,
                       struct hub_iov nick)
{
    (void)e, (void)room, (void)client, (void)nick;
    return 0;
}

static int fake_invite(struct hub_engine *e, struct hub_iov to_nick, struct hub_iov room,
                       struct hub_iov from, hub_engine_done_cb cb, void *data)
{
    (void)e, (void)room, (void)from;
    /* Only "nobody" is held by nobody. */
    cb(data, to_nick.len == 6 && memcmp(to_nick.base, "nobody", 6) == 0 ? HUB_ENOENT : 0);
    return 0;
}

static void fake_stats(struct hub_engine *e, struct hub_engine_stats *st)
{
    (void)e;
    st->kind = "fake";
}

static const struct engine_ops fake_ops = {
    .close = fake_close,
    .free = fake_free,
    .subscribe = fake_subscribe,
    .unsubscribe = fake_unsubscribe,
    .publish = fake_publish,
    .read = fake_read,
    .query = fake_query,
    .join = fake_join,
    .leave = fake_leave,
    .renick = fake_renick,
    .members = fake_members,
    .rooms = fake_rooms,
    .claim_nick = fake_claim,
    .release_nick = fake_release,
    .typing = fake_typing,
    .invite = fake_invite,
    .stats = fake_stats,
};

/* Completes the held claim with err. */
static void claim_done(struct fake *f, int err)
{
    hub_engine_done_cb cb = f->claim_cb;
    CHECK(cb != NULL);
    f->claim_cb = NULL;
    if (cb != NULL)
        cb(f->claim_data, err);
}

/* Completes the held publish with err (offset 1). */
static void publish_done(struct fake *f, int err)
{
    CHECK(f->npub > 0);
    if (f->npub == 0)
        return;
    hub_engine_publish_cb cb = f->pub_cb[0];
    void *data = f->pub_data[0];
    f->npub--;
    memmove(f->pub_cb, f->pub_cb + 1, f->npub * sizeof(f->pub_cb[0]));
    memmove(f->pub_data, f->pub_data + 1, f->npub * sizeof(f->pub_data[0]));
    cb(data, err, err ? 0 : 1, err ? 0 : 5000, 0);
}

/* Completes the held read: the room is at last, and holds messages
 * first..last (texts "m<offset>"). */
static void read_done(struct fake *f, uint64_t first, uint64_t last)
{
    struct hub_history_msg msgs[8];
    char texts[8][8];
    size_t n = 0;
    for (uint64_t o = first; o <= last && n < 8; o++, n++) {
        int len = snprintf(texts[n], sizeof(texts[n]), "m%llu", (unsigned long long)o);
        msgs[n] = (struct hub_history_msg){.offset = o,
                                           .ts = 4000,
                                           .from = {"bob", 3},
                                           .text = {texts[n], (size_t)len},
                                           .cmid = {"", 0}};
    }
    struct hub_history_pos p = {.epoch = "e1", .last = last, .first = first};
    hub_history_read_cb cb = f->read_cb;
    CHECK(cb != NULL);
    f->read_cb = NULL;
    if (cb != NULL)
        cb(f->read_data, 0, &p, msgs, n, 1);
}

/* ---- peers (as in test_chat.c) ---------------------------------------- */

struct peer {
    struct hub_conn conn;
    struct hub_ws *ws;
    struct hub_chat_client *cl;
};

static void on_ws_msg(struct hub_ws *ws, int opcode, const char *data, size_t len, void *user)
{
    (void)ws;
    struct peer *p = user;
    hub_chat_client_message(p->cl, opcode, data, len);
}

static int64_t fake_now = 1000000; /* the injected clock (ms) */

static int64_t clock_now(void)
{
    return fake_now;
}

static struct hub_chat *new_chat(struct fake **out)
{
    struct hub_chat_config cfg;
    hub_chat_config_default(&cfg);
    cfg.now_ms = clock_now;
    cfg.rate = 0;
    struct hub_chat *chat = NULL;
    CHECK_EQ(hub_chat_new(&chat, &cfg), 0);
    struct fake *f = calloc(1, sizeof(*f));
    struct hub_engine_events ev;
    hub_chat_engine_events(&ev);
    engine_init(&f->base, &fake_ops, &ev, chat);
    f->base.state = HUB_ENGINE_READY;
    strcpy(f->base.node_id, "n1");
    hub_chat_use_engine(chat, &f->base);
    *out = f;
    return chat;
}

static void free_chat(struct hub_chat *chat, struct fake *f)
{
    hub_chat_free(chat);
    hub_engine_free(&f->base);
}

static void peer_open(struct peer *p, struct hub_chat *chat, const char *room, int mode)
{
    struct hub_ws_config cfg;
    hub_ws_config_default(&cfg);
    hub_conn_init_detached(&p->conn, 0);
    p->ws = hub_ws_new(&p->conn, &cfg, on_ws_msg, p);
    struct hub_iov r = {room, strlen(room)};
    p->cl = hub_chat_client_new(chat, p->ws, mode, r);
}

static void peer_close(struct peer *p)
{
    hub_chat_client_free(p->cl);
    hub_ws_free(p->ws);
    hub_outq_free(&p->conn.out);
}

static void peer_say(struct peer *p, int opcode, const char *text)
{
    struct hub_buf b = {0};
    client_frame(&b, 1, opcode, text, strlen(text), 1);
    hub_ws_feed(p->ws, b.data, b.len);
    hub_buf_free(&b);
}

/* The frames queued for p as "<payload>|" items; the queue is emptied. */
static void peer_read(struct peer *p, struct hub_buf *log)
{
    struct hub_buf out = {0};
    drain_conn(&p->conn, &out);
    size_t off = 0;
    struct server_frame f;
    while (next_server_frame(&out, &off, &f)) {
        hub_buf_append(log, f.payload, f.len);
        hub_buf_puts(log, "|");
    }
    hub_buf_append(log, "", 1);
    hub_buf_free(&out);
}

/* Checks that the frames queued for p hold each fragment, in order. */
static int read_has(struct peer *p, const char *const *frags, size_t n)
{
    struct hub_buf log = {0};
    peer_read(p, &log);
    const char *at = log.data;
    int ok = 1;
    for (size_t i = 0; i < n && ok; i++) {
        const char *f = strstr(at, frags[i]);
        if (f == NULL) {
            fprintf(stderr, "missing \"%s\" in \"%s\"\n", frags[i], log.data);
            ok = 0;
        } else {
            at = f + strlen(frags[i]);
        }
    }
    hub_buf_free(&log);
    return ok;
}

#define HAS(p, ...)                                                                                \
    do {                                                                                           \
        const char *const frags_[] = {__VA_ARGS__};                                                \
        CHECK(read_has(p, frags_, HUB_ARRAY_SIZE(frags_)));                                        \
    } while (0)

/* Nothing queued for p. */
static int read_none(struct peer *p)
{
    struct hub_buf log = {0};
    peer_read(p, &log);
    int ok = log.len == 1;
    if (!ok)
        fprintf(stderr, "unexpected \"%s\"\n", log.data);
    hub_buf_free(&log);
    return ok;
}

/* A JSON peer that said hello as nick (its claim completed at once). */
static void hello(struct peer *p, struct hub_chat *chat, struct fake *f, const char *nick)
{
    peer_open(p, chat, "ignored", HUB_CHAT_JSON);
    char req[128];
    snprintf(req, sizeof(req), "{\"op\":\"hello\",\"id\":1,\"nick\":\"%s\"}", nick);
    peer_say(p, 1, req);
    claim_done(f, 0);
    HAS(p, "\"id\":1,\"ok\":true");
}

/* ---- tests ------------------------------------------------------------ */

/* A hello waits for its claim; ids carry the node id; a taken nick is
 * refused; a second hello sent while the first is on its way waits behind
 * it. */
static void test_claims(void)
{
    struct fake *f;
    struct hub_chat *chat = new_chat(&f);
    struct peer a;
    peer_open(&a, chat, "ignored", HUB_CHAT_JSON);
    HAS(&a, "\"t\":\"welcome\"");
    peer_say(&a, 1, "{\"op\":\"hello\",\"id\":1,\"nick\":\"alice\"}");
    CHECK_STR(f->claimed, "alice");
    CHECK(read_none(&a)); /* no reply before the claim completes */
    peer_say(&a, 1, "{\"op\":\"hello\",\"id\":2,\"nick\":\"alice2\"}");
    CHECK(read_none(&a)); /* it waits behind the first */
    claim_done(f, HUB_EEXIST);
    HAS(&a, "{\"id\":1,\"ok\":false,\"error\":{\"code\":\"nick_taken\"");
    CHECK_STR(f->claimed, "alice2"); /* then the second one claims */
    claim_done(f, HUB_EAGAIN);
    HAS(&a, "{\"id\":2,\"ok\":false,\"error\":{\"code\":\"unavailable\"");
    peer_say(&a, 1, "{\"op\":\"hello\",\"id\":4,\"nick\":\"alice\"}");
    claim_done(f, 0);
    HAS(&a, "{\"id\":4,\"ok\":true,\"client\":\"n1-c-1\",\"nick\":\"alice\"");

    /* A nick change: the new claim first, then the old nick goes. */
    peer_say(&a, 1, "{\"op\":\"nick\",\"id\":5,\"nick\":\"alicia\"}");
    CHECK(read_none(&a));
    claim_done(f, 0);
    HAS(&a, "{\"id\":5,\"ok\":true,\"nick\":\"alicia\"}");
    CHECK_STR(f->released, "alice");
    CHECK_STR(f->released_by, "n1-c-1");

    /* The client goes while its claim is on its way: when the claim
     * completes, nothing is sent and the nick is given back. */
    struct peer b;
    peer_open(&b, chat, "ignored", HUB_CHAT_JSON);
    peer_say(&b, 1, "{\"op\":\"hello\",\"id\":1,\"nick\":\"zed\"}");
    CHECK_STR(f->claimed, "zed");
    peer_close(&b);
    claim_done(f, 0);
    CHECK_STR(f->released, "zed");
    CHECK_STR(f->released_by, "n1-c-2");
    /* And a close releases a held nick. */
    peer_close(&a);
    CHECK_STR(f->released, "alicia");
    free_chat(chat, f);
}

/* Requests pipelined behind a hello (or a nick change) whose claim is on
 * its way wait for it and are handled in order afterwards, not refused with
 * hello_required; the wait is bounded (rate_limited past it). */
static void test_pipelined(void)
{
    struct fake *f;
    struct hub_chat *chat = new_chat(&f);
    f->total = 1;
    struct peer a;
    peer_open(&a, chat, "ignored", HUB_CHAT_JSON);
    HAS(&a, "\"t\":\"welcome\"");
    peer_say(&a, 1, "{\"op\":\"hello\",\"id\":1,\"nick\":\"bob\"}");
    peer_say(&a, 1, "{\"op\":\"join\",\"id\":2,\"room\":\"lobby\"}");
    peer_say(&a, 1, "{\"op\":\"send\",\"id\":3,\"room\":\"lobby\",\"text\":\"hi\"}");
    CHECK(read_none(&a));
    CHECK_EQ(f->npub, 0);
    claim_done(f, 0);
    HAS(&a, "{\"id\":1,\"ok\":true", "{\"id\":2,\"ok\":true");
    CHECK_EQ(f->npub, 1);
    CHECK_STR(f->pub_text, "hi");
    publish_done(f, 0);
    HAS(&a, "{\"id\":3,\"ok\":true,\"room\":\"lobby\"");

    /* A nick change behind it claims in turn; what follows waits for that. */
    peer_say(&a, 1, "{\"op\":\"nick\",\"id\":4,\"nick\":\"bobby\"}");
    peer_say(&a, 1, "{\"op\":\"nick\",\"id\":5,\"nick\":\"robert\"}");
    peer_say(&a, 1, "{\"op\":\"ping\",\"id\":6}");
    CHECK_STR(f->claimed, "bobby");
    claim_done(f, 0);
    HAS(&a, "{\"id\":4,\"ok\":true,\"nick\":\"bobby\"}");
    CHECK_STR(f->claimed, "robert");
    CHECK(read_none(&a)); /* the ping still waits */
    claim_done(f, 0);
    HAS(&a, "{\"id\":5,\"ok\":true,\"nick\":\"robert\"}", "{\"id\":6,\"ok\":true}");

    /* With several nodes a join takes round trips: what follows waits for
     * its reply, so that replies keep request order. */
    f->hold_reads = 1;
    peer_say(&a, 1, "{\"op\":\"join\",\"id\":7,\"room\":\"other\"}");
    peer_say(&a, 1, "{\"op\":\"send\",\"id\":8,\"room\":\"other\",\"text\":\"after\"}");
    CHECK_EQ(f->npub, 0);
    CHECK(read_none(&a));
    read_done(f, 1, 0);
    f->hold_reads = 0;
    HAS(&a, "{\"id\":7,\"ok\":true,\"room\":\"other\"");
    CHECK_EQ(f->npub, 1);
    CHECK_STR(f->pub_text, "after");
    publish_done(f, 0);
    HAS(&a, "{\"id\":8,\"ok\":true,\"room\":\"other\"");

    /* Bounded: past CHAT_BACKLOG_MAX waiting requests, rate_limited. */
    struct peer b;
    peer_open(&b, chat, "ignored", HUB_CHAT_JSON);
    HAS(&b, "\"t\":\"welcome\"");
    peer_say(&b, 1, "{\"op\":\"hello\",\"id\":1,\"nick\":\"carol\"}");
    char req[64];
    for (int i = 0; i < CHAT_BACKLOG_MAX; i++) {
        snprintf(req, sizeof(req), "{\"op\":\"ping\",\"id\":%d}", 100 + i);
        peer_say(&b, 1, req);
    }
    CHECK(read_none(&b));
    peer_say(&b, 1, "{\"op\":\"ping\",\"id\":99}");
    HAS(&b, "{\"id\":99,\"ok\":false,\"error\":{\"code\":\"rate_limited\"");
    claim_done(f, 0);
    snprintf(req, sizeof(req), "{\"id\":%d,\"ok\":true}", 100 + CHAT_BACKLOG_MAX - 1);
    HAS(&b, "{\"id\":1,\"ok\":true", "{\"id\":100,\"ok\":true}", req);

    /* A client that goes with requests waiting: they go with it. */
    struct peer c;
    peer_open(&c, chat, "ignored", HUB_CHAT_JSON);
    peer_say(&c, 1, "{\"op\":\"hello\",\"id\":1,\"nick\":\"dave\"}");
    peer_say(&c, 1, "{\"op\":\"join\",\"id\":2,\"room\":\"lobby\"}");
    peer_close(&c);
    claim_done(f, 0);
    CHECK_STR(f->released, "dave");
    peer_close(&a);
    peer_close(&b);
    free_chat(chat, f);
}

/* Nicks are claimed, released and invited by their claim key (the look-alike
 * key of the local table), so a look-alike on another node is refused too;
 * an invite finds its client by that key and the client id; raw clients of
 * a multi-node engine get guest nicks with the node in them. */
static void test_nick_keys(void)
{
    struct fake *f;
    struct hub_chat *chat = new_chat(&f);
    char k1[CHAT_NICK_KEY_MAX], k2[CHAT_NICK_KEY_MAX];
    size_t n1 = chat_nick_key("Alice", 5, k1);
    CHECK_EQ(chat_nick_key("a1ice", 5, k2), n1);
    CHECK_STR(k1, k2);
    struct peer a, b;
    peer_open(&a, chat, "ignored", HUB_CHAT_JSON);
    peer_say(&a, 1, "{\"op\":\"hello\",\"id\":1,\"nick\":\"Alice\"}");
    CHECK_STR(f->claimed, k1); /* the key, not the display nick */
    claim_done(f, 0);
    HAS(&a, "{\"id\":1,\"ok\":true,\"client\":\"n1-c-1\",\"nick\":\"Alice\"");
    /* A new spelling of the same key keeps the one claim. */
    f->released[0] = '\0';
    peer_say(&a, 1, "{\"op\":\"nick\",\"id\":2,\"nick\":\"ALICE\"}");
    CHECK_STR(f->claimed, k1);
    claim_done(f, 0);
    HAS(&a, "{\"id\":2,\"ok\":true,\"nick\":\"ALICE\"}");
    CHECK_STR(f->released, "");

    /* A key longer than the engine takes is named by its SHA-1. */
    const char *lig = "\xef\xb7\xba"; /* U+FDFA, NFKC expands it to 18 characters */
    char big[64] = "";
    for (int i = 0; i < 9; i++)
        strcat(big, lig);
    char kb[CHAT_NICK_KEY_MAX];
    if (hub_ident_unicode()) {
        CHECK_EQ(chat_nick_key(big, strlen(big), kb), 41);
        CHECK_EQ(kb[0], '#');
        peer_open(&b, chat, "ignored", HUB_CHAT_JSON);
        char req[128];
        snprintf(req, sizeof(req), "{\"op\":\"hello\",\"id\":1,\"nick\":\"%s\"}", big);
        peer_say(&b, 1, req);
        CHECK_STR(f->claimed, kb);
        claim_done(f, 0);
        HAS(&b, "{\"id\":1,\"ok\":true,\"client\":\"n1-c-2\"");
        peer_close(&b);
        CHECK_STR(f->released, kb);
    }

    /* The engine hands the claim key back with an invite: the client is
     * the one holding that key with that client id. */
    const struct hub_engine_events *ev = &f->base.ev;
    ev->on_invite(chat, (struct hub_iov){"n1-c-9", 6}, (struct hub_iov){k1, n1},
                  (struct hub_iov){"@alice,zoe", 10}, (struct hub_iov){"zoe", 3});
    CHECK(read_none(&a)); /* another client id: not this one */
    ev->on_invite(chat, (struct hub_iov){"n1-c-1", 6}, (struct hub_iov){k1, n1},
                  (struct hub_iov){"@alice,zoe", 10}, (struct hub_iov){"zoe", 3});
    HAS(&a, "{\"t\":\"dm\",\"room\":\"@alice,zoe\",\"from\":\"zoe\"}");

    /* Raw clients: the node id keeps guest nicks apart across nodes. */
    struct peer r;
    peer_open(&r, chat, "lobby", HUB_CHAT_RAW);
    CHECK(r.cl != NULL);
    if (r.cl != NULL)
        CHECK_STR(r.cl->nick, "guest-n1-1");
    peer_close(&r);
    peer_close(&a);
    CHECK_STR(f->released, k1);
    free_chat(chat, f);
}

/* HUB_EAGAIN, at once or from a completion, answers "unavailable"; a raw
 * line that cannot be published is dropped and counted. */
static void test_unavailable(void)
{
    struct fake *f;
    struct hub_chat *chat = new_chat(&f);
    struct peer a, r;
    hello(&a, chat, f, "alice");
    f->members_rc = HUB_EAGAIN;
    peer_say(&a, 1, "{\"op\":\"join\",\"id\":2,\"room\":\"lobby\"}");
    HAS(&a, "{\"id\":2,\"ok\":false,\"error\":{\"code\":\"unavailable\"");
    CHECK_EQ(hub_chat_room_count(chat), 0); /* not joined: a resend may join */
    CHECK_EQ(f->subs, 0);
    f->members_rc = 0;
    f->total = 1;
    peer_say(&a, 1, "{\"op\":\"join\",\"id\":3,\"room\":\"lobby\"}");
    HAS(&a, "{\"id\":3,\"ok\":true,\"room\":\"lobby\"");
    CHECK_EQ(f->subs, 1);

    f->publish_rc = HUB_EAGAIN;
    uint64_t unavailable = hub_metrics.unavailable;
    peer_say(&a, 1, "{\"op\":\"send\",\"id\":4,\"room\":\"lobby\",\"text\":\"hi\",\"cmid\":\"m\"}");
    HAS(&a, "{\"id\":4,\"ok\":false,\"error\":{\"code\":\"unavailable\"");
    CHECK_EQ(hub_metrics.unavailable, unavailable + 1);
    f->publish_rc = 0;
    peer_say(&a, 1, "{\"op\":\"send\",\"id\":5,\"room\":\"lobby\",\"text\":\"hi\",\"cmid\":\"m\"}");
    CHECK(read_none(&a)); /* the ack waits for the engine */
    publish_done(f, HUB_EAGAIN);
    HAS(&a, "{\"id\":5,\"ok\":false,\"error\":{\"code\":\"unavailable\"");
    peer_say(&a, 1, "{\"op\":\"send\",\"id\":6,\"room\":\"lobby\",\"text\":\"hi\",\"cmid\":\"m\"}");
    publish_done(f, 0);
    HAS(&a, "{\"id\":6,\"ok\":true,\"room\":\"lobby\",\"offset\":1,\"ts\":5000}");

    /* Raw: nothing comes back, and the line is counted as dropped. */
    peer_open(&r, chat, "lobby", HUB_CHAT_RAW);
    f->publish_rc = HUB_EAGAIN;
    uint64_t dropped = hub_metrics.raw_dropped;
    peer_say(&r, 1, "lost line");
    CHECK_EQ(hub_metrics.raw_dropped, dropped + 1);
    CHECK(read_none(&r));
    f->publish_rc = 0;
    peer_say(&r, 1, "late line");
    publish_done(f, HUB_EAGAIN);
    CHECK_EQ(hub_metrics.raw_dropped, dropped + 2);
    CHECK(read_none(&r));
    peer_close(&r);
    peer_close(&a);
    CHECK_EQ(f->subs, 0); /* the last local member unsubscribed */
    free_chat(chat, f);
}

/* Upcalls about other nodes: members listed from every node, presence and
 * messages of remote clients pushed, the local sender skipped, an epoch
 * change pushed as a gap, counts taken from the engine. */
static void test_upcalls(void)
{
    struct fake *f;
    struct hub_chat *chat = new_chat(&f);
    const struct hub_engine_events *ev = &f->base.ev;
    struct peer a, r;
    hello(&a, chat, f, "alice");
    f->m[0] = (struct hub_engine_member){{"n1-c-1", 6}, {"alice", 5}};
    f->m[1] = (struct hub_engine_member){{"n2-c-7", 6}, {"bob", 3}};
    f->nm = 2;
    f->total = 2;
    peer_say(&a, 1, "{\"op\":\"join\",\"id\":2,\"room\":\"lobby\"}");
    HAS(&a, "\"members\":[{\"nick\":\"alice\",\"client\":\"n1-c-1\"},",
        "{\"nick\":\"bob\",\"client\":\"n2-c-7\"}]}");
    peer_open(&r, chat, "lobby", HUB_CHAT_RAW);

    struct hub_engine_presence p = {
        HUB_ENGINE_JOIN, {"lobby", 5}, {"n2-c-8", 6}, {"carol", 5}, {NULL, 0}, 4, 0};
    ev->on_presence(chat, &p);
    HAS(&a, "{\"t\":\"join\",\"room\":\"lobby\",\"nick\":\"carol\",\"client\":\"n2-c-8\"}");
    /* Our own join, echoed by the engine, is not pushed back to us. */
    struct hub_engine_presence own = {
        HUB_ENGINE_JOIN, {"lobby", 5}, {"n1-c-1", 6}, {"alice", 5}, {NULL, 0}, 4, 1};
    ev->on_presence(chat, &own);
    CHECK(read_none(&a));
    /* A big room across nodes: a count push with the engine's count. */
    p.members = 201;
    ev->on_presence(chat, &p);
    HAS(&a, "{\"t\":\"count\",\"room\":\"lobby\",\"members\":201}");
    p.kind = HUB_ENGINE_NICK;
    p.old_nick = (struct hub_iov){"carol", 5};
    p.nick = (struct hub_iov){"caro", 4};
    ev->on_presence(chat, &p);
    HAS(&a, "{\"t\":\"nick\",\"room\":\"lobby\",\"old\":\"carol\",\"new\":\"caro\"}");

    /* A message from another node reaches every local member; our own
     * reaches the raw members only (the JSON sender has its ack). */
    struct hub_engine_msg m = {0};
    m.room = (struct hub_iov){"lobby", 5};
    m.from = (struct hub_iov){"bob", 3};
    m.text = (struct hub_iov){"hey", 3};
    m.client = (struct hub_iov){"n2-c-7", 6};
    m.offset = 1;
    m.ts = 7000;
    ev->on_msg(chat, &m);
    HAS(&a, "{\"t\":\"msg\",\"room\":\"lobby\",\"offset\":1,\"ts\":7000,\"from\":\"bob\","
            "\"text\":\"hey\"}");
    HAS(&r, "hey|");
    m.client = (struct hub_iov){"n1-c-1", 6};
    m.offset = 2;
    ev->on_msg(chat, &m);
    CHECK(read_none(&a));
    HAS(&r, "hey|");

    ev->on_typing(chat, (struct hub_iov){"lobby", 5}, (struct hub_iov){"n2-c-7", 6},
                  (struct hub_iov){"bob", 3});
    HAS(&a, "{\"t\":\"typing\",\"room\":\"lobby\",\"nick\":\"bob\"");
    CHECK(read_none(&r));

    /* The room's epoch changed: a gap push to its JSON members. */
    ev->on_epoch(chat, (struct hub_iov){"lobby", 5}, (struct hub_iov){"e2", 2});
    HAS(&a, "{\"t\":\"gap\",\"room\":\"lobby\",\"epoch\":\"e2\",\"reason\":\"epoch\"}");
    CHECK(read_none(&r));

    /* rooms: the engine's counts, direct-message rooms left out. */
    peer_say(&a, 1, "{\"op\":\"rooms\",\"id\":3}");
    HAS(&a, "{\"id\":3,\"ok\":true,\"rooms\":[{\"room\":\"lobby\",\"members\":7}]}");
    /* A dm to a nick no node holds. */
    peer_say(&a, 1, "{\"op\":\"dm\",\"id\":4,\"to\":\"nobody\",\"text\":\"x\"}");
    HAS(&a, "{\"id\":4,\"ok\":false,\"error\":{\"code\":\"no_such_nick\"");
    int leaves = f->leaves;
    peer_close(&r);
    peer_close(&a);
    CHECK_EQ(f->leaves, leaves + 2);
    free_chat(chat, f);
}

/* A message from on_msg races a join's history read (they come on different
 * Redis connections): pushes that the read also holds are dropped, later
 * ones wait behind the reply, so the joiner sees each offset exactly once,
 * in order. */
static void test_join_race(void)
{
    struct fake *f;
    struct hub_chat *chat = new_chat(&f);
    const struct hub_engine_events *ev = &f->base.ev;
    struct peer a;
    hello(&a, chat, f, "alice");
    f->total = 1;
    f->hold_reads = 1;
    peer_say(&a, 1, "{\"op\":\"join\",\"id\":2,\"room\":\"lobby\"}");
    CHECK(read_none(&a)); /* the reply waits for the read */
    struct hub_engine_msg m = {0};
    m.room = (struct hub_iov){"lobby", 5};
    m.from = (struct hub_iov){"bob", 3};
    m.client = (struct hub_iov){"n2-c-7", 6};
    char text[8];
    for (uint64_t o = 2; o <= 4; o++) {
        m.text = (struct hub_iov){
            text, (size_t)snprintf(text, sizeof(text), "m%llu", (unsigned long long)o)};
        m.offset = o;
        ev->on_msg(chat, &m);
    }
    CHECK(read_none(&a)); /* held behind the reply */
    read_done(f, 1, 3);   /* the read saw up to offset 3 */
    struct hub_buf log = {0};
    peer_read(&a, &log);
    const char *reply =
        strstr(log.data, "{\"id\":2,\"ok\":true,\"room\":\"lobby\",\"epoch\":\"e1\","
                         "\"offset\":3,");
    CHECK(reply == log.data); /* the reply first */
    CHECK(reply != NULL && strstr(reply, "\"text\":\"m1\"") && strstr(reply, "\"text\":\"m3\""));
    /* Exactly one push after it: offset 4 (2 and 3 are in the reply). */
    const char *push = strstr(log.data, "{\"t\":\"msg\"");
    CHECK(push != NULL && strncmp(push, "{\"t\":\"msg\",\"room\":\"lobby\",\"offset\":4,",
                                  strlen("{\"t\":\"msg\",\"room\":\"lobby\",\"offset\":4,")) == 0);
    CHECK(push != NULL && strstr(push + 1, "{\"t\":\"msg\"") == NULL);
    hub_buf_free(&log);
    m.offset = 5;
    m.text = (struct hub_iov){"m5", 2};
    ev->on_msg(chat, &m);
    HAS(&a, "\"offset\":5,");
    CHECK(a.cl->nsubs == 0); /* nothing left to reconcile */
    peer_close(&a);
    free_chat(chat, f);
}

/* A dm to a nick held on another node: the sender joins, the peer is
 * invited, and the message waits until the peer's join shows that its node
 * is subscribed (or DM_WAIT_MS passed), so that the peer gets it pushed. */
static void test_remote_dm(void)
{
    struct fake *f;
    struct hub_chat *chat = new_chat(&f);
    const struct hub_engine_events *ev = &f->base.ev;
    struct peer a;
    hello(&a, chat, f, "alice");
    f->total = 1;
    f->nm = 0;
    peer_say(&a, 1, "{\"op\":\"dm\",\"id\":2,\"to\":\"Carol\",\"text\":\"psst\"}");
    CHECK_EQ(hub_chat_room_count(chat), 1); /* alice is in @alice,carol */
    CHECK_EQ(f->npub, 0);                   /* nothing published yet */
    CHECK(read_none(&a));
    struct hub_engine_presence p = {
        HUB_ENGINE_JOIN, {"@alice,carol", 12}, {"n2-c-3", 6}, {"carol", 5}, {NULL, 0}, 2, 0};
    ev->on_presence(chat, &p);
    CHECK_EQ(f->npub, 1);
    CHECK_STR(f->pub_text, "psst");
    HAS(&a, "{\"t\":\"join\",\"room\":\"@alice,carol\",\"nick\":\"carol\"");
    publish_done(f, 0);
    HAS(&a, "{\"id\":2,\"ok\":true,\"room\":\"@alice,carol\",\"offset\":1,");

    /* Its join never shows: the message goes after DM_WAIT_MS anyway. */
    peer_say(&a, 1, "{\"op\":\"dm\",\"id\":3,\"to\":\"dave\",\"text\":\"later\"}");
    hub_chat_tick(chat);
    CHECK_EQ(f->npub, 0);
    fake_now += DM_WAIT_MS;
    hub_chat_tick(chat);
    CHECK_EQ(f->npub, 1);
    CHECK_STR(f->pub_text, "later");
    publish_done(f, 0);
    HAS(&a, "{\"id\":3,\"ok\":true,\"room\":\"@alice,dave\"");

    /* The peer is a member already: the message goes at once. */
    f->m[0] = (struct hub_engine_member){{"n2-c-3", 6}, {"carol", 5}};
    f->nm = 1;
    peer_say(&a, 1, "{\"op\":\"dm\",\"id\":4,\"to\":\"carol\",\"text\":\"again\"}");
    CHECK_EQ(f->npub, 1);
    publish_done(f, 0);
    HAS(&a, "{\"id\":4,\"ok\":true");

    /* Two dms to a peer not yet in the room: both wait for its join and go
     * out in the order sent. */
    f->nm = 0;
    f->pub_log[0] = '\0';
    peer_say(&a, 1, "{\"op\":\"dm\",\"id\":6,\"to\":\"fay\",\"text\":\"one\"}");
    peer_say(&a, 1, "{\"op\":\"dm\",\"id\":7,\"to\":\"fay\",\"text\":\"two\"}");
    CHECK_EQ(f->npub, 0);
    struct hub_engine_presence pf = {
        HUB_ENGINE_JOIN, {"@alice,fay", 10}, {"n2-c-4", 6}, {"fay", 3}, {NULL, 0}, 2, 0};
    ev->on_presence(chat, &pf);
    CHECK_STR(f->pub_log, "one|two|");
    publish_done(f, 0);
    publish_done(f, 0);
    HAS(&a, "\"id\":6,\"ok\":true", "\"id\":7,\"ok\":true");

    /* A dm waiting when its sender goes is dropped with it. */
    f->nm = 0;
    peer_say(&a, 1, "{\"op\":\"dm\",\"id\":5,\"to\":\"erin\",\"text\":\"bye\"}");
    peer_close(&a);
    fake_now += DM_WAIT_MS;
    hub_chat_tick(chat);
    CHECK_EQ(f->npub, 0);
    free_chat(chat, f);
}

int main(void)
{
    test_remote_dm();
    test_join_race();
    test_claims();
    test_pipelined();
    test_nick_keys();
    test_unavailable();
    test_upcalls();
    return CHECK_DONE();
}
