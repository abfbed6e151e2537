import pg from 'pg';
import { TributaryError } from '../../errors.js';
import { pgIdent } from '../../platform/postgres/pg-sql.js';
import {
  RowBudget,
  type UserQueries,
  type UserQueryLimits,
  type UserQueryOptions,
  type UserQueryResult,
} from '../user-query.js';

const INT8 = 20;
/** Rows per FETCH: the size limit is checked between pages, so a page stays small. */
const PAGE = 500;

/** Roles whose members read or write the server's files or run programs on it. */
const HOST_ROLES = ['pg_read_server_files', 'pg_write_server_files', 'pg_execute_server_program'];

/**
 * The admin API's SQL in scale-out: a pool of its own, connected as a role the operator made
 * for it (SELECT only, docs/operations.md), each query in a READ ONLY transaction with a
 * statement timeout, read through a cursor so at most the row and size limits are fetched.
 * The extended protocol takes one statement only, and `DECLARE … CURSOR FOR` a query only.
 */
export class PostgresUserQueries implements UserQueries {
  private constructor(
    private readonly pool: pg.Pool,
    private readonly schema: string,
  ) {}

  /**
   * Connects as the query role and refuses one that could reach the host or the state:
   * a superuser, or a member of pg_read_server_files, pg_write_server_files or
   * pg_execute_server_program.
   */
  static async open(opts: { url: string; schema: string }): Promise<PostgresUserQueries> {
    const pool = new pg.Pool({ connectionString: opts.url, max: 2 });
    pool.on('error', () => undefined);
    try {
      const r = await pool.query<{ name: string; superuser: boolean; host: string[] | null }>(
        `SELECT current_user AS name, r.rolsuper AS superuser,
                array(SELECT h FROM unnest($1::text[]) h WHERE pg_has_role(current_user, h, 'MEMBER')) AS host
         FROM pg_roles r WHERE r.rolname = current_user`,
        [HOST_ROLES],
      );
      const role = r.rows[0];
      const why = !role
        ? 'the role is unknown'
        : role.superuser
          ? `role ${role.name} is a superuser`
          : (role.host ?? []).length > 0
            ? `role ${role.name} is a member of ${role.host!.join(', ')}`
            : undefined;
      if (why !== undefined)
        throw new Error(
          `state.queryConnectionString: ${why}; /admin/v1/query needs a role with SELECT only (docs/operations.md, "The query role")`,
        );
    } catch (err) {
      await pool.end().catch(() => undefined);
      throw err;
    }
    return new PostgresUserQueries(pool, opts.schema);
  }

