// Raw-socket WebSocket client helpers for the conformance and abuse tests.
//
// Everything here speaks RFC 6455 by hand over `net` (through lib.mjs's
// RawHttp): frames are built byte by byte (any opcode, RSV bits, FIN, mask
// or no mask, 7/16/64-bit length encodings), and the server's frames are
// decoded strictly (RSV bits, mask bit, control-frame rules are checked).
// The `ws` library is only used for observers and "is the server still
// serving" probes, never for the peer under test.
import crypto from 'node:crypto';
import fs from 'node:fs';
import {
  assert, RawHttp, buildRequest, upgradeHeaders, wsKey, wsAccept, wsConnect, withTimeout,
  httpRequest, test, decodeFrame,
} from '../integration/lib.mjs';

export const OP = { CONT: 0x0, TEXT: 0x1, BINARY: 0x2, CLOSE: 0x8, PING: 0x9, PONG: 0xa };

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------
// Seeded PRNG (mulberry32) so that "random" tests are reproducible.

export function prng(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)), // inclusive
    bytes: (n) => {
      const b = Buffer.alloc(n);
      for (let i = 0; i < n; i++) b[i] = Math.floor(next() * 256);
      return b;
    },
  };
}

// ---------------------------------------------------------------------------
// Frames.

// A client frame. opts: fin (true), rsv (0..7, the RSV1..3 bits as 4|2|1),
// mask (true), maskKey (4 bytes, random by default), len: 'auto' (minimal
// encoding), 7, 16 or 64 (force that encoding), lenValue (a length to claim
// instead of the real one, e.g. with the top bit set).
export function frame(opcode, payload = Buffer.alloc(0), opts = {}) {
  const { fin = true, rsv = 0, mask = true, len = 'auto' } = opts;
  const data = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : Buffer.from(payload);
  const n = data.length;
  let enc = len;
  if (enc === 'auto') enc = n < 126 ? 7 : n < 65536 ? 16 : 64;
  let header;
  if (enc === 7) {
    if (n > 125) throw new Error('7-bit length cannot hold ' + n);
    header = Buffer.alloc(2);
    header[1] = n;
  } else if (enc === 16) {
    if (n > 65535) throw new Error('16-bit length cannot hold ' + n);
    header = Buffer.alloc(4);
    header[1] = 126;
    header.writeUInt16BE(n, 2);
  } else {
    header = Buffer.alloc(10);
    header[1] = 127;
    header.writeBigUInt64BE(opts.lenValue !== undefined ? BigInt(opts.lenValue) : BigInt(n), 2);
  }
  header[0] = (fin ? 0x80 : 0) | ((rsv & 7) << 4) | (opcode & 0x0f);
  if (!mask) return Buffer.concat([header, data]);
  header[1] |= 0x80;
  const key = opts.maskKey ? Buffer.from(opts.maskKey) : crypto.randomBytes(4);
  const masked = Buffer.alloc(n);
  for (let i = 0; i < n; i++) masked[i] = data[i] ^ key[i & 3];
  return Buffer.concat([header, key, masked]);
}

export const text = (s, o) => frame(OP.TEXT, s, o);
export const binary = (b, o) => frame(OP.BINARY, b, o);
export const cont = (b, o) => frame(OP.CONT, b, o);
export const ping = (b = '', o) => frame(OP.PING, b, o);
export const pong = (b = '', o) => frame(OP.PONG, b, o);

// A close frame: code (number or null for an empty body), reason (string or
// Buffer), or body (raw bytes) to send any payload at all.
export function close(code = null, reason = '', opts = {}) {
  let body;
  if (opts.body !== undefined) {
    body = Buffer.from(opts.body);
  } else if (code === null) {
    body = Buffer.alloc(0);
  } else {
    const r = typeof reason === 'string' ? Buffer.from(reason, 'utf8') : Buffer.from(reason);
    body = Buffer.alloc(2 + r.length);
    body.writeUInt16BE(code, 0);
    r.copy(body, 2);
  }
  return frame(OP.CLOSE, body, opts);
}

// Decodes one server frame at the start of buf (null if incomplete): the
// shared decoder, which also reports the reserved bits.
export const parseFrame = decodeFrame;

