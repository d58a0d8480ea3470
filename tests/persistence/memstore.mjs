// The memory store (--no-persist) is bounded in bytes, not only in count:
// 40 raw connections each fill their own room with 64 KiB lines, 160 MiB in
// all, far past the store's 64 MiB budget (HUB_HISTORY_MAX_BYTES_DEFAULT,
// docs/operations.md "Memory"). The hub's peak RSS must stay under the
// documented bound, and the newest message of every room must still be
// readable, because the store trims the largest rooms' oldest messages
// first and never a room's newest.
import fs from 'node:fs';
import { test, assert, startServer, wsConnect } from '../integration/lib.mjs';
import { JsonClient, hello } from './plib.mjs';

const CONNS = 40;
const LINES = 64;         // per connection: 64 x 64 KiB = 4 MiB a room
const LINE = 64 * 1024;   // the frame limit (--max-message default)
const WINDOW = 4;         // lines in flight per connection
const MIB = 1024 * 1024;
// The bound documented in docs/operations.md: the store's 64 MiB, plus per
// connection at most one message being read and --max-output (1 MiB)
// queued, plus the process's own few MiB.
const BOUND = 64 * MIB + CONNS * (LINE + MIB) + 16 * MIB;
// An ASan build keeps freed memory in quarantine and adds shadow memory:
// its RSS says nothing about the hub's, so there only the store's own
// bound (what it keeps) is judged.
const SANITIZED = !!process.env.CHATHUB_SANITIZED;

function status(pid) {
  const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k) => Number((new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s) || [])[1] || 0);
  return { rss: kb('VmRSS') * 1024, hwm: kb('VmHWM') * 1024 };
}

const lineOf = (c, k) => {
  const head = `room ${c} line ${k} `;
  return head + 'x'.repeat(LINE - head.length);
};

// Sends LINES lines on a raw client, at most WINDOW unanswered: a raw
// member gets its own lines back, which is how it knows each was relayed.
async function fill(client, c) {
  let sent = 0;
  let seen = 0;
  while (seen < LINES) {
    while (sent < LINES && sent - seen < WINDOW) client.send(lineOf(c, ++sent)).catch(() => {});
    const m = await client.next(20000);
    assert.equal(m.text.length, LINE, `room ${c}: a relayed line of ${LINE} bytes`);
    seen++;
    assert.ok(m.text.startsWith(`room ${c} line ${seen} `), `room ${c}: line ${seen} in order`);
  }
}

test('--no-persist: 160 MiB of 64 KiB lines into 40 rooms keep RSS under the bound, newest of each readable', async () => {
  const s = await startServer(['--no-persist', '--rate', '0']);
  const base = status(s.proc.pid).rss;
  const clients = [];
  for (let c = 0; c < CONNS; c++) clients.push(await wsConnect(s.wsUrl(`/ws/fill-${c}`)));

  let peak = 0;
  const sampler = setInterval(() => { peak = Math.max(peak, status(s.proc.pid).rss); }, 20);
  try {
    await Promise.all(clients.map((cl, c) => fill(cl, c)));
  } finally {
    clearInterval(sampler);
  }
  const end = status(s.proc.pid);
  peak = Math.max(peak, end.hwm);
  console.log(`# offered ${(CONNS * LINES * LINE / MIB).toFixed(0)} MiB; RSS at start ${(base / MIB).toFixed(1)} MiB, ` +
    `peak ${(peak / MIB).toFixed(1)} MiB, at end ${(end.rss / MIB).toFixed(1)} MiB; bound ${(BOUND / MIB).toFixed(0)} MiB`);
  if (!SANITIZED) assert.ok(peak < BOUND, `peak RSS ${(peak / MIB).toFixed(1)} MiB over the bound ${(BOUND / MIB).toFixed(0)} MiB`);

  // Every room still has its newest line, and its oldest kept offset says
  // how much was trimmed: the store keeps a suffix of each room (it drops
  // oldest messages first), so the room holds LINES - oldest + 1 lines.
  const j = await JsonClient.connect(s.wsUrl('/'));
  await hello(j, 'reader');
  let kept = 0;
  for (let c = 0; c < CONNS; c++) {
    const r = await j.ok({ op: 'history', room: `fill-${c}`, limit: 1 });
    assert.equal(r.messages.length, 1, `room ${c}: the newest line is kept`);
    assert.equal(r.messages[0].offset, LINES, `room ${c}: the newest offset`);
    assert.ok(r.messages[0].text.startsWith(`room ${c} line ${LINES} `), `room ${c}: the newest text`);
    const o = await j.ok({ op: 'history', room: `fill-${c}`, after: 0, limit: 2 });
    const oldest = o.messages[0].offset;
    assert.ok(o.messages.length === 1 || o.messages[1].offset === oldest + 1, `room ${c}: contiguous offsets`);
    kept += LINES - oldest + 1;
  }
  console.log(`# kept ${kept} of ${CONNS * LINES} lines (${(kept * LINE / MIB).toFixed(1)} MiB of text)`);
  assert.ok(kept * LINE <= 64 * MIB, 'the store holds no more than its budget of text');
  assert.ok(kept * LINE >= 32 * MIB, 'the store uses its budget (at least half of it holds text)');
  for (const cl of clients) cl.close(1000);
  await s.stop();
}, { timeout: 120000 });
