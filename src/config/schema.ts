import { z } from 'zod';
import { destinationKind, isStreamKind, runsPerPartition } from '../destinations/registry.js';
import { ModelList } from '../destinations/reverse-etl/spec.js';
import { SOURCE_SPECS } from '../sources/registry.js';
import { type DestinationConfig, DestinationList, DestinationsConfig } from './destinations-schema.js';
import { Duration } from './duration.js';
import { GovernanceConfig } from './governance-schema.js';
import { IDENTITY_DEFAULTS, IdentityConfig } from './identity-schema.js';
import { isProxyEntry } from './trust-proxy.js';

export { Duration, parseDuration } from './duration.js';

/**
 * A source, of any kind in the registry (src/sources/registry.ts): each kind's spec lives in
 * its folder (src/sources/<kind>/spec.ts) and carries the common fields (id, name, enabled,
 * plans, mapping, privacy, transformations).
 */
export const SourceConfig = z.discriminatedUnion('type', SOURCE_SPECS);
export type SourceConfig = z.infer<typeof SourceConfig>;

export const ServerConfig = z
  .object({
    host: z.string().default('127.0.0.1').describe('Address to listen on; 0.0.0.0 to accept other machines.'),
    port: z
      .number()
      .int()
      .min(0)
      .max(65535)
      .default(8080)
      .describe('HTTP port of the collection and admin API.'),
    publicUrl: z
      .string()
      .url()
      .optional()
      .describe("URL clients use to reach the server, when it differs from the request's Host."),
    shutdownTimeout: Duration.prefault('30s').describe(
      'Longest a shutdown (SIGTERM, SIGINT) waits for requests, loads and destinations in flight; then the process exits anyway. What was not loaded stays in the log and is loaded at the next start.',
    ),
    health: z
      .object({
        stallAfter: Duration.prefault('5m').describe(
          'A loader, identity resolution or destination that has not advanced for this long while work waits makes /healthz report "degraded" and sets tributary_stalled.',
        ),
      })
      .strict()
      .prefault({})
      .describe('What /healthz reports.'),
    requestTimeout: Duration.prefault('30s').describe(
      'Longest a request may take to arrive, headers and body; then 408 and the connection is closed. 0: no limit.',
    ),
    headersTimeout: Duration.prefault('10s').describe(
      "Longest a request's headers may take to arrive (at most requestTimeout); then 408. 0: no limit.",
    ),
    keepAliveTimeout: Duration.prefault('72s').describe(
      'How long an idle keep-alive connection is kept open between requests (longer than a load balancer keeps its own).',
    ),
    connectionTimeout: Duration.prefault('5m').describe(
      'A connection without any traffic for this long is closed, even while its response is being computed (a long admin query). 0: never.',
    ),
    maxConnectionsPerClient: z
      .number()
      .int()
      .min(0)
      .default(128)
      .describe(
        'Most open connections from one client address; more are closed at once. Trusted proxies are not capped. 0: no cap.',
      ),
    trustProxy: z
      .union([
        z.literal(false),
        z
          .array(
            z
              .string()
              .refine(
                isProxyEntry,
                'expected an IP address, a CIDR (10.0.0.0/8) or loopback, linklocal, uniquelocal',
              ),
          )
          .min(1),
      ])
      .default(false)
      .describe(
        'Proxies whose X-Forwarded-For/-Proto/-Host are believed: addresses, CIDRs or loopback, linklocal, uniquelocal. false: none (the socket address is the client).',
      ),
  })
  .strict()
  .superRefine((s, ctx) => {
    if (s.requestTimeout > 0 && (s.headersTimeout === 0 || s.headersTimeout > s.requestTimeout)) {
      ctx.addIssue({
        code: 'custom',
        path: ['headersTimeout'],
        message: 'must be at most requestTimeout (and not 0 while requestTimeout is set)',
      });
    }
  });
export type ServerConfig = z.infer<typeof ServerConfig>;

export const StorageConfig = z
  .object({
    dataDir: z.string().default('.tributary').describe('Folder of the embedded databases (DuckDB files).'),
    memoryLimit: z
      .string()
      .regex(/^\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$/i, 'expected a size such as "512MB" or "2GB"')
      .default('2GB')
      .describe('Most memory the embedded DuckDB may use for its buffers; beyond it, it spills to disk.'),
    threads: z
      .number()
      .int()
      .min(1)
      .max(256)
      .optional()
      .describe(
        "Threads of the embedded DuckDB. Default: one less than the machine's cores (at least 1), so the event loop keeps a core.",
      ),
  })
  .strict();

