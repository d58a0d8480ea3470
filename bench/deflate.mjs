#!/usr/bin/env node
// permessage-deflate fan-out bench: the hub's CPU per delivery and the bytes
// on the wire per delivery, compressed against uncompressed, side by side in
// one run (issue 16: CPU <= 1.3x, bytes <= 0.5x).
//
//   node bench/deflate.mjs [--bin build/chathub] [--subs 1000] [--messages 1000]
//                          [--rate 50] [--size 1024] [--runs 1] [--text words|prose]
//
// Each run starts a fresh hub (on CPU 0 through taskset when there is one)
// and fills one raw-mode room with --subs subscribers, then publishes
// --messages distinct chat-like lines of --size bytes at --rate per second
// (so --subs x --rate deliveries per second are offered) and waits until
// every subscriber has every line. The "compressed" pass differs from the
// "uncompressed" one only in the subscribers' and the sender's handshake,
// which offers permessage-deflate; the hub is the same binary with the same
// flags.
//
// --text words (default): lines of common English words and punctuation
// drawn at random from a 150-word vocabulary; --text prose: 1 KiB slices of
// the project's own documentation (README.md and docs/*.md), natural English.
// Both are distinct per line, and every line is compressed on its own (no
// context takeover), which is what bounds the ratio.
//
// The subscribers are raw TCP sockets that parse frame headers and count
// bytes (socket.bytesRead), so the load generator stays cheap; they never
// inflate. One `ws` client with perMessageDeflate (or without, in the
// uncompressed pass) checks that every line arrives intact. CPU is the
// hub's utime + stime from /proc/<pid>/stat between the first line sent and
// the last delivery; bytes are what the subscribers read in that time.
// Figures, never a pass/fail: the ratios are printed beside their targets.
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import crypto from 'node:crypto';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(path.join(root, 'tests', 'package.json'));
const WebSocket = require('ws');

const opt = { bin: process.env.CHATHUB_BIN || path.join(root, 'build', 'chathub'),
  subs: 1000, messages: 1000, rate: 50, size: 1024, runs: 1, text: 'words' };
for (let i = 2; i < process.argv.length; i += 2) {
  const k = process.argv[i].replace(/^--/, '');
  if (!(k in opt)) { console.error(`unknown option ${process.argv[i]}`); process.exit(2); }
  opt[k] = k === 'bin' || k === 'text' ? process.argv[i + 1] : Number(process.argv[i + 1]);
}

const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK']).toString()) || 100;
const hasTaskset = fs.existsSync('/usr/bin/taskset');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Chat-like text: common words, some capitals and punctuation, from a
// seeded generator, so every line is different but reads like chat.
const WORDS = ('the be to of and a in that have I it for not on with he as you do at this but his ' +
  'by from they we say her she or an will my one all would there their what so up out if about ' +
  'who get which go me when make can like time no just him know take people into year your good ' +
  'some could them see other than then now look only come its over think also back after use two ' +
  'how our work first well way even new want because any these give day most us room chat hello ' +
  'thanks ok lunch meeting today tomorrow server build test deploy').split(' ');
function chatLine(len, seed) {
  let s = (seed * 2654435761) >>> 0;
  const rnd = (n) => { s = (Math.imul(s, 1103515245) + 12345) >>> 0; return (s >>> 8) % n; };
  let out = '';
  let start = true;
  while (out.length < len) {
    let w = WORDS[rnd(WORDS.length)];
    if (start) { w = w[0].toUpperCase() + w.slice(1); start = false; }
    out += w;
    const p = rnd(14);
    if (p === 0) { out += '. '; start = true; } else if (p === 1) { out += ', '; } else if (p === 2) {
      out += '? '; start = true;
    } else out += ' ';
  }
  return out.slice(0, len);
}

// English prose: the project's documentation with its whitespace folded,
// cut into lines that start at different offsets.
let prose = null;
function proseLine(len, seed) {
  if (prose === null) {
    const files = [path.join(root, 'README.md'),
      ...fs.readdirSync(path.join(root, 'docs')).filter((f) => f.endsWith('.md')).sort()
        .map((f) => path.join(root, 'docs', f))];
    prose = files.map((f) => fs.readFileSync(f, 'utf8')).join(' ').replace(/\s+/g, ' ');
  }
  const start = (seed * 7919) % Math.max(1, prose.length - len);
  return Buffer.from(prose.slice(start, start + len * 2)).subarray(0, len).toString('utf8')
    .replace(/\uFFFD+$/, '');
}
const makeLine = (len, seed) => (opt.text === 'prose' ? proseLine(len, seed) : chatLine(len, seed));

function cpuSeconds(pid) {
  const st = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / CLK_TCK; // utime, stime
}

