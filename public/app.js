// chathub browser client, raw mode.
//
// Connects to ws(s)://<host>/ws/<room> with no subprotocol: every text frame
// sent is relayed verbatim to everyone in the room, the sender included. The
// page keeps one socket, reconnects with exponential backoff when it drops,
// and renders every message with textContent only (never as HTML).
'use strict';

(function () {
  const ROOM_RE = /^[A-Za-z0-9_.:-]{1,64}$/;
  const MAX_MESSAGES = 500;          // older list items are dropped past this
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 15000;
  const MAX_MESSAGE_BYTES = 65536;   // the hub closes with 1009 above this

  const $ = (id) => document.getElementById(id);
  const roomForm = $('room-form');
  const roomInput = $('room-input');
  const sendForm = $('send-form');
  const input = $('message');
  const sendButton = $('send');
  const list = $('messages');
  const log = $('log');
  const empty = $('empty');
  const status = $('status');
  const statusText = $('status-text');

  let room = roomFromHash() || 'lobby';
  let ws = null;            // the current socket, or null
  let attempt = 0;          // consecutive failed connection attempts
  let retryTimer = null;
  let countdownTimer = null;
  let pending = [];         // texts we sent and have not seen echoed back yet
  let stopped = false;      // the server asked us not to reconnect

  function roomFromHash() {
    let h = location.hash.replace(/^#/, '');
    try { h = decodeURIComponent(h); } catch (e) { return null; }
    return ROOM_RE.test(h) ? h : null;
  }

  function setStatus(state, text) {
    status.dataset.state = state;
    statusText.textContent = text;
    const open = state === 'open';
    input.disabled = !open;
    sendButton.disabled = !open;
  }

  function nearBottom() {
    return log.scrollHeight - log.scrollTop - log.clientHeight < 80;
  }

  function addLine(text, kind) {
    const stick = nearBottom();
    const li = document.createElement('li');
    li.className = 'msg ' + kind;
    const time = document.createElement('time');
    const now = new Date();
    time.dateTime = now.toISOString();
    time.textContent = now.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    const body = document.createElement('span');
    body.className = 'text';
    body.textContent = text;
    li.append(time, body);
    list.appendChild(li);
    while (list.children.length > MAX_MESSAGES) list.firstElementChild.remove();
    empty.hidden = true;
    if (stick || kind === 'mine') log.scrollTop = log.scrollHeight;
  }

  function system(text) { addLine(text, 'system'); }

  function clearRetry() {
    clearTimeout(retryTimer);
    clearInterval(countdownTimer);
    retryTimer = countdownTimer = null;
  }

  function connect() {
    clearRetry();
    const scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
    const url = scheme + location.host + '/ws/' + room; // ROOM_RE admits only URL-safe characters
    setStatus('connecting', 'Connecting to #' + room + '…');
    let sock;
    try {
      sock = new WebSocket(url);
    } catch (e) {
      scheduleReconnect();
      return;
    }
    sock.binaryType = 'arraybuffer';
    ws = sock;
    pending = [];

    sock.onopen = () => {
      if (ws !== sock) return;
      attempt = 0;
      setStatus('open', 'Connected to #' + room);
      system('Joined #' + room);
      input.focus({ preventScroll: true });
    };

    sock.onmessage = (e) => {
      if (ws !== sock) return;
      if (typeof e.data === 'string') {
        const mine = pending.length > 0 && pending[0] === e.data;
        if (mine) pending.shift();
        addLine(e.data, mine ? 'mine' : 'other');
      } else {
        addLine('[binary message, ' + e.data.byteLength + ' bytes]', 'system');
      }
    };

    sock.onclose = (e) => {
      if (ws !== sock) return;
      ws = null;
      if (e.code === 1009) system('The last message was too large for the hub.');
      else if (e.code === 1001) system('The hub is going away.');
      else if (e.code !== 1000 && e.code !== 1005 && e.code !== 1006) {
        system('Disconnected by the hub (' + e.code + (e.reason ? ': ' + e.reason : '') + ').');
      }
      if (e.code >= 4500 && e.code <= 4999) {
        stopped = true;
        setStatus('closed', 'Disconnected' + (e.reason ? ': ' + e.reason : ''));
        return;
      }
      scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    clearRetry();
    if (stopped) return;
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt);
    const delay = Math.round(base / 2 + Math.random() * base / 2);
    attempt++;
    const due = Date.now() + delay;
    const tick = () => {
      const s = Math.max(0, Math.ceil((due - Date.now()) / 1000));
      setStatus('closed', 'Disconnected. Reconnecting in ' + s + ' s…');
    };
    tick();
    countdownTimer = setInterval(tick, 250);
    retryTimer = setTimeout(connect, delay);
  }

  function switchRoom(next) {
    room = next;
    if (location.hash !== '#' + next) history.replaceState(null, '', '#' + next);
    document.title = '#' + next + ' · chathub';
    list.replaceChildren();
    empty.hidden = false;
    stopped = false;
    attempt = 0;
    const old = ws;
    ws = null;
    if (old) old.close(1000, 'switching room');
    connect();
  }

  roomForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const next = roomInput.value.trim();
    if (!ROOM_RE.test(next)) {
      roomInput.setCustomValidity('1 to 64 letters, digits, or _ . : -');
      roomInput.reportValidity();
      return;
    }
    roomInput.setCustomValidity('');
    if (next !== room || !ws) switchRoom(next);
  });
  roomInput.addEventListener('input', () => roomInput.setCustomValidity(''));

  sendForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const text = input.value;
    if (!text.trim() || !ws || ws.readyState !== WebSocket.OPEN) return;
    if (new TextEncoder().encode(text).length > MAX_MESSAGE_BYTES) {
      system('That message is too long (64 KiB at most).');
      return;
    }
    ws.send(text);
    pending.push(text);
    if (pending.length > 100) pending.shift();
    input.value = '';
  });

  window.addEventListener('hashchange', () => {
    const next = roomFromHash();
    if (next && next !== room) {
      roomInput.value = next;
      switchRoom(next);
    }
  });

  // Come back at once when the network or the tab returns instead of waiting
  // out the backoff.
  const retryNow = () => {
    if (!ws && !stopped && retryTimer) { attempt = 0; connect(); }
  };
  window.addEventListener('online', retryNow);
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') retryNow();
  });

  roomInput.value = room;
  document.title = '#' + room + ' · chathub';
  connect();
})();
