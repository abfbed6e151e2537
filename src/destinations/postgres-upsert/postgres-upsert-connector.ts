import pg from 'pg';
import type { CheckResult } from '../connector.js';
import { SqlUpsertDestination, type UpsertDialect } from '../sql-upsert/sql-upsert-destination.js';
import type { Column } from '../sql-upsert/table-mapping.js';
import type { StreamConnector } from '../stream.js';
import {
  CLOSE_GRACE_MS,
  checkFailed,
  errorText,
  settlesWithin,
  UNREACHABLE_CODES,
} from '../stream-support.js';
import type { PostgresUpsertConfig } from './spec.js';

/** Rows upserted into a PostgreSQL table with INSERT … ON CONFLICT, one statement per run of rows. */
export const postgresUpsertConnector: StreamConnector<PostgresUpsertConfig> = {
  async check(config) {
    const client = new pg.Client({ ...connection(config), connectionTimeoutMillis: config.connectTimeout });
    client.on('error', () => undefined);
    try {
      await client.connect();
      const found = await client.query<{ t: string | null }>('SELECT to_regclass($1)::text AS t', [
        tableName(config),
      ]);
      if (found.rows[0]?.t == null && !config.createTable)
        return checkFailed('TRIB_ERR_DEST_CHECK_FAILED', [
          config.id,
          `table ${tableName(config)} does not exist: create it (a primary key or unique index on ${config.key.join(', ')}) or set createTable: true`,
        ]);
      return { ok: true };
    } catch (err) {
      return checkFailure(config, err);
    } finally {
      await client.end().catch(() => undefined);
    }
  },

  async create(config) {
    const pool = new pg.Pool({
      ...connection(config),
      max: config.maxConnections,
      connectionTimeoutMillis: config.connectTimeout,
      statement_timeout: config.statementTimeout,
    });
    // An idle connection that the server closes must not become an uncaught error.
    pool.on('error', () => undefined);
    return new SqlUpsertDestination(config.id, config, postgresDialect(pool, tableName(config)));
  },
};

const q = (name: string) => `"${name}"`;

function tableName(c: PostgresUpsertConfig): string {
  return `${q(c.schema)}.${q(c.table)}`;
}

function postgresDialect(pool: pg.Pool, table: string): UpsertDialect {
  const list = (cols: readonly Column[]) => cols.map((c) => q(c.name)).join(', ');
  return {
    maxParams: 65_535,
    insertSql(columns, rows, mode) {
      const n = columns.length;
      const values = Array.from(
        { length: rows },
        (_, r) => `(${columns.map((_, c) => `$${r * n + c + 1}`).join(', ')})`,
      ).join(', ');
      const keys = list(columns.filter((c) => c.key));
      const rest = columns.filter((c) => !c.key);
      const onConflict =
        mode === 'insert' || rest.length === 0
          ? 'DO NOTHING'
          : `DO UPDATE SET ${rest.map((c) => `${q(c.name)} = EXCLUDED.${q(c.name)}`).join(', ')}`;
      return `INSERT INTO ${table} (${list(columns)}) VALUES ${values} ON CONFLICT (${keys}) ${onConflict}`;
    },
    updateSql(columns) {
      const rest = columns.filter((c) => !c.key);
      if (rest.length === 0) return undefined;
      const keys = columns.filter((c) => c.key);
      const set = rest.map((c, i) => `${q(c.name)} = $${i + 1}`).join(', ');
      const where = keys.map((c, i) => `${q(c.name)} = $${rest.length + i + 1}`).join(' AND ');
      return `UPDATE ${table} SET ${set} WHERE ${where}`;
    },
    deleteSql(keys) {
      return `DELETE FROM ${table} WHERE ${keys.map((c, i) => `${q(c.name)} = $${i + 1}`).join(' AND ')}`;
    },
    deleteWhereSql(column) {
      return `DELETE FROM ${table} WHERE ${q(column)} = $1`;
    },
    createTableSql(columns) {
      const defs = columns.map((c) => `${q(c.name)} ${c.type ?? (c.path === '$' ? 'jsonb' : 'text')}`);
      return `CREATE TABLE IF NOT EXISTS ${table} (${defs.join(', ')}, PRIMARY KEY (${list(columns.filter((c) => c.key))}))`;
    },
    async run(sql, params) {
      const r = await pool.query(sql, params as unknown[]);
      return r.rowCount ?? 0;
    },
    isRowError(err) {
      // SQLSTATE classes 22 (data exception), 23 (integrity constraint), 54 (program limit: a row too large).
      const code = (err as { code?: unknown }).code;
      return typeof code === 'string' && /^(22|23|54)/.test(code);
    },
    async close() {
      // pool.end() waits for every query out; a frozen connection's never returns: cut it.
      if (await settlesWithin(pool.end(), CLOSE_GRACE_MS)) return;
      const clients = (pool as unknown as { _clients?: { connection?: { stream?: { destroy(): void } } }[] })
        ._clients;
      for (const c of clients ?? []) c.connection?.stream?.destroy();
    },
  };
}

function connection(c: PostgresUpsertConfig): pg.PoolConfig {
  if (c.connectionString !== undefined)
    return { connectionString: c.connectionString, ssl: c.ssl || undefined };
  return {
    host: c.host,
    port: c.port,
    database: c.database,
    user: c.user,
    password: c.password,
    ssl: c.ssl || undefined,
  };
}

/** The check's error, by SQLSTATE or network code; never a password in the message. */
function checkFailure(c: PostgresUpsertConfig, err: unknown): CheckResult {
  const e = err as { code?: string };
  const text = errorText(err);
  let address = `${c.host}:${c.port}`;
  let user = c.user ?? '(default)';
  let database = c.database ?? '(default)';
  if (c.connectionString !== undefined) {
    try {
      const u = new URL(c.connectionString);
      address = `${u.hostname || 'localhost'}:${u.port || '5432'}`;
      user = decodeURIComponent(u.username) || '(default)';
      database = decodeURIComponent(u.pathname.slice(1)) || '(default)';
    } catch {
      address = user = database = '(connection string)';
    }
  }
  if ((e.code !== undefined && UNREACHABLE_CODES.has(e.code)) || /timeout/i.test(text))
    return checkFailed('TRIB_ERR_DEST_CHECK_UNREACHABLE', [c.id, address, text]);
  if (e.code === '28P01' || e.code === '28000')
    return checkFailed('TRIB_ERR_DEST_CHECK_AUTH', [c.id, user, text]);
  if (e.code === '3D000') return checkFailed('TRIB_ERR_DEST_CHECK_DATABASE', [c.id, database, text]);
  return checkFailed('TRIB_ERR_DEST_CHECK_FAILED', [c.id, text]);
}
