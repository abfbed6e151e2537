import { wellFormedJson } from '../../../spec/well-formed.js';
/**
 * Column types of the Segment tables, the same five scalar types and JSON in every engine.
 * A column's type comes from the first non-null value it receives; later values are cast
 * to it, and a value that cannot be cast is discarded (kept in `discards`), never the row.
 */
export type ColumnType = 'bigint' | 'double' | 'boolean' | 'timestamp' | 'varchar' | 'json';

/** Values as the engines receive them: text in a canonical form each engine parses, or null. */
export type CellValue = string | null;

/** ISO-8601 date-time, as clients send it (a date alone is not a timestamp: it stays text). */
const ISO_TIMESTAMP =
  /^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|[+-]\d{2}(?::?\d{2})?)?$/i;

const CANONICAL = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

/**
 * The instant an ISO-8601 string names, as `YYYY-MM-DDTHH:MM:SS.sssZ`, or undefined when it
 * is not one (or names a day that does not exist). A time without offset is taken as UTC.
 * The canonical form is what both engines parse the same way.
 */
export function canonicalTimestamp(text: string): string | undefined {
  // Fast path: already canonical (what collection writes for every server-side time).
  if (text.length === 24 && CANONICAL.test(text)) {
    const ms = Date.parse(text);
    if (!Number.isNaN(ms) && new Date(ms).toISOString() === text) return text;
  }
  const m = ISO_TIMESTAMP.exec(text);
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s] = m;
  const year = Number(y);
  const month = Number(mo);
  const day = Number(d);
  if (year < 1 || month < 1 || month > 12 || day < 1 || Number(h) > 23 || Number(mi) > 59) return undefined;
  if (s !== undefined && Number(s) > 59) return undefined;
  if (day > new Date(Date.UTC(year, month, 0)).getUTCDate()) return undefined;
  const zone = m[8] ?? 'Z';
  const ms = Date.parse(`${text.slice(0, text.length - (m[8]?.length ?? 0)).replace(' ', 'T')}${zone}`);
  if (Number.isNaN(ms)) return undefined;
  const iso = new Date(ms).toISOString();
  return /^\d{4}-/.test(iso) ? iso : undefined;
}

/** The type a first value gives its column; undefined for null (no column until a value). */
export function inferType(value: unknown): ColumnType | undefined {
  if (value === null || value === undefined) return undefined;
  switch (typeof value) {
    case 'boolean':
      return 'boolean';
    case 'number':
      return Number.isSafeInteger(value) ? 'bigint' : 'double';
    case 'string':
      return canonicalTimestamp(value) !== undefined ? 'timestamp' : 'varchar';
    default:
      return 'json';
  }
}

/**
 * The type a column takes when `incoming` arrives in a column of type `current`: bigint
 * widens to double; every other pair keeps the column's type (the value is cast or discarded).
 */
export function widen(current: ColumnType, incoming: ColumnType): ColumnType {
  return current === 'bigint' && incoming === 'double' ? 'double' : current;
}

export type Cast = { ok: true; value: CellValue } | { ok: false; reason: string };

const INTEGER_TEXT = /^-?\d{1,18}$/;
const NUMBER_TEXT = /^-?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;

/**
 * A JSON value as the text a column of `type` loads, or undefined when it cannot be cast
 * (no allocation beyond the text: this runs for every cell).
 */
export function castCell(type: ColumnType, value: unknown): CellValue | undefined {
  if (value === null || value === undefined) return null;
  switch (type) {
    case 'varchar': {
      const text = typeof value === 'string' ? value : JSON.stringify(value);
      return text.includes('\u0000') ? undefined : text;
    }
    case 'json': {
      const text = JSON.stringify(value);
      if (text.includes('\\u0000')) return undefined;
      return wellFormedJson(text);
    }
    case 'bigint':
      if (typeof value === 'number' && Number.isSafeInteger(value)) return String(value);
      if (typeof value === 'string' && INTEGER_TEXT.test(value.trim())) return String(BigInt(value.trim()));
      return undefined;
    case 'double':
      if (typeof value === 'number') return String(value);
      if (typeof value === 'string' && NUMBER_TEXT.test(value.trim()) && Number.isFinite(Number(value)))
        return String(Number(value));
      return undefined;
    case 'boolean':
      if (typeof value === 'boolean') return value ? 'true' : 'false';
      return value === 'true' || value === 'false' ? value : undefined;
    case 'timestamp':
      return typeof value === 'string' ? cachedTimestamp(value) : undefined;
  }
}

/** Casts a JSON value to a column type, as the text the engines load, or says why it cannot. */
export function castValue(type: ColumnType, value: unknown): Cast {
  const cell = castCell(type, value);
  return cell === undefined ? { ok: false, reason: castFailure(type, value) } : { ok: true, value: cell };
}

/** Why `value` cannot go into a column of `type`. */
export function castFailure(type: ColumnType, value: unknown): string {
  if ((type === 'varchar' || type === 'json') && JSON.stringify(value).includes('\\u0000')) {
    // PostgreSQL's text and jsonb cannot hold U+0000; both engines refuse it alike.
    return 'text with a NUL character (U+0000) cannot be stored';
  }
  return `${describe(value)} cannot be cast to ${type}`;
}

/** An event's times are cast once per table it goes to: keep the recent ones. */
const recentTimestamps = new Map<string, string | undefined>();

function cachedTimestamp(text: string): string | undefined {
  if (recentTimestamps.has(text)) return recentTimestamps.get(text);
  const iso = canonicalTimestamp(text);
  if (recentTimestamps.size >= 4096) recentTimestamps.clear();
  recentTimestamps.set(text, iso);
  return iso;
}

function describe(value: unknown): string {
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') return 'an object';
  if (typeof value === 'string')
    return `the string "${value.length > 40 ? `${value.slice(0, 40)}…` : value}"`;
  return `the ${typeof value} ${String(value)}`;
}
