// Redis faults under running hubs (issue 11, "Faults"): Redis absent at
// start, redis-server SIGKILLed and restarted on the same port with its
// append-only file, Redis losing its data (a restart without the file,
// FLUSHALL), a stalled Redis (SIGSTOP) and a full one (maxmemory with
// noeviction). Each test starts its own redis-server, which the test signals
// by PID; the hubs are the real binary with --redis.
import { test, wsConnect } from '../integration/lib.mjs';
import { assertErr } from '../protocol/jclient.mjs';
import {
  JClient, Redis, assert, eventually, freePort, health, metric, metrics, readAll, requireCluster,
  sleep, startHub, startHubs, waitHealth,
} from './clib.mjs';

requireCluster();

test('Redis not reachable at start: the hub starts, /healthz 503 names the reason, ready once Redis appears', async () => {
  const port = await freePort();
  const hub = await startHub(`redis://127.0.0.1:${port}`, { node: 'n1', ready: false });
  const h = await health(hub);
  assert.equal(h.status, 503, `/healthz before Redis: ${h.status} ${h.body}`);
  assert.match(h.body, new RegExp(`${port}|refused|connect`, 'i'), `the reason names the problem: ${JSON.stringify(h.body)}`);
  assert.doesNotMatch(h.body, /^ok/);
  const rows = await metrics(hub);
  assert.equal(metric(rows, 'chathub_engine_ready'), 0, 'chathub_engine_ready is 0');
  // WebSocket clients are served meanwhile; a send cannot be sequenced.
  const early = await JClient.open(hub);
  assert.equal(early.welcome.t, 'welcome');

  // Redis appears on that port: the hub connects within its backoff (at most 5 s).
  await sleep(300);
  const redis = await Redis.start({ port });
  await waitHealth(hub, 200, 8000);
  assert.equal(metric(await metrics(hub), 'chathub_engine_ready'), 1);
  const hub2 = await startHub(redis, { node: 'n2' });
  const a = await JClient.open(hub, { nick: 'early' });
  const b = await JClient.open(hub2, { nick: 'late' });
  await a.joinOk('up');
  await b.joinOk('up');
  const s = await a.sendOk('up', 'after redis came');
  assert.equal(s.offset, 1);
  const p = await b.waitPush((m) => m.t === 'msg');
  assert.deepEqual([p.text, p.offset], ['after redis came', 1]);
});

