// RFC 6455 conformance, part 2: UTF-8 validation of text messages (8.1)
// and the closing handshake (5.5.1, 7.1-7.4). Same setup as rfc6455.mjs:
// a fresh server with --rate 0 per case, raw mode, hand-made frames.
import {
  assert, OP, WsPeer, frame, text, binary, cont, ping, close, sleep, wsConnect,
} from './wsraw.mjs';
import { conf, closes } from './cases.mjs';

const hex = (s) => Buffer.from(s.replace(/\s+/g, ''), 'hex');

// ---------------------------------------------------------------------------
// UTF-8 (RFC 6455 8.1: invalid UTF-8 in a text message -> fail with 1007).

conf('utf8: valid multi-byte text (2, 3 and 4-byte sequences) is relayed verbatim', async (p) => {
  const s = 'κόσμε ünïcödé ✓ €, 日本語, 🚀😀, U+FFFF \u{FFFF}, U+10FFFF \u{10FFFF}';
  await p.write(text(s));
  await p.expectEcho(OP.TEXT, s);
});

conf('utf8: a 4-byte sequence split across two fragments is accepted', async (p) => {
  await p.write(Buffer.concat([text(hex('41 f0 9f'), { fin: false }), cont(hex('98 80 42'))]));
  await p.expectEcho(OP.TEXT, 'A😀B');
});

conf('utf8: a 4-byte sequence split over three fragments in separate writes is accepted', async (p) => {
  await p.write(text(hex('f0'), { fin: false }));
  await sleep(10);
  await p.write(cont(hex('9f'), { fin: false }));
  await sleep(10);
  await p.write(cont(hex('9a 80')));
  await p.expectEcho(OP.TEXT, '🚀');
});

conf('utf8: a 3-byte sequence split at each byte over fragments is accepted', async (p) => {
  await p.write(Buffer.concat([
    text(hex('e2'), { fin: false }), cont(hex('9c'), { fin: false }), cont(hex('93')),
  ]));
  await p.expectEcho(OP.TEXT, '✓');
});

conf('utf8: binary messages are not UTF-8 checked', async (p) => {
  const b = hex('ff fe c0 af ed a0 80 f4 90 80 80');
  await p.write(binary(b));
  await p.expectEcho(OP.BINARY, b);
});

const invalid = [
  ['a lone 0xFF byte', 'ff'],
  ['a lone continuation byte 0x80', '41 80 41'],
  ['a truncated 2-byte sequence at the end', '41 c3'],
  ['a truncated 4-byte sequence at the end', '41 f0 9f 98'],
  ['overlong 2-byte "/" (C0 AF)', 'c0 af'],
  ['overlong 3-byte "/" (E0 80 AF)', 'e0 80 af'],
  ['overlong 4-byte "/" (F0 80 80 AF)', 'f0 80 80 af'],
  ['overlong NUL (C0 80)', 'c0 80'],
  ['surrogate U+D800 (ED A0 80)', 'ed a0 80'],
  ['surrogate U+DFFF (ED BF BF)', 'ed bf bf'],
  ['surrogate pair encoded as two 3-byte sequences', 'ed a0 bd ed b2 a9'],
  ['code point above U+10FFFF (F4 90 80 80)', 'f4 90 80 80'],
  ['5-byte sequence (F8 88 80 80 80)', 'f8 88 80 80 80'],
  ['Autobahn 6.3.1: "κόσμε" followed by ED A0 80 "edited"', 'cebae1bdb9cf83cebcceb5 eda080 65646974656421'],
];
for (const [what, bytes] of invalid) {
  closes(`utf8: text with ${what}`, 1007, () => text(hex(bytes)));
}
closes('utf8: invalid sequence split across fragments (CE | 41)', 1007, () =>
  Buffer.concat([text(hex('41 ce'), { fin: false }), cont(hex('41'))]));
closes('utf8: surrogate split across fragments (ED | A0 80)', 1007, () =>
  Buffer.concat([text(hex('41 ed'), { fin: false }), cont(hex('a0 80 41'))]));
closes('utf8: fragmented text ending inside a sequence (E2 82 | nothing)', 1007, () =>
  Buffer.concat([text(hex('41 e2'), { fin: false }), cont(hex('82'))]));

// Autobahn 6.4: invalid UTF-8 in the first fragment fails the connection
// without waiting for the rest of the message (which never comes here).
closes('utf8: invalid sequence in an unfinished fragmented message (fail fast)', 1007, () =>
  text(hex('41 ed a0 80'), { fin: false }));

conf('utf8: an invalid text message is never relayed to the room', async (p, s, room) => {
  const obs = await wsConnect(s.wsUrl(room));
  await p.write(Buffer.concat([text(hex('41 ed a0 80')), text('after')]));
  await p.expectClose(1007);
  await obs.send('marker');
  assert.equal(await obs.nextText(), 'marker', 'the observer saw nothing before its marker');
  obs.terminate();
});

