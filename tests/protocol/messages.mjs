// docs/protocol.md, messages: send (ack, msg push, text rules, cmid),
// history, typing, dm.
import { test, wsConnect } from '../integration/lib.mjs';
import {
  assert, JClient, start, keys, assertTs, assertErr, assertErrPush, assertStored, sleep,
} from './jclient.mjs';

const HISTORY_KEYS = ['id', 'ok', 'room', 'epoch', 'offset', 'messages', 'complete'];
const MSG_KEYS = ['t', 'room', 'offset', 'ts', 'from', 'text'];

// Two clients in room r, their join pushes consumed.
async function pair(s, room = 'r') {
  const a = await JClient.open(s, { nick: 'alice' });
  const b = await JClient.open(s, { nick: 'bob' });
  await a.joinOk(room);
  await b.joinOk(room);
  await a.waitPush((m) => m.t === 'join');
  return [a, b];
}

test('send: ack (room, offset, ts); the others get msg (with cmid if given); the sender gets no push', async () => {
  const s = await start();
  const [a, b] = await pair(s);
  const c = await JClient.open(s, { nick: 'carol' });
  await c.joinOk('r');
  await a.waitPush((m) => m.t === 'join');
  await b.waitPush((m) => m.t === 'join');
  const r1 = await a.req('send', { room: 'r', text: 'hello', cmid: 'm-1' });
  keys(r1, ['id', 'ok', 'room', 'offset', 'ts'], 'send ack');
  assert.equal(r1.ok, true);
  assert.equal(r1.room, 'r');
  assert.equal(r1.offset, 1);
  assertTs(r1.ts);
  for (const x of [b, c]) {
    const m = await x.nextPush();
    keys(m, [...MSG_KEYS, 'cmid'], 'msg push');
    assert.deepEqual(m, { t: 'msg', room: 'r', offset: 1, ts: r1.ts, from: 'alice', text: 'hello', cmid: 'm-1' });
  }
  // No cmid: no cmid key.
  const r2 = await b.req('send', { room: 'r', text: 'yo' });
  assert.equal(r2.offset, 2);
  const m2 = await a.nextPush();
  keys(m2, MSG_KEYS, 'msg push without cmid');
  assert.deepEqual(m2, { t: 'msg', room: 'r', offset: 2, ts: r2.ts, from: 'bob', text: 'yo' });
  assert.equal((await c.nextPush()).offset, 2);
  // The sender got its ack and no push of its own message.
  await a.assertNoPush((m) => m.t === 'msg', 'msg push of its own message');
  await b.assertNoPush((m) => m.t === 'msg', 'msg push of its own message');
  // Offsets grow by one per message.
  const offs = [];
  for (let i = 0; i < 5; i++) offs.push((await a.sendOk('r', `n${i}`)).offset);
  assert.deepEqual(offs, [3, 4, 5, 6, 7]);
  // Offsets are per room.
  await a.joinOk('other');
  assert.equal((await a.sendOk('other', 'first')).offset, 1);
});

test('send: text round-trips exactly (escapes, controls, U+2028, emoji) in the push and in history', async () => {
  const s = await start();
  const [a, b] = await pair(s);
  // C0 controls other than tab and newline are bad_text (issue 20); DEL and
  // C1 controls are kept.
  const texts = ['quote " backslash \\ slash /', 'line\nbreak\ttab', 'ctl \u007f\u0085\u009f',
    'sep \u2028 \u2029', 'emoji 😀👍🏽', '  spaces  ', '<b>not html</b>', '{"op":"send"}', 'é'];
  for (const t of texts) {
    const r = await a.sendOk('r', t);
    const m = await b.nextPush();
    assert.equal(m.text, t);
    assert.equal(m.offset, r.offset);
  }
  const h = await b.req('history', { room: 'r' });
  assert.deepEqual(h.messages.map((m) => m.text), texts);
});

