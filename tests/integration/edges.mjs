// Issue 20 from outside: look-alike nicks, control characters in text,
// strict HTTP framing, the Host policy against DNS rebinding, the security
// headers of the page (checked in Chromium under its own CSP) and who may
// read /metrics. Every hub is started here on 127.0.0.1 with port 0 and
// stopped by PID; other loopback addresses serve as client source addresses.
import fs from 'node:fs';
import net from 'node:net';
import {
  test, assert, startServer, runChathub, RawHttp, buildRequest, upgradeHeaders, parseHead,
  withTimeout, cleanup,
} from './lib.mjs';
import { JClient, start, assertErr } from '../protocol/jclient.mjs';

const CHROMIUM = process.env.CHATHUB_CHROMIUM || '/usr/bin/chromium';

// ---------------------------------------------------------------------------
// Nicks and text

// The look-alikes of "alice" named in issue 20, and a few more of each kind.
const LOOKALIKES = [
  ['Cyrillic a (U+0430)', '\u0430lice'],
  ['Cyrillic e (U+0435)', 'alic\u0435'],
  ['zero-width space after', 'alice\u200b'],
  ['zero-width joiner inside', 'al\u200dice'],
  ['right-to-left override', '\u202eecila'],
  ['right-to-left override inside', 'al\u202eice'],
  ['fullwidth a (U+FF41)', '\uff41lice'],
  ['all fullwidth', '\uff41\uff4c\uff49\uff43\uff45'],
  ['soft hyphen (U+00AD)', 'al\u00adice'],
  ['capitals', 'ALICE'],
  ['digit one for l', 'a1ice'],
];

test('while alice is online, each look-alike is refused with nick_taken or bad_nick', async () => {
  const s = await start();
  const alice = await JClient.open(s, { nick: 'alice' });
  assert.equal(alice.hello.ok, true);
  for (const [what, nick] of LOOKALIKES) {
    const c = await JClient.open(s);
    const r = await c.req('hello', { nick });
    assert.equal(r.ok, false, `${what} (${JSON.stringify(nick)}) was accepted: ${JSON.stringify(r)}`);
    assert.ok(['nick_taken', 'bad_nick'].includes(r.error.code), `${what}: ${JSON.stringify(r)}`);
    console.log(`# ${what} ${JSON.stringify(nick)}: ${r.error.code} (${r.error.message})`);
    c.close(1000);
  }
  // A different nick is still fine, and so is renaming into a look-alike not.
  const bob = await JClient.open(s, { nick: 'alicia' });
  const rn = await bob.req('nick', { nick: '\uff41lice' });
  assertErr(rn, 'nick_taken');
  // Once alice leaves, the plain-ASCII spelling is free again.
  alice.close(1000);
  await alice.closed;
  const again = await JClient.open(s);
  for (let i = 0; i < 50; i++) {
    const r = await again.req('hello', { nick: 'Alice' });
    if (r.ok) return;
    assertErr(r, 'nick_taken');
    await new Promise((res) => setTimeout(res, 20));
  }
  assert.fail('Alice stayed taken after alice left');
});

test('a text with NUL (or another C0 control but tab and newline) gets bad_text; tab and newline pass', async () => {
  const s = await start();
  const a = await JClient.open(s, { nick: 'ann' });
  await a.joinOk('r');
  for (const text of ['nul \u0000 here', 'cr\r', 'bell \u0007', 'esc \u001b[2J']) {
    assertErr(await a.req('send', { room: 'r', text }), 'bad_text');
  }
  const ok = await a.sendOk('r', 'tab\tand\nnewline');
  assert.equal(ok.offset, 1, 'only the good text was stored');
  const h = await a.req('history', { room: 'r' });
  assert.deepEqual(h.messages.map((m) => m.text), ['tab\tand\nnewline']);
});

// ---------------------------------------------------------------------------
// Strict HTTP

