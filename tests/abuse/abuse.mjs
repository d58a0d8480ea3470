// Abuse: hostile or broken clients in numbers. Throughout each case the hub
// keeps serving ordinary clients, and afterwards nothing is left queued to
// anyone (the chathub_output_queued_bytes gauge is back to 0, which holds
// under AddressSanitizer too) and, outside the sanitizer leg, its resident
// memory (VmRSS) is near its baseline (within baseline + 20 MB). Figures are
// printed as "# ..." lines.
import net from 'node:net';
import { startServer } from '../integration/lib.mjs';
import {
  assert, testCase, WsPeer, OP, sleep, assertServing, wsConnect, buildRequest,
  upgradeHeaders, wsKey, get, metrics, eventually, rssKiB, prng, parseFrame, withTimeout,
} from '../conformance/wsraw.mjs';
import { JsonClient } from './jsonc.mjs';

const MB = 1024; // KiB per MB, for VmRSS figures
const RSS_SLACK_KIB = 20 * MB;

// Baseline RSS after some ordinary traffic (so that lazily created state is
// already there).
async function warmBaseline(s) {
  for (let i = 0; i < 3; i++) await assertServing(s, 'warm-up');
  await get(s.port, '/');
  await sleep(200);
  return rssKiB(s.proc.pid);
}

// Under AddressSanitizer freed memory sits in a quarantine and RSS says
// nothing about the hub's own memory: the figures are printed, not judged.
const SANITIZED = !!process.env.CHATHUB_SANITIZED;

// Bytes queued to all connections, from the hub's own gauge.
async function queuedBytes(s) {
  const v = (await metrics(s.port)).chathub_output_queued_bytes;
  assert.equal(typeof v, 'number', 'chathub_output_queued_bytes is exported');
  return v;
}

async function checkRssAfter(s, baseline, label) {
  // Nothing is queued any more once every abusive connection is gone: this
  // is judged in both legs. (The /metrics response is rendered before it is
  // queued, so it does not count itself.)
  const q = await eventually(async () => ((await queuedBytes(s)) === 0 ? 'empty' : null), 8000,
    `${label}: chathub_output_queued_bytes back to 0`);
  assert.equal(q, 'empty');
  // Give closes and frees a moment; then read it a few times.
  let after = rssKiB(s.proc.pid);
  for (let i = 0; i < 10 && after > baseline + RSS_SLACK_KIB; i++) {
    await sleep(300);
    after = rssKiB(s.proc.pid);
  }
  console.log(`# ${label}: VmRSS baseline ${(baseline / MB).toFixed(1)} MB, after ${(after / MB).toFixed(1)} MB`);
  if (SANITIZED)
    return;
  assert.ok(after <= baseline + RSS_SLACK_KIB,
    `${label}: VmRSS ${after} KiB after vs baseline ${baseline} KiB (allowed +${RSS_SLACK_KIB} KiB)`);
}

// An ordinary visitor: GET / and a WebSocket chat in a room of its own.
async function visitor(s, tag) {
  const r = await get(s.port, '/');
  assert.equal(r.status, 200, `GET / ${tag}`);
  assert.match(r.body, /<html/i, `GET / serves the page ${tag}`);
  const room = `/ws/visit-${tag}`;
  const a = await wsConnect(s.wsUrl(room));
  const b = await wsConnect(s.wsUrl(room));
  try {
    await a.send(`hello ${tag}`);
    assert.equal(await b.nextText(), `hello ${tag}`);
    assert.equal(await a.nextText(), `hello ${tag}`);
  } finally {
    a.terminate();
    b.terminate();
  }
}

async function connectRaw(port) {
  return withTimeout(new Promise((resolve, reject) => {
    const sock = net.connect({ port, host: '127.0.0.1' });
    sock.once('connect', () => { sock.off('error', reject); resolve(sock); });
    sock.once('error', reject);
  }), 5000, 'connect timed out');
}

// ---------------------------------------------------------------------------

