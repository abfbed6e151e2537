import { DuckDBInstance } from '@duckdb/node-api';
import { describe, expect, it } from 'vitest';
import { recordKey } from '../records.js';
import type { ColumnType } from '../streams-schema.js';
import { convertValue } from './convert.js';
import { nativeKeySql } from './native-key.js';

const SQL_TYPE: Partial<Record<ColumnType, string>> = {
  string: 'VARCHAR',
  integer: 'BIGINT',
  boolean: 'BOOLEAN',
};

/** The key DuckDB computes for rows of text, each cast to its column's type. */
async function sqlKeys(
  rows: readonly Record<string, string>[],
  primaryKey: readonly string[],
  types: Record<string, ColumnType>,
): Promise<(string | null)[]> {
  const expr = nativeKeySql(primaryKey, types);
  if (expr === undefined) throw new Error('no SQL key');
  const instance = await DuckDBInstance.create(':memory:');
  const conn = await instance.connect();
  try {
    const cols = primaryKey.map((c, i) =>
      types[c] === 'string'
        ? `json_extract_string(j, '$[${i}]') AS "${c}"`
        : // Empty text is NULL, as convertValue makes it.
          `CAST(NULLIF(json_extract_string(j, '$[${i}]'), '') AS ${SQL_TYPE[types[c]!]}) AS "${c}"`,
    );
    const lines = rows.map((r) => JSON.stringify(primaryKey.map((c) => r[c] ?? null))).join('\n');
    const r = await conn.runAndReadAll(
      `SELECT ${expr} FROM (SELECT ${cols.join(', ')}, n FROM (SELECT unnest(string_split($1, chr(10))) AS j, generate_subscripts(string_split($1, chr(10)), 1) AS n)) ORDER BY n`,
      [lines],
    );
    return r.getRows().map(([k]) => (k === null ? null : String(k)));
  } finally {
    conn.closeSync();
    instance.closeSync();
  }
}

/** The key the JavaScript path gives: the text converted as the file connector does, then recordKey. */
function jsKey(
  row: Record<string, string>,
  primaryKey: readonly string[],
  types: Record<string, ColumnType>,
) {
  const data: Record<string, unknown> = {};
  for (const c of primaryKey) {
    const v = convertValue(c, types[c]!, row[c]);
    if (!v.ok) throw new Error(v.reason);
    data[c] = v.value;
  }
  const k = recordKey(data, primaryKey);
  return k.ok ? k.key : null;
}

describe('nativeKeySql', () => {
  it('gives recordKey’s text for string, integer and boolean keys, one column or several', async () => {
    const cases: { pk: string[]; types: Record<string, ColumnType>; rows: Record<string, string>[] }[] = [
      {
        pk: ['id'],
        types: { id: 'string' },
        rows: [{ id: 'a"é\n\\x' }, { id: '\u0001' }, { id: '😀' }, { id: '</' }, { id: '' }, { id: ' 1 ' }],
      },
      {
        pk: ['id'],
        types: { id: 'integer' },
        rows: [
          { id: '1' },
          { id: '-42' },
          { id: '9007199254740991' },
          { id: '9007199254740993' },
          { id: '-9007199254740993' },
        ],
      },
      {
        pk: ['org', 'n', 'ok'],
        types: { org: 'string', n: 'integer', ok: 'boolean' },
        rows: [
          { org: 'acme', n: '7', ok: 'true' },
          { org: 'a,b', n: '9223372036854775807', ok: 'false' },
          { org: 'x', n: '', ok: 'true' },
        ],
      },
    ];
    for (const { pk, types, rows } of cases) {
      const expected = rows.map((r) => jsKey(r, pk, types));
      expect(await sqlKeys(rows, pk, types)).toEqual(expected);
    }
  });

  it('leaves to JavaScript the keys SQL would write differently', () => {
    expect(nativeKeySql([], {})).toBeUndefined();
    expect(nativeKeySql(['x'], { x: 'number' })).toBeUndefined();
    expect(nativeKeySql(['t'], { t: 'timestamp' })).toBeUndefined();
    expect(nativeKeySql(['id', 'd'], { id: 'string', d: 'date' })).toBeUndefined();
  });
});
