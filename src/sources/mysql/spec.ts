import { z } from 'zod';
import { refineSqlSource, sqlSourceShape, sqlSourceSpec } from '../sql/spec.js';

/**
 * A MySQL or MariaDB source: tables, views and named queries, read in full or incrementally
 * by a cursor column.
 * @example
 * ```yaml
 * - id: shop
 *   type: mysql
 *   host: shop-db
 *   database: shop
 *   user: reader
 *   password: ${SHOP_DB_PASSWORD}
 *   streams:
 *     - { name: orders, table: shop.orders, syncMode: incremental, cursorField: updated_at }
 * ```
 */
export const MysqlSourceConfig = z
  .object({
    type: z.literal('mysql').describe('mysql: tables and queries of a MySQL or MariaDB database.'),
    ...sqlSourceShape(3306, 'mysql://user:${PASSWORD}@host:3306/db'),
  })
  .strict()
  .superRefine(refineSqlSource);
export type MysqlSourceConfig = z.infer<typeof MysqlSourceConfig>;

/** The `sources:` entry of `type: mysql` (the registry's spec): common fields, connection, strict streams, schedule. */
export const MysqlSourceSpec = sqlSourceSpec(
  z.literal('mysql').describe('mysql: tables and queries of a MySQL or MariaDB database.'),
  3306,
  'mysql://user:${PASSWORD}@host:3306/db',
);
export type MysqlSourceSpec = z.infer<typeof MysqlSourceSpec>;
