// Crash safety: a hub killed with SIGKILL in the middle of a flood keeps
// every message it acknowledged, exactly once and at the acked offset, and
// a client that resends its unacknowledged messages with their original
// cmids after the restart ends up with each message stored exactly once.
//
// The kill point is random (20%-80% of the acks) from a seed printed at the
// start; CHATHUB_TEST_SEED=<seed> replays it.
import { test, assert, startServer } from '../integration/lib.mjs';
import {
  JsonClient, flood, pageHistory, checkStored, tempDir, rng, seedFromEnv, hello,
} from './plib.mjs';

const N = 3000;
const WINDOW = 50;
const SIZE = 120;
const ROOM = 'crash';
const NICK = 'flooder';

test(`SIGKILL mid-flood of ${N} messages: acked ones survive exactly once, resends dedupe`, async () => {
  const seed = seedFromEnv();
  const rand = rng(seed);
  const killFrac = 0.2 + 0.6 * rand();
  const killAt = Math.floor(N * killFrac);
  const run = `k${seed.toString(36)}`;
  console.log(`# seed=${seed} kill_at_ack=${killAt} (${(killFrac * 100).toFixed(1)}%) window=${WINDOW}`);

  const dir = tempDir('crash');
  const args = ['--data-dir', dir, '--rate', '0', '--history', '10000'];
  const s1 = await startServer(args);
  const c1 = await JsonClient.connect(s1.wsUrl('/'));
  await hello(c1, NICK);
  const j1 = await c1.ok({ op: 'join', room: ROOM });

  let killedAt = null;
  const st = flood(c1, {
    room: ROOM, run, n: N, window: WINDOW, size: SIZE,
    hooks: {
      onAck: (state) => {
        if (killedAt === null && state.acked >= killAt) {
          process.kill(s1.proc.pid, 'SIGKILL');
          killedAt = { acked: state.acked, sent: state.sent.size };
          state.stop();
        }
      },
    },
  });
  await st.done;
  assert.ok(killedAt !== null, `the flood ended before the kill point: ${st.acked} acks, errors ${JSON.stringify([...st.err.values()].slice(0, 3))}`);
  assert.equal(await s1.stop('SIGKILL'), 'SIGKILL', 'the first server died of SIGKILL');
  await c1.waitClose(5000);
  assert.equal(st.err.size, 0, `error replies during the flood: ${JSON.stringify([...st.err.entries()].slice(0, 3))}`);
  // Acks arrive in order, so the acked messages are the first ones sent.
  const acked = st.acked;
  for (let i = 0; i < acked; i++) assert.ok(st.ack.has(i), `message ${i} not acked but ${acked} were`);
  console.log(`# killed after ${killedAt.acked} acks with ${killedAt.sent} sent; acks received in total ${acked}`);

  const s2 = await startServer(args);
  const c2 = await JsonClient.connect(s2.wsUrl('/'));
  await hello(c2, NICK);
  const order = Array.from({ length: N }, (_, i) => i);
  const h1 = await pageHistory(c2, ROOM);
  assert.equal(h1.epoch, j1.epoch, 'the epoch survives the crash');
  const { byIndex, storedCount } = checkStored(h1.messages, { run, nick: NICK, acks: st.ack, order, size: SIZE });
  assert.ok(storedCount >= acked, `found ${storedCount} < acked ${acked}`);
  assert.ok(storedCount <= st.sent.size, `found ${storedCount} > sent ${st.sent.size}`);
  assert.equal(h1.offset, storedCount, 'the room position is the number of stored messages');
  h1.messages.forEach((m, k) => assert.equal(m.offset, k + 1, `offsets are 1..${storedCount} without holes`));

  // Resend everything not acked, with the original cmids, in order.
  await c2.ok({ op: 'join', room: ROOM });
  const unacked = order.filter((i) => !st.ack.has(i));
  const rs = flood(c2, { room: ROOM, run, n: N, window: WINDOW, size: SIZE, indices: unacked });
  await rs.done;
  assert.equal(rs.err.size, 0, `error replies to resends: ${JSON.stringify([...rs.err.entries()].slice(0, 3))}`);
  assert.equal(rs.failed.size, 0, `resends without reply: ${JSON.stringify([...rs.failed.entries()].slice(0, 3))}`);
  let dups = 0;
  let fresh = 0;
  let expectNext = storedCount + 1;
  for (const i of unacked) {
    const r = rs.ack.get(i);
    assert.ok(r, `no ack for resend of ${i}`);
    if (byIndex.has(i)) {
      assert.equal(r.duplicate, true, `resend of stored message ${i} not flagged duplicate: ${JSON.stringify(r)}`);
      assert.equal(r.offset, byIndex.get(i), `duplicate of ${i} must carry its original offset`);
      dups++;
    } else {
      assert.ok(r.duplicate === undefined || r.duplicate === false, `new message ${i} flagged duplicate: ${JSON.stringify(r)}`);
      assert.equal(r.offset, expectNext, `new message ${i} offset`);
      expectNext++;
      fresh++;
    }
  }
  assert.equal(dups, storedCount - acked, 'every stored-but-unacked message is answered as a duplicate');

  const h2 = await pageHistory(c2, ROOM);
  const allAcks = new Map([...st.ack, ...[...rs.ack].filter(([, r]) => !r.duplicate)]);
  const fin = checkStored(h2.messages, { run, nick: NICK, acks: allAcks, order, size: SIZE });
  assert.equal(fin.storedCount, N, `history holds ${fin.storedCount} of ${N} messages`);
  h2.messages.forEach((m, k) => assert.equal(m.offset, k + 1, 'final offsets are 1..N'));
  assert.equal(h2.epoch, h1.epoch, 'epoch unchanged');
  console.log(`# counts: sent_before_kill=${st.sent.size} acked=${acked} found=${storedCount} ` +
    `resent=${unacked.length} resent_duplicates=${dups} new=${fresh} final=${fin.storedCount}`);
  assert.equal(await s2.stop(), 0, 'clean exit of the second server');
}, { timeout: 100000 });
