import type { DestinationConfig } from '../config/destinations-schema.js';
import { TributaryError } from '../errors.js';
import type { Delivered } from '../log/event-log.js';
import { runStages } from '../pipeline/stages/runner.js';
import type { Stage } from '../pipeline/stages/stage.js';
import type { TransformStage } from '../pipeline/stages/transform-stage.js';
import { transformStage } from '../pipeline/transform/function-stage.js';
import { Turns } from '../platform/async/turns.js';
import type { FailedRow, Store, StoredEvent } from '../store/store.js';
import type {
  LoadOptions,
  LoadResult,
  RecordFailure,
  WarehouseDestination,
  WarehouseRow,
} from './destination.js';
import { takesTransformations } from './registry.js';

/** One failed event handed back to its destination by a retry. */
export interface DestinationRetryItem {
  /** Id of the `failed_events` row. */
  id: string;
  logOffset: number;
  sourceId: string;
  messageId: string;
  /** Epoch milliseconds of receipt. */
  receivedAt: number;
  /** The event as the destination's functions received it (a delivery failure: as it was sent). */
  json: string;
  /** The failure's code. */
  code?: string;
}

/** What a load or a retry did with the destination's functions, for metrics. */
export interface DestinationTransformObserver {
  /** Input events per outcome: `passed` (one or more outputs), `dropped` (none), `failed`. */
  outcome(destination: string, outcome: 'passed' | 'dropped' | 'failed', count: number): void;
}

/** The failure stage of a destination's functions: `destination:<id>`. */
export function destinationStage(destination: string): string {
  return `destination:${destination}`;
}

/** A record a destination refused, as a `failed_events` row of stage `destination:<id>`. */
export function destinationFailure(destination: string, f: RecordFailure, retryOf?: string): FailedRow {
  return {
    logOffset: f.event.logOffset,
    sourceId: f.event.sourceId,
    messageId: f.event.messageId,
    stage: destinationStage(destination),
    code: f.code,
    reason: f.reason,
    receivedAt: new Date(f.event.receivedAt).toISOString(),
    json: f.event.json,
    retryOf,
  };
}

/**
 * The input event an output of the functions came from: the one at its log offset, and among
 * several there the one with its messageId, or whose messageId it extends (a fan-out's
 * `<id>-1`); the output itself when none is found.
 */
function inputsOf(events: readonly StoredEvent[]): (out: StoredEvent) => StoredEvent {
  const byOffset = new Map<number, StoredEvent[]>();
  for (const e of events) byOffset.set(e.logOffset, [...(byOffset.get(e.logOffset) ?? []), e]);
  return (out) => {
    const candidates = byOffset.get(out.logOffset) ?? [];
    if (candidates.length === 1) return candidates[0]!;
    return (
      candidates.find((c) => c.messageId === out.messageId) ??
      candidates
        .filter((c) => out.messageId.startsWith(`${c.messageId}-`))
        .sort((a, b) => b.messageId.length - a.messageId.length)[0] ??
      out
    );
  };
}

/**
 * A warehouse destination behind its own transformations: each load's events run through
 * the functions, in order, before the inner destination sees them. An output replaces its
 * input (several keep the input's log offset, with distinct messageIds), none drops the
 * event for this destination only. The `events` table is never changed.
 *
 * A failed event goes to `failed_events` with stage `destination:<id>`, written before the
 * inner load with the consumer offset `transform:<id>`. A load redone after a crash between
 * the two skips the failures below that offset, so each is stored once.
 *
 * Loads and retries run one at a time, so a retry never races the feed on one destination.
 */
export class TransformingDestination implements WarehouseDestination {
  private readonly turns = new Turns();
  private readonly stage: string;
  private readonly consumer: string;

  constructor(
    private readonly inner: WarehouseDestination,
    private readonly stages: readonly Stage[],
    private readonly warehouse: Pick<Store, 'write' | 'consumerOffset'>,
    private readonly observer?: DestinationTransformObserver,
  ) {
    this.stage = destinationStage(inner.name);
    this.consumer = `transform:${inner.name}`;
  }

  get name(): string {
    return this.inner.name;
  }

  storedOffset(): Promise<number> {
    return this.inner.storedOffset();
  }

  load(events: readonly StoredEvent[], nextOffset: number, options?: LoadOptions): Promise<LoadResult> {
    return this.turns.run(async () => {
      if (this.stages.length === 0 || events.length === 0)
        return this.inner.load(events, nextOffset, options);
      const { rows, failed } = await this.transform(events, () => undefined);
      if (failed.length > 0) {
        const done = await this.warehouse.consumerOffset(this.consumer);
        const fresh = failed.filter((f) => f.logOffset >= done);
        if (fresh.length > 0) {
          await this.warehouse.write({
            events: [],
            failed: fresh,
            consumer: this.consumer,
            nextOffset: Math.max(done, nextOffset),
          });
        }
      }
      // A refused output is stored as the event the functions received: a retry runs them again.
      const inputOf = inputsOf(events);
      const asInputs = (failed: readonly RecordFailure[]) => {
        const seen = new Set<StoredEvent>();
        return failed
          .map((f) => ({ ...f, event: inputOf(f.event) }))
          .filter((f) => !seen.has(f.event) && seen.add(f.event));
      };
      const onFailed = options?.onFailed;
      const result = await this.inner.load(rows, nextOffset, {
        ...options,
        onFailed: onFailed && ((failed, next) => onFailed(asInputs(failed), next)),
      });
      return result.status === 'ok' ? { status: 'ok', failed: asInputs(result.failed) } : result;
    });
  }

