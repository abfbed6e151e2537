import type { DuckDBConnection } from '@duckdb/node-api';
import { isPersonalColumnName } from '../../pipeline/privacy/pii-classifier.js';
import { quoteIdent, sqlString } from '../../platform/duckdb/duckdb-sql.js';

/** The in-memory catalog of masked views analysts' queries run against. */
export const MASKED_CATALOG = '_masked';

export interface MaskingOptions {
  /** Secret mixed into every masked value, so a guessed value cannot be hashed to match. */
  salt: string;
  /**
   * Columns named by the configuration as personal (`privacy.personalColumns`): `column`,
   * `table.column` or `schema.table.column`, case-insensitive.
   */
  personalColumns?: readonly string[];
}

/**
 * The SQL of a masked value: a keyed digest (`sha256(salt || value)`, 24 hex characters with
 * a `masked:` prefix), so equal values stay equal (joins and counts of distinct people work)
 * while the value cannot be read back, nor found by hashing a guess without the salt.
 */
function maskExpr(column: string, salt: string): string {
  const c = quoteIdent(column);
  return `CASE WHEN ${c} IS NULL THEN NULL ELSE 'masked:' || left(sha256(${sqlString(salt)} || CAST(${c} AS VARCHAR)), 24) END AS ${c}`;
}

/**
 * Builds (again) the masked catalog: one view per table or view a query may read (the
 * warehouse's schemas but `_tributary`; the log's `raw_events` as `raw_log.raw_events`),
 * where personal columns (by name, see `isPersonalColumnName`, or configured) are masked and
 * JSON columns (payloads, properties, traits, context: they hold personal values under any
 * key) are NULL. A query for an analyst runs with this catalog as its only one: it never
 * names a raw table, so no function, join or subquery reaches a raw value.
 */
export async function refreshMaskedViews(
  conn: DuckDBConnection,
  warehouseCatalog: string,
  options: MaskingOptions,
): Promise<void> {
  await conn.run(`ATTACH IF NOT EXISTS ':memory:' AS ${quoteIdent(MASKED_CATALOG)}`);
  const configured = new Set((options.personalColumns ?? []).map((c) => c.toLowerCase()));
  const attached = new Set(
    (await conn.runAndReadAll('SELECT lower(database_name) FROM duckdb_databases()'))
      .getRows()
      .map((r) => String(r[0])),
  );
  const cols = await conn.runAndReadAll(
    `SELECT database_name, schema_name, table_name, list(column_name ORDER BY column_index), list(data_type ORDER BY column_index)
     FROM duckdb_columns()
     WHERE ((database_name = $1 AND schema_name NOT IN ('_tributary', 'information_schema', 'pg_catalog'))
        OR (database_name = 'log' AND table_name = 'raw_events'))
       AND NOT internal
     GROUP BY ALL`,
    [warehouseCatalog],
  );
  const m = quoteIdent(MASKED_CATALOG);
  const wanted = new Set<string>();
  for (const [db, schema, table, names, types] of cols.getRows()) {
    const target = db === 'log' ? 'raw_log' : String(schema);
    // A schema named like an attached database would be read as that database by the binder.
    if (attached.has(target.toLowerCase()) && target !== 'main') continue;
    const tbl = String(table);
    const exprs = (names as { items: unknown[] }).items.map((n, i) => {
      const name = String(n);
      const type = String((types as { items: unknown[] }).items[i]);
      const lower = name.toLowerCase();
      if (type === 'JSON' || type.startsWith('STRUCT') || type.startsWith('MAP') || type.endsWith('[]'))
        return `CAST(NULL AS ${type}) AS ${quoteIdent(name)}`;
      const personal =
        isPersonalColumnName(name) ||
        configured.has(lower) ||
        configured.has(`${tbl.toLowerCase()}.${lower}`) ||
        configured.has(`${target.toLowerCase()}.${tbl.toLowerCase()}.${lower}`) ||
        (tbl === 'users' && lower === 'id') ||
        (tbl === 'profile_identifiers' && lower === 'value');
      return personal ? maskExpr(name, options.salt) : quoteIdent(name);
    });
    await conn.run(`CREATE SCHEMA IF NOT EXISTS ${m}.${quoteIdent(target)}`);
    await conn.run(
      `CREATE OR REPLACE VIEW ${m}.${quoteIdent(target)}.${quoteIdent(tbl)} AS SELECT ${exprs.join(', ')}
       FROM ${quoteIdent(String(db))}.${quoteIdent(String(schema))}.${quoteIdent(tbl)}`,
    );
    wanted.add(`${target}\u0000${tbl}`);
  }
  // Views of tables gone since the last build.
  const have = await conn.runAndReadAll(
    'SELECT schema_name, view_name FROM duckdb_views() WHERE database_name = $1',
    [MASKED_CATALOG],
  );
  for (const [schema, view] of have.getRows()) {
    if (!wanted.has(`${schema}\u0000${view}`))
      await conn.run(`DROP VIEW IF EXISTS ${m}.${quoteIdent(String(schema))}.${quoteIdent(String(view))}`);
  }
}
