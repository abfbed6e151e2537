import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ADMIN_TOKEN,
  basicAuth,
  startTestServer,
  type TestServer,
  WEB_AND_JITSU_CONFIG,
  WRITE_KEY,
} from './helpers.js';

let server: TestServer;
let seq = 0;
const uid = (p = 'm') => `${p}-${Date.now().toString(36)}-${seq++}`;

beforeAll(async () => {
  server = await startTestServer({
    yaml: `${WEB_AND_JITSU_CONFIG}  - id: off
    type: http
    writeKey: wk_disabled
    enabled: false
`,
  });
});
afterAll(async () => {
  await server?.stop();
});

function post(
  url: string,
  body: unknown,
  headers: Record<string, string> = { authorization: basicAuth(WRITE_KEY) },
) {
  return server.app.inject({
    method: 'POST',
    url,
    headers: { 'content-type': 'application/json', ...headers },
    payload: typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body),
  });
}

async function rowsFor(messageIds: string[]) {
  await server.settle();
  const list = messageIds.map((m) => `'${m}'`).join(',');
  return server.query(
    `SELECT message_id, source_id, type, event, user_id, anonymous_id, payload FROM events WHERE message_id IN (${list}) ORDER BY message_id`,
  );
}

describe('routes', () => {
  const singles: [string, string, Record<string, unknown>][] = [
    ['/v1/track', 'track', { event: 'Clicked' }],
    ['/v1/identify', 'identify', { traits: { email: 'a@example.com' } }],
    ['/v1/page', 'page', { name: 'Home' }],
    ['/v1/screen', 'screen', { name: 'Main' }],
    ['/v1/group', 'group', { groupId: 'g1' }],
    ['/v1/alias', 'alias', { previousId: 'old' }],
    ['/v1/t', 'track', { event: 'Short' }],
    ['/v1/i', 'identify', {}],
    ['/v1/p', 'page', {}],
    ['/v1/s', 'screen', {}],
    ['/v1/g', 'group', { groupId: 'g2' }],
    ['/v1/a', 'alias', { previousId: 'p' }],
    ['/api/s/track', 'track', { event: 'Jitsu' }],
    ['/api/s/page', 'page', {}],
    ['/api/s/s2s/identify', 'identify', {}],
  ];

  it.each(singles)('POST %s stores one %s event', async (url, type, fields) => {
    const messageId = uid();
    const res = await post(url, { userId: 'u1', messageId, ...fields });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({ success: true, accepted: 1, rejected: [] });
    const rows = await rowsFor([messageId]);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ type, source_id: 'web', user_id: 'u1' });
  });

  it.each(['/v1/batch', '/v1/b', '/v1/import', '/beacon/v1/batch', '/api/s/batch'])(
    'POST %s stores a batch',
    async (url) => {
      const ids = [uid(), uid()];
      const res = await post(url, {
        batch: [
          { type: 'track', event: 'A', userId: 'u', messageId: ids[0] },
          { type: 'identify', anonymousId: 'anon', messageId: ids[1] },
        ],
      });
      expect(res.statusCode).toBe(200);
      expect(res.json()).toMatchObject({ success: true, accepted: 2, rejected: [] });
      expect((await rowsFor(ids)).map((r) => r.type).sort()).toEqual(['identify', 'track']);
    },
  );

  it('POST /v1/m accepts and discards analytics.js metrics', async () => {
    const before = (await server.query('SELECT count(*) AS n FROM log.raw_events'))[0]!.n;
    const res = await post(
      '/v1/m',
      { series: [{ type: 'Counter', metric: 'analytics_js.invoke', value: 1 }] },
      {},
    );
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({ success: true });
    expect((await server.query('SELECT count(*) AS n FROM log.raw_events'))[0]!.n).toBe(before);
  });

  it('answers unknown routes and types with JSON errors', async () => {
    const a = await post('/v1/zzz', {});
    expect(a.statusCode).toBe(404);
    expect(a.json().code).toBe('TRIB_ERR_NOT_FOUND');
    const b = await post('/api/s/explode', { userId: 'u' });
    expect(b.statusCode).toBe(400);
    expect(b.json().code).toBe('TRIB_ERR_COLLECT_UNKNOWN_TYPE');
    const c = await server.app.inject({ method: 'GET', url: '/nope' });
    expect(c.statusCode).toBe(404);
    expect(c.headers['content-type']).toContain('application/json');
  });
});

