import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import fc from 'fast-check';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EventLog } from '../src/log/event-log.js';
import { WarehouseLoader } from '../src/pipeline/warehouse-loader.js';
import { DuckDBStore } from '../src/store/duckdb/duckdb-store.js';
import { PostgresStore } from '../src/store/postgres/postgres-store.js';
import { delivered, oddFields } from './conformance/collector-events.js';
import { storeConformance } from './conformance/store-conformance.js';
import { pgUnreachable, type ScratchDatabase, scratchDatabase } from './pg.js';

storeConformance('duckdb', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'trib-store-'));
  const instance = await DuckDBInstance.create(join(dir, 'warehouse.duckdb'));
  const conn = await instance.connect();
  return {
    open: () => DuckDBStore.open(instance),
    async query(sql) {
      return (await conn.runAndReadAll(sql)).getRowObjectsJS() as Record<string, string | null>[];
    },
    async cleanup() {
      conn.closeSync();
      instance.closeSync();
      rmSync(dir, { recursive: true, force: true });
    },
  };
});

const pgProblem = await pgUnreachable();
if (pgProblem) {
  describe.skip(`event store conformance: postgres (PostgreSQL at 127.0.0.1:5432 unreachable: ${pgProblem})`, () => {
    it('needs PostgreSQL', () => {});
  });
} else {
  let db: ScratchDatabase;
  let client: pg.Client;
  beforeAll(async () => {
    db = await scratchDatabase('trib_store');
    client = new pg.Client(db.config);
    await client.connect();
  });
  afterAll(async () => {
    await client.end();
    await db.drop();
  });
  let n = 0;
  const harness = (partition?: number) => async () => {
    const schema = `s${++n}`;
    return {
      async open() {
        const store = await PostgresStore.open({ url: db.url, schema, maxConnections: 2 });
        if (partition === undefined) return store;
        const view = store.partition(partition);
        return { ...view, close: () => store.close() };
      },
      async query(sql: string) {
        await client.query(`SET search_path TO ${schema}`);
        return (await client.query(sql)).rows as Record<string, string | null>[];
      },
      async cleanup() {
        await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      },
    };
  };
  storeConformance('postgres', harness());
  storeConformance('postgres partition 3', harness(3));

  describe('WarehouseLoader on PostgreSQL', () => {
    it('stores or fails any JSON the collector accepts, and loads the next event', async () => {
      const h = await harness(1)();
      const store = await h.open();
      try {
        const loader = new WarehouseLoader({} as EventLog, store, { consumer: 'loader-p1' });
        const offsets = async (table: string, from: number) =>
          (
            await h.query(`SELECT log_offset FROM ${table} WHERE log_offset >= ${from} ORDER BY log_offset`)
          ).map((r) => Number(r.log_offset));
        let offset = 0;
        await fc.assert(
          fc.asyncProperty(oddFields, async ({ properties, timestamp, userId }) => {
            const at = offset;
            offset += 2;
            await loader.handle([
              delivered(at, { properties, timestamp, ...(userId === null ? {} : { userId }) }),
              delivered(at + 1, {}),
            ]);
            const events = await offsets('events', at);
            const failed = await offsets('failed_events', at);
            expect(events.includes(at) !== failed.includes(at)).toBe(true);
            expect(events).toContain(at + 1);
            expect(loader.position()).toBe(at + 2);
          }),
          { numRuns: 60 },
        );
      } finally {
        await store.close();
        await h.cleanup();
      }
    });
  });
}
