import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import { TRIBUTARY_LOCK_CLASS } from '../../platform/postgres/advisory-locks.js';
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

const SQL_TYPE: Record<ColumnType, string> = {
  string: 'text',
  integer: 'bigint',
  number: 'double precision',
  boolean: 'boolean',
  timestamp: 'timestamptz',
  date: 'date',
  json: 'jsonb',
};

const ident = (name: string) => `"${name.replace(/"/g, '""')}"`;

/**
 * PostgreSQL's errors about the data of a statement (class 22: a value out of range, a bad
 * timestamp, text with U+0000; class 23: a constraint), as opposed to connection or server
 * errors, which say nothing about the rows.
 */
function isDataError(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' && (code.startsWith('22') || code.startsWith('23'));
}

/**
 * The source runner's store in PostgreSQL (scale-out state): objects tables in a schema per
 * source, with a primary key on `_tributary_key` and `ON CONFLICT` upserts; state and runs in
 * the state schema; failures in its `failed_events`. A commit is one transaction.
 */
export class PostgresSourceStore implements SourceStore {
  private constructor(
    private readonly pool: pg.Pool,
    private readonly schema: string,
  ) {}

  /** Creates the state tables (and `failed_events`, where the event store has not) in `schema`. */
  static async open(pool: pg.Pool, schema: string): Promise<PostgresSourceStore> {
    const s = ident(schema);
    await pool.query(`CREATE SCHEMA IF NOT EXISTS ${s}`);
    await pool.query(`CREATE TABLE IF NOT EXISTS ${s}.source_state (
      source_id text NOT NULL, stream text NOT NULL, state jsonb NOT NULL, updated_at timestamptz NOT NULL,
      PRIMARY KEY (source_id, stream))`);
    await pool.query(`CREATE TABLE IF NOT EXISTS ${s}.source_runs (
      id text PRIMARY KEY, source_id text NOT NULL, trigger text NOT NULL, status text NOT NULL,
      started_at timestamptz NOT NULL, finished_at timestamptz, rows_read bigint NOT NULL, objects bigint NOT NULL,
      events bigint NOT NULL, failed bigint NOT NULL, bytes bigint, total_bytes bigint, error text)`);
    await pool.query(`CREATE TABLE IF NOT EXISTS ${s}.failed_events (
      log_offset bigint NOT NULL, source_id text NOT NULL, message_id text, stage text NOT NULL, code text NOT NULL,
      reason text NOT NULL, received_at timestamptz NOT NULL, payload jsonb NOT NULL, id text PRIMARY KEY,
      failed_at timestamptz NOT NULL, logs jsonb, retry_state text NOT NULL DEFAULT 'new', retried_at timestamptz,
      retry_of text, log_partition integer NOT NULL DEFAULT 0)`);
    return new PostgresSourceStore(pool, s);
  }

  async ensureTable(table: ObjectTable): Promise<void> {
    const name = tableName(table);
    await this.pool.query(`CREATE SCHEMA IF NOT EXISTS ${ident(table.sourceId)}`);
    await this.pool.query(
      `CREATE TABLE IF NOT EXISTS ${name} (${ident(KEY_COLUMN)} text PRIMARY KEY,
        ${ident(SYNCED_AT_COLUMN)} timestamptz NOT NULL, ${ident(DELETED_COLUMN)} boolean NOT NULL, ${ident(RUN_COLUMN)} text)`,
    );
    for (const c of table.columns)
      await this.pool.query(
        `ALTER TABLE ${name} ADD COLUMN IF NOT EXISTS ${ident(c.name)} ${SQL_TYPE[c.type]}`,
      );
  }

  async states(sourceId: string): Promise<Record<string, unknown>> {
    const r = await this.pool.query<{ stream: string; state: unknown }>(
      `SELECT stream, state FROM ${this.schema}.source_state WHERE source_id = $1`,
      [sourceId],
    );
    return Object.fromEntries(r.rows.map((row) => [row.stream, row.state]));
  }

