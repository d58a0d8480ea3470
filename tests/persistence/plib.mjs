// Helpers shared by the persistence tests (tests/persistence/*.mjs), on top
// of tests/integration/lib.mjs (runner, server start, cleanup by PID).
//
//   - JsonClient: a chathub.v1 client whose requests are answered by id and
//     whose pushes are kept in order (waitPush with a timeout);
//   - flood(): pipelines N sends with cmids through a window and records,
//     per message, whether it was written to the socket and its ack;
//   - pageHistory(): pages a room with `history` after=last, limit 100;
//   - checkStored(): the invariants every test of a stream checks;
//   - tempDir(), rng(), sleep().
// Every wait has a timeout. Nothing here starts a process.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { WebSocket, withTimeout, cleanup, assert } from '../integration/lib.mjs';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// A fresh directory under the system temp dir, removed after the test.
export function tempDir(tag = 'persist') {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), `chathub-${tag}-`));
  cleanup(() => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

// mulberry32: a small seeded PRNG so that a failing run can be replayed.
export function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// The seed: $CHATHUB_TEST_SEED if set, else a new one. Printed by the caller.
export function seedFromEnv() {
  const s = process.env.CHATHUB_TEST_SEED;
  if (s !== undefined && s !== '') return Number(s) >>> 0;
  return (Date.now() ^ (process.pid << 16)) >>> 0;
}

export class JsonClient {
  static async connect(url, { timeoutMs = 5000 } = {}) {
    const c = new JsonClient(url);
    await withTimeout(c.opened, timeoutMs, `WebSocket ${url} did not open within ${timeoutMs} ms`);
    const w = await c.waitPush((p) => p.t === 'welcome', timeoutMs);
    c.welcome = w;
    return c;
  }

  constructor(url) {
    this.ws = new WebSocket(url, ['chathub.v1'], { perMessageDeflate: false });
    this.nextId = 1;
    this.pending = new Map();   // id -> {resolve, reject}
    this.pushes = [];           // every push, in arrival order
    this.log = [];              // every message (replies and pushes), in arrival order
    this.pushWaiters = [];
    this.onReply = null;        // optional hook: (reply) => void, before resolving
    this.onPush = null;         // optional hook: (push) => void
    this.closeInfo = null;
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', resolve);
      this.ws.once('error', reject);
      this.ws.once('unexpected-response', (req, res) => reject(new Error(`upgrade refused: HTTP ${res.statusCode}`)));
    });
    this.closed = new Promise((resolve) => {
      this.ws.on('close', (code, reason) => {
        this.closeInfo = { code, reason: reason.toString() };
        for (const [, p] of this.pending) p.reject(new Error(`connection closed (code ${code}) before the reply`));
        this.pending.clear();
        for (const w of this.pushWaiters.splice(0)) w.check(true);
        resolve(this.closeInfo);
      });
    });
    this.ws.on('error', () => { /* surfaced through close */ });
    this.ws.on('message', (data, isBinary) => {
      if (isBinary) throw new Error('binary frame in JSON mode');
      const text = Buffer.isBuffer(data) ? data.toString('utf8') : Buffer.concat(data).toString('utf8');
      const m = JSON.parse(text);
      this.log.push(m);
      if (m.id !== undefined && this.pending.has(m.id)) {
        const p = this.pending.get(m.id);
        this.pending.delete(m.id);
        if (this.onReply) this.onReply(m);
        p.resolve(m);
        return;
      }
      this.pushes.push(m);
      if (this.onPush) this.onPush(m);
      for (const w of this.pushWaiters.slice()) w.check(false);
    });
    cleanup(() => this.terminate());
  }

  // Sends a request with a fresh id; resolves with the reply (ok or not).
  request(obj, timeoutMs = 10000) {
    const id = this.nextId++;
    const p = new Promise((resolve, reject) => this.pending.set(id, { resolve, reject }));
    this.ws.send(JSON.stringify({ ...obj, id }));
    return withTimeout(p, timeoutMs, `no reply to ${JSON.stringify(obj).slice(0, 200)} within ${timeoutMs} ms`);
  }

  // Like request, but the reply must be ok.
  async ok(obj, timeoutMs) {
    const r = await this.request(obj, timeoutMs);
    if (r.ok !== true) throw new Error(`request ${JSON.stringify(obj).slice(0, 200)} failed: ${JSON.stringify(r)}`);
    return r;
  }

  // Resolves with the first push (already received or coming) matching pred.
  waitPush(pred, timeoutMs = 5000, what = 'a push') {
    const found = this.pushes.find(pred);
    if (found) return Promise.resolve(found);
    let w;
    const p = new Promise((resolve, reject) => {
      w = {
        check: (closing) => {
          const f = this.pushes.find(pred);
          if (f) { resolve(f); this.pushWaiters.splice(this.pushWaiters.indexOf(w), 1); return; }
          if (closing) reject(new Error(`connection closed while waiting for ${what}`));
        },
      };
      this.pushWaiters.push(w);
    });
    return withTimeout(p, timeoutMs, `no ${what} within ${timeoutMs} ms`).finally(() => {
      const i = this.pushWaiters.indexOf(w);
      if (i >= 0) this.pushWaiters.splice(i, 1);
    });
  }

  // A round trip through the connection: everything the server sent before
  // the pong has arrived once this resolves.
  async sync(timeoutMs = 5000) {
    await this.ok({ op: 'ping' }, timeoutMs);
  }

  waitClose(timeoutMs = 5000) {
    return withTimeout(this.closed, timeoutMs, `connection not closed within ${timeoutMs} ms`);
  }

  get open() { return this.ws.readyState === WebSocket.OPEN; }

  terminate() { try { this.ws.terminate(); } catch { /* gone */ } }
}

