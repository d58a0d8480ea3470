// The command line: help, version, usage errors (exit 2, one line each),
// runtime errors (exit 1, naming the path and the OS's reason), the startup
// line, and graceful shutdown on SIGTERM and SIGINT.
import net from 'node:net';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import {
  test, assert, runChathub, startServer, wsConnect, httpRequest, buildRequest, cleanup, withTimeout,
  chathubBin,
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

// The non-empty lines of a stream.
const lines = (text) => text.split('\n').filter((l) => l.trim() !== '');

test('an unknown flag exits 2 with one line naming it and --help', async () => {
  const r = await runChathub(['--bogus']);
  assert.equal(r.code, 2, `exit code; stderr: ${r.stderr}`);
  assert.deepEqual(lines(r.stderr), ['chathub: unknown flag --bogus (see chathub --help)']);
  assert.equal(r.stdout, '');
});

// Usage errors of every kind: exit 2, at most three lines, naming the flag
// and pointing at --help, never the whole usage text.
for (const [args, re] of [
  [['--port', 'abc'], /^chathub: invalid --port 'abc': expected a number from 0 to 65535 \(see chathub --help\)$/],
  [['--max-conns=-5'], /^chathub: invalid --max-conns '-5'/],
  [['--log-level', 'loud'], /^chathub: invalid --log-level 'loud': expected error, warn, info or debug/],
  [['--host', ''], /^chathub: invalid --host ''/],
  [['--history'], /^chathub: option --history needs a value/],
  [['stray'], /^chathub: unexpected argument 'stray': flags start with --/],
  [['-x'], /^chathub: unknown flag -x \(see chathub --help\)$/],
  [['--ping-interval', '5', '--pong-timeout', '6'], /^chathub: --pong-timeout must be shorter than --ping-interval/],
]) {
  test(`usage error ${JSON.stringify(args)}: exit 2, at most three lines`, async () => {
    const r = await runChathub(args);
    assert.equal(r.code, 2, `exit code; stderr: ${r.stderr}`);
    const l = lines(r.stderr);
    assert.ok(l.length >= 1 && l.length <= 3, `1-3 lines, got ${l.length}: ${JSON.stringify(r.stderr)}`);
    assert.match(l[0], re);
    assert.match(r.stderr, /see chathub --help/);
    assert.doesNotMatch(r.stderr, /Usage:/);
    assert.equal(r.stdout, '');
  });
}

// --public problems: exit 1, one line with the path and the OS's reason.
test('--public: a missing directory and a file are named, with the reason', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chathub-cli-'));
  cleanup(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'index.html');
  fs.writeFileSync(file, 'hi');
  const missing = path.join(dir, 'nope');
  for (const [p, reason] of [[missing, 'no such file or directory'], [file, 'not a directory']]) {
    const r = await runChathub(['--host', '127.0.0.1', '--port', '0', '--no-persist', '--public', p]);
    assert.equal(r.code, 1, `exit code; stderr: ${r.stderr}`);
    assert.deepEqual(lines(r.stderr), [`chathub: cannot serve --public ${p}: ${reason}`]);
  }
});

test('--public: an unreadable directory says "permission denied", not "input/output error"', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chathub-cli-'));
  cleanup(() => { fs.chmodSync(dir, 0o700); fs.rmSync(dir, { recursive: true, force: true }); });
  fs.writeFileSync(path.join(dir, 'index.html'), 'hi');
  fs.chmodSync(dir, 0o000);
  // root reads anything: run the hub as nobody then (setpriv, util-linux).
  let cmd = chathubBin();
  let args = ['--host', '127.0.0.1', '--port', '0', '--no-persist', '--public', dir];
  if (process.getuid && process.getuid() === 0) {
    args = ['--reuid=65534', '--regid=65534', '--clear-groups', cmd, ...args];
    cmd = 'setpriv';
  }
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 10000, cwd: os.tmpdir() });
  if (r.error && r.error.code === 'ENOENT') return console.log('# skipped: setpriv not found');
  assert.equal(r.status, 1, `exit code; stderr: ${r.stderr}`);
  assert.deepEqual(lines(r.stderr), [`chathub: cannot serve --public ${dir}: permission denied`]);
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
