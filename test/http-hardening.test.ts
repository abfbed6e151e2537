import { connect, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { basicAuth, MINIMAL_CONFIG, startTestServer, type TestServer, WRITE_KEY } from './helpers.js';

let servers: TestServer[] = [];
afterEach(async () => {
  for (const s of servers) await s.stop();
  servers = [];
});

async function start(serverYaml: string): Promise<TestServer> {
  const s = await startTestServer({ yaml: `${MINIMAL_CONFIG}server:\n${serverYaml}` });
  servers.push(s);
  return s;
}

/** A raw connection to the server, collecting what it answers until it closes. */
function open(port: number): Promise<{ socket: Socket; received: () => string; closed: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let data = '';
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => {
      data += d;
    });
    const closed = new Promise<void>((r) => socket.once('close', () => r()));
    socket.once('error', () => {});
    socket.once('connect', () => resolve({ socket, received: () => data, closed }));
    socket.once('error', reject);
  });
}

/** One request on a raw connection, resolved with the status line once the answer arrives. */
function request(socket: Socket, body: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let data = '';
    const onData = (d: string) => {
      data += d;
      if (data.includes('\r\n\r\n') && data.includes('"success"')) {
        socket.off('data', onData);
        resolve(data.split('\r\n')[0]!);
      }
    };
    socket.on('data', onData);
    socket.once('close', () => reject(new Error(`closed after: ${data}`)));
    socket.write(
      `POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: ${basicAuth(WRITE_KEY)}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    );
  });
}

const event = JSON.stringify({ event: 'E', userId: 'u' });

describe('HTTP hardening (issue 16, finding 7)', () => {
  it('answers 408 and closes a connection whose body never finishes', async () => {
    const s = await start('  requestTimeout: 300ms\n  headersTimeout: 200ms\n');
    const c = await open(s.port);
    // Headers and all of the body but its last byte, then nothing more.
    c.socket.write(
      `POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: ${basicAuth(WRITE_KEY)}\r\nContent-Length: ${event.length}\r\n\r\n${event.slice(0, -1)}`,
    );
    await c.closed;
    expect(c.received()).toMatch(/^HTTP\/1\.1 408 /);
  });

  it('answers 408 and closes a connection whose headers never finish', async () => {
    const s = await start('  requestTimeout: 300ms\n  headersTimeout: 200ms\n');
    const c = await open(s.port);
    c.socket.write('POST /v1/track HTTP/1.1\r\nHost: x\r\nX-Slow: ');
    await c.closed;
    expect(c.received()).toMatch(/^HTTP\/1\.1 408 /);
  });

  it('closes connections past the per-client cap and keeps serving the others', async () => {
    const s = await start('  maxConnectionsPerClient: 2\n');
    const a = await open(s.port);
    const b = await open(s.port);
    // Answered: both are counted by the server before the third arrives.
    expect(await request(a.socket, event)).toBe('HTTP/1.1 200 OK');
    expect(await request(b.socket, event)).toBe('HTTP/1.1 200 OK');
    const c = await open(s.port);
    await c.closed;
    expect(c.received()).toBe('');
    expect(await request(a.socket, event)).toBe('HTTP/1.1 200 OK');
    const metrics = await s.app.inject({ method: 'GET', url: '/metrics' });
    expect(metrics.body).toContain(
      'tributary_requests_refused_total{code="TRIB_ERR_HTTP_TOO_MANY_CONNECTIONS"} 1',
    );
    a.socket.destroy();
    b.socket.destroy();
  });

  async function storedIp(s: TestServer, remoteAddress: string): Promise<unknown> {
    const messageId = `xff-${Date.now()}-${Math.random()}`;
    const res = await s.app.inject({
      method: 'POST',
      url: '/v1/track',
      remoteAddress,
      headers: {
        authorization: basicAuth(WRITE_KEY),
        'content-type': 'application/json',
        'x-forwarded-for': '198.51.100.23',
      },
      payload: JSON.stringify({ event: 'E', userId: 'u', messageId }),
    });
    expect(res.statusCode).toBe(200);
    await s.settle();
    const [row] = await s.query(`SELECT payload FROM events WHERE message_id = '${messageId}'`);
    return JSON.parse(String(row!.payload)).context.ip;
  }

  it('ignores X-Forwarded-For by default', async () => {
    const s = await start('  host: 127.0.0.1\n');
    expect(await storedIp(s, '203.0.113.9')).toBe('203.0.113.9');
  });

  it('believes X-Forwarded-For only from a configured proxy', async () => {
    const s = await start('  trustProxy: [10.0.0.0/8, 192.0.2.1]\n');
    expect(await storedIp(s, '10.1.2.3')).toBe('198.51.100.23');
    expect(await storedIp(s, '192.0.2.1')).toBe('198.51.100.23');
    expect(await storedIp(s, '203.0.113.9')).toBe('203.0.113.9');
  });
});
