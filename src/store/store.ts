import type { ErasureTarget } from '../governance/privacy/erasure.js';
import type { ConfigVersionStore } from './config-versions.js';
import type { DeliveryQueue } from './delivery-queue.js';

/**
 * The internal event store the loader writes (`events`, `failed_events`) and the event feed
 * reads. Adapters: DuckDB (`./duckdb/`, embedded) and PostgreSQL (`./postgres/postgres-store.ts`,
 * scale-out, one view per log partition). The Segment tables in DuckDB, PostgreSQL and Parquet
 * are destinations following it: see `./destination.ts`.
 */

/**
 * One accepted event for the `events` table. The adapter derives the other columns (`type`,
 * `event`, `user_id`, `anonymous_id`, `timestamp`, `received_at`) from the JSON in the
 * engine, which parses JSON faster than the event loop and off it.
 */
export interface EventRow {
  messageId: string;
  sourceId: string;
  /** Epoch milliseconds of receipt (also in the JSON as `receivedAt`). */
  receivedAt: number;
  logOffset: number;
  /** The whole event as JSON text. */
  json: string;
}

/** One event that was rejected or failed a stage, for the `failed_events` table. */
export interface FailedRow {
  logOffset: number;
  sourceId: string;
  messageId: string;
  stage: string;
  code: string;
  reason: string;
  receivedAt: string;
  json: string;
  /** Log lines of the user function that failed, if one did. */
  logs?: string[];
  /** Id of the failed event this one is a retry of. */
  retryOf?: string;
}

/** State of a failed event: `new`, or `retried` once re-sent through the pipeline. */
export type RetryState = 'new' | 'retried';

export interface StoreBatch {
  events: EventRow[];
  failed: FailedRow[];
  /** The consumer writing, and the log offset it has handled once this batch is in. */
  consumer: string;
  nextOffset: number;
  /**
   * The consumer's offset the writer believed stored when it read the batch. When given and
   * the stored one differs (another process took the partition over and moved on), the
   * batch is not written and `write` throws `TRIB_ERR_STATE_OFFSET_MOVED`. Adapters with a
   * single writer may ignore it.
   */
  fromOffset?: number;
}

/** A row of `batch.events` the engine refused (data it cannot store), and why. */
export interface RefusedRow {
  /** Position in `batch.events`. */
  index: number;
  /** The engine's message. */
  reason: string;
}

/**
 * The fate of each row of a write, listing the exceptions: a row of `batch.events` that is in
 * neither list was stored in `events`. Data errors are results, not throws: one row the engine
 * cannot take never blocks the rest of its batch.
 */
export interface WriteReport {
  /**
   * Positions in `batch.events` of rows not written because their (source, messageId) was
   * stored already, by another partition or an earlier batch.
   */
  duplicates: number[];
  /**
   * Rows the engine refused (a lone surrogate its JSON parser rejects, an impossible
   * timestamp, …): stored in `failed_events` instead, in the same transaction, with stage
   * `load`, code `TRIB_ERR_LOAD_UNSTORABLE`, the engine's message and the payload made
   * storable (see `./storable.ts`).
   */
  refused: RefusedRow[];
}

/** One row of `events` as consumers after the loader read it (see `pipeline/event-feed.ts`). */
export interface StoredEvent {
  logOffset: number;
  sourceId: string;
  messageId: string;
  /** Epoch milliseconds of receipt. */
  receivedAt: number;
  /** The processed event as JSON text. */
  json: string;
}

export interface QueryResult {
  columns: string[];
  rows: Record<string, unknown>[];
}

/** Which failed events a list or a retry is about. */
export interface FailedFilter {
  ids?: string[];
  /** Only the failures of this messageId (`tributary trace`). */
  messageId?: string;
  source?: string;
  stage?: string;
  code?: string;
  /** Include events already retried (default: only `new` ones). */
  includeRetried?: boolean;
  limit?: number;
}

/** One row of `failed_events` as the admin API lists it (timestamps as text). */
export interface FailedSummary {
  id: string;
  source_id: string;
  message_id: string | null;
  stage: string;
  code: string;
  reason: string;
  received_at: string;
  failed_at: string;
  retry_state: string;
  retry_of: string | null;
}

/** One row of `failed_events` whole, its payload and logs as the JSON text stored. */
export interface FailedDetailRow extends FailedSummary {
  log_offset: number;
  payload: string;
  logs: string | null;
  retried_at: string | null;
}

/** A failed event chosen for a retry, with what the retry sends again. */
export interface FailedPayload {
  id: string;
  logOffset: number;
  sourceId: string;
  messageId: string | null;
  stage: string;
  /** The failure's code (a destination's retry tells its delivery failures from its functions'). */
  code: string;
  /** Epoch milliseconds of receipt. */
  receivedAt: number;
  /** The stored payload as JSON text. */
  json: string;
}

/**
 * One attempt to deliver one message to a destination, for lineage (`delivery_attempts`).
 * The same shape as `DeliveryAttempt` of `destinations/stream.ts`, which the lineage recorder
 * writes through this port.
 */
