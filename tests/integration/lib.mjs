// Shared helpers for chathub's integration tests.
//
// Each test file is its own process (one meson test) and starts its own
// servers. This module gives it:
//   - test(name, fn, {timeout}): a tiny sequential runner printing TAP-style
//     "ok"/"not ok" lines; the process exits 1 if any test failed;
//   - startServer(args): runs $CHATHUB_BIN on 127.0.0.1 with an OS-chosen
//     port and waits for its "listening on http://..." line;
//   - runChathub(args): runs the binary to completion (for CLI checks);
//   - RawHttp / httpRequest: exact bytes over `net`, responses parsed by hand;
//   - wsConnect: a `ws` client whose messages are awaited with next(timeout);
//   - encodeFrame / FrameParser: minimal client-side WebSocket framing.
// Every wait has a timeout; nothing asserts on a sleep. Every child process
// started here is killed by PID if the test file ends or times out.
//
// With CHATHUB_TEST_TLS=1 (the wss variants registered in tests/meson.build)
// every server started here speaks TLS with a throwaway certificate made
// with `openssl req` when the file starts, and RawHttp, httpRequest,
// wsConnect and wsUrl speak TLS to it, trusting exactly that certificate:
// the same test file then runs over wss:// unchanged.
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import tls from 'node:tls';
import crypto from 'node:crypto';
import assert from 'node:assert/strict';
import WebSocket from 'ws';

export { assert, WebSocket };

const FILE_TIMEOUT_MS = Number(process.env.CHATHUB_TEST_FILE_TIMEOUT_MS || 110000);
const DEFAULT_TEST_TIMEOUT_MS = 30000;

// ---------------------------------------------------------------------------
// Child processes: every one we start is tracked so it can be killed by PID.

const children = new Set();

function killChildren() {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) {
      try { process.kill(child.pid, 'SIGKILL'); } catch { /* already gone */ }
    }
  }
}

// Servers run in a scratch directory of this test process, each with its own
// history directory, so no state leaks between tests or into the tree.
let scratchDir = null;
function scratch() {
  if (!scratchDir) scratchDir = fs.mkdtempSync(path.join(os.tmpdir(), 'chathub-test-'));
  return scratchDir;
}

process.on('exit', () => {
  killChildren();
  if (scratchDir) {
    try { fs.rmSync(scratchDir, { recursive: true, force: true, maxRetries: 3 }); } catch { /* best effort */ }
  }
});
process.on('unhandledRejection', (err) => {
  console.log(`# warning: unhandled rejection: ${String(err && err.stack || err).replace(/\n/g, '\n# ')}`);
});

// The TLS variant: the throwaway certificate, or null without TLS.
export const testTls = process.env.CHATHUB_TEST_TLS === '1' ? makeTestCert() : null;

function makeTestCert() {
  const dir = fs.mkdtempSync(path.join(scratch(), 'tls-'));
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256',
    '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'], { stdio: 'pipe' });
  fs.chmodSync(key, 0o600);
  return { cert, key, pem: fs.readFileSync(cert) };
}

export function chathubBin() {
  const bin = process.env.CHATHUB_BIN;
  if (!bin) throw new Error('CHATHUB_BIN is not set (run the tests through meson test)');
  return bin;
}

// Resolves when child exits, with {code, signal}; rejects after timeoutMs.
function waitExit(child, timeoutMs) {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  }
  return withTimeout(new Promise((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
  }), timeoutMs, `process ${child.pid} did not exit within ${timeoutMs} ms`);
}

