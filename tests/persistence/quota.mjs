// The history disk quota (issue 14): 40 MiB of history into 200 rooms with
// --history-max-bytes 8388608 leaves the data directory under about 12 MiB
// (checked while the hub runs, after a clean stop and after a restart),
// and the newest message of every room is readable and intact. A room that
// lost its oldest messages says so: a join with `since` before them gets a
// `gap` push with reason `expired`. /metrics shows the bytes used.
// The other history rows of /metrics (max, rooms, messages, dropped) agree
// with what was written, and the hub's memory is reported.
//
// Exits 77 (meson: SKIP) when the binary does not have the flag.
import fs from 'node:fs';
import path from 'node:path';
import { test, assert, startServer, runChathub } from '../integration/lib.mjs';
import { JsonClient, tempDir, hello, msgText, msgCmid, parseText } from './plib.mjs';

const help = await runChathub(['--help']);
if (!/--history-max-bytes\b/.test(help.stdout + help.stderr)) {
  console.log('1..0 # SKIP chathub --help does not mention --history-max-bytes yet');
  process.exit(77);
}

const BUDGET = 8388608;
const LIMIT = 12 * 1024 * 1024;     // "under about 12 MiB"
const ROOMS = 200;
const CLIENTS = 4;                  // 50 rooms each (--max-rooms is 64)
const SIZE = 3990;                  // under max_text (4000)
const TOTAL = 40 * 1024 * 1024;
const N = Math.ceil(TOTAL / SIZE);  // 10513 messages
const WINDOW = 64;
const run = 'q';

const roomOf = (i) => `q${String(i % ROOMS).padStart(3, '0')}`;

// What `du -b dir` prints: the directory and the files in it.
function duB(dir) {
  let total = fs.statSync(dir).size;
  for (const name of fs.readdirSync(dir)) total += fs.statSync(path.join(dir, name)).size;
  return total;
}

async function metric(s, name) {
  const res = await fetch(new URL('/metrics', s.url));
  assert.equal(res.status, 200, 'GET /metrics');
  const body = await res.text();
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\d+)`, 'm').exec(body);
  assert.ok(m, `/metrics has no ${name}:\n${body.slice(0, 2000)}`);
  return Number(m[1]);
}

// Sends message i for every i with i % CLIENTS === k, WINDOW in flight.
async function sendAll(c, k, peak) {
  const mine = [];
  for (let i = k; i < N; i += CLIENTS) mine.push(i);
  let next = 0;
  const acks = new Map();
  const worker = async () => {
    while (next < mine.length) {
      const i = mine[next++];
      const r = await c.request({ op: 'send', room: roomOf(i), text: msgText(run, i, SIZE), cmid: msgCmid(run, i) }, 60000);
      assert.equal(r.ok, true, `send ${i}: ${JSON.stringify(r)}`);
      acks.set(i, r);
      if (acks.size % 256 === 0) peak();
    }
  };
  await Promise.all(Array.from({ length: WINDOW }, worker));
  return acks;
}

// The newest message of every room, read with `history before` from a
// client that joined nothing; returns Map(room -> {first, newest}).
async function readNewest(c, expectLast) {
  const out = new Map();
  for (let r = 0; r < ROOMS; r++) {
    const room = roomOf(r);
    const h = await c.ok({ op: 'history', room, before: expectLast.get(room).offset + 1, limit: 1 });
    assert.equal(h.offset, expectLast.get(room).offset, `${room}: newest offset`);
    assert.equal(h.messages.length, 1, `${room}: the newest message is readable: ${JSON.stringify(h).slice(0, 300)}`);
    const m = h.messages[0];
    assert.equal(m.offset, expectLast.get(room).offset, `${room}: the newest message's offset`);
    const i = parseText(run, m.text);
    assert.equal(i, expectLast.get(room).i, `${room}: the newest message is the last one sent`);
    assert.equal(m.text, msgText(run, i, SIZE), `${room}: text intact`);
    out.set(room, m);
  }
  return out;
}

