// docs/protocol.md, rooms: join (reply, history, since, gap, errors),
// hello.resume, leave, presence pushes, big rooms (count), rooms.
import { test } from '../integration/lib.mjs';
import {
  assert, JClient, start, keys, assertErr, assertStored, openMany, sleep,
} from './jclient.mjs';

const JOIN_KEYS = ['id', 'ok', 'room', 'epoch', 'offset', 'messages', 'members'];

function member(c) { return { nick: c.nick, client: c.id }; }
const byClient = (a, b) => (a.client < b.client ? -1 : a.client > b.client ? 1 : 0);

test('join an empty room: room, epoch, offset 0, no messages, members = the joiner', async () => {
  const s = await start();
  const a = await JClient.open(s, { nick: 'alice' });
  const r = await a.join('fresh');
  keys(r, JOIN_KEYS, 'join reply');
  assert.equal(r.ok, true);
  assert.equal(r.room, 'fresh');
  assert.equal(typeof r.epoch, 'string');
  assert.ok(r.epoch.length > 0, 'epoch is not empty');
  assert.equal(r.offset, 0);
  assert.deepEqual(r.messages, []);
  assert.deepEqual(r.members, [member(a)]);
});

test('join: members include everyone with nick and client; the others get a join push', async () => {
  const s = await start();
  const a = await JClient.open(s, { nick: 'alice' });
  const b = await JClient.open(s, { nick: 'Bob' });
  const c = await JClient.open(s, { nick: 'carol' });
  await a.joinOk('r');
  const rb = await b.joinOk('r');
  assert.deepEqual([...rb.members].sort(byClient), [member(a), member(b)].sort(byClient));
  const pa = await a.nextPush();
  keys(pa, ['t', 'room', 'nick', 'client'], 'join push');
  assert.deepEqual(pa, { t: 'join', room: 'r', nick: 'Bob', client: b.id });
  const rc = await c.joinOk('r');
  assert.deepEqual([...rc.members].sort(byClient), [member(a), member(b), member(c)].sort(byClient));
  assert.deepEqual(await a.nextPush(), { t: 'join', room: 'r', nick: 'carol', client: c.id });
  assert.deepEqual(await b.nextPush(), { t: 'join', room: 'r', nick: 'carol', client: c.id });
  // The joiner gets no join push about itself; rooms do not leak.
  await c.assertNoPush((m) => m.t === 'join', 'join push to the joiner');
  const d = await JClient.open(s, { nick: 'dave' });
  await d.joinOk('other');
  await a.assertNoPush((m) => m.t === 'join', 'join push from another room');
  assert.equal(rb.epoch, rc.epoch, 'one epoch per room');
});

test('join history: default 50 newest oldest-first, 0, 100, 3; bad values are bad_request', async () => {
  const s = await start();
  const a = await JClient.open(s, { nick: 'alice' });
  await a.joinOk('h');
  for (let i = 1; i <= 120; i++) a.fire('send', { room: 'h', text: `t${i}` });
  await a.barrier();
  const last = await a.sendOk('h', 't121');
  assert.equal(last.offset, 121);
  const offsets = (r) => r.messages.map((m) => m.offset);
  const range = (lo, hi) => Array.from({ length: hi - lo + 1 }, (_, i) => lo + i);
  let n = 0;
  const join = async (fields) => {
    const c = await JClient.open(s, { nick: `j${n++}` });
    return c.join('h', fields);
  };
  const def = await join({});
  keys(def, JOIN_KEYS, 'join reply');
  assert.equal(def.offset, 121);
  assert.deepEqual(offsets(def), range(72, 121));
  for (const m of def.messages) assertStored(m, { from: 'alice', text: `t${m.offset}` });
  assert.deepEqual(offsets(await join({ history: 0 })), []);
  assert.deepEqual((await join({ history: 0 })).offset, 121, 'the position even without messages');
  assert.deepEqual(offsets(await join({ history: 3 })), [119, 120, 121]);
  assert.deepEqual(offsets(await join({ history: 100 })), range(22, 121));
  assert.deepEqual(offsets(await join({ history: null })), range(72, 121), 'null is the default');
  for (const bad of [101, -1, 1.5, '10', true, 1000]) {
    const r = await join({ history: bad });
    assertErr(r, 'bad_request');
  }
});