  async userQuery(
    sql: string,
    limits: UserQueryLimits,
    options: UserQueryOptions = {},
  ): Promise<UserQueryResult> {
    // Masked views for a role of their own are not built on PostgreSQL yet: refuse, never run raw.
    if (options.mask)
      throw new TributaryError('TRIB_ERR_QUERY_NOT_ALLOWED', [
        'personal data cannot be masked on the PostgreSQL state store yet; ask an admin to run it',
      ]);
    const deadline = Date.now() + limits.timeoutMs;
    const timeLeft = () => {
      const ms = deadline - Date.now();
      if (ms <= 0) throw new TributaryError('TRIB_ERR_QUERY_TIMEOUT', [limits.timeoutMs]);
      return Math.max(1, Math.trunc(ms));
    };
    const c = await this.pool.connect();
    let broken: Error | undefined;
    try {
      await c.query(
        `BEGIN READ ONLY; SET LOCAL search_path TO ${pgIdent(this.schema)}, public; SET LOCAL TimeZone TO 'UTC'`,
      );
      await c.query(`SET LOCAL statement_timeout = ${timeLeft()}`);
      const body = sql.replace(/[\s;]+$/, '');
      // One statement only (the extended protocol refuses several), and DECLARE takes a query only.
      await c.query(extended(`DECLARE user_query NO SCROLL CURSOR FOR ${body}`));
      const columns = (await c.query('FETCH FORWARD 0 FROM user_query')).fields.map((f) => f.name);
      await c.query('CLOSE user_query');
      await c.query(
        extended(`DECLARE user_rows NO SCROLL CURSOR FOR ${withRowBytes(body, columns.length, limits)}`),
      );
      const budget = new RowBudget(limits);
      let bytes = 0;
      read: for (;;) {
        await c.query(`SET LOCAL statement_timeout = ${timeLeft()}`);
        const page = await c.query(`FETCH FORWARD ${PAGE} FROM user_rows`);
        const int8 = new Set(page.fields.filter((f) => f.dataTypeID === INT8).map((f) => f.name));
        for (const r of page.rows as Record<string, unknown>[]) {
          // Past the size limit the values were left behind in PostgreSQL (NULL here): stop.
          bytes += Number(r[ROW_BYTES]) + 1;
          if (bytes > limits.maxBytes) {
            budget.truncated = true;
            break read;
          }
          const row: Record<string, unknown> = {};
          columns.forEach((name, i) => {
            const v = r[`c${i + 1}`];
            row[name] =
              int8.has(`c${i + 1}`) && typeof v === 'string' && Number.isSafeInteger(Number(v))
                ? Number(v)
                : v;
          });
          if (!budget.add(row)) break read;
        }
        if (page.rows.length < PAGE) break;
      }
      return { columns, rows: budget.rows, truncated: budget.truncated };
    } catch (err) {
      if (err instanceof TributaryError) throw err;
      const code = (err as { code?: string }).code;
      if (code === undefined) broken = err as Error;
      if (code === '57014')
        throw new TributaryError('TRIB_ERR_QUERY_TIMEOUT', [limits.timeoutMs], { cause: err });
      const why = refusal(sql, code, (err as Error).message);
      if (why !== undefined) throw new TributaryError('TRIB_ERR_QUERY_NOT_ALLOWED', [why], { cause: err });
      throw new TributaryError('TRIB_ERR_QUERY_FAILED', [(err as Error).message], { cause: err });
    } finally {
      // Also undoes any session setting the query made (set_config(…, false)).
      if (!broken) await c.query('ROLLBACK').catch((e: Error) => (broken = e));
      c.release(broken);
    }
  }

