import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import pg from 'pg';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { DuckDBWarehouse } from '../src/warehouse/duckdb/duckdb-warehouse.js';
import { PostgresEventStore } from '../src/warehouse/postgres/postgres-event-store.js';
import { eventStoreConformance } from './conformance/event-store-conformance.js';
import { PG_ADMIN, pgUnreachable } from './pg.js';

eventStoreConformance('duckdb', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'trib-store-'));
  const instance = await DuckDBInstance.create(join(dir, 'warehouse.duckdb'));
  const conn = await instance.connect();
  return {
    open: () => DuckDBWarehouse.open(instance),
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
  const database = `trib_store_${randomBytes(6).toString('hex')}`;
  const url = `postgres://${PG_ADMIN.user}@${PG_ADMIN.host}:${PG_ADMIN.port}/${database}`;
  const admin = new pg.Client(PG_ADMIN);
  const client = new pg.Client({ ...PG_ADMIN, database });
  beforeAll(async () => {
    await admin.connect();
    await admin.query(`CREATE DATABASE ${database}`);
    await client.connect();
  });
  afterAll(async () => {
    await client.end();
    await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
    await admin.end();
  });
  let n = 0;
  const harness = (partition?: number) => async () => {
    const schema = `s${++n}`;
    return {
      async open() {
        const store = await PostgresEventStore.open({ url, schema, maxConnections: 2 });
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
  eventStoreConformance('postgres', harness());
  eventStoreConformance('postgres partition 3', harness(3));
}
