export type {
  DeliveryBacklog,
  DeliveryEnqueue,
  DeliveryJob,
  DeliveryQueue,
  DeliverySettlement,
  QueuedDelivery,
} from './delivery-queue.js';
export { DuckDBGovernanceStore } from './duckdb/duckdb-governance-store.js';
export { DuckDBStore } from './duckdb/duckdb-store.js';
export type { AuditEntry, AuditFilter, GovernanceStore, StoredAuditEntry } from './governance-store.js';
export { PostgresGovernanceStore } from './postgres/postgres-governance-store.js';
export { PostgresStore, type PostgresStoreOptions } from './postgres/postgres-store.js';
export type {
  EventRow,
  FailedDetailRow,
  FailedFilter,
  FailedPayload,
  FailedRow,
  FailedSummary,
  QueryResult,
  Store,
  StoreBatch,
} from './store.js';
export { eventKey } from './store.js';
export type { UserQueries, UserQueryLimits, UserQueryResult } from './user-query.js';
