import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { afterEach, describe, expect, it } from 'vitest';
import { record } from '../../test/conformance/event-log-conformance.js';
import { DuckDBEventLog } from '../log/duckdb/duckdb-event-log.js';
import type { RawEvent } from '../log/event-log.js';
import { DuckDBStore } from '../store/duckdb/duckdb-store.js';
import type { StoredEvent } from '../store/store.js';
import { EventFeed } from './event-feed.js';
import { WarehouseLoader } from './warehouse-loader.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A real log, warehouse and loader on a temporary folder. */
async function pipeline() {
  const dir = mkdtempSync(join(tmpdir(), 'trib-feed-'));
  const instance = await DuckDBInstance.create(join(dir, 'warehouse.duckdb'));
  const c = await instance.connect();
  await c.run(`ATTACH '${join(dir, 'log.duckdb')}' AS log`);
  c.closeSync();
  const log = await DuckDBEventLog.open(instance, { catalog: 'log', segmentDir: join(dir, 'segments') });
  const warehouse = await DuckDBStore.open(instance);
  const loader = new WarehouseLoader(log, warehouse, { lingerMs: 0 });
  await loader.start();
  cleanups.push(async () => {
    await loader.stop();
    await log.close();
    await warehouse.close();
    instance.closeSync();
    rmSync(dir, { recursive: true, force: true });
  });
  return { log, warehouse, loader, feed: new EventFeed(warehouse, loader) };
}

/** A log record as collection writes it: normalised, with both timestamps. */
function stored(i: number): RawEvent {
  const r = record(i);
  const at = new Date(r.receivedAt).toISOString();
  return { ...r, json: JSON.stringify({ ...JSON.parse(r.json), timestamp: at, receivedAt: at }) };
}

/** A stage that keeps what it saw and its offset, as a stage with its own store would. */
function stage(failFirst = 0) {
  const seen: StoredEvent[] = [];
  let stored = 0;
  let failures = failFirst;
  return {
    seen,
    stored: () => stored,
    from: async () => stored,
    handle: async (events: StoredEvent[], next: number) => {
      if (failures > 0) {
        failures--;
        throw new Error('stage store unavailable');
      }
      seen.push(...events);
      stored = next;
    },
  };
}

describe('EventFeed', () => {
  it('hands every stored event to a stage once, in log order, and skips failed records', async () => {
    const { log, loader, feed } = await pipeline();
    const s = stage();
    const sub = feed.subscribe({ name: 'test', from: s.from, handle: s.handle, maxBatch: 7 });
    await log.append(Array.from({ length: 20 }, (_, i) => stored(i)));
    await log.append([{ ...stored(20), status: 'rejected', code: 'TRIB_ERR_EVENT_NOT_OBJECT', reason: 'r' }]);
    await log.append(Array.from({ length: 10 }, (_, i) => stored(21 + i)));
    await loader.drained();
    await sub.drained();
    await sub.stop();
    expect(s.seen.map((e) => e.messageId)).toEqual(
      Array.from({ length: 31 }, (_, i) => `m-${i}`).filter((m) => m !== 'm-20'),
    );
    expect(s.seen.map((e) => e.logOffset)).toEqual([...s.seen.map((e) => e.logOffset)].sort((a, b) => a - b));
    expect(JSON.parse(s.seen[0]!.json)).toMatchObject({ type: 'track', userId: 'u0' });
    expect(s.stored()).toBe(31);
  });

  it('retries after the stage fails and resumes from its stored offset after a restart', async () => {
    const { log, loader, feed } = await pipeline();
    const s = stage(2);
    const errors: unknown[] = [];
    let sub = feed.subscribe({
      name: 'test',
      from: s.from,
      handle: s.handle,
      retryMs: 10,
      onError: (e) => errors.push(e),
    });
    await log.append(Array.from({ length: 5 }, (_, i) => stored(i)));
    await loader.drained();
    await sub.drained();
    await sub.stop();
    expect(errors).toHaveLength(2);
    expect(s.seen).toHaveLength(5);

    await log.append(Array.from({ length: 5 }, (_, i) => stored(5 + i)));
    await loader.drained();
    sub = feed.subscribe({ name: 'test', from: s.from, handle: s.handle });
    await sub.drained();
    await sub.stop();
    expect(s.seen.map((e) => e.messageId)).toEqual(Array.from({ length: 10 }, (_, i) => `m-${i}`));
  });
});

