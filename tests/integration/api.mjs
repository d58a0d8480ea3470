// The server HTTP API under /api/ (docs/operations.md, "Server API";
// issue 13 part 3) against the real binary: the key, the errors and their
// statuses, the rate limit, publish reaching a WebSocket member and history,
// presence, rooms, pipelined and abandoned requests, /metrics and the log.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  test, assert, startServer, runChathub, RawHttp, buildRequest, cleanup,
} from './lib.mjs';
import { JClient } from '../protocol/jclient.mjs';

const KEY = 'k3y-for-the-api-test-0123456789';

function keyFile(content = `\n  ${KEY}  \n`) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chathub-api-'));
  cleanup(() => fs.rmSync(dir, { recursive: true, force: true }));
  const f = path.join(dir, 'api.key');
  fs.writeFileSync(f, content, { mode: 0o600 });
  return f;
}

async function startApi(args = []) {
  return startServer(['--rate', '0', '--api-key-file', keyFile(), ...args]);
}

// One request on a fresh connection; the body parsed as JSON when it is.
async function call(s, method, p, { body, key = KEY, headers = {} } = {}) {
  const h = { ...headers };
  if (key !== null) h.Authorization = `Bearer ${key}`;
  let b = '';
  if (body !== undefined) {
    b = typeof body === 'string' ? body : JSON.stringify(body);
    h['Content-Type'] = 'application/json';
    h['Content-Length'] = Buffer.byteLength(b);
  }
  const c = await RawHttp.connect(s.port);
  try {
    await c.write(Buffer.from(buildRequest(method, p, h, ''), 'latin1'));
    if (b) await c.write(Buffer.from(b, 'utf8'));
    return parsed(await c.readResponse());
  } finally {
    c.destroy();
  }
}

function parsed(r) {
  let json;
  try { json = JSON.parse(r.body.toString('utf8')); } catch { json = undefined; }
  return { ...r, json };
}

function assertError(r, status, code) {
  assert.equal(r.status, status, `status: ${r.raw.toString('latin1')}`);
  assert.match(r.headers['content-type'], /^application\/json/);
  assert.ok(r.json && r.json.error, `an error object: ${r.body}`);
  assert.equal(r.json.error.code, code);
  assert.equal(typeof r.json.error.message, 'string');
  assert.ok(r.json.error.message.length > 0);
}

test('without --api-key-file every /api/ path is 404 (JSON), and the flags are in --help', async () => {
  const s = await startServer(['--rate', '0']);
  for (const [m, p] of [['POST', '/api/publish'], ['GET', '/api/rooms'], ['GET', '/api/'],
    ['GET', '/api'], ['GET', '/api/nothing']]) {
    const r = await call(s, m, p, { body: m === 'POST' ? { room: 'r', text: 'x' } : undefined });
    assertError(r, 404, 'not_found');
  }
  const help = await runChathub(['--help']);
  assert.match(help.stdout, /--api-key-file FILE/);
  assert.match(help.stdout, /--api-rate N/);
});

test('--api-key-file: a short key or a missing file exits 2 with one line', async () => {
  const short = await runChathub(['--api-key-file', keyFile('  short-key  \n')]);
  assert.equal(short.code, 2);
  assert.equal(short.stderr.trim().split('\n').length, 1, short.stderr);
  assert.match(short.stderr, /--api-key-file.*9 bytes.*at least 16/);
  assert.ok(!short.stderr.includes('short-key'), 'the key is not shown');
  const missing = await runChathub(['--api-key-file', '/nonexistent/api.key']);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /cannot read \/nonexistent\/api.key/);
  const rate = await runChathub(['--api-rate', 'x']);
  assert.equal(rate.code, 2);
});

