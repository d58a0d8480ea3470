// RFC 7692 (permessage-deflate) conformance, with hand-made frames over raw
// TCP and Node's zlib as the reference codec: the negotiation in the 101
// (offers, parameters, quoted values, window bits, invalid offers declined),
// compressed and fragmented compressed messages in both directions, RSV1
// misuse (1002), corrupt data (1007), zip bombs (1009, RSS stays flat),
// tiny messages sent uncompressed, and --deflate off.
//
// Every case runs its own server (--rate 0) and room, and ends by checking
// that the server still serves a fresh client.
import zlib from 'node:zlib';
import { startServer } from '../integration/lib.mjs';
import {
  assert, OP, WsPeer, frame, text, cont, ping, close, parseFrame, parseClose, testCase,
  assertServing, rssKiB, sleep,
} from './wsraw.mjs';

const OFFER = 'permessage-deflate; client_max_window_bits';
const ACCEPT = 'permessage-deflate; server_no_context_takeover; client_no_context_takeover';
const TAIL = Buffer.from([0x00, 0x00, 0xff, 0xff]);

// Compresses one message the way a client without context takeover does
// (RFC 7692 7.2.1): a sync-flushed raw DEFLATE stream minus its 00 00 ff ff.
function compress(data) {
  const z = zlib.deflateRawSync(Buffer.from(data), { finishFlush: zlib.constants.Z_SYNC_FLUSH });
  assert.ok(z.subarray(-4).equals(TAIL));
  return z.subarray(0, z.length - 4);
}

// Inflates with a window of 2^windowBits bytes. zlib checks distances only
// against the window it keeps between output chunks, so the output is taken
// in 64-byte chunks: then a match reaching past the window fails.
function inflate(payload, windowBits = 15) {
  return zlib.inflateRawSync(Buffer.concat([payload, TAIL]),
    { windowBits, chunkSize: 64, finishFlush: zlib.constants.Z_SYNC_FLUSH });
}

// Chat-like text: words from a small vocabulary (seeded, reproducible).
function chatText(len, seed = 1) {
  const words = ['the', 'room', 'hello', 'is', 'anyone', 'here', 'chat', 'server', 'ok',
    'message', 'today', 'thanks', 'see', 'you', 'later'];
  let s = seed >>> 0;
  let out = '';
  while (out.length < len) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    out += words[(s >>> 16) % words.length] + ' ';
  }
  return out.slice(0, len);
}

// The next frame, whatever its RSV bits, checked against RFC 7692: RSV1 only
// on data frames, never RSV2/RSV3, never masked.
async function readAny(p, timeoutMs = 5000) {
  const f = await p.c.until(() => parseFrame(p.c.buf) || undefined, timeoutMs, 'a frame');
  p.c.buf = p.c.buf.subarray(f.length);
  assert.equal(f.masked, false, 'server frames are not masked');
  assert.equal(f.rsv & 3, 0, 'RSV2/RSV3 set by the server');
  if (f.opcode >= 8) assert.equal(f.rsv, 0, 'a control frame with RSV1 (RFC 7692 6.1)');
  if (f.opcode === OP.CONT) assert.equal(f.rsv, 0, 'RSV1 on a continuation frame');
  return f;
}

// The next data message: {opcode, compressed, wire (payload bytes as sent),
// data (inflated)}. The hub never fragments, so it is one frame.
async function readMsg(p, { windowBits = 15, timeoutMs = 5000 } = {}) {
  for (;;) {
    const f = await readAny(p, timeoutMs);
    if (f.opcode === OP.PING || f.opcode === OP.PONG) continue;
    if (f.opcode === OP.CLOSE) {
      const c = parseClose(f.payload);
      throw new Error(`expected a message, got close ${c.code} ${c.reason}`);
    }
    assert.equal(f.fin, true, 'the hub sends unfragmented messages');
    const compressed = (f.rsv & 4) !== 0;
    return {
      opcode: f.opcode, compressed, wire: f.payload,
      data: compressed ? inflate(f.payload, windowBits) : f.payload,
    };
  }
}

// A compressed client message: one frame, or split into n frames (RSV1 on
// the first only, RFC 7692 6.1).
function compressedFrames(opcode, data, n = 1) {
  const z = compress(data);
  const per = Math.ceil(z.length / n);
  const out = [];
  for (let i = 0; i < n; i++) {
    const part = z.subarray(i * per, Math.min(z.length, (i + 1) * per));
    out.push(frame(i === 0 ? opcode : OP.CONT, part, { fin: i === n - 1, rsv: i === 0 ? 4 : 0 }));
  }
  return Buffer.concat(out);
}

let caseNo = 0;

// A case: a server with args, a raw peer in its own room that offered
// `offer` (null: no header); fn(peer, server, room).
function dconf(name, fn, { args = [], offer = OFFER, timeout = 20000 } = {}) {
  testCase(name, async () => {
    const s = await startServer(['--rate', '0', ...args]);
    const room = `/ws/pmd-${++caseNo}`;
    const headers = offer === null ? {} : { 'Sec-WebSocket-Extensions': offer };
    const p = await WsPeer.open(s.port, room, { headers });
    await fn(p, s, room);
    await assertServing(s, `after "${name}"`);
  }, { timeout });
}

