import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import pg from 'pg';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DestinationConfig } from '../src/config/destinations-schema.js';
import { type RunningDestination, startDestinations } from '../src/destinations/runner.js';
import { PostgresEngine } from '../src/destinations/warehouse/postgres/postgres-engine.js';
import { SegmentWarehouse } from '../src/destinations/warehouse/segment-warehouse.js';
import { EventFeed } from '../src/pipeline/event-feed.js';
import { PostgresStore } from '../src/store/postgres/postgres-store.js';
import type { EventRow, StoredEvent } from '../src/store/store.js';
import { storedEvent } from './conformance/warehouse-conformance.js';
import { pgUnreachable, type ScratchDatabase, scratchDatabase } from './pg.js';

const pgProblem = await pgUnreachable();

const INSTANCES = 4;
const BATCHES = 3;
const PER_BATCH = 60;

/**
 * The events of instance `i` (its log partition), batch `b`: offsets interleave across
 * partitions as in one stream. Every batch brings columns no other instance has, `amount` is
 * an integer in even partitions and a decimal in odd ones (the column widens), and both
 * sources' schemas are new to everyone at first.
 */
function batchOf(i: number, b: number): StoredEvent[] {
  const events: StoredEvent[] = [];
  for (let k = 0; k < PER_BATCH; k++) {
    const offset = ((b * PER_BATCH + k) * INSTANCES + i) * 3;
    const sourceId = k % 3 === 0 ? 'shop' : 'web';
    const messageId = `p${i}-b${b}-${k}`;
    if (k % 5 === 4) {
      events.push(
        storedEvent(
          offset,
          {
            type: 'identify',
            messageId,
            userId: `u-p${i}-${k % 4}`,
            traits: { plan: 'pro', [`trait_p${i}`]: k, [`seen_b${b}`]: true },
          },
          sourceId,
        ),
      );
      continue;
    }
    events.push(
      storedEvent(
        offset,
        {
          type: 'track',
          messageId,
          event: 'Order Completed',
          userId: `u-p${i}-${k % 4}`,
          properties: {
            amount: i % 2 === 0 ? k : k + 0.5,
            [`only_p${i}`]: `x${k}`,
            [`batch_${b}_p${i}`]: true,
          },
        },
        sourceId,
      ),
    );
  }
  return events;
}

