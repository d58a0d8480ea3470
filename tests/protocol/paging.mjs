// Replies that carry messages are bounded in bytes (issue 19): join, join
// with history, history, and hello with resume over a room of 40 raw lines
// of 64 KiB (each one \u0001-heavy, so it escapes to ~384 KiB of JSON), and
// over 1,000 missed messages of 2 KiB. Every reply is ok, no connection is
// closed, no frame exceeds --max-output, and paging with history ("next")
// recovers every message exactly once. The figures (frame sizes, pages)
// are printed as "# figures" lines for the record, never asserted as
// performance.
import { assert, test, wsConnect } from '../integration/lib.mjs';
import { JClient, start } from './jclient.mjs';

const MAX_OUTPUT = 1024 * 1024; // the default --max-output
const BIG = 64 * 1024;          // the default frame limit: the longest raw line

// Frame sizes of every text frame c received so far (bytes).
const frameSizes = (c) => c.log.filter((e) => typeof e.raw === 'string').map((e) => Buffer.byteLength(e.raw));

// Follows a reply's "next" with history until complete; returns every
// message offset seen (in arrival order) and the number of pages.
async function pageAll(c, room, first) {
  const seen = [];
  let r = first;
  let pages = 1;
  for (;;) {
    for (const m of r.messages) seen.push(m.offset);
    if (r.complete !== false) break;
    assert.ok(r.next && (r.next.before !== undefined || r.next.after !== undefined),
      `an incomplete page says where to continue: ${JSON.stringify({ ...r, messages: r.messages.length })}`);
    r = await c.req('history', { room, limit: 100, ...r.next }, 20000);
    assert.equal(r.ok, true, `history page: ${JSON.stringify(r).slice(0, 300)}`);
    pages++;
    assert.ok(pages < 1000, 'paging ends');
  }
  return { seen, pages };
}

function assertExactlyOnce(seen, n, what) {
  const sorted = [...seen].sort((a, b) => a - b);
  assert.deepEqual(sorted, Array.from({ length: n }, (_, i) => i + 1), `${what}: offsets 1..${n} exactly once`);
}

function assertHealthy(c, what) {
  assert.equal(c.closeInfo, null, `${what}: the connection stays open`);
  const sizes = frameSizes(c);
  const max = Math.max(...sizes);
  assert.ok(max <= MAX_OUTPUT, `${what}: the largest frame (${max} bytes) fits --max-output`);
  return max;
}

async function fillRaw(s, room, n, line) {
  const raw = await wsConnect(s.wsUrl(`/ws/${room}`));
  // The relay back to the sender follows each line's store; reading it
  // before the next line keeps the sender's own queue short.
  for (let i = 0; i < n; i++) {
    await raw.send(line(i));
    await raw.next(20000);
  }
  return raw;
}

test('40 raw lines of 64 KiB: join, join history 100, history 100 and hello resume are paged, none closes', async () => {
  const s = await start(['--rate', '0']);
  // Mostly U+0001 (6 bytes escaped), with the line number at the front.
  const line = (i) => (`#${i + 1} `).padEnd(BIG, '\u0001');
  await fillRaw(s, 'lobby', 40, line);

  const figures = {};
  const check = async (what, c, reply) => {
    // A hello's room entry has no "ok" of its own; an error would show.
    assert.ok(reply.ok === true || (reply.ok === undefined && !reply.error),
      `${what}: ${JSON.stringify(reply).slice(0, 300)}`);
    const { seen, pages } = await pageAll(c, 'lobby', reply);
    assertExactlyOnce(seen, 40, what);
    const max = assertHealthy(c, what);
    for (const m of seen) assert.ok(Number.isInteger(m));
    figures[what] = { pages, largest_frame: max };
  };

  const a = await JClient.open(s, { nick: 'a' });
  const ja = await a.req('join', { room: 'lobby' }, 20000);
  assert.ok(ja.messages.length >= 1, 'a join page holds at least one message');
  assert.equal(ja.messages[0].text, line(40 - ja.messages.length), 'the text is delivered in full');
  await check('join', a, ja);

  const b = await JClient.open(s, { nick: 'b' });
  await check('join history 100', b, await b.req('join', { room: 'lobby', history: 100 }, 20000));

  const c = await JClient.open(s, { nick: 'c' });
  await check('history limit 100', c, await c.req('history', { room: 'lobby', limit: 100 }, 20000));

  const d = await JClient.open(s, { nick: 'd' });
  const epoch = ja.epoch;
  const h = await d.req('hello', { nick: 'd2', resume: { lobby: { epoch, offset: 0 } } }, 20000).catch((e) => e);
  // d said hello already (JClient.open with a nick): use a fresh client.
  assert.equal(h.ok, false);
  const e = await JClient.open(s);
  const he = await e.req('hello', { nick: 'e', resume: { lobby: { epoch, offset: 0 } } }, 20000);
  assert.equal(he.ok, true);
  assert.equal(he.limits.page_bytes, MAX_OUTPUT / 4, 'the page budget is announced');
  await check('hello resume from 0', e, he.rooms.lobby);
  console.log(`# figures (40 x 64 KiB raw lines): ${JSON.stringify(figures)}`);
}, { timeout: 120000 });