// ---------------------------------------------------------------------------
// Closing handshake.

conf('close: 1000 with a reason is answered with close 1000, then TCP close', async (p) => {
  await p.write(close(1000, 'bye now'));
  const r = await p.expectClose(1000);
  console.log(`# close 1000 "bye now" answered with ${r.code} ${JSON.stringify(r.reason)}, TCP closed after ${r.tcpMs} ms`);
});

conf('close: 1000 with a 123-byte reason (the longest that fits) is answered with 1000', async (p) => {
  await p.write(close(1000, 'r'.repeat(123)));
  await p.expectClose(1000);
});

conf('close: empty close payload is answered with an empty close or 1000', async (p) => {
  await p.write(close(null));
  const r = await p.expectClose([null, 1000]);
  console.log(`# an empty close is answered with ${r.code === null ? 'an empty close payload' : `code ${r.code}`}`);
});

closes('close: 1-byte close payload', 1002, () => close(null, '', { body: [0x03] }));
closes('close: 126-byte close payload (control frame over 125 bytes)', 1002, () =>
  frame(OP.CLOSE, Buffer.concat([Buffer.from([0x03, 0xe8]), Buffer.alloc(124, 0x61)])));

for (const code of [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535]) {
  closes(`close: invalid close code ${code}`, 1002, () => close(code, 'x'));
}

for (const code of [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999]) {
  conf(`close: valid close code ${code} is echoed`, async (p) => {
    await p.write(close(code, `code ${code}`));
    await p.expectClose(code);
  });
}

closes('close: invalid UTF-8 in the close reason', 1007, () => close(1000, hex('ce ba ed a0 80')));
closes('close: truncated UTF-8 at the end of the close reason', 1007, () => close(1000, hex('41 e2 82')));

conf('close: a close written one byte at a time is answered', async (p) => {
  await p.writeSplit(close(1000, 'slowly'), 1, 1);
  await p.expectClose(1000);
});

conf('close: close between fragments of a message is answered (message discarded)', async (p, s, room) => {
  const obs = await wsConnect(s.wsUrl(room));
  await p.write(Buffer.concat([text('unfinished', { fin: false }), close(1000, 'mid-message')]));
  await p.expectClose(1000);
  await obs.send('marker');
  assert.equal(await obs.nextText(), 'marker', 'the observer saw nothing before its marker');
  obs.terminate();
});

conf('close: data after the close frame (same write) is ignored, not relayed', async (p, s, room) => {
  const obs = await wsConnect(s.wsUrl(room));
  await p.write(Buffer.concat([close(1000, 'done'), text('after close'), binary('also after'),
    ping('after')]));
  await p.expectClose(1000); // also asserts that no echo or pong preceded it
  await obs.send('marker');
  assert.equal(await obs.nextText(), 'marker', 'the observer saw nothing before its marker');
  obs.terminate();
});

conf('close: data after the close frame (later write) is ignored', async (p, s, room) => {
  const obs = await wsConnect(s.wsUrl(room));
  await p.write(close(1000, 'done'));
  await p.write(text('after close')).catch(() => {});
  await p.expectClose(1000);
  await obs.send('marker');
  assert.equal(await obs.nextText(), 'marker', 'the observer saw nothing before its marker');
  obs.terminate();
});

// RFC 6455 5.5.1 lets an endpoint answer a close at once, but the docs
// promise that raw mode relays every message to every member, the sender
// included, in the order received: messages that came before the close are
// relayed (echo included) before the close answer.
conf('close: messages before the close in the same write are relayed (sender included) before the close answer', async (p, s, room) => {
  const obs = await wsConnect(s.wsUrl(room));
  await p.write(Buffer.concat([text('one'), text('two'), close(1000)]));
  assert.equal(await obs.nextText(), 'one', 'the observer got the first message');
  assert.equal(await obs.nextText(), 'two', 'the observer got the second message');
  await p.expectEcho(OP.TEXT, 'one');
  await p.expectEcho(OP.TEXT, 'two');
  await p.expectClose(1000);
  obs.terminate();
});

conf('close: a ping right before the close is answered before the close', async (p) => {
  await p.write(Buffer.concat([ping('last'), close(1000)]));
  await p.expectPong('last');
  await p.expectClose(1000);
});

conf('close: a client that closes its TCP side after its close still gets the close answer', async (p) => {
  await p.write(close(1001, 'leaving'));
  p.c.sock.end(); // half-close: FIN after our close frame
  await p.expectClose(1001);
});

conf('close: the room forgets a closed client (others keep chatting)', async (p, s, room) => {
  const q = await WsPeer.open(s.port, room);
  await p.write(close(1000));
  await p.expectClose(1000);
  await q.write(text('alone now'));
  await q.expectEcho(OP.TEXT, 'alone now');
  q.destroy();
});
