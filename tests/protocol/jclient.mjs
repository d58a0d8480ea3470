// Helpers for the chathub.v1 protocol tests (docs/protocol.md is the spec).
//
// JClient is a JSON-mode client on top of `ws`. Every incoming frame is
// parsed and kept in `log` in arrival order; replies (objects with "id" and
// no "t") are matched to requests by id, pushes (objects with "t") are
// queued for nextPush()/waitPush(). Nothing asserts on a sleep: "nothing
// arrived" is established with a round trip (barrier()) that the server must
// answer after anything it would have sent before.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import WebSocket from 'ws';
import { assert, cleanup, startServer, withTimeout } from '../integration/lib.mjs';

export { assert };

// Starts a server. Unless the args set --rate, the rate limit is off, so that
// tests that send many requests exercise the protocol, not the limiter (the
// limiter has its own tests with the defaults).
export function start(args = [], opts = {}) {
  const a = [...args];
  if (!a.some((x) => /^--rate\b/.test(x))) a.push('--rate', '0');
  return startServer(a, opts);
}

// A scratch directory removed after the current test.
export function tmpDir() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chathub-proto-'));
  cleanup(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Asserts that obj has exactly these keys (order ignored).
export function keys(obj, expected, what = 'object') {
  assert.equal(typeof obj, 'object', `${what} is an object: ${JSON.stringify(obj)}`);
  assert.notEqual(obj, null, `${what} is not null`);
  assert.deepEqual(Object.keys(obj).sort(), [...expected].sort(),
    `${what} has exactly the keys ${JSON.stringify(expected)}: ${JSON.stringify(obj)}`);
}

// A timestamp in milliseconds since the epoch, near now.
export function assertTs(ts, what = 'ts') {
  assert.ok(Number.isInteger(ts), `${what} is an integer: ${ts}`);
  assert.ok(Math.abs(ts - Date.now()) < 10000, `${what} ${ts} is within 10 s of now (${Date.now()})`);
}

// Asserts an error reply {"id": id, "ok": false, "error": {"code", "message"}}.
export function assertErr(reply, code, id) {
  keys(reply, ['id', 'ok', 'error'], `error reply (expected ${code})`);
  if (id !== undefined) assert.equal(reply.id, id);
  assert.equal(reply.ok, false, `ok is false: ${JSON.stringify(reply)}`);
  keys(reply.error, ['code', 'message'], 'error');
  assert.equal(reply.error.code, code, `error code: ${JSON.stringify(reply)}`);
  assert.equal(typeof reply.error.message, 'string');
  assert.ok(reply.error.message.length > 0, 'error message is not empty');
}

// Asserts an error push {"t": "error", "error": {"code", "message"}}.
export function assertErrPush(push, code) {
  keys(push, ['t', 'error'], `error push (expected ${code})`);
  assert.equal(push.t, 'error');
  keys(push.error, ['code', 'message'], 'error');
  assert.equal(push.error.code, code, `error code: ${JSON.stringify(push)}`);
  assert.equal(typeof push.error.message, 'string');
  assert.ok(push.error.message.length > 0, 'error message is not empty');
}

// Asserts a message as stored/pushed: {offset, ts, from, text[, cmid]}.
export function assertStored(m, { offset, from, text, cmid } = {}) {
  keys(m, cmid === undefined ? ['offset', 'ts', 'from', 'text'] : ['offset', 'ts', 'from', 'text', 'cmid'],
    'history message');
  if (offset !== undefined) assert.equal(m.offset, offset);
  assert.ok(Number.isInteger(m.offset) && m.offset >= 1, `offset ${m.offset}`);
  assertTs(m.ts);
  if (from !== undefined) assert.equal(m.from, from);
  if (text !== undefined) assert.equal(m.text, text);
  if (cmid !== undefined) assert.equal(m.cmid, cmid);
}

export class JClient {
  // Opens a chathub.v1 WebSocket and waits for the welcome push (kept in
  // .welcome, not queued). With nick, also says hello (reply in .hello).
  static async open(server, { nick, path: p = '/ws', localAddress, protocols = 'chathub.v1', timeoutMs = 5000 } = {}) {
    const ws = new WebSocket(server.wsUrl(p), protocols, {
      perMessageDeflate: false,
      handshakeTimeout: timeoutMs,
      ...(localAddress ? { localAddress } : {}),
    });
    const c = new JClient(ws);
    await withTimeout(new Promise((resolve, reject) => {
      ws.once('upgrade', (res) => { c.response = res; });
      ws.once('open', resolve);
      ws.once('error', reject);
      ws.once('unexpected-response', (req, res) => reject(new Error(`upgrade refused: HTTP ${res.statusCode}`)));
    }), timeoutMs, 'JSON client did not open').catch((e) => { c.terminate(); throw e; });
    assert.equal(ws.protocol, 'chathub.v1', 'the server selected chathub.v1');
    c.welcome = await c.nextPush(timeoutMs);
    assert.equal(c.welcome.t, 'welcome', `the first message is the welcome push: ${JSON.stringify(c.welcome)}`);
    if (nick !== undefined) {
      c.hello = await c.req('hello', { nick });
      assert.equal(c.hello.ok, true, `hello ${nick}: ${JSON.stringify(c.hello)}`);
      c.nick = nick;
      c.id = c.hello.client;
    }
    return c;
  }

  constructor(ws) {
    this.ws = ws;
    this.nextId = 1000;
    this.log = [];        // every message received, in order: {kind: 'reply'|'push'|'bad', msg, raw}
    this.pushes = [];     // pushes not yet consumed
    this.replies = new Map(); // id -> reply (first one)
    this.replyCount = new Map();
    this.waiters = [];
    this.closeInfo = null;
    this.binary = 0;
    this.closed = new Promise((resolve) => {
      ws.on('close', (code, reason) => {
        this.closeInfo = { code, reason: reason.toString() };
        resolve(this.closeInfo);
        this.wake();
      });
    });
    ws.on('error', () => { /* surfaced through close */ });
    ws.on('message', (data, isBinary) => {
      if (isBinary) {
        this.binary++;
        this.log.push({ kind: 'bad', raw: data, msg: null });
        this.wake();
        return;
      }
      const raw = data.toString('utf8');
      let m;
      try {
        m = JSON.parse(raw);
      } catch {
        this.log.push({ kind: 'bad', raw, msg: null });
        this.wake();
        return;
      }
      if (m !== null && typeof m === 'object' && !Array.isArray(m) && m.t === undefined && m.id !== undefined) {
        this.log.push({ kind: 'reply', raw, msg: m });
        if (!this.replies.has(m.id)) this.replies.set(m.id, m);
        this.replyCount.set(m.id, (this.replyCount.get(m.id) || 0) + 1);
      } else {
        this.log.push({ kind: 'push', raw, msg: m });
        this.pushes.push(m);
      }
      this.wake();
    });
    cleanup(() => this.terminate());
  }

  wake() {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  // Waits until fn() returns something other than undefined.
  async until(fn, timeoutMs, what) {
    for (;;) {
      const v = fn();
      if (v !== undefined) return v;
      if (this.closeInfo) throw new Error(`connection closed (${this.closeInfo.code} ${this.closeInfo.reason}) while waiting for ${what}`);
      await withTimeout(new Promise((r) => this.waiters.push(r)), timeoutMs,
        `timed out after ${timeoutMs} ms waiting for ${what}; pushes queued: ${JSON.stringify(this.pushes).slice(0, 600)}`);
    }
  }

  // Sends a raw text frame (string) or an object as JSON.
  sendRaw(x) {
    this.ws.send(typeof x === 'string' ? x : JSON.stringify(x));
  }

  // Sends {op, id, ...fields} and resolves with the reply.
  async req(op, fields = {}, timeoutMs = 5000) {
    const id = this.nextId++;
    this.sendRaw({ op, id, ...fields });
    return this.reply(id, timeoutMs);
  }

  // Sends {op, id, ...fields} without waiting; returns the id.
  fire(op, fields = {}) {
    const id = this.nextId++;
    this.sendRaw({ op, id, ...fields });
    return id;
  }

  reply(id, timeoutMs = 5000) {
    return this.until(() => this.replies.get(id), timeoutMs, `the reply to #${id}`);
  }

  // The next push in arrival order.
  nextPush(timeoutMs = 5000) {
    return this.until(() => (this.pushes.length ? this.pushes.shift() : undefined), timeoutMs, 'a push');
  }

  // The first queued push matching pred (others stay queued).
  waitPush(pred, timeoutMs = 5000, what = 'a matching push') {
    return this.until(() => {
      const i = this.pushes.findIndex(pred);
      return i >= 0 ? this.pushes.splice(i, 1)[0] : undefined;
    }, timeoutMs, what);
  }

  // Takes every queued push matching pred.
  takePushes(pred = () => true) {
    const out = this.pushes.filter(pred);
    this.pushes = this.pushes.filter((m) => !pred(m));
    return out;
  }

  // A round trip: a ping with an id. Anything the server sent this client
  // before it read the ping arrives before the reply. Returns the reply.
  async barrier() {
    const r = await this.req('ping');
    assert.equal(r.ok, true);
    await this.waitPush((m) => m.t === 'pong');
    return r;
  }

  // Asserts that no push matching pred is queued after a barrier.
  async assertNoPush(pred = () => true, what = 'push') {
    await this.barrier();
    const got = this.pushes.filter(pred);
    assert.deepEqual(got, [], `no ${what} expected`);
  }

  join(room, fields = {}) { return this.req('join', { room, ...fields }); }

  async joinOk(room, fields = {}) {
    const r = await this.join(room, fields);
    assert.equal(r.ok, true, `join ${room}: ${JSON.stringify(r)}`);
    return r;
  }

  async sendOk(room, text, fields = {}) {
    const r = await this.req('send', { room, text, ...fields });
    assert.equal(r.ok, true, `send to ${room}: ${JSON.stringify(r).slice(0, 300)}`);
    return r;
  }

  waitClose(timeoutMs = 5000) {
    return withTimeout(this.closed, timeoutMs, `connection not closed within ${timeoutMs} ms`);
  }

  close(code, reason) { try { this.ws.close(code, reason); } catch { /* already */ } }

  terminate() { try { this.ws.terminate(); } catch { /* already */ } }
}

// Opens n hello'd clients named prefix-<i>, in parallel batches.
export async function openMany(server, n, prefix, { batch = 20, addrs, ...opts } = {}) {
  const out = [];
  for (let i = 0; i < n; i += batch) {
    const ps = [];
    for (let j = i; j < Math.min(n, i + batch); j++) {
      ps.push(JClient.open(server, {
        nick: `${prefix}-${j}`,
        ...(addrs ? { localAddress: addrs[j % addrs.length] } : {}),
        ...opts,
      }));
    }
    out.push(...await Promise.all(ps));
  }
  return out;
}