test('1,000 missed messages of 2 KiB: resume pages them all, exactly once, without a close', async () => {
  const s = await start(['--rate', '0']);
  const sender = await JClient.open(s, { nick: 'sender' });
  const j = await sender.req('join', { room: 'busy' });
  const text = (i) => (`m${i + 1} `).padEnd(2048, 'abcdefgh');
  for (let i = 0; i < 999; i++) sender.fire('send', { room: 'busy', text: text(i) });
  const last = await sender.req('send', { room: 'busy', text: text(999) }, 30000);
  assert.equal(last.offset, 1000);

  const c = await JClient.open(s);
  const h = await c.req('hello', { nick: 'back', resume: { busy: { epoch: j.epoch, offset: 0 } } }, 20000);
  assert.equal(h.ok, true);
  const st = h.rooms.busy;
  assert.equal(st.offset, 1000);
  assert.equal(st.complete, false, 'more was missed than one page holds');
  const { seen, pages } = await pageAll(c, 'busy', st);
  assertExactlyOnce(seen, 1000, 'resume of 1000');
  const max = assertHealthy(c, 'resume of 1000');
  console.log(`# figures (1000 x 2 KiB): ${JSON.stringify({ pages, largest_frame: max, first_page: st.messages.length })}`);

  // join.since: the same through a join.
  const d = await JClient.open(s, { nick: 'joiner' });
  const js = await d.req('join', { room: 'busy', since: { epoch: j.epoch, offset: 0 } }, 20000);
  const r = await pageAll(d, 'busy', js);
  assertExactlyOnce(r.seen, 1000, 'join since 0');
  assertHealthy(d, 'join since 0');
}, { timeout: 120000 });

test('a message larger than the page budget is delivered alone, and pipelined pages do not close a reader', async () => {
  // A small output limit: budget 64 KiB, one 64 KiB line escapes to ~384 KiB.
  const s = await start(['--rate', '0', '--max-output', String(512 * 1024)]);
  const line = (i) => (`#${i + 1} `).padEnd(BIG, '\u0001');
  await fillRaw(s, 'room', 6, line);
  const c = await JClient.open(s, { nick: 'c' });
  assert.equal(c.hello.limits.page_bytes, 128 * 1024);
  const j = await c.req('join', { room: 'room' }, 20000);
  assert.equal(j.ok, true);
  assert.equal(j.messages.length, 1, 'one message alone');
  assert.equal(j.messages[0].offset, 6);
  assert.equal(j.complete, false);
  assert.deepEqual(j.next, { before: 6 });
  // Five history requests at once: each page is fitted to what the output
  // queue can still take, so the reader is never cut for asking.
  const ids = [1, 2, 3, 4, 5].map((i) => c.fire('history', { room: 'room', before: i + 1, limit: 1 }));
  for (const id of ids) {
    const r = await c.reply(id, 20000);
    assert.equal(r.ok, true);
    assert.ok(r.messages.length <= 1);
  }
  assertHealthy(c, 'pipelined pages');
  assert.ok(Math.max(...frameSizes(c)) <= 512 * 1024);
}, { timeout: 60000 });
