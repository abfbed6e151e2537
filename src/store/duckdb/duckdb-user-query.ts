import {
  type DuckDBConnection,
  DuckDBTypeId,
  JsonDuckDBValueConverter,
  StatementType,
} from '@duckdb/node-api';
import { TributaryError } from '../../errors.js';
import {
  ALLOWED_TABLE_FUNCTIONS,
  RowBudget,
  type UserQueryLimits,
  type UserQueryResult,
} from '../user-query.js';
// Users, tokens and the audit trail are never readable by a user's SQL: not in the catalog, refused.
import { GOVERNANCE_SCHEMA } from './duckdb-governance-store.js';

const INTEGER_TYPES = new Set<DuckDBTypeId>([
  DuckDBTypeId.BIGINT,
  DuckDBTypeId.UBIGINT,
  DuckDBTypeId.HUGEINT,
  DuckDBTypeId.UHUGEINT,
]);

/** A table or view of the instance's catalogs, lower-cased (DuckDB's identifiers are case-insensitive). */
export interface CatalogEntry {
  database: string;
  schema: string;
  name: string;
}

/**
 * FROM items a user query may hold; BASE_TABLE and TABLE_FUNCTION are checked further. Any
 * other kind (SHOW_REF of DESCRIBE and SUMMARIZE, PIVOT, one DuckDB adds later) is refused.
 */
const TABLE_REFS = new Set(['BASE_TABLE', 'TABLE_FUNCTION', 'JOIN', 'SUBQUERY', 'EXPRESSION_LIST', 'EMPTY']);

/**
 * Why DuckDB's parse tree of a SELECT (`json_serialize_sql`) may not run, or undefined when
 * it may: every table it names is a table or view of `catalog` or a CTE in scope (never a
 * file name DuckDB would scan in its place), and every table function is in
 * `ALLOWED_TABLE_FUNCTIONS`. Anything it does not know is refused.
 */
export function refusal(tree: unknown, catalog: readonly CatalogEntry[]): string | undefined {
  const root = tree as { error?: boolean; error_message?: string; statements?: unknown[] };
  if (root.error)
    return `only a single SELECT statement is allowed (${root.error_message ?? 'not a SELECT'})`;
  if (!Array.isArray(root.statements) || root.statements.length !== 1)
    return 'only a single SELECT statement is allowed';
  const names = new Map<string, CatalogEntry[]>();
  for (const e of catalog) names.set(e.name, [...(names.get(e.name) ?? []), e]);
  try {
    walk(root.statements[0], new Set(), names);
    return undefined;
  } catch (err) {
    if (err instanceof Refused) return err.message;
    throw err;
  }
}

class Refused extends Error {}

function walk(node: unknown, ctes: ReadonlySet<string>, names: Map<string, CatalogEntry[]>): void {
  if (Array.isArray(node)) {
    for (const n of node) walk(n, ctes, names);
    return;
  }
  if (typeof node !== 'object' || node === null) return;
  const o = node as Record<string, unknown>;
  let scope = ctes;
  const cteMap = (o.cte_map as { map?: { key: string; value: unknown }[] } | undefined)?.map;
  if (Array.isArray(cteMap) && cteMap.length > 0) {
    // A CTE sees the outer ones, those before it and itself (WITH RECURSIVE); the body sees all.
    const inner = new Set(ctes);
    for (const { key, value } of cteMap) {
      inner.add(String(key).toLowerCase());
      walk(value, new Set(inner), names);
    }
    scope = inner;
  }
  // Expressions carry a `class`; FROM items do not, and name their kind in `type`.
  if (!('class' in o) && typeof o.type === 'string' && 'sample' in o && 'alias' in o) {
    if (!TABLE_REFS.has(o.type)) {
      const what = o.type === 'SHOW_REF' ? 'DESCRIBE, SHOW and SUMMARIZE are' : `${o.type} is`;
      throw new Refused(`${what} not allowed (information_schema.tables and .columns describe the tables)`);
    }
    if (o.type === 'BASE_TABLE') checkTable(o, scope, names);
    if (o.type === 'TABLE_FUNCTION') checkFunction(o);
  }
  for (const [k, v] of Object.entries(o)) if (k !== 'cte_map') walk(v, scope, names);
}

