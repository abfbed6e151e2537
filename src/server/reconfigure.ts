import { resolve } from 'node:path';
import { dequal } from 'dequal';
import type { Logger } from 'pino';
import type { DestinationConfig } from '../config/destinations-schema.js';
import type { SourceConfig, TributaryConfig } from '../config/schema.js';
import { destinationPath, type RunningDestination } from '../destinations/runner.js';
import { TributaryError } from '../errors.js';
import type { PiiClassifier } from '../pipeline/privacy/pii-classifier.js';
import type { Stage } from '../pipeline/stages/stage.js';
import type { WarehouseLoader } from '../pipeline/warehouse-loader.js';
import type { HttpSourceSpec } from '../sources/http/spec.js';
import type { PushReceiver } from '../sources/source.js';
import type { SourceService } from '../sources/source-service.js';
import { checkWebhooks, openWebhooks } from '../sources/webhook/index.js';
import { duckDBFiles } from './duckdb-files.js';
import { buildQuality, checkQuality, type QualitySetup } from './quality-setup.js';

/**
 * The parts of a running embedded server a configuration change reaches. The maps and lists
 * are the server's own, edited in place: the collection routes, the webhook route, the admin
 * routes and the source service read them on every request.
 */
export interface LiveParts {
  /** The configuration running; its `sources` and `destinations` lists are edited in place. */
  config: TributaryConfig;
  /** The configuration file's folder (plan and function files). */
  baseDir: string;
  env: Record<string, string | undefined>;
  /** Salt of the PII hashes. */
  salt: string;
  dataDir: string;
  loader: WarehouseLoader;
  /** The quality stages and privacy policies by source id (the loader's and collection's). */
  quality: QualitySetup;
  /** Enabled http sources by write key (the collection routes'). */
  sourcesByWriteKey: Map<string, HttpSourceSpec>;
  /** Opened webhook sources by id, and the route's body limit; undefined: no webhook route. */
  webhooks?: { receivers: Map<string, PushReceiver>; bodyLimit: number };
  sources: SourceService;
  /** The running destinations (the health check's, the retries'), edited in place. */
  destinations: RunningDestination[];
  /** Starts one destination on the feed, as the start did. */
  startDestination(config: DestinationConfig): Promise<RunningDestination>;
  /** Files and folders the locked-down DuckDB instance may open (fixed at start). */
  duckDBAllowed: { paths: readonly string[]; directories: readonly string[] };
  /** Follows a destination started later in the health check; returns the function that stops it. */
  watchDestination?(d: RunningDestination): () => void;
  logger: Logger;
}

/** What a change does to the running parts. */
export interface ReconfigurePlan {
  /** Sources whose entry differs (added or changed), and removed ones. */
  changedSources: SourceConfig[];
  removedSources: string[];
  addedDestinations: DestinationConfig[];
  changedDestinations: DestinationConfig[];
  removedDestinations: string[];
}

/**
 * Applies a new configuration to a running embedded server, restarting only what changed:
 * write keys and privacy policies are swapped at once; the loader's quality stages (mapping,
 * plans, functions) are rebuilt for the sources that changed and swapped between two batches;
 * webhook receivers are opened anew; the pull sources' schedules start again; destinations
 * that were removed or changed stop, added and changed ones start (a changed one resumes from
 * its stored offset). What cannot change in a running process is refused with
 * `TRIB_ERR_CONFIG_NEEDS_RESTART` before anything is touched.
 */
export class Reconfigurer {
  private readonly unwatch = new Map<RunningDestination, () => void>();

  /** Watches the destinations started with the server (it stops and starts them from now on). */
  constructor(private readonly live: LiveParts) {
    for (const d of live.destinations) this.watch(d);
  }

