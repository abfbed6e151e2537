import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { describe, expect, it } from 'vitest';
import {
  ADMIN_TOKEN,
  cleanupAfterEach,
  sendBatch,
  startTestServer,
  type TestServer,
  WRITE_KEY,
} from '../helpers.js';

/**
 * `POST /admin/v1/replay` on the embedded server: the raw archive of a range, through the
 * current pipeline, into warehouse destinations that store no messageId twice.
 */

const { servers, dirs } = cleanupAfterEach();
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function config(plan: 'loose' | 'strict', fresh: 'off' | 'on' = 'off') {
  return `version: 1
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
              properties:
                total: { type: ${plan === 'strict' ? 'number' : '[number, string]'} }
destinations:
  - id: warehouse
    type: duckdb
  - id: fresh
    type: duckdb
    path: fresh.duckdb
    enabled: ${fresh === 'on'}
`;
}

async function start(yaml: string, dataDir: string): Promise<TestServer> {
  const s = await startTestServer({ yaml, dataDir });
  servers.push(s);
  return s;
}

async function settle(s: TestServer) {
  await s.settle();
  await Promise.all(s.destinations.map((d) => d.drained()));
}

async function replay(s: TestServer, body: Record<string, unknown>) {
  const res = await s.app.inject({
    method: 'POST',
    url: '/admin/v1/replay',
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
    payload: JSON.stringify({ wait: true, ...body }),
  });
  return { status: res.statusCode, body: res.json() };
}

const track = (id: string, total: unknown) => ({
  type: 'track',
  messageId: id,
  userId: 'u1',
  event: 'Order Completed',
  properties: { total },
});

/** Three batches received at distinct times; the range [t1, t2) holds exactly the second. */
async function threeBatches(s: TestServer) {
  await sendBatch(s, [track('before-1', 1), track('before-2', 2)]);
  await sleep(30);
  const t1 = new Date();
  await sleep(30);
  await sendBatch(s, [track('in-1', 10), track('in-2', '20'), track('in-3', 30)]);
  await sleep(30);
  const t2 = new Date();
  await sleep(30);
  await sendBatch(s, [track('after-1', 100)]);
  await settle(s);
  return { from: t1.toISOString(), to: t2.toISOString() };
}

/** Rows of the fresh destination's file, read after the server stopped. */
async function freshRows(dataDir: string, sql: string): Promise<Record<string, unknown>[]> {
  const instance = await DuckDBInstance.create(join(dataDir, 'fresh.duckdb'));
  const c = await instance.connect();
  try {
    const r = await c.runAndReadAll(sql);
    return r.getRowObjectsJson() as Record<string, unknown>[];
  } finally {
    c.closeSync();
    instance.closeSync();
  }
}

async function stop(s: TestServer) {
  servers.splice(servers.indexOf(s), 1);
  await s.close();
}

