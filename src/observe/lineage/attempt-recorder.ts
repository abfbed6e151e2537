import type { AttemptRecorder, DeliveryAttempt } from '../../destinations/stream.js';
import type { Store } from '../../store/store.js';

export interface LineageRecorderOptions {
  /** How long attempts are kept (`lineage.retention`), ms. Default 30 days. */
  retentionMs?: number;
  /** Attempts are written at least this often, ms. Default 1,000. */
  flushMs?: number;
  /** A write starts as soon as this many attempts are waiting. Default 2,000. */
  flushRows?: number;
  /**
   * Most attempts held in memory: past it, `record` waits for the write in flight (back
   * pressure on the delivery runner instead of unbounded memory). Default 50,000.
   */
  maxBuffered?: number;
  /** How often attempts past the retention are deleted, ms. Default 1 hour. */
  purgeEveryMs?: number;
  /** Called when a write or a purge fails (the attempts are kept and written with the next one). */
  onError?: (err: unknown) => void;
  now?: () => number;
}

/**
 * Lineage of deliveries: the delivery runner's {@link AttemptRecorder} over the store's
 * `delivery_attempts`. `record` only queues the attempts; they are written in batches (one
 * statement per `flushRows`, at least every `flushMs`), so recording costs the runner an
 * array push per attempt. Attempts older than the retention are deleted every `purgeEveryMs`.
 *
 * What is queued and not yet written when the process dies is lost (at most `flushMs` of
 * attempts): lineage describes deliveries, it does not make them, and the delivery runner's
 * own queue keeps what is still to deliver.
 *
 * @example
 * const lineage = new LineageRecorder(store, { retentionMs: 30 * 86_400_000 });
 * lineage.start();
 * // give `lineage` to the delivery runner as its AttemptRecorder; `await lineage.stop()` at shutdown
 */
export class LineageRecorder implements AttemptRecorder {
  private buffer: DeliveryAttempt[] = [];
  private writing: Promise<void> | undefined;
  private flushTimer: NodeJS.Timeout | undefined;
  private purgeTimer: NodeJS.Timeout | undefined;
  private readonly retentionMs: number;
  private readonly flushMs: number;
  private readonly flushRows: number;
  private readonly maxBuffered: number;
  private readonly purgeEveryMs: number;
  private readonly now: () => number;
  /** Attempts written, and attempts dropped because a write failed and the buffer was full. */
  written = 0;
  dropped = 0;

  constructor(
    private readonly store: Pick<Store, 'recordAttempts' | 'purgeAttempts'>,
    private readonly options: LineageRecorderOptions = {},
  ) {
    this.retentionMs = options.retentionMs ?? 30 * 86_400_000;
    this.flushMs = options.flushMs ?? 1_000;
    this.flushRows = options.flushRows ?? 2_000;
    this.maxBuffered = options.maxBuffered ?? 50_000;
    this.purgeEveryMs = options.purgeEveryMs ?? 3_600_000;
    this.now = options.now ?? Date.now;
  }

  /** Starts the flush and purge timers (a first purge runs now). */
  start(): void {
    this.flushTimer ??= setInterval(() => void this.flush(), this.flushMs);
    this.flushTimer.unref();
    this.purgeTimer ??= setInterval(() => void this.purge(), this.purgeEveryMs);
    this.purgeTimer.unref();
    void this.purge();
  }

  async record(attempts: readonly DeliveryAttempt[]): Promise<void> {
    for (const a of attempts) this.buffer.push(a);
    if (this.buffer.length >= this.flushRows) {
      const write = this.flush();
      if (this.buffer.length + attempts.length > this.maxBuffered) await write;
    }
  }

  /** Writes what is queued (after the write in flight, if any; one write waits at most). */
  flush(): Promise<void> {
    if (this.queued) return this.queued;
    const run = (this.writing ?? Promise.resolve()).then(async () => {
      this.queued = undefined;
      if (this.buffer.length === 0) return;
      const batch = this.buffer;
      this.buffer = [];
      try {
        await this.store.recordAttempts(batch);
        this.written += batch.length;
      } catch (err) {
        // Kept for the next write, within the bound.
        const room = Math.max(0, this.maxBuffered - this.buffer.length);
        this.dropped += Math.max(0, batch.length - room);
        this.buffer = [...batch.slice(0, room), ...this.buffer];
        this.options.onError?.(err);
      }
    });
    this.queued = run;
    this.writing = run;
    return run;
  }

  private queued: Promise<void> | undefined;

  /** Deletes attempts past the retention; resolves with how many. */
  async purge(): Promise<number> {
    try {
      return await this.store.purgeAttempts(this.now() - this.retentionMs);
    } catch (err) {
      this.options.onError?.(err);
      return 0;
    }
  }

  /** Stops the timers and writes what is queued. */
  async stop(): Promise<void> {
    clearInterval(this.flushTimer);
    clearInterval(this.purgeTimer);
    this.flushTimer = undefined;
    this.purgeTimer = undefined;
    await this.flush();
  }
}
