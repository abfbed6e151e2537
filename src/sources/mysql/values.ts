/**
 * MySQL / MariaDB values, as mysql2 reads them with dates, BIGINT, DECIMAL and JSON left as
 * the server's text (numbers for the small integer and float types, Buffers for binary and
 * BIT), then turned into JSON by the column's metadata: the table in docs/sources-databases.md.
 */
import type { ColumnKind } from '../sql/driver.js';
import { float, integer, isoDate, isoTimestamp, json } from '../sql/values.js';

/** Column type codes of the protocol (`mysql2/lib/constants/types`). */
const T = {
  DECIMAL: 0,
  TINY: 1,
  SHORT: 2,
  LONG: 3,
  FLOAT: 4,
  DOUBLE: 5,
  TIMESTAMP: 7,
  LONGLONG: 8,
  INT24: 9,
  DATE: 10,
  TIME: 11,
  DATETIME: 12,
  YEAR: 13,
  NEWDATE: 14,
  VARCHAR: 15,
  BIT: 16,
  JSON: 245,
  NEWDECIMAL: 246,
  ENUM: 247,
  SET: 248,
  TINY_BLOB: 249,
  MEDIUM_BLOB: 250,
  LONG_BLOB: 251,
  BLOB: 252,
  VAR_STRING: 253,
  STRING: 254,
  GEOMETRY: 255,
} as const;

const UNSIGNED = 32;
const BINARY_CHARSET = 63;

/** What the protocol says of a result column (a subset of mysql2's `FieldPacket`). */
export interface MysqlColumn {
  name: string;
  columnType: number;
  flags: number;
  characterSet: number;
  columnLength: number;
  decimals: number;
  extendedFormat?: string | undefined;
}

/** How a column's values are read: its kind, its type name, and its BIT width. */
export interface MysqlType {
  kind: ColumnKind;
  name: string;
  unsigned: boolean;
  /** `BIT(n)` columns: the value is n bits, big-endian, not text. */
  bits: boolean;
  decimals: number;
}

export function mysqlType(c: MysqlColumn): MysqlType {
  const unsigned = (c.flags & UNSIGNED) !== 0;
  const u = unsigned ? ' unsigned' : '';
  const base = { unsigned, bits: false, decimals: c.decimals };
  switch (c.columnType) {
    case T.TINY:
      return c.columnLength === 1
        ? { ...base, kind: 'boolean', name: 'tinyint(1)' }
        : { ...base, kind: 'integer', name: `tinyint${u}` };
    case T.SHORT:
      return { ...base, kind: 'integer', name: `smallint${u}` };
    case T.INT24:
      return { ...base, kind: 'integer', name: `mediumint${u}` };
    case T.LONG:
      return { ...base, kind: 'integer', name: `int${u}` };
    case T.LONGLONG:
      return { ...base, kind: 'integer', name: `bigint${u}` };
    case T.YEAR:
      return { ...base, kind: 'integer', name: 'year' };
    case T.DECIMAL:
    case T.NEWDECIMAL:
      return { ...base, kind: 'decimal', name: `decimal${u}` };
    case T.FLOAT:
      return { ...base, kind: 'float', name: 'float' };
    case T.DOUBLE:
      return { ...base, kind: 'float', name: 'double' };
    case T.TIMESTAMP:
      return { ...base, kind: 'timestamptz', name: 'timestamp' };
    case T.DATETIME:
      return { ...base, kind: 'timestamp', name: 'datetime' };
    case T.DATE:
    case T.NEWDATE:
      return { ...base, kind: 'date', name: 'date' };
    case T.TIME:
      return { ...base, kind: 'time', name: 'time' };
    case T.BIT:
      return c.columnLength === 1
        ? { ...base, kind: 'boolean', name: 'bit(1)', bits: true }
        : { ...base, kind: 'integer', name: `bit(${c.columnLength})`, bits: true };
    case T.JSON:
      return { ...base, kind: 'json', name: 'json' };
    case T.GEOMETRY:
      return { ...base, kind: 'binary', name: 'geometry' };
    case T.ENUM:
      return { ...base, kind: 'text', name: 'enum' };
    case T.SET:
      return { ...base, kind: 'text', name: 'set' };
    case T.VARCHAR:
    case T.VAR_STRING:
    case T.STRING:
    case T.TINY_BLOB:
    case T.MEDIUM_BLOB:
    case T.LONG_BLOB:
    case T.BLOB:
      if (c.extendedFormat === 'json') return { ...base, kind: 'json', name: 'json' };
      if (c.characterSet === BINARY_CHARSET)
        return {
          ...base,
          kind: 'binary',
          name: c.columnType >= T.TINY_BLOB && c.columnType <= T.BLOB ? 'blob' : 'binary',
        };
      return {
        ...base,
        kind: 'text',
        name: c.columnType >= T.TINY_BLOB && c.columnType <= T.BLOB ? 'text' : 'varchar',
      };
    default:
      return { ...base, kind: 'other', name: `type ${c.columnType}` };
  }
}

function bitsValue(raw: Buffer): bigint {
  let n = 0n;
  for (const b of raw) n = (n << 8n) | BigInt(b);
  return n;
}

/** Raw values: strings (most types), numbers (INT types, FLOAT, DOUBLE, YEAR), Buffers (binary, BIT). */
type Raw = string | number | Buffer;

const str = (raw: Raw): string => (typeof raw === 'string' ? raw : raw.toString());

/** The value as the server writes it (BIT as its number, binary as hex): what a state saves. */
export function mysqlText(t: MysqlType, raw: Raw): string {
  if (Buffer.isBuffer(raw)) {
    if (t.bits) return bitsValue(raw).toString();
    if (t.kind === 'binary') return raw.toString('hex');
    return raw.toString('utf8');
  }
  return str(raw);
}

/** The JSON value of a raw MySQL value of type `t`. */
export function mysqlValue(t: MysqlType, raw: Raw): unknown {
  if (typeof raw === 'number') {
    if (t.kind === 'boolean') return raw !== 0;
    return raw;
  }
  if (Buffer.isBuffer(raw)) {
    if (t.bits) {
      const n = bitsValue(raw);
      if (t.kind === 'boolean') return n !== 0n;
      return n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n.toString();
    }
    if (t.kind === 'binary') return raw.toString('base64');
    return mysqlValue(t, raw.toString('utf8'));
  }
  switch (t.kind) {
    case 'boolean':
      return raw !== '0';
    case 'integer':
      return integer(raw);
    case 'float':
      return float(raw);
    case 'decimal':
      return raw; // exact: a double would round DECIMAL(65,30)
    case 'json':
      return json(raw);
    case 'timestamptz':
    case 'timestamp':
      if (raw.startsWith('0000-00-00')) return null; // MySQL's "zero date": no date
      return isoTimestamp(raw);
    case 'date':
      if (raw === '0000-00-00') return null;
      return isoDate(raw);
    default:
      return raw;
  }
}