// Checks that a server frame obeys RFC 6455 (section 5): unmasked, no RSV
// bits (no extension was negotiated), a known opcode, and control frames
// unfragmented with at most 125 bytes.
export function checkServerFrame(f) {
  assert.equal(f.masked, false, 'server frames must not be masked (RFC 6455 5.1)');
  assert.equal(f.rsv, 0, 'server frame has RSV bits set without an extension (RFC 6455 5.2)');
  assert.ok([0, 1, 2, 8, 9, 10].includes(f.opcode), `server sent reserved opcode ${f.opcode}`);
  if (f.opcode >= 8) {
    assert.equal(f.fin, true, 'server control frame fragmented (RFC 6455 5.5)');
    assert.ok(f.payload.length <= 125, `server control frame of ${f.payload.length} bytes (RFC 6455 5.5)`);
  }
}

// Parses a close payload: {code (null if empty), reason}. Asserts that what
// the server sent is a valid close body (RFC 6455 5.5.1, 7.4).
export function parseClose(payload) {
  if (payload.length === 0) return { code: null, reason: '' };
  assert.notEqual(payload.length, 1, 'server close frame with a 1-byte body');
  const code = payload.readUInt16BE(0);
  assert.ok(validCloseCode(code), `server sent close code ${code}, which may not be sent on the wire`);
  const r = payload.subarray(2);
  assert.ok(validUtf8(r), `server close reason is not UTF-8: ${r.toString('hex')}`);
  return { code, reason: r.toString('utf8') };
}

// Codes an endpoint may put in a close frame (RFC 6455 7.4.1, 7.4.2 and the
// IANA registry: 1000-1003, 1007-1011 (1012-1014 registered later), 3000-4999).
export function validCloseCode(code) {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
    (code >= 3000 && code <= 4999);
}