if (pgProblem) {
  describe.skip(`PostgreSQL destination concurrency (PostgreSQL at 127.0.0.1:5432 unreachable: ${pgProblem})`, () => {
    it('needs PostgreSQL', () => {});
  });
} else {
  describe('PostgreSQL destination with many writers', () => {
    let db: ScratchDatabase;
    let client: pg.Client;

    beforeAll(async () => {
      db = await scratchDatabase('trib_dest');
      client = new pg.Client({ connectionString: db.url });
      await client.connect();
    });
    afterAll(async () => {
      await client.end();
      await db.drop();
    });

    const count = async (sql: string) => Number((await client.query<{ n: string }>(sql)).rows[0]!.n);
    const columnsOf = async (schema: string, table: string) =>
      new Map(
        (
          await client.query<{ column_name: string; data_type: string }>(
            'SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2',
            [schema, table],
          )
        ).rows.map((r) => [r.column_name, r.data_type]),
      );

    it('4 instances loading disjoint events into the same new tables at once: every row once, every column, no load failing', async () => {
      const instances = Array.from(
        { length: INSTANCES },
        (_, i) =>
          new SegmentWarehouse({
            name: 'pg',
            offsetKey: `pg:p${i}`,
            engine: new PostgresEngine({ connection: { connectionString: db.url } }),
          }),
      );
      const failures: string[] = [];
      try {
        // Each instance follows its own partition as the feed would: on a failed load it
        // re-reads its offset and loads again.
        await Promise.all(
          instances.map(async (w, i) => {
            let offset = await w.storedOffset();
            for (let b = 0; b < BATCHES; b++) {
              const events = batchOf(i, b);
              const next = events[events.length - 1]!.logOffset + 1;
              for (let attempt = 0; offset < next; attempt++) {
                try {
                  await w.load(events, next);
                  offset = next;
                } catch (err) {
                  failures.push(`p${i} batch ${b}: ${(err as Error).message}`);
                  if (attempt === 4) throw err;
                  offset = await w.storedOffset();
                }
              }
            }
          }),
        );
      } finally {
        for (const w of instances) await w.close();
      }
      expect(failures).toEqual([]);

      const all = Array.from({ length: INSTANCES }, (_, i) =>
        Array.from({ length: BATCHES }, (_, b) => batchOf(i, b)).flat(),
      ).flat();
      const tracks = all.filter((e) => JSON.parse(e.json).type === 'track');
      for (const source of ['web', 'shop']) {
        const mine = tracks.filter((e) => e.sourceId === source);
        expect(await count(`SELECT count(*) AS n FROM ${source}.tracks`)).toBe(mine.length);
        expect(await count(`SELECT count(DISTINCT id) AS n FROM ${source}.order_completed`)).toBe(
          mine.length,
        );
        expect(await count(`SELECT count(*) AS n FROM ${source}.order_completed`)).toBe(mine.length);
        expect(await count(`SELECT count(*) AS n FROM ${source}.discards`)).toBe(0);
        const cols = columnsOf(source, 'order_completed');
        const c = await cols;
        expect(c.get('amount')).toBe('double precision');
        for (let i = 0; i < INSTANCES; i++) {
          expect(c.has(`only_p${i}`)).toBe(true);
          for (let b = 0; b < BATCHES; b++) expect(c.has(`batch_${b}_p${i}`)).toBe(true);
          // The values of every instance are in their columns.
          const ofInstance = mine.filter((e) => e.messageId.startsWith(`p${i}-`)).length;
          expect(await count(`SELECT count(only_p${i}) AS n FROM ${source}.order_completed`)).toBe(
            ofInstance,
          );
          expect(
            await count(`SELECT count(amount) AS n FROM ${source}.order_completed WHERE id LIKE 'p${i}-%'`),
          ).toBe(ofInstance);
        }
        const identifies = all.filter((e) => e.sourceId === source && JSON.parse(e.json).type === 'identify');
        expect(await count(`SELECT count(*) AS n FROM ${source}.identifies`)).toBe(identifies.length);
        const users = new Set(identifies.map((e) => JSON.parse(e.json).userId));
        expect(await count(`SELECT count(*) AS n FROM ${source}.users`)).toBe(users.size);
        const userCols = await columnsOf(source, 'users');
        for (let i = 0; i < INSTANCES; i++) expect(userCols.has(`trait_p${i}`)).toBe(true);
      }

      const offsets = await client.query<{ destination: string; next_offset: string }>(
        'SELECT destination, next_offset FROM _tributary.warehouse_offsets ORDER BY destination',
      );
      expect(offsets.rows.map((r) => [r.destination, Number(r.next_offset)])).toEqual(
        Array.from({ length: INSTANCES }, (_, i) => {
          const last = batchOf(i, BATCHES - 1);
          return [`pg:p${i}`, last[last.length - 1]!.logOffset + 1];
        }),
      );
      // Each name was given out once, by whichever instance needed it first; only widenings repeat a column.
      const repeated = await client.query(
        `SELECT kind, schema_name, table_name, key, count(*) FROM _tributary.warehouse_names
         WHERE destination = 'pg' AND NOT (kind = 'column' AND key = 'prop:amount')
         GROUP BY 1, 2, 3, 4 HAVING count(*) > 1`,
      );
      expect(repeated.rows).toEqual([]);

      // A new instance (a restart, another process) rebuilds the same model and loads on.
      const again = new SegmentWarehouse({
        name: 'pg',
        offsetKey: 'pg:p1',
        engine: new PostgresEngine({ connection: { connectionString: db.url } }),
      });
      try {
        const at = await again.storedOffset();
        const more = [
          storedEvent(at, {
            type: 'track',
            messageId: 'late',
            event: 'Order Completed',
            userId: 'u',
            properties: { amount: 3, only_p0: 'y' },
          }),
        ];
        await again.load(more, at + 1);
      } finally {
        await again.close();
      }
      expect(
        await count(`SELECT count(*) AS n FROM web.order_completed WHERE id = 'late' AND only_p0 = 'y'`),
      ).toBe(1);
    });

    it('runs once per partition through startDestinations: offsets per partition, shared tables and metrics', async () => {
      const store = await PostgresStore.open({ url: db.url, schema: 'state' });
      const dir = mkdtempSync(join(tmpdir(), 'trib-pgdest-'));
      const instance = await DuckDBInstance.create(join(dir, 'main.duckdb'));
      const registry = new Registry();
      const running: RunningDestination[] = [];
      const ends = [0, 0];
      try {
        for (const p of [0, 1]) {
          const rows: EventRow[] = Array.from({ length: 25 }, (_, k) => {
            const e = storedEvent(k * 2 + p, {
              type: 'track',
              messageId: `s-p${p}-${k}`,
              event: 'Signed Up',
              userId: `u${k}`,
              properties: { [`from_p${p}`]: k, boom: k % 10 === 3 },
            });
            return { ...e, logOffset: e.logOffset };
          });
          ends[p] = rows[rows.length - 1]!.logOffset + 1;
          await store
            .partition(p)
            .write({ events: rows, failed: [], consumer: `warehouse:p${p}`, nextOffset: ends[p]! });
        }
        writeFileSync(
          join(dir, 'boom.ts'),
          "export default (e: any) => { if (e.properties?.boom) throw new Error('boom'); return e; };",
        );
        const config = DestinationConfig.parse({
          id: 'pg2',
          type: 'postgres',
          connectionString: db.url,
          schema: 'dest_{source}',
          interval: 0,
          transformations: [{ id: 'boom', file: 'boom.ts' }],
        });
        for (const p of [0, 1]) {
          const feed = new EventFeed(store.partition(p), {
            position: () => ends[p]!,
            onLoaded: () => () => {},
          });
          running.push(
            ...(await startDestinations({
              destinations: [config],
              instance,
              dataDir: dir,
              feed,
              logger: pino({ level: 'silent' }),
              registry,
              endOffset: () => ends[p]!,
              warehouse: store.partition(p),
              baseDir: dir,
              env: {},
              offsetKeySuffix: `:p${p}`,
            })),
          );
        }
        expect(running.map((d) => [d.id, d.offsetKey])).toEqual([
          ['pg2', 'pg2:p0'],
          ['pg2', 'pg2:p1'],
        ]);
        for (const d of running) await d.drained();
        // 3 of 25 events per partition fail the destination's function: stored once each, under its stage.
        expect(await count('SELECT count(*) AS n FROM dest_web.signed_up')).toBe(44);
        const failed = await store.query(
          'SELECT stage, log_partition, count(*) AS n FROM failed_events GROUP BY 1, 2 ORDER BY 2',
        );
        expect(failed.rows).toEqual([
          { stage: 'destination:pg2', log_partition: 0, n: 3 },
          { stage: 'destination:pg2', log_partition: 1, n: 3 },
        ]);
        expect(await store.consumerOffset('transform:pg2:p0')).toBe(ends[0]);
        expect(await store.consumerOffset('transform:pg2:p1')).toBe(ends[1]);
        const offsets = await client.query<{ destination: string; next_offset: string }>(
          "SELECT destination, next_offset FROM _tributary.warehouse_offsets WHERE destination LIKE 'pg2%' ORDER BY 1",
        );
        expect(offsets.rows.map((r) => [r.destination, Number(r.next_offset)])).toEqual([
          ['pg2:p0', ends[0]],
          ['pg2:p1', ends[1]],
        ]);
        const loaded = await registry.getSingleMetric('tributary_destination_events_loaded_total')!.get();
        expect(loaded.values).toEqual([
          expect.objectContaining({ labels: { destination: 'pg2' }, value: 50 }),
        ]);
        const lag = await registry.getSingleMetric('tributary_destination_lag_events')!.get();
        expect(lag.values).toEqual([expect.objectContaining({ labels: { destination: 'pg2' }, value: 0 })]);
      } finally {
        for (const d of running) await d.stop();
        await store.close();
        instance.closeSync();
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it('sets up beside a load that holds the offsets table: no lock on tables already current', async () => {
      const first = new PostgresEngine({ connection: { connectionString: db.url } });
      await first.setup();
      await first.close();
      // Another process's load, mid-transaction, holding a row of the offsets table.
      const load = new pg.Client({ connectionString: db.url });
      await load.connect();
      try {
        await load.query('BEGIN');
        await load.query(
          `INSERT INTO _tributary.warehouse_offsets (destination, next_offset, updated_at, workspace, log_id)
           VALUES ('busy', 1, now(), 'w', 'l')
           ON CONFLICT (destination, workspace, log_id) DO UPDATE SET next_offset = EXCLUDED.next_offset`,
        );
        // A worker starting now: with a statement timeout, a setup that waited for the load's
        // lock (an ALTER TABLE takes an exclusive one even when it changes nothing) would fail.
        const starting = new PostgresEngine({
          connection: { connectionString: db.url },
          timeouts: { statementMs: 2_000, connectMs: 5_000 },
        });
        try {
          await starting.setup();
        } finally {
          await starting.close();
        }
      } finally {
        await load.query('ROLLBACK');
        await load.end();
      }
    });

    it('refuses to run a one-writer destination once per partition', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'trib-pgdest-'));
      const instance = await DuckDBInstance.create(join(dir, 'main.duckdb'));
      try {
        const feed = new EventFeed(
          { readEvents: async () => [] },
          { position: () => 0, onLoaded: () => () => {} },
        );
        await expect(
          startDestinations({
            destinations: [DestinationConfig.parse({ id: 'lake', type: 'parquet', path: 'lake' })],
            instance,
            dataDir: dir,
            feed,
            logger: pino({ level: 'silent' }),
            registry: new Registry(),
            endOffset: () => 0,
            warehouse: {
              write: async () => ({ duplicates: [], refused: [] }),
              consumerOffset: async () => 0,
            },
            baseDir: dir,
            env: {},
            offsetKeySuffix: ':p1',
          }),
        ).rejects.toMatchObject({ code: 'TRIB_ERR_DESTINATION_SETUP' });
      } finally {
        instance.closeSync();
        rmSync(dir, { recursive: true, force: true });
      }
    });
  });
}
