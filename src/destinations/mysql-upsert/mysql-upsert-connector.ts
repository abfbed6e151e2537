import mysql from 'mysql2/promise';
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
import type { MysqlUpsertConfig } from './spec.js';

/** Rows upserted into a MySQL / MariaDB table with INSERT … ON DUPLICATE KEY UPDATE. */
export const mysqlUpsertConnector: StreamConnector<MysqlUpsertConfig> = {
  async check(config) {
    let conn: mysql.Connection | undefined;
    try {
      conn = await mysql.createConnection(connection(config));
      conn.on('error', () => undefined);
      const [rows] = await conn.query<mysql.RowDataPacket[]>(
        'SELECT 1 FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = ?',
        [config.table],
      );
      if (rows.length === 0 && !config.createTable)
        return checkFailed('TRIB_ERR_DEST_CHECK_FAILED', [
          config.id,
          `table ${config.table} does not exist: create it (a primary key or unique index on ${config.key.join(', ')}) or set createTable: true`,
        ]);
      return { ok: true };
    } catch (err) {
      return checkFailure(config, err);
    } finally {
      await conn?.end().catch(() => undefined);
    }
  },

  async create(config) {
    const pool = mysql.createPool({ ...connection(config), connectionLimit: config.maxConnections });
    return new SqlUpsertDestination(config.id, config, mysqlDialect(pool, q(config.table)));
  },
};

const q = (name: string) => `\`${name}\``;

/** MySQL errors that belong to one row: a value out of range, of the wrong type, NULL, a duplicate, a CHECK. */
const ROW_ERRNOS = new Set([1048, 1062, 1264, 1265, 1292, 1364, 1366, 1406, 1451, 1452, 3819, 4025]);

function mysqlDialect(pool: mysql.Pool, table: string): UpsertDialect {
  const list = (cols: readonly Column[]) => cols.map((c) => q(c.name)).join(', ');
  return {
    // Values are escaped into the text: keep one statement well under max_allowed_packet.
    maxParams: 10_000,
    insertSql(columns, rows, mode) {
      const row = `(${columns.map(() => '?').join(', ')})`;
      const values = Array.from({ length: rows }, () => row).join(', ');
      const firstKey = q(columns.find((c) => c.key)!.name);
      const rest = columns.filter((c) => !c.key);
      const update =
        mode === 'insert' || rest.length === 0
          ? `${firstKey} = ${firstKey}`
          : rest.map((c) => `${q(c.name)} = VALUES(${q(c.name)})`).join(', ');
      return `INSERT INTO ${table} (${list(columns)}) VALUES ${values} ON DUPLICATE KEY UPDATE ${update}`;
    },
    updateSql(columns) {
      const rest = columns.filter((c) => !c.key);
      if (rest.length === 0) return undefined;
      const keys = columns.filter((c) => c.key);
      return `UPDATE ${table} SET ${rest.map((c) => `${q(c.name)} = ?`).join(', ')} WHERE ${keys.map((c) => `${q(c.name)} = ?`).join(' AND ')}`;
    },
    deleteSql(keys) {
      return `DELETE FROM ${table} WHERE ${keys.map((c) => `${q(c.name)} = ?`).join(' AND ')}`;
    },
    deleteWhereSql(column) {
      return `DELETE FROM ${table} WHERE ${q(column)} = ?`;
    },
    createTableSql(columns) {
      const defs = columns.map(
        (c) => `${q(c.name)} ${c.type ?? (c.key ? 'varchar(255)' : c.path === '$' ? 'json' : 'text')}`,
      );
      return `CREATE TABLE IF NOT EXISTS ${table} (${defs.join(', ')}, PRIMARY KEY (${list(columns.filter((c) => c.key))})) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`;
    },
    async run(sql, params) {
      const [r] = await pool.query<mysql.ResultSetHeader>(sql, params as unknown[]);
      return r.affectedRows;
    },
    isRowError(err) {
      const e = err as { sqlState?: unknown; errno?: unknown };
      if (typeof e.errno === 'number' && ROW_ERRNOS.has(e.errno)) return true;
      return typeof e.sqlState === 'string' && /^(22|23)/.test(e.sqlState);
    },
    async close() {
      // pool.end() waits for each connection's QUIT; a frozen connection never answers: cut it.
      if (await settlesWithin(pool.end(), CLOSE_GRACE_MS)) return;
      const all = (pool as unknown as { pool?: { _allConnections?: { toArray(): { destroy(): void }[] } } })
        .pool?._allConnections;
      for (const c of all?.toArray() ?? []) c.destroy();
    },
  };
}

function connection(c: MysqlUpsertConfig): mysql.ConnectionOptions {
  const common = { connectTimeout: c.connectTimeout, supportBigNumbers: true, charset: 'utf8mb4' };
  if (c.connectionString !== undefined) return { uri: c.connectionString, ...common };
  return { host: c.host, port: c.port, database: c.database, user: c.user, password: c.password, ...common };
}

/** The check's error, by MySQL error number or network code; never a password in the message. */
function checkFailure(c: MysqlUpsertConfig, err: unknown): CheckResult {
  const e = err as { code?: string; errno?: number };
  const text = errorText(err);
  let address = `${c.host}:${c.port}`;
  let user = c.user;
  let database = c.database ?? '(default)';
  if (c.connectionString !== undefined) {
    try {
      const u = new URL(c.connectionString);
      address = `${u.hostname || 'localhost'}:${u.port || '3306'}`;
      user = decodeURIComponent(u.username) || '(default)';
      database = decodeURIComponent(u.pathname.slice(1)) || '(default)';
    } catch {
      address = user = database = '(connection string)';
    }
  }
  if ((e.code !== undefined && UNREACHABLE_CODES.has(e.code)) || /timeout|timed out/i.test(text))
    return checkFailed('TRIB_ERR_DEST_CHECK_UNREACHABLE', [c.id, address, text]);
  // 1045 access denied (user or password), 1044 access denied to the database, 1698 auth plugin refusal.
  if (e.errno === 1045 || e.errno === 1698)
    return checkFailed('TRIB_ERR_DEST_CHECK_AUTH', [c.id, user, text]);
  if (e.errno === 1049 || e.errno === 1044)
    return checkFailed('TRIB_ERR_DEST_CHECK_DATABASE', [c.id, database, text]);
  return checkFailed('TRIB_ERR_DEST_CHECK_FAILED', [c.id, text]);
}
