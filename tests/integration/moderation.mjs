// Moderation (issue 13 part 2, docs/protocol.md "Moderation"): tokens with
// role mod/admin kick, ban, mute, set topics and delete anyone's message;
// everyone else is forbidden. Tokens are signed here with Node's crypto.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test, assert, startServer, wsConnect, jsonOpen, httpRequest, buildRequest } from './lib.mjs';

const SECRET = 'a-test-secret-that-is-long-enough-0123456789';
const b64u = (buf) => Buffer.from(buf).toString('base64url');
function sign(claims) {
  const head = b64u(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64u(JSON.stringify(claims));
  const sig = crypto.createHmac('sha256', SECRET).update(`${head}.${body}`).digest();
  return `${head}.${body}.${b64u(sig)}`;
}
const token = (sub, extra = {}) => sign({ sub, exp: Math.floor(Date.now() / 1000) + 3600, ...extra });

function secretFile() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chathub-mod-'));
  const f = path.join(dir, 'secret');
  fs.writeFileSync(f, SECRET);
  return f;
}
const secret = secretFile();
const hub = (extra = []) => startServer(['--auth-secret-file', secret, '--guests', ...extra]);

async function jsonClient(s, sub, extra = {}) {
  const c = await jsonOpen(s);
  const h = await c.req(sub === null ? { op: 'hello', nick: extra.nick || 'guest' }
    : { op: 'hello', nick: 'x', token: token(sub, extra) });
  assert.equal(h.ok, true, JSON.stringify(h));
  c.nick = h.nick;
  return c;
}

const err = (r, code, re) => {
  assert.equal(r.ok, false, JSON.stringify(r));
  assert.equal(r.error.code, code, JSON.stringify(r));
  if (re) assert.match(r.error.message, re, JSON.stringify(r));
};

async function metric(s, name) {
  const r = await httpRequest(s.port, buildRequest('GET', '/metrics'));
  const line = r.body.toString().split('\n').find((l) => l.startsWith(name + ' '));
  return line === undefined ? undefined : Number(line.split(' ')[1]);
}

async function trio(args = ['--no-persist']) {
  const s = await hub(args);
  const mod = await jsonClient(s, 'm1', { name: 'Mia', role: 'mod' });
  const u = await jsonClient(s, 'u1', { name: 'Ann' });
  const v = await jsonClient(s, 'u2', { name: 'Vic' });
  for (const c of [mod, u, v]) assert.equal((await c.req({ op: 'join', room: 'lobby' })).ok, true);
  return { s, mod, u, v };
}

test('a user (and a guest) calling kick, ban, mute, topic or deleting another\'s message: forbidden', async () => {
  const { s, u, v } = await trio();
  const g = await jsonClient(s, null, { nick: 'gus' });
  await g.req({ op: 'join', room: 'lobby' });
  for (const c of [u, g]) {
    err(await c.req({ op: 'kick', room: 'lobby', nick: 'Vic' }), 'forbidden');
    err(await c.req({ op: 'ban', room: 'lobby', nick: 'Vic' }), 'forbidden');
    err(await c.req({ op: 'mute', room: 'lobby', nick: 'Vic' }), 'forbidden');
    err(await c.req({ op: 'topic', room: 'lobby', topic: 'mine' }), 'forbidden');
  }
  const m = await v.req({ op: 'send', room: 'lobby', text: 'vic was here' });
  err(await u.req({ op: 'delete', room: 'lobby', offset: m.offset }), 'forbidden');
});

test('a mod deletes anyone\'s message: deleted push, tombstone in history, counted', async () => {
  const { s, mod, u } = await trio();
  const m = await u.req({ op: 'send', room: 'lobby', text: 'spam spam' });
  assert.equal((await mod.req({ op: 'delete', room: 'lobby', offset: m.offset })).ok, true);
  assert.deepEqual(await u.push((x) => x.t === 'deleted'), { t: 'deleted', room: 'lobby', offset: m.offset });
  const h = await u.req({ op: 'history', room: 'lobby' });
  assert.equal(h.messages[0].deleted, true);
  assert.equal(h.messages[0].text, undefined);
  assert.equal(await metric(s, 'chathub_moderation_total{action="delete"}'), 1);
  // Editing someone else's message stays the author's right, even for a mod.
  const m2 = await u.req({ op: 'send', room: 'lobby', text: 'keep' });
  err(await mod.req({ op: 'edit', room: 'lobby', offset: m2.offset, text: 'changed' }), 'forbidden');
});

