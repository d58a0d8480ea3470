// Logs an operator can use: at info, one line per WebSocket open and close
// (address, mode, room, close code and reason, who closed, duration, bytes)
// and per refusal (why); a warn line when a slow client loses its backlog;
// --log-format json; forwarded addresses behind --trust-proxy; and lines
// about one address rate-limited.
import net from 'node:net';
import {
  test, assert, startServer, wsConnect, RawHttp, buildRequest, upgradeHeaders, encodeFrame,
} from './lib.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// The stderr lines of s (after the "--- stderr:" marker of output()).
const stderrLines = (s) => s.output().split('--- stderr:\n')[1].split('\n').filter((l) => l !== '');

async function waitLine(s, re, ms = 5000) {
  const until = Date.now() + ms;
  for (;;) {
    const hit = stderrLines(s).find((l) => re.test(l));
    if (hit) return hit;
    if (Date.now() > until) throw new Error(`no log line matched ${re}\n${s.output()}`);
    await sleep(25);
  }
}

test('open and close lines: raw and JSON, who closed, code, duration, bytes', async () => {
  const s = await startServer();
  const raw = await wsConnect(s.wsUrl('/ws/kitchen'));
  await raw.send('hello');
  assert.equal(await raw.nextText(), 'hello');
  const open = await waitLine(s, /info  127\.0\.0\.1: open mode=raw room=kitchen$/);
  assert.doesNotMatch(open, /duration_ms|bytes/, 'totals only on the close line');
  raw.close(1000, 'done');
  await raw.waitClose();
  const close = await waitLine(s, /127\.0\.0\.1: close mode=raw/);
  const m = /code=1000 reason="normal closure" by=client duration_ms=(\d+) bytes_in=(\d+) bytes_out=(\d+)$/.exec(close);
  assert.ok(m, close);
  assert.ok(Number(m[2]) > 0 && Number(m[3]) > 0, `bytes counted both ways: ${close}`);

  const json = await wsConnect(s.wsUrl('/ws'), { protocols: 'chathub.v1' });
  await waitLine(s, /info  127\.0\.0\.1: open mode=json$/);
  json.terminate(); // no close handshake
  await waitLine(s, /127\.0\.0\.1: close mode=json code=1006 reason="connection lost" duration_ms=\d+ bytes_in=\d+ bytes_out=\d+$/);
});

test('the hub closing says so: code, reason and by=hub', async () => {
  const s = await startServer(['--max-message', '1024']);
  const c = await wsConnect(s.wsUrl('/ws/lobby'));
  await c.send('x'.repeat(2000));
  assert.equal((await c.waitClose()).code, 1009);
  await waitLine(s, /127\.0\.0\.1: close mode=raw code=1009 reason="message too big" by=hub duration_ms=\d+/);
});

test('refusals say why: per-address limit, bad handshake, bad room, origin', async () => {
  const s = await startServer(['--max-conns-per-ip', '1', '--strict-origin']);
  const held = await wsConnect(s.wsUrl('/ws/lobby'));
  await assert.rejects(wsConnect(s.wsUrl('/ws/lobby')), /HTTP 503/);
  await waitLine(s, /info  127\.0\.0\.1: refused mode=http code=503 reason="over --max-conns-per-ip 1"$/);
  held.close();
  await held.waitClose();
  // The other refusals on a hub without the one-connection limit: each
  // refused connection is closed by the hub, but the next one may arrive
  // before the hub has seen that close (an ASan build is slow enough).
  const s2 = await startServer(['--strict-origin']);
  const bad = await RawHttp.connect(s2.port);
  await bad.write(buildRequest('GET', '/ws', { ...upgradeHeaders(), 'Sec-WebSocket-Version': '8' }));
  assert.equal((await bad.readResponse()).status, 426);
  bad.destroy();
  await waitLine(s2, /refused mode=http code=426 reason=bad_handshake$/);
  await assert.rejects(wsConnect(s2.wsUrl('/ws/no%20spaces')), /HTTP 400/);
  await waitLine(s2, /refused mode=http code=400 reason="bad room name"$/);
  await assert.rejects(wsConnect(s2.wsUrl('/ws/lobby'), { headers: { Origin: 'http://evil.example' } }), /HTTP 403/);
  await waitLine(s2, /refused mode=http code=403 reason="origin http:\/\/evil\.example not allowed \(to allow it: --allow-origin http:\/\/evil\.example\)"$/);
});

test('behind --trust-proxy the lines name the forwarded address', async () => {
  const s = await startServer(['--trust-proxy', '127.0.0.1/32']);
  const c = await wsConnect(s.wsUrl('/ws/lobby'), { headers: { 'X-Forwarded-For': '198.51.100.23' } });
  await waitLine(s, /info  198\.51\.100\.23: open mode=raw room=lobby$/);
  c.close();
  await waitLine(s, /info  198\.51\.100\.23: close mode=raw code=1005/);
  assert.equal(stderrLines(s).filter((l) => / 127\.0\.0\.1: (open|close)/.test(l)).length, 0,
    'no line names the proxy');
});