function checkTable(
  ref: Record<string, unknown>,
  ctes: ReadonlySet<string>,
  names: Map<string, CatalogEntry[]>,
) {
  const table = String(ref.table_name ?? '').toLowerCase();
  const schema = String(ref.schema_name ?? '').toLowerCase();
  const database = String(ref.catalog_name ?? '').toLowerCase();
  if (schema === '' && database === '' && ctes.has(table)) return;
  const found = (names.get(table) ?? []).some((e) => {
    if (database !== '') return e.database === database && e.schema === (schema || 'main');
    // `a.t` is schema a of any catalog, or catalog a's main schema, as DuckDB's binder reads it.
    if (schema !== '') return e.schema === schema || (e.database === schema && e.schema === 'main');
    return true;
  });
  if (!found) {
    const name = [database, schema, table].filter((p) => p !== '').join('.');
    throw new Refused(`"${name}" is not a table or view of the warehouse (files and URLs cannot be read)`);
  }
}

function checkFunction(ref: Record<string, unknown>) {
  const fn = ref.function as { function_name?: unknown } | undefined;
  const name = String(fn?.function_name ?? '').toLowerCase();
  if (!ALLOWED_TABLE_FUNCTIONS.has(name))
    throw new Refused(
      `table function ${name}() is not allowed (allowed: ${[...ALLOWED_TABLE_FUNCTIONS].join(', ')})`,
    );
}

/**
 * The column the wrapper adds first: each row's size as DuckDB renders it as text, about its
 * size as JSON (the exact size is counted once the row is converted).
 */
const ROW_BYTES = '__tributary_row_bytes';

/**
 * The vetted SELECT as a subquery, with each row's size in front: rows are checked against
 * the size limit before they are converted, so one huge value (`repeat('x', 4e8)`) stays in
 * DuckDB, bounded by its memory limit, and never reaches the event loop's heap. (The size is
 * the row cast to text: `to_json` reserves room for escaping every character, and ran out of
 * memory on that value.)
 */
function withRowBytes(select: string): string {
  return `SELECT strlen(CAST(q AS VARCHAR)) AS ${ROW_BYTES}, q.* FROM (\n${select}\n) AS q`;
}

/**
 * Runs untrusted SQL on `conn`, a connection of its own that the caller closes afterwards:
 * parsed first (nothing is bound or read before the tree is vetted), then run wrapped
 * (`withRowBytes`; the wrapped text is vetted again), prepared (its type must be SELECT), and
 * streamed row by row within the limits, so a huge result is never built. `conn.interrupt()`
 * stops it at `limits.timeoutMs`.
 */
