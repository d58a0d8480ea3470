// Graceful shutdown loses nothing: a hub stopped with SIGTERM in the middle
// of a flood exits 0, and after a restart its history holds exactly the
// messages it acknowledged, in order, once each.
//
// Why "stored == acked" is the right check: the client stops sending when
// the `bye` push arrives. Everything it sent before is either read by the
// server before it closes the connection or dropped unread (a server that
// has sent its close frame ignores data frames, RFC 6455 5.5.1). A message
// the server read and stored must also be acknowledged before the close
// frame: a drain that stores a message and then closes without the ack
// leaves the client unable to tell it from a lost one. And a message the
// server acknowledged must be stored. So: the acked messages are exactly
// the stored ones. (The stored ones are also a prefix of the send order,
// and a resend of the unacked ones with their cmids then completes the
// stream with each message once.)
//
// CHATHUB_TEST_SEED=<seed> replays the signal point.
import { test, assert, startServer } from '../integration/lib.mjs';
import {
  JsonClient, flood, pageHistory, checkStored, tempDir, rng, seedFromEnv, hello, exitOf,
} from './plib.mjs';

const N = 3000;
const WINDOW = 50;
const SIZE = 120;
const ROOM = 'term';
const NICK = 'flooder';

test(`SIGTERM mid-flood of ${N} messages: exit 0, stored == acked, nothing lost`, async () => {
  const seed = seedFromEnv();
  const rand = rng(seed);
  const frac = 0.2 + 0.6 * rand();
  const termAt = Math.floor(N * frac);
  const run = `t${seed.toString(36)}`;
  console.log(`# seed=${seed} sigterm_at_ack=${termAt} (${(frac * 100).toFixed(1)}%) window=${WINDOW}`);

  const dir = tempDir('sigterm');
  const args = ['--data-dir', dir, '--rate', '0', '--history', '10000'];
  const s1 = await startServer(args);
  const c1 = await JsonClient.connect(s1.wsUrl('/'));
  await hello(c1, NICK);
  await c1.ok({ op: 'join', room: ROOM });

  let signalled = null;
  let bye = null;
  let sentAtBye = null;
  let ackedAtBye = null;
  const st = flood(c1, {
    room: ROOM, run, n: N, window: WINDOW, size: SIZE,
    hooks: {
      onAck: (state) => {
        if (signalled === null && state.acked >= termAt) {
          process.kill(s1.proc.pid, 'SIGTERM');
          signalled = { acked: state.acked, sent: state.sent.size };
        }
      },
      // Stop sending as soon as the bye push has arrived.
      shouldStop: () => bye !== null,
    },
  });
  c1.onPush = (p) => {
    if (p.t === 'bye' && bye === null) {
      bye = p;
      sentAtBye = st.sent.size;
      ackedAtBye = st.acked;
      st.stop();
    }
  };
  await st.done;
  const close = await c1.waitClose(15000);
  assert.ok(signalled !== null, `the flood ended before the signal point (${st.acked} acks)`);
  assert.ok(bye !== null, `no bye push before the close ${JSON.stringify(close)}`);
  assert.equal(bye.code, 1012, `bye push ${JSON.stringify(bye)}`);
  assert.ok(Number.isInteger(bye.retry_ms) && bye.retry_ms > 0, `bye retry_ms ${JSON.stringify(bye)}`);
  assert.equal(close.code, 1012, 'close code');
  const code = await exitOf(s1, 15000);
  await s1.stop();
  assert.equal(code, 0, `exit status of the SIGTERMed server\n${s1.output()}`);
  assert.equal(st.err.size, 0, `error replies during the flood: ${JSON.stringify([...st.err.entries()].slice(0, 3))}`);
  const acked = st.acked;
  for (let i = 0; i < acked; i++) assert.ok(st.ack.has(i), `message ${i} not acked but ${acked} were`);
  const sent = st.sent.size;

  const s2 = await startServer(args);
  const c2 = await JsonClient.connect(s2.wsUrl('/'));
  await hello(c2, NICK);
  const order = Array.from({ length: N }, (_, i) => i);
  const h1 = await pageHistory(c2, ROOM);
  const { byIndex, storedCount } = checkStored(h1.messages, { run, nick: NICK, acks: st.ack, order, size: SIZE });
  console.log(`# counts: signal_at_acked=${signalled.acked} signal_at_sent=${signalled.sent} ` +
    `bye_at_sent=${sentAtBye} bye_at_acked=${ackedAtBye} sent=${sent} acked=${acked} stored=${storedCount} ` +
    `stored_unacked=${storedCount - acked} sent_unstored=${sent - storedCount}`);

  // Recovery: resending the unacked ones with their cmids completes the
  // stream, each message once (stored-but-unacked ones come back duplicate).
  await c2.ok({ op: 'join', room: ROOM });
  const unacked = order.filter((i) => !st.ack.has(i));
  const rs = flood(c2, { room: ROOM, run, n: N, window: WINDOW, size: SIZE, indices: unacked });
  await rs.done;
  assert.equal(rs.err.size + rs.failed.size, 0, 'every resend answered ok');
  let dups = 0;
  for (const i of unacked) {
    const r = rs.ack.get(i);
    if (byIndex.has(i)) {
      assert.equal(r.duplicate, true, `resend of stored ${i} is a duplicate`);
      assert.equal(r.offset, byIndex.get(i), `duplicate ${i} carries the original offset`);
      dups++;
    } else {
      assert.ok(!r.duplicate, `new ${i} not a duplicate`);
    }
  }
  const h2 = await pageHistory(c2, ROOM);
  const fin = checkStored(h2.messages, { run, nick: NICK, acks: new Map(), order, size: SIZE });
  assert.equal(fin.storedCount, N, 'after the resends every message is stored once');
  console.log(`# resent=${unacked.length} resent_duplicates=${dups} new=${unacked.length - dups} final=${fin.storedCount}`);
  assert.equal(await s2.stop(), 0, 'clean exit of the second server');

  // The check this test is about (last, so that the counts above print).
  assert.equal(storedCount, acked,
    `after SIGTERM the history holds ${storedCount} messages but ${acked} were acknowledged: ` +
    `${storedCount - acked} messages were stored without an ack before the close frame`);
}, { timeout: 100000 });