  async commit(c: SyncCommit): Promise<RefusedObject[]> {
    const syncedAt = new Date().toISOString();
    const client = await this.pool.connect();
    try {
      try {
        await this.writeAll(client, c, c.objects, [...c.failed], syncedAt);
        return [];
      } catch (err) {
        if (!isDataError(err)) throw err;
      }
      const { objects, failed, refused } = await separateRefused(
        c,
        async (table, slice) => {
          await client.query('BEGIN');
          try {
            await this.upsert(client, table, slice, syncedAt, c.runId);
          } finally {
            await client.query('ROLLBACK');
          }
        },
        isDataError,
      );
      await this.writeAll(client, c, objects, failed, syncedAt);
      return refused;
    } finally {
      client.release();
    }
  }

  private async writeAll(
    client: pg.PoolClient,
    c: SyncCommit,
    objects: SyncCommit['objects'],
    failed: FailedRow[],
    syncedAt: string,
  ): Promise<void> {
    await client.query('BEGIN');
    try {
      for (const o of objects) await this.upsert(client, o.table, o.rows, syncedAt, c.runId);
      for (const done of c.completed) {
        await client.query(
          `UPDATE ${tableName({ sourceId: c.sourceId, stream: done.stream })} SET ${ident(DELETED_COLUMN)} = true
           WHERE ${ident(SYNCED_AT_COLUMN)} < to_timestamp($1::double precision / 1000) AND NOT ${ident(DELETED_COLUMN)}`,
          [done.since],
        );
      }
      if (failed.length > 0) await this.insertFailed(client, failed.map(storableFailedRow));
      for (const [stream, state] of Object.entries(c.states)) {
        await client.query(
          `INSERT INTO ${this.schema}.source_state VALUES ($1, $2, $3::jsonb, now())
           ON CONFLICT (source_id, stream) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at`,
          [c.sourceId, stream, JSON.stringify(state)],
        );
      }
      await this.progress(client, c.runId, c.progress);
      await client.query('COMMIT');
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    }
  }

  /** The rows as one JSON array of arrays (`[key, v1, v2, …]`), unpacked by PostgreSQL. */
  private async upsert(
    client: pg.PoolClient,
    table: ObjectTable,
    rows: readonly ObjectRow[],
    syncedAt: string,
    runId: string,
  ): Promise<void> {
    if (rows.length === 0) return;
    const text = JSON.stringify(rows.map((r) => [r.key, ...r.values]));
    const cols = table.columns.map((col, i) =>
      col.type === 'json' ? `j->${i + 1}` : `(j->>${i + 1})::${SQL_TYPE[col.type]}`,
    );
    const names = [
      KEY_COLUMN,
      ...table.columns.map((c) => c.name),
      SYNCED_AT_COLUMN,
      DELETED_COLUMN,
      RUN_COLUMN,
    ].map(ident);
    const updates = names.slice(1).map((n) => `${n} = excluded.${n}`);
    await client.query(
      `INSERT INTO ${tableName(table)} (${names.join(', ')})
       SELECT j->>0, ${cols.length > 0 ? `${cols.join(', ')}, ` : ''}$2::timestamptz, false, $3
       FROM jsonb_array_elements($1::jsonb) AS j
       ON CONFLICT (${ident(KEY_COLUMN)}) DO UPDATE SET ${updates.join(', ')}`,
      [text, syncedAt, runId],
    );
  }

