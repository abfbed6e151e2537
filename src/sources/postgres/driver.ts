/** The PostgreSQL side of the shared SQL source: `pg`, rows by `COPY … TO STDOUT` (`pg-copy-streams`), pg_catalog. */
import pg from 'pg';
import { to as copyTo } from 'pg-copy-streams';
import type { StreamDescriptor } from '../source.js';
import { catalogStreams } from '../sql/catalog.js';
import type { Params, ResultField, RowBatch, SqlConnection, SqlDialect } from '../sql/driver.js';
import { connectFailure, rethrowQueryError, type SourceError } from '../sql/errors.js';
import { type SqlSourceConfig, serverAddress, tlsOptions } from '../sql/spec.js';
import { CopyTextParser } from './copy-text.js';
import { type PgType, pgConverter, pgKind } from './values.js';

/** Sessions of the source are named so that another sync's read-only snapshot does not hold a bound. */
export const APPLICATION_NAME = 'tributary-source';

/** Every value as the server's text: the connector converts by type (`./values.ts`). */
const TEXT_TYPES = { getTypeParser: () => (v: string) => v } as unknown as pg.CustomTypesConfig;

const quoteIdent = (name: string): string => `"${name.replace(/"/g, '""')}"`;

export const postgresDialect: SqlDialect = {
  name: 'postgres',
  quoteIdent,
  quoteTable: (schema, name) =>
    schema === undefined ? quoteIdent(name) : `${quoteIdent(schema)}.${quoteIdent(name)}`,
  // A literal, not a bind parameter: reads run as `COPY (…) TO STDOUT`, which takes none. The
  // session sets standard_conforming_strings, so doubling quotes is the whole escaping.
  param(_params: Params, text: string, field: ResultField): string {
    const literal = `'${text.replace(/'/g, "''")}'`;
    const cast = (field as PgField).type?.name;
    return cast === undefined ? literal : `${literal}::${cast}`;
  },
  after(params, columns, values, fields) {
    const placeholders = values.map((v, i) => postgresDialect.param(params, v, fields[i]!));
    return `(${columns.join(', ')}) > (${placeholders.join(', ')})`;
  },
};

interface PgField extends ResultField {
  type: PgType;
}

/** Whether an error means the connection is gone (worth a retry from the last state). */
export function isConnectionLost(err: unknown): boolean {
  const e = err as { code?: string; message?: string };
  if (typeof e?.code === 'string' && (e.code.startsWith('08') || /^57P0[123]$/.test(e.code))) return true;
  if (typeof e?.code === 'string' && /^(ECONNRESET|EPIPE|ETIMEDOUT|ECONNREFUSED)$/.test(e.code)) return true;
  return /Connection terminated|connection is closed|Client has encountered a connection error|not queryable/i.test(
    e?.message ?? '',
  );
}

/** A failure to connect, as the stable code a `check` reports. */
export function connectError(source: string, config: SqlSourceConfig, err: unknown): SourceError {
  const code = (err as { code?: string })?.code;
  const reason = code === '28P01' || code === '28000' ? 'auth' : code === '3D000' ? 'database' : undefined;
  return connectFailure(source, config.database, err, reason);
}

function clientConfig(config: SqlSourceConfig): pg.ClientConfig {
  const common: pg.ClientConfig = {
    ssl: tlsOptions(config),
    connectionTimeoutMillis: config.connectTimeout,
    statement_timeout: config.statementTimeout,
    keepAlive: true,
    application_name: APPLICATION_NAME,
    types: TEXT_TYPES,
  };
  if (config.connectionString !== undefined) return { ...common, connectionString: config.connectionString };
  return { ...common, ...serverAddress(config) };
}

