import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import type { TributaryConfig } from '../config/schema.js';
import { deletionNotifiers } from '../destinations/delivery/deletion-notifiers.js';
import { type RunningStreamDestination, startStreamDestinations } from '../destinations/delivery/index.js';
import { destinationKind, isStreamKind } from '../destinations/registry.js';
import { ReplayService } from '../destinations/replay/replay-service.js';
import {
  type OpenedReplayTarget,
  openWarehouseReplayTarget,
  type ReplayTarget,
  warehouseReplayTarget,
} from '../destinations/replay/replay-target.js';
import { ModelService } from '../destinations/reverse-etl/model-service.js';
import type { OpenDestination } from '../destinations/reverse-etl/model-sync.js';
import { openFromConfig } from '../destinations/reverse-etl/open-destination.js';
import { type RunningDestination, startDestinations } from '../destinations/runner.js';
import type { AttemptRecorder } from '../destinations/stream.js';
import { TributaryError } from '../errors.js';
import type { Governance } from '../governance/governance.js';
import { type DeletionNotifier, DeletionService } from '../governance/privacy/deletion-service.js';
import { Suppressions, suppressingLog } from '../governance/privacy/suppressions.js';
import { DuckDBIdentityStore } from '../identity/duckdb/duckdb-identity-store.js';
import { compileRules } from '../identity/identifiers.js';
import { IdentityMetrics } from '../identity/identity-metrics.js';
import { IdentityStage } from '../identity/identity-stage.js';
import { MatchScheduler, ProfileMatching } from '../identity/matching/profile-matching.js';
import type { DuckDBEventLog } from '../log/duckdb/duckdb-event-log.js';
import { StallWatch } from '../observe/health.js';
import { LineageRecorder } from '../observe/lineage/attempt-recorder.js';
import { Metrics } from '../observe/metrics.js';
import { QualityMetrics } from '../observe/quality-metrics.js';
import { collectStats } from '../observe/stats.js';
import { EventFeed } from '../pipeline/event-feed.js';
import type { FailedStore } from '../pipeline/failed-store.js';
import { WarehouseLoader } from '../pipeline/warehouse-loader.js';
import { lockDownDuckDB } from '../platform/duckdb/duckdb-options.js';
import type { SourceService } from '../sources/source-service.js';
import { closeWebhooks, openWebhooks } from '../sources/webhook/index.js';
import { DuckDBGovernanceStore } from '../store/duckdb/duckdb-governance-store.js';
import { DuckDBModelStore } from '../store/duckdb/duckdb-model-store.js';
import { DuckDBRegulationStore } from '../store/duckdb/duckdb-regulation-store.js';
import { DuckDBSourceStore } from '../store/duckdb/duckdb-source-store.js';
import { DuckDBStore } from '../store/duckdb/duckdb-store.js';
import { collectionParts, listen, loaderObserver } from './collection.js';
import { ConfigService, embeddedConfigAtStart } from './config-service.js';
import { duckDBFiles } from './duckdb-files.js';
import { setUpGovernance } from './governance-setup.js';
import { buildHttpApp } from './http-app.js';
import { queryLimits, sampleStalls, watchPipeline } from './pipeline-health.js';
import { pullSources } from './pull-sources.js';
import { buildQuality, closeStages, workspaceSalt } from './quality-setup.js';
import { checkConfig, Reconfigurer, webhookBodyLimit } from './reconfigure.js';
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
  /**
   * The configuration file `config` was read from. With it the server keeps the
   * configuration's versions and takes changes through `/admin/v1/config` (applied without a
   * restart); at start the file wins when it changed since it was last read, else the latest
   * version runs (docs/configuration.md, "The file and the admin API").
   */
  configFile?: { text: string; path: string };
  /**
   * Opens a streaming destination by id for a reverse-ETL run (`models:`). Default: none, so
   * every model's run fails with TRIB_ERR_RETL_DESTINATION.
   */
  openStreamDestination?: OpenDestination;
  /** Where the streaming destinations record each delivery attempt. Default: the lineage store. */
  attempts?: AttemptRecorder;
  /** Pause between the deletion worker's rounds over unfinished deletion requests. Default `privacy.deletionRetry`. */
  deletionRetryMs?: number;
  /**
   * Whether a request reads personal data masked (SQL of `/admin/v1/query`, the Profile API).
   * Default: the roles below admin (`readsMasked` of src/governance/roles.ts).
   */
  maskPersonal?: (req: FastifyRequest) => boolean;
  /**
   * Destinations told of each deletion (one `notify:<name>` step each). Default: the
   * configured streaming destinations that take deletions (`deleteIdentities`).
   */
  deletionNotifiers?: () => readonly { name: string; notify: DeletionNotifier }[];
}