  private async insertFailed(client: pg.PoolClient, f: readonly FailedRow[]): Promise<void> {
    await client.query(
      `INSERT INTO ${this.schema}.failed_events (log_offset, source_id, message_id, stage, code, reason, received_at,
         payload, id, failed_at, retry_state)
       SELECT o, s, m, st, co, r, ra::timestamptz, pl::jsonb, id, now(), 'new'
       FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                   $9::text[]) AS u(o, s, m, st, co, r, ra, pl, id)`,
      [
        f.map((r) => r.logOffset),
        f.map((r) => r.sourceId),
        f.map((r) => r.messageId),
        f.map((r) => r.stage),
        f.map((r) => r.code),
        f.map((r) => r.reason),
        f.map((r) => r.receivedAt),
        f.map((r) => r.json.replaceAll('\\u0000', '\\ufffd')),
        f.map(() => randomUUID()),
      ],
    );
  }

  private async progress(client: pg.PoolClient | pg.Pool, runId: string, p: RunProgress): Promise<void> {
    await client.query(
      `UPDATE ${this.schema}.source_runs SET rows_read = $2, objects = $3, events = $4, failed = $5, bytes = $6,
         total_bytes = $7 WHERE id = $1`,
      [runId, p.rows, p.objects, p.events, p.failed, p.bytes ?? null, p.totalBytes ?? null],
    );
  }

  async startRun(sourceId: string, trigger: string): Promise<string> {
    const id = randomUUID();
    await this.pool.query(
      `INSERT INTO ${this.schema}.source_runs VALUES ($1, $2, $3, 'running', now(), NULL, 0, 0, 0, 0, NULL, NULL, NULL)`,
      [id, sourceId, trigger],
    );
    return id;
  }

  async finishRun(
    runId: string,
    status: 'succeeded' | 'failed',
    p: RunProgress,
    error?: string,
  ): Promise<void> {
    await this.progress(this.pool, runId, p);
    await this.pool.query(
      `UPDATE ${this.schema}.source_runs SET status = $2, finished_at = now(), error = $3 WHERE id = $1`,
      [runId, status, error ?? null],
    );
  }

  async runs(sourceId: string, limit: number): Promise<SyncRun[]> {
    const r = await this.pool.query({
      text: `SELECT id, source_id, trigger, status, started_at::text AS started_at, finished_at::text AS finished_at,
                    rows_read, objects, events, failed, bytes, total_bytes, error
             FROM ${this.schema}.source_runs WHERE source_id = $1 ORDER BY started_at DESC LIMIT $2`,
      values: [sourceId, limit],
      rowMode: 'array',
    });
    return r.rows.map(syncRunFromRow);
  }

  /**
   * Runs left `running` are marked failed. Several processes share the table: the runner calls
   * it for one source while it holds the source's lock, when no other process can be running it.
   */
  async abandonRuns(sourceId?: string): Promise<number> {
    const r = await this.pool.query(
      `UPDATE ${this.schema}.source_runs SET status = 'failed', finished_at = now(),
         error = 'the process stopped during the run; the next sync resumes from the last committed state'
       WHERE status = 'running' AND ($1::text IS NULL OR source_id = $1)`,
      [sourceId ?? null],
    );
    return r.rowCount ?? 0;
  }

  /** A session advisory lock per source, on a connection held for the sync. */
  async lockSource(sourceId: string): Promise<(() => Promise<void>) | undefined> {
    const client = await this.pool.connect();
    try {
      const r = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1, hashtext($2)) AS ok', [
        TRIBUTARY_LOCK_CLASS,
        `source:${this.schema}:${sourceId}`,
      ]);
      if (!r.rows[0]!.ok) {
        client.release();
        return undefined;
      }
    } catch (err) {
      client.release();
      throw err;
    }
    return async () => {
      try {
        await client.query('SELECT pg_advisory_unlock($1, hashtext($2))', [
          TRIBUTARY_LOCK_CLASS,
          `source:${this.schema}:${sourceId}`,
        ]);
        client.release();
      } catch (err) {
        // A connection that cannot unlock is dropped, which ends its session locks.
        client.release(err as Error);
      }
    };
  }

  async close(): Promise<void> {}
}

function tableName(t: { sourceId: string; stream: string }): string {
  return `${ident(t.sourceId)}.${ident(t.stream)}`;
}
