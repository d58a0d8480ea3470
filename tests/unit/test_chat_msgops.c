/*
 * test_chat_msgops.c: the chat side of issue 15 and issue 13 part 2 over
 * detached connections, the memory engine and the injected clock: the edit
 * window at exactly 24 h (and a millisecond past it), mentions (members,
 * guests named without their "~", at most 16, each once), a page's byte
 * count equal to the bytes written with every new field, an edit request
 * split at every offset, moderation refused to users, a ban's push and the
 * refused join, a mute's refused send, a DISCONNECT control's close code,
 * and the counters /metrics shows.
 */
#include "chat_harness.h"

/* hello with a token for sub/name/role. */
static void hello_role(struct peer *p, const char *sub, const char *name, const char *role)
{
    char claims[300], tok[1024], req[1200];
    snprintf(claims, sizeof(claims),
             "{\"sub\":\"%s\",\"name\":\"%s\",\"role\":\"%s\",\"exp\":%lld}", sub, name, role,
             NOW_S + 86400 * 3);
    sign(claims, tok);
    snprintf(req, sizeof(req), "{\"op\":\"hello\",\"id\":1,\"token\":\"%s\"}", tok);
    peer_say(p, req);
}

static void drain(struct peer *p)
{
    struct hub_buf log = {0};
    peer_read(p, &log);
    hub_buf_free(&log);
}

static void test_edit_window(void)
{
    fake_now = NOW_S * 1000;
    struct hub_chat *chat = new_chat(1);
    struct peer a, b;
    peer_open(&a, chat);
    peer_open(&b, chat);
    hello_role(&a, "ua", "Ann", "user");
    hello_role(&b, "ub", "Bea", "user");
    peer_say(&a, "{\"op\":\"join\",\"id\":2,\"room\":\"lobby\"}");
    peer_say(&b, "{\"op\":\"join\",\"id\":2,\"room\":\"lobby\"}");
    peer_say(&a, "{\"op\":\"send\",\"id\":3,\"room\":\"lobby\",\"text\":\"one\"}");
    peer_say(&a, "{\"op\":\"send\",\"id\":4,\"room\":\"lobby\",\"text\":\"two\"}");
    drain(&a);
    drain(&b);
    /* Exactly 24 h later the author may still edit; a millisecond more, not. */
    fake_now += HUB_HISTORY_EDIT_WINDOW_MS;
    peer_say(&a, "{\"op\":\"edit\",\"id\":5,\"room\":\"lobby\",\"offset\":1,\"text\":\"uno\"}");
    char want[128];
    snprintf(want, sizeof(want), "{\"id\":5,\"ok\":true,\"edited_ts\":%lld}", (long long)fake_now);
    CHECK(got(&a, want));
    snprintf(
        want, sizeof(want),
        "{\"t\":\"edited\",\"room\":\"lobby\",\"offset\":1,\"text\":\"uno\",\"edited_ts\":%lld}",
        (long long)fake_now);
    CHECK(got(&b, want));
    /* Raw members get the messages' bare text and no amendment pushes. */
    struct peer r;
    hub_conn_init_detached(&r.conn, 0);
    struct hub_ws_config wcfg;
    hub_ws_config_default(&wcfg);
    r.ws = hub_ws_new(&r.conn, &wcfg, on_msg, &r);
    r.cl = hub_chat_client_new(chat, r.ws, HUB_CHAT_RAW, chat_iov_str("lobby"));
    drain(&r);
    peer_say(&a, "{\"op\":\"react\",\"id\":10,\"room\":\"lobby\",\"offset\":1,\"emoji\":\"+1\"}");
    peer_say(&a, "{\"op\":\"edit\",\"id\":11,\"room\":\"lobby\",\"offset\":1,\"text\":\"eins\"}");
    CHECK(got(&b, "\"t\":\"reaction\""));
    struct hub_buf rlog = {0};
    peer_read(&r, &rlog);
    CHECK_EQ(rlog.len, 1); /* only the NUL: nothing came */
    hub_buf_free(&rlog);
    peer_say(&a, "{\"op\":\"send\",\"id\":12,\"room\":\"lobby\",\"text\":\"raw sees @Bea\"}");
    CHECK(got(&r, "1:raw sees @Bea|"));
    peer_close(&r);
    drain(&a);
    drain(&b);
    fake_now += 1;
    peer_say(&a, "{\"op\":\"edit\",\"id\":6,\"room\":\"lobby\",\"offset\":2,\"text\":\"dos\"}");
    CHECK(got(&a, "{\"id\":6,\"ok\":false,\"error\":{\"code\":\"forbidden\",\"message\":\"too "
                  "late to edit this message"));
    peer_say(&a, "{\"op\":\"delete\",\"id\":7,\"room\":\"lobby\",\"offset\":2}");
    CHECK(got(&a, "{\"id\":7,\"ok\":false,\"error\":{\"code\":\"forbidden\""));
    /* Another user's message: forbidden whatever the time. */
    peer_say(&b, "{\"op\":\"edit\",\"id\":8,\"room\":\"lobby\",\"offset\":1,\"text\":\"mine\"}");
    CHECK(got(&b, "{\"id\":8,\"ok\":false,\"error\":{\"code\":\"forbidden\",\"message\":\"you "
                  "may edit only your own messages\"}}"));
    struct hub_chat_mod_stats st;
    hub_chat_mod_stats(chat, &st);
    CHECK_EQ(st.edit, 2);
    CHECK_EQ(st.del, 0);
    peer_close(&a);
    peer_close(&b);
    free_chat(chat);
}

