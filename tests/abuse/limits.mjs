// Every limit of docs/operations.md, driven through its flag against the
// real binary: what happens at the limit and just past it, the close code or
// HTTP status, the metrics that count it, and that the hub keeps serving.
import net from 'node:net';
import { startServer, parseHead } from '../integration/lib.mjs';
import {
  assert, testCase, WsPeer, OP, text, binary, cont, close, pong, sleep, assertServing, wsConnect,
  RawHttp, buildRequest, upgradeHeaders, wsKey, get, metrics, metric, eventually, parseMetrics,
  withTimeout,
} from '../conformance/wsraw.mjs';
import { JsonClient } from './jsonc.mjs';

// Sends one request on a fresh connection; returns {status, headers, body,
// closed (the server ended the connection after the response)}.
async function request(port, path, headers = {}, { localAddress } = {}) {
  const c = await connectFrom(port, localAddress);
  // Plain requests ask for Connection: close, so that none lingers and
  // counts against the connection limits.
  const h = headers.Upgrade ? headers : { ...headers, Connection: 'close' };
  await c.write(buildRequest('GET', path, h));
  const head = await c.until(() => parseHead(c.buf) || undefined, 5000, 'a response head');
  if (head.status === 101) {
    c.buf = c.buf.subarray(head.headLength);
    return { status: 101, headers: head.headers, body: '', closed: false, conn: c };
  }
  // Error responses here all close the connection: read to the end and
  // compare the body with Content-Length.
  const closed = await c.waitClosed(3000).catch(() => false);
  const body = c.buf.subarray(head.headLength);
  const cl = head.headers['content-length'];
  const lengthOk = cl === undefined || Number(cl) === body.length;
  return {
    status: head.status, headers: head.headers, body: body.toString('utf8'), closed, conn: c,
    lengthOk, lengthNote: `Content-Length: ${cl} but a body of ${body.length} bytes ${JSON.stringify(body.toString('latin1'))}`,
  };
}

// A RawHttp connection, optionally from another loopback address.
async function connectFrom(port, localAddress) {
  if (!localAddress) return RawHttp.connect(port);
  return withTimeout(new Promise((resolve, reject) => {
    const sock = net.connect({ port, host: '127.0.0.1', localAddress });
    sock.once('connect', () => { sock.off('error', reject); resolve(new RawHttp(sock)); });
    sock.once('error', reject);
  }), 5000, 'connect timed out');
}

const upgrade = (extra = {}) => upgradeHeaders(wsKey(), extra);

// ---------------------------------------------------------------------------
// --max-message, --max-fragments

testCase('--max-message 1000: 1000 bytes relayed, 1001 -> close 1009 (raw and JSON)', async () => {
  const s = await startServer(['--max-message', '1000', '--rate', '0']);
  const p = await WsPeer.open(s.port, '/ws/mm');
  await p.write(binary(Buffer.alloc(1000, 1)));
  await p.expectEcho(OP.BINARY, Buffer.alloc(1000, 1));
  await p.write(text('a'.repeat(1001)));
  await p.expectClose(1009);
  const j = await JsonClient.open(s, { nick: 'big' });
  j.sendRaw(JSON.stringify({ op: 'ping', pad: 'x'.repeat(1001) }));
  const { code } = await j.waitClose();
  assert.equal(code, 1009, 'JSON client close code');
  const m = await metrics(s.port);
  assert.equal(m['chathub_closes_total{code="1009"}'], 2, 'closes_total{code="1009"}');
  await assertServing(s);
});

testCase('--max-fragments 4: 4 fragments relayed, 5 -> close 1008', async () => {
  const s = await startServer(['--max-fragments', '4', '--rate', '0']);
  const p = await WsPeer.open(s.port, '/ws/mf');
  await p.write(Buffer.concat([text('a', { fin: false }), cont('b', { fin: false }),
    cont('c', { fin: false }), cont('d')]));
  await p.expectEcho(OP.TEXT, 'abcd');
  await p.write(Buffer.concat([text('a', { fin: false }), cont('b', { fin: false }),
    cont('c', { fin: false }), cont('d', { fin: false }), cont('e')]));
  await p.expectClose(1008);
  await assertServing(s);
});

// ---------------------------------------------------------------------------
// HTTP request limits

testCase('--max-header-bytes 1024: a 1024-byte head upgrades, a 1100-byte head -> 431 and closed', async () => {
  const s = await startServer(['--max-header-bytes', '1024']);
  const base = buildRequest('GET', '/ws/hb', upgrade());
  // Pad with one header so that the whole head (request line, headers and
  // the final blank line) is exactly 1024 bytes.
  const padLen = 1024 - base.length - 'X-Pad: \r\n'.length;
  const ok = await request(s.port, '/ws/hb', upgrade({ 'X-Pad': 'p'.repeat(padLen) }));
  assert.equal(ok.status, 101, 'a head of exactly --max-header-bytes is allowed');
  ok.conn.destroy();
  const big = await request(s.port, '/ws/hb', upgrade({ 'X-Pad': 'p'.repeat(padLen + 76) }));
  assert.equal(big.status, 431, 'over --max-header-bytes');
  assert.ok(big.closed, 'the connection is closed after 431');
  // Also for a plain GET, with the excess in one huge header sent slowly.
  const c = await RawHttp.connect(s.port);
  await c.write('GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Long: ');
  for (let i = 0; i < 4; i++) { await c.write('q'.repeat(300)); await sleep(5); }
  const r = await c.readResponse();
  assert.equal(r.status, 431);
  await c.waitClosed(3000);
  await assertServing(s);
});

