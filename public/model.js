// The client's model of a room's message stream (docs/protocol.md), with no
// DOM and no socket, so that Node tests (tests/js/) can script server frames
// against it. How it keeps the page's promises:
//  - Exactly once: a message is identified by (room, offset). Each room keeps
//    a map offset -> message, so a message that arrives twice (a push, then
//    again in a resume, join or history reply) is held once.
//  - Resume: room.last is the offset up to which the client holds every
//    message (or knows it is gone, from a gap push or a complete history
//    page). A reconnect sends it in hello.resume; holes between last and the
//    newest offset known (head) are filled with history before= pages, which
//    holeRequest() names and fillDone() settles.
//  - Epochs: offsets of another epoch mean nothing. resetEpoch() keeps what
//    was held as an archive (shown above a note) and restarts the stream.
//  - Amendments (edits, deletes, reactions) change a held message in place
//    and are idempotent: the same edited push twice, or an edit that is
//    already in a history page, changes nothing the second time.

// The hub compares nicks with ASCII-only case folding.
export const fold = (s) => String(s).replace(/[A-Z]/g, (c) => c.toLowerCase());
export const sameNick = (a, b) => fold(a) === fold(b);

export function newRoom(name, peer) {
  return {
    name,
    dm: name.startsWith('@'),
    peer: peer || null,   // a DM's other party, by its real (unfolded) nick
    draft: false,         // a DM not opened on the hub yet: its first send is a `dm` op
    epoch: null,
    last: 0,              // everything up to here is held (or known gone)
    head: 0,              // the newest offset known to exist
    msgs: new Map(),      // offset -> message (see normalize)
    sorted: null,         // cache of msgs in offset order
    gaps: [],             // [from, to] ranges the hub cannot deliver
    archive: [],          // messages of an earlier epoch, shown above a note
    noOlder: false,       // nothing older than what we hold exists
    members: new Map(),   // folded nick -> nick
    count: null,          // member count, when the hub sends a count instead of a list
    unread: 0,
    mentions: 0,          // unread messages that mention us
    topic: '',
    typing: new Map(),    // folded nick -> {nick, timer}
    typingSentAt: 0,
    typingTimer: null,
    joined: false,
    joining: false,
    filling: false,
    loadingOlder: false,
    draftText: '',
  };
}

export const inGap = (r, o) => r.gaps.find(([from, to]) => o >= from && o <= to) || null;

// Moves r.last up over every offset held or known gone.
export function advance(r) {
  for (;;) {
    if (r.msgs.has(r.last + 1)) { r.last++; continue; }
    const g = inGap(r, r.last + 1);
    if (g) { r.last = g[1]; continue; }
    break;
  }
  if (r.last > r.head) r.head = r.last;
}

export function sorted(r) {
  if (!r.sorted) r.sorted = [...r.msgs.values()].sort((a, b) => a.offset - b.offset);
  return r.sorted;
}
export const oldestOffset = (r) => (r.msgs.size ? sorted(r)[0].offset : r.last + 1);
export const newestOffset = (r) => (r.msgs.size ? sorted(r)[sorted(r).length - 1].offset : 0);

// A message as the page keeps it, from a msg push or a history entry; null
// for something that is not one.
export function normalize(m) {
  if (!m || !Number.isSafeInteger(m.offset) || m.offset < 1) return null;
  const msg = { offset: m.offset, ts: Number(m.ts) || Date.now(), from: String(m.from ?? ''), cmid: m.cmid };
  if (m.deleted) {
    msg.deleted = true;
    msg.text = '';
  } else {
    msg.text = String(m.text ?? '');
  }
  if (Number.isSafeInteger(m.reply_to)) msg.replyTo = m.reply_to;
  if (Array.isArray(m.mentions)) msg.mentions = m.mentions.map(String);
  if (m.edited_ts) msg.editedTs = Number(m.edited_ts);
  msg.reactions = new Map();
  if (!m.deleted && m.reactions && typeof m.reactions === 'object') {
    for (const [e, n] of Object.entries(m.reactions)) if (Number(n) > 0) msg.reactions.set(e, Number(n));
  }
  msg.mine = new Set(!m.deleted && Array.isArray(m.mine) ? m.mine : []);
  return msg;
}

