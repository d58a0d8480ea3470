// Raw mode (no subprotocol): every text or binary message is relayed
// verbatim to everyone in the room named by the path, the sender included.
import crypto from 'node:crypto';
import {
  test, assert, startServer, wsConnect, RawHttp, buildRequest, upgradeHeaders, wsKey, wsAccept,
  encodeFrame, withTimeout,
} from './lib.mjs';

test('two clients in a room get each other\'s text and their own, verbatim', async () => {
  const s = await startServer();
  const a = await wsConnect(s.wsUrl('/ws/room1'));
  const b = await wsConnect(s.wsUrl('/ws/room1'));
  const fromA = 'hello from A: ünïcödé ✓ 🚀 "quotes" <b>not html</b>';
  await a.send(fromA);
  for (const c of [a, b]) {
    const m = await c.next();
    assert.equal(m.binary, false, 'relayed as text');
    assert.equal(m.text, fromA);
  }
  const fromB = '  spaces kept  \n and newlines ';
  await b.send(fromB);
  assert.equal(await a.nextText(), fromB);
  assert.equal(await b.nextText(), fromB);
});

test('a 60 KB binary message is relayed verbatim as binary to both', async () => {
  const s = await startServer();
  const a = await wsConnect(s.wsUrl('/ws/room1'));
  const b = await wsConnect(s.wsUrl('/ws/room1'));
  const payload = crypto.randomBytes(61440);
  await a.send(payload, { binary: true });
  for (const c of [a, b]) {
    const m = await c.next(10000);
    assert.equal(m.binary, true, 'relayed as binary');
    assert.equal(m.data.length, payload.length);
    assert.ok(m.data.equals(payload), 'bytes identical');
  }
});

test('rooms are isolated', async () => {
  const s = await startServer();
  const a = await wsConnect(s.wsUrl('/ws/room1'));
  const other = await wsConnect(s.wsUrl('/ws/room2'));
  await a.send('only for room1');
  assert.equal(await a.nextText(), 'only for room1');
  // Wait up to 500 ms to give a leak the chance to show; then a marker sent
  // in room2 must be the first thing room2 sees.
  await other.next(500).then(
    (m) => assert.fail(`room2 received ${JSON.stringify(m.text ?? `${m.data.length} bytes`)}`),
    (err) => assert.match(err.message, /no message within/));
  await other.send('marker');
  assert.equal(await other.nextText(), 'marker');
});

test('/ and /ws are both the lobby', async () => {
  const s = await startServer();
  const root = await wsConnect(s.wsUrl('/'));
  const ws = await wsConnect(s.wsUrl('/ws'));
  const lobby = await wsConnect(s.wsUrl('/ws/lobby'));
  await root.send('from /');
  for (const c of [root, ws, lobby]) assert.equal(await c.nextText(), 'from /');
  await ws.send('from /ws');
  for (const c of [root, ws, lobby]) assert.equal(await c.nextText(), 'from /ws');
});

test('100 clients x 10 messages: everyone gets all 1000, each sender in order', async () => {
  const s = await startServer();
  const N = 100;
  const M = 10;
  const clients = [];
  // The hub limits connections per peer address (64 by default), so the
  // clients come from four loopback addresses, as if from four machines.
  for (let i = 0; i < N; i += 10) {
    const batch = [];
    for (let j = i; j < Math.min(N, i + 10); j++) {
      batch.push(wsConnect(s.wsUrl('/ws/crowd'), { timeoutMs: 10000, localAddress: `127.0.0.${2 + (j % 4)}` }));
    }
    clients.push(...await Promise.all(batch));
  }
  // Each client collects everything before anyone sends, so nothing is lost
  // to the queue.
  const received = clients.map(() => []);
  const done = clients.map((c, i) => (async () => {
    while (received[i].length < N * M) {
      const m = await c.next(30000);
      received[i].push(m.text);
    }
  })());
  const allDone = withTimeout(Promise.all(done), 60000, 'not every client got all 1000 messages');
  allDone.catch(() => { /* awaited below */ });
  await Promise.all(clients.map(async (c, i) => {
    for (let k = 0; k < M; k++) await c.send(`c${i}:m${k}`);
  }));
  await allDone;
  for (let i = 0; i < N; i++) {
    const next = new Array(N).fill(0);
    for (const text of received[i]) {
      const m = /^c(\d+):m(\d+)$/.exec(text);
      assert.ok(m, `client ${i} got an unexpected message ${JSON.stringify(text)}`);
      const from = Number(m[1]);
      assert.equal(Number(m[2]), next[from], `client ${i}: messages of sender ${from} out of order`);
      next[from]++;
    }
    assert.deepEqual(next, new Array(N).fill(M), `client ${i} got every message once`);
  }
}, { timeout: 90000 });