describe('write keys', () => {
  const event = () => ({ type: 'track', event: 'K', userId: 'u', messageId: uid() });

  it('accepts Basic auth, X-Write-Key, ?writeKey= and the body', async () => {
    const forms: { url: string; headers: Record<string, string>; body: unknown }[] = [
      { url: '/v1/track', headers: { authorization: basicAuth(WRITE_KEY) }, body: event() },
      {
        url: '/v1/track',
        headers: { authorization: `Basic ${Buffer.from(WRITE_KEY).toString('base64')}` },
        body: event(),
      },
      { url: '/v1/track', headers: { 'x-write-key': WRITE_KEY }, body: event() },
      { url: `/v1/track?writeKey=${WRITE_KEY}`, headers: {}, body: event() },
      { url: '/v1/track', headers: {}, body: { ...event(), writeKey: WRITE_KEY } },
      { url: '/v1/batch', headers: {}, body: { writeKey: WRITE_KEY, batch: [event()] } },
    ];
    for (const f of forms) {
      const res = await post(f.url, f.body, f.headers);
      expect(res.statusCode, JSON.stringify(f.headers)).toBe(200);
    }
  });

  it('keeps a key that holds a colon whole (Jitsu id:secret)', async () => {
    const messageId = uid();
    const res = await post(
      '/api/s/track',
      { event: 'J', userId: 'u', messageId },
      { authorization: basicAuth('js.key:s3cret') },
    );
    expect(res.statusCode).toBe(200);
    expect((await rowsFor([messageId]))[0]!.source_id).toBe('jitsu');
  });

  it('answers 401 with JSON and stores nothing for a missing, unknown or disabled key', async () => {
    const messageId = uid();
    const cases = [
      await post('/v1/track', { event: 'K', userId: 'u', messageId }, {}),
      await post(
        '/v1/track',
        { event: 'K', userId: 'u', messageId },
        { authorization: basicAuth('wk_unknown') },
      ),
      await post('/v1/track', { event: 'K', userId: 'u', messageId }, { 'x-write-key': 'wk_disabled' }),
      await post('/v1/track', { event: 'K', userId: 'u', messageId, writeKey: 'wk_unknown' }, {}),
    ];
    expect(cases.map((c) => c.statusCode)).toEqual([401, 401, 401, 401]);
    expect(cases.map((c) => c.json().code)).toEqual([
      'TRIB_ERR_AUTH_MISSING_WRITE_KEY',
      'TRIB_ERR_AUTH_UNKNOWN_WRITE_KEY',
      'TRIB_ERR_AUTH_UNKNOWN_WRITE_KEY',
      'TRIB_ERR_AUTH_UNKNOWN_WRITE_KEY',
    ]);
    await server.settle();
    expect(await server.query(`SELECT * FROM log.raw_events WHERE message_id = '${messageId}'`)).toEqual([]);
  });
});

