import { z } from 'zod';
import { Interval, streamCommon } from '../../config/destination-spec.js';
import { checkTableFields, tableFields } from '../sql-upsert/table-mapping.js';
import type { StreamDestinationKind } from '../stream.js';

/** `mysql-upsert`: events, profiles and reverse-ETL rows upserted into a MySQL / MariaDB table by key. */
export const MysqlUpsertConfig = z
  .object({
    ...streamCommon,
    type: z
      .literal('mysql-upsert')
      .describe(
        'mysql-upsert: rows upserted into a MySQL or MariaDB table by key (INSERT … ON DUPLICATE KEY UPDATE).',
      ),
    connectionString: z
      .string()
      .min(1)
      .optional()
      .describe('mysql://user:${PASSWORD}@host:3306/db; a password in it must be an ${ENV} reference.'),
    host: z.string().min(1).optional().describe('Host, when no connection string is given.'),
    port: z.number().int().min(1).max(65535).default(3306).describe('Port.'),
    database: z.string().min(1).optional().describe('Database.'),
    user: z.string().min(1).default('root').describe('User.'),
    password: z.string().optional().describe('Password, only as an ${ENV} reference.'),
    ...tableFields,
    maxConnections: z
      .number()
      .int()
      .min(1)
      .max(100)
      .default(4)
      .describe('Most connections the destination opens.'),
    connectTimeout: Interval.prefault('10s').describe('Most time to open a connection.'),
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
export type MysqlUpsertConfig = z.infer<typeof MysqlUpsertConfig>;

/** Upserts into a MySQL / MariaDB table by key; deletes by key and by identity. */
export const mysqlUpsertDestination = {
  delivery: 'stream',
  type: 'mysql-upsert',
  config: MysqlUpsertConfig,
  capabilities: { batching: true, deletion: true, rows: true },
  connector: async () => (await import('./mysql-upsert-connector.js')).mysqlUpsertConnector,
} satisfies StreamDestinationKind<MysqlUpsertConfig>;