test('the key: missing, wrong, other scheme -> 401 with WWW-Authenticate; right (any case of Bearer) -> 200', async () => {
  const s = await startApi();
  const wrongSameLength = KEY.slice(0, -1) + (KEY.endsWith('9') ? '8' : '9');
  for (const headers of [{}, { Authorization: 'Bearer' }, { Authorization: `Bearer ${wrongSameLength}` },
    { Authorization: `Bearer ${KEY}x` }, { Authorization: `Bearer ${KEY.slice(1)}` },
    { Authorization: `Basic ${Buffer.from(`api:${KEY}`).toString('base64')}` }]) {
    const r = await call(s, 'GET', '/api/rooms', { key: null, headers });
    assertError(r, 401, 'unauthorized');
    assert.match(r.headers['www-authenticate'], /^Bearer/);
  }
  const ok = await call(s, 'GET', '/api/rooms', { key: null, headers: { Authorization: `bearer ${KEY}` } });
  assert.equal(ok.status, 200);
  assert.deepEqual(ok.json, { rooms: [] });
  // Unknown paths ask for the key first, then say 404.
  assertError(await call(s, 'GET', '/api/nothing', { key: null }), 401, 'unauthorized');
  assertError(await call(s, 'GET', '/api/nothing'), 404, 'not_found');
});

test('bad JSON and bad fields -> 400; unknown rooms -> 404', async () => {
  const s = await startApi();
  for (const body of ['{"room":', '[1,2]', '"text"', '', '{"room":"r","room":"s","text":"x"}']) {
    assertError(await call(s, 'POST', '/api/publish', { body: body === '' ? undefined : body }), 400, 'bad_json');
  }
  const bad = [
    { text: 'no room' },
    { room: 'two words', text: 'x' },
    { room: 'x'.repeat(65), text: 'x' },
    { room: 7, text: 'x' },
    { room: 'r' },
    { room: 'r', text: '' },
    { room: 'r', text: 42 },
    { room: 'r', text: 'bell\u0007' },
    { room: 'r', text: 'y'.repeat(4001) },
    { room: 'r', text: 'x', from: '' },
    { room: 'r', text: 'x', from: ' padded ' },
    { room: 'r', text: 'x', from: 'n'.repeat(33) },
    { room: 'r', text: 'x', from: 'a,b' },
    { room: 'r', text: 'x', from: 'ctl\u0001' },
    { room: 'r', text: 'x', cmid: 'c'.repeat(65) },
    { room: 'r', text: 'x', reply_to: -1 },
    { room: 'r', text: 'x', reply_to: 'one' },
  ];
  for (const body of bad) {
    assertError(await call(s, 'POST', '/api/publish', { body }), 400, 'bad_request');
  }
  assertError(await call(s, 'GET', '/api/history'), 400, 'bad_request');
  assertError(await call(s, 'GET', '/api/history?room=a%20b'), 400, 'bad_request');
  assertError(await call(s, 'GET', '/api/history?room=r&limit=0'), 400, 'bad_request');
  assertError(await call(s, 'GET', '/api/history?room=r&limit=101'), 400, 'bad_request');
  assertError(await call(s, 'GET', '/api/history?room=r&before=3&after=1'), 400, 'bad_request');
  assertError(await call(s, 'GET', '/api/presence?room=%zz'), 400, 'bad_request');
  assertError(await call(s, 'GET', '/api/history?room=never-used'), 404, 'no_such_room');
  assertError(await call(s, 'GET', '/api/presence?room=never-used'), 404, 'no_such_room');
  // The moderation endpoints check their fields too.
  assertError(await call(s, 'POST', '/api/kick', { body: { nick: 'bob' } }), 400, 'bad_request');
  assertError(await call(s, 'POST', '/api/kick', { body: { room: 'r' } }), 400, 'bad_request');
  assertError(await call(s, 'POST', '/api/kick', { body: { room: 'r', nick: 'bob', user: 'u1' } }), 400, 'bad_request');
  assertError(await call(s, 'POST', '/api/ban', { body: { nick: 'bob', duration: 0 } }), 400, 'bad_request');
  assertError(await call(s, 'POST', '/api/ban', { body: { nick: 'bob', duration: 'long' } }), 400, 'bad_request');
  assertError(await call(s, 'POST', '/api/topic', { body: { room: 'r' } }), 400, 'bad_request');
  assertError(await call(s, 'POST', '/api/topic', { body: { room: 'r', topic: 't'.repeat(513) } }), 400, 'bad_request');
  assertError(await call(s, 'POST', '/api/disconnect', { body: { reason: 'x' } }), 400, 'bad_request');
  assertError(await call(s, 'POST', '/api/disconnect', { body: { user: 'u1', reason: 'r'.repeat(513) } }),
    400, 'bad_request');
});

