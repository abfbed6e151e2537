import { DuckDBInstance } from '@duckdb/node-api';
import { afterAll, describe, expect, it } from 'vitest';
import { LineageRecorder } from '../../src/observe/lineage/attempt-recorder.js';
import { DuckDBStore } from '../../src/store/duckdb/duckdb-store.js';
import { PostgresStore } from '../../src/store/postgres/postgres-store.js';
import type { DeliveryAttemptRow, ReplayRunRow, Store } from '../../src/store/store.js';
import { pgUnreachable, type ScratchDatabase, scratchDatabase } from '../pg.js';

/** The lineage tables of the store port, one body for both adapters (`delivery_attempts`, `replay_runs`, events by id). */

const pgProblem = await pgUnreachable();
const T0 = Date.UTC(2026, 11, 1);
const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanups.splice(0)) await c();
});

async function duckdb(): Promise<Store> {
  const instance = await DuckDBInstance.create(':memory:');
  const store = await DuckDBStore.open(instance);
  cleanups.push(async () => {
    await store.close();
    instance.closeSync();
  });
  return store;
}

let db: ScratchDatabase | undefined;
async function postgres(): Promise<Store> {
  db ??= await scratchDatabase('lineage');
  const store = await PostgresStore.open({
    url: db.url,
    schema: `s_${Math.random().toString(16).slice(2, 10)}`,
  });
  cleanups.push(async () => {
    await store.close();
  });
  return store;
}
afterAll(async () => {
  await db?.drop();
});

const adapters: [string, () => Promise<Store>, string | undefined][] = [
  ['duckdb', duckdb, undefined],
  ['postgres', postgres, pgProblem],
  ['postgres partition view', async () => ((await postgres()) as PostgresStore).partition(2), pgProblem],
];

const attempt = (over: Partial<DeliveryAttemptRow>): DeliveryAttemptRow => ({
  destination: 'hook',
  messageId: 'm-1',
  attempt: 1,
  at: new Date(T0),
  status: 'ok',
  latencyMs: 3.25,
  ...over,
});

