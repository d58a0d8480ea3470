// permessage-deflate (RFC 7692) against Node's `ws` with perMessageDeflate:
// the extension is negotiated with no context takeover both ways, raw and
// JSON (chathub.v1) clients chat through it, what they receive is compressed
// on the wire (fewer bytes read than the text they got, RSV1 on the frames a
// raw observer sees), short lines go uncompressed, a client without the
// extension in the same room gets plain frames, and --deflate off declines.
import WebSocket from 'ws';
import {
  test, assert, startServer, withTimeout, cleanup, RawHttp, buildRequest, upgradeHeaders, wsKey,
  decodeFrame,
} from './lib.mjs';

const ACCEPT = 'permessage-deflate; server_no_context_takeover; client_no_context_takeover';

// Chat-like text: words from a small vocabulary (seeded, reproducible).
function chatText(len, seed = 1) {
  const words = ['the', 'room', 'hello', 'is', 'anyone', 'here', 'chat', 'server', 'ok',
    'message', 'today', 'thanks', 'see', 'you', 'later', 'what', 'about', 'lunch'];
  let s = seed >>> 0;
  let out = '';
  while (out.length < len) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    out += words[(s >>> 16) % words.length] + ' ';
  }
  return out.slice(0, len);
}

// A `ws` client with permessage-deflate on (deflateOpts: ws's options, or
// false for none). Collects text messages in .msgs.
async function open(url, { protocols, deflate = true } = {}) {
  const ws = new WebSocket(url, protocols, { perMessageDeflate: deflate, handshakeTimeout: 5000 });
  cleanup(() => ws.terminate());
  const c = { ws, msgs: [], waiters: [] };
  ws.on('message', (d) => {
    c.msgs.push(d.toString());
    for (const w of c.waiters.splice(0)) w();
  });
  ws.once('upgrade', (res) => { c.ext = res.headers['sec-websocket-extensions'] || ''; });
  await withTimeout(new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  }), 5000, `${url} did not open`);
  c.until = (fn, what, ms = 10000) => withTimeout((async () => {
    for (;;) {
      const v = fn();
      if (v !== undefined) return v;
      await new Promise((r) => c.waiters.push(r));
    }
  })(), ms, `timed out waiting for ${what}`);
  c.read = () => ws._socket.bytesRead;
  return c;
}

const send = (c, data) => new Promise((resolve, reject) => c.ws.send(data, (e) => (e ? reject(e) : resolve())));

// A raw observer that offers permessage-deflate and records each frame's RSV
// bits and payload length.
async function rawObserver(port, path) {
  const c = await RawHttp.connect(port);
  const key = wsKey();
  await c.write(buildRequest('GET', path,
    { ...upgradeHeaders(key), 'Sec-WebSocket-Extensions': 'permessage-deflate' }));
  const r = await c.readResponse({ noBody: true, timeoutMs: 5000 });
  assert.equal(r.status, 101);
  assert.equal(r.headers['sec-websocket-extensions'], ACCEPT);
  cleanup(() => c.destroy());
  return {
    async frame(timeoutMs = 5000) {
      const f = await c.until(() => decodeFrame(c.buf) || undefined, timeoutMs, 'a frame');
      c.buf = c.buf.subarray(f.length);
      return f;
    },
  };
}

