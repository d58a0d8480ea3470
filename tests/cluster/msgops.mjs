// Edits, deletes, reactions, replies and bans across hubs (issues 13 and 15):
// two hubs share one redis-server (the Redis engine). A change made by a
// client of hub A must reach a member connected to hub B as a push, B's
// history must show it, and a ban made by a moderator on A must refuse a
// join on B. Tokens are signed here with Node's crypto (HS256), as in
// tests/integration/auth.mjs. A ban by nick of a user on the other node
// is recorded again there under the holder's own key (chat_mod.c), for a
// guest ("~carol") and a signed user alike.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from '../integration/lib.mjs';
import { assertErr } from '../protocol/jclient.mjs';
import { JClient, Redis, assert, eventually, requireCluster, startHubs } from './clib.mjs';

requireCluster();

const SECRET = 'a-cluster-test-secret-that-is-long-enough-0123456789';
const b64u = (buf) => Buffer.from(buf).toString('base64url');

function sign(claims) {
  const head = b64u(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64u(JSON.stringify(claims));
  const sig = crypto.createHmac('sha256', SECRET).update(`${head}.${body}`).digest();
  return `${head}.${body}.${b64u(sig)}`;
}
const token = (sub, extra = {}) => sign({ sub, exp: Math.floor(Date.now() / 1000) + 3600, ...extra });

let secretPath = null;
function secretFile() {
  if (!secretPath) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chathub-cluster-auth-'));
    secretPath = path.join(dir, 'secret');
    fs.writeFileSync(secretPath, `${SECRET}\n`);
    process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  }
  return secretPath;
}

let shared = null;
async function redis() {
  if (!shared || !shared.alive()) shared = await Redis.start();
  return shared;
}

const hubs2 = async () => startHubs(await redis(), 2, { args: ['--auth-secret-file', secretFile(), '--guests'] });

// A signed user on hub (role user unless given).
async function user(hub, sub, role) {
  const c = await JClient.open(hub);
  const r = await c.req('hello', { nick: sub, token: token(sub, role ? { role } : {}) });
  assert.equal(r.ok, true, `hello ${sub}: ${JSON.stringify(r)}`);
  c.nick = r.nick || sub;
  return c;
}

// A guest on hub: restricted by its nick's claim key, which every node
// computes alike (a signed user on another node is restricted by nick key
// only: chat_mod.c's file comment).
async function guest(hub, nick) {
  const c = await JClient.open(hub);
  const r = await c.req('hello', { nick });
  assert.equal(r.ok, true, `hello ${nick}: ${JSON.stringify(r)}`);
  c.nick = r.nick; // as shown to others ("~carol"): what a moderator names
  return c;
}

const find = (msgs, offset) => msgs.find((m) => m.offset === offset);

test('an edit, a reaction and a delete on hub A reach a member on hub B, with replies and history', async () => {
  const [a, b] = await hubs2();
  const alice = await user(a, 'alice');
  const bob = await user(b, 'bob');
  await alice.joinOk('ops', { history: 0 });
  await bob.joinOk('ops', { history: 0 });

  const sent = await alice.sendOk('ops', 'helo @bob', { cmid: 'm1' });
  const off = sent.offset;
  const pushed = await bob.waitPush((m) => m.t === 'msg' && m.offset === off, 5000, 'the msg on B');
  assert.equal(pushed.text, 'helo @bob');

  // A reply from B, carried to A.
  const answer = await bob.sendOk('ops', 'yes?', { reply_to: off, cmid: 'm2' });
  const got = await alice.waitPush((m) => m.t === 'msg' && m.offset === answer.offset, 5000, 'the reply on A');
  assert.equal(got.reply_to, off);
  assertErr(await bob.req('send', { room: 'ops', text: 'x', reply_to: answer.offset + 50 }), 'bad_request');

  // Edit on A: B gets the push; B may not edit A's message.
  const e = await alice.req('edit', { room: 'ops', offset: off, text: 'hello @bob' });
  assert.equal(e.ok, true, JSON.stringify(e));
  const edited = await bob.waitPush((m) => m.t === 'edited' && m.offset === off, 5000, 'edited on B');
  assert.equal(edited.text, 'hello @bob');
  assert.equal(edited.edited_ts, e.edited_ts);
  assertErr(await bob.req('edit', { room: 'ops', offset: off, text: 'mine now' }), 'forbidden');

  // A reaction from B reaches A; B's history shows it as B's own.
  const r = await bob.req('react', { room: 'ops', offset: off, emoji: '👍' });
  assert.equal(r.ok, true, JSON.stringify(r));
  assert.equal(r.count, 1);
  const rp = await alice.waitPush((m) => m.t === 'reaction' && m.offset === off, 5000, 'reaction on A');
  assert.deepEqual([rp.emoji, rp.count, rp.on], ['👍', 1, true]);
  let h = await bob.req('history', { room: 'ops', after: off - 1, limit: 10 });
  assert.equal(h.ok, true, JSON.stringify(h));
  let m = find(h.messages, off);
  assert.equal(m.text, 'hello @bob');
  assert.equal(m.edited_ts, e.edited_ts);
  assert.deepEqual(m.reactions, { '👍': 1 });
  assert.deepEqual(m.mine, ['👍']);
  assert.equal(find(h.messages, answer.offset).reply_to, off);
  assertErr(await bob.req('react', { room: 'ops', offset: off + 1000, emoji: '👍' }), 'no_such_message');

  // Delete on A: a deleted push on B, a tombstone in B's history.
  const d = await alice.req('delete', { room: 'ops', offset: off });
  assert.equal(d.ok, true, JSON.stringify(d));
  await bob.waitPush((m2) => m2.t === 'deleted' && m2.offset === off, 5000, 'deleted on B');
  h = await bob.req('history', { room: 'ops', after: off - 1, limit: 10 });
  m = find(h.messages, off);
  assert.equal(m.deleted, true);
  assert.equal(m.text, undefined);
  assert.equal(m.reactions, undefined);
  assertErr(await alice.req('edit', { room: 'ops', offset: off, text: 'back' }), 'no_such_message');
  alice.close();
  bob.close();
});

