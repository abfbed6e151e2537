import { z } from 'zod';
import { refineSqlSource, sqlSourceShape, sqlSourceSpec } from '../sql/spec.js';

/**
 * A PostgreSQL source: tables, views and named queries, read in full or incrementally by a
 * cursor column.
 * @example
 * ```yaml
 * - id: crm
 *   type: postgres
 *   connectionString: postgres://reader:${CRM_PASSWORD}@crm-db:5432/crm
 *   streams:
 *     - { name: contacts, table: public.contacts, syncMode: incremental, cursorField: updated_at }
 * ```
 */
export const PostgresSourceConfig = z
  .object({
    type: z.literal('postgres').describe('postgres: tables and queries of a PostgreSQL database.'),
    ...sqlSourceShape(5432, 'postgres://user:${PASSWORD}@host:5432/db'),
  })
  .strict()
  .superRefine(refineSqlSource);
export type PostgresSourceConfig = z.infer<typeof PostgresSourceConfig>;

/** The `sources:` entry of `type: postgres` (the registry's spec): common fields, connection, strict streams, schedule. */
export const PostgresSourceSpec = sqlSourceSpec(
  z.literal('postgres').describe('postgres: tables and queries of a PostgreSQL database.'),
  5432,
  'postgres://user:${PASSWORD}@host:5432/db',
);
export type PostgresSourceSpec = z.infer<typeof PostgresSourceSpec>;