test('join since: exactly the messages after the offset; no gap when nothing was missed', async () => {
  const s = await start();
  const a = await JClient.open(s, { nick: 'alice' });
  const j = await a.joinOk('s');
  for (let i = 1; i <= 10; i++) await a.sendOk('s', `t${i}`, { cmid: `k${i}` });
  let n = 0;
  const joinSince = async (offset, extra = {}) => {
    const c = await JClient.open(s, { nick: `j${n++}` });
    const r = await c.join('s', { since: { epoch: j.epoch, offset }, ...extra });
    return { c, r };
  };
  for (const [since, expect] of [[7, [8, 9, 10]], [10, []], [0, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]], [9, [10]]]) {
    const { c, r } = await joinSince(since);
    keys(r, JOIN_KEYS, 'join reply');
    assert.equal(r.epoch, j.epoch);
    assert.equal(r.offset, 10);
    assert.deepEqual(r.messages.map((m) => m.offset), expect, `since ${since}`);
    for (const m of r.messages) assertStored(m, { from: 'alice', text: `t${m.offset}`, cmid: `k${m.offset}` });
    await c.assertNoPush((m) => m.t === 'gap', 'gap push');
  }
  // since wins over a small history.
  const { r } = await joinSince(2, { history: 1 });
  assert.deepEqual(r.messages.map((m) => m.offset), [3, 4, 5, 6, 7, 8, 9, 10]);
});

test('join since with another epoch: a gap push (reason epoch) precedes the reply with the newest page', async () => {
  const s = await start();
  const a = await JClient.open(s, { nick: 'alice' });
  const j = await a.joinOk('g');
  for (let i = 1; i <= 5; i++) await a.sendOk('g', `t${i}`);
  const b = await JClient.open(s, { nick: 'bob' });
  const before = b.log.length;
  const wrong = j.epoch === 'deadbeef' ? 'feedface' : 'deadbeef';
  const r = await b.join('g', { since: { epoch: wrong, offset: 3 } });
  keys(r, JOIN_KEYS, 'join reply');
  assert.equal(r.epoch, j.epoch);
  assert.equal(r.offset, 5);
  assert.deepEqual(r.messages.map((m) => m.offset), [1, 2, 3, 4, 5], 'the newest page');
  const seq = b.log.slice(before);
  assert.equal(seq[0].kind, 'push', `the gap push comes before the reply: ${seq.map((e) => e.raw).join(' | ')}`);
  const gap = seq[0].msg;
  // An epoch gap carries no range: offsets of the old stream mean nothing now.
  keys(gap, ['t', 'room', 'epoch', 'reason'], 'gap');
  assert.equal(gap.t, 'gap');
  assert.equal(gap.room, 'g');
  assert.equal(gap.epoch, j.epoch);
  assert.equal(gap.reason, 'epoch');
  assert.equal(seq[1].msg, r);
});

test('an expired gap names a non-empty range; an epoch gap names none', async () => {
  const s = await start(['--history', '3']);
  const a = await JClient.open(s, { nick: 'alice' });
  await a.joinOk('g');
  for (let i = 1; i <= 6; i++) await a.sendOk('g', `t${i}`);
  const b = await JClient.open(s, { nick: 'bob' });
  const j = await b.join('g', { since: { epoch: 'not-the-epoch', offset: 3 } });
  const gap = b.log.find((e) => e.kind === 'push' && e.msg.t === 'gap').msg;
  assert.equal(gap.reason, 'epoch');
  assert.ok(!('from' in gap) && !('to' in gap), JSON.stringify(gap));
  await b.req('leave', { room: 'g' });
  const before = b.log.length;
  await b.join('g', { since: { epoch: j.epoch, offset: 1 } });
  const gap2 = b.log.slice(before).find((e) => e.kind === 'push' && e.msg.t === 'gap').msg;
  assert.equal(gap2.reason, 'expired');
  assert.ok(gap2.from <= gap2.to, JSON.stringify(gap2));
  assert.deepEqual([gap2.from, gap2.to], [2, 3]);
});

