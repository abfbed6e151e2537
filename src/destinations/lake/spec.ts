import { z } from 'zod';
import { destinationCommon } from '../../config/destination-spec.js';
import type { DestinationKind } from '../connector.js';

/** The configuration spec of the Parquet lake. Only zod and configuration helpers here. */
export const ParquetDestinationConfig = z
  .object({
    ...destinationCommon,
    type: z
      .literal('parquet')
      .describe('parquet: hive-partitioned Parquet files and a manifest, through DuckDB.'),
    path: z.string().min(1).describe('Folder of the lake (relative to the data folder).'),
  })
  .strict();
export type ParquetDestinationConfig = z.infer<typeof ParquetDestinationConfig>;

/** Hive-partitioned Parquet files and a manifest, written by the process's DuckDB. */
export const parquetDestination = {
  type: 'parquet',
  config: ParquetDestinationConfig,
  capabilities: { transformations: false, perPartition: false },
  connector: async () => (await import('./parquet-connector.js')).parquetConnector,
} satisfies DestinationKind<ParquetDestinationConfig>;