test('redis-server SIGKILLed and restarted with its AOF: clients stay, sends get unavailable, nothing acked is lost', async () => {
  const redis = await Redis.start({ aof: true });
  const [h1, h2] = await startHubs(redis, 2);
  const room = 'outage';
  const a = await JClient.open(h1, { nick: 'oa' });
  const b = await JClient.open(h2, { nick: 'ob' });
  await a.joinOk(room, { history: 0 });
  await b.joinOk(room, { history: 0 });
  const raw = await wsConnect(h1.wsUrl(`/ws/${room}`));
  const acked = [];
  for (let i = 0; i < 5; i++) acked.push(await a.sendOk(room, `acked-${i}`, { cmid: `oa-${i}` }));
  await b.waitPush((m) => m.t === 'msg' && m.text === 'acked-4');
  const before = await metrics(h1);

  await redis.kill('SIGKILL');
  await waitHealth(h1, 503, 5000);
  const down = await health(h2);
  // A send during the outage is answered at once with `unavailable`.
  const t0 = Date.now();
  const r = await a.req('send', { room, text: 'during', cmid: 'oa-during' }, 2000);
  const ms = Date.now() - t0;
  assertErr(r, 'unavailable');
  console.log(`# a send during the outage was refused after ${ms} ms; hub 2 health: ${down.status} ${JSON.stringify(down.body)}`);
  // A raw line during the outage is dropped and counted.
  await raw.send('raw during the outage');
  const dropped = await eventually(async () => {
    const v = metric(await metrics(h1), 'chathub_engine_dropped_total');
    return v > metric(before, 'chathub_engine_dropped_total') + 1 ? v : undefined;
  }, 3000, 'chathub_engine_dropped_total counts the refused send and the raw line');
  assert.ok(dropped >= 2);
  const during = await metrics(h1);
  assert.ok(metric(during, 'chathub_unavailable_total') > (metric(before, 'chathub_unavailable_total') || 0),
    'chathub_unavailable_total counts the refused send');
  assert.ok(metric(during, 'chathub_raw_dropped_total') > (metric(before, 'chathub_raw_dropped_total') || 0),
    'chathub_raw_dropped_total counts the dropped raw line');
  // The WebSocket clients stay connected and served.
  for (const c of [a, b]) {
    assert.equal(c.closeInfo, null, 'still connected');
    await c.barrier();
  }
  assert.equal(raw.closeInfo, null, 'the raw client is still connected');

  // Redis stays away long enough for the hubs' reconnect backoff to grow
  // (100 ms doubling), then comes back on the same port with its AOF.
  await sleep(1500);
  await redis.restart();
  const t1 = Date.now();
  await waitHealth(h1, 200, 10000);
  await waitHealth(h2, 200, 10000);
  console.log(`# both hubs ready ${Date.now() - t1} ms after Redis came back`);
  // The client resends with its cmid: it is sequenced after the acked ones.
  const again = await eventually(async () => {
    const x = await a.req('send', { room, text: 'during', cmid: 'oa-during' });
    if (x.ok) return x;
    assertErr(x, 'unavailable');
    return undefined;
  }, 5000, 'a send after Redis came back');
  assert.equal(again.offset, 6, `nothing acked was lost and nothing unacked stored: ${JSON.stringify(again)}`);
  const p = await b.waitPush((m) => m.t === 'msg' && m.text === 'during', 5000);
  assert.equal(p.offset, 6);
  await b.sendOk(room, 'from hub 2 after');
  await a.waitPush((m) => m.t === 'msg' && m.text === 'from hub 2 after', 5000);
  for (let k = 0; k < 20; k++) {
    const m = await raw.next(5000);
    if (m.text === 'from hub 2 after') break;
    assert.ok(k < 19, 'the raw client gets messages again');
  }
  assert.deepEqual(b.takePushes((m) => m.t === 'gap'), [], 'no gap: Redis kept its data');
  const h = await readAll(b, room);
  assert.deepEqual(h.messages.slice(0, 5).map((m) => [m.offset, m.text]), acked.map((x, i) => [x.offset, `acked-${i}`]),
    'every message acked before the kill is in history');
  assert.ok(!h.messages.some((m) => m.text === 'raw during the outage'), 'the dropped raw line was not stored');
  const after = await metrics(h1);
  assert.ok(metric(after, 'chathub_engine_reconnects_total') > metric(before, 'chathub_engine_reconnects_total'),
    'chathub_engine_reconnects_total grew');
}, { timeout: 40000 });

test('Redis lost its data (restart without the AOF, FLUSHALL): clients get gap with reason epoch', async () => {
  const redis = await Redis.start({ aof: true });
  const [h1, h2] = await startHubs(redis, 2);
  const room = 'lost';
  const a = await JClient.open(h1, { nick: 'la' });
  const b = await JClient.open(h2, { nick: 'lb' });
  const ja = await a.joinOk(room);
  await b.joinOk(room);
  for (let i = 0; i < 3; i++) await a.sendOk(room, `old-${i}`);
  await b.waitPush((m) => m.t === 'msg' && m.text === 'old-2');
  const epoch1 = ja.epoch;

  // A restart in an empty directory: the room is gone; on resubscribing the
  // hubs see a new epoch and tell their members.
  await redis.kill('SIGKILL');
  await redis.restart({ fresh: true });
  await waitHealth(h1, 200, 10000);
  await waitHealth(h2, 200, 10000);
  const gaps1 = [];
  for (const c of [a, b]) {
    const g = await c.waitPush((m) => m.t === 'gap' && m.room === room, 10000, 'gap epoch after the restart');
    assert.equal(g.reason, 'epoch', JSON.stringify(g));
    assert.notEqual(g.epoch, epoch1);
    gaps1.push(g.epoch);
  }
  assert.equal(gaps1[0], gaps1[1], 'both hubs name the same new epoch');
  const s = await eventually(async () => {
    const x = await a.req('send', { room, text: 'new-0' });
    if (x.ok) return x;
    assertErr(x, 'unavailable');
    return undefined;
  }, 5000, 'a send after the restart');
  assert.equal(s.offset, 1, 'offsets start again');
  const p = await b.waitPush((m) => m.t === 'msg' && m.text === 'new-0');
  assert.equal(p.offset, 1);
  // A client resuming with the old position learns it too.
  const c = await JClient.open(h2, { nick: 'lc' });
  const jc = await c.joinOk(room, { since: { epoch: epoch1, offset: 3 } });
  const gc = c.takePushes((m) => m.t === 'gap');
  assert.deepEqual(gc.map((g) => [g.room, g.reason, g.epoch]), [[room, 'epoch', gaps1[0]]]);
  assert.equal(jc.epoch, gaps1[0]);

  // FLUSHALL under running hubs: the next message starts a new epoch, and
  // the members on both hubs get gap epoch before it.
  assert.equal(await redis.cmd('FLUSHALL'), 'OK');
  const s2 = await eventually(async () => {
    const x = await b.req('send', { room, text: 'after-flush' });
    if (x.ok) return x;
    assertErr(x, 'unavailable');
    return undefined;
  }, 5000, 'a send after FLUSHALL');
  assert.equal(s2.offset, 1);
  for (const x of [a, c]) {
    const g = await x.waitPush((m) => m.t === 'gap' && m.room === room, 10000, 'gap epoch after FLUSHALL');
    assert.equal(g.reason, 'epoch');
    assert.notEqual(g.epoch, gaps1[0]);
    const m = await x.waitPush((mm) => mm.t === 'msg' && mm.text === 'after-flush');
    assert.equal(m.offset, 1);
  }
}, { timeout: 40000 });