// The text of message i of a run: self-describing and checksummed, so that a
// stored text that was cut, swapped or garbled is recognised.
export function msgText(run, i, size = 0) {
  const head = `${run}|${i}|`;
  let body = '';
  let x = (i * 2654435761) >>> 0;
  const want = Math.max(0, size - head.length - 9);
  while (body.length < want) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    body += 'abcdefghijklmnopqrstuvwxyz0123456789'[x % 36];
  }
  const sum = crc(head + body);
  return `${head}${body}|${sum}`;
}

function crc(s) {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) { h ^= s.charCodeAt(i); h = Math.imul(h, 0x01000193) >>> 0; }
  return h.toString(16).padStart(8, '0');
}

export const msgCmid = (run, i) => `${run}-${i}`;

// Pipelines sends of messages [0, n) to room with a window of requests in
// flight. Returns a state object: sent[i] (written), ack[i] (the ok reply),
// err[i] (an error reply), and done (a promise that resolves when every
// message was answered, the connection closed, or stop() was called and the
// in-flight ones settled). hooks.onAck(state, i, reply) runs on each ack,
// hooks.shouldStop() is checked before each send.
export function flood(client, { room, run, n, window = 50, size = 0, indices = null, hooks = {} }) {
  const order = indices || Array.from({ length: n }, (_, i) => i);
  const st = {
    sent: new Map(), ack: new Map(), err: new Map(), failed: new Map(),
    acked: 0, next: 0, inflight: 0, stopped: false, order,
  };
  let finish;
  st.done = new Promise((r) => { finish = r; });
  const settle = () => {
    if (st.inflight === 0 && (st.stopped || st.next >= order.length || !client.open)) finish(st);
  };
  st.stop = () => { st.stopped = true; settle(); };
  const pump = () => {
    while (!st.stopped && client.open && st.inflight < window && st.next < order.length) {
      if (hooks.shouldStop && hooks.shouldStop(st)) { st.stopped = true; break; }
      const i = order[st.next++];
      st.inflight++;
      st.sent.set(i, Date.now());
      client.request({ op: 'send', room, text: msgText(run, i, size), cmid: msgCmid(run, i) }, 60000)
        .then((r) => {
          st.inflight--;
          if (r.ok) {
            st.ack.set(i, r);
            st.acked++;
            if (hooks.onAck) hooks.onAck(st, i, r);
          } else {
            st.err.set(i, r);
          }
          pump();
          settle();
        }, (e) => {
          st.inflight--;
          st.failed.set(i, e.message);
          settle();
        });
    }
    settle();
  };
  client.closed.then(() => settle());
  pump();
  return st;
}

