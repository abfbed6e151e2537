import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  Analytics,
  type AnalyticsSettings,
  FetchHTTPClient,
  type HTTPClient,
  type HTTPClientRequest,
  type HTTPResponse,
} from '@segment/analytics-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { basicAuth, sqlList, startTestServer, storedRows, type TestServer, WRITE_KEY } from './helpers.js';

/**
 * Compatibility with the real `@segment/analytics-node` client (v3): the client is pointed
 * at the in-process server and everything it sends must land in `events` exactly once.
 */

interface HttpExchange {
  status: number;
  body: string;
  headers: Record<string, string>;
}

let server: TestServer;

beforeAll(async () => {
  server = await startTestServer();
});

afterAll(async () => {
  await server?.stop();
});

const rowsFor = (ids: readonly string[]) => storedRows(server, ids);

async function countsFor(ids: readonly string[]): Promise<Map<string, number>> {
  const rows = await server.query(
    `SELECT message_id, count(*) AS c FROM events WHERE message_id IN (${sqlList(ids)}) GROUP BY 1`,
  );
  return new Map(rows.map((r) => [String(r.message_id), Number(r.c)]));
}

/** A client on the test server that records every HTTP exchange it makes. */
function client(settings: Partial<AnalyticsSettings> = {}) {
  const analytics = new Analytics({
    writeKey: WRITE_KEY,
    host: server.url,
    flushAt: 20,
    flushInterval: 60_000,
    maxRetries: 3,
    ...settings,
  });
  const responses: HttpExchange[] = [];
  const errors: unknown[] = [];
  analytics.on('http_response', (r) =>
    responses.push({ status: r.status, body: r.body, headers: r.headers }),
  );
  analytics.on('error', (err) => errors.push(err));
  return { analytics, responses, errors };
}

function messageIdsOf(body: string): string[] {
  return (JSON.parse(body) as { batch: { messageId: string }[] }).batch.map((e) => e.messageId);
}