test('a ban by a moderator on hub A removes a guest on hub B and refuses its join there; unban lets it back', async () => {
  const [a, b] = await hubs2();
  const mod = await user(a, 'mona', 'mod');
  const carol = await guest(b, 'carol');
  await mod.joinOk('lobby', { history: 0 });
  await carol.joinOk('lobby', { history: 0 });
  // A plain user may not ban.
  assertErr(await carol.req('ban', { room: 'lobby', nick: 'mona' }), 'forbidden');

  const r = await mod.req('ban', { room: 'lobby', nick: carol.nick, duration: 3600, reason: 'spam' });
  assert.equal(r.ok, true, JSON.stringify(r));
  const banned = await carol.waitPush((m) => m.t === 'banned', 5000, 'banned push on B');
  assert.equal(banned.room, 'lobby');
  assert.ok(banned.until > Date.now(), JSON.stringify(banned));
  assertErr(await carol.req('join', { room: 'lobby' }), 'banned');
  assert.equal((await carol.req('send', { room: 'lobby', text: 'let me in' })).ok, false);
  // Another room is fine: the ban is the room's.
  await carol.joinOk('elsewhere', { history: 0 });

  const u = await mod.req('unban', { room: 'lobby', nick: carol.nick });
  assert.equal(u.ok, true, JSON.stringify(u));
  await carol.joinOk('lobby', { history: 0 });

  // A signed user on B, banned by nick from A: B records it under the
  // user's id, so its next join on B is refused too.
  const sam = await user(b, 'sam');
  await sam.joinOk('lobby', { history: 0 });
  assert.equal((await mod.req('ban', { room: 'lobby', nick: 'sam', duration: 60 })).ok, true);
  await sam.waitPush((m) => m.t === 'banned', 5000, 'banned push to the signed user on B');
  assertErr(await sam.req('join', { room: 'lobby' }), 'banned');
  assert.equal((await mod.req('unban', { room: 'lobby', nick: 'sam' })).ok, true);
  await eventually(async () => ((await sam.req('join', { room: 'lobby' })).ok ? true : undefined),
    5000, 'the signed user may join again after the unban');
  sam.close();
  mod.close();
  carol.close();
});

