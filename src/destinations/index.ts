export type {
  CheckResult,
  DestinationCapabilities,
  DestinationConnector,
  DestinationContext,
  DestinationKind,
} from './connector.js';
export type { SqlEngine, WarehouseDestination } from './destination.js';
export { ParquetLake } from './lake/parquet-lake.js';
export { DESTINATION_KINDS, destinationKind } from './registry.js';
export { DuckDBEngine } from './warehouse/duckdb/duckdb-engine.js';
export { NameRegistry, sanitizeName } from './warehouse/naming.js';
export { PostgresEngine } from './warehouse/postgres/postgres-engine.js';
export { SegmentWarehouse } from './warehouse/segment-warehouse.js';
