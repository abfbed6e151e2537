import type { Delivered, EventLog, Subscription } from '../log/event-log.js';
import { wellFormedJson } from '../spec/well-formed.js';
import type { EventRow, FailedRow, Store, WriteReport } from '../store/store.js';
import { eventKey } from '../store/store.js';
import { DedupeIndex, hashKey } from './dedupe.js';
import { runStages, type StageOutcome } from './stages/runner.js';
import type { Stage } from './stages/stage.js';

/** Records run through a source's stages at a time. */
const STAGE_SLICE = 1000;

/** What the loader reports, for metrics. */
export interface LoaderObserver {
  loaded?(sourceId: string, count: number): void;
  deduplicated?(sourceId: string, count: number): void;
  failedStored?(sourceId: string, count: number): void;
  /**
   * Fates of accepted records at or past `countFrom`, for the reconciled counts: one call per
   * (source, stage, outcome) and batch; `passed` means the record reached `events`.
   */
  outcome?(sourceId: string, stage: string, outcome: StageOutcome, count: number): void;
  error?(err: unknown): void;
}

export interface WarehouseLoaderOptions {
  /** Consumer group name, also the key of the offset kept in the warehouse. Default `warehouse`. */
  consumer?: string;
  /** Dedupe window, ms. Default 7 days. */
  dedupeWindowMs?: number;
  /** Most records per warehouse transaction. Default 10,000. */
  maxBatch?: number;
  /**
   * How long to gather a trickle of events before loading them (one transaction per
   * gathering instead of one per request). Adds at most this much to freshness. Default 100 ms.
   */
  lingerMs?: number;
  observer?: LoaderObserver;
  now?: () => number;
  /**
   * Quality stages per source id (mapping, plans, transformations), run in order after dedupe.
   * They stay the caller's: several loaders may share them, and `stop()` does not close them.
   */
  stages?: ReadonlyMap<string, readonly Stage[]>;
  /** Records below this offset are not reported to `observer.outcome` (they predate the counters). */
  countFrom?: number;
}

/**
 * The first pipeline consumer: reads the log, drops client retries (same source and
 * messageId within the dedupe window), and writes accepted events to `events` and
 * rejected ones to `failed_events`. The warehouse stores the consumer's offset in the
 * same transaction as the rows, so a batch redelivered after a crash is skipped rather
 * than loaded twice.
 */
/** What the loader needs of the store: writes, its offset and the dedupe lookups. */
export type LoaderStore = Pick<Store, 'write' | 'consumerOffset' | 'existingKeys' | 'recentKeys'>;

export class WarehouseLoader {
  readonly consumer: string;
  private readonly dedupe: DedupeIndex;
  private readonly observer: LoaderObserver;
  private readonly now: () => number;
  private readonly maxBatch: number;
  private readonly lingerMs: number;
  private highWater = 0;
  /** Set after a failed write: the stored offset is re-read before the next batch. */
  private stale = false;
  private readonly loadedListeners = new Set<(position: number) => void>();
  private stages: ReadonlyMap<string, readonly Stage[]>;
  private readonly countFrom: number;
  private subscription: Subscription | undefined;

  constructor(
    private readonly log: EventLog,
    private readonly warehouse: LoaderStore,
    options: WarehouseLoaderOptions = {},
  ) {
    this.consumer = options.consumer ?? 'warehouse';
    this.dedupe = new DedupeIndex(options.dedupeWindowMs);
    this.observer = options.observer ?? {};
    this.now = options.now ?? Date.now;
    this.maxBatch = options.maxBatch ?? 10_000;
    this.lingerMs = options.lingerMs ?? 100;
    this.stages = options.stages ?? new Map();
    this.countFrom = options.countFrom ?? 0;
  }

  /** Rebuilds the dedupe index from the warehouse, then consumes from the warehouse's offset. */
  async start(): Promise<void> {
    for await (const k of this.warehouse.recentKeys(this.now() - this.dedupe.windowMs)) {
      this.dedupe.add(k.sourceId, k.messageId, k.receivedAt);
    }
    this.highWater = await this.warehouse.consumerOffset(this.consumer);
    // From the warehouse's own offset, not the log's: a warehouse restored from an older copy,
    // or lost, is filled again from the log, which keeps every record.
    this.subscription = this.log.consume(this.consumer, (batch) => this.handleTracked(batch), {
      from: this.highWater,
      maxBatch: this.maxBatch,
      lingerMs: this.lingerMs,
      onError: (err) => this.observer.error?.(err),
    });
  }

  /** Resolves once every record appended before the call is in the warehouse. */
  async drained(): Promise<void> {
    await this.subscription?.drained();
  }

