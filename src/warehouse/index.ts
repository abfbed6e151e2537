export type { SqlEngine, WarehouseDestination } from './destination.js';
export { DuckDBEngine } from './duckdb/duckdb-engine.js';
export { DuckDBWarehouse } from './duckdb/duckdb-warehouse.js';
export { ParquetLake } from './lake/parquet-lake.js';
export { NameRegistry, sanitizeName } from './naming.js';
export { PostgresEngine } from './postgres/postgres-engine.js';
export { SegmentWarehouse } from './segment-warehouse.js';
export type { EventRow, FailedRow, QueryResult, Warehouse, WarehouseBatch } from './warehouse.js';
export { eventKey } from './warehouse.js';