test('join since past what is kept (--history 5): gap push (reason expired, from/to) then what is kept', async () => {
  const s = await start(['--history', '5']);
  const a = await JClient.open(s, { nick: 'alice' });
  const j = await a.joinOk('x');
  for (let i = 1; i <= 10; i++) await a.sendOk('x', `t${i}`);
  const b = await JClient.open(s, { nick: 'bob' });
  const before = b.log.length;
  const r = await b.join('x', { since: { epoch: j.epoch, offset: 2 } });
  keys(r, JOIN_KEYS, 'join reply');
  assert.equal(r.offset, 10);
  assert.deepEqual(r.messages.map((m) => m.offset), [6, 7, 8, 9, 10]);
  const seq = b.log.slice(before);
  assert.equal(seq[0].kind, 'push', `the gap push comes before the reply: ${seq.map((e) => e.raw).join(' | ')}`);
  assert.deepEqual(seq[0].msg, { t: 'gap', room: 'x', epoch: j.epoch, from: 3, to: 5, reason: 'expired' });
  // Nothing missed that is not kept: no gap.
  const c = await JClient.open(s, { nick: 'carol' });
  const rc = await c.join('x', { since: { epoch: j.epoch, offset: 5 } });
  assert.deepEqual(rc.messages.map((m) => m.offset), [6, 7, 8, 9, 10]);
  await c.assertNoPush((m) => m.t === 'gap', 'gap push');
});

test('hello resume: rooms answered like join since; failing entries carry an error', async () => {
  const s = await start();
  const a = await JClient.open(s, { nick: 'alice' });
  const j = await a.joinOk('lobby');
  for (let i = 1; i <= 4; i++) await a.sendOk('lobby', `t${i}`);
  const b = await JClient.open(s);
  const r = await b.req('hello', {
    nick: 'bob',
    resume: { 'bad room': { epoch: j.epoch, offset: 0 }, lobby: { epoch: j.epoch, offset: 2 } },
  });
  assert.equal(r.ok, true, JSON.stringify(r));
  keys(r.rooms, ['lobby', 'bad room'], 'rooms');
  keys(r.rooms.lobby, ['epoch', 'offset', 'messages', 'members'], 'resumed room');
  assert.equal(r.rooms.lobby.epoch, j.epoch);
  assert.equal(r.rooms.lobby.offset, 4);
  assert.deepEqual(r.rooms.lobby.messages.map((m) => m.offset), [3, 4]);
  for (const m of r.rooms.lobby.messages) assertStored(m, { from: 'alice', text: `t${m.offset}` });
  assert.deepEqual([...r.rooms.lobby.members].sort(byClient),
    [member(a), { nick: 'bob', client: r.client }].sort(byClient));
  keys(r.rooms['bad room'], ['error'], 'failed entry');
  keys(r.rooms['bad room'].error, ['code', 'message'], 'error');
  assert.equal(r.rooms['bad room'].error.code, 'bad_room');
  assert.deepEqual(await a.nextPush(), { t: 'join', room: 'lobby', nick: 'bob', client: r.client });
  // Bob is in the room now: he can send, and alice gets it.
  await b.sendOk('lobby', 'back');
  assert.equal((await a.nextPush()).text, 'back');
  // A malformed position; another epoch (gap push before the reply).
  const c = await JClient.open(s);
  const rc = await c.req('hello', { nick: 'carol', resume: { lobby: { epoch: 5 } } });
  assert.equal(rc.ok, true);
  keys(rc.rooms, ['lobby'], 'rooms');
  keys(rc.rooms.lobby, ['error'], 'failed entry');
  assert.equal(rc.rooms.lobby.error.code, 'bad_request');
  const d = await JClient.open(s);
  const n = d.log.length;
  const rd = await d.req('hello', { nick: 'dave', resume: { lobby: { epoch: 'other', offset: 2 } } });
  assert.deepEqual(rd.rooms.lobby.messages.map((m) => m.offset), [1, 2, 3, 4, 5], 'the newest page');
  const gapAt = d.log.findIndex((e, i) => i >= n && e.kind === 'push' && e.msg.t === 'gap');
  assert.ok(gapAt >= 0 && gapAt < d.log.findIndex((e) => e.msg === rd), 'a gap push precedes the reply');
  assert.equal(d.log[gapAt].msg.reason, 'epoch');
  // resume must be an object.
  const e = await JClient.open(s);
  assertErr(await e.req('hello', { nick: 'eve', resume: [] }), 'bad_request');
});