const ext = (p) => p.response.headers['sec-websocket-extensions'];

// ---------------------------------------------------------------------------
// Negotiation.

for (const [offer, answer] of [
  [OFFER, ACCEPT],
  ['permessage-deflate', ACCEPT],
  ['x-webkit-deflate-frame, permessage-deflate; server_no_context_takeover', ACCEPT],
  ['permessage-deflate; server_max_window_bits=10', `${ACCEPT}; server_max_window_bits=10`],
  ['permessage-deflate; server_max_window_bits="12"; client_max_window_bits=9',
    `${ACCEPT}; server_max_window_bits=12`],
  ['permessage-deflate; server_max_window_bits=16, permessage-deflate; client_max_window_bits=10',
    ACCEPT],
]) {
  dconf(`negotiation: "${offer}" -> "${answer}"`, async (p) => {
    assert.equal(ext(p), answer);
  }, { offer });
}

for (const offer of [
  'permessage-deflate; server_max_window_bits=16',
  'permessage-deflate; server_max_window_bits',
  'permessage-deflate; server_max_window_bits=09',
  'permessage-deflate; client_max_window_bits=7',
  'permessage-deflate; server_no_context_takeover=yes',
  'permessage-deflate; client_no_context_takeover; client_no_context_takeover',
  'permessage-deflate; unknown',
  'permessage-deflate; server_max_window_bits="10',
  'permessage-deflate; =',
  'x-unknown-extension',
]) {
  dconf(`negotiation: "${offer}" is declined, the upgrade still succeeds`, async (p) => {
    assert.equal(ext(p), undefined, 'no Sec-WebSocket-Extensions in the 101');
    // RSV1 is now a protocol error (RFC 6455 5.2).
    await p.write(compressedFrames(OP.TEXT, 'hello hello hello'));
    await p.expectClose(1002);
  }, { offer });
}

dconf('negotiation: --deflate off declines every offer', async (p) => {
  assert.equal(ext(p), undefined);
  await p.write(text('plain still works'));
  const m = await readMsg(p);
  assert.equal(m.compressed, false);
  assert.equal(m.data.toString(), 'plain still works');
  await p.write(compressedFrames(OP.TEXT, 'x'.repeat(200)));
  await p.expectClose(1002);
}, { args: ['--deflate', 'off'] });

// ---------------------------------------------------------------------------
// Messages in both directions.

dconf('messages: a compressed text message is inflated and relayed compressed', async (p) => {
  assert.equal(ext(p), ACCEPT);
  const line = chatText(1024, 3);
  await p.write(compressedFrames(OP.TEXT, line));
  const m = await readMsg(p);
  assert.equal(m.opcode, OP.TEXT);
  assert.equal(m.compressed, true, 'a 1 KiB message goes out compressed');
  assert.ok(m.wire.length <= 512, `compressed to ${m.wire.length} bytes`);
  assert.equal(m.data.toString(), line);
});

dconf('messages: a fragmented compressed message (RSV1 on the first frame only)', async (p) => {
  const line = chatText(3000, 5);
  await p.write(compressedFrames(OP.TEXT, line, 4));
  const m = await readMsg(p);
  assert.equal(m.data.toString(), line);
  // Split byte by byte, with a ping between the fragments, it still works.
  const z = compress(chatText(500, 6));
  const bytes = Buffer.concat([
    frame(OP.TEXT, z.subarray(0, 100), { fin: false, rsv: 4 }),
    ping('between'),
    cont(z.subarray(100)),
  ]);
  await p.writeSplit(bytes, 7);
  const m2 = await readMsg(p);
  assert.equal(m2.data.toString(), chatText(500, 6));
});

dconf('messages: compressed and uncompressed messages interleave', async (p) => {
  for (let i = 0; i < 6; i++) {
    const line = chatText(300 + i * 50, 10 + i);
    await p.write(i % 2 ? text(line) : compressedFrames(OP.TEXT, line));
    const m = await readMsg(p);
    assert.equal(m.data.toString(), line);
  }
});

dconf('messages: a compressed binary message', async (p) => {
  const data = Buffer.alloc(2000, 0x41);
  await p.write(compressedFrames(OP.BINARY, data));
  const m = await readMsg(p);
  assert.equal(m.opcode, OP.BINARY);
  assert.ok(m.data.equals(data));
});

dconf('messages: a tiny message goes out uncompressed', async (p) => {
  await p.write(text('hi'));
  const m = await readMsg(p);
  assert.equal(m.compressed, false, 'below --deflate-min');
  assert.equal(m.data.toString(), 'hi');
  // And a compressed tiny message from the client is fine.
  await p.write(compressedFrames(OP.TEXT, 'yo'));
  const m2 = await readMsg(p);
  assert.equal(m2.compressed, false);
  assert.equal(m2.data.toString(), 'yo');
});