test('send errors: not_joined, bad_text (empty, non-string, missing), bad_room; each leaves the connection usable', async () => {
  const s = await start();
  const [a] = await pair(s);
  assertErr(await a.req('send', { room: 'elsewhere', text: 'x' }), 'not_joined');
  for (const f of [{ text: '' }, { text: 5 }, { text: null }, {}, { text: ['x'] }, { text: { a: 1 } }, { text: true },
    { text: 'nul \u0000' }, { text: 'cr \r' }, { text: '\u0001' }, { text: 'esc \u001b[31m' }]) {
    const r = await a.req('send', { room: 'r', ...f });
    assertErr(r, 'bad_text');
    assert.equal((await a.req('ping')).ok, true);
  }
  assertErr(await a.req('send', { room: 'bad room', text: 'x' }), 'bad_room');
  a.takePushes();
  a.sendRaw({ op: 'send', room: 'r', text: '' });
  assertErrPush(await a.nextPush(), 'bad_text');
  // Nothing of it was stored.
  const h = await a.req('history', { room: 'r' });
  assert.deepEqual(h.messages, []);
  assert.equal(h.offset, 0);
});

test('send: max_text 4000 characters (not bytes, not UTF-16 units); 4001 is too_long', async () => {
  const s = await start();
  const [a, b] = await pair(s);
  for (const [what, text] of [['4000 ASCII', 'a'.repeat(4000)], ['4000 three-byte', '€'.repeat(4000)],
    ['4000 four-byte (8000 UTF-16 units)', '😀'.repeat(4000)], ['3999 + one four-byte', 'a'.repeat(3999) + '😀']]) {
    const r = await a.req('send', { room: 'r', text });
    assert.equal(r.ok, true, `${what}: ${JSON.stringify(r)}`);
    const m = await b.nextPush();
    assert.equal(m.text, text, what);
  }
  for (const [what, text] of [['4001 ASCII', 'a'.repeat(4001)], ['4001 two-byte', 'é'.repeat(4001)],
    ['4001 four-byte', '😀'.repeat(4001)]]) {
    const r = await a.req('send', { room: 'r', text });
    assert.equal(r.ok, false, what);
    assertErr(r, 'too_long');
  }
  await b.assertNoPush((m) => m.t === 'msg', 'msg push of a refused text');
  const h = await a.req('history', { room: 'r', limit: 100 });
  assert.equal(h.messages.length, 4);
});

test('send cmid: a resend is acknowledged with the original offset and duplicate:true, not stored or pushed', async () => {
  const s = await start();
  const [a, b] = await pair(s);
  const r1 = await a.req('send', { room: 'r', text: 'once', cmid: 'k-1' });
  assert.equal((await b.nextPush()).cmid, 'k-1');
  await a.sendOk('r', 'between');
  await b.nextPush();
  const r2 = await a.req('send', { room: 'r', text: 'once', cmid: 'k-1' });
  assert.equal(r2.ok, true);
  assert.equal(r2.duplicate, true, JSON.stringify(r2));
  assert.equal(r2.offset, r1.offset);
  assert.equal(r2.room, 'r');
  keys(r2, ['id', 'ok', 'room', 'offset', 'ts', 'duplicate'], 'duplicate ack');
  await b.assertNoPush((m) => m.t === 'msg', 'msg push of a duplicate');
  const h = await b.req('history', { room: 'r' });
  assert.deepEqual(h.messages.map((m) => [m.offset, m.text, m.cmid]), [[1, 'once', 'k-1'], [2, 'between', undefined]]);
  // A first send has no duplicate key.
  assert.equal('duplicate' in r1, false);
  // Same cmid from another nick, or to another room: a new message.
  const r3 = await b.req('send', { room: 'r', text: 'mine', cmid: 'k-1' });
  assert.equal(r3.offset, 3);
  assert.equal('duplicate' in r3, false);
  await a.joinOk('r2');
  const r4 = await a.req('send', { room: 'r2', text: 'other room', cmid: 'k-1' });
  assert.equal(r4.offset, 1);
  assert.equal('duplicate' in r4, false);
  // cmid limits: 64 bytes fine, 65 bad_request.
  assert.equal((await a.req('send', { room: 'r', text: 'x', cmid: 'c'.repeat(64) })).ok, true);
  assertErr(await a.req('send', { room: 'r', text: 'x', cmid: 'c'.repeat(65) }), 'bad_request');
  assertErr(await a.req('send', { room: 'r', text: 'x', cmid: 'c'.repeat(1000) }), 'bad_request');
  const h2 = await a.req('history', { room: 'r' });
  assert.equal(h2.offset, 4, 'the refused sends were not stored');
});

