// The chathub client (public/) in real browsers: two people chat, see each
// other come and go and type, send each other direct messages; hostile text
// stays text; screenshots at desktop and phone sizes.
//
// Exits 77 (meson's "skipped") when Chromium is not installed.
import { test, assert, startServer } from '../integration/lib.mjs';
import {
  requireChromium, launch, openChat, waitText, shownTexts, sendFromPage, screenshot, waitOnline,
  Bot, DESKTOP, PHONE,
} from './helpers.mjs';

requireChromium();

// The nicks in the member panel of the room on screen.
const members = (page) => page.evaluate(() =>
  [...document.querySelectorAll('#member-list .member-nick')].map((e) => e.textContent));

test('two people chat: messages both ways, presence, typing, a direct message', async () => {
  const s = await startServer();
  const browser = await launch();
  const A = await openChat(browser, s.url, 'alice');
  const B = await openChat(browser, s.url, 'bob');

  // Presence: each sees the other in #lobby's member panel.
  await B.page.waitForFunction(() => [...document.querySelectorAll('#member-list .member-nick')]
    .some((e) => e.textContent === 'alice'), null, { timeout: 10000 });
  await A.page.waitForFunction(() => [...document.querySelectorAll('#member-list .member-nick')]
    .some((e) => e.textContent === 'bob'), null, { timeout: 10000 });
  assert.equal(await A.page.textContent('#room-title'), '#lobby');

  // Typing shows on the other side, and the message ends it.
  await A.page.locator('#message').pressSequentially('hello bob, how are you?', { delay: 15 });
  await B.page.waitForFunction(() => document.getElementById('typing').textContent === 'alice is typing…',
    null, { timeout: 10000 });
  await A.page.press('#message', 'Enter');
  await waitText(B.page, 'hello bob, how are you?');
  await B.page.waitForFunction(() => document.getElementById('typing').textContent === '', null, { timeout: 5000 });
  assert.equal(await A.page.inputValue('#message'), '', 'the composer is cleared after sending');

  // And the other way round, with a line break (Shift+Enter).
  await B.page.click('#message');
  await B.page.keyboard.type('fine, thanks!');
  await B.page.keyboard.press('Shift+Enter');
  await B.page.keyboard.type('and you?');
  await B.page.keyboard.press('Enter');
  await waitText(A.page, 'fine, thanks!\nand you?');
  await sendFromPage(A.page, 'great 🎉');
  await waitText(B.page, 'great 🎉');

  // Each page shows the conversation once, acknowledged (with offsets), in order.
  for (const P of [A, B]) {
    const shown = await shownTexts(P.page);
    assert.deepEqual(shown.map((m) => m.text), ['hello bob, how are you?', 'fine, thanks!\nand you?', 'great 🎉']);
    await P.page.waitForFunction(() => !document.querySelector('#pending .msg'), null, { timeout: 5000 });
  }
  const offsets = (await shownTexts(A.page)).map((m) => Number(m.offset));
  assert.deepEqual(offsets, [1, 2, 3]);

  // A direct message from alice, started from the member panel.
  await A.page.click('#member-list li:has(.member-nick:text-is("bob")) .dm-btn');
  await A.page.waitForFunction(() => document.getElementById('room-title').textContent === '@bob', null, { timeout: 5000 });
  await sendFromPage(A.page, 'psst, a secret for you');
  // bob's sidebar gains the conversation, with an unread badge.
  const dmItem = B.page.locator('#dm-list li', { hasText: 'alice' });
  await dmItem.waitFor({ timeout: 10000 });
  await dmItem.locator('.badge').waitFor({ timeout: 10000 });
  assert.equal(await dmItem.locator('.badge').textContent(), '1');
  assert.deepEqual((await shownTexts(B.page)).map((m) => m.text).includes('psst, a secret for you'), false,
    'the DM is not shown in #lobby');
  await dmItem.locator('.room-btn').click();
  await B.page.waitForFunction(() => document.getElementById('room-title').textContent === '@alice', null, { timeout: 5000 });
  await waitText(B.page, 'psst, a secret for you');
  await sendFromPage(B.page, 'got it 🤫');
  await waitText(A.page, 'got it 🤫');
  assert.deepEqual((await shownTexts(B.page)).map((m) => m.text), ['psst, a secret for you', 'got it 🤫']);

  // The nickname and the rooms are remembered: a reload comes back as bob,
  // without the prompt, with the DM and its history.
  await B.page.reload({ waitUntil: 'load' });
  await waitOnline(B.page);
  assert.equal(await B.page.textContent('#me-nick'), 'bob');
  assert.equal(await B.page.evaluate(() => document.getElementById('nick-dialog').open), false);
  assert.equal(await B.page.textContent('#room-title'), '@alice');
  await waitText(B.page, 'got it 🤫');
  assert.deepEqual((await shownTexts(B.page)).map((m) => m.text), ['psst, a secret for you', 'got it 🤫']);

  // alice leaves: bob's member panel of #lobby drops her.
  await B.page.click('#room-list .room-btn:has-text("lobby")');
  await B.page.waitForFunction(() => document.getElementById('room-title').textContent === '#lobby', null, { timeout: 5000 });
  assert.deepEqual((await members(B.page)).sort(), ['alice', 'bob']);
  await A.context.close();
  await B.page.waitForFunction(() => ![...document.querySelectorAll('#member-list .member-nick')]
    .some((e) => e.textContent === 'alice'), null, { timeout: 10000 });
  assert.deepEqual(await members(B.page), ['bob']);

  assert.deepEqual([...A.errors, ...B.errors], []);
  assert.deepEqual([...A.dialogs, ...B.dialogs], []);
}, { timeout: 60000 });