describe('bodies', () => {
  it('parses JSON whatever the Content-Type says', async () => {
    for (const type of [
      'text/plain',
      'application/x-www-form-urlencoded',
      'application/octet-stream',
      'application/json; charset=utf-8',
    ]) {
      const messageId = uid();
      const res = await server.app.inject({
        method: 'POST',
        url: '/v1/track',
        headers: { 'content-type': type, authorization: basicAuth(WRITE_KEY) },
        payload: JSON.stringify({ event: 'CT', userId: 'u', messageId }),
      });
      expect(res.statusCode, type).toBe(200);
    }
    const none = await server.app.inject({
      method: 'POST',
      url: '/v1/track',
      headers: { authorization: basicAuth(WRITE_KEY) },
      payload: Buffer.from(JSON.stringify({ event: 'CT', userId: 'u' })),
    });
    expect(none.statusCode).toBe(200);
  });

  it('accepts Content-Encoding: gzip', async () => {
    const ids = [uid(), uid()];
    const res = await post(
      '/v1/batch',
      gzipSync(
        JSON.stringify({
          batch: ids.map((messageId) => ({ type: 'track', event: 'Gz', userId: 'u', messageId })),
        }),
      ),
      { authorization: basicAuth(WRITE_KEY), 'content-encoding': 'gzip' },
    );
    expect(res.statusCode).toBe(200);
    expect(await rowsFor(ids)).toHaveLength(2);
  });

  it('refuses invalid JSON, a non-object body and corrupt gzip with stable codes', async () => {
    const bad = await post('/v1/track', '{"event": "x",');
    expect(bad.statusCode).toBe(400);
    expect(bad.json().code).toBe('TRIB_ERR_COLLECT_INVALID_JSON');
    const arr = await post('/v1/track', '[1,2]');
    expect(arr.json().code).toBe('TRIB_ERR_COLLECT_NOT_AN_OBJECT');
    const empty = await post('/v1/track', '');
    expect(empty.statusCode).toBe(400);
    const gz = await post('/v1/track', 'not gzip', {
      authorization: basicAuth(WRITE_KEY),
      'content-encoding': 'gzip',
    });
    expect(gz.statusCode).toBe(400);
    expect(gz.json().code).toBe('TRIB_ERR_COLLECT_BAD_ENCODING');
    const batch = await post('/v1/batch', { batch: { type: 'track' } });
    expect(batch.json().code).toBe('TRIB_ERR_COLLECT_BATCH_NOT_ARRAY');
  });

  it('refuses nesting deeper than 64', async () => {
    let deep: unknown = 'leaf';
    for (let i = 0; i < 70; i++) deep = { d: deep };
    const res = await post('/v1/track', { event: 'Deep', userId: 'u', properties: deep });
    expect(res.statusCode).toBe(400);
    expect(res.json().code).toBe('TRIB_ERR_COLLECT_TOO_DEEP');
  });

  it('never lets __proto__, constructor or prototype keys reach a prototype', async () => {
    const messageId = uid();
    const res = await post(
      '/v1/track',
      `{"event":"Proto","userId":"u","messageId":"${messageId}","__proto__":{"polluted":1},"properties":{"__proto__":{"polluted":1},"constructor":{"prototype":{"polluted":1}},"prototype":{"x":1},"kept":true}}`,
    );
    expect(res.statusCode).toBe(200);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    const [row] = await rowsFor([messageId]);
    const payload = JSON.parse(String(row!.payload));
    expect(payload.properties).toEqual({ prototype: { x: 1 }, kept: true });
    expect(Object.hasOwn(payload, '__proto__')).toBe(false);
  });
});

describe('limits', () => {
  const bigEvent = (bytes: number) => ({
    type: 'track',
    event: 'Big',
    userId: 'u',
    messageId: uid(),
    properties: { blob: 'x'.repeat(bytes) },
  });

  it('refuses a single event over 32 KB, gzipped or not', async () => {
    const plain = await post('/v1/track', bigEvent(33 * 1024));
    expect(plain.statusCode).toBe(400);
    expect(plain.json().code).toBe('TRIB_ERR_COLLECT_EVENT_TOO_LARGE');
    const gz = await post('/v1/track', gzipSync(JSON.stringify(bigEvent(33 * 1024))), {
      authorization: basicAuth(WRITE_KEY),
      'content-encoding': 'gzip',
    });
    expect(gz.statusCode).toBe(400);
    expect(gz.json().code).toBe('TRIB_ERR_COLLECT_EVENT_TOO_LARGE');
    const under = await post('/v1/track', bigEvent(31 * 1024));
    expect(under.statusCode).toBe(200);
  });

  it('refuses a batch over 500 KB decoded, even when it arrives small and gzipped', async () => {
    const batch = { batch: Array.from({ length: 20 }, () => bigEvent(26 * 1024)) };
    const plain = await post('/v1/batch', batch);
    expect(plain.statusCode).toBe(400);
    expect(plain.json().code).toBe('TRIB_ERR_COLLECT_BODY_TOO_LARGE');
    const gz = gzipSync(JSON.stringify(batch));
    expect(gz.length).toBeLessThan(100 * 1024);
    const zipped = await post('/v1/batch', gz, {
      authorization: basicAuth(WRITE_KEY),
      'content-encoding': 'gzip',
    });
    expect(zipped.statusCode).toBe(400);
    expect(zipped.json().code).toBe('TRIB_ERR_COLLECT_BODY_TOO_LARGE');
  });

  it('refuses more than 2,500 events in a batch and takes exactly 2,500', async () => {
    const ev = { type: 'track', event: 'N', userId: 'u' };
    const over = await post('/v1/batch', { batch: Array.from({ length: 2501 }, () => ev) });
    expect(over.statusCode).toBe(400);
    expect(over.json().code).toBe('TRIB_ERR_COLLECT_TOO_MANY_EVENTS');
    const exact = await post('/v1/batch', { batch: Array.from({ length: 2500 }, () => ev) });
    expect(exact.statusCode).toBe(200);
    expect(exact.json().accepted).toBe(2500);
  });

  it('rejects one oversized event inside a batch and keeps the others', async () => {
    const ok = { type: 'track', event: 'Fine', userId: 'u', messageId: uid() };
    const big = bigEvent(33 * 1024);
    const res = await post('/v1/batch', { batch: [ok, big] });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({
      accepted: 1,
      rejected: [{ index: 1, code: 'TRIB_ERR_EVENT_TOO_LARGE' }],
    });
  });
});

