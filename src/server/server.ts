import { mkdirSync } from 'node:fs';
import { isAbsolute, join, relative, resolve } from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { TributaryConfig } from '../config/schema.js';
import { type RunningStreamDestination, startStreamDestinations } from '../destinations/delivery/index.js';
import { destinationPath, type RunningDestination, startDestinations } from '../destinations/runner.js';
import type { AttemptRecorder } from '../destinations/stream.js';
import { TributaryError } from '../errors.js';
import { DuckDBIdentityStore } from '../identity/duckdb/duckdb-identity-store.js';
import { compileRules } from '../identity/identifiers.js';
import { IdentityMetrics } from '../identity/identity-metrics.js';
import { IdentityStage } from '../identity/identity-stage.js';
import { MatchScheduler, ProfileMatching } from '../identity/matching/profile-matching.js';
import type { DuckDBEventLog } from '../log/duckdb/duckdb-event-log.js';
import { StallWatch } from '../observe/health.js';
import { Metrics } from '../observe/metrics.js';
import { QualityMetrics } from '../observe/quality-metrics.js';
import { collectStats } from '../observe/stats.js';
import { EventFeed } from '../pipeline/event-feed.js';
import type { FailedStore } from '../pipeline/failed-store.js';
import { WarehouseLoader } from '../pipeline/warehouse-loader.js';
import { lockDownDuckDB } from '../platform/duckdb/duckdb-options.js';
import type { SourceService } from '../sources/source-service.js';
import { closeWebhooks, openWebhooks } from '../sources/webhook/index.js';
import { DuckDBSourceStore } from '../store/duckdb/duckdb-source-store.js';
import { DuckDBStore } from '../store/duckdb/duckdb-store.js';
import { collectionParts, listen, loaderObserver } from './collection.js';
import { buildHttpApp } from './http-app.js';
import { queryLimits, sampleStalls, watchPipeline } from './pipeline-health.js';
import { pullSources } from './pull-sources.js';
import { buildQuality, closeStages, workspaceSalt } from './quality-setup.js';
import { shutdownWithin } from './shutdown.js';
import { openWorkspaceFiles } from './workspace-files.js';

export interface ServerOptions {
  config: TributaryConfig;
  /** Folder of the DuckDB files. */
  dataDir: string;
  adminToken: string;
  logger: Logger;
  /** Overrides `config.server.port` (0 picks a free port). */
  port?: number;
  host?: string;
  /** Folder that plan and function files are relative to (the configuration file's). Default: the working directory. */
  configDir?: string;
  /** Environment variables transformations may be granted. Default: none. */
  env?: Record<string, string | undefined>;
  /** Salt of PII hashes. Default: `<dataDir>/pii-salt`, generated on first start. */
  piiSalt?: string;
  /** Where the streaming destinations record each delivery attempt (lineage). Default: not recorded. */
  attempts?: AttemptRecorder;
}

export interface RunningServer {
  url: string;
  port: number;
  app: FastifyInstance;
  log: DuckDBEventLog;
  warehouse: DuckDBStore;
  loader: WarehouseLoader;
  /** Where later stages (identity, destinations) follow the events the loader stored. */
  feed: EventFeed;
  /** The warehouse destinations following the feed (`destinations:` in the configuration). */
  destinations: RunningDestination[];
  /** The streaming destinations (http, …) following the feed through their delivery queues. */
  streams: RunningStreamDestination[];
  /** The pull sources: syncs, imports, schedules. */
  sources: SourceService;
  /** Identity resolution following the feed (undefined when `identity.enabled` is false). */
  identity: IdentityStage | undefined;
  metrics: Metrics;
  quality: QualityMetrics;
  failed: FailedStore;
  /**
   * Stops taking requests, drains in-flight ones and the loader, then closes the databases;
   * rejects with `TRIB_ERR_SERVER_SHUTDOWN_TIMEOUT` after `server.shutdownTimeout` if a part is stuck.
   */
  close(): Promise<void>;
}

/**
 * The composition root of the embedded deployment: one DuckDB instance whose main
 * database (`warehouse.duckdb`) holds the warehouse, and whose attached databases hold the
 * event log: `log` (`log.duckdb`: consumer offsets, the `raw_events` view) and the segment
 * files under `log-segments/`, each with its own WAL.
 */
