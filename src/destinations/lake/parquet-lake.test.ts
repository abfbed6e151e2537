import { existsSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { afterEach, describe, expect, it } from 'vitest';
import { storedEvent } from '../../../test/conformance/warehouse-conformance.js';
import type { OffsetScope } from '../destination.js';
import { ParquetLake } from './parquet-lake.js';

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

async function lake() {
  const root = mkdtempSync(join(tmpdir(), 'trib-lake-'));
  const instance = await DuckDBInstance.create(':memory:');
  const conn = await instance.connect();
  const lakes: ParquetLake[] = [];
  const open = (scope?: OffsetScope) => {
    const l = new ParquetLake({ name: 'lake', instance, root, scope });
    lakes.push(l);
    return l;
  };
  cleanups.push(() => {
    for (const l of lakes) void l.close();
    conn.closeSync();
    instance.closeSync();
    rmSync(root, { recursive: true, force: true });
  });
  /** What any reader of the committed partitions sees. */
  const read = async (): Promise<string[][]> =>
    (
      await conn.runAndReadAll(
        `SELECT id, source, event, date, user_id, properties->>'$.n' FROM read_parquet(
           '${root}/source=*/event=*/date=*/*.parquet', hive_partitioning = true) ORDER BY id`,
      )
    )
      .getRows()
      .map((r) => r.map((v) => String(v)));
  return { root, open, read };
}

const track = (i: number, event = 'Order Completed') =>
  storedEvent(i, { type: 'track', event, userId: `u${i}`, properties: { n: i } });

describe('ParquetLake', () => {
  it('writes hive-partitioned Parquet files and a manifest per load', async () => {
    const { root, open, read } = await lake();
    const l = open();
    expect(await l.storedOffset()).toBe(0);
    await l.load([track(0), track(1, 'Signed Up'), storedEvent(2, { type: 'identify', userId: 'u2' })], 3);
    await l.load([track(3)], 4);
    expect(await read()).toEqual([
      ['m-0', 'web', 'order_completed', '2026-11-20', 'u0', '0'],
      ['m-1', 'web', 'signed_up', '2026-11-20', 'u1', '1'],
      ['m-2', 'web', 'identifies', '2026-11-20', 'u2', 'null'],
      ['m-3', 'web', 'order_completed', '2026-11-20', 'u3', '3'],
    ]);
    const manifests = l.manifests();
    expect(manifests.map((m) => [m.fromOffset, m.nextOffset, m.rows])).toEqual([
      [0, 3, 3],
      [3, 4, 1],
    ]);
    for (const m of manifests) for (const f of m.files) expect(existsSync(join(root, f))).toBe(true);
    expect(manifests[1]!.files).toEqual([
      'source=web/event=order_completed/date=2026-11-20/part-4-0.parquet',
    ]);
    expect(await open().storedOffset()).toBe(4);
  });

  it('after a crash before the manifest, drops the written files; after one past it, moves them into place', async () => {
    const { root, open, read } = await lake();
    const l = open();
    await l.load([track(0)], 1);
    // Crash between writing the files and the commit: files staged, no manifest.
    await l.load([track(1)], 2);
    const manifest = join(root, '_manifest', `${'2'.padStart(20, '0')}.json`);
    rmSync(manifest);
    const partition = join(root, 'source=web/event=order_completed/date=2026-11-20');
    const staged = join(root, '_staging', '2', 'source=web/event=order_completed/date=2026-11-20');
    mkdirSync(staged, { recursive: true });
    renameSync(join(partition, 'part-2-0.parquet'), join(staged, 'part-2-0.parquet'));

    const restarted = open();
    expect(await restarted.storedOffset()).toBe(1);
    expect(existsSync(join(root, '_staging', '2'))).toBe(false);
    expect((await read()).map((r) => r[0])).toEqual(['m-0']);
    // The feed redelivers from offset 1; this time the process dies after the commit,
    // before the files were moved out of staging.
    await restarted.load([track(1)], 2);
    mkdirSync(staged, { recursive: true });
    renameSync(join(partition, 'part-2-0.parquet'), join(staged, 'part-2-0.parquet'));
    expect((await read()).map((r) => r[0])).toEqual(['m-0']);

    const again = open();
    expect(await again.storedOffset()).toBe(2);
    expect((await read()).map((r) => r[0])).toEqual(['m-0', 'm-1']);
    expect(readdirSync(join(root, '_staging'))).toEqual([]);
  });

  it('leaves out an event DuckDB cannot write, reports it before the commit, and writes the rest', async () => {
    const { root, open, read } = await lake();
    const l = open();
    // A lone surrogate: JavaScript writes it as JSON, DuckDB's JSON parser refuses it.
    const bad = storedEvent(1, { type: 'track', event: 'X', userId: 'u1', properties: { s: '\ud800' } });
    const reported: string[] = [];
    const result = await l.load([track(0), bad, track(2)], 3, {
      onFailed: async (failed) => {
        reported.push(...failed.map((f) => f.event.messageId));
        expect(l.manifests()).toEqual([]); // nothing committed yet
      },
    });
    expect(result.status === 'ok' && result.failed.map((f) => [f.event.messageId, f.code])).toEqual([
      ['m-1', 'TRIB_ERR_DEST_RECORD_REFUSED'],
    ]);
    expect(reported).toEqual(['m-1']);
    expect((await read()).map((r) => r[0])).toEqual(['m-0', 'm-2']);
    expect(l.manifests().map((m) => [m.nextOffset, m.rows])).toEqual([[3, 2]]);
    expect(readdirSync(join(root, '_staging'))).toEqual([]); // no probe left behind
  });

  it("refuses to start on the files of another log, and takes an older version's as its own", async () => {
    const { open } = await lake();
    const older = open(); // manifests without a scope, as before
    await older.load([track(0)], 1);
    const mine = open({ workspace: 'a', logId: 'log-1' });
    expect(await mine.storedOffset()).toBe(1);
    await mine.load([track(1)], 2);
    expect(mine.manifests().map((m) => m.logId)).toEqual([undefined, 'log-1']);
    for (const scope of [
      { workspace: 'a', logId: 'log-2' },
      { workspace: 'b', logId: 'log-1' },
    ]) {
      await expect(open(scope).storedOffset()).rejects.toMatchObject({ code: 'TRIB_ERR_DEST_FOREIGN_LAKE' });
    }
    expect(await open({ workspace: 'a', logId: 'log-1' }).storedOffset()).toBe(2);
  });
});
