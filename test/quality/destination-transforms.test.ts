import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import type { WarehouseDestination } from '../../src/destinations/destination.js';
import {
  buildDestinationTransforms,
  TransformingDestination,
} from '../../src/destinations/destination-transforms.js';
import { DuckDBEngine } from '../../src/destinations/warehouse/duckdb/duckdb-engine.js';
import { SegmentWarehouse } from '../../src/destinations/warehouse/segment-warehouse.js';
import type { TributaryError } from '../../src/errors.js';
import { checkQuality } from '../../src/server/quality-setup.js';
import { DuckDBStore } from '../../src/store/duckdb/duckdb-store.js';
import type { StoredEvent } from '../../src/store/store.js';
import {
  ADMIN_TOKEN,
  basicAuth,
  cleanupAfterEach,
  startTestServer,
  type TestServer,
  WRITE_KEY,
} from '../helpers.js';
import { shapeFunction } from './functions.js';

const { servers, dirs } = cleanupAfterEach();

const SHAPE = { log: 'dest saw', error: 'no boom in this warehouse', property: 'dest' };
/** Enriches, throws for `Boom`, loops for `Spin`, drops `Noise`, fans `Split` out. */
const BROKEN = shapeFunction(SHAPE);
/** The same function, fixed: Boom and Spin are enriched like the rest. */
const FIXED = shapeFunction({ ...SHAPE, fixed: true });

/** Runs first; allocates without bound for `Hog` (its own long timeout, so the heap limit is what stops it). */
const HOG = `export default function (e: { event?: string }) {
  if (e.event === 'Hog') { const a: unknown[] = []; for (;;) a.push({ x: Math.random(), s: 'k' + a.length }); }
  return e;
}`;
const HOG_FIXED = 'export default (e: unknown) => e;';

function config(dir: string) {
  return `version: 1
sources:
  - id: web
    type: http
    writeKey: ${WRITE_KEY}
destinations:
  - id: warehouse
    type: duckdb
    interval: 0
    transformations:
      - id: hog
        file: ${join(dir, 'hog.ts')}
        timeout: 30s
        memoryLimit: 32
      - id: shape
        file: ${join(dir, 'shape.ts')}
        timeout: 250ms
        memoryLimit: 32
  - id: plain
    type: duckdb
    path: plain.duckdb
    interval: 0
`;
}

async function admin(server: TestServer, method: 'GET' | 'POST', url: string, payload?: unknown) {
  const res = await server.app.inject({
    method,
    url,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    ...(payload === undefined ? {} : { payload: payload as object }),
  });
  expect(res.statusCode).toBe(200);
  return res.json() as Record<string, unknown> & { results: Record<string, unknown>[] };
}

const drained = (server: TestServer) => Promise.all(server.destinations.map((d) => d.drained()));

