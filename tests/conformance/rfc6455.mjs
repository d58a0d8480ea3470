// RFC 6455 conformance, part 1: framing, masking, ping/pong, reserved bits
// and opcodes, fragmentation. Written from the RFC in the spirit of the
// Autobahn testsuite, against raw mode (which relays every message to the
// sender too), with hand-made frames over raw TCP.
//
// Every case runs its own server (--rate 0, so that the rate limiter never
// interferes) and its own room /ws/conf-<case>. Every "-> close X" case
// checks the server's close frame and code, that the server then closes the
// TCP connection, and that the server still serves a fresh client.
import {
  assert, OP, WsPeer, frame, text, binary, cont, ping, pong, close, sleep, wsConnect, prng,
} from './wsraw.mjs';
import { conf, closes } from './cases.mjs';

const BIG = ['--max-message', '70000'];

// ---------------------------------------------------------------------------
// Framing: echo at the length boundaries of the 7-, 16- and 64-bit encodings.

for (const [kind, op] of [['text', OP.TEXT], ['binary', OP.BINARY]]) {
  for (const len of [0, 125, 126, 65535]) {
    conf(`framing: ${kind} message of ${len} bytes is echoed`, async (p) => {
      const payload = op === OP.TEXT ? Buffer.from('x'.repeat(len)) : prng(len + 1).bytes(len);
      const f = frame(op, payload);
      // The encoding used is the minimal one: 7-bit up to 125, 16-bit above.
      assert.equal(f[1] & 0x7f, len < 126 ? len : 126);
      await p.write(f);
      await p.expectEcho(op, payload, 10000);
    }, { args: len === 65535 ? BIG : [] });
  }
}

conf('framing: 64-bit length encoding, 65536-byte binary message with --max-message 70000', async (p) => {
  const payload = prng(7).bytes(65536);
  const f = binary(payload);
  assert.equal(f[1] & 0x7f, 127, 'a 64-bit length');
  await p.write(f);
  await p.expectEcho(OP.BINARY, payload, 10000);
}, { args: BIG });

conf('framing: 64-bit length encoding, 65536-byte text message with --max-message 70000', async (p) => {
  const payload = Buffer.from('é'.repeat(32768));
  await p.write(text(payload));
  await p.expectEcho(OP.TEXT, payload, 10000);
}, { args: BIG });

conf('framing: 70000-byte message (exactly --max-message 70000) is echoed', async (p) => {
  const payload = prng(8).bytes(70000);
  await p.write(binary(payload));
  await p.expectEcho(OP.BINARY, payload, 10000);
}, { args: BIG });

// docs/operations.md and docs/protocol.md: close 1009 for a message
// *larger than* max_message (default 65536), so 65536 itself is allowed and
// 65537 is the first size refused.
conf('framing: 65536-byte message (exactly the default --max-message) is echoed', async (p) => {
  const payload = prng(10).bytes(65536);
  await p.write(binary(payload));
  await p.expectEcho(OP.BINARY, payload, 10000);
});
closes('framing: 65537-byte text message with the default 64 KiB limit', 1009,
  () => text('y'.repeat(65537)));
closes('framing: 65537-byte binary message with the default 64 KiB limit', 1009,
  () => binary(Buffer.alloc(65537, 7)));
closes('framing: 65537 bytes in 2 fragments with the default 64 KiB limit', 1009,
  () => Buffer.concat([text('z'.repeat(40000), { fin: false }), cont('z'.repeat(25537))]));
closes('framing: 70001-byte message over --max-message 70000', 1009,
  () => binary(Buffer.alloc(70001, 1)), { args: BIG });
closes('framing: 64-bit length of 2^40 bytes (refused from the header, without waiting for the payload)', 1009,
  () => frame(OP.BINARY, Buffer.alloc(10), { len: 64, lenValue: 1n << 40n }));
closes('framing: 64-bit length with the most significant bit set', 1002,
  () => frame(OP.BINARY, Buffer.alloc(4), { len: 64, lenValue: (1n << 63n) | 4n }));

conf('framing: a 200-byte text frame written one byte per TCP write', async (p) => {
  const payload = Buffer.from('0123456789'.repeat(20));
  await p.writeSplit(text(payload), 1, 1);
  await p.expectEcho(OP.TEXT, payload);
});

