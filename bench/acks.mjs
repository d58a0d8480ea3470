#!/usr/bin/env node
// bench/acks.mjs: what persistence costs a sender. Not a test: it prints
// figures and never fails on a slow result, only when it cannot measure.
//
//   CHATHUB_BIN=/path/to/chathub node bench/acks.mjs
//
// Two measurements, each with persistence on (SQLite in a fresh temporary
// --data-dir) and off (--no-persist), each on a fresh hub (--rate 0):
//
//   1. throughput: one chathub.v1 client pipelines `send`s (with cmids) to
//      one room, keeping WINDOW requests in flight, for TPUT_S seconds after
//      a short warm-up; acknowledged sends per second.
//   2. latency: the same client sends at a fixed RATE per second for LAT_S
//      seconds, paced by a timer against a schedule (no coordinated
//      omission: a late tick sends what it owes); for each send the time
//      from the socket write to its ack; p50/p90/p99/max.
//
// Environment: CHATHUB_BIN (default build/chathub, then /tmp/t5-build/chathub),
// WINDOW (256), TPUT_S (5), WARMUP_S (0.5), RATE (1000), LAT_S (10),
// SIZE (text bytes, 100), RUNS (1; with more, every figure is the median
// of the runs, the two modes interleaved). The client is Node's `ws` from tests/node_modules
// (`cd tests && npm ci`). Both processes share the machine: the figures are
// the hub and this client together, on loopback.
//
// Output: key=value lines, then a markdown table. Every server is started
// by this script on 127.0.0.1 and stopped by its PID (SIGTERM, then SIGKILL).
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(path.join(ROOT, 'tests', 'package.json'));
let WebSocket;
try {
  WebSocket = require('ws');
} catch {
  console.error('bench/acks.mjs: the ws module is missing: run `cd tests && npm ci`');
  process.exit(1);
}

const num = (name, def) => (process.env[name] !== undefined && process.env[name] !== '' ? Number(process.env[name]) : def);
const WINDOW = num('WINDOW', 256);
const TPUT_S = num('TPUT_S', 5);
const WARMUP_S = num('WARMUP_S', 0.5);
const RATE = num('RATE', 1000);
const LAT_S = num('LAT_S', 10);
const SIZE = num('SIZE', 100);

function findBin() {
  const cands = [process.env.CHATHUB_BIN, path.join(ROOT, 'build', 'chathub'), '/tmp/t5-build/chathub'];
  for (const c of cands) if (c && fs.existsSync(c)) return c;
  console.error('bench/acks.mjs: no chathub binary: set CHATHUB_BIN');
  process.exit(1);
}
const BIN = findBin();

// ---- servers ---------------------------------------------------------------

const live = new Set();
process.on('exit', () => { for (const p of live) try { process.kill(p.pid, 'SIGKILL'); } catch { /* gone */ } });
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(1));