describe('@segment/analytics-node against the collection API', () => {
  it('stores all six call types exactly once, with the identities, names and library context', async () => {
    const tag = randomUUID();
    const id = (t: string) => `sdk-${t}-${tag}`;
    const { analytics, responses, errors } = client();

    analytics.track({
      messageId: id('track'),
      userId: 'user-1',
      event: 'Order Completed',
      properties: { total: 42.5, currency: 'EUR' },
    });
    analytics.identify({
      messageId: id('identify'),
      userId: 'user-1',
      anonymousId: 'anon-1',
      traits: { email: 'user-1@example.com', plan: 'pro' },
    });
    analytics.page({
      messageId: id('page'),
      anonymousId: 'anon-2',
      category: 'Docs',
      name: 'Getting Started',
      properties: { path: '/docs/start' },
    });
    analytics.screen({
      messageId: id('screen'),
      userId: 'user-3',
      name: 'Home',
      properties: { variant: 'b' },
    });
    analytics.group({
      messageId: id('group'),
      userId: 'user-1',
      groupId: 'acme',
      traits: { name: 'Acme Inc', employees: 120 },
    });
    analytics.alias({ messageId: id('alias'), userId: 'user-1', previousId: 'anon-1' });
    await analytics.closeAndFlush({ timeout: 10_000 });

    expect(errors).toEqual([]);
    expect(responses.length).toBeGreaterThan(0);
    for (const r of responses) expect(r.status).toBe(200);
    const sent = responses.flatMap((r) => messageIdsOf(r.body));
    expect(sent.sort()).toEqual(['track', 'identify', 'page', 'screen', 'group', 'alias'].map(id).sort());
    await server.settle();
    const rows = await rowsFor(sent);
    const byType = new Map(rows.map((r) => [r.type, r]));
    expect(rows).toHaveLength(6);
    expect([...byType.keys()].sort()).toEqual(['alias', 'group', 'identify', 'page', 'screen', 'track']);
    for (const r of rows) {
      expect(r.message_id).toBe(id(r.type));
      expect(r.source_id).toBe('web');
      expect(r.library).toBe('@segment/analytics-node');
      expect(r.library_version).toBe(analytics.VERSION);
    }
    expect(byType.get('track')).toMatchObject({
      event: 'Order Completed',
      user_id: 'user-1',
      anonymous_id: null,
    });
    expect(byType.get('identify')).toMatchObject({ event: null, user_id: 'user-1', anonymous_id: 'anon-1' });
    expect(byType.get('page')).toMatchObject({
      event: 'Getting Started',
      user_id: null,
      anonymous_id: 'anon-2',
    });
    expect(byType.get('screen')).toMatchObject({ event: 'Home', user_id: 'user-3', anonymous_id: null });
    expect(byType.get('group')).toMatchObject({ user_id: 'user-1', anonymous_id: null });
    expect(byType.get('alias')).toMatchObject({ user_id: 'user-1', anonymous_id: null });

    // The type-specific fields survive in the stored payload.
    const extra = await server.query(
      `SELECT type,
              json_extract(payload, '$.properties.total')::DOUBLE AS total,
              json_extract_string(payload, '$.traits.email') AS email,
              json_extract_string(payload, '$.category') AS category,
              json_extract_string(payload, '$.groupId') AS group_id,
              json_extract_string(payload, '$.previousId') AS previous_id
       FROM events WHERE message_id IN (${sqlList(sent)}) ORDER BY type`,
    );
    const extraByType = new Map(extra.map((r) => [r.type, r]));
    expect(extraByType.get('track')?.total).toBe(42.5);
    expect(extraByType.get('identify')?.email).toBe('user-1@example.com');
    expect(extraByType.get('page')?.category).toBe('Docs');
    expect(extraByType.get('group')?.group_id).toBe('acme');
    expect(extraByType.get('alias')?.previous_id).toBe('anon-1');
  });

  it('keeps the messageIds the client generates itself', async () => {
    const { analytics, responses, errors } = client({ flushAt: 5 });
    const generated: string[] = [];
    // The client emits each call's context, with the messageId it generated, once delivered.
    analytics.on('track', (ctx) => generated.push(String(ctx.event.messageId)));
    const userId = `gen-${randomUUID()}`;
    for (let i = 0; i < 12; i++) analytics.track({ userId, event: 'Clicked', properties: { i } });
    await analytics.closeAndFlush({ timeout: 10_000 });

    expect(errors).toEqual([]);
    // flushAt 5: the 12 events go out as batches of 5, 5 and 2.
    expect(responses.map((r) => messageIdsOf(r.body).length).sort()).toEqual([2, 5, 5]);
    for (const r of responses) expect(r.status).toBe(200);
    const sent = responses.flatMap((r) => messageIdsOf(r.body));
    expect(new Set(sent).size).toBe(12);
    expect([...generated].sort()).toEqual([...sent].sort());

    await server.settle();
    const rows = await server.query(
      `SELECT message_id, json_extract(payload, '$.properties.i')::INTEGER AS i FROM events WHERE user_id = '${userId}'`,
    );
    expect(rows.map((r) => String(r.message_id)).sort()).toEqual([...sent].sort());
    expect(rows.map((r) => Number(r.i)).sort((a, b) => a - b)).toEqual([...Array(12).keys()]);
  });

  it("stores a batch once when the client retries it after losing the server's answer", async () => {
    // The first attempt reaches the server (and is logged), but the client is told 503, as
    // if a proxy had dropped the answer: the client retries the same batch.
    const inner = new FetchHTTPClient();
    const attempts: { retryCount: string | undefined; ids: string[] }[] = [];
    const lossy: HTTPClient = {
      async makeRequest(req: HTTPClientRequest): Promise<HTTPResponse> {
        attempts.push({ retryCount: req.headers['X-Retry-Count'], ids: messageIdsOf(req.body) });
        const res = await inner.makeRequest(req);
        if (res.status !== 200) return res;
        await res.text?.();
        if (attempts.length === 1) return { status: 503, statusText: 'Service Unavailable', headers: {} };
        return res;
      },
    };
    const { analytics, responses, errors } = client({ httpClient: lossy });
    const tag = randomUUID();
    const ids = [0, 1, 2, 3].map((i) => `retry-${i}-${tag}`);
    for (const messageId of ids) analytics.track({ messageId, userId: 'user-r', event: 'Retried' });
    await analytics.closeAndFlush({ timeout: 15_000 });

    expect(errors).toEqual([]);
    expect(responses.map((r) => r.status)).toEqual([503, 200]);
    expect(attempts).toHaveLength(2);
    expect(attempts[0]!.retryCount).toBeUndefined();
    expect(attempts[1]!.retryCount).toBe('1');
    expect(attempts[1]!.ids).toEqual(attempts[0]!.ids);
    expect([...attempts[0]!.ids].sort()).toEqual([...ids].sort());

    await server.settle();
    // Both attempts are in the log, but the warehouse holds each event once.
    const logged = await server.query(
      `SELECT message_id, count(*) AS c FROM log.raw_events WHERE message_id IN (${sqlList(ids)}) GROUP BY 1`,
    );
    expect(logged.map((r) => Number(r.c))).toEqual([2, 2, 2, 2]);
    const counts = await countsFor(ids);
    expect(ids.map((m) => counts.get(m))).toEqual([1, 1, 1, 1]);
  });

  it('stores an event once when the client sends the same messageId twice, in one batch and in separate ones', async () => {
    const tag = randomUUID();
    const sameBatch = `dup-batch-${tag}`;
    const acrossBatches = `dup-across-${tag}`;

    const first = client();
    first.analytics.track({ messageId: sameBatch, userId: 'user-d', event: 'First' });
    first.analytics.track({ messageId: sameBatch, userId: 'user-d', event: 'First again' });
    first.analytics.identify({ messageId: acrossBatches, userId: 'user-d', traits: { n: 1 } });
    await first.analytics.closeAndFlush({ timeout: 10_000 });
    expect(first.errors).toEqual([]);
    expect(first.responses.map((r) => r.status)).toEqual([200]);
    await server.settle();

    // A later batch from another client instance, after the first was loaded.
    const second = client();
    second.analytics.identify({ messageId: acrossBatches, userId: 'user-d', traits: { n: 2 } });
    await second.analytics.closeAndFlush({ timeout: 10_000 });
    expect(second.errors).toEqual([]);
    expect(second.responses.map((r) => r.status)).toEqual([200]);
    await server.settle();

    const rows = await server.query(
      `SELECT message_id, event, json_extract(payload, '$.traits.n')::INTEGER AS n
       FROM events WHERE message_id IN ('${sameBatch}', '${acrossBatches}') ORDER BY message_id`,
    );
    // The first copy wins.
    expect(rows).toEqual([
      { message_id: acrossBatches, event: null, n: 1 },
      { message_id: sameBatch, event: 'First', n: null },
    ]);
  });

  it('stores a batch once when the same request body is POSTed twice', async () => {
    const tag = randomUUID();
    const ids = ['track', 'identify', 'page'].map((t) => `raw-${t}-${tag}`);
    const body = JSON.stringify({
      batch: [
        { type: 'track', messageId: ids[0], userId: 'user-p', event: 'Posted Twice' },
        { type: 'identify', messageId: ids[1], userId: 'user-p', traits: { a: 1 } },
        { type: 'page', messageId: ids[2], anonymousId: 'anon-p', name: 'Pricing' },
      ],
      sentAt: new Date().toISOString(),
      context: { library: { name: '@segment/analytics-node', version: 'test' } },
    });
    const post = () =>
      fetch(`${server.url}/v1/batch`, {
        method: 'POST',
        headers: { authorization: basicAuth(WRITE_KEY), 'content-type': 'application/json' },
        body,
      });
    // Once concurrently (both copies likely in one loader batch), once after loading.
    const [a, b] = await Promise.all([post(), post()]);
    for (const res of [a, b]) {
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual({ success: true, accepted: 3, rejected: [] });
    }
    await server.settle();
    const c = await post();
    expect(c.status).toBe(200);
    await c.json();
    await server.settle();

    const counts = await countsFor(ids);
    expect(ids.map((m) => counts.get(m))).toEqual([1, 1, 1]);
    const logged = await server.query(
      `SELECT count(*) AS c FROM log.raw_events WHERE message_id IN (${sqlList(ids)})`,
    );
    expect(Number(logged[0]?.c)).toBe(9);
  });
});