  async stop(): Promise<void> {
    await this.subscription?.stop();
    this.subscription = undefined;
  }

  /** Log offset up to which the warehouse holds everything. */
  position(): number {
    return this.highWater;
  }

  /** The error of the last batch, until a batch is loaded again (for the health check). */
  lastError(): unknown {
    return this.error;
  }

  /**
   * True while a batch is in hand or the last one failed: work waits for the loader even
   * where the log's end is not known here (a partition of a shared log).
   */
  waiting(): boolean {
    return this.busy || this.error !== undefined;
  }

  private busy = false;
  private error: unknown;
  /** The batch in hand, for `replaceStages` to wait for. */
  private inHand: Promise<void> | undefined;

  /**
   * Swaps the quality stages between two batches: the batch in hand finishes with the stages
   * it started with, every later one runs the new ones. Resolves once no batch runs the old
   * ones any more, so the caller may close them then.
   */
  async replaceStages(next: ReadonlyMap<string, readonly Stage[]>): Promise<void> {
    this.stages = next;
    await this.inHand?.catch(() => undefined);
  }

  private async handleTracked(batch: Delivered[]): Promise<void> {
    this.busy = true;
    const handling = this.handle(batch);
    this.inHand = handling;
    try {
      await handling;
      this.error = undefined;
    } catch (err) {
      this.error = err;
      throw err;
    } finally {
      this.busy = false;
    }
  }

  /** Calls `listener` with the new position after each load; returns the unsubscribe function. */
  onLoaded(listener: (position: number) => void): () => void {
    this.loadedListeners.add(listener);
    return () => this.loadedListeners.delete(listener);
  }