testCase('--max-headers 10: 10 header lines upgrade, 11 -> 431 and closed', async () => {
  const s = await startServer(['--max-headers', '10']);
  const h = upgrade(); // Host + 5 upgrade headers... count them
  const count = 1 + Object.keys(h).length;
  const pad = (n) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`X-H${i}`, 'v']));
  const ok = await request(s.port, '/ws/hc', { ...h, ...pad(10 - count) });
  assert.equal(ok.status, 101, '10 header lines are allowed');
  ok.conn.destroy();
  const bad = await request(s.port, '/ws/hc', { ...upgrade(), ...pad(11 - count) });
  assert.equal(bad.status, 431, '11 header lines');
  assert.ok(bad.closed, 'the connection is closed after 431');
  const many = await request(s.port, '/', pad(200));
  assert.equal(many.status, 431, '201 header lines on a plain GET');
  await assertServing(s);
});

testCase('--handshake-timeout 1: half a request is closed at its deadline, in deadline order (and counted)', async () => {
  // Judged by the order of events, not by a window of elapsed time: the
  // deadlines (1 s after the connection or its last complete request, on a
  // wheel of 500 ms ticks) of connections opened 700 ms apart fall in
  // different ticks, so they close in the order they were opened, while a
  // connection that completes a request every 300 ms is never cut.
  const s = await startServer(['--handshake-timeout', '1']);
  const order = [];
  const at = {};
  const watch = (c, name) => c.sock.once('close', () => { order.push(name); at[name] = Date.now(); });
  const half = await RawHttp.connect(s.port);
  const silent = await RawHttp.connect(s.port);
  const t0 = Date.now();
  watch(half, 'half');
  watch(silent, 'silent');
  await half.write('GET /ws/slow HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n');
  const keeper = await RawHttp.connect(s.port);
  watch(keeper, 'keeper');
  await sleep(700);
  const late = await RawHttp.connect(s.port);
  watch(late, 'late');
  let keeps = 0;
  const keep = async () => {
    while (!late.ended) {
      await keeper.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
      const r = await keeper.readResponse();
      assert.equal(r.status, 200, 'the keeper is served');
      keeps++;
      await sleep(300);
    }
  };
  await Promise.all([half.waitClosed(4000), silent.waitClosed(4000), late.waitClosed(5000), keep()]);
  console.log(`# close order ${JSON.stringify(order)}, after ${order.map((n) => at[n] - t0).join(', ')} ms ` +
    `(--handshake-timeout 1); the keeper was served ${keeps} requests meanwhile`);
  assert.deepEqual(order.slice(0, 2).sort(), ['half', 'silent'], 'the first two deadlines close first');
  assert.equal(order[2], 'late', 'the connection opened 700 ms later closes after them');
  assert.ok(!keeper.ended, 'a connection that completes its requests in time stays open');
  assert.ok(keeps >= 3, `the keeper made requests throughout (${keeps})`);
  keeper.destroy();
  const resp = half.buf.toString('latin1');
  assert.ok(resp === '' || /^HTTP\/1\.1 408 /.test(resp), `unexpected bytes before the close: ${JSON.stringify(resp)}`);
  // A complete request in time is served, and a WebSocket is not subject to it.
  const p = await WsPeer.open(s.port, '/ws/after');
  await sleep(1500);
  await p.write(text('still here'));
  await p.expectEcho(OP.TEXT, 'still here');
  const m = await metrics(s.port);
  assert.ok(m['chathub_refused_handshakes_total{reason="timeout"}'] >= 2, 'refused{timeout} counted');
  await assertServing(s);
});

// ---------------------------------------------------------------------------
// Connection limits

async function openRaw(port, n, path, localAddress) {
  const out = [];
  for (let i = 0; i < n; i++) {
    const c = await connectFrom(port, localAddress);
    const key = wsKey();
    await c.write(buildRequest('GET', path, upgradeHeaders(key)));
    const r = await c.readResponse({ noBody: true });
    assert.equal(r.status, 101, `connection ${i + 1} of ${n}: ${r.statusLine}`);
    out.push(c);
  }
  return out;
}

testCase('--max-conns 3: the 4th connection gets 503 with Retry-After; a freed slot is reusable', async () => {
  const s = await startServer(['--max-conns', '3', '--max-conns-per-ip', '0']);
  const conns = await openRaw(s.port, 3, '/ws/mc');
  const r = await request(s.port, '/ws/mc', upgrade());
  assert.equal(r.status, 503);
  assert.ok(r.headers['retry-after'], 'Retry-After on the 503');
  assert.ok(r.closed, 'the refused connection is closed');
  const r2 = await request(s.port, '/healthz');
  assert.equal(r2.status, 503, 'plain HTTP counts as a connection too');
  conns.pop().destroy();
  await eventually(async () => (await request(s.port, '/metrics')).status === 200, 3000, 'a freed slot');
  const m = parseMetrics((await request(s.port, '/metrics')).body);
  assert.ok(m['chathub_refused_handshakes_total{reason="max_conns"}'] >= 2, 'refused{max_conns}');
  for (const c of conns) c.destroy();
  await sleep(100);
  await assertServing(s);
  assert.ok(r.lengthOk, `the 503 response: ${r.lengthNote}`);
});