describe('per-event rejection', () => {
  it('stores invalid events as failed with their reason and accepts the rest', async () => {
    const good = uid();
    const bad = [uid(), uid(), uid(), uid()];
    const res = await post('/v1/batch', {
      batch: [
        { type: 'track', event: 'Good', userId: 'u', messageId: good },
        { type: 'track', event: 'NoId', messageId: bad[0] },
        { type: 'track', userId: 'u', messageId: bad[1] },
        { type: 'track', event: 'LongId', userId: 'u', messageId: 'x'.repeat(101) },
        { type: 'identify', userId: { nested: true }, messageId: bad[2] },
        'not an event',
        { type: 'track', event: 'Props', userId: 'u', properties: 'str', messageId: bad[3] },
      ],
    });
    expect(res.statusCode).toBe(200);
    const body = res.json();
    expect(body.accepted).toBe(1);
    expect(body.rejected.map((r: { index: number; code: string }) => [r.index, r.code])).toEqual([
      [1, 'TRIB_ERR_EVENT_MISSING_IDENTITY'],
      [2, 'TRIB_ERR_EVENT_MISSING_EVENT_NAME'],
      [3, 'TRIB_ERR_EVENT_MESSAGE_ID_TOO_LONG'],
      [4, 'TRIB_ERR_EVENT_INVALID_FIELD'],
      [5, 'TRIB_ERR_EVENT_NOT_OBJECT'],
      [6, 'TRIB_ERR_EVENT_INVALID_FIELD'],
    ]);
    expect(await rowsFor([good])).toHaveLength(1);
    expect(await rowsFor(bad)).toHaveLength(0);
    const failed = await server.query(
      `SELECT message_id, stage, code, reason, payload FROM failed_events WHERE message_id IN (${bad.map((b) => `'${b}'`).join(',')}) ORDER BY code`,
    );
    expect(failed.map((f) => f.code)).toEqual([
      'TRIB_ERR_EVENT_INVALID_FIELD',
      'TRIB_ERR_EVENT_INVALID_FIELD',
      'TRIB_ERR_EVENT_MISSING_EVENT_NAME',
      'TRIB_ERR_EVENT_MISSING_IDENTITY',
    ]);
    expect(failed.every((f) => f.stage === 'collect' && String(f.reason).length > 0)).toBe(true);
    expect(JSON.parse(String(failed[3]!.payload))).toMatchObject({ event: 'NoId' });
  });
});

