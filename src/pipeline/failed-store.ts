import type { DestinationRetryItem } from '../destinations/destination-transforms.js';
import { TributaryError } from '../errors.js';
import type { EventLog, RawEvent } from '../log/event-log.js';
import { sqlString } from '../platform/duckdb/duckdb-sql.js';
import { isPlainObject } from '../spec/event.js';
import type { Store } from '../store/store.js';

/** Which failed events a list or a retry is about. */
export interface FailedFilter {
  ids?: string[];
  source?: string;
  stage?: string;
  code?: string;
  /** Include events already retried (default: only `new` ones). */
  includeRetried?: boolean;
  limit?: number;
}

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

export interface FailedDetail extends FailedSummary {
  log_offset: number;
  payload: unknown;
  logs: string[] | null;
  retried_at: string | null;
}

export interface RetryOutcome {
  id: string;
  /** `recovered`: now in `events`; `failed`: failed again (see `newId`); `sent`: not yet loaded. */
  status: 'recovered' | 'failed' | 'sent' | 'skipped';
  newId?: string;
  reason?: string;
}

/** Stages whose failures a retry can re-run: those of the loader. Collection rejections are final. */
export const RETRYABLE_STAGES = new Set(['mapping', 'plan', 'transform', 'pipeline']);

/** Runs a destination's failed events through its current functions into it alone. */
export type DestinationRetrier = (items: readonly DestinationRetryItem[]) => Promise<void>;

export interface RetryObserver {
  retried(sourceId: string, count: number): void;
}

/**
 * The failed-event store over the warehouse's `failed_events` table. A retry appends the
 * stored payload to the event log again (same source and messageId, with
 * `_tributary.retryOf`), so it runs through the current rules; the loader's dedupe on
 * (source, messageId) keeps a second retry of a recovered event out of `events`. The
 * retried row is kept, marked `retried`; if the event fails again, a new row names it in
 * `retry_of`.
 */
export class FailedStore {
  constructor(
    private readonly warehouse: Store,
    private readonly log: EventLog,
    private readonly observer: RetryObserver,
    private readonly drained: () => Promise<void>,
    /** The retrier of a destination by id; undefined when it is not running or takes no functions. */
    private readonly destination: (id: string) => DestinationRetrier | undefined = () => undefined,
  ) {}

  async list(filter: FailedFilter): Promise<FailedSummary[]> {
    const limit = Math.min(Math.max(1, Math.trunc(filter.limit ?? 100)), 10_000);
    const r = await this.warehouse.query(
      `SELECT id, source_id, message_id, stage, code, reason, CAST(received_at AS VARCHAR) AS received_at,
              CAST(failed_at AS VARCHAR) AS failed_at, retry_state, retry_of
       FROM failed_events WHERE ${where(filter)} ORDER BY log_offset DESC LIMIT ${limit}`,
    );
    return r.rows as unknown as FailedSummary[];
  }

  async show(id: string): Promise<FailedDetail> {
    const r = await this.warehouse.query(
      `SELECT id, log_offset, source_id, message_id, stage, code, reason, CAST(received_at AS VARCHAR) AS received_at,
              CAST(failed_at AS VARCHAR) AS failed_at, retry_state, retry_of, CAST(retried_at AS VARCHAR) AS retried_at,
              CAST(payload AS VARCHAR) AS payload, CAST(logs AS VARCHAR) AS logs
       FROM failed_events WHERE id = ${sqlString(id)}`,
    );
    const row = r.rows[0];
    if (!row) throw new TributaryError('TRIB_ERR_FAILED_NOT_FOUND', [id]);
    return {
      ...(row as unknown as FailedDetail),
      payload: JSON.parse(String(row.payload)),
      logs: row.logs === null ? null : (JSON.parse(String(row.logs)) as string[]),
    };
  }