testCase('--max-conns-per-ip 5: the 6th from one address gets 503, another address is not affected', async () => {
  const s = await startServer(['--max-conns-per-ip', '5']);
  const conns = await openRaw(s.port, 5, '/ws/pi');
  const r = await request(s.port, '/ws/pi', upgrade());
  assert.equal(r.status, 503);
  assert.ok(r.headers['retry-after'], 'Retry-After on the 503');
  assert.ok(r.closed, 'the refused connection is closed');
  // 127.0.0.2 is another client address on loopback.
  const other = await openRaw(s.port, 1, '/ws/pi', '127.0.0.2');
  other[0].destroy();
  // Read the counter from a third address before freeing a slot: the
  // retries below may themselves be refused (and counted) until the
  // server has seen the close, so the count is exact only here.
  const m = parseMetrics((await request(s.port, '/metrics', {}, { localAddress: '127.0.0.3' })).body);
  assert.equal(m['chathub_refused_handshakes_total{reason="per_ip"}'], 1, 'refused{per_ip}');
  conns.shift().destroy();
  await eventually(async () => (await request(s.port, '/healthz')).status === 200, 3000, 'a freed slot');
  for (const c of conns) c.destroy();
  assert.ok(r.lengthOk, `the 503 response: ${r.lengthNote}`);
});

testCase('--max-conns-per-ip default (64): 64 connections from one address, the 65th gets 503', async () => {
  const s = await startServer([]);
  const conns = await openRaw(s.port, 64, '/ws/pi64');
  const r = await request(s.port, '/ws/pi64', upgrade());
  assert.equal(r.status, 503);
  assert.ok(r.closed, 'the refused connection is closed');
  for (const c of conns) c.destroy();
  await eventually(async () => (await request(s.port, '/healthz')).status === 200, 3000, 'slots freed');
  await assertServing(s);
  assert.ok(r.lengthOk, `the 503 response: ${r.lengthNote}`);
});

// ---------------------------------------------------------------------------
// Rooms, nicks, room names

testCase('--max-rooms 3: the 4th join gets too_many_rooms; after a leave a join works', async () => {
  const s = await startServer(['--max-rooms', '3', '--rate', '0']);
  const j = await JsonClient.open(s, { nick: 'roomy' });
  for (const room of ['r1', 'r2', 'r3']) assert.equal((await j.req('join', { room })).ok, true, room);
  const r = await j.req('join', { room: 'r4' });
  assert.equal(r.ok, false);
  assert.equal(r.error.code, 'too_many_rooms');
  assert.equal((await j.req('leave', { room: 'r1' })).ok, true);
  assert.equal((await j.req('join', { room: 'r4' })).ok, true, 'a join after a leave');
  assert.equal((await j.req('ping')).ok, true, 'the connection stays usable');
});

testCase('--max-rooms default (64): 64 joins work, the 65th gets too_many_rooms', async () => {
  const s = await startServer(['--rate', '0']);
  const j = await JsonClient.open(s, { nick: 'roomy64' });
  for (let i = 0; i < 64; i++) assert.equal((await j.req('join', { room: `r${i}` })).ok, true, `room ${i}`);
  const r = await j.req('join', { room: 'r64' });
  assert.equal(r.error && r.error.code, 'too_many_rooms', JSON.stringify(r));
});

testCase('nick: 32 characters are fine, 33 -> bad_nick; 100-byte cap', async () => {
  const s = await startServer(['--rate', '0']);
  const j = await JsonClient.open(s);
  let r = await j.req('hello', { nick: 'n'.repeat(33) });
  assert.equal(r.ok, false);
  assert.equal(r.error.code, 'bad_nick', '33 characters');
  r = await j.req('hello', { nick: '😀'.repeat(26) }); // 26 characters, 104 bytes
  assert.equal(r.error && r.error.code, 'bad_nick', '26 four-byte characters (104 bytes)');
  r = await j.req('hello', { nick: 'é'.repeat(32) }); // 32 characters, 64 bytes
  assert.equal(r.ok, true, `32 two-byte characters: ${JSON.stringify(r)}`);
  r = await j.req('nick', { nick: 'm'.repeat(33) });
  assert.equal(r.error && r.error.code, 'bad_nick', 'nick op with 33 characters');
  r = await j.req('nick', { nick: 'm'.repeat(32) });
  assert.equal(r.ok, true, 'nick op with 32 characters');
});

testCase('room names: 64 characters ok, 65 -> 400 on the path and bad_room on join', async () => {
  const s = await startServer(['--rate', '0']);
  const r64 = 'R'.repeat(64);
  const r65 = 'R'.repeat(65);
  const ok = await request(s.port, `/ws/${r64}`, upgrade());
  assert.equal(ok.status, 101, '64-character room on the path');
  ok.conn.destroy();
  const bad = await request(s.port, `/ws/${r65}`, upgrade());
  assert.equal(bad.status, 400, '65-character room on the path');
  const badChar = await request(s.port, '/ws/no%20spaces', upgrade());
  assert.equal(badChar.status, 400, 'a room with a bad character');
  const j = await JsonClient.open(s, { nick: 'namer' });
  assert.equal((await j.req('join', { room: r64 })).ok, true, '64-character join');
  const r = await j.req('join', { room: r65 });
  assert.equal(r.error && r.error.code, 'bad_room', '65-character join');
  const m = await metrics(s.port);
  assert.ok(m['chathub_refused_handshakes_total{reason="bad_room"}'] >= 2, 'refused{bad_room}');
});

