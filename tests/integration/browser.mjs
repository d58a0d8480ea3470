// Real browsers against chathub: Debian's Chromium driven by playwright-core
// (which never downloads a browser). Checks the classic tutorial client
// served with --public, and the embedded page.
//
// Exits 77 (meson's "skipped") when Chromium is not installed.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test, assert, startServer, cleanup } from './lib.mjs';

const CHROMIUM = process.env.CHATHUB_CHROMIUM || '/usr/bin/chromium';
if (!fs.existsSync(CHROMIUM)) {
  console.log(`1..0 # SKIP ${CHROMIUM} not found (apt-get install chromium)`);
  process.exit(77);
}

const { chromium } = await import('playwright-core');

const ARTIFACTS = process.env.CHATHUB_ARTIFACTS ||
  fs.mkdtempSync(path.join(os.tmpdir(), 'chathub-artifacts-'));
fs.mkdirSync(ARTIFACTS, { recursive: true });

const TUTORIAL = `<!doctype html>
<html>
<head><meta charset="utf-8"><title>Tutorial chat</title></head>
<body>
<ul id="list"></ul>
<input id="input" type="text">
<button id="send">Send</button>
<script>
const ws = new WebSocket("ws://" + location.host);
const input = document.getElementById('input');
const list = document.getElementById('list');
document.getElementById('send').onclick = () => ws.send(input.value);
ws.onmessage = e => { const li = document.createElement('li'); li.textContent = e.data; list.appendChild(li) };
</script>
</body>
</html>
`;

async function launch() {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--headless', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    timeout: 30000,
  });
  cleanup(() => browser.close());
  return browser;
}

// A page that records its errors (uncaught exceptions and console errors).
async function openPage(browser, url) {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(`console: ${m.text()}`); });
  await page.goto(url, { waitUntil: 'load', timeout: 15000 });
  return { page, errors };
}

test('the tutorial client in two pages: a line typed in A shows in B and A', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chathub-tutorial-'));
  cleanup(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.writeFileSync(path.join(dir, 'index.html'), TUTORIAL);
  const s = await startServer(['--public', dir]);
  const browser = await launch();
  const A = await openPage(browser, s.url);
  const B = await openPage(browser, s.url);
  for (const p of [A.page, B.page]) {
    await p.waitForFunction(() => ws.readyState === WebSocket.OPEN, null, { timeout: 10000 });
  }
  const line = 'hello from page A <b>&amp;</b>';
  await A.page.fill('#input', line);
  await A.page.click('#send');
  for (const [name, p] of [['B', B.page], ['A', A.page]]) {
    await p.waitForFunction((t) => [...document.querySelectorAll('#list li')]
      .some((li) => li.textContent === t), line, { timeout: 10000 })
      .catch((e) => { throw new Error(`page ${name} did not show the line: ${e.message}`); });
    assert.equal(await p.locator('#list b').count(), 0, `page ${name} rendered no HTML from the message`);
  }
  await B.page.screenshot({ path: path.join(ARTIFACTS, 'tutorial-page-b.png') });
  // The tutorial page has no favicon, so only uncaught exceptions count.
  for (const e of [...A.errors, ...B.errors]) assert.ok(!e.startsWith('pageerror'), e);
}, { timeout: 60000 });

test('the embedded page renders, connects and chats', async () => {
  const s = await startServer();
  const browser = await launch();
  const { page, errors } = await openPage(browser, s.url);
  const title = await page.title();
  assert.ok(title.trim().length > 0, 'the page has a title');
  await page.waitForSelector('#status[data-state="open"]', { timeout: 10000 });
  const other = await openPage(browser, s.url);
  await other.page.waitForSelector('#status[data-state="open"]', { timeout: 10000 });
  await page.fill('#message', 'hi from the embedded page');
  await page.press('#message', 'Enter');
  for (const p of [page, other.page]) {
    await p.waitForFunction(() => [...document.querySelectorAll('#messages .text')]
      .some((el) => el.textContent === 'hi from the embedded page'), null, { timeout: 10000 });
  }
  assert.equal(await page.inputValue('#message'), '', 'the input is cleared after sending');
  await page.screenshot({ path: path.join(ARTIFACTS, 'embedded-page.png') });
  await page.setViewportSize({ width: 390, height: 760 });
  await page.screenshot({ path: path.join(ARTIFACTS, 'embedded-page-mobile.png') });
  // Switching rooms reconnects to /ws/<room>.
  await page.fill('#room-input', 'other-room');
  await page.click('#join');
  await page.waitForFunction(() => document.getElementById('status-text').textContent.includes('#other-room'),
    null, { timeout: 10000 });
  await page.waitForSelector('#status[data-state="open"]', { timeout: 10000 });
  assert.deepEqual(errors, []);
  assert.deepEqual(other.errors, []);
}, { timeout: 60000 });

test('the embedded page reconnects after the server restarts', async () => {
  const s = await startServer();
  const browser = await launch();
  const { page, errors } = await openPage(browser, s.url);
  await page.waitForSelector('#status[data-state="open"]', { timeout: 10000 });
  const port = s.port;
  assert.equal(await s.stop('SIGTERM', 10000), 0);
  await page.waitForSelector('#status[data-state="closed"]', { timeout: 10000 });
  const s2 = await startServer(['--port', String(port)]);
  assert.equal(s2.port, port);
  await page.waitForSelector('#status[data-state="open"]', { timeout: 20000 });
  // Failed reconnection attempts log console errors in Chromium; only
  // uncaught exceptions count here.
  assert.deepEqual(errors.filter((e) => e.startsWith('pageerror')), []);
}, { timeout: 60000 });
