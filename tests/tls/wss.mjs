// TLS on the listening port (--tls-cert/--tls-key), driven by Node clients
// that trust exactly a throwaway certificate made at test time with
// `openssl req`: the page over https, chat over wss (raw and chathub.v1),
// HSTS, TLS versions, ALPN and ticket resumption, watermarks over TLS,
// plain HTTP and garbage to the TLS port, the handshake deadline, SIGHUP
// reload of a renewed certificate while an old connection stays open, and
// the start-up errors and warnings. SKIPs (77) when the binary has no TLS.
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import path from 'node:path';
import { test, runChathub, startServer, httpRequest } from '../integration/lib.mjs';
import {
  assert, withTimeout, requireTls, scratch, makeCert, startTlsServer, peerCert, httpsGet,
  wssConnect,
} from './tlslib.mjs';

requireTls();

const dir = fs.mkdtempSync(path.join(scratch(), 'certs-'));
const main = makeCert(dir, 'main');

// Resolves with everything the server sent once it closes the connection.
function rawExchange(port, bytes, { timeoutMs = 5000 } = {}) {
  return withTimeout(new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => { if (bytes.length) s.write(bytes); });
    const chunks = [];
    s.on('data', (d) => chunks.push(d));
    s.on('error', (err) => (err.code === 'ECONNRESET' ? resolve(Buffer.concat(chunks)) : reject(err)));
    s.on('close', () => resolve(Buffer.concat(chunks)));
  }), timeoutMs, 'the server did not close the connection');
}

async function metric(server, name, ca = main.pem) {
  const r = await httpsGet(server.port, ca, '/metrics');
  assert.equal(r.status, 200);
  const line = r.body.split('\n').find((l) => l.startsWith(`${name} `));
  assert.ok(line, `${name} in /metrics`);
  return Number(line.slice(name.length + 1));
}