export async function startServer(opts: ServerOptions): Promise<RunningServer> {
  const { config, logger } = opts;
  const dataDir = resolve(opts.dataDir);
  mkdirSync(dataDir, { recursive: true });
  // Before any file is opened: a lake folder holding the data folder is refused here.
  const duckDBAllowed = duckDBFiles(dataDir, config);
  // First, so a plan or function that does not load stops the start before any file is opened.
  const qualitySetup = await buildQuality(
    config.sources,
    opts.configDir ?? process.cwd(),
    opts.piiSalt ?? workspaceSalt(dataDir),
    opts.env ?? {},
  );
  const { instance, log } = await openWorkspaceFiles(dataDir, config.storage);
  const warehouse = await DuckDBStore.open(instance);
  // The loader resumes from the warehouse's offset: past the log's end, the events appended
  // next would be skipped as loaded.
  const loadedUpTo = await warehouse.consumerOffset('warehouse');
  if (loadedUpTo > log.endOffset()) {
    const end = log.endOffset();
    await log.close();
    await warehouse.close();
    instance.closeSync();
    throw new TributaryError('TRIB_ERR_LOG_BEHIND_WAREHOUSE', [loadedUpTo, end]);
  }
  let loader: WarehouseLoader | undefined;
  const metrics = new Metrics({ endOffset: () => log.endOffset(), loaded: () => loader?.position() ?? 0 });
  const quality = new QualityMetrics(metrics.registry);
  // The reconciled counts cover what this process received: records from the log's end on.
  const countFrom = log.endOffset();
  loader = new WarehouseLoader(log, warehouse, {
    stages: qualitySetup.stages,
    countFrom,
    dedupeWindowMs: config.pipeline.dedupe.window,
    observer: loaderObserver(metrics, quality, (err) =>
      logger.error({ err }, 'warehouse loader failed; retrying'),
    ),
  });
  await loader.start();
  const feed = new EventFeed(warehouse, loader);
  let destinations: RunningDestination[] = [];
  let streams: RunningStreamDestination[] = [];
  try {
    destinations = await startDestinations({
      destinations: config.destinations,
      scope: { workspace: config.workspace, logId: log.id },
      instance,
      dataDir,
      feed,
      logger,
      registry: metrics.registry,
      endOffset: () => log.endOffset(),
      warehouse,
      checkpoints: warehouse.checkpoints,
      baseDir: opts.configDir ?? process.cwd(),
      env: opts.env ?? {},
    });
    streams = await startStreamDestinations({
      destinations: config.destinations,
      feed,
      store: warehouse,
      logger,
      registry: metrics.registry,
      endOffset: () => log.endOffset(),
      loaderPosition: () => loader.position(),
      dataDir,
      baseDir: opts.configDir ?? process.cwd(),
      env: opts.env ?? {},
      attempts: opts.attempts,
    });
  } catch (err) {
    for (const d of destinations) await d.stop();
    await loader.stop();
    await closeStages(qualitySetup.stages);
    await log.close();
    await warehouse.close();
    instance.closeSync();
    throw err;
  }
  let identityStore: DuckDBIdentityStore | undefined;
  let identity: IdentityStage | undefined;
  let identityError: unknown;
  let matching: ProfileMatching | undefined;
  let scheduler: MatchScheduler | undefined;
  if (config.identity.enabled) {
    identityStore = await DuckDBIdentityStore.open(instance, { computed: config.identity.computed });
    const identityMetrics = new IdentityMetrics(metrics.registry, () => ({
      profiles: identity?.profileCount() ?? 0,
      lag: Math.max(0, (loader?.position() ?? 0) - (identity?.position() ?? 0)),
    }));
    identity = await IdentityStage.open(identityStore, compileRules(config.identity), {
      onError: (err) => {
        identityError = err;
        logger.error({ err }, 'identity resolution failed; retrying');
      },
      onCommitted: (changes) => {
        identityError = undefined;
        identityMetrics.committed(changes);
        scheduler?.noteChanges(changes);
      },
    });
    if (config.identity.matching.enabled) {
      const m = config.identity.matching;
      matching = await ProfileMatching.open(instance, identity, m);
      scheduler = new MatchScheduler(matching, {
        incremental: m.incremental,
        everyMs: m.schedule,
        onError: (err) => logger.error({ err }, 'probabilistic matching failed; the next round tries again'),
      });
    }
    identity.follow(feed);
  }
  // Pull sources write objects and state in the warehouse file and append their events to the log.
  const sourceStore = await DuckDBSourceStore.open(instance, { checkpoints: warehouse.checkpoints });
  await sourceStore.abandonRuns();
  const sources = pullSources(config.sources, {
    store: sourceStore,
    log,
    baseDir: opts.configDir ?? process.cwd(),
    logger,
  });
  // The server's own ATTACHes are done: from here the instance reads and writes only its files,
  // so SQL from /admin/v1/query (vetted as well) cannot reach the host.
  await lockDownDuckDB(instance, duckDBAllowed);
  // Health: each part of the pipeline against the work waiting for it.
  const stalls = new StallWatch({
    stallAfterMs: config.server.health.stallAfter,
    registry: metrics.registry,
  });
  watchPipeline(stalls, {
    loader,
    logEnd: () => log.endOffset(),
    destinations: [...destinations, ...streams],
    identity,
    identityError: () => identityError,
  });
  const stopSampling = sampleStalls(stalls, config.server.health.stallAfter);
  log.onMaintenanceError = (err) => logger.warn({ err }, 'event log maintenance failed; the log goes on');
  warehouse.onCheckpointError = (err) =>
    logger.debug({ err }, 'checkpoint skipped; retried after the next write');

  const { sourcesByWriteKey, observer, failed } = collectionParts({
    sources: config.sources,
    metrics,
    quality,
    warehouse,
    log,
    drained: () => loader.drained(),
    destination: (id) => [...destinations, ...streams].find((d) => d.id === id)?.retry,
  });
  const pending = async () => {
    const from = Math.max(countFrom, loader.position());
    const r = await warehouse.query(
      `SELECT source_id, count(*) AS n FROM log.raw_events
       WHERE status = 'accepted' AND log_offset >= ${from} AND log_offset < ${log.endOffset()} GROUP BY source_id`,
    );
    return new Map(r.rows.map((row) => [String(row.source_id), Number(row.n)]));
  };

  const webhooks = await openWebhooks(config.sources, {
    baseDir: opts.configDir ?? process.cwd(),
    env: opts.env ?? {},
  });
  const app = await buildHttpApp({
    webhooks,
    sources: config.sources,
    sourcesByWriteKey,
    log,
    queries: warehouse,
    queryLimits: queryLimits(config),
    metrics,
    adminToken: opts.adminToken,
    logger,
    publicUrl: config.server.publicUrl,
    limits: config.server,
    observer,
    privacy: qualitySetup.privacy,
    quality: {
      failed,
      stats: () => collectStats({ metrics, quality, pending, sources: config.sources.map((s) => s.id) }),
      destinations: () => streams.map((d) => d.progress()),
    },
    health: () => ({
      ...stalls.check(),
      log: { endOffset: log.endOffset() },
      loader: { position: loader.position() },
      destinations: Object.fromEntries([
        ...destinations.map((d) => [d.id, { position: d.position() }]),
        ...streams.map((d) => [d.id, d.progress()]),
      ]),
      ...(identity ? { identity: { position: identity.position(), profiles: identity.profileCount() } } : {}),
    }),
    identity,
    matching,
    profileIdOf: (text) => {
      try {
        return identity?.lookup(text)?.id;
      } catch {
        return undefined;
      }
    },
    profileReadToken: config.identity.readToken,
    sourceAdmin: {
      sources,
      uploadDir: join(dataDir, 'uploads'),
      onError: (id, err) => logger.error({ err, source: id }, 'sync failed'),
    },
  });
  const { url, port } = await listen(app, opts.host ?? config.server.host, opts.port ?? config.server.port);
  sources.startSchedules();

  let closing: Promise<void> | undefined;
  return {
    url,
    port,
    app,
    log,
    warehouse,
    loader,
    feed,
    destinations,
    streams,
    sources,
    identity,
    metrics,
    quality,
    failed,
    close() {
      stopSampling();
      // Bounded: a load that cannot go on must not keep the process from exiting. Draining
      // takes at most half the time; whatever is left is loaded from the log at the next start.
      closing ??= shutdownWithin(config.server.shutdownTimeout, async ({ at, left, upTo }) => {
        at('source syncs stopping');
        await upTo(sources.stop(), left() / 4);
        at('HTTP requests in flight');
        await app.close();
        await closeWebhooks(webhooks);
        at('the loader draining the log');
        await upTo(loader.drained(), left() / 2);
        // Destinations catch up after a restart anyway (their offset is stored with their rows),
        // so an unreachable one does not hold the shutdown for long.
        at('destinations draining');
        await upTo(Promise.all(destinations.map((d) => d.drained())), Math.min(10_000, left() / 2));
        for (const d of destinations) {
          at(`destination ${d.id} stopping`);
          await d.stop();
        }
        // What is queued stays in the delivery queue and is sent after the restart.
        for (const d of streams) {
          at(`streaming destination ${d.id} stopping`);
          await d.stop();
        }
        at('the loader stopping');
        await loader.stop();
        at('transformations closing');
        await closeStages(qualitySetup.stages);
        at('identity resolution stopping');
        await upTo(identity?.drained() ?? Promise.resolve(), left() / 2);
        await scheduler?.stop();
        await matching?.close();
        await identity?.stop();
        await identityStore?.close();
        at('closing the log and the warehouse');
        await sourceStore.close();
        await log.close();
        await warehouse.close();
        instance.closeSync();
      });
      return closing;
    },
  };
}

/**
 * What the embedded DuckDB instance may open once locked down: its database files and their
 * WALs, the folder new log segments go to, and each destination's DuckDB file or lake folder.
 * Not the data folder itself, which holds the PII salt (`pii-salt`).
 */
function duckDBFiles(dataDir: string, config: TributaryConfig): { paths: string[]; directories: string[] } {
  const at = (p: string) => destinationPath(dataDir, p);
  const files = [join(dataDir, 'warehouse.duckdb'), join(dataDir, 'log.duckdb')];
  const directories = [join(dataDir, 'log-segments')];
  for (const d of config.destinations) {
    if (d.type === 'duckdb' && d.path !== undefined) files.push(at(d.path));
    if (d.type !== 'parquet') continue;
    const inside = relative(at(d.path), dataDir);
    if (inside === '' || !(inside.startsWith('..') || isAbsolute(inside)))
      throw new TributaryError('TRIB_ERR_CONFIG_INVALID', [
        `  destinations.${d.id}.path: the lake folder ${at(d.path)} holds the data folder, where the PII salt is; give the lake a folder of its own (the default is under the data folder: path: lake)`,
      ]);
    directories.push(at(d.path));
  }
  return { paths: files.flatMap((f) => [f, `${f}.wal`]), directories };
}
