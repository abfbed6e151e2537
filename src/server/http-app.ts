import { timingSafeEqual } from 'node:crypto';
import cors from '@fastify/cors';
import Fastify, {
  type FastifyBaseLogger,
  type FastifyError,
  type FastifyInstance,
  type FastifyRequest,
  LogController,
} from 'fastify';
import type { Logger } from 'pino';
import { Gauge } from 'prom-client';
import { BATCH_MAX_BYTES } from '../collect/body.js';
import { type CollectDeps, collectRoutes } from '../collect/collect-routes.js';
import { ServerConfig, type SourceConfig } from '../config/schema.js';
import { replayAdminRoutes } from '../destinations/replay/replay-routes.js';
import type { ReplayService } from '../destinations/replay/replay-service.js';
import { type ModelRoutesDeps, modelAdminRoutes } from '../destinations/reverse-etl/model-routes.js';
import { TributaryError } from '../errors.js';
import { type Governance, governanceRoutes, installAccessControl, readsMasked } from '../governance/index.js';
import type { DeletionService } from '../governance/privacy/deletion-service.js';
import { privacyAdminRoutes } from '../governance/privacy/privacy-routes.js';
import type { MatchingApi } from '../identity/matching/match-routes.js';
import { type ProfileApi, profileRoutes } from '../identity/profile-routes.js';
import type { EventLog } from '../log/event-log.js';
import type { TraceDeps } from '../observe/lineage/trace.js';
import { traceAdminRoutes } from '../observe/lineage/trace-routes.js';
import type { Metrics } from '../observe/metrics.js';
import type { PushReceiver } from '../sources/source.js';
import { type SourceRoutesDeps, sourceAdminRoutes } from '../sources/source-routes.js';
import { webhookRoutes } from '../sources/webhook/index.js';
import { DEFAULT_USER_QUERY_LIMITS, type UserQueries, type UserQueryLimits } from '../store/user-query.js';
import { type ConfigRoutesDeps, configAdminRoutes } from './config-routes.js';
import {
  capConnectionsPerClient,
  expandProxies,
  type HttpLimits,
  nodeServerOptions,
  proxyMatcher,
} from './http-limits.js';
import { type QualityRoutesDeps, qualityAdminRoutes } from './quality-routes.js';

/** Headers the Segment, RudderStack and Jitsu browser SDKs send. */
export const SDK_HEADERS = [
  'Authorization',
  'Content-Type',
  'Content-Encoding',
  'X-Retry-Count',
  'AnonymousId',
  'SentAt',
  'Rsa-Retry-Attempt',
  'Rsa-Since-Last-Attempt',
  'Rsa-Since-First-Attempt',
  'Rsa-Retry-Reason',
  'Rsa-Recovered',
  'X-Write-Key',
];