async function startHub(persist) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chathub-acks-'));
  const args = ['--host', '127.0.0.1', '--port', '0', '--rate', '0', '--data-dir', dir,
    '--log-level', 'warn', ...(persist ? [] : ['--no-persist'])];
  const proc = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(proc);
  let out = '';
  let err = '';
  proc.stderr.setEncoding('utf8').on('data', (d) => { err += d; });
  const url = await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no startup line within 10 s: ${err}`)), 10000);
    proc.stdout.setEncoding('utf8').on('data', (d) => {
      out += d;
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) { clearTimeout(t); resolve(m[1]); }
    });
    proc.once('exit', (code, sig) => { clearTimeout(t); reject(new Error(`chathub exited (${code ?? sig}): ${err}`)); });
  });
  return {
    url,
    wsUrl: url.replace(/^http/, 'ws'),
    async stop() {
      const exited = new Promise((r) => (proc.exitCode !== null || proc.signalCode !== null ? r() : proc.once('exit', r)));
      try { process.kill(proc.pid, 'SIGTERM'); } catch { /* gone */ }
      const t = setTimeout(() => { try { process.kill(proc.pid, 'SIGKILL'); } catch { /* gone */ } }, 15000);
      await exited;
      clearTimeout(t);
      live.delete(proc);
      fs.rmSync(dir, { recursive: true, force: true });
      return proc.exitCode;
    },
  };
}

// ---- client ----------------------------------------------------------------

class Client {
  constructor(url) {
    this.ws = new WebSocket(url, ['chathub.v1'], { perMessageDeflate: false });
    this.nextId = 1;
    this.waiting = new Map(); // id -> callback(reply, tReceived)
    this.errors = 0;
    this.ws.on('message', (data) => {
      const t = performance.now();
      const m = JSON.parse(data.toString());
      if (m.id === undefined) return;
      const cb = this.waiting.get(m.id);
      if (!cb) return;
      this.waiting.delete(m.id);
      if (!m.ok) this.errors++;
      cb(m, t);
    });
  }

  open() {
    return new Promise((resolve, reject) => { this.ws.once('open', resolve); this.ws.once('error', reject); });
  }

  // Sends obj with a new id; cb(reply, tReceived). Returns the send time.
  send(obj, cb) {
    const id = this.nextId++;
    this.waiting.set(id, cb);
    const t = performance.now();
    this.ws.send(JSON.stringify({ ...obj, id }));
    return t;
  }

  request(obj) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no reply to ${obj.op}`)), 10000);
      this.send(obj, (m) => { clearTimeout(timer); if (m.ok) resolve(m); else reject(new Error(JSON.stringify(m))); });
    });
  }

  close() { try { this.ws.terminate(); } catch { /* gone */ } }
}

const TEXT = 'x'.repeat(Math.max(1, SIZE));
let cmidSeq = 0;
const sendMsg = (c, cb) => c.send({ op: 'send', room: 'bench', text: TEXT, cmid: `b-${cmidSeq++}` }, cb);

async function connect(hub) {
  const c = new Client(hub.wsUrl + 'ws');
  await c.open();
  await c.request({ op: 'hello', nick: 'bench' });
  await c.request({ op: 'join', room: 'bench', history: 0 });
  return c;
}

// Pipelined sends with WINDOW in flight: acks per second over TPUT_S.
async function throughput(persist) {
  const hub = await startHub(persist);
  const c = await connect(hub);
  let counting = false;
  let acks = 0;
  let stop = false;
  let inflight = 0;
  let drained;
  const done = new Promise((r) => { drained = r; });
  const pump = () => {
    while (!stop && inflight < WINDOW) {
      inflight++;
      sendMsg(c, (m) => {
        inflight--;
        if (counting && m.ok) acks++;
        if (stop && inflight === 0) drained();
        else pump();
      });
    }
  };
  pump();
  await new Promise((r) => setTimeout(r, WARMUP_S * 1000));
  counting = true;
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, TPUT_S * 1000));
  const elapsed = (performance.now() - t0) / 1000;
  counting = false;
  const counted = acks;
  stop = true;
  if (inflight > 0) await Promise.race([done, new Promise((r) => setTimeout(r, 10000))]);
  const errors = c.errors;
  c.close();
  const code = await hub.stop();
  return { acksPerS: counted / elapsed, acks: counted, seconds: elapsed, errors, exit: code };
}