describe('EventFeed reading ahead through a backlog', () => {
  it('hands each event once in order when the stage fails with the next batch already read', async () => {
    const { log, loader, warehouse } = await pipeline();
    const s = stage(3);
    const errors: unknown[] = [];
    const reads: [number, number][] = [];
    const counting = new EventFeed(
      {
        readEvents: async (from, to, limit) => {
          reads.push([from, to]);
          return warehouse.readEvents(from, to, limit);
        },
      },
      loader,
    );
    await log.append(Array.from({ length: 12 }, (_, i) => stored(i)));
    await loader.drained();
    // For each batch handled: had the feed already asked for the batch after it?
    const readAhead: boolean[] = [];
    const sub = counting.subscribe({
      name: 'ahead',
      from: s.from,
      handle: async (events, next) => {
        readAhead.push(reads.some(([from]) => from === next));
        await s.handle(events, next);
      },
      maxBatch: 3,
      retryMs: 5,
      onError: (e) => errors.push(e),
    });
    await sub.drained();
    await sub.stop();
    expect(errors).toHaveLength(3);
    expect(s.seen.map((e) => e.messageId)).toEqual(Array.from({ length: 12 }, (_, i) => `m-${i}`));
    // Full batches of 3 give two offsets each (the third is left to the next read): every
    // batch but the last, [10, 12), came back full, and the one after it was asked for
    // before it was handed over.
    expect(readAhead.slice(0, -1).every((r) => r)).toBe(true);
    expect(readAhead.at(-1)).toBe(false);
  });
});

describe('EventFeed interval', () => {
  it('hands events that arrive during the interval over together, and a waiting drain ends the pause', async () => {
    const { log, loader, feed } = await pipeline();
    const batches: number[] = [];
    const s = stage();
    const sub = feed.subscribe({
      name: 'test',
      from: s.from,
      handle: async (events, next) => {
        if (events.length > 0) batches.push(events.length);
        await s.handle(events, next);
      },
      intervalMs: 60_000,
    });
    await log.append([stored(0)]);
    await loader.drained();
    await sub.drained();
    // The first load started the pause; these three arrive during it, one loader batch each.
    for (let i = 1; i <= 3; i++) {
      await log.append([stored(i)]);
      await loader.drained();
    }
    await sub.drained();
    await sub.stop();
    expect(batches).toEqual([1, 3]);
    expect(s.seen.map((e) => e.messageId)).toEqual(['m-0', 'm-1', 'm-2', 'm-3']);
  });
});

describe('EventFeed with several events under one log offset (a transformation fanning out)', () => {
  it('never splits an offset between two batches, even one larger than a batch', async () => {
    const { warehouse } = await pipeline();
    const row = (offset: number, id: string) => {
      const at = new Date(1_790_000_000_000).toISOString();
      return {
        messageId: id,
        sourceId: 'web',
        receivedAt: 1_790_000_000_000,
        logOffset: offset,
        json: JSON.stringify({
          type: 'track',
          event: 'E',
          userId: 'u',
          messageId: id,
          timestamp: at,
          receivedAt: at,
        }),
      };
    };
    // Offset 0: one event; offset 1: four (fan-out); offset 2: two.
    const rows = [
      row(0, 'a'),
      ...['b1', 'b2', 'b3', 'b4'].map((id) => row(1, id)),
      row(2, 'c1'),
      row(2, 'c2'),
    ];
    await warehouse.write({ events: rows, failed: [], consumer: 'other', nextOffset: 3 });
    const loaded = { position: () => 3, onLoaded: () => () => {} };
    for (const maxBatch of [1, 2, 3, 4, 5]) {
      const s = stage();
      const calls: number[] = [];
      const sub = new EventFeed(warehouse, loaded).subscribe({
        name: 'test',
        from: s.from,
        handle: async (events, next) => {
          calls.push(next);
          await s.handle(events, next);
        },
        maxBatch,
      });
      await sub.drained();
      await sub.stop();
      expect(
        s.seen.map((e) => e.messageId),
        `maxBatch ${maxBatch}`,
      ).toEqual(rows.map((r) => r.messageId));
      expect(s.stored()).toBe(3);
      expect(calls).toEqual([...calls].sort((a, b) => a - b));
    }
  });
});