test('hostile text and nicks are shown as text: no dialog, no element', async () => {
  const s = await startServer(['--no-persist']);
  const browser = await launch();
  const A = await openChat(browser, s.url, 'alice');
  const evil = '<img src=x onerror=alert(1)>';
  const evilNick = '<img src=y onerror=alert(2)>';
  const mallory = await Bot.connect(s, evilNick);
  await mallory.join('lobby');
  await A.page.waitForFunction((n) => [...document.querySelectorAll('#member-list .member-nick')]
    .some((e) => e.textContent === n), evilNick, { timeout: 10000 });
  await mallory.say('lobby', evil);
  await mallory.say('lobby', '<script>alert(3)</script><b>bold?</b> &amp; javascript:alert(4)');
  await sendFromPage(A.page, evil);
  await waitText(A.page, '<script>alert(3)</script><b>bold?</b> &amp; javascript:alert(4)');
  await A.page.waitForFunction(() => !document.querySelector('#pending .msg'), null, { timeout: 5000 });
  // Give any injected handler a moment to fire before checking.
  await A.page.waitForTimeout(500);
  const shown = await shownTexts(A.page);
  assert.deepEqual(shown.map((m) => m.text), [evil, '<script>alert(3)</script><b>bold?</b> &amp; javascript:alert(4)', evil]);
  const counts = await A.page.evaluate(() => ({
    img: document.querySelectorAll('#messages img, #member-list img, #sidebar img').length,
    script: document.querySelectorAll('#messages script').length,
    b: document.querySelectorAll('#messages b').length,
    a: document.querySelectorAll('#messages a').length,
    from: [...document.querySelectorAll('#messages .from')].map((e) => e.textContent),
  }));
  assert.deepEqual(counts, { img: 0, script: 0, b: 0, a: 0, from: [evilNick, 'alice'] });
  // A DM from that nick: the sidebar shows the nick as text too.
  await mallory.request({ op: 'dm', to: 'alice', text: evil });
  const item = A.page.locator('#dm-list .room-name');
  await item.waitFor({ timeout: 10000 });
  assert.equal(await item.textContent(), evilNick);
  assert.equal(await A.page.locator('img').count(), 0);
  assert.deepEqual(A.dialogs, [], 'no dialog fired');
  assert.deepEqual(A.errors, []);
}, { timeout: 60000 });

test('scrollback: scrolling up pages back through history, each message once', async () => {
  const s = await startServer(['--no-persist', '--rate', '0']);
  const bot = await Bot.connect(s, 'bot');
  await bot.join('lobby');
  const all = Array.from({ length: 120 }, (_, i) => `line ${i + 1}`);
  await Promise.all(all.map((t) => bot.say('lobby', t)));
  const browser = await launch();
  const A = await openChat(browser, s.url, 'alice');
  await waitText(A.page, 'line 120');
  // A room opens with its newest 50; older pages come as the reader scrolls
  // up (tests/browser/scrollback.mjs has the long room).
  for (let step = 0; step < 100 && (await shownTexts(A.page)).length < 120; step++) {
    await A.page.evaluate(() => { document.getElementById('log').scrollTop = 0; });
    await A.page.waitForTimeout(50);
  }
  await A.page.waitForFunction(() => document.getElementById('older').hidden, null, { timeout: 5000 });
  assert.equal(await A.page.isHidden('#not-kept'), true, 'the room starts at offset 1: no marker');
  assert.deepEqual((await shownTexts(A.page)).map((m) => m.text), all);
  assert.deepEqual(A.errors, []);
}, { timeout: 60000 });

