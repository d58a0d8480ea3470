// A chathub.v1 (JSON mode) client on top of `ws` for the limit and abuse
// tests: requests are matched to replies by id, pushes are queued, and the
// close code is kept.
import WebSocket from 'ws';
import { cleanup, withTimeout } from '../integration/lib.mjs';

export class JsonClient {
  // Opens a JSON-mode WebSocket on server (from startServer) and waits for
  // the welcome push; with nick, also says hello.
  static async open(server, { nick, path = '/ws', headers, timeoutMs = 5000 } = {}) {
    const ws = new WebSocket(server.wsUrl(path), 'chathub.v1', {
      perMessageDeflate: false, handshakeTimeout: timeoutMs, headers,
    });
    const c = new JsonClient(ws);
    await withTimeout(new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
      ws.once('unexpected-response', (req, res) => reject(new Error(`upgrade refused: HTTP ${res.statusCode}`)));
    }), timeoutMs, 'JSON client did not open');
    if (ws.protocol !== 'chathub.v1') throw new Error(`server selected subprotocol ${JSON.stringify(ws.protocol)}`);
    c.welcome = await c.nextPush((m) => m.t === 'welcome', timeoutMs);
    if (nick) {
      const r = await c.req('hello', { nick });
      if (!r.ok) throw new Error(`hello ${nick} failed: ${JSON.stringify(r)}`);
      c.hello = r;
    }
    return c;
  }

  constructor(ws) {
    this.ws = ws;
    this.nextId = 1;
    this.pending = new Map();
    this.replies = [];     // every reply, in arrival order
    this.pushes = [];      // pushes not yet taken by nextPush
    this.allPushes = [];   // every push
    this.waiters = [];
    this.closeInfo = null;
    this.closed = new Promise((resolve) => {
      ws.on('close', (code, reason) => {
        this.closeInfo = { code, reason: reason.toString() };
        for (const [, p] of this.pending) p.reject(new Error(`closed ${code} while waiting for a reply`));
        this.pending.clear();
        resolve(this.closeInfo);
        this.wake();
      });
    });
    ws.on('error', () => { /* surfaced by close */ });
    ws.on('message', (data, isBinary) => {
      if (isBinary) throw new Error('binary message in JSON mode');
      const m = JSON.parse(data.toString('utf8'));
      if (m.id !== undefined && m.t === undefined) {
        this.replies.push(m);
        const p = this.pending.get(m.id);
        if (p) { this.pending.delete(m.id); p.resolve(m); }
      } else {
        this.pushes.push(m);
        this.allPushes.push(m);
        this.wake();
      }
    });
    cleanup(() => this.terminate());
  }

  wake() {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  // Sends {op, id, ...fields} and resolves with the reply.
  req(op, fields = {}, timeoutMs = 5000) {
    const id = this.nextId++;
    const p = new Promise((resolve, reject) => this.pending.set(id, { resolve, reject }));
    this.ws.send(JSON.stringify({ op, id, ...fields }));
    return withTimeout(p, timeoutMs, `no reply to ${op} #${id} within ${timeoutMs} ms`);
  }

  // Sends without waiting; returns the id.
  fire(op, fields = {}) {
    const id = this.nextId++;
    this.ws.send(JSON.stringify({ op, id, ...fields }));
    return id;
  }

  sendRaw(data, opts) { this.ws.send(data, opts); }

  // The next push matching pred (others are kept for later).
  async nextPush(pred = () => true, timeoutMs = 5000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.pushes.findIndex(pred);
      if (i >= 0) return this.pushes.splice(i, 1)[0];
      if (this.closeInfo) throw new Error(`closed ${this.closeInfo.code} while waiting for a push`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no matching push within ${timeoutMs} ms; have ${JSON.stringify(this.pushes).slice(0, 300)}`);
      await new Promise((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => { clearTimeout(t); resolve(); });
      });
    }
  }

  waitClose(timeoutMs = 5000) {
    return withTimeout(this.closed, timeoutMs, `JSON client not closed within ${timeoutMs} ms`);
  }

  terminate() { try { this.ws.terminate(); } catch { /* already */ } }
}
