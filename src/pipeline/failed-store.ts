import type { DestinationRetryItem } from '../destinations/destination-transforms.js';
import { TributaryError } from '../errors.js';
import type { EventLog, RawEvent } from '../log/event-log.js';
import { isPlainObject } from '../spec/event.js';
import type { FailedFilter, FailedSummary, Store } from '../store/store.js';

export type { FailedFilter, FailedSummary } from '../store/store.js';

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

/**
 * Runs a destination's failed events through its current functions into it alone. A streaming
 * destination answers the ids it has queued but not delivered yet (reported `sent`).
 */
export type DestinationRetrier = (
  items: readonly DestinationRetryItem[],
) => Promise<{ pending: readonly string[] } | undefined>;

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

  list(filter: FailedFilter): Promise<FailedSummary[]> {
    return this.warehouse.listFailed(filter);
  }

  async show(id: string): Promise<FailedDetail> {
    const row = await this.warehouse.failedById(id);
    if (!row) throw new TributaryError('TRIB_ERR_FAILED_NOT_FOUND', [id]);
    return {
      ...row,
      payload: JSON.parse(row.payload),
      logs: row.logs === null ? null : (JSON.parse(row.logs) as string[]),
    };
  }

  /** Sends the chosen failed events through the pipeline again; with `wait`, reports what became of them. */
  async retry(filter: FailedFilter, wait: boolean): Promise<RetryOutcome[]> {
    if (!filter.ids?.length && !filter.source && !filter.stage && !filter.code) {
      throw new TributaryError('TRIB_ERR_FAILED_BAD_REQUEST', [
        'choose events to retry: ids, or a source, stage or code',
      ]);
    }
    const rows = await this.warehouse.failedToRetry(filter);
    const outcomes: RetryOutcome[] = [];
    const records: RawEvent[] = [];
    const ids: string[] = [];
    const toDestinations = new Map<string, DestinationRetryItem[]>();
    for (const row of rows) {
      const { id, stage } = row;
      if (stage.startsWith('destination:') && row.messageId !== null) {
        // Already in `events`: the loader would drop it as a duplicate, so it goes to its destination alone.
        const d = stage.slice('destination:'.length);
        const item: DestinationRetryItem = {
          id,
          logOffset: row.logOffset,
          sourceId: row.sourceId,
          messageId: row.messageId,
          receivedAt: row.receivedAt,
          json: row.json,
          code: row.code,
        };
        toDestinations.set(d, [...(toDestinations.get(d) ?? []), item]);
        continue;
      }
      if (!RETRYABLE_STAGES.has(stage)) {
        outcomes.push({
          id,
          status: 'skipped',
          reason: `a ${stage} rejection is final: the client must resend`,
        });
        continue;
      }
      const event = JSON.parse(row.json) as unknown;
      if (!isPlainObject(event) || row.messageId === null) {
        outcomes.push({ id, status: 'skipped', reason: 'the stored payload is not an event' });
        continue;
      }
      const t = isPlainObject(event._tributary) ? event._tributary : {};
      event._tributary = { ...t, retryOf: id };
      records.push({
        sourceId: row.sourceId,
        messageId: row.messageId,
        receivedAt: row.receivedAt,
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
      await this.warehouse.markRetried(ids);
    }
    outcomes.push(...(await this.retryInDestinations(toDestinations)));
    if (wait && ids.length > 0) {
      await this.drained();
      const newIds = await this.warehouse.retriesOf(ids);
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
      const pending = new Set((await retry(items))?.pending ?? []);
      const ids = items.map((i) => i.id);
      await this.warehouse.markRetried(ids);
      const newIds = await this.warehouse.retriesOf(ids);
      for (const i of items) {
        const n = newIds.get(i.id);
        outcomes.push(
          n
            ? { id: i.id, status: 'failed', newId: n }
            : pending.has(i.id)
              ? { id: i.id, status: 'sent' }
              : { id: i.id, status: 'recovered' },
        );
      }
    }
    return outcomes;
  }
}
