/** The MySQL / MariaDB side of the shared SQL source: `mysql2`, streamed results, information_schema. */
import mysql from 'mysql2';
import type { StreamDescriptor } from '../source.js';
import { catalogStreams } from '../sql/catalog.js';
import type { ColumnKind, Params, ResultField, RowBatch, SqlConnection, SqlDialect } from '../sql/driver.js';
import { connectFailure, rethrowQueryError, SourceError } from '../sql/errors.js';
import { type SqlSourceConfig, serverAddress, tlsOptions } from '../sql/spec.js';
import { type MysqlColumn, type MysqlType, mysqlText, mysqlType, mysqlValue } from './values.js';

/** How stale information_schema.innodb_trx may be (InnoDB's trx_i_s cache), with a margin. */
const INNODB_TRX_CACHE_MS = 150;

const quoteIdent = (name: string): string => `\`${name.replace(/`/g, '``')}\``;

interface MysqlField extends ResultField {
  type: MysqlType;
}

/** How a saved value is cast to compare with a column: exact for big integers and decimals (a string would compare as a double). */
function cast(field: ResultField): (ph: string) => string {
  const t = (field as MysqlField).type;
  switch (field.kind) {
    case 'integer':
      return t?.unsigned || t?.bits ? (ph) => `CAST(${ph} AS UNSIGNED)` : (ph) => `CAST(${ph} AS SIGNED)`;
    case 'decimal':
      return (ph) => `CAST(${ph} AS DECIMAL(65, ${Math.min(30, t?.decimals ?? 30)}))`;
    case 'float':
      return (ph) => `CAST(${ph} AS DOUBLE)`;
    case 'timestamp':
    case 'timestamptz':
      return (ph) => `CAST(${ph} AS DATETIME(6))`;
    case 'date':
      return (ph) => `CAST(${ph} AS DATE)`;
    case 'binary':
      return (ph) => `UNHEX(${ph})`;
    default:
      return (ph) => ph;
  }
}

export const mysqlDialect: SqlDialect = {
  name: 'mysql',
  quoteIdent,
  quoteTable: (schema, name) =>
    schema === undefined ? quoteIdent(name) : `${quoteIdent(schema)}.${quoteIdent(name)}`,
  param(params: Params, text: string, field: ResultField): string {
    params.values.push(text);
    return cast(field)('?');
  },
  after(params, columns, values, fields) {
    // Expanded, not a row comparison: MySQL and MariaDB use an index for this form.
    const first = `${columns[0]} >= ${mysqlDialect.param(params, values[0]!, fields[0]!)}`;
    const ors: string[] = [];
    for (let i = 0; i < columns.length; i++) {
      const parts: string[] = [];
      for (let j = 0; j < i; j++)
        parts.push(`${columns[j]} = ${mysqlDialect.param(params, values[j]!, fields[j]!)}`);
      parts.push(`${columns[i]} > ${mysqlDialect.param(params, values[i]!, fields[i]!)}`);
      ors.push(`(${parts.join(' AND ')})`);
    }
    return `(${first} AND (${ors.join(' OR ')}))`;
  },
};

/** Whether an error means the connection is gone (worth a retry from the last state). */
export function isConnectionLost(err: unknown): boolean {
  const e = err as { code?: string; errno?: number; fatal?: boolean; message?: string };
  if (e?.fatal === true) return true;
  if (e?.errno === 1927 || e?.errno === 1053 || e?.errno === 2013 || e?.errno === 2006) return true;
  return /^(PROTOCOL_CONNECTION_LOST|ECONNRESET|EPIPE|ETIMEDOUT|ER_CONNECTION_KILLED|ER_SERVER_SHUTDOWN)$/.test(
    e?.code ?? '',
  );
}

/** A failure to connect, as the stable code a `check` reports. */
export function connectError(source: string, config: SqlSourceConfig, err: unknown): SourceError {
  const e = err as { code?: string; errno?: number };
  const reason =
    e?.errno === 1045 || e?.code === 'ER_ACCESS_DENIED_ERROR' || e?.errno === 1044 || e?.errno === 1698
      ? 'auth'
      : e?.errno === 1049 || e?.code === 'ER_BAD_DB_ERROR'
        ? 'database'
        : undefined;
  return connectFailure(source, config.database, err, reason);
}

function connectionOptions(config: SqlSourceConfig): mysql.ConnectionOptions {
  const common: mysql.ConnectionOptions = {
    connectTimeout: config.connectTimeout,
    ssl: tlsOptions(config),
    typeCast: true,
    jsonStrings: true,
    decimalNumbers: false,
    rowsAsArray: true,
    supportBigNumbers: true,
    bigNumberStrings: true,
    dateStrings: true,
    charset: 'utf8mb4_general_ci',
    enableKeepAlive: true,
    multipleStatements: false,
  };
  if (config.connectionString !== undefined) return { ...common, uri: config.connectionString };
  return { ...common, ...serverAddress(config) };
}

