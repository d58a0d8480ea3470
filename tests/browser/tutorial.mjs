// The classic tutorial page (docs/tutorial.html), opened from disk as a
// newcomer would: a file:// page has "Origin: null", which a hub on a
// loopback address admits. It chats with the chathub page (JSON mode) in
// the same room, both ways.
//
// Exits 77 (meson's "skipped") when Chromium is not installed.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test, assert, startServer, cleanup } from '../integration/lib.mjs';
import { requireChromium, launch, openChat, waitText, sendFromPage } from './helpers.mjs';

requireChromium();

const TUTORIAL = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'docs', 'tutorial.html');

// The tutorial as shipped, with its ws://localhost:8080/ pointed at the
// test's hub, written to a scratch directory and returned as a file:// URL.
function tutorialFile(port) {
  const text = fs.readFileSync(TUTORIAL, 'utf8');
  assert.ok(text.includes('new WebSocket("ws://localhost:8080/")'), 'the tutorial opens ws://localhost:8080/');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chathub-tutorial-'));
  cleanup(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'tutorial.html');
  fs.writeFileSync(file, text.replace('ws://localhost:8080/', `ws://127.0.0.1:${port}/`));
  return `file://${file}`;
}

const tutorialShows = (page, line) => page.waitForFunction((t) => [...document.querySelectorAll('#list li')]
  .some((li) => li.textContent === t), line, { timeout: 10000 })
  .catch((e) => { throw new Error(`the tutorial page never showed ${JSON.stringify(line)}: ${e.message}`); });

test('the tutorial page opened from file:// chats with the JSON page', async () => {
  const s = await startServer();
  const browser = await launch();
  const J = await openChat(browser, s.url, 'jay');
  const context = await browser.newContext();
  cleanup(() => context.close().catch(() => {}));
  const T = await context.newPage();
  const errors = [];
  T.on('pageerror', (e) => errors.push(e.message));
  await T.goto(tutorialFile(s.port), { waitUntil: 'load' });
  await T.waitForFunction(() => ws.readyState === WebSocket.OPEN, null, { timeout: 10000 })
    .catch(async (e) => {
      const list = await T.evaluate(() => document.getElementById('list').textContent);
      throw new Error(`the tutorial page did not connect (${list}): ${e.message}\n${s.output()}`);
    });
  await T.fill('#input', 'hello from a file');
  await T.press('#input', 'Enter');
  await tutorialShows(T, 'hello from a file');
  await waitText(J.page, 'hello from a file');
  await sendFromPage(J.page, 'hello from the chathub page');
  // JSON members' lines reach raw clients as their bare text (docs/protocol.md).
  await tutorialShows(T, 'hello from the chathub page');
  assert.deepEqual(errors, []);
}, { timeout: 60000 });

test('with --strict-origin the same page is refused and the log names the flag', async () => {
  const s = await startServer(['--strict-origin']);
  const browser = await launch();
  const context = await browser.newContext();
  cleanup(() => context.close().catch(() => {}));
  const T = await context.newPage();
  await T.goto(tutorialFile(s.port), { waitUntil: 'load' });
  await tutorialShows(T, 'closed (1006)');
  assert.match(s.output(), /refused mode=http code=403 reason="origin null not allowed \(to allow it: --allow-origin null\)"/);
}, { timeout: 60000 });