export function withTimeout(promise, ms, message) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(message || `timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// Runs chathub with args until it exits. Returns {code, signal, stdout, stderr}.
export async function runChathub(args, { timeoutMs = 10000 } = {}) {
  const child = spawn(chathubBin(), args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: scratch() });
  children.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d) => { stdout += d; });
  child.stderr.setEncoding('utf8').on('data', (d) => { stderr += d; });
  const spawned = new Promise((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', reject);
  });
  await spawned;
  try {
    const { code, signal } = await waitExit(child, timeoutMs);
    // Let the pipes drain: 'close' follows 'exit' once stdio has ended.
    await withTimeout(new Promise((r) => (child.stdout.readableEnded && child.stderr.readableEnded
      ? r() : child.once('close', r))), 2000, 'stdio did not close');
    return { code, signal, stdout, stderr };
  } catch (err) {
    try { process.kill(child.pid, 'SIGKILL'); } catch { /* gone */ }
    err.message += `\nstdout: ${stdout}\nstderr: ${stderr}`;
    throw err;
  } finally {
    children.delete(child);
  }
}

// Starts a server: chathub --host 127.0.0.1 --port 0 --data-dir TMP ...args
// (no --data-dir when args hold --data-dir or --no-persist). Resolves with
// {url, host, port, proc, output(), stop(signal)} once the startup line shows.
// stop() sends the signal (SIGTERM by default), waits for the exit and
// resolves with the exit code (or the signal name if it died of one).
export async function startServer(args = [], { timeoutMs = 10000, host = '127.0.0.1' } = {}) {
  const argv = ['--host', host, '--port', '0'];
  if (!args.some((a) => /^--(data-dir|no-persist)\b/.test(a))) {
    argv.push('--data-dir', fs.mkdtempSync(path.join(scratch(), 'data-')));
  }
  argv.push(...args);
  // CHATHUB_EXTRA_ARGS (space-separated) reruns whole suites with another
  // setting, e.g. CHATHUB_EXTRA_ARGS="--deflate off"; a case's own args come
  // after it and win.
  if (process.env.CHATHUB_EXTRA_ARGS) {
    argv.splice(argv.length - args.length, 0, ...process.env.CHATHUB_EXTRA_ARGS.split(/\s+/).filter(Boolean));
  }
  if (testTls) argv.push('--tls-cert', testTls.cert, '--tls-key', testTls.key);
  const proc = spawn(chathubBin(), argv, { stdio: ['ignore', 'pipe', 'pipe'], cwd: scratch() });
  children.add(proc);
  let stdout = '';
  let stderr = '';
  proc.stderr.setEncoding('utf8').on('data', (d) => { stderr += d; });
  proc.stdout.setEncoding('utf8');
  const output = () => `--- chathub ${argv.join(' ')} (pid ${proc.pid})\n` +
    `--- stdout:\n${stdout}--- stderr:\n${stderr}`;

  const started = new Promise((resolve, reject) => {
    proc.stdout.on('data', (d) => {
      stdout += d;
      const m = (testTls ? /listening on (https:\/\/\S+)/ : /listening on (http:\/\/\S+)/)
        .exec(stdout);
      if (m) resolve(m[1]);
    });
    proc.once('error', reject);
    proc.once('exit', (code, signal) =>
      reject(new Error(`chathub exited (code ${code}, signal ${signal}) before listening\n${output()}`)));
  });
  let url;
  try {
    url = await withTimeout(started, timeoutMs, `chathub did not print its URL within ${timeoutMs} ms`);
  } catch (err) {
    try { process.kill(proc.pid, 'SIGKILL'); } catch { /* gone */ }
    children.delete(proc);
    if (!err.message.includes('--- stdout')) err.message += '\n' + output();
    throw err;
  }
  const u = new URL(url);
  const port = Number(u.port);
  const server = {
    url,
    host: u.hostname,
    port,
    proc,
    output,
    wsUrl: (path = '/') => `${testTls ? 'wss' : 'ws'}://${u.hostname}:${port}${path}`,
    alive: () => proc.exitCode === null && proc.signalCode === null,
    async stop(signal = 'SIGTERM', stopTimeoutMs = 5000) {
      if (server.alive()) {
        try { process.kill(proc.pid, signal); } catch { /* gone */ }
      }
      try {
        const { code, signal: sig } = await waitExit(proc, stopTimeoutMs);
        return code !== null ? code : sig;
      } catch (err) {
        try { process.kill(proc.pid, 'SIGKILL'); } catch { /* gone */ }
        throw err;
      } finally {
        children.delete(proc);
      }
    },
  };
  servers.add(server);
  return server;
}