test('an abruptly dropped client is removed and the others keep working', async () => {
  const s = await startServer();
  const a = await wsConnect(s.wsUrl('/ws/drop'));
  const b = await wsConnect(s.wsUrl('/ws/drop'));
  const c = await wsConnect(s.wsUrl('/ws/drop'));
  b.ws._socket.destroy();
  await b.waitClose();
  await a.send('after the drop');
  assert.equal(await a.nextText(), 'after the drop');
  assert.equal(await c.nextText(), 'after the drop');
  // Another drop, with ws.terminate(), mid-traffic.
  c.terminate();
  for (let i = 0; i < 20; i++) await a.send(`burst ${i}`);
  for (let i = 0; i < 20; i++) assert.equal(await a.nextText(), `burst ${i}`);
  assert.ok(s.alive(), 'the server is still running');
  const d = await wsConnect(s.wsUrl('/ws/drop'));
  await d.send('still here');
  assert.equal(await a.nextText(), 'still here');
  assert.equal(await d.nextText(), 'still here');
});

test('a frame sent in the same write as the handshake is not lost', async () => {
  const s = await startServer();
  const c = await RawHttp.connect(s.port);
  const key = wsKey();
  const req = buildRequest('GET', '/ws/early', upgradeHeaders(key));
  await c.write(Buffer.concat([Buffer.from(req, 'latin1'), encodeFrame(0x1, 'early bird')]));
  const r = await c.readResponse({ noBody: true });
  assert.equal(r.status, 101, r.statusLine);
  assert.equal(r.headers['sec-websocket-accept'], wsAccept(key));
  const f = await c.readFrame();
  assert.equal(f.masked, false, 'server frames are unmasked');
  assert.equal(f.opcode, 0x1, 'a text frame');
  assert.equal(f.fin, true);
  assert.equal(f.payload.toString('utf8'), 'early bird');
  // Close politely: the server answers with a close frame.
  await c.write(encodeFrame(0x8, Buffer.from([0x03, 0xe8])));
  const close = await c.readFrame();
  assert.equal(close.opcode, 0x8, 'close frame');
});

test('a message over 64 KiB closes the connection with 1009', async () => {
  const s = await startServer();
  const a = await wsConnect(s.wsUrl('/ws/big'));
  const b = await wsConnect(s.wsUrl('/ws/big'));
  await a.send('x'.repeat(70000)).catch(() => { /* the server may close first */ });
  const { code } = await a.waitClose(10000);
  assert.equal(code, 1009);
  // The rest of the room is unaffected and got nothing of it.
  await b.send('after big');
  assert.equal(await b.nextText(), 'after big');
});

test('--welcome TEXT is the first message of a new raw client', async () => {
  const s = await startServer(['--welcome', 'hello there']);
  const a = await wsConnect(s.wsUrl('/ws/w'));
  assert.equal(await a.nextText(), 'hello there');
  const b = await wsConnect(s.wsUrl('/'));
  assert.equal(await b.nextText(), 'hello there');
});

test('without --welcome the first message is the first relayed one', async () => {
  const s = await startServer();
  const a = await wsConnect(s.wsUrl('/ws/w'));
  const b = await wsConnect(s.wsUrl('/ws/w'));
  await b.send('first');
  assert.equal(await a.nextText(), 'first');
  assert.equal(await b.nextText(), 'first');
});