// ---------------------------------------------------------------------------
// Output limits (slow clients)

// A JSON peer over raw TCP that joins room and then never reads again.
async function jsonNonReader(port, room, nick) {
  const p = await WsPeer.open(port, '/ws', { headers: { 'Sec-WebSocket-Protocol': 'chathub.v1' } });
  assert.equal(p.response.headers['sec-websocket-protocol'], 'chathub.v1');
  await p.readMessage(); // welcome
  await p.write(text(JSON.stringify({ op: 'hello', id: 1, nick })));
  await p.readMessage();
  await p.write(text(JSON.stringify({ op: 'join', id: 2, room })));
  const j = JSON.parse((await p.readMessage()).payload.toString());
  assert.equal(j.ok, true, `join ${room}`);
  return p;
}

// Stops reading from a peer; returns a probe that later resumes reading
// (discarding bytes) and tells whether the server ended the connection and
// whether a 4008 close frame was among the last bytes.
function stopReading(p) {
  p.c.sock.pause();
  return async (timeoutMs) => {
    const sock = p.c.sock;
    sock.removeAllListeners('data');
    let tail = Buffer.alloc(0);
    let bytes = 0;
    sock.on('data', (d) => { bytes += d.length; tail = Buffer.concat([tail, d]).subarray(-64); });
    const ended = new Promise((resolve) => {
      if (p.c.ended) resolve(); else { sock.once('end', resolve); sock.once('close', resolve); }
    });
    sock.resume();
    await withTimeout(ended, timeoutMs, 'the server did not close the non-reader\'s TCP connection');
    return { bytes, saw4008: tail.includes(Buffer.from([0x0f, 0xa8])) };
  };
}

// Floods room through a raw ws client with msgs of size bytes until pred()
// holds (checked every batch) or maxBytes went out. Returns bytes sent.
async function flood(s, room, { size = 8192, batch = 4, maxBytes = 64 << 20, until }) {
  const sender = await wsConnect(s.wsUrl(`/ws/${room}`));
  sender.ws.on('message', () => {}); // reads its own echoes
  const payload = 'f'.repeat(size);
  let sent = 0;
  while (sent < maxBytes) {
    for (let i = 0; i < batch; i++) sender.ws.send(payload);
    sent += batch * size;
    await new Promise((r) => setTimeout(r, 2));
    while (sender.ws.bufferedAmount > 1 << 20) await sleep(5);
    if (until && (sent / (batch * size)) % 16 === 0 && await until()) break;
  }
  return { sender, sent };
}

// With publisher backpressure (issue 14) a member that does not read holds
// the room's publishers once it passes --soft-output, so its queue stays
// under --max-output, and it is closed 4008 once it has been over the soft
// limit for --soft-hold; the readers and the sender are only slowed.
testCase('--max-output 256 KiB --soft-output 200000 --soft-hold 2: a raw and a JSON client that never read are closed 4008; the reader and the sender stay', async () => {
  const s = await startServer(['--rate', '0', '--max-output', '262144', '--soft-output', '200000',
    '--soft-hold', '2']);
  const raw = await WsPeer.open(s.port, '/ws/flood');
  const json = await jsonNonReader(s.port, 'flood', 'sleepy');
  const probeRaw = stopReading(raw);
  const probeJson = stopReading(json);
  const reader = await wsConnect(s.wsUrl('/ws/flood'));
  let got = 0;
  reader.ws.on('message', () => { got++; });
  const { sender, sent } = await flood(s, 'flood', {
    until: async () => metric(await metrics(s.port), 'chathub_slow_client_closes_total') >= 2,
  });
  const m = await metrics(s.port);
  console.log(`# hard limit: flooded ${(sent / 1048576).toFixed(1)} MiB; slow_client_closes_total=${m.chathub_slow_client_closes_total}`);
  assert.ok(m.chathub_slow_client_closes_total >= 2, 'the non-readers counted as slow closes');
  assert.equal(m['chathub_closes_total{code="4008"}'], m.chathub_slow_client_closes_total,
    'every slow close is a 4008');
  const [r1, r2] = await Promise.all([probeRaw(10000), probeJson(10000)]);
  console.log(`# non-readers: raw got ${r1.bytes} more bytes (4008 seen: ${r1.saw4008}), JSON got ${r2.bytes} (4008 seen: ${r2.saw4008})`);
  // The probes above throw unless the server closed both non-readers.
  console.log(`# readers still connected: reader ${reader.ws.readyState === 1}, sender ${sender.ws.readyState === 1}; reader got ${got} messages`);
  assert.equal(reader.ws.readyState, 1, 'the reading member is not cut as a slow client');
  assert.equal(sender.ws.readyState, 1, 'the sender is slowed, not cut');
  assert.equal(m.chathub_slow_client_closes_total, 2, 'only the two non-readers were closed');
  assert.ok(got > 0, 'the reader got the flood');
  await assertServing(s);
}, { timeout: 60000 });