describe('dedupe across a restart', () => {
  it('drops a retry that arrives after the server restarted on the same data', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'tributary-sdk-restart-'));
    let s: TestServer | undefined;
    try {
      const tag = randomUUID();
      const ids = [0, 1, 2].map((i) => `restart-${i}-${tag}`);
      const send = async (target: TestServer, event: string) => {
        const analytics = new Analytics({
          writeKey: WRITE_KEY,
          host: target.url,
          flushAt: 10,
          maxRetries: 0,
        });
        const statuses: number[] = [];
        analytics.on('http_response', (r) => statuses.push(r.status));
        for (const messageId of ids) analytics.track({ messageId, userId: 'user-x', event });
        await analytics.closeAndFlush({ timeout: 10_000 });
        expect(statuses).toEqual([200]);
      };

      s = await startTestServer({ dataDir });
      await send(s, 'Before Restart');
      await s.settle();
      await s.stop();

      s = await startTestServer({ dataDir });
      await send(s, 'After Restart');
      await s.settle();
      const rows = await s.query(
        `SELECT message_id, event FROM events WHERE message_id IN (${sqlList(ids)}) ORDER BY message_id`,
      );
      expect(rows).toEqual(ids.map((message_id) => ({ message_id, event: 'Before Restart' })));
    } finally {
      await s?.stop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
