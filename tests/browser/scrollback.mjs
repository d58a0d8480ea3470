// Scrollback in the chathub page (public/): scrolling up loads older pages
// by itself (IntersectionObserver, no "Load older" clicks) until the hub has
// nothing older, where a marker says that older messages are not kept and
// how many the hub keeps per room (hello.limits.history).
//
// Exits 77 (meson's "skipped") when Chromium is not installed.
import { test, assert, startServer } from '../integration/lib.mjs';
import { requireChromium, launch, openChat, waitText, shownTexts, Bot, screenshot } from './helpers.mjs';

requireChromium();

// Sends texts with up to `window` requests in flight (one socket keeps their
// order), so 3,000 messages take a few round trips' worth of time, not 3,000.
async function pour(bot, room, texts, window = 200) {
  for (let i = 0; i < texts.length; i += window) {
    await Promise.all(texts.slice(i, i + window).map((t) => bot.say(room, t)));
  }
}

// Scrolls the log to the top until the marker shows (or the budget runs
// out); returns how many history requests the page made meanwhile.
async function scrollToTheStart(page, maxSteps = 200) {
  for (let step = 0; step < maxSteps; step++) {
    const done = await page.evaluate(() => {
      const log = document.getElementById('log');
      log.scrollTop = 0;
      return !document.getElementById('not-kept').hidden;
    });
    if (done) return step;
    await page.waitForTimeout(50);
  }
  throw new Error('the "not kept" marker never showed');
}

test('a 3,000-message room with --history 1000: scrolling up loads pages until the "not kept" marker', async () => {
  const s = await startServer(['--rate', '0', '--history', '1000']);
  const bot = await Bot.connect(s, 'bot');
  await bot.join('lobby');
  const texts = Array.from({ length: 3000 }, (_, i) => `line ${i + 1}`);
  await pour(bot, 'lobby', texts);

  const browser = await launch();
  const A = await openChat(browser, s.url, 'alice');
  await waitText(A.page, 'line 3000');
  // The first screen holds the newest page only, and no marker yet.
  const first = await shownTexts(A.page);
  assert.ok(first.length < 1000, `a first page, not the whole room: ${first.length}`);
  assert.equal(await A.page.isHidden('#not-kept'), true, 'no marker before scrolling');
  assert.equal(await A.page.locator('#older').count(), 1);
  assert.equal(await A.page.locator('button#older').count(), 0, 'no "Load older" button');

  // Count the page's history requests: each page of scrollback is one.
  await A.page.evaluate(() => {
    const ws = window.__chathub.ws;
    const send = ws.send.bind(ws);
    window.__historyRequests = 0;
    ws.send = (d) => { if (JSON.parse(d).op === 'history') window.__historyRequests++; send(d); };
  });
  await scrollToTheStart(A.page);
  const requests = await A.page.evaluate(() => window.__historyRequests);
  const marker = await A.page.textContent('#not-kept');
  assert.equal(marker, 'Older messages are not kept (this hub keeps 1000 per room).');
  await screenshot(A.page, 'scrollback-not-kept.png');

  // What the page shows: the newest messages the hub keeps, each once, in
  // order, ending with the newest, and nothing from before the limit.
  const shown = (await shownTexts(A.page)).map((m) => m.text);
  const kept = (await bot.request({ op: 'history', room: 'lobby', before: 3001 - 1000 + 1, limit: 100 }));
  const oldestKept = 3000 - shown.length + 1;
  assert.ok(shown.length >= 1000, `at least the 1,000 kept messages are shown: ${shown.length}`);
  assert.deepEqual(shown, texts.slice(oldestKept - 1), 'the kept messages, once each, in order');
  assert.ok(kept.complete && kept.messages.every((m) => m.offset >= oldestKept),
    'the hub has nothing older than what the page shows');
  assert.ok(requests >= Math.ceil((shown.length - first.length) / 100),
    `paged in: ${requests} history requests for ${shown.length - first.length} older messages`);
  // The marker sits above the oldest message.
  const order = await A.page.evaluate(() => {
    const m = document.getElementById('not-kept');
    const firstMsg = document.querySelector('#messages .msg');
    return m.compareDocumentPosition(firstMsg) & Node.DOCUMENT_POSITION_FOLLOWING ? 'above' : 'below';
  });
  assert.equal(order, 'above');
  console.log(`# scrolled to the start: ${shown.length} messages shown after ${requests} history requests`);
  assert.deepEqual(A.errors, []);
}, { timeout: 120000 });

test('a room that starts within the limit shows no marker at its start', async () => {
  const s = await startServer(['--rate', '0', '--history', '1000']);
  const bot = await Bot.connect(s, 'bot');
  await bot.join('lobby');
  const texts = Array.from({ length: 230 }, (_, i) => `short ${i + 1}`);
  await pour(bot, 'lobby', texts);
  const browser = await launch();
  const A = await openChat(browser, s.url, 'alice');
  await waitText(A.page, 'short 230');
  for (let step = 0; step < 100; step++) {
    await A.page.evaluate(() => { document.getElementById('log').scrollTop = 0; });
    if ((await shownTexts(A.page)).length === 230) break;
    await A.page.waitForTimeout(50);
  }
  assert.deepEqual((await shownTexts(A.page)).map((m) => m.text), texts);
  await A.page.waitForFunction(() => document.getElementById('older').hidden, null, { timeout: 5000 });
  assert.equal(await A.page.isHidden('#not-kept'), true, 'offset 1 is held: nothing was dropped');
  assert.deepEqual(A.errors, []);
}, { timeout: 60000 });