  /**
   * What the change from the running configuration to `next` does.
   * @throws TributaryError `TRIB_ERR_CONFIG_NEEDS_RESTART` naming what cannot change live.
   */
  plan(next: TributaryConfig): ReconfigurePlan {
    const cur = this.live.config;
    const needs: string[] = [];
    const rest = (c: TributaryConfig) => ({ ...c, sources: undefined, destinations: undefined });
    const a = rest(cur) as Record<string, unknown>;
    const b = rest(next) as Record<string, unknown>;
    for (const k of new Set([...Object.keys(a), ...Object.keys(b)]))
      if (!dequal(a[k], b[k]))
        needs.push(`"${k}" changed; only sources, destinations, plans and functions change live`);

    const before = new Map(cur.sources.map((s) => [s.id, s]));
    const changedSources = next.sources.filter((s) => !dequal(before.get(s.id), s));
    const removedSources = cur.sources
      .filter((s) => !next.sources.some((n) => n.id === s.id))
      .map((s) => s.id);
    const wh = this.live.webhooks;
    for (const s of changedSources) {
      if (s.type !== 'webhook' || !s.enabled) continue;
      if (!wh)
        needs.push(
          `webhook source "${s.id}": the server started without webhook sources, so it has no /webhooks route`,
        );
      else if (s.maxBodyBytes > wh.bodyLimit)
        needs.push(
          `webhook source "${s.id}": maxBodyBytes ${s.maxBodyBytes} is above the route's limit set at start (${wh.bodyLimit})`,
        );
    }

    const dBefore = new Map(cur.destinations.map((d) => [d.id, d]));
    const addedDestinations: DestinationConfig[] = [];
    const changedDestinations: DestinationConfig[] = [];
    for (const d of next.destinations) {
      const old = dBefore.get(d.id);
      if (dequal(old, d)) continue;
      (old ? changedDestinations : addedDestinations).push(d);
      const problem = this.fileProblem(d);
      if (problem) needs.push(problem);
    }
    const removedDestinations = cur.destinations
      .filter((d) => !next.destinations.some((n) => n.id === d.id))
      .map((d) => d.id);
    if (needs.length > 0) throw new TributaryError('TRIB_ERR_CONFIG_NEEDS_RESTART', [needs.join('; ')]);
    return { changedSources, removedSources, addedDestinations, changedDestinations, removedDestinations };
  }

  /** A DuckDB file or lake folder the locked-down instance may not open, or undefined. */
  private fileProblem(d: DestinationConfig): string | undefined {
    const { dataDir, duckDBAllowed } = this.live;
    if (d.type === 'duckdb' && d.path !== undefined) {
      const file = resolve(destinationPath(dataDir, d.path));
      if (!duckDBAllowed.paths.includes(file))
        return `destination "${d.id}": a DuckDB file the server did not open at start (${file}); DuckDB is locked to its files once started`;
    }
    if (d.type === 'parquet') {
      const dir = resolve(destinationPath(dataDir, d.path));
      if (!duckDBAllowed.directories.includes(dir))
        return `destination "${d.id}": a lake folder the server did not open at start (${dir}); DuckDB is locked to its folders once started`;
    }
    return undefined;
  }

  /**
   * Applies `next`. Everything that can fail is done before `commit` (which stores the version):
   * the new stages and webhook receivers are built, and the destinations restarted; when one
   * of those fails, what was started is stopped, the old destinations are started again and
   * nothing else changed. After `commit`, the swaps cannot fail.
   * @throws TributaryError `TRIB_ERR_CONFIG_NEEDS_RESTART`, `TRIB_ERR_CONFIG_APPLY_FAILED`, or
   *   the error of a plan or function that does not load; or what `commit` throws.
   */
  async apply<T>(next: TributaryConfig, commit: () => Promise<T>): Promise<T> {
    const live = this.live;
    const plan = this.plan(next);
    // 1. Build: stages and privacy of the changed sources, receivers of the changed webhooks.
    const built = await buildQuality(plan.changedSources, live.baseDir, live.salt, live.env);
    let receivers = new Map<string, PushReceiver>();
    try {
      if (live.webhooks)
        receivers = await openWebhooks(plan.changedSources, { baseDir: live.baseDir, env: live.env });
    } catch (err) {
      await closeAll(built.stages);
      throw err;
    }
    const discard = async () => {
      await closeAll(built.stages);
      await Promise.all([...receivers.values()].map((r) => r.close()));
    };
    // 2. Destinations: stop the removed and changed ones, start the added and changed ones.
    let undo: () => Promise<void>;
    try {
      undo = await this.swapDestinations(plan);
    } catch (err) {
      await discard();
      throw err;
    }
    let result: T;
    try {
      result = await commit();
    } catch (err) {
      await undo();
      await discard();
      throw err;
    }
    // 3. Swap what cannot fail.
    const touched = new Set([...plan.changedSources.map((s) => s.id), ...plan.removedSources]);
    live.config.sources.splice(0, live.config.sources.length, ...next.sources);
    live.config.destinations.splice(0, live.config.destinations.length, ...next.destinations);
    live.sourcesByWriteKey.clear();
    for (const s of next.sources)
      if (s.enabled && s.type === 'http') live.sourcesByWriteKey.set(s.writeKey, s);
    const privacy = live.quality.privacy as Map<string, PiiClassifier>;
    for (const id of touched) privacy.delete(id);
    for (const [id, p] of built.privacy) privacy.set(id, p);
    const stages = new Map(live.quality.stages);
    const old: Stage[] = [];
    for (const id of touched) {
      old.push(...(stages.get(id) ?? []));
      stages.delete(id);
    }
    for (const [id, list] of built.stages) stages.set(id, list);
    if (live.webhooks) {
      const r = live.webhooks.receivers;
      const closing: PushReceiver[] = [];
      for (const id of touched) {
        const was = r.get(id);
        if (was) closing.push(was);
        r.delete(id);
      }
      for (const [id, w] of receivers) r.set(id, w);
      // A request already past the lookup finishes with the receiver it found.
      setImmediate(() => void Promise.all(closing.map((w) => w.close())).catch(() => undefined));
    }
    live.sources.stopSchedules();
    live.sources.startSchedules();
    await live.loader.replaceStages(stages);
    for (const s of old) await s.close?.();
    const mine = live.quality.stages as Map<string, Stage[]>;
    mine.clear();
    for (const [id, list] of stages) mine.set(id, list);
    return result;
  }