testCase('300 slowloris connections (one header byte a second) while a visitor is served', async () => {
  const s = await startServer(['--max-conns-per-ip', '0', '--handshake-timeout', '10']);
  const baseline = await warmBaseline(s);
  const N = 300;
  const req = Buffer.from(buildRequest('GET', '/ws/slow', upgradeHeaders(wsKey())), 'latin1');
  const socks = [];
  const t0 = Date.now();
  let ended = 0;
  for (let i = 0; i < N; i++) {
    const sock = await connectRaw(s.port);
    sock.on('error', () => {});
    sock.on('data', () => {});
    const st = { sock, off: 0, endedAt: null };
    sock.on('close', () => { st.endedAt = Date.now(); ended++; });
    socks.push(st);
  }
  const timer = setInterval(() => {
    for (const st of socks) {
      if (st.endedAt === null && st.off < req.length) st.sock.write(req.subarray(st.off, ++st.off));
    }
  }, 1000);
  try {
    // While they trickle: the visitor is served, several times.
    for (let i = 0; i < 6; i++) {
      const v0 = Date.now();
      await visitor(s, `slowloris-${i}`);
      console.log(`# visitor ${i} served in ${Date.now() - v0} ms with ${N - ended} slowloris connections open`);
      await sleep(1000);
    }
    const m = await metrics(s.port);
    assert.ok(m['chathub_connections{mode="http"}'] >= N, `the ${N} slowloris connections are open (${m['chathub_connections{mode="http"}']})`);
    assert.equal(ended, 0, 'no slowloris connection closed before its deadline');
    // --handshake-timeout 10 bounds each request, trickle or not.
    await eventually(() => ended === N, 8000, `all ${N} slowloris connections closed by the server`, 100);
    const times = socks.map((st) => st.endedAt - t0).sort((a, b) => a - b);
    console.log(`# slowloris connections closed after ${times[0]}-${times[N - 1]} ms (--handshake-timeout 10)`);
    assert.ok(times[0] >= 9000, `a slowloris connection was closed after ${times[0]} ms`);
  } finally {
    clearInterval(timer);
    for (const st of socks) st.sock.destroy();
  }
  const m = await metrics(s.port);
  assert.ok(m['chathub_refused_handshakes_total{reason="timeout"}'] >= N, 'refused{timeout}');
  await visitor(s, 'slowloris-after');
  await checkRssAfter(s, baseline, 'slowloris');
}, { timeout: 40000 });

testCase('2,000 connections dropped mid-handshake in parallel batches of 100', async () => {
  const s = await startServer(['--max-conns-per-ip', '0']);
  const baseline = await warmBaseline(s);
  const half = Buffer.from(buildRequest('GET', '/ws/drop', upgradeHeaders(wsKey())).slice(0, 60), 'latin1');
  let peak = baseline;
  const TOTAL = 2000;
  const BATCH = 100;
  for (let done = 0; done < TOTAL; done += BATCH) {
    await Promise.all(Array.from({ length: BATCH }, async (_, i) => {
      const sock = await connectRaw(s.port);
      sock.on('error', () => {});
      await new Promise((r) => sock.write(half, r));
      if ((done + i) % 2) sock.destroy(); // FIN or, every other one, RST:
      else { sock.resetAndDestroy(); }
    }));
    peak = Math.max(peak, rssKiB(s.proc.pid));
    if (done % 500 === 0) await visitor(s, `drop-${done}`);
  }
  assert.ok(s.alive(), 'the server survived');
  await visitor(s, 'drop-after');
  const m = await eventually(async () => {
    const x = await metrics(s.port);
    return x['chathub_connections{mode="http"}'] <= 1 && x['chathub_connections{mode="raw"}'] === 0 ? x : null;
  }, 5000, 'chathub_connections back to 0 (plus the /metrics request)');
  console.log(`# after 2000 dropped handshakes: connections http=${m['chathub_connections{mode="http"}']} ` +
    `raw=${m['chathub_connections{mode="raw"}']} json=${m['chathub_connections{mode="json"}']}, ` +
    `accepted_total=${m.chathub_accepted_total}, peak VmRSS ${(peak / MB).toFixed(1)} MB`);
  assert.ok(m.chathub_accepted_total >= TOTAL, 'all accepted');
  await checkRssAfter(s, baseline, 'dropped handshakes');
}, { timeout: 40000 });