describe('tributary replay', () => {
  it('backfills exactly the range into a destination that did not load before, and a second replay doubles nothing', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'tributary-replay-'));
    dirs.push(dataDir);
    const s = await start(config('loose'), dataDir);
    const range = await threeBatches(s);
    const first = await replay(s, { source: 'web', ...range, destinations: ['fresh', 'warehouse'] });
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    expect(first.body).toMatchObject({ status: 'done', read: 3, passed: 3, failed: 0, delivered: 6 });
    expect(first.body.progress.destinations).toEqual({
      fresh: { delivered: 3, failed: 0 },
      warehouse: { delivered: 3, failed: 0 },
    });
    const second = await replay(s, { source: 'web', ...range });
    expect(second.body).toMatchObject({ status: 'done', read: 3, passed: 3 });
    expect(second.body.destinations.sort()).toEqual(['fresh', 'warehouse']);
    // The running destination had every event already: nothing doubled.
    expect(await s.query('SELECT id, count(*) AS n FROM web.tracks GROUP BY id ORDER BY id')).toEqual(
      ['after-1', 'before-1', 'before-2', 'in-1', 'in-2', 'in-3'].map((id) => ({ id, n: 1 })),
    );
    expect(await s.query('SELECT count(*) AS n FROM web.order_completed')).toEqual([{ n: 6 }]);
    const runs = (
      await s.app.inject({
        method: 'GET',
        url: '/admin/v1/replay',
        headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
      })
    ).json().runs as { id: string; status: string; sourceId: string; dryRun: boolean; read: number }[];
    expect(runs.map((r) => [r.id, r.status, r.sourceId, r.dryRun, r.read])).toEqual([
      [second.body.id, 'done', 'web', false, 3],
      [first.body.id, 'done', 'web', false, 3],
    ]);
    await stop(s);
    expect(
      await freshRows(dataDir, 'SELECT id, count(*) AS n FROM web.tracks GROUP BY id ORDER BY id'),
    ).toEqual(['in-1', 'in-2', 'in-3'].map((id) => ({ id, n: '1' })));
    expect(await freshRows(dataDir, 'SELECT id, total FROM web.order_completed ORDER BY id')).toEqual([
      { id: 'in-1', total: '10' },
      { id: 'in-2', total: '20' },
      { id: 'in-3', total: '30' },
    ]);
  });

  it('dry run: counts what would be delivered and writes nothing but the run', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'tributary-replay-'));
    dirs.push(dataDir);
    const s = await start(config('strict'), dataDir);
    const range = await threeBatches(s); // in-2 (total "20") fails the strict plan at ingestion
    const failedBefore = await s.query('SELECT count(*) AS n FROM failed_events');
    const r = await replay(s, { source: 'web', ...range, destinations: ['fresh'], dryRun: true });
    expect(r.body).toMatchObject({
      status: 'done',
      dryRun: true,
      read: 3,
      passed: 2,
      failed: 1,
      delivered: 2,
    });
    expect(await s.query('SELECT count(*) AS n FROM failed_events')).toEqual(failedBefore);
    await stop(s);
    expect(
      await freshRows(
        dataDir,
        "SELECT count(*) AS n FROM information_schema.tables WHERE table_schema = 'web'",
      ),
    ).toEqual([{ n: '0' }]);
  });

  it('runs the current plan: an event the plan now refuses goes to failed_events, not to the destinations', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'tributary-replay-'));
    dirs.push(dataDir);
    const loose = await start(config('loose'), dataDir);
    const range = await threeBatches(loose);
    expect(await loose.query("SELECT count(*) AS n FROM failed_events WHERE message_id = 'in-2'")).toEqual([
      { n: 0 },
    ]);
    await stop(loose);
    // The plan changed: total must now be a number.
    const strict = await start(config('strict'), dataDir);
    const r = await replay(strict, { source: 'web', ...range, destinations: ['fresh'] });
    expect(r.body).toMatchObject({ status: 'done', read: 3, passed: 2, failed: 1, delivered: 2 });
    expect(
      await strict.query("SELECT stage, source_id, code FROM failed_events WHERE message_id = 'in-2'"),
    ).toEqual([{ stage: 'plan', source_id: 'web', code: expect.stringMatching(/^TRIB_ERR_PLAN_/) }]);
    await stop(strict);
    expect(await freshRows(dataDir, 'SELECT id FROM web.tracks ORDER BY id')).toEqual([
      { id: 'in-1' },
      { id: 'in-3' },
    ]);
  });

  it('answers bad requests with their codes', async () => {
    const s = await start(config('loose'), mkdtempSync(join(tmpdir(), 'tributary-replay-')));
    dirs.push(s.dataDir);
    const now = new Date().toISOString();
    expect((await replay(s, { source: 'nope', from: 0, to: now })).body.code).toBe(
      'TRIB_ERR_REPLAY_UNKNOWN_SOURCE',
    );
    expect((await replay(s, { source: 'web', from: now, to: 0 })).body.code).toBe(
      'TRIB_ERR_REPLAY_BAD_REQUEST',
    );
    expect((await replay(s, { source: 'web', from: 'yesterday', to: now })).body.code).toBe(
      'TRIB_ERR_REPLAY_BAD_REQUEST',
    );
    const unknown = await replay(s, { source: 'web', from: 0, to: now, destinations: ['lake'] });
    expect([unknown.status, unknown.body.code]).toEqual([404, 'TRIB_ERR_REPLAY_UNKNOWN_DESTINATION']);
  });
});

describe('replay runs across restarts', () => {
  it('a run left running by a process that died is marked failed at the next start', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'tributary-replay-'));
    dirs.push(dataDir);
    const s = await start(config('loose'), dataDir);
    // What a kill -9 mid-run leaves: the run's row as written when it started.
    await s.warehouse.saveReplayRun({
      id: 'r-killed',
      requestedBy: 'cli',
      startedAt: new Date(),
      sourceId: 'web',
      from: new Date(0),
      to: new Date(),
      destinations: ['warehouse'],
      dryRun: false,
      status: 'running',
      read: 1000,
      passed: 1000,
      failed: 0,
      delivered: 1000,
    });
    await stop(s);
    const again = await start(config('loose'), dataDir);
    const r = await again.app.inject({
      method: 'GET',
      url: '/admin/v1/replay/r-killed',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    expect(r.json()).toMatchObject({
      id: 'r-killed',
      status: 'failed',
      read: 1000,
      error: expect.stringContaining('stopped'),
    });
    expect(r.json().finishedAt).not.toBeNull();
  });
});
