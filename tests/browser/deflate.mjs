// permessage-deflate with Chromium: the browser offers the extension on its
// own, so these check that the hub's answer is one Chromium accepts, that
// compressed messages flow both ways (a page's raw WebSocket, and the chat
// client of public/ between two people), and, through a raw observer that
// offered the extension too, that the hub relays long lines compressed.
//
// Exits 77 (meson's "skipped") when Chromium is not installed.
import { test, assert, startServer, cleanup, RawHttp, buildRequest, upgradeHeaders, wsKey, decodeFrame } from '../integration/lib.mjs';
import { requireChromium, launch, openChat, waitText, sendFromPage } from './helpers.mjs';

requireChromium();

const ACCEPT = 'permessage-deflate; server_no_context_takeover; client_no_context_takeover';

function chatText(len, seed = 1) {
  const words = ['the', 'room', 'hello', 'is', 'anyone', 'here', 'chat', 'server', 'ok',
    'message', 'today', 'thanks', 'see', 'you', 'later'];
  let s = seed >>> 0;
  let out = '';
  while (out.length < len) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    out += words[(s >>> 16) % words.length] + ' ';
  }
  return out.slice(0, len).trim();
}

async function rawObserver(port, path) {
  const c = await RawHttp.connect(port);
  await c.write(buildRequest('GET', path,
    { ...upgradeHeaders(wsKey()), 'Sec-WebSocket-Extensions': 'permessage-deflate' }));
  const r = await c.readResponse({ noBody: true, timeoutMs: 5000 });
  assert.equal(r.status, 101);
  cleanup(() => c.destroy());
  return async (timeoutMs = 10000) => {
    const f = await c.until(() => decodeFrame(c.buf) || undefined, timeoutMs, 'a frame');
    c.buf = c.buf.subarray(f.length);
    return f;
  };
}

test('a page\'s WebSocket negotiates permessage-deflate; long lines go both ways compressed', async () => {
  const s = await startServer(['--rate', '0']);
  const browser = await launch();
  const context = await browser.newContext();
  cleanup(() => context.close().catch(() => {}));
  const page = await context.newPage();
  await page.goto(s.url, { waitUntil: 'load', timeout: 15000 });
  const next = await rawObserver(s.port, '/ws/pmd-browser');
  const line = chatText(2048, 42);
  const r = await page.evaluate(async ({ url, line }) => {
    const ws = new WebSocket(url);
    await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = () => reject(new Error('ws error')); });
    const got = new Promise((resolve) => { ws.onmessage = (e) => resolve(e.data); });
    ws.send(line);
    const echo = await got;
    const ext = ws.extensions;
    ws.close(1000);
    return { ext, echo };
  }, { url: s.wsUrl('/ws/pmd-browser'), line });
  assert.equal(r.ext, ACCEPT, 'Chromium accepted the answer');
  assert.equal(r.echo, line, 'the relayed line came back intact');
  const f = await next();
  assert.equal(f.rsv, 4, 'relayed compressed');
  assert.ok(f.payload.length < 1024, `${f.payload.length} bytes on the wire for 2048`);
});

test('the chat client of public/ chats through permessage-deflate', async () => {
  const s = await startServer(['--rate', '0']);
  const browser = await launch();
  const A = await openChat(browser, s.url, 'alice');
  // Record the handshake of B's page through the DevTools protocol.
  const context = await browser.newContext();
  cleanup(() => context.close().catch(() => {}));
  const page = await context.newPage();
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  const exts = [];
  cdp.on('Network.webSocketHandshakeResponseReceived', (e) => {
    const h = e.response.headers;
    exts.push(h['Sec-WebSocket-Extensions'] || h['sec-websocket-extensions'] || '');
  });
  await page.goto(s.url, { waitUntil: 'load', timeout: 15000 });
  await page.waitForSelector('#status[data-conn="online"]', { timeout: 15000 });
  await page.waitForSelector('#nick-dialog[open]', { timeout: 5000 });
  await page.fill('#nick-input', 'bob');
  await page.click('#nick-save');
  await page.waitForFunction(() => document.getElementById('me-nick').textContent === 'bob', null, { timeout: 5000 });
  assert.ok(exts.length >= 1 && exts.every((e) => e === ACCEPT), `handshakes: ${JSON.stringify(exts)}`);
  const long = chatText(900, 7);
  await sendFromPage(A.page, long);
  await waitText(page, long);
  await sendFromPage(page, 'short reply');
  await waitText(A.page, 'short reply');
  const long2 = chatText(1100, 8);
  await sendFromPage(page, long2);
  await waitText(A.page, long2);
  assert.deepEqual(A.errors, []);
});
