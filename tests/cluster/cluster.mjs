// Several hubs, one chat (issue 11): three hubs share one redis-server and
// their clients must see one chat. Order, presence, nicks, resume, typing,
// DMs and raw mode across nodes; the members of a SIGKILLed hub leaving
// presence within its lease and those of a SIGTERMed one at once; a hub
// paused past its lease leaving and coming back; requests
// pipelined behind hello; rooms sharded over two redis-servers. Redis
// faults are in faults.mjs.
//
// One redis-server serves the whole file; each test is its own installation
// (its own --redis-prefix), so rooms, offsets and nicks never leak between
// tests. Hubs run with --node-lease 1.5 so that a dead node is swept in about
// two seconds instead of the default 30 + 10.
import { test, wsConnect } from '../integration/lib.mjs';
import { assertErr } from '../protocol/jclient.mjs';
import {
  JClient, Redis, assert, eventually, readAll, requireCluster, startHub, startHubs, metrics, metric,
} from './clib.mjs';

requireCluster();

let shared = null;
async function redis() {
  if (!shared || !shared.alive()) shared = await Redis.start();
  return shared;
}

const msgsOf = (c, room) => c.log.filter((e) => e.kind === 'push' && e.msg.t === 'msg' && e.msg.room === room)
  .map((e) => e.msg);

// A hello that is retried while the nick is still held (a release crosses
// Redis, so it may land just after the holder's leave push).
async function helloEventually(c, nick, fields = {}, timeoutMs = 5000) {
  return eventually(async () => {
    const r = await c.req('hello', { nick, ...fields });
    if (r.ok) return r;
    assertErr(r, 'nick_taken');
    return undefined;
  }, timeoutMs, `hello ${nick}`);
}