// Polls fn (no fixed sleeps asserted): resolves with its first truthy value.
async function eventually(fn, what, timeoutMs = 5000) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > until) throw new Error(`never happened: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('the page over https and chat over wss, TLS 1.3 with ALPN http/1.1', async () => {
  const s = await startTlsServer(main);
  const info = await peerCert(s.port, main.pem);
  assert.equal(info.authorized, true);
  assert.equal(info.protocol, 'TLSv1.3');
  assert.equal(info.alpn, 'http/1.1');
  const page = await httpsGet(s.port, main.pem, '/');
  assert.equal(page.status, 200);
  assert.match(page.headers['content-type'], /^text\/html/);
  assert.match(page.body, /<html/i);
  // HSTS on every HTTP response over TLS (the page, errors, /healthz).
  assert.equal(page.headers['strict-transport-security'], 'max-age=31536000');
  assert.equal((await httpsGet(s.port, main.pem, '/no-such-file')).headers['strict-transport-security'],
    'max-age=31536000');
  assert.equal((await httpsGet(s.port, main.pem, '/healthz')).body, 'ok\n');

  // Raw mode: verbatim to everyone in the room, the sender included.
  const a = await wssConnect(s.port, main.pem, '/ws/secure');
  const b = await wssConnect(s.port, main.pem, '/ws/secure');
  const text = `over TLS ✓ ${'x'.repeat(40000)}`; // more than two records
  a.ws.send(text);
  assert.equal(await a.next(), text);
  assert.equal(await b.next(), text);

  // JSON mode: hello, join, send is acked with its offset.
  const j = await wssConnect(s.port, main.pem, '/ws', { protocols: 'chathub.v1' });
  const reply = async (id) => {
    for (;;) {
      const m = JSON.parse(await j.next());
      if (m.id === id) return m;
    }
  };
  j.ws.send(JSON.stringify({ op: 'hello', id: 1, nick: 'tls-user' }));
  assert.equal((await reply(1)).ok, true);
  j.ws.send(JSON.stringify({ op: 'join', id: 2, room: 'secure-json' }));
  assert.equal((await reply(2)).ok, true);
  j.ws.send(JSON.stringify({ op: 'send', id: 3, room: 'secure-json', text: 'sealed' }));
  const ack = await reply(3);
  assert.equal(ack.ok, true);
  assert.equal(ack.offset, 1);
  assert.ok(await metric(s, 'chathub_tls_handshakes_total') >= 6);
  // A clean shutdown with TLS clients open: close frames, then exit 0.
  const closed = Promise.all([a, b, j].map((c) => new Promise((r) => c.ws.once('close', r))));
  assert.equal(await s.stop(), 0, s.output());
  const codes = await withTimeout(closed, 5000, 'the clients were not closed');
  assert.ok(codes.every((c) => c === 1001 || c === 1012 || (c >= 4000 && c < 4500)), `close codes ${codes}`);
});

// One TLS connection with options; resolves with what was negotiated, or
// with {error} when the handshake failed.
function tlsProbe(port, opts = {}) {
  return withTimeout(new Promise((resolve) => {
    const t = tls.connect({ host: '127.0.0.1', port, ca: main.pem, servername: 'localhost', ...opts },
      () => {
        const info = { protocol: t.getProtocol(), reused: t.isSessionReused(), alpn: t.alpnProtocol };
        // The TLS 1.3 ticket arrives after the handshake: wait for it.
        const done = (session) => { t.end(); resolve({ ...info, session }); };
        if (t.getProtocol() === 'TLSv1.3') t.once('session', done); else done(t.getSession());
      });
    t.once('error', (error) => resolve({ error }));
  }), 5000, 'TLS probe');
}

test('TLS 1.2 and 1.3 only, ALPN http/1.1 only when offered, resumption with a ticket', async () => {
  const s = await startTlsServer(main);
  assert.equal((await tlsProbe(s.port, { maxVersion: 'TLSv1.2' })).protocol, 'TLSv1.2');
  const old = await tlsProbe(s.port, { minVersion: 'TLSv1', maxVersion: 'TLSv1.1',
    ciphers: 'DEFAULT@SECLEVEL=0' });
  assert.ok(old.error, `TLS 1.1 must be refused, got ${old.protocol}`);
  assert.equal((await tlsProbe(s.port, { ALPNProtocols: ['h2'] })).alpn, false);
  const first = await tlsProbe(s.port);
  assert.equal(first.reused, false);
  const again = await tlsProbe(s.port, { session: first.session });
  assert.equal(again.reused, true, 'the second connection resumed with the ticket');
  assert.equal(await metric(s, 'chathub_tls_resumed_total'), 1);
  assert.equal(await metric(s, 'chathub_tls_failures_total{reason="handshake"}'), 1);
});

test('without TLS there is no HSTS header', async () => {
  const s = await startServer(['--no-persist']);
  const r = await httpRequest(s.port, 'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
  assert.equal(r.status, 200);
  assert.equal(r.headers['strict-transport-security'], undefined);
});

test('plain HTTP and garbage to the TLS port are closed cleanly and counted', async () => {
  const s = await startTlsServer(main);
  const keep = await wssConnect(s.port, main.pem, '/ws/stay');

  const answer = await rawExchange(s.port, 'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
  assert.match(answer.toString('latin1'), /^HTTP\/1\.1 400 /);
  assert.match(answer.toString('latin1'), /TLS only: use https:\/\/ or wss:\/\//);

  for (let i = 0; i < 5; i++) {
    const junk = crypto.randomBytes(4096);
    junk[0] = 0x01; // not a handshake record, not an HTTP method
    const got = await rawExchange(s.port, junk);
    assert.equal(got.length, 0, 'nothing is answered to garbage');
  }
  // A TLS record header followed by garbage gets an alert at most.
  const bad = Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x00, 0x40]), crypto.randomBytes(64)]);
  const alert = await rawExchange(s.port, bad);
  assert.ok(alert.length === 0 || alert[0] === 0x15, 'an alert record or nothing');

  // The hub is up and the old client unaffected.
  keep.ws.send('still here');
  assert.equal(await keep.next(), 'still here');
  assert.equal(await metric(s, 'chathub_tls_failures_total{reason="plain_http"}'), 1);
  assert.equal(await metric(s, 'chathub_tls_failures_total{reason="not_tls"}'), 5);
  assert.equal(await metric(s, 'chathub_tls_failures_total{reason="handshake"}'), 1);
});

test('a TLS client pipelining requests without reading stops being read; the queue stays bounded', async () => {
  const s = await startTlsServer(main);
  const sock = await withTimeout(new Promise((resolve, reject) => {
    const t = tls.connect({ host: '127.0.0.1', port: s.port, ca: main.pem, servername: 'localhost' },
      () => resolve(t));
    t.once('error', reject);
  }), 5000, 'TLS connect');
  sock.on('error', () => {});
  sock.pause(); // never reads its responses
  const chunk = Buffer.from('GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'.repeat(2048), 'latin1');
  let sent = 0;
  let stalled = false;
  let peakQueued = 0;
  while (sent < 40e6 && !stalled) {
    sent += chunk.length;
    if (!sock.write(chunk)) {
      // The hub stops reading once its answers pass the high watermark:
      // our writes then stop draining.
      const drained = await Promise.race([
        new Promise((r) => sock.once('drain', () => r(true))),
        new Promise((r) => setTimeout(() => r(false), 1500)),
      ]);
      stalled = !drained;
    }
    const q = await metric(s, 'chathub_output_queued_bytes');
    peakQueued = Math.max(peakQueued, q);
  }
  const pauses = await metric(s, 'chathub_read_pauses_total');
  console.log(`# TLS pipelining: offered ${(sent / 1e6).toFixed(1)} MB, hub stopped reading: ${stalled}, ` +
    `peak plaintext queued ${peakQueued} B, read pauses ${pauses}`);
  assert.ok(stalled, 'the hub stopped reading a TLS client that does not read');
  assert.ok(pauses >= 1);
  // Stopped reading, not failed: a slow reader is over no TLS bound.
  assert.equal(await metric(s, 'chathub_tls_failures_total{reason="limit"}'), 0);
  assert.equal(sock.destroyed, false, 'the connection is still open');
  assert.ok(peakQueued <= 1024 * 1024 + 1024, `peak queued ${peakQueued} B within --max-output`);
  // Others are served meanwhile.
  assert.equal((await httpsGet(s.port, main.pem, '/healthz')).body, 'ok\n');
  sock.destroy();
});