test('a stalled redis-server (SIGSTOP): a send is answered unavailable within the engine timeout, never a hang', async () => {
  const redis = await Redis.start({ aof: true });
  const [h1, h2] = await startHubs(redis, 2);
  const room = 'stall';
  const a = await JClient.open(h1, { nick: 'sa' });
  const b = await JClient.open(h2, { nick: 'sb' });
  await a.joinOk(room, { history: 0 });
  await b.joinOk(room, { history: 0 });
  await a.sendOk(room, 'before', { cmid: 's-0' });
  redis.signal('SIGSTOP');
  try {
    // The engine gives a request 5 s (docs/engine.md), then drops the
    // connection and fails what is in flight.
    const t0 = Date.now();
    const r = await a.req('send', { room, text: 'stalled', cmid: 's-1' }, 9000);
    assertErr(r, 'unavailable');
    console.log(`# a send to a stopped Redis was refused after ${Date.now() - t0} ms`);
    assert.equal(a.closeInfo, null, 'the client stays connected');
    await a.barrier();
    const h = await health(h1);
    assert.equal(h.status, 503, `/healthz while Redis is stopped: ${h.status} ${h.body}`);
  } finally {
    redis.signal('SIGCONT');
  }
  await waitHealth(h1, 200, 12000);
  await waitHealth(h2, 200, 12000);
  const again = await eventually(async () => {
    const x = await a.req('send', { room, text: 'stalled', cmid: 's-1' });
    if (x.ok) return x;
    assertErr(x, 'unavailable');
    return undefined;
  }, 5000, 'a send after SIGCONT');
  const p = await b.waitPush((m) => m.t === 'msg' && m.text === 'stalled', 5000);
  assert.equal(p.offset, again.offset);
  const hist = await readAll(b, room);
  assert.equal(hist.messages.filter((m) => m.text === 'stalled').length, 1, 'stored once');
}, { timeout: 40000 });

test('a full Redis (maxmemory with noeviction): sends get unavailable, nothing is evicted, and they work once there is room', async () => {
  const redis = await Redis.start({ aof: true });
  const [h1, h2] = await startHubs(redis, 2);
  const a = await JClient.open(h1, { nick: 'fa' });
  const b = await JClient.open(h2, { nick: 'fb' });
  await a.joinOk('full', { history: 0 });
  await b.joinOk('full', { history: 0 });
  const first = await a.sendOk('full', 'before full', { cmid: 'f-0' });
  assert.equal(await redis.cmd('CONFIG', 'SET', 'maxmemory', '1'), 'OK');
  try {
    assertErr(await a.req('send', { room: 'full', text: 'while full', cmid: 'f-1' }), 'unavailable');
    assert.equal(a.closeInfo, null);
  } finally {
    assert.equal(await redis.cmd('CONFIG', 'SET', 'maxmemory', '0'), 'OK');
  }
  const again = await a.sendOk('full', 'while full', { cmid: 'f-1' });
  assert.equal(again.offset, first.offset + 1, 'the refused send took no offset');
  const p = await b.waitPush((m) => m.t === 'msg' && m.text === 'while full');
  assert.equal(p.offset, again.offset);
  assert.deepEqual(b.takePushes((m) => m.t === 'gap'), [], 'no epoch change: nothing was evicted');
});
