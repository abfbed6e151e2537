/** The MySQL / MariaDB source connector: `type: mysql`. */
import type { PullSourceConnector } from '../source.js';
import { checkSql, discoverSql } from '../sql/catalog.js';
import { readSql, sourceLabel } from '../sql/read.js';
import { connectMysql } from './driver.js';
import { MysqlSourceConfig } from './spec.js';

export { MysqlSourceConfig } from './spec.js';

export const mysqlSource: PullSourceConnector<MysqlSourceConfig> = {
  type: 'mysql',
  kind: 'pull',
  spec: MysqlSourceConfig,
  check: (config, ctx) => checkSql(() => connectMysql(config, sourceLabel(config)), config, ctx),
  discover: (config, ctx) => discoverSql(() => connectMysql(config, sourceLabel(config)), config, ctx),
  read: (config, streams, state, ctx) =>
    readSql(() => connectMysql(config, sourceLabel(config)), config, streams, state, ctx),
};