// Servers still running when a test ends are stopped. After a passing test
// each gets SIGTERM and must exit 0 (a clean shutdown, loop closed with no
// live handles); after a failing one it is killed and its output shown.
// Returns an Error when a server did not shut down cleanly.
const servers = new Set();

async function reapServers(failed) {
  let error = null;
  for (const s of servers) {
    if (s.alive() && !failed) {
      let code;
      try {
        code = await s.stop('SIGTERM', 15000);
      } catch (err) {
        code = `no exit (${err.message})`;
      }
      if (code !== 0 && !error) {
        error = new Error(`chathub pid ${s.proc.pid} did not shut down cleanly on SIGTERM ` +
          `at the end of the test: exit ${code}`);
        failed = true;
      }
    }
    if (failed) console.log(s.output().replace(/^/gm, '# '));
    if (s.alive()) {
      try { await s.stop('SIGKILL', 3000); } catch { /* reported by the test */ }
    }
    children.delete(s.proc);
  }
  servers.clear();
  return error;
}

// ---------------------------------------------------------------------------
// Runner.

const tests = [];
let scheduled = false;
const cleanups = [];

// Registers fn to run after the current test, pass or fail (close sockets...).
export function cleanup(fn) { cleanups.push(fn); }

// CHATHUB_TEST_FILTER=text runs only the cases whose name contains text
// (the others are reported as skipped), for working on one case by hand.
const FILTER = process.env.CHATHUB_TEST_FILTER || '';

export function test(name, fn, { timeout = DEFAULT_TEST_TIMEOUT_MS, skip = false } = {}) {
  if (FILTER && !skip && !name.includes(FILTER)) skip = `CHATHUB_TEST_FILTER=${FILTER}`;
  tests.push({ name, fn, timeout, skip });
  if (!scheduled) {
    scheduled = true;
    setImmediate(runAll);
  }
}

async function runAll() {
  const watchdog = setTimeout(() => {
    console.log(`not ok - file-level timeout of ${FILE_TIMEOUT_MS} ms reached`);
    killChildren();
    process.exit(1);
  }, FILE_TIMEOUT_MS);
  watchdog.unref();

  console.log(`1..${tests.length}`);
  let failed = 0;
  let n = 0;
  for (const t of tests) {
    n++;
    if (t.skip) {
      console.log(`ok ${n} - ${t.name} # SKIP ${typeof t.skip === 'string' ? t.skip : ''}`);
      continue;
    }
    const t0 = Date.now();
    let error = null;
    try {
      await withTimeout(Promise.resolve().then(t.fn), t.timeout,
        `test timed out after ${t.timeout} ms`);
    } catch (err) {
      error = err;
    }
    while (cleanups.length) {
      const fn = cleanups.pop();
      try { await fn(); } catch { /* best effort */ }
    }
    const reapError = await reapServers(error !== null);
    if (!error && reapError) error = reapError;
    const ms = Date.now() - t0;
    if (error) {
      failed++;
      console.log(`not ok ${n} - ${t.name} (${ms} ms)`);
      console.log(String(error && error.stack || error).replace(/^/gm, '# '));
    } else {
      console.log(`ok ${n} - ${t.name} (${ms} ms)`);
    }
  }
  clearTimeout(watchdog);
  console.log(`# ${tests.length - failed} passed, ${failed} failed`);
  killChildren();
  process.exit(failed ? 1 : 0);
}

// ---------------------------------------------------------------------------
// Raw HTTP over `net`.

