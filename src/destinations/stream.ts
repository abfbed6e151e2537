import type { z } from 'zod';
import type { ErrorCode } from '../errors.js';
import type { CheckResult } from './connector.js';

/**
 * Streaming destinations: connectors that send events (and reverse-ETL rows) to an operational
 * system — an HTTP receiver, a database table by key, a message broker. A connector only
 * encodes and sends; the delivery runner (`./delivery/`) owns every guarantee the same way for
 * all of them: the durable queue, retries with backoff and the retry window, per-user
 * ordering, the circuit breaker, rate and concurrency limits, filters and consent, and
 * `failed_events`. One folder per kind under `src/destinations/`, one line in `./registry.ts`.
 */

/** One message to deliver: an event from the pipeline or a row of a reverse-ETL model. */
export interface Delivery {
  /**
   * The idempotency key the receiver dedups on: the event's messageId; for a reverse-ETL row,
   * `<model>:<primary key>:<row checksum>`. Sent as `Idempotency-Key`, the AMQP message id,
   * the MQTT user property `idempotency-key`, the Redis Streams field `messageId`, the key of
   * an upsert.
   */
  key: string;
  /**
   * Deliveries with the same order key reach the receiver in the order given (events: the
   * user, `userId ?? anonymousId`; reverse ETL: the row's primary key).
   */
  orderKey: string;
  /** What the delivery is: an event, or a reverse-ETL row change. */
  op: DeliveryOp;
  /**
   * The event as it leaves the pipeline and the destination's transformations (Segment spec
   * JSON), or the reverse-ETL row after its field mapping. A plain JSON value the runner owns:
   * a connector must not keep it past `send`.
   */
  payload: Record<string, unknown>;
  /** The log offset of the event; undefined for reverse-ETL rows. */
  logOffset?: number;
  /** The source of the event; undefined for reverse-ETL rows. */
  sourceId?: string;
}

/** `event`: a tracked event. The others: a reverse-ETL row to insert, update, upsert or delete. */
export type DeliveryOp = 'event' | 'insert' | 'update' | 'upsert' | 'delete';

/**
 * What happened to one delivery. `retryable`: not delivered, may be sent again (a timeout, a
 * 5xx, 408, 429, a lost connection); `retryAfterMs` when the receiver said when (Retry-After).
 * `failed`: the receiver or the connector refused it for good (another 4xx, a payload the
 * connector cannot encode, a value the table refuses): it goes to `failed_events` with `code`.
 */
export type SendResult =
  | {
      status: 'ok' /** What the receiver answered, for lineage (HTTP status, stream entry id, row key). */;
      detail?: string;
    }
  | { status: 'retryable'; error: string; retryAfterMs?: number }
  | { status: 'failed'; code: ErrorCode; error: string };

/** A person to delete, as `tributary privacy delete` names them (`user_id:u1`, `email:…`). */
export interface IdentityRef {
  type: string;
  value: string;
}

export interface StreamDestination {
  readonly id: string;
  /**
   * Sends `batch` (at most the configured batch size, in order) and answers one result per
   * delivery, in the same order. It never throws for one record; a throw means none of the
   * batch was delivered and all of it is retryable. Honours `signal` (the runner's per-request
   * timeout): aborted, it answers `retryable`.
   */
  send(batch: readonly Delivery[], signal: AbortSignal): Promise<SendResult[]>;
  /**
   * Asks the receiver to delete a person's data (privacy deletion), where the kind supports
   * it (`capabilities.deletion`): the HTTP kind posts the identifiers to its deletion URL,
   * the database kinds delete rows by key.
   */
  deleteIdentities?(identities: readonly IdentityRef[], signal: AbortSignal): Promise<SendResult>;
  close(): Promise<void>;
}

export interface StreamCapabilities {
  /** Sends several deliveries per request (`batchSize` > 1 is accepted). */
  batching: boolean;
  /** Implements `deleteIdentities`. */
  deletion: boolean;
  /** Takes reverse-ETL row operations (`insert`, `update`, `upsert`, `delete`). */
  rows: boolean;
}

/** What a streaming destination is created with, besides its configuration. */
export interface StreamContext {
  /** The data folder: relative paths resolve against it. */
  dataDir: string;
  /** Environment `${ENV}` references were resolved from (HMAC secrets are already in the config). */
  env?: Record<string, string | undefined>;
}

export interface StreamConnector<C> {
  /**
   * Connects to the receiver and reports a wrong host, port, password, vhost or database as
   * a {@link CheckResult} with a stable code (`TRIB_ERR_DEST_CHECK_*`). Sends nothing.
   */
  check(config: C, ctx: StreamContext): Promise<CheckResult>;
  /** The destination, connected (or connecting: a receiver down at start is a retryable send). */
  create(config: C, ctx: StreamContext): Promise<StreamDestination>;
}

/**
 * A streaming destination kind: `spec.ts` in its folder exports it (zod and configuration
 * helpers only); the connector is imported when a destination of the kind starts.
 */
export interface StreamDestinationKind<
  C extends { type: string; id: string } = { type: string; id: string },
> {
  /** Tells the runners apart: warehouse kinds follow the feed with offsets, stream kinds deliver. */
  delivery: 'stream';
  type: C['type'];
  config: z.ZodType<C, unknown>;
  capabilities: StreamCapabilities;
  connector(): Promise<StreamConnector<C>>;
}

/** One attempt to deliver one message, for lineage (`tributary trace`). */
export interface DeliveryAttempt {
  destination: string;
  messageId: string;
  /** 1 for the first send. */
  attempt: number;
  at: Date;
  status: SendResult['status'];
  latencyMs: number;
  /** The error, or the receiver's answer (`detail`) when ok. */
  detail?: string;
}

/** Where the delivery runner records its attempts (the lineage store implements it). */
export interface AttemptRecorder {
  record(attempts: readonly DeliveryAttempt[]): Promise<void>;
}