// Merges messages (from any source) into a room. Returns {added, appended,
// inserted, cmids, changed}: added are the messages new to the room, appended
// those of them newer than anything held before (in offset order), inserted
// whether some landed below the newest, cmids every cmid seen (their sends
// are settled), changed held messages a newer copy amended (edit or delete).
export function merge(r, list) {
  const maxBefore = newestOffset(r);
  const out = { added: [], appended: [], inserted: false, cmids: [], changed: [] };
  for (const raw of list || []) {
    const msg = normalize(raw);
    if (!msg) continue;
    if (msg.cmid) out.cmids.push(msg.cmid);
    const had = r.msgs.get(msg.offset);
    if (had) {
      // A later copy may carry an amendment this one missed.
      if ((msg.deleted && !had.deleted) || (msg.editedTs && msg.editedTs > (had.editedTs || 0))) {
        Object.assign(had, { text: msg.text, deleted: !!msg.deleted, editedTs: msg.editedTs, reactions: msg.reactions, mine: msg.mine });
        had.el = null;
        out.changed.push(had);
      }
      continue;
    }
    r.msgs.set(msg.offset, msg);
    r.sorted = null;
    if (msg.offset > r.head) r.head = msg.offset;
    out.added.push(msg);
    if (msg.offset > maxBefore) out.appended.push(msg); else out.inserted = true;
  }
  out.appended.sort((a, b) => a.offset - b.offset);
  advance(r);
  return out;
}

// Offsets of another epoch mean nothing: keep what was held, above a note,
// and start the new stream from `last`. Returns whether it reset.
export function resetEpoch(r, epoch, last) {
  if (r.epoch === epoch) return false;
  if (r.msgs.size) {
    r.archive.push(...sorted(r), { sys: 'The server lost this room’s history. Messages above are from before.' });
  }
  r.epoch = epoch;
  r.msgs = new Map();
  r.sorted = null;
  r.gaps = [];
  r.last = r.head = last;
  r.noOlder = false;
  return true;
}

// The epoch of a reply: a different one than held resets the room.
export function checkEpoch(r, epoch) {
  if (!epoch) return false;
  const reset = !!r.epoch && r.epoch !== epoch && resetEpoch(r, epoch, 0);
  r.epoch = epoch;
  return reset;
}

// A gap push: offsets the hub cannot deliver, or a new epoch.
export function applyGap(r, m) {
  if (m.reason === 'epoch' || (r.epoch && m.epoch !== r.epoch)) {
    // The room's history was lost: offsets restart; 1..to are gone too.
    resetEpoch(r, m.epoch, Math.max(0, Number(m.to) || 0));
  } else {
    r.epoch = r.epoch || m.epoch;
    if (m.to >= m.from) r.gaps.push([m.from, m.to]);
    advance(r);
  }
}

// The next history request that fills the hole above r.last, newest page
// first ("down to what we had"), or null when nothing is missing.
// maxPage: the hub's largest page.
export function holeRequest(r, maxPage) {
  if (!r.epoch || r.last >= r.head) return null;
  let next = r.head + 1; // the lowest offset we hold above the hole
  for (const m of sorted(r)) if (m.offset > r.last) { next = m.offset; break; }
  return { room: r.name, before: next, limit: Math.min(maxPage, next - r.last - 1) };
}

// After a fill page (already merged): offsets below the page that the hub no
// longer keeps (it says complete, or sent nothing) are a gap.
// Returns whether a gap was recorded.
export function fillDone(r, req, rep) {
  const got = rep.messages || [];
  const lowest = got.length ? got[0].offset : req.before;
  if (r.last < lowest - 1 && (rep.complete || !got.length)) {
    r.gaps.push([r.last + 1, lowest - 1]); // expired meanwhile
    advance(r);
    return true;
  }
  return false;
}

// ------------------------------------------------------------- amendments
// Each returns the message it changed, or null when there was nothing to
// change (unknown offset, or the same amendment seen already).

export function applyEdited(r, m) {
  const msg = r.msgs.get(m.offset);
  if (!msg || msg.deleted) return null;
  const ts = Number(m.edited_ts) || 0;
  if (msg.editedTs && ts && ts <= msg.editedTs && msg.text === String(m.text)) return null;
  if (msg.editedTs && ts && ts < msg.editedTs) return null; // an older edit, late
  msg.text = String(m.text ?? '');
  msg.editedTs = ts || Date.now();
  msg.el = null;
  return msg;
}

export function applyDeleted(r, m) {
  const msg = r.msgs.get(m.offset);
  if (!msg || msg.deleted) return null;
  msg.deleted = true;
  msg.text = '';
  msg.reactions = new Map();
  msg.mine = new Set();
  msg.el = null;
  return msg;
}

// A reaction push: count is the hub's count after the change; mine follows
// the pushes naming our nick.
export function applyReaction(r, m, myNick) {
  const msg = r.msgs.get(m.offset);
  if (!msg || msg.deleted || typeof m.emoji !== 'string') return null;
  const count = Math.max(0, Number(m.count) || 0);
  if (count) msg.reactions.set(m.emoji, count); else msg.reactions.delete(m.emoji);
  if (myNick !== undefined && sameNick(m.nick, myNick)) {
    if (m.on) msg.mine.add(m.emoji); else msg.mine.delete(m.emoji);
  }
  msg.el = null;
  return msg;
}

// Whether a message mentions the nick (the hub lists the nicks as shown).
export const mentions = (msg, nick) => !!msg.mentions && msg.mentions.some((n) => sameNick(n.replace(/^~/, ''), nick.replace(/^~/, '')));
