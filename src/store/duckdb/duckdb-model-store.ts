import { randomUUID } from 'node:crypto';
import type { DuckDBConnection, DuckDBInstance } from '@duckdb/node-api';
import { TributaryError } from '../../errors.js';
import { Turns } from '../../platform/async/turns.js';
import { quoteIdent, sqlString } from '../../platform/duckdb/duckdb-sql.js';
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
import { vetWrapped } from './duckdb-user-query.js';

const SCHEMA = [
  'CREATE SCHEMA IF NOT EXISTS _tributary',
  `CREATE TABLE IF NOT EXISTS _tributary.model_snapshots (
    model VARCHAR NOT NULL,
    key VARCHAR NOT NULL,
    checksum VARCHAR NOT NULL,
    synced_at TIMESTAMPTZ NOT NULL)`,
  `CREATE TABLE IF NOT EXISTS _tributary.model_runs (
    id VARCHAR PRIMARY KEY,
    model VARCHAR NOT NULL,
    trigger VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    added BIGINT NOT NULL,
    changed BIGINT NOT NULL,
    removed BIGINT NOT NULL,
    failed BIGINT NOT NULL,
    error VARCHAR)`,
];

/** The mapped row as a DuckDB JSON expression over the subquery `q`. */
function payloadSql(q: ModelQuery): string {
  if (q.mapping === undefined) return 'to_json(q)';
  const build = (fields: Map<string, PayloadShape>): string =>
    `json_object(${[...fields]
      .map(
        ([name, s]) => `${sqlString(name)}, ${'column' in s ? `q.${quoteIdent(s.column)}` : build(s.fields)}`,
      )
      .join(', ')})`;
  return build(payloadShape(q.mapping));
}

/**
 * The model's rows as (key, payload, null key), the model's SELECT as a subquery: vetted
 * before and after wrapping, like `/admin/v1/query` (`./duckdb-user-query.ts`).
 */
function keyedRows(q: ModelQuery) {
  const cols = q.primaryKey.map((c) => `q.${quoteIdent(c)}`);
  return (select: string) =>
    `SELECT CAST(json_array(${cols.join(', ')}) AS VARCHAR) AS k, CAST(${payloadSql(q)} AS VARCHAR) AS p,
            (${cols.map((c) => `${c} IS NULL`).join(' OR ')}) AS nk
     FROM (\n${select}\n) AS q`;
}

let tableSeq = 0;

/**
 * Reverse ETL's state in the warehouse's DuckDB file (`_tributary.model_snapshots`,
 * `_tributary.model_runs`). A diff runs the model into a temporary table of a connection of its
 * own, grouped by key, and joins it with the snapshot there: one pass over the result in
 * DuckDB's threads, whatever its size. The instance is locked down (no files beyond its own)
 * and the SQL is vetted as the admin API's is, so a model cannot reach the host.
 */
export class DuckDBModelStore implements ModelStore {
  private readonly turns = new Turns();

  private constructor(
    private readonly instance: DuckDBInstance,
    private readonly conn: DuckDBConnection,
  ) {}

  static async open(instance: DuckDBInstance): Promise<DuckDBModelStore> {
    const conn = await instance.connect();
    for (const sql of SCHEMA) await conn.run(sql);
    return new DuckDBModelStore(instance, conn);
  }

  private serial<T>(job: () => Promise<T>): Promise<T> {
    return this.turns.run(job);
  }

