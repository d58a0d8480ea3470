// Helpers for the browser tests of the chathub client (public/): Chromium
// through playwright-core, pages that record their errors and dialogs, and a
// JSON-mode (chathub.v1) Node client that plays the other side.
import fs from 'node:fs';
import path from 'node:path';
import { assert, cleanup, withTimeout, wsConnect, chathubBin } from '../integration/lib.mjs';

export const CHROMIUM = process.env.CHATHUB_CHROMIUM || '/usr/bin/chromium';

// Exits 77 (meson's "skipped") when Chromium is missing; call at the top.
export function requireChromium() {
  if (!fs.existsSync(CHROMIUM)) {
    console.log(`1..0 # SKIP ${CHROMIUM} not found (apt-get install chromium)`);
    process.exit(77);
  }
}

// Where screenshots go: $MESON_BUILD_ROOT/artifacts, else next to the binary.
export function artifactsDir() {
  const root = process.env.MESON_BUILD_ROOT || path.dirname(chathubBin());
  const dir = path.join(root, 'artifacts');
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

export async function screenshot(page, name) {
  const file = path.join(artifactsDir(), name);
  await page.screenshot({ path: file });
  console.log(`# screenshot: ${file}`);
  return file;
}

export async function launch() {
  const { chromium } = await import('playwright-core');
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--headless', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    timeout: 30000,
  });
  cleanup(() => browser.close());
  return browser;
}

export const DESKTOP = { width: 1280, height: 800 };
export const PHONE = { width: 375, height: 740 };

// Opens the client in its own browser context (own localStorage) and picks
// `nick` through the first-visit prompt. Returns {context, page, errors,
// dialogs}: errors holds uncaught exceptions, dialogs any alert() & co.
export async function openChat(browser, url, nick, { viewport = DESKTOP, colorScheme = 'light' } = {}) {
  const context = await browser.newContext({ viewport, colorScheme });
  cleanup(() => context.close().catch(() => {}));
  const page = await context.newPage();
  const errors = [];
  const dialogs = [];
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('dialog', (d) => { dialogs.push(`${d.type()}: ${d.message()}`); d.dismiss().catch(() => {}); });
  await page.goto(url, { waitUntil: 'load', timeout: 15000 });
  await waitOnline(page);
  if (nick) {
    await page.waitForSelector('#nick-dialog[open]', { timeout: 5000 });
    await page.fill('#nick-input', nick);
    await page.click('#nick-save');
    await page.waitForFunction((n) => document.getElementById('me-nick').textContent === n &&
      !document.getElementById('nick-dialog').open, nick, { timeout: 5000 });
  }
  return { context, page, errors, dialogs, nick };
}

export function waitOnline(page, timeout = 15000) {
  return page.waitForSelector('#status[data-conn="online"]', { timeout });
}

// Waits until the message list of the room on screen shows `text`.
export function waitText(page, text, timeout = 10000) {
  return page.waitForFunction((t) => [...document.querySelectorAll('#messages .msg .text')]
    .some((el) => el.textContent === t), text, { timeout })
    .catch((e) => { throw new Error(`the page never showed ${JSON.stringify(text)}: ${e.message}`); });
}

// The texts of every message on screen, delivered or pending, in order.
export function shownTexts(page) {
  return page.evaluate(() => [...document.querySelectorAll('#messages .msg, #pending .msg')]
    .map((li) => {
      const t = li.querySelector('.text'); // a collapsed long text keeps the whole in fullText
      return { text: t.fullText ?? t.textContent, offset: li.dataset.offset || null };
    }));
}

export async function sendFromPage(page, text) {
  await page.fill('#message', text);
  await page.press('#message', 'Enter');
}

// A chathub.v1 client in Node.
export class Bot {
  static async connect(server, nick) {
    const client = await wsConnect(server.wsUrl('/ws'), { protocols: 'chathub.v1' });
    const bot = new Bot(client);
    const rep = await bot.request({ op: 'hello', nick });
    assert.equal(rep.nick, nick);
    return bot;
  }

  constructor(client) {
    this.client = client;
    this.nextId = 1;
    this.replies = new Map();
    this.pushes = [];
    this.waiters = new Set();
    client.ws.on('message', (data) => {
      const m = JSON.parse(data.toString());
      if (m.t) {
        this.pushes.push(m);
        for (const w of this.waiters) w();
      } else {
        const r = this.replies.get(m.id);
        if (r) { this.replies.delete(m.id); r(m); }
      }
    });
  }

  async request(msg, timeoutMs = 10000) {
    const id = this.nextId++;
    const reply = new Promise((resolve) => this.replies.set(id, resolve));
    await this.client.send(JSON.stringify({ ...msg, id }));
    const rep = await withTimeout(reply, timeoutMs, `no reply to ${JSON.stringify(msg)}`);
    if (!rep.ok) throw new Error(`${msg.op} failed: ${JSON.stringify(rep.error)}`);
    return rep;
  }

  // A request without id (typing): no success reply to wait for.
  tell(msg) { return this.client.send(JSON.stringify(msg)); }

  join(room) { return this.request({ op: 'join', room }); }
  say(room, text) { return this.request({ op: 'send', room, text }); }

  // Resolves with the first push satisfying pred (already received or not).
  async push(pred, timeoutMs = 10000, what = 'a push') {
    const find = () => this.pushes.find(pred);
    let hit = find();
    if (hit) return hit;
    let wake;
    const p = new Promise((resolve) => {
      wake = () => { const h = find(); if (h) resolve(h); };
      this.waiters.add(wake);
    });
    try {
      return await withTimeout(p, timeoutMs, `timed out waiting for ${what}`);
    } finally {
      this.waiters.delete(wake);
    }
  }

  close() { this.client.close(1000); }
}