async function startHub() {
  const args = ['--host', '127.0.0.1', '--port', '0', '--no-persist', '--rate', '0',
    '--max-conns-per-ip', '0', '--max-output', String(64 << 20), '--soft-output', String(64 << 20),
    '--ping-interval', '3600', '--pong-timeout', '3000', '--log-level', 'warn'];
  const proc = hasTaskset ? spawn('taskset', ['-c', '0', opt.bin, ...args]) : spawn(opt.bin, args);
  let out = '';
  const port = await new Promise((resolve, reject) => {
    proc.stdout.on('data', (d) => {
      out += d;
      const m = /listening on http:\/\/[^:]+:(\d+)\//.exec(out);
      if (m) resolve(Number(m[1]));
    });
    proc.stderr.on('data', (d) => process.stderr.write(d));
    proc.once('exit', (c) => reject(new Error(`chathub exited (${c}) before listening`)));
  });
  return { proc, port };
}

// A raw subscriber: handshake, then frame headers counted, payloads skipped.
function subscriber(port, room, deflate) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    const sub = { sock, frames: 0, compressed: 0, hdr: [], skip: 0, open: false };
    let head = Buffer.alloc(0);
    sock.setNoDelay(true);
    sock.once('error', reject);
    sock.on('connect', () => {
      sock.write(`GET /ws/${room} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\n` +
        'Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n' +
        `Sec-WebSocket-Key: ${crypto.randomBytes(16).toString('base64')}\r\n` +
        (deflate ? 'Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n' : '') +
        '\r\n');
    });
    const onFrames = (buf, i) => {
      const n = buf.length;
      while (i < n) {
        if (sub.skip > 0) {
          const k = Math.min(sub.skip, n - i);
          sub.skip -= k;
          i += k;
          continue;
        }
        sub.hdr.push(buf[i++]);
        const h = sub.hdr;
        if (h.length < 2) continue;
        const l7 = h[1] & 127;
        const need = l7 === 126 ? 4 : l7 === 127 ? 10 : 2;
        if (h.length < need) continue;
        let len = l7;
        if (l7 === 126) len = (h[2] << 8) | h[3];
        else if (l7 === 127) { len = 0; for (let j = 2; j < 10; j++) len = len * 256 + h[j]; }
        const op = h[0] & 15;
        if (op === 1 || op === 2) {
          sub.frames++;
          if (h[0] & 0x40) sub.compressed++;
        }
        sub.skip = len;
        sub.hdr = [];
      }
    };
    sock.on('data', (d) => {
      if (sub.open) { onFrames(d, 0); return; }
      head = Buffer.concat([head, d]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      const text = head.subarray(0, end).toString('latin1');
      if (!/^HTTP\/1\.1 101/.test(text)) { reject(new Error(`upgrade refused: ${text.split('\r\n')[0]}`)); return; }
      const negotiated = /\r\nSec-WebSocket-Extensions: permessage-deflate/i.test(text);
      if (negotiated !== deflate) { reject(new Error(`deflate negotiated: ${negotiated}, wanted ${deflate}`)); return; }
      sub.open = true;
      resolve(sub);
      onFrames(head, end + 4);
    });
  });
}

