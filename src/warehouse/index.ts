export { DuckDBWarehouse } from './duckdb/duckdb-warehouse.js';
export type { EventRow, FailedRow, QueryResult, Warehouse, WarehouseBatch } from './warehouse.js';
export { eventKey } from './warehouse.js';