function pct(sorted, p) {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

// Fixed-rate sends: latency from the socket write to the ack.
async function latency(persist) {
  const hub = await startHub(persist);
  const c = await connect(hub);
  // A short warm-up at the same rate, not measured.
  const lat = [];
  let sent = 0;
  let acked = 0;
  const total = Math.round(RATE * LAT_S);
  const warm = Math.round(RATE * Math.min(1, WARMUP_S));
  let measuredSent = 0;
  const start = performance.now();
  let finish;
  const done = new Promise((r) => { finish = r; });
  let maxLag = 0;
  const tick = () => {
    const now = performance.now();
    const due = Math.min(warm + total, Math.floor(((now - start) / 1000) * RATE) + 1);
    if (due - sent > maxLag) maxLag = due - sent;
    while (sent < due) {
      const measured = sent >= warm;
      sent++;
      if (measured) measuredSent++;
      const t = sendMsg(c, (m, tr) => {
        acked++;
        if (measured && m.ok) lat.push(tr - t);
        if (acked === warm + total) finish();
      });
    }
    if (sent < warm + total) setTimeout(tick, 1);
  };
  tick();
  const timedOut = await Promise.race([done.then(() => false),
    new Promise((r) => setTimeout(() => r(true), (WARMUP_S + LAT_S) * 1000 + 15000))]);
  const wall = (performance.now() - start) / 1000;
  const errors = c.errors;
  c.close();
  const code = await hub.stop();
  lat.sort((a, b) => a - b);
  return {
    sent: measuredSent,
    acked: lat.length,
    achievedRate: (warm + total) / wall,
    p50: pct(lat, 50), p90: pct(lat, 90), p99: pct(lat, 99), max: lat[lat.length - 1],
    errors, timedOut, maxLag, exit: code,
  };
}

// ---- main ------------------------------------------------------------------

const RUNS = Math.max(1, num('RUNS', 1));
const f = (x, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
const median = (xs) => { const a = xs.filter(Number.isFinite).sort((x, y) => x - y); return a.length ? a[(a.length - 1) >> 1] : NaN; };
const modes = [['persist', true], ['nopersist', false]];
const runs = { persist: [], nopersist: [] };
console.log(`# chathub=${BIN} window=${WINDOW} tput_s=${TPUT_S} rate=${RATE} lat_s=${LAT_S} size=${SIZE} ` +
  `runs=${RUNS} cpus=${os.cpus().length} loadavg=${os.loadavg().map((x) => x.toFixed(2)).join(',')} node=${process.version}`);
for (let run = 1; run <= RUNS; run++) {
  // Interleaved, so that a noisy moment hits both modes alike.
  for (const [name, persist] of modes) {
    const t = await throughput(persist);
    const l = await latency(persist);
    runs[name].push({ t, l });
    console.log(`# run ${run} ${name}: ${f(t.acksPerS, 0)} acks/s (errors ${t.errors}); at ${f(l.achievedRate, 0)}/s ` +
      `p50 ${f(l.p50, 3)} p90 ${f(l.p90, 3)} p99 ${f(l.p99, 3)} max ${f(l.max, 3)} ms (acked ${l.acked}/${l.sent}, errors ${l.errors})` +
      `${t.exit !== 0 || l.exit !== 0 ? ` hub exit ${t.exit}/${l.exit}` : ''}${l.timedOut ? ' NOT ALL ACKED' : ''}`);
  }
}
const res = {};
for (const [name] of modes) {
  const rs = runs[name];
  res[name] = {
    tput: median(rs.map((r) => r.t.acksPerS)),
    p50: median(rs.map((r) => r.l.p50)),
    p90: median(rs.map((r) => r.l.p90)),
    p99: median(rs.map((r) => r.l.p99)),
    max: median(rs.map((r) => r.l.max)),
    errors: rs.reduce((n, r) => n + r.t.errors + r.l.errors, 0),
  };
  const r = res[name];
  console.log(`${name}_acks_per_s=${f(r.tput, 0)}`);
  for (const k of ['p50', 'p90', 'p99', 'max']) console.log(`${name}_ack_${k}_ms=${f(r[k], 3)}`);
  console.log(`${name}_errors=${r.errors}`);
}
console.log(`persist_vs_nopersist_tput_ratio=${f(res.persist.tput / res.nopersist.tput, 3)}`);
console.log('');
console.log(`| persistence | acked sends/s (1 client, window ${WINDOW}) | ack p50 ms | p90 ms | p99 ms | max ms |`);
console.log('|---|---:|---:|---:|---:|---:|');
for (const [name, label] of [['persist', 'on (SQLite)'], ['nopersist', 'off (--no-persist)']]) {
  const r = res[name];
  console.log(`| ${label} | ${f(r.tput, 0)} | ${f(r.p50, 3)} | ${f(r.p90, 3)} | ${f(r.p99, 3)} | ${f(r.max, 3)} |`);
}
console.log(`\n(throughput over ${TPUT_S} s; latency at ${RATE} sends/s for ${LAT_S} s; ${RUNS > 1 ? `medians of ${RUNS} runs` : 'one run'})`);
const bad = Object.values(runs).some((rs) => rs.some((r) => r.t.acks === 0 || r.l.acked === 0));
process.exit(bad ? 1 : 0);
