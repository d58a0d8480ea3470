// Helpers for the multi-hub tests (tests/cluster/): a private redis-server
// and hubs that share it through the Redis engine (issue 11).
//
// Each test file is one process. Every redis-server it starts runs on a free
// loopback port in its own temporary directory, with the settings
// docs/operations.md recommends (append-only file, fsync on every write, no
// RDB snapshots, noeviction); it is never a system service and it is only
// ever signalled by its PID. Hubs are started with lib.mjs's startServer, so
// they are stopped by PID (SIGTERM, clean exit required) after each test.
// Tests that share one redis-server keep apart by a --redis-prefix each, the
// way two installations share one Redis in production.
//
// When redis-server is not installed, or the hub was built without the
// Redis engine, the file reports a skip and exits 77 (meson's "skipped").
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { assert, buildRequest, chathubBin, httpRequest, startServer, withTimeout } from '../integration/lib.mjs';
import { JClient } from '../protocol/jclient.mjs';

export { assert, JClient };

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------
// Skips: exit 77 before any test runs when the suite cannot run here.

function findRedisServer() {
  const dirs = (process.env.PATH || '').split(':').concat(['/usr/bin', '/usr/sbin', '/usr/local/bin']);
  for (const d of dirs) {
    const p = path.join(d || '.', 'redis-server');
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch { /* next */ }
  }
  return null;
}

const REDIS_SERVER = process.env.REDIS_SERVER || findRedisServer();

function skip(why) {
  console.log(`1..0 # SKIP ${why}`);
  process.exit(77);
}

// Called at the top of each cluster test file.
export function requireCluster() {
  if (!REDIS_SERVER) skip('redis-server is not installed');
  const help = spawnSync(chathubBin(), ['--help'], { encoding: 'utf8' });
  const text = `${help.stdout}${help.stderr}`;
  if (!/--redis\b/.test(text)) skip('this chathub has no --redis flag');
  if (/without hiredis|no Redis engine/i.test(text)) skip('this chathub was built without the Redis engine');
}

// ---------------------------------------------------------------------------
// Free ports and a scratch directory for Redis.

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

let redisScratch = null;
function scratch() {
  if (!redisScratch) redisScratch = fs.mkdtempSync(path.join(os.tmpdir(), 'chathub-cluster-'));
  return redisScratch;
}

const redisProcs = new Set();
process.on('exit', () => {
  for (const p of redisProcs) {
    if (p.exitCode === null && p.signalCode === null) {
      try { process.kill(p.pid, 'SIGKILL'); } catch { /* gone */ }
    }
  }
  if (redisScratch) {
    try { fs.rmSync(redisScratch, { recursive: true, force: true, maxRetries: 3 }); } catch { /* best effort */ }
  }
});

// ---------------------------------------------------------------------------
// A minimal RESP client: one command per connection, for the test's own
// checks (PING, FLUSHALL, INFO), never for anything the hub does.

function parseResp(buf, off = 0) {
  if (buf.length <= off) return null;
  const nl = buf.indexOf('\r\n', off);
  if (nl < 0) return null;
  const type = String.fromCharCode(buf[off]);
  const line = buf.toString('utf8', off + 1, nl);
  const next = nl + 2;
  switch (type) {
    case '+': return { value: line, end: next };
    case '-': return { value: new Error(line), end: next };
    case ':': return { value: Number(line), end: next };
    case '$': {
      const n = Number(line);
      if (n < 0) return { value: null, end: next };
      if (buf.length < next + n + 2) return null;
      return { value: buf.toString('utf8', next, next + n), end: next + n + 2 };
    }
    case '*': {
      const n = Number(line);
      const out = [];
      let o = next;
      for (let i = 0; i < n; i++) {
        const r = parseResp(buf, o);
        if (!r) return null;
        out.push(r.value);
        o = r.end;
      }
      return { value: out, end: o };
    }
    default: throw new Error(`bad RESP reply: ${JSON.stringify(buf.toString('latin1', off, off + 40))}`);
  }
}

