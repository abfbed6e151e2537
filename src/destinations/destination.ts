import type { RowTarget } from '../platform/duckdb/duckdb-erase.js';
import type { StoredEvent } from '../store/store.js';
import type { LoadPlan, NameRecord } from './warehouse/layout/warehouse-model.js';

/** One event a destination could not store, and why; the rest of its load was stored. */
export interface RecordFailure {
  event: StoredEvent;
  /** Stable code (`TRIB_ERR_DEST_RECORD_REFUSED`). */
  code: string;
  /** What the engine said. */
  reason: string;
}

/**
 * What a load did. `ok`: every event is stored but those in `failed`, and the offset moved
 * to `nextOffset`. `retryable`: nothing of the load is stored and the offset did not move
 * (the connection was lost, a statement timed out): the same load is tried again later.
 * A load never throws for one bad record.
 */
export type LoadResult =
  | { status: 'ok'; failed: readonly RecordFailure[] }
  | { status: 'retryable'; error: Error; retryAfterMs?: number };

export interface LoadOptions {
  /**
   * Stores the events the load could not take, before the load commits, so a crash between
   * the two cannot lose them (the caller keeps its own offset to store each one once).
   * Called at most once per load, with the load's `nextOffset`. Default: failures are only
   * returned.
   */
  onFailed?: (failed: readonly RecordFailure[], nextOffset: number) => Promise<void>;
}

/**
 * Who this destination's offsets count for: offsets are stored under the destination's key,
 * the workspace and the identity of the log whose offsets they are, so another workspace's
 * loads into the same database, or a new log, never read them as their own.
 */
export interface OffsetScope {
  /** The workspace (`workspace:` in the configuration). */
  workspace: string;
  /** The event log's identity (`EventLog.id`). */
  logId: string;
  /**
   * When offsets of another log are stored under the same key and workspace: false (the
   * default) refuses to start (`TRIB_ERR_DEST_FOREIGN_OFFSETS`); true deletes them and
   * loads the new log from its start.
   */
  startOver?: boolean;
}

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
  /**
   * Loads `events` and stores `nextOffset` with them. An event the engine refuses for a data
   * reason is left out and reported (`failed`, and `options.onFailed` before the commit); the
   * others are stored. A lost connection or a timeout stores nothing (`retryable`).
   */
  load(events: readonly StoredEvent[], nextOffset: number, options?: LoadOptions): Promise<LoadResult>;
  /**
   * The rows a stored event became in this destination's tables (`tributary trace`), where
   * the kind can look them up (the SQL warehouses; not the lake).
   */
  rowsOf?(event: StoredEvent): Promise<WarehouseRow[]>;
  /**
   * Deletes a person's rows or files (a deletion request, `src/governance/privacy/`), leaving
   * none of their bytes; returns the rows erased. Absent: the kind keeps nothing to erase.
   */
  erase?(target: RowTarget): Promise<number>;
  close(): Promise<void>;
}

/** One row of a destination's table, as `tributary trace` shows it. */
export interface WarehouseRow {
  schema: string;
  table: string;
  /** The row's values by column, as JSON-safe values (timestamps as text). */
  row: Record<string, unknown>;
}

/**
 * The part of a SQL warehouse that differs per engine: DDL, bulk staging and the merge,
 * each plan applied in one transaction with the destination's offset. Adapters:
 * `duckdb/duckdb-engine.ts`, `postgres/postgres-engine.ts`.
 */
export interface SqlEngine {
  /** Most columns a table may have (PostgreSQL: 1,600). */
  readonly maxColumns: number;
  /**
   * Most bytes the values of one row may take, where the engine has a limit (PostgreSQL:
   * a row must fit in a page); past it, properties go to `_overflow`. Undefined: no limit.
   */
  readonly maxRowBytes?: number;
  /** Creates the bookkeeping tables (`_tributary.warehouse_offsets`, `_tributary.warehouse_names`). */
  setup(): Promise<void>;
  /**
   * Whether `err`, thrown by `apply`, means that the engine refused a value of the load (a
   * data reason: a bad value, a row too large) rather than that it could not run it (lost
   * connection, timeout): a refused load is split until the refused events are found.
   */
  refusesData(err: unknown): boolean;
  /**
   * The stored offset (under `offsetKey`, default the destination's name) and the names the
   * destination gave out, in the order given. Engines that take concurrent writers also
   * return `namesSeen`, the mark to pass to `apply`.
   */
  readState(destination: string, offsetKey?: string, scope?: OffsetScope): Promise<EngineState>;
  /** Deletes the offsets other logs stored under `offsetKey` in the scope's workspace. */
  forgetForeignOffsets(offsetKey: string, scope: OffsetScope): Promise<void>;
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
  /**
   * The rows of `schema.table` whose `id` is `id` (at most a few: `id` is the messageId, or
   * the userId in `users`), values JSON-safe. For lineage; absent in engines that cannot.
   */
  selectById?(schema: string, table: string, id: string): Promise<Record<string, unknown>[]>;
  /**
   * Deletes a person's rows from every table the destination writes (not `_tributary`),
   * leaving none of their bytes in the engine's files; returns the rows erased.
   */
  erase?(target: RowTarget): Promise<number>;
  close(): Promise<void>;
}

/** What an engine holds for a destination: see `SqlEngine.readState`. */
export interface EngineState {
  /**
   * The stored offset of the key in the scope. An offset stored by a version before scopes
   * (no workspace, no log) is taken over by the first scope that reads it while none of its
   * workspace's is stored.
   */
  offset: number;
  names: NameRecord[];
  namesSeen?: number;
  /** Logs other than the scope's whose offsets are stored under the key in the workspace. */
  foreignLogs: string[];
}

/** How one instance of a destination among several (one per log partition) loads. */
export interface ApplyOptions {
  /** Key of the stored offset. Default the destination's name. */
  offsetKey?: string;
  /** Workspace and log the offset is stored for. Default none (empty strings). */
  scope?: OffsetScope;
  /**
   * False: run the plans and roll back, to learn whether the engine takes them (used to
   * find the events it refuses). Default true.
   */
  commit?: boolean;
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
