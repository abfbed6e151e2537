import { sqlString } from '../../../platform/duckdb/duckdb-sql.js';
import type { DestinationConnector } from '../../connector.js';
import { checkWritablePath, destinationPath } from '../../destination-path.js';
import { SegmentWarehouse } from '../segment-warehouse.js';
import type { DuckDBDestinationConfig } from '../spec.js';
import { DuckDBEngine } from './duckdb-engine.js';

/**
 * Segment tables in the process's DuckDB: the embedded warehouse file (no `path`), or another
 * file attached under `dest_<id>`. A file is open once per process, so these share the instance.
 */
export const duckdbConnector: DestinationConnector<DuckDBDestinationConfig> = {
  async check(config, ctx) {
    if (config.path === undefined) return { ok: true };
    return checkWritablePath(config.id, destinationPath(ctx.dataDir, config.path), 'file');
  },

  async create(config, ctx) {
    const instance = ctx.instance;
    if (instance === undefined)
      throw new Error("a duckdb destination needs the embedded deployment's DuckDB");
    let catalog: string;
    // Only the warehouse file is checkpointed by another writer (the `events` loader).
    const gate = config.path === undefined ? ctx.checkpoints : undefined;
    const c = await instance.connect();
    try {
      if (config.path === undefined) {
        catalog = String((await c.runAndReadAll('SELECT current_database()')).getRows()[0]![0]);
      } else {
        catalog = `dest_${config.id.replace(/-/g, '_')}`;
        await c.run(
          `ATTACH IF NOT EXISTS ${sqlString(destinationPath(ctx.dataDir, config.path))} AS "${catalog}"`,
        );
      }
    } finally {
      c.closeSync();
    }
    return new SegmentWarehouse({
      name: config.id,
      scope: ctx.scope,
      schema: config.schema,
      maxColumns: config.maxColumns,
      engine: new DuckDBEngine(instance, { catalog, maxColumns: config.maxColumns, checkpoints: gate }),
    });
  },
};
