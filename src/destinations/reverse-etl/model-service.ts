import { Cron } from 'croner';
import { TributaryError } from '../../errors.js';
import type { ModelRun, ModelStore } from '../../store/model-store.js';
import { type ModelRunSummary, type ModelSyncOptions, type OpenDestination, runModel } from './model-sync.js';
import type { ModelConfig } from './spec.js';

export interface ModelServiceOptions {
  store: ModelStore;
  openDestination: OpenDestination;
  /** A scheduled run that failed, or threw. */
  onScheduleError?: (modelId: string, err: unknown) => void;
  commitEvery?: ModelSyncOptions['commitEvery'];
}

/** A model as `tributary models list` shows it. */
export interface ModelInfo {
  id: string;
  name: string;
  enabled: boolean;
  destination: string;
  syncMode: ModelConfig['syncMode'];
  primaryKey: string[];
  schedule: string | null;
  running: boolean;
  lastRun: ModelRun | null;
}

/**
 * The configured reverse-ETL models of a process: run on demand (admin API, CLI) and on their
 * schedules, one run of a model at a time.
 *
 * @example
 * const models = new ModelService(config.models, { store, openDestination });
 * await models.start(); // marks runs of a dead process failed, starts the schedules
 * await models.run('active-users', 'api');
 * await models.stop();
 */
export class ModelService {
  private readonly live = new Map<string, Promise<ModelRunSummary>>();
  private readonly crons: Cron[] = [];
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly stopping = new AbortController();

  constructor(
    private readonly models: readonly ModelConfig[],
    private readonly opts: ModelServiceOptions,
  ) {}

  /** @throws TRIB_ERR_RETL_MODEL_NOT_FOUND */
  model(id: string): ModelConfig {
    const m = this.models.find((x) => x.id === id);
    if (!m) throw new TributaryError('TRIB_ERR_RETL_MODEL_NOT_FOUND', [id]);
    return m;
  }

  async list(): Promise<ModelInfo[]> {
    return Promise.all(
      this.models.map(async (m) => ({
        id: m.id,
        name: m.name ?? m.id,
        enabled: m.enabled,
        destination: m.destination,
        syncMode: m.syncMode,
        primaryKey: m.primaryKey,
        schedule: m.schedule ?? (m.every !== undefined ? `every ${m.every} ms` : null),
        running: this.live.has(m.id),
        lastRun: (await this.opts.store.runs(m.id, 1))[0] ?? null,
      })),
    );
  }

  /**
   * Runs the model now and resolves with its summary (a failed SQL is a failed run, not a throw).
   * @throws TRIB_ERR_RETL_MODEL_NOT_FOUND, TRIB_ERR_RETL_MODEL_RUNNING (disabled models are not found)
   */
  /**
   * The model, if a run of it may start now in this process.
   * @throws TRIB_ERR_RETL_MODEL_NOT_FOUND (disabled models too), TRIB_ERR_RETL_MODEL_RUNNING
   */
  runnable(id: string): ModelConfig {
    const m = this.model(id);
    if (!m.enabled) throw new TributaryError('TRIB_ERR_RETL_MODEL_NOT_FOUND', [`${id} (enabled: false)`]);
    if (this.live.has(id)) throw new TributaryError('TRIB_ERR_RETL_MODEL_RUNNING', [id, id]);
    return m;
  }

  async run(id: string, trigger: string): Promise<ModelRunSummary> {
    const m = this.runnable(id);
    const run = this.runLocked(m, trigger).finally(() => this.live.delete(id));
    this.live.set(id, run);
    return run;
  }

  /** The run under the store's lock of the model where processes share the store. */
  private async runLocked(m: ModelConfig, trigger: string): Promise<ModelRunSummary> {
    const { store } = this.opts;
    const release = store.lockModel ? await store.lockModel(m.id) : undefined;
    if (store.lockModel && release === undefined)
      throw new TributaryError('TRIB_ERR_RETL_MODEL_RUNNING', [m.id, m.id]);
    try {
      // Holding the lock, no other process runs the model: a run left `running` is dead.
      if (release) await store.abandonRuns(m.id);
      return await runModel(
        m,
        { store, openDestination: this.opts.openDestination, commitEvery: this.opts.commitEvery },
        trigger,
        this.stopping.signal,
      );
    } finally {
      await release?.();
    }
  }

  /** Newest first. @throws TRIB_ERR_RETL_MODEL_NOT_FOUND */
  runs(id: string, limit: number): Promise<ModelRun[]> {
    this.model(id);
    return this.opts.store.runs(id, limit);
  }

  /**
   * Starts the models: marks runs a dead process left `running` as failed, then starts every
   * enabled model's schedule. The composition root calls it once the admin API listens.
   */
  async start(): Promise<void> {
    await this.opts.store.abandonRuns();
    for (const m of this.models) {
      if (!m.enabled) continue;
      if (m.schedule !== undefined) {
        this.crons.push(
          new Cron(m.schedule, { protect: true, catch: (err) => this.scheduleError(m.id, err) }, () =>
            this.scheduled(m.id),
          ),
        );
      } else if (m.every !== undefined) {
        this.every(m.id, m.every);
      }
    }
  }

  private every(id: string, ms: number): void {
    const t = setTimeout(async () => {
      this.timers.delete(t);
      await this.scheduled(id);
      if (!this.stopping.signal.aborted) this.every(id, ms);
    }, ms);
    this.timers.add(t);
  }

  private async scheduled(id: string): Promise<void> {
    if (this.live.has(id) || this.stopping.signal.aborted) return;
    try {
      const r = await this.run(id, 'schedule');
      if (r.status === 'failed') this.scheduleError(id, new Error(r.error));
    } catch (err) {
      this.scheduleError(id, err);
    }
  }

  private scheduleError(id: string, err: unknown): void {
    this.opts.onScheduleError?.(id, err);
  }

  /** Stops the schedules and the runs going (each after its batch in flight; what was sent is recorded). */
  async stop(): Promise<void> {
    for (const c of this.crons.splice(0)) c.stop();
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.stopping.abort();
    await Promise.allSettled([...this.live.values()]);
  }
}
