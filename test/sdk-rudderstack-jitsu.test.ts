import { randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import { gunzipSync } from 'node:zlib';
import { type JitsuOptions, jitsuAnalytics } from '@jitsu/js';
import Analytics from '@rudderstack/rudder-sdk-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type StoredRow as BaseRow,
  JITSU_KEY,
  sqlList,
  startTestServer,
  type TestServer,
  WEB_AND_JITSU_CONFIG,
  WRITE_KEY,
} from './helpers.js';

/**
 * Compatibility with the real RudderStack Node SDK (`@rudderstack/rudder-sdk-node` v3, in-memory
 * queue, no Redis) and the real Jitsu client (`@jitsu/js` v1, in Node with the global fetch):
 * each client is pointed at the in-process server and what it sends must land in `events`
 * exactly once, under the source its write key names.
 */

/** A Jitsu-style `id:secret` key: the server must take it whole, never split at the colon. */

const require = createRequire(import.meta.url);
const RUDDER_VERSION = (require('@rudderstack/rudder-sdk-node/package.json') as { version: string }).version;
const JITSU_VERSION = (require('@jitsu/js/package.json') as { version: string }).version;

interface StoredRow extends BaseRow {
  ts_ms: unknown;
}

let server: TestServer;

beforeAll(async () => {
  server = await startTestServer({ yaml: WEB_AND_JITSU_CONFIG });
});

afterAll(async () => {
  await server?.stop();
});