testCase('a client that never reads while its room is flooded: bounded memory, closed, others get everything', async () => {
  const s = await startServer(['--rate', '0']);
  const baseline = await warmBaseline(s);
  const room = '/ws/flood';
  const sleeper = await WsPeer.open(s.port, room);
  sleeper.c.sock.pause(); // never reads again
  const READERS = 5;
  const M = 4000;
  const SIZE = 4096;
  const readers = [];
  for (let i = 0; i < READERS; i++) readers.push(await wsConnect(s.wsUrl(room)));
  const sender = await wsConnect(s.wsUrl(room));
  const all = [...readers, sender];
  const counts = all.map(() => 0);
  const bad = [];
  all.forEach((c, i) => {
    c.ws.removeAllListeners('message');
    c.ws.on('message', (data) => {
      const str = data.toString();
      const seq = Number(str.slice(0, str.indexOf(':')));
      if (seq !== counts[i] || str.length !== SIZE) bad.push(`client ${i}: got #${seq} (${str.length} bytes) expecting #${counts[i]}`);
      counts[i]++;
    });
  });
  let peak = 0;
  let qpeak = 0;
  let sampling = false;
  const sampler = setInterval(() => {
    peak = Math.max(peak, rssKiB(s.proc.pid));
    if (sampling) return;
    sampling = true;
    queuedBytes(s).then((q) => { qpeak = Math.max(qpeak, q); }, () => {}).finally(() => { sampling = false; });
  }, 100);
  const t0 = Date.now();
  try {
    // Paced by the slowest reader (a window of 64 messages, 256 KiB), so
    // that readers never fall behind by the output limit; the sleeper
    // falls behind. Once it is over --soft-output the hub stops reading the
    // sender (backpressure, issue 14) until the sleeper is cut after
    // --soft-hold (10 s), so one wait here lasts that long.
    for (let k = 0; k < M; k++) {
      const head = `${k}:`;
      sender.ws.send(head + 'x'.repeat(SIZE - head.length));
      if (k % 16 === 15) {
        await eventually(() => Math.min(...counts) >= k - 64, 20000, `readers caught up to ${k - 64}`, 1);
      }
    }
    await eventually(() => Math.min(...counts) >= M, 10000, `every reader got ${M}`, 5);
  } finally {
    clearInterval(sampler);
  }
  console.log(`# flood: ${M} x ${SIZE} B in ${Date.now() - t0} ms; peak VmRSS during flood ${(peak / MB).toFixed(1)} MB (baseline ${(baseline / MB).toFixed(1)} MB); peak queued ${qpeak} B`);
  // Every queue is capped by --max-output (1 MiB, plus the urgent allowance)
  // and the readers' by the pacing window: judged on the hub's own count,
  // in both legs. The flood itself was 16 MB.
  assert.ok(qpeak > 0, 'the queued-bytes samples saw the backlog');
  assert.ok(qpeak <= (READERS + 2) * (1024 * 1024 + 1024), `peak queued ${qpeak} B`);
  assert.deepEqual(bad, [], 'messages in order and intact');
  assert.deepEqual(counts, all.map(() => M), 'every reading client got exactly every message');
  // Bounded: the sleeper's queue is capped by --max-output (1 MiB), and the
  // history ring (1000 messages) by its size.
  if (!SANITIZED)
    assert.ok(peak <= baseline + 64 * MB, `peak VmRSS ${peak} KiB vs baseline ${baseline} KiB`);
  const m = await eventually(async () => {
    const x = await metrics(s.port);
    return x.chathub_slow_client_closes_total >= 1 ? x : null;
  }, 12000, 'the non-reader closed as a slow client');
  assert.equal(m.chathub_slow_client_closes_total, 1, 'exactly one slow client (the non-reader)');
  // Its TCP connection ends (after the 5 s close handshake timeout at most).
  await eventually(async () => (await metrics(s.port))['chathub_connections{mode="raw"}'] === READERS + 1,
    8000, 'the non-reader\'s connection closed on the server');
  for (const c of all) assert.equal(c.closeInfo, null, 'readers stay connected');
  await visitor(s, 'flood-after');
  for (const c of all) c.terminate();
  sleeper.destroy();
  await checkRssAfter(s, baseline, 'non-reader flood');
}, { timeout: 60000 });

