import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { TributaryError } from '../src/errors.js';
import { MINIMAL_CONFIG, sendBatch, startTestServer, type TestServer } from './helpers.js';
import { pgUnreachable, scratchDatabase } from './pg.js';

/**
 * The destinations as the server runs them: configured in the file, following the feed,
 * with the Segment tables queryable shortly after the 200.
 */

const servers: TestServer[] = [];
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.stop();
  for (const c of cleanups.splice(0)) await c();
});

/** Waits until the loader and every destination have everything appended so far. */
async function settleAll(server: TestServer) {
  await server.settle();
  await Promise.all(server.destinations.map((d) => d.drained()));
}

const events = [
  { type: 'track', messageId: 'e-1', userId: 'u1', event: 'Order Completed', properties: { total: 30 } },
  { type: 'identify', messageId: 'e-2', userId: 'u1', traits: { email: 'a@x.io' } },
  { type: 'page', messageId: 'e-3', anonymousId: 'a1', name: 'Home', properties: { path: '/' } },
];

const hasPg = (await pgUnreachable()) === undefined;
describe('warehouse destinations in the server', () => {
  it('loads the Segment tables into the embedded warehouse with no destinations configured', async () => {
    const server = await startTestServer();
    servers.push(server);
    expect(server.destinations.map((d) => [d.id, d.type])).toEqual([['warehouse', 'duckdb']]);
    await sendBatch(server, events);
    await settleAll(server);
    expect(await server.query('SELECT id, user_id, total FROM web.order_completed')).toEqual([
      { id: 'e-1', user_id: 'u1', total: 30 },
    ]);
    expect(await server.query('SELECT id, event, event_text FROM web.tracks')).toEqual([
      { id: 'e-1', event: 'order_completed', event_text: 'Order Completed' },
    ]);
    expect(await server.query('SELECT id, email FROM web.users')).toEqual([{ id: 'u1', email: 'a@x.io' }]);
    expect(await server.query('SELECT id, name, path FROM web.pages')).toEqual([
      { id: 'e-3', name: 'Home', path: '/' },
    ]);
    const health = await server.app.inject({ method: 'GET', url: '/healthz' });
    expect(health.json().destinations.warehouse.position).toBe(server.loader.position());
    const metrics = (await server.app.inject({ method: 'GET', url: '/metrics' })).body;
    expect(metrics).toContain('tributary_destination_events_loaded_total{destination="warehouse"} 3');
    expect(metrics).toContain('tributary_destination_lag_events{destination="warehouse"} 0');
  });

  it("holds the embedded destination's appender flushes, not the server, while the warehouse file checkpoints", async () => {
    const server = await startTestServer();
    servers.push(server);
    // A checkpoint of the warehouse file that lasts until the test ends it.
    let release!: () => void;
    const checkpoint = server.warehouse.checkpoints.checkpoint(
      () =>
        new Promise<void>((resolve) => {
          release = resolve;
        }),
    );
    await sendBatch(server, events);
    await server.settle();
    await sleep(1500); // past the destination's 1 s interval: its load has started and waits
    expect(server.destinations[0]!.position()).toBeLessThan(server.loader.position());
    const health = await server.app.inject({ method: 'GET', url: '/healthz' });
    expect(health.statusCode).toBe(200);
    release();
    await checkpoint;
    await settleAll(server);
    expect(server.destinations[0]!.position()).toBe(server.loader.position());
    expect(await server.query('SELECT id FROM web.tracks')).toEqual([{ id: 'e-1' }]);
  });

  it('loads nothing into the embedded warehouse with "destinations: []"', async () => {
    const server = await startTestServer({ yaml: `${MINIMAL_CONFIG}destinations: []\n` });
    servers.push(server);
    await sendBatch(server, events);
    await settleAll(server);
    expect(server.destinations).toEqual([]);
    const schemas = await server.query(
      "SELECT schema_name FROM information_schema.schemata WHERE schema_name = 'web'",
    );
    expect(schemas).toEqual([]);
  });

  it('keeps collecting and loading the other destinations while PostgreSQL is unreachable', async () => {
    const yaml = `${MINIMAL_CONFIG}destinations:
  - id: warehouse
    type: duckdb
  - id: down
    type: postgres
    host: 127.0.0.1
    port: 1
    database: nowhere
`;
    const server = await startTestServer({ yaml });
    servers.push(server);
    await sendBatch(server, events);
    await server.settle();
    await server.destinations[0]!.drained();
    expect(await server.query('SELECT id FROM web.tracks')).toEqual([{ id: 'e-1' }]);
    const down = server.destinations[1]!;
    // The first attempt fails at once (connection refused); from then on it is reported as failing.
    const deadline = Date.now() + 5000;
    while (!(await Promise.race([down.drained().then(() => true), sleep(100).then(() => false)]))) {
      if (Date.now() > deadline) throw new Error('the unreachable destination never reported failing');
    }
    expect(down.position()).toBe(-1);
    const health = await server.app.inject({ method: 'GET', url: '/healthz' });
    expect(health.json().destinations.down.position).toBe(-1);
    const metrics = (await server.app.inject({ method: 'GET', url: '/metrics' })).body;
    expect(metrics).toMatch(/tributary_destination_load_failures_total\{destination="down"\} [1-9]/);
    expect(metrics).toContain('tributary_destination_lag_events{destination="down"} 3');
  });

  it('refuses to start with a destination it cannot set up, naming it', async () => {
    const yaml = `${MINIMAL_CONFIG}destinations:\n  - id: archive\n    type: duckdb\n    path: /nonexistent-${randomBytes(4).toString('hex')}/a.duckdb\n`;
    const dataDir = mkdtempSync(join(tmpdir(), 'tributary-dest-'));
    cleanups.push(async () => rmSync(dataDir, { recursive: true, force: true }));
    const err = await startTestServer({ yaml, dataDir }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(TributaryError);
    expect((err as TributaryError).code).toBe('TRIB_ERR_DESTINATION_SETUP');
    expect((err as Error).message).toContain('Destination "archive" could not be set up');
  });

  it.skipIf(!hasPg)(
    'loads PostgreSQL, another DuckDB file and a Parquet lake from one configuration (needs PostgreSQL at 127.0.0.1:5432)',
    async () => {
      const db = await scratchDatabase('trib_dest');
      cleanups.push(db.drop);
      const yaml = `${MINIMAL_CONFIG}destinations:
  - id: pg
    type: postgres
    connectionString: ${db.url}
    schema: segment_{source}
  - id: other
    type: duckdb
    path: other.duckdb
  - id: lake
    type: parquet
    path: lake
    interval: 200ms
`;
      const server = await startTestServer({ yaml });
      servers.push(server);
      await sendBatch(server, events);
      await settleAll(server);

      const client = new pg.Client(db.config);
      await client.connect();
      try {
        const rows = await client.query('SELECT id, user_id, total FROM segment_web.order_completed');
        expect(rows.rows).toEqual([{ id: 'e-1', user_id: 'u1', total: '30' }]);
        const users = await client.query('SELECT id, email FROM segment_web.users');
        expect(users.rows).toEqual([{ id: 'u1', email: 'a@x.io' }]);
      } finally {
        await client.end();
      }
      expect(await server.query('SELECT id FROM dest_other.web.identifies')).toEqual([{ id: 'e-2' }]);
      const lake = join(server.dataDir, 'lake');
      expect(existsSync(join(lake, '_manifest'))).toBe(true);
      // The query endpoint reads no files: the lake is read as any engine would, by a DuckDB of its own.
      const reader = await (await DuckDBInstance.create(':memory:')).connect();
      const rows = (
        await reader.runAndReadAll(
          `SELECT id, event FROM read_parquet('${lake}/source=*/event=*/date=*/*.parquet', hive_partitioning = true) ORDER BY id`,
        )
      ).getRowObjectsJson();
      reader.closeSync();
      expect(rows).toEqual([
        { id: 'e-1', event: 'order_completed' },
        { id: 'e-2', event: 'identifies' },
        { id: 'e-3', event: 'pages' },
      ]);
      expect(readdirSync(join(lake, '_staging'))).toEqual([]);
    },
  );
});
