/**
 * The durable queue of the streaming destinations (`src/destinations/delivery/`), part of the
 * {@link Store} port: typed methods, no SQL across it. Each streaming destination has a queue
 * of its own (named by the runner, `delivery:<id>`). Events are queued in the same transaction
 * as the feed offset moves past them, and leave the queue only once delivered (or moved to
 * `failed_events`), so a crash neither loses nor doubles a queued event; one delivered just
 * before a crash is sent again (at least once, with its idempotency key).
 *
 * Adapters: `./duckdb/duckdb-store.ts` (table `_tributary.delivery_queue`) and
 * `./postgres/postgres-store.ts` (table `<schema>.delivery_queue`).
 */

import type { FailedRow } from './store.js';

/** One delivery to queue. */
export interface QueuedDelivery {
  /** The idempotency key (the event's messageId). */
  key: string;
  /** Deliveries of one order key leave the queue in the order they were queued. */
  orderKey: string;
  /** `event`, or a reverse-ETL row operation. */
  op: string;
  /** The payload to send, as JSON text. */
  payload: string;
  /** The log offset of the event; -1 for deliveries that are not events. */
  logOffset: number;
  sourceId: string;
  /** Epoch milliseconds of receipt of the event (of queueing, for others). */
  receivedAt: number;
  /** The `failed_events` row this delivery retries, if it does. */
  retryOf?: string;
}

/** A queued delivery, as the runner takes it from the queue. */
export interface DeliveryJob extends QueuedDelivery {
  /** Its place in the queue: grows with every delivery queued. */
  seq: number;
  /** Sends tried so far. */
  attempts: number;
  /** Epoch milliseconds it was queued: the retry window runs from here. */
  enqueuedAt: number;
  /** Epoch milliseconds before which it is not sent (its backoff). */
  notBefore: number;
  lastError: string | null;
}

export interface DeliveryEnqueue {
  queue: string;
  jobs: readonly QueuedDelivery[];
  /** Failed events stored in the same transaction (a destination's transformation failures). */
  failed: readonly FailedRow[];
  /** The feed consumer whose offset moves to `nextOffset` in the same transaction; none for a retry. */
  consumer?: string;
  nextOffset?: number;
}

/** What became of taken deliveries, stored in one transaction. */
export interface DeliverySettlement {
  queue: string;
  /** Delivered: removed from the queue. */
  done: readonly number[];
  /** To send again, not before `notBefore`. */
  retry: readonly { seq: number; attempts: number; notBefore: number; lastError: string }[];
  /** Failed for good: removed from the queue and stored in `failed_events`. */
  failed: readonly { seq: number; row: FailedRow }[];
}

export interface DeliveryBacklog {
  /** Deliveries in the queue. */
  jobs: number;
  /** When the oldest of them was queued (epoch ms), or null when the queue is empty. */
  oldestEnqueuedAt: number | null;
}

export interface DeliveryQueue {
  /**
   * Queues the deliveries (in the order given), stores `failed` and moves the consumer's offset,
   * in one transaction.
   */
  enqueueDeliveries(batch: DeliveryEnqueue): Promise<void>;
  /**
   * For each order key of the queue whose oldest delivery is due at `now` (`notBefore <= now`),
   * its oldest `perKey` deliveries (default 1: the head alone), oldest first, at most `limit`
   * in all. An order key whose oldest delivery is in backoff gives none: its later ones wait
   * behind it, other keys do not.
   */
  nextDeliveries(queue: string, now: number, limit: number, perKey?: number): Promise<DeliveryJob[]>;
  /** The deliveries of the queue queued before `enqueuedBefore` (epoch ms), oldest first, at most `limit`. */
  expiredDeliveries(queue: string, enqueuedBefore: number, limit: number): Promise<DeliveryJob[]>;
  /** Stores what became of taken deliveries, in one transaction. */
  settleDeliveries(settlement: DeliverySettlement): Promise<void>;
  deliveryBacklog(queue: string): Promise<DeliveryBacklog>;
}

/** The columns of a job row in the order both adapters select them. */
export const JOB_COLUMNS =
  'seq, message_key, order_key, op, payload, log_offset, source_id, received_at, enqueued_at, attempts, not_before, last_error, retry_of';

/** A selected job row (integers as numbers or numeric strings) as a {@link DeliveryJob}. */
export function jobFromRow(r: Record<string, unknown>): DeliveryJob {
  const job: DeliveryJob = {
    seq: Number(r.seq),
    key: String(r.message_key),
    orderKey: String(r.order_key),
    op: String(r.op),
    payload: String(r.payload),
    logOffset: Number(r.log_offset),
    sourceId: String(r.source_id),
    receivedAt: Number(r.received_at),
    enqueuedAt: Number(r.enqueued_at),
    attempts: Number(r.attempts),
    notBefore: Number(r.not_before),
    lastError: r.last_error === null || r.last_error === undefined ? null : String(r.last_error),
  };
  if (r.retry_of !== null && r.retry_of !== undefined) job.retryOf = String(r.retry_of);
  return job;
}
