/*
 * test_chat.c: raw-mode relay over detached connections: room paths, the
 * relay to every member (sender included), isolation between rooms, one
 * shared frame per broadcast, and the welcome line.
 */
#include "check.h"
#include "hub/chat.h"
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

static void peer_open(struct peer *p, struct hub_chat *chat, const char *room)
{
    struct hub_ws_config cfg;
    hub_ws_config_default(&cfg);
    hub_conn_init_detached(&p->conn, 0);
    p->ws = hub_ws_new(&p->conn, &cfg, on_msg, p);
    struct hub_iov r = {room, strlen(room)};
    p->cl = hub_chat_client_new(chat, p->ws, HUB_CHAT_RAW, r);
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
        {"/", "lobby"},          {"/ws", "lobby"},         {"/ws/", "lobby"},
        {"/ws/room1", "room1"},  {"/chat", "chat"},        {"/ws/a.b:c-d_e", "a.b:c-d_e"},
        {"/wsx", "wsx"},         {"/ws/a/b", NULL},        {"/ws/bad%20name", NULL},
        {"/ws/bad name", NULL},  {"", NULL},               {"ws", NULL},
        {"/ws/\xc3\xa9", NULL},  {"/a/b", NULL},           {"/ws//", NULL},
    };
    for (size_t i = 0; i < HUB_ARRAY_SIZE(rows); i++) {
        struct hub_iov path = {rows[i].path, strlen(rows[i].path)};
        struct hub_iov room = {0};
        int rc = hub_chat_room_from_path(path, &room);
        if (rows[i].room == NULL) {
            CHECK_EQ(rc, HUB_EINVAL);
        } else {
            CHECK_EQ(rc, 0);
            CHECK(room.len == strlen(rows[i].room) && memcmp(room.base, rows[i].room, room.len) == 0);
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
    struct hub_chat_config cfg;
    hub_chat_config_default(&cfg);
    struct hub_chat *chat;
    CHECK_EQ(hub_chat_new(&chat, &cfg), 0);
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
    hub_chat_free(chat);
}

static void test_welcome(void)
{
    struct hub_chat_config cfg;
    hub_chat_config_default(&cfg);
    cfg.welcome = "hello there";
    struct hub_chat *chat;
    CHECK_EQ(hub_chat_new(&chat, &cfg), 0);
    struct peer a;
    peer_open(&a, chat, "lobby");
    CHECK(read_is(&a, "1:hello there|"));
    peer_close(&a);
    hub_chat_free(chat);
}

int main(void)
{
    test_paths();
    test_relay();
    test_welcome();
    return CHECK_DONE();
}