test('hello resume: a failing entry after a resumed room is in rooms too (not an error push)', async () => {
  const s = await start();
  const a = await JClient.open(s, { nick: 'alice' });
  const j = await a.joinOk('lobby');
  await a.sendOk('lobby', 't1');
  const b = await JClient.open(s);
  const r = await b.req('hello', {
    nick: 'bob',
    resume: { lobby: { epoch: j.epoch, offset: 0 }, 'bad room': { epoch: j.epoch, offset: 0 } },
  });
  assert.equal(r.ok, true, JSON.stringify(r));
  const pushes = b.takePushes((m) => m.t === 'error');
  keys(r.rooms, ['lobby', 'bad room'], `rooms (error pushes instead: ${JSON.stringify(pushes)})`);
  assert.equal(r.rooms['bad room'].error.code, 'bad_room');
});

test('hello resume over max_rooms: every entry is answered (the extra ones with too_many_rooms)', async () => {
  const s = await start(['--max-rooms', '2']);
  const a = await JClient.open(s);
  const pos = { epoch: 'e', offset: 0 };
  const r = await a.req('hello', { nick: 'alice', resume: { a1: pos, a2: pos, a3: pos } });
  assert.equal(r.ok, true, JSON.stringify(r));
  await a.barrier();
  const errs = a.takePushes((m) => m.t === 'error');
  keys(r.rooms, ['a1', 'a2', 'a3'], `rooms (error pushes: ${JSON.stringify(errs)})`);
  keys(r.rooms.a3, ['error'], 'the entry over the limit');
  assert.equal(r.rooms.a3.error.code, 'too_many_rooms');
});

test('bad_room: bad characters, empty, 65 characters, another pair\'s DM room; 64 is fine', async () => {
  const s = await start();
  const a = await JClient.open(s, { nick: 'alice' });
  for (const room of ['bad room', 'a/b', 'a\\b', 'ü', '', 'a'.repeat(65), 'room!', 'a,b', '@bob,carol', '@bob',
    '#x', 'lobby\n']) {
    const r = await a.join(room);
    assert.equal(r.ok, false, `${JSON.stringify(room)} must be refused: ${JSON.stringify(r)}`);
    assertErr(r, 'bad_room');
  }
  const ok = await a.join('A-z_0.9:' + 'x'.repeat(56));
  assert.equal(ok.ok, true, JSON.stringify(ok));
  assert.equal(ok.room.length, 64);
  // The other ops check the name too.
  assertErr(await a.req('leave', { room: 'bad room' }), 'bad_room');
  assertErr(await a.req('send', { room: 'bad room', text: 'x' }), 'bad_room');
  assertErr(await a.req('history', { room: 'bad room' }), 'bad_room');
  assertErr(await a.req('leave', { room: '@bob,carol' }), 'bad_room');
});