export async function runUserQuery(
  conn: DuckDBConnection,
  sql: string,
  limits: UserQueryLimits,
  options: { onlyCatalog?: string } = {},
): Promise<UserQueryResult> {
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    conn.interrupt();
  }, limits.timeoutMs);
  try {
    const text = await vetWrapped(conn, sql, withRowBytes, options.onlyCatalog);
    const prepared = await conn.prepare(text);
    try {
      if (prepared.statementType !== StatementType.SELECT)
        throw new TributaryError('TRIB_ERR_QUERY_NOT_ALLOWED', ['only a single SELECT statement is allowed']);
      const result = await prepared.stream();
      const columns = result.columnNames().slice(1);
      const integer = result
        .columnTypes()
        .slice(1)
        .map((t) => INTEGER_TYPES.has(t.typeId));
      const budget = new RowBudget(limits);
      read: for (;;) {
        const chunk = await result.fetchChunk();
        if (!chunk || chunk.rowCount === 0) break;
        const bytes = chunk.getColumnVector(0);
        for (let i = 0; i < chunk.rowCount; i++) {
          const size = Number(bytes.getItem(i) ?? 0);
          if (!budget.fits(size + 1)) break read;
          const values = chunk.convertRowValues(i, JsonDuckDBValueConverter);
          const row: Record<string, unknown> = {};
          for (let c = 0; c < columns.length; c++) {
            const v = values[c + 1];
            // JSON conversion renders 64-bit integers as strings; give back numbers where exact.
            row[columns[c]!] =
              integer[c] && typeof v === 'string' && Number.isSafeInteger(Number(v)) ? Number(v) : v;
          }
          if (!budget.add(row)) break read;
        }
      }
      return { columns, rows: budget.rows, truncated: budget.truncated };
    } finally {
      prepared.destroySync();
    }
  } catch (err) {
    if (err instanceof TributaryError) throw err;
    if (timedOut) throw new TributaryError('TRIB_ERR_QUERY_TIMEOUT', [limits.timeoutMs], { cause: err });
    throw new TributaryError('TRIB_ERR_QUERY_FAILED', [(err as Error).message], { cause: err });
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Vets untrusted SQL on `conn` and answers it wrapped by `wrap` (which must keep it a single
 * SELECT, the query as a subquery): the tree is vetted before anything is bound, then the
 * wrapped text again. Throws `TRIB_ERR_QUERY_FAILED` (not SQL) or `TRIB_ERR_QUERY_NOT_ALLOWED`.
 * Reverse-ETL models use it too (`./duckdb-model-store.ts`).
 */
export async function vetWrapped(
  conn: DuckDBConnection,
  sql: string,
  wrap: (select: string) => string,
  /** When given, the query may name only this catalog's tables and views (the masked views). */
  onlyCatalog?: string,
): Promise<string> {
  const catalog = (
    await conn.runAndReadAll(
      `SELECT lower(database_name), lower(schema_name), lower(table_name) FROM duckdb_tables()
       WHERE schema_name <> '${GOVERNANCE_SCHEMA}'
       UNION ALL SELECT lower(database_name), lower(schema_name), lower(view_name) FROM duckdb_views()
       WHERE schema_name <> '${GOVERNANCE_SCHEMA}'`,
    )
  )
    .getRows()
    .map(([database, schema, name]) => ({
      database: String(database),
      schema: String(schema),
      name: String(name),
    }))
    .filter((e) => onlyCatalog === undefined || e.database === onlyCatalog);
  const { tree, json } = await parse(conn, sql);
  // Not SQL at all: DuckDB's own message says where.
  if (tree.error_type === 'parser')
    throw new TributaryError('TRIB_ERR_QUERY_FAILED', [`Parser Error: ${tree.error_message ?? ''}`]);
  const why = refusal(tree, catalog);
  if (why !== undefined) throw new TributaryError('TRIB_ERR_QUERY_NOT_ALLOWED', [why]);
  let text = wrap(sql.replace(/[\s;]+$/, ''));
  if ((await parse(conn, text)).tree.error) {
    // A comment after a final semicolon: DuckDB's own rendering of the vetted tree instead.
    const r = await conn.runAndReadAll('SELECT json_deserialize_sql(CAST($1 AS JSON))', [json]);
    text = wrap(String(r.getRows()[0]![0]));
  }
  const again = refusal((await parse(conn, text)).tree, catalog);
  if (again !== undefined) throw new TributaryError('TRIB_ERR_QUERY_NOT_ALLOWED', [again]);
  return text;
}

/** DuckDB's parse tree of `sql` (`json_serialize_sql`), which parses and binds nothing. */
async function parse(
  conn: DuckDBConnection,
  sql: string,
): Promise<{ tree: { error?: boolean; error_type?: string; error_message?: string }; json: string }> {
  const r = await conn.runAndReadAll('SELECT json_serialize_sql(CAST($1 AS VARCHAR))', [sql]);
  const json = String(r.getRows()[0]?.[0] ?? '{"error":true}');
  return { tree: JSON.parse(json) as { error?: boolean; error_type?: string; error_message?: string }, json };
}