static void test_mentions(void)
{
    struct hub_chat *chat = new_chat(1);
    struct peer a, g;
    peer_open(&a, chat);
    peer_open(&g, chat);
    hello_role(&a, "ua", "Ann", "user");
    peer_say(&g, "{\"op\":\"hello\",\"id\":1,\"nick\":\"gus\"}");
    CHECK(got(&g, "\"nick\":\"~gus\""));
    char out[HUB_HISTORY_MENTIONS_MAX * (HUB_CHAT_NICK_BYTES + 2)];
    const char *t = "hi @ann, @gus and @~gus, @nobody; mail@ann is no mention, @ANN again";
    size_t n = chat_mentions(chat, chat_iov_str(t), out, sizeof(out));
    CHECK_EQ(n, strlen("Ann\n~gus\n"));
    CHECK(n == strlen("Ann\n~gus\n") && memcmp(out, "Ann\n~gus\n", n) == 0);
    /* At most 16: seventeen distinct holders, only sixteen listed. */
    struct peer many[17];
    char text[17 * 8] = "", req[100];
    for (int i = 0; i < 17; i++) {
        peer_open(&many[i], chat);
        snprintf(req, sizeof(req), "{\"op\":\"hello\",\"id\":1,\"nick\":\"n%02d\"}", i);
        peer_say(&many[i], req);
        snprintf(text + strlen(text), sizeof(text) - strlen(text), "@~n%02d ", i);
    }
    n = chat_mentions(chat, chat_iov_str(text), out, sizeof(out));
    size_t lines = 0;
    for (size_t i = 0; i < n; i++)
        lines += out[i] == '\n';
    CHECK_EQ(lines, HUB_HISTORY_MENTIONS_MAX);
    for (int i = 0; i < 17; i++)
        peer_close(&many[i]);
    /* On the push: Ann's message mentioning the guest. */
    peer_say(&a, "{\"op\":\"join\",\"id\":2,\"room\":\"lobby\"}");
    peer_say(&g, "{\"op\":\"join\",\"id\":2,\"room\":\"lobby\"}");
    drain(&g);
    peer_say(&a,
             "{\"op\":\"send\",\"id\":3,\"room\":\"lobby\",\"text\":\"yo @gus\",\"reply_to\":0}");
    CHECK(got(&g, "\"text\":\"yo @gus\",\"mentions\":[\"~gus\"]}"));
    peer_close(&a);
    peer_close(&g);
    free_chat(chat);
}

