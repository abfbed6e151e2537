import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import pg from 'pg';
import { describe, it } from 'vitest';
import { DuckDBEngine } from '../src/destinations/warehouse/duckdb/duckdb-engine.js';
import { PostgresEngine } from '../src/destinations/warehouse/postgres/postgres-engine.js';
import { type WarehouseHarness, warehouseConformance } from './conformance/warehouse-conformance.js';
import { pgUnreachable, scratchDatabase } from './pg.js';

warehouseConformance('duckdb', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'trib-wh-'));
  const instance = await DuckDBInstance.create(join(dir, 'warehouse.duckdb'));
  const conn = await instance.connect();
  const engines: DuckDBEngine[] = [];
  const make = async () => {
    const e = new DuckDBEngine(instance, { catalog: 'warehouse' });
    engines.push(e);
    return e;
  };
  return {
    engine: make,
    reopen: make,
    async query(sql) {
      const r = await conn.runAndReadAll(sql);
      return r.getRowObjectsJson() as Record<string, unknown>[];
    },
    async cleanup() {
      for (const e of engines) await e.close();
      conn.closeSync();
      instance.closeSync();
      rmSync(dir, { recursive: true, force: true });
    },
  } satisfies WarehouseHarness;
});

const pgProblem = await pgUnreachable();
if (pgProblem) {
  describe.skip(`Segment warehouse conformance: postgres (PostgreSQL at 127.0.0.1:5432 unreachable: ${pgProblem})`, () => {
    it('needs PostgreSQL', () => {});
  });
} else {
  warehouseConformance('postgres', async () => {
    const db = await scratchDatabase('trib_wh');
    const { config } = db;
    const client = new pg.Client(config);
    await client.connect();
    const engines: PostgresEngine[] = [];
    const make = async () => {
      const e = new PostgresEngine({ connection: config });
      engines.push(e);
      return e;
    };
    return {
      engine: make,
      reopen: make,
      async query(sql) {
        return (await client.query(sql)).rows as Record<string, unknown>[];
      },
      async cleanup() {
        for (const e of engines) await e.close().catch(() => undefined);
        await client.end();
        await db.drop();
      },
    } satisfies WarehouseHarness;
  });
}
