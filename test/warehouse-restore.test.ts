import { copyFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { sendBatch, startTestServer, type TestServer } from './helpers.js';

/**
 * The log is the source of truth: a warehouse restored from an older copy, or lost, is
 * filled again from it when the server starts, every acknowledged event exactly once.
 */
const dataDir = mkdtempSync(join(tmpdir(), 'tributary-restore-'));
const warehouseFile = join(dataDir, 'warehouse.duckdb');
afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

async function send(s: TestServer, from: number, n: number): Promise<void> {
  const batch = Array.from({ length: n }, (_, i) => ({
    type: 'track',
    event: 'Order Completed',
    userId: `u${from + i}`,
    messageId: `m-${from + i}`,
  }));
  await sendBatch(s, batch);
}

/** messageId → how many rows of `events` hold it. */
async function stored(s: TestServer): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  for (const e of await s.warehouse.readEvents(0, Number.MAX_SAFE_INTEGER, 1_000_000)) {
    counts.set(e.messageId, (counts.get(e.messageId) ?? 0) + 1);
  }
  return counts;
}

const ids = (n: number) => Array.from({ length: n }, (_, i) => `m-${i}`).sort();

async function run(work: (s: TestServer) => Promise<void>): Promise<void> {
  const s = await startTestServer({ dataDir });
  try {
    await s.settle();
    await work(s);
  } finally {
    await s.stop();
  }
}

function removeWarehouse(): void {
  rmSync(warehouseFile, { force: true });
  rmSync(`${warehouseFile}.wal`, { force: true });
}

describe('warehouse restored or lost', () => {
  it('reloads from the log every acknowledged event past the restored copy, exactly once', async () => {
    await run(async (s) => {
      await send(s, 0, 20);
      await s.settle();
    });
    const backup = join(dataDir, 'backup.duckdb');
    copyFileSync(warehouseFile, backup);
    expect(existsSync(`${warehouseFile}.wal`)).toBe(false);
    await run(async (s) => {
      await send(s, 20, 20);
      await s.settle();
      expect((await stored(s)).size).toBe(40);
    });

    removeWarehouse();
    copyFileSync(backup, warehouseFile);
    await run(async (s) => {
      const counts = await stored(s);
      expect([...counts.keys()].sort()).toEqual(ids(40));
      expect([...counts.values()].every((n) => n === 1)).toBe(true);
    });
  });

  it('refills a lost warehouse from the log, then loads what comes next', async () => {
    removeWarehouse();
    await run(async (s) => {
      let counts = await stored(s);
      expect([...counts.keys()].sort()).toEqual(ids(40));
      expect([...counts.values()].every((n) => n === 1)).toBe(true);
      await send(s, 40, 5);
      await s.settle();
      counts = await stored(s);
      expect([...counts.keys()].sort()).toEqual(ids(45));
      expect([...counts.values()].every((n) => n === 1)).toBe(true);
    });
  });

  it('refuses to start when the log is behind the warehouse (the log lost), rather than skip new events', async () => {
    rmSync(join(dataDir, 'log.duckdb'), { force: true });
    rmSync(join(dataDir, 'log.duckdb.wal'), { force: true });
    rmSync(join(dataDir, 'log-segments'), { recursive: true, force: true });
    await expect(startTestServer({ dataDir })).rejects.toMatchObject({
      code: 'TRIB_ERR_LOG_BEHIND_WAREHOUSE',
    });
  });
});