test('already_joined; too_many_rooms with --max-rooms 3 (and room again after a leave)', async () => {
  const s = await start(['--max-rooms', '3']);
  const a = await JClient.open(s, { nick: 'alice' });
  assert.equal(a.hello.limits.max_rooms, 3);
  await a.joinOk('r1');
  assertErr(await a.join('r1'), 'already_joined');
  await a.joinOk('r2');
  await a.joinOk('r3');
  assertErr(await a.join('r4'), 'too_many_rooms');
  assertErr(await a.join('r1'), 'already_joined');
  assert.equal((await a.req('leave', { room: 'r2' })).ok, true);
  await a.joinOk('r4');
  assertErr(await a.join('r5'), 'too_many_rooms');
  // The refused joins left no trace.
  const rooms = await a.req('rooms');
  assert.deepEqual(rooms.rooms.map((x) => x.room).sort(), ['r1', 'r3', 'r4']);
});

test('leave: ok reply, leave push to the others, not_joined; no more messages after', async () => {
  const s = await start();
  const a = await JClient.open(s, { nick: 'alice' });
  const b = await JClient.open(s, { nick: 'bob' });
  await a.joinOk('r');
  await b.joinOk('r');
  await a.waitPush((m) => m.t === 'join');
  const r = await b.req('leave', { room: 'r' });
  keys(r, ['id', 'ok'], 'leave reply');
  assert.equal(r.ok, true);
  const p = await a.nextPush();
  keys(p, ['t', 'room', 'nick', 'client'], 'leave push');
  assert.deepEqual(p, { t: 'leave', room: 'r', nick: 'bob', client: b.id });
  assertErr(await b.req('leave', { room: 'r' }), 'not_joined');
  assertErr(await b.req('leave', { room: 'never' }), 'not_joined');
  assertErr(await b.req('send', { room: 'r', text: 'x' }), 'not_joined');
  await a.sendOk('r', 'after');
  await b.assertNoPush((m) => m.t === 'msg', 'msg after leave');
  // Without id: no reply, the push still goes out.
  await b.joinOk('r');
  await a.waitPush((m) => m.t === 'join');
  b.sendRaw({ op: 'leave', room: 'r' });
  assert.deepEqual(await a.nextPush(), { t: 'leave', room: 'r', nick: 'bob', client: b.id });
  const n = b.log.length;
  await b.barrier();
  assert.equal(b.log.slice(n).filter((e) => e.kind === 'reply').length, 1, 'only the barrier is answered');
});

test('disconnect: a leave push in every room the client was in', async () => {
  const s = await start();
  const a = await JClient.open(s, { nick: 'alice' });
  const b = await JClient.open(s, { nick: 'bob' });
  const c = await JClient.open(s, { nick: 'carol' });
  await a.joinOk('r1');
  await a.joinOk('r2');
  await b.joinOk('r1');
  await c.joinOk('r2');
  await b.barrier(); await c.barrier();
  b.takePushes(); c.takePushes();
  a.terminate(); // no close handshake
  assert.deepEqual(await b.nextPush(), { t: 'leave', room: 'r1', nick: 'alice', client: a.id });
  assert.deepEqual(await c.nextPush(), { t: 'leave', room: 'r2', nick: 'alice', client: a.id });
});

test('rooms: public rooms with member counts, largest first; DM rooms and empty rooms not listed', async () => {
  const s = await start();
  const [a, b, c, d] = await openMany(s, 4, 'u');
  await a.joinOk('small');
  for (const x of [a, b, c]) await x.joinOk('big');
  for (const x of [b, d]) await x.joinOk('mid');
  await d.joinOk('gone');
  await d.req('leave', { room: 'gone' });
  const dm = await a.req('dm', { to: b.nick, text: 'hi' });
  assert.equal(dm.ok, true, JSON.stringify(dm));
  const r = await c.req('rooms');
  keys(r, ['id', 'ok', 'rooms'], 'rooms reply');
  assert.equal(r.ok, true);
  for (const x of r.rooms) keys(x, ['room', 'members'], 'rooms entry');
  assert.deepEqual(r.rooms, [{ room: 'big', members: 3 }, { room: 'mid', members: 2 }, { room: 'small', members: 1 }]);
});