// Sends one command to 127.0.0.1:port and resolves with its reply (an
// error reply resolves as an Error object; a refused connect rejects).
export function redisCmd(port, args, timeoutMs = 3000) {
  return withTimeout(new Promise((resolve, reject) => {
    const sock = net.connect({ port, host: '127.0.0.1' });
    let buf = Buffer.alloc(0);
    sock.once('error', reject);
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      try {
        const r = parseResp(buf);
        if (r) { sock.destroy(); resolve(r.value); }
      } catch (e) { sock.destroy(); reject(e); }
    });
    sock.once('connect', () => {
      let s = `*${args.length}\r\n`;
      for (const a of args) s += `$${Buffer.byteLength(String(a))}\r\n${a}\r\n`;
      sock.write(s);
    });
    sock.once('close', () => reject(new Error('redis closed the connection without a reply')));
  }), timeoutMs, `redis ${args[0]} on port ${port} timed out`);
}

// INFO's "used_cpu_sys" + "used_cpu_user" in seconds.
export async function redisCpu(port) {
  const info = await redisCmd(port, ['INFO', 'CPU']);
  const get = (k) => Number((new RegExp(`^${k}:([0-9.]+)`, 'm').exec(info) || [])[1]);
  return get('used_cpu_sys') + get('used_cpu_user');
}

// ---------------------------------------------------------------------------
// redis-server.

export class Redis {
  // Starts redis-server on port (a free one by default) in its own directory.
  // aof: the append-only file with appendfsync always (the settings
  // docs/operations.md gives); false: no persistence at all.
  static async start({ port, aof = true } = {}) {
    const r = new Redis(port || await freePort(), aof);
    await r.restart();
    return r;
  }

  constructor(port, aof) {
    this.port = port;
    this.aof = aof;
    this.dir = fs.mkdtempSync(path.join(scratch(), 'redis-'));
    this.proc = null;
    this.log = '';
    this.url = `redis://127.0.0.1:${port}`;
  }

  alive() { return this.proc !== null && this.proc.exitCode === null && this.proc.signalCode === null; }

  // (Re)starts the server on the same port. fresh: in a new empty directory,
  // so that whatever the old one kept (its AOF) is gone, as after a disk loss.
  async restart({ fresh = false, timeoutMs = 5000 } = {}) {
    assert.ok(!this.alive(), 'redis-server is not running when it is (re)started');
    if (fresh) this.dir = fs.mkdtempSync(path.join(scratch(), 'redis-'));
    const args = ['--port', String(this.port), '--bind', '127.0.0.1', '--dir', this.dir,
      '--save', '', '--daemonize', 'no', '--maxmemory-policy', 'noeviction', '--loglevel', 'warning'];
    if (this.aof) args.push('--appendonly', 'yes', '--appendfsync', 'always');
    else args.push('--appendonly', 'no');
    const proc = spawn(REDIS_SERVER, args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: this.dir });
    redisProcs.add(proc);
    this.proc = proc;
    proc.stdout.setEncoding('utf8').on('data', (d) => { this.log += d; });
    proc.stderr.setEncoding('utf8').on('data', (d) => { this.log += d; });
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (!this.alive()) throw new Error(`redis-server exited at start:\n${this.log}`);
      try {
        if (await redisCmd(this.port, ['PING'], 500) === 'PONG') return;
      } catch { /* not yet */ }
      if (Date.now() > deadline) throw new Error(`redis-server did not answer PING within ${timeoutMs} ms:\n${this.log}`);
      await sleep(25);
    }
  }

  // Sends sig to the server by PID and waits for it to exit.
  async kill(sig = 'SIGKILL', timeoutMs = 5000) {
    const p = this.proc;
    if (!this.alive()) return;
    const exited = new Promise((r) => p.once('exit', r));
    process.kill(p.pid, sig);
    await withTimeout(exited, timeoutMs, `redis-server ${p.pid} did not exit on ${sig}`);
  }

  // Sends sig (SIGSTOP, SIGCONT) by PID without waiting for anything.
  signal(sig) {
    assert.ok(this.alive(), `redis-server is running for ${sig}`);
    process.kill(this.proc.pid, sig);
  }

  cmd(...args) { return redisCmd(this.port, args); }
}

