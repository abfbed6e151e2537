import { describe, expect, it } from 'vitest';
import type { Delivered } from '../../log/event-log.js';
import type { ArchiveRange, RawArchive } from '../../log/raw-archive.js';
import type { ReplayRunRow, StoreBatch, StoredEvent } from '../../store/store.js';
import { Replay } from './replay.js';
import type { ReplayTarget } from './replay-target.js';

/** An archive over records in memory, read as the DuckDB log reads its segments. */
function memoryArchive(records: Delivered[]): RawArchive {
  return {
    recordsOf: async (id) => records.filter((r) => r.messageId === id),
    readRange: async (q: ArchiveRange) =>
      records
        .filter(
          (r) =>
            r.sourceId === q.sourceId &&
            r.receivedAt >= q.fromMs &&
            r.receivedAt < q.toMs &&
            r.offset >= (q.fromOffset ?? 0),
        )
        .slice(0, q.limit),
  };
}

const T0 = Date.UTC(2026, 11, 1);
const record = (offset: number, over: Partial<Delivered> = {}): Delivered => ({
  offset,
  sourceId: 'web',
  messageId: `m-${offset}`,
  receivedAt: T0 + offset * 1000,
  status: 'accepted',
  json: JSON.stringify({ type: 'track', event: 'A', userId: 'u', messageId: `m-${offset}` }),
  ...over,
});

function harness() {
  const runs: ReplayRunRow[] = [];
  const writes: StoreBatch[] = [];
  const delivered: StoredEvent[][] = [];
  const target: ReplayTarget = {
    id: 'wh',
    deliver: async (events) => {
      delivered.push([...events]);
      return { ok: events.length, failed: 0 };
    },
  };
  const store = {
    write: async (b: StoreBatch) => {
      writes.push(b);
      return { duplicates: [], refused: [] };
    },
    saveReplayRun: async (r: ReplayRunRow) => {
      runs.push(structuredClone(r));
    },
  };
  return { runs, writes, delivered, target, store };
}

describe('Replay', () => {
  it('pages through the range in log order, leaves out rejected records and repeats, and records the run twice', async () => {
    const h = harness();
    const records = [
      record(0),
      record(1, { status: 'rejected', code: 'TRIB_ERR_EVENT_MISSING_IDENTITY' }),
      record(2),
      record(3, { messageId: 'm-2' }), // a client retry of m-2
      record(4, { sourceId: 'other' }),
      record(5),
      record(9), // past the range
    ];
    const replay = new Replay(
      {
        archive: memoryArchive(records),
        stages: new Map(),
        store: h.store,
        targets: new Map([['wh', h.target]]),
        pageSize: 2,
      },
      { sourceId: 'web', fromMs: T0, toMs: T0 + 9000, requestedBy: 'test' },
    );
    await replay.begin();
    const p = await replay.execute();
    expect(p).toMatchObject({ status: 'done', read: 5, rejected: 1, duplicates: 1, passed: 3, delivered: 3 });
    expect(h.delivered.flat().map((e) => e.messageId)).toEqual(['m-0', 'm-2', 'm-5']);
    expect(h.runs.map((r) => [r.status, r.read, r.delivered, r.requestedBy])).toEqual([
      ['running', 0, 0, 'test'],
      ['done', 5, 3, 'test'],
    ]);
    expect(h.runs[1]!.finishedAt).toBeInstanceOf(Date);
    expect(h.writes).toEqual([]);
  });

  it('throttles to the rate: sleeps until the records read are within it', async () => {
    const h = harness();
    const records = Array.from({ length: 50 }, (_, i) => record(i));
    let clock = 0;
    const slept: number[] = [];
    const replay = new Replay(
      {
        archive: memoryArchive(records),
        stages: new Map(),
        store: h.store,
        targets: new Map([['wh', h.target]]),
        now: () => clock,
        sleep: async (ms) => {
          slept.push(ms);
          clock += ms;
        },
      },
      { sourceId: 'web', fromMs: T0, toMs: T0 + 100_000, rate: 10 },
    );
    const p = await replay.execute();
    expect(p.delivered).toBe(50);
    // Pages of 10 (the rate), 50 records at 10/s: 5 s of sleeping in all, a second per page.
    expect(slept).toEqual([1000, 1000, 1000, 1000, 1000]);
  });

  it('marks the run failed with the error when a target cannot take the events, and refuses bad requests', async () => {
    const h = harness();
    const broken: ReplayTarget = {
      id: 'down',
      deliver: async () => {
        throw new Error('connection refused');
      },
    };
    const replay = new Replay(
      {
        archive: memoryArchive([record(0)]),
        stages: new Map(),
        store: h.store,
        targets: new Map([['down', broken]]),
      },
      { sourceId: 'web', fromMs: T0, toMs: T0 + 10_000 },
    );
    const p = await replay.execute();
    expect(p).toMatchObject({ status: 'failed', error: 'connection refused', delivered: 0 });
    expect(h.runs.at(-1)).toMatchObject({ status: 'failed', error: 'connection refused' });
    const deps = {
      archive: memoryArchive([]),
      stages: new Map(),
      store: h.store,
      targets: new Map([['wh', h.target]]),
    };
    expect(() => new Replay(deps, { sourceId: 'web', fromMs: T0, toMs: T0 })).toThrow(/before "to"/);
    expect(() => new Replay(deps, { sourceId: 'web', fromMs: T0, toMs: T0 + 1, rate: 0 })).toThrow(/rate/);
    expect(
      () => new Replay(deps, { sourceId: 'web', fromMs: T0, toMs: T0 + 1, destinations: ['x'] }),
    ).toThrow(expect.objectContaining({ code: 'TRIB_ERR_REPLAY_UNKNOWN_DESTINATION' }));
  });
});