testCase('--soft-output 64 KiB --soft-hold 1: a backlog held over the soft limit closes 4008', async () => {
  const s = await startServer(['--rate', '0', '--max-output', String(256 << 20), '--soft-output', '65536',
    '--soft-hold', '1']);
  const raw = await WsPeer.open(s.port, '/ws/soft');
  const probe = stopReading(raw);
  // Fill the kernel buffers and then some; the hard limit (256 MiB) is never
  // reached, so a close can only come from the soft rule.
  const t0 = Date.now();
  const { sent } = await flood(s, 'soft', {
    maxBytes: 48 << 20,
    until: async () => metric(await metrics(s.port), 'chathub_slow_client_closes_total') >= 1,
  });
  await eventually(async () => metric(await metrics(s.port), 'chathub_slow_client_closes_total') >= 1,
    5000, 'a slow-client close after --soft-hold').catch(async (e) => {
    // What held the flood back (backpressure) helps to tell why.
    const m = await metrics(s.port);
    console.log(`# not closed: ${JSON.stringify(Object.entries(m).filter(([k]) => /flow|queued|slow|heartbeat/.test(k)))}`);
    throw e;
  });
  console.log(`# soft limit: flooded ${(sent / 1048576).toFixed(1)} MiB; closed after ${Date.now() - t0} ms`);
  const r = await probe(10000);
  console.log(`# non-reader got ${r.bytes} more bytes before the end (4008 seen: ${r.saw4008})`);
  await assertServing(s);
}, { timeout: 60000 });

// ---------------------------------------------------------------------------
// Rate limit

testCase('--rate 20 --burst 40 (defaults): 60 requests at once -> ~40 ok then rate_limited; a flood -> 4013', async () => {
  const s = await startServer([]);
  const j = await JsonClient.open(s, { nick: 'flooder' });
  const other = await JsonClient.open(s, { nick: 'calm' });
  await other.req('join', { room: 'lobby' });
  const ids = [];
  for (let i = 0; i < 60; i++) ids.push(j.fire('ping'));
  const pingReplies = () => j.replies.filter((r) => ids.includes(r.id));
  await eventually(() => pingReplies().length >= 60, 5000, '60 replies');
  const okN = pingReplies().filter((r) => r.ok).length;
  const limited = pingReplies().filter((r) => !r.ok && r.error && r.error.code === 'rate_limited').length;
  console.log(`# 60 pings at once after hello: ${okN} ok, ${limited} rate_limited`);
  assert.equal(okN + limited, 60, 'every request answered, ok or rate_limited');
  assert.ok(okN >= 38 && okN <= 41, `a burst of 40 accepted (hello took one), got ${okN}`);
  assert.ok(limited >= 18, `the rest refused, got ${limited}`);
  // The connection is still usable after a pause.
  await sleep(1100);
  assert.equal((await j.req('ping')).ok, true, 'usable after slowing down');
  // Keep flooding: more refusals than a burst -> 4013.
  for (let i = 0; i < 200 && !j.closeInfo; i++) j.fire('ping');
  const { code } = await j.waitClose(5000);
  assert.equal(code, 4013, 'a flood is closed with 4013');
  // Others are unaffected.
  assert.equal((await other.req('send', { room: 'lobby', text: 'fine' })).ok, true);
  const m = await metrics(s.port);
  assert.ok(m.chathub_rate_limited_total >= 60, `rate_limited_total ${m.chathub_rate_limited_total}`);
  assert.equal(m['chathub_closes_total{code="4013"}'], 1);
});

// The same flood in a single TCP write, so that the server reads the
// accepted sends and the refusals that end in 4013 at once: every send the
// room received must have been acknowledged to its sender before the close
// ("a send is acknowledged once sequenced into history").
testCase('--rate: sends accepted before a 4013 close are all acknowledged before it', async () => {
  const s = await startServer([]);
  const bob = await JsonClient.open(s, { nick: 'bob' });
  await bob.req('join', { room: 'acks' });
  const p = await jsonNonReader(s.port, 'acks', 'flood1');
  const frames = [];
  for (let i = 0; i < 100; i++) {
    frames.push(text(JSON.stringify({ op: 'send', id: 100 + i, room: 'acks', text: `f${i}`, cmid: `c${i}` })));
  }
  await p.write(Buffer.concat(frames));
  let acked = 0;
  let limited = 0;
  let code = null;
  for (;;) {
    const f = await p.readFrame();
    if (f.opcode === OP.CLOSE) { code = f.payload.readUInt16BE(0); break; }
    const m = JSON.parse(f.payload.toString());
    if (m.id >= 100 && m.ok) acked++;
    else if (m.id >= 100 && m.error && m.error.code === 'rate_limited') limited++;
  }
  await sleep(500);
  const delivered = bob.allPushes.filter((m) => m.t === 'msg' && m.from === 'flood1').length;
  console.log(`# 100 sends in one write: ${acked} acked, ${limited} rate_limited, close ${code}; the room got ${delivered}`);
  assert.equal(code, 4013);
  assert.ok(delivered >= 36 && delivered <= 40, `about a burst delivered: ${delivered}`);
  assert.equal(acked, delivered, `${delivered} messages reached the room but only ${acked} acks reached the sender before its close`);
});

