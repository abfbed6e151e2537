import { randomUUID } from 'node:crypto';
import type { DuckDBConnection, DuckDBInstance } from '@duckdb/node-api';
import type { CheckpointGate } from '../../platform/duckdb/checkpoint-gate.js';
import { quoteIdent, sqlString } from '../../platform/duckdb/duckdb-sql.js';
import type { ColumnType } from '../../sources/streams-schema.js';
import {
  DELETED_COLUMN,
  KEY_COLUMN,
  type ObjectRow,
  type ObjectTable,
  type RefusedObject,
  RUN_COLUMN,
  type RunProgress,
  type SourceStore,
  SYNCED_AT_COLUMN,
  type SyncCommit,
  type SyncRun,
  separateRefused,
  syncRunFromRow,
} from '../source-store.js';
import { storableFailedRow } from '../storable.js';
import type { FailedRow } from '../store.js';
import { isDuckDBDataError } from './duckdb-store.js';

/** The DuckDB column type of each stream column type. */
export const SQL_TYPE: Record<ColumnType, string> = {
  string: 'VARCHAR',
  integer: 'BIGINT',
  number: 'DOUBLE',
  boolean: 'BOOLEAN',
  timestamp: 'TIMESTAMPTZ',
  date: 'DATE',
  json: 'JSON',
};

const SCHEMA = [
  'CREATE SCHEMA IF NOT EXISTS _tributary',
  `CREATE TABLE IF NOT EXISTS _tributary.source_state (
    source_id VARCHAR NOT NULL,
    stream VARCHAR NOT NULL,
    state JSON NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (source_id, stream))`,
  `CREATE TABLE IF NOT EXISTS _tributary.source_runs (
    id VARCHAR PRIMARY KEY,
    source_id VARCHAR NOT NULL,
    trigger VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    rows_read BIGINT NOT NULL,
    objects BIGINT NOT NULL,
    events BIGINT NOT NULL,
    failed BIGINT NOT NULL,
    bytes BIGINT,
    total_bytes BIGINT,
    error VARCHAR)`,
];

/**
 * The source runner's store in the embedded DuckDB (the warehouse file): objects tables in a
 * schema per source, state and runs under `_tributary`, failures in `failed_events`. Its own
 * connection, so a commit is one transaction of its own beside the loader's.
 */
export class DuckDBSourceStore implements SourceStore {
  /** Bytes of rows written since the last checkpoint. */
  private written = 0;

  private constructor(
    private readonly conn: DuckDBConnection,
    private readonly checkpoints: CheckpointGate | undefined,
    private readonly checkpointBytes: number,
  ) {}

  /**
   * @param options.checkpoints the file's checkpoint gate (the warehouse's), so no appender of a
   *   destination flushes during the store's checkpoints.
   * @param options.checkpointBytes bytes of rows after which the store checkpoints the file
   *   between two commits (default 32 MB): the server's files checkpoint only at 1 GB of WAL on
   *   their own, and a large import would hold its WAL in memory until then.
   */
  static async open(
    instance: DuckDBInstance,
    options: { checkpoints?: CheckpointGate; checkpointBytes?: number } = {},
  ): Promise<DuckDBSourceStore> {
    const conn = await instance.connect();
    for (const sql of SCHEMA) await conn.run(sql);
    return new DuckDBSourceStore(conn, options.checkpoints, options.checkpointBytes ?? 32 * 1024 * 1024);
  }

  /** Checkpoints once enough was written; a checkpoint DuckDB refuses (other writes open) is tried after the next commit. */
  private async maybeCheckpoint(): Promise<void> {
    if (this.written < this.checkpointBytes) return;
    const run = () => this.conn.run('CHECKPOINT');
    try {
      await (this.checkpoints ? this.checkpoints.checkpoint(run) : run());
      this.written = 0;
    } catch {
      // Tried again after the next commit.
    }
  }