// Pages every kept message of room: history after=<last seen>, limit 100,
// until complete. Returns {epoch, offset, messages, pages}.
export async function pageHistory(client, room, { after = 0, limit = 100 } = {}) {
  const out = [];
  let epoch = null;
  let offset = null;
  let pages = 0;
  for (;;) {
    const r = await client.ok({ op: 'history', room, after, limit });
    pages++;
    if (epoch === null) { epoch = r.epoch; offset = r.offset; }
    assert.equal(r.epoch, epoch, 'the epoch changed while paging');
    assert.ok(Array.isArray(r.messages), `history reply without messages: ${JSON.stringify(r)}`);
    assert.ok(r.messages.length <= limit, `history page of ${r.messages.length} > limit ${limit}`);
    for (const m of r.messages) {
      assert.ok(m.offset > after, `history after=${after} returned offset ${m.offset}`);
      out.push(m);
      after = m.offset;
    }
    if (r.complete === true) break;
    assert.ok(r.messages.length > 0, `history page empty but not complete: ${JSON.stringify(r)}`);
    assert.ok(pages < 10000, 'history paging does not end');
  }
  return { epoch, offset, messages: out, pages };
}

// Parses msgText back: returns i, or throws if the text is not intact.
export function parseText(run, text) {
  const m = /^([^|]+)\|(\d+)\|([a-z0-9]*)\|([0-9a-f]{8})$/.exec(text);
  if (!m || m[1] !== run) throw new Error(`foreign or garbled text ${JSON.stringify(text.slice(0, 80))}`);
  const i = Number(m[2]);
  if (crc(`${m[1]}|${m[2]}|${m[3]}`) !== m[4]) throw new Error(`corrupted text for message ${i}`);
  return i;
}

// The invariants of a stream written by one client in order:
//  - every stored message is intact (text exactly as sent, from, cmid);
//  - no message is stored twice; offsets strictly increase;
//  - messages appear in send order, and the stored ones are a prefix
//    (in send order) of what was sent: a later message is never stored
//    while an earlier one is missing;
//  - every acked message is stored at the offset of its ack.
// Returns {byIndex: Map(i -> offset), storedCount}.
export function checkStored(messages, { run, nick, acks, order, size = 0 }) {
  const byIndex = new Map();
  let prev = 0;
  for (const m of messages) {
    const i = parseText(run, m.text);
    assert.equal(m.text, msgText(run, i, size), `text of message ${i} differs from what was sent`);
    assert.equal(m.from, nick, `from of message ${i}`);
    assert.equal(m.cmid, msgCmid(run, i), `cmid of message ${i}`);
    assert.ok(!byIndex.has(i), `message ${i} stored twice: offsets ${byIndex.get(i)} and ${m.offset}`);
    assert.ok(m.offset > prev, `offsets not increasing: ${prev} then ${m.offset}`);
    prev = m.offset;
    byIndex.set(i, m.offset);
  }
  if (order) {
    // The stored set is the first byIndex.size messages of the send order,
    // in that order.
    const stored = messages.map((m) => parseText(run, m.text));
    for (let k = 0; k < stored.length; k++) {
      assert.equal(stored[k], order[k], `stored message #${k} is ${stored[k]}, expected ${order[k]} ` +
        '(the stored messages are not a prefix of the send order)');
    }
  }
  const missingAcked = [];
  for (const [i, r] of acks) {
    if (!byIndex.has(i)) missingAcked.push(i);
    else assert.equal(byIndex.get(i), r.offset, `message ${i} acked at offset ${r.offset} but stored at ${byIndex.get(i)}`);
  }
  assert.equal(missingAcked.length, 0,
    `${missingAcked.length} acked messages are missing from history, e.g. ${missingAcked.slice(0, 10).join(', ')}`);
  return { byIndex, storedCount: byIndex.size };
}

export async function hello(client, nick, extra = {}) {
  return client.ok({ op: 'hello', nick, ...extra });
}

// Waits for a server started by startServer to exit on its own (without
// sending it another signal, as server.stop() would: a second SIGTERM makes
// the hub cut its clients at once). Resolves with the exit code, or the
// signal name if it died of one.
export function exitOf(server, timeoutMs = 15000) {
  const { proc } = server;
  if (proc.exitCode !== null || proc.signalCode !== null) {
    return Promise.resolve(proc.exitCode !== null ? proc.exitCode : proc.signalCode);
  }
  return withTimeout(new Promise((resolve) => {
    proc.once('exit', (code, signal) => resolve(code !== null ? code : signal));
  }), timeoutMs, `chathub pid ${proc.pid} did not exit within ${timeoutMs} ms`);
}