// Over the rate a raw client is not read until its bucket refills (TCP
// slows it); the lines already read are relayed on credit, up to 10 s of
// the rate, so a paste loses nothing. Only what is past that credit in the
// bytes already read is lost, and more than a burst of such lines is 4013.
testCase('--rate 5 --burst 10: a raw client over the rate is held, not cut; past 10 s of credit it loses the excess, then 4013', async () => {
  const s = await startServer(['--rate', '5', '--burst', '10']);
  const p = await WsPeer.open(s.port, '/ws/rr');
  const obs = await wsConnect(s.wsUrl('/ws/rr'));
  const frames = [];
  for (let i = 0; i < 15; i++) frames.push(text(`m${i}`));
  await p.write(Buffer.concat(frames));
  const got = [];
  for (;;) {
    const m = await obs.next(1000).catch(() => null);
    if (!m) break;
    got.push(m.text);
  }
  console.log(`# 15 raw messages at once with --burst 10: ${got.length} relayed`);
  assert.deepEqual(got, got.map((_, i) => `m${i}`), 'every one, in order');
  assert.equal(got.length, 15, 'nothing lost');
  // 200 more in one write: 10 s of credit at 5/s is 50 lines (the bucket
  // refills by about one line during the pause), the rest is refused, and
  // more than a burst of refusals in a row closes 4013.
  const more = [];
  for (let i = 0; i < 200; i++) more.push(text(`x${i}`));
  await p.write(Buffer.concat(more)).catch(() => {});
  const relayed = [];
  for (;;) {
    const f = await p.readFrame();
    if (f.opcode === OP.CLOSE) {
      assert.equal(f.payload.readUInt16BE(0), 4013);
      break;
    }
    if (f.opcode === OP.TEXT && f.payload[0] === 0x78) relayed.push(f.payload.toString()); // 'x': not the echoes of m*
  }
  console.log(`# then 200 raw messages at once: ${relayed.length} relayed before the 4013 close`);
  assert.deepEqual(relayed, relayed.map((_, i) => `x${i}`), 'the first ones, in order');
  assert.ok(relayed.length >= 40 && relayed.length <= 62, `about 10 s of credit relayed, got ${relayed.length}`);
  await p.waitTcpEnd(7000).catch(() => {}); // we do not answer the close: cut within 5 s
  assert.ok(p.ended, 'the TCP connection ends');
});

// ---------------------------------------------------------------------------
// Heartbeat

testCase('heartbeat --ping-interval 2 --pong-timeout 1: answering clients stay, a silent one is dropped', async () => {
  const s = await startServer(['--ping-interval', '2', '--pong-timeout', '1', '--rate', '0']);
  const good = await wsConnect(s.wsUrl('/ws/hb')); // ws answers pings itself
  const goodJson = await JsonClient.open(s, { nick: 'alive' });
  const t0 = Date.now();
  const silent = await WsPeer.open(s.port, '/ws/hb');
  // A raw client that answers pings by hand.
  const manual = await WsPeer.open(s.port, '/ws/hb2');
  let manualPings = 0;
  const answering = (async () => {
    for (;;) {
      const f = await manual.readFrame(8000).catch(() => null);
      if (!f) return;
      if (f.opcode === OP.PING) { manualPings++; await manual.write(pong(f.payload)); }
    }
  })();
  // The silent client reads (so it sees the ping) but never sends.
  let silentPing = false;
  let closeFrame = null;
  const watching = (async () => {
    for (;;) {
      const f = await silent.readFrame(8000).catch(() => null);
      if (!f) return;
      if (f.opcode === OP.PING) silentPing = true;
      if (f.opcode === OP.CLOSE) closeFrame = f.payload;
    }
  })();
  await silent.waitTcpEnd(6000);
  const dropMs = Date.now() - t0;
  console.log(`# silent client dropped after ${dropMs} ms (close frame: ${closeFrame ? (closeFrame.length >= 2 ? closeFrame.readUInt16BE(0) : 'empty') : 'none'})`);
  assert.ok(silentPing, 'the silent client was pinged first');
  // ping at 2 s, 1 s to answer, each deadline rounded up to the 500 ms
  // timer wheel: between 3 and 5 s.
  assert.ok(dropMs >= 2900 && dropMs <= 5000, `dropped after ${dropMs} ms, expected 3-5 s`);
  await sleep(Math.max(0, 6500 - (Date.now() - t0)));
  assert.equal(good.closeInfo, null, 'the ws client (answers pings) is still connected after 6.5 s');
  assert.equal(goodJson.closeInfo, null, 'the JSON client is still connected after 6.5 s');
  assert.equal(manual.ended, false, 'the raw client answering by hand is still connected');
  assert.ok(manualPings >= 2, `the manual client answered ${manualPings} pings in 6.5 s (one every 2 s expected)`);
  await good.send('alive?');
  assert.equal(await good.nextText(), 'alive?');
  const m = await metrics(s.port);
  assert.equal(m.chathub_heartbeat_closes_total, 1, 'heartbeat_closes_total');
  console.log(`# heartbeat drop: closes_total{code="4012"}=${m['chathub_closes_total{code="4012"}']} (no close frame was sent)`);
  manual.destroy();
  await Promise.all([answering, watching]);
}, { timeout: 20000 });

// ---------------------------------------------------------------------------
// Origin policy

