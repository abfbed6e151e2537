import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import { TRIBUTARY_LOCK_CLASS } from '../../platform/postgres/advisory-locks.js';
import { pgIdent } from '../../platform/postgres/pg-sql.js';
import { invalidReason } from '../duckdb/duckdb-model-store.js';
import {
  type ChangeKind,
  type DiffCounts,
  deletePayload,
  type ModelChange,
  type ModelDiff,
  type ModelQuery,
  type ModelRun,
  type ModelStore,
  modelRunFromRow,
  type PayloadShape,
  payloadShape,
  RUN_COLUMNS,
  type RunCounts,
  type SnapshotCommit,
} from '../model-store.js';
import type { PostgresUserQueries } from './postgres-user-query.js';

/** Reads a model's rows as the query role (`PostgresUserQueries.modelPages`). */
export type ModelReader = Pick<PostgresUserQueries, 'modelPages'>;

/** Rows per page from the query role, copied into the staging table a page at a time. */
const READ_PAGE = 10_000;

function schemaSql(s: string): string[] {
  return [
    `CREATE SCHEMA IF NOT EXISTS ${s}`,
    `CREATE TABLE IF NOT EXISTS ${s}.model_snapshots (
      model text COLLATE "C" NOT NULL,
      key text COLLATE "C" NOT NULL,
      checksum text NOT NULL,
      synced_at timestamptz NOT NULL,
      PRIMARY KEY (model, key))`,
    `CREATE TABLE IF NOT EXISTS ${s}.model_runs (
      id text PRIMARY KEY,
      model text NOT NULL,
      trigger text NOT NULL,
      status text NOT NULL,
      started_at timestamptz NOT NULL,
      finished_at timestamptz,
      added bigint NOT NULL,
      changed bigint NOT NULL,
      removed bigint NOT NULL,
      failed bigint NOT NULL,
      error text)`,
    `CREATE INDEX IF NOT EXISTS model_runs_model ON ${s}.model_runs (model, started_at)`,
  ];
}

/** The mapped row as a PostgreSQL jsonb expression over the subquery `q`. */
function payloadSql(q: ModelQuery): string {
  if (q.mapping === undefined) return 'to_jsonb(q)';
  const build = (fields: Map<string, PayloadShape>): string =>
    `jsonb_build_object(${[...fields]
      .map(([name, s]) => `${pgLiteral(name)}, ${'column' in s ? `q.${pgIdent(s.column)}` : build(s.fields)}`)
      .join(', ')})`;
  return build(payloadShape(q.mapping));
}

/** A string literal (standard_conforming_strings, PostgreSQL's default since 9.1), for statements that take no parameters. */
function pgLiteral(v: string): string {
  return `'${v.replace(/'/g, "''")}'`;
}

let tableSeq = 0;

/**
 * Reverse ETL's state in the scale-out PostgreSQL (`<schema>.model_snapshots`,
 * `<schema>.model_runs`). A diff reads the model as the read-only query role (the guards of
 * `/admin/v1/query`), copies its rows (key, mapped row as jsonb text) into a temporary table
 * of a state connection held for the run, and joins them with the snapshot there.
 */
export class PostgresModelStore implements ModelStore {
  private readonly s: string;

  private constructor(
    private readonly pool: pg.Pool,
    private readonly reader: ModelReader,
    private readonly schema: string,
  ) {
    this.s = pgIdent(schema);
  }

