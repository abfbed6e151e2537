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

/** The mapped row as a DuckDB JSON expression over the row `alias`. */
function payloadSql(fields: Map<string, PayloadShape>, alias: string): string {
  return `json_object(${[...fields]
    .map(
      ([name, s]) =>
        `${sqlString(name)}, ${'column' in s ? `${alias}.${quoteIdent(s.column)}` : payloadSql(s.fields, alias)}`,
    )
    .join(', ')})`;
}

/** Each column sent, with the field it is sent as, in the order the payload has them. */
function leaves(fields: Map<string, PayloadShape>, prefix = ''): [string, string][] {
  return [...fields].flatMap(([name, s]) =>
    'column' in s
      ? [[`${prefix}${name}`, s.column] as [string, string]]
      : leaves(s.fields, `${prefix}${name}.`),
  );
}

/** Column names are in the key's, payload's and checksum's SQL: one the wrapper's alias collides with is refused. */
const KEY_COLUMN = '__tributary_key';

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

  /**
   * Two passes over the model, so that JSON is built only for the rows that are sent. The
   * first keeps per row its key and a 64-bit hash of the mapped values (with the mapping
   * itself mixed in, so a new mapping resends every row), grouped by key, and joins it with
   * the snapshot; the second builds the payloads of the added and changed rows only (a semi
   * join on their keys). A row changed between the passes is sent as the second pass saw it
   * and recorded with the first pass's checksum: the next run finds it changed and sends it
   * again. Building and digesting every row's JSON (md5) took 2.6 to 3.5 s of 1,000,000 rows
   * against 0.4 s for the hash, on the shared development machine under load.
   */
  async diff(q: ModelQuery): Promise<ModelDiff> {
    const conn = await this.instance.connect();
    const n = ++tableSeq;
    const result = `temp.main.retl_result_${n}`;
    const changes = `temp.main.retl_changes_${n}`;
    const payloads = `temp.main.retl_payloads_${n}`;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      conn.interrupt();
    }, q.timeoutMs);
    let counts: DiffCounts;
    try {
      // The result's columns (bound, not run): without a mapping each is sent under its name.
      const probe = await conn.prepare(
        await vetWrapped(conn, q.sql, (sql) => `SELECT * FROM (\n${sql}\n) AS q`),
      );
      const columns = Array.from({ length: probe.columnCount }, (_, i) => probe.columnName(i));
      probe.destroySync();
      if (columns.includes(KEY_COLUMN))
        throw new TributaryError('TRIB_ERR_QUERY_FAILED', [`a model may not name a column ${KEY_COLUMN}`]);
      const shape = payloadShape(q.mapping ?? Object.fromEntries(columns.map((c) => [c, c])));
      const sent = leaves(shape);
      const pk = q.primaryKey.map((c) => `q.${quoteIdent(c)}`);
      const key = `CAST(json_array(${pk.join(', ')}) AS VARCHAR)`;
      const signature = sqlString(JSON.stringify(sent));
      const hashed = await vetWrapped(
        conn,
        q.sql,
        (sql) =>
          `SELECT ${key} AS k, hash(${[signature, ...sent.map(([, c]) => `q.${quoteIdent(c)}`)].join(', ')}) AS h,
                  (${pk.map((c) => `${c} IS NULL`).join(' OR ')}) AS nk
           FROM (\n${sql}\n) AS q`,
      );
      await conn.run(
        `CREATE TEMP TABLE retl_result_${n} AS
         SELECT k, CAST(any_value(h) AS VARCHAR) AS c, count(*) AS n, bool_or(nk) AS nk FROM (\n${hashed}\n) GROUP BY k`,
      );
      await conn.run(
        `CREATE TEMP TABLE retl_changes_${n} AS
         SELECT CASE WHEN s.key IS NULL THEN 'added' ELSE 'changed' END AS kind, r.k, r.c
         FROM ${result} r LEFT JOIN (SELECT key, checksum FROM _tributary.model_snapshots WHERE model = $1) s
           ON r.k = s.key
         WHERE r.n = 1 AND NOT r.nk AND (s.key IS NULL OR s.checksum <> r.c)
         UNION ALL
         SELECT 'removed', s.key, s.checksum
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
      await conn.run(`DROP TABLE ${result}`);
      const kinds = new Map(
        (await conn.runAndReadAll(`SELECT kind, count(*) FROM ${changes} GROUP BY kind`))
          .getRows()
          .map(([k, c]) => [String(k), Number(c)]),
      );
      counts = {
        rows,
        added: kinds.get('added') ?? 0,
        changed: kinds.get('changed') ?? 0,
        removed: kinds.get('removed') ?? 0,
        invalid: dupRows,
        ...(dupRows > 0 ? { invalidReason: invalidReason(q, nullKeys, dupKeys) } : {}),
      };
      const rowsWithKey = await vetWrapped(
        conn,
        q.sql,
        (sql) => `SELECT ${key} AS ${KEY_COLUMN}, q.* FROM (\n${sql}\n) AS q`,
      );
      await conn.run(
        `CREATE TEMP TABLE retl_payloads_${n} AS
         SELECT x.${KEY_COLUMN} AS k, CAST(${payloadSql(shape, 'x')} AS VARCHAR) AS p
         FROM (\n${rowsWithKey}\n) AS x
         SEMI JOIN (SELECT k FROM ${changes} WHERE kind <> 'removed') c ON x.${KEY_COLUMN} = c.k`,
      );
    } catch (err) {
      conn.closeSync();
      if (err instanceof TributaryError) throw err;
      if (timedOut) throw new TributaryError('TRIB_ERR_QUERY_TIMEOUT', [q.timeoutMs], { cause: err });
      throw new TributaryError('TRIB_ERR_QUERY_FAILED', [(err as Error).message], { cause: err });
    } finally {
      clearTimeout(timer);
    }
    return this.openDiff(q, conn, changes, payloads, counts);
  }

  private openDiff(
    q: ModelQuery,
    conn: DuckDBConnection,
    changes: string,
    payloads: string,
    counts: DiffCounts,
  ): ModelDiff {
    const inKinds = (kinds: readonly ChangeKind[]) =>
      kinds.length === 0 ? 'false' : `kind IN (${kinds.map(sqlString).join(', ')})`;
    let closed = false;
    return {
      counts,
      async *changes(kinds, pageSize) {
        if (kinds.length === 0) return;
        const stream = await conn.stream(
          `SELECT c.kind, c.k, c.c, p.p FROM ${changes} c LEFT JOIN ${payloads} p ON p.k = c.k
           WHERE ${inKinds(kinds)} ORDER BY c.k`,
        );
        let page: ModelChange[] = [];
        let last: string | undefined;
        for (;;) {
          const chunk = await stream.fetchChunk();
          if (!chunk || chunk.rowCount === 0) break;
          for (const [kind, key, checksum, payload] of chunk.getRows()) {
            const k = String(key);
            // A row gone, or repeated, by the second pass: the next run sees it as it is then.
            if (k === last || (payload === null && kind !== 'removed')) continue;
            last = k;
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
        await conn
          .run(`DROP TABLE IF EXISTS ${changes}; DROP TABLE IF EXISTS ${payloads}`)
          .catch(() => undefined);
        conn.closeSync();
      },
    };
  }

  /**
   * Appends the added rows, updates the changed ones and deletes the deleted ones, each as a
   * join with the keys given as one string of lines (keys are JSON text, whose strings escape
   * every control character). Appending rather than deleting and inserting every key took a
   * 1,000,000-row first run from 0.55× to 0.75× of a plain full send's rate (with the two-pass
   * diff; docs/benchmarks.md).
   */
  commit(c: SnapshotCommit): Promise<void> {
    if (c.added.length + c.changed.length + c.deleted.length === 0) return Promise.resolve();
    const lines = (xs: readonly string[]) => xs.join('\n');
    return this.serial(() =>
      transaction(this.conn, async () => {
        if (c.deleted.length > 0)
          await this.conn.run(
            `DELETE FROM _tributary.model_snapshots
             WHERE model = $1 AND key IN (SELECT unnest(string_split($2, chr(10))))`,
            [c.model, lines(c.deleted)],
          );
        if (c.changed.length > 0)
          await this.conn.run(
            `UPDATE _tributary.model_snapshots s SET checksum = u.c, synced_at = now()
             FROM (SELECT unnest(string_split($2, chr(10))) AS k, unnest(string_split($3, chr(10))) AS c) u
             WHERE s.model = $1 AND s.key = u.k`,
            [c.model, lines(c.changed.map((x) => x.key)), lines(c.changed.map((x) => x.checksum))],
          );
        if (c.added.length > 0)
          await this.conn.run(
            `INSERT INTO _tributary.model_snapshots
             SELECT $1, unnest(string_split($2, chr(10))), unnest(string_split($3, chr(10))), now()`,
            [c.model, lines(c.added.map((x) => x.key)), lines(c.added.map((x) => x.checksum))],
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