testCase('origin: cross-site 403, same-origin 101, no Origin 101 (default policy)', async () => {
  // --strict-origin: the policy of a hub reachable from other machines; on
  // loopback the hub would also admit local dev origins such as 127.0.0.1:1
  // (tests/integration/origin.mjs).
  const s = await startServer(['--strict-origin']);
  const host = `127.0.0.1:${s.port}`;
  const evil = await request(s.port, '/ws', upgrade({ Host: host, Origin: 'http://evil.example' }));
  assert.equal(evil.status, 403, 'Origin: http://evil.example');
  const same = await request(s.port, '/ws', upgrade({ Host: host, Origin: `http://${host}` }));
  assert.equal(same.status, 101, 'same-origin Origin');
  same.conn.destroy();
  const none = await request(s.port, '/ws', upgrade({ Host: host }));
  assert.equal(none.status, 101, 'no Origin');
  none.conn.destroy();
  const otherPort = await request(s.port, '/ws', upgrade({ Host: host, Origin: 'http://127.0.0.1:1' }));
  assert.equal(otherPort.status, 403, 'same host, another port');
  const m = await metrics(s.port);
  assert.equal(m['chathub_refused_handshakes_total{reason="origin"}'], 2, 'refused{origin}');
});

testCase("origin: --allow-origin 'https://*.example.com' admits subdomains only", async () => {
  const s = await startServer(['--allow-origin', 'https://*.example.com']);
  const host = `127.0.0.1:${s.port}`;
  const sub = await request(s.port, '/ws', upgrade({ Host: host, Origin: 'https://a.example.com' }));
  assert.equal(sub.status, 101, 'https://a.example.com');
  sub.conn.destroy();
  const apex = await request(s.port, '/ws', upgrade({ Host: host, Origin: 'https://example.com' }));
  assert.equal(apex.status, 403, 'https://example.com');
  const scheme = await request(s.port, '/ws', upgrade({ Host: host, Origin: 'http://a.example.com' }));
  assert.equal(scheme.status, 403, 'http://a.example.com (other scheme)');
  const suffix = await request(s.port, '/ws', upgrade({ Host: host, Origin: 'https://a.example.com.evil.net' }));
  assert.equal(suffix.status, 403, 'https://a.example.com.evil.net');
  const evil = await request(s.port, '/ws', upgrade({ Host: host, Origin: 'https://evilexample.com' }));
  assert.equal(evil.status, 403, 'https://evilexample.com');
});

testCase("origin: --allow-origin '*' admits any origin", async () => {
  const s = await startServer(['--allow-origin', '*']);
  for (const origin of ['http://evil.example', 'https://x.y.z:8443', 'null']) {
    const r = await request(s.port, '/ws', upgrade({ Origin: origin }));
    assert.equal(r.status, 101, origin);
    r.conn.destroy();
  }
});

// ---------------------------------------------------------------------------
// Drain

testCase('drain: JSON clients get bye (1012, retry_ms 1000-5000) then 1012, raw get 1001, exit 0', async () => {
  const s = await startServer(['--drain-timeout', '3']);
  assert.equal((await get(s.port, '/healthz')).status, 200, '/healthz before');
  const js = [];
  for (let i = 0; i < 3; i++) js.push(await JsonClient.open(s, { nick: `drain${i}` }));
  const raws = [];
  for (let i = 0; i < 2; i++) raws.push(await wsConnect(s.wsUrl('/ws/drain')));
  const t0 = Date.now();
  process.kill(s.proc.pid, 'SIGTERM');
  for (const j of js) {
    const bye = await j.nextPush((m) => m.t === 'bye');
    assert.equal(bye.code, 1012, 'bye.code');
    assert.ok(Number.isInteger(bye.retry_ms) && bye.retry_ms >= 1000 && bye.retry_ms <= 5000,
      `retry_ms ${bye.retry_ms}`);
    assert.equal((await j.waitClose(3000)).code, 1012, 'JSON close code');
  }
  console.log(`# bye retry_ms: ${js.map((j) => j.allPushes.find((m) => m.t === 'bye').retry_ms).join(', ')}`);
  for (const r of raws) assert.equal((await r.waitClose(3000)).code, 1001, 'raw close code');
  const code = await s.stop('SIGTERM', 4000).catch(() => s.stop('SIGKILL'));
  const ms = Date.now() - t0;
  console.log(`# drain with cooperative clients: exit ${code} after ${ms} ms`);
  assert.equal(code, 0, 'exit status');
  assert.ok(ms < 3000, `exited after ${ms} ms, --drain-timeout is 3 s`);
});

testCase('drain: a client that never answers the close is cut; exit 0 within drain-timeout + 2 s', async () => {
  const s = await startServer(['--drain-timeout', '2']);
  const stubborn = await WsPeer.open(s.port, '/ws/stubborn');
  const coop = await wsConnect(s.wsUrl('/ws/stubborn'));
  const t0 = Date.now();
  process.kill(s.proc.pid, 'SIGTERM');
  await stubborn.expectClose(1001, { tcpTimeoutMs: 5000 }); // we never answer it
  const cutMs = Date.now() - t0;
  assert.equal((await coop.waitClose(3000)).code, 1001);
  const exited = await new Promise((resolve) => {
    if (!s.alive()) resolve(s.proc.exitCode);
    s.proc.once('exit', (c, sig) => resolve(c !== null ? c : sig));
    setTimeout(() => resolve('still running'), 4500 - (Date.now() - t0));
  });
  const ms = Date.now() - t0;
  console.log(`# drain with a client ignoring the close: cut after ${cutMs} ms, exit ${exited} after ${ms} ms`);
  assert.equal(exited, 0, 'exit status');
  assert.ok(ms <= 4000, `exited after ${ms} ms`);
});

