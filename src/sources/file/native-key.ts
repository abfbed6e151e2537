/**
 * The objects key (`_tributary_key`) as a DuckDB SQL expression, for loading a CSV by DuckDB's
 * `read_csv` without JavaScript touching each row (issue 17's native path; not wired into the
 * runner yet). It must give the very text `recordKey` (records.ts) gives for the same row, or
 * the two paths would upsert different rows for one file.
 */
import { quoteIdent } from '../../platform/duckdb/duckdb-sql.js';
import type { ColumnType } from '../streams-schema.js';

/** 2^53 - 1: past it `recordKey` keeps an integer as its digits in a JSON string. */
const SAFE = '9007199254740991';

/**
 * One key column's JSON text, over the column already cast to its SQL type.
 * `undefined` for the types whose JSON text DuckDB writes otherwise than JavaScript
 * (a DOUBLE `100.0` against JSON's `100`, `1e21` against `1e+21`; timestamps against
 * `toISOString`; dates; JSON values): a stream keyed by one keeps the JavaScript path.
 */
function keyPart(column: string, type: ColumnType): string | undefined {
  const c = quoteIdent(column);
  switch (type) {
    case 'string':
      // to_json escapes as JSON.stringify does (quotes, backslashes, control characters).
      return `CAST(to_json(${c}) AS VARCHAR)`;
    case 'integer':
      return `CASE WHEN abs(${c}) <= ${SAFE} THEN CAST(${c} AS VARCHAR) ELSE CAST(to_json(CAST(${c} AS VARCHAR)) AS VARCHAR) END`;
    case 'boolean':
      return `CAST(${c} AS VARCHAR)`;
    default:
      return undefined;
  }
}

/**
 * The key expression over typed columns, or `undefined` when SQL cannot give `recordKey`'s
 * text: no primary key (the key is a sha256 of the row's JSON text, with JavaScript's number
 * formatting and key order) or a key column of a type `keyPart` leaves out.
 * A NULL result (a key column NULL, or an empty string) is a row without its key.
 */
export function nativeKeySql(
  primaryKey: readonly string[],
  types: Readonly<Record<string, ColumnType>>,
): string | undefined {
  if (primaryKey.length === 0) return undefined;
  const parts: string[] = [];
  const present: string[] = [];
  for (const column of primaryKey) {
    const part = keyPart(column, types[column] ?? 'string');
    if (part === undefined) return undefined;
    parts.push(part);
    const c = quoteIdent(column);
    present.push(
      (types[column] ?? 'string') === 'string' ? `${c} IS NOT NULL AND ${c} <> ''` : `${c} IS NOT NULL`,
    );
  }
  return `CASE WHEN ${present.join(' AND ')} THEN '[' || ${parts.join(` || ',' || `)} || ']' END`;
}