// Sends bytes on a fresh connection; returns every response head that came
// back before the hub closed the connection.
async function exchange(port, bytes, { localAddress } = {}) {
  const c = localAddress ? await connectFrom(port, localAddress) : await RawHttp.connect(port);
  await c.write(bytes);
  const first = await c.readResponse();
  const closed = await c.waitClosed(3000).catch(() => false);
  const rest = c.buf.toString('latin1');
  c.destroy();
  return { status: first.status, headers: first.headers, body: first.body.toString('utf8'), closed, rest };
}

function connectFrom(port, localAddress) {
  return withTimeout(new Promise((resolve, reject) => {
    const sock = net.connect({ port, host: '127.0.0.1', localAddress });
    sock.once('connect', () => { sock.off('error', reject); resolve(new RawHttp(sock)); });
    sock.once('error', reject);
  }), 5000, `connect from ${localAddress} timed out`);
}

test('white space before a colon, obs-fold and a missing Host get 400 and the connection closes', async () => {
  const s = await startServer();
  const H = 'Host: 127.0.0.1\r\n';
  const cases = [
    ['Content-Length : 5', `POST / HTTP/1.1\r\n${H}Content-Length : 5\r\n\r\nhello`],
    ['Transfer-Encoding : chunked', `POST / HTTP/1.1\r\n${H}Transfer-Encoding : chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`],
    ['obs-fold', `GET / HTTP/1.1\r\n${H}X-Note: one\r\n two\r\n\r\n`],
    ['folded Host', `GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n evil.example\r\n\r\n`],
    ['no Host on HTTP/1.1', 'GET / HTTP/1.1\r\nAccept: */*\r\n\r\n'],
    ['two Hosts', `GET / HTTP/1.1\r\n${H}Host: evil.example\r\n\r\n`],
    ['Content-Length twice', `POST / HTTP/1.1\r\n${H}Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello`],
    ['Content-Length and Transfer-Encoding', `POST / HTTP/1.1\r\n${H}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`],
  ];
  for (const [what, bytes] of cases) {
    // A second request rides behind each: it must never be answered.
    const r = await exchange(s.port, bytes + `GET /healthz HTTP/1.1\r\n${H}\r\n`);
    assert.equal(r.status, 400, `${what}: ${r.status} ${r.body}`);
    assert.equal(r.closed, true, `${what}: the connection was not closed`);
    assert.equal(r.rest, '', `${what}: more came after the 400: ${JSON.stringify(r.rest)}`);
    console.log(`# ${what}: 400, closed`);
  }
  // The neighbours that are fine still work.
  const ok = await exchange(s.port, `GET /healthz HTTP/1.1\r\nHost:  127.0.0.1  \r\nX-Note: a  b\r\nConnection: close\r\n\r\n`);
  assert.equal(ok.status, 200);
  const old = await exchange(s.port, 'GET /healthz HTTP/1.0\r\n\r\n');
  assert.equal(old.status, 200, 'HTTP/1.0 needs no Host');
});

// ---------------------------------------------------------------------------
// Host names (DNS rebinding)

function upgradeBytes(host, extra = {}) {
  return buildRequest('GET', '/ws', { ...upgradeHeaders(undefined, extra), Host: host });
}

