// server.js: the broadcast server of the Node.js `ws` tutorials, the
// baseline that bench/run.sh measures chathub against.
//
// Every message from any client goes to every open client, the sender
// included, with its type kept: one room for everybody, like the single
// room of the benchmark. It is kept exactly as naive as the tutorials are
// (no backpressure, no limits beyond ws's defaults) because that is what
// chathub replaces; only the command line and the start-up line are added,
// so that run.sh drives both servers the same way.
//
// Usage: node server.js [--host 127.0.0.1] [--port 0]
// Prints "node-ws listening on http://HOST:PORT/" once it accepts.
import { WebSocketServer } from 'ws';

function option(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const host = option('--host', '127.0.0.1');
const port = Number(option('--port', '0'));

const wss = new WebSocketServer({ host, port });
wss.on('connection', (ws) =>
  ws.on('message', (m, isBinary) =>
    wss.clients.forEach((c) => {
      if (c.readyState === 1) c.send(m, { binary: isBinary });
    })));
wss.on('listening', () => {
  console.log(`node-ws listening on http://${host}:${wss.address().port}/`);
});

// The harness stops the server with SIGTERM; exit without waiting for
// clients, as the tutorial server would die.
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
