// Connection tokens (--auth-secret-file, docs/protocol.md "Signed users"):
// tokens are signed here with Node's crypto (HMAC-SHA-256 and our own
// base64url framing), independently of the hub's verifier.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test, assert, startServer, wsConnect, jsonOpen, runChathub } from './lib.mjs';

const SECRET = 'a-test-secret-that-is-long-enough-0123456789';
const b64u = (buf) => Buffer.from(buf).toString('base64url');

function sign(claims, { secret = SECRET, header = { alg: 'HS256', typ: 'JWT' } } = {}) {
  const head = b64u(JSON.stringify(header));
  const body = b64u(JSON.stringify(claims));
  const sig = crypto.createHmac('sha256', secret).update(`${head}.${body}`).digest();
  return `${head}.${body}.${b64u(sig)}`;
}
const now = () => Math.floor(Date.now() / 1000);
const token = (sub, extra = {}) => sign({ sub, exp: now() + 3600, ...extra });

function secretFile(content = SECRET) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chathub-auth-'));
  const f = path.join(dir, 'secret');
  fs.writeFileSync(f, `  ${content}\n`);
  return f;
}

const hub = (extra = []) => startServer(['--auth-secret-file', secretFile(), ...extra]);

const jsonClient = jsonOpen; // lib.mjs: welcome read, req() by id, push() kept

async function helloError(s, tok, code, re) {
  const c = await jsonClient(s);
  const r = await c.req({ op: 'hello', nick: 'x', ...(tok === undefined ? {} : { token: tok }) });
  assert.equal(r.ok, false, JSON.stringify(r));
  assert.equal(r.error.code, code, JSON.stringify(r));
  if (re) assert.match(r.error.message, re);
  assert.ok(!r.error.message.includes(SECRET), 'the secret never shows');
  return c;
}

test('--auth-secret-file: a short, missing or unreadable file exits 2 naming the path', async () => {
  const short = secretFile('too-short');
  let r = await runChathub(['--port', '0', '--auth-secret-file', short]);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /auth-secret-file/);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  const missing = path.join(os.tmpdir(), 'chathub-no-such-secret');
  r = await runChathub(['--port', '0', '--auth-secret-file', missing]);
  assert.equal(r.code, 2, r.stderr);
  assert.ok(r.stderr.includes(missing), r.stderr);
  r = await runChathub(['--port', '0', '--guests']);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /--guests needs --auth-secret-file/);
});

test('hello without a token: auth_required; bad tokens: bad_token with the reason', async () => {
  const s = await hub();
  await helloError(s, undefined, 'auth_required', /token/);
  await helloError(s, sign({ sub: 'a', exp: now() + 60 }, { header: { alg: 'none', typ: 'JWT' } }),
    'bad_token', /alg/);
  await helloError(s, token('a').replace(/\.[^.]*$/, '.'), 'bad_token');
  await helloError(s, sign({ sub: 'a', exp: now() + 60 }, { secret: 'another-secret-of-the-right-size-000000' }),
    'bad_token', /signature/);
  await helloError(s, sign({ sub: 'a', exp: now() - 120 }), 'bad_token', /expired/);
  await helloError(s, sign({ sub: 'a', exp: now() + 600, nbf: now() + 300 }), 'bad_token', /not yet valid/);
  await helloError(s, 'garbage', 'bad_token', /malformed/);
  await helloError(s, sign({ exp: now() + 60 }), 'bad_token', /sub/);
  await helloError(s, 42, 'bad_token');
  // 64 KiB: refused as too long, and the connection (or at least the hub) survives.
  const big = 'a'.repeat(64 * 1024);
  const c = await jsonClient(s);
  await c.send(JSON.stringify({ op: 'hello', id: 1, nick: 'x', token: big }));
  let ok = false;
  try {
    const m = JSON.parse(await c.nextText());
    assert.equal(m.error.code, 'bad_token');
    assert.match(m.error.message, /too long/);
    ok = true;
  } catch {
    await c.waitClose(); // closed cleanly by the message size limit
  }
  if (ok) {
    const r = await c.req({ op: 'hello', nick: 'x', token: token('after-big') });
    assert.equal(r.ok, true, JSON.stringify(r));
  }
  // The hub is still up and a good token works.
  const g = await jsonClient(s);
  const r = await g.req({ op: 'hello', nick: 'ignored', token: token('u1', { name: 'Alice', role: 'mod' }) });
  assert.equal(r.ok, true, JSON.stringify(r));
  assert.equal(r.nick, 'Alice');
  assert.deepEqual(r.user, { sub: 'u1', name: 'Alice', role: 'mod' });
  // A bad token logged nowhere: the log never has a token.
  assert.ok(!s.output().includes(big.slice(0, 100)) && !s.output().includes('eyJ'), 'no token in logs');
});