export interface DeliveryAttemptRow {
  destination: string;
  messageId: string;
  /** 1 for the first send. */
  attempt: number;
  at: Date;
  status: 'ok' | 'retryable' | 'failed';
  latencyMs: number;
  /** The error, or the receiver's answer when ok. */
  detail?: string;
}

/** A replay run as `replay_runs` keeps it (`tributary replay`). */
export interface ReplayRunRow {
  id: string;
  /** Who asked (the admin API's caller, or `cli`). */
  requestedBy: string;
  startedAt: Date;
  finishedAt?: Date;
  sourceId: string;
  /** The receipt-time range replayed, `[from, to)`. */
  from: Date;
  to: Date;
  destinations: string[];
  dryRun: boolean;
  /** `running`, `done`, `failed` (with `error`) or `cancelled`. */
  status: 'running' | 'done' | 'failed';
  /** Records read, passed the pipeline, failed it, delivered (per run). */
  read: number;
  passed: number;
  failed: number;
  delivered: number;
  error?: string;
}

export interface Store extends ConfigVersionStore, DeliveryQueue {
  /**
   * Writes the batch and the consumer's offset in one transaction, so a redelivered batch
   * (offset below the stored one) is recognised and skipped: loads are exactly-once.
   *
   * A batch the engine refuses for its data is split until the refused rows are found
   * (`findRefused` in `./storable.ts`); they go to `failed_events` and the report lists them,
   * while the rest and the offset are written. Failed rows are stored with their texts made
   * storable. Only errors that are not about the data (disk, connection, a moved offset) throw:
   * the caller retries the batch.
   */
  write(batch: StoreBatch): Promise<WriteReport>;
  /** The log offset the consumer has written up to (0 when it never wrote). */
  consumerOffset(consumer: string): Promise<number>;
  /** Of the given keys, those already stored with `received_at` at or after `sinceMs`. */
  existingKeys(
    keys: readonly { sourceId: string; messageId: string }[],
    sinceMs: number,
  ): Promise<Set<string>>;
  /** Every (source, messageId, receivedAt ms) stored since `sinceMs`, to rebuild the dedupe index. */
  recentKeys(sinceMs: number): AsyncIterable<{ sourceId: string; messageId: string; receivedAt: number }>;
  /**
   * Stored events with `from <= log_offset < to`, in log order, at most `limit` of them.
   * Rows are written in log order, so this is how later stages follow the loader.
   */
  readEvents(from: number, to: number, limit: number): Promise<StoredEvent[]>;
  /** Failed events matching `filter`, newest first, at most `filter.limit` (default 100, at most 10,000). */
  listFailed(filter: FailedFilter): Promise<FailedSummary[]>;
  /** The failed event of this id, or undefined. */
  failedById(id: string): Promise<FailedDetailRow | undefined>;
  /**
   * The `new` failed events matching `filter` with their payloads, in log order, at most
   * `filter.limit` (default 10,000, at most 100,000): what a retry sends again.
   */
  failedToRetry(filter: FailedFilter): Promise<FailedPayload[]>;
  /** Marks these failed events `retried` (now). */
  markRetried(ids: readonly string[]): Promise<void>;
  /** Of these failed events, those that failed again when retried: their id → the new row's id. */
  retriesOf(ids: readonly string[]): Promise<Map<string, string>>;
  /**
   * Stored events of this messageId (any source), and those at the given log offsets (what a
   * function that changed the messageId made of its records), in log order (`tributary trace`).
   */
  eventsOf(messageId: string, offsets?: readonly number[]): Promise<StoredEvent[]>;
  /**
   * Appends delivery attempts to `delivery_attempts` (lineage), in one statement; the table is
   * indexed by messageId.
   */
  recordAttempts(attempts: readonly DeliveryAttemptRow[]): Promise<void>;
  /** The delivery attempts of a messageId, oldest first. */
  attemptsOf(messageId: string): Promise<DeliveryAttemptRow[]>;
  /** Deletes delivery attempts older than `beforeMs` (epoch ms); returns how many. */
  purgeAttempts(beforeMs: number): Promise<number>;
  /** Inserts or replaces a replay run (by id). */
  saveReplayRun(run: ReplayRunRow): Promise<void>;
  /** Replay runs, newest first, at most `limit` (or the one of `id`). */
  replayRuns(options: { limit?: number; id?: string }): Promise<ReplayRunRow[]>;
  /**
   * Deletes a person's rows from `events` and `failed_events` (a deletion request, see
   * `src/governance/privacy/`): events of their user or anonymous ids or messageIds, and
   * rows whose payload contains one of `target.values`. The engine is left holding none of
   * their bytes (DuckDB: the tables rewritten and the file's free blocks overwritten;
   * PostgreSQL: `VACUUM FULL`). Throws when it could not (retried by the caller).
   */
  erase(target: ErasureTarget): Promise<{ events: number; failed: number }>;
  close(): Promise<void>;
}

/** The key under which dedupe and the warehouse compare events. */
export function eventKey(sourceId: string, messageId: string): string {
  return `${sourceId}\u001f${messageId}`;
}