test('raw mode: Node ws with perMessageDeflate chats; 1 KiB lines arrive compressed', async () => {
  const s = await startServer(['--rate', '0']);
  const a = await open(s.wsUrl('/ws/pmd'), { deflate: { threshold: 0 } });
  const b = await open(s.wsUrl('/ws/pmd'));
  const plain = await open(s.wsUrl('/ws/pmd'), { deflate: false });
  const obs = await rawObserver(s.port, '/ws/pmd');
  assert.equal(a.ext, ACCEPT, 'negotiated with no context takeover both ways');
  assert.equal(a.ws.extensions, 'permessage-deflate', 'ws accepted it');
  assert.equal(b.ext, ACCEPT);
  assert.equal(plain.ext, '');
  const lines = [];
  for (let i = 0; i < 30; i++) lines.push(chatText(1024, i + 1));
  const before = b.read();
  for (const l of lines) await send(a, l);
  await b.until(() => (b.msgs.length >= 30 ? true : undefined), '30 lines at b');
  assert.deepEqual(b.msgs, lines, 'b got every line intact, in order');
  const got = b.read() - before;
  assert.ok(got <= 0.5 * 30 * 1024, `b read ${got} bytes for ${30 * 1024} bytes of text`);
  // The client without the extension got plain frames, the same text.
  await plain.until(() => (plain.msgs.length >= 30 ? true : undefined), '30 lines at plain');
  assert.deepEqual(plain.msgs, lines);
  // The observer sees RSV1 on every 1 KiB line.
  for (let i = 0; i < 30; i++) {
    const f = await obs.frame();
    assert.equal(f.rsv, 4, `line ${i} compressed`);
    assert.ok(f.payload.length < 600, `line ${i}: ${f.payload.length} bytes on the wire`);
  }
  // A short line goes out uncompressed.
  await send(b, 'hi all');
  const f = await obs.frame();
  assert.equal(f.rsv, 0, 'a short line is not compressed');
  assert.equal(f.payload.toString(), 'hi all');
  await a.until(() => (a.msgs.includes('hi all') ? true : undefined), 'the short line at a');
});

test('JSON mode: chathub.v1 clients with perMessageDeflate send and receive', async () => {
  const s = await startServer(['--rate', '0']);
  const mk = async (nick) => {
    const c = await open(s.wsUrl('/ws'), { protocols: 'chathub.v1' });
    assert.equal(c.ws.protocol, 'chathub.v1');
    assert.equal(c.ext, ACCEPT);
    assert.equal(c.ws.extensions, 'permessage-deflate');
    c.next = 1;
    c.req = async (op, fields) => {
      const id = c.next++;
      await send(c, JSON.stringify({ op, id, ...fields }));
      return c.until(() => c.msgs.map((m) => JSON.parse(m)).find((m) => m.id === id && !m.t),
        `the reply to ${op}`);
    };
    assert.equal((await c.req('hello', { nick })).ok, true);
    assert.equal((await c.req('join', { room: 'deflate' })).ok, true);
    return c;
  };
  const alice = await mk('alice');
  const bob = await mk('bob');
  const texts = [];
  for (let i = 0; i < 20; i++) texts.push(chatText(1000, 100 + i));
  const before = bob.read();
  for (const t of texts) assert.equal((await alice.req('send', { room: 'deflate', text: t })).ok, true);
  const pushes = await bob.until(() => {
    const ms = bob.msgs.map((m) => JSON.parse(m)).filter((m) => m.t === 'msg');
    return ms.length >= 20 ? ms : undefined;
  }, '20 msg pushes at bob');
  assert.deepEqual(pushes.map((m) => m.text), texts);
  assert.ok(pushes.every((m) => m.from === 'alice' && m.room === 'deflate'));
  const got = bob.read() - before;
  assert.ok(got <= 0.5 * 20 * 1000, `bob read ${got} bytes for ${20 * 1000} bytes of text`);
  // History comes back through the extension too.
  const h = await bob.req('history', { room: 'deflate', limit: 20 });
  assert.equal(h.ok, true, JSON.stringify(h).slice(0, 200));
});

test('--deflate off: the offer is declined and the chat still works', async () => {
  const s = await startServer(['--deflate', 'off']);
  const a = await open(s.wsUrl('/ws/off'));
  const b = await open(s.wsUrl('/ws/off'));
  assert.equal(a.ext, '', 'no extension negotiated');
  assert.equal(a.ws.extensions, '');
  const line = chatText(1024, 5);
  await send(a, line);
  await b.until(() => (b.msgs.includes(line) ? true : undefined), 'the line at b');
});

test('--deflate-min and --deflate reject bad values', async () => {
  const { runChathub } = await import('./lib.mjs');
  for (const args of [['--deflate', 'maybe'], ['--deflate-min', '-1'], ['--deflate']]) {
    const r = await runChathub(args);
    assert.equal(r.code, 2, `${args.join(' ')} is a usage error`);
    assert.match(r.stderr, /deflate/);
  }
});
