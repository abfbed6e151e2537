/**
 * A CSV column's text converted to its declared type in DuckDB SQL, accepting what
 * `convertValue` (convert.ts) accepts and refusing what it refuses, for loading a CSV by
 * DuckDB's `read_csv` without JavaScript touching each row (issue 17's native path; not wired
 * into the runner yet).
 */
import { quoteIdent } from '../../platform/duckdb/duckdb-sql.js';
import type { ColumnType } from '../streams-schema.js';

export interface NativeCast {
  /** The typed value; NULL for empty text and for text that is not the type. */
  value: string;
  /** True when the text is not the type (empty text is a NULL, not a failure). */
  bad: string;
}

/** The text without leading and trailing ASCII whitespace (JavaScript's trim also drops Unicode spaces: see the tests). */
function trimmed(c: string): string {
  return `regexp_replace(${c}, '^\\s+|\\s+$', '', 'g')`;
}

const INTEGER = `'[+-]?[0-9]+'`;
/** Decimal numbers only: JavaScript's Number also reads `0x1F`, `0b1`, `0o7`, which this refuses. */
const NUMBER = `'[+-]?([0-9]+\\.?[0-9]*|\\.[0-9]+)([eE][+-]?[0-9]+)?'`;
const BOOL_TRUE = `['true', 't', 'yes', 'y', '1']`;
const BOOL_FALSE = `['false', 'f', 'no', 'n', '0']`;
const DATE = `'[0-9]{4}-[0-9]{2}-[0-9]{2}'`;
/** parseTimestamp's ISO form (src/spec/timestamp.ts). */
const ISO = `'[0-9]{4}-[0-9]{2}-[0-9]{2}([Tt ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\\.[0-9]{1,9})?)?([Zz]|[+-][0-9]{2}(:?[0-9]{2})?)?)?'`;
/** A zone at the end of a date-time (after the time's digits): without one, the text is UTC. */
const ZONE = `'[0-9]{2}:[0-9]{2}(:[0-9]{2}(\\.[0-9]{1,9})?)?([Zz]|[+-][0-9]{2}(:?[0-9]{2})?)$'`;

/**
 * The SQL of one column, over a VARCHAR column named `column` (as `read_csv(all_varchar)` gives).
 * `undefined` for `json`, whose parse (JSON.parse against DuckDB's JSON reader) is not known to
 * agree: a stream with a json column keeps the JavaScript path.
 */
export function nativeCast(column: string, type: ColumnType): NativeCast | undefined {
  const c = quoteIdent(column);
  const t = trimmed(c);
  const empty = `(${c} IS NULL OR ${c} = '')`;
  // \`fast\`: the common form, checked by one simple pattern and cast directly; the other forms
  // take the complete check (CASE evaluates a branch only for the rows that reach it).
  const guarded = (ok: string, value: string, fast?: { pattern: string; value: string }): NativeCast =>
    fast === undefined
      ? {
          value: `CASE WHEN NOT ${empty} AND ${ok} THEN ${value} END`,
          bad: `(NOT ${empty} AND NOT coalesce(${ok}, false))`,
        }
      : {
          value: `CASE WHEN regexp_full_match(${c}, ${fast.pattern}) THEN ${fast.value} WHEN NOT ${empty} AND ${ok} THEN ${value} END`,
          bad: `(NOT ${empty} AND CASE WHEN regexp_full_match(${c}, ${fast.pattern}) THEN ${fast.value} IS NULL ELSE NOT coalesce(${ok}, false) END)`,
        };
  switch (type) {
    case 'string':
      return { value: `NULLIF(${c}, '')`, bad: 'false' };
    case 'integer':
      return guarded(
        `(regexp_full_match(${t}, ${INTEGER}) AND TRY_CAST(${t} AS BIGINT) IS NOT NULL)`,
        `TRY_CAST(${t} AS BIGINT)`,
        { pattern: `'-?[0-9]{1,18}'`, value: `CAST(${c} AS BIGINT)` },
      );
    case 'number':
      return guarded(
        `(regexp_full_match(${t}, ${NUMBER}) AND isfinite(TRY_CAST(${t} AS DOUBLE)))`,
        `TRY_CAST(${t} AS DOUBLE)`,
        { pattern: `'-?[0-9]{1,15}(\\.[0-9]{1,15})?'`, value: `CAST(${c} AS DOUBLE)` },
      );
    case 'boolean': {
      const l = `lower(${t})`;
      return guarded(
        `list_contains(${BOOL_TRUE} || ${BOOL_FALSE}, ${l})`,
        `list_contains(${BOOL_TRUE}, ${l})`,
      );
    }
    case 'date':
      return guarded(
        `(regexp_full_match(${t}, ${DATE}) AND TRY_CAST(${t} AS DATE) IS NOT NULL)`,
        `TRY_CAST(${t} AS DATE)`,
      );
    case 'timestamp': {
      // No zone is UTC (DuckDB would take the session's); digits past milliseconds are truncated.
      // DuckDB reads neither a date alone nor a time without seconds: both are completed.
      const full = `regexp_replace(regexp_replace(upper(${t}), '^([0-9-]{10})$', '\\1T00:00:00'), '^(.{10}[T ][0-9]{2}:[0-9]{2})([^:0-9]|$)', '\\1:00\\2')`;
      const zoned = `CASE WHEN regexp_matches(${full}, ${ZONE}) THEN ${full} ELSE ${full} || 'Z' END`;
      const v = `date_trunc('millisecond', TRY_CAST(${zoned} AS TIMESTAMPTZ))`;
      return guarded(
        `(regexp_full_match(${t}, ${ISO}) AND ${v} BETWEEN TIMESTAMPTZ '0001-01-01 00:00:00Z' AND TIMESTAMPTZ '9999-12-31 23:59:59.999Z')`,
        v,
        // toISOString's form from year 1000 on: a day that does not exist (Feb 30) fails the cast.
        {
          pattern: `'[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\\.[0-9]{3}Z'`,
          value: `TRY_CAST(${c} AS TIMESTAMPTZ)`,
        },
      );
    }
    case 'json':
      return undefined;
  }
}