test('screenshots at desktop and phone sizes, light and dark', async () => {
  const s = await startServer(['--no-persist']);
  const browser = await launch();
  // Some company in two rooms, written by Node clients.
  const people = {};
  for (const n of ['Maya', 'Jonas', 'Priya']) {
    people[n] = await Bot.connect(s, n);
    await people[n].join('lobby');
  }
  await people.Jonas.join('design');
  // The first-visit prompt, on a phone.
  const A = await openChat(browser, s.url, null, { viewport: PHONE });
  await A.page.waitForSelector('#nick-dialog[open]', { timeout: 5000 });
  const shots = [await screenshot(A.page, 'client-phone-welcome.png')];
  await A.page.fill('#nick-input', 'sam');
  await A.page.click('#nick-save');
  await A.page.waitForFunction(() => document.getElementById('me-nick').textContent === 'sam', null, { timeout: 5000 });
  await A.page.setViewportSize(DESKTOP);
  const script = [
    ['Maya', 'Morning all! Is the release still planned for Friday?'],
    ['Jonas', 'Yes, as long as the last two bugs are fixed.'],
    ['Jonas', 'I will take the reconnect one.'],
    ['sam', 'I can help with testing on phones.'],
    ['Priya', 'Great. Notes from the planning call: https://example.com/notes/42'],
    ['Maya', 'Thanks! A longer one to see wrapping: the new client keeps every message exactly once, ' +
      'even across reconnects, and shows who is here and who is typing.'],
  ];
  for (const [who, text] of script) {
    if (who === 'sam') {
      await sendFromPage(A.page, text);
      await A.page.waitForFunction(() => !document.querySelector('#pending .msg'), null, { timeout: 5000 });
    } else {
      await people[who].say('lobby', text);
      await waitText(A.page, text);
    }
  }
  await people.Jonas.say('design', 'New icons are in the shared folder');
  await people.Maya.request({ op: 'dm', to: 'sam', text: 'Do you have a minute later?' });
  await A.page.locator('#dm-list li', { hasText: 'Maya' }).waitFor({ timeout: 10000 });
  await A.page.click('#room-list .room-btn:has-text("lobby")').catch(() => {});
  await A.page.locator('#discover-list li', { hasText: 'design' }).waitFor({ timeout: 35000 }).catch(() => {});
  await people.Priya.tell({ op: 'typing', room: 'lobby' });
  await A.page.waitForFunction(() => document.getElementById('typing').textContent.includes('Priya'), null, { timeout: 5000 });
  await A.page.mouse.move(0, 0);
  await A.page.waitForSelector('#toast', { state: 'hidden', timeout: 8000 }); // the "new DM" toast
  shots.push(await screenshot(A.page, 'client-desktop-light.png'));
  await A.page.setViewportSize(PHONE);
  await A.page.waitForTimeout(300);
  shots.push(await screenshot(A.page, 'client-phone-light.png'));
  await A.page.click('#menu-btn');
  await A.page.waitForTimeout(400);
  shots.push(await screenshot(A.page, 'client-phone-rooms.png'));
  await A.page.keyboard.press('Escape');
  await A.page.emulateMedia({ colorScheme: 'dark' });
  await A.page.waitForTimeout(400);
  shots.push(await screenshot(A.page, 'client-phone-dark.png'));
  await A.page.setViewportSize(DESKTOP);
  await A.page.waitForTimeout(300);
  shots.push(await screenshot(A.page, 'client-desktop-dark.png'));
  // The connection state is visible: stop the hub and look.
  await s.stop('SIGTERM', 15000);
  await A.page.waitForSelector('#status[data-state="closed"]', { timeout: 10000 });
  await A.page.emulateMedia({ colorScheme: 'light' });
  await A.page.waitForTimeout(300);
  shots.push(await screenshot(A.page, 'client-desktop-reconnecting.png'));
  await A.page.setViewportSize(PHONE);
  await A.page.waitForTimeout(300);
  shots.push(await screenshot(A.page, 'client-phone-reconnecting.png'));
  assert.equal(shots.length, 8);
  assert.deepEqual(A.errors, []);
}, { timeout: 90000 });
