import type { DestinationConnector } from '../connector.js';
import { checkWritablePath, destinationPath } from '../destination-path.js';
import { ParquetLake } from './parquet-lake.js';
import type { ParquetDestinationConfig } from './spec.js';

/** Hive-partitioned Parquet files and a manifest, written through the process's DuckDB. */
export const parquetConnector: DestinationConnector<ParquetDestinationConfig> = {
  check: (config, ctx) =>
    checkWritablePath(config.id, destinationPath(ctx.dataDir, config.path), 'directory'),

  async create(config, ctx) {
    if (ctx.instance === undefined)
      throw new Error("a parquet destination needs the embedded deployment's DuckDB");
    return new ParquetLake({
      name: config.id,
      instance: ctx.instance,
      root: destinationPath(ctx.dataDir, config.path),
      scope: ctx.scope,
    });
  },
};
