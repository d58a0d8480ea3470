// Backpressure instead of drops (issue 14), against the real binary:
// - 200 raw lines sent at once with the default limits all arrive, in order,
//   and the sender stays connected (the hub stops reading it until its
//   rate-limit bucket refills, instead of dropping the excess);
// - a 64 MiB flood of 32 KiB messages into a room with a member that never
//   reads, a fast Node `ws` reader and the sender: the fast reader gets every
//   message in order, only the non-reader is closed (4008), the sender stays,
//   and the hub's RSS grows by less than 40 MB;
// - --max-total-rooms: a join past it fails too_many_rooms_total, a raw
//   upgrade into a new room gets 503 with Retry-After, and a room whose last
//   member left frees its place;
// - with --no-persist (the memory store) a sender's bytes in flight come
//   back to zero, so it is never held for good.
import fs from 'node:fs';
import net from 'node:net';
import { test, assert, startServer, wsConnect, upgradeHeaders, buildRequest, parseHead } from './lib.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// ASan's shadow memory and quarantine make RSS no measure of the hub's own.
const SANITIZED = !!process.env.CHATHUB_SANITIZED;

function rssKb(pid, key = 'VmRSS') {
  const st = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(st)[1]);
}

async function metricsText(s) {
  return (await fetch(new URL('/metrics', s.url))).text();
}

