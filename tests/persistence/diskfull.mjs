// The disk filling up while the hub runs. CHATHUB_TEST_MAX_PAGES (read by
// the SQLite store, test only) caps the database at that many pages, so the
// disk is "full" after a few hundred messages. The failing `send` gets an
// error reply with code `storage` (temporary), and everything else keeps
// working: reads, joins, pings, dedupe of resends, raw binary relays, other
// clients. After "the operator frees space" (a restart with a larger cap)
// the hub carries on where it stopped. With --history-ttl, space comes back
// by itself once the messages age out.
import { test, assert, startServer, wsConnect } from '../integration/lib.mjs';
import {
  JsonClient, tempDir, hello, pageHistory, checkStored, msgText, msgCmid, sleep, exitOf,
} from './plib.mjs';

const PAGES = 30;      // about 370 messages of 200 bytes fit
const SIZE = 200;

async function startCapped(args, pages) {
  const saved = process.env.CHATHUB_TEST_MAX_PAGES;
  process.env.CHATHUB_TEST_MAX_PAGES = String(pages);
  try {
    return await startServer(args);
  } finally {
    if (saved === undefined) delete process.env.CHATHUB_TEST_MAX_PAGES;
    else process.env.CHATHUB_TEST_MAX_PAGES = saved;
  }
}

// Sends messages 0, 1, ... one at a time until one fails. Returns
// {acks: Map(i -> reply), failIndex, failReply}.
async function fill(c, room, run, max = 20000) {
  const acks = new Map();
  for (let i = 0; i < max; i++) {
    const r = await c.request({ op: 'send', room, text: msgText(run, i, SIZE), cmid: msgCmid(run, i) });
    if (!r.ok) return { acks, failIndex: i, failReply: r };
    acks.set(i, r);
  }
  throw new Error(`${max} messages fit under CHATHUB_TEST_MAX_PAGES: the cap is not applied`);
}

function assertStorageError(r, what) {
  assert.equal(r.ok, false, `${what}: ${JSON.stringify(r)}`);
  assert.ok(r.error && r.error.code === 'storage', `${what}: error code storage expected, got ${JSON.stringify(r)}`);
  assert.equal(typeof r.error.message, 'string', `${what}: an error message`);
}

