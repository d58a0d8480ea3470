/*
 * test_chat.c: the chat layer over detached connections: room paths, the raw
 * relay to every member (sender included), isolation between rooms, one
 * shared frame per broadcast, the welcome line, the JSON operations, big-room
 * counts taken after the leaver is gone, a hello that fails to allocate
 * committing nothing, replies paged by bytes, and the memory engine under it
 * (subscriptions while a room has members, messages through on_msg, nicks
 * as claims).
 */
#include "../../src/chat_int.h"
#include "check.h"
#include "hub/chat.h"
#include "hub/engine.h"
#include "hub/history.h"
#include "hub/ws.h"
#include "ws_script.h"

struct peer {
    struct hub_conn conn;
    struct hub_ws *ws;
    struct hub_chat_client *cl;
};

static void on_msg(struct hub_ws *ws, int opcode, const char *data, size_t len, void *user)
{
    struct peer *p = user;
    hub_chat_client_message(p->cl, opcode, data, len);
}

static struct hub_history *history;
static int64_t fake_now = 1000000; /* the injected clock (ms) */
static size_t page_bytes;          /* cfg.page_bytes of the next new_chat (0 = derived) */

static int64_t clock_now(void)
{
    return fake_now;
}

/* A hub with a fresh in-memory history and the given welcome line. */
static struct hub_chat *new_chat(const char *welcome)
{
    struct hub_history_config hcfg;
    hub_history_config_default(&hcfg);
    hcfg.max_per_room = 5;
    hub_history_open_memory(&history, &hcfg);
    struct hub_chat_config cfg;
    hub_chat_config_default(&cfg);
    cfg.history = history;
    cfg.welcome = welcome;
    cfg.now_ms = clock_now;
    cfg.page_bytes = page_bytes;
    struct hub_chat *chat = NULL;
    CHECK_EQ(hub_chat_new(&chat, &cfg), 0);
    return chat;
}

static void free_chat(struct hub_chat *chat)
{
    hub_chat_free(chat);
    hub_history_free(history);
}

static void peer_open_mode(struct peer *p, struct hub_chat *chat, const char *room, int mode)
{
    struct hub_ws_config cfg;
    hub_ws_config_default(&cfg);
    hub_conn_init_detached(&p->conn, 0);
    p->ws = hub_ws_new(&p->conn, &cfg, on_msg, p);
    struct hub_iov r = {room, strlen(room)};
    p->cl = hub_chat_client_new(chat, p->ws, mode, r);
}

static void peer_open(struct peer *p, struct hub_chat *chat, const char *room)
{
    peer_open_mode(p, chat, room, HUB_CHAT_RAW);
}

static void peer_close(struct peer *p)
{
    hub_chat_client_free(p->cl);
    hub_ws_free(p->ws);
    hub_outq_free(&p->conn.out);
}

static void peer_say(struct peer *p, int opcode, const char *text, size_t len)
{
    struct hub_buf b = {0};
    client_frame(&b, 1, opcode, text, len, 1);
    hub_ws_feed(p->ws, b.data, b.len);
    hub_buf_free(&b);
}

/* Returns the payloads of the text/binary frames queued for p, as
 * "<opcode>:<payload>|" items, and empties the queue. */
static void peer_read(struct peer *p, struct hub_buf *log)
{
    struct hub_buf out = {0};
    drain_conn(&p->conn, &out);
    size_t off = 0;
    struct server_frame f;
    while (next_server_frame(&out, &off, &f)) {
        hub_buf_printf(log, "%d:", f.opcode);
        hub_buf_append(log, f.payload, f.len);
        hub_buf_puts(log, "|");
    }
    hub_buf_free(&out);
}

static int read_is(struct peer *p, const char *expect)
{
    struct hub_buf log = {0};
    peer_read(p, &log);
    int ok = log.len == strlen(expect) && (log.len == 0 || memcmp(log.data, expect, log.len) == 0);
    if (!ok)
        fprintf(stderr, "got \"%.*s\", want \"%s\"\n", (int)log.len, log.data ? log.data : "",
                expect);
    hub_buf_free(&log);
    return ok;
}

