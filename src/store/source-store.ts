/**
 * What the source runner keeps in the store: per-stream sync state, sync runs, the objects
 * tables (`<source>.<stream>`) and the failures of stage `source`. Typed methods, no SQL
 * across the port. Adapters: DuckDB (`./store/duckdb-source-store.ts`, embedded) and PostgreSQL
 * (`./store/postgres-source-store.ts`, scale-out state).
 */

import type { ColumnType } from '../sources/streams-schema.js';
import type { FailedRow } from './store.js';

/** The objects table of one stream: the stream's columns, in the order rows carry their values. */
export interface ObjectTable {
  sourceId: string;
  stream: string;
  columns: readonly { name: string; type: ColumnType }[];
}

/** One row for an objects table: its key (the primary key's values as JSON) and its values in column order. */
export interface ObjectRow {
  key: string;
  values: unknown[];
}

/** Counts of a run, as far as it got. */
export interface RunProgress {
  /** Records and failures read. */
  rows: number;
  /** Objects upserted. */
  objects: number;
  /** Events appended to the log. */
  events: number;
  /** Failures stored (stage source). */
  failed: number;
  bytes?: number;
  totalBytes?: number;
}

export interface SyncRun extends RunProgress {
  id: string;
  sourceId: string;
  /** `schedule`, `api`, `cli`, `import`. */
  trigger: string;
  status: 'running' | 'succeeded' | 'failed';
  startedAt: string;
  finishedAt: string | null;
  error: string | null;
}

/** Everything one checkpoint makes durable, in one transaction. */
export interface SyncCommit {
  sourceId: string;
  runId: string;
  /** Rows to upsert, per stream (the table must exist: `ensureTable`). */
  objects: { table: ObjectTable; rows: ObjectRow[] }[];
  failed: FailedRow[];
  /** Streams whose full refresh read everything: their objects not synced since `since` (epoch ms) are marked deleted. */
  completed: { stream: string; since: number }[];
  /** The new state of each stream that moved (stored as given, JSON). */
  states: Record<string, unknown>;
  progress: RunProgress;
}

/** A row the store refused for its data (a value its column type cannot hold). */
export interface RefusedObject {
  stream: string;
  key: string;
  reason: string;
}

export interface SourceStore {
  /** Creates the stream's table, or adds the columns it lacks (never drops or retypes). */
  ensureTable(table: ObjectTable): Promise<void>;
  /** Stored state of each stream of the source. */
  states(sourceId: string): Promise<Record<string, unknown>>;
  /**
   * Upserts the objects, stores the failures, marks deletions, stores the states and the
   * run's progress, all in one transaction. A row refused for its data is left out and stored
   * as a failure (`TRIB_ERR_SOURCE_UNSTORABLE`) in the same transaction; the report lists it.
   */
  commit(c: SyncCommit): Promise<RefusedObject[]>;
  startRun(sourceId: string, trigger: string): Promise<string>;
  finishRun(
    runId: string,
    status: 'succeeded' | 'failed',
    progress: RunProgress,
    error?: string,
  ): Promise<void>;
  /** Newest first. */
  runs(sourceId: string, limit: number): Promise<SyncRun[]>;
  /** Runs left `running` by a process that died (of one source, or of all): marked failed. */
  abandonRuns(sourceId?: string): Promise<number>;
  /**
   * Where several processes share the store (scale-out): takes the source's sync lock for this
   * process, or resolves undefined when another process holds it. The release ends it. Stores
   * of one process leave it out (the runner's own lock suffices).
   */
  lockSource?(sourceId: string): Promise<(() => Promise<void>) | undefined>;
  close(): Promise<void>;
}
