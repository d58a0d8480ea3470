// chathub browser client: JSON mode (subprotocol chathub.v1, docs/protocol.md).
//
// One page, no framework, no build step: ES modules loaded by the browser.
// This module is the view and the glue; the parts that need no DOM are
// model.js (offsets, holes, epochs, amendments), outbox.js (cmids, resends),
// protocol.js (requests, backoff, resume) and markdown.js (parse; render
// builds nodes), all tested under Node in tests/js/. How it keeps its promises:
//  - Exactly once: a message is identified by (room, offset). Each room keeps a
//    map offset -> message and the list is drawn from it, so a message that
//    arrives twice (a push, then again in a resume, join or history reply) is
//    shown once.
//  - Resume: room.last is the offset up to which the client holds every
//    message (or knows it is gone, from a gap push). A reconnect sends it in
//    hello.resume; holes (a join reply with "complete": false, a push that
//    skips offsets, a new epoch) are filled with history before=.
//  - Never lose or duplicate a send: each send has a cmid and stays in the
//    outbox, drawn as pending, until its ack (or the same cmid seen in
//    history) settles it; after a reconnect it is resent with the same cmid
//    and the hub dedupes. What is typed while disconnected joins the outbox
//    (greyed, with a clock) and goes out by itself once hello and the join
//    are through; a send the hub refuses for good offers retry and discard.
//  - Scrollback: a sentinel above the oldest message, watched by an
//    IntersectionObserver, loads older pages as the reader scrolls up. Where
//    the hub keeps nothing older (its --history limit, announced in
//    hello.limits.history), a marker says so instead.
//  - User data (text, nicks, room names) reaches the DOM only as text nodes.
import {
  fold, sameNick, newRoom, inGap, advance, sorted, oldestOffset, merge, resetEpoch, checkEpoch,
  applyGap, holeRequest, fillDone, applyEdited, applyDeleted, applyReaction, mentions,
} from './model.js';
import { Outbox } from './outbox.js';
import { PROTOCOL, backoff, NO_RETRY, resumeMap, Requests } from './protocol.js';
import { parse as parseMarkdown, render as renderMarkdown } from './markdown.js';

