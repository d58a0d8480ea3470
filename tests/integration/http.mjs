// HTTP side of chathub: static files, caching, errors and limits, pipelining,
// keep-alive, path traversal, WebSocket upgrade validation, --public DIR.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  test, assert, startServer, RawHttp, httpRequest, buildRequest, upgradeHeaders, wsKey, wsAccept,
  cleanup,
} from './lib.mjs';

function get(path, headers) { return buildRequest('GET', path, headers); }

test('GET / serves the embedded page as text/html', async () => {
  const s = await startServer();
  const r = await httpRequest(s.port, get('/'));
  assert.equal(r.status, 200, r.statusLine);
  assert.match(r.headers['content-type'] || '', /^text\/html\b/);
  assert.ok(r.body.toString().includes('<html'), 'body contains <html');
  assert.equal(Number(r.headers['content-length']), r.body.length);
});

test('HEAD / has the same headers as GET and no body', async () => {
  const s = await startServer();
  const g = await httpRequest(s.port, get('/'));
  const c = await RawHttp.connect(s.port);
  await c.write(buildRequest('HEAD', '/', { Connection: 'close' }));
  const h = await c.readResponse({ noBody: true });
  assert.equal(h.status, 200, h.statusLine);
  for (const name of ['content-type', 'content-length', 'etag']) {
    assert.equal(h.headers[name], g.headers[name], `${name} of HEAD matches GET`);
  }
  await c.waitClosed();
  assert.equal(c.buf.length, 0, `no body after a HEAD response, got ${c.buf.length} bytes`);
});

test('app.js and style.css have their MIME types', async () => {
  const s = await startServer();
  const js = await httpRequest(s.port, get('/app.js'));
  assert.equal(js.status, 200, js.statusLine);
  assert.match(js.headers['content-type'] || '', /^(text|application)\/javascript\b/);
  const css = await httpRequest(s.port, get('/style.css'));
  assert.equal(css.status, 200, css.statusLine);
  assert.match(css.headers['content-type'] || '', /^text\/css\b/);
});

test('ETag with If-None-Match gives 304 and no body', async () => {
  const s = await startServer();
  const g = await httpRequest(s.port, get('/style.css'));
  const etag = g.headers.etag;
  assert.ok(etag, 'GET /style.css has an ETag');
  const c = await RawHttp.connect(s.port);
  await c.write(get('/style.css', { 'If-None-Match': etag, Connection: 'close' }));
  const r = await c.readResponse({ noBody: true });
  assert.equal(r.status, 304, r.statusLine);
  await c.waitClosed();
  assert.equal(c.buf.length, 0, `no body after 304, got ${c.buf.length} bytes`);
  // A different tag gets the file again.
  const r2 = await httpRequest(s.port, get('/style.css', { 'If-None-Match': '"nope"' }));
  assert.equal(r2.status, 200, r2.statusLine);
});

test('GET /nope is 404', async () => {
  const s = await startServer();
  const r = await httpRequest(s.port, get('/nope'));
  assert.equal(r.status, 404, r.statusLine);
});

test('POST / is 405 with Allow: GET, HEAD', async () => {
  const s = await startServer();
  const r = await httpRequest(s.port, buildRequest('POST', '/', { 'Content-Length': '0' }));
  assert.equal(r.status, 405, r.statusLine);
  assert.equal(r.headers.allow, 'GET, HEAD');
});

test('a garbage request line is 400', async () => {
  const s = await startServer();
  const c = await RawHttp.connect(s.port);
  await c.write('this is not http\r\n\r\n');
  const r = await c.readResponse();
  assert.equal(r.status, 400, r.statusLine);
  await c.waitClosed();
});

test('headers over 8 KiB are 431', async () => {
  const s = await startServer();
  const c = await RawHttp.connect(s.port);
  await c.write(get('/', { 'X-Big': 'a'.repeat(9000) }));
  const r = await c.readResponse();
  assert.equal(r.status, 431, r.statusLine);
  await c.waitClosed();
});

test('200 header lines are 431', async () => {
  const s = await startServer();
  const headers = {};
  for (let i = 0; i < 200; i++) headers[`X-H${i}`] = 'v';
  const c = await RawHttp.connect(s.port);
  await c.write(get('/', headers));
  const r = await c.readResponse();
  assert.equal(r.status, 431, r.statusLine);
  await c.waitClosed();
});

test('three pipelined GETs get three responses in order', async () => {
  const s = await startServer();
  const c = await RawHttp.connect(s.port);
  await c.write(get('/style.css') + get('/') + get('/app.js'));
  const types = [];
  for (let i = 0; i < 3; i++) {
    const r = await c.readResponse();
    assert.equal(r.status, 200, r.statusLine);
    types.push(r.headers['content-type']);
  }
  assert.match(types[0], /^text\/css/);
  assert.match(types[1], /^text\/html/);
  assert.match(types[2], /javascript/);
});

test('keep-alive: two sequential requests on one connection', async () => {
  const s = await startServer();
  const c = await RawHttp.connect(s.port);
  await c.write(get('/'));
  const a = await c.readResponse();
  assert.equal(a.status, 200, a.statusLine);
  assert.ok(!c.ended, 'connection still open after the first response');
  await c.write(get('/app.js'));
  const b = await c.readResponse();
  assert.equal(b.status, 200, b.statusLine);
  assert.match(b.headers['content-type'], /javascript/);
});