// ---------------------------------------------------------------------------
// Hubs.

let prefixSeq = 0;
// A Redis key prefix of its own for one test (one "installation").
export function newPrefix() {
  prefixSeq++;
  return `t${process.pid}-${prefixSeq}:`;
}

// Starts a hub on the Redis engine: --redis URL(s) --node-id ID
// --redis-prefix P --node-lease S --rate 0 plus args. startServer adds
// --data-dir in a scratch directory. ready: wait for /healthz 200.
export async function startHub(redis, { node, prefix, lease = 1.5, args = [], ready = true } = {}) {
  const urls = Array.isArray(redis) ? redis : [redis];
  const argv = [];
  for (const r of urls) argv.push('--redis', typeof r === 'string' ? r : r.url);
  argv.push('--node-id', node);
  if (prefix) argv.push('--redis-prefix', prefix);
  if (lease !== null) argv.push('--node-lease', String(lease));
  if (!args.some((a) => /^--rate\b/.test(a))) argv.push('--rate', '0');
  argv.push(...args);
  const hub = await startServer(argv);
  hub.node = node;
  if (ready) await waitHealth(hub, 200);
  return hub;
}

// Starts n hubs n1..nn sharing one prefix; resolves with the array.
export async function startHubs(redis, n, opts = {}) {
  const prefix = opts.prefix || newPrefix();
  const hubs = [];
  for (let i = 1; i <= n; i++) hubs.push(await startHub(redis, { ...opts, node: `n${i}`, prefix }));
  return hubs;
}

// GET /healthz: {status, body}.
export async function health(hub) {
  const r = await httpRequest(hub.port, buildRequest('GET', '/healthz', { Connection: 'close' }));
  return { status: r.status, body: r.body.toString('utf8') };
}

// Polls /healthz until it answers status; returns the last answer.
export async function waitHealth(hub, status, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await health(hub);
    if (last.status === status) return last;
    if (Date.now() > deadline) {
      throw new Error(`/healthz of ${hub.node} did not turn ${status} within ${timeoutMs} ms; ` +
        `last: ${last.status} ${JSON.stringify(last.body)}`);
    }
    await sleep(50);
  }
}

// GET /metrics as {name or name{labels}: number}.
export async function metrics(hub) {
  const r = await httpRequest(hub.port, buildRequest('GET', '/metrics', { Connection: 'close' }));
  assert.equal(r.status, 200);
  const out = {};
  for (const line of r.body.toString('utf8').split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^(\S+)\s+(\S+)$/.exec(line);
    if (m) out[m[1]] = Number(m[2]);
  }
  return out;
}

// A metric by name, ignoring labels (the first row with that name).
export function metric(rows, name) {
  for (const [k, v] of Object.entries(rows)) {
    if (k === name || k.startsWith(`${name}{`)) return v;
  }
  return undefined;
}

// Retries fn() until it returns something other than undefined, every
// stepMs, for at most timeoutMs; rejects with what on timeout.
export async function eventually(fn, timeoutMs, what, stepMs = 50) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (e) { last = e; }
    if (Date.now() > deadline) {
      throw new Error(`${what}: not within ${timeoutMs} ms${last ? ` (last error: ${last.message})` : ''}`);
    }
    await sleep(stepMs);
  }
}

// Every message of room through history paging from offset 0, oldest first.
export async function readAll(client, room) {
  const out = [];
  let after = 0;
  for (;;) {
    const r = await client.req('history', { room, after, limit: 100 });
    assert.equal(r.ok, true, `history ${room} after ${after}: ${JSON.stringify(r).slice(0, 300)}`);
    out.push(...r.messages);
    if (r.complete || r.messages.length === 0) return { messages: out, epoch: r.epoch, offset: r.offset };
    after = r.next ? r.next.after : r.messages[r.messages.length - 1].offset;
  }
}