  /**
   * Runs failed events through the destination's current functions and loads the outputs
   * into this destination only, at its stored offset, so its position does not move (the
   * SQL destinations merge on `id`: a repeated retry adds no row). Failures are stored again,
   * each naming the row it retries in `retry_of`, as are events the destination refuses.
   */
  retry(items: readonly DestinationRetryItem[]): Promise<void> {
    return this.turns.run(async () => {
      const byKey = new Map(items.map((i) => [`${i.logOffset}\u001f${i.messageId}`, i.id]));
      const { rows, failed } = await this.transform(items, (f) =>
        byKey.get(`${f.logOffset}\u001f${f.messageId}`),
      );
      const offset = await this.inner.storedOffset();
      if (failed.length > 0) {
        await this.warehouse.write({
          events: [],
          failed,
          consumer: this.consumer,
          nextOffset: await this.warehouse.consumerOffset(this.consumer),
        });
      }
      const loaded = await this.inner.load(rows, offset);
      if (loaded.status === 'retryable') throw loaded.error;
      if (loaded.failed.length > 0) {
        const retried = new Map(items.map((i) => [i.messageId, i.id]));
        await this.warehouse.write({
          events: [],
          failed: loaded.failed.map((f) =>
            destinationFailure(this.inner.name, f, retried.get(f.event.messageId)),
          ),
          consumer: this.consumer,
          nextOffset: await this.warehouse.consumerOffset(this.consumer),
        });
      }
    });
  }

  /**
   * Loads events again (a replay) through the current functions into this destination only, at
   * its stored offset, queued behind the feed's loads like a retry: the SQL destinations merge
   * on `id`, so events already stored add no row. Function failures go to `failed_events`
   * (stage `destination:<id>`), and events the destination refuses too; answers how many
   * events reached the load and how many failed.
   */
  replay(events: readonly StoredEvent[]): Promise<{ ok: number; failed: number }> {
    return this.turns.run(async () => {
      const { rows, failed } = await this.transform(events, () => undefined);
      const offset = await this.inner.storedOffset();
      if (failed.length > 0) {
        await this.warehouse.write({
          events: [],
          failed,
          consumer: this.consumer,
          nextOffset: await this.warehouse.consumerOffset(this.consumer),
        });
      }
      const loaded = await this.inner.load(rows, offset);
      if (loaded.status === 'retryable') throw loaded.error;
      if (loaded.failed.length > 0) {
        await this.warehouse.write({
          events: [],
          failed: loaded.failed.map((f) => destinationFailure(this.inner.name, f)),
          consumer: this.consumer,
          nextOffset: await this.warehouse.consumerOffset(this.consumer),
        });
      }
      const refused = new Set(loaded.failed.map((f) => f.event.messageId));
      const failedIds = new Set([...failed.map((f) => f.messageId), ...refused]);
      return { ok: events.filter((e) => !failedIds.has(e.messageId)).length, failed: failedIds.size };
    });
  }

  rowsOf(event: StoredEvent): Promise<WarehouseRow[]> {
    return this.inner.rowsOf?.(event) ?? Promise.resolve([]);
  }

  async close(): Promise<void> {
    await this.turns.idle();
    for (const s of this.stages) await s.close?.();
    await this.inner.close();
  }

  private async transform(
    events: readonly StoredEvent[],
    retryOf: (f: FailedRow) => string | undefined,
  ): Promise<{ rows: StoredEvent[]; failed: FailedRow[] }> {
    const records: Delivered[] = events.map((e) => ({
      offset: e.logOffset,
      sourceId: e.sourceId,
      messageId: e.messageId,
      receivedAt: e.receivedAt,
      status: 'accepted',
      json: e.json,
    }));
    const run = await runStages(this.stages, records);
    // An event in `events` may carry `_tributary.retryOf` from a loader retry: not this stage's.
    const failed = run.failed.map((f) => ({ ...f, stage: this.stage, retryOf: retryOf(f) }));
    if (this.observer) {
      const count = { passed: 0, dropped: 0, failed: 0 };
      for (const o of run.outcomes) {
        if (o.outcome === 'passed') count.passed++;
        else if (o.outcome === 'filtered') count.dropped++;
        else count.failed++;
      }
      for (const [k, n] of Object.entries(count))
        if (n > 0) this.observer.outcome(this.name, k as keyof typeof count, n);
    }
    return { rows: run.rows, failed };
  }
}

/**
 * Starts the sandboxes of a destination's transformations, in order (empty without any).
 * @throws TributaryError `TRIB_ERR_TRANSFORM_INVALID`, or `TRIB_ERR_DESTINATION_TRANSFORM_UNSUPPORTED`
 * for a destination whose kind takes none (parquet).
 */
export async function buildDestinationTransforms(
  d: DestinationConfig,
  baseDir: string,
  env: Record<string, string | undefined>,
): Promise<TransformStage[]> {
  if (!d.transformations?.length) return [];
  if (!takesTransformations(d.type))
    throw new TributaryError('TRIB_ERR_DESTINATION_TRANSFORM_UNSUPPORTED', [d.id]);
  const list: TransformStage[] = [];
  try {
    for (const t of d.transformations)
      list.push(await transformStage(`destinations[${d.id}]`, t, baseDir, env));
  } catch (err) {
    for (const s of list) await s.close();
    throw err;
  }
  return list;
}
