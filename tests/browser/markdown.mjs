// The page's message rendering and keyboard in Chromium: light markdown
// (**bold**, `code`, fenced code, quotes, links) built as DOM nodes, a
// message holding HTML shown as text with no element injected, dir=auto,
// #room=NAME, the skip link, Alt+Down, Up and Escape in the composer, the
// focus after the welcome card. Screenshots at 1280x800 and 390x844 go to
// the artifacts directory and to /tmp/page-shots/.
//
// Exits 77 (meson's "skipped") when Chromium is not installed.
import fs from 'node:fs';
import path from 'node:path';
import { test, assert, startServer } from '../integration/lib.mjs';
import { requireChromium, launch, openChat, waitText, screenshot, Bot, waitOnline } from './helpers.mjs';

requireChromium();

const SHOTS = '/tmp/page-shots';
async function shot(page, name) {
  const file = await screenshot(page, name);
  fs.mkdirSync(SHOTS, { recursive: true });
  fs.copyFileSync(file, path.join(SHOTS, name));
}

const HOSTILE = '<img src=x onerror=alert(1)><b>not bold</b><script>alert(2)</script>';

test('markdown is built from text, HTML in a message stays text', async () => {
  const s = await startServer(['--no-persist']);
  const browser = await launch();
  const bob = await Bot.connect(s, 'bob');
  await bob.join('lobby');
  const A = await openChat(browser, s.url, 'alice');
  await bob.say('lobby', 'this is **bold** and `x < y` and _quiet_');
  await bob.say('lobby', HOSTILE);
  await bob.say('lobby', '> a quote\n```\nconst a = "**not bold**";\n```\nsee www.example.org and https://example.com/a?b=1.');
  await bob.say('lobby', 'مرحبا بالعالم');
  await waitText(A.page, 'مرحبا بالعالم');
  const got = await A.page.evaluate(() => {
    const msgs = [...document.querySelectorAll('#messages .msg .text')];
    const q = (i, sel) => [...msgs[i].querySelectorAll(sel)].map((e) => e.textContent);
    return {
      strong: q(0, 'strong'), code: q(0, 'code'), em: q(0, 'em'),
      hostileText: msgs[1].textContent,
      injected: document.querySelectorAll('#messages img, #messages script, #messages b').length,
      hostileKids: [...msgs[1].childNodes].map((n) => n.nodeType),
      quote: q(2, 'blockquote'), pre: q(2, 'pre'), preStrong: msgs[2].querySelectorAll('pre strong').length,
      links: [...msgs[2].querySelectorAll('a')].map((a) => [a.textContent, a.href, a.target, a.rel]),
      dirs: msgs.map((m) => m.getAttribute('dir')),
      rtl: getComputedStyle(msgs[3]).direction,
    };
  });
  assert.deepEqual(got.strong, ['bold']);
  assert.deepEqual(got.code, ['x < y']);
  assert.deepEqual(got.em, ['quiet']);
  assert.equal(got.hostileText, HOSTILE, 'the HTML is shown as its text');
  assert.equal(got.injected, 0, 'no element from the message');
  assert.deepEqual(got.hostileKids, [3], 'a single text node');
  assert.deepEqual(got.quote, ['a quote']);
  assert.deepEqual(got.pre, ['const a = "**not bold**";']);
  assert.equal(got.preStrong, 0, 'no formatting inside a code block');
  assert.deepEqual(got.links, [
    ['www.example.org', 'https://www.example.org/', '_blank', 'noopener noreferrer nofollow'],
    ['https://example.com/a?b=1', 'https://example.com/a?b=1', '_blank', 'noopener noreferrer nofollow'],
  ]);
  assert.ok(got.dirs.every((d) => d === 'auto'));
  assert.equal(got.rtl, 'rtl', 'an Arabic message reads right to left');
  assert.deepEqual(A.errors, []);
  assert.deepEqual(A.dialogs, []);
  await A.page.mouse.move(5, 795); // no hover toolbar over the texts
  await shot(A.page, 'markdown-1280x800.png');
  await A.page.setViewportSize({ width: 390, height: 844 });
  await A.page.waitForTimeout(300);
  await shot(A.page, 'markdown-390x844.png');
  bob.close();
}, { timeout: 60000 });

test('keyboard: welcome card to composer, skip link, #room=, Alt+Down, Up and Escape', async () => {
  const s = await startServer(['--no-persist']);
  const browser = await launch();
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(s.url + '#room=dev', { waitUntil: 'load' });
  await waitOnline(page);
  await page.waitForSelector('#nick-dialog[open]');
  await page.fill('#nick-input', 'carol');
  await page.press('#nick-input', 'Enter');
  await page.waitForFunction(() => !document.getElementById('nick-dialog').open && document.getElementById('me-nick').textContent === 'carol');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'message', 'the composer has the focus');
  assert.equal(await page.textContent('#room-title'), '#dev', '#room=dev opened #dev');
  await page.waitForFunction(() => window.__chathub.state.rooms.get('dev')?.joined);

  // The skip link is the first stop and leads to the composer.
  const first = await page.evaluate(() => [...document.querySelectorAll('a[href], button, input, textarea')]
    .find((e) => e.tabIndex >= 0)?.className);
  assert.equal(first, 'skip-link', 'the first stop of the tab order');
  await page.focus('.skip-link');
  assert.ok((await page.locator('.skip-link').boundingBox()).y >= 0, 'shown when focused');
  await page.keyboard.press('Enter');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'message');

  // Up in an empty composer takes the last own message for editing; Escape
  // gives the composer back as it was.
  await page.fill('#message', 'first line');
  await page.press('#message', 'Enter');
  await waitText(page, 'first line');
  await page.focus('#message');
  await page.keyboard.press('ArrowUp');
  assert.equal(await page.inputValue('#message'), 'first line');
  assert.equal(await page.isVisible('#compose-state'), true);
  await page.keyboard.press('Escape');
  assert.equal(await page.inputValue('#message'), '');
  assert.equal(await page.isVisible('#compose-state'), false);

  // Alt+Down and Alt+Up walk the rooms; Ctrl+K goes to the room field.
  await page.fill('#room-input', 'lobby');
  await page.press('#room-input', 'Enter');
  await page.waitForFunction(() => document.getElementById('room-title').textContent === '#lobby');
  await page.focus('#message');
  await page.keyboard.press('Alt+ArrowUp');
  assert.equal(await page.textContent('#room-title'), '#dev');
  await page.keyboard.press('Alt+ArrowDown');
  assert.equal(await page.textContent('#room-title'), '#lobby');
  await page.keyboard.press('Control+k');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'room-input');
  assert.deepEqual(errors, []);
  await context.close();
}, { timeout: 60000 });