export interface RunningServer {
  url: string;
  /** The configuration running: the file's, or the latest version made through the admin API. */
  config: TributaryConfig;
  port: number;
  app: FastifyInstance;
  log: DuckDBEventLog;
  warehouse: DuckDBStore;
  loader: WarehouseLoader;
  /** Where later stages (identity, destinations) follow the events the loader stored. */
  feed: EventFeed;
  /** The warehouse destinations following the feed (`destinations:` in the configuration). */
  destinations: RunningDestination[];
  /** The pull sources: syncs, imports, schedules. */
  sources: SourceService;
  /** Reverse ETL: the models, run on demand and on their schedules. */
  models: ModelService;
  /** Identity resolution following the feed (undefined when `identity.enabled` is false). */
  identity: IdentityStage | undefined;
  metrics: Metrics;
  quality: QualityMetrics;
  failed: FailedStore;
  /** The streaming destinations (http, brokers, table upserts) now running, through their queues. */
  readonly streams: RunningStreamDestination[];
  /** Delivery attempts for `tributary trace`: the delivery runner's `AttemptRecorder`. */
  lineage: LineageRecorder;
  /** `tributary replay`: runs and their records. */
  replays: ReplayService;
  /** Deletion requests and their worker (src/governance/privacy/). */
  deletions: DeletionService;
  /** Users, sessions, tokens and the audit trail. */
  governance: Governance;
  /** The owner made at this start because there was no user (its password is shown once). */
  firstOwner: { name: string; password: string } | undefined;
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
  const { logger } = opts;
  const dataDir = resolve(opts.dataDir);
  mkdirSync(dataDir, { recursive: true });
  const baseDir = opts.configDir ?? process.cwd();
  const env = opts.env ?? {};
  const atStart =
    opts.configFile &&
    (await embeddedConfigAtStart(dataDir, { ...opts.configFile, config: opts.config }, env, logger));
  // Its lists of sources and destinations are the running ones: the Reconfigurer edits them in place.
  const config: TributaryConfig = { ...(atStart?.config ?? opts.config) };
  config.sources = [...config.sources];
  config.destinations = [...config.destinations];
  const salt = opts.piiSalt ?? workspaceSalt(dataDir);
  // Before any file is opened: a lake folder holding the data folder is refused here.
  const duckDBAllowed = duckDBFiles(dataDir, config);
  // First, so a plan or function that does not load stops the start before any file is opened.
  const qualitySetup = await buildQuality(config.sources, baseDir, salt, env);
  const { instance, log } = await openWorkspaceFiles(dataDir, config.storage);
  const warehouse = await DuckDBStore.open(instance);
  // Analysts' and viewers' queries read masked views (keyed with the workspace's PII salt).
  warehouse.masking = { salt, personalColumns: config.privacy.personalColumns };
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
  // Deletion requests and the suppression list (src/governance/privacy/), in the warehouse file.
  const regulations = await DuckDBRegulationStore.open(instance);
  const suppressions = new Suppressions(salt, regulations, metrics.registry);
  await suppressions.refresh();
  // Sources that append to the log themselves leave suppressed identities' events out.
  const sourceLog = suppressingLog(log, suppressions);
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
  const destinationOptions = {
    scope: { workspace: config.workspace, logId: log.id },
    instance,
    dataDir,
    feed,
    logger,
    registry: metrics.registry,
    endOffset: () => log.endOffset(),
    warehouse,
    checkpoints: warehouse.checkpoints,
    baseDir,
    env,
  };
  // Lineage: delivery attempts (written in batches, purged past the retention).
  const lineage = new LineageRecorder(warehouse, {
    retentionMs: config.lineage.retention,
    onError: (err) =>
      logger.warn({ err }, 'lineage: delivery attempts not written; retried with the next batch'),
  });
  lineage.start();
  // Streaming destinations deliver from their queues in the store (src/destinations/delivery/).
  const streamOptions = {
    feed,
    store: warehouse,
    logger,
    registry: metrics.registry,
    endOffset: () => log.endOffset(),
    loaderPosition: () => loader.position(),
    dataDir,
    baseDir,
    env,
    attempts: opts.attempts ?? lineage,
  };
  const startDestination = async (c: TributaryConfig['destinations'][number]) =>
    isStreamKind(destinationKind(c.type))
      ? (await startStreamDestinations({ ...streamOptions, destinations: [c] }))[0]!
      : (await startDestinations({ ...destinationOptions, destinations: [c] }))[0]!;
  let destinations: RunningDestination[] = [];
  try {
    destinations = await startDestinations({ ...destinationOptions, destinations: config.destinations });
    destinations.push(
      ...(await startStreamDestinations({ ...streamOptions, destinations: config.destinations })),
    );
  } catch (err) {
    for (const d of destinations) await d.stop();
    await lineage.stop();
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
  const governanceStore = await DuckDBGovernanceStore.open(instance);
  const governed = await setUpGovernance(governanceStore, config, logger);
  const sources = pullSources(config.sources, {
    store: sourceStore,
    log: sourceLog,
    baseDir,
    logger,
  });
  // Reverse ETL: snapshots and runs in the warehouse file, models run on its DuckDB (vetted SQL).
  const modelStore = await DuckDBModelStore.open(instance);
  const models = new ModelService(config.models, {
    store: modelStore,
    openDestination:
      opts.openStreamDestination ??
      openFromConfig(
        config.destinations,
        (t) => {
          const kind = destinationKind(t);
          return isStreamKind(kind) ? kind : undefined;
        },
        { dataDir, env },
      ),
    onScheduleError: (id, err) => logger.error({ err, model: id }, 'scheduled model run failed'),
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
    // Watched one by one by the Reconfigurer, which starts and stops them.
    destinations: [],
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
    destination: (id) => destinations.find((d) => d.id === id)?.retry,
  });
  const pending = async () => {
    const from = Math.max(countFrom, loader.position());
    const r = await warehouse.query(
      `SELECT source_id, count(*) AS n FROM log.raw_events
       WHERE status = 'accepted' AND log_offset >= ${from} AND log_offset < ${log.endOffset()} GROUP BY source_id`,
    );
    return new Map(r.rows.map((row) => [String(row.source_id), Number(row.n)]));
  };

  // Replay: the current pipeline over the raw archive, into the chosen destinations.
  const replays = new ReplayService({
    archive: log,
    stages: qualitySetup.stages,
    store: warehouse,
    targets: async () => {
      const targets = new Map<string, ReplayTarget>();
      for (const d of destinations) {
        const t = warehouseReplayTarget(d);
        if (t) targets.set(t.id, t);
      }
      // Destinations configured but not enabled are opened for the run: a backfill of the range.
      const opened: OpenedReplayTarget[] = [];
      try {
        for (const c of config.destinations) {
          if (c.enabled || targets.has(c.id)) continue;
          const t = await openWarehouseReplayTarget(c, {
            instance,
            dataDir,
            offsetKey: c.id,
            checkpoints: warehouse.checkpoints,
            scope: { workspace: config.workspace, logId: log.id },
            store: warehouse,
            baseDir,
            env,
          });
          if (t) {
            opened.push(t);
            targets.set(t.id, t);
          }
        }
      } catch (err) {
        for (const t of opened) await t.close();
        throw err;
      }
      return {
        targets,
        close: async () => {
          for (const t of opened) await t.close();
        },
      };
    },
    sources: config.sources.map((s) => s.id),
    onError: (err) => logger.error({ err }, 'replay failed'),
  });
  await replays.abandonRuns();

  const webhooks = await openWebhooks(config.sources, { baseDir, env });
  const reconfigurer = new Reconfigurer({
    config,
    baseDir,
    env,
    salt,
    dataDir,
    loader,
    quality: qualitySetup,
    sourcesByWriteKey,
    webhooks: webhooks.size > 0 ? { receivers: webhooks, bodyLimit: webhookBodyLimit(webhooks) } : undefined,
    sources,
    destinations,
    startDestination,
    duckDBAllowed,
    watchDestination: (d) =>
      stalls.watch({
        name: `destination:${d.id}`,
        position: () => d.position(),
        target: () => loader.position(),
        lastError: () => d.lastError(),
      }),
    logger,
  });
  const deletions = new DeletionService({
    regulations,
    suppressions,
    store: warehouse,
    identity,
    notifiers: opts.deletionNotifiers ?? (() => deletionNotifiers(config.destinations, { dataDir, env })),
    stores: () => [
      { step: 'log', erase: (t) => log.erase(t) },
      ...destinations.flatMap((d) =>
        d.erase ? [{ step: `destination:${d.id}`, erase: d.erase.bind(d) }] : [],
      ),
    ],
    drained: async () => {
      await loader.drained();
      await identity?.drained();
      await Promise.all(destinations.map((d) => d.drained()));
    },
    scrub: async () => {
      await warehouse.scrub();
      await log.scrub();
    },
    retryMs: opts.deletionRetryMs ?? config.privacy.deletionRetry,
    onError: (err, regulation, step) =>
      logger.warn({ err, regulation, step }, 'deletion step failed; retried later'),
  });
  const app = await buildHttpApp({
    webhooks,
    deletions,
    maskPersonal: opts.maskPersonal,
    masking: { salt, personalColumns: config.privacy.personalColumns },
    suppressed: (sourceId, event) => suppressions.suppresses(sourceId, event),
    sources: config.sources,
    sourcesByWriteKey,
    log,
    webhookLog: sourceLog,
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
      destinations: () => streamsOf(destinations).map((d) => d.progress()),
    },
    health: () => ({
      ...stalls.check(),
      log: { endOffset: log.endOffset() },
      loader: { position: loader.position() },
      destinations: Object.fromEntries(
        destinations.map((d) => [
          d.id,
          'progress' in d ? (d as RunningStreamDestination).progress() : { position: d.position() },
        ]),
      ),
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
    configAdmin: {
      config:
        atStart &&
        new ConfigService({
          store: warehouse,
          current: atStart.version,
          env,
          crossCheck: (c) => checkConfig(c, baseDir, dataDir),
          apply: (c, commit) => reconfigurer.apply(c, commit),
        }),
    },
    sourceAdmin: {
      sources,
      uploadDir: join(dataDir, 'uploads'),
      onError: (id, err) => logger.error({ err, source: id }, 'sync failed'),
    },
    models: { models, onError: (id, err) => logger.error({ err, model: id }, 'model run failed') },
    lineage: {
      trace: {
        archive: log,
        store: warehouse,
        loaderPosition: () => loader.position(),
        identity,
        destinations: () => destinations,
      },
      replays,
    },
    governance: governed.governance,
  });
  const { url, port } = await listen(app, opts.host ?? config.server.host, opts.port ?? config.server.port);
  sources.startSchedules();
  await models.start();
  suppressions.start(10_000, (err) => logger.warn({ err }, 'suppression list refresh failed'));
  deletions.start();

  let closing: Promise<void> | undefined;
  return {
    url,
    config,
    port,
    app,
    log,
    warehouse,
    loader,
    feed,
    destinations,
    sources,
    models,
    identity,
    metrics,
    quality,
    failed,
    get streams() {
      return streamsOf(destinations);
    },
    lineage,
    replays,
    deletions,
    governance: governed.governance,
    firstOwner: governed.firstOwner,
    close() {
      stopSampling();
      governed.stop();
      // Bounded: a load that cannot go on must not keep the process from exiting. Draining
      // takes at most half the time; whatever is left is loaded from the log at the next start.
      closing ??= shutdownWithin(config.server.shutdownTimeout, async ({ at, left, upTo }) => {
        at('deletion worker stopping');
        suppressions.stop();
        await upTo(deletions.stop(), left() / 4);
        at('source syncs stopping');
        await upTo(sources.stop(), left() / 4);
        at('model runs stopping');
        await upTo(models.stop(), left() / 4);
        at('HTTP requests in flight');
        await app.close();
        await closeWebhooks(webhooks);
        at('the loader draining the log');
        await upTo(loader.drained(), left() / 2);
        // Destinations catch up after a restart anyway (their offset is stored with their rows),
        // so an unreachable one does not hold the shutdown for long.
        at('a replay finishing');
        await upTo(replays.idle(), left() / 4);
        at('destinations draining');
        await upTo(Promise.all(destinations.map((d) => d.drained())), Math.min(10_000, left() / 2));
        for (const d of destinations) {
          at(`destination ${d.id} stopping`);
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
        at('lineage writing its last attempts');
        await upTo(lineage.stop(), left() / 4);
        at('closing the log and the warehouse');
        await sourceStore.close();
        await modelStore.close();
        await regulations.close();
        await governanceStore.close();
        await log.close();
        await warehouse.close();
        instance.closeSync();
      });
      return closing;
    },
  };
}

/** The streaming destinations among the running ones. */
function streamsOf(destinations: readonly RunningDestination[]): RunningStreamDestination[] {
  return destinations.filter((d): d is RunningStreamDestination => 'progress' in d);
}
