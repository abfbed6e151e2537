export type { SqlEngine, WarehouseDestination } from './destination.js';
export { ParquetLake } from './lake/parquet-lake.js';
export { DuckDBEngine } from './warehouse/duckdb/duckdb-engine.js';
export { NameRegistry, sanitizeName } from './warehouse/naming.js';
export { PostgresEngine } from './warehouse/postgres/postgres-engine.js';
export { SegmentWarehouse } from './warehouse/segment-warehouse.js';
