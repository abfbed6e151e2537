import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { afterEach, describe, expect, it } from 'vitest';
import { record } from '../../../test/conformance/event-log-conformance.js';
import { DuckDBEventLog } from '../../log/duckdb/duckdb-event-log.js';
import { embeddedDuckDBOptions, lockDownDuckDB } from './duckdb-options.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('lockDownDuckDB', () => {
  it("keeps the server's own files working (a new log segment attached later) and refuses every other file", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tributary-lockdown-'));
    dirs.push(dir);
    writeFileSync(join(dir, 'pii-salt'), 'secret\n');
    const instance = await DuckDBInstance.create(
      join(dir, 'warehouse.duckdb'),
      embeddedDuckDBOptions({ memoryLimit: '256MB', threads: 1 }),
    );
    const setup = await instance.connect();
    await setup.run(`ATTACH '${join(dir, 'log.duckdb')}' AS log`);
    setup.closeSync();
    const segmentDir = join(dir, 'log-segments');
    const log = await DuckDBEventLog.open(instance, { catalog: 'log', segmentDir, segmentBytes: 2000 });
    const errors: unknown[] = [];
    log.onMaintenanceError = (err) => errors.push(err);
    await lockDownDuckDB(instance, {
      paths: ['warehouse.duckdb', 'log.duckdb'].flatMap((f) => [join(dir, f), join(dir, `${f}.wal`)]),
      directories: [segmentDir],
    });

    // Enough appends to fill several segments: each new one is attached after the lock-down.
    for (let i = 0; i < 40; i++) await log.append([record(i)]);
    expect(errors).toEqual([]);
    expect(readdirSync(segmentDir).filter((f) => f.endsWith('.duckdb')).length).toBeGreaterThan(1);
    const c = await instance.connect();
    try {
      expect(Number((await c.runAndReadAll('SELECT count(*) FROM log.raw_events')).getRows()[0]![0])).toBe(
        40,
      );
      await c.run('CREATE TABLE t AS SELECT 1 AS x');
      await c.run('CHECKPOINT');
      // Whatever the SQL, nothing outside the allowed files opens, and nothing can be unlocked.
      await expect(c.run(`SELECT * FROM read_text('${join(dir, 'pii-salt')}')`)).rejects.toThrow(
        /Permission Error/,
      );
      await expect(c.run(`COPY t TO '${join(dir, 'out.csv')}'`)).rejects.toThrow(/Permission Error/);
      await expect(c.run(`ATTACH '${join(dir, 'other.duckdb')}' AS other`)).rejects.toThrow(
        /Permission Error/,
      );
      await expect(c.run('SET GLOBAL enable_external_access = true')).rejects.toThrow(/locked/);
      await expect(c.run('LOAD httpfs')).rejects.toThrow();
    } finally {
      c.closeSync();
      await log.close();
      instance.closeSync();
    }
  });
});