  async handle(batch: Delivered[]): Promise<void> {
    if (this.stale) {
      this.highWater = await this.warehouse.consumerOffset(this.consumer);
      this.stale = false;
    }
    const records = batch.filter((r) => r.offset >= this.highWater);
    if (records.length === 0) return;
    const fresh: Delivered[] = [];
    const failed: FailedRow[] = [];
    const duplicates: Delivered[] = [];
    // Repeats within the batch, by the key's hash; keys of different events that share a
    // hash are compared in full (`collided`), so a collision never drops an event.
    const inBatch = new Map<number, Delivered>();
    let collided: Set<string> | undefined;
    const candidates: Delivered[] = [];

    for (const r of records) {
      if (r.status === 'rejected') {
        failed.push(toFailedRow(r));
        continue;
      }
      const h = hashKey(r.sourceId, r.messageId);
      const seen = inBatch.get(h);
      if (seen === undefined) {
        inBatch.set(h, r);
      } else if (seen.sourceId === r.sourceId && seen.messageId === r.messageId) {
        duplicates.push(r);
        continue;
      } else {
        collided ??= new Set();
        collided.add(eventKey(seen.sourceId, seen.messageId));
        const key = eventKey(r.sourceId, r.messageId);
        if (collided.has(key)) {
          duplicates.push(r);
          continue;
        }
        collided.add(key);
      }
      if (this.dedupe.mightContainHash(h, r.receivedAt)) candidates.push(r);
      else fresh.push(r);
    }
    if (candidates.length > 0) {
      const since = candidates.reduce((m, c) => Math.min(m, c.receivedAt), Infinity) - this.dedupe.windowMs;
      const existing = await this.warehouse.existingKeys(candidates, since);
      for (const r of candidates) {
        if (existing.has(eventKey(r.sourceId, r.messageId))) duplicates.push(r);
        else fresh.push(r);
      }
    }

    // One set of stages for the whole batch, even if `replaceStages` is called meanwhile.
    const stages = this.stages;
    const outcomes = new Map<string, number>();
    const count = (sourceId: string, stage: string, outcome: StageOutcome, offset: number) => {
      if (offset < this.countFrom) return;
      const k = `${sourceId}\u001f${stage}\u001f${outcome}`;
      outcomes.set(k, (outcomes.get(k) ?? 0) + 1);
    };
    const events: EventRow[] = [];
    const bySource = new Map<string, Delivered[]>();
    for (const r of fresh) {
      if (!stages.has(r.sourceId)) {
        events.push(toEventRow(r));
        count(r.sourceId, 'load', 'passed', r.offset);
        continue;
      }
      const list = bySource.get(r.sourceId);
      if (list) list.push(r);
      else bySource.set(r.sourceId, [r]);
    }
    for (const [sourceId, list] of bySource) {
      // In slices, so the parsed events die young (a scavenge) instead of filling the old heap.
      for (let i = 0; i < list.length; i += STAGE_SLICE) {
        const run = await runStages(stages.get(sourceId)!, list.slice(i, i + STAGE_SLICE));
        for (const row of run.rows) events.push(row);
        for (const f of run.failed) failed.push(f);
        for (const o of run.outcomes) count(sourceId, o.stage, o.outcome, o.offset);
      }
    }
    for (const r of duplicates) count(r.sourceId, 'dedupe', 'deduplicated', r.offset);

    const nextOffset = records[records.length - 1]!.offset + 1;
    // Lone surrogates and U+0000, which the engines refuse, become U+FFFD here (records logged
    // before collection repaired them, transformations' outputs): a search for `\u` per
    // event, a parse only where an escape of one is found.
    for (let i = 0; i < events.length; i++) {
      const e = events[i]!;
      const json = wellFormedJson(e.json);
      if (json !== e.json) events[i] = { ...e, json };
    }
    let report: WriteReport;
    try {
      report = await this.warehouse.write({
        events,
        failed,
        consumer: this.consumer,
        nextOffset,
        fromOffset: this.highWater,
      });
    } catch (err) {
      // Another process may have taken the partition and moved on (or this batch may be in
      // after all): the next batch starts from the stored offset, not from ours.
      this.stale = true;
      throw err;
    }
    this.highWater = nextOffset;
    let loaded = events;
    const refused: EventRow[] = [];
    if (report.duplicates.length > 0 || report.refused.length > 0) {
      // Stored already through another partition (the database's dedupe index caught them),
      // or refused by the engine and stored as failed events instead.
      const left = new Set(report.duplicates);
      for (const r of report.refused) left.add(r.index);
      loaded = events.filter((_, i) => !left.has(i));
      const stillLoaded = new Set(loaded.map((e) => e.logOffset));
      const moved = new Set<number>();
      const move = (e: EventRow, stage: string, outcome: StageOutcome) => {
        if (stillLoaded.has(e.logOffset) || moved.has(e.logOffset) || e.logOffset < this.countFrom) return;
        moved.add(e.logOffset);
        const passed = `${e.sourceId}\u001fload\u001fpassed`;
        const n = outcomes.get(passed) ?? 0;
        if (n <= 1) outcomes.delete(passed);
        else outcomes.set(passed, n - 1);
        count(e.sourceId, stage, outcome, e.logOffset);
      };
      for (const i of report.duplicates) {
        const e = events[i]!;
        duplicates.push(toDelivered(e));
        move(e, 'dedupe', 'deduplicated');
      }
      for (const r of report.refused) {
        const e = events[r.index]!;
        refused.push(e);
        move(e, 'load', 'failed');
      }
    }
    for (const listener of this.loadedListeners) listener(nextOffset);
    for (const e of loaded) this.dedupe.add(e.sourceId, e.messageId, e.receivedAt);
    for (const [source, n] of countBySource(loaded)) this.observer.loaded?.(source, n);
    for (const [source, n] of countBySource(duplicates)) this.observer.deduplicated?.(source, n);
    for (const [source, n] of countBySource([...failed, ...refused])) this.observer.failedStored?.(source, n);
    for (const [k, n] of outcomes) {
      const [source, stage, outcome] = k.split('\u001f') as [string, string, StageOutcome];
      this.observer.outcome?.(source, stage, outcome, n);
    }
    this.dedupe.expire(this.now());
  }
}

function countBySource(items: readonly { sourceId: string }[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const { sourceId } of items) counts.set(sourceId, (counts.get(sourceId) ?? 0) + 1);
  return counts;
}

export function toEventRow(r: Delivered): EventRow {
  return {
    messageId: r.messageId,
    sourceId: r.sourceId,
    receivedAt: r.receivedAt,
    logOffset: r.offset,
    json: r.json,
  };
}

/** The record of a row left out as a duplicate, for the counts (only source and offset are read). */
function toDelivered(e: EventRow): Delivered {
  return { ...e, offset: e.logOffset, status: 'accepted' };
}

/**
 * The stage a rejected log record failed at: the privacy policy, a source's own mapping
 * (`TRIB_ERR_WEBHOOK_*`: a delivery a webhook source could not place; final, like a collection
 * rejection, as a retry cannot run the source's mapping again), else collection.
 */
function failedStage(code: string | undefined): string {
  if (code === 'TRIB_ERR_EVENT_PII_BLOCKED') return 'privacy';
  if (code?.startsWith('TRIB_ERR_WEBHOOK_')) return 'source';
  return 'collect';
}

export function toFailedRow(r: Delivered): FailedRow {
  return {
    logOffset: r.offset,
    sourceId: r.sourceId,
    messageId: r.messageId,
    stage: failedStage(r.code),
    code: r.code ?? 'TRIB_ERR_UNKNOWN',
    reason: r.reason ?? '',
    receivedAt: new Date(r.receivedAt).toISOString(),
    json: r.json,
  };
}