test('without --guests a raw upgrade needs ?token=: 401 without or with a bad one', async () => {
  const s = await hub();
  await assert.rejects(wsConnect(s.wsUrl('/ws/lobby')), /HTTP 401/);
  await assert.rejects(wsConnect(s.wsUrl('/ws/lobby?token=garbage')), /HTTP 401/);
  await assert.rejects(wsConnect(s.wsUrl(`/ws/lobby?token=${sign({ sub: 'r', exp: now() - 100 })}`)), /HTTP 401/);
  const r = await wsConnect(s.wsUrl(`/ws/lobby?x=1&token=${token('r1', { name: 'Raw' })}`));
  // A JSON member sees the raw user's lines under its signed name.
  const j = await jsonClient(s);
  assert.equal((await j.req({ op: 'hello', token: token('j1', { name: 'Jay' }) })).ok, true);
  assert.equal((await j.req({ op: 'join', room: 'lobby' })).ok, true);
  await r.send('hi from raw');
  const m = await j.push((x) => x.t === 'msg' && x.text === 'hi from raw');
  assert.equal(m.from, 'Raw');
  assert.ok(!s.output().includes('eyJ'), 'no token (nor the query) is ever logged');
});

test('--guests: guests beside signed users, marked with ~ and guest: true', async () => {
  const s = await hub(['--guests']);
  const g = await jsonClient(s);
  const r = await g.req({ op: 'hello', nick: 'bob' });
  assert.equal(r.ok, true, JSON.stringify(r));
  assert.equal(r.nick, '~bob');
  assert.equal(r.guest, true);
  // A guest cannot hold a signed user's name, and a signed bob is not nick_taken.
  const u = await jsonClient(s);
  const ru = await u.req({ op: 'hello', token: token('bob-id', { name: 'bob' }) });
  assert.equal(ru.ok, true, JSON.stringify(ru));
  assert.equal(ru.nick, 'bob');
  assert.equal(ru.guest, undefined);
  const rn = await g.req({ op: 'nick', nick: 'carol' });
  assert.equal(rn.nick, '~carol');
  // Raw without a token is a guest too.
  const raw = await wsConnect(s.wsUrl('/ws/lobby'));
  raw.close();
});

test('identity is sub: one nick for one user, nobody else takes it, no renames', async () => {
  const s = await hub();
  const a1 = await jsonClient(s);
  const a2 = await jsonClient(s);
  const r1 = await a1.req({ op: 'hello', token: token('alice-id', { name: 'alice' }) });
  const r2 = await a2.req({ op: 'hello', token: token('alice-id', { name: 'alice' }) });
  assert.equal(r1.ok, true, JSON.stringify(r1));
  assert.equal(r2.ok, true, JSON.stringify(r2));
  assert.equal(r2.nick, 'alice');
  const m = await jsonClient(s);
  const rm = await m.req({ op: 'hello', token: token('mallory-id', { name: 'Alice' }) });
  assert.equal(rm.ok, false);
  assert.equal(rm.error.code, 'nick_taken');
  const rn = await a1.req({ op: 'nick', nick: 'other' });
  assert.equal(rn.error.code, 'forbidden');
  // The claim stays while one connection of alice is left.
  a1.close();
  await a1.waitClose();
  const m2 = await jsonClient(s);
  const rm2 = await m2.req({ op: 'hello', token: token('mallory-id', { name: 'alice' }) });
  assert.equal(rm2.error.code, 'nick_taken');
  a2.close();
  await a2.waitClose();
  // Once alice is gone altogether, the name is free again (retrying the hello).
  let ok = false;
  for (let i = 0; i < 50 && !ok; i++) {
    const rr = await m2.req({ op: 'hello', token: token('mallory-id', { name: 'alice' }) });
    ok = rr.ok === true;
    if (!ok) await new Promise((res) => setTimeout(res, 50));
  }
  assert.equal(ok, true, 'the name is released with the last connection');
});