test('disk full: the failing send gets a "storage" error, everything else keeps working', async () => {
  const dir = tempDir('diskfull');
  const args = ['--data-dir', dir, '--rate', '0'];
  const s = await startCapped(args, PAGES);
  const run = 'df';
  const alice = await JsonClient.connect(s.wsUrl('/'));
  await hello(alice, 'alice');
  const ja = await alice.ok({ op: 'join', room: 'full' });
  const bob = await JsonClient.connect(s.wsUrl('/'));
  await hello(bob, 'bob');
  await bob.ok({ op: 'join', room: 'full' });
  const raw1 = await wsConnect(s.wsUrl('/ws/rawroom'));
  const raw2 = await wsConnect(s.wsUrl('/ws/rawroom'));

  const { acks, failIndex, failReply } = await fill(alice, 'full', run);
  const acked = acks.size;
  console.log(`# CHATHUB_TEST_MAX_PAGES=${PAGES}: ${acked} messages of ${SIZE} bytes stored before the first failure`);
  assert.ok(acked >= 100, `only ${acked} messages fit: the cap is too small for this test`);
  assertStorageError(failReply, 'the send that hits the full disk');
  assert.equal(failReply.id !== undefined, true, 'the error is a reply to the send (it carries the id)');

  // Still full: further sends fail the same way, the connection stays up.
  for (let k = 1; k <= 3; k++) {
    const r = await alice.request({ op: 'send', room: 'full', text: msgText(run, failIndex + k, SIZE), cmid: msgCmid(run, failIndex + k) });
    assertStorageError(r, `send #${k} after the disk filled`);
  }
  // A resend of a stored message is still recognised (nothing to write).
  const dup = await alice.ok({ op: 'send', room: 'full', text: msgText(run, 7, SIZE), cmid: msgCmid(run, 7) });
  assert.equal(dup.duplicate, true, `resend of a stored cmid on a full disk: ${JSON.stringify(dup)}`);
  assert.equal(dup.offset, acks.get(7).offset, 'the duplicate carries the original offset');

  // Bob saw every stored message and none of the refused ones.
  await bob.sync();
  const pushed = bob.pushes.filter((p) => p.t === 'msg' && p.room === 'full');
  assert.equal(pushed.length, acked, `bob got ${pushed.length} msg pushes for ${acked} stored messages`);
  assert.deepEqual(pushed.map((p) => p.offset), [...acks.values()].map((r) => r.offset), 'pushes = stored, in order');

  // Reads: the whole history, intact.
  const h = await pageHistory(alice, 'full');
  const order = Array.from({ length: acked }, (_, i) => i);
  const { storedCount } = checkStored(h.messages, { run, nick: 'alice', acks, order, size: SIZE });
  assert.equal(storedCount, acked, 'history holds exactly the acked messages');
  assert.equal(h.offset, acked, 'the failed sends took no offsets');
  assert.equal(h.epoch, ja.epoch);

  // Joins, of another room and with a resume position; pings.
  const jo = await alice.ok({ op: 'join', room: 'other' });
  assert.equal(jo.offset, 0, 'an empty room');
  assert.equal(typeof jo.epoch, 'string');
  const pongsBefore = alice.pushes.filter((p) => p.t === 'pong').length;
  await alice.ok({ op: 'ping' });
  await alice.waitPush(() => alice.pushes.filter((p) => p.t === 'pong').length > pongsBefore, 3000, 'a pong push');
  const carol = await JsonClient.connect(s.wsUrl('/'));
  const hc = await carol.ok({ op: 'hello', nick: 'carol', resume: { full: { epoch: ja.epoch, offset: acked - 5 } } });
  assert.deepEqual(hc.rooms.full.messages.map((m) => m.offset), [1, 2, 3, 4, 5].map((k) => acked - 5 + k),
    'a resume on a full disk gets the last 5 messages');
  await carol.sync();
  assert.equal(carol.pushes.filter((p) => p.t === 'gap').length, 0, 'no gap');

  // Raw clients: a binary frame is relayed verbatim to both.
  const bin = Buffer.from([0, 1, 2, 0xfe, 0xff, 0x80, 0x7f]);
  await raw1.send(bin, { binary: true });
  for (const [name, r] of [['sender', raw1], ['other', raw2]]) {
    const m = await r.next(3000);
    assert.equal(m.binary, true, `raw ${name} got a binary frame`);
    assert.ok(Buffer.compare(m.data, bin) === 0, `raw ${name} got the same bytes`);
  }
  // Raw text into the full room has to be stored, which fails: observed,
  // not asserted (the raw protocol has no error channel).
  const raw3 = await wsConnect(s.wsUrl('/ws/full'));
  const rawText = msgText('rawtext', 0, 3000); // too big for the free space left in any page
  await raw3.send(rawText);
  const seen3 = await raw3.next(1500).then((m) => m.text, () => '(nothing)');
  const rawStored = seen3 === rawText;
  console.log(`# note: raw text (3000 bytes) into the full room: ` +
    (rawStored ? 'it still fit and was relayed' : `the raw sender got ${JSON.stringify(seen3.slice(0, 160))}`));

  // Everybody is still connected.
  await bob.sync();
  await alice.sync();
  await raw1.send(bin, { binary: true });
  assert.ok(Buffer.compare((await raw2.next(3000)).data, bin) === 0, 'raw relay still works');
  assert.equal(alice.closeInfo, null, 'alice connected');
  assert.equal(bob.closeInfo, null, 'bob connected');
  assert.equal(raw1.closeInfo, null, 'raw1 connected');
  assert.equal(raw2.closeInfo, null, 'raw2 connected');
  assert.ok(s.alive(), 'the hub is running');

  // The operator frees space: a clean stop, a restart with a larger cap.
  process.kill(s.proc.pid, 'SIGTERM');
  assert.equal(await exitOf(s), 0, `clean exit on a full disk\n${s.output()}`);
  await s.stop();
  const s2 = await startCapped(args, 100000);
  const a2 = await JsonClient.connect(s2.wsUrl('/'));
  await hello(a2, 'alice');
  const h2 = await pageHistory(a2, 'full');
  assert.equal(h2.epoch, ja.epoch, 'same epoch after the restart');
  const mine = h2.messages.filter((m) => m.from === 'alice');
  checkStored(mine, { run, nick: 'alice', acks, order, size: SIZE });
  assert.equal(mine.length, acked, 'the refused messages were never stored');
  assert.equal(h2.messages.length, acked + (rawStored ? 1 : 0), 'nothing else was stored');
  await a2.ok({ op: 'join', room: 'full' });
  const again = await a2.ok({ op: 'send', room: 'full', text: msgText(run, failIndex, SIZE), cmid: msgCmid(run, failIndex) });
  assert.ok(!again.duplicate, 'the refused message is new when sent again');
  assert.equal(again.offset, acked + (rawStored ? 1 : 0) + 1, 'offsets continue after the last stored message');
  assert.equal(await s2.stop(), 0);
}, { timeout: 60000 });

