import { DuckDBInstance } from '@duckdb/node-api';
import { afterEach, describe, expect, it } from 'vitest';
import { storedEvent } from '../../test/conformance/warehouse-conformance.js';
import type { Stage } from '../pipeline/stages/stage.js';
import { DuckDBStore } from '../store/duckdb/duckdb-store.js';
import type { RecordFailure } from './destination.js';
import { TransformingDestination } from './destination-transforms.js';
import { DuckDBEngine } from './warehouse/duckdb/duckdb-engine.js';
import { SegmentWarehouse } from './warehouse/segment-warehouse.js';

const closers: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

/** A destination function that marks every event it sees. */
const mark: Stage = {
  name: 'mark',
  run(events) {
    for (const e of events) {
      (e.event.properties as Record<string, unknown>).marked = true;
      e.changed = true;
    }
    return { pass: events, drop: [], fail: [] };
  },
};

describe('TransformingDestination', () => {
  it('reports an output the destination refuses as the event its functions received', async () => {
    const instance = await DuckDBInstance.create(':memory:');
    const conn = await instance.connect();
    closers.push(() => instance.closeSync());
    closers.push(() => conn.closeSync());
    const inner = new SegmentWarehouse({
      name: 'wh',
      engine: new DuckDBEngine(instance, { catalog: 'memory' }),
    });
    const warehouse = await DuckDBStore.open(instance);
    closers.push(() => warehouse.close());
    const dest = new TransformingDestination(inner, [mark], warehouse);
    closers.push(() => dest.close());
    const track = (offset: number, event: string, n: number) =>
      storedEvent(offset, { type: 'track', event, userId: 'u1', properties: { n } });
    await dest.load([track(0, 'Blocked', 1)], 1);
    // Another writer changed the column: the marked output cannot go in.
    await conn.run('ALTER TABLE web.blocked ALTER COLUMN n TYPE BOOLEAN USING (n <> 0)');
    const bad = track(2, 'Blocked', 5);
    const reported: RecordFailure[] = [];
    const result = await dest.load([track(1, 'E', 1), bad], 3, {
      onFailed: async (failed) => {
        reported.push(...failed);
      },
    });
    expect(result.status === 'ok' && result.failed.map((f) => f.event)).toEqual([bad]);
    expect(reported.map((f) => [f.event, f.code])).toEqual([[bad, 'TRIB_ERR_DEST_RECORD_REFUSED']]);
    expect(await inner.storedOffset()).toBe(3);
  });
});
