export { DuckDBStore } from './duckdb/duckdb-store.js';
export { PostgresStore, type PostgresStoreOptions } from './postgres/postgres-store.js';
export type { EventRow, FailedRow, QueryResult, Store, StoreBatch } from './store.js';
export { eventKey } from './store.js';