/** Opens a connection, its session set for the reads (UTC, ISO dates, hex bytea). */
export async function connectPostgres(config: SqlSourceConfig, source: string): Promise<SqlConnection> {
  const client = new pg.Client(clientConfig(config));
  let lost: unknown;
  // A backend that dies between queries emits `error`: keep it for the next call, never crash.
  client.on('error', (err) => {
    lost ??= err;
  });
  try {
    await client.connect();
    await client.query(
      "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'iso_8601'; SET bytea_output = 'hex'; SET extra_float_digits = 1; SET standard_conforming_strings = on",
    );
  } catch (err) {
    await client.end().catch(() => {});
    throw connectError(source, config, err);
  }
  const types = new Map<number, PgType>();

  const fail = (err: unknown): never => rethrowQueryError(source, err, lost, isConnectionLost);
  const run = async <T>(sql: string, params?: readonly unknown[]): Promise<T[]> => {
    if (lost !== undefined) fail(lost);
    try {
      return (await client.query(sql, params as unknown[])).rows as T[];
    } catch (err) {
      return fail(err);
    }
  };

  /** Loads the types of `oids` (and their array elements) not yet known. */
  const loadTypes = async (oids: readonly number[]): Promise<void> => {
    const missing = [...new Set(oids)].filter((o) => !types.has(o));
    if (missing.length === 0) return;
    const rows = await run<{
      oid: string;
      cat: string;
      elem: string;
      name: string;
      ecat: string | null;
      ename: string | null;
    }>(
      `SELECT t.oid, t.typcategory AS cat, t.typelem AS elem, format_type(t.oid, NULL) AS name,
              e.typcategory AS ecat, format_type(e.oid, NULL) AS ename
         FROM pg_type t LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A'
        WHERE t.oid = ANY($1::oid[])`,
      [missing],
    );
    for (const r of rows) {
      const oid = Number(r.oid);
      const kind = pgKind(oid, r.cat);
      const t: PgType = { oid, kind, name: r.name };
      if (kind === 'array' && r.ename !== null) {
        const eoid = Number(r.elem);
        t.element = { oid: eoid, kind: pgKind(eoid, r.ecat), name: r.ename };
      }
      types.set(oid, t);
    }
  };

  const toFields = async (fields: readonly { name: string; dataTypeID: number }[]): Promise<PgField[]> => {
    await loadTypes(fields.map((f) => f.dataTypeID));
    return fields.map((f) => {
      const type = types.get(f.dataTypeID) ?? { oid: f.dataTypeID, kind: 'other', name: 'text' };
      return {
        name: f.name,
        kind: type.kind,
        sourceType: type.name,
        type,
        convert: pgConverter(type),
        text: (raw: unknown) => raw as string,
      };
    });
  };

  return {
    dialect: postgresDialect,
    query: run,
    async describe(sql) {
      if (lost !== undefined) fail(lost);
      try {
        const r = await client.query(sql);
        return await toFields(r.fields);
      } catch (err) {
        return fail(err);
      }
    },
    async *stream(sql, params, batchSize): AsyncIterable<RowBatch> {
      if (lost !== undefined) fail(lost);
      // The columns, from the statement run with no rows; then the rows by COPY, the fastest
      // way out of PostgreSQL (its text format, parsed here; the socket is paused while a batch
      // is consumed).
      let fields: PgField[];
      try {
        const described = await client.query(
          `SELECT * FROM (${sql}) AS tributary_d LIMIT 0`,
          params as unknown[],
        );
        fields = await toFields(described.fields);
      } catch (err) {
        return fail(err);
      }
      const copy = client.query(copyTo(`COPY (${sql}) TO STDOUT`));
      const parser = new CopyTextParser(fields.length);
      let done = false;
      try {
        let rows: (string | null)[][] = [];
        for await (const chunk of copy as AsyncIterable<Buffer>) {
          parser.push(chunk, rows);
          if (rows.length >= batchSize) {
            yield { fields, rows };
            rows = [];
          }
        }
        parser.end();
        done = true;
        yield { fields, rows };
      } catch (err) {
        done = true;
        fail(err);
      } finally {
        // Left mid-COPY (an abort): the rest would still arrive; the connection is given up.
        if (!done) {
          lost ??= new Error('read stopped mid-result');
          copy.destroy();
          client.end().catch(() => {});
        }
      }
    },
    async clock() {
      const [r] = await run<{ t: string }>('SELECT extract(epoch FROM clock_timestamp())::float8 AS t');
      return Number(r!.t);
    },
    async openTransactions() {
      const rows = await run<{ start: string | null }>(
        `SELECT extract(epoch FROM xact_start)::float8 AS start FROM pg_stat_activity
          WHERE pid <> pg_backend_pid() AND datname = current_database()
            AND backend_type = 'client backend' AND application_name IS DISTINCT FROM $1
            AND (xact_start IS NOT NULL OR state IS NULL)
         UNION ALL SELECT NULL FROM pg_prepared_xacts WHERE database = current_database()`,
        [APPLICATION_NAME],
      );
      return rows.map((r) => (r.start === null ? null : Number(r.start)));
    },
    async primaryKey(schema, table) {
      const rows = await run<{ name: string }>(
        `SELECT a.attname AS name
           FROM pg_index i
           JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) ON true
           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
          WHERE i.indisprimary AND i.indrelid = to_regclass($1)
          ORDER BY k.n`,
        [postgresDialect.quoteTable(schema, table)],
      );
      return rows.map((r) => r.name);
    },
    catalog: () => pgCatalog(run),
    async beginSnapshot() {
      await run('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    },
    async endSnapshot() {
      await run('COMMIT');
    },
    async end() {
      await client.end();
    },
  };
}

async function pgCatalog(
  run: <T>(sql: string, params?: readonly unknown[]) => Promise<T[]>,
): Promise<StreamDescriptor[]> {
  const rows = await run<{
    schema: string;
    table: string;
    column: string;
    oid: string;
    cat: string;
    type: string;
    notnull: string;
    pk: string | null;
  }>(
    `SELECT n.nspname AS schema, c.relname AS table, a.attname AS column,
            (CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END)::text AS oid,
            (CASE WHEN t.typtype = 'd' THEN (SELECT b.typcategory FROM pg_type b WHERE b.oid = t.typbasetype) ELSE t.typcategory END) AS cat,
            format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS notnull,
            (SELECT k.n FROM pg_index i, unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
              WHERE i.indrelid = c.oid AND i.indisprimary AND k.attnum = a.attnum)::int AS pk
       FROM pg_class c
       JOIN pg_namespace n ON n.oid = c.relnamespace
       JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
       JOIN pg_type t ON t.oid = a.atttypid
      WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f')
        AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
        AND has_table_privilege(c.oid, 'SELECT')
      ORDER BY n.nspname, c.relname, a.attnum`,
  );
  return catalogStreams(
    rows.map((r) => ({
      schema: r.schema,
      table: r.table,
      column: r.column,
      sourceType: r.type,
      kind: pgKind(Number(r.oid), r.cat),
      nullable: r.notnull !== 't',
      keyPosition: r.pk === null ? null : Number(r.pk),
    })),
  );
}
