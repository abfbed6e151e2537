import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { DuckDBSourceStore } from '../../src/store/duckdb/duckdb-source-store.js';
import { DuckDBStore } from '../../src/store/duckdb/duckdb-store.js';
import { PostgresSourceStore } from '../../src/store/postgres/postgres-source-store.js';
import type { ObjectTable, SourceStore } from '../../src/store/source-store.js';
import { pgUnreachable, scratchDatabase } from '../pg.js';

/** The `SourceStore` port: one body, looped over its DuckDB and PostgreSQL adapters. */

interface Harness {
  store: SourceStore;
  rows(sql: string): Promise<Record<string, unknown>[]>;
  close(): Promise<void>;
}

const adapters: { name: string; open: () => Promise<Harness>; skip?: () => Promise<string | undefined> }[] = [
  {
    name: 'duckdb',
    async open() {
      const dir = mkdtempSync(join(tmpdir(), 'trib-store-'));
      const instance = await DuckDBInstance.create(join(dir, 'w.duckdb'));
      const warehouse = await DuckDBStore.open(instance);
      const store = await DuckDBSourceStore.open(instance);
      const c = await instance.connect();
      return {
        store,
        rows: async (sql) =>
          (await c.runAndReadAll(sql.replaceAll('{s}', '_tributary'))).getRowObjectsJson() as Record<
            string,
            unknown
          >[],
        async close() {
          c.closeSync();
          await store.close();
          await warehouse.close();
          instance.closeSync();
          rmSync(dir, { recursive: true, force: true });
        },
      };
    },
  },
  {
    name: 'postgres',
    skip: pgUnreachable,
    async open() {
      const db = await scratchDatabase('trib_srcstore');
      const pool = new pg.Pool({ ...db.config, max: 3 });
      const store = await PostgresSourceStore.open(pool, 'tributary');
      return {
        store,
        rows: async (sql) =>
          (
            await pool.query(
              sql.replaceAll('{s}', 'tributary').replace('failed_events', 'tributary.failed_events'),
            )
          ).rows.map((r) =>
            Object.fromEntries(Object.entries(r).map(([k, v]) => [k, v === null ? null : String(v)])),
          ),
        async close() {
          await pool.end();
          await db.drop();
        },
      };
    },
  },
];

const table: ObjectTable = {
  sourceId: 'crm',
  stream: 'people',
  columns: [
    { name: 'id', type: 'integer' },
    { name: 'email', type: 'string' },
    { name: 'seen', type: 'timestamp' },
    { name: 'tags', type: 'json' },
  ],
};
const progress = { rows: 0, objects: 0, events: 0, failed: 0 };

