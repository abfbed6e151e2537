import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type DuckDBConnection, DuckDBInstance } from '@duckdb/node-api';
import { describe, expect, it } from 'vitest';
import { DuckDBEventLog } from '../../log/duckdb/duckdb-event-log.js';
import type { RawEvent } from '../../log/event-log.js';
import { toEventRow } from '../../pipeline/warehouse-loader.js';
import { DuckDBStore } from '../../store/duckdb/duckdb-store.js';
import { embeddedDuckDBOptions } from './duckdb-options.js';
import { largeTextCompression, storageVersion, zstdStorable } from './duckdb-storage.js';

/** Events with text DuckDB must give back exactly: escapes, control characters, non-ASCII. */
function event(i: number): RawEvent {
  const json = JSON.stringify({
    type: 'track',
    event: i % 2 === 0 ? 'Order Completed' : 'Produkt angesehen \u00e4\u00f6\u00fc \u{1F600}',
    userId: `u${i % 50}`,
    messageId: `m-${i}`,
    timestamp: '2026-01-01T00:00:00.000Z',
    receivedAt: '2026-01-01T00:00:01.000Z',
    properties: { note: `line\nbreak\t"quoted" \u001e\u0015 ${i}`, sku: `SKU-${i % 17}`, price: i / 4 },
  });
  return {
    sourceId: 'web',
    messageId: `m-${i}`,
    receivedAt: 1_790_000_000_000 + i,
    status: 'accepted',
    json,
  };
}

async function compressionOf(conn: DuckDBConnection, table: string, column: string): Promise<string[]> {
  const r = await conn.runAndReadAll(
    `SELECT DISTINCT compression FROM pragma_storage_info('${table}')
     WHERE column_name = '${column}' AND segment_type <> 'VALIDITY' ORDER BY 1`,
  );
  return r.getRows().map((row) => String(row[0]));
}

async function open(dir: string, serverOptions: boolean, segmentBytes = 64 * 1024 * 1024) {
  const instance = await DuckDBInstance.create(
    join(dir, 'warehouse.duckdb'),
    serverOptions ? embeddedDuckDBOptions({ memoryLimit: '1GB' }) : {},
  );
  const conn = await instance.connect();
  await conn.run(`ATTACH IF NOT EXISTS '${join(dir, 'log.duckdb')}' AS log`);
  const log = await DuckDBEventLog.open(instance, {
    segmentDir: join(dir, 'segments'),
    tailRecords: 0,
    segmentBytes,
  });
  const warehouse = await DuckDBStore.open(instance);
  return { instance, conn, log, warehouse };
}

async function loadAll(
  log: DuckDBEventLog,
  warehouse: DuckDBStore,
  from: number,
  records: RawEvent[],
): Promise<void> {
  const { firstOffset } = await log.append(records);
  await warehouse.write({
    events: records.map((r, i) => toEventRow({ ...r, offset: firstOffset + i })),
    failed: [],
    consumer: 'warehouse',
    nextOffset: firstOffset + records.length,
    fromOffset: from,
  });
}