// Parses the response head in buf (a Buffer that holds at least the head).
// Returns null if the head is not complete yet.
export function parseHead(buf) {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return null;
  const text = buf.subarray(0, end).toString('latin1');
  const lines = text.split('\r\n');
  const m = /^HTTP\/(\d)\.(\d) (\d{3})(?: (.*))?$/.exec(lines[0]);
  if (!m) throw new Error(`bad status line: ${JSON.stringify(lines[0])}`);
  const headers = {};
  const headerList = [];
  for (const line of lines.slice(1)) {
    const i = line.indexOf(':');
    if (i <= 0) throw new Error(`bad header line: ${JSON.stringify(line)}`);
    const name = line.slice(0, i).trim().toLowerCase();
    const value = line.slice(i + 1).trim();
    headerList.push([name, value]);
    headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
  }
  return {
    status: Number(m[3]),
    reason: m[4] || '',
    version: `${m[1]}.${m[2]}`,
    statusLine: lines[0],
    headers,
    headerList,
    headLength: end + 4,
  };
}

// One TCP connection for sending exact bytes and reading responses.
export class RawHttp {
  static connect(port, host = '127.0.0.1', timeoutMs = 5000) {
    return withTimeout(new Promise((resolve, reject) => {
      const sock = testTls
        ? tls.connect({ port, host, ca: testTls.pem, servername: 'localhost' })
        : net.connect({ port, host });
      sock.once(testTls ? 'secureConnect' : 'connect', () => {
        sock.off('error', reject);
        resolve(new RawHttp(sock));
      });
      sock.once('error', reject);
    }), timeoutMs, `connect to ${host}:${port} timed out`);
  }

  constructor(sock) {
    this.sock = sock;
    this.buf = Buffer.alloc(0);
    this.ended = false;     // the peer sent FIN
    this.closed = false;    // the socket is fully closed
    this.error = null;
    this.waiters = [];
    sock.setNoDelay(true);
    sock.on('data', (d) => { this.buf = Buffer.concat([this.buf, d]); this.wake(); });
    sock.on('end', () => { this.ended = true; this.wake(); });
    sock.on('close', () => { this.closed = true; this.ended = true; this.wake(); });
    sock.on('error', (e) => { this.error = e; this.wake(); });
    cleanup(() => this.destroy());
  }

  wake() {
    const ws = this.waiters;
    this.waiters = [];
    for (const w of ws) w();
  }

  // Waits until pred() returns a non-undefined value; rejects on timeout.
  async until(pred, timeoutMs, what) {
    for (;;) {
      const v = pred();
      if (v !== undefined) return v;
      if (this.closed || this.ended || this.error) {
        const v2 = pred();
        if (v2 !== undefined) return v2;
        throw new Error(`connection ${this.error ? 'failed (' + this.error.message + ')' : 'closed'} ` +
          `while waiting for ${what}; received so far: ${JSON.stringify(this.buf.toString('latin1').slice(0, 400))}`);
      }
      await withTimeout(new Promise((r) => this.waiters.push(r)), timeoutMs,
        `timed out after ${timeoutMs} ms waiting for ${what}; received so far: ` +
        JSON.stringify(this.buf.toString('latin1').slice(0, 400)));
    }
  }

  write(bytes) {
    return new Promise((resolve, reject) => {
      this.sock.write(typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes,
        (err) => (err ? reject(err) : resolve()));
    });
  }

  // Reads one response. noBody: the request was HEAD (or the status has no
  // body). Without Content-Length the body runs to the end of the connection.
  // Returns {status, reason, headers, headerList, body (Buffer), raw}.
  async readResponse({ noBody = false, timeoutMs = 5000 } = {}) {
    const head = await this.until(() => parseHead(this.buf) || undefined, timeoutMs, 'a response head');
    const hasNoBody = noBody || head.status === 204 || head.status === 304 ||
      (head.status >= 100 && head.status < 200);
    let bodyLen;
    if (hasNoBody) {
      bodyLen = 0;
    } else if (head.headers['transfer-encoding']) {
      if (!/^chunked$/i.test(head.headers['transfer-encoding'])) {
        throw new Error(`unexpected Transfer-Encoding: ${head.headers['transfer-encoding']}`);
      }
      return this.readChunked(head, timeoutMs);
    } else if (head.headers['content-length'] !== undefined) {
      bodyLen = Number(head.headers['content-length']);
      if (!Number.isInteger(bodyLen) || bodyLen < 0) throw new Error('bad Content-Length');
    } else {
      await this.until(() => (this.ended ? true : undefined), timeoutMs, 'the end of a body without length');
      bodyLen = this.buf.length - head.headLength;
    }
    await this.until(() => (this.buf.length >= head.headLength + bodyLen ? true : undefined),
      timeoutMs, `a body of ${bodyLen} bytes`);
    const raw = this.buf.subarray(0, head.headLength + bodyLen);
    const body = this.buf.subarray(head.headLength, head.headLength + bodyLen);
    this.buf = this.buf.subarray(head.headLength + bodyLen);
    return { ...head, body, raw };
  }