export interface HttpAppDeps extends CollectDeps {
  sources: readonly SourceConfig[];
  /** Runs the SQL of `/admin/v1/query`, which cannot reach the host (docs/architecture.md). */
  queries: UserQueries;
  /** Row, size and time limits of `/admin/v1/query`. Default: `DEFAULT_USER_QUERY_LIMITS`. */
  queryLimits?: UserQueryLimits;
  metrics: Metrics;
  adminToken: string;
  logger: Logger;
  health: () => Record<string, unknown>;
  /** Failed-event store and reconciled counts, on the admin API. */
  quality?: QualityRoutesDeps;
  /** Identity resolution, for the Profile API (undefined when off). */
  identity?: ProfileApi;
  /** Pull sources (check, discover, sync, runs, uploads) on the admin API. */
  sourceAdmin?: SourceRoutesDeps;
  /** Reverse ETL: the models' admin routes (`/admin/v1/models`). */
  models?: ModelRoutesDeps;
  /** Probabilistic matching (embedded store, `identity.matching.enabled`). */
  matching?: MatchingApi;
  /** The live profile an identifier names, for the waterfall in explain. */
  profileIdOf?: (text: string) => string | undefined;
  /** Bearer token that may read profiles besides the admin token. */
  profileReadToken?: string;
  /** Timeouts, the per-client connection cap and the trusted proxies (`server:`); defaults below. */
  limits?: Partial<HttpLimits>;
  /** `tributary trace` (`GET /admin/v1/trace/:messageId`) and `tributary replay` (`/admin/v1/replay`). */
  lineage?: { trace: TraceDeps; replays: ReplayService };
  /** Enabled push (webhook) sources, opened, by id (`POST /webhooks/:sourceId`). */
  webhooks?: ReadonlyMap<string, PushReceiver>;
  /** The configuration's versions and changes (`/admin/v1/config`), when the server keeps them. */
  configAdmin?: ConfigRoutesDeps;
  /**
   * Whether a request reads personal data masked (an analyst's or viewer's): applied to
   * `/admin/v1/query` and the Profile API. Default: with `governance`, the roles below admin
   * (`readsMasked`); without it (the admin token only), never.
   */
  maskPersonal?: (req: FastifyRequest) => boolean;
  /** Salt and configured personal names of the Profile API's masking (the SQL's are the store's). */
  masking?: { salt: string; personalColumns: readonly string[] };
  /** The log webhooks append to (default `log`): one that leaves out suppressed identities' events. */
  webhookLog?: EventLog;
  /** Deletion requests on the admin API (`/admin/v1/privacy/deletions`). */
  deletions?: DeletionService;
  /**
   * Users, sessions, API tokens and the audit trail (src/governance/). Without it the admin
   * token and the profile read token are the only credentials, and nothing is audited.
   */
  governance?: Governance;
}

/** The limits `server:` defaults to (see docs/configuration.md), from the schema that sets them. */
export const DEFAULT_HTTP_LIMITS: HttpLimits = ServerConfig.parse({});