  /**
   * Reads all the rows of a reverse-ETL model (`./postgres-model-store.ts`) with the same
   * guards as `userQuery` (the query role, a READ ONLY transaction, one statement, a statement
   * timeout over the whole read) but no row limit: `wrap` turns the model's SELECT into the
   * columns the diff needs, and the rows come in pages of `pageSize`. Errors are those of
   * `userQuery`.
   */
  async *modelPages(
    sql: string,
    wrap: (body: string) => string,
    timeoutMs: number,
    pageSize: number,
  ): AsyncIterable<Record<string, unknown>[]> {
    const deadline = Date.now() + timeoutMs;
    const timeLeft = () => {
      const ms = deadline - Date.now();
      if (ms <= 0) throw new TributaryError('TRIB_ERR_QUERY_TIMEOUT', [timeoutMs]);
      return Math.max(1, Math.trunc(ms));
    };
    const c = await this.pool.connect();
    let broken: Error | undefined;
    try {
      await c.query(
        `BEGIN READ ONLY; SET LOCAL search_path TO ${pgIdent(this.schema)}, public; SET LOCAL TimeZone TO 'UTC'`,
      );
      const body = sql.replace(/[\s;]+$/, '');
      await c.query(`SET LOCAL statement_timeout = ${timeLeft()}`);
      // The model alone first: one query, not a statement the wrapper would hide.
      await c.query(extended(`DECLARE model_check NO SCROLL CURSOR FOR ${body}`));
      await c.query('CLOSE model_check');
      await c.query(extended(`DECLARE model_rows NO SCROLL CURSOR FOR ${wrap(body)}`));
      for (;;) {
        await c.query(`SET LOCAL statement_timeout = ${timeLeft()}`);
        const page = await c.query(`FETCH FORWARD ${Math.trunc(pageSize)} FROM model_rows`);
        if (page.rows.length > 0) yield page.rows as Record<string, unknown>[];
        if (page.rows.length < pageSize) break;
      }
    } catch (err) {
      if (err instanceof TributaryError) throw err;
      const code = (err as { code?: string }).code;
      if (code === undefined) broken = err as Error;
      if (code === '57014') throw new TributaryError('TRIB_ERR_QUERY_TIMEOUT', [timeoutMs], { cause: err });
      const why = refusal(sql, code, (err as Error).message);
      if (why !== undefined) throw new TributaryError('TRIB_ERR_QUERY_NOT_ALLOWED', [why], { cause: err });
      throw new TributaryError('TRIB_ERR_QUERY_FAILED', [(err as Error).message], { cause: err });
    } finally {
      if (!broken) await c.query('ROLLBACK').catch((e: Error) => (broken = e));
      c.release(broken);
    }
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}

/** The column the wrapper adds first: the size of each row's values as text, computed by PostgreSQL. */
const ROW_BYTES = '__tributary_row_bytes';

/** A statement pg sends over the extended protocol (`queryMode` is pg's, missing from its types). */
function extended(text: string): pg.QueryConfig {
  return { text, queryMode: 'extended' } as pg.QueryConfig;
}

/**
 * The query as a subquery whose `columns` columns are renamed c1…cN, with each row's size in
 * front and its values only while the running total of sizes is within `maxBytes`: a row
 * past the limit (one huge value, `repeat('x', 600000000)`, which pg cannot turn into a
 * string and throws outside any promise, taking the process down) never leaves PostgreSQL.
 */
function withRowBytes(body: string, columns: number, limits: UserQueryLimits): string {
  const cols = Array.from({ length: columns }, (_, i) => `c${i + 1}`);
  const max = Math.trunc(limits.maxBytes);
  // Per value, as text: octet_length of a text value reads its stored length, not the value.
  const size = cols.length === 0 ? '0' : cols.map((c) => `coalesce(octet_length(${c}::text), 0)`).join(' + ');
  return `SELECT ${[ROW_BYTES, ...cols.map((c) => `CASE WHEN t <= ${max} THEN ${c} END AS ${c}`)].join(', ')}
    FROM (SELECT ${[ROW_BYTES, `sum(${ROW_BYTES}) OVER (ROWS UNBOUNDED PRECEDING) AS t`, ...cols].join(', ')}
      FROM (SELECT ${size} AS ${ROW_BYTES}, q.* FROM (\n${body}\n) AS q${
        cols.length > 0 ? `(${cols.join(', ')})` : ''
      }) x) y
    LIMIT ${Math.trunc(limits.maxRows) + 1}`;
}

/**
 * Why PostgreSQL's error means the query was not allowed (rather than wrong), or undefined.
 * Only the answer's code depends on it: the role and the READ ONLY transaction are what refuse.
 */
function refusal(sql: string, code: string | undefined, message: string): string | undefined {
  // A write (read-only transaction, or a data-modifying WITH in the cursor) or what the role may not read.
  if (code === '25006' || code === '42501' || code === '0A000') return message;
  if (code !== '42601') return undefined;
  if (/multiple commands/.test(message)) return 'only a single SELECT statement is allowed';
  // DECLARE … CURSOR FOR takes a query only: DROP, COPY, SET … are a syntax error there.
  const start = sql.replace(/^(\s+|--[^\n]*\n?|\/\*[\s\S]*?\*\/|\()+/, '');
  return /^(select|with|values|table)\b/i.test(start)
    ? undefined
    : 'only a single SELECT statement is allowed';
}