dconf('messages: --deflate-min 2000 sends 1 KiB uncompressed', async (p) => {
  const line = chatText(1024, 2);
  await p.write(text(line));
  const m = await readMsg(p);
  assert.equal(m.compressed, false);
  assert.equal(m.data.toString(), line);
}, { args: ['--deflate-min', '2000'] });

dconf('messages: an empty compressed message (RFC 7692 7.2.3.6)', async (p) => {
  await p.write(frame(OP.TEXT, Buffer.from([0x00]), { rsv: 4 }));
  const m = await readMsg(p);
  assert.equal(m.data.length, 0);
});

// server_max_window_bits=9: what the hub sends inflates with a 512-byte
// window (zlib fails "invalid distance too far back" otherwise).
dconf('window bits: server_max_window_bits=9 is honoured', async (p) => {
  assert.equal(ext(p), `${ACCEPT}; server_max_window_bits=9`);
  // A block of letters repeated 1000 bytes later: a 32 KiB window matches
  // it, a 512-byte one cannot (the self-check below shows the difference).
  let s = 77;
  let block = '';
  for (let i = 0; i < 1000; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    block += String.fromCharCode(97 + ((s >>> 16) % 26));
  }
  const line = chatText(600, 9) + block + block;
  assert.throws(() => inflate(compress(line), 9), /distance too far back/,
    'self-check: a 15-bit stream of this line needs more than a 512-byte window');
  await p.write(text(line));
  const m = await readMsg(p, { windowBits: 9 });
  assert.equal(m.compressed, true);
  assert.equal(m.data.toString(), line);
}, { offer: 'permessage-deflate; server_max_window_bits=9' });

// A window of 256 bytes is more than zlib can make: the hub still accepts
// and sends what does not fit such a window uncompressed.
dconf('window bits: server_max_window_bits=8 gets long messages uncompressed', async (p) => {
  assert.equal(ext(p), `${ACCEPT}; server_max_window_bits=8`);
  const line = chatText(3000, 8);
  await p.write(text(line));
  const m = await readMsg(p);
  assert.equal(m.compressed, false);
  assert.equal(m.data.toString(), line);
  const short = chatText(200, 8);
  await p.write(text(short));
  const m2 = await readMsg(p, { windowBits: 8 });
  assert.equal(m2.data.toString(), short);
}, { offer: 'permessage-deflate; server_max_window_bits=8' });

// ---------------------------------------------------------------------------
// Errors.

dconf('errors: RSV1 on a continuation frame -> close 1002', async (p) => {
  const z = compress(chatText(400));
  await p.write(Buffer.concat([
    frame(OP.TEXT, z.subarray(0, 50), { fin: false, rsv: 4 }),
    frame(OP.CONT, z.subarray(50), { rsv: 4 }),
  ]));
  await p.expectClose(1002);
});

dconf('errors: RSV1 on a ping -> close 1002', async (p) => {
  await p.write(ping('x', { rsv: 4 }));
  await p.expectClose(1002);
});

dconf('errors: RSV1 on a close frame -> close 1002', async (p) => {
  await p.write(close(1000, '', { rsv: 4 }));
  await p.expectClose(1002);
});

dconf('errors: RSV2 with deflate negotiated -> close 1002', async (p) => {
  await p.write(text('x', { rsv: 2 }));
  await p.expectClose(1002);
});

dconf('errors: corrupt DEFLATE data -> close 1007', async (p) => {
  await p.write(frame(OP.TEXT, Buffer.from([0x07, 0xff, 0xff, 0xff]), { rsv: 4 }));
  await p.expectClose(1007);
});

dconf('errors: compressed text that is not UTF-8 -> close 1007', async (p) => {
  await p.write(compressedFrames(OP.TEXT, Buffer.from([0x61, 0xc3, 0x28, 0x62])));
  await p.expectClose(1007);
});

// A zip bomb: ~1 KiB of compressed zeros that inflates to 1 MiB, far past
// --max-message 65536; then a 60 KiB frame that would inflate to 60 MiB.
// Both close 1009, and the hub's RSS does not follow the expansion.
for (const [label, inflated] of [['1 KiB -> 1 MiB', 1 << 20], ['60 KiB -> 60 MiB', 60 << 20]]) {
  dconf(`errors: zip bomb ${label} -> close 1009, RSS flat`, async (p, s) => {
    const bomb = compress(Buffer.alloc(inflated));
    assert.ok(bomb.length <= 65536, `bomb of ${bomb.length} bytes fits --max-message`);
    if (inflated === 1 << 20) assert.ok(bomb.length <= 1100, `bomb of ${bomb.length} bytes`);
    const before = rssKiB(s.proc.pid);
    await p.write(frame(OP.BINARY, bomb, { rsv: 4 }));
    await p.expectClose(1009);
    await sleep(50);
    const after = rssKiB(s.proc.pid);
    assert.ok(after - before < 8 * 1024,
      `RSS grew from ${before} to ${after} KiB on a bomb of ${inflated >> 20} MiB`);
  });
}
