/**
 * The event log port: durable, append-only, replayable. Adapters: DuckDB (embedded
 * default, `./duckdb/`) and, for scale-out, NATS JetStream.
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
  /** Offset of the first record; the others follow in order. */
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
}

export interface EventLog {
  /** Appends records; resolves only once they are durable. Offsets only grow. */
  append(records: readonly RawEvent[]): Promise<AppendResult>;
  /**
   * Hands records to `handle` from the group's committed offset on, committing after each
   * batch is handled (at-least-once: a crash between the two redelivers the batch).
   */
  consume(
    group: string,
    handle: (batch: Delivered[]) => Promise<void>,
    options?: ConsumeOptions,
  ): Subscription;
  /** The next offset to be assigned (one past the last durable record). */
  endOffset(): number;
  /** The offset the group will read next. */
  committedOffset(group: string): Promise<number>;
  close(): Promise<void>;
}
