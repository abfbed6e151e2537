import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { PartitionLeases } from '../src/server/partition-leases.js';
import { PG_ADMIN, pgUnreachable } from './pg.js';

const unreachable = await pgUnreachable();
const url = `postgres://${PG_ADMIN.user}@${PG_ADMIN.host}:${PG_ADMIN.port}/${PG_ADMIN.database}`;

/** One worker's view: the partitions whose pipelines run, as the callbacks saw them. */
function worker(namespace: string, partitions: number) {
  const running = new Set<number>();
  const events: string[] = [];
  const leases = new PartitionLeases({
    connectionString: url,
    namespace,
    partitions,
    intervalMs: 50,
    async acquire(p) {
      if (running.has(p)) throw new Error(`partition ${p} started twice`);
      running.add(p);
      events.push(`+${p}`);
    },
    async release(p) {
      running.delete(p);
      events.push(`-${p}`);
    },
  });
  return { leases, running, events };
}

async function until(check: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe.skipIf(unreachable !== undefined)('partition leases on PostgreSQL advisory locks', () => {
  const started: PartitionLeases[] = [];
  afterEach(async () => {
    for (const l of started.splice(0)) await l.stop();
  });

  it('shares the partitions fairly, never one partition in two workers, and takes over a dead worker at once', async () => {
    const ns = `test-${randomUUID()}`;
    const workers = [worker(ns, 6), worker(ns, 6), worker(ns, 6)];
    const disjointAndComplete = (list: typeof workers) => {
      const all = list.flatMap((w) => [...w.running]);
      return new Set(all).size === all.length && all.length === 6;
    };
    // The first alone takes everything; the others join and it gives partitions back.
    started.push(workers[0]!.leases);
    await workers[0]!.leases.start();
    expect(workers[0]!.leases.ownedPartitions()).toEqual([0, 1, 2, 3, 4, 5]);
    for (const w of workers.slice(1)) {
      started.push(w.leases);
      await w.leases.start();
    }
    await until(() => workers.every((w) => w.running.size === 2), 'two partitions each');
    expect(disjointAndComplete(workers)).toBe(true);

    // A worker whose connection dies (as under kill -9) loses its locks; its pipelines stop
    // and the others take its partitions.
    const victim = workers[2]!;
    const admin = new pg.Client(url);
    await admin.connect();
    try {
      const key = victim.leases.workerLockKey();
      const r = await admin.query<{ pid: number }>(
        `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = $1::int::oid AND objsubid = 2`,
        [key],
      );
      expect(r.rows).toHaveLength(1);
      await admin.query('SELECT pg_terminate_backend($1)', [r.rows[0]!.pid]);
    } finally {
      await admin.end();
    }
    await until(() => victim.running.size === 0, 'the victim to stop its pipelines');
    const survivors = workers.slice(0, 2);
    await until(
      () => survivors.every((w) => w.running.size === 3) || victim.running.size > 0,
      'the survivors to take over (or the victim to come back)',
    );
    // The victim reconnects on its next round and rejoins: the share settles at two again.
    await until(() => workers.every((w) => w.running.size === 2), 'the victim to rejoin');
    expect(disjointAndComplete(workers)).toBe(true);
  });

  it('gives every partition back on stop', async () => {
    const ns = `test-${randomUUID()}`;
    const a = worker(ns, 4);
    const b = worker(ns, 4);
    started.push(b.leases);
    await a.leases.start();
    await b.leases.start();
    await a.leases.stop();
    expect(a.running.size).toBe(0);
    await until(() => b.running.size === 4, 'the other worker to take all four');
  });
});