test('disk full with --history-ttl 2: sends succeed again once the messages aged out (write-only traffic)', async () => {
  const dir = tempDir('diskfull-ttl');
  const s = await startCapped(['--data-dir', dir, '--rate', '0', '--history-ttl', '2'], PAGES);
  const c = await JsonClient.connect(s.wsUrl('/'));
  await hello(c, 'alice');
  await c.ok({ op: 'join', room: 'ttl' });
  const { acks, failReply } = await fill(c, 'ttl', 'dt');
  assertStorageError(failReply, 'the send that hits the full disk');
  const again = await c.request({ op: 'send', room: 'ttl', text: msgText('late', 99, SIZE), cmid: 'late-99' });
  assertStorageError(again, 'the next send of the same size');
  const tFull = Date.now();
  // Wait until every stored message is past the TTL (2 s) and the sweep
  // (at most once a second) is due.
  await sleep(3200);
  // Only sends (no reads, joins or relays): space must come back by itself.
  let firstOk = null;
  const results = [];
  for (let k = 0; k < 16 && firstOk === null; k++) {
    // The same size as the ones that failed: a smaller one might still fit.
    const r = await c.request({ op: 'send', room: 'ttl', text: msgText('late', k, SIZE), cmid: `late-${k}` });
    results.push(r.ok ? `ok@${r.offset}` : r.error.code);
    if (r.ok) firstOk = { k, r, after: Date.now() - tFull };
    else await sleep(250);
  }
  console.log(`# ${acks.size} stored, full at t=0; sends from t=3.2 s: ${results.join(' ')}`);
  let diag = '';
  if (firstOk === null) {
    // Diagnosis for the report: does a request that writes nothing (a
    // history read) let the TTL sweep commit, after which sends fit again?
    const h = await c.ok({ op: 'history', room: 'ttl', after: 0, limit: 1 });
    const r = await c.request({ op: 'send', room: 'ttl', text: msgText('late', 50, SIZE), cmid: 'late-50' });
    diag = ` After one history read (it returned ${h.messages.length} messages) the next send ` +
      `${r.ok ? `succeeded at offset ${r.offset}` : `failed too (${JSON.stringify(r.error)})`}.`;
    console.log(`#${diag}`);
  }
  assert.ok(firstOk !== null,
    `all ${acks.size} stored messages are past the 2 s TTL, yet ${results.length} sends over 4 s after it all failed ` +
    `(${results.join(' ')}): the full disk does not recover under write-only traffic.${diag}`);
  assert.equal(firstOk.r.offset, acks.size + 1, 'offsets continue');
  assert.equal(await s.stop(), 0);
}, { timeout: 30000 });
