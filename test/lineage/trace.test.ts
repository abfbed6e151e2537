import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { formatTrace } from '../../src/cli/trace.js';
import type { TraceReport } from '../../src/observe/lineage/trace.js';
import {
  ADMIN_TOKEN,
  cleanupAfterEach,
  sendBatch,
  startTestServer,
  type TestServer,
  WRITE_KEY,
} from '../helpers.js';

/** `GET /admin/v1/trace/:messageId` on the embedded server: one message's path through every part. */

const { servers, dirs } = cleanupAfterEach();

const CONFIG = `version: 1
sources:
  - id: web
    type: http
    writeKey: ${WRITE_KEY}
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
                total: { type: number }
          Cart Viewed:
            properties:
              type: object
              properties:
                items: { type: number }
      - name: soft
        onViolation: allow
        onUnplannedEvent: allow
        events:
          Signed Up:
            properties:
              type: object
              required: [plan]
    privacy:
      policy:
        block: [card_number]
lineage:
  retention: 10d
`;

async function start(): Promise<TestServer> {
  const s = await startTestServer({ yaml: CONFIG });
  servers.push(s);
  return s;
}

async function settle(s: TestServer) {
  await s.settle();
  await Promise.all(s.destinations.map((d) => d.drained()));
  await s.identity?.drained();
}

async function trace(
  s: TestServer,
  id: string,
): Promise<{ status: number; body: TraceReport & { code?: string } }> {
  const res = await s.app.inject({
    method: 'GET',
    url: `/admin/v1/trace/${encodeURIComponent(id)}`,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
  });
  return { status: res.statusCode, body: res.json() };
}

