import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { afterAll, describe, expect, it } from 'vitest';
import type { QueuedDelivery } from '../src/store/delivery-queue.js';
import { DuckDBStore } from '../src/store/duckdb/duckdb-store.js';
import { PostgresStore } from '../src/store/postgres/postgres-store.js';
import type { Store } from '../src/store/store.js';
import { pgUnreachable, type ScratchDatabase, scratchDatabase } from './pg.js';

/** The delivery queue of the store port, one body over both adapters. */

const job = (key: string, orderKey: string, logOffset: number): QueuedDelivery => ({
  key,
  orderKey,
  op: 'event',
  payload: JSON.stringify({ messageId: key, userId: orderKey }),
  logOffset,
  sourceId: 'web',
  receivedAt: 1_700_000_000_000 + logOffset,
});

interface Harness {
  open(): Promise<Store>;
  cleanup(): Promise<void>;
}

function queueSuite(name: string, harness: () => Promise<Harness>) {
  describe(`delivery queue: ${name}`, () => {
    it('queues with the offset in one transaction, hands out one head per order key, skips keys in backoff', async () => {
      const h = await harness();
      let store = await h.open();
      try {
        await store.enqueueDeliveries({
          queue: 'delivery:a',
          jobs: [job('m1', 'u1', 0), job('m2', 'u1', 1), job('m3', 'u2', 2), job('m4', 'u3', 3)],
          failed: [],
          consumer: 'delivery:a',
          nextOffset: 4,
        });
        await store.enqueueDeliveries({ queue: 'delivery:b', jobs: [job('x', 'u1', 0)], failed: [] });
        expect(await store.consumerOffset('delivery:a')).toBe(4);
        const now = Date.now();
        let heads = await store.nextDeliveries('delivery:a', now, 10);
        expect(heads.map((j) => j.key)).toEqual(['m1', 'm3', 'm4']);
        // Several per key, in queue order, within the limit.
        expect((await store.nextDeliveries('delivery:a', now, 10, 2)).map((j) => j.key)).toEqual([
          'm1',
          'm2',
          'm3',
          'm4',
        ]);
        expect((await store.nextDeliveries('delivery:a', now, 2, 2)).map((j) => j.key)).toEqual(['m1', 'm2']);
        expect(heads[0]).toMatchObject({
          orderKey: 'u1',
          attempts: 0,
          logOffset: 0,
          sourceId: 'web',
          op: 'event',
        });
        expect(JSON.parse(heads[0]!.payload)).toEqual({ messageId: 'm1', userId: 'u1' });
        const [m1, m3, m4] = heads;
        // u1's head goes into backoff, u2's is delivered, u3's fails for good.
        await store.settleDeliveries({
          queue: 'delivery:a',
          done: [m3!.seq],
          retry: [{ seq: m1!.seq, attempts: 1, notBefore: now + 60_000, lastError: 'HTTP 503' }],
          failed: [
            {
              seq: m4!.seq,
              row: {
                logOffset: 3,
                sourceId: 'web',
                messageId: 'm4',
                stage: 'destination:a',
                code: 'TRIB_ERR_DELIVERY_REFUSED',
                reason: 'HTTP 400',
                receivedAt: new Date().toISOString(),
                json: m4!.payload,
              },
            },
          ],
        });
        // u1 waits behind its head in backoff: m2 is not handed out before m1.
        expect(await store.nextDeliveries('delivery:a', now, 10)).toEqual([]);
        expect(await store.nextDeliveries('delivery:a', now, 10, 5)).toEqual([]);
        heads = await store.nextDeliveries('delivery:a', now + 60_000, 10);
        expect(heads.map((j) => [j.key, j.attempts, j.lastError])).toEqual([['m1', 1, 'HTTP 503']]);
        expect(await store.listFailed({ stage: 'destination:a' })).toMatchObject([
          { message_id: 'm4', code: 'TRIB_ERR_DELIVERY_REFUSED' },
        ]);
        expect(await store.deliveryBacklog('delivery:a')).toMatchObject({ jobs: 2 });
        expect((await store.deliveryBacklog('delivery:a')).oldestEnqueuedAt).toBeGreaterThan(0);
        expect(await store.deliveryBacklog('nothing')).toEqual({ jobs: 0, oldestEnqueuedAt: null });
        expect((await store.expiredDeliveries('delivery:a', Date.now() + 1, 10)).map((j) => j.key)).toEqual([
          'm1',
          'm2',
        ]);
        expect(await store.expiredDeliveries('delivery:a', now - 60_000, 10)).toEqual([]);

        // Reopened, the queue goes on numbering after what it holds.
        await store.close();
        store = await h.open();
        await store.settleDeliveries({ queue: 'delivery:a', done: [heads[0]!.seq], retry: [], failed: [] });
        await store.enqueueDeliveries({ queue: 'delivery:a', jobs: [job('m5', 'u1', 4)], failed: [] });
        expect((await store.nextDeliveries('delivery:a', Date.now(), 10)).map((j) => j.key)).toEqual(['m2']);
        const rest = await store.expiredDeliveries('delivery:a', Date.now() + 1, 10);
        expect(rest.map((j) => j.key)).toEqual(['m2', 'm5']);
        expect(rest[1]!.seq).toBeGreaterThan(rest[0]!.seq);
      } finally {
        await store.close();
        await h.cleanup();
      }
    });

    it('keeps a retry’s failed_events id with the job', async () => {
      const h = await harness();
      const store = await h.open();
      try {
        await store.enqueueDeliveries({
          queue: 'q',
          jobs: [{ ...job('r1', 'u9', 7), retryOf: 'failed-row-1' }],
          failed: [],
        });
        const [j] = await store.nextDeliveries('q', Date.now(), 5);
        expect(j).toMatchObject({ key: 'r1', retryOf: 'failed-row-1' });
        expect(await store.consumerOffset('q')).toBe(0);
      } finally {
        await store.close();
        await h.cleanup();
      }
    });
  });
}

queueSuite('duckdb', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'trib-queue-'));
  const instance = await DuckDBInstance.create(join(dir, 'warehouse.duckdb'));
  return {
    open: () => DuckDBStore.open(instance),
    async cleanup() {
      instance.closeSync();
      rmSync(dir, { recursive: true, force: true });
    },
  };
});

const pgProblem = await pgUnreachable();
if (pgProblem) {
  describe.skip(`delivery queue: postgres (PostgreSQL at 127.0.0.1:5432 unreachable: ${pgProblem})`, () => {
    it('needs PostgreSQL', () => {});
  });
} else {
  let db: ScratchDatabase | undefined;
  let n = 0;
  afterAll(() => db?.drop());
  queueSuite('postgres', async () => {
    db ??= await scratchDatabase('trib_queue');
    const schema = `q${++n}`;
    const url = db.url;
    return {
      open: () => PostgresStore.open({ url, schema, maxConnections: 2 }),
      async cleanup() {
        await db!.admin.query('SELECT 1');
      },
    };
  });
}
