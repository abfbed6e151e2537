import { quoteIdent } from '../../platform/duckdb/duckdb-sql.js';
import type { BlockingKey, MatchComparisonKind, MatchField } from './matching-schema.js';

/**
 * The SQL of the matcher's comparisons. A record's raw value is normalised once into its
 * column (`normalizeSql`), and a pair's comparison level is a CASE over the two columns
 * (`levelSql`): level 0 is "missing on either side" (no weight), 1 the best (exact), the last
 * "none of the above". Everything runs inside DuckDB.
 */

/** Longest value compared, in characters: a hostile megabyte name would make every Jaro–Winkler call slow. */
export const MAX_VALUE_LENGTH = 200;

/** Suffix of a date field's second column: its day number (for "within N days"), null when not a date. */
export const DAYS = '__d';

/** Extra columns of a record for a field, from its normalised column `v`. */
export function auxiliarySql(f: MatchField, v: string): string[] {
  if (f.comparison !== 'date') return [];
  return [
    `date_diff('day', DATE '1970-01-01', try_strptime(${v}, '%Y%m%d')::DATE) AS ${quoteIdent(`${f.name}${DAYS}`)}`,
  ];
}

/** Values that mean "unknown", never evidence. */
const PLACEHOLDERS = "('null', 'none', 'nil', 'unknown', 'n/a', 'na', '-', '?', 'undefined', 'test')";

const col = (alias: string, name: string, suffix = '') => `${alias}.${quoteIdent(`${name}${suffix}`)}`;

function cleaned(raw: string): string {
  const base = `trim(regexp_replace(lower(strip_accents(left(CAST(${raw} AS VARCHAR), ${MAX_VALUE_LENGTH}))), '\\s+', ' ', 'g'))`;
  return `(CASE WHEN ${base} IN ${PLACEHOLDERS} THEN NULL ELSE nullif(${base}, '') END)`;
}

/** The normalised value of a field from a raw VARCHAR expression. */
export function normalizeSql(kind: MatchComparisonKind, raw: string): string {
  const v = cleaned(raw);
  switch (kind) {
    case 'name':
      // Letters, spaces, hyphens and apostrophes: "O'Brien", "Smith-Jones", "José" → "jose".
      return `nullif(trim(regexp_replace(${v}, '[^\\p{L} ''-]', '', 'g')), '')`;
    case 'email':
      return `nullif(regexp_replace(${v}, '\\s', '', 'g'), '')`;
    case 'phone':
      // Digits only; the international 00 prefix as "+" (0044 20… and +44 20… agree).
      return `nullif(regexp_replace(regexp_replace(${v}, '[^0-9]', '', 'g'), '^00', ''), '')`;
    case 'code':
      return `nullif(regexp_replace(${v}, '\\s', '', 'g'), '')`;
    case 'date': {
      // YYYYMMDD when it parses as a date in a common layout, else its digits (a typo'd date
      // such as 19560931 still compares by edits).
      const d = `coalesce(try_strptime(${v}, '%Y-%m-%d'), try_strptime(${v}, '%Y%m%d'), try_strptime(${v}, '%d/%m/%Y'), try_strptime(${v}, '%Y/%m/%d'), try_strptime(left(${v}, 10), '%Y-%m-%d'))`;
      return `coalesce(strftime(${d}, '%Y%m%d'), nullif(regexp_replace(${v}, '[^0-9]', '', 'g'), ''))`;
    }
    case 'number':
      return `CAST(try_cast(regexp_replace(${v}, '[^0-9.eE+-]', '', 'g') AS DOUBLE) AS VARCHAR)`;
    default:
      return v;
  }
}

export interface Level {
  label: string;
  /** True when the level is an exact match (term-frequency adjustment applies). */
  exact: boolean;
}

/**
 * At most one edit (insertion, deletion, substitution or adjacent transposition), as
 * `damerau_levenshtein(L, R) <= 1`, but through `levenshtein` first: it is several times
 * faster, and a transposition (Levenshtein 2, same length) is the only case left to check.
 */
const ONE_EDIT =
  '(levenshtein({L}, {R}) <= 1 OR (length({L}) = length({R}) AND levenshtein({L}, {R}) = 2 AND damerau_levenshtein({L}, {R}) <= 1))';
/** At most two edits (Damerau), through `levenshtein` first likewise. */
const TWO_EDITS =
  '(levenshtein({L}, {R}) <= 2 OR (levenshtein({L}, {R}) <= 4 AND damerau_levenshtein({L}, {R}) <= 2))';

const LEVELS: Record<
  MatchComparisonKind,
  (f: MatchField) => { label: string; sql: string; exact?: boolean }[]
