// Message operations after sending (issue 15, docs/protocol.md "Replies,
// mentions, edits, deletes, reactions, search"): reply_to, mentions, edit,
// delete, react/unreact and search against the real binary, with their
// error cases, and the new fields in join, history and resume pages.
import { test, assert, startServer, wsConnect, jsonOpen } from './lib.mjs';

// A JSON client (lib.mjs jsonOpen) that says hello as nick, if given.
async function jsonClient(s, nick) {
  const c = await jsonOpen(s);
  if (nick) {
    const h = await c.req({ op: 'hello', nick });
    assert.equal(h.ok, true, JSON.stringify(h));
  }
  return c;
}

const err = (r, code, re) => {
  assert.equal(r.ok, false, JSON.stringify(r));
  assert.equal(r.error.code, code, JSON.stringify(r));
  if (re) assert.match(r.error.message, re, JSON.stringify(r));
};

async function pair(args = ['--no-persist']) {
  const s = await startServer(args);
  const a = await jsonClient(s, 'alice');
  const b = await jsonClient(s, 'bob');
  assert.equal((await a.req({ op: 'join', room: 'lobby' })).ok, true);
  assert.equal((await b.req({ op: 'join', room: 'lobby' })).ok, true);
  return { s, a, b };
}

test('send: reply_to and mentions on the push and in history; a bad reply_to is bad_request', async () => {
  const { a, b } = await pair();
  const m1 = await a.req({ op: 'send', room: 'lobby', text: 'first' });
  assert.equal(m1.ok, true, JSON.stringify(m1));
  const m2 = await b.req({ op: 'send', room: 'lobby', text: 'hi @alice and @nobody, @Alice', reply_to: m1.offset });
  assert.equal(m2.ok, true, JSON.stringify(m2));
  const p = await a.push((m) => m.t === 'msg' && m.offset === m2.offset);
  assert.equal(p.reply_to, m1.offset);
  assert.deepEqual(p.mentions, ['alice']); // once, as shown; unknown nicks are not mentions
  const h = await a.req({ op: 'history', room: 'lobby' });
  const stored = h.messages.find((m) => m.offset === m2.offset);
  assert.equal(stored.reply_to, m1.offset);
  assert.deepEqual(stored.mentions, ['alice']);
  assert.equal(h.messages.find((m) => m.offset === m1.offset).reply_to, undefined);
  err(await a.req({ op: 'send', room: 'lobby', text: 'x', reply_to: 999 }), 'bad_request', /reply_to/);
  err(await a.req({ op: 'send', room: 'lobby', text: 'x', reply_to: 'one' }), 'bad_request', /reply_to/);
});

test('edit: the author edits (edited push to all, edited_ts in history); others are forbidden; errors', async () => {
  const { a, b } = await pair();
  const m = await a.req({ op: 'send', room: 'lobby', text: 'tpyo' });
  const r = await a.req({ op: 'edit', room: 'lobby', offset: m.offset, text: 'typo' });
  assert.equal(r.ok, true, JSON.stringify(r));
  assert.equal(typeof r.edited_ts, 'number');
  for (const c of [a, b]) {
    const p = await c.push((x) => x.t === 'edited');
    assert.deepEqual(p, { t: 'edited', room: 'lobby', offset: m.offset, text: 'typo', edited_ts: r.edited_ts });
  }
  const h = await b.req({ op: 'history', room: 'lobby' });
  assert.equal(h.messages[0].text, 'typo');
  assert.equal(h.messages[0].edited_ts, r.edited_ts);
  err(await b.req({ op: 'edit', room: 'lobby', offset: m.offset, text: 'mine now' }), 'forbidden', /own messages/);
  err(await a.req({ op: 'edit', room: 'lobby', offset: 99, text: 'x' }), 'no_such_message');
  err(await a.req({ op: 'edit', room: 'lobby', offset: m.offset, text: '' }), 'bad_text');
  err(await a.req({ op: 'edit', room: 'lobby', offset: m.offset, text: 'x'.repeat(4001) }), 'too_long');
  err(await a.req({ op: 'edit', room: 'elsewhere', offset: m.offset, text: 'x' }), 'not_joined');
  err(await a.req({ op: 'edit', room: 'lobby', text: 'x' }), 'bad_request', /offset/);
});

test('delete: a tombstone in pushes and history; deleted messages cannot be edited or reacted to', async () => {
  const { a, b } = await pair();
  const m = await a.req({ op: 'send', room: 'lobby', text: 'oops' });
  err(await b.req({ op: 'delete', room: 'lobby', offset: m.offset }), 'forbidden');
  assert.equal((await a.req({ op: 'delete', room: 'lobby', offset: m.offset })).ok, true);
  const p = await b.push((x) => x.t === 'deleted');
  assert.deepEqual(p, { t: 'deleted', room: 'lobby', offset: m.offset });
  const h = await b.req({ op: 'history', room: 'lobby' });
  assert.equal(h.messages[0].deleted, true);
  assert.equal(h.messages[0].text, undefined);
  assert.equal(h.messages[0].from, 'alice');
  err(await a.req({ op: 'edit', room: 'lobby', offset: m.offset, text: 'back' }), 'no_such_message');
  err(await a.req({ op: 'react', room: 'lobby', offset: m.offset, emoji: '👍' }), 'no_such_message');
});

