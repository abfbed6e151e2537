/**
 * What reverse ETL keeps in the store: per model the last synced snapshot (primary key →
 * checksum of the row as sent) and the record of each run. Typed methods, no SQL across the
 * port. The diff of a model's result against its snapshot is computed in the engine, in bulk:
 * nothing moves through the event loop but the rows that changed. Adapters: DuckDB
 * (`./duckdb/duckdb-model-store.ts`, embedded: the model runs on the warehouse's own DuckDB)
 * and PostgreSQL (`./postgres/postgres-model-store.ts`, scale-out: the model runs through the
 * read-only query role, its rows are copied into a temporary table beside the snapshot).
 */

/** A model to run: untrusted SQL, read with the guards of `/admin/v1/query` (no files, no writes). */
export interface ModelQuery {
  model: string;
  /** One SELECT over the warehouse's tables. */
  sql: string;
  /** Columns of the result that identify a row (at least one). */
  primaryKey: readonly string[];
  /**
   * Model column → destination field (a dotted path makes nested objects: `traits.email`).
   * Undefined: every column under its own name.
   */
  mapping?: Readonly<Record<string, string>>;
  /** Milliseconds the model's SQL may run. */
  timeoutMs: number;
}

/** What a row of the diff is to the snapshot. */
export type ChangeKind = 'added' | 'changed' | 'removed';

/** One row that differs from the snapshot. */
export interface ModelChange {
  kind: ChangeKind;
  /** The primary key's values as a JSON array (the snapshot's key). */
  key: string;
  /**
   * The checksum of the mapped row (the adapter's: a hash of the mapped values and the
   * mapping, or a digest of the row's JSON); for `removed`, the one last synced.
   */
  checksum: string;
  /** The mapped row as JSON text; for `removed`, the primary key's fields only. */
  payload: string;
}

export interface DiffCounts {
  /** Rows the model returned. */
  rows: number;
  added: number;
  changed: number;
  removed: number;
  /** Rows left out: a primary key column is NULL, or several rows share a primary key. */
  invalid: number;
  /** Why, for the run's record, when `invalid` > 0. */
  invalidReason?: string;
}

/** A model's result diffed against its snapshot, held in the engine until `close`. */
export interface ModelDiff {
  readonly counts: DiffCounts;
  /** The changes of these kinds, in pages of at most `pageSize`, ordered by key. */
  changes(kinds: readonly ChangeKind[], pageSize: number): AsyncIterable<ModelChange[]>;
  /**
   * Takes changes of these kinds into the snapshot in bulk without sending them (`insert`
   * mode's changed rows, the removed rows of every mode but `mirror`).
   */
  accept(kinds: readonly ChangeKind[]): Promise<void>;
  close(): Promise<void>;
}

/**
 * Rows a destination took: recorded as synced with their checksum, or dropped when deleted.
 * `added` rows are not in the snapshot (the diff said so, and one run of a model runs at a
 * time), so an adapter may append them.
 */
export interface SnapshotCommit {
  model: string;
  added: readonly { key: string; checksum: string }[];
  changed: readonly { key: string; checksum: string }[];
  deleted: readonly string[];
}

export interface RunCounts {
  added: number;
  changed: number;
  removed: number;
  failed: number;
}

export interface ModelRun extends RunCounts {
  id: string;
  model: string;
  /** `schedule`, `api`, `cli`. */
  trigger: string;
  status: 'running' | 'succeeded' | 'failed';
  startedAt: string;
  finishedAt: string | null;
  /** The SQL's error for a failed run; the first failures of rows for a run with failed rows. */
  error: string | null;
}