// Writes up to total bytes of chunk repeated to sock, which never reads,
// while sample() runs every 100 ms; stops early once the hub has stopped
// reading (no drain for stallMs). Returns {sent, stalled}.
async function floodWrites(sock, chunk, total, sample, stallMs = 2000) {
  let sent = 0;
  let stalled = false;
  const sampler = setInterval(sample, 100);
  try {
    while (sent < total) {
      const ok = sock.write(chunk);
      sent += chunk.length;
      if (ok) continue;
      const drained = await Promise.race([
        new Promise((r) => sock.once('drain', () => r(true))),
        sleep(stallMs).then(() => false),
      ]);
      if (!drained) { stalled = true; break; }
    }
  } finally {
    clearInterval(sampler);
  }
  return { sent, stalled, taken: sock.bytesWritten - sock.writableLength };
}

// A sampler of the hub's VmRSS and queued-bytes gauge.
function memorySampler(s) {
  const st = { rss: 0, queued: 0, busy: false };
  st.sample = () => {
    st.rss = Math.max(st.rss, rssKiB(s.proc.pid));
    if (st.busy) return;
    st.busy = true;
    queuedBytes(s).then((q) => { st.queued = Math.max(st.queued, q); }, () => {})
      .finally(() => { st.busy = false; });
  };
  return st;
}

const FLOOD_RSS_KIB = 16 * MB; // the bound on the hub's growth
// One connection's queue may hold --max-output plus the urgent allowance;
// the sampler's own /metrics response and a visitor's bytes come on top.
const QUEUE_BOUND = 1024 * 1024 + 1024 + 64 * 1024;

testCase('one connection pipelining 40 MB of GET /nope without reading: bounded, others served', async () => {
  const s = await startServer([]);
  const baseline = await warmBaseline(s);
  const sock = await connectRaw(s.port);
  sock.on('error', () => {});
  sock.pause(); // never reads
  const mem = memorySampler(s);
  const chunk = Buffer.from('GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'.repeat(2048), 'latin1');
  const visits = (async () => { for (let i = 0; i < 3; i++) { await sleep(300); await visitor(s, `pipeline-${i}`); } })();
  const r = await floodWrites(sock, chunk, 40e6, mem.sample);
  await visits;
  mem.sample();
  await sleep(300);
  mem.sample();
  const m = await metrics(s.port);
  console.log(`# 404 pipelining: offered ${(r.sent / 1e6).toFixed(1)} MB, taken by the kernel ${(r.taken / 1e6).toFixed(1)} MB, ` +
    `hub stopped reading: ${r.stalled}; peak VmRSS ${(mem.rss / MB).toFixed(1)} MB (baseline ${(baseline / MB).toFixed(1)} MB); ` +
    `peak queued ${mem.queued} B; read pauses ${m.chathub_read_pauses_total}`);
  assert.ok(r.stalled, 'the hub stopped reading from a client that does not read its responses');
  assert.ok(mem.queued > 0 && mem.queued <= QUEUE_BOUND, `peak queued ${mem.queued} B (bound ${QUEUE_BOUND})`);
  if (!SANITIZED)
    assert.ok(mem.rss <= baseline + FLOOD_RSS_KIB, `peak VmRSS ${mem.rss} KiB vs baseline ${baseline} KiB`);
  await assertServing(s, 'during the pipelining flood');
  sock.destroy();
  await checkRssAfter(s, baseline, '404 pipelining');
}, { timeout: 60000 });

