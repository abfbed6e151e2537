/**
 * The configuration both database sources share: where the server is, how long to wait for
 * it, and the streams to read (a table or a named query, a sync mode, a cursor, a key).
 */
import { z } from 'zod';
import { Duration } from '../../config/duration.js';

/** A table as `schema.table` (the first `.` splits) or `{ schema, name }` for names holding a dot. */
export const TableRef = z.union([
  z
    .string()
    .min(1)
    .describe('`schema.table` (PostgreSQL: schema `public` when no dot; MySQL: the schema is the database)'),
  z.object({ schema: z.string().min(1).optional(), name: z.string().min(1) }).strict(),
]);
export type TableRef = z.infer<typeof TableRef>;

/**
 * One stream of a database source. Keys this spec does not know (the runner's `objects`,
 * `events`, `schedule`, …) are kept as they are, for the runner's shared stream spec.
 */
export const SqlStreamConfig = z
  .looseObject({
    name: z
      .string()
      .min(1)
      .max(200)
      .describe('The stream name: objects go to `<source>.<name>`, state is kept under it.'),
    table: TableRef.optional().describe('The table or view to read.'),
    query: z
      .string()
      .min(1)
      .optional()
      .describe(
        'A SELECT to read instead of a table (no trailing `;`); the cursor and key are columns of its result.',
      ),
    syncMode: z
      .enum(['full_refresh', 'incremental'])
      .default('full_refresh')
      .describe(
        'full_refresh: every row each sync, rows gone since marked deleted. incremental: the rows whose cursor is at or past the saved one.',
      ),
    cursorField: z
      .string()
      .min(1)
      .optional()
      .describe('The column an incremental sync orders by: a timestamp or an increasing number.'),
    primaryKey: z
      .array(z.string().min(1))
      .optional()
      .describe("Columns that identify a row; default the table's primary key."),
  })
  .superRefine((s, ctx) => {
    if ((s.table === undefined) === (s.query === undefined))
      ctx.addIssue({ code: 'custom', message: 'give table or query, one of them', path: ['table'] });
    if (s.syncMode === 'incremental' && s.cursorField === undefined)
      ctx.addIssue({
        code: 'custom',
        message: 'an incremental stream needs a cursorField',
        path: ['cursorField'],
      });
  });
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

/** The checks every database source spec adds: a connection string or a host, and unique stream names. */
export function refineSqlSource(c: SqlSourceConfig, ctx: z.RefinementCtx): void {
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
