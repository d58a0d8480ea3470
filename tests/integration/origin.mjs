// The Origin policy as a newcomer meets it: on a hub that listens on a
// loopback address only, pages opened from disk (Origin: null) and pages of
// other local dev servers (http://localhost:*) chat; with --strict-origin (the
// policy of a hub reachable from other machines) they are refused, and the
// 403 body and the log line name the origin and the --allow-origin to add.
import {
  test, assert, startServer, wsConnect, httpRequest, buildRequest, upgradeHeaders, withTimeout,
} from './lib.mjs';

// A raw upgrade with the given Origin: returns {status, body (string)}.
async function upgrade(s, origin) {
  const r = await httpRequest(s.port, buildRequest('GET', '/ws/lobby',
    { Host: `127.0.0.1:${s.port}`, ...upgradeHeaders(undefined, { Origin: origin }) }), { noBody: false })
    .catch((e) => { throw new Error(`upgrade with Origin ${origin}: ${e.message}`); });
  return { status: r.status, body: r.body ? r.body.toString('utf8') : '' };
}

async function waitLog(s, re, ms = 5000) {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (re.test(s.output())) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`the log never matched ${re}\n${s.output()}`);
}

test('a loopback hub: an Origin: null client chats with a client without Origin', async () => {
  const s = await startServer();
  const page = await wsConnect(s.wsUrl('/ws/lobby'), { headers: { Origin: 'null' } });
  const other = await wsConnect(s.wsUrl('/ws/lobby'));
  await page.send('hello from a file:// page');
  assert.equal(await other.nextText(), 'hello from a file:// page');
  await other.send('hello back');
  // The page sees its own line first (raw mode echoes to the sender too).
  assert.equal(await page.nextText(), 'hello from a file:// page');
  assert.equal(await page.nextText(), 'hello back');
});

test('a loopback hub admits local dev servers and still refuses other sites', async () => {
  const s = await startServer();
  for (const origin of ['http://localhost:5173', 'http://127.0.0.1:3000', 'http://[::1]:8000',
    'https://localhost:8443', 'http://localhost']) {
    const c = await wsConnect(s.wsUrl('/ws/lobby'), { headers: { Origin: origin } });
    c.close();
  }
  for (const origin of ['http://evil.example', 'http://localhost.evil.example:3000',
    'http://127.0.0.2:3000', 'http://localhost:3000/x']) {
    const r = await upgrade(s, origin);
    assert.equal(r.status, 403, `Origin ${origin}`);
  }
  const r = await upgrade(s, 'http://evil.example');
  assert.match(r.body, /pages at http:\/\/evil\.example\./);
  assert.match(r.body, /--allow-origin http:\/\/evil\.example\n/);
});

test('--strict-origin (or a hub on another address): null is refused and the body names the flag', async () => {
  const s = await startServer(['--strict-origin']);
  const r = await upgrade(s, 'null');
  assert.equal(r.status, 403, 'Origin: null on a strict hub');
  assert.match(r.body, /does not accept WebSockets from pages at null\./);
  assert.match(r.body, /start chathub with --allow-origin null\n/);
  await waitLog(s, /info  127\.0\.0\.1: refused mode=http code=403 reason="origin null not allowed \(to allow it: --allow-origin null\)"/);
  const dev = await upgrade(s, 'http://localhost:5173');
  assert.equal(dev.status, 403, 'a local dev server on a strict hub');
  assert.match(dev.body, /--allow-origin http:\/\/localhost:5173\n/);
  // The same-origin page and non-browser clients are unaffected.
  const same = await wsConnect(s.wsUrl('/ws/lobby'), { headers: { Origin: `http://127.0.0.1:${s.port}` } });
  same.close();
});

test('the suggested --allow-origin admits exactly that origin', async () => {
  const s = await startServer(['--strict-origin', '--allow-origin', 'null',
    '--allow-origin', 'http://localhost:5173']);
  const a = await wsConnect(s.wsUrl('/ws/lobby'), { headers: { Origin: 'null' } });
  const b = await wsConnect(s.wsUrl('/ws/lobby'), { headers: { Origin: 'http://localhost:5173' } });
  await a.send('x');
  assert.equal(await withTimeout(b.nextText(), 5000, 'b got nothing'), 'x');
  const other = await upgrade(s, 'http://localhost:5174');
  assert.equal(other.status, 403, 'another port stays refused');
});

test('a refused origin with control bytes is shown sanitised', async () => {
  const s = await startServer(['--strict-origin']);
  const r = await upgrade(s, 'http://a"b\'c.example');
  assert.equal(r.status, 403);
  assert.match(r.body, /pages at http:\/\/a\?b\?c\.example\./);
});

test('behind --trust-proxy a loopback hub is reachable from everywhere: no local-dev relaxation', async () => {
  const s = await startServer(['--trust-proxy', '127.0.0.1/32']);
  const r = await upgrade(s, 'null');
  assert.equal(r.status, 403, 'Origin: null behind a proxy');
  assert.match(r.body, /--allow-origin null\n/);
  assert.equal((await upgrade(s, 'http://localhost:5173')).status, 403, 'a dev origin behind a proxy');
});