/** Opens a connection, its session set for the reads (UTC, statement timeout). */
export async function connectMysql(config: SqlSourceConfig, source: string): Promise<SqlConnection> {
  const conn = mysql.createConnection(connectionOptions(config));
  /**
   * mysql2's `destroy()` only half-closes the socket: a server blocked writing a result to a
   * paused socket would wait for `net_write_timeout`. Close the socket itself.
   */
  const giveUp = () => {
    conn.destroy();
    (conn as unknown as { stream?: { destroy(): void } }).stream?.destroy();
  };
  let lost: unknown;
  conn.on('error', (err) => {
    lost ??= err;
  });
  const raw = <T>(sql: string, params: readonly unknown[] = [], typed = true) =>
    new Promise<{ rows: T[]; fields: MysqlColumn[] }>((resolve, reject) => {
      conn.query(
        { sql, values: params as unknown[], typeCast: typed, rowsAsArray: !typed },
        (err, rows, fields) =>
          err
            ? reject(err)
            : resolve({ rows: rows as T[], fields: (fields ?? []) as unknown as MysqlColumn[] }),
      );
    });
  let mariadb = false;
  try {
    await new Promise<void>((resolve, reject) => conn.connect((err) => (err ? reject(err) : resolve())));
    const [v] = (await raw<{ v: string }>('SELECT VERSION() AS v')).rows;
    mariadb = /mariadb/i.test(v?.v ?? '');
    await raw("SET time_zone = '+00:00'");
    const seconds = Math.ceil(config.statementTimeout / 1000);
    if (mariadb) await raw(`SET SESSION max_statement_time = ${seconds}`);
    else await raw(`SET SESSION max_execution_time = ${seconds * 1000}`);
  } catch (err) {
    conn.destroy();
    throw connectError(source, config, err);
  }

  const fail = (err: unknown): never => rethrowQueryError(source, err, lost, isConnectionLost);
  const run = async <T>(sql: string, params?: readonly unknown[]): Promise<T[]> => {
    if (lost !== undefined) fail(lost);
    try {
      return (await raw<T>(sql, params)).rows;
    } catch (err) {
      return fail(err);
    }
  };
  const toFields = (columns: readonly MysqlColumn[]): MysqlField[] =>
    columns.map((c) => {
      const type = mysqlType(c);
      return {
        name: c.name,
        kind: type.kind,
        sourceType: type.name,
        type,
        convert: (v: unknown) => mysqlValue(type, v as string),
        text: (v: unknown) => mysqlText(type, v as string),
      };
    });

  return {
    dialect: mysqlDialect,
    query: run,
    async describe(sql) {
      if (lost !== undefined) fail(lost);
      try {
        return toFields((await raw(sql, [], false)).fields);
      } catch (err) {
        return fail(err);
      }
    },
    async *stream(sql, params, batchSize): AsyncIterable<RowBatch> {
      if (lost !== undefined) fail(lost);
      // Rows are collected from the query's events a batch at a time; the connection is paused
      // (its socket stops reading) while a batch is being consumed.
      const query = conn.query({ sql, values: params as unknown[] });
      let fields: MysqlField[] = [];
      let rows: unknown[][] = [];
      let ended = false;
      let error: unknown;
      let paused = false;
      let wake: (() => void) | undefined;
      const signal = () => {
        const w = wake;
        wake = undefined;
        w?.();
      };
      query.on('fields', (f: unknown) => {
        fields = toFields(f as MysqlColumn[]);
      });
      query.on('result', (row: unknown) => {
        rows.push(row as unknown[]);
        if (rows.length >= batchSize && !paused) {
          paused = true;
          conn.pause();
          signal();
        }
      });
      query.on('error', (err: unknown) => {
        error ??= err;
        signal();
      });
      query.on('end', () => {
        ended = true;
        signal();
      });
      // mysql2 tells a query without a callback nothing of a lost connection: do it here.
      const onLost = (err: Error) => {
        error ??= err;
        signal();
      };
      conn.on('error', onLost);
      let done = false;
      try {
        for (;;) {
          if (error !== undefined) fail(error);
          if (rows.length >= batchSize || ended) {
            const batch = rows;
            rows = [];
            if (batch.length > 0 || ended) yield { fields, rows: batch };
            if (ended && rows.length === 0) break;
            if (paused) {
              paused = false;
              conn.resume();
            }
            continue;
          }
          await new Promise<void>((resolve) => {
            wake = resolve;
          });
        }
        done = true;
      } catch (err) {
        done = true;
        fail(err);
      } finally {
        conn.off('error', onLost);
        // Left mid-result (an abort): the rest of the rows would still arrive on this connection.
        if (!done) {
          lost ??= new Error('read stopped mid-result');
          giveUp();
        }
      }
    },
    async clock() {
      const [r] = await run<{ t: string }>('SELECT UNIX_TIMESTAMP(SYSDATE(6)) AS t');
      return Number(r!.t);
    },
    async openTransactions() {
      // information_schema.innodb_trx is a cache InnoDB refreshes when it is older than 0.1 s:
      // wait until a refresh is sure to postdate the mark taken just before, so a transaction
      // that started before the mark is listed.
      await new Promise((resolve) => setTimeout(resolve, INNODB_TRX_CACHE_MS));
      // trx_started is in the server's system zone, in whole seconds: read it there.
      try {
        await run("SET time_zone = 'SYSTEM'");
        const rows = await run<{ start: string | null }>(
          `SELECT UNIX_TIMESTAMP(trx_started) AS start FROM information_schema.innodb_trx
            WHERE trx_mysql_thread_id <> CONNECTION_ID() AND trx_is_read_only = 0`,
        );
        return rows.map((r) => (r.start === null ? null : Number(r.start)));
      } catch (err) {
        if (err instanceof SourceError) throw err;
        return [null]; // no PROCESS privilege: nothing is known, the bound does not move
      } finally {
        await run("SET time_zone = '+00:00'");
      }
    },
    async primaryKey(schema, table) {
      const rows = await run<{ name: string }>(
        `SELECT COLUMN_NAME AS name FROM information_schema.KEY_COLUMN_USAGE
          WHERE CONSTRAINT_NAME = 'PRIMARY' AND TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?
          ORDER BY ORDINAL_POSITION`,
        [schema ?? null, table],
      );
      return rows.map((r) => r.name);
    },
    catalog: () => mysqlCatalog(run),
    async beginSnapshot() {
      await run('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ');
      await run('START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY');
    },
    async endSnapshot() {
      await run('COMMIT');
    },
    async end() {
      if (lost !== undefined) {
        giveUp();
        return;
      }
      await new Promise<void>((resolve) => conn.end(() => resolve()));
    },
  };
}

