// The outbox (public/outbox.js) and the request layer (public/protocol.js)
// under Node with a scripted socket: no lost or doubled sends across a
// reconnect, acks and history both settle, refusals are judged.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Outbox, MAX_TEMPORARY_TRIES } from '../../public/outbox.js';
import { Requests, backoff, resumeMap, retries, BACKOFF_CAP_MS } from '../../public/protocol.js';
import { newRoom, merge } from '../../public/model.js';

// A fake socket: frames the client sent, and whether it is open.
function socket() {
  const s = { open: true, sent: [] };
  s.send = (text) => { if (!s.open) return false; s.sent.push(JSON.parse(text)); return true; };
  return s;
}

// The page's send loop, reduced to its wire logic: every due item goes out
// as a send with its cmid; an ack settles it.
function flush(ob, reqs, sock, room) {
  for (const item of ob.due()) {
    item.inflight = true;
    item.status = 'sending';
    reqs.request(sock.send, { op: 'send', room: item.room, text: item.text, cmid: item.cmid }).then((rep) => {
      item.inflight = false;
      ob.settle(item.cmid);
      merge(room, [{ offset: rep.offset, ts: rep.ts, from: 'me', text: item.text, cmid: item.cmid }]);
    }, (err) => { item.inflight = false; ob.refused(item, err); });
  }
}
const tick = () => new Promise((r) => setImmediate(r));

test('a send lost with the connection is resent once with the same cmid, and held once', async () => {
  const ob = new Outbox('p');
  const reqs = new Requests();
  const room = newRoom('lobby');
  room.epoch = 'e1';
  let sock = socket();
  ob.add('lobby', 'one', true);
  ob.add('lobby', 'two', true);
  flush(ob, reqs, sock, room);
  assert.deepEqual(sock.sent.map((f) => f.cmid), ['p-1', 'p-2']);
  // The hub acks the first, then the connection drops before the second's ack.
  reqs.frame(JSON.stringify({ id: sock.sent[0].id, ok: true, offset: 1, ts: 5 }), () => {});
  await tick();
  sock.open = false;
  reqs.failAll();
  ob.disconnected();
  await tick();
  assert.deepEqual(ob.items.map((o) => [o.cmid, o.status]), [['p-2', 'waiting']]);
  // Typed while offline: waits too.
  ob.add('lobby', 'three', false);
  flush(ob, reqs, sock, room); // the socket is closed: every request fails at once
  await tick();
  assert.deepEqual(ob.items.map((o) => o.status), ['waiting', 'waiting']);
  // Reconnected: the resume page shows the hub did store "two" (cmid p-2).
  sock = socket();
  const settled = merge(room, [{ offset: 2, ts: 6, from: 'me', text: 'two', cmid: 'p-2' }]).cmids;
  for (const c of settled) ob.settle(c);
  flush(ob, reqs, sock, room);
  assert.deepEqual(sock.sent.map((f) => [f.text, f.cmid]), [['three', 'p-3']], 'only what was not stored goes out');
  reqs.frame(JSON.stringify({ id: sock.sent[0].id, ok: true, offset: 3, ts: 7 }), () => {});
  await tick();
  assert.equal(ob.items.length, 0);
  assert.deepEqual([...room.msgs.values()].map((m) => m.text), ['one', 'two', 'three']);
  // The hub's msg push of the same send (after the ack) does not double it.
  assert.equal(merge(room, [{ offset: 3, ts: 7, from: 'me', text: 'three', cmid: 'p-3' }]).added.length, 0);
  // An ack that comes after a history page settled the item is harmless.
  assert.equal(ob.settle('p-3'), false);
});

test('resend after a reconnect keeps the cmid (the hub dedupes)', async () => {
  const ob = new Outbox('q');
  const reqs = new Requests();
  const room = newRoom('lobby');
  let sock = socket();
  ob.add('lobby', 'hi', true);
  flush(ob, reqs, sock, room);
  sock.open = false;
  reqs.failAll();
  ob.disconnected();
  await tick();
  sock = socket();
  flush(ob, reqs, sock, room);
  assert.equal(sock.sent.length, 1);
  assert.equal(sock.sent[0].cmid, 'q-1');
  // The hub says duplicate: the same offset as the first attempt.
  reqs.frame(JSON.stringify({ id: sock.sent[0].id, ok: true, offset: 1, ts: 1, duplicate: true }), () => {});
  await tick();
  assert.equal(ob.items.length, 0);
  assert.equal(room.msgs.size, 1);
});

test('refusals: temporary ones retry a few times, not_joined waits, others fail', () => {
  const ob = new Outbox('r');
  const a = ob.add('lobby', 'x', true);
  for (let i = 1; i < MAX_TEMPORARY_TRIES; i++) assert.equal(ob.refused(a, { code: 'rate_limited' }), 'retry');
  assert.equal(ob.refused(a, { code: 'rate_limited', message: 'slow down' }), 'failed');
  assert.equal(a.error, 'slow down');
  const b = ob.add('lobby', 'y', true);
  assert.equal(ob.refused(b, { code: 'not_joined' }), 'wait');
  assert.equal(b.status, 'waiting');
  const c = ob.add('lobby', 'z', true);
  assert.equal(ob.refused(c, { code: 'too_long', message: 'too long' }), 'failed');
  assert.deepEqual(ob.due().map((o) => o.text), ['y'], 'failed items are not resent by themselves');
  // A server that says "do not come back" fails what waits.
  ob.failWaiting('disconnected by the server');
  assert.equal(b.status, 'failed');
});

test('requests match replies by id; pushes go to the push handler; unknown ids are ignored', async () => {
  const reqs = new Requests();
  const sock = socket();
  const pushes = [];
  const p1 = reqs.request(sock.send, { op: 'rooms' });
  const p2 = reqs.request(sock.send, { op: 'join', room: 'x' });
  reqs.frame(JSON.stringify({ id: sock.sent[1].id, ok: false, error: { code: 'bad_room', message: 'no' } }), () => {});
  reqs.frame(JSON.stringify({ t: 'msg', room: 'x' }), (m) => pushes.push(m));
  reqs.frame(JSON.stringify({ id: 999, ok: true }), () => {});
  reqs.frame('not json', () => {});
  reqs.frame(JSON.stringify({ id: sock.sent[0].id, ok: true, rooms: [] }), () => {});
  assert.deepEqual((await p1).rooms, []);
  await assert.rejects(p2, (e) => e.code === 'bad_room');
  assert.equal(pushes.length, 1);
  assert.equal(reqs.pending.size, 0);
});

test('backoff: full jitter under the cap, a bye delay wins; resume lists rooms with an epoch', () => {
  assert.equal(backoff(3, 1234), 1234);
  assert.equal(backoff(0, null, () => 1), 500);
  assert.equal(backoff(50, null, () => 0.999999) <= BACKOFF_CAP_MS, true);
  assert.equal(backoff(5, null, () => 0), 0);
  assert.equal(retries(1006), true);
  assert.equal(retries(1008), false);
  assert.equal(retries(4401), false);
  assert.equal(retries(4600), false);
  const a = newRoom('a'); a.epoch = 'e'; a.last = 7;
  const b = newRoom('b'); // never joined: no epoch
  const c = newRoom('@x,y'); c.epoch = 'f'; c.draft = true;
  assert.deepEqual(resumeMap([a, b, c]), { a: { epoch: 'e', offset: 7 } });
});
