/**
 * Tells the writers of a DuckDB file when a checkpoint of it is running, so that none flushes
 * an appender meanwhile. An appender's flush is synchronous in @duckdb/node-api, and inside an
 * open transaction it waits for a checkpoint of the same file to finish: the event loop, and
 * every request, waited with it (flushes of up to 1,078 ms behind checkpoints in a server
 * under load, docs/architecture.md). A writer awaits `idle()` before each flush instead.
 * Checkpoints start from the event loop too, so none can start during a flush.
 *
 * The checkpoint does not wait for open transactions: a transaction's statements (as opposed
 * to its appender flushes) wait on DuckDB's threads, not on the event loop. DuckDB may refuse
 * a checkpoint while other write transactions are open; the caller tries again later.
 */
export class CheckpointGate {
  private running: Promise<void> | undefined;

  /** Runs `job`, the checkpoint; writers' flushes wait until it has settled. One at a time. */
  async checkpoint<T>(job: () => Promise<T>): Promise<T> {
    // No await when idle: the checkpoint counts as running from the call on.
    while (this.running) await this.running;
    const run = job();
    const done = () => {
      if (this.running === settled) this.running = undefined;
    };
    const settled: Promise<void> = run.then(done, done);
    this.running = settled;
    return run;
  }

  /** Resolves once no checkpoint is running. */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  /** Whether a checkpoint is running now: a flush would wait for it. */
  get busy(): boolean {
    return this.running !== undefined;
  }
}
