import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { afterEach, describe, expect, it } from 'vitest';
import { record } from '../../../test/conformance/event-log-conformance.js';
import { DuckDBEventLog } from './duckdb-event-log.js';

const dirs: string[] = [];
const instances: DuckDBInstance[] = [];
afterEach(() => {
  for (const i of instances.splice(0)) i.closeSync();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

async function open(dir: string, segmentBytes?: number): Promise<DuckDBEventLog> {
  const instance = await DuckDBInstance.create(join(dir, 'main.duckdb'));
  instances.push(instance);
  const c = await instance.connect();
  await c.run(`ATTACH '${join(dir, 'log.duckdb')}' AS log`);
  c.closeSync();
  return DuckDBEventLog.open(instance, {
    segmentDir: join(dir, 'segments'),
    segmentBytes,
    pollIntervalMs: 20,
  });
}

async function closed(log: DuckDBEventLog): Promise<void> {
  await log.close();
  instances.pop()?.closeSync();
}

/** A log of several segments, closed; returns its folder and segment file names. */
async function logWithSegments(): Promise<{ dir: string; files: string[] }> {
  const dir = mkdtempSync(join(tmpdir(), 'trib-seg-'));
  dirs.push(dir);
  const log = await open(dir, 300);
  for (let i = 0; i < 6; i++) await log.append([record(i)]);
  const sub = log.consume('warehouse', async () => {});
  await sub.drained();
  await sub.stop();
  await closed(log);
  const files = readdirSync(join(dir, 'segments'))
    .filter((f) => f.endsWith('.duckdb'))
    .sort();
  expect(files.length).toBeGreaterThan(2);
  return { dir, files };
}

async function startError(dir: string): Promise<{ code?: string; message: string } | undefined> {
  try {
    await closed(await open(dir));
    return undefined;
  } catch (err) {
    instances.pop()?.closeSync();
    return err as { code?: string; message: string };
  }
}

function removeSegment(dir: string, file: string): void {
  rmSync(join(dir, 'segments', file));
  rmSync(join(dir, 'segments', `${file}.wal`), { force: true });
}

describe('DuckDBEventLog segments', () => {
  it('refuses to start when a segment file is missing, and says which and what to do', async () => {
    const { dir, files } = await logWithSegments();
    removeSegment(dir, files[1]!);
    const err = await startError(dir);
    expect(err?.code).toBe('TRIB_ERR_LOG_SEGMENT_MISSING');
    expect(err?.message).toContain(files[1]);
    expect(err?.message).toContain('DELETE FROM segments');
  });

  it('refuses to start when the active (last) segment is missing', async () => {
    const { dir, files } = await logWithSegments();
    removeSegment(dir, files[files.length - 1]!);
    expect((await startError(dir))?.code).toBe('TRIB_ERR_LOG_SEGMENT_MISSING');
  });

  it('refuses to start when every segment file is gone', async () => {
    const { dir } = await logWithSegments();
    rmSync(join(dir, 'segments'), { recursive: true });
    expect((await startError(dir))?.code).toBe('TRIB_ERR_LOG_SEGMENT_MISSING');
  });

  it('starts again once the operator removed the lost segment from the list', async () => {
    const { dir, files } = await logWithSegments();
    removeSegment(dir, files[1]!);
    const first = Number(/seg-(\d+)/.exec(files[1]!)![1]);
    const instance = await DuckDBInstance.create(join(dir, 'log.duckdb'));
    const c = await instance.connect();
    await c.run(`DELETE FROM segments WHERE first_offset IN (${first})`);
    c.closeSync();
    instance.closeSync();
    expect(await startError(dir)).toBeUndefined();
  });
});
