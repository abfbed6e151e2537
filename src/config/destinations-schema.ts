import { z } from 'zod';
import { TransformationConfig } from './quality-schema.js';

/** Durations as `500ms`, `1s`, or milliseconds (the same form as the other durations). */
const Interval = z
  .union([
    z.number().int().nonnegative(),
    z.string().regex(/^\d+(\.\d+)?\s*(ms|s|m)$/, 'expected "500ms", "1s" or "1m"'),
  ])
  .transform((v) => {
    if (typeof v === 'number') return v;
    const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m)$/.exec(v)!;
    return Math.round(Number(m[1]) * ({ ms: 1, s: 1000, m: 60_000 } as const)[m[2] as 'ms' | 's' | 'm']);
  });

const common = {
  id: z
    .string()
    .regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, 'use lowercase letters, digits, "-" and "_" (at most 63)')
    .describe('Stable name of the destination; its load offset is stored under it.'),
  enabled: z
    .boolean()
    .default(true)
    .describe('A disabled destination is not loaded (it resumes where it stopped).'),
  interval: Interval.prefault('1s').describe(
    'Least time from the start of one load to the next while the destination keeps up (a full batch waiting loads at once).',
  ),
  maxBatch: z.number().int().min(1).max(1_000_000).default(10_000).describe('Most events per load.'),
  transformations: z
    .array(TransformationConfig)
    .optional()
    .describe(
      'Functions run in order on every event before this destination loads it; `events` and other destinations are untouched. Not on parquet destinations.',
    ),
};

const schemaTemplate = z
  .string()
  .min(1)
  .default('{source}')
  .describe('Schema of a source\'s tables; "{source}" stands for the source id. Folded to a valid name.');

const startOver = z
  .boolean()
  .default(false)
  .describe(
    'When the destination holds offsets of another event log (a new data folder or stream): load this log from its start, deleting those offsets. Off: the start is refused (docs/operations.md).',
  );

const maxColumns = z
  .number()
  .int()
  .min(16)
  .max(1600)
  .default(1600)
  .describe('Most columns per table; properties past it go to the JSON column "_overflow".');

export const DuckDBDestinationConfig = z
  .object({
    ...common,
    type: z.literal('duckdb').describe('duckdb: Segment tables in a DuckDB file.'),
    path: z
      .string()
      .min(1)
      .optional()
      .describe("DuckDB file (relative to the data folder); default the embedded warehouse's own file."),
    schema: schemaTemplate,
    maxColumns,
    startOver,
  })
  .strict();
export type DuckDBDestinationConfig = z.infer<typeof DuckDBDestinationConfig>;

export const PostgresDestinationConfig = z
  .object({
    ...common,
    type: z.literal('postgres').describe('postgres: Segment tables in PostgreSQL, loaded with COPY.'),
    connectionString: z
      .string()
      .min(1)
      .optional()
      .describe('postgres://user:${PASSWORD}@host:5432/db; a password in it must be an ${ENV} reference.'),
    host: z.string().min(1).optional().describe('Host, when no connection string is given.'),
    port: z.number().int().min(1).max(65535).default(5432).describe('Port.'),
    database: z.string().min(1).optional().describe('Database.'),
    user: z.string().min(1).optional().describe('User.'),
    password: z.string().optional().describe('Password, only as an ${ENV} reference.'),
    ssl: z.boolean().default(false).describe('Connect with TLS.'),
    schema: schemaTemplate,
    maxColumns,
    startOver,
    statementTimeout: Interval.prefault('60s').describe(
      'PostgreSQL cancels a statement of the destination that runs longer (statement_timeout); the load is retried.',
    ),
    connectTimeout: Interval.prefault('10s').describe('Most time to open a connection.'),
    socketTimeout: Interval.optional().describe(
      'A load that gets no byte from the server for this long (a frozen connection) closes its connection and is retried; default statementTimeout + 15s.',
    ),
  })
  .strict()
  .superRefine((c, ctx) => {
    if (c.connectionString === undefined && (c.host === undefined || c.database === undefined)) {
      ctx.addIssue({
        code: 'custom',
        message: 'give connectionString, or host and database',
        path: ['host'],
      });
    }
    if (c.connectionString !== undefined && c.host !== undefined) {
      ctx.addIssue({ code: 'custom', message: 'give connectionString or host, not both', path: ['host'] });
    }
  });
export type PostgresDestinationConfig = z.infer<typeof PostgresDestinationConfig>;

export const ParquetDestinationConfig = z
  .object({
    ...common,
    type: z
      .literal('parquet')
      .describe('parquet: hive-partitioned Parquet files and a manifest, through DuckDB.'),
    path: z.string().min(1).describe('Folder of the lake (relative to the data folder).'),
  })
  .strict();
export type ParquetDestinationConfig = z.infer<typeof ParquetDestinationConfig>;

export const DestinationConfig = z.discriminatedUnion('type', [
  DuckDBDestinationConfig,
  PostgresDestinationConfig,
  ParquetDestinationConfig,
]);
export type DestinationConfig = z.infer<typeof DestinationConfig>;

/** With no `destinations` key: the Segment tables in the embedded warehouse file. */
export const DEFAULT_DESTINATIONS = [{ id: 'warehouse', type: 'duckdb' }] as const;

/** The destinations a file lists (no default: see `DestinationsConfig`). */
export const DestinationList = z.array(DestinationConfig).superRefine((list, ctx) => {
  const seen = new Set<string>();
  list.forEach((d, i) => {
    if (seen.has(d.id))
      ctx.addIssue({ code: 'custom', path: [i, 'id'], message: `duplicate destination id "${d.id}"` });
    seen.add(d.id);
  });
});

export const DestinationsConfig = DestinationList.prefault([...DEFAULT_DESTINATIONS]).describe(
  'Where the Segment tables and lake files are loaded; default: the embedded DuckDB warehouse.',
);
export type DestinationsConfig = z.infer<typeof DestinationsConfig>;

/**
 * Whether a connection string carries a password that is not an `${ENV}` reference.
 * Checked on the text before references are replaced.
 */
export function hasLiteralPassword(connectionString: string): boolean {
  const m = /^[a-z][a-z0-9+.-]*:\/\/[^:@/]*:([^@/]*)@/i.exec(connectionString);
  return m !== null && m[1] !== '' && !/^\$\{[A-Za-z_][A-Za-z0-9_]*\}$/.test(m[1]!);
}
