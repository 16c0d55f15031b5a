// Node.js `ws` echo at /ws, a peer for the benchmark: no compression
// (the load generator offers none), large messages, no ping timer.
'use strict';
const { WebSocketServer } = require('ws');

const wss = new WebSocketServer({
  host: process.env.HOST || '127.0.0.1',
  port: Number(process.env.PORT || 0),
  path: '/ws',
  backlog: 511,
  maxPayload: 16 * 1024 * 1024,
  perMessageDeflate: false,
  clientTracking: false,
});

wss.on('listening', () => {
  const { address, port } = wss.address();
  process.stderr.write(`ws: listening on ${address}:${port}\n`);
});

wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on('error', () => {});    // the socket closes; nothing to add
});

process.on('SIGTERM', () => process.exit(0));