test('send cmid: up to 64 bytes (64 ASCII ok; 33 two-byte characters are 66 bytes: bad_request)', async () => {
  const s = await start();
  const [a, b] = await pair(s);
  const ok = 'c'.repeat(64);
  const r = await a.req('send', { room: 'r', text: 'x', cmid: ok });
  assert.equal(r.ok, true, JSON.stringify(r));
  assert.equal((await b.nextPush()).cmid, ok);
  const r2 = await a.req('send', { room: 'r', text: 'x', cmid: 'é'.repeat(33) });
  assertErr(r2, 'bad_request');
});

test('send without id: no reply, but the message is stored and pushed; errors become error pushes', async () => {
  const s = await start();
  const [a, b] = await pair(s);
  const n = a.log.length;
  a.sendRaw({ op: 'send', room: 'r', text: 'silent', cmid: 'q' });
  const m = await b.nextPush();
  assert.equal(m.text, 'silent');
  assert.equal(m.offset, 1);
  await a.barrier();
  const replies = a.log.slice(n).filter((e) => e.kind === 'reply');
  assert.equal(replies.length, 1, `only the barrier's reply: ${replies.map((e) => e.raw)}`);
  assert.deepEqual(a.takePushes((x) => x.t !== 'pong'), []);
  a.sendRaw({ op: 'send', room: 'nope', text: 'x' });
  assertErrPush(await a.nextPush(), 'not_joined');
});

test('history: latest, before, after, limit, complete; oldest first; works without joining', async () => {
  const s = await start();
  const a = await JClient.open(s, { nick: 'alice' });
  await a.joinOk('h');
  for (let i = 1; i <= 10; i++) await a.sendOk('h', `t${i}`, i === 4 ? { cmid: 'four' } : {});
  const c = await JClient.open(s, { nick: 'carol' }); // not in the room
  const hist = async (f) => {
    const r = await c.req('history', { room: 'h', ...f });
    // An incomplete page says where to continue: before its oldest message
    // (after its newest, for "after").
    keys(r, r.complete ? HISTORY_KEYS : [...HISTORY_KEYS, 'next'], `history reply ${JSON.stringify(f)}`);
    if (!r.complete) {
      const m = r.messages;
      assert.deepEqual(r.next, f.after !== undefined ? { after: m[m.length - 1].offset } : { before: m[0].offset });
    }
    assert.equal(r.ok, true);
    assert.equal(r.room, 'h');
    assert.equal(r.offset, 10);
    assert.equal(typeof r.epoch, 'string');
    assert.equal(typeof r.complete, 'boolean');
    for (const m of r.messages) {
      assertStored(m, { from: 'alice', text: `t${m.offset}`, ...(m.offset === 4 ? { cmid: 'four' } : {}) });
    }
    return [r.messages.map((m) => m.offset), r.complete];
  };
  assert.deepEqual(await hist({}), [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], true]);
  assert.deepEqual(await hist({ limit: 3 }), [[8, 9, 10], false]);
  assert.deepEqual(await hist({ limit: 10 }), [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], true]);
  assert.deepEqual(await hist({ before: 5, limit: 2 }), [[3, 4], false]);
  assert.deepEqual(await hist({ before: 3, limit: 2 }), [[1, 2], true]);
  assert.deepEqual(await hist({ before: 3 }), [[1, 2], true]);
  assert.deepEqual(await hist({ before: 1 }), [[], true]);
  assert.deepEqual(await hist({ after: 7 }), [[8, 9, 10], true]);
  assert.deepEqual(await hist({ after: 2, limit: 3 }), [[3, 4, 5], false]);
  assert.deepEqual(await hist({ after: 6, limit: 4 }), [[7, 8, 9, 10], true]);
  assert.deepEqual(await hist({ after: 10 }), [[], true]);
  assert.deepEqual(await hist({ limit: 1 }), [[10], false]);
  assert.deepEqual(await hist({ limit: 100 }), [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], true]);
  assert.equal((await c.req('rooms')).rooms.length, 1, 'history did not join carol');
  // A room nobody used.
  const e = await c.req('history', { room: 'empty' });
  keys(e, HISTORY_KEYS, 'history reply');
  assert.equal(e.offset, 0);
  assert.deepEqual(e.messages, []);
  assert.equal(e.complete, true);
});

