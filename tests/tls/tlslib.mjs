// Helpers for the TLS integration tests (tests/tls/*.mjs).
//
//   - requireTls(): exits 77 (meson's SKIP) with a TAP skip line unless the
//     binary's --help lists --tls-cert and the openssl command exists; a
//     binary without TLS must never make these tests pass silently;
//   - makeCert(dir, name, opts): a throwaway certificate and key made at test
//     time with `openssl req` (or `openssl ca` for given validity dates), for
//     CN=localhost with SANs localhost and 127.0.0.1, key mode 0600;
//   - startTlsServer(args): runs chathub with --tls-cert/--tls-key on
//     127.0.0.1 and an OS-chosen port and waits for "listening on https://";
//   - peerCert / httpsGet / wssConnect: clients that trust exactly the
//     throwaway certificate (no rejectUnauthorized: false).
// Every server started here is stopped by PID when the file ends.
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import https from 'node:https';
import { assert, WebSocket, chathubBin, cleanup, withTimeout } from '../integration/lib.mjs';

export { assert, WebSocket, withTimeout };

export function requireTls() {
  const help = spawnSync(chathubBin(), ['--help'], { encoding: 'utf8' });
  const text = `${help.stdout || ''}${help.stderr || ''}`;
  if (!text.includes('--tls-cert')) {
    console.log('1..0 # SKIP this chathub has no TLS (--tls-cert is not in --help)');
    process.exit(77);
  }
  const ossl = spawnSync('openssl', ['version'], { encoding: 'utf8' });
  if (ossl.status !== 0) {
    console.log('1..0 # SKIP the openssl command is missing (apt-get install openssl)');
    process.exit(77);
  }
}

let scratchDir = null;
export function scratch() {
  if (!scratchDir) scratchDir = fs.mkdtempSync(path.join(os.tmpdir(), 'chathub-tls-'));
  return scratchDir;
}

const procs = new Set();
process.on('exit', () => {
  for (const p of procs) {
    if (p.exitCode === null && p.signalCode === null) {
      try { process.kill(p.pid, 'SIGKILL'); } catch { /* gone */ }
    }
  }
  if (scratchDir) fs.rmSync(scratchDir, { recursive: true, force: true });
});

// Makes dir/name.crt and dir/name.key. opts: {cn, start, end} where start
// and end are openssl dates (YYYYMMDDHHMMSSZ) for a certificate outside its
// validity; keyMode: the key file's mode (default 0o600).
export function makeCert(dir, name, { cn = 'localhost', start, end, keyMode = 0o600 } = {}) {
  const cert = path.join(dir, `${name}.crt`);
  const key = path.join(dir, `${name}.key`);
  const subj = `/CN=${cn}`;
  const san = 'subjectAltName=DNS:localhost,IP:127.0.0.1';
  const keyopts = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key];
  if (!start) {
    execFileSync('openssl', ['req', '-x509', ...keyopts, '-out', cert, '-days', '2',
      '-subj', subj, '-addext', san], { stdio: 'pipe' });
  } else {
    // `openssl req` only takes a number of days from now: a self-signing
    // `openssl ca` with a throwaway database sets any dates.
    const cadir = fs.mkdtempSync(path.join(dir, 'ca-'));
    fs.writeFileSync(path.join(cadir, 'ca.cnf'), [
      '[ca]', 'default_ca = tmp', '[tmp]', `dir = ${cadir}`, `database = ${cadir}/index.txt`,
      `new_certs_dir = ${cadir}`, `serial = ${cadir}/serial`, 'default_md = sha256',
      'policy = any', 'unique_subject = no', 'copy_extensions = copy', '[any]',
      'commonName = supplied', ''].join('\n'));
    fs.writeFileSync(path.join(cadir, 'index.txt'), '');
    fs.writeFileSync(path.join(cadir, 'serial'), '01\n');
    const csr = path.join(cadir, 'req.csr');
    execFileSync('openssl', ['req', '-new', ...keyopts, '-out', csr, '-subj', subj, '-addext', san],
      { stdio: 'pipe' });
    execFileSync('openssl', ['ca', '-config', path.join(cadir, 'ca.cnf'), '-selfsign',
      '-keyfile', key, '-in', csr, '-out', cert, '-startdate', start, '-enddate', end,
      '-batch', '-notext'], { stdio: 'pipe' });
  }
  fs.chmodSync(key, keyMode);
  return { cert, key, pem: fs.readFileSync(cert) };
}