describe('server-side fields', () => {
  it('sets receivedAt, messageId, context.ip, merges batch context and corrects clock skew', async () => {
    const res = await post('/v1/batch', {
      context: { library: { name: 'batch-lib' }, locale: 'en' },
      integrations: { All: false },
      sentAt: new Date(Date.now() + 3_600_000 + 5_000).toISOString(),
      batch: [
        {
          type: 'track',
          event: 'Skewed',
          userId: 'skew-user',
          originalTimestamp: new Date(Date.now() + 3_600_000).toISOString(),
          context: { locale: 'fr' },
        },
      ],
    });
    expect(res.statusCode).toBe(200);
    await server.settle();
    const [row] = await server.query(`SELECT payload FROM events WHERE user_id = 'skew-user'`);
    const e = JSON.parse(String(row!.payload));
    expect(e.messageId).toMatch(/^[0-9a-f-]{36}$/);
    expect(e.context).toMatchObject({ library: { name: 'batch-lib' }, locale: 'fr', ip: '127.0.0.1' });
    expect(e.integrations).toEqual({ All: false });
    const skew = Date.parse(e.receivedAt) - Date.parse(e.timestamp);
    expect(skew).toBeGreaterThanOrEqual(4_000);
    expect(skew).toBeLessThanOrEqual(6_000);
  });

  it('replaces a far-future timestamp and keeps the warning on the stored event', async () => {
    const messageId = uid();
    await post('/v1/track', { event: 'Future', userId: 'u', messageId, timestamp: '2099-01-01T00:00:00Z' });
    const [row] = await rowsFor([messageId]);
    const e = JSON.parse(String(row!.payload));
    expect(e.timestamp).toBe(e.receivedAt);
    expect(e._tributary.warnings[0].code).toBe('TRIB_WARN_TIMESTAMP_IN_FUTURE');
  });
});

describe('values every engine can store (issue 16, findings 1 and 7)', () => {
  it('rejects impossible and out-of-range timestamps per event and accepts the rest with 200', async () => {
    const good = uid();
    const bad = [uid(), uid(), uid(), uid(), uid()];
    const res = await post('/v1/batch', {
      batch: [
        {
          type: 'track',
          event: 'Bad',
          userId: 'u',
          messageId: bad[0],
          timestamp: '2020-02-30T00:00:00.000Z',
        },
        {
          type: 'track',
          event: 'Bad',
          userId: 'u',
          messageId: bad[1],
          originalTimestamp: '+275760-09-13T00:00:00.000Z',
          sentAt: '-271821-04-20T00:00:00.000Z',
        },
        {
          type: 'track',
          event: 'Bad',
          userId: 'u',
          messageId: bad[2],
          sentAt: '-271821-04-20T00:00:00.000Z',
        },
        {
          type: 'track',
          event: 'Bad',
          userId: 'u',
          messageId: bad[3],
          originalTimestamp: '0001-01-01T00:00:00.000Z',
          sentAt: '9999-12-31T00:00:00.000Z',
        },
        {
          type: 'track',
          event: 'Bad',
          userId: 'u',
          messageId: bad[4],
          originalTimestamp: '2021-02-29T00:00:00Z',
        },
        { type: 'track', event: 'Good', userId: 'u', messageId: good, timestamp: '2020-02-29T00:00:00.000Z' },
      ],
    });
    expect(res.statusCode).toBe(200);
    const body = res.json();
    expect(body.accepted).toBe(1);
    expect(body.rejected.map((r: { index: number; code: string }) => [r.index, r.code])).toEqual(
      [0, 1, 2, 3, 4].map((i) => [i, 'TRIB_ERR_EVENT_INVALID_TIMESTAMP']),
    );
    const [row] = await rowsFor([good]);
    expect(JSON.parse(String(row!.payload)).timestamp).toBe('2020-02-29T00:00:00.000Z');
    const failed = await server.query(
      `SELECT code FROM failed_events WHERE message_id IN (${bad.map((b) => `'${b}'`).join(',')})`,
    );
    expect(failed.map((f) => f.code)).toEqual(bad.map(() => 'TRIB_ERR_EVENT_INVALID_TIMESTAMP'));
  });

  it('an out-of-range batch sentAt rejects the events it applies to, never the request', async () => {
    const ids = [uid(), uid()];
    const res = await post('/v1/batch', {
      sentAt: '+275760-09-13T00:00:00.000Z',
      batch: [
        {
          type: 'track',
          event: 'A',
          userId: 'u',
          messageId: ids[0],
          originalTimestamp: '2026-01-01T00:00:00Z',
        },
        { type: 'track', event: 'B', userId: 'u', messageId: ids[1], sentAt: '2026-01-01T00:00:01Z' },
      ],
    });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({
      accepted: 1,
      rejected: [{ index: 0, code: 'TRIB_ERR_EVENT_INVALID_TIMESTAMP' }],
    });
    expect(await rowsFor([ids[1]!])).toHaveLength(1);
  });

  it('stores lone surrogates and U+0000 as U+FFFD, in values and keys, and keeps loading', async () => {
    const [a, b] = [uid(), uid()];
    const res = await post(
      '/v1/batch',
      `{"batch":[{"type":"track","event":"S\\ud800","userId":"u","messageId":"${a}","properties":{"s":"\\ud800","k\\udc00":"x","pair":"\\ud83d\\ude00","nul":"a\\u0000b"}},{"type":"track","event":"After","userId":"u","messageId":"${b}"}]}`,
    );
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({ accepted: 2, rejected: [] });
    const rows = await rowsFor([a, b]);
    expect(rows).toHaveLength(2);
    const e = JSON.parse(String(rows.find((r) => r.message_id === a)!.payload));
    expect(e.event).toBe('S\ufffd');
    expect(e.properties).toEqual({ s: '\ufffd', 'k\ufffd': 'x', pair: '😀', nul: 'a\ufffdb' });
  });
});

