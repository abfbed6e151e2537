/**
 * Keeps the checkpoints of a DuckDB file apart from the write transactions on it that flush
 * appenders. An appender's flush is synchronous in @duckdb/node-api, and inside an open
 * transaction it waits for a checkpoint of the same file to finish: the event loop, and every
 * request, waited with it (flushes of 120-160 ms behind checkpoints of 240-350 ms in a
 * server under load, docs/architecture.md). Here the waiting is asynchronous: transactions
 * run together; a checkpoint waits for the open ones to end, and transactions that start
 * meanwhile wait for the checkpoint.
 *
 * A checkpoint must not be asked for inside a transaction of the same gate: it would wait for
 * itself.
 */
export class CheckpointGate {
  private open = 0;
  private readonly whenIdle: (() => void)[] = [];
  /** The checkpoint waiting or running; settles (never rejects) once it has. */
  private pending: Promise<void> | undefined;

  /** Runs `job` (a whole transaction) once no checkpoint is waiting or running. */
  async transaction<T>(job: () => Promise<T>): Promise<T> {
    while (this.pending) await this.pending;
    this.open++;
    try {
      return await job();
    } finally {
      this.open--;
      if (this.open === 0) for (const wake of this.whenIdle.splice(0)) wake();
    }
  }

  /** Runs `job` (the checkpoint) once the open transactions have ended, one checkpoint at a time. */
  async checkpoint<T>(job: () => Promise<T>): Promise<T> {
    while (this.pending) await this.pending;
    const run = (async () => {
      if (this.open > 0) await new Promise<void>((resolve) => this.whenIdle.push(resolve));
      return job();
    })();
    const done = () => {
      if (this.pending === settled) this.pending = undefined;
    };
    const settled: Promise<void> = run.then(done, done);
    this.pending = settled;
    return run;
  }

  /** Transactions open now (for tests and metrics). */
  get openTransactions(): number {
    return this.open;
  }
}