function metric(body, name) {
  const esc = name.replace(/[{}"=]/g, (c) => `\\${c}`);
  const m = new RegExp(`^${esc} (\\d+)`, 'm').exec(body);
  assert.ok(m, `/metrics has no ${name}`);
  return Number(m[1]);
}

// Collects every text message of a client, in order.
function collect(c) {
  const got = [];
  c.ws.on('message', (d, isBinary) => { if (!isBinary) got.push(d.toString()); });
  return got;
}

async function until(pred, ms, what) {
  const t0 = Date.now();
  while (!pred()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(20);
  }
}

test('200 raw lines at once with the default limits: all arrive, in order; the sender stays', async () => {
  const s = await startServer([]);
  const obs = await wsConnect(s.wsUrl('/ws/paste'));
  const sender = await wsConnect(s.wsUrl('/ws/paste'));
  const atObs = collect(obs);
  const echoed = collect(sender);
  const lines = Array.from({ length: 200 }, (_, i) => `line ${i}`);
  for (const l of lines) sender.ws.send(l); // one burst: 5 bursts' worth
  // 40 at once, then 20/s: about 8 s for the rest.
  await until(() => atObs.length >= 200 && echoed.length >= 200, 20000,
    `200 lines (observer has ${atObs.length}, sender ${echoed.length})`);
  assert.deepEqual(atObs, lines, 'the observer got every line, in order');
  assert.deepEqual(echoed, lines, 'the sender got its echo of every line, in order');
  assert.equal(sender.ws.readyState, 1, 'the sender is still connected');
  // Still usable afterwards.
  sender.ws.send('after');
  // Relayed on credit, the excess is paid back by not reading the sender
  // for about 160 / 20 s: the next line waits for that.
  await until(() => atObs.length === 201, 15000, 'one more line');
  assert.equal(atObs[200], 'after');
  const m = await metricsText(s);
  console.log(`# 200 lines: chathub_flow_holds_total{reason="rate"} ${metric(m, 'chathub_flow_holds_total{reason="rate"}')}, ` +
    `rate_limited_total ${metric(m, 'chathub_rate_limited_total')}`);
  assert.ok(metric(m, 'chathub_flow_holds_total{reason="rate"}') >= 1, 'the sender was held, not refused');
  assert.equal(metric(m, 'chathub_rate_limited_total'), 0, 'nothing refused');
  assert.equal(metric(m, 'chathub_closes_total{code="4013"}'), 0);
}, { timeout: 40000 });

// A raw WebSocket over a plain socket that never reads after the upgrade.
async function nonReader(port, path) {
  const sock = net.connect(port, '127.0.0.1');
  await new Promise((r, j) => { sock.once('connect', r); sock.once('error', j); });
  let buf = Buffer.alloc(0);
  const onData = (d) => { buf = Buffer.concat([buf, d]); };
  sock.on('data', onData);
  sock.write(buildRequest('GET', path, upgradeHeaders()));
  const t0 = Date.now();
  while (!parseHead(buf)) {
    if (Date.now() - t0 > 5000) throw new Error('no 101 for the non-reader');
    await sleep(5);
  }
  assert.equal(parseHead(buf).status, 101);
  sock.off('data', onData);
  sock.pause();
  // Keep the receive buffer small so that the hub's queue, not the kernel,
  // holds the backlog.
  const state = { sock, ended: false };
  sock.on('close', () => { state.ended = true; });
  sock.on('error', () => {});
  return state;
}

test('64 MiB flood: the fast reader gets every message, only the non-reader is closed, RSS < +40 MB', async () => {
  const s = await startServer(['--rate', '0']);
  const SIZE = 32 * 1024;
  const N = 2048; // 64 MiB
  const slow = await nonReader(s.port, '/ws/flood');
  const reader = await wsConnect(s.wsUrl('/ws/flood'), { maxPayload: 1 << 20 });
  const sender = await wsConnect(s.wsUrl('/ws/flood'), { maxPayload: 1 << 20 });
  let got = 0;
  let inOrder = true;
  reader.ws.on('message', (d) => {
    const i = Number(d.toString('latin1', 0, 8));
    if (i !== got) inOrder = false;
    got++;
  });
  let echoes = 0;
  sender.ws.on('message', () => { echoes++; });
  await sleep(200);
  const rss0 = rssKb(s.proc.pid);
  let rssPeak = rss0;
  const sampler = setInterval(() => { try { rssPeak = Math.max(rssPeak, rssKb(s.proc.pid)); } catch { /* gone */ } }, 20);
  const filler = 'a'.repeat(SIZE - 9);
  const t0 = Date.now();
  for (let i = 0; i < N; i++) {
    // Text lines (stored in history, like chat): the index, then filler.
    sender.ws.send(`${String(i).padStart(8, '0')}:${filler}`);
    while (sender.ws.bufferedAmount > 1 << 20) await sleep(2);
  }
  await until(() => got >= N || reader.closeInfo || sender.closeInfo, 90000,
    `the reader to get ${N} (has ${got})`);
  const secs = (Date.now() - t0) / 1000;
  // The non-reader's socket is paused: read what is left (the 4008 close
  // frame at its end) so that the end of the connection shows.
  slow.sock.on('data', () => {});
  slow.sock.resume();
  await until(() => slow.ended, 30000, 'the non-reader to be closed');
  clearInterval(sampler);
  rssPeak = Math.max(rssPeak, rssKb(s.proc.pid));
  const hwm = rssKb(s.proc.pid, 'VmHWM');
  const m = await metricsText(s);
  console.log(`# flood: ${N} x ${SIZE} bytes in ${secs.toFixed(1)} s; reader got ${got} (in order: ${inOrder}), ` +
    `sender echoes ${echoes}; hub RSS ${rss0} kB before, peak sampled ${rssPeak} kB (+${((rssPeak - rss0) / 1024).toFixed(1)} MiB), VmHWM ${hwm} kB; ` +
    `4008 closes ${metric(m, 'chathub_closes_total{code="4008"}')}, ` +
    `holds room ${metric(m, 'chathub_flow_holds_total{reason="room"}')} inflight ${metric(m, 'chathub_flow_holds_total{reason="inflight"}')}`);
  assert.equal(reader.closeInfo, null, `the fast reader stays connected (${JSON.stringify(reader.closeInfo)})`);
  assert.equal(sender.closeInfo, null, `the sender stays connected (${JSON.stringify(sender.closeInfo)})`);
  assert.equal(got, N, 'the fast reader got every message');
  assert.ok(inOrder, 'in order');
  assert.ok(slow.ended, 'the non-reader was closed');
  assert.equal(metric(m, 'chathub_closes_total{code="4008"}'), 1, 'one slow-client close: the non-reader');
  assert.equal(metric(m, 'chathub_slow_client_closes_total'), 1);
  if (!SANITIZED) assert.ok(rssPeak - rss0 < 40 * 1024, `hub RSS grew by ${rssPeak - rss0} kB (limit 40 MB)`);
  // The sender gets its own echoes too (raw relay), all of them.
  await until(() => echoes >= N, 20000, `the sender's ${N} echoes (has ${echoes})`);
  slow.sock.destroy();
}, { timeout: 150000 });

// The memory store completes an append before the call that made it
// returns: the count of what a sender has in flight must still come back
// to zero after a flood, and the sender must not stay held.
test('--no-persist: 4 MiB from one sender all arrive, and nothing stays held', async () => {
  const s = await startServer(['--no-persist', '--rate', '0']);
  const reader = await wsConnect(s.wsUrl('/ws/mem'));
  const sender = await wsConnect(s.wsUrl('/ws/mem'));
  const got = collect(reader);
  collect(sender);
  const N = 512;
  const line = (i) => `${String(i).padStart(6, '0')}:${'m'.repeat(8185)}`;
  for (let i = 0; i < N; i++) {
    sender.ws.send(line(i));
    while (sender.ws.bufferedAmount > 1 << 20) await sleep(2);
  }
  await until(() => got.length >= N, 20000, `${N} lines (have ${got.length})`);
  assert.ok(got.every((t, i) => t === line(i)), 'every line, in order');
  await sleep(100);
  const m = await metricsText(s);
  assert.equal(metric(m, 'chathub_flow_held'), 0, 'no connection held once the flood is over');
  sender.ws.send('last');
  await until(() => got.length === N + 1, 5000, 'one more line');
});

async function rawUpgrade(port, path) {
  const sock = net.connect(port, '127.0.0.1');
  await new Promise((r, j) => { sock.once('connect', r); sock.once('error', j); });
  let buf = Buffer.alloc(0);
  sock.on('data', (d) => { buf = Buffer.concat([buf, d]); });
  sock.on('error', () => {});
  sock.write(buildRequest('GET', path, upgradeHeaders()));
  const t0 = Date.now();
  while (!parseHead(buf)) {
    if (Date.now() - t0 > 5000) throw new Error('no response to the upgrade');
    await sleep(5);
  }
  sock.destroy();
  return parseHead(buf);
}

test('--max-total-rooms 3: join past it -> too_many_rooms_total, raw upgrade -> 503 Retry-After, freed rooms count again', async () => {
  const s = await startServer(['--max-total-rooms', '3', '--rate', '0']);
  const j = await wsConnect(s.wsUrl('/'), { protocols: 'chathub.v1' });
  const replies = new Map();
  j.ws.on('message', (d) => { const m = JSON.parse(d.toString()); if (m.id) replies.set(m.id, m); });
  let id = 0;
  const req = async (o) => {
    const my = ++id;
    j.ws.send(JSON.stringify({ ...o, id: my }));
    await until(() => replies.has(my), 5000, `reply ${my}`);
    return replies.get(my);
  };
  assert.equal((await req({ op: 'hello', nick: 'capper' })).ok, true);
  for (const r of ['r1', 'r2', 'r3']) assert.equal((await req({ op: 'join', room: r })).ok, true, `join ${r}`);
  const over = await req({ op: 'join', room: 'r4' });
  assert.equal(over.ok, false);
  assert.equal(over.error.code, 'too_many_rooms_total', JSON.stringify(over));
  // A direct message would open a room too.
  const peer = await wsConnect(s.wsUrl('/'), { protocols: 'chathub.v1' });
  peer.ws.send(JSON.stringify({ op: 'hello', nick: 'peer', id: 1 }));
  await sleep(200);
  const dm = await req({ op: 'dm', to: 'peer', text: 'hi' });
  assert.equal(dm.ok, false);
  assert.equal(dm.error.code, 'too_many_rooms_total', JSON.stringify(dm));
  // An existing room still admits.
  const raw = await rawUpgrade(s.port, '/ws/r1');
  assert.equal(raw.status, 101, 'a raw client into an existing room');
  const refused = await rawUpgrade(s.port, '/ws/r5');
  assert.equal(refused.status, 503, 'a raw client into a new room');
  assert.ok(Number(refused.headers['retry-after']) > 0, `Retry-After: ${refused.headers['retry-after']}`);
  // Leaving frees the room: a new one fits again.
  assert.equal((await req({ op: 'leave', room: 'r3' })).ok, true);
  await sleep(100);
  assert.equal((await req({ op: 'join', room: 'r4' })).ok, true, 'a freed place is usable');
  const m = await metricsText(s);
  assert.equal(metric(m, 'chathub_rooms_refused_total'), 3);
  assert.equal(metric(m, 'chathub_max_total_rooms'), 3);
  j.terminate();
  peer.terminate();
});