describe('tributary trace', () => {
  it('follows an accepted event into events, a profile and the Segment tables of the warehouse destination', async () => {
    const s = await start();
    await sendBatch(s, [
      { type: 'track', messageId: 'ok-1', userId: 'u1', event: 'Order Completed', properties: { total: 30 } },
    ]);
    await settle(s);
    const { status, body: t } = await trace(s, 'ok-1');
    expect(status).toBe(200);
    expect(t.records).toHaveLength(1);
    expect(t.records[0]).toMatchObject({ sourceId: 'web', status: 'accepted', outcome: 'loaded' });
    expect((t.records[0]!.raw as { properties: unknown }).properties).toEqual({ total: 30 });
    expect(t.failures).toEqual([]);
    expect(t.events).toHaveLength(1);
    const e = t.events[0]!;
    expect(e.violations).toEqual([]);
    expect(e.identity?.identifiers).toEqual(['user_id:u1']);
    expect(e.identity?.decision?.action).toBe('new');
    expect(e.identity?.profileId).toBe(e.identity?.decision?.profileId);
    const [w] = e.warehouses;
    expect(w).toMatchObject({ destination: 'warehouse', type: 'duckdb', loaded: true });
    expect(w!.rows.map((r) => `${r.schema}.${r.table}`).sort()).toEqual([
      'web.order_completed',
      'web.tracks',
    ]);
    expect(w!.rows.find((r) => r.table === 'order_completed')!.row).toMatchObject({ id: 'ok-1', total: 30 });
    expect(t.attempts).toEqual([]);
    const text = formatTrace(t);
    expect(text).toContain('accepted into events');
    expect(text).toContain('web.order_completed');
  });

  it('shows where a rejected event stopped: the plan that blocked it, and the privacy block at collection', async () => {
    const s = await start();
    await sendBatch(s, [
      {
        type: 'track',
        messageId: 'bad-plan',
        userId: 'u1',
        event: 'Order Completed',
        properties: { total: 'lots' },
      },
      {
        type: 'track',
        messageId: 'bad-pii',
        userId: 'u1',
        event: 'Paid',
        properties: { card_number: '4111111111111111' },
      },
    ]);
    await settle(s);
    const plan = (await trace(s, 'bad-plan')).body;
    expect(plan.records[0]).toMatchObject({ status: 'accepted', outcome: 'failed' });
    expect(plan.failures).toHaveLength(1);
    expect(plan.failures[0]).toMatchObject({ stage: 'plan', source_id: 'web' });
    expect(plan.failures[0]!.reason).toContain('total');
    expect(plan.events).toEqual([]);
    expect(formatTrace(plan)).toContain('stage plan');

    const pii = (await trace(s, 'bad-pii')).body;
    expect(pii.records[0]).toMatchObject({
      status: 'rejected',
      code: 'TRIB_ERR_EVENT_PII_BLOCKED',
      outcome: 'rejected',
    });
    expect(pii.failures.map((f) => [f.stage, f.code])).toEqual([['privacy', 'TRIB_ERR_EVENT_PII_BLOCKED']]);
  });

  it('explains the profile an event joined through a merge, for the merging event and for one merged later', async () => {
    const s = await start();
    await sendBatch(s, [
      {
        type: 'track',
        messageId: 'm-anon',
        anonymousId: 'a1',
        event: 'Cart Viewed',
        properties: { items: 1 },
      },
      { type: 'identify', messageId: 'm-user', userId: 'u9', traits: { name: 'Ada' } },
    ]);
    await settle(s);
    await sendBatch(s, [{ type: 'identify', messageId: 'm-link', userId: 'u9', anonymousId: 'a1' }]);
    await settle(s);

    const link = (await trace(s, 'm-link')).body.events[0]!.identity!;
    expect(link.identifiers.sort()).toEqual(['anonymous_id:a1', 'user_id:u9']);
    expect(link.decision?.action).toBe('merge');
    expect(link.merges).toHaveLength(1);
    const merge = link.merges[0]!;
    expect(merge.messageId).toBe('m-link');

    const anon = (await trace(s, 'm-anon')).body.events[0]!.identity!;
    const user = (await trace(s, 'm-user')).body.events[0]!.identity!;
    // Both earlier events now belong to the surviving profile; the absorbed one's event names the merge.
    expect(anon.profileId).toBe(merge.profileId);
    expect(user.profileId).toBe(merge.profileId);
    const absorbed = [anon, user].find((i) => i.decision?.profileId === merge.mergedProfileId)!;
    expect(absorbed.laterMerges.map((m) => m.mergeId)).toEqual([merge.mergeId]);
    expect(formatTrace((await trace(s, 'm-link')).body)).toContain(
      `merged ${merge.mergedProfileId} into ${merge.profileId}`,
    );
  });

  it('lists the delivery attempts recorded for a message, and answers 404 for an id nothing knows', async () => {
    const s = await start();
    await sendBatch(s, [{ type: 'track', messageId: 'd-1', userId: 'u1', event: 'Signed Up' }]);
    await settle(s);
    const at = new Date('2026-12-08T01:00:00.000Z');
    await s.lineage.record([
      {
        destination: 'hook',
        messageId: 'd-1',
        attempt: 1,
        at,
        status: 'retryable',
        latencyMs: 5001,
        detail: 'timeout',
      },
      {
        destination: 'hook',
        messageId: 'd-1',
        attempt: 2,
        at: new Date(at.getTime() + 2000),
        status: 'ok',
        latencyMs: 12.5,
        detail: 'HTTP 200',
      },
    ]);
    await s.lineage.flush();
    const t = (await trace(s, 'd-1')).body;
    // The soft plan let it pass with its violation flagged on the event.
    expect(t.events[0]!.violations).toHaveLength(1);
    expect(JSON.stringify(t.events[0]!.violations)).toContain('plan');
    expect(formatTrace(t)).toContain('plan      violations');
    expect(t.attempts).toEqual([
      {
        destination: 'hook',
        messageId: 'd-1',
        attempt: 1,
        at: at.toISOString(),
        status: 'retryable',
        latencyMs: 5001,
        detail: 'timeout',
      },
      {
        destination: 'hook',
        messageId: 'd-1',
        attempt: 2,
        at: new Date(at.getTime() + 2000).toISOString(),
        status: 'ok',
        latencyMs: 12.5,
        detail: 'HTTP 200',
      },
    ]);
    expect(formatTrace(t)).toContain('hook  #2');
    // Past the retention (lineage.retention: 10d here) an attempt is purged.
    await s.lineage.record([
      {
        destination: 'hook',
        messageId: 'd-old',
        attempt: 1,
        at: new Date(Date.now() - 11 * 86_400_000),
        status: 'ok',
        latencyMs: 1,
      },
    ]);
    await s.lineage.flush();
    expect((await trace(s, 'd-old')).body.attempts).toHaveLength(1);
    expect(await s.lineage.purge()).toBe(1);
    expect((await trace(s, 'd-old')).status).toBe(404);
    const missing = await trace(s, 'never-sent');
    expect(missing.status).toBe(404);
    expect(missing.body.code).toBe('TRIB_ERR_TRACE_NOT_FOUND');
  });
});

describe('tributary trace through a function', () => {
  it('finds the events a function made of the record under other messageIds, and a record it dropped', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trib-trace-fn-'));
    dirs.push(dir);
    writeFileSync(
      join(dir, 'rename.ts'),
      `export default function (e: { event?: string; messageId: string }) {
  if (e.event === 'Noise') return null;
  if (e.event === 'Split') return [e, { ...e, event: 'Split Copy', messageId: e.messageId + '-copy' }];
  return e;
}
`,
    );
    const s = await startTestServer({
      yaml: `version: 1
sources:
  - id: web
    type: http
    writeKey: ${WRITE_KEY}
    transformations:
      - id: rename
        file: ${join(dir, 'rename.ts')}
`,
    });
    servers.push(s);
    await sendBatch(s, [
      { type: 'track', messageId: 'fan', userId: 'u1', event: 'Split' },
      { type: 'track', messageId: 'quiet', userId: 'u1', event: 'Noise' },
    ]);
    await settle(s);
    const fan = (await trace(s, 'fan')).body;
    expect(fan.records[0]!.outcome).toBe('loaded');
    expect(fan.events.map((e) => e.messageId).sort()).toEqual(['fan', 'fan-copy']);
    expect(formatTrace(fan)).toContain('as message fan-copy');
    const quiet = (await trace(s, 'quiet')).body;
    expect(quiet.records[0]!.outcome).toBe('filtered');
    expect(quiet.events).toEqual([]);
  });
});