function wsClient(port, room, deflate) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/ws/${room}`, { perMessageDeflate: deflate });
  const c = { ws, got: [] };
  ws.on('message', (d) => c.got.push(d.toString()));
  return new Promise((resolve, reject) => { ws.once('open', () => resolve(c)); ws.once('error', reject); });
}

async function pass(deflate) {
  const hub = await startHub();
  try {
    const room = 'bench';
    const subs = [];
    for (let i = 0; i < opt.subs; i += 100) {
      const batch = [];
      for (let j = i; j < Math.min(opt.subs, i + 100); j++) batch.push(subscriber(hub.port, room, deflate));
      subs.push(...await Promise.all(batch));
    }
    const sender = await wsClient(hub.port, room, deflate);
    const checker = await wsClient(hub.port, room, deflate);
    const members = opt.subs + 2;
    const total = () => subs.reduce((a, s) => a + s.frames, 0);
    const waitAll = async (n, what) => {
      const deadline = Date.now() + 120000;
      while (total() < n * opt.subs || checker.got.length < n) {
        if (Date.now() > deadline) throw new Error(`${what}: ${total()} of ${n * opt.subs} delivered`);
        await sleep(20);
      }
    };
    // Warm-up: a few lines, delivered to all, not measured.
    const WARM = 20;
    for (let i = 0; i < WARM; i++) sender.ws.send(makeLine(opt.size, 1e6 + i));
    await waitAll(WARM, 'warm-up');
    const lines = [];
    for (let i = 0; i < opt.messages; i++) lines.push(makeLine(opt.size, i + 1));
    const bytes0 = subs.reduce((a, s) => a + s.sock.bytesRead, 0);
    const frames0 = total();
    const compressed0 = subs.reduce((a, s) => a + s.compressed, 0);
    const cpu0 = cpuSeconds(hub.proc.pid);
    const t0 = Date.now();
    let sent = 0;
    while (sent < opt.messages) {
      const due = Math.min(opt.messages, Math.floor(((Date.now() - t0) / 1000) * opt.rate) + 1);
      while (sent < due) sender.ws.send(lines[sent++]);
      await sleep(5);
    }
    await waitAll(WARM + opt.messages, 'measured run');
    const cpu = cpuSeconds(hub.proc.pid) - cpu0;
    const wall = (Date.now() - t0) / 1000;
    const subDeliveries = total() - frames0;
    const bytes = subs.reduce((a, s) => a + s.sock.bytesRead, 0) - bytes0;
    const compressedFrames = subs.reduce((a, s) => a + s.compressed, 0) - compressed0;
    const intact = checker.got.slice(WARM).every((t, i) => t === lines[i]);
    const deliveries = opt.messages * members;
    for (const s of subs) s.sock.destroy();
    sender.ws.terminate();
    checker.ws.terminate();
    return {
      deflate, cpu, wall, deliveries, cpuPerDelivery: cpu / deliveries,
      bytesPerDelivery: bytes / subDeliveries, compressedShare: compressedFrames / subDeliveries,
      intact,
    };
  } finally {
    hub.proc.kill('SIGTERM');
    await new Promise((r) => (hub.proc.exitCode !== null ? r() : hub.proc.once('exit', r)));
  }
}

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };

console.log(`# deflate bench: ${opt.subs} subscribers + sender + checker in one raw room, ` +
  `${opt.messages} distinct ${opt.size}-byte lines at ${opt.rate}/s ` +
  `(${opt.rate * (opt.subs + 2)} deliveries/s offered), hub on ${hasTaskset ? 'CPU 0' : 'any CPU'}, ${opt.runs} run(s)`);
console.log(`# text: ${opt.text}; sample line: ${JSON.stringify(makeLine(opt.size, 1).slice(0, 100))}...`);
const plainRuns = [];
const zRuns = [];
for (let r = 0; r < opt.runs; r++) {
  // Alternate the order so that drift on a shared machine does not favour one.
  const order = r % 2 ? [true, false] : [false, true];
  for (const d of order) {
    const res = await pass(d);
    (d ? zRuns : plainRuns).push(res);
    console.log(`run ${r + 1} ${d ? 'compressed  ' : 'uncompressed'}: cpu=${res.cpu.toFixed(2)}s wall=${res.wall.toFixed(1)}s ` +
      `deliveries=${res.deliveries} cpu_per_delivery_us=${(res.cpuPerDelivery * 1e6).toFixed(3)} ` +
      `wire_bytes_per_delivery=${res.bytesPerDelivery.toFixed(1)} compressed_frames=${(res.compressedShare * 100).toFixed(1)}% ` +
      `intact=${res.intact}`);
  }
}
const pc = median(plainRuns.map((r) => r.cpuPerDelivery));
const zc = median(zRuns.map((r) => r.cpuPerDelivery));
const pb = median(plainRuns.map((r) => r.bytesPerDelivery));
const zb = median(zRuns.map((r) => r.bytesPerDelivery));
const row = (name, p, z, unit, target) => console.log(
  `${name.padEnd(34)} ${p.padStart(12)} ${z.padStart(12)} ${(Number(z) / Number(p)).toFixed(2).padStart(7)}x   ${target}${unit}`);
console.log('');
console.log(`${'figure (median)'.padEnd(34)} ${'uncompressed'.padStart(12)} ${'compressed'.padStart(12)} ${'ratio'.padStart(8)}   target`);
row('CPU per delivery (us)', (pc * 1e6).toFixed(3), (zc * 1e6).toFixed(3), '', '<= 1.3x');
if (opt.runs > 1) {
  // On a machine shared with other jobs, interference only ever adds CPU
  // time: the least disturbed run of each is shown too.
  const mn = (rs) => Math.min(...rs.map((r) => r.cpuPerDelivery));
  row('CPU per delivery (us), min of runs', (mn(plainRuns) * 1e6).toFixed(3), (mn(zRuns) * 1e6).toFixed(3), '', '<= 1.3x');
}
row('bytes on the wire per delivery', pb.toFixed(1), zb.toFixed(1), '', '<= 0.5x');
if (![...plainRuns, ...zRuns].every((r) => r.intact)) {
  console.log('WARNING: the checker saw a line that differs from what was sent');
  process.exitCode = 1;
}