test('kick: kicked push, the others see a leave; no_such_nick for an absent nick', async () => {
  const { s, mod, u, v } = await trio();
  const r = await mod.req({ op: 'kick', room: 'lobby', nick: 'Ann', reason: 'spam' });
  assert.equal(r.ok, true, JSON.stringify(r));
  assert.deepEqual(await u.push((x) => x.t === 'kicked'), { t: 'kicked', room: 'lobby', by: 'Mia', reason: 'spam' });
  const leave = await v.push((x) => x.t === 'leave' && x.nick === 'Ann');
  assert.equal(leave.room, 'lobby');
  err(await u.req({ op: 'send', room: 'lobby', text: 'still here?' }), 'not_joined');
  // A kick is not a ban: Ann may come back.
  assert.equal((await u.req({ op: 'join', room: 'lobby' })).ok, true);
  err(await mod.req({ op: 'kick', room: 'lobby', nick: 'nobody' }), 'no_such_nick');
  assert.equal(await metric(s, 'chathub_moderation_total{action="kick"}'), 1);
});

test('ban: banned push, removed, join refused with banned; unban lets back; hub bans need admin', async () => {
  const { s, mod, u } = await trio();
  const r = await mod.req({ op: 'ban', room: 'lobby', nick: 'Ann', duration: 3600, reason: 'rude' });
  assert.equal(r.ok, true, JSON.stringify(r));
  const p = await u.push((x) => x.t === 'banned');
  assert.equal(p.room, 'lobby');
  assert.equal(p.by, 'Mia');
  assert.equal(p.reason, 'rude');
  assert.ok(p.until > Date.now() + 3500 * 1000, JSON.stringify(p));
  err(await u.req({ op: 'join', room: 'lobby' }), 'banned', /banned from lobby until \d{4}-\d\d-\d\dT/);
  // In raw mode (?token=) the banned user is let in, then closed with 4003.
  const raw = await wsConnect(s.wsUrl(`/ws/lobby?token=${token('u1', { name: 'Ann' })}`));
  const closed = await raw.waitClose();
  assert.deepEqual(closed, { code: 4003, reason: 'banned' });
  const rawOther = await wsConnect(s.wsUrl(`/ws/other?token=${token('u1', { name: 'Ann' })}`));
  await rawOther.send('fine here');
  assert.equal((await rawOther.nextText()), 'fine here');
  // Another connection of the same user is banned too.
  const u2 = await jsonClient(s, 'u1', { name: 'Ann' });
  err(await u2.req({ op: 'join', room: 'lobby' }), 'banned');
  assert.equal((await u2.req({ op: 'join', room: 'other' })).ok, true);
  assert.equal((await mod.req({ op: 'unban', room: 'lobby', nick: 'Ann' })).ok, true);
  assert.equal((await u.req({ op: 'join', room: 'lobby' })).ok, true);
  err(await mod.req({ op: 'ban', hub: true, nick: 'Ann' }), 'forbidden', /admin/);
  const admin = await jsonClient(s, 'a1', { name: 'Ada', role: 'admin' });
  assert.equal((await admin.req({ op: 'ban', hub: true, nick: 'Ann' })).ok, true);
  const hp = await u.push((x) => x.t === 'banned' && x.room === null);
  assert.equal(hp.until, null);
  err(await u.req({ op: 'join', room: 'anywhere' }), 'banned', /for good/);
  assert.equal(await metric(s, 'chathub_moderation_total{action="ban"}'), 2);
});