/** Builds the HTTP application: collection API, admin API, health and metrics. */
export async function buildHttpApp(deps: HttpAppDeps): Promise<FastifyInstance> {
  // Who reads personal data masked: by default the roles below admin, once callers have roles.
  const governance = deps.governance;
  deps = {
    ...deps,
    maskPersonal:
      deps.maskPersonal ??
      (governance ? (req: FastifyRequest) => readsMasked(req.principal?.role) : undefined),
  };
  const limits: HttpLimits = { ...DEFAULT_HTTP_LIMITS, ...deps.limits };
  const proxies = limits.trustProxy === false ? [] : expandProxies(limits.trustProxy);
  const app = Fastify({
    loggerInstance: deps.logger as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    // X-Forwarded-For is believed only from the proxies named: from anyone else it would let a
    // client choose the `context.ip` stored with its events.
    trustProxy: proxies.length > 0 ? proxies : false,
    bodyLimit: 1024 * 1024,
    forceCloseConnections: 'idle',
    return503OnClosing: true,
    // A body that never finishes must not hold its connection and buffers for ever.
    requestTimeout: limits.requestTimeout,
    keepAliveTimeout: limits.keepAliveTimeout,
    connectionTimeout: limits.connectionTimeout,
    http: nodeServerOptions(limits),
  });
  capConnectionsPerClient(
    app.server,
    limits.maxConnectionsPerClient,
    proxies.length > 0 ? proxyMatcher(proxies) : undefined,
    () => deps.metrics.requestsRefused.inc({ code: 'TRIB_ERR_HTTP_TOO_MANY_CONNECTIONS' }),
  );

  // Graceful shutdown: requests in flight are answered; every response from then on closes
  // its connection, and idle keep-alive connections are closed as they become idle, so
  // close() ends once the in-flight requests are done.
  let draining: NodeJS.Timeout | undefined;
  app.addHook('preClose', (done) => {
    draining = setInterval(() => app.server.closeIdleConnections(), 25);
    done();
  });
  app.addHook('onClose', (_app, done) => {
    clearInterval(draining);
    done();
  });
  app.addHook('onSend', (_req, reply, payload, done) => {
    if (draining) reply.header('connection', 'close');
    done(null, payload);
  });

  // Bodies are JSON whatever Content-Type says (SDKs send text/plain and form types), and may
  // be gzipped: every body arrives as a Buffer and the routes decode it.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));

  // Every route's access rule (src/governance/route-rules.ts) is enforced from here on; installed
  // before any route, so that it sees them all.
  await installAccessControl(app, {
    governance: deps.governance,
    adminToken: deps.adminToken,
    profileReadToken: deps.profileReadToken,
    onAuditError: (err) => deps.logger.error({ err }, 'audit entry not written'),
  });

  const sdkCors = {
    origin: true,
    credentials: true,
    methods: ['GET', 'POST', 'OPTIONS'],
    allowedHeaders: SDK_HEADERS,
    maxAge: 86_400,
  };
  // The admin and Profile APIs take bearer tokens from other origins, never the session cookie:
  // a credentialed cross-origin read (of the CSRF token, say) is refused by the browser.
  const apiCors = { ...sdkCors, credentials: false, methods: ['GET', 'POST', 'DELETE', 'OPTIONS'] };
  await app.register(cors, {
    delegator: (req, cb) =>
      cb(null, req.url?.startsWith('/admin/') || req.url?.startsWith('/v1/profiles') ? apiCors : sdkCors),
  });

  let webhookBodyLimit = 0;
  for (const w of deps.webhooks?.values() ?? [])
    webhookBodyLimit = Math.max(webhookBodyLimit, w.maxBodyBytes);
  app.setErrorHandler((err: FastifyError | TributaryError, req, reply) => {
    const mapped = toTributaryError(err, req.url, webhookBodyLimit);
    if (mapped.statusCode >= 500) req.log.error({ err }, 'request failed');
    if (
      req.url.startsWith('/v1/') ||
      req.url.startsWith('/api/s/') ||
      req.url.startsWith('/beacon/') ||
      req.url.startsWith('/webhooks/')
    ) {
      deps.metrics.requestsRefused.inc({ code: mapped.code });
    }
    reply.status(mapped.statusCode).send(mapped.toJSON());
  });
  app.setNotFoundHandler((req, reply) => {
    const err = new TributaryError('TRIB_ERR_NOT_FOUND', [`${req.method} ${req.url.split('?')[0]}`]);
    reply.status(404).send(err.toJSON());
  });

  await app.register((scope, _opts, done) => {
    void collectRoutes(scope, deps).then(() => done(), done);
  });

  if (deps.webhooks && deps.webhooks.size > 0) {
    const webhooks = deps.webhooks;
    await app.register((scope, _opts, done) => {
      void webhookRoutes(scope, {
        webhooks,
        log: deps.webhookLog ?? deps.log,
        observer: deps.observer,
        privacy: deps.privacy,
        registry: deps.metrics.registry,
      }).then(() => done(), done);
    });
  }

  app.get('/healthz', () => ({ status: 'ok', ...deps.health() }));
  app.get('/metrics', async (_req, reply) => {
    reply.header('content-type', deps.metrics.registry.contentType);
    return deps.metrics.registry.metrics();
  });

  await app.register((scope, _opts, done) => {
    profileRoutes(scope, {
      identity: deps.identity,
      matching: deps.matching,
      profileIdOf: deps.profileIdOf,
      maskPersonal: deps.maskPersonal,
      masking: deps.masking,
    });
    done();
  });

  let queriesRunning = 0;
  new Gauge({
    name: 'tributary_admin_queries_running',
    help: 'Queries of /admin/v1/query running now (at most query.maxConcurrent).',
    registers: [deps.metrics.registry],
    collect() {
      this.set(queriesRunning);
    },
  });
  await app.register((admin, _opts, done) => {
    governanceRoutes(admin, deps.governance);
    admin.post('/admin/v1/query', async (req) => {
      const body = parseAdminJson(req.body);
      const sql = body?.sql;
      if (typeof sql !== 'string' || sql.trim() === '')
        throw new TributaryError('TRIB_ERR_QUERY_MISSING_SQL');
      const limits = deps.queryLimits ?? DEFAULT_USER_QUERY_LIMITS;
      if (queriesRunning >= limits.maxConcurrent)
        throw new TributaryError('TRIB_ERR_QUERY_BUSY', [queriesRunning]);
      queriesRunning++;
      try {
        return await deps.queries.userQuery(sql, limits, { mask: deps.maskPersonal?.(req) ?? false });
      } catch (err) {
        if (err instanceof TributaryError) throw err;
        throw new TributaryError('TRIB_ERR_QUERY_FAILED', [(err as Error).message], { cause: err });
      } finally {
        queriesRunning--;
      }
    });
    admin.get('/admin/v1/sources', () => ({
      sources: deps.sources.map((s) => ({
        id: s.id,
        type: s.type,
        name: s.name ?? s.id,
        enabled: s.enabled,
        ...(s.type === 'http'
          ? { writeKey: s.writeKey }
          : s.type === 'webhook'
            ? { url: `/webhooks/${s.id}` }
            : {}),
      })),
    }));
    if (deps.quality) qualityAdminRoutes(admin, deps.quality);
    if (deps.sourceAdmin) sourceAdminRoutes(admin, deps.sourceAdmin);
    // A version's author: who changed it, as the audit trail names them.
    configAdminRoutes(admin, {
      principal: (req) => {
        const p = req.principal;
        return p === undefined || p.kind === 'admin-token' ? 'admin-token' : `${p.kind}:${p.name}`;
      },
      ...deps.configAdmin,
    });
    if (deps.models) modelAdminRoutes(admin, deps.models);
    if (deps.lineage) {
      traceAdminRoutes(admin, deps.lineage.trace);
      replayAdminRoutes(admin, deps.lineage.replays);
    }
    if (deps.deletions) privacyAdminRoutes(admin, deps.deletions);
    done();
  });

  return app;
}