  async diff(q: ModelQuery): Promise<ModelDiff> {
    const conn = await this.instance.connect();
    const n = ++tableSeq;
    const result = `temp.main.retl_result_${n}`;
    const changes = `temp.main.retl_changes_${n}`;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      conn.interrupt();
    }, q.timeoutMs);
    try {
      const text = await vetWrapped(conn, q.sql, keyedRows(q));
      // any_value: rows sharing a key are never sent, so which one stands for them does not matter.
      await conn.run(
        `CREATE TEMP TABLE retl_result_${n} AS
         SELECT k, md5(p) AS c, p, n, nk FROM (
           SELECT k, any_value(p) AS p, count(*) AS n, bool_or(nk) AS nk FROM (\n${text}\n) GROUP BY k)`,
      );
    } catch (err) {
      conn.closeSync();
      if (err instanceof TributaryError) throw err;
      if (timedOut) throw new TributaryError('TRIB_ERR_QUERY_TIMEOUT', [q.timeoutMs], { cause: err });
      throw new TributaryError('TRIB_ERR_QUERY_FAILED', [(err as Error).message], { cause: err });
    } finally {
      clearTimeout(timer);
    }
    try {
      await conn.run(
        `CREATE TEMP TABLE retl_changes_${n} AS
         SELECT CASE WHEN s.key IS NULL THEN 'added' ELSE 'changed' END AS kind, r.k, r.c, r.p
         FROM ${result} r LEFT JOIN (SELECT key, checksum FROM _tributary.model_snapshots WHERE model = $1) s
           ON r.k = s.key
         WHERE r.n = 1 AND NOT r.nk AND (s.key IS NULL OR s.checksum <> r.c)
         UNION ALL
         SELECT 'removed', s.key, s.checksum, NULL
         FROM (SELECT key, checksum FROM _tributary.model_snapshots WHERE model = $1) s
         ANTI JOIN ${result} r ON r.k = s.key`,
        [q.model],
      );
      const [rows, nullKeys, dupKeys, dupRows] = (
        await conn.runAndReadAll(
          `SELECT coalesce(sum(n), 0), count(*) FILTER (WHERE nk), count(*) FILTER (WHERE n > 1 AND NOT nk),
                  coalesce(sum(n) FILTER (WHERE nk OR n > 1), 0)
           FROM ${result}`,
        )
      )
        .getRows()[0]!
        .map(Number) as [number, number, number, number];
      const kinds = new Map(
        (await conn.runAndReadAll(`SELECT kind, count(*) FROM ${changes} GROUP BY kind`))
          .getRows()
          .map(([k, c]) => [String(k), Number(c)]),
      );
      const counts: DiffCounts = {
        rows,
        added: kinds.get('added') ?? 0,
        changed: kinds.get('changed') ?? 0,
        removed: kinds.get('removed') ?? 0,
        invalid: dupRows,
        ...(dupRows > 0 ? { invalidReason: invalidReason(q, nullKeys, dupKeys) } : {}),
      };
      await conn.run(`DROP TABLE ${result}`);
      return this.openDiff(q, conn, changes, counts);
    } catch (err) {
      conn.closeSync();
      throw err;
    }
  }

  private openDiff(q: ModelQuery, conn: DuckDBConnection, changes: string, counts: DiffCounts): ModelDiff {
    const inKinds = (kinds: readonly ChangeKind[]) =>
      kinds.length === 0 ? 'false' : `kind IN (${kinds.map(sqlString).join(', ')})`;
    let closed = false;
    return {
      counts,
      async *changes(kinds, pageSize) {
        if (kinds.length === 0) return;
        const stream = await conn.stream(
          `SELECT kind, k, c, p FROM ${changes} WHERE ${inKinds(kinds)} ORDER BY k`,
        );
        let page: ModelChange[] = [];
        for (;;) {
          const chunk = await stream.fetchChunk();
          if (!chunk || chunk.rowCount === 0) break;
          for (const [kind, key, checksum, payload] of chunk.getRows()) {
            const k = String(key);
            page.push({
              kind: String(kind) as ChangeKind,
              key: k,
              checksum: String(checksum),
              payload: payload === null ? deletePayload(q, k) : String(payload),
            });
            if (page.length >= pageSize) {
              yield page;
              page = [];
            }
          }
        }
        if (page.length > 0) yield page;
      },
      // The changes are a temporary table of the diff's connection: only it sees them.
      accept: async (kinds) => {
        if (kinds.length === 0) return;
        const upsert = kinds.filter((k) => k !== 'removed');
        await transaction(conn, async () => {
          await conn.run(
            `DELETE FROM _tributary.model_snapshots
             WHERE model = $1 AND key IN (SELECT k FROM ${changes} WHERE ${inKinds(kinds)})`,
            [q.model],
          );
          if (upsert.length > 0)
            await conn.run(
              `INSERT INTO _tributary.model_snapshots
               SELECT $1, k, c, now() FROM ${changes} WHERE ${inKinds(upsert)}`,
              [q.model],
            );
        });
      },
      async close() {
        if (closed) return;
        closed = true;
        await conn.run(`DROP TABLE IF EXISTS ${changes}`).catch(() => undefined);
        conn.closeSync();
      },
    };
  }

  commit(c: SnapshotCommit): Promise<void> {
    if (c.synced.length === 0 && c.deleted.length === 0) return Promise.resolve();
    // Keys are JSON text, whose strings escape every control character: a line each.
    const keys = [...c.synced.map((s) => s.key), ...c.deleted].join('\n');
    return this.serial(() =>
      transaction(this.conn, async () => {
        await this.conn.run(
          `DELETE FROM _tributary.model_snapshots
           WHERE model = $1 AND key IN (SELECT unnest(string_split($2, chr(10))))`,
          [c.model, keys],
        );
        if (c.synced.length > 0)
          await this.conn.run(
            `INSERT INTO _tributary.model_snapshots
             SELECT $1, unnest(string_split($2, chr(10))), unnest(string_split($3, chr(10))), now()`,
            [c.model, c.synced.map((s) => s.key).join('\n'), c.synced.map((s) => s.checksum).join('\n')],
          );
      }),
    );
  }

  resetSnapshot(model: string): Promise<void> {
    return this.serial(async () => {
      await this.conn.run('DELETE FROM _tributary.model_snapshots WHERE model = $1', [model]);
    });
  }

  startRun(model: string, trigger: string): Promise<string> {
    return this.serial(async () => {
      const id = randomUUID();
      await this.conn.run(
        `INSERT INTO _tributary.model_runs VALUES ($1, $2, $3, 'running', now(), NULL, 0, 0, 0, 0, NULL)`,
        [id, model, trigger],
      );
      return id;
    });
  }

  finishRun(runId: string, status: 'succeeded' | 'failed', c: RunCounts, error?: string): Promise<void> {
    return this.serial(async () => {
      await this.conn.run(
        `UPDATE _tributary.model_runs SET status = $2, finished_at = now(), added = $3, changed = $4,
           removed = $5, failed = $6, error = $7 WHERE id = $1`,
        [
          runId,
          status,
          BigInt(c.added),
          BigInt(c.changed),
          BigInt(c.removed),
          BigInt(c.failed),
          error ?? null,
        ],
      );
    });
  }

  async runs(model: string, limit: number): Promise<ModelRun[]> {
    const r = await this.serial(() =>
      this.conn.runAndReadAll(
        `SELECT ${RUN_COLUMNS.replace('started_at', 'CAST(started_at AS VARCHAR)').replace(
          'finished_at',
          'CAST(finished_at AS VARCHAR)',
        )}
         FROM _tributary.model_runs WHERE model = $1 ORDER BY started_at DESC LIMIT $2`,
        [model, BigInt(limit)],
      ),
    );
    return r.getRows().map(modelRunFromRow);
  }

  /** One process owns the file: every run left `running` (of `model`, or of all) is dead. */
  abandonRuns(model?: string): Promise<number> {
    return this.serial(async () => {
      const r = await this.conn.runAndReadAll(
        `UPDATE _tributary.model_runs SET status = 'failed', finished_at = now(),
           error = 'the process stopped during the run; rows not recorded as synced are sent by the next run'
         WHERE status = 'running' AND ($1 IS NULL OR model = $1) RETURNING id`,
        [model ?? null],
      );
      return r.getRows().length;
    });
  }

  async close(): Promise<void> {
    await this.turns.run(async () => undefined);
    this.conn.closeSync();
  }
}

/** `job` in one transaction of `conn` (its caller's turn). */
async function transaction(conn: DuckDBConnection, job: () => Promise<void>): Promise<void> {
  await conn.run('BEGIN TRANSACTION');
  try {
    await job();
    await conn.run('COMMIT');
  } catch (err) {
    await conn.run('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

/** Why rows were left out of a diff, for the run's record. */
export function invalidReason(q: Pick<ModelQuery, 'primaryKey'>, nullKeys: number, dupKeys: number): string {
  const parts: string[] = [];
  if (nullKeys > 0) parts.push(`${nullKeys} key(s) with a NULL in ${q.primaryKey.join(', ')}`);
  if (dupKeys > 0) parts.push(`${dupKeys} key(s) shared by several rows (not sent until unique)`);
  return `TRIB_ERR_RETL_BAD_KEY: ${parts.join('; ')}`;
}