testCase('one WebSocket sending 30 MB of 125-byte pings without reading: a few pongs queued, others served', async () => {
  const s = await startServer([]);
  const baseline = await warmBaseline(s);
  const p = await WsPeer.open(s.port, '/ws/pingflood');
  const sock = p.c.sock;
  sock.on('error', () => {});
  sock.pause(); // never reads again
  const mem = memorySampler(s);
  // Masked pings with a zero mask key, so the payload is sent as is.
  const one = Buffer.concat([Buffer.from([0x89, 0x80 | 125, 0, 0, 0, 0]), Buffer.alloc(125, 0x70)]);
  const chunk = Buffer.concat(Array(512).fill(one));
  const visits = (async () => { for (let i = 0; i < 3; i++) { await sleep(200); await visitor(s, `ping-${i}`); } })();
  const r = await floodWrites(sock, chunk, 30e6, mem.sample);
  await visits;
  await sleep(300);
  await eventually(() => !mem.busy, 5000, 'the last sample');
  const q = await queuedBytes(s);
  console.log(`# ping flood: offered ${(r.sent / 1e6).toFixed(1)} MB, taken by the kernel ${(r.taken / 1e6).toFixed(1)} MB, ` +
    `hub stopped reading: ${r.stalled}; peak VmRSS ${(mem.rss / MB).toFixed(1)} MB (baseline ${(baseline / MB).toFixed(1)} MB); ` +
    `peak queued ${mem.queued} B, now ${q} B`);
  assert.ok(r.taken >= 1e6, 'the pings reached the hub');
  // What is left: the pongs a uv_write has in flight and at most sixteen
  // unsent ones behind them (2 + 125 bytes each), which newer pings replace.
  assert.ok(q <= 2 * 16 * 127, `queued after the flood: ${q} B`);
  assert.ok(mem.queued <= QUEUE_BOUND, `peak queued ${mem.queued} B`);
  if (!SANITIZED)
    assert.ok(mem.rss <= baseline + FLOOD_RSS_KIB, `peak VmRSS ${mem.rss} KiB vs baseline ${baseline} KiB`);
  await assertServing(s, 'after the ping flood');
  p.destroy();
  await checkRssAfter(s, baseline, 'ping flood');
}, { timeout: 90000 });

testCase('a JSON client flooding over the rate limit gets rate_limited then 4013; others unaffected', async () => {
  const s = await startServer([]); // --rate 20 --burst 40
  const baseline = await warmBaseline(s);
  const flooder = await JsonClient.open(s, { nick: 'flooder' });
  const alice = await JsonClient.open(s, { nick: 'alice' });
  const bob = await JsonClient.open(s, { nick: 'bob' });
  const raw = await wsConnect(s.wsUrl('/ws/busy'));
  for (const c of [flooder, alice, bob]) assert.equal((await c.req('join', { room: 'busy' })).ok, true);
  // The flood: 1,000 sends at once.
  const ids = [];
  for (let i = 0; i < 1000 && !flooder.closeInfo; i++) ids.push(flooder.fire('send', { room: 'busy', text: `flood ${i}` }));
  // Meanwhile alice and bob chat at a polite pace.
  for (let i = 0; i < 10; i++) {
    const r = await alice.req('send', { room: 'busy', text: `alice ${i}` });
    assert.equal(r.ok, true, `alice's send ${i}: ${JSON.stringify(r)}`);
    await sleep(60);
  }
  const { code } = await flooder.waitClose(5000);
  assert.equal(code, 4013, 'the flooder is closed with 4013');
  const sendReplies = flooder.replies.filter((r) => ids.includes(r.id));
  const acked = sendReplies.filter((r) => r.ok).length;
  const limited = sendReplies.filter((r) => r.error && r.error.code === 'rate_limited').length;
  await eventually(() => bob.allPushes.filter((m) => m.t === 'msg' && m.from === 'alice').length === 10,
    3000, 'bob got alice\'s 10 messages');
  await sleep(300);
  const fromFlooder = bob.allPushes.filter((m) => m.t === 'msg' && m.from === 'flooder').length;
  let rawGot = 0;
  for (;;) {
    const m = await raw.next(300).catch(() => null);
    if (!m) break;
    rawGot++;
  }
  console.log(`# flooder: ${ids.length} sends fired, ${acked} acked, ${limited} rate_limited replies, then close ${code}; ` +
    `bob got ${fromFlooder} of its messages, the raw member ${rawGot - 10}`);
  // hello and join took 2 of the 40-message burst.
  assert.ok(fromFlooder >= 36 && fromFlooder <= 42, `about a burst delivered: ${fromFlooder}`);
  assert.ok(limited >= 1, 'rate_limited replies before the close');
  assert.equal(rawGot, fromFlooder + 10, 'the raw member got the same flood messages and alice\'s');
  assert.equal(alice.closeInfo, null, 'alice unaffected');
  assert.equal(bob.closeInfo, null, 'bob unaffected');
  assert.equal((await bob.req('send', { room: 'busy', text: 'bob after' })).ok, true, 'bob can still send');
  const m = await metrics(s.port);
  assert.ok(m.chathub_rate_limited_total >= limited, 'rate_limited_total');
  // Every message the room got from the flooder was acknowledged to it
  // before the 4013 close (a send is acked once sequenced; the close must
  // not overtake those acks).
  assert.equal(acked, fromFlooder, `the flooder got ${acked} acks for ${fromFlooder} messages delivered to the room`);
  await visitor(s, 'rate-after');
  await checkRssAfter(s, baseline, 'rate flood');
});

