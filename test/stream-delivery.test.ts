import { afterEach, describe, expect, it } from 'vitest';
import { verifySignature } from '../src/destinations/http/signature.js';
import {
  ADMIN_TOKEN,
  cleanupAfterEach,
  MINIMAL_CONFIG,
  sendBatch,
  startTestServer,
  type TestServer,
} from './helpers.js';
import { HttpReceiver, type ReceivedRequest } from './http-receiver.js';

/**
 * The delivery runner and the HTTP destination in the embedded server, against a real local
 * HTTP receiver that fails, times out and answers 429 with Retry-After on a schedule.
 */

const { servers } = cleanupAfterEach();
const receivers: HttpReceiver[] = [];
afterEach(async () => {
  for (const r of receivers.splice(0)) await r.close();
});

async function receiver(answer?: ConstructorParameters<typeof HttpReceiver>[0]): Promise<HttpReceiver> {
  const r = await new HttpReceiver(answer).start();
  receivers.push(r);
  return r;
}

/**
 * A server with one http destination `hook` to `url`; `settings` are YAML values of its entry
 * over tiny test defaults (the retry window and backoff of milliseconds).
 */
async function serverWith(
  url: string,
  settings: Record<string, string> = {},
  env: Record<string, string> = {},
): Promise<TestServer> {
  const entry: Record<string, string> = {
    url: `${url}/events`,
    timeout: '300ms',
    retryWindow: '20s',
    startFrom: 'beginning',
    backoff: '{ initial: 20ms, max: 200ms }',
    breaker: '{ failures: 1000, cooldown: 100ms }',
    ...settings,
  };
  const yaml = `${MINIMAL_CONFIG}destinations:
  - id: warehouse
    type: duckdb
  - id: hook
    type: http
${Object.entries(entry)
  .map(([k, v]) => `    ${k}: ${v}\n`)
  .join('')}`;
  const s = await startTestServer({ yaml, env });
  servers.push(s);
  return s;
}

const track = (messageId: string, userId: string, extra: Record<string, unknown> = {}) => ({
  type: 'track',
  messageId,
  userId,
  event: 'Order Completed',
  properties: { n: messageId },
  ...extra,
});

async function admin(s: TestServer, method: 'GET' | 'POST', url: string, body?: unknown) {
  const res = await s.app.inject({
    method,
    url,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
    ...(body === undefined ? {} : { payload: JSON.stringify(body) }),
  });
  expect(res.statusCode, res.body).toBe(200);
  return res.json() as Record<string, unknown>;
}

async function progress(s: TestServer) {
  const stats = (await admin(s, 'GET', '/admin/v1/stats')) as {
    destinations: { destination: string; [k: string]: unknown }[];
  };
  return stats.destinations.find((d) => d.destination === 'hook')!;
}

/** Messages accepted by the receiver, per user, in the order accepted. */
function perUser(r: HttpReceiver): Map<string, string[]> {
  const m = new Map<string, string[]>();
  for (const e of r.events)
    m.set(String(e.userId), [...(m.get(String(e.userId)) ?? []), String(e.messageId)]);
  return m;
}

