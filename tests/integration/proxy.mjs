// --trust-proxy: from trusted peers only, the client address comes from
// X-Forwarded-For (rightmost untrusted hop) or Forwarded, and the
// per-address limit and the logs use it; everyone else's headers are ignored.
import {
  test, assert, startServer, wsConnect, buildRequest, RawHttp,
} from './lib.mjs';

const open = (s, xff, extra = {}) => wsConnect(s.wsUrl('/ws/lobby'),
  { headers: xff === null ? extra : { 'X-Forwarded-For': xff, ...extra } });

async function refused(s, xff, extra = {}) {
  try {
    const c = await open(s, xff, extra);
    c.close();
    return false;
  } catch (e) {
    assert.match(e.message, /HTTP 503/, `refused with 503: ${e.message}`);
    return true;
  }
}

async function waitLog(s, re, ms = 5000) {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (re.test(s.output())) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`the log never matched ${re}\n${s.output()}`);
}

test('--trust-proxy 127.0.0.1/32 --max-conns-per-ip 2: counted per forwarded address', async () => {
  const s = await startServer(['--trust-proxy', '127.0.0.1/32', '--max-conns-per-ip', '2']);
  // Three clients behind the proxy, three addresses: all in, although they
  // all come from 127.0.0.1.
  const a = await open(s, '203.0.113.1');
  const b = await open(s, '203.0.113.2');
  const c = await open(s, '198.51.100.7, 203.0.113.3'); // a spoofed hop on the left is skipped
  // Two from 203.0.113.1 is the limit: the next from there is refused, and
  // one from a new address is still admitted.
  const a2 = await open(s, '203.0.113.1');
  assert.equal(await refused(s, '203.0.113.1'), true, 'a third from 203.0.113.1');
  const d = await open(s, '203.0.113.4');
  await waitLog(s, /info  203\.0\.113\.1: refused mode=http code=503 reason="over --max-conns-per-ip 2 \(via proxy\)"/);
  // The forwarded hop counted, not the spoofed one: 198.51.100.7 has room.
  const e1 = await open(s, '198.51.100.7');
  const e2 = await open(s, '198.51.100.7');
  assert.equal(await refused(s, '198.51.100.7'), true, 'a third from 198.51.100.7');
  // Forwarded (RFC 7239) when there is no X-Forwarded-For.
  const f = await open(s, null, { Forwarded: 'for="[2001:db8::5]:4711";proto=https' });
  for (const x of [a, b, c, a2, d, e1, e2, f]) x.close();
});

test('--trust-proxy: a closed connection frees its forwarded address', async () => {
  const s = await startServer(['--trust-proxy', '127.0.0.1/32', '--max-conns-per-ip', '1']);
  const a = await open(s, '203.0.113.9');
  assert.equal(await refused(s, '203.0.113.9'), true, 'a second from 203.0.113.9');
  a.close();
  await a.waitClose();
  let ok = false;
  for (let i = 0; i < 50 && !ok; i++) {
    ok = !(await refused(s, '203.0.113.9'));
    if (!ok) await new Promise((r) => setTimeout(r, 50));
  }
  assert.ok(ok, 'admitted again once the first has closed');
});

test('without --trust-proxy, X-Forwarded-For is ignored', async () => {
  const s = await startServer(['--max-conns-per-ip', '2']);
  const a = await open(s, '203.0.113.1');
  const b = await open(s, '203.0.113.2');
  assert.equal(await refused(s, '203.0.113.3'), true, 'the third from 127.0.0.1, whatever it claims');
  a.close();
  b.close();
});

test('--trust-proxy: a peer outside the trusted networks is counted as itself', async () => {
  // The hub trusts 127.0.0.1 only; these clients connect from 127.0.0.5.
  const s = await startServer(['--trust-proxy', '127.0.0.1/32', '--max-conns-per-ip', '2']);
  const from = { localAddress: '127.0.0.5' };
  const c1 = await wsConnect(s.wsUrl('/ws/lobby'), { headers: { 'X-Forwarded-For': '203.0.113.1' }, ...from });
  const c2 = await wsConnect(s.wsUrl('/ws/lobby'), { headers: { 'X-Forwarded-For': '203.0.113.2' }, ...from });
  await assert.rejects(wsConnect(s.wsUrl('/ws/lobby'), { headers: { 'X-Forwarded-For': '203.0.113.3' }, ...from }),
    /HTTP 503/);
  c1.close();
  c2.close();
});

test('--trust-proxy: a keep-alive proxy connection moves its count with each request', async () => {
  // One proxy connection carries the requests of different clients in turn.
  const s = await startServer(['--trust-proxy', '127.0.0.1/32', '--max-conns-per-ip', '1']);
  const held = await open(s, '203.0.113.1');
  const conn = await RawHttp.connect(s.port);
  const req = (xff) => buildRequest('GET', '/healthz', { 'X-Forwarded-For': xff });
  await conn.write(req('203.0.113.2'));
  assert.equal((await conn.readResponse()).status, 200, 'for 203.0.113.2');
  await conn.write(req('203.0.113.3'));
  assert.equal((await conn.readResponse()).status, 200, 'for 203.0.113.3, same connection');
  // 203.0.113.2 is free again: this connection now counts for .3.
  const other = await open(s, '203.0.113.2');
  await conn.write(req('203.0.113.1'));
  assert.equal((await conn.readResponse()).status, 503, 'for 203.0.113.1, at its limit');
  conn.destroy();
  for (const x of [held, other]) x.close();
});