static void test_paths(void)
{
    static const struct {
        const char *path;
        const char *room; /* NULL: rejected */
    } rows[] = {
        {"/", "lobby"},         {"/ws", "lobby"},  {"/ws/", "lobby"},
        {"/ws/room1", "room1"}, {"/chat", "chat"}, {"/ws/a.b:c-d_e", "a.b:c-d_e"},
        {"/wsx", "wsx"},        {"/ws/a/b", NULL}, {"/ws/bad%20name", NULL},
        {"/ws/bad name", NULL}, {"", NULL},        {"ws", NULL},
        {"/ws/\xc3\xa9", NULL}, {"/a/b", NULL},    {"/ws//", NULL},
    };
    for (size_t i = 0; i < HUB_ARRAY_SIZE(rows); i++) {
        struct hub_iov path = {rows[i].path, strlen(rows[i].path)};
        struct hub_iov room = {0};
        int rc = hub_chat_room_from_path(path, &room);
        if (rows[i].room == NULL) {
            CHECK_EQ(rc, HUB_EINVAL);
        } else {
            CHECK_EQ(rc, 0);
            CHECK(room.len == strlen(rows[i].room) &&
                  memcmp(room.base, rows[i].room, room.len) == 0);
        }
    }
    char name[66];
    memset(name, 'a', sizeof(name));
    CHECK(hub_chat_valid_room(name, 64));
    CHECK(!hub_chat_valid_room(name, 65));
    CHECK(!hub_chat_valid_room(name, 0));
}

static void test_relay(void)
{
    struct hub_chat *chat = new_chat(NULL);
    struct peer a, b, c;
    peer_open(&a, chat, "room1");
    peer_open(&b, chat, "room1");
    peer_open(&c, chat, "room2");
    CHECK_EQ(hub_chat_room_count(chat), 2);

    peer_say(&a, 1, "hi from a", 9);
    /* One broadcast, one frame: both queues hold the same chunk. */
    CHECK_EQ(a.conn.out.count, 1);
    CHECK_EQ(b.conn.out.count, 1);
    CHECK(a.conn.out.items[a.conn.out.head].chunk == b.conn.out.items[b.conn.out.head].chunk);
    CHECK_EQ(a.conn.out.items[a.conn.out.head].chunk->refs, 2);
    CHECK(read_is(&a, "1:hi from a|"));
    CHECK(read_is(&b, "1:hi from a|"));
    CHECK(read_is(&c, ""));

    /* Binary stays binary, byte for byte; order is the order received. */
    peer_say(&b, 2, "\x00\x01\xff", 3);
    peer_say(&a, 1, "second", 6);
    /* The payload holds a NUL, so compare with lengths, not strings. */
    struct peer *both[2] = {&a, &b};
    for (int i = 0; i < 2; i++) {
        struct hub_buf log = {0};
        peer_read(both[i], &log);
        static const char want[] = "2:\x00\x01\xff|1:second|";
        CHECK(log.len == sizeof(want) - 1 && memcmp(log.data, want, sizeof(want) - 1) == 0);
        hub_buf_free(&log);
    }

    /* A leaver no longer receives; the last leaver reclaims the room. */
    peer_close(&c);
    CHECK_EQ(hub_chat_room_count(chat), 1);
    peer_close(&b);
    peer_say(&a, 1, "alone", 5);
    CHECK(read_is(&a, "1:alone|"));
    peer_close(&a);
    CHECK_EQ(hub_chat_room_count(chat), 0);
    free_chat(chat);
}

static void test_welcome(void)
{
    struct hub_chat *chat = new_chat("hello there");
    struct peer a;
    peer_open(&a, chat, "lobby");
    CHECK(read_is(&a, "1:hello there|"));
    peer_close(&a);
    free_chat(chat);
}

/* Sends one JSON request as a text frame. */
static void peer_json(struct peer *p, const char *json)
{
    peer_say(p, 1, json, strlen(json));
}

/* Checks that the frames queued for p, joined by '|', contain each of the
 * fragments in order. */