test('a hub on loopback refuses Host: evil.example (421, no 101) and takes the loopback names', async () => {
  const s = await startServer();
  const port = s.port;
  for (const host of ['evil.example', `evil.example:${port}`, 'chat.example', `127.0.0.2:${port}`, '']) {
    const up = await exchange(port, upgradeBytes(host, { Origin: `http://${host}` }));
    assert.equal(up.status, 421, `upgrade with Host ${JSON.stringify(host)}: ${up.status}`);
    assert.equal(up.closed, true);
    const page = await exchange(port, buildRequest('GET', '/', { Host: host, Connection: 'close' }));
    assert.equal(page.status, 421, `GET / with Host ${JSON.stringify(host)}: ${page.status}`);
    const m = await exchange(port, buildRequest('GET', '/metrics', { Host: host, Connection: 'close' }));
    assert.equal(m.status, 421, `GET /metrics with Host ${JSON.stringify(host)}: ${m.status}`);
  }
  console.log('# Host evil.example on a loopback hub: 421, no 101');
  // /healthz answers whatever the Host.
  const hz = await exchange(port, buildRequest('GET', '/healthz', { Host: 'evil.example', Connection: 'close' }));
  assert.equal(hz.status, 200);
  for (const host of [`localhost:${port}`, 'LOCALHOST', `127.0.0.1:${port}`, `[::1]:${port}`]) {
    const c = await RawHttp.connect(port);
    await c.write(upgradeBytes(host, { Origin: `http://${host}` }));
    const head = await c.until(() => parseHead(c.buf) || undefined, 5000, 'a response head');
    assert.equal(head.status, 101, `Host ${host}: ${head.status}`);
    c.destroy();
  }
});

test('a hub with --server-name chat.example answers to chat.example (and loopback names) only', async () => {
  const s = await startServer(['--server-name', 'chat.example', '--server-name', 'Other.Example']);
  const port = s.port;
  for (const host of ['chat.example', `CHAT.EXAMPLE:${port}`, 'other.example', `localhost:${port}`]) {
    const c = await RawHttp.connect(port);
    await c.write(upgradeBytes(host, { Origin: `http://${host}` }));
    const head = await c.until(() => parseHead(c.buf) || undefined, 5000, 'a response head');
    assert.equal(head.status, 101, `Host ${host}: ${head.status}`);
    c.destroy();
  }
  for (const host of ['evil.example', 'x.chat.example', 'chat.example.evil', 'chat.exampl']) {
    const up = await exchange(port, upgradeBytes(host, { Origin: `http://${host}` }));
    assert.equal(up.status, 421, `Host ${host}: ${up.status}`);
    const page = await exchange(port, buildRequest('GET', '/', { Host: host, Connection: 'close' }));
    assert.equal(page.status, 421, `GET / with Host ${host}: ${page.status}`);
  }
  console.log('# --server-name chat.example: other names get 421');
  for (const bad of ['chat.example:443', 'a b', '']) {
    const r = await runChathub(['--server-name', bad, '--port', '0']);
    assert.equal(r.code, 2, `--server-name ${JSON.stringify(bad)}: exit ${r.code}`);
    assert.match(r.stderr, /--server-name/);
  }
});

// ---------------------------------------------------------------------------
// /metrics

test('/metrics: loopback peers by default (127.0.0.3 too); --metrics-allow 127.0.0.1/32 refuses 127.0.0.2 with 403', async () => {
  const get = (port, path, localAddress) => exchange(port,
    buildRequest('GET', path, { Host: '127.0.0.1', Connection: 'close' }), { localAddress });
  const open = await startServer();
  assert.equal((await get(open.port, '/metrics', '127.0.0.3')).status, 200);
  assert.equal((await get(open.port, '/metrics', '127.0.0.1')).status, 200);
  await open.stop();

  const s = await startServer(['--metrics-allow', '127.0.0.1/32']);
  const refused = await get(s.port, '/metrics', '127.0.0.2');
  assert.equal(refused.status, 403, `from 127.0.0.2: ${refused.status}`);
  assert.doesNotMatch(refused.body, /chathub_/, 'no metric leaked in the 403');
  console.log(`# /metrics from 127.0.0.2 with --metrics-allow 127.0.0.1/32: ${refused.status}`);
  const allowed = await get(s.port, '/metrics', '127.0.0.1');
  assert.equal(allowed.status, 200);
  assert.match(allowed.body, /chathub_/);
  assert.equal((await get(s.port, '/healthz', '127.0.0.2')).status, 200, '/healthz stays open');

  const wide = await startServer(['--metrics-allow', '10.0.0.0/8', '--metrics-allow', '127.0.0.2/31']);
  assert.equal((await get(wide.port, '/metrics', '127.0.0.3')).status, 200);
  assert.equal((await get(wide.port, '/metrics', '127.0.0.4')).status, 403);

  for (const bad of ['10.0.0.1/8', 'example.org', '10.0.0.0/40']) {
    const r = await runChathub(['--metrics-allow', bad, '--port', '0']);
    assert.equal(r.code, 2, `--metrics-allow ${bad}: exit ${r.code}`);
    assert.match(r.stderr, /--metrics-allow/);
  }
});