test('history: default limit 50 and at most 100 per page', async () => {
  const s = await start();
  const a = await JClient.open(s, { nick: 'alice' });
  await a.joinOk('big');
  for (let i = 1; i <= 150; i++) a.fire('send', { room: 'big', text: `t${i}` });
  await a.sendOk('big', 't151');
  const d = await a.req('history', { room: 'big' });
  assert.equal(d.messages.length, 50);
  assert.equal(d.messages[0].offset, 102);
  assert.equal(d.complete, false);
  const m = await a.req('history', { room: 'big', after: 0, limit: 100 });
  assert.equal(m.messages.length, 100);
  assert.equal(m.messages[99].offset, 100);
  assert.equal(m.complete, false);
});

test('history errors: limit 0 / 101 / -1 / non-integer, before and after together, bad types, bad_room', async () => {
  const s = await start();
  const a = await JClient.open(s, { nick: 'alice' });
  for (const f of [{ limit: 0 }, { limit: 101 }, { limit: -1 }, { limit: 2.5 }, { limit: '5' },
    { before: 5, after: 2 }, { before: 'x' }, { after: -3 }, { after: true }]) {
    const r = await a.req('history', { room: 'h', ...f });
    assert.equal(r.ok, false, `${JSON.stringify(f)} must fail: ${JSON.stringify(r)}`);
    assertErr(r, 'bad_request');
    assert.equal((await a.req('ping')).ok, true);
  }
  assertErr(await a.req('history', { room: 'no way' }), 'bad_room');
  assertErr(await a.req('history', {}), 'bad_request');
});

test('typing: others get {t, room, nick, ttl: 6000}; coalesced within 3 s; not_joined', async () => {
  const s = await start();
  const [a, b] = await pair(s);
  a.sendRaw({ op: 'typing', room: 'r' });
  const p = await b.nextPush();
  keys(p, ['t', 'room', 'nick', 'ttl'], 'typing push');
  assert.deepEqual(p, { t: 'typing', room: 'r', nick: 'alice', ttl: 6000 });
  const t0 = Date.now();
  // Again at once: not forwarded.
  a.sendRaw({ op: 'typing', room: 'r' });
  a.sendRaw({ op: 'typing', room: 'r' });
  await a.barrier(); // both were handled
  await b.assertNoPush((m) => m.t === 'typing', 'second typing within 3 s');
  await a.assertNoPush((m) => m.t === 'typing', 'typing push to the typist');
  // Per client: bob's typing is forwarded to alice.
  b.sendRaw({ op: 'typing', room: 'r' });
  assert.deepEqual(await a.nextPush(), { t: 'typing', room: 'r', nick: 'bob', ttl: 6000 });
  // After 3 s: forwarded again.
  await sleep(Math.max(0, 3100 - (Date.now() - t0)));
  a.sendRaw({ op: 'typing', room: 'r' });
  assert.deepEqual(await b.nextPush(), { t: 'typing', room: 'r', nick: 'alice', ttl: 6000 });
  // not_joined: an error reply with id, an error push without.
  assertErr(await a.req('typing', { room: 'elsewhere' }), 'not_joined');
  a.takePushes();
  a.sendRaw({ op: 'typing', room: 'elsewhere' });
  assertErrPush(await a.nextPush(), 'not_joined');
});

test('typing has no success reply, even with an id', async () => {
  const s = await start();
  const [a] = await pair(s);
  const n = a.log.length;
  a.sendRaw({ op: 'typing', id: 77, room: 'r' });
  await a.barrier();
  const replies = a.log.slice(n).filter((e) => e.kind === 'reply').map((e) => e.raw);
  assert.equal(replies.length, 1, `only the barrier's reply: ${replies.join(' ')}`);
});

