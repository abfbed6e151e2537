import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, basicAuth, startTestServer, type TestServer, WRITE_KEY } from '../helpers.js';

const servers: TestServer[] = [];
const dirs: string[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.stop();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A source with mapping, a blocking plan and a privacy policy. `orderTotal` is the plan's type for `total`. */
function qualityConfig(orderTotal: 'number' | 'string') {
  return `version: 1
sources:
  - id: web
    type: http
    writeKey: ${WRITE_KEY}
    mapping:
      events:
        aliases:
          Logged In: [log_in, logged_in]
      fields:
        email: [email_address, primary_email, contact_email]
      normalize:
        email: [email]
        phone: [e164]
      defaultRegion: US
    plans:
      - name: web
        onViolation: block
        onUnplannedEvent: allow
        events:
          Order Completed:
            properties:
              type: object
              required: [total]
              properties:
                total: { type: ${orderTotal} }
    privacy:
      policy:
        block: [card_number]
        drop: [password]
        mask: [ip]
`;
}

async function start(yaml: string, dataDir?: string) {
  const s = await startTestServer({ yaml, dataDir });
  servers.push(s);
  return s;
}

async function batch(server: TestServer, events: unknown[]) {
  const res = await server.app.inject({
    method: 'POST',
    url: '/v1/batch',
    headers: { authorization: basicAuth(WRITE_KEY), 'content-type': 'application/json' },
    payload: JSON.stringify({ batch: events }),
  });
  expect(res.statusCode).toBe(200);
  return res.json() as { accepted: number; rejected: { index: number; code: string; message: string }[] };
}

async function admin(server: TestServer, method: 'GET' | 'POST', url: string, body?: unknown) {
  const res = await server.app.inject({
    method,
    url,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
    payload: body === undefined ? undefined : JSON.stringify(body),
  });
  expect(res.statusCode, res.body).toBe(200);
  return res.json();
}

interface Stats {
  source: string;
  received: number;
  accepted: number;
  rejected: number;
  passed: number;
  blocked: number;
  failed: number;
  pending: number;
  byStage: Record<string, Record<string, number>>;
}

const mixed = [
  {
    type: 'track',
    messageId: 'm-login',
    userId: 'u1',
    event: 'log_in',
    properties: { email_address: ' Ann@Example.COM ' },
  },
  {
    type: 'track',
    messageId: 'm-order-ok',
    userId: 'u1',
    event: 'Order Completed',
    properties: { total: 12 },
  },
  {
    type: 'track',
    messageId: 'm-order-bad',
    userId: 'u1',
    event: 'Order Completed',
    properties: { total: '12' },
  },
  {
    type: 'track',
    messageId: 'm-card',
    userId: 'u1',
    event: 'Paid',
    properties: { note: '4111 1111 1111 1111' },
  },
  {
    type: 'identify',
    messageId: 'm-id',
    userId: 'u1',
    traits: { phone: '(415) 555-2671', password: 'hunter2' },
  },
  { type: 'track', messageId: 'm-noid', event: 'Nobody' },
  { type: 'track', messageId: 'm-login', userId: 'u1', event: 'log_in' },
];

describe('quality pipeline', () => {
  it('maps, validates, applies the privacy policy, counts every fate and recovers a failed event by retry', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'trib-quality-'));
    dirs.push(dataDir);
    let server = await start(qualityConfig('number'), dataDir);
    const res = await batch(server, mixed);
    expect(res.rejected.map((r) => [r.index, r.code])).toEqual([
      [3, 'TRIB_ERR_EVENT_PII_BLOCKED'],
      [5, 'TRIB_ERR_EVENT_MISSING_IDENTITY'],
    ]);
    expect(res.rejected[0]!.message).toContain('card_number at properties.note');
    expect(res.rejected[0]!.message).not.toContain('4111');
    await server.settle();

    const events = await server.query(
      'SELECT message_id, event, CAST(payload AS VARCHAR) AS payload FROM events ORDER BY log_offset',
    );
    expect(events.map((e) => [e.message_id, e.event])).toEqual([
      ['m-login', 'Logged In'],
      ['m-order-ok', 'Order Completed'],
      ['m-id', null],
    ]);
    const login = JSON.parse(String(events[0]!.payload));
    expect(login.properties).toEqual({ email: 'ann@example.com' });
    expect(login._tributary.mapped).toEqual([
      { field: 'event', op: 'rename_event', from: 'log_in', to: 'Logged In' },
      { field: 'properties.email_address', op: 'rename', to: 'properties.email' },
      { field: 'properties.email', op: 'normalize', normalizer: 'email' },
    ]);
    const identify = JSON.parse(String(events[2]!.payload));
    expect(identify.traits).toEqual({ phone: '+14155552671' });
    expect(identify.context.ip).toBe('****');

    // The card number is nowhere: not in the raw archive, not in the failed-event store.
    const everywhere = await server.query(
      `SELECT count(*) AS n FROM log.raw_events WHERE CAST(event AS VARCHAR) LIKE '%4111%'
       UNION ALL SELECT count(*) FROM failed_events WHERE CAST(payload AS VARCHAR) LIKE '%4111%'`,
    );
    expect(everywhere.map((r) => r.n)).toEqual([0, 0]);

    const failed = (await admin(server, 'GET', '/admin/v1/failed')).failed as {
      id: string;
      message_id: string;
      stage: string;
      code: string;
    }[];
    expect(failed.map((f) => [f.message_id, f.stage, f.code]).sort()).toEqual([
      ['m-card', 'privacy', 'TRIB_ERR_EVENT_PII_BLOCKED'],
      ['m-noid', 'collect', 'TRIB_ERR_EVENT_MISSING_IDENTITY'],
      ['m-order-bad', 'plan', 'TRIB_ERR_PLAN_VIOLATION'],
    ]);

    const stats = ((await admin(server, 'GET', '/admin/v1/stats')).sources as Stats[]).find(
      (s) => s.source === 'web',
    )!;
    expect(stats).toMatchObject({
      received: 7,
      rejected: 2,
      accepted: 5,
      passed: 4,
      blocked: 1,
      failed: 0,
      pending: 0,
    });
    expect(stats.byStage.dedupe).toEqual({ deduplicated: 1 });
    expect(stats.byStage.plan).toEqual({ blocked: 1 });
    expect(stats.received).toBe(stats.accepted + stats.rejected);
    expect(stats.accepted).toBe(stats.passed + stats.blocked + stats.failed + stats.pending);

    const metrics = (await server.app.inject({ method: 'GET', url: '/metrics' })).body;
    expect(metrics).toContain(
      'tributary_pipeline_events_total{source="web",stage="plan",outcome="blocked"} 1',
    );
    expect(metrics).toContain(
      'tributary_pipeline_events_total{source="web",stage="load",outcome="passed"} 3',
    );
    expect(metrics).toContain('tributary_pii_blocked_events_total{source="web",category="red"} 1');
    expect(metrics).toContain(
      'tributary_pii_findings_total{source="web",class="card_number",category="red",action="block"} 1',
    );

    // Retrying with the same rules fails again, linked to the first failure.
    const bad = failed.find((f) => f.message_id === 'm-order-bad')!;
    const again = await admin(server, 'POST', '/admin/v1/failed/retry', { ids: [bad.id], wait: true });
    expect(again.results).toEqual([{ id: bad.id, status: 'failed', newId: expect.any(String) }]);

    // Fix the plan (total may be a string), restart, retry: recovered, once, even when retried twice.
    await server.stop();
    servers.length = 0;
    server = await start(qualityConfig('string'), dataDir);
    const newId = again.results[0].newId as string;
    const ok = await admin(server, 'POST', '/admin/v1/failed/retry', { stage: 'plan', wait: true });
    expect(ok.results).toEqual([{ id: newId, status: 'recovered' }]);
    const collectRetry = await admin(server, 'POST', '/admin/v1/failed/retry', { stage: 'collect' });
    expect(collectRetry.results[0].status).toBe('skipped');
    const shown = await admin(server, 'GET', `/admin/v1/failed/${newId}`);
    expect(shown).toMatchObject({ retry_state: 'retried', retry_of: bad.id, stage: 'plan' });
    await server.app.inject({
      method: 'POST',
      url: '/admin/v1/failed/retry',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
      payload: { ids: [newId] },
    });
    await server.settle();
    const rows = await server.query("SELECT count(*) AS n FROM events WHERE message_id = 'm-order-bad'");
    expect(rows[0]!.n).toBe(1);
    const s2 = ((await admin(server, 'GET', '/admin/v1/stats')).sources as Stats[]).find(
      (s) => s.source === 'web',
    )!;
    expect(s2.received).toBe(s2.accepted + s2.rejected);
    expect(s2.accepted).toBe(s2.passed + s2.blocked + s2.failed + s2.pending);
    expect(s2).toMatchObject({ accepted: 1, passed: 1 });
  });

  it('counts events still in the log as pending', async () => {
    const server = await start(qualityConfig('number'));
    await server.loader.stop();
    await batch(server, mixed.slice(0, 3));
    const stats = ((await admin(server, 'GET', '/admin/v1/stats')).sources as Stats[]).find(
      (s) => s.source === 'web',
    )!;
    expect(stats).toMatchObject({ received: 3, accepted: 3, pending: 3, passed: 0 });
  });

  it('reads plans from files next to the configuration and refuses a plan that does not compile', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trib-plan-'));
    dirs.push(dir);
    writeFileSync(join(dir, 'bad-plan.yaml'), 'name: bad\nevents:\n  X:\n    properties: { type: nope }\n');
    const yaml = `version: 1\nsources:\n  - id: web\n    type: http\n    writeKey: ${WRITE_KEY}\n    plans:\n      - file: ${join(dir, 'bad-plan.yaml')}\n`;
    await expect(startTestServer({ yaml })).rejects.toMatchObject({ code: 'TRIB_ERR_PLAN_INVALID' });
  });
});