conf('framing: handshake and a frame written one byte per TCP write', async (p, s) => {
  const q = await WsPeer.open(s.port, '/ws/conf-split-handshake', { split: true });
  const payload = 'split everywhere ✓';
  await q.writeSplit(text(payload), 1, 0);
  await q.expectEcho(OP.TEXT, payload);
  q.destroy();
});

conf('framing: a 65535-byte binary frame in 997-byte TCP writes', async (p) => {
  const payload = prng(9).bytes(65535);
  await p.writeSplit(binary(payload), 997, 0);
  await p.expectEcho(OP.BINARY, payload, 10000);
}, { args: BIG });

conf('framing: 100 frames of mixed types and lengths in one TCP write, echoed in order', async (p) => {
  const r = prng(100);
  const msgs = [];
  for (let i = 0; i < 100; i++) {
    const len = [0, 1, 125, 126, 127, 300, 1000][i % 7];
    const op = i % 3 === 0 ? OP.BINARY : OP.TEXT;
    msgs.push({ op, payload: op === OP.TEXT ? Buffer.from(`${i}:` + 'm'.repeat(len)) : r.bytes(len) });
  }
  await p.write(Buffer.concat(msgs.map((m) => frame(m.op, m.payload))));
  for (const m of msgs) await p.expectEcho(m.op, m.payload);
});

conf('framing: frames split at every offset across two writes (30-byte frame)', async (p) => {
  const payload = 'abcdefghijklmnopqrstuvwx'; // 24 bytes: 2 + 4 + 24 = 30 bytes of frame
  const f = text(payload);
  for (let cut = 1; cut < f.length; cut++) {
    await p.write(f.subarray(0, cut));
    await sleep(2);
    await p.write(f.subarray(cut));
    await p.expectEcho(OP.TEXT, payload);
  }
});

conf('framing: two clients in the room both get each message', async (p, s, room) => {
  const obs = await wsConnect(s.wsUrl(room));
  await p.write(text('to both'));
  await p.expectEcho(OP.TEXT, 'to both');
  assert.equal(await obs.nextText(), 'to both');
  obs.terminate();
});

// ---------------------------------------------------------------------------
// Masking (RFC 6455 5.1: a server MUST close on an unmasked client frame).

closes('masking: unmasked text frame', 1002, () => text('unmasked', { mask: false }));
closes('masking: unmasked ping frame', 1002, () => ping('unmasked', { mask: false }));
conf('masking: an all-zero mask key is a valid mask', async (p) => {
  await p.write(text('zero key', { maskKey: [0, 0, 0, 0] }));
  await p.expectEcho(OP.TEXT, 'zero key');
});

// ---------------------------------------------------------------------------
// Ping and pong (RFC 6455 5.5.2, 5.5.3).

conf('ping: ping with a payload gets a pong with the identical payload', async (p) => {
  await p.write(ping('hello ping'));
  await p.expectPong('hello ping');
});

conf('ping: empty ping gets an empty pong', async (p) => {
  await p.write(ping(''));
  await p.expectPong('');
});

conf('ping: 125-byte binary ping gets an identical pong', async (p) => {
  const payload = prng(125).bytes(125);
  await p.write(ping(payload));
  await p.expectPong(payload);
});

conf('ping: 10 pings in one write get 10 pongs, in order (Autobahn 2.10)', async (p) => {
  const pl = Array.from({ length: 10 }, (_, i) => `ping-${i}`);
  await p.write(Buffer.concat(pl.map((x) => ping(x))));
  for (const x of pl) await p.expectPong(x);
});

conf('ping: unsolicited pong is ignored', async (p) => {
  await p.write(pong('unsolicited'));
  await p.write(pong(''));
  await p.expectSilence(300);
  await p.write(text('after pong'));
  await p.expectEcho(OP.TEXT, 'after pong');
});

closes('ping: 126-byte ping (control frame over 125 bytes)', 1002, () => ping(Buffer.alloc(126, 0x61)));
closes('ping: 126-byte pong (control frame over 125 bytes)', 1002, () => pong(Buffer.alloc(126, 0x61)));
closes('ping: ping with FIN=0 (fragmented control frame)', 1002, () =>
  Buffer.concat([ping('frag', { fin: false }), cont('mented')]));
closes('ping: close with FIN=0 (fragmented control frame)', 1002, () =>
  close(1000, 'x', { fin: false }));

// ---------------------------------------------------------------------------
// Reserved bits and opcodes (RFC 6455 5.2: no extension negotiated -> fail).

