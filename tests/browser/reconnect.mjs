// The chathub client (public/) across connection loss: whatever another
// client sends while the page is disconnected shows exactly once, in order,
// after it reconnects; a send whose ack was lost is neither lost nor doubled.
// (Messages typed while offline: outbox.mjs.)
//
// Exits 77 (meson's "skipped") when Chromium is not installed.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test, assert, startServer, cleanup, wsConnect } from '../integration/lib.mjs';
import { requireChromium, launch, openChat, waitText, shownTexts, waitOnline, Bot } from './helpers.mjs';

requireChromium();

const state = (page) => page.evaluate(() => ({
  conn: window.__chathub.state.conn,
  lastRetry: window.__chathub.state.lastRetry || null,
}));

// Every message of `expected` once, in order, with strictly increasing offsets,
// and nothing left pending.
async function assertExactlyOnce(page, expected) {
  await page.waitForFunction(() => !document.querySelector('#pending .msg'), null, { timeout: 10000 });
  const shown = await shownTexts(page);
  assert.deepEqual(shown.map((m) => m.text), expected);
  const offsets = shown.map((m) => Number(m.offset));
  for (let i = 1; i < offsets.length; i++) assert.ok(offsets[i] > offsets[i - 1], `offsets ascend: ${offsets}`);
}

// Cuts the page's connection and keeps it down: the socket is closed from the
// page (code 4000: "reconnect OK"), then the browser goes offline, so the
// reconnect attempts fail until goOnline(). Closing first lets the close
// handshake finish, so the hub forgets the old session at once; if a
// reconnect slipped in before the network went down, the cut is retried.
async function cutConnection(P, sendFirst = null) {
  const sent = [];
  for (let tries = 1; tries <= 5; tries++) {
    const text = sendFirst && (tries === 1 ? sendFirst : `${sendFirst} (${tries})`);
    if (text) sent.push(text);
    await P.page.evaluate((t) => {
      if (t) {
        document.getElementById('message').value = t;
        document.getElementById('send-form').requestSubmit();
      }
      window.__cutSocket = window.__chathub.ws;
      window.__cutSocket.close(4000);
    }, text);
    // Wait for that socket to be closed, not for the status line to say so:
    // with full-jitter backoff the page may reconnect at once, and the
    // "closed" state can be gone before anyone looks (handled below).
    await P.page.waitForFunction(() => window.__cutSocket.readyState === WebSocket.CLOSED, null,
      { timeout: 5000 });
    await P.context.setOffline(true);
    if ((await state(P.page)).conn !== 'online') return sent;
    await P.context.setOffline(false); // a reconnect won the race: again
    await waitOnline(P.page);
    await P.page.waitForFunction(() => !document.querySelector('#pending .msg'), null, { timeout: 10000 });
  }
  throw new Error('could not keep the page disconnected');
}

test('a transient drop: 20 messages sent meanwhile show exactly once, in order', async () => {
  const s = await startServer();
  const browser = await launch();
  const A = await openChat(browser, s.url, 'alice');
  const bot = await Bot.connect(s, 'bot');
  await bot.join('lobby');
  const expected = [];
  for (let i = 1; i <= 5; i++) {
    await bot.say('lobby', `before ${i}`);
    expected.push(`before ${i}`);
  }
  await waitText(A.page, 'before 5');

  // A send whose ack never reaches the page: the socket closes in the same
  // task, and a closing WebSocket delivers no more messages.
  expected.push(...await cutConnection(A, 'sent as the line dropped'));
  assert.equal(await A.page.locator('#pending .msg').count(), 1, 'the unacked send is shown as pending');

  for (let i = 1; i <= 20; i++) {
    await bot.say('lobby', `during ${i}`);
    expected.push(`during ${i}`);
  }
  assert.notEqual((await state(A.page)).conn, 'online', 'the page stayed disconnected while the bot sent');
  await A.context.setOffline(false);
  await waitOnline(A.page);
  await bot.say('lobby', 'after 1');
  expected.push('after 1');
  await waitText(A.page, 'after 1');

  // The hub has the page's message once (the bot saw one push of it) and the
  // page shows everything once.
  const got = bot.pushes.filter((p) => p.t === 'msg' && p.text === 'sent as the line dropped');
  assert.equal(got.length, 1, 'the resent message was stored once');
  const history = await bot.request({ op: 'history', room: 'lobby', limit: 100 });
  assert.deepEqual(history.messages.map((m) => m.text), expected, 'the hub history matches');
  await assertExactlyOnce(A.page, expected);

  // A second drop, without a send.
  await cutConnection(A);
  for (let i = 1; i <= 3; i++) {
    await bot.say('lobby', `second gap ${i}`);
    expected.push(`second gap ${i}`);
  }
  await A.context.setOffline(false);
  await waitOnline(A.page);
  await waitText(A.page, 'second gap 3');
  await assertExactlyOnce(A.page, expected);
  assert.deepEqual(A.errors, []);
}, { timeout: 90000 });