  /** Sends the chosen failed events through the pipeline again; with `wait`, reports what became of them. */
  async retry(filter: FailedFilter, wait: boolean): Promise<RetryOutcome[]> {
    if (!filter.ids?.length && !filter.source && !filter.stage && !filter.code) {
      throw new TributaryError('TRIB_ERR_FAILED_BAD_REQUEST', [
        'choose events to retry: ids, or a source, stage or code',
      ]);
    }
    const rows = (
      await this.warehouse.query(
        `SELECT id, log_offset, source_id, message_id, stage, epoch_ms(received_at) AS received_ms, CAST(payload AS VARCHAR) AS payload
         FROM failed_events WHERE ${where({ ...filter, includeRetried: false })}
         ORDER BY log_offset LIMIT ${Math.min(Math.max(1, Math.trunc(filter.limit ?? 10_000)), 100_000)}`,
      )
    ).rows;
    const outcomes: RetryOutcome[] = [];
    const records: RawEvent[] = [];
    const ids: string[] = [];
    const toDestinations = new Map<string, DestinationRetryItem[]>();
    for (const row of rows) {
      const id = String(row.id);
      const stage = String(row.stage);
      if (stage.startsWith('destination:') && typeof row.message_id === 'string') {
        // Already in `events`: the loader would drop it as a duplicate, so it goes to its destination alone.
        const d = stage.slice('destination:'.length);
        const item: DestinationRetryItem = {
          id,
          logOffset: Number(row.log_offset),
          sourceId: String(row.source_id),
          messageId: row.message_id,
          receivedAt: Number(row.received_ms),
          json: String(row.payload),
        };
        toDestinations.set(d, [...(toDestinations.get(d) ?? []), item]);
        continue;
      }
      if (!RETRYABLE_STAGES.has(stage)) {
        outcomes.push({
          id,
          status: 'skipped',
          reason: `a ${row.stage} rejection is final: the client must resend`,
        });
        continue;
      }
      const event = JSON.parse(String(row.payload)) as unknown;
      if (!isPlainObject(event) || typeof row.message_id !== 'string') {
        outcomes.push({ id, status: 'skipped', reason: 'the stored payload is not an event' });
        continue;
      }
      const t = isPlainObject(event._tributary) ? event._tributary : {};
      event._tributary = { ...t, retryOf: id };
      records.push({
        sourceId: String(row.source_id),
        messageId: row.message_id,
        receivedAt: Number(row.received_ms),
        status: 'accepted',
        json: JSON.stringify(event),
      });
      ids.push(id);
      outcomes.push({ id, status: 'sent' });
    }
    if (records.length > 0) {
      await this.log.append(records);
      const bySource = new Map<string, number>();
      for (const r of records) bySource.set(r.sourceId, (bySource.get(r.sourceId) ?? 0) + 1);
      for (const [s, n] of bySource) this.observer.retried(s, n);
      await this.warehouse.query(
        `UPDATE failed_events SET retry_state = 'retried', retried_at = now() WHERE id IN (${ids.map(sqlString).join(', ')})`,
      );
    }
    outcomes.push(...(await this.retryInDestinations(toDestinations)));
    if (wait && ids.length > 0) {
      await this.drained();
      const again = await this.warehouse.query(
        `SELECT retry_of, id FROM failed_events WHERE retry_of IN (${ids.map(sqlString).join(', ')})`,
      );
      const newIds = new Map(again.rows.map((r) => [String(r.retry_of), String(r.id)]));
      for (const o of outcomes) {
        if (o.status !== 'sent') continue;
        const n = newIds.get(o.id);
        if (n) Object.assign(o, { status: 'failed', newId: n });
        else o.status = 'recovered';
      }
    }
    return outcomes;
  }

  /**
   * Hands destination failures to their destinations, which load what recovers at once;
   * then marks them retried. A crash between the two leaves them `new`: retried again,
   * the SQL destinations merge on `id`, so no row is loaded twice.
   */
  private async retryInDestinations(
    byDestination: Map<string, DestinationRetryItem[]>,
  ): Promise<RetryOutcome[]> {
    const outcomes: RetryOutcome[] = [];
    for (const [d, items] of byDestination) {
      const retry = this.destination(d);
      if (!retry) {
        for (const i of items)
          outcomes.push({
            id: i.id,
            status: 'skipped',
            reason: `destination ${d} is not running or takes no transformations`,
          });
        continue;
      }
      await retry(items);
      const ids = items.map((i) => sqlString(i.id)).join(', ');
      await this.warehouse.query(
        `UPDATE failed_events SET retry_state = 'retried', retried_at = now() WHERE id IN (${ids})`,
      );
      const again = await this.warehouse.query(
        `SELECT retry_of, id FROM failed_events WHERE retry_of IN (${ids})`,
      );
      const newIds = new Map(again.rows.map((r) => [String(r.retry_of), String(r.id)]));
      for (const i of items) {
        const n = newIds.get(i.id);
        outcomes.push(n ? { id: i.id, status: 'failed', newId: n } : { id: i.id, status: 'recovered' });
      }
    }
    return outcomes;
  }
}

function where(f: FailedFilter): string {
  const c: string[] = ['true'];
  if (f.ids?.length) c.push(`id IN (${f.ids.map(sqlString).join(', ')})`);
  if (f.source) c.push(`source_id = ${sqlString(f.source)}`);
  if (f.stage) c.push(`stage = ${sqlString(f.stage)}`);
  if (f.code) c.push(`code = ${sqlString(f.code)}`);
  if (!f.includeRetried) c.push(`retry_state = 'new'`);
  return c.join(' AND ');
}