export interface ModelStore {
  /**
   * Runs the model and diffs its result against the snapshot. Throws `TributaryError`
   * `TRIB_ERR_QUERY_NOT_ALLOWED`, `TRIB_ERR_QUERY_TIMEOUT` or `TRIB_ERR_QUERY_FAILED` when the
   * SQL is refused or fails; the snapshot is untouched then.
   */
  diff(q: ModelQuery): Promise<ModelDiff>;
  /** Records what the destination took, in one transaction. */
  commit(c: SnapshotCommit): Promise<void>;
  /** Forgets a model's snapshot: its next run sends every row. */
  resetSnapshot(model: string): Promise<void>;
  startRun(model: string, trigger: string): Promise<string>;
  finishRun(runId: string, status: 'succeeded' | 'failed', counts: RunCounts, error?: string): Promise<void>;
  /** Newest first. */
  runs(model: string, limit: number): Promise<ModelRun[]>;
  /**
   * Runs left `running` by a process that died, marked failed: those of `model` (the caller
   * holds its lock), or, without one, those a process of this store can no longer be running.
   */
  abandonRuns(model?: string): Promise<number>;
  /**
   * Where several processes share the store (scale-out): takes the model's run lock for this
   * process, or resolves undefined when another process holds it; the release ends it.
   * Stores of one process leave it out (the service's own check suffices).
   */
  lockModel?(model: string): Promise<(() => Promise<void>) | undefined>;
  close(): Promise<void>;
}

/** A model run read back, its values in the order of `RUN_COLUMNS` (times as text). */
export const RUN_COLUMNS =
  'id, model, trigger, status, started_at, finished_at, added, changed, removed, failed, error';

export function modelRunFromRow(row: readonly unknown[]): ModelRun {
  return {
    id: String(row[0]),
    model: String(row[1]),
    trigger: String(row[2]),
    status: String(row[3]) as ModelRun['status'],
    startedAt: String(row[4]),
    finishedAt: row[5] === null ? null : String(row[5]),
    added: Number(row[6]),
    changed: Number(row[7]),
    removed: Number(row[8]),
    failed: Number(row[9]),
    error: row[10] === null ? null : String(row[10]),
  };
}

/** A node of the payload's shape: a column at a leaf, fields below an object. */
export type PayloadShape = { column: string } | { fields: Map<string, PayloadShape> };

/**
 * The shape of the mapped row: `mapping` (column → dotted field path) as a tree, so an adapter
 * builds nested JSON objects (`json_object` / `jsonb_build_object`). Throws on a path that is
 * both a value and an object (`a` and `a.b`).
 */
export function payloadShape(mapping: Readonly<Record<string, string>>): Map<string, PayloadShape> {
  const root = new Map<string, PayloadShape>();
  for (const [column, field] of Object.entries(mapping)) {
    const parts = field.split('.');
    let level = root;
    parts.forEach((part, i) => {
      const last = i === parts.length - 1;
      const at = level.get(part);
      if (last) {
        if (at !== undefined)
          throw new Error(`mapping: field "${field}" is given twice or holds other fields`);
        level.set(part, { column });
        return;
      }
      if (at === undefined) {
        const next = new Map<string, PayloadShape>();
        level.set(part, { fields: next });
        level = next;
      } else if ('fields' in at) level = at.fields;
      else throw new Error(`mapping: field "${parts.slice(0, i + 1).join('.')}" is a value and an object`);
    });
  }
  return root;
}

/**
 * The field each primary key column is sent as in a delete's payload: its mapped field, or
 * its own name when the mapping leaves it out.
 */
export function keyFields(q: Pick<ModelQuery, 'primaryKey' | 'mapping'>): string[] {
  return q.primaryKey.map((c) => q.mapping?.[c] ?? c);
}

/** The payload of a removed row: its primary key's fields, from the key's JSON array. */
export function deletePayload(q: Pick<ModelQuery, 'primaryKey' | 'mapping'>, key: string): string {
  const values = JSON.parse(key) as unknown[];
  const out: Record<string, unknown> = {};
  keyFields(q).forEach((f, i) => {
    const parts = f.split('.');
    let at = out;
    for (const p of parts.slice(0, -1)) {
      at[p] ??= {};
      at = at[p] as Record<string, unknown>;
    }
    at[parts[parts.length - 1]!] = values[i] ?? null;
  });
  return JSON.stringify(out);
}