test('a server restart with persistence: the page resumes from its last offset', async () => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'chathub-ui-data-'));
  cleanup(() => fs.rmSync(dataDir, { recursive: true, force: true }));
  let s = await startServer(['--data-dir', dataDir]);
  const port = s.port;
  const browser = await launch();
  const A = await openChat(browser, s.url, 'alice');
  let bot = await Bot.connect(s, 'bot');
  await bot.join('lobby');
  const expected = [];
  for (let i = 1; i <= 5; i++) {
    await bot.say('lobby', `before ${i}`);
    expected.push(`before ${i}`);
  }
  await A.page.fill('#message', 'alice was here');
  await A.page.press('#message', 'Enter');
  expected.push('alice was here');
  await waitText(A.page, 'before 5');
  await A.page.waitForFunction(() => !document.querySelector('#pending .msg'), null, { timeout: 5000 });
  const epochBefore = await A.page.evaluate(() => window.__chathub.state.rooms.get('lobby').epoch);

  // SIGTERM: the hub drains, each page gets a bye with retry_ms and a 1012.
  assert.equal(await s.stop('SIGTERM', 15000), 0);
  await A.page.waitForSelector('#status[data-state="closed"]', { timeout: 10000 });
  const st = await state(A.page);
  assert.equal(st.lastRetry.code, 1012);
  assert.equal(st.lastRetry.bye, true, 'the reconnect waits for the bye push\'s retry_ms');
  // Keep the page away until the bot has sent, so all 20 come by resume.
  await A.context.setOffline(true);
  s = await startServer(['--data-dir', dataDir, '--port', String(port)]);
  assert.equal(s.port, port);
  bot = await Bot.connect(s, 'bot');
  await bot.join('lobby');
  for (let i = 1; i <= 20; i++) {
    await bot.say('lobby', `during ${i}`);
    expected.push(`during ${i}`);
  }
  assert.notEqual((await state(A.page)).conn, 'online');
  await A.context.setOffline(false);
  await waitOnline(A.page, 30000);
  await bot.say('lobby', 'after 1');
  expected.push('after 1');
  await waitText(A.page, 'after 1');
  await assertExactlyOnce(A.page, expected);
  assert.equal(await A.page.evaluate(() => window.__chathub.state.rooms.get('lobby').epoch), epochBefore,
    'the history survived the restart (same epoch)');
  assert.deepEqual(A.errors, []);
}, { timeout: 90000 });

test('a restart that lost the history (new epoch): old messages kept above a note, new ones once', async () => {
  let s = await startServer(['--no-persist', '--rate', '0']);
  const port = s.port;
  const browser = await launch();
  const A = await openChat(browser, s.url, 'alice');
  let bot = await Bot.connect(s, 'bot');
  await bot.join('lobby');
  for (let i = 1; i <= 3; i++) await bot.say('lobby', `old ${i}`);
  await waitText(A.page, 'old 3');
  assert.equal(await s.stop('SIGTERM', 15000), 0);
  await A.page.waitForSelector('#status[data-state="closed"]', { timeout: 10000 });
  await A.context.setOffline(true);
  s = await startServer(['--no-persist', '--rate', '0', '--port', String(port)]);
  bot = await Bot.connect(s, 'bot');
  await bot.join('lobby');
  // More than the page of 50 a join returns: the page must fetch the rest.
  const fresh = [];
  for (let i = 1; i <= 60; i++) {
    await bot.say('lobby', `new ${i}`);
    fresh.push(`new ${i}`);
  }
  await A.context.setOffline(false);
  await waitOnline(A.page, 30000);
  await waitText(A.page, 'new 60');
  await A.page.waitForFunction(() => document.querySelectorAll('#messages .msg').length === 63, null, { timeout: 10000 });
  const shown = await shownTexts(A.page);
  assert.deepEqual(shown.map((m) => m.text), ['old 1', 'old 2', 'old 3', ...fresh]);
  assert.equal(await A.page.locator('#messages .sys').count(), 1, 'one note marks the lost history');
  assert.deepEqual(A.errors, []);
}, { timeout: 90000 });

