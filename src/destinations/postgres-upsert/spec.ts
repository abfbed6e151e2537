import { z } from 'zod';
import { Interval, streamCommon } from '../../config/destination-spec.js';
import { checkTableFields, tableFields } from '../sql-upsert/table-mapping.js';
import type { StreamDestinationKind } from '../stream.js';

/** `postgres-upsert`: events, profiles and reverse-ETL rows upserted into a PostgreSQL table by key. */
export const PostgresUpsertConfig = z
  .object({
    ...streamCommon,
    type: z
      .literal('postgres-upsert')
      .describe('postgres-upsert: rows upserted into a PostgreSQL table by key (INSERT … ON CONFLICT).'),
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
    schema: z
      .string()
      .regex(/^[A-Za-z_][A-Za-z0-9_]{0,62}$/, 'a schema name: letters, digits and "_"')
      .default('public')
      .describe('Schema of the table.'),
    ...tableFields,
    maxConnections: z
      .number()
      .int()
      .min(1)
      .max(100)
      .default(4)
      .describe('Most connections the destination opens.'),
    connectTimeout: Interval.prefault('10s').describe('Most time to open a connection.'),
    statementTimeout: Interval.prefault('30s').describe(
      'PostgreSQL cancels a statement that runs longer (statement_timeout); its rows are retried.',
    ),
  })
  .strict()
  .superRefine((c, ctx) => {
    if (c.connectionString === undefined && (c.host === undefined || c.database === undefined))
      ctx.addIssue({
        code: 'custom',
        message: 'give connectionString, or host and database',
        path: ['host'],
      });
    if (c.connectionString !== undefined && c.host !== undefined)
      ctx.addIssue({ code: 'custom', message: 'give connectionString or host, not both', path: ['host'] });
    checkTableFields(c, ctx);
  });
export type PostgresUpsertConfig = z.infer<typeof PostgresUpsertConfig>;

/** Upserts into a PostgreSQL table by key; deletes by key and by identity. */
export const postgresUpsertDestination = {
  delivery: 'stream',
  type: 'postgres-upsert',
  config: PostgresUpsertConfig,
  capabilities: { batching: true, deletion: true, rows: true },
  connector: async () => (await import('./postgres-upsert-connector.js')).postgresUpsertConnector,
} satisfies StreamDestinationKind<PostgresUpsertConfig>;