describe('dedupe', () => {
  it('stores a client retry of the same batch once', async () => {
    const ids = [uid(), uid(), uid()];
    const batch = {
      batch: ids.map((messageId) => ({ type: 'track', event: 'Retry', userId: 'u', messageId })),
    };
    const first = await post('/v1/batch', batch);
    await server.settle();
    const retry = await post('/v1/batch', batch, {
      authorization: basicAuth(WRITE_KEY),
      'x-retry-count': '1',
    });
    const again = await post('/v1/batch', batch);
    expect([first.statusCode, retry.statusCode, again.statusCode]).toEqual([200, 200, 200]);
    expect(await rowsFor(ids)).toHaveLength(3);
  });

  it('treats the same messageId from another source as a different event', async () => {
    const messageId = uid();
    await post('/v1/track', { event: 'Two', userId: 'u', messageId });
    await post(
      '/api/s/track',
      { event: 'Two', userId: 'u', messageId },
      { authorization: basicAuth('js.key:s3cret') },
    );
    expect((await rowsFor([messageId])).map((r) => r.source_id).sort()).toEqual(['jitsu', 'web']);
  });

  it('dedupes within a single batch', async () => {
    const messageId = uid();
    const ev = { type: 'track', event: 'Twice', userId: 'u', messageId };
    await post('/v1/batch', { batch: [ev, ev] });
    expect(await rowsFor([messageId])).toHaveLength(1);
  });
});

describe('CORS', () => {
  it('answers the preflight, echoing the Origin and allowing the SDK headers', async () => {
    const res = await server.app.inject({
      method: 'OPTIONS',
      url: '/v1/batch',
      headers: {
        origin: 'https://shop.example.com',
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'content-type,authorization,x-retry-count,rsa-retry-attempt',
      },
    });
    expect(res.statusCode).toBe(204);
    expect(res.headers['access-control-allow-origin']).toBe('https://shop.example.com');
    expect(res.headers['access-control-allow-credentials']).toBe('true');
    const allowed = String(res.headers['access-control-allow-headers']).toLowerCase().split(/,\s*/);
    for (const h of [
      'authorization',
      'content-type',
      'x-retry-count',
      'anonymousid',
      'sentat',
      'rsa-retry-attempt',
      'rsa-since-last-attempt',
      'rsa-since-first-attempt',
      'rsa-retry-reason',
      'rsa-recovered',
      'x-write-key',
    ]) {
      expect(allowed).toContain(h);
    }
  });

  it('echoes the Origin on the actual request', async () => {
    const res = await post(
      '/v1/track',
      { event: 'C', userId: 'u' },
      { authorization: basicAuth(WRITE_KEY), origin: 'https://a.example' },
    );
    expect(res.headers['access-control-allow-origin']).toBe('https://a.example');
    expect(res.headers['access-control-allow-credentials']).toBe('true');
  });
});

