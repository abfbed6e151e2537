import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DuckDBInstance } from '@duckdb/node-api';
import { afterAll, describe, expect, it } from 'vitest';
import { ModelService } from '../../src/destinations/reverse-etl/model-service.js';
import { ModelConfig } from '../../src/destinations/reverse-etl/spec.js';
import { DuckDBModelStore } from '../../src/store/duckdb/duckdb-model-store.js';
import { RowReceiver } from './receiver.js';

/** A model's run killed with SIGKILL mid-send: the next run sends what was not recorded, and every row arrives. */

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const ROWS = 2000;

describe('reverse ETL through kill -9', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tributary-retl-crash-'));
  const file = join(dir, 'warehouse.duckdb');
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('a run killed mid-send leaves the rows it had not recorded to the next run', async () => {
    const setup = await DuckDBInstance.create(file);
    const c = await setup.connect();
    await c.run(
      `CREATE TABLE customers AS SELECT i AS id, 'u' || i || '@example.com' AS email FROM range(${ROWS}) t(i)`,
    );
    c.closeSync();
    setup.closeSync();

    const rx = await RowReceiver.start();
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', join(ROOT, 'test/reverse-etl/crash-child.ts'), file, rx.url],
      { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let out = '';
    child.stdout!.on('data', (d) => (out += String(d)));
    // The 15th batch: 14 taken (700 rows), 7 commits of 100 rows due; killed before it is answered.
    rx.onRequest = (n) => {
      if (n === 15) child.kill('SIGKILL');
    };
    const [code, signal] = (await once(child, 'exit')) as [number | null, string | null];
    expect(signal).toBe('SIGKILL');
    expect(code).toBe(null);
    expect(out).not.toContain('finished');
    rx.onRequest = () => {};
    const takenBefore = new Set(rx.received.map((d) => d.orderKey)).size;
    expect(takenBefore).toBeGreaterThanOrEqual(700);
    expect(takenBefore).toBeLessThan(ROWS);

    const instance = await DuckDBInstance.create(file);
    const store = await DuckDBModelStore.open(instance);
    try {
      const model = ModelConfig.parse({
        id: 'crm-sync',
        sql: 'SELECT id, email FROM customers',
        primaryKey: 'id',
        destination: 'crm',
        batchSize: 50,
      });
      const service = new ModelService([model], { store, openDestination: async () => rx.destination() });
      await service.start();
      const [dead] = await store.runs('crm-sync', 1);
      expect(dead).toMatchObject({ status: 'failed', error: expect.stringContaining('process stopped') });
      rx.received.length = 0;
      const r = await service.run('crm-sync', 'test');
      // Only what the killed run had not recorded: at most its last uncommitted rows are sent twice.
      expect(r).toMatchObject({ status: 'succeeded', failed: 0 });
      expect(r.added).toBeLessThanOrEqual(ROWS - 700);
      expect(r.added).toBeGreaterThanOrEqual(ROWS - takenBefore);
      expect(rx.table.size).toBe(ROWS);
      rx.received.length = 0;
      expect(await service.run('crm-sync', 'test')).toMatchObject({
        status: 'succeeded',
        added: 0,
        changed: 0,
      });
      expect(rx.received).toEqual([]);
      await service.stop();
    } finally {
      await store.close();
      instance.closeSync();
      await rx.close();
    }
  }, 60_000);
});