/** `privacy:` (deletion requests and masking; docs/configuration.md). */
export const PrivacyConfig = z
  .object({
    personalColumns: z
      .array(z.string().min(1))
      .default([])
      .describe(
        'Columns masked for analysts and viewers besides those whose names say they are personal: "column", "table.column" or "schema.table.column".',
      ),
    deletionRetry: Duration.prefault('30s').describe(
      "Pause between the deletion worker's rounds over deletion requests not done yet.",
    ),
  })
  .strict();
export type PrivacyConfig = z.infer<typeof PrivacyConfig>;

export const QueryConfig = z
  .object({
    maxRows: z
      .number()
      .int()
      .min(1)
      .max(1_000_000)
      .default(10_000)
      .describe('Rows /admin/v1/query returns at most; a longer result says "truncated": true.'),
    maxBytes: z
      .number()
      .int()
      .min(1024)
      .max(1024 * 1024 * 1024)
      .default(16 * 1024 * 1024)
      .describe(
        'Bytes of rows (as JSON) /admin/v1/query returns at most; a longer result says "truncated": true.',
      ),
    timeout: Duration.prefault('30s').describe(
      'How long a query from /admin/v1/query may run before it is stopped (TRIB_ERR_QUERY_TIMEOUT).',
    ),
    maxConcurrent: z
      .number()
      .int()
      .min(1)
      .max(64)
      .default(2)
      .describe(
        'Queries /admin/v1/query runs at once per process; one more is answered 429 (TRIB_ERR_QUERY_BUSY).',
      ),
  })
  .strict()
  .describe('Limits of the admin SQL endpoint (docs/architecture.md, "The query endpoint").');
export type QueryConfig = z.infer<typeof QueryConfig>;

export const PipelineConfig = z
  .object({
    dedupe: z
      .object({
        window: Duration.prefault('7d').describe('How long a (source, messageId) pair is remembered.'),
      })
      .strict()
      .default({ window: 7 * 86_400_000 }),
  })
  .strict();

export const LineageConfig = z
  .object({
    retention: Duration.prefault('30d').describe(
      'How long delivery attempts are kept for `tributary trace` (delivery_attempts); older ones are purged every hour.',
    ),
  })
  .strict()
  .describe('Lineage: what `tributary trace` can show (docs/configuration.md).');
export type LineageConfig = z.infer<typeof LineageConfig>;

export const LogConfig = z
  .discriminatedUnion('type', [
    z
      .object({
        type: z.literal('duckdb').describe('duckdb: the embedded log, in the data folder (one process).'),
      })
      .strict(),
    z
      .object({
        type: z
          .literal('nats')
          .describe('nats: a NATS JetStream stream, for many ingest and worker processes.'),
        servers: z
          .array(z.string().min(1))
          .min(1)
          .default(['nats://127.0.0.1:4222'])
          .describe('NATS server URLs.'),
        stream: z
          .string()
          .regex(/^[A-Za-z0-9_-]{1,64}$/, 'use letters, digits, "-" and "_" (at most 64)')
          .default('tributary')
          .describe('Stream name (one per workspace); its subjects are <stream>.p.<partition>.'),
        partitions: z
          .number()
          .int()
          .min(1)
          .max(1024)
          .default(8)
          .describe('Partitions, fixed when the stream is created; workers share them.'),
        replicas: z.number().int().min(1).max(5).default(1).describe('JetStream replicas of the stream.'),
        duplicateWindow: Duration.prefault('2m').describe(
          "JetStream's duplicate window: a client retry within it is stored once.",
        ),
      })
      .strict(),
  ])
  .describe('The event log (docs/operations.md).');
export type LogConfig = z.infer<typeof LogConfig>;

export const StateConfig = z
  .discriminatedUnion('type', [
    z
      .object({
        type: z.literal('duckdb').describe('duckdb: state in the embedded DuckDB files (one process).'),
      })
      .strict(),
    z
      .object({
        type: z
          .literal('postgres')
          .describe('postgres: events, offsets, dedup index, failed events and identity in PostgreSQL.'),
        connectionString: z
          .string()
          .min(1)
          .describe(
            'postgres://user:${PASSWORD}@host:5432/db; a password in it must be an ${ENV} reference.',
          ),
        schema: z
          .string()
          .regex(/^[a-z_][a-z0-9_]{0,62}$/, 'use lowercase letters, digits and "_"')
          .default('tributary')
          .describe('Schema of the state tables.'),
        maxConnections: z.number().int().min(2).max(200).default(10).describe('Connections per process.'),
        queryConnectionString: z
          .string()
          .min(1)
          .optional()
          .describe(
            'postgres://reader:${PASSWORD}@host:5432/db of a role with SELECT only, for /admin/v1/query (docs/operations.md, "The query role"); without it the endpoint is off in scale-out.',
          ),
      })
      .strict(),
  ])
  .describe('Where pipeline state is kept (docs/operations.md).');