test(`${(TOTAL / 1048576).toFixed(0)} MiB into ${ROOMS} rooms under --history-max-bytes ${BUDGET}`, async () => {
  const dir = tempDir('quota');
  const args = ['--data-dir', dir, '--history-max-bytes', String(BUDGET), '--rate', '0'];
  let s = await startServer(args);
  const clients = [];
  for (let k = 0; k < CLIENTS; k++) {
    const c = await JsonClient.connect(s.wsUrl('/'));
    await hello(c, `w${k}`);
    clients.push(c);
  }
  // Room r is written by client r % CLIENTS, which joins it.
  for (let r = 0; r < ROOMS; r++) await clients[r % CLIENTS].ok({ op: 'join', room: roomOf(r), history: 0 });

  let peakDu = 0;
  const peak = () => { peakDu = Math.max(peakDu, duB(dir)); };
  const t0 = Date.now();
  const acks = await Promise.all(clients.map((c, k) => sendAll(c, k, peak)));
  const secs = (Date.now() - t0) / 1000;
  peak();

  // The newest offset of every room, from the acks.
  const last = new Map();
  for (const m of acks) {
    for (const [i, r] of m) {
      const room = roomOf(i);
      if (!last.has(room) || last.get(room).offset < r.offset) last.set(room, { offset: r.offset, i });
    }
  }
  assert.equal(last.size, ROOMS);

  const reader = await JsonClient.connect(s.wsUrl('/'));
  await hello(reader, 'reader');
  await readNewest(reader, last);
  const running = duB(dir);
  const bytesMetric = await metric(s, 'chathub_history_bytes');
  assert.equal(await metric(s, 'chathub_history_max_bytes'), BUDGET, 'chathub_history_max_bytes');
  const roomsMetric = await metric(s, 'chathub_history_rooms');
  const msgsMetric = await metric(s, 'chathub_history_messages');
  const droppedMetric = await metric(s, 'chathub_history_dropped_total');
  assert.ok(roomsMetric >= ROOMS, `chathub_history_rooms ${roomsMetric}`);
  assert.ok(msgsMetric >= ROOMS && msgsMetric < N, `chathub_history_messages ${msgsMetric}`);
  assert.ok(droppedMetric > 0 && droppedMetric + msgsMetric <= N,
    `chathub_history_dropped_total ${droppedMetric} (held ${msgsMetric} of ${N})`);
  // The hub's memory: resident now and at its peak (Linux only).
  const rss = (() => {
    try {
      const st = fs.readFileSync(`/proc/${s.proc.pid}/status`, 'utf8');
      const kb = (k) => Number((new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(st) || [0, 0])[1]);
      return `VmRSS ${kb('VmRSS')} kB, VmHWM ${kb('VmHWM')} kB`;
    } catch { return 'RSS not available'; }
  })();

  // A resume from before the cut: gap `expired`, then the newest page.
  const room = roomOf(7);
  const epoch = (await reader.ok({ op: 'history', room, before: 2, limit: 1 })).epoch;
  const j = await reader.ok({ op: 'join', room, since: { epoch, offset: 0 } });
  const gap = await reader.waitPush((p) => p.t === 'gap' && p.room === room, 5000, 'a gap push');
  assert.equal(gap.reason, 'expired', `gap: ${JSON.stringify(gap)}`);
  assert.equal(gap.from, 1, `gap: ${JSON.stringify(gap)}`);
  assert.ok(gap.to >= 1 && gap.to < last.get(room).offset, `gap: ${JSON.stringify(gap)}`);
  assert.equal(j.messages[j.messages.length - 1].offset, last.get(room).offset);

  for (const c of [...clients, reader]) c.terminate();
  assert.equal(await s.stop(), 0, 'clean exit');
  const stopped = duB(dir);

  // After a restart: the same newest messages.
  s = await startServer(args);
  const again = await JsonClient.connect(s.wsUrl('/'));
  await hello(again, 'again');
  await readNewest(again, last);
  again.terminate();
  assert.equal(await s.stop(), 0, 'clean exit');

  console.log(`# ${N} messages of ${SIZE} bytes (${(N * SIZE / 1048576).toFixed(1)} MiB) into ${ROOMS} rooms in ${secs.toFixed(1)} s`);
  console.log(`# data dir (du -b): peak sampled during the fill ${peakDu}, after it ${running}, ` +
    `after a clean stop ${stopped}; chathub_history_bytes ${bytesMetric}; ` +
    `gap on resume from 0 in ${room}: ${gap.from}..${gap.to}`);
  console.log(`# /metrics: chathub_history_rooms ${roomsMetric}, chathub_history_messages ${msgsMetric}, ` +
    `chathub_history_dropped_total ${droppedMetric}; hub memory after the fill: ${rss}`);
  assert.ok(peakDu < LIMIT, `data dir reached ${peakDu} bytes during the fill (limit ${LIMIT})`);
  assert.ok(running < LIMIT, `data dir ${running} bytes after the fill (limit ${LIMIT})`);
  assert.ok(stopped <= BUDGET + 4096, `data dir ${stopped} bytes after a clean stop (budget ${BUDGET})`);
  assert.ok(bytesMetric > 0 && bytesMetric <= LIMIT, `chathub_history_bytes ${bytesMetric}`);
}, { timeout: 100000 });