test('dm: room @a,b (lowercased, sorted); dm push then msg to the recipient; ack with room', async () => {
  const s = await start();
  const z = await JClient.open(s, { nick: 'Zed' });
  const b = await JClient.open(s, { nick: 'Bob' });
  const r = await z.req('dm', { to: 'Bob', text: 'psst', cmid: 'm-2' });
  keys(r, ['id', 'ok', 'room', 'offset', 'ts'], 'dm ack');
  assert.equal(r.ok, true);
  assert.equal(r.room, '@bob,zed');
  assert.equal(r.offset, 1);
  assertTs(r.ts);
  const p1 = await b.nextPush();
  keys(p1, ['t', 'room', 'from'], 'dm push');
  assert.deepEqual(p1, { t: 'dm', room: '@bob,zed', from: 'Zed' });
  const p2 = await b.nextPush();
  keys(p2, [...MSG_KEYS, 'cmid'], 'msg push');
  assert.deepEqual(p2, { t: 'msg', room: '@bob,zed', offset: 1, ts: r.ts, from: 'Zed', text: 'psst', cmid: 'm-2' });
  await z.assertNoPush((m) => m.t === 'msg' || m.t === 'dm', 'msg or dm push to the sender');
  // The recipient is addressed case-insensitively; the room is reused and
  // there is no second dm push.
  const r2 = await z.req('dm', { to: 'bob', text: 'again' });
  assert.equal(r2.room, '@bob,zed');
  assert.equal(r2.offset, 2);
  const q = await b.nextPush();
  assert.equal(q.t, 'msg', `no second dm push: ${JSON.stringify(q)}`);
  assert.equal(q.text, 'again');
  // A dm from the other side lands in the same room.
  const r3 = await b.req('dm', { to: 'ZED', text: 'back' });
  assert.equal(r3.room, '@bob,zed');
  assert.equal(r3.offset, 3);
  assert.equal((await z.waitPush((m) => m.t === 'msg')).text, 'back');
});

test('dm room: both can send and read history; a third client cannot join, send or read it', async () => {
  const s = await start();
  const a = await JClient.open(s, { nick: 'alice' });
  const b = await JClient.open(s, { nick: 'bob' });
  const c = await JClient.open(s, { nick: 'carol' });
  const r = await a.req('dm', { to: 'bob', text: 'hi' });
  assert.equal(r.room, '@alice,bob');
  await b.waitPush((m) => m.t === 'msg');
  const sb = await b.req('send', { room: '@alice,bob', text: 'hello alice' });
  assert.equal(sb.ok, true, JSON.stringify(sb));
  assert.equal(sb.offset, 2);
  const m = await a.waitPush((x) => x.t === 'msg');
  assert.deepEqual(m, { t: 'msg', room: '@alice,bob', offset: 2, ts: sb.ts, from: 'bob', text: 'hello alice' });
  await a.sendOk('@alice,bob', 'and back');
  for (const x of [a, b]) {
    const h = await x.req('history', { room: '@alice,bob' });
    assert.equal(h.ok, true, JSON.stringify(h));
    assert.deepEqual(h.messages.map((y) => [y.from, y.text]), [['alice', 'hi'], ['bob', 'hello alice'], ['alice', 'and back']]);
  }
  assertErr(await c.join('@alice,bob'), 'bad_room');
  assertErr(await c.req('send', { room: '@alice,bob', text: 'x' }), 'bad_room');
  assertErr(await c.req('history', { room: '@alice,bob' }), 'bad_room');
  // A member may leave it and join it again.
  assert.equal((await b.req('leave', { room: '@alice,bob' })).ok, true);
  const rj = await b.join('@alice,bob');
  assert.equal(rj.ok, true, JSON.stringify(rj));
  assert.equal(rj.offset, 3);
});

test('dm errors: no_such_nick, dm to oneself (any case) is bad_request, bad_text, too_long', async () => {
  const s = await start();
  const a = await JClient.open(s, { nick: 'alice' });
  await JClient.open(s, { nick: 'bob' });
  assertErr(await a.req('dm', { to: 'nobody', text: 'x' }), 'no_such_nick');
  assertErr(await a.req('dm', { to: 'alice', text: 'x' }), 'bad_request');
  assertErr(await a.req('dm', { to: 'ALICE', text: 'x' }), 'bad_request');
  assertErr(await a.req('dm', { to: 'bob', text: '' }), 'bad_text');
  assertErr(await a.req('dm', { to: 'bob', text: 7 }), 'bad_text');
  assertErr(await a.req('dm', { to: 'bob', text: 'a'.repeat(4001) }), 'too_long');
  // A raw client's guest nick is not a connected nick for dm.
  await wsConnect(s.wsUrl('/ws/x'));
  assertErr(await a.req('dm', { to: 'guest-1', text: 'x' }), 'no_such_nick');
  // A disconnected nick is gone (the leave push shows the server saw it go).
  const c = await JClient.open(s, { nick: 'carol' });
  await c.joinOk('w');
  await a.joinOk('w');
  c.close(1000);
  await a.waitPush((m) => m.t === 'leave');
  assertErr(await a.req('dm', { to: 'carol', text: 'x' }), 'no_such_nick');
  // The refused dms created no rooms.
  const rooms = await a.req('rooms');
  assert.deepEqual(rooms.rooms.map((x) => `${x.room}:${x.members}`).sort(), ['w:1', 'x:1']);
});

