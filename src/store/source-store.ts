/**
 * What the source runner keeps in the store: per-stream sync state, sync runs, the objects
 * tables (`<source>.<stream>`) and the failures of stage `source`. Typed methods, no SQL
 * across the port. Adapters: DuckDB (`./store/duckdb-source-store.ts`, embedded) and PostgreSQL
 * (`./store/postgres-source-store.ts`, scale-out state).
 */

import { sourceFailure } from '../sources/failures.js';
import type { ColumnType } from '../sources/streams-schema.js';
import { findRefused } from './storable.js';
import type { FailedRow } from './store.js';

/** The bookkeeping columns of every objects table. */
export const KEY_COLUMN = '_tributary_key';
export const SYNCED_AT_COLUMN = '_tributary_synced_at';
export const DELETED_COLUMN = '_tributary_deleted';
export const RUN_COLUMN = '_tributary_run_id';

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

/**
 * A commit the store refused for its data, split: each object table's rows are tried
 * (`tryRows` writes them and rolls back) to find the ones the engine cannot hold; those become
 * refused objects and `TRIB_ERR_SOURCE_UNSTORABLE` failures beside the commit's own, and the
 * other rows are what to write again.
 */
export async function separateRefused(
  c: SyncCommit,
  tryRows: (table: ObjectTable, rows: readonly ObjectRow[]) => Promise<void>,
  isDataError: (err: unknown) => boolean,
): Promise<{ objects: SyncCommit['objects']; failed: FailedRow[]; refused: RefusedObject[] }> {
  const refused: RefusedObject[] = [];
  const failed = [...c.failed];
  const objects: SyncCommit['objects'] = [];
  for (const o of c.objects) {
    const bad = await findRefused(o.rows, (slice) => tryRows(o.table, slice), isDataError);
    const skip = new Set(bad.map((b) => b.index));
    for (const b of bad) {
      const row = o.rows[b.index]!;
      refused.push({ stream: o.table.stream, key: row.key, reason: b.reason });
      failed.push(
        sourceFailure(c.sourceId, o.table.stream, 'TRIB_ERR_SOURCE_UNSTORABLE', b.reason, {
          key: row.key,
          values: Object.fromEntries(o.table.columns.map((col, i) => [col.name, row.values[i]])),
        }),
      );
    }
    objects.push({ table: o.table, rows: o.rows.filter((_, i) => !skip.has(i)) });
  }
  return { objects, failed, refused };
}

/**
 * A run read back from the `source_runs` table, its values in the order `id, source_id,
 * trigger, status, started_at, finished_at, rows_read, objects, events, failed, bytes,
 * total_bytes, error` (times as text).
 */
export function syncRunFromRow(row: readonly unknown[]): SyncRun {
  return {
    id: String(row[0]),
    sourceId: String(row[1]),
    trigger: String(row[2]),
    status: String(row[3]) as SyncRun['status'],
    startedAt: String(row[4]),
    finishedAt: row[5] === null ? null : String(row[5]),
    rows: Number(row[6]),
    objects: Number(row[7]),
    events: Number(row[8]),
    failed: Number(row[9]),
    ...(row[10] === null ? {} : { bytes: Number(row[10]) }),
    ...(row[11] === null ? {} : { totalBytes: Number(row[11]) }),
    error: row[12] === null ? null : String(row[12]),
  };
}