test('a mute on hub A refuses sends on hub B; a topic set on A shows in a join on B; a hub-wide ban', async () => {
  const [a, b] = await hubs2();
  const mod = await user(a, 'max', 'admin');
  const dan = await guest(b, 'dan');
  await mod.joinOk('news', { history: 0 });
  await dan.joinOk('news', { history: 0 });
  const r = await mod.req('mute', { room: 'news', nick: dan.nick, duration: 600 });
  assert.equal(r.ok, true, JSON.stringify(r));
  const mp = await dan.waitPush((m) => m.t === 'muted', 5000, 'muted push on B');
  assert.equal(mp.room, 'news');
  assertErr(await dan.req('send', { room: 'news', text: 'psst' }), 'muted');
  assert.equal((await mod.req('unmute', { room: 'news', nick: dan.nick })).ok, true);
  await dan.waitPush((m) => m.t === 'unmuted', 5000, 'unmuted push on B');
  await dan.sendOk('news', 'thanks');

  // A signed user on B, muted by nick from A: B records the mute under the
  // user's id, so its sends on B are refused (and a push tells it).
  const sue = await user(b, 'sue');
  await sue.joinOk('news', { history: 0 });
  assert.equal((await mod.req('mute', { room: 'news', nick: 'sue', duration: 60 })).ok, true);
  await sue.waitPush((m) => m.t === 'muted', 5000, 'muted push to the signed user on B');
  await eventually(async () => {
    const s = await sue.req('send', { room: 'news', text: 'still here?' });
    return !s.ok && s.error.code === 'muted' ? true : undefined;
  }, 5000, 'the signed user muted on B');
  assert.equal((await mod.req('unmute', { room: 'news', nick: 'sue' })).ok, true);
  await eventually(async () => ((await sue.req('send', { room: 'news', text: 'back' })).ok ? true : undefined),
    5000, 'the signed user may send again after the unmute');
  sue.close();

  const t = await mod.req('topic', { room: 'news', topic: 'Release day' });
  assert.equal(t.ok, true, JSON.stringify(t));
  const tp = await dan.waitPush((m) => m.t === 'topic', 5000, 'topic push on B');
  assert.equal(tp.topic, 'Release day');
  const late = await user(b, 'erin');
  const j = await late.joinOk('news', { history: 0 });
  assert.equal(j.topic, 'Release day');

  // A hub-wide ban by an admin on A: every room refuses the guest on B.
  const hb = await mod.req('ban', { hub: true, nick: dan.nick, reason: 'enough' });
  assert.equal(hb.ok, true, JSON.stringify(hb));
  const bp = await dan.waitPush((m) => m.t === 'banned', 5000, 'hub banned push on B');
  assert.equal(bp.room, null);
  assertErr(await dan.req('join', { room: 'news' }), 'banned');
  assertErr(await dan.req('join', { room: 'anywhere' }), 'banned');
  assert.equal((await mod.req('unban', { hub: true, nick: dan.nick })).ok, true);
  await dan.joinOk('anywhere', { history: 0 });
  mod.close();
  dan.close();
  late.close();
});

test('the server API with --redis: a publish on hub A reaches a member on hub B and its history; a kick on A removes a user on B', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chathub-cluster-api-'));
  const keyFile = path.join(dir, 'api-key');
  const KEY = 'cluster-api-key-0123456789abcdef';
  fs.writeFileSync(keyFile, `${KEY}\n`);
  try {
    const [a, b] = await startHubs(await redis(), 2, {
      args: ['--auth-secret-file', secretFile(), '--guests', '--api-key-file', keyFile],
    });
    const api = async (hub, method, p, body) => {
      const r = await fetch(`http://127.0.0.1:${hub.port}${p}`, {
        method,
        headers: { Authorization: `Bearer ${KEY}`, 'Content-Type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      return { status: r.status, body: await r.json() };
    };
    const bea = await user(b, 'bea');
    await bea.joinOk('shop', { history: 0 });
    const p = await api(a, 'POST', '/api/publish', { room: 'shop', text: 'order #42 shipped', from: 'shopbot' });
    assert.equal(p.status, 200, JSON.stringify(p.body));
    const m = await bea.waitPush((x) => x.t === 'msg' && x.room === 'shop', 5000, 'API publish on A reaches B');
    assert.deepEqual([m.from, m.text, m.offset], ['shopbot', 'order #42 shipped', p.body.offset]);
    const h = await api(b, 'GET', `/api/history?room=shop&after=${p.body.offset - 1}&limit=5`);
    assert.equal(h.status, 200, JSON.stringify(h.body));
    assert.equal(h.body.messages.find((x) => x.offset === p.body.offset).text, 'order #42 shipped');
    const pr = await api(a, 'GET', '/api/presence?room=shop');
    assert.equal(pr.status, 200, JSON.stringify(pr.body));
    assert.ok(pr.body.members.some((x) => x.nick === bea.nick), JSON.stringify(pr.body));
    const k = await api(a, 'POST', '/api/kick', { room: 'shop', user: 'bea', reason: 'closing time' });
    assert.equal(k.status, 200, JSON.stringify(k.body));
    const kp = await bea.waitPush((x) => x.t === 'kicked', 5000, 'API kick on A reaches B');
    assert.equal(kp.reason, 'closing time');
    bea.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
