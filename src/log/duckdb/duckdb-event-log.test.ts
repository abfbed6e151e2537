import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { describe, expect, it } from 'vitest';
import { eventLogConformance, record } from '../../../test/conformance/event-log-conformance.js';
import type { EventLog } from '../event-log.js';
import { DuckDBEventLog } from './duckdb-event-log.js';

async function openAt(
  dir: string,
  tailRecords?: number,
  segmentBytes?: number,
): Promise<{ log: DuckDBEventLog; instance: DuckDBInstance }> {
  const instance = await DuckDBInstance.create(join(dir, 'main.duckdb'));
  const c = await instance.connect();
  await c.run(`ATTACH '${join(dir, 'log.duckdb')}' AS log`);
  c.closeSync();
  return {
    log: await DuckDBEventLog.open(instance, {
      pollIntervalMs: 20,
      tailRecords,
      segmentDir: join(dir, 'segments'),
      segmentBytes,
    }),
    instance,
  };
}

// Once with the in-memory tail serving reads; once reading every record back from DuckDB,
// with segments so small that the log moves to a new one after nearly every commit.
for (const [tailRecords, segmentBytes] of [
  [undefined, undefined],
  [0, 300],
] as const) {
  eventLogConformance(tailRecords === 0 ? 'duckdb (tiny segments, reads from the tables)' : 'duckdb', () => {
    const dir = mkdtempSync(join(tmpdir(), 'trib-log-'));
    const instances = new Map<EventLog, DuckDBInstance>();
    return {
      contiguousOffsets: true,
      async open() {
        const { log, instance } = await openAt(dir, tailRecords, segmentBytes);
        instances.set(log, instance);
        return log;
      },
      async reopen(log) {
        await log.close();
        instances.get(log)?.closeSync();
        instances.delete(log);
        return this.open();
      },
      async cleanup() {
        for (const [log, instance] of instances) {
          await log.close().catch(() => undefined);
          instance.closeSync();
        }
        rmSync(dir, { recursive: true, force: true });
      },
    };
  });
}

describe('DuckDBEventLog segments', () => {
  it('moves to new segment files as they fill, and keeps every record readable across a restart', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trib-log-'));
    let { log, instance } = await openAt(dir, 0, 2000);
    try {
      for (let i = 0; i < 30; i++) await log.append([record(i * 2), record(i * 2 + 1)]);
      const ranges = log.segmentRanges();
      expect(ranges.length).toBeGreaterThan(3);
      for (let i = 1; i < ranges.length; i++) expect(ranges[i]!.first).toBe(ranges[i - 1]!.end);
      expect(ranges[ranges.length - 1]!.end).toBe(60);
      await log.close();
      instance.closeSync();
      ({ log, instance } = await openAt(dir, 0, 2000));
      expect(log.segmentRanges()).toEqual(ranges);
      expect((await log.read(0, 100)).map((d) => d.messageId)).toEqual(
        Array.from({ length: 60 }, (_, i) => `m-${i}`),
      );
      const c = await instance.connect();
      const n = await c.runAndReadAll('SELECT count(*)::INT FROM log.raw_events');
      expect(n.getRows()[0]![0]).toBe(60);
      c.closeSync();
      expect((await log.append([record(60)])).firstOffset).toBe(60);
    } finally {
      await log.close();
      instance.closeSync();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('DuckDBEventLog failed commits', () => {
  it('rejects the appends of a failed commit, leaves a hole that readers skip, and never reuses its offsets', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trib-log-'));
    let { log, instance } = await openAt(dir, 0);
    try {
      await log.append([record(0), record(1)]);
      // A receivedAt that is not a number makes the envelope invalid JSON: DuckDB refuses the
      // whole commit, as it would on a full disk.
      await expect(log.append([{ ...record(2), receivedAt: Number.NaN }])).rejects.toThrow();
      const after = await log.append([record(3)]);
      expect(after.firstOffset).toBe(3);
      const seen: string[] = [];
      const sub = log.consume('g', async (batch) => {
        seen.push(...batch.map((d) => d.messageId));
      });
      await sub.drained();
      await sub.stop();
      expect(seen).toEqual(['m-0', 'm-1', 'm-3']);
      // A failed commit at the very end, skipped by the consumer, then a restart.
      await expect(log.append([{ ...record(4), receivedAt: Number.NaN }])).rejects.toThrow();
      const tailSub = log.consume('g', async () => {});
      await tailSub.drained();
      await tailSub.stop();
      expect(await log.committedOffset('g')).toBe(4);
      await log.close();
      instance.closeSync();
      ({ log, instance } = await openAt(dir, 0));
      // Offset 4 was never stored and no consumer has read past it, so it is the next one;
      // offsets a consumer has passed are never handed out again.
      expect((await log.append([record(5)])).firstOffset).toBe(4);
      const again = log.consume('g', async () => {});
      await again.drained();
      await again.stop();
      expect(await log.committedOffset('g')).toBe(5);
    } finally {
      await log.close();
      instance.closeSync();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('DuckDBEventLog raw archive', () => {
  it('shows one queryable row per record in log.raw_events', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trib-log-'));
    const { log, instance } = await openAt(dir);
    try {
      const before = Date.now();
      await log.append([record(0), record(1, 'app')]);
      await log.append([
        { ...record(2), status: 'rejected', code: 'TRIB_ERR_EVENT_NOT_OBJECT', reason: 'r' },
      ]);
      const after = Date.now();
      const c = await instance.connect();
      const times = await c.runAndReadAll('SELECT epoch_ms(committed_at) FROM log.raw_events');
      for (const [at] of times.getRows()) {
        expect(Number(at)).toBeGreaterThanOrEqual(before);
        expect(Number(at)).toBeLessThanOrEqual(after);
      }
      const r = await c.runAndReadAll(
        `SELECT log_offset, source_id, message_id, status, code, event->>'$.userId' AS user_id
         FROM log.raw_events ORDER BY log_offset`,
      );
      expect(r.getRowObjectsJson()).toEqual([
        {
          log_offset: '0',
          source_id: 'web',
          message_id: 'm-0',
          status: 'accepted',
          code: null,
          user_id: 'u0',
        },
        {
          log_offset: '1',
          source_id: 'app',
          message_id: 'm-1',
          status: 'accepted',
          code: null,
          user_id: 'u1',
        },
        {
          log_offset: '2',
          source_id: 'web',
          message_id: 'm-2',
          status: 'rejected',
          code: 'TRIB_ERR_EVENT_NOT_OBJECT',
          user_id: 'u2',
        },
      ]);
      c.closeSync();
    } finally {
      await log.close();
      instance.closeSync();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('group-commits: many concurrent appends share few rows', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trib-log-'));
    const { log, instance } = await openAt(dir);
    try {
      await Promise.all(Array.from({ length: 200 }, (_, i) => log.append([record(i)])));
      const c = await instance.connect();
      const r = await c.runAndReadAll(
        'SELECT count(DISTINCT committed_at)::INT AS rows, count(*)::INT AS records FROM log.raw_events',
      );
      const [{ rows, records }] = r.getRowObjects() as [{ rows: number; records: number }];
      expect(records).toBe(200);
      // The first append commits alone and the other 199, arriving during it, share the next
      // commit (2 commit times here; commits within one millisecond count once, which only
      // lowers this). A commit per append would take tens of milliseconds and leave far more.
      expect(rows).toBeLessThanOrEqual(5);
      c.closeSync();
    } finally {
      await log.close();
      instance.closeSync();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