/** Rejects when `promise` has not settled within `ms`. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `done` until it holds, for at most `ms`. */
async function waitFor(done: () => boolean, what: string, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const settle = () => within(server.settle(), 10_000, 'the warehouse loader to drain');

async function rowsFor(ids: readonly string[]): Promise<StoredRow[]> {
  return (await server.query(
    `SELECT message_id, source_id, type, event, user_id, anonymous_id,
            json_extract_string(payload, '$.context.library.name') AS library,
            json_extract_string(payload, '$.context.library.version') AS library_version,
            epoch_ms(timestamp) AS ts_ms
     FROM events WHERE message_id IN (${sqlList(ids)}) ORDER BY message_id`,
  )) as unknown as StoredRow[];
}

/** How many times each id is in `events`, and in the event log (accepted or rejected). */
async function storedCounts(ids: readonly string[]): Promise<{ events: number; logged: number }> {
  const [events] = await server.query(
    `SELECT count(*) AS c FROM events WHERE message_id IN (${sqlList(ids)})`,
  );
  const [logged] = await server.query(
    `SELECT count(*) AS c FROM log.raw_events WHERE message_id IN (${sqlList(ids)})`,
  );
  return { events: Number(events?.c), logged: Number(logged?.c) };
}

async function payloadsFor(ids: readonly string[]): Promise<Map<string, Record<string, unknown>>> {
  const rows = await server.query(
    `SELECT message_id, payload FROM events WHERE message_id IN (${sqlList(ids)})`,
  );
  return new Map(rows.map((r) => [String(r.message_id), JSON.parse(String(r.payload))]));
}

// ---------------------------------------------------------------------------------------------
// RudderStack Node SDK
// ---------------------------------------------------------------------------------------------

interface RudderBatch {
  batch: { messageId: string; type: string }[];
  sentAt: string;
}

/** The part of an axios error the SDK hands to `errorHandler` that the tests look at. */
interface AxiosLikeError {
  response?: { status: number; data: unknown };
  config?: { url?: string; auth?: { username?: string }; headers?: Record<string, unknown> };
}

/**
 * A RudderStack client on the test server. Each call's callback is told, once its batch is
 * delivered, the error if any and the request body as sent (the SDK gzips it by default).
 */
function rudderClient(writeKey: string) {
  const errors: unknown[] = [];
  const analytics = new Analytics(writeKey, {
    dataPlaneUrl: server.url,
    flushAt: 20,
    flushInterval: 60_000,
    maxInternalQueueSize: 100,
    retryCount: 1,
    logLevel: 'none',
    errorHandler: (err: unknown) => {
      errors.push(err);
    },
  });
  const outcomes = new Map<string, { err: unknown; body: unknown }>();
  /** The callback for the call with this messageId. */
  const ack =
    (messageId: string) =>
    (err?: Error, body?: unknown): void => {
      outcomes.set(messageId, { err, body });
    };
  return { analytics, errors, outcomes, ack };
}

/** The SDK keeps a caller's messageId (its typings leave the field out). */
const withMessageId = <T extends object>(messageId: string, message: T): T => ({ ...message, messageId });

/** The distinct request bodies, gunzipped: the SDK's default is `gzip: true`. */
function rudderBodies(outcomes: Map<string, { body: unknown }>): RudderBatch[] {
  const distinct = new Set([...outcomes.values()].map((o) => o.body));
  return [...distinct].map((body) => {
    expect(Buffer.isBuffer(body)).toBe(true);
    return JSON.parse(gunzipSync(body as Buffer).toString('utf8')) as RudderBatch;
  });
}

describe('@rudderstack/rudder-sdk-node against the collection API', () => {
  it('stores all six call types exactly once, with identities, names and the SDK library context', async () => {
    const tag = randomUUID();
    const id = (t: string) => `rs-${t}-${tag}`;
    const user = `rs-user-${tag}`;
    const anon = `rs-anon-${tag}`;
    const { analytics, errors, outcomes, ack } = rudderClient(WRITE_KEY);
    const t0 = Date.now();

    analytics.track(
      withMessageId(id('track'), {
        userId: user,
        event: 'Order Completed',
        properties: { total: 42.5, currency: 'EUR' },
      }),
      ack(id('track')),
    );
    analytics.identify(
      withMessageId(id('identify'), {
        userId: user,
        anonymousId: anon,
        traits: { email: 'rs@example.com', plan: 'pro' },
      }),
      ack(id('identify')),
    );
    analytics.page(
      withMessageId(id('page'), {
        anonymousId: anon,
        category: 'Docs',
        name: 'Getting Started',
        properties: { path: '/docs/start' },
      }),
      ack(id('page')),
    );
    analytics.screen(
      withMessageId(id('screen'), { userId: user, name: 'Home', properties: { variant: 'b' } }),
      ack(id('screen')),
    );
    analytics.group(
      withMessageId(id('group'), { userId: user, groupId: 'acme', traits: { name: 'Acme Inc' } }),
      ack(id('group')),
    );
    analytics.alias(withMessageId(id('alias'), { userId: user, previousId: anon }), ack(id('alias')));
    await within(analytics.flush(), 10_000, 'rudder flush');
    await waitFor(() => outcomes.size === 6, 'the six rudder callbacks');

    expect(errors).toEqual([]);
    for (const [messageId, o] of outcomes) expect(o.err, messageId).toBeUndefined();
    const ids = ['track', 'identify', 'page', 'screen', 'group', 'alias'].map(id);
    const bodies = rudderBodies(outcomes);
    const sent = bodies.flatMap((b) => b.batch.map((e) => e.messageId));
    expect([...sent].sort()).toEqual([...ids].sort());
    for (const b of bodies) expect(typeof b.sentAt).toBe('string');

    await settle();
    const rows = await rowsFor(ids);
    expect(rows).toHaveLength(6);
    expect(rows.map((r) => r.type).sort()).toEqual(['alias', 'group', 'identify', 'page', 'screen', 'track']);
    const byType = new Map(rows.map((r) => [r.type, r]));
    for (const r of rows) {
      expect(r.message_id).toBe(id(r.type));
      expect(r.source_id).toBe('web');
      // The SDK still names itself as Segment's old Node library did.
      expect(r.library).toBe('analytics-node');
      expect(r.library_version).toBe(RUDDER_VERSION);
      // It sends originalTimestamp and sentAt, no timestamp: the server derives one.
      expect(Number(r.ts_ms)).toBeGreaterThanOrEqual(t0 - 1_000);
      expect(Number(r.ts_ms)).toBeLessThanOrEqual(Date.now() + 1_000);
    }
    expect(byType.get('track')).toMatchObject({
      event: 'Order Completed',
      user_id: user,
      anonymous_id: null,
    });
    expect(byType.get('identify')).toMatchObject({ event: null, user_id: user, anonymous_id: anon });
    expect(byType.get('page')).toMatchObject({ event: 'Getting Started', user_id: null, anonymous_id: anon });
    expect(byType.get('screen')).toMatchObject({ event: 'Home', user_id: user, anonymous_id: null });
    expect(byType.get('group')).toMatchObject({ event: null, user_id: user, anonymous_id: null });
    expect(byType.get('alias')).toMatchObject({ event: null, user_id: user, anonymous_id: null });

    const payloads = await payloadsFor(ids);
    for (const p of payloads.values()) {
      expect(p.channel).toBe('server');
      expect(p._metadata).toEqual({ nodeVersion: process.versions.node });
      expect(typeof p.originalTimestamp).toBe('string');
    }
    expect(payloads.get(id('track'))?.properties).toEqual({ total: 42.5, currency: 'EUR' });
    expect(payloads.get(id('identify'))).toMatchObject({
      traits: { email: 'rs@example.com', plan: 'pro' },
      // The SDK copies identify traits into the context.
      context: { traits: { email: 'rs@example.com', plan: 'pro' } },
    });
    expect(payloads.get(id('page'))).toMatchObject({ category: 'Docs', properties: { path: '/docs/start' } });
    expect(payloads.get(id('group'))).toMatchObject({ groupId: 'acme', traits: { name: 'Acme Inc' } });
    expect(payloads.get(id('alias'))).toMatchObject({ previousId: anon });
  });

  it('authenticates by write key: an id:secret key routes to its source, an unknown key gets 401 and nothing stored', async () => {
    const tag = randomUUID();

    // HTTP Basic auth with `js.key:s3cret` as the user name (axios appends `:` and no password).
    const other = rudderClient(JITSU_KEY);
    const otherIds = [0, 1, 2].map((i) => `rs-jk-${i}-${tag}`);
    for (const [i, messageId] of otherIds.entries()) {
      other.analytics.track(
        withMessageId(messageId, { userId: `rs-jk-${tag}`, event: 'Keyed', properties: { i } }),
        other.ack(messageId),
      );
    }
    await within(other.analytics.flush(), 10_000, 'rudder flush (id:secret key)');
    await waitFor(() => other.outcomes.size === 3, 'the rudder callbacks (id:secret key)');
    expect(other.errors).toEqual([]);

    const unknown = rudderClient('wk_unknown');
    const unknownIds = [0, 1].map((i) => `rs-unknown-${i}-${tag}`);
    for (const messageId of unknownIds) {
      unknown.analytics.track(
        withMessageId(messageId, { userId: `rs-unknown-${tag}`, event: 'Rejected' }),
        unknown.ack(messageId),
      );
    }
    await within(unknown.analytics.flush(), 10_000, 'rudder flush (unknown key)');
    await waitFor(() => unknown.outcomes.size === 2, 'the rudder callbacks (unknown key)');

    // The SDK reports each failed batch to errorHandler (it does not retry a 401).
    expect(unknown.errors.length).toBeGreaterThan(0);
    for (const err of unknown.errors as AxiosLikeError[]) {
      expect(err.config?.url).toBe(`${server.url}/v1/batch`);
      expect(err.config?.auth?.username).toBe('wk_unknown');
      expect(err.response?.status).toBe(401);
      expect(err.response?.data).toMatchObject({ success: false, code: 'TRIB_ERR_AUTH_UNKNOWN_WRITE_KEY' });
    }
    for (const [messageId, o] of unknown.outcomes) expect(o.err, messageId).toBeDefined();

    await settle();
    const rows = await rowsFor(otherIds);
    expect(rows.map((r) => [r.message_id, r.source_id, r.type, r.event])).toEqual(
      [...otherIds].sort().map((m) => [m, 'jitsu', 'track', 'Keyed']),
    );
    expect(await storedCounts(unknownIds)).toEqual({ events: 0, logged: 0 });
  });
});

// ---------------------------------------------------------------------------------------------
// Jitsu
// ---------------------------------------------------------------------------------------------

interface JitsuExchange {
  url: string;
  headers: Record<string, string>;
  body: Record<string, unknown>;
  status: number;
  response: string;
}

/**
 * A Jitsu client on the test server, with a fetch that records every exchange. In Node the
 * client keeps the user's ids in process-wide storage, shared by all its instances: each
 * client starts with `reset()` (a new anonymousId, no userId or groupId).
 */
async function jitsuClient(writeKey: string, options: Partial<JitsuOptions> = {}) {
  const exchanges: JitsuExchange[] = [];
  const errors: string[] = [];
  const recordingFetch: typeof fetch = async (input, init) => {
    const res = await fetch(input, init);
    exchanges.push({
      url: input instanceof Request ? input.url : String(input),
      headers: { ...(init?.headers as Record<string, string>) },
      body: JSON.parse(String(init?.body)) as Record<string, unknown>,
      status: res.status,
      response: await res.clone().text(),
    });
    return res;
  };
  const analytics = jitsuAnalytics({
    host: server.url,
    writeKey,
    fetch: recordingFetch,
    fetchTimeoutMs: 5_000,
    errorPolicy: (message: string) => {
      errors.push(message);
    },
    ...options,
  });
  await within(analytics.reset(), 5_000, 'jitsu reset');
  return { analytics, exchanges, errors };
}

describe('@jitsu/js against the collection API', () => {
  it.each([
    { s2s: false, prefix: '/api/s' },
    { s2s: true, prefix: '/api/s/s2s' },
  ])(
    'stores track, identify, page and group exactly once (s2s: $s2s, $prefix/:type)',
    async ({ s2s, prefix }) => {
      const tag = randomUUID();
      const user = `js-user-${tag}`;
      const { analytics, exchanges, errors } = await jitsuClient(JITSU_KEY, { s2s });

      await within(analytics.track('Signed Up', { plan: 'pro', tag }), 5_000, 'jitsu track');
      await within(analytics.identify(user, { email: 'js@example.com' }), 5_000, 'jitsu identify');
      // Jitsu's own two-argument form: the page name goes into the properties.
      await within(analytics.page('Pricing', { path: '/pricing' }), 5_000, 'jitsu page');
      await within(analytics.group('acme', { name: 'Acme Inc' }), 5_000, 'jitsu group');
      await waitFor(() => exchanges.length === 4, 'the four jitsu requests');

      expect(errors).toEqual([]);
      const types = ['track', 'identify', 'page', 'group'];
      expect(exchanges.map((x) => x.url)).toEqual(types.map((t) => `${server.url}${prefix}/${t}`));
      for (const x of exchanges) {
        expect(x.headers['X-Write-Key']).toBe(JITSU_KEY);
        // The body carries only a masked key: the header is what authenticates.
        expect(x.body.writeKey).toBe('js.key:***');
        expect(x.status).toBe(200);
        expect(JSON.parse(x.response)).toEqual({ success: true, accepted: 1, rejected: [] });
      }
      const ids = exchanges.map((x) => String(x.body.messageId));
      expect(new Set(ids).size).toBe(4);
      const anon = String(exchanges[0]!.body.anonymousId);
      expect(anon).not.toBe('undefined');

      await settle();
      const rows = await rowsFor(ids);
      expect(rows).toHaveLength(4);
      const byId = new Map(rows.map((r) => [r.message_id, r]));
      for (const [i, type] of types.entries()) {
        const row = byId.get(ids[i]!);
        expect(row, type).toMatchObject({
          type,
          source_id: 'jitsu',
          anonymous_id: anon,
          library: '@jitsu/js',
          library_version: JITSU_VERSION,
        });
      }
      expect(byId.get(ids[0]!)).toMatchObject({ event: 'Signed Up', user_id: null });
      expect(byId.get(ids[1]!)).toMatchObject({ event: null, user_id: user });
      // Jitsu puts a page's name in properties.name; the event column falls back to it.
      expect(byId.get(ids[2]!)).toMatchObject({ event: 'Pricing', user_id: user });
      expect(byId.get(ids[3]!)).toMatchObject({ event: null, user_id: user });

      const payloads = await payloadsFor(ids);
      for (const p of payloads.values()) {
        expect(p.context).toMatchObject({ library: { name: '@jitsu/js', env: 'node' } });
        expect(p).not.toHaveProperty('writeKey');
      }
      expect(payloads.get(ids[0]!)?.properties).toEqual({ plan: 'pro', tag });
      expect(payloads.get(ids[1]!)?.traits).toEqual({ email: 'js@example.com' });
      expect(payloads.get(ids[2]!)?.properties).toMatchObject({ name: 'Pricing', path: '/pricing' });
      expect(payloads.get(ids[3]!)).toMatchObject({ groupId: 'acme', traits: { name: 'Acme Inc' } });
    },
  );

  it('an unknown id:secret key gets 401, which the client reports, and nothing is stored', async () => {
    const { analytics, exchanges, errors } = await jitsuClient('js.key:wrong');
    await within(analytics.track('Rejected', { n: 1 }), 5_000, 'jitsu track (unknown key)');
    await waitFor(() => exchanges.length === 1 && errors.length === 1, 'the rejected jitsu request');

    const [x] = exchanges;
    expect(x?.url).toBe(`${server.url}/api/s/track`);
    expect(x?.headers['X-Write-Key']).toBe('js.key:wrong');
    expect(x?.status).toBe(401);
    expect(JSON.parse(x!.response)).toMatchObject({
      success: false,
      code: 'TRIB_ERR_AUTH_UNKNOWN_WRITE_KEY',
    });
    expect(errors[0]).toContain('401');

    await settle();
    expect(await storedCounts([String(x!.body.messageId)])).toEqual({ events: 0, logged: 0 });
  });
});
