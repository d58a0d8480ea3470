// The outbox of the chathub page (public/): a message typed while the hub is
// down is shown as pending (greyed, with a clock), goes out by itself once
// hello resumes, and arrives once (cmid); a send that fails for good offers
// retry and discard.
//
// Exits 77 (meson's "skipped") when Chromium is not installed.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test, assert, startServer, cleanup } from '../integration/lib.mjs';
import { requireChromium, launch, openChat, waitText, shownTexts, waitOnline, Bot, screenshot } from './helpers.mjs';

requireChromium();

// Every message of `expected` once, in order, and nothing left pending.
async function assertExactlyOnce(page, expected) {
  await page.waitForFunction(() => !document.querySelector('#pending .msg'), null, { timeout: 10000 });
  assert.deepEqual((await shownTexts(page)).map((m) => m.text), expected);
}

test('a message typed while the hub is stopped is delivered once after it is back, without a second Enter', async () => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'chathub-ui-data-'));
  cleanup(() => fs.rmSync(dataDir, { recursive: true, force: true }));
  let s = await startServer(['--data-dir', dataDir]);
  const port = s.port;
  const browser = await launch();
  const A = await openChat(browser, s.url, 'alice');
  let bot = await Bot.connect(s, 'bot');
  await bot.join('lobby');
  await bot.say('lobby', 'before the stop');
  await waitText(A.page, 'before the stop');
  assert.equal(await s.stop('SIGTERM', 15000), 0);
  await A.page.waitForSelector('#status[data-state="closed"]', { timeout: 10000 });

  // Typed and sent with one Enter while nothing listens on the port.
  const text = 'typed while the hub was down';
  await A.page.fill('#message', text);
  assert.equal(await A.page.isDisabled('#send'), false, 'sending is possible offline');
  await A.page.press('#message', 'Enter');
  assert.equal(await A.page.inputValue('#message'), '', 'the composer is cleared');
  const pending = A.page.locator('#pending .msg.pending.waiting');
  assert.equal(await pending.count(), 1, 'shown as waiting');
  assert.equal(await pending.locator('.text').textContent(), text);
  assert.equal(await pending.locator('.clock').count(), 1, 'with a clock');
  assert.match(await pending.locator('.state').textContent(), /goes out by itself/);
  assert.ok(Number(await pending.evaluate((el) => getComputedStyle(el.querySelector('.text')).opacity)) < 1, 'greyed');
  await screenshot(A.page, 'outbox-waiting.png');

  s = await startServer(['--data-dir', dataDir, '--port', String(port)]);
  bot = await Bot.connect(s, 'bot');
  await bot.join('lobby');
  await waitOnline(A.page, 30000);
  await bot.push((p) => p.t === 'msg' && p.text === text, 20000, 'the page\'s offline message');
  await A.page.waitForFunction(() => !document.querySelector('#pending .msg'), null, { timeout: 10000 });
  // Once: one push to the bot, once in history, once on the page.
  await bot.say('lobby', 'after the restart');
  await waitText(A.page, 'after the restart');
  assert.equal(bot.pushes.filter((p) => p.t === 'msg' && p.text === text).length, 1, 'one push');
  const h = await bot.request({ op: 'history', room: 'lobby', limit: 100 });
  assert.deepEqual(h.messages.map((m) => m.text), ['before the stop', text, 'after the restart']);
  await assertExactlyOnce(A.page, ['before the stop', text, 'after the restart']);
  assert.deepEqual(A.errors, []);
}, { timeout: 90000 });

test('a send that fails for good offers retry and discard', async () => {
  let s = await startServer(['--no-persist']);
  const port = s.port;
  const browser = await launch();
  const A = await openChat(browser, s.url, 'alice');
  assert.equal(await s.stop('SIGTERM', 15000), 0);
  await A.page.waitForSelector('#status[data-state="closed"]', { timeout: 10000 });
  // Typed offline; the hub that comes back takes messages of 256 bytes at
  // most and closes with 1009 (do not retry) when it gets this one.
  const text = 'x'.repeat(600);
  await A.page.fill('#message', text);
  await A.page.press('#message', 'Enter');
  s = await startServer(['--no-persist', '--max-message', '256', '--port', String(port)]);
  await A.page.waitForSelector('#pending .msg.failed', { timeout: 30000 }).catch(async (e) => {
    const st = await A.page.evaluate(() => ({ conn: window.__chathub.state.conn, lastRetry: window.__chathub.state.lastRetry,
      outbox: window.__chathub.state.outbox.map((o) => o.status), banner: document.getElementById('banner-text').textContent }));
    throw new Error(`${e.message}: ${JSON.stringify(st)}`);
  });
  const failed = A.page.locator('#pending .msg.failed');
  assert.match(await failed.locator('.state').textContent(), /Not sent/);
  assert.equal(await failed.locator('button', { hasText: 'Retry' }).count(), 1);
  await failed.locator('button', { hasText: 'Discard' }).click();
  assert.equal(await A.page.locator('#pending .msg').count(), 0, 'discarded');
  assert.deepEqual(A.errors, []);
}, { timeout: 60000 });