test('wrong method -> 405 with Allow; other methods on the site stay 405', async () => {
  const s = await startApi();
  for (const [m, p, allow] of [['GET', '/api/publish', /^POST$/], ['POST', '/api/rooms', /^GET, HEAD$/],
    ['PUT', '/api/history?room=r', /^GET, HEAD$/], ['DELETE', '/api/kick', /^POST$/]]) {
    const r = await call(s, m, p, { body: m === 'POST' ? {} : undefined });
    assertError(r, 405, 'method_not_allowed');
    assert.match(r.headers.allow, allow);
  }
  const site = await call(s, 'POST', '/', { body: {} });
  assert.equal(site.status, 405);
});

test('bodies: over 64 KiB -> 413 (JSON) and the connection ends; chunked bodies work up to the same limit', async () => {
  const s = await startApi();
  const big = JSON.stringify({ room: 'r', text: 'x'.repeat(70000) });
  const c = await RawHttp.connect(s.port);
  await c.write(buildRequest('POST', '/api/publish', {
    Authorization: `Bearer ${KEY}`, 'Content-Length': Buffer.byteLength(big),
  }, ''));
  const r = parsed(await c.readResponse());
  assertError(r, 413, 'too_large');
  await c.waitClosed();

  // Chunked: the same publish in three chunks.
  const body = JSON.stringify({ room: 'chunky', text: 'in pieces' });
  const parts = [body.slice(0, 5), body.slice(5, 20), body.slice(20)];
  const chunked = parts.map((p) => `${Buffer.byteLength(p).toString(16)}\r\n${p}\r\n`).join('') + '0\r\n\r\n';
  const c2 = await RawHttp.connect(s.port);
  await c2.write(buildRequest('POST', '/api/publish', {
    Authorization: `Bearer ${KEY}`, 'Transfer-Encoding': 'chunked',
  }, chunked));
  const ok = parsed(await c2.readResponse());
  assert.equal(ok.status, 200, ok.raw.toString());
  assert.equal(ok.json.offset, 1);

  // Chunked past the limit: 413 once it grows past 64 KiB.
  const c3 = await RawHttp.connect(s.port);
  const piece = 'y'.repeat(16384);
  let flood = '';
  for (let i = 0; i < 5; i++) flood += `4000\r\n${piece}\r\n`;
  await c3.write(buildRequest('POST', '/api/publish', {
    Authorization: `Bearer ${KEY}`, 'Transfer-Encoding': 'chunked',
  }, flood));
  assertError(parsed(await c3.readResponse()), 413, 'too_large');
  await c3.waitClosed();
});

test('--api-rate: beyond N requests per second -> 429 with Retry-After (pipelined: exact count)', async () => {
  const s = await startApi(['--api-rate', '3']);
  // Ten requests in one write are answered within one loop turn, on one
  // clock reading: the bucket (3) lets exactly three through.
  const c = await RawHttp.connect(s.port);
  const one = buildRequest('GET', '/api/rooms', { Authorization: `Bearer ${KEY}` });
  await c.write(one.repeat(10));
  const statuses = [];
  for (let i = 0; i < 10; i++) {
    const r = parsed(await c.readResponse());
    statuses.push(r.status);
    if (r.status === 429) {
      assertError(r, 429, 'rate_limited');
      assert.equal(r.headers['retry-after'], '1');
    }
  }
  assert.deepEqual(statuses, [200, 200, 200, 429, 429, 429, 429, 429, 429, 429]);
  // Requests without the key do not use the budget up (they get 401).
  const r = await call(s, 'GET', '/api/rooms', { key: 'not-the-key-but-long-enough' });
  assert.equal(r.status, 401);
});

