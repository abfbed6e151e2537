export { DuckDBEventLog, type DuckDBEventLogOptions } from './duckdb/duckdb-event-log.js';
export type {
  AppendResult,
  ConsumeOptions,
  Delivered,
  EventLog,
  RawEvent,
  Subscription,
} from './event-log.js';
export { NatsEventLog, type NatsEventLogOptions, partitionFor } from './nats/index.js';
