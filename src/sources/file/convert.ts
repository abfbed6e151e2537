/**
 * Text from a file, converted to its column's declared type. No I/O.
 */
import { parseTimestamp } from '../../spec/timestamp.js';
import type { ColumnType } from '../streams-schema.js';

export type Converted = { ok: true; value: unknown } | { ok: false; reason: string };

const INTEGER = /^[+-]?\d+$/;
const DATE = /^\d{4}-\d{2}-\d{2}$/;
const TRUE = new Set(['true', 't', 'yes', 'y', '1']);
const FALSE = new Set(['false', 'f', 'no', 'n', '0']);

/**
 * A value of a declared column: empty text is null; text that is not the type is a failure
 * naming the column and value. Values that are typed already (JSONL numbers) are checked.
 */
export function convertValue(column: string, type: ColumnType, value: unknown): Converted {
  if (value === undefined || value === null || value === '') return { ok: true, value: null };
  const bad = () => ({
    ok: false as const,
    reason: `column ${column}: ${JSON.stringify(String(value).slice(0, 80))} is not ${article(type)}`,
  });
  switch (type) {
    case 'string':
      return {
        ok: true,
        value:
          typeof value === 'string'
            ? value
            : typeof value === 'object'
              ? JSON.stringify(value)
              : String(value),
      };
    case 'integer': {
      if (typeof value === 'number') return Number.isSafeInteger(value) ? { ok: true, value } : bad();
      const t = String(value).trim();
      if (!INTEGER.test(t)) return bad();
      const n = Number(t);
      // Beyond 2^53 the digits are kept as text; the store's BIGINT takes them exactly.
      return Number.isSafeInteger(n)
        ? { ok: true, value: n }
        : BigInt(t) <= 9223372036854775807n && BigInt(t) >= -9223372036854775808n
          ? { ok: true, value: t }
          : bad();
    }
    case 'number': {
      if (typeof value === 'number') return Number.isFinite(value) ? { ok: true, value } : bad();
      const t = String(value).trim();
      const n = Number(t);
      return t !== '' && Number.isFinite(n) ? { ok: true, value: n } : bad();
    }
    case 'boolean': {
      if (typeof value === 'boolean') return { ok: true, value };
      const t = String(value).trim().toLowerCase();
      return TRUE.has(t) ? { ok: true, value: true } : FALSE.has(t) ? { ok: true, value: false } : bad();
    }
    case 'timestamp': {
      if (typeof value !== 'string') return bad();
      const t = value.trim();
      const ms = parseTimestamp(t);
      if (ms === undefined) return bad();
      // UTC text the store reads as it is is kept; other forms are given as UTC.
      return {
        ok: true,
        value: t.length >= 20 && t.length <= 24 && t.endsWith('Z') ? t : new Date(ms).toISOString(),
      };
    }
    case 'date': {
      if (typeof value !== 'string') return bad();
      const t = value.trim();
      if (!DATE.test(t)) return bad();
      const d = new Date(`${t}T00:00:00Z`);
      return Number.isNaN(d.getTime()) || d.toISOString().slice(0, 10) !== t ? bad() : { ok: true, value: t };
    }
    case 'json': {
      if (typeof value !== 'string') return { ok: true, value };
      try {
        return { ok: true, value: JSON.parse(value) as unknown };
      } catch {
        return bad();
      }
    }
  }
}

function article(type: ColumnType): string {
  return type === 'integer' ? 'an integer' : type === 'json' ? 'JSON' : `a ${type}`;
}
