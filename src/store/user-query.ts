import type { QueryResult } from './store.js';

/**
 * SQL a user sends to `/admin/v1/query`: untrusted text, run by the adapters so that it can
 * only read the warehouse's tables (DuckDB: `./duckdb/duckdb-user-query.ts`; PostgreSQL: a
 * read-only role, `./postgres/postgres-user-query.ts`). Internal callers use the typed methods
 * of the `Store` port, never this.
 */
export interface UserQueries {
  /**
   * Runs one read-only SELECT within `limits`. Throws `TributaryError` with
   * `TRIB_ERR_QUERY_NOT_ALLOWED` (not a single SELECT over the catalog's tables),
   * `TRIB_ERR_QUERY_TIMEOUT` or `TRIB_ERR_QUERY_FAILED` (the engine refused it).
   */
  userQuery(sql: string, limits: UserQueryLimits, options?: UserQueryOptions): Promise<UserQueryResult>;
}

export interface UserQueryOptions {
  /**
   * Personal data masked (an analyst's or viewer's query): the query reads views where
   * personal columns are keyed digests and JSON columns are NULL, and no raw table. An adapter
   * that cannot mask refuses the query (`TRIB_ERR_QUERY_NOT_ALLOWED`) rather than run it raw.
   */
  mask?: boolean;
}

export interface UserQueryLimits {
  /** Rows returned at most; the result says when there were more. */
  maxRows: number;
  /** Bytes of the rows as JSON at most; the result stops before the row that passes it. */
  maxBytes: number;
  /** Milliseconds the statement may run before it is interrupted. */
  timeoutMs: number;
  /** Queries that may run at once (each holds memory of the engine the pipeline shares). */
  maxConcurrent: number;
}

/** Defaults of `query:` in the configuration (docs/configuration.md). */
export const DEFAULT_USER_QUERY_LIMITS: UserQueryLimits = {
  maxRows: 10_000,
  maxBytes: 16 * 1024 * 1024,
  timeoutMs: 30_000,
  maxConcurrent: 2,
};

export interface UserQueryResult extends QueryResult {
  /** True when the query had more rows than were returned (cut at `maxRows` or `maxBytes`). */
  truncated: boolean;
}

/** Table functions a user query may call: they compute rows and read nothing outside the query. */
export const ALLOWED_TABLE_FUNCTIONS: ReadonlySet<string> = new Set([
  'range',
  'generate_series',
  'unnest',
  'json_each',
  'json_tree',
]);

/**
 * Collects rows until a limit: `add` takes a row and its JSON size, and says whether it was kept.
 * Shared by the adapters so both cut results the same way.
 */
export class RowBudget {
  readonly rows: Record<string, unknown>[] = [];
  truncated = false;
  private bytes = 0;

  constructor(private readonly limits: UserQueryLimits) {}

  /**
   * Whether one more row of `size` bytes is within the limits, before it is converted;
   * false (and `truncated`) when it is not.
   */
  fits(size: number): boolean {
    if (this.rows.length < this.limits.maxRows && this.bytes + size <= this.limits.maxBytes) return true;
    this.truncated = true;
    return false;
  }

  /**
   * Keeps the row if the limits allow it; false (and `truncated`) once they do not. `size`:
   * its bytes as JSON when already known, else measured here.
   */
  add(row: Record<string, unknown>, size = JSON.stringify(row).length): boolean {
    if (!this.fits(size + 1)) return false;
    this.bytes += size + 1;
    this.rows.push(row);
    return true;
  }
}