test('mute: muted push, sends refused with muted, joins allowed; unmute', async () => {
  const { mod, u, v } = await trio();
  assert.equal((await mod.req({ op: 'mute', room: 'lobby', nick: 'Ann', duration: 60 })).ok, true);
  const p = await u.push((x) => x.t === 'muted');
  assert.equal(p.room, 'lobby');
  err(await u.req({ op: 'send', room: 'lobby', text: 'can I?' }), 'muted');
  assert.equal((await v.req({ op: 'send', room: 'lobby', text: 'I can' })).ok, true);
  assert.equal((await mod.req({ op: 'unmute', room: 'lobby', nick: 'Ann' })).ok, true);
  await u.push((x) => x.t === 'unmuted');
  assert.equal((await u.req({ op: 'send', room: 'lobby', text: 'thanks' })).ok, true);
});

test('a guest is muted by its nick (its claim key), and kicked and banned when named without its ~', async () => {
  const { s, mod } = await trio();
  const g = await jsonClient(s, null, { nick: 'gus' });
  await g.req({ op: 'join', room: 'lobby' });
  assert.equal((await mod.req({ op: 'mute', room: 'lobby', nick: '~gus' })).ok, true);
  err(await g.req({ op: 'send', room: 'lobby', text: 'hello' }), 'muted');
  // Named without its "~", a guest is found all the same: kicked, then banned.
  assert.equal((await mod.req({ op: 'kick', room: 'lobby', nick: 'gus' })).ok, true);
  await g.push((x) => x.t === 'kicked');
  assert.equal((await g.req({ op: 'join', room: 'lobby' })).ok, true);
  assert.equal((await mod.req({ op: 'ban', room: 'lobby', nick: 'gus' })).ok, true);
  await g.push((x) => x.t === 'banned');
  err(await g.req({ op: 'join', room: 'lobby' }), 'banned');
});

test('topic: topic push to members, in the join reply, cleared by an empty topic', async () => {
  const { s, mod, u } = await trio();
  assert.equal((await mod.req({ op: 'topic', room: 'lobby', topic: 'Release day' })).ok, true);
  assert.deepEqual(await u.push((x) => x.t === 'topic'), { t: 'topic', room: 'lobby', topic: 'Release day', by: 'Mia' });
  const late = await jsonClient(s, 'u3', { name: 'Lea' });
  assert.equal((await late.req({ op: 'join', room: 'lobby' })).topic, 'Release day');
  err(await mod.req({ op: 'topic', room: 'lobby', topic: 'x'.repeat(513) }), 'bad_request');
  assert.equal((await mod.req({ op: 'topic', room: 'lobby', topic: '' })).ok, true);
  await late.req({ op: 'leave', room: 'lobby' });
  assert.equal((await late.req({ op: 'join', room: 'lobby' })).topic, undefined);
});

test('a ban, a topic and a mod\'s delete survive a restart with --data-dir', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chathub-mod-data-'));
  let { s, mod, u } = await trio(['--data-dir', dir]);
  const m = await u.req({ op: 'send', room: 'lobby', text: 'bad words' });
  assert.equal((await mod.req({ op: 'delete', room: 'lobby', offset: m.offset })).ok, true);
  assert.equal((await mod.req({ op: 'topic', room: 'lobby', topic: 'Be nice' })).ok, true);
  assert.equal((await mod.req({ op: 'ban', room: 'lobby', nick: 'Ann' })).ok, true);
  await s.stop();
  s = await hub(['--data-dir', dir]);
  u = await jsonClient(s, 'u1', { name: 'Ann' });
  err(await u.req({ op: 'join', room: 'lobby' }), 'banned', /for good/);
  const v = await jsonClient(s, 'u2', { name: 'Vic' });
  const j = await v.req({ op: 'join', room: 'lobby' });
  assert.equal(j.topic, 'Be nice');
  const t = j.messages.find((x) => x.offset === m.offset);
  assert.equal(t.deleted, true);
  assert.equal(t.text, undefined);
});