describe('SDK settings endpoints', () => {
  it('serves analytics-next settings pointing back at this server', async () => {
    const res = await server.app.inject({
      method: 'GET',
      url: `/v1/projects/${WRITE_KEY}/settings`,
      headers: { host: 'cdp.local:8080' },
    });
    expect(res.statusCode).toBe(200);
    const s = res.json();
    expect(s.integrations['Segment.io']).toMatchObject({
      apiKey: WRITE_KEY,
      apiHost: 'cdp.local:8080/v1',
      protocol: 'http',
    });
    expect(s.metrics.sampleRate).toBe(0);
    const unknown = await server.app.inject({ method: 'GET', url: '/v1/projects/nope/settings' });
    expect(unknown.statusCode).toBe(401);
    expect(unknown.json().code).toBe('TRIB_ERR_AUTH_UNKNOWN_WRITE_KEY');
  });

  it('serves RudderStack sourceConfig for the write key', async () => {
    const res = await server.app.inject({
      method: 'GET',
      url: '/sourceConfig/?p=npm&v=3.0.0',
      headers: { authorization: basicAuth(WRITE_KEY) },
    });
    expect(res.statusCode).toBe(200);
    expect(res.json().source).toMatchObject({
      id: 'web',
      writeKey: WRITE_KEY,
      enabled: true,
      destinations: [],
    });
    const q = await server.app.inject({ method: 'GET', url: `/sourceConfig/?writeKey=${WRITE_KEY}` });
    expect(q.statusCode).toBe(200);
    const none = await server.app.inject({ method: 'GET', url: '/sourceConfig/' });
    expect(none.statusCode).toBe(401);
  });
});

describe('operations endpoints', () => {
  it('runs DuckDB within the configured memory limit (default 2GB)', async () => {
    const [row] = await server.query("SELECT current_setting('memory_limit') AS m");
    expect(row!.m).toBe('1.8 GiB');
  });

  it('/healthz reports the log and loader positions', async () => {
    const res = await server.app.inject({ method: 'GET', url: '/healthz' });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({
      status: 'ok',
      log: { endOffset: expect.any(Number) },
      loader: { position: expect.any(Number) },
    });
  });

  it('/metrics exports received, accepted and rejected per source, and the log lag', async () => {
    await post('/v1/batch', {
      batch: [
        { type: 'track', event: 'M', userId: 'u' },
        { type: 'track', event: 'M' },
      ],
    });
    const res = await server.app.inject({ method: 'GET', url: '/metrics' });
    expect(res.statusCode).toBe(200);
    const text = res.body;
    const value = (re: RegExp) => Number(re.exec(text)?.[1]);
    const received = value(/^tributary_events_received_total\{source="web"\} (\d+)/m);
    const accepted = value(/^tributary_events_accepted_total\{source="web"\} (\d+)/m);
    const rejected = [
      ...text.matchAll(/^tributary_events_rejected_total\{source="web",code="[A-Z_]+"\} (\d+)/gm),
    ].reduce((s, m) => s + Number(m[1]), 0);
    expect(received).toBeGreaterThan(0);
    expect(received).toBe(accepted + rejected);
    expect(text).toMatch(/^tributary_log_lag_events \d+/m);
  });

  it('the admin API needs the admin token; write keys do not open it', async () => {
    const sql = JSON.stringify({ sql: 'SELECT 1 AS one' });
    const none = await server.app.inject({ method: 'POST', url: '/admin/v1/query', payload: sql });
    const wk = await server.app.inject({
      method: 'POST',
      url: '/admin/v1/query',
      payload: sql,
      headers: { authorization: basicAuth(WRITE_KEY) },
    });
    const wrong = await server.app.inject({
      method: 'POST',
      url: '/admin/v1/query',
      payload: sql,
      headers: { authorization: 'Bearer nope' },
    });
    expect([none.statusCode, wk.statusCode, wrong.statusCode]).toEqual([401, 401, 401]);
    expect(none.json().code).toBe('TRIB_ERR_AUTH_ADMIN_TOKEN');
    const ok = await server.app.inject({
      method: 'POST',
      url: '/admin/v1/query',
      payload: sql,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    expect(ok.json()).toEqual({ columns: ['one'], rows: [{ one: 1 }], truncated: false });
    const bad = await server.app.inject({
      method: 'POST',
      url: '/admin/v1/query',
      payload: JSON.stringify({ sql: 'SELEC nonsense' }),
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    expect(bad.statusCode).toBe(400);
    expect(bad.json().code).toBe('TRIB_ERR_QUERY_FAILED');
    const sources = await server.app.inject({
      method: 'GET',
      url: '/admin/v1/sources',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    expect(sources.json().sources.map((s: { id: string }) => s.id)).toEqual(['web', 'jitsu', 'off']);
  });
});