static void test_msg_size(void)
{
    struct hub_history_reaction r[2] = {{{"\xf0\x9f\x91\x8d", 4}, 3, 1}, {{"\"q\"", 3}, 1, 0}};
    struct hub_history_msg m = {.offset = 123456, .ts = 1763740800123, .from = {"al\"ice", 6}};
    m.text = chat_iov_str("line\nwith \\ escapes \x01");
    m.cmid = chat_iov_str("c-1");
    m.mentions = chat_iov_str("bob\n~gus\n");
    m.reply_to = 99;
    m.edited_ts = 1763740900000;
    m.reactions = r;
    m.nreactions = 2;
    struct hub_history_msg two[2] = {m, m};
    two[1].deleted = 1;
    struct hub_jsonw w = {0};
    chat_jw_messages(&w, two, 2);
    /* "messages":[a,b]: the sizes (each with its comma) add up to the bytes. */
    size_t frame = strlen("\"messages\":[]");
    CHECK_EQ(hub_jsonw_len(&w), frame + chat_msg_size(&two[0]) + chat_msg_size(&two[1]) - 1);
    hub_buf_append(&w.b, "", 1);
    CHECK(strstr(w.b.data, "\"reactions\":{\"\xf0\x9f\x91\x8d\":3,\"\\\"q\\\"\":1},\"mine\":["
                           "\"\xf0\x9f\x91\x8d\"]") != NULL);
    CHECK(strstr(w.b.data, "{\"offset\":123456,\"ts\":1763740800123,\"from\":\"al\\\"ice\","
                           "\"deleted\":true,\"reply_to\":99}") != NULL);
    hub_jsonw_free(&w);
}

/* An edit request fed split at every offset answers the same. */
static void test_edit_split(void)
{
    fake_now = NOW_S * 1000;
    struct hub_chat *chat = new_chat(1);
    struct peer a;
    peer_open(&a, chat);
    hello_role(&a, "ua", "Ann", "user");
    peer_say(&a, "{\"op\":\"join\",\"id\":2,\"room\":\"lobby\"}");
    peer_say(&a, "{\"op\":\"send\",\"id\":3,\"room\":\"lobby\",\"text\":\"x\"}");
    drain(&a);
    const char *req = "{\"op\":\"react\",\"id\":9,\"room\":\"lobby\",\"offset\":1,\"emoji\":"
                      "\"\xf0\x9f\x8e\x89\"}";
    struct hub_buf f = {0};
    client_frame(&f, 1, HUB_WS_TEXT, req, strlen(req), 1);
    for (size_t cut = 1; cut < f.len; cut++) {
        fake_now += 1000; /* under the rate limit */
        hub_ws_feed(a.ws, f.data, cut);
        hub_ws_feed(a.ws, f.data + cut, f.len - cut);
        CHECK(got(&a, "{\"id\":9,\"ok\":true,\"count\":1}"));
    }
    hub_buf_free(&f);
    peer_close(&a);
    free_chat(chat);
}

/* The close code queued on p's connection, or 0. */
static int close_code(struct peer *p)
{
    struct hub_buf out = {0};
    drain_conn(&p->conn, &out);
    size_t off = 0;
    struct server_frame f;
    int code = 0;
    while (next_server_frame(&out, &off, &f))
        if (f.opcode == 8 && f.len >= 2)
            code = f.payload[0] << 8 | f.payload[1];
    hub_buf_free(&out);
    return code;
}