  // Reads a chunked body after head (trailers are skipped).
  async readChunked(head, timeoutMs) {
    let off = head.headLength;
    const parts = [];
    for (;;) {
      const lineEnd = await this.until(() => {
        const i = this.buf.indexOf('\r\n', off);
        return i >= 0 ? i : undefined;
      }, timeoutMs, 'a chunk size line');
      const size = parseInt(this.buf.subarray(off, lineEnd).toString('latin1'), 16);
      if (!Number.isInteger(size) || size < 0) throw new Error('bad chunk size');
      off = lineEnd + 2;
      if (size === 0) {
        const end = await this.until(() => {
          const i = this.buf.indexOf('\r\n\r\n', off - 2);
          return i >= 0 ? i + 4 : undefined;
        }, timeoutMs, 'the end of a chunked body');
        const raw = this.buf.subarray(0, end);
        this.buf = this.buf.subarray(end);
        return { ...head, body: Buffer.concat(parts), raw };
      }
      await this.until(() => (this.buf.length >= off + size + 2 ? true : undefined),
        timeoutMs, `a chunk of ${size} bytes`);
      parts.push(Buffer.from(this.buf.subarray(off, off + size)));
      off += size + 2;
    }
  }

  // Resolves true once the peer has closed (FIN or reset) and nothing more
  // arrived; rejects if it stays open for timeoutMs.
  async waitClosed(timeoutMs = 5000) {
    await this.until(() => (this.ended ? true : undefined), timeoutMs, 'the server to close the connection');
    return true;
  }

