// bench/fanout.sh's node-ws peer: topic fan-out written the way the `ws`
// package's README broadcasts, for comparison with wsgate's Websocket.publish.
//
//   NODE_PATH=/usr/share/nodejs node bench/peers/fanout-ws.js PORT
//
// One process, one thread (the harness pins it to one core). On 127.0.0.1:PORT:
//   /sub                      a WebSocket that joins the subscribers
//   /pub                      a WebSocket whose every message is broadcast to
//                             every other open client (the subscribers), as
//                             it came: text as text
//   GET /api/v1/solution/health   200 OK (the harness's readiness check)
// Any other path: 404 (HTTP) or close 1008 (WebSocket). permessage-deflate
// is off (ws's server default); the listen backlog is 1024 (node's default is
// 511), like the websockets peer's, for the client's 200 upgrades in flight.
// SIGTERM or SIGINT ends it.
'use strict';

const http = require('http');
const { WebSocketServer, WebSocket } = require('ws');

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port < 1 || port > 65535) {
  console.error('usage: fanout-ws.js PORT');
  process.exit(2);
}

const server = http.createServer((req, res) => {
  if (req.url === '/api/v1/solution/health') {
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    res.end('OK');
  } else {
    res.writeHead(404);
    res.end();
  }
});

const wss = new WebSocketServer({ server });
const subscribers = new Set();

wss.on('connection', (ws, req) => {
  if (req.url === '/sub') {
    subscribers.add(ws);
    ws.on('close', () => subscribers.delete(ws));
  } else if (req.url === '/pub') {
    ws.on('message', (data, isBinary) => {
      // The idiomatic broadcast: every open client but the sender.
      wss.clients.forEach((client) => {
        if (client !== ws && client.readyState === WebSocket.OPEN) client.send(data, { binary: isBinary });
      });
    });
  } else {
    ws.close(1008, 'unknown path');
  }
  ws.on('error', () => {});
});

server.listen({ port, host: '127.0.0.1', backlog: 1024 }, () => {
  console.log(`fanout-ws listening on 127.0.0.1:${port} (ws ${require('ws/package.json').version}, node ${process.version})`);
});

for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