// ---------------------------------------------------------------------------
// The page under its own CSP

const PAGE_CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
  "connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; form-action 'self'; " +
  "frame-ancestors 'none'";

test('the page has its security headers and loads in Chromium under its CSP with no console errors', async () => {
  const s = await startServer(['--rate', '0']);
  const head = await exchange(s.port, buildRequest('GET', '/', { Host: `127.0.0.1:${s.port}`, Connection: 'close' }));
  assert.equal(head.status, 200);
  assert.equal(head.headers['content-security-policy'], PAGE_CSP);
  assert.equal(head.headers['x-frame-options'], 'DENY');
  assert.equal(head.headers['referrer-policy'], 'no-referrer');
  assert.equal(head.headers['x-content-type-options'], 'nosniff');
  const missing = await exchange(s.port, buildRequest('GET', '/nope.html', { Host: '127.0.0.1', Connection: 'close' }));
  assert.equal(missing.status, 404);
  assert.equal(missing.headers['content-security-policy'], PAGE_CSP, 'the 404 page is HTML too');

  const { chromium } = await import('playwright-core');
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--headless', '--disable-gpu', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    timeout: 30000,
  });
  cleanup(() => browser.close().catch(() => {}));
  const context = await browser.newContext();
  // Record every CSP violation from the first script on.
  await context.addInitScript(() => {
    window.__violations = [];
    document.addEventListener('securitypolicyviolation',
      (e) => window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`));
  });
  const page = await context.newPage();
  const problems = [];
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('requestfailed', (r) => problems.push(`requestfailed: ${r.url()} ${r.failure()?.errorText}`));
  const resp = await page.goto(s.url, { waitUntil: 'load', timeout: 15000 });
  assert.equal(resp.headers()['content-security-policy'], PAGE_CSP);
  await page.waitForSelector('#status[data-conn="online"]', { timeout: 15000 });
  await page.waitForSelector('#nick-dialog[open]', { timeout: 5000 });
  await page.fill('#nick-input', 'dora');
  await page.click('#nick-save');
  await page.waitForFunction(() => document.getElementById('me-nick').textContent === 'dora', null, { timeout: 5000 });
  await page.fill('#message', 'hello under CSP');
  await page.press('#message', 'Enter');
  await page.waitForFunction(() => [...document.querySelectorAll('#messages .msg .text')]
    .some((el) => el.textContent === 'hello under CSP'), null, { timeout: 10000 });
  const violations = await page.evaluate(() => window.__violations);
  assert.deepEqual(violations, [], `CSP violations: ${violations.join('; ')}`);
  assert.deepEqual(problems, [], problems.join('\n'));
  console.log('# the page loaded, connected and sent under its CSP: 0 violations, 0 console errors');

  // The control: an inline script is blocked and reported, so the checks
  // above can see a violation when there is one.
  const ran = await page.evaluate(() => {
    const el = document.createElement('script');
    el.textContent = 'window.__inlineRan = true;';
    document.body.append(el);
    return window.__inlineRan === true;
  });
  assert.equal(ran, false, 'an inline script ran despite the CSP');
  await page.waitForFunction(() => window.__violations.length > 0, null, { timeout: 5000 });
  const after = await page.evaluate(() => window.__violations);
  assert.match(after[0], /^script-src/);
}, { timeout: 60000, skip: !fs.existsSync(CHROMIUM) && `${CHROMIUM} not found` });