function parseAdminJson(body: unknown): Record<string, unknown> | undefined {
  if (!(body instanceof Buffer) || body.length === 0) return undefined;
  try {
    const v = JSON.parse(body.toString('utf8')) as unknown;
    return typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : undefined;
  } catch (err) {
    throw new TributaryError('TRIB_ERR_COLLECT_INVALID_JSON', [(err as Error).message], { cause: err });
  }
}

/** Whether `header` is `Bearer <token>` (timing-safe); the server's routes use the access layer instead. */
export function checkBearer(header: string | undefined, token: string): boolean {
  const m = header ? /^Bearer\s+(.+)$/i.exec(header) : null;
  if (!m) return false;
  const a = Buffer.from(m[1]!.trim());
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

function toTributaryError(
  err: FastifyError | TributaryError,
  url: string,
  webhookBodyLimit: number,
): TributaryError {
  if (err instanceof TributaryError) return err;
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      if (url.startsWith('/webhooks/'))
        return new TributaryError('TRIB_ERR_WEBHOOK_BODY_TOO_LARGE', [webhookBodyLimit], { cause: err });
      return new TributaryError('TRIB_ERR_COLLECT_BODY_TOO_LARGE', [BATCH_MAX_BYTES], { cause: err });
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new TributaryError('TRIB_ERR_COLLECT_INVALID_JSON', [err.message], { cause: err });
    default:
      if (err.statusCode === 400)
        return new TributaryError('TRIB_ERR_COLLECT_INVALID_JSON', [err.message], { cause: err });
      return new TributaryError('TRIB_ERR_INTERNAL', [], { cause: err });
  }
}
