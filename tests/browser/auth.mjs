// The chathub client (public/) on a hub with connection tokens: a token in
// the URL's fragment signs the page in under the token's name (and leaves
// the address bar); without one the page says what is needed; at the
// token's exp it says the session expired.
//
// Exits 77 (meson's "skipped") when Chromium is not installed.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test, assert, startServer, cleanup } from '../integration/lib.mjs';
import { requireChromium, launch, waitOnline, DESKTOP } from './helpers.mjs';

requireChromium();

const SECRET = 'browser-test-secret-long-enough-0123456789';
const b64u = (x) => Buffer.from(x).toString('base64url');
function sign(claims) {
  const head = b64u(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64u(JSON.stringify(claims));
  return `${head}.${body}.${b64u(crypto.createHmac('sha256', SECRET).update(`${head}.${body}`).digest())}`;
}
const now = () => Math.floor(Date.now() / 1000);

async function hub() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chathub-bauth-'));
  fs.writeFileSync(path.join(dir, 'secret'), SECRET);
  return startServer(['--auth-secret-file', path.join(dir, 'secret')]);
}

async function page(browser, url) {
  const context = await browser.newContext({ viewport: DESKTOP });
  cleanup(() => context.close().catch(() => {}));
  const p = await context.newPage();
  const errors = [];
  p.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  p.on('console', (m) => { if (m.type() === 'error' && !/WebSocket/.test(m.text())) errors.push(m.text()); });
  await p.goto(url, { waitUntil: 'load', timeout: 15000 });
  return { p, errors };
}

const banner = (p, re) => p.waitForFunction((src) => {
  const b = document.getElementById('banner');
  return !b.hidden && new RegExp(src).test(b.textContent);
}, re.source, { timeout: 10000 });

test('#token= signs the page in: the signed name shows, the URL loses the token', async () => {
  const s = await hub();
  const browser = await launch();
  const tok = sign({ sub: 'user-42', name: 'Signed Sam', exp: now() + 3600 });
  const { p, errors } = await page(browser, `${s.url}#token=${tok}`);
  await waitOnline(p);
  await p.waitForFunction(() => document.getElementById('me-nick').textContent === 'Signed Sam',
    null, { timeout: 5000 });
  assert.equal(await p.evaluate(() => location.hash), '', 'the token left the address bar');
  assert.equal(await p.evaluate(() => document.getElementById('me').disabled), true, 'no nick change');
  assert.equal(await p.evaluate(() => document.getElementById('nick-dialog').open), false);
  // A reload keeps the session (the tab kept the token).
  await p.reload({ waitUntil: 'load' });
  await waitOnline(p);
  await p.waitForFunction(() => document.getElementById('me-nick').textContent === 'Signed Sam',
    null, { timeout: 5000 });
  assert.deepEqual(errors, []);
});

test('without a token the page explains what is needed', async () => {
  const s = await hub();
  const browser = await launch();
  const { p } = await page(browser, s.url);
  await banner(p, /signed-in users/);
  assert.equal(await p.evaluate(() => window.__chathub.state.conn), 'offline');
});

test('at the token\'s exp the page says the session expired', async () => {
  const s = await hub();
  const browser = await launch();
  const tok = sign({ sub: 'brief', name: 'Brief', exp: now() + 3 });
  const { p } = await page(browser, `${s.url}#token=${tok}`);
  await waitOnline(p);
  await banner(p, /session expired/);
});
