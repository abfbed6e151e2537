import pg from 'pg';
import { TributaryError } from '../../errors.js';
import { RowBudget, type UserQueries, type UserQueryLimits, type UserQueryResult } from '../user-query.js';
import { pgIdent } from './postgres-engine.js';

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

  async userQuery(sql: string, limits: UserQueryLimits): Promise<UserQueryResult> {
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
      // One statement only (the extended protocol refuses several), and DECLARE takes a query only.
      // (`queryMode` is pg's, missing from its types.)
      const declare = { text: `DECLARE user_query NO SCROLL CURSOR FOR ${sql}`, queryMode: 'extended' };
      await c.query(declare as pg.QueryConfig);
      const budget = new RowBudget(limits);
      let columns: string[] | undefined;
      read: for (;;) {
        await c.query(`SET LOCAL statement_timeout = ${timeLeft()}`);
        const page = await c.query(`FETCH FORWARD ${PAGE} FROM user_query`);
        columns ??= page.fields.map((f) => f.name);
        const int8 = page.fields.filter((f) => f.dataTypeID === INT8).map((f) => f.name);
        for (const row of page.rows as Record<string, unknown>[]) {
          for (const name of int8) {
            const v = row[name];
            if (typeof v === 'string' && Number.isSafeInteger(Number(v))) row[name] = Number(v);
          }
          if (!budget.add(row)) break read;
        }
        if (page.rows.length < PAGE) break;
      }
      return { columns: columns ?? [], rows: budget.rows, truncated: budget.truncated };
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

  async close(): Promise<void> {
    await this.pool.end();
  }
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