test('three hubs: JSON and raw clients in one room see every message in one gap-free offset order', async () => {
  const hubs = await startHubs(await redis(), 3);
  const room = 'order';
  const js = [];
  for (let i = 0; i < 3; i++) {
    const c = await JClient.open(hubs[i], { nick: `j${i + 1}` });
    await c.joinOk(room, { history: 0 });
    js.push(c);
  }
  // Raw clients on hubs 1 and 3: each announces itself, and every JSON client
  // must see both lines before the storm (raw lines cross nodes).
  const raws = [await wsConnect(hubs[0].wsUrl(`/ws/${room}`)), await wsConnect(hubs[2].wsUrl(`/ws/${room}`))];
  const rawGot = raws.map(() => []);
  raws.forEach((r, i) => r.ws.on('message', (d, bin) => { if (!bin) rawGot[i].push(d.toString('utf8')); }));
  const sentBy = new Map(); // text -> sender label
  for (let i = 0; i < raws.length; i++) {
    const text = `r${i + 1}-ready`;
    sentBy.set(text, `r${i + 1}`);
    await raws[i].send(text);
  }
  for (const c of js) {
    for (const t of ['r1-ready', 'r2-ready']) await c.waitPush((m) => m.t === 'msg' && m.text === t, 10000, t);
  }

  // The storm: 3 JSON senders pipelining 20 sends each, 2 raw senders 10
  // lines each, all at once.
  const K = 20;
  const R = 10;
  const acks = js.map(() => []);
  const pending = [];
  for (let i = 0; i < js.length; i++) {
    const ids = [];
    for (let k = 0; k < K; k++) {
      const text = `j${i + 1}-${k}`;
      sentBy.set(text, `j${i + 1}`);
      ids.push(js[i].fire('send', { room, text, cmid: `c-${i}-${k}` }));
    }
    pending.push(...ids.map((id) => js[i].reply(id, 15000).then((r) => {
      assert.equal(r.ok, true, `send: ${JSON.stringify(r)}`);
      acks[i].push(r);
    })));
  }
  for (let k = 0; k < R; k++) {
    for (let i = 0; i < raws.length; i++) {
      const text = `r${i + 1}-${k}`;
      sentBy.set(text, `r${i + 1}`);
      pending.push(raws[i].send(text));
    }
  }
  await Promise.all(pending);
  const N = 2 + js.length * K + raws.length * R;

  // Every JSON client: its pushes in strictly increasing offsets, and with
  // its own acks exactly the offsets 1..N.
  const byOffset = new Map();
  for (let i = 0; i < js.length; i++) {
    const c = js[i];
    await c.until(() => (msgsOf(c, room).length + acks[i].length >= N ? true : undefined), 15000,
      `j${i + 1}: ${N} messages`);
    const pushed = msgsOf(c, room);
    for (let k = 1; k < pushed.length; k++) {
      assert.ok(pushed[k].offset > pushed[k - 1].offset,
        `j${i + 1} got offsets in order: ${pushed[k - 1].offset} then ${pushed[k].offset}`);
    }
    const seen = [...pushed.map((m) => m.offset), ...acks[i].map((r) => r.offset)].sort((a, b) => a - b);
    assert.deepEqual(seen, Array.from({ length: N }, (_, k) => k + 1), `j${i + 1} saw offsets 1..${N} once each`);
    for (const m of pushed) {
      assert.notEqual(sentBy.get(m.text), `j${i + 1}`, 'no push of its own message');
      const prev = byOffset.get(m.offset);
      if (prev) assert.deepEqual([m.text, m.from], [prev.text, prev.from], `offset ${m.offset} is one message on every hub`);
      else byOffset.set(m.offset, m);
    }
  }
  // The JSON senders' own messages, by their acks.
  for (let i = 0; i < js.length; i++) {
    for (const r of acks[i]) {
      const m = byOffset.get(r.offset);
      assert.ok(m, `offset ${r.offset} (an ack of j${i + 1}) was pushed to the others`);
      assert.equal(m.from, `j${i + 1}`);
    }
  }
  assert.equal(byOffset.size, N);
  // (That two raw guests on two hubs get different nicks is checked in the
  // raw-mode test below.)
  // Each sender's messages keep its send order.
  for (const lbl of ['j1', 'j2', 'j3', 'r1', 'r2']) {
    const texts = [...byOffset.keys()].sort((a, b) => a - b).map((o) => byOffset.get(o).text)
      .filter((t) => sentBy.get(t) === lbl);
    const n = lbl.startsWith('j') ? K : R;
    assert.deepEqual(texts.filter((t) => !t.endsWith('-ready')),
      Array.from({ length: n }, (_, k) => `${lbl}-${k}`), `${lbl}'s messages are in its send order`);
  }

  // Raw clients: every message once; the others' in offset order.
  const order = [...byOffset.keys()].sort((a, b) => a - b).map((o) => byOffset.get(o).text);
  for (let i = 0; i < raws.length; i++) {
    const lbl = `r${i + 1}`;
    await eventually(() => (rawGot[i].length >= N ? true : undefined), 15000, `${lbl}: ${N} lines`);
    assert.equal(rawGot[i].length, N, `${lbl} got ${N} lines`);
    assert.deepEqual(rawGot[i].filter((t) => sentBy.get(t) !== lbl), order.filter((t) => sentBy.get(t) !== lbl),
      `${lbl} got the others' lines in offset order`);
    assert.deepEqual(rawGot[i].filter((t) => sentBy.get(t) === lbl).sort(), order.filter((t) => sentBy.get(t) === lbl).sort(),
      `${lbl} got each of its own lines once`);
  }

  // History read on hub 2 is the same sequence.
  const h = await readAll(js[1], room);
  assert.deepEqual(h.messages.map((m) => m.offset), Array.from({ length: N }, (_, k) => k + 1));
  assert.deepEqual(h.messages.map((m) => m.text), order);
  const rows = await metrics(hubs[1]);
  assert.equal(metric(rows, 'chathub_engine_ready'), 1, 'chathub_engine_ready is 1');
  assert.ok(metric(rows, 'chathub_engine_received_total') >= N - K, 'chathub_engine_received_total counts deliveries');
  assert.ok(metric(rows, 'chathub_engine_published_total') >= K, 'chathub_engine_published_total counts j2\'s sends');
}, { timeout: 40000 });