export type StateConfig = z.infer<typeof StateConfig>;

/** Whether the configuration runs scale-out (NATS log, PostgreSQL state) rather than embedded. */
export function isScaleOut(cfg: { log: LogConfig }): boolean {
  return cfg.log.type === 'nats';
}

/**
 * Destinations when the file names none: the embedded DuckDB warehouse, or in scale-out the
 * Segment tables in the state database (a DuckDB file cannot be shared by several workers).
 */
function defaultDestinations(state: StateConfig): DestinationConfig[] {
  if (state.type === 'duckdb') return DestinationsConfig.parse(undefined);
  return DestinationsConfig.parse([
    { id: 'warehouse', type: 'postgres', connectionString: state.connectionString },
  ]);
}

const TributaryConfigObject = z
  .object({
    version: z
      .union([z.literal(1), z.string().regex(/^1(\.\d+)?$/, 'this release reads configuration version 1')])
      .describe('Configuration format version; this release reads 1.'),
    workspace: z
      .string()
      .regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, 'use lowercase letters, digits, "-" and "_" (at most 63)')
      .default('default')
      .describe(
        "Name of the workspace. Destination offsets are stored under it (and the event log's identity), so two workspaces can load into one database.",
      ),
    server: ServerConfig.prefault({}),
    storage: StorageConfig.default({ dataDir: '.tributary', memoryLimit: '2GB' }),
    sources: z.array(SourceConfig).min(1, 'declare at least one source'),
    pipeline: PipelineConfig.default({ dedupe: { window: 7 * 86_400_000 } }),
    lineage: LineageConfig.default({ retention: 30 * 86_400_000 }),
    log: LogConfig.default({ type: 'duckdb' }),
    state: StateConfig.default({ type: 'duckdb' }),
    destinations: DestinationList.optional().describe(
      'Where the Segment tables and lake files are loaded; default: the embedded DuckDB warehouse, or in scale-out the Segment tables in the state database.',
    ),
    query: QueryConfig.default({
      maxRows: 10_000,
      maxBytes: 16 * 1024 * 1024,
      timeout: 30_000,
      maxConcurrent: 2,
    }),
    identity: IdentityConfig.default(IDENTITY_DEFAULTS).describe(
      'Identity resolution (docs/configuration.md).',
    ),
    models: ModelList,
    privacy: PrivacyConfig.prefault({}).describe('Deletion requests and masking of personal data.'),
    governance: GovernanceConfig.prefault({}).describe(
      'Users, console sessions and the audit trail (docs/configuration.md, docs/roles.md).',
    ),
  })
  .strict()
  .superRefine((cfg, ctx) => {
    const ids = new Map<string, number>();
    const keys = new Map<string, number>();
    cfg.sources.forEach((s, i) => {
      if (ids.has(s.id)) {
        ctx.addIssue({
          code: 'custom',
          path: ['sources', i, 'id'],
          message: `duplicate source id "${s.id}"`,
        });
      }
      ids.set(s.id, i);
      if (s.type !== 'http') return;
      if (keys.has(s.writeKey)) {
        ctx.addIssue({
          code: 'custom',
          path: ['sources', i, 'writeKey'],
          message: `write key already used by sources[${keys.get(s.writeKey)}]`,
        });
      }
      keys.set(s.writeKey, i);
    });
    if ((cfg.log.type === 'nats') !== (cfg.state.type === 'postgres')) {
      ctx.addIssue({
        code: 'custom',
        path: [cfg.log.type === 'nats' ? 'state' : 'log'],
        message:
          'scale-out needs both log.type "nats" and state.type "postgres" (workers share the log and the state); the embedded default uses neither',
      });
    }
    if (cfg.log.type === 'nats') {
      cfg.destinations?.forEach((d, i) => {
        if (!runsPerPartition(d.type)) {
          ctx.addIssue({
            code: 'custom',
            path: ['destinations', i, 'type'],
            message: isStreamKind(destinationKind(d.type))
              ? `streaming destinations (${d.type}) run in the embedded deployment only, for now`
              : `a ${d.type} destination is one process's files; in scale-out use postgres`,
          });
        }
      });
    }
  });

export const TributaryConfig = TributaryConfigObject.transform((cfg) => ({
  ...cfg,
  destinations: cfg.destinations ?? defaultDestinations(cfg.state),
}));
export type TributaryConfig = z.output<typeof TributaryConfig>;
