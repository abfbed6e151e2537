import { createServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { httpDestination } from '../src/destinations/http/spec.js';
import type { Delivery, StreamDestination } from '../src/destinations/stream.js';
import { HttpReceiver } from './http-receiver.js';

/** The http connector on its own, against a local receiver: answers, timeouts, deletions, check. */

let receiver: HttpReceiver;
let answer: (path: string) => { status: number; retryAfter?: string; delayMs?: number } = () => ({
  status: 200,
});
beforeAll(async () => {
  receiver = await new HttpReceiver((r) => answer(r.path)).start();
});
afterAll(() => receiver.close());

async function destination(entry: Record<string, unknown> = {}): Promise<StreamDestination> {
  const config = httpDestination.config.parse({ id: 'h', type: 'http', url: `${receiver.url}/in`, ...entry });
  return (await httpDestination.connector()).create(config, { dataDir: '.' });
}

const delivery = (key: string, payload: Record<string, unknown> = { messageId: key }): Delivery => ({
  key,
  orderKey: 'u',
  op: 'event',
  payload,
});

const signal = () => AbortSignal.timeout(2_000);

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

describe('the http connector', () => {
  it('maps the answers: 2xx ok, 408/429/5xx retryable with Retry-After, other 4xx failed', async () => {
    const d = await destination();
    const cases: [number, string | undefined, unknown][] = [
      [204, undefined, { status: 'ok', detail: 'HTTP 204' }],
      [429, '7', { status: 'retryable', retryAfterMs: 7000 }],
      [503, undefined, { status: 'retryable' }],
      [408, undefined, { status: 'retryable' }],
      [404, undefined, { status: 'failed', code: 'TRIB_ERR_DELIVERY_REFUSED' }],
    ];
    for (const [status, retryAfter, expected] of cases) {
      answer = () => ({ status, retryAfter });
      const [r] = await d.send([delivery(`k${status}`)], signal());
      expect(r).toMatchObject(expected as object);
    }
    answer = () => ({ status: 503, retryAfter: new Date(Date.now() + 60_000).toUTCString() });
    const [dated] = await d.send([delivery('kd')], signal());
    expect(dated!.status === 'retryable' && dated!.retryAfterMs).toBeGreaterThan(50_000);
  });

  it('answers retryable for a timeout and for nothing listening, and failed for a body the template cannot make', async () => {
    answer = () => ({ status: 200, delayMs: 500 });
    const d = await destination();
    const [late] = await d.send([delivery('slow')], AbortSignal.timeout(100));
    expect(late).toEqual({ status: 'retryable', error: 'the request timed out' });
    const port = await closedPort();
    const down = await (await httpDestination.connector()).create(
      httpDestination.config.parse({ id: 'h', type: 'http', url: `http://127.0.0.1:${port}/x` }),
      {
        dataDir: '.',
      },
    );
    const [refused] = await down.send([delivery('x')], signal());
    expect(refused).toMatchObject({ status: 'retryable' });
    answer = () => ({ status: 200 });
    const templated = await destination({ body: 'missing.field' });
    const [enc] = await templated.send([delivery('t')], signal());
    expect(enc).toMatchObject({ status: 'failed', code: 'TRIB_ERR_DELIVERY_ENCODE' });
  });

  it('posts deletions to its deletionUrl, and refuses them without one', async () => {
    answer = () => ({ status: 200 });
    const d = await destination({ deletionUrl: `${receiver.url}/delete` });
    const before = receiver.requests.length;
    const r = await d.deleteIdentities!([{ type: 'user_id', value: 'u1' }], signal());
    expect(r).toMatchObject({ status: 'ok' });
    const req = receiver.requests[before]!;
    expect(req.path).toBe('/delete');
    expect((req.json as { identities: unknown }).identities).toEqual([{ type: 'user_id', value: 'u1' }]);
    const without = await destination();
    expect(await without.deleteIdentities!([{ type: 'user_id', value: 'u1' }], signal())).toMatchObject({
      status: 'failed',
    });
  });

  it('checks that something listens at the URL, sending nothing', async () => {
    const connector = await httpDestination.connector();
    const before = receiver.requests.length;
    const ok = await connector.check(
      httpDestination.config.parse({ id: 'h', type: 'http', url: receiver.url }),
      {
        dataDir: '.',
      },
    );
    expect(ok).toEqual({ ok: true });
    expect(receiver.requests.length).toBe(before);
    const port = await closedPort();
    const bad = await connector.check(
      httpDestination.config.parse({ id: 'h', type: 'http', url: `http://127.0.0.1:${port}` }),
      { dataDir: '.' },
    );
    expect(bad).toMatchObject({ ok: false, code: 'TRIB_ERR_DEST_CHECK_UNREACHABLE' });
    expect(bad.ok || bad.message).toContain(`127.0.0.1:${port}`);
  });
});
