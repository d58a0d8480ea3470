// docs/protocol.md, raw mode next to JSON mode: the handshake picks the
// dialect; raw text becomes msg pushes from guest-<n>, JSON sends reach raw
// clients as bare text, raw binary stays raw, raw presence is pushed.
import {
  test, wsConnect, RawHttp, buildRequest, upgradeHeaders, wsKey, encodeFrame,
} from '../integration/lib.mjs';
import { assert, JClient, start, keys, assertTs } from './jclient.mjs';

// Finds the raw client's guest entry in a JSON members list.
function guests(members) { return members.filter((m) => /^guest-\d+$/.test(m.nick)); }

test('handshake: no subprotocol or only other subprotocols -> raw mode, no Sec-WebSocket-Protocol', async () => {
  const s = await start();
  const raw = await wsConnect(s.wsUrl('/ws/mix'));
  assert.equal(raw.response.headers['sec-websocket-protocol'], undefined);
  // Only other subprotocols: exact bytes (the ws client refuses a 101
  // without a subprotocol when it offered some).
  const other = await RawHttp.connect(s.port);
  await other.write(buildRequest('GET', '/ws/mix', upgradeHeaders(wsKey(), { 'Sec-WebSocket-Protocol': 'x-chat, v2' })));
  const head = await other.readResponse({ noBody: true });
  assert.equal(head.status, 101);
  assert.equal(head.headers['sec-websocket-protocol'], undefined);
  // Raw mode: the message comes back verbatim, no welcome push.
  await other.write(encodeFrame(1, '{"op":"ping","id":1}'));
  const f = await other.readFrame();
  assert.equal(f.opcode, 1);
  assert.equal(f.payload.toString('utf8'), '{"op":"ping","id":1}');
  assert.equal(await raw.nextText(), '{"op":"ping","id":1}');
  // JSON mode ignores the path: a JSON client on /ws/mix is in no room.
  const j = await JClient.open(s, { nick: 'j', path: '/ws/mix' });
  const rooms = await j.req('rooms');
  assert.deepEqual(rooms.rooms, [{ room: 'mix', members: 2 }]);
  await other.write(encodeFrame(1, 'not for j'));
  await j.assertNoPush((m) => m.t === 'msg', 'msg push to a JSON client that did not join');
});

test('raw text -> JSON msg push from guest-N with an offset; JSON send -> raw bare text', async () => {
  const s = await start();
  const j = await JClient.open(s, { nick: 'jay' });
  await j.joinOk('mix');
  const raw = await wsConnect(s.wsUrl('/ws/mix'));
  const jp = await j.nextPush();
  keys(jp, ['t', 'room', 'nick', 'client'], 'join push for a raw client');
  assert.equal(jp.t, 'join');
  assert.equal(jp.room, 'mix');
  assert.match(jp.nick, /^guest-\d+$/);
  assert.match(jp.client, /^c-\d+$/);
  await raw.send('hello from raw ✓');
  assert.equal(await raw.nextText(), 'hello from raw ✓', 'the raw sender gets its own text back');
  const m = await j.nextPush();
  keys(m, ['t', 'room', 'offset', 'ts', 'from', 'text'], 'msg push from a raw client');
  assert.equal(m.t, 'msg');
  assert.equal(m.room, 'mix');
  assert.equal(m.offset, 1);
  assertTs(m.ts);
  assert.equal(m.from, jp.nick);
  assert.equal(m.text, 'hello from raw ✓');
  // JSON text reaches the raw client as the bare text, as a text frame.
  const r = await j.sendOk('mix', 'from json {"x":1}', { cmid: 'c1' });
  assert.equal(r.offset, 2);
  const got = await raw.next();
  assert.equal(got.binary, false);
  assert.equal(got.text, 'from json {"x":1}');
  // A JSON-looking raw text is just text.
  await raw.send('{"op":"send","room":"mix","text":"sneaky"}');
  await raw.nextText();
  const m3 = await j.nextPush();
  assert.equal(m3.text, '{"op":"send","room":"mix","text":"sneaky"}');
  assert.equal(m3.offset, 3);
  // Both are in history, in order, the raw ones from the guest nick.
  const h = await j.req('history', { room: 'mix' });
  assert.deepEqual(h.messages.map((x) => [x.offset, x.from, x.text]), [
    [1, jp.nick, 'hello from raw ✓'], [2, 'jay', 'from json {"x":1}'], [3, jp.nick, '{"op":"send","room":"mix","text":"sneaky"}'],
  ]);
});

