// The browser client over TLS: Debian's Chromium (playwright-core, started
// with --ignore-certificate-errors for the throwaway certificate) loads the
// page over https, and two pages chat through wss:// — an https page may
// not open ws://, so getting online at all proves the hub spoke wss. SKIPs
// (77) when the binary has no TLS or Chromium is missing.
import fs from 'node:fs';
import path from 'node:path';
import { test, cleanup } from '../integration/lib.mjs';
import { requireChromium, CHROMIUM, openChat, waitText, sendFromPage } from '../browser/helpers.mjs';
import { assert, requireTls, scratch, makeCert, startTlsServer, httpsGet } from './tlslib.mjs';

requireTls();
requireChromium();

async function launchTrusting() {
  const { chromium } = await import('playwright-core');
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--headless', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--ignore-certificate-errors'],
    timeout: 30000,
  });
  cleanup(() => browser.close());
  return browser;
}

test('two Chromium pages chat over https + wss', async () => {
  const dir = fs.mkdtempSync(path.join(scratch(), 'certs-'));
  const cert = makeCert(dir, 'page');
  const s = await startTlsServer(cert);
  const browser = await launchTrusting();
  const url = `https://127.0.0.1:${s.port}/`;
  const a = await openChat(browser, url, 'alice');
  const b = await openChat(browser, url, 'bob');
  assert.equal(await a.page.evaluate(() => location.protocol), 'https:');
  await sendFromPage(a.page, 'hello over TLS');
  await waitText(b.page, 'hello over TLS');
  await sendFromPage(b.page, 'and back');
  await waitText(a.page, 'and back');
  assert.deepEqual([...a.errors, ...b.errors], []);
  const m = await httpsGet(s.port, cert.pem, '/metrics');
  const line = m.body.split('\n').find((l) => l.startsWith('chathub_tls_handshakes_total '));
  assert.ok(line && Number(line.split(' ')[1]) >= 3, 'the pages and their sockets used TLS');
}, { timeout: 90000 });