for (const [bit, v] of [['RSV1', 4], ['RSV2', 2], ['RSV3', 1]]) {
  closes(`reserved bits: ${bit} set on a text frame`, 1002, () => text('rsv', { rsv: v }));
}
closes('reserved bits: RSV1+RSV2+RSV3 set on a ping', 1002, () => ping('rsv', { rsv: 7 }));
for (const op of [3, 4, 5, 6, 7, 11, 12, 13, 14, 15]) {
  closes(`reserved opcode ${op}`, 1002, () => frame(op, op >= 8 ? 'ctl' : 'data'));
}
// A valid message before the bad frame was received before the error, so
// the room gets it; the sender itself is failed (RFC 6455 7.1.7), so its own
// echo may or may not come before the close.
conf('reserved opcode 3 after a valid message: the room gets the message, the sender close 1002', async (p, s, room) => {
  const obs = await wsConnect(s.wsUrl(room));
  await p.write(Buffer.concat([text('before'), frame(3, 'x')]));
  await p.expectClose(1002, { skipData: true });
  assert.equal(await obs.nextText(), 'before', 'the observer got the valid message');
  obs.terminate();
});

// ---------------------------------------------------------------------------
// Fragmentation (RFC 6455 5.4).

conf('fragmentation: text in 3 fragments is reassembled', async (p) => {
  await p.write(Buffer.concat([
    text('Hello, ', { fin: false }), cont('fragmented ', { fin: false }), cont('world!'),
  ]));
  await p.expectEcho(OP.TEXT, 'Hello, fragmented world!');
});

conf('fragmentation: binary in 3 fragments written separately is reassembled', async (p) => {
  const r = prng(3);
  const parts = [r.bytes(100), r.bytes(200), r.bytes(300)];
  await p.write(binary(parts[0], { fin: false }));
  await sleep(20);
  await p.write(cont(parts[1], { fin: false }));
  await sleep(20);
  await p.write(cont(parts[2]));
  await p.expectEcho(OP.BINARY, Buffer.concat(parts));
});

conf('fragmentation: empty fragments around the payload', async (p) => {
  await p.write(Buffer.concat([
    text('', { fin: false }), cont('', { fin: false }), cont('middle', { fin: false }), cont(''),
  ]));
  await p.expectEcho(OP.TEXT, 'middle');
});

conf('fragmentation: ping between fragments is answered and the message is intact', async (p) => {
  await p.write(text('frag-1 ', { fin: false }));
  await p.write(ping('in the middle'));
  await p.expectPong('in the middle');
  await p.write(cont('frag-2 ', { fin: false }));
  await p.write(Buffer.concat([ping('again'), cont('frag-3')]));
  await p.expectPong('again');
  await p.expectEcho(OP.TEXT, 'frag-1 frag-2 frag-3');
});

conf('fragmentation: 128 fragments (the default --max-fragments) are accepted', async (p) => {
  const frames = [text('f', { fin: false })];
  for (let i = 1; i < 127; i++) frames.push(cont('f', { fin: false }));
  frames.push(cont('!'));
  assert.equal(frames.length, 128);
  await p.write(Buffer.concat(frames));
  await p.expectEcho(OP.TEXT, 'f'.repeat(127) + '!');
});

closes('fragmentation: 129 fragments (over the default --max-fragments 128)', 1008, () => {
  const frames = [text('f', { fin: false })];
  for (let i = 1; i < 128; i++) frames.push(cont('f', { fin: false }));
  frames.push(cont('!'));
  assert.equal(frames.length, 129);
  return Buffer.concat(frames);
});

closes('fragmentation: continuation frame without a start (FIN=1)', 1002, () => cont('orphan'));
closes('fragmentation: continuation frame without a start (FIN=0)', 1002, () => cont('orphan', { fin: false }));
closes('fragmentation: text frame while a fragmented text is open', 1002, () =>
  Buffer.concat([text('open ', { fin: false }), text('new message')]));
closes('fragmentation: binary FIN=0 while a fragmented text is open', 1002, () =>
  Buffer.concat([text('open ', { fin: false }), binary('new', { fin: false }), cont('end')]));

conf('fragmentation: an interrupted fragmented message is never relayed', async (p, s, room) => {
  const obs = await wsConnect(s.wsUrl(room));
  await p.write(Buffer.concat([text('partial ', { fin: false }), text('intruder')]));
  await p.expectClose(1002);
  await obs.send('marker');
  assert.equal(await obs.nextText(), 'marker', 'the observer saw nothing before its marker');
  obs.terminate();
});