/** The kind of an information_schema column (`DATA_TYPE`, `COLUMN_TYPE`). */
export function catalogKind(dataType: string, columnType: string, json: boolean): ColumnKind {
  const t = dataType.toLowerCase();
  if (json || t === 'json') return 'json';
  if (t === 'tinyint' && /^tinyint\(1\)/i.test(columnType)) return 'boolean';
  if (t === 'bit') return /^bit\(1\)/i.test(columnType) ? 'boolean' : 'integer';
  if (['tinyint', 'smallint', 'mediumint', 'int', 'integer', 'bigint', 'year'].includes(t)) return 'integer';
  if (t === 'decimal' || t === 'numeric') return 'decimal';
  if (t === 'float' || t === 'double' || t === 'real') return 'float';
  if (t === 'timestamp') return 'timestamptz';
  if (t === 'datetime') return 'timestamp';
  if (t === 'date') return 'date';
  if (t === 'time') return 'time';
  if (/blob|binary|geometry|point|linestring|polygon/.test(t)) return 'binary';
  return 'text';
}

async function mysqlCatalog(
  run: <T>(sql: string, params?: readonly unknown[]) => Promise<T[]>,
): Promise<StreamDescriptor[]> {
  const rows = await run<{
    s: string;
    t: string;
    c: string;
    dt: string;
    ct: string;
    nullable: string;
    pk: number | null;
    js: number;
  }>(
    `SELECT c.TABLE_SCHEMA AS s, c.TABLE_NAME AS t, c.COLUMN_NAME AS c, c.DATA_TYPE AS dt, c.COLUMN_TYPE AS ct,
            c.IS_NULLABLE AS nullable, k.ORDINAL_POSITION AS pk,
            EXISTS (SELECT 1 FROM information_schema.CHECK_CONSTRAINTS cc
                     WHERE cc.CONSTRAINT_SCHEMA = c.TABLE_SCHEMA AND cc.TABLE_NAME = c.TABLE_NAME
                       AND cc.CHECK_CLAUSE = CONCAT('json_valid(\`', c.COLUMN_NAME, '\`)')) AS js
       FROM information_schema.COLUMNS c
       LEFT JOIN information_schema.KEY_COLUMN_USAGE k
         ON k.TABLE_SCHEMA = c.TABLE_SCHEMA AND k.TABLE_NAME = c.TABLE_NAME AND k.COLUMN_NAME = c.COLUMN_NAME
        AND k.CONSTRAINT_NAME = 'PRIMARY'
      WHERE c.TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys')
      ORDER BY c.TABLE_SCHEMA, c.TABLE_NAME, c.ORDINAL_POSITION`,
  );
  return catalogStreams(
    rows.map((r) => ({
      schema: r.s,
      table: r.t,
      column: r.c,
      sourceType: r.ct,
      kind: catalogKind(r.dt, r.ct, Number(r.js) === 1),
      nullable: r.nullable === 'YES',
      keyPosition: r.pk === null ? null : Number(r.pk),
    })),
  );
}
