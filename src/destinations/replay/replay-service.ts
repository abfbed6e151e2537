import { TributaryError } from '../../errors.js';
import type { RawArchive } from '../../log/raw-archive.js';
import type { Stage } from '../../pipeline/stages/stage.js';
import type { ReplayRunRow, Store } from '../../store/store.js';
import { Replay, type ReplayProgress, type ReplayRequest } from './replay.js';
import type { ReplayTarget } from './replay-target.js';

export interface ReplayServiceDeps {
  /** The raw archive; undefined where the log has none (NATS), and replay answers 501. */
  archive: RawArchive | undefined;
  stages: ReadonlyMap<string, readonly Stage[]>;
  store: Pick<Store, 'write' | 'saveReplayRun' | 'replayRuns'>;
  /**
   * The destinations that take a replay now, by id (called per run: destinations may start
   * and stop), and what to close when the run ends (targets opened for it).
   */
  targets: () => Promise<{ targets: ReadonlyMap<string, ReplayTarget>; close(): Promise<void> }>;
  /** Ids of the configured sources. */
  sources: readonly string[];
  onError?: (err: unknown) => void;
}

/** A replay run as the admin API answers it: the stored run with the live counts while it runs. */
export type ReplayRunView = Omit<ReplayRunRow, 'startedAt' | 'finishedAt' | 'from' | 'to'> & {
  startedAt: string;
  finishedAt: string | null;
  from: string;
  to: string;
  progress?: ReplayProgress;
};

export function replayRunView(r: ReplayRunRow, progress?: ReplayProgress): ReplayRunView {
  return {
    ...r,
    startedAt: r.startedAt.toISOString(),
    finishedAt: r.finishedAt ? r.finishedAt.toISOString() : null,
    from: r.from.toISOString(),
    to: r.to.toISOString(),
    ...(progress ? { progress } : {}),
  };
}

/**
 * Runs replays one at a time in the process and keeps the latest runs' live counts; the
 * record of every run is in `replay_runs`.
 */
export class ReplayService {
  private running: { replay: Replay; done: Promise<ReplayProgress> } | undefined;
  private readonly recent = new Map<string, ReplayProgress>();

  constructor(private readonly deps: ReplayServiceDeps) {}

  /**
   * Starts a replay (recorded as running before this resolves) and returns it with the
   * promise of its end.
   * @throws TributaryError `TRIB_ERR_REPLAY_BUSY`, `_UNKNOWN_SOURCE`, `_UNKNOWN_DESTINATION`,
   *   `_BAD_REQUEST`, `TRIB_ERR_LINEAGE_UNSUPPORTED`.
   */
  async start(request: ReplayRequest): Promise<{ runId: string; done: Promise<ReplayProgress> }> {
    if (!this.deps.archive) throw new TributaryError('TRIB_ERR_LINEAGE_UNSUPPORTED', ['replay']);
    if (this.running) throw new TributaryError('TRIB_ERR_REPLAY_BUSY', [this.running.replay.runId]);
    if (this.starting) throw new TributaryError('TRIB_ERR_REPLAY_BUSY', ['starting']);
    this.starting = true;
    try {
      return await this.startNow(request);
    } finally {
      this.starting = false;
    }
  }

  private starting = false;

  private async startNow(request: ReplayRequest): Promise<{ runId: string; done: Promise<ReplayProgress> }> {
    const archive = this.deps.archive;
    if (!archive) throw new TributaryError('TRIB_ERR_LINEAGE_UNSUPPORTED', ['replay']);
    if (!this.deps.sources.includes(request.sourceId))
      throw new TributaryError('TRIB_ERR_REPLAY_UNKNOWN_SOURCE', [request.sourceId]);
    const { targets, close } = await this.deps.targets();
    let replay: Replay;
    try {
      replay = new Replay({ archive, stages: this.deps.stages, store: this.deps.store, targets }, request);
      await replay.begin();
    } catch (err) {
      await close();
      throw err;
    }
    const done = replay
      .execute((p) => this.remember(p))
      .finally(async () => {
        this.running = undefined;
        await close();
      });
    this.running = { replay, done };
    done.catch((err) => this.deps.onError?.(err));
    return { runId: replay.runId, done };
  }

  private remember(p: ReplayProgress): void {
    this.recent.set(p.runId, p);
    if (this.recent.size > 100) this.recent.delete(this.recent.keys().next().value!);
  }

  /** A run by id, with its live counts when this process ran it. */
  async get(id: string): Promise<ReplayRunView> {
    const [row] = await this.deps.store.replayRuns({ id });
    if (!row) throw new TributaryError('TRIB_ERR_REPLAY_NOT_FOUND', [id]);
    const live = this.running?.replay.runId === id ? this.running.replay.snapshot() : this.recent.get(id);
    return replayRunView(row, live);
  }

  async list(limit?: number): Promise<ReplayRunView[]> {
    return (await this.deps.store.replayRuns({ limit })).map((r) => replayRunView(r, this.recent.get(r.id)));
  }

  /**
   * Marks runs left `running` by a process that ended during them (a crash, kill -9) as
   * failed; called at start, before any replay of this process. Returns how many.
   */
  async abandonRuns(now = new Date()): Promise<number> {
    const stale = (await this.deps.store.replayRuns({ limit: 1000 })).filter((r) => r.status === 'running');
    for (const r of stale)
      await this.deps.store.saveReplayRun({
        ...r,
        status: 'failed',
        finishedAt: now,
        error: 'the server stopped during the replay; run it again (destinations store no messageId twice)',
      });
    return stale.length;
  }

  /** Resolves when the running replay (if any) has ended. */
  async idle(): Promise<void> {
    await this.running?.done.catch(() => undefined);
  }
}