// Starts chathub on TLS. Resolves with {port, url, proc, output(), stop(sig),
// signal(sig), alive(), stderr()} once it prints its https:// URL.
export async function startTlsServer(certFiles, args = [], { timeoutMs = 10000 } = {}) {
  const argv = ['--host', '127.0.0.1', '--port', '0', '--no-persist',
    '--tls-cert', certFiles.cert, '--tls-key', certFiles.key, ...args];
  const proc = spawn(chathubBin(), argv, { stdio: ['ignore', 'pipe', 'pipe'], cwd: scratch() });
  procs.add(proc);
  let stdout = '';
  let stderr = '';
  proc.stdout.setEncoding('utf8');
  proc.stderr.setEncoding('utf8').on('data', (d) => { stderr += d; });
  const output = () => `--- chathub ${argv.join(' ')} (pid ${proc.pid})\n` +
    `--- stdout:\n${stdout}--- stderr:\n${stderr}`;
  const started = new Promise((resolve, reject) => {
    proc.stdout.on('data', (d) => {
      stdout += d;
      const m = /listening on (https?:\/\/\S+)/.exec(stdout);
      if (m) resolve(m[1]);
    });
    proc.once('exit', (code, sig) =>
      reject(new Error(`chathub exited (code ${code}, signal ${sig}) before listening\n${output()}`)));
  });
  const url = await withTimeout(started, timeoutMs, `no listening line within ${timeoutMs} ms`)
    .catch((err) => {
      try { process.kill(proc.pid, 'SIGKILL'); } catch { /* gone */ }
      throw err;
    });
  assert.match(url, /^https:\/\//, `a TLS server must announce https://, got ${url}`);
  const port = Number(new URL(url).port);
  const alive = () => proc.exitCode === null && proc.signalCode === null;
  const server = {
    url, port, proc, output, alive,
    stderr: () => stderr,
    signal(sig) { process.kill(proc.pid, sig); },
    async stop(sig = 'SIGTERM') {
      if (alive()) process.kill(proc.pid, sig);
      const code = await withTimeout(new Promise((r) => (alive()
        ? proc.once('exit', (c, s) => r(c !== null ? c : s)) : r(proc.exitCode ?? proc.signalCode))),
      10000, `chathub pid ${proc.pid} did not exit`);
      procs.delete(proc);
      return code;
    },
  };
  cleanup(async () => { if (alive()) await server.stop('SIGKILL').catch(() => {}); });
  return server;
}

// The certificate the server presents to a new connection, verified
// against ca (the PEM of the certificate the test expects).
export function peerCert(port, ca, { timeoutMs = 5000 } = {}) {
  return withTimeout(new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, ca, servername: 'localhost',
      ALPNProtocols: ['http/1.1'] }, () => {
      const c = s.getPeerCertificate();
      const info = { fingerprint: c.fingerprint256, subject: c.subject, protocol: s.getProtocol(),
        alpn: s.alpnProtocol, authorized: s.authorized };
      s.end();
      resolve(info);
    });
    s.once('error', reject);
  }), timeoutMs, 'TLS handshake timed out');
}

// One HTTPS GET; resolves with {status, headers, body}.
export function httpsGet(port, ca, pathname = '/', { timeoutMs = 5000 } = {}) {
  return withTimeout(new Promise((resolve, reject) => {
    const req = https.get({ host: '127.0.0.1', port, path: pathname, ca, servername: 'localhost',
      agent: false }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers,
        body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.once('error', reject);
  }), timeoutMs, `GET ${pathname} timed out`);
}

// A `ws` client over wss:// trusting ca. Resolves with {ws, next(ms), close()}
// once open; next() yields the next message as a string.
export function wssConnect(port, ca, pathname = '/ws', { protocols, timeoutMs = 5000 } = {}) {
  const ws = new WebSocket(`wss://127.0.0.1:${port}${pathname}`, protocols, {
    ca, servername: 'localhost', origin: `https://127.0.0.1:${port}` });
  const queue = [];
  const waiters = [];
  ws.on('message', (d) => {
    const m = d.toString();
    if (waiters.length) waiters.shift()(m); else queue.push(m);
  });
  const client = {
    ws,
    next(ms = 5000) {
      if (queue.length) return Promise.resolve(queue.shift());
      return withTimeout(new Promise((r) => waiters.push(r)), ms, 'no message in time');
    },
    close() { try { ws.terminate(); } catch { /* closed */ } },
  };
  cleanup(() => client.close());
  return withTimeout(new Promise((resolve, reject) => {
    ws.once('open', () => resolve(client));
    ws.once('error', reject);
  }), timeoutMs, 'wss connect timed out');
}
