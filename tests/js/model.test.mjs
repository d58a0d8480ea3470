// The page's room model (public/model.js) under Node: scripted server frames
// (msg pushes, join/history replies, gap pushes, amendments) and the
// promises of app.js's header: each message exactly once by offset, resume
// across holes, epoch changes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  newRoom, merge, sorted, advance, applyGap, holeRequest, fillDone, checkEpoch,
  applyEdited, applyDeleted, applyReaction, mentions,
} from '../../public/model.js';

const msg = (offset, text = `m${offset}`, extra = {}) => ({ offset, ts: 1000 + offset, from: 'bob', text, ...extra });
const offsets = (r) => sorted(r).map((m) => m.offset);

test('a message that arrives as a push and again in a history page is held once', () => {
  const r = newRoom('lobby');
  r.epoch = 'e1';
  const a = merge(r, [msg(1), msg(2)]);
  assert.equal(a.added.length, 2);
  const b = merge(r, [msg(2), msg(3)]); // the push of 2 again, in a resume page
  assert.deepEqual(b.added.map((m) => m.offset), [3]);
  const c = merge(r, [msg(1), msg(2), msg(3)]);
  assert.equal(c.added.length, 0);
  assert.deepEqual(offsets(r), [1, 2, 3]);
  assert.equal(r.last, 3);
});

test('bad entries are ignored, not held', () => {
  const r = newRoom('lobby');
  const got = merge(r, [null, { offset: 0 }, { offset: -1 }, { offset: 1.5 }, { offset: '2' }, msg(1)]);
  assert.deepEqual(got.added.map((m) => m.offset), [1]);
});

test('a push that skips offsets leaves a hole that history fills, newest page first', () => {
  const r = newRoom('lobby');
  r.epoch = 'e1';
  merge(r, [msg(1), msg(2)]);
  merge(r, [msg(250)]); // pushes 3..249 were missed
  assert.equal(r.last, 2);
  assert.equal(r.head, 250);
  const req1 = holeRequest(r, 100);
  assert.deepEqual(req1, { room: 'lobby', before: 250, limit: 100 });
  // The hub answers with 150..249.
  const page1 = Array.from({ length: 100 }, (_, i) => msg(150 + i));
  merge(r, page1);
  assert.equal(fillDone(r, req1, { messages: page1, complete: false }), false);
  assert.equal(r.last, 2, 'still a hole below 150');
  const req2 = holeRequest(r, 100);
  assert.deepEqual(req2, { room: 'lobby', before: 150, limit: 100 });
  const page2 = Array.from({ length: 100 }, (_, i) => msg(50 + i));
  merge(r, page2);
  const req3 = holeRequest(r, 100);
  assert.deepEqual(req3, { room: 'lobby', before: 50, limit: 47 });
  const page3 = Array.from({ length: 47 }, (_, i) => msg(3 + i));
  merge(r, page3);
  assert.equal(r.last, 250);
  assert.equal(holeRequest(r, 100), null, 'nothing is missing');
  assert.deepEqual(offsets(r), Array.from({ length: 250 }, (_, i) => i + 1), 'every offset once, in order');
});

test('a hole the hub no longer keeps becomes a gap, and resume goes past it', () => {
  const r = newRoom('lobby');
  r.epoch = 'e1';
  merge(r, [msg(1), msg(10)]);
  const req = holeRequest(r, 100);
  assert.deepEqual(req, { room: 'lobby', before: 10, limit: 8 });
  // Only 7..9 are still kept: the page is complete.
  const page = [msg(7), msg(8), msg(9)];
  merge(r, page);
  assert.equal(fillDone(r, req, { messages: page, complete: true }), true);
  assert.deepEqual(r.gaps, [[2, 6]]);
  assert.equal(r.last, 10);
  assert.equal(holeRequest(r, 100), null);
});

test('a gap push moves last over offsets that cannot be delivered', () => {
  const r = newRoom('lobby');
  r.epoch = 'e1';
  merge(r, [msg(1)]);
  applyGap(r, { t: 'gap', room: 'lobby', epoch: 'e1', from: 2, to: 5 });
  assert.equal(r.last, 5);
  merge(r, [msg(6)]);
  assert.equal(r.last, 6);
});

