/** The PostgreSQL source connector: `type: postgres`. */
import type { PullSourceConnector } from '../source.js';
import { checkSql, discoverSql } from '../sql/catalog.js';
import { readSql, sourceLabel } from '../sql/read.js';
import { connectPostgres } from './driver.js';
import { PostgresSourceConfig } from './spec.js';

export { PostgresSourceConfig } from './spec.js';

export const postgresSource: PullSourceConnector<PostgresSourceConfig> = {
  type: 'postgres',
  kind: 'pull',
  spec: PostgresSourceConfig,
  check: (config, ctx) => checkSql(() => connectPostgres(config, sourceLabel(config)), config, ctx),
  discover: (config, ctx) => discoverSql(() => connectPostgres(config, sourceLabel(config)), config, ctx),
  read: (config, streams, state, ctx) =>
    readSql(() => connectPostgres(config, sourceLabel(config)), config, streams, state, ctx),
};
