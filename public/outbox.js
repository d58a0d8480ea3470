// The outbox: sends not acknowledged yet, oldest first. No DOM and no socket
// (tests/js/ drive it). How it keeps "never lose or duplicate a send": each
// send has a cmid and stays here, drawn as pending, until its ack or the same
// cmid seen in a message from the hub (a push, a resume or history page)
// settles it; after a reconnect it is resent with the same cmid and the hub
// dedupes. What is typed while disconnected waits here and goes out once
// hello and the join are through; a send the hub refuses for good is
// `failed` and offers retry and discard.

export const MAX_TEMPORARY_TRIES = 5; // a send refused this often for passing reasons has failed
export const TEMPORARY = new Set(['rate_limited', 'storage', 'internal']);

export class Outbox {
  constructor(prefix) {
    this.items = [];
    this.prefix = prefix || Math.random().toString(36).slice(2, 8) + Date.now().toString(36);
    this.seq = 0;
  }

  add(room, text, online, extra) {
    const item = {
      cmid: `${this.prefix}-${++this.seq}`, room, text, ts: Date.now(),
      status: online ? 'sending' : 'waiting', error: null, tries: 0, ...(extra || {}),
    };
    this.items.push(item);
    return item;
  }

  has(item) { return this.items.includes(item); }

  // A message with this cmid is in the room: stop resending. Returns whether
  // an item was settled.
  settle(cmid) {
    const i = this.items.findIndex((o) => o.cmid === cmid);
    if (i < 0) return false;
    this.items.splice(i, 1);
    return true;
  }

  remove(item) {
    const i = this.items.indexOf(item);
    if (i >= 0) this.items.splice(i, 1);
  }

  // The connection dropped: what was in flight waits for the next one.
  disconnected() {
    for (const item of this.items) {
      item.inflight = false;
      if (item.status === 'sending') item.status = 'waiting';
    }
  }

  // No reconnect follows by itself: what waits has failed.
  failWaiting(why) {
    for (const item of this.items) if (item.status === 'waiting') { item.status = 'failed'; item.error = why; }
  }

  // What to send now (after a hello or a join): not failed, not in flight.
  due(room) {
    return this.items.filter((o) => o.status !== 'failed' && !o.inflight && (room === undefined || o.room === room));
  }

  forRoom(room) { return this.items.filter((o) => o.room === room); }

  renameRoom(from, to) { for (const o of this.items) if (o.room === from) o.room = to; }

  dropRoom(room) { this.items = this.items.filter((o) => o.room !== room); }

  // Judges a refused send: 'retry' (temporary, after a pause), 'wait' (sent
  // again after the reconnect or rejoin), or 'failed' (error set).
  refused(item, err) {
    if (err.code === 'disconnected') {
      if (item.status !== 'failed') item.status = 'waiting';
      return 'wait';
    }
    if (TEMPORARY.has(err.code) && ++item.tries < MAX_TEMPORARY_TRIES) {
      item.status = 'waiting';
      return 'retry';
    }
    if (err.code === 'not_joined') {
      item.status = 'waiting';
      return 'wait';
    }
    item.status = 'failed';
    item.error = err.message || err.code;
    return 'failed';
  }
}