test('a new epoch archives what was held and restarts the offsets', () => {
  const r = newRoom('lobby');
  r.epoch = 'e1';
  merge(r, [msg(1), msg(2), msg(3)]);
  assert.equal(checkEpoch(r, 'e1'), false);
  assert.equal(checkEpoch(r, 'e2'), true);
  assert.equal(r.epoch, 'e2');
  assert.equal(r.msgs.size, 0);
  assert.equal(r.last, 0);
  assert.deepEqual(r.archive.filter((m) => !m.sys).map((m) => m.text), ['m1', 'm2', 'm3']);
  assert.equal(r.archive.filter((m) => m.sys).length, 1, 'one note');
  // Offset 1 of the new epoch is a new message, not the old one.
  const got = merge(r, [msg(1, 'fresh')]);
  assert.equal(got.added.length, 1);
  assert.equal(r.msgs.get(1).text, 'fresh');
  // An epoch gap push does the same.
  applyGap(r, { t: 'gap', room: 'lobby', epoch: 'e3', reason: 'epoch', from: 1, to: 4 });
  assert.equal(r.epoch, 'e3');
  assert.equal(r.last, 4);
  assert.equal(r.archive.filter((m) => m.sys).length, 2);
});

test('edits, deletes and reactions change a held message once', () => {
  const r = newRoom('lobby');
  r.epoch = 'e1';
  merge(r, [msg(1, 'hello'), msg(2, 'bye', { reactions: { '👍': 2 }, mine: ['👍'] })]);
  assert.ok(applyEdited(r, { offset: 1, text: 'hello!', edited_ts: 50 }));
  assert.equal(applyEdited(r, { offset: 1, text: 'hello!', edited_ts: 50 }), null, 'the same edit twice');
  assert.equal(applyEdited(r, { offset: 1, text: 'older', edited_ts: 40 }), null, 'a late older edit');
  assert.equal(r.msgs.get(1).text, 'hello!');
  assert.equal(r.msgs.get(1).editedTs, 50);
  assert.equal(applyEdited(r, { offset: 99, text: 'x', edited_ts: 1 }), null, 'unknown offset');
  // A history page that carries the edit changes nothing more.
  assert.equal(merge(r, [msg(1, 'hello!', { edited_ts: 50 })]).changed.length, 0);
  // But a page with a newer edit or a tombstone does.
  assert.equal(merge(r, [msg(1, 'hello!!', { edited_ts: 60 })]).changed.length, 1);
  assert.equal(r.msgs.get(1).text, 'hello!!');

  const m2 = r.msgs.get(2);
  assert.deepEqual([...m2.reactions], [['👍', 2]]);
  assert.ok(m2.mine.has('👍'));
  applyReaction(r, { offset: 2, emoji: '👍', nick: 'alice', count: 1, on: false }, 'alice');
  assert.deepEqual([...m2.reactions], [['👍', 1]]);
  assert.equal(m2.mine.has('👍'), false);
  applyReaction(r, { offset: 2, emoji: '🎉', nick: 'carol', count: 1, on: true }, 'alice');
  assert.equal(m2.mine.has('🎉'), false, 'someone else\'s reaction is not mine');
  applyReaction(r, { offset: 2, emoji: '👍', nick: 'bob', count: 0, on: false }, 'alice');
  assert.deepEqual([...m2.reactions], [['🎉', 1]]);

  assert.ok(applyDeleted(r, { offset: 2 }));
  assert.equal(applyDeleted(r, { offset: 2 }), null, 'deleted once');
  assert.equal(m2.deleted, true);
  assert.equal(m2.text, '');
  assert.equal(m2.reactions.size, 0);
  assert.equal(applyEdited(r, { offset: 2, text: 'back', edited_ts: 99 }), null, 'a tombstone is not edited');
  // A tombstone in a later page deletes a message held as live.
  merge(r, [msg(3, 'soon gone')]);
  assert.equal(merge(r, [{ offset: 3, ts: 1, from: 'bob', deleted: true }]).changed.length, 1);
  assert.equal(r.msgs.get(3).deleted, true);
});

test('mentions match the nick as shown, guests with ~', () => {
  const r = newRoom('lobby');
  merge(r, [msg(1, 'hi @Alice', { mentions: ['alice'] }), msg(2, 'hi ~bob', { mentions: ['~bob'] }), msg(3)]);
  assert.equal(mentions(r.msgs.get(1), 'ALICE'), true);
  assert.equal(mentions(r.msgs.get(2), '~bob'), true);
  assert.equal(mentions(r.msgs.get(2), 'alice'), false);
  assert.equal(mentions(r.msgs.get(3), 'alice'), false);
});

test('advance stops at the first offset neither held nor gone', () => {
  const r = newRoom('lobby');
  r.msgs.set(1, msg(1));
  r.msgs.set(3, msg(3));
  r.gaps.push([4, 6]);
  advance(r);
  assert.equal(r.last, 1);
  r.msgs.set(2, msg(2));
  advance(r);
  assert.equal(r.last, 6);
});