describe('streaming delivery over HTTP', () => {
  it('delivers each event once at a deduplicating receiver, in order per user, through 503s, 429s and timeouts', {
    timeout: 40_000,
  }, async () => {
    // A schedule of faults: every 4th request a 503, every 7th a 429 asking to wait, every
    // 9th answered only after the client's timeout (the receiver took it: a resend is a duplicate).
    const r = await receiver((req) =>
      req.n % 9 === 8
        ? { status: 200, delayMs: 500 }
        : req.n % 7 === 6
          ? { status: 429, retryAfter: '0' }
          : req.n % 4 === 3
            ? { status: 503 }
            : { status: 200 },
    );
    const s = await serverWith(r.url, { concurrency: '4' });
    const users = ['ada', 'bob', 'cy', 'dee', 'eve'];
    const sent = new Map<string, string[]>(users.map((u) => [u, []]));
    for (let b = 0; b < 6; b++) {
      const batch = Array.from({ length: 20 }, (_, i) => {
        const u = users[(b * 20 + i) % users.length]!;
        const id = `m-${b}-${i}`;
        sent.get(u)!.push(id);
        return track(id, u);
      });
      await sendBatch(s, batch);
    }
    await r.waitFor(() => r.events.length === 120, 30_000, '120 events');
    // The receiver may hold an event whose answer came after the client's timeout: its resend
    // (in backoff now) is still queued. Wait until the queue is empty.
    for (let i = 0; i < 300 && (await progress(s)).queued !== 0; i++) {
      await s.streams[0]!.idle();
      await new Promise((res) => setTimeout(res, 50));
    }
    // Exactly once at the receiver: every event, none twice (the resends were deduplicated).
    expect(new Set(r.events.map((e) => e.messageId)).size).toBe(120);
    // In log order per user.
    expect(perUser(r)).toEqual(sent);
    // The faults happened: 503s and 429s were retried, a timed-out request resent.
    expect(r.requests.some((q) => q.n % 4 === 3)).toBe(true);
    expect(r.duplicates).toBeGreaterThan(0);
    for (const q of r.requests)
      expect(q.headers['idempotency-key']).toBe((q.json as { messageId: string }).messageId);
    const p = await progress(s);
    expect(p).toMatchObject({ delivered: 120, failed: 0, breaker: 'closed' });
    expect(p.retried as number).toBeGreaterThan(0);
    const metrics = await s.app.inject({ method: 'GET', url: '/metrics' });
    expect(metrics.body).toContain(
      'tributary_delivery_events_total{destination="hook",outcome="delivered"} 120',
    );
    const health = (await s.app.inject({ method: 'GET', url: '/healthz' })).json() as {
      destinations: Record<string, { queued: number; position: number }>;
    };
    expect(health.destinations.hook).toMatchObject({ queued: 0 });
  });

  it('lets other users through while one user is stuck; the retry window runs out into failed_events; failed retry recovers it', {
    timeout: 40_000,
  }, async () => {
    let healed = false;
    const r = await receiver((req) =>
      !healed && (req.json as { userId?: string })?.userId === 'stuck' ? { status: 503 } : { status: 200 },
    );
    const s = await serverWith(r.url, { retryWindow: '1500ms' });
    await sendBatch(s, [
      track('s1', 'stuck'),
      track('s2', 'stuck'),
      ...Array.from({ length: 30 }, (_, i) => track(`o${i}`, `user-${i % 6}`)),
    ]);
    // Everyone else's events arrive while the stuck user's head is in backoff.
    await r.waitFor(() => r.events.length === 30, 15_000, 'the other users');
    expect(r.has('s1') || r.has('s2')).toBe(false);
    // The window runs out: both of the stuck user's events go to failed_events.
    let failed: { id: string; message_id: string; code: string; stage: string }[] = [];
    for (let i = 0; i < 200 && failed.length < 2; i++) {
      failed = (await admin(s, 'GET', '/admin/v1/failed?stage=destination:hook')).failed as typeof failed;
      if (failed.length < 2) await new Promise((x) => setTimeout(x, 50));
    }
    expect(failed.map((f) => [f.message_id, f.code]).sort()).toEqual([
      ['s1', 'TRIB_ERR_DELIVERY_EXPIRED'],
      ['s2', 'TRIB_ERR_DELIVERY_EXPIRED'],
    ]);
    await s.streams[0]!.idle();
    expect(await progress(s)).toMatchObject({ failed: 2, queued: 0 });
    // The receiver is back: a retry of the stage sends them, in order.
    healed = true;
    const { results } = (await admin(s, 'POST', '/admin/v1/failed/retry', { stage: 'destination:hook' })) as {
      results: { id: string; status: string }[];
    };
    expect(results.map((x) => x.status)).toEqual(['recovered', 'recovered']);
    expect(perUser(r).get('stuck')).toEqual(['s1', 's2']);
    const again = (await admin(s, 'GET', '/admin/v1/failed?stage=destination:hook')).failed as unknown[];
    expect(again).toEqual([]);
  });

  it('waits as long as Retry-After asks before sending again', { timeout: 20_000 }, async () => {
    const r = await receiver((req) => (req.n === 0 ? { status: 429, retryAfter: '1' } : { status: 200 }));
    const s = await serverWith(r.url);
    await sendBatch(s, [track('ra', 'u')]);
    await r.waitFor(() => r.has('ra'), 10_000, 'the event after its Retry-After');
    expect(r.requests).toHaveLength(2);
    // The backoff alone would have retried within 200 ms.
    expect(r.requests[1]!.at - r.requests[0]!.at).toBeGreaterThanOrEqual(1000);
  });

  it('sends refused events straight to failed_events and goes on with the user’s next event', {
    timeout: 20_000,
  }, async () => {
    const r = await receiver((req) =>
      (req.json as { messageId?: string })?.messageId === 'bad' ? { status: 422 } : { status: 200 },
    );
    const s = await serverWith(r.url);
    await sendBatch(s, [track('a1', 'u'), track('bad', 'u'), track('a2', 'u')]);
    await r.waitFor(() => r.events.length === 2, 10_000, 'the good events');
    expect(perUser(r).get('u')).toEqual(['a1', 'a2']);
    // The user's next event goes once the receiver answered; the refusal is stored just after.
    type Failed = { message_id: string; code: string; reason: string };
    let failed: Failed[] = [];
    for (const deadline = Date.now() + 10_000; failed.length === 0 && Date.now() < deadline; ) {
      failed = (await admin(s, 'GET', '/admin/v1/failed?stage=destination:hook')).failed as Failed[];
      if (failed.length === 0) await new Promise((res) => setTimeout(res, 20));
    }
    expect(failed).toMatchObject([{ message_id: 'bad', code: 'TRIB_ERR_DELIVERY_REFUSED' }]);
    expect(failed[0]!.reason).toContain('HTTP 422');
    // Only one request for it: a refusal is not retried.
    expect(r.requests.filter((q) => (q.json as { messageId?: string })?.messageId === 'bad')).toHaveLength(1);
  });

  it('counts events its filters and consent leave out, and sends the rest', { timeout: 20_000 }, async () => {
    const r = await receiver();
    const s = await serverWith(r.url, {
      filters: `{ types: [track, identify], events: [Order Completed], condition: "properties.total > 10" }`,
      consent: '{ categories: [Marketing] }',
    });
    const consent = (marketing: boolean) => ({
      context: { consent: { categoryPreferences: { Marketing: marketing, Analytics: true } } },
    });
    await sendBatch(s, [
      track('yes', 'u', { properties: { total: 20 }, ...consent(true) }),
      track('no-consent', 'u', { properties: { total: 20 }, ...consent(false) }),
      track('no-consent-object', 'u', { properties: { total: 20 } }),
      track('small', 'u', { properties: { total: 5 }, ...consent(true) }),
      track('other-name', 'u', { event: 'Signed Up', properties: { total: 20 }, ...consent(true) }),
      { type: 'page', messageId: 'page', userId: 'u', name: 'Home', properties: { total: 50 } },
    ]);
    await r.waitFor(() => r.events.length === 2, 10_000, 'the events that pass');
    await s.streams[0]!.idle();
    expect(r.events.map((e) => e.messageId).sort()).toEqual(['no-consent-object', 'yes']);
    expect(await progress(s)).toMatchObject({ delivered: 2, filtered: 3, consentBlocked: 1 });
    const metrics = (await s.app.inject({ method: 'GET', url: '/metrics' })).body;
    expect(metrics).toContain(
      'tributary_delivery_events_total{destination="hook",outcome="consent_blocked"} 1',
    );
    expect(metrics).toContain('tributary_delivery_events_total{destination="hook",outcome="filtered"} 3');
  });

  it('signs, authorizes and templates batches', { timeout: 20_000 }, async () => {
    const r = await receiver();
    const secret = 'a-shared-secret-of-some-length';
    const s = await serverWith(
      r.url,
      {
        batchSize: '5',
        concurrency: '1',
        method: 'PUT',
        headers: '{ X-Team: growth }',
        auth: '{ type: bearer, token: "${HOOK_TOKEN}" }',
        signature: '{ secret: "${HOOK_SECRET}" }',
        body: `'{"messageId": messageId, "who": userId, "what": event, "total": properties.total}'`,
      },
      { HOOK_TOKEN: 't0ken', HOOK_SECRET: secret },
    );
    await sendBatch(
      s,
      Array.from({ length: 12 }, (_, i) => track(`b${i}`, `u${i}`, { properties: { total: i } })),
    );
    await r.waitFor(() => r.events.length === 12, 10_000, '12 events');
    const first: ReceivedRequest = r.requests[0]!;
    expect(first.method).toBe('PUT');
    expect(first.path).toBe('/events');
    expect(first.headers.authorization).toBe('Bearer t0ken');
    expect(first.headers['x-team']).toBe('growth');
    expect(Array.isArray(first.json)).toBe(true);
    expect(r.requests.every((q) => (q.json as unknown[]).length <= 5)).toBe(true);
    expect(r.requests.length).toBeLessThan(12);
    for (const q of r.requests) {
      expect(verifySignature(secret, q.body, String(q.headers['x-tributary-signature']))).toBe(true);
      expect(
        verifySignature('another-secret-entirely', q.body, String(q.headers['x-tributary-signature'])),
      ).toBe(false);
    }
    expect(r.events.find((e) => e.messageId === 'b3')).toEqual({
      messageId: 'b3',
      who: 'u3',
      what: 'Order Completed',
      total: 3,
    });
  });

  it('re-sends a replayed range with its messageIds, through its current filters', {
    timeout: 20_000,
  }, async () => {
    const r = await receiver();
    const s = await serverWith(r.url);
    await sendBatch(s, [track('r-1', 'ada'), track('r-2', 'bob')]);
    await r.waitFor(() => r.events.length === 2, 10_000, 'the first two');
    await s.streams[0]!.idle();
    const requestsBefore = r.requests.length;
    const res = await s.app.inject({
      method: 'POST',
      url: '/admin/v1/replay',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
      payload: JSON.stringify({
        wait: true,
        source: 'web',
        from: new Date(Date.now() - 60_000).toISOString(),
        to: new Date(Date.now() + 1_000).toISOString(),
        destinations: ['hook'],
      }),
    });
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json()).toMatchObject({ status: 'done', delivered: 2 });
    // Sent again under the same idempotency keys: the receiver took requests, kept no new event.
    await r.waitFor(() => r.requests.length >= requestsBefore + 2, 10_000, 'the replayed two');
    expect(
      r.requests
        .slice(requestsBefore)
        .map((q) => String(q.headers['idempotency-key']))
        .sort(),
    ).toEqual(['r-1', 'r-2']);
    expect(r.events.map((e) => e.messageId)).toEqual(['r-1', 'r-2']);
  });

  it('opens its breaker on a receiver that is down, stops hammering it, and resumes when it is back', {
    timeout: 30_000,
  }, async () => {
    let down = true;
    const r = await receiver(() => (down ? { status: 503 } : { status: 200 }));
    const s = await serverWith(r.url, { breaker: '{ failures: 3, cooldown: 400ms }' });
    await sendBatch(
      s,
      Array.from({ length: 20 }, (_, i) => track(`k${i}`, `u${i}`)),
    );
    for (let i = 0; i < 400 && (await progress(s)).breaker === 'closed'; i++)
      await new Promise((x) => setTimeout(x, 10));
    expect((await progress(s)).breaker).not.toBe('closed');
    const metrics = (await s.app.inject({ method: 'GET', url: '/metrics' })).body;
    expect(metrics).toMatch(/tributary_delivery_breaker_state\{destination="hook"\} [12]/);
    // While open, at most one probe per cooldown reaches the receiver: far fewer requests than events.
    const seen = r.requests.length;
    await new Promise((x) => setTimeout(x, 900));
    expect(r.requests.length - seen).toBeLessThanOrEqual(4);
    down = false;
    await r.waitFor(() => r.events.length === 20, 15_000, 'all events after the receiver is back');
    expect((await progress(s)).breaker).toBe('closed');
  });
});
