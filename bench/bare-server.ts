/**
 * The baseline of the ingest benchmark: a bare node:http server that reads the body,
 * JSON.parses it and answers 200 `{"success":true}`, with no validation and no durability.
 * It prints `listening <port>` once ready. Usage: node --import tsx bench/bare-server.ts [port]
 */
import { createServer } from 'node:http';

const RESPONSE = Buffer.from('{"success":true}');

const server = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    try {
      JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      res.writeHead(400, { 'content-type': 'application/json; charset=utf-8' });
      res.end('{"success":false}');
      return;
    }
    res.writeHead(200, {
      'content-type': 'application/json; charset=utf-8',
      'content-length': RESPONSE.length,
    });
    res.end(RESPONSE);
  });
  req.on('error', () => res.destroy());
});
server.keepAliveTimeout = 60_000;

server.listen(Number(process.argv[2] ?? 0), '127.0.0.1', () => {
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  process.stdout.write(`listening ${port}\n`);
});

const stop = () => {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