static void test_moderation(void)
{
    fake_now = NOW_S * 1000;
    struct hub_chat *chat = new_chat(1);
    struct peer mod, u, v;
    peer_open(&mod, chat);
    peer_open(&u, chat);
    peer_open(&v, chat);
    hello_role(&mod, "m1", "Mia", "mod");
    hello_role(&u, "u1", "Ann", "user");
    hello_role(&v, "u2", "Vic", "user");
    peer_say(&mod, "{\"op\":\"join\",\"id\":2,\"room\":\"lobby\"}");
    peer_say(&u, "{\"op\":\"join\",\"id\":2,\"room\":\"lobby\"}");
    peer_say(&v, "{\"op\":\"join\",\"id\":2,\"room\":\"lobby\"}");
    drain(&mod);
    drain(&u);
    drain(&v);
    peer_say(&u, "{\"op\":\"kick\",\"id\":3,\"room\":\"lobby\",\"nick\":\"Vic\"}");
    CHECK(got(&u, "{\"id\":3,\"ok\":false,\"error\":{\"code\":\"forbidden\""));
    peer_say(&mod, "{\"op\":\"ban\",\"id\":3,\"hub\":true,\"nick\":\"Vic\"}");
    CHECK(got(&mod, "{\"id\":3,\"ok\":false,\"error\":{\"code\":\"forbidden\""));
    /* A 60 s ban: the push, the leave for the others, the refused join. */
    peer_say(&mod, "{\"op\":\"ban\",\"id\":4,\"room\":\"lobby\",\"nick\":\"Ann\",\"duration\":60,"
                   "\"reason\":\"rude\"}");
    CHECK(got(&mod, "{\"id\":4,\"ok\":true}"));
    char want[200];
    snprintf(
        want, sizeof(want),
        "{\"t\":\"banned\",\"room\":\"lobby\",\"until\":%lld,\"by\":\"Mia\",\"reason\":\"rude\"}",
        (long long)(fake_now + 60000));
    CHECK(got(&u, want));
    CHECK(got(&v, "{\"t\":\"leave\",\"room\":\"lobby\",\"nick\":\"Ann\""));
    peer_say(&u, "{\"op\":\"join\",\"id\":5,\"room\":\"lobby\"}");
    CHECK(got(&u, "{\"id\":5,\"ok\":false,\"error\":{\"code\":\"banned\",\"message\":\"banned from "
                  "lobby until 2027-01-15T08:"));
    /* Once it has run out, the join goes through. */
    fake_now += 60001;
    peer_say(&u, "{\"op\":\"join\",\"id\":6,\"room\":\"lobby\"}");
    CHECK(got(&u, "{\"id\":6,\"ok\":true"));
    /* A mute: the push and the refused send. */
    peer_say(&mod, "{\"op\":\"mute\",\"id\":7,\"room\":\"lobby\",\"nick\":\"Ann\"}");
    CHECK(got(&u, "{\"t\":\"muted\",\"room\":\"lobby\",\"until\":null,\"by\":\"Mia\""));
    peer_say(&u, "{\"op\":\"send\",\"id\":8,\"room\":\"lobby\",\"text\":\"hm\"}");
    CHECK(got(&u, "{\"id\":8,\"ok\":false,\"error\":{\"code\":\"muted\""));
    /* DISCONNECT (the server API's) closes every connection of the user. */
    struct hub_engine_control c = {.kind = HUB_CONTROL_DISCONNECT};
    c.target = chat_iov_str("u:u2");
    c.text = chat_iov_str("go away");
    c.by = chat_iov_str("api");
    CHECK_EQ(hub_engine_control(hub_chat_engine(chat), &c), 0);
    CHECK_EQ(close_code(&v), HUB_CHAT_CLOSE_DISCONNECTED);
    CHECK_EQ(close_code(&u), 0);
    struct hub_chat_mod_stats st;
    hub_chat_mod_stats(chat, &st);
    CHECK_EQ(st.ban, 1);
    CHECK_EQ(st.mute, 1);
    CHECK_EQ(st.kick, 0);
    peer_close(&mod);
    peer_close(&u);
    peer_close(&v);
    free_chat(chat);
}

int main(void)
{
    test_edit_window();
    test_mentions();
    test_msg_size();
    test_edit_split();
    test_moderation();
    return CHECK_DONE();
}