test('publish reaches a WebSocket member, is stored (history), deduplicated by cmid; presence and rooms', async () => {
  const s = await startApi();
  const a = await JClient.open(s, { nick: 'alice' });
  await a.joinOk('shop');
  const pub = await call(s, 'POST', '/api/publish', {
    body: { room: 'shop', text: 'order 17 shipped ✓', from: 'shopbot', cmid: 'ord-17' },
  });
  assert.equal(pub.status, 200, pub.raw.toString());
  assert.deepEqual(Object.keys(pub.json).sort(), ['offset', 'ts']);
  assert.equal(pub.json.offset, 1);
  const push = await a.waitPush((m) => m.t === 'msg');
  assert.equal(push.room, 'shop');
  assert.equal(push.offset, 1);
  assert.equal(push.from, 'shopbot');
  assert.equal(push.text, 'order 17 shipped ✓');
  assert.equal(push.ts, pub.json.ts);

  // The same cmid again: the original's offset, nothing new pushed.
  const dup = await call(s, 'POST', '/api/publish', {
    body: { room: 'shop', text: 'order 17 shipped ✓', from: 'shopbot', cmid: 'ord-17' },
  });
  assert.deepEqual(dup.json, { offset: 1, ts: pub.json.ts, duplicate: true });
  // Without from it is "api".
  const second = await call(s, 'POST', '/api/publish', { body: { room: 'shop', text: 'thanks' } });
  assert.equal(second.json.offset, 2);
  const push2 = await a.waitPush((m) => m.t === 'msg' && m.offset === 2);
  assert.equal(push2.from, 'api');

  const h = await call(s, 'GET', '/api/history?room=shop');
  assert.equal(h.status, 200);
  assert.equal(h.json.room, 'shop');
  assert.equal(h.json.offset, 2);
  assert.equal(typeof h.json.epoch, 'string');
  assert.equal(h.json.complete, true);
  assert.deepEqual(h.json.messages.map((m) => [m.offset, m.from, m.text]),
    [[1, 'shopbot', 'order 17 shipped ✓'], [2, 'api', 'thanks']]);
  assert.equal(h.json.messages[0].cmid, 'ord-17');
  // Paging: after=1, before=2, limit=1.
  const after = await call(s, 'GET', '/api/history?room=shop&after=1');
  assert.deepEqual(after.json.messages.map((m) => m.offset), [2]);
  const before = await call(s, 'GET', '/api/history?room=shop&before=2');
  assert.deepEqual(before.json.messages.map((m) => m.offset), [1]);
  const page = await call(s, 'GET', '/api/history?room=shop&limit=1');
  assert.deepEqual(page.json.messages.map((m) => m.offset), [2]);
  assert.equal(page.json.complete, false);
  assert.deepEqual(page.json.next, { before: 2 });

  const b = await JClient.open(s, { nick: 'bob' });
  await b.joinOk('shop');
  await b.joinOk('other');
  const p = await call(s, 'GET', '/api/presence?room=shop');
  assert.equal(p.status, 200);
  assert.equal(p.json.room, 'shop');
  assert.equal(p.json.count, 2);
  assert.deepEqual(p.json.members.map((m) => m.nick).sort(), ['alice', 'bob']);
  assert.deepEqual(p.json.members.map((m) => m.client).sort(), [a.id, b.id].sort());
  const rooms = await call(s, 'GET', '/api/rooms');
  assert.deepEqual(rooms.json, { rooms: [{ room: 'shop', members: 2 }, { room: 'other', members: 1 }] });
  // A room with messages and nobody in it is known: count 0.
  await call(s, 'POST', '/api/publish', { body: { room: 'empty', text: 'anyone?' } });
  const pe = await call(s, 'GET', '/api/presence?room=empty');
  assert.deepEqual(pe.json, { room: 'empty', count: 0, members: [] });
  // HEAD is GET without a body.
  const c = await RawHttp.connect(s.port);
  await c.write(buildRequest('HEAD', '/api/rooms', { Authorization: `Bearer ${KEY}` }));
  const head = await c.readResponse({ noBody: true });
  assert.equal(head.status, 200);
  c.destroy();
});