test('a nick taken on hub 1 is refused on hub 2 (nick_taken) and freed when its holder leaves', async () => {
  const [h1, h2] = await startHubs(await redis(), 2);
  const a = await JClient.open(h1, { nick: 'Alice' });
  const watcher = await JClient.open(h2, { nick: 'watcher' });
  await a.joinOk('nicks');
  await watcher.joinOk('nicks');
  const b = await JClient.open(h2);
  for (const nick of ['Alice', 'alice', 'ALICE']) assertErr(await b.req('hello', { nick }), 'nick_taken');
  const r = await b.req('hello', { nick: 'bob' });
  assert.equal(r.ok, true, JSON.stringify(r));
  assert.notEqual(r.client, a.id, 'client ids differ across hubs');
  assertErr(await b.req('nick', { nick: 'aLiCe' }), 'nick_taken');

  // A rename on hub 1 frees the old nick for hub 2.
  const rn = await a.req('nick', { nick: 'Alice2' });
  assert.equal(rn.ok, true, JSON.stringify(rn));
  const np = await watcher.waitPush((m) => m.t === 'nick');
  assert.deepEqual([np.room, np.old, np.new], ['nicks', 'Alice', 'Alice2']);
  const back = await eventually(async () => {
    const x = await b.req('nick', { nick: 'alice' });
    if (x.ok) return x;
    assertErr(x, 'nick_taken');
    return undefined;
  }, 5000, 'the old nick free on hub 2');
  assert.equal(back.nick, 'alice');
  assertErr(await a.req('nick', { nick: 'ALICE' }), 'nick_taken');

  // The holder disconnects: its leave crosses to hub 2, and its nick is free.
  a.close(1000);
  await a.waitClose();
  const lv = await watcher.waitPush((m) => m.t === 'leave');
  assert.deepEqual([lv.room, lv.nick], ['nicks', 'Alice2']);
  const c = await JClient.open(h2);
  const hr = await helloEventually(c, 'alice2');
  assert.equal(hr.nick, 'alice2');
});

test('presence: a join on hub 3 lists members of hubs 1 and 2, rooms counts all, join/nick/leave pushes cross', async () => {
  const [h1, h2, h3] = await startHubs(await redis(), 3);
  const a = await JClient.open(h1, { nick: 'pa' });
  const b = await JClient.open(h2, { nick: 'pb' });
  await a.joinOk('pr');
  await b.joinOk('pr');
  const jb = await a.waitPush((m) => m.t === 'join' && m.room === 'pr');
  assert.deepEqual([jb.nick, jb.client], ['pb', b.id], 'hub 1 got the join of hub 2');
  const c = await JClient.open(h3, { nick: 'pc' });
  const jr = await c.joinOk('pr');
  const members = [...jr.members].sort((x, y) => x.nick.localeCompare(y.nick));
  assert.deepEqual(members, [{ nick: 'pa', client: a.id }, { nick: 'pb', client: b.id }, { nick: 'pc', client: c.id }],
    `members across hubs: ${JSON.stringify(jr.members)}`);
  assert.equal(new Set([a.id, b.id, c.id]).size, 3, 'client ids are unique across hubs');
  for (const x of [a, b]) {
    const p = await x.waitPush((m) => m.t === 'join' && m.nick === 'pc');
    assert.deepEqual([p.room, p.client], ['pr', c.id]);
  }
  // A second room, only on hub 1, for the ordering of `rooms`.
  const d = await JClient.open(h1, { nick: 'pd' });
  await d.joinOk('small');
  for (const x of [a, c]) {
    const rr = await x.req('rooms');
    assert.equal(rr.ok, true);
    assert.deepEqual(rr.rooms, [{ room: 'pr', members: 3 }, { room: 'small', members: 1 }],
      `rooms on ${x === a ? 'hub 1' : 'hub 3'}: ${JSON.stringify(rr.rooms)}`);
  }

  const rn = await c.req('nick', { nick: 'pc2' });
  assert.equal(rn.ok, true);
  for (const x of [a, b]) {
    const p = await x.waitPush((m) => m.t === 'nick');
    assert.deepEqual([p.room, p.old, p.new], ['pr', 'pc', 'pc2']);
  }
  const lr = await c.req('leave', { room: 'pr' });
  assert.equal(lr.ok, true);
  for (const x of [a, b]) {
    const p = await x.waitPush((m) => m.t === 'leave');
    assert.deepEqual([p.room, p.nick, p.client], ['pr', 'pc2', c.id]);
  }
  const rr = await b.req('rooms');
  assert.deepEqual(rr.rooms.find((x) => x.room === 'pr'), { room: 'pr', members: 2 });
  // A join after that lists the two that stayed.
  const e = await JClient.open(h3, { nick: 'pe' });
  const je = await e.joinOk('pr');
  assert.deepEqual(je.members.map((m) => m.nick).sort(), ['pa', 'pb', 'pe']);
});