describe('transformations per destination', () => {
  it('shape what one destination loads, store their failures once under its stage, and retry into it alone', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trib-dest-fn-'));
    const dataDir = mkdtempSync(join(tmpdir(), 'trib-dest-data-'));
    dirs.push(dir, dataDir);
    writeFileSync(join(dir, 'shape.ts'), BROKEN);
    writeFileSync(join(dir, 'hog.ts'), HOG);
    let server = await startTestServer({ yaml: config(dir), dataDir });
    servers.push(server);
    const names = ['A', 'Boom', 'Spin', 'Noise', 'Split', 'B', 'Hog'];
    const res = await server.app.inject({
      method: 'POST',
      url: '/v1/batch',
      headers: { authorization: basicAuth(WRITE_KEY) },
      payload: {
        batch: names.map((event, i) => ({ type: 'track', userId: 'u1', event, messageId: `d-${i}` })),
      },
    });
    expect(res.json()).toMatchObject({ accepted: 7, rejected: [] });
    await server.settle();
    await drained(server);

    // `events` and the other destination keep the original events.
    const events = await server.query(
      `SELECT message_id, event, json_extract(payload, '$.properties.dest') AS dest FROM events ORDER BY message_id`,
    );
    expect(events.map((e) => [e.message_id, e.event, e.dest])).toEqual(
      names.map((n, i) => [`d-${i}`, n, null]),
    );
    expect((await server.query('SELECT id FROM dest_plain.web.tracks ORDER BY id')).map((r) => r.id)).toEqual(
      names.map((_, i) => `d-${i}`),
    );
    // This destination has the transformed ones.
    const tracks = async () =>
      (await server.query('SELECT id, event_text FROM web.tracks ORDER BY id')).map((r) => [
        r.id,
        r.event_text,
      ]);
    // Properties land in the event's own table.
    const dest = async (table: string) =>
      (await server.query(`SELECT id, dest FROM web.${table} ORDER BY id`)).map((r) => [r.id, r.dest]);
    expect(await tracks()).toEqual([
      ['d-0', 'A'],
      ['d-4', 'Split'],
      ['d-4-1', 'Split Copy'],
      ['d-5', 'B'],
    ]);
    expect(await dest('a')).toEqual([['d-0', true]]);
    const failed = await server.query(
      `SELECT id, message_id, stage, code, reason, CAST(logs AS VARCHAR) AS logs FROM failed_events ORDER BY message_id`,
    );
    expect(failed.map((f) => [f.message_id, f.stage, f.code])).toEqual([
      ['d-1', 'destination:warehouse', 'TRIB_ERR_TRANSFORM_THREW'],
      ['d-2', 'destination:warehouse', 'TRIB_ERR_TRANSFORM_TIMEOUT'],
      ['d-6', 'destination:warehouse', 'TRIB_ERR_TRANSFORM_MEMORY'],
    ]);
    expect(JSON.parse(String(failed[0]!.logs))).toEqual(['log: dest saw Boom']);
    expect(JSON.parse(String(failed[1]!.logs))).toEqual(['log: dest saw Spin']);
    expect(String(failed[0]!.reason)).toContain('transformation shape: Error: no boom in this warehouse');
    expect(String(failed[2]!.reason)).toContain('transformation hog:');

    // Collection's reconciled counts do not see the destination's outcomes.
    const web = ((await admin(server, 'GET', '/admin/v1/stats')).sources as Record<string, unknown>[])[0]!;
    expect(web).toMatchObject({ received: 7, accepted: 7, passed: 7, failed: 0, blocked: 0 });
    const metrics = await server.app.inject({ method: 'GET', url: '/metrics' });
    expect(metrics.body).toContain(
      'tributary_destination_transform_events_total{destination="warehouse",outcome="passed"} 3',
    );
    expect(metrics.body).toContain(
      'tributary_destination_transform_events_total{destination="warehouse",outcome="failed"} 3',
    );
    expect(metrics.body).toContain(
      'tributary_destination_transform_events_total{destination="warehouse",outcome="dropped"} 1',
    );

    // A retry with the same function fails again, linked to the first failure.
    const boom = failed[0]!;
    const again = await admin(server, 'POST', '/admin/v1/failed/retry', { ids: [boom.id], wait: true });
    expect(again.results).toEqual([{ id: boom.id, status: 'failed', newId: expect.any(String) }]);
    const newId = again.results[0]!.newId as string;
    expect(await admin(server, 'GET', `/admin/v1/failed/${newId}`)).toMatchObject({
      retry_of: boom.id,
      stage: 'destination:warehouse',
      retry_state: 'new',
    });

    // Fix the function, restart on the same data, retry: recovered into this destination only, once.
    await server.stop();
    servers.length = 0;
    writeFileSync(join(dir, 'shape.ts'), FIXED);
    writeFileSync(join(dir, 'hog.ts'), HOG_FIXED);
    server = await startTestServer({ yaml: config(dir), dataDir });
    servers.push(server);
    const offsets = () =>
      server.query('SELECT destination, next_offset FROM _tributary.warehouse_offsets ORDER BY 1');
    const before = await offsets();
    const ok = await admin(server, 'POST', '/admin/v1/failed/retry', { stage: 'destination:warehouse' });
    expect(ok.results).toEqual([
      { id: newId, status: 'recovered' },
      { id: failed[1]!.id, status: 'recovered' },
      { id: failed[2]!.id, status: 'recovered' },
    ]);
    const recovered = [
      ['d-0', 'A'],
      ['d-1', 'Boom'],
      ['d-2', 'Spin'],
      ['d-4', 'Split'],
      ['d-4-1', 'Split Copy'],
      ['d-5', 'B'],
      ['d-6', 'Hog'],
    ];
    expect(await tracks()).toEqual(recovered);
    expect([...(await dest('boom')), ...(await dest('spin')), ...(await dest('hog'))]).toEqual([
      ['d-1', true],
      ['d-2', true],
      ['d-6', true],
    ]);
    expect(await offsets()).toEqual(before);
    expect((await server.query('SELECT count(*) AS n FROM events')).map((r) => Number(r.n))).toEqual([7]);
    expect(
      (await server.query('SELECT count(*) AS n FROM dest_plain.web.tracks')).map((r) => Number(r.n)),
    ).toEqual([7]);

    // A second retry finds nothing new and changes nothing; the rows are marked retried.
    expect(
      (await admin(server, 'POST', '/admin/v1/failed/retry', { stage: 'destination:warehouse' })).results,
    ).toEqual([]);
    expect(await tracks()).toEqual(recovered);
    const states = await server.query('SELECT retry_state, count(*) AS n FROM failed_events GROUP BY 1');
    expect(states.map((r) => [r.retry_state, Number(r.n)])).toEqual([['retried', 4]]);
  });

  it('stores each failure once when the destination crashes between the failure write and its commit', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trib-dest-crash-'));
    dirs.push(dir);
    writeFileSync(join(dir, 'shape.ts'), BROKEN);
    const instance = await DuckDBInstance.create(':memory:');
    const warehouse = await DuckDBStore.open(instance);
    const c = await instance.connect();
    const catalog = String((await c.runAndReadAll('SELECT current_database()')).getRows()[0]![0]);
    c.closeSync();
    const real = new SegmentWarehouse({
      name: 'crashy',
      schema: '{source}',
      maxColumns: 1600,
      engine: new DuckDBEngine(instance, { catalog, maxColumns: 1600 }),
    });
    let crashes = 1;
    let active = 0;
    let most = 0;
    const inner: WarehouseDestination = {
      name: 'crashy',
      storedOffset: () => real.storedOffset(),
      async load(events, next) {
        active++;
        most = Math.max(most, active);
        try {
          await new Promise((r) => setTimeout(r, 20)); // a load that takes a while, so an overlap would show
          if (crashes-- > 0) throw new Error('simulated crash before the commit');
          return await real.load(events, next);
        } finally {
          active--;
        }
      },
      close: () => real.close(),
    };
    const { config: parsed } = parseConfig(
      `version: 1
sources: [{ id: web, type: http, writeKey: k }]
destinations:
  - id: crashy
    type: duckdb
    transformations: [{ id: shape, file: ${join(dir, 'shape.ts')}, timeout: 250ms, memoryLimit: 32 }]
`,
      {},
    );
    const stages = await buildDestinationTransforms(parsed.destinations[0]!, dir, {});
    const dest = new TransformingDestination(inner, stages, warehouse);
    try {
      const batch: StoredEvent[] = ['A', 'Boom', 'Split', 'Spin'].map((event, i) => ({
        logOffset: 10 + i,
        sourceId: 'web',
        messageId: `c-${i}`,
        receivedAt: Date.UTC(2026, 0, 1),
        json: JSON.stringify({
          type: 'track',
          userId: 'u',
          event,
          messageId: `c-${i}`,
          receivedAt: '2026-01-01T00:00:00.000Z',
        }),
      }));
      await dest.storedOffset();
      await expect(dest.load(batch, 14)).rejects.toThrow('simulated crash');
      await dest.storedOffset(); // as the feed does after a failed load
      await dest.load(batch, 14);
      const failed = await warehouse.query(
        'SELECT message_id, stage, code FROM failed_events ORDER BY message_id',
      );
      expect(failed.rows).toEqual([
        { message_id: 'c-1', stage: 'destination:crashy', code: 'TRIB_ERR_TRANSFORM_THREW' },
        { message_id: 'c-3', stage: 'destination:crashy', code: 'TRIB_ERR_TRANSFORM_TIMEOUT' },
      ]);
      const ids = await warehouse.query('SELECT id FROM web.tracks ORDER BY id');
      expect(ids.rows.map((r) => r.id)).toEqual(['c-0', 'c-2', 'c-2-1']);
      expect(await dest.storedOffset()).toBe(14);

      // A retry waits for the load in hand and leaves the offset where the loads put it.
      const boom = String(
        (await warehouse.query("SELECT id FROM failed_events WHERE message_id = 'c-1'")).rows[0]!.id,
      );
      const later: StoredEvent = {
        ...batch[0]!,
        logOffset: 14,
        messageId: 'c-4',
        json: batch[0]!.json.replaceAll('c-0', 'c-4'),
      };
      await Promise.all([dest.load([later], 15), dest.retry([{ ...batch[1]!, id: boom }])]);
      expect(most).toBe(1);
      expect(await dest.storedOffset()).toBe(15);
      const again = await warehouse.query(`SELECT stage, code FROM failed_events WHERE retry_of = '${boom}'`);
      expect(again.rows).toEqual([{ stage: 'destination:crashy', code: 'TRIB_ERR_TRANSFORM_THREW' }]);
    } finally {
      await dest.close();
      await warehouse.close();
      instance.closeSync();
    }
  });

  it('config check compiles a destination function and refuses one on a parquet lake', () => {
    const dir = mkdtempSync(join(tmpdir(), 'trib-dest-check-'));
    dirs.push(dir);
    writeFileSync(join(dir, 'bad.ts'), 'export default function (e) { return e +; }');
    writeFileSync(join(dir, 'good.ts'), BROKEN);
    const check = (type: string, file: string) => {
      const { config: c } = parseConfig(
        `version: 1
sources: [{ id: web, type: http, writeKey: k }]
destinations:
  - { id: d1, type: ${type}, ${type === 'parquet' ? 'path: lake,' : ''} transformations: [{ id: f, file: ${file} }] }
`,
        {},
      );
      try {
        checkQuality(c.sources, dir, c.destinations);
        return 'ok';
      } catch (err) {
        return (err as TributaryError).code;
      }
    };
    expect(check('duckdb', 'good.ts')).toBe('ok');
    expect(check('duckdb', 'bad.ts')).toBe('TRIB_ERR_TRANSFORM_INVALID');
    expect(check('parquet', 'good.ts')).toBe('TRIB_ERR_DESTINATION_TRANSFORM_UNSUPPORTED');
  });
});