test('pipelined API requests on one keep-alive connection are answered in order; a static GET behind them too', async () => {
  const s = await startApi();
  const auth = { Authorization: `Bearer ${KEY}` };
  const pub = (text) => {
    const b = JSON.stringify({ room: 'pipe', text });
    return buildRequest('POST', '/api/publish', { ...auth, 'Content-Length': Buffer.byteLength(b) }, b);
  };
  const c = await RawHttp.connect(s.port);
  await c.write(pub('one') + pub('two') + buildRequest('GET', '/api/history?room=pipe', auth) +
    buildRequest('GET', '/healthz') + pub('three'));
  const r1 = parsed(await c.readResponse());
  const r2 = parsed(await c.readResponse());
  const r3 = parsed(await c.readResponse());
  const r4 = await c.readResponse();
  const r5 = parsed(await c.readResponse());
  assert.deepEqual([r1.json.offset, r2.json.offset], [1, 2]);
  assert.deepEqual(r3.json.messages.map((m) => m.text), ['one', 'two']);
  assert.equal(r4.status, 200);
  assert.equal(r4.body.toString(), 'ok\n');
  assert.equal(r5.json.offset, 3);
  // The connection is still usable, and answers split at every byte too.
  const req = pub('four');
  for (let i = 0; i < req.length; i++) await c.write(req[i]);
  const r6 = parsed(await c.readResponse());
  assert.equal(r6.json.offset, 4);
  c.destroy();
});

test('a caller that hangs up before its answer: the hub survives and the publish is stored', async () => {
  const s = await startApi();
  for (let i = 0; i < 20; i++) {
    const b = JSON.stringify({ room: 'gone', text: `m${i}` });
    const c = await RawHttp.connect(s.port);
    await c.write(buildRequest('POST', '/api/publish', {
      Authorization: `Bearer ${KEY}`, 'Content-Length': Buffer.byteLength(b),
    }, b));
    c.sock.resetAndDestroy();
  }
  // Every publish that got in was stored, and the hub answers.
  const h = await call(s, 'GET', '/api/history?room=gone&limit=100');
  assert.equal(h.status, 200);
  assert.ok(h.json.messages.length >= 1 && h.json.messages.length <= 20);
  assert.ok(s.alive());
});

test('publish with reply_to: stored with the message; a reply to a message the room lacks is 400 (memory store)', async () => {
  const s = await startApi(['--no-persist']);
  assertError(await call(s, 'POST', '/api/publish', { body: { room: 'r', text: 'x', reply_to: 1 } }),
    400, 'bad_request');
  assert.equal((await call(s, 'POST', '/api/publish', { body: { room: 'r', text: 'first' } })).json.offset, 1);
  const r = await call(s, 'POST', '/api/publish', { body: { room: 'r', text: 'answer', reply_to: 1 } });
  assert.equal(r.json.offset, 2);
  assertError(await call(s, 'POST', '/api/publish', { body: { room: 'r', text: 'x', reply_to: 3 } }),
    400, 'bad_request');
  const h = await call(s, 'GET', '/api/history?room=r');
  assert.deepEqual(h.json.messages.map((m) => m.reply_to), [undefined, 1]);
});

