// Case builders shared by the RFC 6455 conformance files.
//
// conf(name, fn, {args}): a fresh server (--rate 0 plus args) and a raw
// peer in its own room /ws/conf-<case>; fn(peer, server, room) talks; then
// the server must still serve a fresh client in another room.
// closes(name, codes, bytes): the bytes must make the server send a close
// frame with that code (nothing before it), then close the TCP connection.
import { startServer } from '../integration/lib.mjs';
import { testCase, WsPeer, assertServing } from './wsraw.mjs';

let caseNo = 0;

function slug(name) {
  return `conf-${++caseNo}-` + name.replace(/[^A-Za-z0-9]+/g, '-').slice(0, 40).replace(/-+$/, '');
}

export function conf(name, fn, { args = [], timeout = 20000 } = {}) {
  testCase(name, async () => {
    const s = await startServer(['--rate', '0', ...args]);
    const room = `/ws/${slug(name)}`;
    const p = await WsPeer.open(s.port, room);
    await fn(p, s, room);
    await assertServing(s, `after "${name}"`);
  }, { timeout });
}

export function closes(name, codes, bytes, opts = {}) {
  conf(`${name} -> close ${[].concat(codes).join('/')}`, async (p) => {
    const b = typeof bytes === 'function' ? bytes() : bytes;
    if (opts.split) await p.writeSplit(b, opts.split).catch(() => {});
    else await p.write(b).catch(() => { /* the server may close while we write */ });
    await p.expectClose(codes);
  }, opts);
}