  private tail: Promise<unknown> = Promise.resolve();
  /** One statement sequence at a time on the connection (a transaction is several awaits). */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(fn, fn);
    this.tail = run.catch(() => undefined);
    return run;
  }

  ensureTable(table: ObjectTable): Promise<void> {
    return this.serial(async () => {
      const name = tableName(table);
      await this.conn.run(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(table.sourceId)}`);
      await this.conn.run(
        // No PRIMARY KEY: an index over every key makes each upsert slower as the table grows
        // and holds the keys in memory; the upsert deletes the batch's keys, then inserts.
        `CREATE TABLE IF NOT EXISTS ${name} (${quoteIdent(KEY_COLUMN)} VARCHAR NOT NULL,
          ${quoteIdent(SYNCED_AT_COLUMN)} TIMESTAMPTZ NOT NULL, ${quoteIdent(DELETED_COLUMN)} BOOLEAN NOT NULL,
          ${quoteIdent(RUN_COLUMN)} VARCHAR)`,
      );
      const r = await this.conn.runAndReadAll(
        'SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2',
        [table.sourceId, table.stream],
      );
      const have = new Set(r.getRows().map(([c]) => String(c)));
      for (const c of table.columns) {
        if (!have.has(c.name))
          await this.conn.run(`ALTER TABLE ${name} ADD COLUMN ${quoteIdent(c.name)} ${SQL_TYPE[c.type]}`);
      }
    });
  }

  async states(sourceId: string): Promise<Record<string, unknown>> {
    const r = await this.serial(() =>
      this.conn.runAndReadAll(
        'SELECT stream, CAST(state AS VARCHAR) FROM _tributary.source_state WHERE source_id = $1',
        [sourceId],
      ),
    );
    return Object.fromEntries(r.getRows().map(([s, j]) => [String(s), JSON.parse(String(j)) as unknown]));
  }

  commit(c: SyncCommit): Promise<RefusedObject[]> {
    return this.serial(async () => {
      const syncedAt = new Date().toISOString();
      try {
        await this.writeAll(c, c.objects, [...c.failed], syncedAt);
        await this.maybeCheckpoint();
        return [];
      } catch (err) {
        if (!isDuckDBDataError(err)) throw err;
      }
      // A value the column cannot hold: find the rows by trial upserts that are rolled back.
      const { objects, failed, refused } = await separateRefused(
        c,
        async (table, slice) => {
          await this.conn.run('BEGIN TRANSACTION');
          try {
            await this.upsert(table, slice, syncedAt, c.runId);
          } finally {
            await this.conn.run('ROLLBACK');
          }
        },
        isDuckDBDataError,
      );
      await this.writeAll(c, objects, failed, syncedAt);
      await this.maybeCheckpoint();
      return refused;
    });
  }

  private async writeAll(
    c: SyncCommit,
    objects: SyncCommit['objects'],
    failed: FailedRow[],
    syncedAt: string,
  ): Promise<void> {
    const w = this.conn;
    await w.run('BEGIN TRANSACTION');
    try {
      for (const o of objects) await this.upsert(o.table, o.rows, syncedAt, c.runId);
      for (const done of c.completed) {
        await w.run(
          `UPDATE ${tableName({ sourceId: c.sourceId, stream: done.stream })} SET ${quoteIdent(DELETED_COLUMN)} = true
           WHERE ${quoteIdent(SYNCED_AT_COLUMN)} < make_timestamptz(CAST($1 AS BIGINT) * 1000) AND NOT ${quoteIdent(DELETED_COLUMN)}`,
          [BigInt(Math.trunc(done.since))],
        );
      }
      if (failed.length > 0) await this.insertFailed(failed.map(storableFailedRow));
      for (const [stream, state] of Object.entries(c.states)) {
        await w.run('INSERT OR REPLACE INTO _tributary.source_state VALUES ($1, $2, $3, now())', [
          c.sourceId,
          stream,
          JSON.stringify(state),
        ]);
      }
      await this.progress(c.runId, c.progress);
      await w.run('COMMIT');
    } catch (err) {
      await w.run('ROLLBACK').catch(() => undefined);
      throw err;
    }
  }

  /**
   * The rows as one string of JSON arrays (`[key, v1, v2, …]`), split and cast by DuckDB on
   * its threads: the event loop hands over one string instead of a value per cell.
   */
  private async upsert(
    table: ObjectTable,
    rows: readonly ObjectRow[],
    syncedAt: string,
    runId: string,
  ): Promise<void> {
    if (rows.length === 0) return;
    const lines: string[] = new Array(rows.length);
    const keys: string[] = new Array(rows.length);
    for (let i = 0; i < rows.length; i++) {
      lines[i] = JSON.stringify([rows[i]!.key, ...rows[i]!.values]);
      // Keys hold no raw newline: JSON text escapes it, and hash keys are hex.
      keys[i] = rows[i]!.key;
    }
    const paths = ['$[0]', ...table.columns.map((_, i) => `$[${i + 1}]`)].map(sqlString).join(', ');
    const cols = table.columns.map((col, i) =>
      col.type === 'json' ? `json_extract(j, '$[${i + 1}]')` : `CAST(f[${i + 2}] AS ${SQL_TYPE[col.type]})`,
    );
    const names = [
      KEY_COLUMN,
      ...table.columns.map((c) => c.name),
      SYNCED_AT_COLUMN,
      DELETED_COLUMN,
      RUN_COLUMN,
    ]
      .map(quoteIdent)
      .join(', ');
    const target = tableName(table);
    // The rows of a batch have distinct keys (the runner keeps the last of each).
    await this.conn.run(
      `DELETE FROM ${target} WHERE ${quoteIdent(KEY_COLUMN)} IN (SELECT unnest(string_split($1, chr(10))))`,
      [keys.join('\n')],
    );
    for (const l of lines) this.written += l.length;
    await this.conn.run(
      `INSERT INTO ${target} (${names})
       SELECT f[1], ${cols.length > 0 ? `${cols.join(', ')}, ` : ''}CAST($2 AS TIMESTAMPTZ), false, $3
       FROM (SELECT j, json_extract_string(j, [${paths}]) AS f FROM (SELECT unnest(string_split($1, chr(10))) AS j))`,
      [lines.join('\n'), syncedAt, runId],
    );
  }

  private async insertFailed(rows: readonly FailedRow[]): Promise<void> {
    const now = new Date().toISOString();
    const lines = rows.map((f) =>
      JSON.stringify([
        f.logOffset,
        f.sourceId,
        f.messageId,
        f.stage,
        f.code,
        f.reason,
        f.receivedAt,
        f.json,
        randomUUID(),
        now,
      ]),
    );
    await this.conn.run(
      `INSERT INTO failed_events (log_offset, source_id, message_id, stage, code, reason, received_at, payload, id, failed_at, retry_state)
       SELECT CAST(f[1] AS BIGINT), f[2], f[3], f[4], f[5], f[6], CAST(f[7] AS TIMESTAMPTZ), f[8], f[9], CAST(f[10] AS TIMESTAMPTZ), 'new'
       FROM (SELECT json_extract_string(j, ['$[0]','$[1]','$[2]','$[3]','$[4]','$[5]','$[6]','$[7]','$[8]','$[9]']) AS f
             FROM (SELECT unnest(string_split($1, chr(10))) AS j))`,
      [lines.join('\n')],
    );
  }

  private async progress(runId: string, p: RunProgress): Promise<void> {
    await this.conn.run(
      `UPDATE _tributary.source_runs SET rows_read = $2, objects = $3, events = $4, failed = $5, bytes = $6, total_bytes = $7
       WHERE id = $1`,
      [
        runId,
        BigInt(p.rows),
        BigInt(p.objects),
        BigInt(p.events),
        BigInt(p.failed),
        big(p.bytes),
        big(p.totalBytes),
      ],
    );
  }

  startRun(sourceId: string, trigger: string): Promise<string> {
    return this.serial(async () => {
      const id = randomUUID();
      await this.conn.run(
        `INSERT INTO _tributary.source_runs VALUES ($1, $2, $3, 'running', now(), NULL, 0, 0, 0, 0, NULL, NULL, NULL)`,
        [id, sourceId, trigger],
      );
      return id;
    });
  }

  finishRun(runId: string, status: 'succeeded' | 'failed', p: RunProgress, error?: string): Promise<void> {
    return this.serial(async () => {
      await this.progress(runId, p);
      await this.conn.run(
        'UPDATE _tributary.source_runs SET status = $2, finished_at = now(), error = $3 WHERE id = $1',
        [runId, status, error ?? null],
      );
    });
  }

  async runs(sourceId: string, limit: number): Promise<SyncRun[]> {
    const r = await this.serial(() =>
      this.conn.runAndReadAll(
        `SELECT id, source_id, trigger, status, CAST(started_at AS VARCHAR), CAST(finished_at AS VARCHAR),
                rows_read, objects, events, failed, bytes, total_bytes, error
         FROM _tributary.source_runs WHERE source_id = $1 ORDER BY started_at DESC LIMIT $2`,
        [sourceId, BigInt(limit)],
      ),
    );
    return r.getRows().map(syncRunFromRow);
  }

  abandonRuns(sourceId?: string): Promise<number> {
    return this.serial(async () => {
      const r = await this.conn.runAndReadAll(
        `UPDATE _tributary.source_runs SET status = 'failed', finished_at = now(),
           error = 'the process stopped during the run; the next sync resumes from the last committed state'
         WHERE status = 'running' AND ($1 IS NULL OR source_id = $1) RETURNING id`,
        [sourceId ?? null],
      );
      return r.getRows().length;
    });
  }

  async close(): Promise<void> {
    await this.tail;
    this.conn.closeSync();
  }
}

function tableName(t: { sourceId: string; stream: string }): string {
  return `${quoteIdent(t.sourceId)}.${quoteIdent(t.stream)}`;
}

function big(n: number | undefined): bigint | null {
  return n === undefined ? null : BigInt(Math.trunc(n));
}