test('resume on another hub: hello.resume and join.since get exactly what was missed; a cmid resend deduplicates across hubs', async () => {
  const [h1, h2, h3] = await startHubs(await redis(), 3);
  const room = 'res';
  const a = await JClient.open(h1, { nick: 'ra' });
  await a.joinOk(room);
  let b = await JClient.open(h2, { nick: 'rb' });
  const jb = await b.joinOk(room);
  const c = await JClient.open(h2, { nick: 'rc' });
  await c.joinOk(room);
  await a.sendOk(room, 'before');
  const seen = await b.waitPush((m) => m.t === 'msg' && m.text === 'before');
  await c.waitPush((m) => m.t === 'msg' && m.text === 'before');
  const pos = { epoch: jb.epoch, offset: seen.offset };

  // b disconnects, c leaves the room; a sends five with cmids meanwhile.
  b.close(1000);
  await b.waitClose();
  await a.waitPush((m) => m.t === 'leave' && m.nick === 'rb');
  assert.equal((await c.req('leave', { room })).ok, true);
  const missed = [];
  for (let i = 0; i < 5; i++) missed.push(await a.sendOk(room, `missed-${i}`, { cmid: `ra-${i}` }));
  assert.deepEqual(missed.map((r) => r.offset), [1, 2, 3, 4, 5].map((k) => pos.offset + k));

  // b comes back on hub 3 with hello.resume.
  b = await JClient.open(h3);
  const hr = await helloEventually(b, 'rb', { resume: { [room]: pos } });
  const rr = hr.rooms[room];
  assert.ok(rr && !rr.error, `resume entry: ${JSON.stringify(rr)}`);
  assert.equal(rr.epoch, pos.epoch);
  assert.equal(rr.offset, pos.offset + 5);
  assert.deepEqual(rr.messages.map((m) => [m.offset, m.text]), missed.map((r, i) => [r.offset, `missed-${i}`]));
  assert.deepEqual(b.takePushes((m) => m.t === 'gap'), [], 'no gap on a resume within history');

  // c comes back on hub 1 with join.since.
  const c2 = await JClient.open(h1, { nick: 'rc2' });
  const js = await c2.joinOk(room, { since: pos });
  assert.deepEqual(js.messages.map((m) => m.text), missed.map((_, i) => `missed-${i}`));

  // What follows arrives once, in order, on both.
  const after = await a.sendOk(room, 'after');
  for (const x of [b, c2]) {
    const p = await x.waitPush((m) => m.t === 'msg' && m.text === 'after');
    assert.equal(p.offset, after.offset);
    await x.barrier();
    assert.deepEqual(msgsOf(x, room).map((m) => m.text), ['after'], 'no duplicate of a missed message');
  }

  // a's connection drops before it saw an ack; it resends on hub 2 with the
  // same cmid: the original offset, duplicate, no push, stored once.
  a.close(1000);
  await a.waitClose();
  const a2 = await JClient.open(h2);
  await helloEventually(a2, 'ra');
  await a2.joinOk(room);
  const dup = await a2.req('send', { room, text: 'missed-2', cmid: 'ra-2' });
  assert.equal(dup.ok, true, JSON.stringify(dup));
  assert.equal(dup.duplicate, true, `duplicate across hubs: ${JSON.stringify(dup)}`);
  assert.equal(dup.offset, missed[2].offset);
  const fresh = await a2.sendOk(room, 'last', { cmid: 'ra-new' });
  assert.equal(fresh.offset, after.offset + 1, 'the duplicate took no offset');
  for (const x of [b, c2]) {
    await x.waitPush((m) => m.t === 'msg' && m.text === 'last');
    assert.deepEqual(msgsOf(x, room).map((m) => m.text), ['after', 'last']);
  }
  const h = await readAll(b, room);
  assert.equal(h.messages.filter((m) => m.text === 'missed-2').length, 1);
  assert.deepEqual(h.messages.map((m) => m.offset), Array.from({ length: h.messages.length }, (_, k) => k + 1));
});

