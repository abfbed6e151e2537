import { randomUUID } from 'node:crypto';
import { TributaryError } from '../../errors.js';
import type { Delivered } from '../../log/event-log.js';
import type { RawArchive } from '../../log/raw-archive.js';
import { runStages } from '../../pipeline/stages/runner.js';
import type { Stage } from '../../pipeline/stages/stage.js';
import { wellFormedJson } from '../../spec/well-formed.js';
import type { FailedRow, ReplayRunRow, Store, StoredEvent } from '../../store/store.js';
import type { ReplayTarget } from './replay-target.js';

/** What to replay. */
export interface ReplayRequest {
  sourceId: string;
  /** Receipt-time range `[from, to)`, epoch ms. */
  fromMs: number;
  toMs: number;
  /** Destination ids; default every destination that takes a replay. */
  destinations?: string[];
  /** Count what would be delivered; write nothing (no delivery, no failed event, the run is still recorded). */
  dryRun?: boolean;
  /** Most records read per second (the throttle). Default: as fast as the targets take them. */
  rate?: number;
  /** Who asked, for the run's record. Default `admin`. */
  requestedBy?: string;
}

/** A run's counts as it goes. */
export interface ReplayProgress {
  runId: string;
  status: ReplayRunRow['status'];
  /** Records of the source in the range read from the archive. */
  read: number;
  /** Rejected at collection (already in `failed_events`; not replayed). */
  rejected: number;
  /** Repeats of a messageId earlier in the range (client retries), left out. */
  duplicates: number;
  /** Records that passed the current pipeline (events to deliver; a function may make several of one). */
  passed: number;
  /** Records the current pipeline failed or blocked (stored in `failed_events` unless a dry run). */
  failed: number;
  /** Records a function dropped on purpose. */
  filtered: number;
  /** Events delivered, summed over the destinations (a dry run: what would be). */
  delivered: number;
  /** Per destination: delivered and failed. */
  destinations: Record<string, { delivered: number; failed: number }>;
  error?: string;
}

export interface ReplayDeps {
  archive: RawArchive;
  /** The loader's stages per source, as configured now (mapping, plans, transformations). */
  stages: ReadonlyMap<string, readonly Stage[]>;
  store: Pick<Store, 'write' | 'saveReplayRun'>;
  /** The destinations that take a replay, by id. */
  targets: ReadonlyMap<string, ReplayTarget>;
  /** Records read per archive page. Default 1,000. */
  pageSize?: number;
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
}

const sleepMs = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Replays a source's raw archive over a time range: reads the log's records in the range,
 * runs the accepted ones through the source's stages as configured now (the loader's
 * `runStages`, the same code), and hands what passes to each chosen target with the events'
 * messageIds. Failures of the stages go to `failed_events` with their stage and code, as in
 * the loader (consumer `replay:<run id>`). The run is recorded in `replay_runs` when it
 * starts and when it ends.
 *
 * The `events` table and identity resolution are not touched: the replay is a delivery
 * again, not an ingestion again.
 */
export class Replay {
  readonly runId = randomUUID();
  private readonly progress: ReplayProgress;
  private readonly targets: ReplayTarget[];
  private readonly startedAt: Date;
  private run: ReplayRunRow;

  constructor(
    private readonly deps: ReplayDeps,
    private readonly request: ReplayRequest,
  ) {
    const r = request;
    if (!Number.isFinite(r.fromMs) || !Number.isFinite(r.toMs) || r.fromMs >= r.toMs)
      throw new TributaryError('TRIB_ERR_REPLAY_BAD_REQUEST', ['"from" must be a time before "to"']);
    if (r.rate !== undefined && !(r.rate > 0))
      throw new TributaryError('TRIB_ERR_REPLAY_BAD_REQUEST', [
        '"rate" must be a positive number of events per second',
      ]);
    const ids = r.destinations ?? [...deps.targets.keys()];
    this.targets = ids.map((id) => {
      const t = deps.targets.get(id);
      if (!t) throw new TributaryError('TRIB_ERR_REPLAY_UNKNOWN_DESTINATION', [id]);
      return t;
    });
    this.startedAt = new Date((deps.now ?? Date.now)());
    this.progress = {
      runId: this.runId,
      status: 'running',
      read: 0,
      rejected: 0,
      duplicates: 0,
      passed: 0,
      failed: 0,
      filtered: 0,
      delivered: 0,
      destinations: Object.fromEntries(this.targets.map((t) => [t.id, { delivered: 0, failed: 0 }])),
    };
    this.run = this.row();
  }

  /** The counts so far (a copy). */
  snapshot(): ReplayProgress {
    return structuredClone(this.progress);
  }