test('dm: a dm refused with too_many_rooms (the recipient is full) leaves the sender out of the DM room', async () => {
  const s = await start(['--max-rooms', '2']);
  const b = await JClient.open(s, { nick: 'bob' });
  await b.joinOk('b1');
  await b.joinOk('b2');
  const c = await JClient.open(s, { nick: 'carol' });
  const r = await c.req('dm', { to: 'bob', text: 'hi' });
  assert.equal(r.ok, false, JSON.stringify(r));
  assertErr(r, 'too_many_rooms');
  // Nothing happened: carol is not in a half-open DM room.
  const sr = await c.req('send', { room: '@bob,carol', text: 'into the void' });
  assertErr(sr, 'not_joined');
});

test('dm: a party that changed its nick can still send to its DM room', async () => {
  const s = await start();
  const x = await JClient.open(s, { nick: 'xavier' });
  const y = await JClient.open(s, { nick: 'yan' });
  const d = await x.req('dm', { to: 'yan', text: 'secret' });
  assert.equal(d.room, '@xavier,yan');
  assert.equal((await x.req('nick', { nick: 'xavier2' })).ok, true);
  const r = await x.req('send', { room: '@xavier,yan', text: 'still me' });
  assert.equal(r.ok, true, `"after that it behaves like any room: send to it": ${JSON.stringify(r)}`);
  assert.equal((await y.waitPush((m) => m.t === 'msg' && m.text === 'still me')).from, 'xavier2');
});

test('dm: only the two can join; a newcomer taking a renamed party\'s old nick cannot join the DM room', async () => {
  const s = await start();
  const x = await JClient.open(s, { nick: 'xavier' });
  await JClient.open(s, { nick: 'yan' });
  await x.req('dm', { to: 'yan', text: 'secret' });
  assert.equal((await x.req('nick', { nick: 'xavier2' })).ok, true);
  const e = await JClient.open(s, { nick: 'xavier' });
  const j = await e.join('@xavier,yan');
  assert.equal(j.ok, false, `a third member in a DM room: ${JSON.stringify(j)}`);
  assertErr(j, 'bad_room');
});

test('storage: a send the store cannot take gets a "storage" error (reply, or push without id), not pushed', async () => {
  const saved = process.env.CHATHUB_TEST_MAX_PAGES;
  process.env.CHATHUB_TEST_MAX_PAGES = '30';
  let s;
  try {
    s = await start();
  } finally {
    if (saved === undefined) delete process.env.CHATHUB_TEST_MAX_PAGES;
    else process.env.CHATHUB_TEST_MAX_PAGES = saved;
  }
  const [a, b] = await pair(s);
  let fail = null;
  let stored = 0;
  for (let i = 0; i < 3000 && !fail; i++) {
    const r = await a.req('send', { room: 'r', text: `${i} ${'x'.repeat(3000)}`, cmid: `s${i}` });
    if (r.ok) stored++; else fail = r;
  }
  assert.ok(fail, 'the capped store filled up');
  assertErr(fail, 'storage');
  a.sendRaw({ op: 'send', room: 'r', text: 'y'.repeat(3000) });
  assertErrPush(await a.waitPush((m) => m.t === 'error'), 'storage');
  await b.barrier();
  assert.equal(b.takePushes((m) => m.t === 'msg').length, stored, 'only stored messages were pushed');
  assert.equal((await a.req('ping')).ok, true, 'the connection stays usable');
});