static int read_has(struct peer *p, const char *const *frags, size_t n)
{
    struct hub_buf log = {0};
    peer_read(p, &log);
    hub_buf_append(&log, "", 1);
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

static void test_json(void)
{
    struct hub_chat *chat = new_chat(NULL);
    struct peer a, b, r;
    peer_open_mode(&a, chat, "ignored", HUB_CHAT_JSON);
    peer_open_mode(&b, chat, "ignored", HUB_CHAT_JSON);
    HAS(&a, "{\"t\":\"welcome\",\"server\":\"chathub\"}");
    CHECK(read_is(&b, "1:{\"t\":\"welcome\",\"server\":\"chathub\"}|"));
    CHECK_EQ(hub_chat_room_count(chat), 0);

    /* Everything but hello (and ping) waits for hello. */
    peer_json(&a, "{\"op\":\"join\",\"id\":1,\"room\":\"lobby\"}");
    HAS(&a, "\"id\":1,\"ok\":false,\"error\":{\"code\":\"hello_required\"");
    peer_json(&a, "not json");
    HAS(&a, "{\"t\":\"error\",\"error\":{\"code\":\"bad_json\"");
    peer_json(&a, "{\"op\":\"hello\",\"id\":2,\"nick\":\"guest-7\"}");
    HAS(&a, "\"code\":\"bad_nick\"");
    peer_json(&a, "{\"op\":\"hello\",\"id\":3,\"nick\":\"Alice\"}");
    HAS(&a, "{\"id\":3,\"ok\":true,\"client\":\"c-1\",\"nick\":\"Alice\"", "\"limits\":{");
    peer_json(&b, "{\"op\":\"hello\",\"id\":1,\"nick\":\"alice\"}");
    HAS(&b, "\"code\":\"nick_taken\"");
    peer_json(&b, "{\"op\":\"hello\",\"id\":2,\"nick\":\"bob\"}");
    HAS(&b, "\"id\":2,\"ok\":true");
    peer_json(&a, "{\"op\":\"bogus\",\"id\":4}");
    HAS(&a, "\"code\":\"unknown_op\"");

    /* Join: position, history, members; the others hear about it. */
    peer_json(&a, "{\"op\":\"join\",\"id\":5,\"room\":\"lobby\"}");
    HAS(&a, "{\"id\":5,\"ok\":true,\"room\":\"lobby\",\"epoch\":\"", "\"offset\":0,\"messages\":[]",
        "\"members\":[{\"nick\":\"Alice\",\"client\":\"c-1\"}]}");
    peer_open(&r, chat, "lobby"); /* a raw client joins as guest-1 */
    HAS(&a, "{\"t\":\"join\",\"room\":\"lobby\",\"nick\":\"guest-1\"");
    peer_json(&b, "{\"op\":\"join\",\"id\":3,\"room\":\"lobby\"}");
    HAS(&b, "\"members\":[");
    HAS(&a, "{\"t\":\"join\",\"room\":\"lobby\",\"nick\":\"bob\"");
    peer_json(&b, "{\"op\":\"join\",\"id\":4,\"room\":\"lobby\"}");
    HAS(&b, "\"code\":\"already_joined\"");
    peer_json(&b, "{\"op\":\"join\",\"id\":4,\"room\":\"bad room\"}");
    HAS(&b, "\"code\":\"bad_room\"");

    /* Send: ack with offset, push to the others, bare text to raw members. */
    peer_json(&a, "{\"op\":\"send\",\"id\":6,\"room\":\"lobby\",\"text\":\"hi "
                  "\\\"all\\\"\",\"cmid\":\"m1\"}");
    HAS(&a, "{\"id\":6,\"ok\":true,\"room\":\"lobby\",\"offset\":1,\"ts\":");
    HAS(&b, "{\"t\":\"msg\",\"room\":\"lobby\",\"offset\":1,",
        "\"from\":\"Alice\",\"text\":\"hi \\\"all\\\"\",\"cmid\":\"m1\"}");
    CHECK(read_is(&r, "1:hi \"all\"|"));
    /* The same cmid again is acknowledged with the original offset only. */
    peer_json(&a, "{\"op\":\"send\",\"id\":7,\"room\":\"lobby\",\"text\":\"hi "
                  "\\\"all\\\"\",\"cmid\":\"m1\"}");
    HAS(&a, "{\"id\":7,\"ok\":true,\"room\":\"lobby\",\"offset\":1,", "\"duplicate\":true}");
    CHECK(read_is(&b, ""));
    CHECK(read_is(&r, ""));
    /* A raw line reaches JSON members as a msg from the guest nick. */
    peer_say(&r, 1, "from raw", 8);
    CHECK(read_is(&r, "1:from raw|"));
    HAS(&a, "\"offset\":2,", "\"from\":\"guest-1\",\"text\":\"from raw\"}");
    HAS(&b, "\"from\":\"guest-1\"");
    /* Binary from raw stays among raw members. */
    peer_say(&r, 2, "\x01\x02", 2);
    CHECK(read_is(&a, ""));
    peer_json(&a, "{\"op\":\"send\",\"id\":8,\"room\":\"other\",\"text\":\"x\"}");
    HAS(&a, "\"code\":\"not_joined\"");
    peer_json(&a, "{\"op\":\"send\",\"id\":9,\"room\":\"lobby\",\"text\":\"\"}");
    HAS(&a, "\"code\":\"bad_text\"");
    peer_json(&a, "{\"op\":\"send\",\"id\":9,\"room\":\"lobby\",\"text\":5}");
    HAS(&a, "\"code\":\"bad_text\"");

    /* History with a ring of 5: after 7 messages offsets 3-7 remain. */
    for (int i = 0; i < 5; i++)
        peer_json(&b, "{\"op\":\"send\",\"room\":\"lobby\",\"text\":\"n\"}");
    CHECK(read_is(&b, "")); /* no id: no reply */
    HAS(&a, "\"offset\":7,");
    CHECK(read_is(&r, "2:\x01\x02|1:n|1:n|1:n|1:n|1:n|"));
    peer_json(&a, "{\"op\":\"history\",\"id\":10,\"room\":\"lobby\",\"before\":6,\"limit\":2}");
    HAS(&a, "\"offset\":7,\"messages\":[{\"offset\":4,", "{\"offset\":5,", "\"complete\":false}");
    peer_json(&a, "{\"op\":\"history\",\"id\":11,\"room\":\"lobby\",\"before\":4}");
    HAS(&a, "\"messages\":[{\"offset\":3,", "\"complete\":true}");

    /* Typing goes to the others, at most once per interval. */
    peer_json(&a, "{\"op\":\"typing\",\"room\":\"lobby\"}");
    peer_json(&a, "{\"op\":\"typing\",\"room\":\"lobby\"}");
    CHECK(read_is(&a, ""));
    CHECK(read_is(&b, "1:{\"t\":\"typing\",\"room\":\"lobby\",\"nick\":\"Alice\",\"ttl\":6000}|"));

    /* Nick change is pushed to the rooms; the old nick is free again. */
    peer_json(&a, "{\"op\":\"nick\",\"id\":12,\"nick\":\"bob\"}");
    HAS(&a, "\"code\":\"nick_taken\"");
    peer_json(&a, "{\"op\":\"nick\",\"id\":13,\"nick\":\"carol\"}");
    HAS(&a, "{\"id\":13,\"ok\":true,\"nick\":\"carol\"}");
    HAS(&b, "{\"t\":\"nick\",\"room\":\"lobby\",\"old\":\"Alice\",\"new\":\"carol\"}");

    /* A direct message opens a private room of the two. */
    peer_json(&b, "{\"op\":\"dm\",\"id\":5,\"to\":\"CAROL\",\"text\":\"psst\"}");
    HAS(&b, "\"id\":5,\"ok\":true,\"room\":\"@bob,carol\",\"offset\":1");
    HAS(&a, "{\"t\":\"dm\",\"room\":\"@bob,carol\",\"from\":\"bob\"}",
        "\"t\":\"msg\",\"room\":\"@bob,carol\"", "\"text\":\"psst\"");
    CHECK(read_is(&r, ""));
    peer_json(&b, "{\"op\":\"dm\",\"id\":6,\"to\":\"nobody\",\"text\":\"x\"}");
    HAS(&b, "\"code\":\"no_such_nick\"");
    peer_json(&b, "{\"op\":\"rooms\",\"id\":7}");
    HAS(&b, "\"rooms\":[{\"room\":\"lobby\",\"members\":3}]}");

    /* Leaving and disconnecting are pushed as leave. */
    peer_json(&a, "{\"op\":\"leave\",\"id\":14,\"room\":\"lobby\"}");
    HAS(&a, "{\"id\":14,\"ok\":true}");
    HAS(&b, "{\"t\":\"leave\",\"room\":\"lobby\",\"nick\":\"carol\"");
    peer_close(&r);
    HAS(&b, "{\"t\":\"leave\",\"room\":\"lobby\",\"nick\":\"guest-1\"");

    /* Binary in JSON mode closes with 1003. */
    peer_say(&a, 2, "\x00", 1);
    CHECK(hub_ws_close_sent(a.ws));
    CHECK(read_is(&a, "8:\x03\xeb"
                      "binary frames are not part of chathub.v1|"));
    peer_close(&a);
    peer_close(&b);
    CHECK_EQ(hub_chat_room_count(chat), 0);
    free_chat(chat);
}

/* Counts the frames queued for p that contain frag, and empties the queue. */
static int count_frames(struct peer *p, const char *frag)
{
    struct hub_buf out = {0};
    drain_conn(&p->conn, &out);
    size_t off = 0;
    struct server_frame f;
    int n = 0;
    while (next_server_frame(&out, &off, &f)) {
        struct hub_buf one = {0};
        hub_buf_append(&one, f.payload, f.len);
        hub_buf_append(&one, "", 1);
        if (strstr(one.data, frag) != NULL)
            n++;
        hub_buf_free(&one);
    }
    hub_buf_free(&out);
    return n;
}

/* Issue 17 item 6: in a room over HUB_CHAT_LIST_MAX members the count push
 * of a leave is taken after the leaver is gone, and the leaver gets none. */
static void test_big_room_count(void)
{
    enum { N = HUB_CHAT_LIST_MAX + 2 };
    struct hub_chat *chat = new_chat(NULL);
    static struct peer p[N];
    char req[128];
    for (int i = 0; i < N; i++) {
        peer_open_mode(&p[i], chat, "x", HUB_CHAT_JSON);
        snprintf(req, sizeof(req), "{\"op\":\"hello\",\"id\":1,\"nick\":\"u%d\"}", i);
        peer_json(&p[i], req);
        peer_json(&p[i], "{\"op\":\"join\",\"id\":2,\"room\":\"big\"}");
    }
    for (int i = 0; i < N; i++)
        count_frames(&p[i], "");
    /* A leave: N - 1 remain, and each of them (not the leaver) hears so. */
    fake_now += COUNT_INTERVAL_MS;
    peer_json(&p[0], "{\"op\":\"leave\",\"id\":3,\"room\":\"big\"}");
    CHECK_EQ(count_frames(&p[0], "\"t\":\"count\""), 0);
    char want[64];
    snprintf(want, sizeof(want), "{\"t\":\"count\",\"room\":\"big\",\"members\":%d}", N - 1);
    int heard = 0;
    for (int i = 1; i < N; i++)
        heard += count_frames(&p[i], want);
    CHECK_EQ(heard, N - 1);
    /* A disconnect right after is coalesced: nothing until the tick, which
     * pushes the new count (N - 2 = HUB_CHAT_LIST_MAX: small again, so at
     * once, and per-member pushes take over). */
    peer_close(&p[1]);
    CHECK_EQ(count_frames(&p[2], "\"t\":\"count\""), 0);
    hub_chat_tick(chat);
    snprintf(want, sizeof(want), "{\"t\":\"count\",\"room\":\"big\",\"members\":%d}", N - 2);
    CHECK_EQ(count_frames(&p[2], want), 1);
    CHECK_EQ(count_frames(&p[N - 1], want), 1);
    /* Small again: per-member leave pushes. */
    peer_close(&p[2]);
    CHECK_EQ(count_frames(&p[3], "{\"t\":\"leave\",\"room\":\"big\",\"nick\":\"u2\""), 1);
    peer_close(&p[0]);
    for (int i = 3; i < N; i++)
        peer_close(&p[i]);
    CHECK_EQ(hub_chat_room_count(chat), 0);
    free_chat(chat);
}

/* Issue 17 item 9: a hello whose reply state cannot be allocated commits
 * nothing: the nick stays free and a retry succeeds. */
static void test_hello_alloc_failure(void)
{
    struct hub_chat *chat = new_chat(NULL);
    struct peer a, b;
    peer_open_mode(&a, chat, "x", HUB_CHAT_JSON);
    peer_open_mode(&b, chat, "x", HUB_CHAT_JSON);
    count_frames(&a, "");
    count_frames(&b, "");
    chat_alloc_fail_in = 1;
    peer_json(&a, "{\"op\":\"hello\",\"id\":1,\"nick\":\"alice\"}");
    CHECK_EQ(chat_alloc_fail_in, 0);
    HAS(&a, "{\"id\":1,\"ok\":false,\"error\":{\"code\":\"internal\"");
    /* The nick was not taken, and a's hello was not spent. */
    peer_json(&b, "{\"op\":\"hello\",\"id\":1,\"nick\":\"ALICE\"}");
    HAS(&b, "{\"id\":1,\"ok\":true,", "\"nick\":\"ALICE\"");
    peer_json(&a, "{\"op\":\"hello\",\"id\":2,\"nick\":\"alice\"}");
    HAS(&a, "\"code\":\"nick_taken\"");
    peer_json(&a, "{\"op\":\"hello\",\"id\":3,\"nick\":\"alice2\"}");
    HAS(&a, "{\"id\":3,\"ok\":true,", "\"nick\":\"alice2\"");
    peer_close(&a);
    peer_close(&b);
    free_chat(chat);
}

/* Issue 19: replies carry at most page_bytes of messages, the newest (or,
 * for "after", the oldest) that fit, at least one, and say where to go on. */
static void test_paging(void)
{
    page_bytes = 200; /* each message below takes ~110 bytes: one fits, not two */
    struct hub_chat *chat = new_chat(NULL);
    page_bytes = 0;
    struct peer a, b;
    peer_open_mode(&a, chat, "x", HUB_CHAT_JSON);
    peer_open_mode(&b, chat, "x", HUB_CHAT_JSON);
    peer_json(&a, "{\"op\":\"hello\",\"id\":1,\"nick\":\"alice\"}");
    HAS(&a, "\"page_bytes\":200}");
    peer_json(&a, "{\"op\":\"join\",\"id\":2,\"room\":\"p\"}");
    char req[200];
    for (int i = 1; i <= 4; i++) {
        snprintf(req, sizeof(req), "{\"op\":\"send\",\"room\":\"p\",\"text\":\"%d-%060d\"}", i, 0);
        peer_json(&a, req);
    }
    count_frames(&a, "");
    struct hub_history_msg m = {.offset = 4, .ts = 1000000, .from = {"alice", 5}};
    char text[64];
    snprintf(text, sizeof(text), "4-%060d", 0);
    m.text.base = text;
    m.text.len = strlen(text);
    CHECK(chat_msg_size(&m) > 100 && chat_msg_size(&m) < 200);
    peer_json(&b, "{\"op\":\"hello\",\"id\":1,\"nick\":\"bob\"}");
    peer_json(&b, "{\"op\":\"join\",\"id\":2,\"room\":\"p\"}");
    HAS(&b, "\"id\":2,\"ok\":true", "\"offset\":4,\"messages\":[{\"offset\":4,", "\"text\":\"4-",
        "\"}],\"next\":{\"before\":4},\"complete\":false,\"members\":");
    peer_json(&b, "{\"op\":\"history\",\"id\":3,\"room\":\"p\",\"before\":4}");
    HAS(&b, "\"messages\":[{\"offset\":3,", "\"}],\"next\":{\"before\":3},\"complete\":false}");
    peer_json(&b, "{\"op\":\"history\",\"id\":4,\"room\":\"p\",\"after\":1}");
    HAS(&b, "\"messages\":[{\"offset\":2,", "\"}],\"next\":{\"after\":2},\"complete\":false}");
    peer_json(&b, "{\"op\":\"history\",\"id\":5,\"room\":\"p\",\"before\":2}");
    HAS(&b, "\"messages\":[{\"offset\":1,", "\"}],\"complete\":true}");
    /* A hello resume shares one budget over its rooms: one message here. */
    struct peer c;
    peer_open_mode(&c, chat, "x", HUB_CHAT_JSON);
    peer_json(&c, "{\"op\":\"hello\",\"id\":1,\"nick\":\"carol\",\"resume\":{\"p\":{\"epoch\":"
                  "\"x\",\"offset\":0}}}");
    /* Another epoch: a gap push, then the newest page. */
    HAS(&c, "{\"t\":\"gap\",\"room\":\"p\"", "\"reason\":\"epoch\"}",
        "\"rooms\":{\"p\":{\"epoch\":", "\"messages\":[{\"offset\":4,",
        "\"next\":{\"before\":4},\"complete\":false");
    peer_close(&a);
    peer_close(&b);
    peer_close(&c);
    free_chat(chat);
}

static void claim_cb(void *data, int err)
{
    *(int *)data = err;
}

/* The memory engine under chat: rooms are subscribed while they have
 * members here, every message is published through it and comes back from
 * on_msg once, nicks are claimed in it and released on close. */
static void test_engine_wiring(void)
{
    struct hub_chat *chat = new_chat(NULL);
    struct hub_engine *e = hub_chat_engine(chat);
    CHECK(e != NULL);
    struct hub_engine_stats st;
    hub_engine_stats(e, &st);
    CHECK_STR(st.kind, "memory");
    CHECK_EQ(st.rooms, 0);
    struct peer a, b, c, j;
    peer_open(&a, chat, "room1");
    peer_open(&b, chat, "room1");
    peer_open(&c, chat, "room2");
    hub_engine_stats(e, &st);
    CHECK_EQ(st.rooms, 2);
    peer_say(&a, 1, "one", 3);
    hub_engine_stats(e, &st);
    CHECK_EQ(st.published, 1);
    CHECK_EQ(st.received, 1);
    CHECK(read_is(&a, "1:one|"));
    CHECK(read_is(&b, "1:one|"));
    CHECK(read_is(&c, ""));
    peer_close(&a);
    peer_close(&b);
    hub_engine_stats(e, &st);
    CHECK_EQ(st.rooms, 1); /* room1's last member unsubscribed it */

    /* A JSON client's nick is a claim in the engine, until it closes. */
    peer_open_mode(&j, chat, "ignored", HUB_CHAT_JSON);
    peer_json(&j, "{\"op\":\"hello\",\"id\":1,\"nick\":\"Zoe\"}");
    HAS(&j, "\"id\":1,\"ok\":true,\"client\":\"c-4\"");
    int err = 1;
    struct hub_iov other = {"x-c-9", 5};
    CHECK_EQ(hub_engine_claim_nick(e, (struct hub_iov){"zoe", 3}, other, claim_cb, &err), 0);
    CHECK_EQ(err, HUB_EEXIST);
    peer_json(&j, "{\"op\":\"join\",\"id\":2,\"room\":\"room2\"}");
    HAS(&j, "\"members\":[{\"nick\":\"guest-3\",\"client\":\"c-3\"},",
        "{\"nick\":\"Zoe\",\"client\":\"c-4\"}]");
    CHECK(read_is(&c, "")); /* raw members see messages only */
    peer_close(&j);
    CHECK_EQ(hub_engine_claim_nick(e, (struct hub_iov){"zoe", 3}, other, claim_cb, &err), 0);
    CHECK_EQ(err, 0);
    hub_engine_release_nick(e, (struct hub_iov){"zoe", 3}, other);
    peer_close(&c);
    hub_engine_stats(e, &st);
    CHECK_EQ(st.rooms, 0);
    free_chat(chat);
}

int main(void)
{
    test_engine_wiring();
    test_paging();
    test_big_room_count();
    test_hello_alloc_failure();
    test_json();
    test_paths();
    test_relay();
    test_welcome();
    return CHECK_DONE();
}