test('react/unreact: counts, reaction pushes with nick, mine per viewer, emoji limits', async () => {
  const { a, b } = await pair();
  const m = await a.req({ op: 'send', room: 'lobby', text: 'ship it' });
  let r = await a.req({ op: 'react', room: 'lobby', offset: m.offset, emoji: '👍' });
  assert.deepEqual(r, { id: r.id, ok: true, count: 1 });
  r = await b.req({ op: 'react', room: 'lobby', offset: m.offset, emoji: '👍' });
  assert.equal(r.count, 2);
  const p = await a.push((x) => x.t === 'reaction' && x.nick === 'bob');
  assert.deepEqual(p, { t: 'reaction', room: 'lobby', offset: m.offset, emoji: '👍', nick: 'bob', count: 2, on: true });
  assert.equal((await b.req({ op: 'react', room: 'lobby', offset: m.offset, emoji: '🎉' })).count, 1);
  let h = await a.req({ op: 'history', room: 'lobby' });
  assert.deepEqual(h.messages[0].reactions, { '👍': 2, '🎉': 1 });
  assert.deepEqual(h.messages[0].mine, ['👍']);
  h = await b.req({ op: 'history', room: 'lobby' });
  assert.deepEqual(h.messages[0].mine, ['👍', '🎉']);
  r = await b.req({ op: 'unreact', room: 'lobby', offset: m.offset, emoji: '🎉' });
  assert.equal(r.count, 0);
  const off = await a.push((x) => x.t === 'reaction' && x.on === false);
  assert.equal(off.emoji, '🎉');
  h = await a.req({ op: 'history', room: 'lobby' });
  assert.deepEqual(h.messages[0].reactions, { '👍': 2 });
  err(await a.req({ op: 'react', room: 'lobby', offset: 999, emoji: '👍' }), 'no_such_message');
  err(await a.req({ op: 'react', room: 'lobby', offset: m.offset, emoji: 'x'.repeat(33) }), 'bad_request', /emoji/);
  err(await a.req({ op: 'react', room: 'lobby', offset: m.offset, emoji: 'abcdefghi' }), 'bad_request', /8 characters/);
  err(await a.req({ op: 'react', room: 'lobby', offset: m.offset, emoji: 'a b' }), 'bad_request', /spaces/);
  err(await a.req({ op: 'react', room: 'lobby', offset: m.offset, emoji: '' }), 'bad_request');
  // 20 distinct emoji per message; the 21st is refused.
  for (let i = 0; i < 19; i++) {
    const e = String.fromCodePoint(0x1f600 + i);
    assert.equal((await a.req({ op: 'react', room: 'lobby', offset: m.offset, emoji: e })).ok, true);
  }
  err(await a.req({ op: 'react', room: 'lobby', offset: m.offset, emoji: '🚀' }), 'too_many_reactions');
});

test('search: newest first, limits, raw lines, not_joined, bad_room for a DM of others, bad q', async () => {
  const { s, a, b } = await pair();
  for (const t of ['release notes draft', 'lunch?', 'the release is out', 'notes on release'])
    await a.req({ op: 'send', room: 'lobby', text: t });
  const r = await b.req({ op: 'search', room: 'lobby', q: 'release notes' });
  assert.equal(r.ok, true, JSON.stringify(r));
  assert.equal(r.room, 'lobby');
  assert.deepEqual(r.results.map((m) => m.text), ['notes on release', 'release notes draft']);
  assert.equal(r.complete, true);
  const one = await b.req({ op: 'search', room: 'lobby', q: 'release', limit: 1 });
  assert.equal(one.results.length, 1);
  assert.equal(one.complete, false);
  const older = await b.req({ op: 'search', room: 'lobby', q: 'release', before: one.results[0].offset });
  assert.deepEqual(older.results.map((m) => m.text), ['the release is out', 'release notes draft']);
  // Raw lines are searchable too (and nobody's: even their sender cannot edit them).
  const raw = await wsConnect(s.wsUrl('/ws/lobby'));
  await raw.send('raw release line');
  assert.equal(await raw.nextText(), 'raw release line');
  const rp = await b.push((x) => x.t === 'msg' && x.text === 'raw release line');
  const found = await b.req({ op: 'search', room: 'lobby', q: 'raw release' });
  assert.deepEqual(found.results.map((m) => m.offset), [rp.offset]);
  err(await b.req({ op: 'edit', room: 'lobby', offset: rp.offset, text: 'mine' }), 'forbidden');
  err(await b.req({ op: 'search', room: 'other', q: 'x' }), 'not_joined');
  err(await b.req({ op: 'search', room: '@alice,carol', q: 'x' }), 'bad_room');
  err(await b.req({ op: 'search', room: 'lobby', q: '' }), 'bad_request');
  err(await b.req({ op: 'search', room: 'lobby', q: 'x'.repeat(201) }), 'bad_request');
  err(await b.req({ op: 'search', room: 'lobby', q: 'x', limit: 51 }), 'bad_request');
});