  // Takes n raw bytes (for WebSocket frames after a 101).
  async readBytes(n, timeoutMs = 5000) {
    await this.until(() => (this.buf.length >= n ? true : undefined), timeoutMs, `${n} bytes`);
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  // Reads one server WebSocket frame: {fin, opcode, payload}.
  async readFrame(timeoutMs = 5000) {
    const parsed = await this.until(() => {
      const f = decodeFrame(this.buf);
      return f || undefined;
    }, timeoutMs, 'a WebSocket frame');
    this.buf = this.buf.subarray(parsed.length);
    return parsed;
  }

  destroy() { this.sock.destroy(); }
}

// Connects, sends request bytes, reads one response, closes. For HEAD pass noBody.
export async function httpRequest(port, request, { noBody = false, timeoutMs = 5000 } = {}) {
  const c = await RawHttp.connect(port);
  try {
    await c.write(request);
    return await c.readResponse({ noBody, timeoutMs });
  } finally {
    c.destroy();
  }
}

// Builds a request: method, path, headers object (in order), optional body.
export function buildRequest(method, path, headers = {}, body = '') {
  let s = `${method} ${path} HTTP/1.1\r\n`;
  const h = { Host: '127.0.0.1', ...headers };
  for (const [k, v] of Object.entries(h)) {
    if (v !== undefined && v !== null) s += `${k}: ${v}\r\n`;
  }
  return s + '\r\n' + body;
}

// A valid Sec-WebSocket-Key (base64 of 16 random bytes).
export function wsKey(bytes = 16) {
  return crypto.randomBytes(bytes).toString('base64');
}

export function wsAccept(key) {
  return crypto.createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
}

// The headers of a valid upgrade request.
export function upgradeHeaders(key = wsKey(), extra = {}) {
  return {
    Upgrade: 'websocket',
    Connection: 'Upgrade',
    'Sec-WebSocket-Key': key,
    'Sec-WebSocket-Version': '13',
    ...extra,
  };
}

// ---------------------------------------------------------------------------
// Minimal WebSocket framing for raw-socket tests.

// A client frame (masked, as RFC 6455 requires of clients).
export function encodeFrame(opcode, payload, { fin = true, mask = true } = {}) {
  const data = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : Buffer.from(payload);
  const len = data.length;
  let header;
  if (len < 126) {
    header = Buffer.alloc(2);
    header[1] = len;
  } else if (len < 65536) {
    header = Buffer.alloc(4);
    header[1] = 126;
    header.writeUInt16BE(len, 2);
  } else {
    header = Buffer.alloc(10);
    header[1] = 127;
    header.writeBigUInt64BE(BigInt(len), 2);
  }
  header[0] = (fin ? 0x80 : 0) | opcode;
  if (!mask) return Buffer.concat([header, data]);
  header[1] |= 0x80;
  const key = crypto.randomBytes(4);
  const masked = Buffer.alloc(len);
  for (let i = 0; i < len; i++) masked[i] = data[i] ^ key[i & 3];
  return Buffer.concat([header, key, masked]);
}

// Decodes one frame at the start of buf, or returns null if incomplete.
// Returns {fin, rsv, opcode, masked, payload, length (bytes used)}; throws
// on a length no JavaScript number can hold.
export function decodeFrame(buf) {
  if (buf.length < 2) return null;
  const fin = (buf[0] & 0x80) !== 0;
  const rsv = (buf[0] >> 4) & 7;
  const opcode = buf[0] & 0x0f;
  const masked = (buf[1] & 0x80) !== 0;
  let len = buf[1] & 0x7f;
  let off = 2;
  if (len === 126) {
    if (buf.length < 4) return null;
    len = buf.readUInt16BE(2);
    off = 4;
  } else if (len === 127) {
    if (buf.length < 10) return null;
    const big = buf.readBigUInt64BE(2);
    if (big > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`frame claims length ${big}`);
    len = Number(big);
    off = 10;
  }
  let key = null;
  if (masked) {
    if (buf.length < off + 4) return null;
    key = buf.subarray(off, off + 4);
    off += 4;
  }
  if (buf.length < off + len) return null;
  const payload = Buffer.from(buf.subarray(off, off + len));
  if (key) for (let i = 0; i < len; i++) payload[i] ^= key[i & 3];
  return { fin, rsv, opcode, masked, payload, length: off + len };
}

// ---------------------------------------------------------------------------
// WebSocket client on top of `ws`.

// A connected client. next(timeoutMs) resolves with the next message
// {data: string|Buffer, binary: boolean, text: string}; closed resolves with
// {code, reason} once the connection ends.
export class Client {
  constructor(ws) {
    this.ws = ws;
    this.queue = [];
    this.waiters = [];
    this.closeInfo = null;
    this.closed = new Promise((resolve) => {
      ws.on('close', (code, reason) => {
        this.closeInfo = { code, reason: reason.toString() };
        resolve(this.closeInfo);
        this.flushWaiters();
      });
    });
    ws.on('message', (data, isBinary) => {
      const buf = Buffer.isBuffer(data) ? data : Buffer.concat(data);
      const msg = isBinary ? { data: buf, binary: true, text: null } :
        { data: buf.toString('utf8'), binary: false, text: buf.toString('utf8') };
      const w = this.waiters.shift();
      if (w) w.resolve(msg); else this.queue.push(msg);
    });
    ws.on('error', () => { /* surfaced through close */ });
    cleanup(() => this.terminate());
  }