test('--log-format json: every line is one JSON object with the same fields', async () => {
  const s = await startServer(['--log-format', 'json']);
  const c = await wsConnect(s.wsUrl('/ws/lobby'));
  c.close(1000);
  await c.waitClose();
  await waitLine(s, /"event":"close"/);
  const lines = stderrLines(s).map((l) => JSON.parse(l));
  const close = lines.find((l) => l.event === 'close');
  assert.equal(close.level, 'info');
  assert.match(close.ts, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  assert.equal(close.addr, '127.0.0.1');
  assert.equal(close.mode, 'raw');
  assert.equal(close.code, 1000);
  assert.equal(close.by, 'client');
  assert.equal(typeof close.duration_ms, 'number');
  assert.ok(close.bytes_in > 0 && close.bytes_out > 0);
  assert.ok(lines.some((l) => l.event === 'open' && l.room === 'lobby'));
  // Plain lines are JSON too.
  assert.equal(await s.stop('SIGTERM', 10000), 0);
  const all = stderrLines(s).map((l) => JSON.parse(l));
  assert.ok(all.some((l) => l.msg === 'stopped'), 'the "stopped" line as {"msg": ...}');
});

test('--log-format: a bad value is a usage error', async () => {
  const { runChathub } = await import('./lib.mjs');
  const r = await runChathub(['--log-format', 'xml']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /^chathub: invalid --log-format 'xml': expected text or json \(see chathub --help\)\n$/);
});

test('a flood of refusals from one address is rate-limited in the log', async () => {
  const s = await startServer(['--max-conns-per-ip', '1']);
  const held = await wsConnect(s.wsUrl('/ws/lobby'));
  // 200 connections turned away at once: each is one refusal line, until
  // the address's budget (20 lines at once, then 2 a second) runs out.
  await Promise.all(Array.from({ length: 200 }, () => new Promise((resolve) => {
    const sock = net.connect(s.port, '127.0.0.1');
    sock.on('error', resolve);
    sock.on('close', resolve);
    sock.resume();
  })));
  await sleep(200);
  const refused = stderrLines(s).filter((l) => /127\.0\.0\.1: refused/.test(l));
  assert.ok(refused.length >= 1 && refused.length <= 25, `${refused.length} refusal lines for 200 refusals`);
  // Later, the next line reports what was left out.
  await sleep(600);
  await assert.rejects(wsConnect(s.wsUrl('/ws/lobby')), /HTTP 503/);
  const line = await waitLine(s, /127\.0\.0\.1: refused .*suppressed=(\d+)$/);
  const n = Number(/suppressed=(\d+)$/.exec(line)[1]);
  assert.ok(n >= 150, `suppressed=${n}`);
  console.log(`# 200 refusals from one address: ${refused.length} lines, then one with suppressed=${n}`);
  held.close();
});

test('a slow client losing its backlog is a warn line', async () => {
  const s = await startServer(['--rate', '0', '--max-output', '65536', '--soft-output', '32768', '--soft-hold', '1']);
  // A raw WebSocket that never reads.
  const stuck = await RawHttp.connect(s.port);
  await stuck.write(buildRequest('GET', '/ws/lobby', upgradeHeaders()));
  assert.equal((await stuck.readResponse({ noBody: true })).status, 101);
  stuck.sock.pause();
  const talker = await wsConnect(s.wsUrl('/ws/lobby'));
  const line = 'y'.repeat(60000);
  let warn = null;
  for (let i = 0; i < 400 && !warn; i++) {
    await talker.send(line);
    await talker.next(5000);
    warn = stderrLines(s).find((l) => / warn  127\.0\.0\.1: slow client: dropping \d+ queued bytes and closing 4008$/.test(l));
  }
  assert.ok(warn, `a warn line for the slow client\n${s.output()}`);
  stuck.destroy();
  await waitLine(s, /close mode=raw code=4008 reason="slow client" by=hub/);
}, { timeout: 60000 });

test('a client over --rate: one refusal line per run of refused messages', async () => {
  const s = await startServer(['--rate', '1', '--burst', '1']);
  const c = await RawHttp.connect(s.port);
  await c.write(buildRequest('GET', '/ws/lobby', upgradeHeaders()));
  await c.until(() => (c.buf.indexOf('\r\n\r\n') >= 0 ? true : undefined), 5000, 'the 101');
  // A raw sender over the rate is slowed (no longer read), and the lines
  // already read are relayed on credit, 10 s of the rate (flow.h). 20 lines
  // in one write are read at once and run past the credit: the first
  // refused one is logged, the rest of the run is not (the hub then closes
  // the sender 4013 after a burst of refusals).
  await c.write(Buffer.concat(Array.from({ length: 20 }, (_, i) => encodeFrame(1, Buffer.from(`m${i}`)))));
  await waitLine(s, /info  127\.0\.0\.1: refused reason="over --rate"$/);
  await sleep(100);
  assert.equal(stderrLines(s).filter((l) => /over --rate/.test(l)).length, 1, 'one line for the run of refusals');
  c.destroy();
});