// The close code the server may answer with if a random stream happens to
// start with well-formed frames ending in a close frame: the server echoes
// that frame's code (RFC 6455 5.5.1). Returns the code or null.
function predictEcho(bytes) {
  let buf = bytes;
  let inMsg = false;
  for (;;) {
    const f = (() => { try { return parseFrame(buf); } catch { return null; } })();
    if (!f) return null;
    if (f.rsv || !f.masked || ![0, 1, 2, 8, 9, 10].includes(f.opcode)) return null;
    if (f.opcode === 8) return f.payload.length >= 2 ? f.payload.readUInt16BE(0) : null;
    if (f.opcode >= 8 && (!f.fin || f.payload.length > 125)) return null;
    if (f.opcode === 0 && !inMsg) return null;
    if ((f.opcode === 1 || f.opcode === 2) && inMsg) return null;
    if (f.opcode < 8) inMsg = !f.fin;
    buf = buf.subarray(f.length);
  }
}

testCase('1,000 connections sending 1-4 KiB of seeded random bytes after a valid handshake', async () => {
  const s = await startServer(['--max-conns-per-ip', '0', '--rate', '0']);
  const baseline = await warmBaseline(s);
  const SEED = 6455;
  const rng = prng(SEED);
  const TOTAL = 1000;
  const BATCH = 50;
  const outcomes = {};
  const failures = [];
  let peak = baseline;
  const one = async (i, bytes) => {
    const p = await WsPeer.open(s.port, `/ws/noise-${i % 10}`);
    p.c.sock.on('error', () => {});
    await p.write(bytes).catch(() => {});
    p.c.sock.end(); // then FIN: a frame left incomplete ends with the stream
    let code = 'tcp-close';
    try {
      for (;;) {
        const f = await p.readFrame(5000);
        if (f.opcode === OP.CLOSE) {
          code = f.payload.length >= 2 ? f.payload.readUInt16BE(0) : 'empty';
          break;
        }
      }
    } catch (err) {
      if (!p.ended) { failures.push(`#${i}: ${err.message}`); code = 'error'; }
    }
    if (!p.ended) {
      await p.waitTcpEnd(6000).catch(() => failures.push(`#${i}: TCP not closed by the server`));
    }
    const predicted = predictEcho(bytes);
    if (typeof code === 'number' && ![1002, 1007, 1008, 1009].includes(code) && code !== predicted) {
      failures.push(`#${i}: close ${code} (a random stream of ${bytes.length} bytes starting ${bytes.subarray(0, 8).toString('hex')})`);
    }
    outcomes[code] = (outcomes[code] || 0) + 1;
    p.destroy();
  };
  for (let done = 0; done < TOTAL; done += BATCH) {
    const batch = [];
    for (let i = done; i < done + BATCH; i++) batch.push(rng.bytes(rng.int(1024, 4096)));
    await Promise.all(batch.map((b, j) => one(done + j, b)));
    assert.ok(s.alive(), `the server died in batch ${done / BATCH}\n${s.output()}`);
    peak = Math.max(peak, rssKiB(s.proc.pid));
    if (done % 250 === 0) await visitor(s, `noise-${done}`);
  }
  console.log(`# random bytes (seed ${SEED}): outcomes ${JSON.stringify(outcomes)}; peak VmRSS ${(peak / MB).toFixed(1)} MB`);
  assert.deepEqual(failures.slice(0, 20), [], `${failures.length} bad outcomes`);
  await visitor(s, 'noise-after');
  const m = await eventually(async () => {
    const x = await metrics(s.port);
    return x['chathub_connections{mode="raw"}'] === 0 ? x : null;
  }, 5000, 'no raw connection left');
  assert.equal(m['chathub_connections{mode="raw"}'], 0);
  await checkRssAfter(s, baseline, 'random bytes');
}, { timeout: 60000 });
