import { z } from 'zod';
import { destinationCommon, Interval } from '../../config/destination-spec.js';
import type { DestinationKind } from '../connector.js';

/**
 * The configuration specs of the Segment warehouse's kinds (`duckdb`, `postgres`). Only zod and
 * configuration helpers here (see `../connector.ts`).
 */

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
    ...destinationCommon,
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
    ...destinationCommon,
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

/** Segment tables in a DuckDB file: the embedded warehouse's own, or another one attached. */
export const duckdbDestination = {
  type: 'duckdb',
  config: DuckDBDestinationConfig,
  capabilities: { transformations: true, perPartition: false },
  connector: async () => (await import('./duckdb/duckdb-connector.js')).duckdbConnector,
} satisfies DestinationKind<DuckDBDestinationConfig>;

/** Segment tables in PostgreSQL; one instance per log partition in scale-out. */
export const postgresDestination = {
  type: 'postgres',
  config: PostgresDestinationConfig,
  capabilities: { transformations: true, perPartition: true },
  connector: async () => (await import('./postgres/postgres-connector.js')).postgresConnector,
} satisfies DestinationKind<PostgresDestinationConfig>;