for (const a of adapters) {
  describe(`source store: ${a.name}`, async () => {
    const why = await a.skip?.();
    let h: Harness | undefined;
    afterEach(async () => {
      await h?.close();
      h = undefined;
    });

    it.skipIf(why !== undefined)(
      `upserts objects and stores state and run counts together${why ? ` (skipped: ${why})` : ''}`,
      async () => {
        h = await a.open();
        const { store } = h;
        await store.ensureTable(table);
        const run = await store.startRun('crm', 'test');
        await store.commit({
          sourceId: 'crm',
          runId: run,
          objects: [
            {
              table,
              rows: [
                { key: '[1]', values: [1, 'a@x.com', '2026-01-02T10:00:00Z', ['x']] },
                { key: '[2]', values: [2, 'b@x.com', null, null] },
              ],
            },
          ],
          failed: [],
          completed: [],
          states: { people: { files: { a: 1 } } },
          progress: { ...progress, rows: 2, objects: 2 },
        });
        await store.commit({
          sourceId: 'crm',
          runId: run,
          objects: [{ table, rows: [{ key: '[2]', values: [2, 'b2@x.com', null, { k: 1 }] }] }],
          failed: [],
          completed: [],
          states: { people: { files: { a: 2 } } },
          progress: { ...progress, rows: 3, objects: 3 },
        });
        await store.finishRun(run, 'succeeded', { ...progress, rows: 3, objects: 3 });
        expect(await h.rows('SELECT id, email FROM crm.people ORDER BY id')).toEqual([
          { id: '1', email: 'a@x.com' },
          { id: '2', email: 'b2@x.com' },
        ]);
        expect(await store.states('crm')).toEqual({ people: { files: { a: 2 } } });
        expect(await store.runs('crm', 5)).toMatchObject([
          { id: run, status: 'succeeded', rows: 3, objects: 3 },
        ]);
      },
    );

    it.skipIf(why !== undefined)(
      'writes nothing of a commit that fails: neither objects nor state',
      async () => {
        h = await a.open();
        const { store } = h;
        await store.ensureTable(table);
        const run = await store.startRun('crm', 'test');
        const missing: ObjectTable = { ...table, stream: 'not_created' };
        await expect(
          store.commit({
            sourceId: 'crm',
            runId: run,
            objects: [
              { table, rows: [{ key: '[1]', values: [1, 'a@x.com', null, null] }] },
              { table: missing, rows: [{ key: '[1]', values: [1, 'a@x.com', null, null] }] },
            ],
            failed: [],
            completed: [],
            states: { people: 'moved' },
            progress,
          }),
        ).rejects.toThrow();
        expect(await h.rows('SELECT count(*) AS n FROM crm.people')).toEqual([{ n: '0' }]);
        expect(await store.states('crm')).toEqual({});
      },
    );

    it.skipIf(why !== undefined)(
      'stores a row its column refuses as a failure, the rest and the state',
      async () => {
        h = await a.open();
        const { store } = h;
        await store.ensureTable(table);
        const run = await store.startRun('crm', 'test');
        const refused = await store.commit({
          sourceId: 'crm',
          runId: run,
          objects: [
            {
              table,
              rows: [
                { key: '[1]', values: [1, 'a@x.com', null, null] },
                { key: '[2]', values: ['two', 'b@x.com', null, null] },
                { key: '[3]', values: [3, 'c@x.com', 'not a time', null] },
              ],
            },
          ],
          failed: [],
          completed: [],
          states: { people: 's' },
          progress,
        });
        expect(refused.map((r) => r.key).sort()).toEqual(['[2]', '[3]']);
        expect(await h.rows('SELECT id FROM crm.people')).toEqual([{ id: '1' }]);
        expect(
          await h.rows("SELECT stage, code FROM failed_events WHERE source_id = 'crm' ORDER BY code"),
        ).toEqual([
          { stage: 'source', code: 'TRIB_ERR_SOURCE_UNSTORABLE' },
          { stage: 'source', code: 'TRIB_ERR_SOURCE_UNSTORABLE' },
        ]);
        expect(await store.states('crm')).toEqual({ people: 's' });
      },
    );

    it.skipIf(why !== undefined)(
      'marks objects not synced since a full refresh began as deleted, and abandons running runs',
      async () => {
        h = await a.open();
        const { store } = h;
        await store.ensureTable(table);
        const run = await store.startRun('crm', 'test');
        const row = (id: number) => ({ key: `[${id}]`, values: [id, null, null, null] });
        await store.commit({
          sourceId: 'crm',
          runId: run,
          objects: [{ table, rows: [row(1), row(2)] }],
          failed: [],
          completed: [],
          states: {},
          progress,
        });
        await new Promise((r) => setTimeout(r, 5));
        const since = Date.now();
        await new Promise((r) => setTimeout(r, 5));
        await store.commit({
          sourceId: 'crm',
          runId: run,
          objects: [{ table, rows: [row(2)] }],
          failed: [],
          completed: [{ stream: 'people', since }],
          states: {},
          progress,
        });
        expect(await h.rows('SELECT id, _tributary_deleted AS d FROM crm.people ORDER BY id')).toEqual([
          { id: '1', d: a.name === 'postgres' ? 'true' : true },
          { id: '2', d: a.name === 'postgres' ? 'false' : false },
        ]);
        expect(await store.abandonRuns()).toBe(1);
        expect(await store.runs('crm', 5)).toMatchObject([
          { status: 'failed', error: expect.stringContaining('resumes') },
        ]);
      },
    );
  });
}

describe('source store: postgres, across processes', async () => {
  const why = await pgUnreachable();
  it.skipIf(why !== undefined)("lets one store at a time hold a source's sync lock", async () => {
    const db = await scratchDatabase('trib_srclock');
    const p1 = new pg.Pool({ ...db.config, max: 2 });
    const p2 = new pg.Pool({ ...db.config, max: 2 });
    try {
      const s1 = await PostgresSourceStore.open(p1, 'tributary');
      const s2 = await PostgresSourceStore.open(p2, 'tributary');
      const release = await s1.lockSource('crm');
      expect(release).toBeTypeOf('function');
      expect(await s2.lockSource('crm')).toBeUndefined();
      const other = await s2.lockSource('web');
      expect(other).toBeTypeOf('function');
      await release!();
      const again = await s2.lockSource('crm');
      expect(again).toBeTypeOf('function');
      await again!();
      await other!();
    } finally {
      await p1.end();
      await p2.end();
      await db.drop();
    }
  });
});
