import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { describe, expect, it } from 'vitest';
import { DuckDBEngine } from '../../destinations/warehouse/duckdb/duckdb-engine.js';
import type { LoadPlan } from '../../destinations/warehouse/layout/warehouse-model.js';
import { DuckDBStore } from '../../store/duckdb/duckdb-store.js';
import type { StoreBatch } from '../../store/store.js';
import { CheckpointGate } from './checkpoint-gate.js';

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
  it('is busy while a checkpoint runs, and idle() waits for it', async () => {
    const gate = new CheckpointGate();
    expect(gate.busy).toBe(false);
    await gate.idle(); // nothing running: at once
    const job = deferred();
    const cp = gate.checkpoint(async () => {
      await job.promise;
      return 42;
    });
    expect(gate.busy).toBe(true);
    let idle = false;
    const waiting = gate.idle().then(() => {
      idle = true;
    });
    await settle();
    expect(idle).toBe(false);
    job.resolve();
    expect(await cp).toBe(42);
    await waiting;
    expect(gate.busy).toBe(false);
  });

  it('runs one checkpoint at a time, and a failed one frees the gate and gives its error to its caller', async () => {
    const gate = new CheckpointGate();
    const order: string[] = [];
    const first = deferred();
    const c1 = gate.checkpoint(async () => {
      order.push('c1 starts');
      await first.promise;
      order.push('c1 ends');
      throw new Error('checkpoint failed');
    });
    const c2 = gate.checkpoint(async () => {
      order.push('c2');
    });
    await settle();
    expect(order).toEqual(['c1 starts']);
    first.resolve();
    await expect(c1).rejects.toThrow('checkpoint failed');
    await c2;
    expect(order).toEqual(['c1 starts', 'c1 ends', 'c2']);
    expect(gate.busy).toBe(false);
  });
});

describe('the warehouse checkpoint and a destination load into the same file', () => {
  function loaderBatch(from: number, n: number): StoreBatch {
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

  it("makes a destination load's appender flush wait for the file's running checkpoint", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tributary-gate-'));
    const instance = await DuckDBInstance.create(join(dir, 'wh.duckdb'));
    const gate = new CheckpointGate();
    const engine = new DuckDBEngine(instance, { catalog: 'wh', checkpoints: gate });
    try {
      await engine.setup();
      // A checkpoint that runs until the test ends it.
      const running = deferred();
      const checkpoint = gate.checkpoint(() => running.promise);
      let loaded = false;
      const load = engine.apply('dest', [plan(0, 500)], 10).then(() => {
        loaded = true;
      });
      await new Promise((r) => setTimeout(r, 100));
      await settle();
      expect(loaded).toBe(false);
      running.resolve();
      await Promise.all([checkpoint, load]);
      const c = await instance.connect();
      const rows = await c.runAndReadAll('SELECT count(*) FROM wh.web.rows');
      c.closeSync();
      expect(Number(rows.getRows()[0]![0])).toBe(500);
      // With no checkpoint running, a load goes straight through.
      await engine.apply('dest', [plan(500, 10)], 20);
    } finally {
      await engine.close();
      instance.closeSync();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("checkpoints the warehouse through its gate, and a load's and the loader's rows all stay", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tributary-gate-'));
    const instance = await DuckDBInstance.create(join(dir, 'wh.duckdb'));
    // Every write crosses the threshold, so each ends in a checkpoint.
    const warehouse = await DuckDBStore.open(instance, { checkpointBytes: 1 });
    const engine = new DuckDBEngine(instance, { catalog: 'wh', checkpoints: warehouse.checkpoints });
    try {
      await engine.setup();
      const halfway = deferred();
      const resume = deferred();
      // A load whose transaction stays open, rows appended, while the loader writes and checkpoints.
      async function* plans(): AsyncGenerator<LoadPlan> {
        yield plan(0, 500);
        halfway.resolve();
        await resume.promise;
        yield plan(500, 500);
      }
      const load = engine.apply('dest', plans(), 10);
      await halfway.promise;
      // Another checkpoint holds the gate: the loader's own waits for it, one at a time.
      const other = deferred();
      const held = warehouse.checkpoints.checkpoint(() => other.promise);
      let written = false;
      const write = warehouse.write(loaderBatch(0, 50)).then(() => {
        written = true;
      });
      await new Promise((r) => setTimeout(r, 100));
      await settle();
      expect(written).toBe(false);
      other.resolve();
      await Promise.all([held, write]);
      expect(warehouse.checkpoints.busy).toBe(false);
      resume.resolve();
      await load;
      await warehouse.write(loaderBatch(50, 50));
      expect((await warehouse.query('SELECT count(*) AS n FROM web.rows')).rows).toEqual([{ n: 1000 }]);
      expect((await warehouse.query('SELECT count(*) AS n FROM events')).rows).toEqual([{ n: 100 }]);
    } finally {
      await engine.close();
      await warehouse.close();
      instance.closeSync();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