> = {
  name: (f) => [
    { label: 'exact', sql: '{L} = {R}', exact: true },
    ...(f.swapWith === undefined
      ? []
      : [{ label: `swapped with ${f.swapWith}`, sql: '({L} = {Rs} OR {R} = {Ls})' }]),
    { label: 'one edit', sql: ONE_EDIT },
    { label: 'jaro-winkler >= 0.92', sql: 'jaro_winkler_similarity({L}, {R}) >= 0.92' },
    { label: 'jaro-winkler >= 0.80', sql: 'jaro_winkler_similarity({L}, {R}) >= 0.80' },
  ],
  text: () => [
    { label: 'exact', sql: '{L} = {R}', exact: true },
    { label: 'jaro-winkler >= 0.92', sql: 'jaro_winkler_similarity({L}, {R}) >= 0.92' },
    { label: 'jaro-winkler >= 0.80', sql: 'jaro_winkler_similarity({L}, {R}) >= 0.80' },
  ],
  email: () => [
    { label: 'exact', sql: '{L} = {R}', exact: true },
    { label: 'same local part', sql: "split_part({L}, '@', 1) = split_part({R}, '@', 1)" },
    { label: 'jaro-winkler >= 0.88', sql: 'jaro_winkler_similarity({L}, {R}) >= 0.88' },
  ],
  date: (f) => [
    { label: 'exact', sql: '{L} = {R}', exact: true },
    {
      label: 'day and month transposed, or one typo',
      sql: `(length({L}) = 8 AND length({R}) = 8 AND left({L}, 4) = left({R}, 4) AND substr({L}, 5, 2) = substr({R}, 7, 2) AND substr({L}, 7, 2) = substr({R}, 5, 2)) OR ${ONE_EDIT}`,
    },
    {
      label: `within ${f.tolerance ?? 365} days`,
      sql: `abs({Ld} - {Rd}) <= ${Math.trunc(f.tolerance ?? 365)}`,
    },
  ],
  code: () => [
    { label: 'exact', sql: '{L} = {R}', exact: true },
    { label: 'one edit', sql: ONE_EDIT },
    { label: 'two edits', sql: TWO_EDITS },
  ],
  phone: () => [
    { label: 'exact', sql: '{L} = {R}', exact: true },
    { label: 'same last 8 digits', sql: 'length({L}) >= 8 AND right({L}, 8) = right({R}, 8)' },
    { label: 'one edit', sql: ONE_EDIT },
  ],
  number: (f) => [
    { label: 'exact', sql: 'CAST({L} AS DOUBLE) = CAST({R} AS DOUBLE)', exact: true },
    {
      label: `within ${(f.tolerance ?? 0.1) * 100}%`,
      sql: `abs(CAST({L} AS DOUBLE) - CAST({R} AS DOUBLE)) <= ${f.tolerance ?? 0.1} * greatest(abs(CAST({L} AS DOUBLE)), abs(CAST({R} AS DOUBLE)))`,
    },
  ],
  exact: () => [{ label: 'exact', sql: '{L} = {R}', exact: true }],
};

/** The levels of a field, index = level: 0 missing, 1 the best, the last "else". */
export function levelsOf(f: MatchField): Level[] {
  return [
    { label: 'missing', exact: false },
    ...LEVELS[f.comparison](f).map((l) => ({ label: l.label, exact: l.exact === true })),
    { label: 'different', exact: false },
  ];
}

/**
 * Term frequencies adjust an exact match of this field: by default names, texts, codes and
 * exact fields, whose values many people share ("Smith", "London"). Not emails or phones: a
 * repeated one is mostly one person's records, which would make it look common.
 */
export function usesTermFrequency(f: MatchField): boolean {
  return (
    f.termFrequency ??
    (f.comparison === 'name' ||
      f.comparison === 'text' ||
      f.comparison === 'code' ||
      f.comparison === 'exact')
  );
}

/** The level of a pair as a SQL expression over record aliases `l` and `r`. */
export function levelSql(f: MatchField, l = 'l', r = 'r'): string {
  const L = col(l, f.name);
  const R = col(r, f.name);
  const levels = LEVELS[f.comparison](f);
  const whens = levels
    .map(
      (lv, i) =>
        `WHEN ${lv.sql
          .replaceAll('{Ls}', col(l, f.swapWith ?? f.name))
          .replaceAll('{Rs}', col(r, f.swapWith ?? f.name))
          .replaceAll('{Ld}', col(l, f.name, DAYS))
          .replaceAll('{Rd}', col(r, f.name, DAYS))
          .replaceAll('{L}', L)
          .replaceAll('{R}', R)} THEN ${i + 1}`,
    )
    .join(' ');
  return `(CASE WHEN ${L} IS NULL OR ${R} IS NULL THEN 0 ${whens} ELSE ${levels.length + 1} END)::UTINYINT`;
}

/** A blocking key's expression over record alias `t`. */
export function blockingKeySql(key: BlockingKey, t = 't'): { field: string; sql: string } {
  if (typeof key === 'string') return { field: key, sql: col(t, key) };
  const v = col(t, key.field);
  const n = key.length ?? 3;
  switch (key.transform) {
    case 'prefix':
      return { field: key.field, sql: `nullif(left(${v}, ${n}), '')` };
    case 'suffix':
      return { field: key.field, sql: `nullif(right(${v}, ${n}), '')` };
    case 'year':
      return { field: key.field, sql: `CASE WHEN length(${v}) = 8 THEN left(${v}, 4) END` };
    case 'local':
      return { field: key.field, sql: `nullif(split_part(${v}, '@', 1), '')` };
    case 'domain':
      return { field: key.field, sql: `nullif(split_part(${v}, '@', 2), '')` };
    default:
      return { field: key.field, sql: v };
  }
}
