/**
 * The configuration both database sources share: where the server is, how long to wait for
 * it, and the streams to read (a table or a named query, a sync mode, a cursor, a key).
 */
import { z } from 'zod';
import { Duration } from '../../config/duration.js';
import { commonSourceFields } from '../common-schema.js';
import { PullSourceSettings, StreamSettings } from '../streams-schema.js';

/** A table as `schema.table` (the first `.` splits) or `{ schema, name }` for names holding a dot. */
export const TableRef = z.union([
  z
    .string()
    .min(1)
    .describe('`schema.table` (PostgreSQL: schema `public` when no dot; MySQL: the schema is the database)'),
  z.object({ schema: z.string().min(1).optional(), name: z.string().min(1) }).strict(),
]);
export type TableRef = z.infer<typeof TableRef>;

/** Where a database stream's rows are: a table or a query (one of them). */
const sqlStreamKeys = {
  table: TableRef.optional().describe('The table or view to read.'),
  query: z
    .string()
    .min(1)
    .optional()
    .describe(
      'A SELECT to read instead of a table (no trailing `;`); the cursor and key are columns of its result.',
    ),
  /** Databases default to full_refresh (files: incremental): a table has no "new files" to read. */
  syncMode: StreamSettings.shape.syncMode
    .unwrap()
    .default('full_refresh')
    .describe(
      'full_refresh (default): every row each sync, rows gone since marked deleted. incremental: the rows whose cursor is at or past the saved one (needs cursorField).',
    ),
  primaryKey: StreamSettings.shape.primaryKey.describe(
    "Columns that identify a row: objects are upserted on them. Empty (default): the table's primary key (a query stream needs one to upsert).",
  ),
};

function refineSqlStream(
  s: { table?: unknown; query?: unknown; syncMode: string; cursorField?: string },
  ctx: z.RefinementCtx,
): void {
  if ((s.table === undefined) === (s.query === undefined))
    ctx.addIssue({ code: 'custom', message: 'give table or query, one of them', path: ['table'] });
  if (s.syncMode === 'incremental' && s.cursorField === undefined)
    ctx.addIssue({
      code: 'custom',
      message: 'an incremental stream needs a cursorField',
      path: ['cursorField'],
    });
}

/**
 * One stream of a database source as `sources:` takes it: the settings every pull stream has
 * (what rows become, `src/sources/streams-schema.ts`) and where the rows are. Strict.
 */
export const SqlStream = StreamSettings.extend(sqlStreamKeys).strict().superRefine(refineSqlStream);
export type SqlStream = z.infer<typeof SqlStream>;

/**
 * One stream as the connector reads it: the same keys (one definition each, above); keys it
 * does not know (`objects`, `events`, …) are passed through for the runner.
 */
export const SqlStreamConfig = z
  .looseObject({
    name: StreamSettings.shape.name,
    cursorField: StreamSettings.shape.cursorField,
    ...sqlStreamKeys,
  })
  .superRefine(refineSqlStream);
export type SqlStreamConfig = z.infer<typeof SqlStreamConfig>;

/** The connection and timing settings both database sources take, with their defaults. */
export function sqlSourceShape(defaultPort: number, example: string) {
  return {
    id: z.string().min(1).optional().describe('The source id (in errors and `location`).'),
    connectionString: z
      .string()
      .min(1)
      .optional()
      .describe(`${example}; a password in it must be an \${ENV} reference.`),
    host: z.string().min(1).optional().describe('Host, when no connection string is given.'),
    port: z.number().int().min(1).max(65535).default(defaultPort).describe('Port.'),
    database: z.string().min(1).optional().describe('Database.'),
    user: z.string().min(1).optional().describe('User.'),
    password: z.string().optional().describe('Password, only as an ${ENV} reference.'),
    ssl: z
      .union([z.boolean(), z.object({ rejectUnauthorized: z.boolean().default(true) }).strict()])
      .default(false)
      .describe('Connect with TLS (true: verify the certificate).'),
    connectTimeout: Duration.prefault('10s').describe('Most time to open a connection.'),
    statementTimeout: Duration.prefault('1h').describe(
      'The server cancels a statement of the source that runs longer, the read of a whole stream included: raise it for tables that take longer to read.',
    ),
    batchSize: z
      .number()
      .int()
      .min(1)
      .max(100_000)
      .default(2_000)
      .describe('Rows handed on at a time; the socket is paused while a batch is consumed.'),
    checkpointEvery: z
      .number()
      .int()
      .min(1)
      .default(10_000)
      .describe('Rows between state checkpoints: a sync stopped mid-way resumes from the last one.'),
    clockSkew: Duration.prefault('1s').describe(
      'How long before its transaction starts a writer may set a cursor value (an application clock behind the server, a statement started before its transaction). See docs/sources-databases.md.',
    ),
    streams: z.array(SqlStreamConfig).default([]).describe('The tables and queries to read.'),
  };
}

/** The parsed shape both connectors accept. */
export interface SqlSourceConfig {
  id?: string | undefined;
  connectionString?: string | undefined;
  host?: string | undefined;
  port: number;
  database?: string | undefined;
  user?: string | undefined;
  password?: string | undefined;
  ssl: boolean | { rejectUnauthorized: boolean };
  connectTimeout: number;
  statementTimeout: number;
  batchSize: number;
  checkpointEvery: number;
  clockSkew: number;
  streams: SqlStreamConfig[];
}

/** The TLS options of a connection: none (`ssl: false`), a verified certificate (`true`), or as configured. */
export function tlsOptions(config: SqlSourceConfig): { rejectUnauthorized: boolean } | undefined {
  return config.ssl === false ? undefined : config.ssl === true ? { rejectUnauthorized: true } : config.ssl;
}

/** The server and login of a config without a connection string, as both drivers name them. */
export function serverAddress(config: SqlSourceConfig): {
  host: string | undefined;
  port: number;
  database: string | undefined;
  user: string | undefined;
  password: string | undefined;
} {
  return {
    host: config.host,
    port: config.port,
    database: config.database,
    user: config.user,
    password: config.password,
  };
}

/** The checks every database source spec adds: a connection string or a host, and unique stream names. */
export function refineSqlSource(
  c: {
    connectionString?: string | undefined;
    host?: string | undefined;
    streams: readonly { name: string }[];
  },
  ctx: z.RefinementCtx,
): void {
  if (c.connectionString === undefined && c.host === undefined)
    ctx.addIssue({ code: 'custom', message: 'give connectionString, or host and database', path: ['host'] });
  if (c.connectionString !== undefined && c.host !== undefined)
    ctx.addIssue({ code: 'custom', message: 'give connectionString or host, not both', path: ['host'] });
  const seen = new Set<string>();
  c.streams.forEach((s, i) => {
    if (seen.has(s.name))
      ctx.addIssue({ code: 'custom', message: `duplicate stream "${s.name}"`, path: ['streams', i, 'name'] });
    seen.add(s.name);
  });
}

/**
 * A database source as `sources:` takes it: the common source fields, the connection
 * settings, strict streams (`SqlStream`), schedule and retries. Light: zod only.
 */
export function sqlSourceSpec<T extends string>(type: z.ZodLiteral<T>, defaultPort: number, example: string) {
  const { id: _id, streams: _streams, ...connection } = sqlSourceShape(defaultPort, example);
  return z
    .object({
      ...commonSourceFields,
      type,
      ...connection,
      streams: z.array(SqlStream).min(1).describe('The tables and queries to read.'),
      ...PullSourceSettings,
    })
    .strict()
    .superRefine(refineSqlSource);
}