test('moderation endpoints answer {ok:true} (ban and mute with until); every call is logged and counted, never the key', async () => {
  // The memory store: the SQLite store's bans and topics are the store
  // engineer's, still to land.
  const s = await startApi(['--no-persist']);
  const a = await JClient.open(s, { nick: 'mallory' });
  await a.joinOk('lobby');
  const ok = async (p, body) => {
    const r = await call(s, 'POST', p, { body });
    assert.equal(r.status, 200, `${p}: ${r.raw.toString()}`);
    return r.json;
  };
  const t0 = Date.now();
  const ban = await ok('/api/ban', { room: 'lobby', user: 'u-1', duration: 60, reason: 'flood' });
  assert.equal(ban.ok, true);
  assert.ok(ban.until >= t0 + 60000 && ban.until <= Date.now() + 60000, JSON.stringify(ban));
  assert.deepEqual(await ok('/api/ban', { nick: 'someone' }), { ok: true }); // hub-wide, for good
  assert.deepEqual(await ok('/api/unban', { nick: 'someone' }), { ok: true });
  assert.equal((await ok('/api/mute', { room: 'lobby', nick: 'mallory', duration: 5 })).ok, true);
  assert.deepEqual(await ok('/api/unmute', { room: 'lobby', nick: 'mallory' }), { ok: true });
  assert.deepEqual(await ok('/api/topic', { room: 'lobby', topic: 'Be nice' }), { ok: true });
  assert.deepEqual(await ok('/api/kick', { room: 'lobby', nick: 'nobody-here' }), { ok: true });
  assert.deepEqual(await ok('/api/disconnect', { user: 'u-nobody', reason: 'bye' }), { ok: true });

  await call(s, 'POST', '/api/publish', { body: { room: 'lobby', text: 'x' } });
  await call(s, 'GET', '/api/rooms', { key: 'wrong-key-but-long-enough' });
  const m = await call(s, 'GET', '/metrics', { key: null });
  assert.equal(m.status, 200);
  const text = m.body.toString();
  assert.match(text, /^# TYPE chathub_api_requests_total counter$/m);
  assert.match(text, /^chathub_api_requests_total\{endpoint="publish",status="200"\} 1$/m);
  assert.match(text, /^chathub_api_requests_total\{endpoint="ban",status="200"\} 2$/m);
  assert.match(text, /^chathub_api_requests_total\{endpoint="other",status="401"\} 1$/m);
  const log = s.output();
  assert.match(log, /api 127\.0\.0\.1: POST \/api\/publish 200/);
  assert.match(log, /api 127\.0\.0\.1: GET \/api\/rooms 401/);
  assert.ok(!log.includes(KEY), 'the key never appears in the log');
});

test('moderation for real (memory store): kick, ban and unban, mute, topic, disconnect reach the member', async () => {
  const s = await startApi(['--no-persist']);
  const a = await JClient.open(s, { nick: 'mallory' });
  const b = await JClient.open(s, { nick: 'watcher' });
  await a.joinOk('lobby');
  await b.joinOk('lobby');
  const post = async (p, body) => {
    const r = await call(s, 'POST', p, { body });
    assert.equal(r.status, 200, `${p}: ${r.raw.toString()}`);
    return r.json;
  };
  // Kick: a kicked push by "api", the others see a leave, presence drops it.
  await post('/api/kick', { room: 'lobby', nick: 'mallory', reason: 'spam' });
  const k = await a.waitPush((m) => m.t === 'kicked');
  assert.deepEqual(k, { t: 'kicked', room: 'lobby', by: 'api', reason: 'spam' });
  await b.waitPush((m) => m.t === 'leave' && m.nick === 'mallory');
  const p = await call(s, 'GET', '/api/presence?room=lobby');
  assert.deepEqual(p.json.members.map((m) => m.nick), ['watcher']);
  // A kick is not a ban.
  await a.joinOk('lobby');
  // Ban for an hour: banned push, removed, a join is refused; unban lets back.
  const ban = await post('/api/ban', { room: 'lobby', nick: 'mallory', duration: 3600, reason: 'rude' });
  const bp = await a.waitPush((m) => m.t === 'banned');
  assert.equal(bp.room, 'lobby');
  assert.equal(bp.by, 'api');
  assert.equal(bp.reason, 'rude');
  assert.equal(bp.until, ban.until);
  const refused = await a.req('join', { room: 'lobby' });
  assert.equal(refused.ok, false, JSON.stringify(refused));
  assert.equal(refused.error.code, 'banned');
  await post('/api/unban', { room: 'lobby', nick: 'mallory' });
  await a.joinOk('lobby');
  // Mute: may stay and read, may not send; unmute lifts it.
  await post('/api/mute', { room: 'lobby', nick: 'mallory' });
  const muted = await a.req('send', { room: 'lobby', text: 'let me talk' });
  assert.equal(muted.ok, false, JSON.stringify(muted));
  assert.equal(muted.error.code, 'muted');
  await post('/api/unmute', { room: 'lobby', nick: 'mallory' });
  assert.equal((await a.req('send', { room: 'lobby', text: 'thanks' })).ok, true);
  // Topic: a push to the members, and in the next join reply.
  await post('/api/topic', { room: 'lobby', topic: 'Be nice' });
  assert.deepEqual(await b.waitPush((m) => m.t === 'topic'), { t: 'topic', room: 'lobby', topic: 'Be nice', by: 'api' });
  // Disconnect: every connection of the nick is closed.
  await post('/api/disconnect', { nick: 'mallory', reason: 'bye' });
  await a.waitClose();
  await b.waitPush((m) => m.t === 'leave' && m.nick === 'mallory');
});
