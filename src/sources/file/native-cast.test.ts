import { DuckDBInstance } from '@duckdb/node-api';
import { describe, expect, it } from 'vitest';
import type { ColumnType } from '../streams-schema.js';
import { convertValue } from './convert.js';
import { nativeCast } from './native-cast.js';

/** Each text through nativeCast in DuckDB: null for a failure, else the value as JSON-comparable. */
async function sqlConvert(type: ColumnType, texts: readonly string[]): Promise<unknown[]> {
  const cast = nativeCast('v', type);
  if (cast === undefined) throw new Error('no SQL cast');
  const instance = await DuckDBInstance.create(':memory:');
  const conn = await instance.connect();
  try {
    await conn.run("SET TimeZone = 'Asia/Kolkata'");
    const out =
      type === 'timestamp'
        ? `strftime(${cast.value} AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%S.%gZ')`
        : type === 'date'
          ? `CAST(${cast.value} AS VARCHAR)`
          : cast.value;
    const r = await conn.runAndReadAll(
      `SELECT ${cast.bad}, ${out} FROM (SELECT unnest(CAST($1 AS JSON)::VARCHAR[]) AS v, generate_subscripts(CAST($1 AS JSON)::VARCHAR[], 1) AS n) ORDER BY n`,
      [JSON.stringify(texts)],
    );
    return r.getRows().map(([bad, v]) => (bad ? 'BAD' : typeof v === 'bigint' ? Number(v) : v));
  } finally {
    conn.closeSync();
    instance.closeSync();
  }
}

function jsConvert(type: ColumnType, texts: readonly string[]): unknown[] {
  return texts.map((t) => {
    const r = convertValue('v', type, t);
    if (!r.ok) return 'BAD';
    if (type === 'timestamp' && typeof r.value === 'string') return new Date(r.value).toISOString();
    if (type === 'integer' && typeof r.value === 'string') return Number(r.value);
    return r.value;
  });
}

const CORPUS: Record<Exclude<ColumnType, 'json'>, string[]> = {
  string: ['', 'a', ' b ', 'é'],
  integer: [
    '',
    '1',
    ' 42 ',
    '-7',
    '+3',
    '1.0',
    '1e3',
    'x',
    '9223372036854775807',
    '9223372036854775808',
    '12 3',
  ],
  number: [
    '',
    '1',
    '0.1',
    '100.0',
    '-12.5',
    '123456789012345.123456789012345',
    '1.5',
    ' -2.25 ',
    '1e3',
    '.5',
    '5.',
    'NaN',
    'Infinity',
    '1e400',
    'abc',
    '1,5',
    '-0',
  ],
  boolean: ['', 'true', 'FALSE', 'Yes', 'n', '1', '0', 'maybe', ' t '],
  date: ['', '2024-02-29', '2023-02-29', '2024-13-01', '2024-1-01', '20240101', ' 2024-01-02 '],
  timestamp: [
    '',
    '2026-01-02T10:00:00Z',
    '2026-01-02T10:00:00.000Z',
    '2026-01-02T12:00:00+02:00',
    '2026-01-02T12:00:00+0200',
    '2026-01-02T12:00:00-05',
    '2026-01-02 10:00:00',
    '2026-01-02T10:00',
    '2026-01-02',
    '2026-01-02T10:00:00.123456789Z',
    '2020-02-30T00:00:00Z',
    '2026-01-02T24:00:00Z',
    'yesterday',
    '2026-01-02T10:00:00z',
    '2026-01-02t10:00:00.5+05:30',
    '2026-01-02 10:00:00-0800',
    '0000-01-01T00:00:00Z',
    '9999-12-31T23:59:59.999Z',
    '9999-12-31T23:59:59-01:00',
    ' 2026-01-02T10:00:00Z ',
    '2020-02-30T00:00:00.000Z',
    '2021-02-29T10:00:00.000Z',
    '0000-01-01T00:00:00.000Z',
    '0999-01-01T00:00:00.000Z',
  ],
};

describe('nativeCast', () => {
  for (const [type, texts] of Object.entries(CORPUS) as [Exclude<ColumnType, 'json'>, string[]][]) {
    it(`accepts and refuses what convertValue does: ${type}`, async () => {
      expect(await sqlConvert(type, texts)).toEqual(jsConvert(type, texts));
    });
  }

  it('leaves json columns to JavaScript', () => {
    expect(nativeCast('v', 'json')).toBeUndefined();
  });
});