// Fires requests back to back (one socket keeps their order) and waits for all.
const burst = (bot, room, texts) => Promise.all(texts.map((t) => bot.say(room, t)));

test('a long absence: more missed than a resume returns ("complete": false), paged back', async () => {
  const s = await startServer(['--no-persist', '--rate', '0', '--history', '3000']);
  const browser = await launch();
  const A = await openChat(browser, s.url, 'alice');
  const bot = await Bot.connect(s, 'bot');
  await bot.join('lobby');
  await bot.say('lobby', 'before');
  await waitText(A.page, 'before');
  await cutConnection(A);
  const missed = Array.from({ length: 1150 }, (_, i) => `missed ${i + 1}`);
  await burst(bot, 'lobby', missed);
  await A.context.setOffline(false);
  await waitOnline(A.page);
  await A.page.waitForFunction(() => document.querySelectorAll('#messages .msg').length >= 1151, null, { timeout: 20000 });
  await assertExactlyOnce(A.page, ['before', ...missed]);
  assert.deepEqual(A.errors, []);
}, { timeout: 60000 });

test('a room of 64 KiB raw lines resumes through byte-bounded pages, without a reconnect loop', async () => {
  const s = await startServer(['--rate', '0']);
  const browser = await launch();
  const A = await openChat(browser, s.url, 'alice');
  const bot = await Bot.connect(s, 'bot');
  await bot.join('lobby');
  await bot.say('lobby', 'before');
  await waitText(A.page, 'before');
  await cutConnection(A);
  // Each line escapes to ~384 KiB of JSON: a one-frame resume of them all
  // used to close the page with 4008 on every attempt.
  const lines = Array.from({ length: 40 }, (_, i) => `big ${i + 1} `.padEnd(64 * 1024, i % 2 ? '\u0001' : 'x'));
  const raw = await wsConnect(s.wsUrl('/ws/lobby'));
  for (const l of lines) {
    await raw.send(l);
    await raw.next(20000);
  }
  await A.context.setOffline(false);
  await waitOnline(A.page);
  await A.page.waitForFunction(() => document.querySelectorAll('#messages .msg').length >= 41, null, { timeout: 30000 })
    .catch(async (e) => {
      const dbg = await A.page.evaluate(() => {
        const r = window.__chathub.state.rooms.get('lobby');
        return { n: document.querySelectorAll('#messages .msg').length, last: r.last, head: r.head, gaps: r.gaps, filling: r.filling, joined: r.joined, conn: window.__chathub.state.conn, lastRetry: window.__chathub.state.lastRetry };
      });
      throw new Error(`${e.message}: ${JSON.stringify(dbg)}`);
    });
  await assertExactlyOnce(A.page, ['before', ...lines]);
  const st = await state(A.page);
  assert.equal(st.conn, 'online');
  assert.notEqual(st.lastRetry && st.lastRetry.code, 4008, 'no slow-client close on the way');
  // Long messages are collapsed behind "Show more".
  assert.equal(await A.page.locator('#messages .text.collapsed').count(), 40);
  assert.deepEqual(A.errors, []);
}, { timeout: 90000 });

test('messages expired while away: a note says how many, the rest show once', async () => {
  const s = await startServer(['--no-persist', '--rate', '0', '--history', '10']);
  const browser = await launch();
  const A = await openChat(browser, s.url, 'alice');
  const bot = await Bot.connect(s, 'bot');
  await bot.join('lobby');
  await burst(bot, 'lobby', ['one', 'two', 'three']);
  await waitText(A.page, 'three');
  await cutConnection(A);
  const during = Array.from({ length: 30 }, (_, i) => `during ${i + 1}`);
  await burst(bot, 'lobby', during);
  await A.context.setOffline(false);
  await waitOnline(A.page);
  await waitText(A.page, 'during 30');
  await assertExactlyOnce(A.page, ['one', 'two', 'three', ...during.slice(20)]);
  const notes = await A.page.evaluate(() => [...document.querySelectorAll('#messages .sys')].map((e) => e.textContent));
  assert.deepEqual(notes, ['20 messages could not be delivered (no longer kept by the server).']);
  assert.deepEqual(A.errors, []);
}, { timeout: 60000 });