export function validUtf8(buf) {
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(buf);
    return true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------
// A raw WebSocket peer.

let peerSeq = 0;

export class WsPeer {
  // Opens a raw-mode WebSocket on path. opts.headers adds/overrides request
  // headers; opts.split writes the request one byte at a time.
  static async open(port, path, opts = {}) {
    const c = await RawHttp.connect(port);
    const key = wsKey();
    const req = buildRequest('GET', path, { ...upgradeHeaders(key), ...(opts.headers || {}) });
    if (opts.split) {
      for (const b of Buffer.from(req, 'latin1')) await c.write(Buffer.from([b]));
    } else {
      await c.write(req);
    }
    const r = await c.readResponse({ noBody: true, timeoutMs: opts.timeoutMs || 5000 });
    if (r.status !== 101) {
      c.destroy();
      throw new Error(`upgrade of ${path} refused: ${r.statusLine}`);
    }
    assert.equal(r.headers['sec-websocket-accept'], wsAccept(key), 'Sec-WebSocket-Accept');
    assert.match(r.headers.upgrade || '', /^websocket$/i, 'Upgrade: websocket in the 101');
    const p = new WsPeer(c, r);
    p.id = ++peerSeq;
    return p;
  }

  constructor(conn, response) {
    this.c = conn;
    this.response = response;
    this.frames = []; // every frame received, for diagnostics
  }

  get ended() { return this.c.ended; }

  write(bytes) { return this.c.write(bytes); }

  // Writes bytes in pieces of `chunk` bytes, each its own write; pauseMs
  // between writes (0: only yield to the event loop).
  async writeSplit(bytes, chunk = 1, pauseMs = 0) {
    for (let i = 0; i < bytes.length; i += chunk) {
      await this.c.write(bytes.subarray(i, i + chunk));
      if (pauseMs > 0) await sleep(pauseMs); else await new Promise((r) => setImmediate(r));
    }
  }

  // The next frame from the server, checked against the RFC.
  async readFrame(timeoutMs = 5000) {
    const f = await this.c.until(() => parseFrame(this.c.buf) || undefined, timeoutMs,
      'a WebSocket frame from the server');
    this.c.buf = this.c.buf.subarray(f.length);
    checkServerFrame(f);
    this.frames.push({ opcode: f.opcode, fin: f.fin, len: f.payload.length });
    return f;
  }

  // The next complete data message, reassembling fragments. Control frames
  // received meanwhile are collected in this.controls (pings are answered).
  // Returns {opcode, payload}. A close frame here is an error (with its code).
  async readMessage(timeoutMs = 5000) {
    const deadline = Date.now() + timeoutMs;
    let first = null;
    const parts = [];
    for (;;) {
      const f = await this.readFrame(Math.max(1, deadline - Date.now()));
      if (f.opcode === OP.CLOSE) {
        const { code, reason } = parseClose(f.payload);
        throw new Error(`expected a data message, got close ${code} ${JSON.stringify(reason)}`);
      }
      if (f.opcode === OP.PING) {
        await this.write(pong(f.payload));
        continue;
      }
      if (f.opcode === OP.PONG) {
        (this.pongs ||= []).push(f.payload);
        continue;
      }
      if (first === null) {
        assert.notEqual(f.opcode, OP.CONT, 'server sent a continuation frame without a start');
        first = f.opcode;
      } else {
        assert.equal(f.opcode, OP.CONT, 'server started a new message inside a fragmented one');
      }
      parts.push(f.payload);
      if (f.fin) {
        const payload = Buffer.concat(parts);
        if (first === OP.TEXT) assert.ok(validUtf8(payload), 'server text message is not valid UTF-8');
        return { opcode: first, payload };
      }
    }
  }

  // Expects the next frame to be a pong carrying payload.
  async expectPong(payload, timeoutMs = 5000) {
    const f = await this.readFrame(timeoutMs);
    assert.equal(f.opcode, OP.PONG, `expected a pong, got opcode ${f.opcode}`);
    assert.ok(f.payload.equals(Buffer.from(payload)),
      `pong payload differs: sent ${Buffer.from(payload).length} bytes, got ${f.payload.length}`);
  }

  // Expects the next message to be exactly (opcode, payload).
  async expectEcho(opcode, payload, timeoutMs = 5000) {
    const m = await this.readMessage(timeoutMs);
    const want = Buffer.from(payload);
    assert.equal(m.opcode, opcode, `expected opcode ${opcode}, got ${m.opcode}`);
    assert.equal(m.payload.length, want.length, 'echo length');
    assert.ok(m.payload.equals(want), 'echo bytes identical');
  }

  // Expects the server's close frame (no data frame before it), then the
  // end of the TCP connection from the server's side within tcpTimeoutMs
  // (without our close reply: a failed connection is dropped at once, RFC
  // 6455 7.1.7). codes: a number, an array of allowed codes, or null for an
  // empty body. skipData: data frames before the close are allowed. Returns {code, reason, tcpMs}.
  async expectClose(codes, { timeoutMs = 5000, tcpTimeoutMs = 3000, reply = false, skipData = false } = {}) {
    const allowed = Array.isArray(codes) ? codes : [codes];
    let f;
    for (;;) {
      f = await this.readFrame(timeoutMs);
      if (f.opcode === OP.PONG) continue; // an answer to an earlier ping
      if (skipData && f.opcode < 8) continue; // data the caller does not care about
      break;
    }
    assert.equal(f.opcode, OP.CLOSE,
      `expected close ${allowed.join('/')}, got a frame with opcode ${f.opcode} ` +
      `(${f.payload.length} bytes: ${JSON.stringify(f.payload.subarray(0, 60).toString('latin1'))})`);
    const info = parseClose(f.payload);
    assert.ok(allowed.includes(info.code),
      `expected close code ${allowed.join(' or ')}, got ${info.code} ${JSON.stringify(info.reason)}`);
    if (reply) await this.write(close(info.code === null ? null : 1000)).catch(() => {});
    const t0 = Date.now();
    await this.c.until(() => (this.c.ended ? true : undefined), tcpTimeoutMs,
      `the server to close the TCP connection after its close frame (${info.code})`);
    // Nothing may follow a close frame (RFC 6455 5.5.1).
    const rest = this.c.buf.length;
    assert.equal(rest, 0, `${rest} bytes arrived after the server's close frame`);
    return { ...info, tcpMs: Date.now() - t0 };
  }

  // Asserts that no frame arrives within ms (and the connection stays open).
  async expectSilence(ms) {
    await sleep(ms);
    if (this.c.buf.length > 0) {
      const f = parseFrame(this.c.buf);
      assert.fail(`expected nothing, got ${f ? `a frame with opcode ${f.opcode}` : `${this.c.buf.length} bytes`}`);
    }
    assert.equal(this.c.ended, false, 'the server closed the connection');
  }

  async waitTcpEnd(timeoutMs = 3000) {
    await this.c.until(() => (this.c.ended ? true : undefined), timeoutMs, 'the server to close the TCP connection');
  }

  destroy() { this.c.destroy(); }
}

// ---------------------------------------------------------------------------
// Server probes.

let probeSeq = 0;

// The server still serves: a fresh `ws` client in a room of its own chats.
export async function assertServing(server, label = '') {
  assert.ok(server.alive(), `the server process is gone ${label}\n${server.output()}`);
  const room = `/ws/alive-${process.pid}-${++probeSeq}`;
  const a = await wsConnect(server.wsUrl(room), { timeoutMs: 5000 });
  try {
    const msg = `still serving ${probeSeq}`;
    await a.send(msg);
    assert.equal(await a.nextText(5000), msg, `the server stopped relaying ${label}`);
  } finally {
    a.terminate();
  }
}

// GET path over a fresh connection; returns {status, body (string)}.
export async function get(port, path, timeoutMs = 5000) {
  const r = await httpRequest(port, buildRequest('GET', path, { Connection: 'close' }), { timeoutMs });
  return { status: r.status, headers: r.headers, body: r.body.toString('utf8') };
}

// Parses Prometheus text into {name{labels}: value} and checks its format.
export function parseMetrics(textBody) {
  const out = {};
  for (const line of textBody.split('\n')) {
    if (line === '' || line.startsWith('#')) {
      if (line.startsWith('# TYPE')) {
        assert.match(line, /^# TYPE [a-zA-Z_:][a-zA-Z0-9_:]* (counter|gauge|histogram|summary|untyped)$/,
          `bad TYPE line ${JSON.stringify(line)}`);
      }
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (-?[0-9.eE+]+|NaN|[+-]Inf)$/.exec(line);
    assert.ok(m, `not a Prometheus sample line: ${JSON.stringify(line)}`);
    out[m[1] + (m[2] || '')] = Number(m[3]);
  }
  return out;
}

export async function metrics(port) {
  const r = await get(port, '/metrics');
  assert.equal(r.status, 200, '/metrics status');
  return parseMetrics(r.body);
}

// Sum of a metric over all label sets (or one exact series with labels).
export function metric(m, name) {
  if (name in m) return m[name];
  let sum = 0;
  let found = false;
  for (const [k, v] of Object.entries(m)) {
    if (k === name || k.startsWith(name + '{')) { sum += v; found = true; }
  }
  return found ? sum : undefined;
}

// VmRSS of pid in KiB.
export function rssKiB(pid) {
  const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /VmRSS:\s+(\d+) kB/.exec(s);
  return m ? Number(m[1]) : NaN;
}

// Polls fn() until it returns a truthy value; rejects after timeoutMs.
export async function eventually(fn, timeoutMs, what, stepMs = 50) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`${what} not reached within ${timeoutMs} ms (last: ${last && last.message || JSON.stringify(last)})`);
    }
    await sleep(stepMs);
  }
}

// ---------------------------------------------------------------------------
// Runner wrapper: counts cases that passed and prints "N cases passed" at
// the end (lib.mjs's runner prints its own TAP lines and totals too).

let casesPassed = 0;
let casesTotal = 0;
process.on('exit', () => {
  console.log(`# ${casesPassed} cases passed (of ${casesTotal})`);
});

export function testCase(name, fn, opts = {}) {
  const timeout = opts.timeout || 30000;
  casesTotal++;
  test(name, async () => {
    const t0 = Date.now();
    await fn();
    if (Date.now() - t0 <= timeout) casesPassed++;
  }, { timeout });
}

export { assert, wsConnect, withTimeout, RawHttp, buildRequest, upgradeHeaders, wsKey, httpRequest };
