import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TributaryError } from '../src/errors.js';
import { DuckDBEventLog } from '../src/log/duckdb/duckdb-event-log.js';
import type { RawEvent } from '../src/log/event-log.js';
import { FailedStore } from '../src/pipeline/failed-store.js';
import { WarehouseLoader } from '../src/pipeline/warehouse-loader.js';
import { PostgresStore } from '../src/store/postgres/postgres-store.js';
import type { EventRow, FailedRow } from '../src/store/store.js';
import { pgUnreachable, type ScratchDatabase, scratchDatabase } from './pg.js';

const pgProblem = await pgUnreachable();
const T0 = Date.UTC(2026, 10, 1);

/** One accepted track event of source `web` at log offset `offset`. */
function event(
  offset: number,
  messageId = `m-${offset}`,
  sourceId = 'web',
): RawEvent & { logOffset: number } {
  const at = new Date(T0 + offset).toISOString();
  return {
    sourceId,
    messageId,
    receivedAt: T0 + offset,
    status: 'accepted',
    logOffset: offset,
    json: JSON.stringify({
      type: 'track',
      event: 'Order Completed',
      userId: `u${offset}`,
      messageId,
      timestamp: at,
      receivedAt: at,
      properties: { n: offset },
    }),
  };
}

function row(offset: number, messageId?: string, sourceId?: string): EventRow {
  const e = event(offset, messageId, sourceId);
  return {
    messageId: e.messageId,
    sourceId: e.sourceId,
    receivedAt: e.receivedAt,
    logOffset: offset,
    json: e.json,
  };
}

function failedRow(offset: number, stage = 'transform'): FailedRow {
  const e = event(offset, `f-${offset}`);
  return {
    logOffset: offset,
    sourceId: 'web',
    messageId: e.messageId,
    stage,
    code: 'TRIB_ERR_TRANSFORM_FAILED',
    reason: 'the function threw',
    receivedAt: new Date(e.receivedAt).toISOString(),
    json: e.json,
    logs: ['line 1'],
  };
}

async function offsetMovedOf(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
    return undefined;
  } catch (err) {
    return err instanceof TributaryError ? err.code : String(err);
  }
}