(() => {
  // --------------------------------------------------------------- constants
  const ROOM_RE = /^[A-Za-z0-9_.:-]{1,64}$/;
  const STORE_KEY = 'chathub.client';
  const JOIN_HISTORY = 50;        // messages shown when a room is opened
  const OLDER_PAGE = 100;         // one page of scrollback (the hub's largest)
  const JUMP_PAGES = 5;           // a jump to an older message loads at most this many pages down to it
  const OLDER_MARGIN_PX = 600;    // start loading this far before the top is reached
  const FILL_PAGE = 100;          // the hub's largest history page
  const TYPING_EVERY_MS = 3000;   // the hub forwards at most one per 3 s anyway
  const PING_EVERY_MS = 25000;    // browsers hide WebSocket pings: ask the hub ourselves
  const PONG_TIMEOUT_MS = 10000;
  const ROOMS_REFRESH_MS = 30000;
  const CONNECT_TIMEOUT_MS = 15000; // from new WebSocket() to a hello reply
  const GROUP_MS = 5 * 60 * 1000; // a sender's messages this close share one header
  const LONG_CHARS = 1200;        // longer messages are shown collapsed ("Show more")
  const LONG_LINES = 16;          // and so are ones with more lines than this

  // ----------------------------------------------------------------- helpers
  const $ = (id) => document.getElementById(id);

  // Builds an element. Children that are strings become text nodes, which is
  // how every piece of user data gets into the page.
  function h(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const kid of kids) if (kid !== null && kid !== undefined && kid !== false) e.append(kid);
    return e;
  }

  // The hub names DM rooms with ASCII-only case folding.
  const dmName = (a, b) => '@' + [fold(a), fold(b)].sort().join(',');

  function nickProblem(n) {
    if (!n) return 'Pick a nickname.';
    if ([...n].length > 32 || new TextEncoder().encode(n).length > 100) return 'At most 32 characters.';
    if (/[\u0000-\u001f\u007f-\u009f]/.test(n)) return 'No control characters.';
    if (n.includes(',')) return 'No commas.';
    if (n !== n.trim()) return 'No spaces at the start or the end.';
    if (/^guest-/i.test(n) || n.startsWith('@')) return 'It cannot start with “guest-” or “@”.';
    return null;
  }

  function suggestNick() {
    const a = ['brave', 'calm', 'eager', 'fuzzy', 'gentle', 'happy', 'jolly', 'lucky', 'mellow', 'quiet', 'sunny', 'witty'];
    const b = ['otter', 'panda', 'fox', 'heron', 'koala', 'lynx', 'owl', 'puffin', 'quokka', 'seal', 'tapir', 'wren'];
    const pick = (l) => l[Math.floor(Math.random() * l.length)];
    return `${pick(a)}-${pick(b)}-${Math.floor(10 + Math.random() * 90)}`;
  }

  const timeFmt = new Intl.DateTimeFormat(undefined, { hour: 'numeric', minute: '2-digit' });
  const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'short' });
  const dayFmt = new Intl.DateTimeFormat(undefined, { weekday: 'long', month: 'long', day: 'numeric' });
  const dayKey = (ts) => new Date(ts).toDateString();
  function dayLabel(ts) {
    const d = new Date(ts);
    const today = new Date();
    const yesterday = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1);
    if (d.toDateString() === today.toDateString()) return 'Today';
    if (d.toDateString() === yesterday.toDateString()) return 'Yesterday';
    return dayFmt.format(d) + (d.getFullYear() !== today.getFullYear() ? ', ' + d.getFullYear() : '');
  }

  // A stable hue per nick, so people are recognisable at a glance.
  function hue(nick) {
    let x = 0;
    for (const c of fold(nick)) x = (x * 31 + c.codePointAt(0)) % 360;
    return x;
  }
  function avatar(nick, el) {
    const a = el || h('span', { class: 'avatar', 'aria-hidden': 'true' });
    a.textContent = ([...String(nick)][0] || '?').toUpperCase();
    a.style.setProperty('--hue', String(hue(nick)));
    return a;
  }

  // --------------------------------------------------------------- the state
  const saved = (() => {
    try { return JSON.parse(localStorage.getItem(STORE_KEY)) || {}; } catch { return {}; }
  })();

  // A connection token (docs/protocol.md "Signed users") comes in the page
  // URL's fragment, #token=..., which browsers never send to a server (so it
  // is in no access log); it is taken out of the address bar at once, and
  // kept for this tab only (sessionStorage), so that a reload still has it.
  const TOKEN_KEY = 'chathub.token';
  const initialHash = location.hash; // #room=NAME&token=... (or #NAME): read before the token is taken out
  const urlToken = (() => {
    const m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
    if (!m) return null;
    history.replaceState(null, '', location.pathname + location.search);
    return decodeURIComponent(m[1]);
  })();
  let token = urlToken;
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token); else token = sessionStorage.getItem(TOKEN_KEY);
  } catch { /* no storage: the token lasts as long as the page */ }

  const outbox = new Outbox();
  const reqs = new Requests();
  const S = {
    user: null,            // {sub, name, role} once a token signed us in
    guest: false,          // the hub has tokens on and we are a guest (~nick)
    authHold: false,       // the hub needs a (fresh) token: no reconnect by itself
    nick: typeof saved.nick === 'string' && !nickProblem(saved.nick) ? saved.nick : suggestNick(),
    nickChosen: !!saved.nickChosen,
    rooms: new Map(),      // name -> room (see newRoom)
    current: null,         // name of the room on screen
    publicRooms: [],       // from the `rooms` op
    get outbox() { return outbox.items; }, // sends not acknowledged yet, oldest first
    ws: null,
    conn: 'connecting',    // connecting | online | reconnecting | offline
    connDetail: '',
    everOnline: false,     // a hello has succeeded on this page
    attempt: 0,            // reconnect attempts since the last good hello
    retryAt: 0,
    retryTimer: null,
    byeRetryMs: null,      // the hub asked for this delay (bye push)
    hold: false,           // do not reconnect until the user acts (nick dialog)
    limits: { max_text: 4000 },
    motd: '',
  };

  function save() {
    const rooms = [...S.rooms.values()].filter((r) => !r.draft).map((r) => [r.name, r.peer]);
    try {
      localStorage.setItem(STORE_KEY, JSON.stringify({
        nick: S.nick, nickChosen: S.nickChosen, current: S.current, rooms, askedNotify: !!saved.askedNotify,
      }));
    } catch { /* private mode: the page still works, it just forgets */ }
  }

  function getRoom(name, peer) {
    let r = S.rooms.get(name);
    if (!r) {
      r = newRoom(name, peer);
      S.rooms.set(name, r);
      save();
    } else if (peer && !r.peer) {
      r.peer = peer;
    }
    return r;
  }

  const cur = () => (S.current ? S.rooms.get(S.current) || null : null);
  const online = () => S.conn === 'online';

  function peerName(r) {
    if (r.peer) return r.peer;
    const parts = r.name.slice(1).split(',');
    return parts.find((p) => p !== fold(S.nick)) || parts[0];
  }
  const roomLabel = (r) => (r.dm ? '@' + peerName(r) : '#' + r.name);

  // ------------------------------------------------------------ connection
  function connect() {
    clearTimeout(S.retryTimer);
    S.retryTimer = null;
    if (S.ws) return;
    S.hold = false;
    S.byeRetryMs = null;
    setConn('connecting');
    const ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws', PROTOCOL);
    S.ws = ws;
    ws.onopen = () => { if (S.ws === ws) hello(); };
    ws.onmessage = (e) => { if (S.ws === ws) onFrame(e.data); };
    ws.onclose = (e) => { if (S.ws === ws) closed(e.code, e.reason); };
    // A connection attempt into a black hole can hang for minutes: cut it.
    clearTimeout(S.connectTimer);
    S.connectTimer = setTimeout(() => {
      if (S.ws === ws && S.conn !== 'online') dropSocket(4000, 'connect timeout');
    }, CONNECT_TIMEOUT_MS);
  }

  // Gives up on the current socket at once (a dead TCP connection may take
  // long to report its close) and goes through the normal close path.
  function dropSocket(code, reason) {
    const ws = S.ws;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = null;
    try { ws.close(code, reason); } catch { /* already closing */ }
    closed(code, reason);
  }

  function closed(code, reason) {
    S.ws = null;
    clearTimeout(S.connectTimer);
    stopTimers();
    for (const r of S.rooms.values()) {
      r.joined = r.joining = false;
      for (const t of r.typing.values()) clearTimeout(t.timer);
      r.typing.clear();
    }
    outbox.disconnected();
    reqs.failAll();
    renderPending();
    renderTyping();

    if (S.hold) return setConn('offline', S.connDetail);
    if (code === 4401) {
      // The token's time is up: only the site can sign a fresh one.
      try { sessionStorage.removeItem(TOKEN_KEY); } catch { /* nothing kept */ }
      token = null;
      S.hold = S.authHold = true;
      S.connDetail = 'Your session expired. Open the chat again from the site it belongs to ' +
        'to sign in afresh.';
      return setConn('offline', S.connDetail);
    }
    if ((code >= 4500 && code <= 4999) || NO_RETRY.has(code)) {
      // No reconnect follows by itself: what waits in the outbox has failed,
      // and offers retry (which waits for "Retry now") or discard.
      outbox.failWaiting('disconnected by the server');
      renderPending();
      return setConn('offline', `Disconnected by the server (${code}${reason ? ': ' + reason : ''}).`);
    }
    if (navigator.onLine === false) {
      // The 'online' event reconnects; until then attempts would only fail.
      return setConn('offline', 'No network connection. Waiting for it to come back…');
    }
    // Full jitter spreads a crowd of clients over the whole window; a bye
    // tells us the hub's own choice, which spreads them already.
    const delay = backoff(S.attempt, S.byeRetryMs);
    S.lastRetry = { code, delay, bye: S.byeRetryMs !== null }; // for tests and debugging
    S.byeRetryMs = null;
    S.attempt++;
    S.retryAt = Date.now() + delay;
    S.retryTimer = setTimeout(connect, delay);
    setConn('reconnecting', code === 1012 || code === 1001 ? 'The server is restarting.' : 'Connection lost.');
  }

  function request(msg) {
    return reqs.request((text) => {
      if (!S.ws || S.ws.readyState !== WebSocket.OPEN) return false;
      S.ws.send(text);
      return true;
    }, msg);
  }

  // Requests without an id: the hub answers only if they fail (error push).
  function tell(msg) {
    if (S.ws && S.ws.readyState === WebSocket.OPEN) S.ws.send(JSON.stringify(msg));
  }

  function onFrame(data) {
    reqs.frame(data, (m) => { if (Object.prototype.hasOwnProperty.call(PUSH, m.t)) PUSH[m.t](m); });
  }

  async function hello() {
    const resume = resumeMap(S.rooms.values());
    let rep;
    try {
      const nick = S.guest ? S.nick.replace(/^~/, '') : S.nick;
      rep = await request({ op: 'hello', nick, resume, ...(token ? { token } : {}) });
    } catch (err) {
      helloFailed(err);
      return;
    }
    S.nick = rep.nick;
    S.user = rep.user || null;
    S.guest = !!rep.guest;
    if (S.user) S.nickChosen = true; // the site named us: no nickname to pick
    S.limits = rep.limits || S.limits;
    S.everOnline = true;
    S.attempt = 0;
    save();
    setConn('online');
    renderMe();
    if (!S.nickChosen && !nickDialog.open) openNickDialog(false);

    const got = rep.rooms || {};
    for (const [name, st] of Object.entries(got)) {
      const r = S.rooms.get(name);
      if (!r) continue;
      if (st && st.error) {
        if (st.error.code === 'bad_room') removeRoom(r, `Left ${roomLabel(r)}: ${st.error.message}`);
        continue; // other failures: joined afresh below
      }
      applyJoin(r, st, true);
    }
    for (const r of S.rooms.values()) if (!r.joined && !r.draft) join(r);
    flushOutbox();
    refreshRooms();
    startTimers();
    renderAll();
  }

  // The hub wants a token we do not have (or one that no longer works): say
  // what is needed, and wait (a retry with the same token would fail alike).
  function needToken(detail) {
    S.hold = S.authHold = true;
    S.connDetail = detail;
    dropSocket(1000, 'token');
    setConn('offline', detail);
  }

  function helloFailed(err) {
    if (err.code === 'disconnected') return;
    if (err.code === 'auth_required') {
      return needToken('This chat is for signed-in users: open it from the site it belongs to ' +
        '(its link signs you in), or ask the site for access.');
    }
    if (err.code === 'bad_token') {
      try { sessionStorage.removeItem(TOKEN_KEY); } catch { /* nothing kept */ }
      return needToken(`Your sign-in link does not work (${err.message}). Open the chat again ` +
        'from the site it belongs to.');
    }
    // A taken nick is most likely our own previous connection (a reload, a
    // drop), which the hub has not noticed is gone yet (it finds out within
    // ping interval + pong timeout): retry the same nick for a while (after a
    // drop, ~30 s of backoff: a new nick would also defeat the cmid dedupe of
    // resent messages), then ask.
    const patience = S.everOnline ? 6 : S.nickChosen ? 2 : 0;
    if (err.code === 'nick_taken' && S.attempt < patience) {
      dropSocket(4000, 'nick in use');
      S.connDetail = `“${S.nick}” is still in use by your previous connection.`;
      renderConn();
      return;
    }
    if ((err.code === 'nick_taken' || err.code === 'bad_nick') && !S.nickChosen) {
      S.nick = suggestNick(); // a suggestion collided: just suggest another
      dropSocket(4000, 'retry');
      clearTimeout(S.retryTimer);
      connect();
      return;
    }
    if (err.code === 'nick_taken' || err.code === 'bad_nick') {
      S.hold = true;
      S.connDetail = err.code === 'nick_taken' ? `The nickname “${S.nick}” is taken. Pick another one.` : err.message;
      dropSocket(1000, 'nick');
      openNickDialog(true, S.connDetail);
      return;
    }
    dropSocket(4000, err.code || 'hello failed');
  }

  function startTimers() {
    stopTimers();
    S.pingTimer = setInterval(() => {
      tell({ op: 'ping' });
      clearTimeout(S.pongTimer);
      S.pongTimer = setTimeout(() => dropSocket(4000, 'no pong'), PONG_TIMEOUT_MS);
    }, PING_EVERY_MS);
    S.roomsTimer = setInterval(refreshRooms, ROOMS_REFRESH_MS);
  }
  function stopTimers() {
    clearInterval(S.pingTimer);
    clearTimeout(S.pongTimer);
    clearInterval(S.roomsTimer);
  }

  // ------------------------------------------------------------------ pushes
  const PUSH = {
    welcome(m) {
      S.motd = typeof m.motd === 'string' ? m.motd : '';
      const el = $('motd');
      el.textContent = S.motd;
      el.hidden = !S.motd;
    },
    msg(m) {
      const r = S.rooms.get(m.room);
      if (!r) return;
      stopTyping(r, m.from);
      addMessages(r, [m], true);
    },
    join(m) {
      const r = S.rooms.get(m.room);
      if (!r) return;
      r.members.set(fold(m.nick), m.nick);
      if (r.count !== null) r.count++;
      if (r === cur()) renderMembers();
    },
    leave(m) {
      const r = S.rooms.get(m.room);
      if (!r) return;
      r.members.delete(fold(m.nick));
      if (r.count !== null) r.count = Math.max(0, r.count - 1);
      stopTyping(r, m.nick);
      if (r === cur()) renderMembers();
    },
    count(m) {
      const r = S.rooms.get(m.room);
      if (!r) return;
      r.count = m.members;
      if (r === cur()) renderMembers();
    },
    typing(m) {
      const r = S.rooms.get(m.room);
      if (!r || sameNick(m.nick, S.nick)) return;
      const key = fold(m.nick);
      const old = r.typing.get(key);
      if (old) clearTimeout(old.timer);
      const timer = setTimeout(() => stopTyping(r, m.nick), Number(m.ttl) || 6000);
      r.typing.set(key, { nick: m.nick, timer });
      if (r === cur()) renderTyping();
    },
    nick(m) {
      const r = S.rooms.get(m.room);
      if (!r) return;
      r.members.delete(fold(m.old));
      r.members.set(fold(m.new), m.new);
      if (r.peer && sameNick(r.peer, m.old)) { r.peer = m.new; save(); renderSidebar(); }
      const t = r.typing.get(fold(m.old));
      if (t) { r.typing.delete(fold(m.old)); r.typing.set(fold(m.new), { ...t, nick: m.new }); }
      if (r === cur()) { renderHeader(); renderMembers(); renderTyping(); }
    },
    dm(m) {
      // The hub has joined us to a private room; learn its epoch and recent
      // messages with history (the msg push that follows dedupes by offset).
      const r = getRoom(m.room, m.from);
      r.draft = false;
      r.joined = true;
      r.members = new Map([[fold(S.nick), S.nick], [fold(m.from), m.from]]);
      fetchNewest(r);
      renderSidebar();
      if (r !== cur()) toast(`${m.from} sent you a direct message`);
    },
    gap(m) {
      const r = S.rooms.get(m.room);
      if (!r) return;
      applyGap(r, m);
      if (r === cur()) renderMessages();
    },
    edited(m) {
      const r = S.rooms.get(m.room);
      const msg = r && applyEdited(r, m);
      if (msg) redrawMessage(r, msg);
    },
    deleted(m) {
      const r = S.rooms.get(m.room);
      const msg = r && applyDeleted(r, m);
      if (msg) redrawMessage(r, msg);
    },
    reaction(m) {
      const r = S.rooms.get(m.room);
      const msg = r && applyReaction(r, m, S.nick);
      if (msg) redrawMessage(r, msg);
    },
    topic(m) {
      const r = S.rooms.get(m.room);
      if (!r) return;
      r.topic = typeof m.topic === 'string' ? m.topic : '';
      if (r === cur()) renderHeader();
      if (m.by) sysNote(r, r.topic ? `${m.by} set the topic: ${r.topic}` : `${m.by} cleared the topic.`);
    },
    kicked(m) {
      const r = S.rooms.get(m.room);
      if (!r) return;
      toast(`You were removed from ${roomLabel(r)} by ${m.by || 'a moderator'}${m.reason ? ': ' + m.reason : ''}.`);
      removeRoom(r);
    },
    banned(m) {
      const until = m.until ? ` until ${fullFmt.format(m.until)}` : '';
      const why = `${m.by ? ' by ' + m.by : ''}${until}${m.reason ? ': ' + m.reason : ''}`;
      if (m.room) {
        const r = S.rooms.get(m.room);
        if (r) removeRoom(r);
        toast(`You were banned from #${m.room}${why}.`);
      } else {
        for (const r of [...S.rooms.values()]) if (!r.dm) removeRoom(r);
        toast(`You were banned from this hub${why}.`);
      }
    },
    muted(m) {
      const until = m.until ? ` until ${fullFmt.format(m.until)}` : '';
      const where = m.room ? `in #${m.room}` : 'on this hub';
      S.muted = `You were muted ${where}${until}${m.by ? ' by ' + m.by : ''}${m.reason ? ': ' + m.reason : ''}.`;
      toast(S.muted);
      hint(S.muted);
    },
    unmuted(m) {
      S.muted = '';
      toast(m.room ? `You may speak in #${m.room} again.` : 'You may speak again.');
    },
    error(m) {
      const e = m.error || {};
      if (e.code !== 'not_joined') toast(e.message || 'The server reported an error.');
    },
    pong() { clearTimeout(S.pongTimer); },
    bye(m) {
      // The hub is restarting; its close (1012) follows. Come back when it says.
      S.byeRetryMs = Math.max(0, Number(m.retry_ms) || 0);
    },
  };

  // --------------------------------------------------------------- messages
  // Merges messages (from any source) into a room. countUnread: they are news
  // (live or resumed), not scrollback.
  function addMessages(r, list, countUnread) {
    const shown = r === cur();
    const got = merge(r, list);
    for (const c of got.cmids) settle(c);
    if (countUnread) {
      for (const msg of got.added) {
        if (sameNick(msg.from, S.nick) || (shown && !document.hidden)) continue;
        r.unread++;
        if (mentions(msg, S.nick)) { r.mentions++; notifyMention(r, msg); }
      }
    }
    if (shown) {
      if (got.inserted || got.changed.length || got.appended.length > 40) renderMessages(); // one redraw beats many reflows
      else for (const msg of got.appended) appendMessage(r, msg);
    }
    if (countUnread && got.appended.length) { renderSidebar(); renderTitle(); }
    fillHoles(r);
  }

  // News about a room that is not a message (no offset): a toast.
  function sysNote(r, text) {
    if (r === cur()) toast(text);
  }

  // The Notification permission is asked once (remembered), on the first
  // send: a moment the reader is here and acting.
  function askNotify() {
    if (typeof Notification === 'undefined' || Notification.permission !== 'default' || saved.askedNotify) return;
    saved.askedNotify = true;
    S.askedNotify = true;
    save();
    try { Notification.requestPermission().catch(() => {}); } catch { /* old API */ }
  }

  // A message that mentions us while the tab is hidden: a system
  // notification, if the reader allowed them (asked once, see askNotify).
  function notifyMention(r, msg) {
    if (!document.hidden || typeof Notification === 'undefined' || Notification.permission !== 'granted') return;
    try { new Notification(`${msg.from} in ${roomLabel(r)}`, { body: msg.text.slice(0, 200), tag: 'chathub-' + r.name }); } catch { /* not allowed here */ }
  }

  // Fetches what lies between r.last and the newest offset we know of, newest
  // page first ("down to what we had"), until nothing is missing.
  async function fillHoles(r) {
    if (r.filling || !online() || !r.epoch || r.last >= r.head) return;
    r.filling = true;
    try {
      while (online() && r.joined && S.rooms.get(r.name) === r) {
        const req = holeRequest(r, FILL_PAGE);
        if (!req) break;
        const before = [r.last, r.msgs.size, r.epoch];
        const rep = await request({ op: 'history', ...req });
        checkEpoch(r, rep.epoch);
        if (r.epoch !== before[2]) continue; // restarted: fill the new stream
        addMessages(r, rep.messages || [], true);
        if (fillDone(r, req, rep) && r === cur()) renderMessages();
        if (r.last === before[0] && r.msgs.size === before[1]) break; // no progress: stop
      }
    } catch { /* disconnected: the resume after the reconnect starts from r.last */ }
    r.filling = false;
  }

  async function fetchNewest(r) {
    try {
      const rep = await request({ op: 'history', room: r.name, limit: JOIN_HISTORY });
      checkEpoch(r, rep.epoch);
      const got = rep.messages || [];
      // The newest page ends at rep.offset: everything up to it is in hand
      // (set first, or addMessages would see a hole below the page and fill it).
      r.last = Math.max(r.last, rep.offset);
      r.head = Math.max(r.head, r.last);
      addMessages(r, got, false);
      r.noOlder = !!rep.complete || !got.length || got[0].offset <= 1;
      if (r === cur()) renderMessages();
    } catch { /* retried by the resume after a reconnect */ }
  }

  // One page of scrollback below the oldest message held. Called by the
  // sentinel's observer; when the page lands the sentinel is watched afresh,
  // so a reader still at the top gets the next page without scrolling.
  async function loadOlder(r) {
    if (r.loadingOlder || !online() || r.noOlder || !r.epoch || oldestOffset(r) <= 1) return;
    r.loadingOlder = true;
    renderOlder();
    let pause = 0;
    try {
      const rep = await request({ op: 'history', room: r.name, before: oldestOffset(r), limit: OLDER_PAGE });
      if (rep.epoch === r.epoch) {
        const got = rep.messages || [];
        // complete: nothing older is kept. An empty page that is not complete
        // means the hub's output queue was full: try again in a moment.
        if (rep.complete || (!got.length && !rep.next)) r.noOlder = true;
        else if (!got.length) pause = 1000;
        addMessages(r, got, false); // redraws, keeping the reader's place
      }
    } catch (err) {
      if (err.code !== 'disconnected') { toast(err.message || 'Could not load older messages.'); pause = 5000; }
    }
    r.loadingOlder = false;
    if (pause) setTimeout(() => { if (r === cur()) watchOlder(); }, pause);
    renderOlder(!pause);
  }

  function applyJoin(r, st, withSince) {
    r.joined = true;
    r.topic = typeof st.topic === 'string' ? st.topic : '';
    r.draft = false;
    if (withSince) checkEpoch(r, st.epoch); else r.epoch = st.epoch;
    r.members = new Map((st.members || []).map((m) => [fold(m.nick), m.nick]));
    r.count = typeof st.count === 'number' ? st.count : null;
    if (r.dm && !r.members.size) r.members.set(fold(S.nick), S.nick);
    const msgs = st.messages || [];
    if (withSince) {
      r.head = Math.max(r.head, st.offset);
      addMessages(r, msgs, true);
    } else {
      // A first join: the newest page is all we want; older comes on scroll.
      // (r.last first, or addMessages would take the older ones for a hole.)
      r.last = r.head = Math.max(r.last, st.offset);
      addMessages(r, msgs, false);
      r.noOlder = !msgs.length || msgs[0].offset <= 1;
    }
    advance(r);
    if (r === cur()) renderRoom();
    fillHoles(r);
  }

  async function join(r) {
    if (r.joining || r.joined || r.draft || !online()) return;
    r.joining = true;
    const withSince = !!r.epoch;
    const req = withSince
      ? { op: 'join', room: r.name, since: { epoch: r.epoch, offset: r.last } }
      : { op: 'join', room: r.name, history: JOIN_HISTORY };
    try {
      const rep = await request(req);
      r.joining = false;
      if (S.rooms.get(r.name) !== r) return; // left meanwhile
      applyJoin(r, rep, withSince);
      flushOutbox();
      refreshRooms();
    } catch (err) {
      r.joining = false;
      if (err.code === 'bad_room') removeRoom(r, `Cannot join ${roomLabel(r)}: ${err.message}`);
      else if (err.code === 'already_joined') { r.joined = true; fetchNewest(r); }
      else if (err.code !== 'disconnected') toast(`Cannot join ${roomLabel(r)}: ${err.message}`);
    }
  }

  // ----------------------------------------------------------------- sending
  function submitMessage() {
    const r = cur();
    if (r && compose.mode === 'edit') { saveEdit(r); return; }
    const text = input.value;
    if (!r || !text.trim()) return;
    askNotify();
    if ([...text].length > S.limits.max_text) { hint(`Messages are limited to ${S.limits.max_text} characters.`); return; }
    // Offline, the message waits in the outbox and goes out by itself after
    // the next hello (flushOutbox), with its cmid, like any resend.
    const item = outbox.add(r.name, text, online(), compose.mode === 'reply' ? { replyTo: compose.offset } : null);
    if (compose.mode === 'reply') cancelCompose();
    input.value = '';
    r.draftText = '';
    autosize();
    updateComposer();
    renderPending();
    scrollToBottom();
    transmit(item);
  }

  function transmit(item) {
    const r = S.rooms.get(item.room);
    if (!r || !online() || item.inflight || !outbox.has(item)) return;
    // A DM goes out as `dm` while the peer is not in the room (or the room is
    // new): that (re)joins them and tells them with a dm push.
    const viaDm = r.dm && !item.noDm && (r.draft || !r.members.has(fold(peerName(r))));
    if (!viaDm && !r.joined) return; // flushed again once the join reply is in
    item.inflight = true;
    item.status = 'sending';
    renderPending();
    const req = viaDm ? { op: 'dm', to: peerName(r), text: item.text, cmid: item.cmid }
      : { op: 'send', room: r.name, text: item.text, cmid: item.cmid, ...(item.replyTo ? { reply_to: item.replyTo } : {}) };
    request(req).then((rep) => {
      item.inflight = false;
      acked(item, rep);
    }, (err) => {
      item.inflight = false;
      if (!outbox.has(item)) return; // settled meanwhile by history
      if (err.code === 'no_such_nick' && viaDm && !r.draft) {
        item.noDm = true; // the peer is offline: the room still keeps it for them
        transmit(item);
      } else {
        const what = outbox.refused(item, err);
        if (what === 'retry') setTimeout(() => transmit(item), 1000 * item.tries + Math.random() * 2000);
        else if (err.code === 'not_joined') { r.joined = false; join(r); }
        else if (what === 'failed' && err.code === 'no_such_nick') item.error = `${peerName(r)} is not online.`;
      }
      renderSidebar();
      renderPending();
    });
  }

  function acked(item, rep) {
    let r = S.rooms.get(item.room);
    if (!r) return;
    if (rep.room && rep.room !== r.name) r = renameRoom(r, rep.room); // the hub names DM rooms
    const wasDraft = r.draft;
    r.draft = false;
    if (wasDraft || (r.dm && !r.joined)) {
      r.joined = true;
      r.members.set(fold(S.nick), S.nick);
      r.members.set(fold(peerName(r)), peerName(r));
      fetchNewest(r);
      save();
      renderSidebar();
    }
    settle(item.cmid);
    addMessages(r, [{ offset: rep.offset, ts: rep.ts, from: S.nick, text: item.text, cmid: item.cmid, reply_to: item.replyTo }], false);
  }

  // A message with one of our cmids is in the room's history: stop resending.
  function settle(cmid) {
    if (outbox.settle(cmid)) renderPending();
  }

  function flushOutbox() {
    for (const item of outbox.due()) transmit(item);
  }

  // ------------------------------------------------------------------- rooms
  function switchTo(name) {
    const prev = cur();
    if (prev) prev.draftText = input.value;
    S.current = name;
    const r = cur();
    if (r) {
      r.unread = 0;
      r.mentions = 0;
      input.value = r.draftText;
      autosize();
    }
    save();
    renderRoom();
    renderSidebar();
    renderTitle();
    closeDrawers();
    if (r && !r.dm) history.replaceState(null, '', '#' + r.name);
    if (matchMedia('(min-width: 760px)').matches) input.focus({ preventScroll: true });
  }

  function openRoom(name) {
    const r = getRoom(name);
    switchTo(name);
    join(r);
  }

  function startDm(nick) {
    if (sameNick(nick, S.nick)) return;
    const existing = [...S.rooms.values()].find((r) => r.dm && r.peer && sameNick(r.peer, nick));
    const name = existing ? existing.name : dmName(S.nick, nick);
    let r = S.rooms.get(name);
    if (!r) {
      r = getRoom(name, nick);
      r.draft = true; // until the first `dm` op opens it on the hub
      r.noOlder = true;
      r.members = new Map([[fold(S.nick), S.nick], [fold(nick), nick]]);
    }
    switchTo(name);
  }

  function renameRoom(r, name) {
    const other = S.rooms.get(name);
    S.rooms.delete(r.name);
    outbox.renameRoom(r.name, name);
    const wasCurrent = S.current === r.name;
    const target = other || r;
    if (!other) { r.name = name; S.rooms.set(name, r); }
    if (wasCurrent) S.current = name;
    save();
    renderAll();
    return target;
  }

  function removeRoom(r, why) {
    S.rooms.delete(r.name);
    outbox.dropRoom(r.name);
    if (S.current === r.name) S.current = S.rooms.size ? S.rooms.keys().next().value : null;
    if (why) toast(why);
    save();
    renderAll();
  }

  function leaveRoom(r) {
    if (r.joined) request({ op: 'leave', room: r.name }).catch(() => {});
    removeRoom(r);
    refreshRooms();
  }

  async function refreshRooms() {
    if (!online()) return;
    try {
      const rep = await request({ op: 'rooms' });
      S.publicRooms = Array.isArray(rep.rooms) ? rep.rooms : [];
      renderSidebar();
    } catch { /* shown again on the next refresh */ }
  }

  function stopTyping(r, nick) {
    const t = r.typing.get(fold(nick));
    if (!t) return;
    clearTimeout(t.timer);
    r.typing.delete(fold(nick));
    if (r === cur()) renderTyping();
  }

  // ----------------------------------------------------------------- drawing
  const input = $('message');
  const log = $('log');
  const list = $('messages');
  const pendingList = $('pending');
  const nickDialog = $('nick-dialog');

  function renderAll() {
    renderMe();
    renderSidebar();
    renderRoom();
    renderConn();
    renderTitle();
  }

  function renderRoom() {
    renderHeader();
    renderMessages(true);
    renderMembers();
    renderTyping();
    updateComposer();
  }

  function renderMe() {
    $('me-nick').textContent = S.nick;
    avatar(S.nick, $('me-avatar'));
    // A signed user's name is the site's: it cannot be changed here.
    $('me').disabled = !!S.user;
    $('me').querySelector('.me-edit').hidden = !!S.user;
    $('me').title = S.user ? `Signed in by the site as ${S.user.name}` : S.guest ?
      'You are a guest; change your nickname' : 'Change your nickname';
  }

  function renderHeader() {
    const r = cur();
    $('room-title').textContent = r ? roomLabel(r) : 'chathub';
    const topic = $('room-topic');
    topic.textContent = r && r.topic ? r.topic : '';
    topic.hidden = !(r && r.topic);
    topic.title = topic.textContent;
    input.placeholder = r ? `Message ${roomLabel(r)}` : 'Join a room to chat';
  }

  function roomItem(r) {
    const active = r.name === S.current;
    const sigil = r.dm ? avatar(peerName(r)) : h('span', { class: 'sigil', 'aria-hidden': 'true' }, '#');
    const label = r.dm ? peerName(r) : r.name;
    const open = h('button', {
      type: 'button', class: 'room-btn' + (r.unread ? ' has-unread' : ''),
      'aria-current': active ? 'page' : null, onclick: () => switchTo(r.name),
    }, sigil, h('span', { class: 'room-name' }, label),
    r.unread ? h('span', { class: 'badge' + (r.mentions ? ' mention' : ''), 'aria-label': `${r.unread} unread${r.mentions ? `, ${r.mentions} mentioning you` : ''}` },
      (r.mentions ? '@' + r.mentions + ' · ' : '') + (r.unread > 99 ? '99+' : String(r.unread))) : null);
    const leave = h('button', {
      type: 'button', class: 'leave-btn', 'aria-label': `Leave ${roomLabel(r)}`, title: 'Leave',
      onclick: () => leaveRoom(r),
    }, '×');
    return h('li', { class: active ? 'active' : null }, open, leave);
  }

  function renderSidebar() {
    const rooms = [...S.rooms.values()];
    $('room-list').replaceChildren(...rooms.filter((r) => !r.dm).map(roomItem));
    const dms = rooms.filter((r) => r.dm);
    $('dm-list').replaceChildren(...dms.map(roomItem));
    $('dm-empty').hidden = dms.length > 0;
    const others = S.publicRooms.filter((p) => !S.rooms.has(p.room) && ROOM_RE.test(p.room));
    $('discover-list').replaceChildren(...others.map((p) => h('li', null, h('button', {
      type: 'button', class: 'room-btn', onclick: () => openRoom(p.room),
    }, h('span', { class: 'sigil', 'aria-hidden': 'true' }, '#'), h('span', { class: 'room-name' }, p.room),
    h('span', { class: 'count', title: `${p.members} online` }, String(p.members))))));
    $('discover-empty').hidden = others.length > 0;
    const unreadElsewhere = rooms.some((r) => r.unread && r.name !== S.current);
    $('menu-badge').hidden = !unreadElsewhere;
  }

  function renderTitle() {
    const n = [...S.rooms.values()].reduce((a, r) => a + r.unread, 0);
    document.title = n ? `(${n}) chathub` : 'chathub';
  }

  function renderMembers() {
    const r = cur();
    const ul = $('member-list');
    const note = $('members-note');
    if (!r) { ul.replaceChildren(); $('members-total').textContent = ''; $('member-count').textContent = ''; return; }
    const nicks = [...r.members.values()].sort((a, b) => fold(a).localeCompare(fold(b)));
    const total = r.count !== null ? r.count : nicks.length;
    $('members-total').textContent = String(total);
    $('member-count').textContent = String(total);
    $('members-btn').setAttribute('aria-label', `Members (${total})`);
    note.hidden = r.count === null;
    note.textContent = r.count !== null ? `${r.count} people are here; the list is not shown for rooms this big.` : '';
    ul.replaceChildren(...(r.count !== null ? [] : nicks).map((nick) => {
      const me = sameNick(nick, S.nick);
      return h('li', { class: 'member' + (me ? ' self' : '') }, avatar(nick),
        h('span', { class: 'member-nick' }, nick), me ? h('span', { class: 'you' }, 'you') : null,
        me || r.dm ? null : h('button', {
          type: 'button', class: 'dm-btn', 'aria-label': `Direct message ${nick}`, title: 'Direct message',
          onclick: () => startDm(nick),
        }, 'Message'),
        me || r.dm || !isMod() ? null : h('button', {
          type: 'button', class: 'dm-btn kick-btn', 'aria-label': `Remove ${nick} from the room`, title: 'Kick',
          onclick: () => request({ op: 'kick', room: r.name, nick }).then(() => toast(`${nick} was removed.`),
            (err) => toast(err.message || 'Could not kick.')),
        }, 'Kick'));
    }));
  }

  function renderTyping() {
    const r = cur();
    const el = $('typing');
    const nicks = r ? [...r.typing.values()].map((t) => t.nick) : [];
    el.replaceChildren();
    if (!nicks.length) return;
    const who = nicks.length === 1 ? `${nicks[0]} is typing`
      : nicks.length === 2 ? `${nicks[0]} and ${nicks[1]} are typing`
        : `${nicks.length} people are typing`;
    el.append(h('span', { class: 'dots', 'aria-hidden': 'true' }, h('i'), h('i'), h('i')), `${who}…`);
  }

  function nearBottom() {
    return log.scrollHeight - log.scrollTop - log.clientHeight < 120;
  }
  function scrollToBottom() {
    log.scrollTop = log.scrollHeight;
    $('jump').hidden = true;
  }

  // Items in display order: messages and "cannot be delivered" notes.
  function items(r) {
    const out = [...r.archive];
    const gaps = [...r.gaps].sort((a, b) => a[0] - b[0]);
    let g = 0;
    for (const m of sorted(r)) {
      while (g < gaps.length && gaps[g][1] < m.offset) out.push(gapNote(gaps[g++]));
      out.push(m);
    }
    while (g < gaps.length) out.push(gapNote(gaps[g++]));
    return out;
  }
  const gapNote = ([from, to]) => ({
    sys: to > from ? `${to - from + 1} messages could not be delivered (no longer kept by the server).`
      : 'A message could not be delivered (no longer kept by the server).',
  });

  // Full redraw of the current room, keeping the reader's place: at the
  // bottom if they were there, else on the same message when older ones are
  // added above.
  function renderMessages(toBottom) {
    const r = cur();
    const stick = toBottom || nearBottom();
    const fromBottom = log.scrollHeight - log.scrollTop;
    list.setAttribute('aria-busy', 'true'); // one redraw is not a flood of news
    list.replaceChildren();
    list.lastItem = null;
    if (r) for (const it of items(r)) appendItem(it);
    list.removeAttribute('aria-busy');
    renderPending();
    renderOlder();
    if (stick) scrollToBottom(); else log.scrollTop = log.scrollHeight - fromBottom;
  }

  function appendMessage(r, msg) {
    const stick = nearBottom();
    appendItem(msg);
    $('empty').hidden = true;
    if (stick || sameNick(msg.from, S.nick)) scrollToBottom(); else $('jump').hidden = false;
  }

  function appendItem(it) {
    const prev = list.lastItem;
    if (it.sys) {
      list.append(h('li', { class: 'sys' }, it.sys));
      list.lastItem = it;
      return;
    }
    if (!prev || prev.sys || dayKey(prev.ts) !== dayKey(it.ts)) {
      list.append(h('li', { class: 'day', role: 'separator' }, h('span', null, dayLabel(it.ts))));
    }
    const cont = prev && !prev.sys && prev.from === it.from && it.ts - prev.ts < GROUP_MS && dayKey(prev.ts) === dayKey(it.ts);
    // Each message keeps its element, so a redraw (a page of history landing
    // in the middle) re-attaches nodes instead of rebuilding 64 KiB texts.
    const key = (cont ? 'c' : 'f') + fold(S.nick);
    if (!it.el || it.elKey !== key) {
      it.el = messageEl(it, cont, null);
      it.elKey = key;
    }
    list.append(it.el);
    list.lastItem = it;
  }

  function messageEl(m, cont, status) {
    const mine = sameNick(m.from, S.nick);
    const time = h('time', { datetime: new Date(m.ts).toISOString(), title: fullFmt.format(m.ts) }, timeFmt.format(m.ts));
    const li = h('li', {
      class: 'msg' + (cont ? ' cont' : '') + (mine ? ' mine' : '') + (status ? ' pending ' + status : ''),
      'data-offset': m.offset || null,
    });
    if (cont) {
      li.append(h('span', { class: 'side-time' }, time), h('span', { class: 'sr-only' }, m.from + ': '));
    } else {
      li.append(avatar(m.from), h('div', { class: 'meta' }, h('span', { class: 'from' }, m.from), time));
    }
    if (m.replyTo && !status) li.append(replyQuote(m.replyTo));
    if (m.deleted) {
      li.classList.add('deleted');
      li.append(h('div', { class: 'text tombstone' }, 'message deleted'));
      return li;
    }
    if (m.mentions && mentions(m, S.nick)) li.classList.add('mention');
    if (isLong(m.text)) {
      // Raw lines may be 64 KiB (docs/protocol.md): show the start only, and
      // lay the whole text out only when asked to (that is what costs).
      const short = textEl(m.text.slice(0, LONG_CHARS).split('\n').slice(0, LONG_LINES).join('\n') + '…');
      short.classList.add('collapsed');
      short.fullText = m.text; // for tests and copy tools
      li.append(short);
      const more = h('button', { type: 'button', class: 'more', 'aria-expanded': 'false' }, 'Show more');
      more.addEventListener('click', () => {
        const open = more.getAttribute('aria-expanded') !== 'true';
        const t = open ? textEl(m.text) : short;
        li.querySelector('.text').replaceWith(t);
        more.textContent = open ? 'Show less' : 'Show more';
        more.setAttribute('aria-expanded', String(open));
      });
      li.append(more);
    } else {
      li.append(textEl(m.text));
    }
    if (m.editedTs) li.querySelector('.text').append(h('span', { class: 'edited', title: fullFmt.format(m.editedTs) }, ' (edited)'));
    if (!status && m.offset) {
      if (m.reactions && m.reactions.size) li.append(reactionsEl(m));
      li.append(actionsEl(m, mine));
    }
    return li;
  }

  const REACTIONS = ['👍', '❤️', '😂', '🎉', '😮', '👀'];
  const isMod = () => !!S.user && (S.user.role === 'mod' || S.user.role === 'admin');

  // The quoted line above a reply: who and the start of what; a click jumps
  // to the original (loading it first when it is not held).
  function replyQuote(offset) {
    const r = cur();
    const o = r && r.msgs.get(offset);
    const what = !o ? 'an earlier message' : o.deleted ? 'message deleted' : o.text.split('\n')[0].slice(0, 120);
    return h('button', { type: 'button', class: 'reply-quote', onclick: () => jumpTo(r, offset) },
      h('span', { class: 'reply-from' }, o ? o.from : '↩'), ' ', h('span', { class: 'reply-text' }, what));
  }

  function reactionsEl(m) {
    const r = cur();
    return h('div', { class: 'reactions' }, ...[...m.reactions].map(([emoji, n]) => h('button', {
      type: 'button', class: 'reaction' + (m.mine.has(emoji) ? ' on' : ''), 'aria-pressed': String(m.mine.has(emoji)),
      'aria-label': `${emoji} ${n}`, onclick: () => toggleReaction(r, m, emoji),
    }, emoji, h('span', { class: 'n' }, String(n)))));
  }

  function actionsEl(m, mine) {
    const r = cur();
    const bar = h('div', { class: 'actions-bar' });
    const picker = h('div', { class: 'picker', hidden: true, role: 'group', 'aria-label': 'React' },
      ...REACTIONS.map((e) => h('button', { type: 'button', onclick: () => { picker.hidden = true; toggleReaction(r, m, e); } }, e)));
    bar.append(
      h('button', { type: 'button', class: 'act react-btn', title: 'React', 'aria-label': 'React', onclick: () => { picker.hidden = !picker.hidden; } }, '☺'),
      h('button', { type: 'button', class: 'act reply-btn', title: 'Reply', 'aria-label': 'Reply', onclick: () => startReply(r, m) }, '↩'));
    if (mine) bar.append(h('button', { type: 'button', class: 'act edit-btn', title: 'Edit', 'aria-label': 'Edit', onclick: () => startEdit(r, m) }, '✎'));
    if (mine || isMod()) bar.append(h('button', { type: 'button', class: 'act delete-btn', title: 'Delete', 'aria-label': 'Delete', onclick: () => deleteMessage(r, m) }, '🗑'));
    bar.append(picker);
    return bar;
  }

  function toggleReaction(r, m, emoji) {
    if (!r) return;
    const on = !m.mine.has(emoji);
    request({ op: on ? 'react' : 'unreact', room: r.name, offset: m.offset, emoji }).then((rep) => {
      // The reaction push follows; the reply's count is applied at once.
      applyReaction(r, { offset: m.offset, emoji, nick: S.nick, count: rep.count, on }, S.nick);
      redrawMessage(r, m);
    }, (err) => toast(err.message || 'Could not react.'));
  }

  function deleteMessage(r, m) {
    if (!r || !confirmDelete()) return;
    request({ op: 'delete', room: r.name, offset: m.offset }).then(() => {
      applyDeleted(r, { offset: m.offset });
      redrawMessage(r, m);
    }, (err) => toast(err.message || 'Could not delete.'));
  }
  // No blocking confirm() (tests record dialogs): a second click within 3 s.
  let deleteArmed = 0;
  function confirmDelete() {
    if (Date.now() - deleteArmed < 3000) { deleteArmed = 0; return true; }
    deleteArmed = Date.now();
    toast('Click delete again to delete the message.');
    return false;
  }

  function redrawMessage(r, m) {
    m.el = null;
    if (r === cur()) renderMessages();
  }

  // ------------------------------------------------ reply and edit mode
  const compose = { mode: null, offset: 0 }; // mode: null | 'reply' | 'edit'

  function startReply(r, m) {
    compose.mode = 'reply';
    compose.offset = m.offset;
    renderCompose(`Replying to ${m.from}: ${m.text.split('\n')[0].slice(0, 80)}`);
    input.focus();
  }

  function startEdit(r, m) {
    if (!r || m.deleted) return;
    compose.mode = 'edit';
    compose.offset = m.offset;
    compose.saved = input.value;
    input.value = m.text;
    autosize();
    updateComposer();
    renderCompose('Editing your message · Enter to save · Escape to cancel');
    input.focus();
    input.setSelectionRange(input.value.length, input.value.length);
  }

  function cancelCompose() {
    if (compose.mode === 'edit') { input.value = compose.saved || ''; autosize(); updateComposer(); }
    compose.mode = null;
    renderCompose('');
  }

  function renderCompose(text) {
    const el = $('compose-state');
    el.hidden = !text;
    $('compose-text').textContent = text;
  }

  function lastOwn(r) {
    const l = sorted(r);
    for (let i = l.length - 1; i >= 0; i--) if (sameNick(l[i].from, S.nick) && !l[i].deleted) return l[i];
    return null;
  }

  function saveEdit(r) {
    const offset = compose.offset;
    const text = input.value;
    compose.mode = null;
    renderCompose('');
    input.value = compose.saved || '';
    autosize();
    updateComposer();
    const m = r.msgs.get(offset);
    if (!m || text === m.text || !text.trim()) return;
    request({ op: 'edit', room: r.name, offset, text }).then((rep) => {
      applyEdited(r, { offset, text, edited_ts: rep.edited_ts });
      redrawMessage(r, m);
    }, (err) => toast(err.message || 'Could not edit.'));
  }

  // Jumps to a message, loading the page around it when it is not held.
  async function jumpTo(r, offset) {
    if (!r) return;
    try {
      // Scrollback pages down to it keep the log without holes; a message
      // further back than JUMP_PAGES pages is loaded with its own page
      // around it instead (the scrollback sentinel then starts from there).
      for (let n = 0; n < JUMP_PAGES && online() && !r.msgs.has(offset) && !r.noOlder && oldestOffset(r) > offset; n++) {
        const rep = await request({ op: 'history', room: r.name, before: oldestOffset(r), limit: OLDER_PAGE });
        if (rep.epoch !== r.epoch) break;
        const got = rep.messages || [];
        if (rep.complete || !got.length) r.noOlder = true;
        addMessages(r, got, false);
      }
      if (!r.msgs.has(offset) && online()) {
        const rep = await request({ op: 'history', room: r.name, before: offset + 26, limit: 50 });
        if (rep.epoch === r.epoch) addMessages(r, rep.messages || [], false);
      }
    } catch (err) { toast(err.message || 'Could not load that message.'); return; }
    if (r !== cur()) switchTo(r.name);
    const el = list.querySelector(`.msg[data-offset="${offset}"]`);
    if (!el) { toast('That message is no longer kept.'); return; }
    el.scrollIntoView({ block: 'center' });
    el.classList.add('flash');
    setTimeout(() => el.classList.remove('flash'), 1600);
  }

  const isLong = (text) => text.length > LONG_CHARS || text.split('\n', LONG_LINES + 1).length > LONG_LINES;

  // The text of a message as DOM nodes (markdown.js builds them from text:
  // no markup from the message is ever parsed as HTML). dir=auto lets a
  // right-to-left message read right to left.
  function textEl(text) {
    return renderMarkdown(parseMarkdown(text), h('div', { class: 'text', dir: 'auto' }));
  }

  function renderPending() {
    const r = cur();
    const mine = r ? outbox.forRoom(r.name) : [];
    pendingList.replaceChildren(...mine.map((o) => {
      const li = messageEl({ from: S.nick, ts: o.ts, text: o.text }, false, o.status);
      const note = o.status === 'failed' ? `Not sent: ${o.error}`
        : o.status === 'waiting' && !online() ? 'Waiting for the connection: it goes out by itself when you are back online'
          : o.status === 'waiting' ? 'Waiting to be sent…' : 'Sending…';
      const state = h('div', { class: 'state' },
        o.status === 'failed' ? null : h('span', { class: 'clock', role: 'img', 'aria-label': 'pending' }), note);
      if (o.status === 'failed') {
        state.append(
          h('button', { type: 'button', onclick: () => { o.status = 'waiting'; o.noDm = false; o.tries = 0; transmit(o); renderPending(); } }, 'Retry'),
          h('button', { type: 'button', onclick: () => { outbox.remove(o); renderPending(); } }, 'Discard'));
      }
      li.append(state);
      return li;
    }));
    $('empty').hidden = !r || r.msgs.size > 0 || r.archive.length > 0 || mine.length > 0 || !r.noOlder;
  }

  // The top of the log: the sentinel while older messages may exist, the
  // "not kept" marker where the hub has nothing older although the room's
  // offsets say there was more. rewatch: look at the sentinel afresh (an
  // observer reports the current state of a newly observed element).
  function renderOlder(rewatch = true) {
    const r = cur();
    const b = $('older');
    const oldest = r ? oldestOffset(r) : 1;
    const hidden = !r || r.noOlder || !r.epoch || oldest <= 1 || !!inGap(r, oldest - 1);
    const changed = b.hidden !== hidden;
    b.hidden = hidden;
    b.classList.toggle('loading', !!(r && r.loadingOlder));
    $('older-text').textContent = !online() ? 'Older messages load when you are back online.'
      : 'Loading older messages…';
    const marker = $('not-kept');
    const gone = !!r && r.noOlder && !!r.epoch && oldest > 1 && !inGap(r, oldest - 1) && !r.draft;
    marker.hidden = !gone;
    const n = Number(S.limits.history);
    marker.textContent = Number.isSafeInteger(n) && n > 0
      ? `Older messages are not kept (this hub keeps ${n} per room).`
      : 'Older messages are not kept by this hub.';
    if ((rewatch || changed) && !hidden && r && !r.loadingOlder) watchOlder();
  }

  // Infinite scroll upward: whenever the sentinel comes within
  // OLDER_MARGIN_PX of the visible part of the log, the next page loads.
  const olderObserver = 'IntersectionObserver' in window ? new IntersectionObserver((entries) => {
    const r = cur();
    if (r && entries.some((e) => e.isIntersecting)) loadOlder(r);
  }, { root: $('log'), rootMargin: `${OLDER_MARGIN_PX}px 0px 0px 0px` }) : null;
  function watchOlder() {
    if (!olderObserver) return;
    olderObserver.unobserve($('older'));
    olderObserver.observe($('older'));
  }

  function setConn(kind, detail) {
    const was = S.conn;
    S.conn = kind;
    if (detail !== undefined) S.connDetail = detail;
    const st = $('status');
    st.dataset.state = kind === 'online' ? 'open' : kind === 'connecting' ? 'connecting' : 'closed';
    st.dataset.conn = kind;
    renderConn();
    updateComposer();
    renderOlder();
    if (was !== kind && (kind === 'online' || was === 'online' || kind === 'offline')) {
      $('announce').textContent = kind === 'online' ? 'Connected.' : $('conn-text').textContent;
    }
  }

  function renderConn() {
    const secs = Math.ceil((S.retryAt - Date.now()) / 1000);
    const text = {
      connecting: 'Connecting…',
      online: 'Online',
      reconnecting: secs >= 1 ? `Reconnecting in ${secs} s` : 'Reconnecting…',
      offline: 'Offline',
    }[S.conn];
    $('conn-text').textContent = text;
    const banner = $('banner');
    const show = S.conn === 'reconnecting' || S.conn === 'offline';
    banner.hidden = !show;
    banner.dataset.conn = S.conn;
    if (show) $('banner-text').textContent = `${S.connDetail || ''} ${text}`.trim();
    $('retry').textContent = S.hold && !S.authHold ? 'Pick a nickname' : 'Retry now';
  }
  setInterval(() => { if (S.conn === 'reconnecting') renderConn(); }, 1000);

  function updateComposer() {
    const r = cur();
    $('send').disabled = !(r && input.value.trim());
    $('send-form').classList.toggle('offline', !online());
  }

  let hintTimer = null;
  function hint(text) {
    const el = $('hint');
    el.textContent = text;
    el.classList.add('warn');
    clearTimeout(hintTimer);
    hintTimer = setTimeout(() => {
      el.textContent = 'Enter to send · Shift+Enter for a new line';
      el.classList.remove('warn');
    }, 4000);
  }

  let toastTimer = null;
  function toast(text) {
    const el = $('toast');
    el.textContent = text;
    el.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { el.hidden = true; }, 5000);
  }

  function autosize() {
    input.style.height = 'auto';
    input.style.height = Math.min(input.scrollHeight, 180) + 'px';
  }

  // ------------------------------------------------------------ nick dialog
  function openNickDialog(required, problem) {
    const first = !S.nickChosen && !required;
    $('nick-title').textContent = first ? 'Welcome to chathub' : 'Your nickname';
    $('nick-intro').textContent = first
      ? `Pick the name others will see. For now you are chatting as “${S.nick}”.`
      : 'Others see this name next to your messages.';
    $('nick-input').value = S.nick;
    $('nick-error').textContent = problem || '';
    $('nick-cancel').hidden = required;
    $('nick-save').textContent = first ? 'Start chatting' : 'Save';
    if (nickDialog.open) nickDialog.close();
    // A first visit gets a non-blocking card (the page is usable meanwhile);
    // a change asked for, or a taken nick, gets a modal dialog.
    if (first) nickDialog.show(); else nickDialog.showModal();
    $('nick-input').focus();
    $('nick-input').select();
  }

  async function submitNick() {
    const nick = $('nick-input').value.trim();
    const problem = nickProblem(nick);
    if (problem) { $('nick-error').textContent = problem; return; }
    if (nick === S.nick) {
      S.nickChosen = true;
      save();
      nickDialog.close();
      if (S.hold) connect();
      return;
    }
    if (!online()) {
      // Not connected (or held back by a taken nick): the next hello uses it.
      S.nick = nick;
      S.nickChosen = true;
      save();
      renderMe();
      nickDialog.close();
      if (S.hold || !S.ws) connect();
      return;
    }
    try {
      const rep = await request({ op: 'nick', nick });
      const was = S.nick;
      S.nick = rep.nick;
      // The hub tells the others with nick pushes, not us: fix our own entries.
      for (const r of S.rooms.values()) {
        if (r.members.delete(fold(was))) r.members.set(fold(S.nick), S.nick);
      }
      S.nickChosen = true;
      save();
      nickDialog.close();
      renderAll();
    } catch (err) {
      $('nick-error').textContent = err.code === 'nick_taken' ? 'That nickname is taken.'
        : err.code === 'disconnected' ? 'The connection dropped; try again in a moment.' : (err.message || 'Not accepted.');
    }
  }

  // ------------------------------------------------------------ phone drawers
  function setDrawer(id, open) {
    const el = $(id);
    if (el.classList.contains('open') !== open) {
      el.classList.add('anim');
      setTimeout(() => el.classList.remove('anim'), 250);
    }
    el.classList.toggle('open', open);
    const btn = id === 'sidebar' ? $('menu-btn') : $('members-btn');
    btn.setAttribute('aria-expanded', String(open));
    const any = $('sidebar').classList.contains('open') || $('members').classList.contains('open');
    $('scrim').hidden = !any;
    if (open) { const f = el.querySelector('button'); if (f) f.focus(); }
    else if (el.contains(document.activeElement) && getComputedStyle(btn).display !== 'none') btn.focus();
  }
  function closeDrawers() {
    setDrawer('sidebar', false);
    setDrawer('members', false);
  }

  // ------------------------------------------------------------------ events
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      submitMessage();
    } else if (e.key === 'ArrowUp' && !e.altKey && !input.value && !compose.mode) {
      // Up in an empty composer edits your last message.
      const r = cur();
      const m = r && lastOwn(r);
      if (m) { e.preventDefault(); startEdit(r, m); }
    } else if (e.key === 'Escape' && compose.mode) {
      e.preventDefault();
      e.stopPropagation();
      cancelCompose();
    }
  });
  // The skip link puts the focus in the composer (a fragment jump alone
  // only scrolls there).
  document.querySelector('.skip-link').addEventListener('click', (e) => { e.preventDefault(); input.focus(); });
  $('compose-cancel').addEventListener('click', () => { cancelCompose(); input.focus(); });

  // Alt+Up/Down: the previous/next room of the sidebar; Ctrl+K: the room field.
  document.addEventListener('keydown', (e) => {
    if (e.altKey && (e.key === 'ArrowUp' || e.key === 'ArrowDown')) {
      const names = [...S.rooms.values()].filter((r) => !r.dm).concat([...S.rooms.values()].filter((r) => r.dm)).map((r) => r.name);
      if (names.length < 2) return;
      e.preventDefault();
      const i = names.indexOf(S.current);
      switchTo(names[(i + (e.key === 'ArrowUp' ? -1 : 1) + names.length) % names.length]);
      input.focus({ preventScroll: true });
    } else if ((e.ctrlKey || e.metaKey) && (e.key === 'k' || e.key === 'K')) {
      e.preventDefault();
      $('room-input').focus();
      $('room-input').select();
    }
  });
  // Typing: at most one notice per TYPING_EVERY_MS, plus a trailing one when
  // the window closes while the user is still typing (so others see it again
  // soon after the previous message ended it).
  let lastInputAt = 0;
  function typed() {
    const r = cur();
    if (!r || !r.joined || !online() || !input.value.trim()) return;
    const wait = r.typingSentAt + TYPING_EVERY_MS - Date.now();
    if (wait <= 0) {
      r.typingSentAt = Date.now();
      tell({ op: 'typing', room: r.name });
    } else if (!r.typingTimer) {
      r.typingTimer = setTimeout(() => {
        r.typingTimer = null;
        if (cur() === r && Date.now() - lastInputAt < TYPING_EVERY_MS) typed();
      }, wait);
    }
  }
  input.addEventListener('input', () => {
    autosize();
    updateComposer();
    lastInputAt = Date.now();
    typed();
  });
  $('send-form').addEventListener('submit', (e) => { e.preventDefault(); submitMessage(); input.focus(); });

  $('room-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const field = $('room-input');
    const name = field.value.trim().replace(/^#/, '');
    if (!ROOM_RE.test(name)) {
      field.setCustomValidity('Room names are 1 to 64 letters, digits or _ . : -');
      field.reportValidity();
      return;
    }
    field.value = '';
    openRoom(name);
  });
  $('room-input').addEventListener('input', (e) => e.target.setCustomValidity(''));

  // Search in the room on screen: results newest first; a click jumps to
  // the message with the page around it loaded.
  $('search-btn').addEventListener('click', () => {
    const f = $('search-panel');
    f.hidden = !f.hidden;
    $('search-btn').setAttribute('aria-expanded', String(!f.hidden));
    if (!f.hidden) $('search-input').focus();
  });
  $('search-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const r = cur();
    const q = $('search-input').value.trim();
    const out = $('search-results');
    if (!r || !q) return;
    out.replaceChildren(h('li', { class: 'side-note' }, 'Searching…'));
    try {
      const rep = await request({ op: 'search', room: r.name, q, limit: 20 });
      const res = rep.results || [];
      out.replaceChildren(...(res.length ? res.map((m) => h('li', null, h('button', {
        type: 'button', class: 'search-hit', 'data-offset': m.offset, onclick: () => jumpTo(r, m.offset),
      }, h('span', { class: 'from' }, String(m.from)), ' ', h('time', null, timeFmt.format(Number(m.ts) || 0)),
      h('span', { class: 'hit-text' }, String(m.text ?? '')))))
        : [h('li', { class: 'side-note' }, 'No messages found.')]));
    } catch (err) {
      out.replaceChildren(h('li', { class: 'side-note' }, err.message || 'Search failed.'));
    }
  });
  $('search-panel').addEventListener('keydown', (e) => {
    if (e.key === 'Escape') { $('search-panel').hidden = true; $('search-btn').setAttribute('aria-expanded', 'false'); input.focus(); }
  });

  $('jump').addEventListener('click', scrollToBottom);
  log.addEventListener('scroll', () => { if (nearBottom()) $('jump').hidden = true; });
  $('retry').addEventListener('click', () => {
    if (S.authHold) { setConn('offline', S.connDetail); return; }
    if (S.hold) { openNickDialog(true, S.connDetail); return; }
    S.attempt = 0;
    connect();
  });
  $('refresh-rooms').addEventListener('click', refreshRooms);
  $('me').addEventListener('click', () => { if (!S.user) openNickDialog(false); });
  $('nick-form').addEventListener('submit', (e) => { e.preventDefault(); submitNick(); });
  // Whichever way the welcome card or the nickname dialog closes, the
  // composer has the focus next.
  nickDialog.addEventListener('close', () => input.focus());
  $('nick-cancel').addEventListener('click', () => {
    S.nickChosen = true; // "not now" is an answer too: do not ask on every visit
    save();
    nickDialog.close();
    input.focus();
  });
  $('menu-btn').addEventListener('click', () => setDrawer('sidebar', !$('sidebar').classList.contains('open')));
  $('members-btn').addEventListener('click', () => setDrawer('members', !$('members').classList.contains('open')));
  $('scrim').addEventListener('click', closeDrawers);
  document.addEventListener('keydown', (e) => { if (e.key === 'Escape') closeDrawers(); });

  window.addEventListener('online', () => {
    // Only when waiting for the network: a pending retry (maybe the delay a
    // bye asked for) keeps its time.
    if (!S.ws && !S.hold && !S.retryTimer) { S.attempt = 0; connect(); }
  });
  window.addEventListener('offline', () => {
    // The socket may look open for a while: a ping tells within PONG_TIMEOUT_MS.
    if (online()) {
      tell({ op: 'ping' });
      clearTimeout(S.pongTimer);
      S.pongTimer = setTimeout(() => dropSocket(4000, 'no pong'), PONG_TIMEOUT_MS);
    }
  });
  document.addEventListener('visibilitychange', () => {
    const r = cur();
    if (!document.hidden && r && r.unread) { r.unread = 0; r.mentions = 0; renderSidebar(); renderTitle(); }
  });

  // ----------------------------------------------------------------- startup
  for (const entry of Array.isArray(saved.rooms) ? saved.rooms : []) {
    const [name, peer] = Array.isArray(entry) ? entry : [entry];
    if (typeof name === 'string' && (ROOM_RE.test(name) || name.startsWith('@'))) getRoom(name, typeof peer === 'string' ? peer : null);
  }
  let fromHash = '';
  try {
    const hash = initialHash.slice(1);
    const m = /(?:^|&)room=([^&]*)/.exec(hash);
    fromHash = decodeURIComponent(m ? m[1] : hash.includes('=') ? '' : hash).replace(/^#/, '');
  } catch { /* ignore a bad hash */ }
  if (ROOM_RE.test(fromHash)) getRoom(fromHash);
  if (!S.rooms.size) getRoom('lobby');
  S.current = ROOM_RE.test(fromHash) ? fromHash
    : S.rooms.has(saved.current) ? saved.current : S.rooms.keys().next().value;
  // DM rooms remembered from an earlier visit are resumed only once we know
  // their epoch; until then they are joined like any room.
  // The header's room field is narrow on phones: a shorter placeholder fits.
  const narrow = matchMedia('(max-width: 759px)');
  const placeholder = () => { $('room-input').placeholder = narrow.matches ? 'room' : 'Join a room'; };
  narrow.addEventListener('change', placeholder);
  placeholder();
  renderAll();
  connect();

  // A handle for tests and the curious: window.__chathub.ws.close(4000) drops
  // the connection the way a network hiccup would.
  window.__chathub = {
    get ws() { return S.ws; },
    state: S,
    messages: (room) => sorted(S.rooms.get(room || S.current)).map((m) => ({ ...m })),
  };
})();