test('raw binary is not delivered to JSON clients (and not stored)', async () => {
  const s = await start();
  const j = await JClient.open(s, { nick: 'jay' });
  await j.joinOk('mix');
  const raw = await wsConnect(s.wsUrl('/ws/mix'));
  const raw2 = await wsConnect(s.wsUrl('/ws/mix'));
  await j.waitPush((m) => m.t === 'join');
  await j.waitPush((m) => m.t === 'join');
  const bytes = Buffer.from([0, 1, 2, 0xff, 0xfe]);
  await raw.send(bytes, { binary: true });
  const r2 = await raw2.next();
  assert.equal(r2.binary, true, 'raw members get the binary');
  assert.ok(r2.data.equals(bytes));
  await raw.next();
  await raw.send('after');
  const m = await j.nextPush();
  assert.equal(m.t, 'msg');
  assert.equal(m.text, 'after', 'the binary was skipped');
  assert.equal(m.offset, 1, 'the binary took no offset');
  assert.equal(j.binary, 0, 'no binary frame reached the JSON client');
  const h = await j.req('history', { room: 'mix' });
  assert.deepEqual(h.messages.map((x) => x.text), ['after']);
});

test('raw clients are in JSON members as guest-N; their join and leave are pushed; rooms counts them', async () => {
  const s = await start();
  const raw = await wsConnect(s.wsUrl('/ws/mix'));
  const j = await JClient.open(s, { nick: 'jay' });
  const r = await j.joinOk('mix');
  const g = guests(r.members);
  assert.equal(g.length, 1, JSON.stringify(r.members));
  keys(g[0], ['nick', 'client'], 'member');
  assert.match(g[0].client, /^c-\d+$/);
  assert.equal(r.members.length, 2);
  const rooms = await j.req('rooms');
  assert.deepEqual(rooms.rooms, [{ room: 'mix', members: 2 }]);
  // Its message comes from the same guest nick.
  await raw.send('hi');
  assert.equal((await j.nextPush()).from, g[0].nick);
  // A second raw client gets another guest nick; its join is pushed.
  const raw2 = await wsConnect(s.wsUrl('/mix'));
  const jp = await j.nextPush();
  assert.equal(jp.t, 'join');
  assert.match(jp.nick, /^guest-\d+$/);
  assert.notEqual(jp.nick, g[0].nick);
  // Disconnects are pushed as leave.
  raw.close(1000);
  assert.deepEqual(await j.nextPush(), { t: 'leave', room: 'mix', nick: g[0].nick, client: g[0].client });
  raw2.terminate();
  assert.deepEqual(await j.nextPush(), { t: 'leave', room: 'mix', nick: jp.nick, client: jp.client });
  // A JSON nick cannot pose as a guest.
  assert.equal((await j.req('nick', { nick: g[0].nick })).error.code, 'bad_nick');
});

test('the lobby: raw clients on / and /ws and JSON clients that join lobby share it', async () => {
  const s = await start();
  const j = await JClient.open(s, { nick: 'jay' });
  await j.joinOk('lobby');
  const a = await wsConnect(s.wsUrl('/'));
  const b = await wsConnect(s.wsUrl('/ws'));
  await a.send('from root');
  const m = await j.waitPush((x) => x.t === 'msg');
  assert.equal(m.room, 'lobby');
  assert.equal(m.text, 'from root');
  await j.sendOk('lobby', 'to all');
  assert.equal(await a.nextText(), 'from root');
  assert.equal(await a.nextText(), 'to all');
  assert.equal(await b.nextText(), 'from root');
  assert.equal(await b.nextText(), 'to all');
});

test('--welcome: raw clients get TEXT first, JSON clients get it as motd', async () => {
  const s = await start(['--welcome', 'hi there']);
  const raw = await wsConnect(s.wsUrl('/ws/mix'));
  assert.equal(await raw.nextText(), 'hi there');
  const j = await JClient.open(s, { nick: 'jay' });
  assert.equal(j.welcome.motd, 'hi there');
});

test('SIGTERM: raw clients close 1001, JSON clients get bye then 1012', async () => {
  const s = await start();
  const raw = await wsConnect(s.wsUrl('/ws/mix'));
  const j = await JClient.open(s, { nick: 'jay' });
  await j.joinOk('mix');
  process.kill(s.proc.pid, 'SIGTERM');
  const [ri, ji] = await Promise.all([raw.waitClose(10000), j.waitClose(10000)]);
  assert.equal(ri.code, 1001);
  assert.equal(ji.code, 1012);
  assert.equal(j.log.filter((e) => e.kind === 'push' && e.msg.t === 'bye').length, 1);
  assert.equal(await s.stop('SIGTERM', 15000), 0);
});