test('typing and DM invites reach the other party on another hub', async () => {
  const [h1, h2] = await startHubs(await redis(), 2);
  const a = await JClient.open(h1, { nick: 'Tia' });
  const b = await JClient.open(h2, { nick: 'tob' });
  await a.joinOk('ty');
  await b.joinOk('ty');
  a.sendRaw({ op: 'typing', room: 'ty' });
  const tp = await b.waitPush((m) => m.t === 'typing');
  assert.deepEqual([tp.room, tp.nick], ['ty', 'Tia']);
  assert.ok(Number.isInteger(tp.ttl) && tp.ttl > 0, `typing ttl: ${JSON.stringify(tp)}`);

  const dm = await a.req('dm', { to: 'TOB', text: 'psst', cmid: 'd-1' });
  assert.equal(dm.ok, true, JSON.stringify(dm));
  assert.equal(dm.room, '@tia,tob');
  const inv = await b.waitPush((m) => m.t === 'dm');
  assert.deepEqual([inv.room, inv.from], ['@tia,tob', 'Tia']);
  const m1 = await b.waitPush((m) => m.t === 'msg' && m.room === '@tia,tob');
  assert.deepEqual([m1.text, m1.from, m1.offset], ['psst', 'Tia', dm.offset]);
  await b.sendOk('@tia,tob', 'back');
  const m2 = await a.waitPush((m) => m.t === 'msg' && m.room === '@tia,tob');
  assert.deepEqual([m2.text, m2.from], ['back', 'tob']);
  assertErr(await a.req('dm', { to: 'nobody-here', text: 'x' }), 'no_such_nick');
  // The private room is private across hubs too.
  const c = await JClient.open(h2, { nick: 'eve' });
  assertErr(await c.join('@tia,tob'), 'bad_room');
});

test('raw mode across hubs: a raw line on hub 1 reaches raw and JSON members on hub 2, and back', async () => {
  const [h1, h2] = await startHubs(await redis(), 2);
  const j2 = await JClient.open(h2, { nick: 'jay' });
  await j2.joinOk('rawx', { history: 0 });
  const r2 = await wsConnect(h2.wsUrl('/ws/rawx'));
  const r1 = await wsConnect(h1.wsUrl('/ws/rawx'));
  const until = async (client, pred, what) => {
    for (let i = 0; i < 20; i++) {
      const m = await client.next(5000);
      if (pred(m)) return m;
    }
    throw new Error(`no ${what} in 20 messages`);
  };
  await r1.send('line from hub 1');
  const p = await j2.waitPush((m) => m.t === 'msg' && m.text === 'line from hub 1', 10000);
  assert.match(p.from, /^guest-/);
  await until(r2, (m) => !m.binary && m.text === 'line from hub 1', 'raw line on hub 2');
  await j2.sendOk('rawx', 'json from hub 2');
  await until(r1, (m) => !m.binary && m.text === 'json from hub 2', 'JSON text on hub 1 as bare text');
  await r2.send('line from hub 2');
  const q = await j2.waitPush((m) => m.t === 'msg' && m.text === 'line from hub 2');
  assert.notEqual(q.from, p.from, `two raw clients on two hubs have different guest nicks (${p.from}, ${q.from})`);
  await until(r1, (m) => !m.binary && m.text === 'line from hub 2', 'raw line of hub 2 on hub 1');
  // Binary frames are relayed to raw members only, across hubs too.
  await r1.send(Buffer.from([0, 1, 2, 250]), { binary: true });
  const bin = await until(r2, (m) => m.binary, 'a binary message on hub 2');
  assert.deepEqual([...bin.data], [0, 1, 2, 250]);
});