test('rooms claim: join forbidden, raw upgrade 403', async () => {
  const s = await hub();
  const c = await jsonClient(s);
  const tok = token('r-id', { name: 'roomy', rooms: ['lobby', 'team-*'] });
  assert.equal((await c.req({ op: 'hello', token: tok })).ok, true);
  assert.equal((await c.req({ op: 'join', room: 'lobby' })).ok, true);
  assert.equal((await c.req({ op: 'join', room: 'team-red' })).ok, true);
  const r = await c.req({ op: 'join', room: 'secret' });
  assert.equal(r.error.code, 'forbidden');
  // hello resume of a forbidden room is refused in its entry.
  const c2 = await jsonClient(s);
  const h = await c2.req({ op: 'hello', token: tok, resume: { secret: null } });
  assert.equal(h.ok, true, JSON.stringify(h));
  assert.equal(h.rooms.secret.error.code, 'forbidden', JSON.stringify(h.rooms));
  await assert.rejects(wsConnect(s.wsUrl(`/ws/secret?token=${tok}`)), /HTTP 403/);
  const ok = await wsConnect(s.wsUrl(`/ws/team-blue?token=${tok}`));
  ok.close();
});

test('DM rooms are named by sub: a later holder of the name never sees them', async () => {
  const s = await hub();
  const a = await jsonClient(s);
  const b = await jsonClient(s);
  assert.equal((await a.req({ op: 'hello', token: token('id-a', { name: 'ann' }) })).ok, true);
  assert.equal((await b.req({ op: 'hello', token: token('id-b', { name: 'ben' }) })).ok, true);
  const r = await a.req({ op: 'dm', to: 'ben', text: 'secret words' });
  assert.equal(r.ok, true, JSON.stringify(r));
  const push = await b.push((m) => m.t === 'dm');
  assert.equal(push.room, '@u:id-a,u:id-b');
  b.close();
  await b.waitClose();
  // Another user now called ben cannot read or join the room.
  const e = await jsonClient(s);
  let he;
  for (let i = 0; i < 50; i++) {
    he = await e.req({ op: 'hello', token: token('id-eve', { name: 'ben' }) });
    if (he.ok) break;
    await new Promise((res) => setTimeout(res, 50));
  }
  assert.equal(he.ok, true, JSON.stringify(he));
  const hr = await e.req({ op: 'history', room: '@u:id-a,u:id-b' });
  assert.equal(hr.error.code, 'bad_room', JSON.stringify(hr));
  const jr = await e.req({ op: 'join', room: '@ann,ben' });
  assert.equal(jr.error.code, 'bad_room', JSON.stringify(jr));
  // The real ben, back, reads it.
  const b2 = await jsonClient(s);
  const hb = await b2.req({ op: 'hello', token: token('id-b', { name: 'benjamin' }) });
  assert.equal(hb.ok, true, JSON.stringify(hb));
  const h2 = await b2.req({ op: 'history', room: '@u:id-a,u:id-b' });
  assert.equal(h2.ok, true, JSON.stringify(h2));
  assert.equal(h2.messages.at(-1).text, 'secret words');
});

test('expiry: the connection closes with 4401 at exp', async () => {
  const s = await hub();
  const c = await jsonClient(s);
  const r = await c.req({ op: 'hello', token: sign({ sub: 'short', exp: now() + 2 }) });
  assert.equal(r.ok, true, JSON.stringify(r));
  const info = await c.waitClose(8000);
  assert.equal(info.code, 4401);
  assert.equal(info.reason, 'token expired');
  const raw = await wsConnect(s.wsUrl(`/ws/lobby?token=${sign({ sub: 'short-raw', exp: now() + 2 })}`));
  const ri = await raw.waitClose(8000);
  assert.equal(ri.code, 4401);
});