test('the handshake deadline covers the TLS handshake', async () => {
  const s = await startTlsServer(main, ['--handshake-timeout', '1']);
  // Half a ClientHello, then silence: the hub must hang up by itself.
  const got = await rawExchange(s.port, Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]),
    { timeoutMs: 8000 });
  assert.equal(got.length, 0);
  assert.ok(await metric(s, 'chathub_tls_abandoned_total') >= 1);
});

test('SIGHUP reloads a renewed certificate; old connections stay, a bad file keeps the old', async () => {
  const live = { cert: path.join(dir, 'live.crt'), key: path.join(dir, 'live.key') };
  const first = makeCert(dir, 'first');
  const second = makeCert(dir, 'second');
  fs.copyFileSync(first.cert, live.cert);
  fs.copyFileSync(first.key, live.key);
  fs.chmodSync(live.key, 0o600);
  const s = await startTlsServer(live);
  const firstPrint = (await peerCert(s.port, first.pem)).fingerprint;
  const old = await wssConnect(s.port, first.pem, '/ws/renew');

  // The renewal lands (like certbot's deploy hook), then SIGHUP.
  fs.copyFileSync(second.cert, live.cert);
  fs.copyFileSync(second.key, live.key);
  s.signal('SIGHUP');
  const secondPrint = await eventually(async () => {
    const info = await peerCert(s.port, second.pem).catch(() => null);
    return info && info.fingerprint;
  }, 'a new connection sees the second certificate');
  assert.notEqual(secondPrint, firstPrint);

  // The connection made before the reload carries on, both ways.
  const fresh = await wssConnect(s.port, second.pem, '/ws/renew');
  old.ws.send('from before the reload');
  assert.equal(await old.next(), 'from before the reload');
  assert.equal(await fresh.next(), 'from before the reload');

  // A broken file: logged, and the second certificate stays in use.
  fs.writeFileSync(live.cert, '-----BEGIN CERTIFICATE-----\nbroken\n');
  s.signal('SIGHUP');
  await eventually(() => /reload/i.test(s.stderr()) && /live\.crt/.test(s.stderr()),
    'the failed reload is logged with the file name');
  assert.equal((await peerCert(s.port, second.pem)).fingerprint, secondPrint);
  assert.equal(await metric(s, 'chathub_tls_reloads_total{result="ok"}', second.pem), 1);
  assert.equal(await metric(s, 'chathub_tls_reloads_total{result="failed"}', second.pem), 1);
  old.ws.send('after the failed reload');
  assert.equal(await old.next(), 'after the failed reload');
});

test('start-up errors exit 2 with the reason; warnings still start', async () => {
  const other = makeCert(dir, 'other');
  const cases = [
    [['--tls-cert', main.cert], /--tls-key/],
    [['--tls-key', main.key], /--tls-cert/],
    [['--tls-cert', path.join(dir, 'nope.crt'), '--tls-key', main.key], /nope\.crt: No such file/],
    [['--tls-cert', main.cert, '--tls-key', path.join(dir, 'nope.key')], /nope\.key: No such file/],
    [['--tls-cert', main.cert, '--tls-key', other.key], /does not match the certificate/],
  ];
  for (const [args, why] of cases) {
    const r = await runChathub(['--host', '127.0.0.1', '--port', '0', '--no-persist', ...args]);
    assert.equal(r.code, 2, `exit 2 for ${args.join(' ')}\n${r.stderr}`);
    assert.match(r.stderr, why);
  }
  const expired = makeCert(dir, 'expired', { start: '20200101000000Z', end: '20200102000000Z' });
  const s1 = await startTlsServer(expired);
  await eventually(() => /expired/.test(s1.stderr()), 'a warning about the expired certificate');
  assert.equal(await s1.stop(), 0);
  const loose = makeCert(dir, 'loose', { keyMode: 0o644 });
  const s2 = await startTlsServer(loose);
  await eventually(() => /readable by other users/.test(s2.stderr()), 'a warning about the key');
  assert.equal(await s2.stop(), 0);
});
