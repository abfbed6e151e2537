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
  /**
   * The stored offset (under `offsetKey`, default the destination's name) and the names the
   * destination gave out, in the order given. Engines that take concurrent writers also
   * return `namesSeen`, the mark to pass to `apply`.
   */
  readState(
    destination: string,
    offsetKey?: string,
  ): Promise<{ offset: number; names: NameRecord[]; namesSeen?: number }>;
  /**
   * Events per plan: a load is planned in parts of this size, which the engine pulls one at a
   * time, so it can plan the next part while the database still works on the last one.
   * Undefined: one plan per load.
   */
  readonly planPart?: number;
  /**
   * Runs the plans, records their names and stores `nextOffset`, all in one transaction.
   * Engines that take concurrent writers resolve with the new `namesSeen`.
   */
  apply(
    destination: string,
    plans: Iterable<LoadPlan> | AsyncIterable<LoadPlan>,
    nextOffset: number,
    options?: ApplyOptions,
    // biome-ignore lint/suspicious/noConfusingVoidType: adapters that report nothing return Promise<void>
  ): Promise<{ namesSeen: number } | void>;
  close(): Promise<void>;
}

/** How one instance of a destination among several (one per log partition) loads. */
export interface ApplyOptions {
  /** Key of the stored offset. Default the destination's name. */
  offsetKey?: string;
  /** Mark of the names the caller's model holds (from `readState` or the last `apply`). */
  namesSeen?: number;
  /**
   * Called inside the load's transaction, once no other instance can give out names, and
   * before the first plan is taken, with the names other instances recorded since
   * `namesSeen`: the caller adds them to its model, so the plans build on every column
   * that exists.
   */
  catchUp?: (names: NameRecord[]) => void;
}
