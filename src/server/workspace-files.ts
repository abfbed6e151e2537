import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import type { TributaryConfig } from '../config/schema.js';
import { DuckDBEventLog } from '../log/duckdb/duckdb-event-log.js';
import { embeddedDuckDBOptions } from '../platform/duckdb/duckdb-options.js';
import { sqlString } from '../platform/duckdb/duckdb-sql.js';

/**
 * Opens an embedded workspace's files in `dir` (which must exist): the DuckDB instance on
 * `warehouse.duckdb`, in UTC, with `log.duckdb` attached as `log`, and the event log on it
 * (segments under `log-segments/`). The server and a server-less import open them so.
 */
export async function openWorkspaceFiles(
  dir: string,
  storage: TributaryConfig['storage'],
): Promise<{ instance: DuckDBInstance; log: DuckDBEventLog }> {
  const instance = await DuckDBInstance.create(join(dir, 'warehouse.duckdb'), embeddedDuckDBOptions(storage));
  const setup = await instance.connect();
  await setup.run("SET GLOBAL TimeZone = 'UTC'");
  await setup.run(`ATTACH IF NOT EXISTS ${sqlString(join(dir, 'log.duckdb'))} AS log`);
  setup.closeSync();
  const log = await DuckDBEventLog.open(instance, { catalog: 'log', segmentDir: join(dir, 'log-segments') });
  return { instance, log };
}