  /** Stops and starts the destinations of `plan`; returns what puts the old ones back. */
  private async swapDestinations(plan: ReconfigurePlan): Promise<() => Promise<void>> {
    const live = this.live;
    const stopIds = new Set([...plan.removedDestinations, ...plan.changedDestinations.map((d) => d.id)]);
    const stopped: DestinationConfig[] = [];
    const started: RunningDestination[] = [];
    const undo = async () => {
      for (const d of started) await this.stopOne(d);
      for (const c of stopped) live.destinations.push(this.watch(await live.startDestination(c)));
    };
    try {
      for (const id of stopIds) {
        const d = live.destinations.find((x) => x.id === id);
        const c = live.config.destinations.find((x) => x.id === id);
        if (d) await this.stopOne(d);
        if (c?.enabled) stopped.push(c);
      }
      for (const c of [...plan.addedDestinations, ...plan.changedDestinations]) {
        if (!c.enabled) continue;
        const d = this.watch(await live.startDestination(c));
        started.push(d);
        live.destinations.push(d);
      }
    } catch (err) {
      await undo().catch((e) => live.logger.error({ err: e }, 'a destination could not be started again'));
      if (err instanceof TributaryError && err.code !== 'TRIB_ERR_DESTINATION_SETUP') throw err;
      throw new TributaryError('TRIB_ERR_CONFIG_APPLY_FAILED', [(err as Error).message], { cause: err });
    }
    return undo;
  }

  private watch(d: RunningDestination): RunningDestination {
    const stop = this.live.watchDestination?.(d);
    if (stop) this.unwatch.set(d, stop);
    return d;
  }

  private async stopOne(d: RunningDestination): Promise<void> {
    const list = this.live.destinations;
    const i = list.indexOf(d);
    if (i >= 0) list.splice(i, 1);
    this.unwatch.get(d)?.();
    this.unwatch.delete(d);
    await d.stop();
  }
}

async function closeAll(stages: ReadonlyMap<string, readonly Stage[]>): Promise<void> {
  for (const list of stages.values()) for (const s of list) await s.close?.();
}

/**
 * The checks of a configuration beyond its schema that `tributary config check` and a start
 * make: plan files load, function files compile, webhook functions compile, no lake folder
 * holds the data folder. @throws the TributaryError of the first problem.
 */
export function checkConfig(config: TributaryConfig, baseDir: string, dataDir: string): void {
  checkQuality(config.sources, baseDir, config.destinations);
  checkWebhooks(config.sources, baseDir);
  duckDBFiles(dataDir, config);
}

/** The body limit of the `/webhooks/:sourceId` route, as `webhookRoutes` sets it at start. */
export function webhookBodyLimit(receivers: ReadonlyMap<string, PushReceiver>): number {
  let largest = 1024;
  for (const w of receivers.values()) largest = Math.max(largest, w.maxBodyBytes);
  return largest;
}
