import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { delivered, oddFields } from '../../test/conformance/collector-events.js';
import type { EventLog } from '../log/event-log.js';
import { DuckDBStore } from '../store/duckdb/duckdb-store.js';
import type { Stage } from './stages/stage.js';
import { WarehouseLoader } from './warehouse-loader.js';

/** The loader's log is not read: batches are handed to `handle` as the log would. */
const noLog = {} as EventLog;

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

async function openWarehouse() {
  const dir = mkdtempSync(join(tmpdir(), 'trib-loader-iso-'));
  const instance = await DuckDBInstance.create(join(dir, 'warehouse.duckdb'));
  const warehouse = await DuckDBStore.open(instance);
  const conn = await instance.connect();
  cleanups.push(async () => {
    conn.closeSync();
    await warehouse.close();
    instance.closeSync();
    rmSync(dir, { recursive: true, force: true });
  });
  const offsets = async (table: string) =>
    (await conn.runAndReadAll(`SELECT log_offset FROM ${table} ORDER BY log_offset`))
      .getRows()
      .map(([o]) => Number(o));
  return { warehouse, offsets, conn };
}

describe('WarehouseLoader isolation', () => {
  it('fails an event the warehouse refuses, loads the rest and moves on', async () => {
    const { warehouse, offsets, conn } = await openWarehouse();
    const failedCounts: number[] = [];
    const outcomes: string[] = [];
    const loader = new WarehouseLoader(noLog, warehouse, {
      observer: {
        failedStored: (_s, n) => failedCounts.push(n),
        outcome: (_s, stage, outcome, n) => outcomes.push(`${stage}:${outcome}:${n}`),
      },
    });
    await loader.handle([
      delivered(0, {}),
      delivered(1, { timestamp: '2020-02-30T00:00:00.000Z' }),
      // Repaired in the loader: stored with U+FFFD.
      delivered(2, { properties: { s: '\ud800', t: 'ok \ud83d\ude00' } }),
      delivered(3, {}),
    ]);
    expect(loader.position()).toBe(4);
    expect(await offsets('events')).toEqual([0, 2, 3]);
    expect(await offsets('failed_events')).toEqual([1]);
    const failed = (await conn.runAndReadAll('SELECT stage, code FROM failed_events')).getRows();
    expect(failed).toEqual([['load', 'TRIB_ERR_LOAD_UNSTORABLE']]);
    const stored = (await warehouse.readEvents(2, 3, 1))[0]!;
    expect(JSON.parse(stored.json).properties).toEqual({ s: '\ufffd', t: 'ok \ud83d\ude00' });
    expect(failedCounts).toEqual([1]);
    expect(outcomes.sort()).toEqual(['load:failed:1', 'load:passed:3']);

    await loader.handle([delivered(4, {})]);
    expect(await offsets('events')).toEqual([0, 2, 3, 4]);
    expect(await warehouse.consumerOffset('warehouse')).toBe(5);
  });

  it("fails a transformation's output the warehouse refuses", async () => {
    const { warehouse, offsets } = await openWarehouse();
    const badDate: Stage = {
      name: 'transform',
      run: (events) => ({
        pass: events.map((e) => ({
          ...e,
          event: { ...e.event, timestamp: e.event.userId === 'bad' ? 'not a date' : e.event.timestamp },
          changed: true,
        })),
        drop: [],
        fail: [],
      }),
    };
    const loader = new WarehouseLoader(noLog, warehouse, { stages: new Map([['web', [badDate]]]) });
    await loader.handle([delivered(0, {}), delivered(1, { userId: 'bad' }), delivered(2, {})]);
    expect(await offsets('events')).toEqual([0, 2]);
    expect(await offsets('failed_events')).toEqual([1]);
    expect(loader.position()).toBe(3);
  });

  it('stores or fails any JSON the collector accepts, and loads the next event', async () => {
    const { warehouse, offsets } = await openWarehouse();
    const loader = new WarehouseLoader(noLog, warehouse);
    let offset = 0;
    await fc.assert(
      fc.asyncProperty(oddFields, async ({ properties, timestamp, userId }) => {
        const at = offset;
        const odd = delivered(at, { properties, timestamp, ...(userId === null ? {} : { userId }) });
        const next = delivered(at + 1, {});
        offset += 2;
        await loader.handle([odd, next]);
        const events = await offsets(`events WHERE log_offset >= ${at}`);
        const failed = await offsets(`failed_events WHERE log_offset >= ${at}`);
        expect(events.includes(at) !== failed.includes(at)).toBe(true);
        expect(events).toContain(at + 1);
        expect(loader.position()).toBe(at + 2);
      }),
      { numRuns: 150 },
    );
  });
});