testCase('drain: new connections are refused while draining; a second SIGTERM exits promptly', async () => {
  const s = await startServer(['--drain-timeout', '30']);
  const stubborn = await WsPeer.open(s.port, '/ws/stubborn');
  process.kill(s.proc.pid, 'SIGTERM');
  const f = await stubborn.readFrame();
  assert.equal(f.opcode, OP.CLOSE);
  // While draining: no new WebSocket (refused TCP, or 503).
  const during = await request(s.port, '/ws/late', upgrade()).then((r) => `HTTP ${r.status}`,
    (err) => err.code || err.message);
  console.log(`# a new WebSocket during the drain: ${during}`);
  assert.ok(/ECONNREFUSED|HTTP 503/.test(during), `new connection during drain: ${during}`);
  assert.ok(s.alive(), 'still draining (the stubborn client holds it)');
  const t0 = Date.now();
  process.kill(s.proc.pid, 'SIGTERM');
  const code = await s.stop('SIGTERM', 2000);
  const ms = Date.now() - t0;
  console.log(`# second SIGTERM: exit ${code} after ${ms} ms`);
  assert.ok(ms < 1500, `second signal took ${ms} ms`);
  assert.equal(code, 0, 'exit status after the second signal');
  await stubborn.waitTcpEnd(1000);
});

// ---------------------------------------------------------------------------
// Metrics

testCase('/metrics: Prometheus text whose counters move', async () => {
  const s = await startServer(['--rate', '0']);
  const r0 = await get(s.port, '/metrics');
  assert.match(r0.headers['content-type'], /^text\/plain; version=0\.0\.4/);
  const m0 = parseMetrics(r0.body);
  for (const name of ['chathub_connections', 'chathub_rooms', 'chathub_draining', 'chathub_accepted_total',
    'chathub_http_requests_total', 'chathub_messages_in_total', 'chathub_messages_out_total',
    'chathub_bytes_in_total', 'chathub_bytes_out_total', 'chathub_published_total', 'chathub_closes_total',
    'chathub_refused_handshakes_total', 'chathub_slow_client_closes_total', 'chathub_rate_limited_total',
    'chathub_heartbeat_closes_total']) {
    assert.notEqual(metric(m0, name), undefined, `${name} present`);
  }
  assert.match(r0.body, /# TYPE chathub_accepted_total counter/);
  assert.match(r0.body, /# TYPE chathub_connections gauge/);
  const a = await WsPeer.open(s.port, '/ws/met');
  const b = await WsPeer.open(s.port, '/ws/met');
  await a.write(Buffer.concat([text('one'), text('two'), binary('three')]));
  for (const p of [a, b]) for (const x of ['one', 'two']) await p.expectEcho(OP.TEXT, x);
  for (const p of [a, b]) await p.expectEcho(OP.BINARY, 'three');
  const m1 = await metrics(s.port);
  assert.equal(m1['chathub_connections{mode="raw"}'], 2, 'two raw connections open');
  assert.equal(m1.chathub_rooms, 1, 'one room');
  assert.equal(m1.chathub_messages_in_total - m0.chathub_messages_in_total, 3, 'messages_in');
  assert.equal(m1.chathub_messages_out_total - m0.chathub_messages_out_total, 6, 'messages_out');
  assert.equal(m1.chathub_published_total - m0.chathub_published_total, 2, 'published (text only)');
  assert.ok(m1.chathub_bytes_in_total > m0.chathub_bytes_in_total, 'bytes_in');
  assert.ok(m1.chathub_bytes_out_total > m0.chathub_bytes_out_total, 'bytes_out');
  assert.ok(m1.chathub_accepted_total - m0.chathub_accepted_total >= 3, 'accepted');
  await a.write(text('bad', { mask: false }));
  await a.expectClose(1002);
  await b.write(close(1000));
  await b.expectClose(1000);
  await request(s.port, '/ws', upgrade({ Origin: 'http://evil.example' }));
  await request(s.port, '/ws/bad%20room', upgrade());
  await request(s.port, '/ws', { Upgrade: 'websocket', Connection: 'Upgrade', 'Sec-WebSocket-Version': '13' });
  const m2 = await metrics(s.port);
  const d = (k) => m2[k] - m1[k];
  assert.equal(d('chathub_closes_total{code="1002"}'), 1, 'closes{1002}');
  assert.equal(d('chathub_closes_total{code="1000"}'), 1, 'closes{1000}');
  assert.equal(d('chathub_refused_handshakes_total{reason="origin"}'), 1, 'refused{origin}');
  assert.equal(d('chathub_refused_handshakes_total{reason="bad_room"}'), 1, 'refused{bad_room}');
  assert.equal(d('chathub_refused_handshakes_total{reason="bad_handshake"}'), 1, 'refused{bad_handshake}');
  assert.ok(d('chathub_http_requests_total') >= 4, 'http_requests');
  assert.equal(m2['chathub_connections{mode="raw"}'], 0, 'raw connections closed');
  assert.equal(m2['chathub_connections{mode="http"}'], 1, 'only the /metrics request itself');
});