test('Connection: close makes the server close after the response', async () => {
  const s = await startServer();
  const c = await RawHttp.connect(s.port);
  await c.write(get('/', { Connection: 'close' }));
  const r = await c.readResponse();
  assert.equal(r.status, 200, r.statusLine);
  await c.waitClosed();
});

test('path traversal attempts never succeed', async () => {
  const s = await startServer();
  const paths = [
    '/../../etc/passwd',
    '/%2e%2e/%2e%2e/etc/passwd',
    '/..%2f..%2fetc%2fpasswd',
    '/%2e%2e%5c',
    '//etc/passwd',
    '/a%00b',
    '/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd',
    '/..\\..\\etc\\passwd',
  ];
  for (const p of paths) {
    const r = await httpRequest(s.port, get(p));
    assert.ok(r.status === 400 || r.status === 404, `${p}: expected 400 or 404, got ${r.statusLine}`);
    assert.ok(!r.body.toString('latin1').includes('root:'), `${p}: body must not hold /etc/passwd`);
  }
});

async function upgrade(s, pathName, headers, method = 'GET') {
  return httpRequest(s.port, buildRequest(method, pathName, headers));
}

test('a valid upgrade gets 101 with the right Sec-WebSocket-Accept', async () => {
  const s = await startServer();
  const key = wsKey();
  const r = await upgrade(s, '/ws/room1', upgradeHeaders(key));
  assert.equal(r.status, 101, r.statusLine);
  assert.equal(r.headers['sec-websocket-accept'], wsAccept(key));
  assert.match(r.headers.upgrade || '', /websocket/i);
});

test('Sec-WebSocket-Version 12 is 426 with Sec-WebSocket-Version: 13', async () => {
  const s = await startServer();
  const r = await upgrade(s, '/ws', upgradeHeaders(wsKey(), { 'Sec-WebSocket-Version': '12' }));
  assert.equal(r.status, 426, r.statusLine);
  assert.equal(r.headers['sec-websocket-version'], '13');
});

test('a key of 15 bytes is 400', async () => {
  const s = await startServer();
  const r = await upgrade(s, '/ws', upgradeHeaders(wsKey(15)));
  assert.equal(r.status, 400, r.statusLine);
});

test('a missing key is 400', async () => {
  const s = await startServer();
  const r = await upgrade(s, '/ws', upgradeHeaders(undefined, { 'Sec-WebSocket-Key': undefined }));
  assert.equal(r.status, 400, r.statusLine);
});

test('Upgrade: WebSocket with Connection: keep-alive, Upgrade is 101', async () => {
  const s = await startServer();
  const key = wsKey();
  const r = await upgrade(s, '/ws/lobby', upgradeHeaders(key, {
    Upgrade: 'WebSocket', Connection: 'keep-alive, Upgrade',
  }));
  assert.equal(r.status, 101, r.statusLine);
  assert.equal(r.headers['sec-websocket-accept'], wsAccept(key));
});

test('bad room names are 400', async () => {
  const s = await startServer();
  for (const p of ['/ws/bad%20name', '/ws/' + 'a'.repeat(65), '/ws/b@d']) {
    const r = await upgrade(s, p, upgradeHeaders());
    assert.equal(r.status, 400, `${p}: ${r.statusLine}`);
  }
  // 64 characters is the longest valid name.
  const ok = await upgrade(s, '/ws/' + 'a'.repeat(64), upgradeHeaders());
  assert.equal(ok.status, 101, `64-char room: ${ok.statusLine}`);
});

test('POST with upgrade headers is 400 or 405', async () => {
  const s = await startServer();
  const r = await upgrade(s, '/ws', { ...upgradeHeaders(), 'Content-Length': '0' }, 'POST');
  assert.ok(r.status === 400 || r.status === 405, `expected 400 or 405, got ${r.statusLine}`);
});

test('--public DIR serves that directory instead of the embedded page', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chathub-public-'));
  cleanup(() => fs.rmSync(dir, { recursive: true, force: true }));
  const marker = 'custom-page-' + wsKey(6).replace(/[^A-Za-z0-9]/g, '');
  fs.writeFileSync(path.join(dir, 'index.html'),
    `<!doctype html><html><head><title>t</title></head><body>${marker}</body></html>\n`);
  fs.writeFileSync(path.join(dir, 'extra.css'), 'body { color: red }\n');
  const s = await startServer(['--public', dir]);
  const r = await httpRequest(s.port, get('/'));
  assert.equal(r.status, 200, r.statusLine);
  assert.match(r.headers['content-type'] || '', /^text\/html\b/);
  assert.ok(r.body.toString().includes(marker), 'the custom index.html is served');
  const css = await httpRequest(s.port, get('/extra.css'));
  assert.equal(css.status, 200, css.statusLine);
  assert.match(css.headers['content-type'] || '', /^text\/css\b/);
  const js = await httpRequest(s.port, get('/app.js'));
  assert.equal(js.status, 404, `embedded /app.js is not served with --public: ${js.statusLine}`);
});
