import { randomInt } from 'node:crypto';
import pg from 'pg';

export interface PartitionLeasesOptions {
  /** PostgreSQL holding the state; the leases are advisory locks of one of its sessions. */
  connectionString: string;
  /** Names the lock space (the stream): workspaces sharing a database do not collide. */
  namespace: string;
  partitions: number;
  /**
   * Starts the pipeline of a partition this process just took. Throwing gives the lease back;
   * it is tried again on a later round.
   */
  acquire(partition: number): Promise<void>;
  /** Stops the pipeline of a partition; the lease is given up once this resolves. */
  release(partition: number): Promise<void>;
  /** Time between two rounds (count workers, take or give back partitions). Default 1 s. */
  intervalMs?: number;
  onError?(err: unknown): void;
  /** Called after each change of the owned partitions. */
  onChange?(owned: readonly number[]): void;
}

/** A stable 31-bit key for a name (FNV-1a), the first half of an advisory lock's key. */
export function lockSpace(name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) {
    h ^= name.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) & 0x7fffffff;
}

/**
 * Which worker runs which partition, on PostgreSQL's session advisory locks. Each worker holds
 * one lock naming itself (so live workers can be counted) and one per partition it runs, all
 * on one connection of its own. A worker that dies, even by kill -9, loses its connection and
 * with it every lock at once, so the others take its partitions on their next round without
 * waiting for a lease to expire. Each round a worker aims at its fair share,
 * ceil(partitions / live workers): it gives back partitions above it (after stopping their
 * pipelines) and tries to lock free ones below it.
 *
 * A lock only says who should run a partition. What makes a takeover safe is that every stage
 * stores its offset with its results in one transaction that checks the offset it started
 * from: a worker that lost its lock but still finishes a batch is refused, never applied twice.
 */
export class PartitionLeases {
  private client: pg.Client | undefined;
  private readonly owned = new Set<number>();
  private readonly workerSpace: number;
  private readonly partitionSpace: number;
  private workerKey = 0;
  private timer: NodeJS.Timeout | undefined;
  private round: Promise<void> = Promise.resolve();
  /** Pipelines being stopped after the lock connection was lost. */
  private releasing: Promise<void> = Promise.resolve();
  private stopped = false;
  /** Where this worker starts looking for free partitions, so workers do not all race for 0. */
  private readonly offset: number;

  constructor(private readonly opts: PartitionLeasesOptions) {
    this.workerSpace = lockSpace(`${opts.namespace}:worker`);
    this.partitionSpace = lockSpace(`${opts.namespace}:partition`);
    this.offset = randomInt(opts.partitions);
  }

  /** Connects, registers this worker and runs the first round. */
  async start(): Promise<void> {
    await this.runRound();
    this.schedule();
  }

  /** The partitions this process runs now, in order. */
  ownedPartitions(): number[] {
    return [...this.owned].sort((a, b) => a - b);
  }

  /** Stops every pipeline, gives back the leases and closes the connection. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.round;
    await this.releasing;
    for (const p of this.ownedPartitions()) await this.giveBack(p);
    await this.client?.end().catch(() => undefined);
    this.client = undefined;
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.round = this.runRound().finally(() => this.schedule());
    }, this.opts.intervalMs ?? 1_000);
  }

  private async connect(): Promise<pg.Client> {
    if (this.client) return this.client;
    const client = new pg.Client({
      connectionString: this.opts.connectionString,
      application_name: 'tributary-leases',
      keepAlive: true,
    });
    // A lost connection has lost every lock with it: stop the pipelines at once.
    client.on('error', (err) => {
      this.opts.onError?.(err);
      this.lost(client);
    });
    client.on('end', () => this.lost(client));
    await client.connect();
    for (;;) {
      const key = randomInt(2 ** 31 - 1);
      const r = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1, $2) AS ok', [
        this.workerSpace,
        key,
      ]);
      if (r.rows[0]!.ok) {
        this.workerKey = key;
        break;
      }
    }
    this.client = client;
    return client;
  }

  private lost(client: pg.Client): void {
    if (this.client !== client) return;
    this.client = undefined;
    const gone = this.ownedPartitions();
    this.owned.clear();
    // The next round waits for these pipelines to stop before it takes any partition again,
    // so one process never runs two pipelines of a partition at once.
    const before = this.releasing;
    this.releasing = (async () => {
      await before;
      for (const p of gone) await this.opts.release(p).catch((err) => this.opts.onError?.(err));
      if (gone.length > 0) this.opts.onChange?.(this.ownedPartitions());
    })();
  }

  private async runRound(): Promise<void> {
    if (this.stopped) return;
    await this.releasing;
    try {
      const client = await this.connect();
      const live = await client.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_locks
         WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND classid = $1::int::oid
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
        [this.workerSpace],
      );
      const workers = Math.max(1, live.rows[0]!.n);
      const share = Math.ceil(this.opts.partitions / workers);
      let changed = false;
      const mine = this.ownedPartitions();
      while (mine.length > share && !this.stopped) {
        await this.giveBack(mine.pop()!);
        changed = true;
      }
      for (let i = 0; i < this.opts.partitions && this.owned.size < share && !this.stopped; i++) {
        const p = (this.offset + i) % this.opts.partitions;
        if (this.owned.has(p)) continue;
        const r = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1, $2) AS ok', [
          this.partitionSpace,
          p,
        ]);
        if (!r.rows[0]!.ok) continue;
        try {
          await this.opts.acquire(p);
          if (this.client !== client) {
            // The connection, and the lock with it, went while the pipeline started.
            await this.opts.release(p).catch((err) => this.opts.onError?.(err));
            break;
          }
          this.owned.add(p);
          changed = true;
        } catch (err) {
          this.opts.onError?.(err);
          await this.unlock(p);
        }
      }
      if (changed) this.opts.onChange?.(this.ownedPartitions());
    } catch (err) {
      this.opts.onError?.(err);
    }
  }

  private async giveBack(p: number): Promise<void> {
    this.owned.delete(p);
    await this.opts.release(p).catch((err) => this.opts.onError?.(err));
    await this.unlock(p);
  }

  private async unlock(p: number): Promise<void> {
    await this.client
      ?.query('SELECT pg_advisory_unlock($1, $2)', [this.partitionSpace, p])
      .catch((err) => this.opts.onError?.(err));
  }

  /** The key of this worker's own lock (for tests and diagnostics). */
  workerLockKey(): number {
    return this.workerKey;
  }
}
