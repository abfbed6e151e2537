import { hostname } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { LogConfig, StateConfig } from '../config/schema.js';
import { ReplayService } from '../destinations/replay/replay-service.js';
import { ModelService } from '../destinations/reverse-etl/model-service.js';
import { noStreamDestinations } from '../destinations/reverse-etl/model-sync.js';
import { type RunningDestination, startDestinations } from '../destinations/runner.js';
import { TributaryError } from '../errors.js';
import { compileRules } from '../identity/identifiers.js';
import { IdentityMetrics } from '../identity/identity-metrics.js';
import { PostgresIdentityStore, PostgresProfiles, SharedIdentityStage } from '../identity/postgres/index.js';
import { NatsEventLog } from '../log/nats/nats-event-log.js';
import { StallWatch } from '../observe/health.js';
import { Metrics } from '../observe/metrics.js';
import { QualityMetrics } from '../observe/quality-metrics.js';
import { collectStats } from '../observe/stats.js';
import { EventFeed } from '../pipeline/event-feed.js';
import { WarehouseLoader } from '../pipeline/warehouse-loader.js';
import type { PushReceiver } from '../sources/source.js';
import type { SourceService } from '../sources/source-service.js';
import { closeWebhooks, openWebhooks } from '../sources/webhook/index.js';
import { PostgresGovernanceStore } from '../store/postgres/postgres-governance-store.js';
import { type ModelReader, PostgresModelStore } from '../store/postgres/postgres-model-store.js';
import { PostgresSourceStore } from '../store/postgres/postgres-source-store.js';
import { PostgresStore } from '../store/postgres/postgres-store.js';
import { PostgresUserQueries } from '../store/postgres/postgres-user-query.js';
import type { UserQueries } from '../store/user-query.js';
import { collectionParts, listen, loaderObserver } from './collection.js';
import { type GovernanceSetup, setUpGovernance } from './governance-setup.js';
import { buildHttpApp } from './http-app.js';
import { PartitionLeases } from './partition-leases.js';
import { queryLimits, sampleStalls, watchPipeline } from './pipeline-health.js';
import { pullSources } from './pull-sources.js';
import { buildQuality, closeStages, workspaceSalt } from './quality-setup.js';
import type { ServerOptions } from './server.js';
import { shutdownWithin } from './shutdown.js';

/** What a process of the scale-out deployment does. */
export type Role = 'ingest' | 'worker' | 'all';

export interface ScaleOutOptions extends ServerOptions {
  role: Role;
}

export interface RunningScaleOut {
  role: Role;
  /** URL of the HTTP API, when this process serves one (ingest, all, or a worker given a port). */
  url: string | undefined;
  /** The owner made at this start because there was no user (its password is shown once). */
  firstOwner?: { name: string; password: string };
  /**
   * Stops the HTTP API, gives the partitions back (their pipelines finish their batch), closes
   * the connections; rejects with `TRIB_ERR_SERVER_SHUTDOWN_TIMEOUT` after `server.shutdownTimeout`.
   */
  close(): Promise<void>;
}

/** One partition's pipeline in a worker: loader → feed → identity and destinations. */
interface PartitionPipeline {
  partition: number;
  loader: WarehouseLoader;
  identity: SharedIdentityStage | undefined;
  stop(): Promise<void>;
}

/**
 * The composition root of the scale-out deployment: the event log is a NATS JetStream stream
 * split into partitions, the state (events, offsets, dedup index, failed events, identity)
 * lives in PostgreSQL. An `ingest` process serves the collection and admin API and appends to
 * the stream; a `worker` process takes a fair share of the partitions (leases on PostgreSQL
 * advisory locks) and runs for each the pipeline the embedded server runs: loader, identity
 * resolution, warehouse destinations, each storing its offset with its results. `all` does both.
 */