describe.each(adapters)('lineage tables on %s', (_name, open, skip) => {
  it.skipIf(skip !== undefined)(
    'stores attempts and reads them back by messageId, oldest first',
    async () => {
      const store = await open();
      await store.recordAttempts([
        attempt({ attempt: 2, at: new Date(T0 + 2000), detail: "HTTP 200 it's \u0000ok" }),
        attempt({ attempt: 1, status: 'retryable', latencyMs: 5000.5, detail: 'timeout' }),
        attempt({ messageId: 'm-2', destination: 'amqp' }),
        attempt({
          messageId: 'm-1',
          destination: 'redis',
          at: new Date(T0 + 1000),
          status: 'failed',
          detail: undefined,
        }),
      ]);
      expect(await store.attemptsOf('m-1')).toEqual([
        attempt({ attempt: 1, status: 'retryable', latencyMs: 5000.5, detail: 'timeout' }),
        { ...attempt({ destination: 'redis', at: new Date(T0 + 1000), status: 'failed' }) },
        attempt({ attempt: 2, at: new Date(T0 + 2000), detail: "HTTP 200 it's \ufffdok" }),
      ]);
      expect(await store.attemptsOf("m-'none")).toEqual([]);
    },
  );

  it.skipIf(skip !== undefined)('writes large batches and purges attempts past the retention', async () => {
    const store = await open();
    const many = Array.from({ length: 4_500 }, (_, i) =>
      attempt({ messageId: `p-${i % 3}`, attempt: i, at: new Date(T0 + i * 1000) }),
    );
    await store.recordAttempts(many);
    expect((await store.attemptsOf('p-0')).length).toBe(1_500);
    expect(await store.purgeAttempts(T0 + 3_000 * 1000)).toBe(3_000);
    const left = await store.attemptsOf('p-1');
    expect(left.length).toBe(500);
    expect(left.every((a) => a.at.getTime() >= T0 + 3_000 * 1000)).toBe(true);
    expect(await store.purgeAttempts(T0)).toBe(0);
  });

  it.skipIf(skip !== undefined)(
    'records replay runs, updates them by id, lists the newest first',
    async () => {
      const store = await open();
      const run = (id: string, startedAt: number, over: Partial<ReplayRunRow> = {}): ReplayRunRow => ({
        id,
        requestedBy: "cli (o'neil)",
        startedAt: new Date(startedAt),
        sourceId: 'web',
        from: new Date(T0),
        to: new Date(T0 + 3_600_000),
        destinations: ['warehouse', 'fresh'],
        dryRun: false,
        status: 'running',
        read: 0,
        passed: 0,
        failed: 0,
        delivered: 0,
        ...over,
      });
      await store.saveReplayRun(run('r-1', T0 + 10));
      await store.saveReplayRun(run('r-2', T0 + 20, { dryRun: true }));
      const finished = run('r-1', T0 + 10, {
        status: 'failed',
        finishedAt: new Date(T0 + 99),
        read: 5,
        passed: 4,
        failed: 1,
        delivered: 8,
        error: 'connection lost',
      });
      await store.saveReplayRun(finished);
      expect(await store.replayRuns({ id: 'r-1' })).toEqual([finished]);
      expect((await store.replayRuns({})).map((r) => [r.id, r.dryRun, r.status])).toEqual([
        ['r-2', true, 'running'],
        ['r-1', false, 'failed'],
      ]);
      expect(await store.replayRuns({ limit: 1 })).toHaveLength(1);
      expect(await store.replayRuns({ id: 'nope' })).toEqual([]);
    },
  );

  it.skipIf(skip !== undefined)('finds stored events and failed events by messageId', async () => {
    const store = await open();
    const json = (id: string) =>
      JSON.stringify({
        type: 'track',
        event: 'A',
        userId: 'u',
        messageId: id,
        timestamp: new Date(T0).toISOString(),
        receivedAt: new Date(T0).toISOString(),
      });
    await store.write({
      events: [
        { messageId: 'x-1', sourceId: 'web', receivedAt: T0, logOffset: 7, json: json('x-1') },
        { messageId: 'x-2', sourceId: 'web', receivedAt: T0, logOffset: 8, json: json('x-2') },
      ],
      failed: [
        {
          logOffset: 9,
          sourceId: 'app',
          messageId: 'x-1',
          stage: 'plan',
          code: 'TRIB_ERR_PLAN_VIOLATION',
          reason: 'total',
          receivedAt: new Date(T0).toISOString(),
          json: json('x-1'),
        },
      ],
      consumer: 'warehouse',
      nextOffset: 10,
    });
    const events = await store.eventsOf('x-1');
    expect(events.map((e) => [e.logOffset, e.sourceId, e.messageId, e.receivedAt])).toEqual([
      [7, 'web', 'x-1', T0],
    ]);
    expect(JSON.parse(events[0]!.json)).toMatchObject({ messageId: 'x-1' });
    expect((await store.listFailed({ messageId: 'x-1' })).map((f) => [f.stage, f.source_id])).toEqual([
      ['plan', 'app'],
    ]);
    expect(await store.listFailed({ messageId: 'x-2' })).toEqual([]);
  });
});

describe('LineageRecorder', () => {
  it('writes attempts in batches, keeps them through a failed write, and purges by the retention', async () => {
    const writes: number[] = [];
    let fail = 1;
    const purged: number[] = [];
    const errors: unknown[] = [];
    const store = {
      async recordAttempts(a: readonly DeliveryAttemptRow[]) {
        if (fail-- > 0) throw new Error('disk full');
        writes.push(a.length);
      },
      async purgeAttempts(before: number) {
        purged.push(before);
        return 0;
      },
    };
    const rec = new LineageRecorder(store, {
      flushRows: 100,
      retentionMs: 1_000,
      now: () => T0,
      onError: (e) => errors.push(e),
    });
    for (let i = 0; i < 250; i++) await rec.record([attempt({ attempt: i })]);
    await rec.flush();
    await rec.stop();
    // 100 failed once and were kept, then written with the rest: every attempt once.
    expect(writes.reduce((a, b) => a + b, 0)).toBe(250);
    // A write per batch, not per attempt.
    expect(writes.length).toBeLessThanOrEqual(5);
    expect(rec.written).toBe(250);
    expect(rec.dropped).toBe(0);
    expect(errors).toHaveLength(1);
    expect(await rec.purge()).toBe(0);
    expect(purged).toEqual([T0 - 1_000]);
  });

  it('bounds what it holds when the store keeps failing', async () => {
    const store = {
      recordAttempts: async () => {
        throw new Error('down');
      },
      purgeAttempts: async () => 0,
    };
    const rec = new LineageRecorder(store, { flushRows: 10, maxBuffered: 50, onError: () => {} });
    for (let i = 0; i < 200; i++) await rec.record([attempt({ attempt: i })]);
    await rec.flush();
    expect(rec.written).toBe(0);
    expect(rec.dropped).toBeGreaterThanOrEqual(150);
  });
});