describe('EventFeed with a stage that stores in the background (flush)', () => {
  /**
   * A stage whose `handle` starts storing its batch and returns once the previous batch is
   * stored, as the identity stage does; the test decides when each store finishes, and may
   * fail one.
   */
  function backgroundStage() {
    const seen: StoredEvent[] = [];
    let stored = 0;
    let inflight: Promise<void> | undefined;
    const releases: { resolve: () => void; reject: (e: Error) => void }[] = [];
    const settle = async () => {
      const p = inflight;
      inflight = undefined;
      await p;
    };
    return {
      seen,
      stored: () => stored,
      pending: () => releases.length,
      finish: () => releases.shift()!.resolve(),
      fail: () => releases.shift()!.reject(new Error('store lost its connection')),
      from: async () => stored,
      handle: async (events: StoredEvent[], next: number) => {
        await settle();
        const p = new Promise<void>((resolve, reject) => releases.push({ resolve, reject })).then(() => {
          seen.push(...events);
          stored = next;
        });
        p.catch(() => undefined);
        inflight = p;
      },
      flush: settle,
    };
  }
  const until = async (cond: () => boolean) => {
    while (!cond()) await new Promise((r) => setTimeout(r, 5));
  };

  it('counts a batch as drained only once it is stored, and flushes the last one before it idles', async () => {
    const { log, loader, feed } = await pipeline();
    const s = backgroundStage();
    const sub = feed.subscribe({ name: 'bg', from: s.from, handle: s.handle, flush: s.flush, maxBatch: 4 });
    await log.append(Array.from({ length: 10 }, (_, i) => stored(i)));
    await loader.drained();
    let drained = false;
    const done = sub.drained().then(() => {
      drained = true;
    });
    // A full batch of 4 leaves its last offset to the next read: batches [0, 3), [3, 6),
    // [6, 9), [9, 10). Each is handed over at once; the next waits for its store.
    await until(() => s.pending() === 1);
    await new Promise((r) => setTimeout(r, 30));
    expect(s.stored()).toBe(0);
    for (const upTo of [3, 6, 9]) {
      s.finish();
      await until(() => s.pending() === 1 && s.stored() === upTo);
      expect(drained).toBe(false);
    }
    // The last batch: the feed has nothing more to read and flushes it.
    s.finish();
    await done;
    expect(s.stored()).toBe(10);
    await sub.stop();
    expect(s.seen.map((e) => e.messageId)).toEqual(Array.from({ length: 10 }, (_, i) => `m-${i}`));
  });

  it('after a failed background store, retries from the stored offset: nothing lost, nothing twice', async () => {
    const { log, loader, feed } = await pipeline();
    const s = backgroundStage();
    const errors: unknown[] = [];
    const sub = feed.subscribe({
      name: 'bg',
      from: s.from,
      handle: s.handle,
      flush: s.flush,
      maxBatch: 4,
      retryMs: 10,
      onError: (e) => errors.push(e),
    });
    await log.append(Array.from({ length: 8 }, (_, i) => stored(i)));
    await loader.drained();
    const done = sub.drained();
    await until(() => s.pending() === 1);
    s.finish(); // [0, 3) stored
    await until(() => s.pending() === 1 && s.stored() === 3);
    s.fail(); // [3, 6) lost: the next handle throws, the feed re-reads from offset 3
    await until(() => errors.length === 1 && s.pending() === 1);
    while (s.stored() < 8) {
      s.finish();
      await until(() => s.pending() === 1 || s.stored() === 8);
    }
    await done;
    await sub.stop();
    expect((errors[0] as Error).message).toBe('store lost its connection');
    expect(s.seen.map((e) => e.messageId)).toEqual(Array.from({ length: 8 }, (_, i) => `m-${i}`));
  });

  it('stop flushes the batch still being stored', async () => {
    const { log, loader, feed } = await pipeline();
    const s = backgroundStage();
    const sub = feed.subscribe({ name: 'bg', from: s.from, handle: s.handle, flush: s.flush, maxBatch: 100 });
    await log.append(Array.from({ length: 3 }, (_, i) => stored(i)));
    await loader.drained();
    await until(() => s.pending() === 1);
    const stopping = sub.stop();
    await new Promise((r) => setTimeout(r, 30));
    expect(s.stored()).toBe(0);
    s.finish();
    await stopping;
    expect(s.stored()).toBe(3);
  });
});