export async function startScaleOut(opts: ScaleOutOptions): Promise<RunningScaleOut> {
  const { config, logger, role } = opts;
  const logConfig = config.log as Extract<LogConfig, { type: 'nats' }>;
  const state = config.state as Extract<StateConfig, { type: 'postgres' }>;
  const baseDir = opts.configDir ?? process.cwd();
  const env = opts.env ?? {};
  // Every process of the workspace must hash PII the same way: the CLI passes
  // TRIBUTARY_PII_SALT (the same on every machine, docs/operations.md), else the data folder's.
  const salt = opts.piiSalt ?? workspaceSalt(opts.dataDir);
  const quality = await buildQuality(config.sources, baseDir, salt, env);

  const log = await NatsEventLog.open({
    servers: logConfig.servers,
    stream: logConfig.stream,
    partitions: logConfig.partitions,
    replicas: logConfig.replicas,
    duplicateWindowMs: logConfig.duplicateWindow,
    name: `tributary-${role}@${hostname()}:${process.pid}`,
  });
  let store: PostgresStore;
  try {
    store = await PostgresStore.open({
      url: state.connectionString,
      schema: state.schema,
      maxConnections: state.maxConnections,
    });
  } catch (err) {
    await log.close();
    throw err;
  }
  let identityStore: PostgresIdentityStore | undefined;
  if (config.identity.enabled && config.identity.matching.enabled)
    logger.warn(
      'identity.matching runs on the embedded (DuckDB) identity store only; it is off in scale-out',
    );
  try {
    if (config.identity.enabled) {
      identityStore = await PostgresIdentityStore.open({
        pool: store.pool,
        schema: state.schema,
        computed: config.identity.computed,
      });
      await identityStore.ensureViews();
    }
  } catch (err) {
    await store.close();
    await log.close();
    throw err;
  }
  const pipelines = new Map<number, PartitionPipeline>();
  const metrics = new Metrics({ endOffset: () => log.endOffset() });
  const qualityMetrics = new QualityMetrics(metrics.registry);
  const stalls = new StallWatch({
    stallAfterMs: config.server.health.stallAfter,
    registry: metrics.registry,
  });
  const rules = compileRules(config.identity);
  // The profile count for the gauge, read now and then (a count over the shared table).
  let profileCount = 0;
  const countProfiles = async () => {
    const r = await store.pool.query<{ n: string }>(`SELECT count(*) AS n FROM "${state.schema}".profiles`);
    profileCount = Number(r.rows[0]!.n);
  };
  const profileTimer =
    identityStore && role !== 'ingest'
      ? setInterval(() => void countProfiles().catch(() => undefined), 15_000).unref()
      : undefined;
  const identityMetrics = config.identity.enabled
    ? new IdentityMetrics(metrics.registry, () => ({
        profiles: profileCount,
        // Per partition, in that partition's offsets: what its loader stored and identity has not resolved.
        lag: [...pipelines.values()].reduce(
          (sum, p) =>
            sum + Math.max(0, p.loader.position() - (p.identity?.position() ?? p.loader.position())),
          0,
        ),
      }))
    : undefined;

  async function startPartition(p: number): Promise<PartitionPipeline> {
    const partitionStore = store.partition(p);
    const partitionLog = log.partition(p);
    const loader = new WarehouseLoader(partitionLog, partitionStore, {
      consumer: `loader-p${p}`,
      // Shared by the partitions of this process; closed when the process stops.
      stages: quality.stages,
      dedupeWindowMs: config.pipeline.dedupe.window,
      observer: loaderObserver(metrics, qualityMetrics, (err) =>
        logger.error({ err, partition: p }, 'loader failed; retrying'),
      ),
    });
    await loader.start();
    const feed = new EventFeed(partitionStore, loader);
    let identity: SharedIdentityStage | undefined;
    let identityError: unknown;
    let destinations: RunningDestination[] = [];
    try {
      if (config.identity.enabled) {
        identity = await SharedIdentityStage.open({
          pool: store.pool,
          schema: state.schema,
          rules,
          store: identityStore,
          consumer: `identity-p${p}`,
          onError: (err) => {
            identityError = err;
            logger.error({ err, partition: p }, 'identity resolution failed; retrying');
          },
          onCommitted: (changes) => {
            identityError = undefined;
            identityMetrics?.committed(changes);
          },
        });
        identity.follow(feed);
      }
      destinations = await startDestinations({
        destinations: config.destinations,
        scope: { workspace: config.workspace, logId: log.id },
        dataDir: opts.dataDir,
        feed,
        logger,
        registry: metrics.registry,
        // A destination's lag is counted in its partition: what the loader stored that it has not loaded.
        endOffset: () => loader.position(),
        warehouse: partitionStore,
        baseDir,
        env,
        offsetKeySuffix: `:p${p}`,
      });
    } catch (err) {
      await identity?.stop();
      await loader.stop();
      throw err;
    }
    // The partition log's end is what this process last learned of it: the loader's own
    // state (a batch in hand or failing) says when work waits too.
    const unwatch = watchPipeline(stalls, {
      suffix: `:p${p}`,
      loader,
      logEnd: () => partitionLog.endOffset(),
      destinations,
      identity,
      identityError: () => identityError,
    });
    return {
      partition: p,
      loader,
      identity,
      async stop() {
        unwatch();
        for (const d of destinations) await d.stop();
        await identity?.stop();
        await loader.stop();
      },
    };
  }

  let leases: PartitionLeases | undefined;
  if (role !== 'ingest') {
    leases = new PartitionLeases({
      connectionString: state.connectionString,
      namespace: `${state.schema}:${logConfig.stream}`,
      partitions: log.partitions,
      acquire: async (p) => {
        pipelines.set(p, await startPartition(p));
      },
      release: async (p) => {
        const pipeline = pipelines.get(p);
        pipelines.delete(p);
        await pipeline?.stop();
      },
      onError: (err) => logger.warn({ err }, 'partition leases: round failed; retrying'),
      onChange: (owned) => logger.info({ partitions: owned }, 'partitions of this worker'),
    });
    await leases.start();
  }

  let app: FastifyInstance | undefined;
  let url: string | undefined;
  let sources: SourceService | undefined;
  let models: ModelService | undefined;
  let webhooks: Map<string, PushReceiver> | undefined;
  let userQueries: PostgresUserQueries | undefined;
  let governed: GovernanceSetup | undefined;
  const serveHttp = role !== 'worker' || opts.port !== undefined;
  if (serveHttp) {
    const { sourcesByWriteKey, observer, failed } = collectionParts({
      sources: config.sources,
      metrics,
      quality: qualityMetrics,
      warehouse: store,
      log,
      // The workers load retries; this process cannot wait for them.
      drained: async () => undefined,
    });
    const profiles = identityStore ? new PostgresProfiles(identityStore, rules) : undefined;
    // The admin SQL runs as a read-only role of its own, or not at all.
    if (state.queryConnectionString !== undefined) {
      try {
        userQueries = await PostgresUserQueries.open({
          url: state.queryConnectionString,
          schema: state.schema,
        });
      } catch (err) {
        await leases?.stop();
        await closeStages(quality.stages);
        await log.close();
        await store.close();
        throw err;
      }
    }
    const queries: UserQueries = userQueries ?? {
      userQuery: async () => {
        throw new TributaryError('TRIB_ERR_QUERY_NOT_CONFIGURED');
      },
    };
    // Pull sources run in the processes that serve the admin API; a PostgreSQL advisory lock per
    // source keeps two processes from syncing one source at once.
    if (role !== 'worker') {
      const sourceStore = await PostgresSourceStore.open(store.pool, state.schema);
      sources = pullSources(config.sources, {
        store: sourceStore,
        log,
        baseDir: opts.configDir ?? process.cwd(),
        logger,
      });
      // Reverse ETL: models read as the query role, snapshots in the state; a lock per model
      // keeps two processes from running one model at once.
      const reader: ModelReader = userQueries ?? {
        // biome-ignore lint/correctness/useYield: it refuses before reading anything
        async *modelPages() {
          throw new TributaryError('TRIB_ERR_QUERY_NOT_CONFIGURED');
        },
      };
      models = new ModelService(config.models, {
        store: await PostgresModelStore.open(store.pool, state.schema, reader),
        openDestination: opts.openStreamDestination ?? noStreamDestinations,
        onScheduleError: (id, err) => logger.error({ err, model: id }, 'scheduled model run failed'),
      });
    }
    governed = await setUpGovernance(
      await PostgresGovernanceStore.open(store.pool, state.schema),
      config,
      logger,
    );
    webhooks = await openWebhooks(config.sources, { baseDir, env });
    app = await buildHttpApp({
      webhooks,
      sources: config.sources,
      sourcesByWriteKey,
      log,
      queries,
      queryLimits: queryLimits(config),
      metrics,
      adminToken: opts.adminToken,
      logger,
      publicUrl: config.server.publicUrl,
      limits: config.server,
      observer,
      privacy: role === 'worker' ? undefined : quality.privacy,
      quality: {
        failed,
        // Counts of this process; the pipeline's share is in each worker's metrics.
        stats: () =>
          collectStats({
            metrics,
            quality: qualityMetrics,
            pending: async () => new Map(),
            sources: config.sources.map((s) => s.id),
          }),
      },
      health: () => ({
        ...stalls.check(),
        role,
        pid: process.pid,
        log: { endOffset: log.endOffset() },
        ...(leases
          ? {
              partitions: Object.fromEntries(
                [...pipelines.values()].map((p) => [
                  p.partition,
                  { loader: p.loader.position(), identity: p.identity?.position() ?? null },
                ]),
              ),
            }
          : {}),
      }),
      identity: profiles,
      profileReadToken: config.identity.readToken,
      ...(models
        ? {
            models: {
              models,
              onError: (id: string, err: unknown) => logger.error({ err, model: id }, 'model run failed'),
            },
          }
        : {}),
      // Lineage without the raw archive (the NATS log has none yet): a trace starts at `events`,
      // and a replay answers TRIB_ERR_LINEAGE_UNSUPPORTED.
      lineage: {
        trace: { store, destinations: () => [] },
        replays: new ReplayService({
          archive: undefined,
          stages: quality.stages,
          store,
          targets: async () => ({ targets: new Map(), close: async () => {} }),
          sources: config.sources.map((s) => s.id),
        }),
      },
      governance: governed.governance,
      ...(sources
        ? {
            sourceAdmin: {
              sources,
              uploadDir: join(opts.dataDir, 'uploads'),
              onError: (id: string, err: unknown) => logger.error({ err, source: id }, 'sync failed'),
            },
          }
        : {}),
    });
    ({ url } = await listen(app, opts.host ?? config.server.host, opts.port ?? config.server.port));
    sources?.startSchedules();
    await models?.start();
  }

  const stopSampling = sampleStalls(stalls, config.server.health.stallAfter);
  let closing: Promise<void> | undefined;
  return {
    role,
    url,
    firstOwner: governed?.firstOwner,
    close() {
      clearInterval(profileTimer);
      stopSampling();
      governed?.stop();
      // Bounded: a partition whose load cannot go on must not keep the process from exiting;
      // its lease ends with the process, and another worker takes the partition over.
      closing ??= shutdownWithin(config.server.shutdownTimeout, async ({ at }) => {
        at('source syncs stopping');
        await sources?.stop();
        at('model runs stopping');
        await models?.stop();
        at('HTTP requests in flight');
        await app?.close();
        if (webhooks) await closeWebhooks(webhooks);
        at('partitions stopping');
        await leases?.stop();
        at('transformations closing');
        await closeStages(quality.stages);
        at('closing the log and the state database');
        await log.close();
        await userQueries?.close();
        await store.close();
      });
      return closing;
    },
  };
}
