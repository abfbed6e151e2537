/**
 * PostgreSQL values, read as the server's text (every type parser of `pg` is bypassed), then
 * turned into JSON by type: the table in docs/sources-databases.md.
 */
import { BadValue, type ColumnKind } from '../sql/driver.js';
import { float, integer, isoDate, isoTimestamp, json } from '../sql/values.js';

/** Built-in type OIDs (pg_type.h): kind, and the element OID of array types. */
const BUILTIN: Record<number, ColumnKind> = {
  16: 'boolean',
  17: 'binary',
  20: 'integer',
  21: 'integer',
  23: 'integer',
  26: 'integer',
  700: 'float',
  701: 'float',
  1700: 'decimal',
  114: 'json',
  3802: 'json',
  1082: 'date',
  1114: 'timestamp',
  1184: 'timestamptz',
  1083: 'time',
  1266: 'time',
};

/** What the driver knows of a type: its kind, and for an array its element type. */
export interface PgType {
  oid: number;
  kind: ColumnKind;
  /** `format_type(oid, NULL)`: the name a cast takes. */
  name: string;
  element?: PgType;
}

/** The kind of a type from its OID and `pg_type.typcategory`. */
export function pgKind(oid: number, category: string | null): ColumnKind {
  const builtin = BUILTIN[oid];
  if (builtin !== undefined) return builtin;
  if (category === 'A') return 'array';
  if (category === 'S' || category === 'E') return 'text';
  return 'other';
}

/** The JSON value of a PostgreSQL text value of type `t`. */
export function pgValue(t: PgType, text: string): unknown {
  switch (t.kind) {
    case 'boolean':
      return text === 't';
    case 'integer':
      return integer(text);
    case 'float':
      return float(text);
    case 'decimal':
      return text; // exact: a double would round numeric(38,18)
    case 'json':
      return json(text);
    case 'timestamptz':
    case 'timestamp':
      return isoTimestamp(text);
    case 'date':
      return isoDate(text);
    case 'binary':
      if (!text.startsWith('\\x')) throw new BadValue('bytea not in hex output');
      return Buffer.from(text.slice(2), 'hex').toString('base64');
    case 'array':
      return mapArray(parseArray(text), t.element);
    default:
      return text;
  }
}

const asText = (raw: unknown): unknown => raw;

/** The converter of a column of type `t`, chosen once per result (text needs none). */
export function pgConverter(t: PgType): (raw: unknown) => unknown {
  switch (t.kind) {
    case 'text':
    case 'time':
    case 'decimal':
    case 'other':
      return asText;
    case 'integer':
      return integer as (raw: unknown) => unknown;
    case 'timestamptz':
    case 'timestamp':
      return isoTimestamp as (raw: unknown) => unknown;
    case 'json':
      return json as (raw: unknown) => unknown;
    default:
      return (raw) => pgValue(t, raw as string);
  }
}

function mapArray(items: ArrayItem[], element: PgType | undefined): unknown[] {
  return items.map((item) => {
    if (item === null) return null;
    if (Array.isArray(item)) return mapArray(item, element);
    return element === undefined ? item : pgValue(element, item);
  });
}

type ArrayItem = string | null | ArrayItem[];

/**
 * Parses PostgreSQL's array text (`{1,NULL,"a \"b\""}`, nested `{{1,2},{3,4}}`, with or
 * without a `[0:1]=` dimension prefix) into nested arrays of element text.
 */
export function parseArray(text: string): ArrayItem[] {
  let i = 0;
  if (text[0] === '[') {
    const eq = text.indexOf('=');
    if (eq < 0) throw new BadValue('bad array text');
    i = eq + 1;
  }
  const parseLevel = (): ArrayItem[] => {
    if (text[i] !== '{') throw new BadValue('bad array text');
    i++;
    const out: ArrayItem[] = [];
    if (text[i] === '}') {
      i++;
      return out;
    }
    for (;;) {
      if (text[i] === '{') out.push(parseLevel());
      else if (text[i] === '"') {
        i++;
        let s = '';
        while (i < text.length && text[i] !== '"') {
          if (text[i] === '\\') i++;
          s += text[i++];
        }
        if (text[i] !== '"') throw new BadValue('bad array text');
        i++;
        out.push(s);
      } else {
        let j = i;
        while (j < text.length && text[j] !== ',' && text[j] !== '}') j++;
        const raw = text.slice(i, j).trim();
        out.push(raw === 'NULL' ? null : raw);
        i = j;
      }
      if (text[i] === ',') {
        i++;
        continue;
      }
      if (text[i] === '}') {
        i++;
        return out;
      }
      throw new BadValue('bad array text');
    }
  };
  const items = parseLevel();
  if (i !== text.length) throw new BadValue('bad array text');
  return items;
}