test('a SIGKILLed hub: its members leave presence on the others within the lease and its nicks are freed', async () => {
  const lease = 1.5;
  const [h1, h2, h3] = await startHubs(await redis(), 3, { lease });
  const a = await JClient.open(h1, { nick: 'ka' });
  const b = await JClient.open(h2, { nick: 'kb' });
  const x = await JClient.open(h3, { nick: 'kx' });
  const y = await JClient.open(h3, { nick: 'ky' });
  for (const c of [a, b, x, y]) await c.joinOk('kill');
  await x.joinOk('kill2');
  await a.joinOk('kill2');
  for (const c of [a, b]) await c.waitPush((m) => m.t === 'join' && m.nick === 'ky' && m.room === 'kill', 5000);
  const t0 = Date.now();
  assert.equal(await h3.stop('SIGKILL'), 'SIGKILL');
  // Swept within lease + lease/3 (docs/engine.md); the bound here leaves room
  // for a loaded machine, the figure is printed.
  const bound = 4 * lease * 1000;
  for (const c of [a, b]) {
    const gone = new Set();
    for (let i = 0; i < 2; i++) {
      const p = await c.waitPush((m) => m.t === 'leave' && m.room === 'kill', bound);
      gone.add(p.nick);
    }
    assert.deepEqual([...gone].sort(), ['kx', 'ky']);
  }
  const p2 = await a.waitPush((m) => m.t === 'leave' && m.room === 'kill2', bound);
  assert.equal(p2.nick, 'kx');
  console.log(`# members of the killed hub left presence after ${Date.now() - t0} ms (lease ${lease} s)`);
  const rr = await a.req('rooms');
  assert.deepEqual(rr.rooms.find((r) => r.room === 'kill'), { room: 'kill', members: 2 });
  const jr = await JClient.open(h2, { nick: 'kz' });
  const j = await jr.joinOk('kill');
  assert.deepEqual(j.members.map((m) => m.nick).sort(), ['ka', 'kb', 'kz']);
  // Its nicks are free on the survivors.
  const n = await JClient.open(h1);
  await helloEventually(n, 'KX', {}, bound);
  // The survivors still talk to each other.
  await a.sendOk('kill', 'still here');
  await b.waitPush((m) => m.t === 'msg' && m.text === 'still here');
  const rows = await metrics(h1);
  const swept = metric(rows, 'chathub_engine_swept_total') + metric(await metrics(h2), 'chathub_engine_swept_total');
  assert.ok(swept >= 1, `a survivor swept the dead node (swept_total ${swept})`);
}, { timeout: 30000 });

test('a hub stopped with SIGTERM: its members leave the others at once, and its clients resume on another hub', async () => {
  const [h1, h2] = await startHubs(await redis(), 2, { lease: 30 });
  const a = await JClient.open(h1, { nick: 'ta' });
  let b = await JClient.open(h2, { nick: 'tb' });
  await a.joinOk('drain');
  const jb = await b.joinOk('drain');
  const s1 = await a.sendOk('drain', 'one');
  await b.waitPush((m) => m.t === 'msg' && m.text === 'one');
  const t0 = Date.now();
  const stopped = h2.stop('SIGTERM', 15000);
  const bye = await b.waitPush((m) => m.t === 'bye', 5000);
  assert.ok(Number.isInteger(bye.retry_ms), JSON.stringify(bye));
  // With a 30 s lease, a leave within a few seconds comes from the drain,
  // not from the sweep.
  const lv = await a.waitPush((m) => m.t === 'leave' && m.nick === 'tb', 10000);
  assert.equal(lv.room, 'drain');
  console.log(`# the drained hub's member left hub 1 after ${Date.now() - t0} ms (lease 30 s)`);
  assert.equal(await stopped, 0, 'the draining hub exits 0');
  const s2 = await a.sendOk('drain', 'two');
  b = await JClient.open(h1);
  const hr = await helloEventually(b, 'tb', { resume: { drain: { epoch: jb.epoch, offset: s1.offset } } });
  assert.deepEqual(hr.rooms.drain.messages.map((m) => [m.offset, m.text]), [[s2.offset, 'two']]);
}, { timeout: 30000 });