if (pgProblem) {
  describe.skip(`PostgresStore (PostgreSQL at 127.0.0.1:5432 unreachable: ${pgProblem})`, () => {
    it('needs PostgreSQL', () => {});
  });
} else {
  describe('PostgresStore', () => {
    let db: ScratchDatabase;
    const opened: PostgresStore[] = [];
    const dirs: string[] = [];
    let n = 0;
    /** A store in a schema of its own, so each test starts empty. */
    const open = async (schema = `s${++n}`) => {
      const store = await PostgresStore.open({ url: db.url, schema, maxConnections: 4 });
      opened.push(store);
      return store;
    };

    beforeAll(async () => {
      db = await scratchDatabase('trib_state');
    });
    afterAll(async () => {
      for (const s of opened) await s.close().catch(() => undefined);
      for (const d of dirs) rmSync(d, { recursive: true, force: true });
      await db.drop();
    });

    async function duckLog() {
      const dir = mkdtempSync(join(tmpdir(), 'trib-pgstate-'));
      dirs.push(dir);
      const instance = await DuckDBInstance.create(join(dir, 'main.duckdb'));
      const c = await instance.connect();
      await c.run(`ATTACH '${join(dir, 'log.duckdb')}' AS log`);
      c.closeSync();
      const log = await DuckDBEventLog.open(instance, {
        segmentDir: join(dir, 'segments'),
        pollIntervalMs: 20,
      });
      return {
        log,
        async close() {
          await log.close();
          instance.closeSync();
        },
      };
    }

    it('keeps each partition its own events and each consumer its own offset', async () => {
      const store = await open();
      const p0 = store.partition(0);
      const p1 = store.partition(1);
      await p0.write({
        events: [row(0), row(1), row(2)],
        failed: [],
        consumer: 'warehouse:p0',
        nextOffset: 3,
      });
      await p1.write({
        events: [row(1, 'x-1'), row(4, 'x-4')],
        failed: [],
        consumer: 'warehouse:p1',
        nextOffset: 5,
      });

      expect((await p0.readEvents(0, 10, 100)).map((e) => e.messageId)).toEqual(['m-0', 'm-1', 'm-2']);
      expect((await p1.readEvents(0, 10, 100)).map((e) => e.messageId)).toEqual(['x-1', 'x-4']);
      expect((await p1.readEvents(2, 10, 100)).map((e) => e.logOffset)).toEqual([4]);
      expect(await p0.readEvents(0, 10, 2)).toHaveLength(2);
      const [first] = await p0.readEvents(0, 1, 1);
      expect(first).toMatchObject({ logOffset: 0, sourceId: 'web', messageId: 'm-0', receivedAt: T0 });
      expect(JSON.parse(first!.json)).toEqual(JSON.parse(row(0).json));

      expect(await p0.consumerOffset('warehouse:p0')).toBe(3);
      expect(await p0.consumerOffset('warehouse:p1')).toBe(5);
      expect(await store.consumerOffset('nobody')).toBe(0);

      // The columns DuckDB derives from the JSON are derived here too.
      const r = await store.query(
        `SELECT log_partition, type, event, user_id, CAST("timestamp" AS VARCHAR) AS ts, log_offset
         FROM events WHERE message_id = 'x-4'`,
      );
      expect(r.rows).toEqual([
        {
          log_partition: 1,
          type: 'track',
          event: 'Order Completed',
          user_id: 'u4',
          ts: '2026-11-01 00:00:00.004+00',
          log_offset: 4,
        },
      ]);
    });

    it('creates its tables once when two processes open it at once', async () => {
      const [a, b] = await Promise.all([open('racing'), open('racing')]);
      await a.write({ events: [row(0)], failed: [], consumer: 'c', nextOffset: 1 });
      expect((await b.readEvents(0, 1, 10)).map((e) => e.messageId)).toEqual(['m-0']);
    });

    it('writes a partition batch once when two processes race for it: the other gets TRIB_ERR_STATE_OFFSET_MOVED', async () => {
      const schema = 'race';
      const [a, b] = [await open(schema), await open(schema)];
      const batch = {
        events: Array.from({ length: 500 }, (_, i) => row(i)),
        failed: [failedRow(7)],
        consumer: 'warehouse:p2',
        nextOffset: 500,
        fromOffset: 0,
      };
      // A third session holds the offset row, so both writers are queued on it before either goes on.
      const blocker = new pg.Client({ connectionString: db.url });
      await blocker.connect();
      try {
        await blocker.query('BEGIN');
        await blocker.query(
          `INSERT INTO ${schema}.consumer_offsets (consumer, next_offset) VALUES ($1, 0) ON CONFLICT DO NOTHING`,
          [batch.consumer],
        );
        await blocker.query(`SELECT 1 FROM ${schema}.consumer_offsets WHERE consumer = $1 FOR UPDATE`, [
          batch.consumer,
        ]);
        const racing = [
          offsetMovedOf(a.partition(2).write(batch)),
          offsetMovedOf(b.partition(2).write(batch)),
        ];
        for (;;) {
          const w = await db.admin.query<{ n: string }>(
            `SELECT count(*) AS n FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'`,
            [db.name],
          );
          if (Number(w.rows[0]!.n) >= 2) break;
          await new Promise((r) => setTimeout(r, 10));
        }
        await blocker.query('COMMIT');
        const outcomes = await Promise.all(racing);
        expect(outcomes.sort()).toEqual(['TRIB_ERR_STATE_OFFSET_MOVED', undefined]);
      } finally {
        await blocker.end();
      }
      const counts = await a.query(
        `SELECT (SELECT count(*) FROM events) AS events, (SELECT count(DISTINCT message_id) FROM events) AS ids,
                (SELECT count(*) FROM failed_events) AS failed, (SELECT count(*) FROM event_keys) AS keys`,
      );
      expect(counts.rows[0]).toEqual({ events: 500, ids: 500, failed: 1, keys: 500 });
      expect(await b.consumerOffset(batch.consumer)).toBe(500);

      // The loser, having re-read the offset, goes on from there.
      await b.partition(2).write({
        events: [row(600)],
        failed: [],
        consumer: batch.consumer,
        nextOffset: 601,
        fromOffset: 500,
      });
      expect(await a.consumerOffset(batch.consumer)).toBe(601);
    });

    it('drops an event whose source and messageId another partition stored already', async () => {
      const store = await open();
      await store.partition(0).write({ events: [row(0, 'dup')], failed: [], consumer: 'p0', nextOffset: 1 });
      const report = await store.partition(1).write({
        events: [row(5, 'dup'), row(6, 'new'), row(7, 'new'), row(8, 'dup', 'app')],
        failed: [],
        consumer: 'p1',
        nextOffset: 9,
      });
      // 'dup' of source web was stored; the second 'new' repeats one of the batch; 'dup' of app is another key.
      expect(report?.duplicates).toEqual([0, 2]);
      expect((await store.partition(1).readEvents(0, 10, 10)).map((e) => [e.sourceId, e.messageId])).toEqual([
        ['web', 'new'],
        ['app', 'dup'],
      ]);
      const all = await store.query('SELECT count(*) AS n FROM events');
      expect(all.rows[0]!.n).toBe(3);
    });

    it('finds stored keys for the dedupe index, within the window', async () => {
      const store = await open();
      await store.write({
        events: [row(0, 'a'), row(100, 'b'), row(200, 'c', 'app')],
        failed: [],
        consumer: 'c',
        nextOffset: 201,
      });
      const keys = [
        { sourceId: 'web', messageId: 'a' },
        { sourceId: 'web', messageId: 'b' },
        { sourceId: 'web', messageId: 'c' },
        { sourceId: 'app', messageId: 'c' },
      ];
      expect([...(await store.existingKeys(keys, T0))].sort()).toEqual(
        ['app\u001fc', 'web\u001fa', 'web\u001fb'].sort(),
      );
      expect([...(await store.existingKeys(keys, T0 + 50))].sort()).toEqual(['app\u001fc', 'web\u001fb']);
      const recent: unknown[] = [];
      for await (const k of store.recentKeys(T0 + 50)) recent.push(k);
      expect(recent).toEqual([
        { sourceId: 'app', messageId: 'c', receivedAt: T0 + 200 },
        { sourceId: 'web', messageId: 'b', receivedAt: T0 + 100 },
      ]);
    });

    it('stores events carrying U+0000, which PostgreSQL text cannot hold', async () => {
      const store = await open();
      const json = JSON.stringify({
        type: 'track',
        event: 'E',
        userId: 'u',
        timestamp: new Date(T0).toISOString(),
        properties: { nul: 'a\u0000b', text: 'a\\u0000b' },
      });
      await store.write({
        events: [{ messageId: 'nul', sourceId: 'web', receivedAt: T0, logOffset: 0, json }],
        failed: [],
        consumer: 'c',
        nextOffset: 1,
      });
      const [e] = await store.readEvents(0, 1, 1);
      expect(JSON.parse(e!.json).properties).toEqual({ nul: 'a\ufffdb', text: 'a\\u0000b' });
    });

    it('loads a DuckDB event log end to end, partition by partition, dropping duplicates across partitions', async () => {
      const store = await open();
      const logs = [await duckLog(), await duckLog()];
      const deduplicated = [0, 0];
      const loaded = [0, 0];
      const loaders = logs.map(
        ({ log }, p) =>
          new WarehouseLoader(log, store.partition(p), {
            consumer: `warehouse:p${p}`,
            lingerMs: 0,
            maxBatch: 40,
            observer: {
              deduplicated: (_s, k) => {
                deduplicated[p]! += k;
              },
              loaded: (_s, k) => {
                loaded[p]! += k;
              },
            },
          }),
      );
      try {
        await loaders[0]!.start();
        await logs[0]!.log.append([
          ...Array.from({ length: 100 }, (_, i) => event(i)),
          {
            ...event(0, 'bad'),
            status: 'rejected',
            code: 'TRIB_ERR_EVENT_MISSING_IDENTITY',
            reason: 'no id',
          },
        ]);
        await loaders[0]!.drained();
        await loaders[1]!.start();
        // Partition 1 repeats 20 messageIds partition 0 stored (a client retry routed elsewhere).
        await logs[1]!.log.append(Array.from({ length: 60 }, (_, i) => event(80 + i)));
        await loaders[1]!.drained();
      } finally {
        for (const l of loaders) await l.stop();
        for (const l of logs) await l.close();
      }
      expect(loaded).toEqual([100, 40]);
      expect(deduplicated).toEqual([0, 20]);
      const r = await store.query(
        `SELECT log_partition, count(*) AS n, count(DISTINCT message_id) AS ids FROM events GROUP BY 1 ORDER BY 1`,
      );
      expect(r.rows).toEqual([
        { log_partition: 0, n: 100, ids: 100 },
        { log_partition: 1, n: 40, ids: 40 },
      ]);
      expect(await store.consumerOffset('warehouse:p0')).toBe(101);
      expect(await store.consumerOffset('warehouse:p1')).toBe(60);

      // The failed-event store's SQL, written for DuckDB, runs on these tables.
      const failedStore = new FailedStore(
        store.partition(0),
        logs[0]!.log,
        { retried: () => {} },
        async () => {},
      );
      const listed = await failedStore.list({});
      expect(listed).toMatchObject([
        { source_id: 'web', message_id: 'bad', stage: 'collect', retry_state: 'new' },
      ]);
      const shown = await failedStore.show(listed[0]!.id);
      expect(shown).toMatchObject({ log_offset: 100, code: 'TRIB_ERR_EVENT_MISSING_IDENTITY', logs: null });
      expect(shown.payload).toEqual(JSON.parse(event(0, 'bad').json));
    });

    it('lets a loader that lost its partition notice the moved offset and go on from it', async () => {
      const schema = 'moved';
      const mine = await open(schema);
      const theirs = await open(schema);
      const { log, close } = await duckLog();
      const errors: string[] = [];
      const loader = new WarehouseLoader(log, mine.partition(3), {
        consumer: 'warehouse:p3',
        lingerMs: 0,
        observer: { error: (e) => errors.push(e instanceof TributaryError ? e.code : String(e)) },
      });
      try {
        await loader.start();
        // Another process took the partition over and loaded its first five records.
        await theirs.partition(3).write({
          events: [0, 1, 2, 3, 4].map((i) => row(i)),
          failed: [],
          consumer: 'warehouse:p3',
          nextOffset: 5,
          fromOffset: 0,
        });
        await log.append(Array.from({ length: 10 }, (_, i) => event(i)));
        await loader.drained();
      } finally {
        await loader.stop();
        await close();
      }
      expect(errors).toEqual(['TRIB_ERR_STATE_OFFSET_MOVED']);
      expect(loader.position()).toBe(10);
      const r = await mine.query('SELECT count(*) AS n, count(DISTINCT message_id) AS ids FROM events');
      expect(r.rows[0]).toEqual({ n: 10, ids: 10 });
    });

    it('lists, shows and retries failed events through FailedStore', async () => {
      const store = await open();
      const { log, close } = await duckLog();
      try {
        await store.write({
          events: [],
          failed: [failedRow(3), failedRow(4, 'collect')],
          consumer: 'c',
          nextOffset: 5,
        });
        const failedStore = new FailedStore(store, log, { retried: () => {} }, async () => {});
        const listed = await failedStore.list({ stage: 'transform' });
        expect(listed).toHaveLength(1);
        expect(listed[0]).toMatchObject({ message_id: 'f-3', received_at: '2026-11-01 00:00:00.003+00' });
        expect((await failedStore.show(listed[0]!.id)).logs).toEqual(['line 1']);
        const outcomes = await failedStore.retry({ source: 'web' }, false);
        expect(outcomes.map((o) => o.status).sort()).toEqual(['sent', 'skipped']);
        expect(log.endOffset()).toBe(1);
        const after = await failedStore.list({ includeRetried: true, stage: 'transform' });
        expect(after[0]!.retry_state).toBe('retried');
        await expect(failedStore.show('no-such-id')).rejects.toMatchObject({
          code: 'TRIB_ERR_FAILED_NOT_FOUND',
        });
      } finally {
        await close();
      }
    });
  });
}
