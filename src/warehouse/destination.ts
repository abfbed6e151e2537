import type { LoadPlan, NameRecord } from './layout/warehouse-model.js';
import type { StoredEvent } from './warehouse.js';

/**
 * A warehouse destination: follows the `events` table through the `EventFeed` and keeps
 * its own copy in its own layout (Segment tables in DuckDB or PostgreSQL, Parquet files).
 * The offset it returns is stored in the destination with the rows of the last load, so a
 * load that crashed before its commit is redone and one that committed is never repeated.
 */
export interface WarehouseDestination {
  /** Name of the destination in the configuration; also the consumer name of its offset. */
  readonly name: string;
  /** The log offset the destination has loaded up to (0 before the first load). */
  storedOffset(): Promise<number>;
  /** Loads `events` and stores `nextOffset` with them, all or nothing. */
  load(events: readonly StoredEvent[], nextOffset: number): Promise<void>;
  close(): Promise<void>;
}

/**
 * The part of a SQL warehouse that differs per engine: DDL, bulk staging and the merge,
 * each plan applied in one transaction with the destination's offset. Adapters:
 * `duckdb/duckdb-engine.ts`, `postgres/postgres-engine.ts`.
 */
export interface SqlEngine {
  /** Most columns a table may have (PostgreSQL: 1,600). */
  readonly maxColumns: number;
  /** Creates the bookkeeping tables (`_tributary.warehouse_offsets`, `_tributary.warehouse_names`). */
  setup(): Promise<void>;
  /** The destination's stored offset and the names it gave out, in the order given. */
  readState(destination: string): Promise<{ offset: number; names: NameRecord[] }>;
  /**
   * Events per plan: a load is planned in parts of this size, which the engine pulls one at a
   * time, so it can plan the next part while the database still works on the last one.
   * Undefined: one plan per load.
   */
  readonly planPart?: number;
  /** Runs the plans, records their names and stores `nextOffset`, all in one transaction. */
  apply(destination: string, plans: Iterable<LoadPlan>, nextOffset: number): Promise<void>;
  close(): Promise<void>;
}
