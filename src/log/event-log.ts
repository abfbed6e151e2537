/**
 * The event log port: durable, append-only, replayable. Adapters: DuckDB (embedded
 * default, `./duckdb/`) and, for scale-out, NATS JetStream (`./nats/`).
 */

/** One collected event as the log keeps it. */
export interface RawEvent {
  sourceId: string;
  messageId: string;
  /** Epoch milliseconds of receipt. */
  receivedAt: number;
  /** `accepted` events flow through the pipeline; `rejected` ones go to the failed-event store. */
  status: 'accepted' | 'rejected';
  /** Stable rejection code and message, for rejected events. */
  code?: string;
  reason?: string;
  /** The event as JSON text (for rejected events, whatever the client sent, re-serialized). */
  json: string;
  /**
   * Whose event it is: the userId, else the anonymousId. A partitioned log (NATS) routes by
   * its hash, so one person's events keep their order; absent, the messageId is used. The
   * embedded log does not store it.
   */
  identityKey?: string;
}

/** A record handed to a consumer, with its position in the log. */
export interface Delivered extends RawEvent {
  offset: number;
}

export interface AppendResult {
  /**
   * Offset of the first record. Every later record of the append has a greater offset, and
   * readers see the records in offset order. Offsets are unique but need not be contiguous:
   * the embedded log gives an append consecutive offsets, while on NATS concurrent appends
   * (from this process or others) interleave. A record the log already holds (NATS: same
   * source and messageId within the duplicate window) is not stored again and keeps the
   * offset of its first copy.
   */
  firstOffset: number;
}

export interface Subscription {
  /** Stops after the batch in hand is handled and committed. */
  stop(): Promise<void>;
  /** Resolves when the consumer has handled every record appended before the call. */
  drained(): Promise<void>;
}

export interface ConsumeOptions {
  /** Most records handed over at once. Default 5,000. */
  maxBatch?: number;
  /**
   * After a batch smaller than `maxBatch`, wait this long before reading again, so that a
   * trickle of records is handled in fewer, larger batches (fewer transactions downstream).
   * Bounds the added latency. Default 0.
   */
  lingerMs?: number;
  /** Called when `handle` throws; the batch is retried after a pause. */
  onError?: (err: unknown) => void;
  /**
   * Start at this offset instead of the group's committed one: for a consumer that stores its
   * own offset with its results (the warehouse loader), so a store restored from an older
   * backup, or lost, is filled again from the log. Below the committed offset the log hands
   * out again what it handed out before; above it, an adapter may still hand out records
   * below `from` (the consumer skips them).
   */
  from?: number;
}

export interface EventLog {
  /**
   * The log's identity, created with it and kept for its life (DuckDB: a UUID in the log
   * file; NATS: the stream's name and creation time). Offsets kept elsewhere (destinations)
   * are stored with it, so offsets of another log are never taken for this one's.
   */
  readonly id: string;
  /**
   * Appends records; resolves only once they are durable (DuckDB: committed to its WAL;
   * NATS: acknowledged by the stream), rejects if any record may not be. Offsets only grow.
   */
  append(records: readonly RawEvent[]): Promise<AppendResult>;
  /**
   * Hands records to `handle` in offset order from the group's committed offset (or
   * `options.from`) on,
   * committing after each batch is handled (at-least-once: a crash between the two
   * redelivers the batch). A batch whose `handle` throws comes again, before anything later.
   */
  consume(
    group: string,
    handle: (batch: Delivered[]) => Promise<void>,
    options?: ConsumeOptions,
  ): Subscription;
  /**
   * One past the last durable record this process knows of. For the embedded log, the next
   * offset to be assigned; a shared log (NATS) learns of other processes' appends when it
   * opens and in `drained()`.
   */
  endOffset(): number;
  /** The offset the group will read next. */
  committedOffset(group: string): Promise<number>;
  close(): Promise<void>;
}