test('rooms lists at most 200 rooms, largest first', async () => {
  const s = await start(['--max-rooms', '300']);
  const a = await JClient.open(s, { nick: 'alice' });
  const b = await JClient.open(s, { nick: 'bob' });
  for (let i = 0; i < 205; i++) a.fire('join', { room: `r${String(i).padStart(3, '0')}` });
  await a.barrier();
  await b.joinOk('r204');
  await b.joinOk('r100');
  const r = await b.req('rooms');
  assert.equal(r.rooms.length, 200);
  assert.deepEqual(r.rooms.slice(0, 2).map((x) => x.members), [2, 2]);
  assert.deepEqual(r.rooms.slice(0, 2).map((x) => x.room).sort(), ['r100', 'r204']);
  assert.ok(r.rooms.slice(2).every((x) => x.members === 1));
});

test('over 200 members: the join reply has count; presence becomes coalesced count pushes', async () => {
  const s = await start(['--max-conns-per-ip', '0']);
  const obs = await JClient.open(s, { nick: 'observer' });
  await obs.joinOk('crowd');
  // 199 more: 200 members, presence still per member.
  const many = await openMany(s, 199, 'm', { batch: 40 });
  for (let i = 0; i < many.length; i += 40) await Promise.all(many.slice(i, i + 40).map((c) => c.joinOk('crowd')));
  await obs.until(() => (obs.pushes.filter((m) => m.t === 'join').length === 199 ? true : undefined), 10000,
    '199 join pushes');
  obs.takePushes();
  const late = await openMany(s, 5, 'late');
  // The 201st: count instead of members.
  const r201 = await late[0].join('crowd');
  keys(r201, ['id', 'ok', 'room', 'epoch', 'offset', 'messages', 'count'], 'join reply in a big room');
  assert.equal(r201.count, 201);
  const t0 = Date.now();
  // Four more at once.
  const rs = await Promise.all(late.slice(1).map((c) => c.join('crowd')));
  // Each reply counts the room when it is sent: at least as many as had
  // joined by then.
  for (const x of rs) {
    keys(x, ['id', 'ok', 'room', 'epoch', 'offset', 'messages', 'count'], 'join reply in a big room');
    assert.ok(x.count >= 202 && x.count <= 205, `count ${x.count}`);
  }
  assert.equal(rs[3].count, 205);
  // The observer sees count pushes only, the last one saying 205, at most
  // one per second.
  const counts = [];
  for (;;) {
    const p = await obs.nextPush(3000);
    assert.equal(p.t, 'count', `only count pushes in a big room: ${JSON.stringify(p)}`);
    keys(p, ['t', 'room', 'members'], 'count push');
    assert.equal(p.room, 'crowd');
    counts.push({ p, at: Date.now() });
    if (p.members === 205) break;
  }
  assert.ok(counts.length <= 2, `coalesced: ${counts.map((x) => x.p.members)}`);
  for (let i = 1; i < counts.length; i++) {
    assert.ok(counts[i].at - counts[i - 1].at >= 800, 'at most one count push per second');
  }
  assert.ok(Date.now() - t0 < 3000, 'the coalesced count arrives within about a second');
  const rooms = await obs.req('rooms');
  assert.deepEqual(rooms.rooms, [{ room: 'crowd', members: 205 }]);
  // Leaving: still count pushes, no leave pushes, while over 200.
  await sleep(1100);
  obs.takePushes();
  late[4].terminate();
  late[3].close(1000);
  const p = await obs.nextPush(3000);
  assert.equal(p.t, 'count', JSON.stringify(p));
  let last = p;
  while (last.members !== 203) {
    last = await obs.nextPush(3000);
    assert.equal(last.t, 'count', JSON.stringify(last));
  }
  // A drain with 203 connected clients: each gets bye, then close 1012.
  const alive = [obs, ...many, ...late.slice(0, 3)];
  assert.equal(await s.stop('SIGTERM', 15000), 0, 'clean exit after the drain');
  for (const c of alive) {
    const info = await c.waitClose(5000);
    assert.equal(info.code, 1012);
    assert.equal(c.log.filter((e) => e.kind === 'push' && e.msg.t === 'bye').length, 1, 'one bye each');
  }
});