  /** `pool`: the state's (shared with the store); `reader`: the query role's. */
  static async open(pool: pg.Pool, schema: string, reader: ModelReader): Promise<PostgresModelStore> {
    const store = new PostgresModelStore(pool, reader, schema);
    const c = await pool.connect();
    try {
      await c.query('BEGIN');
      await c.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`model-schema:${schema}`]);
      for (const sql of schemaSql(store.s)) await c.query(sql);
      await c.query('COMMIT');
    } catch (err) {
      await c.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      c.release();
    }
    return store;
  }

  async diff(q: ModelQuery): Promise<ModelDiff> {
    const n = ++tableSeq;
    const rows = `pg_temp.retl_rows_${n}`;
    const result = `pg_temp.retl_result_${n}`;
    const changes = `pg_temp.retl_changes_${n}`;
    const cols = q.primaryKey.map((col) => `q.${pgIdent(col)}`);
    const wrap = (body: string) =>
      `SELECT jsonb_build_array(${cols.join(', ')})::text AS k, (${payloadSql(q)})::text AS p,
              (${cols.map((col) => `${col} IS NULL`).join(' OR ')}) AS nk
       FROM (\n${body}\n) AS q`;
    const c = await this.pool.connect();
    let broken: Error | undefined;
    const onError = (err: Error) => {
      broken = err;
    };
    c.on('error', onError);
    const release = async () => {
      await c.query(`DROP TABLE IF EXISTS ${rows}, ${result}, ${changes}`).catch((e: Error) => (broken = e));
      c.off('error', onError);
      c.release(broken);
    };
    try {
      await c.query(`CREATE TEMP TABLE retl_rows_${n} (k text COLLATE "C", p text, nk boolean)`);
      for await (const page of this.reader.modelPages(q.sql, wrap, q.timeoutMs, READ_PAGE)) {
        await pipeline(
          Readable.from([csv(page)]),
          c.query(copyFrom(`COPY ${rows} (k, p, nk) FROM STDIN (FORMAT csv)`)),
        );
      }
      await c.query(
        `CREATE TEMP TABLE retl_result_${n} AS
         SELECT k, md5(p) AS c, p, n, nk FROM (
           SELECT k, min(p) AS p, count(*) AS n, bool_or(nk) AS nk FROM ${rows} GROUP BY k) g`,
      );
      await c.query(`DROP TABLE ${rows}`);
      await c.query(`CREATE INDEX ON ${result} (k)`);
      await c.query(`ANALYZE ${result}`);
      await c.query(
        `CREATE TEMP TABLE retl_changes_${n} AS
         SELECT CASE WHEN s.key IS NULL THEN 'added' ELSE 'changed' END AS kind, r.k, r.c, r.p
         FROM ${result} r LEFT JOIN ${this.s}.model_snapshots s ON s.model = $1 AND s.key = r.k
         WHERE r.n = 1 AND NOT r.nk AND (s.key IS NULL OR s.checksum <> r.c)
         UNION ALL
         SELECT 'removed', s.key, s.checksum, NULL FROM ${this.s}.model_snapshots s
         WHERE s.model = $1 AND NOT EXISTS (SELECT 1 FROM ${result} r WHERE r.k = s.key)`.replaceAll(
          '$1',
          pgLiteral(q.model),
        ),
      );
      await c.query(`CREATE INDEX ON ${changes} (kind, k)`);
      const stats = await c.query<{ rows: string; nullkeys: string; dupkeys: string; duprows: string }>(
        `SELECT coalesce(sum(n), 0) AS rows, count(*) FILTER (WHERE nk) AS nullkeys,
                count(*) FILTER (WHERE n > 1 AND NOT nk) AS dupkeys,
                coalesce(sum(n) FILTER (WHERE nk OR n > 1), 0) AS duprows
         FROM ${result}`,
      );
      const kinds = await c.query<{ kind: string; n: string }>(
        `SELECT kind, count(*) AS n FROM ${changes} GROUP BY kind`,
      );
      const byKind = new Map(kinds.rows.map((r) => [r.kind, Number(r.n)]));
      const st = stats.rows[0]!;
      const counts: DiffCounts = {
        rows: Number(st.rows),
        added: byKind.get('added') ?? 0,
        changed: byKind.get('changed') ?? 0,
        removed: byKind.get('removed') ?? 0,
        invalid: Number(st.duprows),
        ...(Number(st.duprows) > 0
          ? { invalidReason: invalidReason(q, Number(st.nullkeys), Number(st.dupkeys)) }
          : {}),
      };
      await c.query(`DROP TABLE ${result}`);
      return this.openDiff(q, c, changes, counts, release);
    } catch (err) {
      await release();
      throw err;
    }
  }

  private openDiff(
    q: ModelQuery,
    c: pg.PoolClient,
    changes: string,
    counts: DiffCounts,
    release: () => Promise<void>,
  ): ModelDiff {
    const s = this.s;
    let closed = false;
    return {
      counts,
      async *changes(kinds, pageSize) {
        if (kinds.length === 0) return;
        let after: string | null = null;
        for (;;) {
          const r: pg.QueryResult<{ kind: ChangeKind; k: string; c: string; p: string | null }> =
            await c.query(
              `SELECT kind, k, c, p FROM ${changes}
             WHERE kind = ANY($1::text[]) AND ($2::text IS NULL OR k > $2::text) ORDER BY k LIMIT $3`,
              [kinds, after, pageSize],
            );
          if (r.rows.length === 0) return;
          const page: ModelChange[] = r.rows.map((row) => ({
            kind: row.kind,
            key: row.k,
            checksum: row.c,
            payload: row.p ?? deletePayload(q, row.k),
          }));
          yield page;
          if (r.rows.length < pageSize) return;
          after = r.rows[r.rows.length - 1]!.k;
        }
      },
      async accept(kinds) {
        if (kinds.length === 0) return;
        const upsert = kinds.filter((k) => k !== 'removed');
        await c.query('BEGIN');
        try {
          await c.query(
            `DELETE FROM ${s}.model_snapshots
             WHERE model = $1 AND key IN (SELECT k FROM ${changes} WHERE kind = ANY($2::text[]))`,
            [q.model, kinds],
          );
          if (upsert.length > 0)
            await c.query(
              `INSERT INTO ${s}.model_snapshots (model, key, checksum, synced_at)
               SELECT $1, k, c, now() FROM ${changes} WHERE kind = ANY($2::text[])`,
              [q.model, upsert],
            );
          await c.query('COMMIT');
        } catch (err) {
          await c.query('ROLLBACK').catch(() => undefined);
          throw err;
        }
      },
      async close() {
        if (closed) return;
        closed = true;
        await release();
      },
    };
  }

  async commit(c: SnapshotCommit): Promise<void> {
    const synced = [...c.added, ...c.changed];
    if (synced.length === 0 && c.deleted.length === 0) return;
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      if (c.deleted.length > 0)
        await client.query(
          `DELETE FROM ${this.s}.model_snapshots WHERE model = $1 AND key = ANY($2::text[])`,
          [c.model, c.deleted],
        );
      if (synced.length > 0)
        await client.query(
          `INSERT INTO ${this.s}.model_snapshots (model, key, checksum, synced_at)
           SELECT $1, k, ch, now() FROM unnest($2::text[], $3::text[]) AS u(k, ch)
           ON CONFLICT (model, key) DO UPDATE SET checksum = excluded.checksum, synced_at = excluded.synced_at`,
          [c.model, synced.map((x) => x.key), synced.map((x) => x.checksum)],
        );
      await client.query('COMMIT');
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      client.release();
    }
  }

  async resetSnapshot(model: string): Promise<void> {
    await this.pool.query(`DELETE FROM ${this.s}.model_snapshots WHERE model = $1`, [model]);
  }

  async startRun(model: string, trigger: string): Promise<string> {
    const id = randomUUID();
    await this.pool.query(
      `INSERT INTO ${this.s}.model_runs VALUES ($1, $2, $3, 'running', now(), NULL, 0, 0, 0, 0, NULL)`,
      [id, model, trigger],
    );
    return id;
  }

  async finishRun(
    runId: string,
    status: 'succeeded' | 'failed',
    c: RunCounts,
    error?: string,
  ): Promise<void> {
    await this.pool.query(
      `UPDATE ${this.s}.model_runs SET status = $2, finished_at = now(), added = $3, changed = $4, removed = $5,
         failed = $6, error = $7 WHERE id = $1`,
      [runId, status, c.added, c.changed, c.removed, c.failed, error ?? null],
    );
  }

  async runs(model: string, limit: number): Promise<ModelRun[]> {
    const cols = RUN_COLUMNS.replace('started_at', 'started_at::text').replace(
      'finished_at',
      'finished_at::text',
    );
    const r = await this.pool.query({
      text: `SELECT ${cols} FROM ${this.s}.model_runs WHERE model = $1 ORDER BY started_at DESC LIMIT $2`,
      values: [model, limit],
      rowMode: 'array',
    });
    return (r.rows as unknown[][]).map(modelRunFromRow);
  }

  /**
   * Runs left `running` by a process that died: those of `model` when the caller holds its
   * lock (`lockModel`); without a model, only runs started over a day ago (other processes may
   * be running the rest).
   */
  async abandonRuns(model?: string): Promise<number> {
    const r = await this.pool.query(
      `UPDATE ${this.s}.model_runs SET status = 'failed', finished_at = now(),
         error = 'the process stopped during the run; rows not recorded as synced are sent by the next run'
       WHERE status = 'running' AND (model = $1 OR ($1::text IS NULL AND started_at < now() - interval '1 day'))`,
      [model ?? null],
    );
    return r.rowCount ?? 0;
  }

  /** A session advisory lock on a connection held for the run. */
  async lockModel(model: string): Promise<(() => Promise<void>) | undefined> {
    const purpose = `model:${this.schema}:${model}`;
    const client = await this.pool.connect();
    try {
      const r = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1, hashtext($2)) AS ok', [
        TRIBUTARY_LOCK_CLASS,
        purpose,
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
        await client.query('SELECT pg_advisory_unlock($1, hashtext($2))', [TRIBUTARY_LOCK_CLASS, purpose]);
        client.release();
      } catch (err) {
        // A connection that cannot unlock is dropped, which ends its session locks.
        client.release(err as Error);
      }
    };
  }

  /** The pool is the state's: closing the store leaves it open. */
  async close(): Promise<void> {}
}

/** A page of model rows as CSV for COPY (NUL cannot be in PostgreSQL text: jsonb::text has none). */
function csv(rows: readonly Record<string, unknown>[]): string {
  let out = '';
  for (const r of rows) out += `${csvText(String(r.k))},${csvText(String(r.p))},${r.nk ? 't' : 'f'}\n`;
  return out;
}

function csvText(v: string): string {
  return `"${v.replace(/"/g, '""')}"`;
}