  private row(): ReplayRunRow {
    const p = this.progress;
    return {
      id: this.runId,
      requestedBy: this.request.requestedBy ?? 'admin',
      startedAt: this.startedAt,
      ...(p.status === 'running' ? {} : { finishedAt: new Date((this.deps.now ?? Date.now)()) }),
      sourceId: this.request.sourceId,
      from: new Date(this.request.fromMs),
      to: new Date(this.request.toMs),
      destinations: this.targets.map((t) => t.id),
      dryRun: this.request.dryRun === true,
      status: p.status,
      read: p.read,
      passed: p.passed,
      failed: p.failed,
      delivered: p.delivered,
      ...(p.error === undefined ? {} : { error: p.error }),
    };
  }

  /** Records the run as running; call before {@link execute}. */
  async begin(): Promise<void> {
    await this.deps.store.saveReplayRun(this.run);
  }

  /** Reads, runs and delivers the range; resolves with the final counts (also on failure, status `failed`). */
  async execute(onProgress?: (p: ReplayProgress) => void): Promise<ReplayProgress> {
    try {
      await this.loop(onProgress);
      this.progress.status = 'done';
    } catch (err) {
      this.progress.status = 'failed';
      this.progress.error = (err as Error)?.message ?? String(err);
    }
    this.run = this.row();
    await this.deps.store.saveReplayRun(this.run);
    onProgress?.(this.snapshot());
    return this.snapshot();
  }

  private async loop(onProgress?: (p: ReplayProgress) => void): Promise<void> {
    const { archive, stages } = this.deps;
    const r = this.request;
    const now = this.deps.now ?? Date.now;
    const sleep = this.deps.sleep ?? sleepMs;
    const page = Math.max(1, Math.min(this.deps.pageSize ?? 1000, r.rate ? Math.ceil(r.rate) : Infinity));
    const started = now();
    const seen = new Set<string>();
    const p = this.progress;
    let from = 0;
    for (;;) {
      const records = await archive.readRange({
        sourceId: r.sourceId,
        fromMs: r.fromMs,
        toMs: r.toMs,
        fromOffset: from,
        limit: page,
      });
      if (records.length === 0) break;
      from = records[records.length - 1]!.offset + 1;
      p.read += records.length;
      const fresh: Delivered[] = [];
      for (const rec of records) {
        if (rec.status !== 'accepted') {
          p.rejected++;
          continue;
        }
        if (seen.has(rec.messageId)) {
          p.duplicates++;
          continue;
        }
        seen.add(rec.messageId);
        fresh.push(rec);
      }
      const { events, failed } = await this.process(fresh, stages.get(r.sourceId));
      if (failed.length > 0 && !r.dryRun) {
        await this.deps.store.write({
          events: [],
          failed,
          consumer: `replay:${this.runId}`,
          nextOffset: from,
        });
      }
      for (const t of this.targets) {
        if (events.length === 0) break;
        const counts = p.destinations[t.id]!;
        if (r.dryRun) {
          counts.delivered += events.length;
          p.delivered += events.length;
          continue;
        }
        const d = await t.deliver(events);
        counts.delivered += d.ok;
        counts.failed += d.failed;
        p.delivered += d.ok;
      }
      onProgress?.(this.snapshot());
      if (r.rate) {
        const due = started + (p.read / r.rate) * 1000;
        const wait = due - now();
        if (wait > 0) await sleep(wait);
      }
      if (records.length < page) break;
    }
  }

  /** The records through the source's stages (none: as they are), as the loader runs them. */
  private async process(
    records: Delivered[],
    stages: readonly Stage[] | undefined,
  ): Promise<{ events: StoredEvent[]; failed: FailedRow[] }> {
    const p = this.progress;
    const toStored = (e: {
      messageId: string;
      sourceId: string;
      receivedAt: number;
      logOffset: number;
      json: string;
    }) => ({
      logOffset: e.logOffset,
      sourceId: e.sourceId,
      messageId: e.messageId,
      receivedAt: e.receivedAt,
      json: wellFormedJson(e.json),
    });
    if (!stages || stages.length === 0) {
      p.passed += records.length;
      return {
        events: records.map((r) =>
          toStored({
            messageId: r.messageId,
            sourceId: r.sourceId,
            receivedAt: r.receivedAt,
            logOffset: r.offset,
            json: r.json,
          }),
        ),
        failed: [],
      };
    }
    const run = await runStages(stages, records);
    for (const o of run.outcomes) {
      if (o.outcome === 'passed') p.passed++;
      else if (o.outcome === 'filtered') p.filtered++;
      else p.failed++;
    }
    return { events: run.rows.map(toStored), failed: run.failed };
  }
}