describe('storage format', () => {
  it('knows which formats store strings with zstd', () => {
    expect(zstdStorable('v1.2.0+')).toBe(true);
    expect(zstdStorable('v1.5.0+')).toBe(true);
    expect(zstdStorable('v2.0.0+')).toBe(true);
    expect(zstdStorable('v1.0.0+')).toBe(false);
    expect(zstdStorable('v1.1.3')).toBe(false);
    expect(zstdStorable(undefined)).toBe(false);
    expect(zstdStorable('')).toBe(false);
  });

  it("stores the server's new log segments and warehouse payloads with zstd, and gives them back exactly", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trib-storage-'));
    const { instance, conn, log, warehouse } = await open(dir, true);
    try {
      expect(await storageVersion(conn, 'warehouse')).toBe('v1.2.0+');
      const records = Array.from({ length: 3000 }, (_, i) => event(i));
      await loadAll(log, warehouse, 0, records);
      // Checkpointed with nothing else writing (the log checkpoints in the background).
      await log.close();
      await warehouse.close();
      await conn.run('CHECKPOINT log_seg_0');
      await conn.run('CHECKPOINT warehouse');
      expect(await compressionOf(conn, 'log_seg_0.records', 'event')).toEqual(['ZSTD']);
      expect(await compressionOf(conn, 'events', 'payload')).toEqual(['ZSTD']);

      // Read back from the tables (no in-memory tail), after a restart.
      conn.closeSync();
      instance.closeSync();
      const again = await open(dir, true);
      try {
        const read = await again.log.read(0, 5000);
        expect(read.map((d) => d.json)).toEqual(records.map((r) => r.json));
        const rows = await again.warehouse.query(
          'SELECT CAST(payload AS VARCHAR) AS p FROM events ORDER BY log_offset',
        );
        expect(rows.rows.map((r) => r.p)).toEqual(records.map((r) => r.json));
      } finally {
        await again.log.close();
        await again.warehouse.close();
        again.conn.closeSync();
        again.instance.closeSync();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('keeps the files of an older format as they are, and writes new segments in the new one', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trib-storage-'));
    try {
      const old = await open(dir, false, 100_000);
      const first = Array.from({ length: 1000 }, (_, i) => event(i));
      await loadAll(old.log, old.warehouse, 0, first);
      expect(await storageVersion(old.conn, 'warehouse')).toBe('v1.0.0+');
      await old.log.close();
      await old.warehouse.close();
      old.conn.closeSync();
      old.instance.closeSync();

      // Opened by the server's options: the old files stay in their format, and nothing made
      // in them is forced to zstd, which DuckDB would store uncompressed in such a file.
      const now = await open(dir, true, 100_000);
      let closed = false;
      try {
        expect(await storageVersion(now.conn, 'warehouse')).toBe('v1.0.0+');
        expect(await storageVersion(now.conn, 'log_seg_0')).toBe('v1.0.0+');
        const lastOld = now.log.segmentRanges().at(-1)!.first;
        const more = Array.from({ length: 1000 }, (_, i) => event(1000 + i));
        await loadAll(now.log, now.warehouse, 1000, more);
        // A table made in such a file gets the fallback, not zstd.
        expect(await largeTextCompression(now.conn, 'warehouse', 'FALLBACK')).toBe('FALLBACK');
        expect(await largeTextCompression(now.conn, 'log_seg_0', 'FALLBACK')).toBe('FALLBACK');

        // The segments made after the old ones are new files, in the new format. A full
        // segment is changed for a new one after the append that filled it resolves: wait
        // for that change.
        for (let i = 0; i < 500 && now.log.segmentRanges().at(-1)!.first === lastOld; i++)
          await new Promise((r) => setTimeout(r, 20));
        const ranges = now.log.segmentRanges();
        expect(ranges.length).toBeGreaterThan(1);
        const newest = `log_seg_${ranges[ranges.length - 1]!.first}`;
        expect(await storageVersion(now.conn, newest)).toBe('v1.2.0+');
        expect(await largeTextCompression(now.conn, newest, 'FALLBACK')).toBe('USING COMPRESSION zstd');
        const all = await now.log.read(0, 5000);
        expect(all.map((d) => d.json)).toEqual([...first, ...more].map((r) => r.json));

        // The old segment keeps the FSST its table was made with.
        closed = true;
        await now.log.close();
        await now.warehouse.close();
        await now.conn.run('CHECKPOINT log_seg_0');
        expect(await compressionOf(now.conn, 'log_seg_0.records', 'event')).toEqual(['FSST']);
      } finally {
        if (!closed) {
          await now.log.close();
          await now.warehouse.close();
        }
        now.conn.closeSync();
        now.instance.closeSync();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
