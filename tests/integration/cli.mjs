// The command line: help, version, usage errors (exit 2), runtime errors
// (exit 1), the startup line, and graceful shutdown on SIGTERM and SIGINT.
import net from 'node:net';
import {
  test, assert, runChathub, startServer, wsConnect, httpRequest, buildRequest, cleanup, withTimeout,
} from './lib.mjs';

test('--help prints usage with --port and exits 0', async () => {
  const r = await runChathub(['--help']);
  assert.equal(r.code, 0, `exit code; stderr: ${r.stderr}`);
  assert.match(r.stdout, /--port/);
  assert.match(r.stdout, /usage/i);
});

test('--version prints a version and exits 0', async () => {
  const r = await runChathub(['--version']);
  assert.equal(r.code, 0, `exit code; stderr: ${r.stderr}`);
  assert.match(r.stdout, /\d+\.\d+\.\d+/);
});

test('an unknown flag exits 2 naming it, with usage', async () => {
  const r = await runChathub(['--bogus']);
  assert.equal(r.code, 2, `exit code; stderr: ${r.stderr}`);
  assert.match(r.stderr, /--bogus/);
  assert.match(r.stderr, /usage/i);
  assert.doesNotMatch(r.stdout, /listening on/);
});

for (const bad of ['abc', '70000', '-1', '']) {
  test(`--port ${JSON.stringify(bad)} exits 2 naming the problem`, async () => {
    const r = await runChathub(['--port', bad]);
    assert.equal(r.code, 2, `exit code; stderr: ${r.stderr}`);
    assert.match(r.stderr, /port/i);
    assert.doesNotMatch(r.stdout, /listening on/);
  });
}

test('a missing flag value exits 2', async () => {
  const r = await runChathub(['--port']);
  assert.equal(r.code, 2, `exit code; stderr: ${r.stderr}`);
  assert.match(r.stderr, /port/i);
});

test('a port in use exits 1 with one line on stderr', async () => {
  const blocker = net.createServer();
  await new Promise((resolve, reject) => {
    blocker.once('error', reject);
    blocker.listen(0, '127.0.0.1', resolve);
  });
  cleanup(() => new Promise((r) => blocker.close(r)));
  const port = blocker.address().port;
  const r = await runChathub(['--host', '127.0.0.1', '--port', String(port)]);
  assert.equal(r.code, 1, `exit code; stderr: ${r.stderr}`);
  const lines = r.stderr.split('\n').filter((l) => l.trim() !== '');
  assert.equal(lines.length, 1, `exactly one line on stderr, got: ${JSON.stringify(r.stderr)}`);
  assert.doesNotMatch(r.stdout, /listening on/);
});

test('start prints its URL and serves on it', async () => {
  const s = await startServer();
  assert.match(s.url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
  assert.ok(s.port > 0 && s.port < 65536, `a real port, not 0: ${s.port}`);
  assert.match(s.output(), /chathub \S+ listening on http:\/\/127\.0\.0\.1:\d+\//);
  const r = await httpRequest(s.port, buildRequest('GET', '/'));
  assert.equal(r.status, 200, r.statusLine);
});

test('a later --port overrides an earlier one', async () => {
  // Find a free port, release it, and ask chathub for it explicitly.
  const probe = net.createServer();
  await new Promise((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const port = probe.address().port;
  await new Promise((r) => probe.close(r));
  const s = await startServer(['--port', String(port)]);
  assert.equal(s.port, port, 'the later --port wins and is printed');
});

async function shutdownTest(signal) {
  const s = await startServer();
  const a = await wsConnect(s.wsUrl('/ws/bye'));
  const b = await wsConnect(s.wsUrl('/'));
  // A round trip proves both are joined before the signal.
  await a.send('ready');
  assert.equal(await a.nextText(), 'ready');
  const code = s.stop(signal, 10000);
  const [ca, cb] = await withTimeout(Promise.all([a.waitClose(10000), b.waitClose(10000)]), 10000,
    'clients not closed on shutdown');
  assert.equal(ca.code, 1001, `client a close code on ${signal}`);
  assert.equal(cb.code, 1001, `client b close code on ${signal}`);
  assert.equal(await code, 0, `exit code after ${signal}`);
}

test('SIGTERM closes every WebSocket with 1001 and exits 0', () => shutdownTest('SIGTERM'));
test('SIGINT closes every WebSocket with 1001 and exits 0', () => shutdownTest('SIGINT'));

test('SIGTERM with no clients exits 0', async () => {
  const s = await startServer();
  assert.equal(await s.stop('SIGTERM', 10000), 0);
});