  flushWaiters() {
    const ws = this.waiters;
    this.waiters = [];
    for (const w of ws) {
      w.reject(new Error(`connection closed (code ${this.closeInfo.code}) while waiting for a message`));
    }
  }

  next(timeoutMs = 5000) {
    if (this.queue.length) return Promise.resolve(this.queue.shift());
    if (this.closeInfo) {
      return Promise.reject(new Error(`connection closed (code ${this.closeInfo.code}) while waiting for a message`));
    }
    let waiter;
    const p = new Promise((resolve, reject) => {
      waiter = { resolve, reject };
      this.waiters.push(waiter);
    });
    return withTimeout(p, timeoutMs, `no message within ${timeoutMs} ms`).catch((err) => {
      const i = this.waiters.indexOf(waiter);
      if (i >= 0) this.waiters.splice(i, 1);
      throw err;
    });
  }

  // Next message, which must be text; returns the string.
  async nextText(timeoutMs = 5000) {
    const m = await this.next(timeoutMs);
    if (m.binary) throw new Error(`expected a text message, got ${m.data.length} binary bytes`);
    return m.text;
  }

  send(data, opts = {}) {
    return new Promise((resolve, reject) => {
      this.ws.send(data, opts, (err) => (err ? reject(err) : resolve()));
    });
  }

  waitClose(timeoutMs = 5000) {
    return withTimeout(this.closed, timeoutMs, `connection not closed within ${timeoutMs} ms`);
  }

  close(code, reason) { try { this.ws.close(code, reason); } catch { /* already */ } }

  terminate() { try { this.ws.terminate(); } catch { /* already */ } }
}

// Opens a WebSocket; resolves with a Client once open. The upgrade's HTTP
// response is on client.response.
// localAddress picks the source address (any 127.x.y.z works on Linux).
export function wsConnect(url, { protocols, headers, timeoutMs = 5000, maxPayload, localAddress } = {}) {
  if (testTls) url = String(url).replace(/^ws:/, 'wss:');
  const ws = new WebSocket(url, protocols, {
    headers,
    ...(testTls ? { ca: testTls.pem, servername: 'localhost' } : {}),
    ...(localAddress ? { localAddress } : {}),
    perMessageDeflate: false,
    handshakeTimeout: timeoutMs,
    ...(maxPayload ? { maxPayload } : {}),
  });
  const client = new Client(ws);
  return withTimeout(new Promise((resolve, reject) => {
    ws.once('upgrade', (res) => { client.response = res; });
    ws.once('open', () => resolve(client));
    ws.once('unexpected-response', (req, res) => {
      reject(new Error(`upgrade refused: HTTP ${res.statusCode}`));
      req.destroy();
    });
    ws.once('error', reject);
  }), timeoutMs, `WebSocket ${url} did not open within ${timeoutMs} ms`).catch((err) => {
    client.terminate();
    throw err;
  });
}

// A chathub.v1 client on s (a startServer result) at path: the welcome is
// read (and kept as c.welcome), then c.req(obj) sends obj with the next id
// and resolves with its reply; pushes that come in between are kept, and
// c.push(pred) resolves with the first kept or later push pred accepts.
export async function jsonOpen(s, urlPath = '/ws') {
  const c = await wsConnect(s.wsUrl(urlPath), { protocols: 'chathub.v1' });
  c.welcome = JSON.parse(await c.nextText());
  assert.equal(c.welcome.t, 'welcome');
  c.pushes = [];
  c.seq = 0;
  c.req = async (obj) => {
    const id = ++c.seq;
    await c.send(JSON.stringify({ ...obj, id }));
    for (;;) {
      const m = JSON.parse(await c.nextText());
      if (m.id === id) return m;
      c.pushes.push(m);
    }
  };
  c.push = async (pred) => {
    const i = c.pushes.findIndex(pred);
    if (i >= 0) return c.pushes.splice(i, 1)[0];
    for (;;) {
      const m = JSON.parse(await c.nextText());
      if (pred(m)) return m;
      c.pushes.push(m);
    }
  };
  return c;
}
