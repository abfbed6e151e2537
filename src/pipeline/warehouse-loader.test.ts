import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { afterEach, describe, expect, it } from 'vitest';
import { record } from '../../test/conformance/event-log-conformance.js';
import { DuckDBEventLog } from '../log/duckdb/duckdb-event-log.js';
import type { StoreBatch, WriteReport } from '../store/store.js';
import { eventKey } from '../store/store.js';
import { type LoaderStore, WarehouseLoader } from './warehouse-loader.js';

/** An in-memory warehouse that fails its first `failures` writes, as a full disk would. */
class FlakyStore implements LoaderStore {
  rows = new Map<string, number>();
  failed: number[] = [];
  offsets = new Map<string, number>();
  writes = 0;
  constructor(private failures: number) {}
  async write(batch: StoreBatch): Promise<WriteReport> {
    this.writes++;
    if (this.failures > 0) {
      this.failures--;
      throw new Error('IO Error: No space left on device');
    }
    for (const e of batch.events) {
      const k = eventKey(e.sourceId, e.messageId);
      this.rows.set(k, (this.rows.get(k) ?? 0) + 1);
    }
    this.failed.push(...batch.failed.map((f) => f.logOffset));
    this.offsets.set(batch.consumer, batch.nextOffset);
    return { duplicates: [], refused: [] };
  }
  async consumerOffset(consumer: string) {
    return this.offsets.get(consumer) ?? 0;
  }
  async existingKeys(keys: readonly { sourceId: string; messageId: string }[]) {
    return new Set(keys.map((k) => eventKey(k.sourceId, k.messageId)).filter((k) => this.rows.has(k)));
  }
  async *recentKeys() {
    for (const k of this.rows.keys()) {
      const [sourceId, messageId] = k.split('\u001f') as [string, string];
      yield { sourceId, messageId, receivedAt: Date.now() };
    }
  }
}

/** A loader into a warehouse that never fails, keeping what dedupe drops. */
function countingLoader(log: ConstructorParameters<typeof WarehouseLoader>[0]) {
  const wh = new FlakyStore(0);
  const dropped: number[] = [];
  const loader = new WarehouseLoader(log, wh, {
    lingerMs: 0,
    observer: { deduplicated: (_s, n) => dropped.push(n) },
  });
  return { wh, dropped, loader };
}

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

async function openLog() {
  const dir = mkdtempSync(join(tmpdir(), 'trib-loader-'));
  const instance = await DuckDBInstance.create(join(dir, 'main.duckdb'));
  const c = await instance.connect();
  await c.run(`ATTACH '${join(dir, 'log.duckdb')}' AS log`);
  c.closeSync();
  const log = await DuckDBEventLog.open(instance, { segmentDir: join(dir, 'segments'), pollIntervalMs: 20 });
  cleanups.push(async () => {
    await log.close();
    instance.closeSync();
    rmSync(dir, { recursive: true, force: true });
  });
  return log;
}

describe('WarehouseLoader', () => {
  it('retries a failing warehouse and loads every record exactly once', async () => {
    const log = await openLog();
    const wh = new FlakyStore(3);
    const errors: unknown[] = [];
    const loader = new WarehouseLoader(log, wh, { observer: { error: (e) => errors.push(e) }, lingerMs: 0 });
    await loader.start();
    await log.append(Array.from({ length: 50 }, (_, i) => record(i)));
    await log.append([{ ...record(50), status: 'rejected', code: 'TRIB_ERR_EVENT_NOT_OBJECT', reason: 'r' }]);
    await loader.drained();
    await loader.stop();
    expect(errors).toHaveLength(3);
    expect(wh.rows.size).toBe(50);
    expect([...wh.rows.values()].every((n) => n === 1)).toBe(true);
    expect(wh.failed).toEqual([50]);
    expect(await wh.consumerOffset('warehouse')).toBe(51);
  });

  it('skips records the warehouse already holds when the log redelivers them', async () => {
    const log = await openLog();
    const wh = new FlakyStore(0);
    await log.append(Array.from({ length: 10 }, (_, i) => record(i)));
    const first = new WarehouseLoader(log, wh, { lingerMs: 0 });
    await first.start();
    await first.drained();
    await first.stop();
    // The log redelivers what the warehouse holds (as after a crash between the two commits).
    const again = new WarehouseLoader(log, wh, { consumer: 'warehouse', lingerMs: 0 });
    await again.start();
    await again.handle(Array.from({ length: 10 }, (_, i) => ({ ...record(i), offset: i })));
    await again.stop();
    expect(wh.rows.size).toBe(10);
    expect([...wh.rows.values()].every((n) => n === 1)).toBe(true);
  });

  it('drops a retry of an already loaded event and keeps a new event with the same id in another source', async () => {
    const log = await openLog();
    const { wh, dropped, loader } = countingLoader(log);
    await loader.start();
    // Retries arrive now: the dedupe window counts from receipt.
    const now = (r: ReturnType<typeof record>) => ({ ...r, receivedAt: Date.now() });
    await log.append([now(record(1))]);
    await loader.drained();
    await log.append([now(record(1)), now(record(1, 'app'))]);
    await loader.drained();
    await loader.stop();
    expect(wh.rows.get(eventKey('web', 'm-1'))).toBe(1);
    expect(wh.rows.get(eventKey('app', 'm-1'))).toBe(1);
    expect(dropped).toEqual([1]);
  });

  it('drops a repeat within one batch and keeps the same id from another source', async () => {
    const log = await openLog();
    const { wh, dropped, loader } = countingLoader(log);
    const batch = [record(1), record(2), record(1), record(1, 'app'), record(2)].map((r, i) => ({
      ...r,
      receivedAt: Date.now(),
      offset: i,
    }));
    await loader.handle(batch);
    expect(wh.rows.get(eventKey('web', 'm-1'))).toBe(1);
    expect(wh.rows.get(eventKey('web', 'm-2'))).toBe(1);
    expect(wh.rows.get(eventKey('app', 'm-1'))).toBe(1);
    expect(wh.rows.size).toBe(3);
    expect(dropped).toEqual([2]);
  });
});