test('join and resume pages carry edits, deletes and reactions', async () => {
  const { s, a } = await pair();
  const m1 = await a.req({ op: 'send', room: 'lobby', text: 'one' });
  const join = await a.req({ op: 'leave', room: 'lobby' });
  assert.equal(join.ok, true);
  const c = await jsonClient(s, 'carol');
  const j = await c.req({ op: 'join', room: 'lobby' });
  const pos = { epoch: j.epoch, offset: j.offset };
  await c.req({ op: 'send', room: 'lobby', text: 'two' });
  const m3 = await c.req({ op: 'send', room: 'lobby', text: 'three' });
  await c.req({ op: 'edit', room: 'lobby', offset: m3.offset, text: 'three!' });
  await c.req({ op: 'react', room: 'lobby', offset: m3.offset, emoji: '👍' });
  await c.req({ op: 'delete', room: 'lobby', offset: m3.offset - 1 });
  // A fresh connection resumes from pos in hello: the page shows the state now.
  const d = await jsonClient(s);
  const h = await d.req({ op: 'hello', nick: 'dave', resume: { lobby: pos } });
  assert.equal(h.ok, true, JSON.stringify(h));
  const msgs = h.rooms.lobby.messages;
  assert.deepEqual(msgs.map((m) => m.offset), [m3.offset - 1, m3.offset]);
  assert.equal(msgs[0].deleted, true);
  assert.equal(msgs[0].text, undefined);
  assert.equal(msgs[1].text, 'three!');
  assert.equal(typeof msgs[1].edited_ts, 'number');
  assert.deepEqual(msgs[1].reactions, { '👍': 1 });
  assert.equal(msgs[1].mine, undefined); // dave did not react
  // A join page too, with carol's own reaction marked.
  await c.req({ op: 'leave', room: 'lobby' });
  const again = await c.req({ op: 'join', room: 'lobby' });
  const last = again.messages[again.messages.length - 1];
  assert.deepEqual(last.mine, ['👍']);
  assert.equal(again.messages[0].offset, m1.offset);
});

test('a guest edits only from the connection that sent (a reconnect is someone else)', async () => {
  const { s, a } = await pair();
  const m = await a.req({ op: 'send', room: 'lobby', text: 'mine' });
  a.close();
  const a2 = await jsonClient(s, 'alice2');
  await a2.req({ op: 'join', room: 'lobby' });
  err(await a2.req({ op: 'edit', room: 'lobby', offset: m.offset, text: 'x' }), 'forbidden');
});

test('edits and reactions over the SQLite store, and after a restart', async () => {
  const fs = await import('node:fs');
  const os = await import('node:os');
  const path = await import('node:path');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chathub-msgops-'));
  let s = await startServer(['--data-dir', dir]);
  let a = await jsonClient(s, 'alice');
  await a.req({ op: 'join', room: 'lobby' });
  const m = await a.req({ op: 'send', room: 'lobby', text: 'persist me' });
  assert.equal((await a.req({ op: 'edit', room: 'lobby', offset: m.offset, text: 'persisted' })).ok, true);
  assert.equal((await a.req({ op: 'react', room: 'lobby', offset: m.offset, emoji: '✅' })).ok, true);
  const m2 = await a.req({ op: 'send', room: 'lobby', text: 'gone soon' });
  assert.equal((await a.req({ op: 'delete', room: 'lobby', offset: m2.offset })).ok, true);
  await s.stop();
  s = await startServer(['--data-dir', dir]);
  a = await jsonClient(s, 'alice');
  const j = await a.req({ op: 'join', room: 'lobby' });
  const byOff = Object.fromEntries(j.messages.map((x) => [x.offset, x]));
  assert.equal(byOff[m.offset].text, 'persisted');
  assert.deepEqual(byOff[m.offset].reactions, { '✅': 1 });
  assert.equal(byOff[m2.offset].deleted, true);
  assert.equal(byOff[m2.offset].text, undefined);
  const r = await a.req({ op: 'search', room: 'lobby', q: 'persisted' });
  assert.deepEqual(r.results.map((x) => x.offset), [m.offset]);
});
