import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { describe, expect, it } from 'vitest';
import type { LoadPlan } from '../layout/warehouse-model.js';
import type { WarehouseBatch } from '../warehouse.js';
import { CheckpointGate } from './checkpoint-gate.js';
import { DuckDBEngine } from './duckdb-engine.js';
import { DuckDBWarehouse } from './duckdb-warehouse.js';

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/** Lets every callback that is ready run (a few turns of the event loop). */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
}

describe('CheckpointGate', () => {
  it('runs transactions together, and a checkpoint only once the open ones have ended', async () => {
    const gate = new CheckpointGate();
    const log: string[] = [];
    const a = deferred();
    const b = deferred();
    const ta = gate.transaction(async () => {
      log.push('a starts');
      await a.promise;
      log.push('a ends');
    });
    const tb = gate.transaction(async () => {
      log.push('b starts');
      await b.promise;
      log.push('b ends');
    });
    const cp = gate.checkpoint(async () => {
      log.push('checkpoint');
      return 42;
    });
    await settle();
    expect(log).toEqual(['a starts', 'b starts']);
    expect(gate.openTransactions).toBe(2);
    a.resolve();
    await settle();
    expect(log).toEqual(['a starts', 'b starts', 'a ends']);
    b.resolve();
    expect(await cp).toBe(42);
    await Promise.all([ta, tb]);
    expect(log).toEqual(['a starts', 'b starts', 'a ends', 'b ends', 'checkpoint']);
  });

  it('holds transactions that start while a checkpoint waits or runs until it is done', async () => {
    const gate = new CheckpointGate();
    const log: string[] = [];
    const open = deferred();
    const running = deferred();
    const t1 = gate.transaction(async () => {
      await open.promise;
      log.push('t1 ends');
    });
    const cp = gate.checkpoint(async () => {
      log.push('checkpoint starts');
      await running.promise;
      log.push('checkpoint ends');
    });
    // Asked for while the checkpoint waits for t1: it does not get ahead of the checkpoint.
    const t2 = gate.transaction(async () => {
      log.push('t2');
    });
    await settle();
    expect(log).toEqual([]);
    open.resolve();
    await settle();
    expect(log).toEqual(['t1 ends', 'checkpoint starts']);
    // Asked for while the checkpoint runs.
    const t3 = gate.transaction(async () => {
      log.push('t3');
    });
    await settle();
    expect(log).toEqual(['t1 ends', 'checkpoint starts']);
    running.resolve();
    await Promise.all([t1, cp, t2, t3]);
    expect(log).toEqual(['t1 ends', 'checkpoint starts', 'checkpoint ends', 't2', 't3']);
  });

  it('lets the next one through after a transaction or a checkpoint fails, and gives each its own error', async () => {
    const gate = new CheckpointGate();
    await expect(gate.transaction(() => Promise.reject(new Error('load failed')))).rejects.toThrow(
      'load failed',
    );
    expect(gate.openTransactions).toBe(0);
    await expect(gate.checkpoint(() => Promise.reject(new Error('checkpoint failed')))).rejects.toThrow(
      'checkpoint failed',
    );
    const order: string[] = [];
    await Promise.all([
      gate.checkpoint(async () => {
        order.push('c1');
      }),
      gate.checkpoint(async () => {
        order.push('c2');
      }),
      gate.transaction(async () => {
        order.push('t');
      }),
    ]);
    expect(order).toEqual(['c1', 'c2', 't']);
  });
});

describe('the warehouse checkpoint and a destination load into the same file', () => {
  function loaderBatch(from: number, n: number): WarehouseBatch {
    const events = [];
    for (let i = 0; i < n; i++) {
      const messageId = `m-${from + i}`;
      events.push({
        messageId,
        sourceId: 'web',
        receivedAt: Date.UTC(2026, 0, 1),
        logOffset: from + i,
        json: JSON.stringify({
          type: 'track',
          event: 'x',
          anonymousId: 'a',
          messageId,
          timestamp: '2026-01-01T00:00:00.000Z',
          receivedAt: '2026-01-01T00:00:00.000Z',
          padding: 'p'.repeat(200),
        }),
      });
    }
    return { events, failed: [], consumer: 'warehouse', nextOffset: from + n };
  }

  function plan(first: number, n: number): LoadPlan {
    const rows = [];
    for (let i = 0; i < n; i++) rows.push([`r-${first + i}`, `value ${first + i}`]);
    return {
      changes:
        first === 0
          ? [
              { kind: 'create-schema', schema: 'web' },
              {
                kind: 'create-table',
                schema: 'web',
                table: 'rows',
                upsert: false,
                columns: [
                  { name: 'id', type: 'varchar' },
                  { name: 'v', type: 'varchar' },
                ],
              },
            ]
          : [],
      tables: [
        {
          schema: 'web',
          table: 'rows',
          mode: 'insert',
          columns: [
            { name: 'id', type: 'varchar' },
            { name: 'v', type: 'varchar' },
          ],
          rows,
        },
      ],
      discards: new Map(),
      names: [],
    };
  }

  it('waits with the checkpoint until the load has committed, and both keep their rows', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tributary-gate-'));
    const instance = await DuckDBInstance.create(join(dir, 'wh.duckdb'));
    // Every write crosses the threshold, so each ends in a checkpoint.
    const warehouse = await DuckDBWarehouse.open(instance, { checkpointBytes: 1 });
    const engine = new DuckDBEngine(instance, { catalog: 'wh', checkpoints: warehouse.checkpoints });
    try {
      await engine.setup();
      const halfway = deferred();
      const resume = deferred();
      // A load whose transaction stays open, rows appended, until the test lets it go on.
      async function* plans(): AsyncGenerator<LoadPlan> {
        yield plan(0, 500);
        halfway.resolve();
        await resume.promise;
        yield plan(500, 500);
      }
      const load = engine.apply('dest', plans(), 10);
      await halfway.promise;
      expect(warehouse.checkpoints.openTransactions).toBe(1);
      let written = false;
      const write = warehouse.write(loaderBatch(0, 50)).then(() => {
        written = true;
      });
      await new Promise((r) => setTimeout(r, 200));
      await settle();
      // The loader's rows are committed; its checkpoint waits for the open load.
      expect(written).toBe(false);
      expect((await warehouse.query('SELECT count(*) AS n FROM events')).rows).toEqual([{ n: 50 }]);
      resume.resolve();
      await Promise.all([load, write]);
      expect(written).toBe(true);
      expect((await warehouse.query('SELECT count(*) AS n FROM web.rows')).rows).toEqual([{ n: 1000 }]);
      // A load asked for after the checkpoint went through does not wait.
      await warehouse.write(loaderBatch(50, 50));
      await engine.apply('dest', [plan(1000, 10)], 20);
      expect((await warehouse.query('SELECT count(*) AS n FROM web.rows')).rows).toEqual([{ n: 1010 }]);
      expect((await warehouse.query('SELECT count(*) AS n FROM events')).rows).toEqual([{ n: 100 }]);
    } finally {
      await engine.close();
      await warehouse.close();
      instance.closeSync();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
