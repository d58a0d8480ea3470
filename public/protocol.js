// The wire side of the page (subprotocol chathub.v1, docs/protocol.md) that
// needs no DOM: request/reply matching by id, the reconnect backoff, and
// hello's resume map. tests/js/ drive it with scripted frames.

export const PROTOCOL = 'chathub.v1';
export const BACKOFF_BASE_MS = 500;
export const BACKOFF_CAP_MS = 20000;
// Close codes that say the fault is ours: a retry repeats it.
export const NO_RETRY = new Set([1002, 1003, 1007, 1008, 1009]);

// Full jitter spreads a crowd of clients over the whole window; a bye push
// tells us the hub's own choice (byeMs), which spreads them already.
export function backoff(attempt, byeMs, random = Math.random) {
  if (byeMs !== null && byeMs !== undefined) return byeMs;
  return random() * Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** Math.min(attempt, 10));
}

// Whether a close code means "reconnect by itself".
export const retries = (code) => !((code >= 4500 && code <= 4999) || NO_RETRY.has(code) || code === 4401);

// hello.resume: every room with a known epoch, from the offset held.
export function resumeMap(rooms) {
  const resume = {};
  for (const r of rooms) if (r.epoch && !r.draft) resume[r.name] = { epoch: r.epoch, offset: r.last };
  return resume;
}

// Requests in flight, matched to replies by id. send(text) puts one frame on
// the socket, or returns false when there is none to put it on.
export class Requests {
  constructor() {
    this.pending = new Map();
    this.nextId = 1;
  }

  request(send, msg) {
    return new Promise((resolve, reject) => {
      const id = this.nextId++;
      this.pending.set(id, { resolve, reject });
      if (!send(JSON.stringify({ ...msg, id }))) {
        this.pending.delete(id);
        reject({ code: 'disconnected', message: 'not connected' });
      }
    });
  }

  // Parses one frame: a push goes to onPush(m); a reply settles its request.
  frame(data, onPush) {
    let m;
    try { m = JSON.parse(data); } catch { return; }
    if (!m || typeof m !== 'object') return;
    if (typeof m.t === 'string') { onPush(m); return; }
    const p = this.pending.get(m.id);
    if (!p) return;
    this.pending.delete(m.id);
    if (m.ok) p.resolve(m); else p.reject(m.error || { code: 'internal', message: 'request failed' });
  }

  // The socket closed: every request in flight fails as "disconnected".
  failAll() {
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const p of all) p.reject({ code: 'disconnected', message: 'connection lost' });
  }
}