test('requests pipelined after hello (hello, join, send without waiting) are answered in order, as on one hub', async () => {
  const [h1, h2] = await startHubs(await redis(), 2);
  const watcher = await JClient.open(h2, { nick: 'pw' });
  await watcher.joinOk('pipe');
  const c = await JClient.open(h1);
  const ids = [
    c.fire('hello', { nick: 'piper' }),
    c.fire('join', { room: 'pipe' }),
    c.fire('send', { room: 'pipe', text: 'pipelined' }),
  ];
  const [hello, join, send] = await Promise.all(ids.map((id) => c.reply(id)));
  assert.equal(hello.ok, true, `hello: ${JSON.stringify(hello)}`);
  assert.equal(join.ok, true, `join right after hello: ${JSON.stringify(join)}`);
  assert.equal(send.ok, true, `send right after join: ${JSON.stringify(send)}`);
  const order = c.log.filter((e) => e.kind === 'reply').map((e) => e.msg.id);
  assert.deepEqual(order, ids, 'replies in request order');
  const p = await watcher.waitPush((m) => m.t === 'msg' && m.text === 'pipelined');
  assert.equal(p.offset, send.offset);
});

test('two --redis shards: rooms spread over both servers, and every room still crosses hubs', async () => {
  const r2 = await Redis.start();
  const shards = [await redis(), r2];
  const prefix = `t${process.pid}-shard:`;
  const h1 = await startHub(shards, { node: 'n1', prefix });
  const h2 = await startHub(shards, { node: 'n2', prefix });
  assert.equal(metric(await metrics(h1), 'chathub_engine_shards'), 2);
  const a = await JClient.open(h1, { nick: 'sha' });
  const b = await JClient.open(h2, { nick: 'shb' });
  const rooms = Array.from({ length: 12 }, (_, i) => `shard-${i}`);
  for (const room of rooms) {
    await a.joinOk(room, { history: 0 });
    await b.joinOk(room, { history: 0 });
  }
  for (const room of rooms) {
    const s = await a.sendOk(room, `in ${room}`);
    assert.equal(s.offset, 1);
  }
  for (const room of rooms) {
    const p = await b.waitPush((m) => m.t === 'msg' && m.room === room);
    assert.equal(p.text, `in ${room}`);
  }
  // Each room's meta lives on exactly one server, and both servers hold some.
  const where = [];
  for (const sh of shards) {
    const ks = await sh.cmd('KEYS', `${prefix}r:*`);
    where.push(new Set(ks.map((k) => k.slice(`${prefix}r:`.length))));
  }
  for (const room of rooms) {
    assert.equal((where[0].has(room) ? 1 : 0) + (where[1].has(room) ? 1 : 0), 1, `${room} is on one shard`);
  }
  assert.ok(where[0].size > 0 && where[1].size > 0, `both shards hold rooms: ${where[0].size} and ${where[1].size}`);
  const rr = await b.req('rooms');
  assert.equal(rr.rooms.filter((r) => r.room.startsWith('shard-')).length, 12, `rooms lists the rooms of both shards: ${JSON.stringify(rr.rooms)}`);
});

test('a hub paused past its lease (SIGSTOP): the others push leave, and join again once it is back', async () => {
  const lease = 1.5;
  const [h1, h2] = await startHubs(await redis(), 2, { lease });
  const a = await JClient.open(h1, { nick: 'pza' });
  const x = await JClient.open(h2, { nick: 'pzx' });
  await a.joinOk('pause');
  await x.joinOk('pause');
  await a.waitPush((m) => m.t === 'join' && m.nick === 'pzx');
  process.kill(h2.proc.pid, 'SIGSTOP');
  let lv;
  try {
    lv = await a.waitPush((m) => m.t === 'leave' && m.nick === 'pzx', 4 * lease * 1000);
  } finally {
    process.kill(h2.proc.pid, 'SIGCONT');
  }
  assert.equal(lv.room, 'pause');
  // Back: its next lease refresh sees the lapse and writes its members and
  // nicks again, so the others see it join again; it still talks.
  const back = await a.waitPush((m) => m.t === 'join' && m.nick === 'pzx', 4 * lease * 1000);
  assert.equal(back.client, x.id);
  const n = await JClient.open(h1);
  assertErr(await n.req('hello', { nick: 'pzx' }), 'nick_taken');
  await x.sendOk('pause', 'I was asleep');
  await a.waitPush((m) => m.t === 'msg' && m.text === 'I was asleep');
  const rr = await a.req('rooms');
  assert.deepEqual(rr.rooms.find((r) => r.room === 'pause'), { room: 'pause', members: 2 });
}, { timeout: 30000 });
