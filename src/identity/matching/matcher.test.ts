import { type DuckDBConnection, DuckDBInstance } from '@duckdb/node-api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Matcher } from './matcher.js';
import { MatchSettings } from './matching-schema.js';

let instance: DuckDBInstance;
let conn: DuckDBConnection;
beforeAll(async () => {
  instance = await DuckDBInstance.create(':memory:');
  conn = await instance.connect();
});
afterAll(() => {
  conn.closeSync();
  instance.closeSync();
});

const settings = (blocking: unknown = [['dob'], ['first_name', 'last_name']], extra: object = {}) =>
  MatchSettings.parse({
    fields: [
      { name: 'first_name', comparison: 'name', swapWith: 'last_name' },
      { name: 'last_name', comparison: 'name', swapWith: 'first_name' },
      { name: 'dob', comparison: 'date' },
      { name: 'email', comparison: 'email' },
      { name: 'zip', comparison: 'code' },
    ],
    blocking,
    ...extra,
  });

async function table(rows: (string | null)[][]): Promise<string> {
  await conn.run(
    'CREATE OR REPLACE TABLE people (id VARCHAR, first_name VARCHAR, last_name VARCHAR, dob VARCHAR, email VARCHAR, zip VARCHAR)',
  );
  const app = await conn.createAppender('people');
  for (const r of rows) {
    for (const v of r) {
      if (v === null) app.appendNull();
      else app.appendVarchar(v);
    }
    app.endRow();
  }
  app.flushSync();
  app.closeSync();
  return 'SELECT * FROM people';
}

describe('Matcher (DuckDB)', () => {
  it('compares each field by its levels: edits, transposed dates, accents, placeholders, missing values', async () => {
    const m = new Matcher(conn, settings([['zip']]));
    await m.load(
      await table([
        ['a', 'Jon', 'Smith', '1971-05-24', 'jon@x.org', 'AB1 2CD'],
        ['b', 'John', 'Smyth', '1971-24-05', 'JON@x.org ', 'ab12cd'],
        ['c', 'José', "O'Brien", 'unknown', null, 'zz9'],
        ['d', 'jose', 'obrien', '1980-01-01', 'jose@y.org', 'zz9'],
        ['e', 'x'.repeat(100_000), 'N/A', '2001-02-03', 'a"b@c', 'zz9'],
        ['f', 'Smith', 'Jon', null, null, 'ab12cd'],
      ]),
    );
    await m.candidates();
    const model = await m.estimate();
    const ab = await m.explain(model, 'a', 'b');
    expect(ab!.fields.map((f) => f.level)).toEqual([
      'one edit',
      'one edit',
      'day and month transposed, or one typo',
      'exact',
      'exact',
    ]);
    const cd = await m.explain(model, 'c', 'd');
    // "José" and "jose" agree once normalised; "O'Brien" keeps its apostrophe; "unknown" is missing.
    expect(cd!.fields.map((f) => f.level)).toEqual(['exact', 'one edit', 'missing', 'missing', 'exact']);
    expect(cd!.fields[2]!.weight).toBe(0);
    const ce = await m.explain(model, 'c', 'e');
    expect(ce!.fields[0]!.right!.length).toBe(200); // a huge value is cut before comparing
    expect(ce!.fields[1]!.level).toBe('missing'); // "N/A"
    expect(ce!.weight).toBeCloseTo(
      ce!.prior + ce!.fields.reduce((s, f) => s + f.weight + f.termFrequency, 0),
      9,
    );
    expect(await m.explain(model, 'a', 'nobody')).toBeUndefined();
    // First and last name written the other way round.
    const af = await m.explain(model, 'a', 'f');
    expect(af!.fields.slice(0, 2).map((f) => f.level)).toEqual([
      'swapped with last_name',
      'swapped with first_name',
    ]);
    await m.drop();
  });

  it('numbers by closeness, phones by digits, texts by Jaro–Winkler, exact fields', async () => {
    await conn.run(`CREATE OR REPLACE TABLE things AS SELECT * FROM (VALUES
      ('a', '1,000.0', '+44 (20) 7946 0018', 'Baker Street', 'GB', 'k'),
      ('b', '1050', '020 7946 0018', 'Baker Streat', 'gb', 'k'),
      ('c', '2000', '0044 20 7946 0019', 'Elm Road', 'FR', 'k'),
      ('d', 'n/a', '', 'Baker Stre', NULL, 'k')) t(id, amount, phone, street, country, grp)`);
    const m = new Matcher(
      conn,
      MatchSettings.parse({
        fields: [
          { name: 'amount', comparison: 'number', tolerance: 0.1 },
          { name: 'phone', comparison: 'phone' },
          { name: 'street', comparison: 'text' },
          { name: 'country', comparison: 'exact' },
        ],
        blocking: [['street'], ['country']],
      }),
      'things',
    );
    await m.load("SELECT id, replace(amount, ',', '') AS amount, phone, street, country FROM things");
    await m.candidates();
    const model = await m.estimate();
    const levels = async (a: string, b: string) => (await m.explain(model, a, b))!.fields.map((f) => f.level);
    expect(await levels('a', 'b')).toEqual([
      'within 10%',
      'same last 8 digits',
      'jaro-winkler >= 0.92',
      'exact',
    ]);
    expect(await levels('a', 'c')).toEqual(['different', 'one edit', 'different', 'different']);
    expect(await levels('a', 'd')).toEqual(['missing', 'missing', 'jaro-winkler >= 0.92', 'missing']);
    await m.drop();
  });

  it('no records, or one: no pairs, a model all the same, no groups', async () => {
    for (const rows of [[], [['only', 'Ada', 'Lovelace', '1815-12-10', null, null]]] as (
      | string
      | null
    )[][][]) {
      const m = new Matcher(conn, settings(), 'tiny');
      expect(await m.load(await table(rows))).toBe(rows.length);
      expect(await m.candidates()).toBe(0);
      const model = await m.estimate();
      expect(model.candidatePairs).toBe(0);
      expect(model.fields.every((f) => f.levels.every((l) => Number.isFinite(l.weight)))).toBe(true);
      expect(await m.match(model, 0.9)).toEqual({ clusters: [], links: [], vetoed: [] });
      await m.drop();
    }
  });

  it('blocks: rules are unioned, a key shared by more than maxBlockSize records makes no pairs, `only` restricts', async () => {
    const rows: (string | null)[][] = [];
    // Names of letters only (digits are not part of a normalised name).
    const name = (i: number) => `n${String.fromCharCode(97 + Math.floor(i / 26), 97 + (i % 26))}`;
    for (let i = 0; i < 30; i++) rows.push([`p${i}`, name(i), name(i), '2000-01-01', null, `z${i % 10}`]);
    rows.push(['q', name(1), name(1), '1999-09-09', null, null]);
    const source = await table(rows);
    const m = new Matcher(
      conn,
      settings([['dob'], ['first_name', 'last_name'], ['zip']], { maxBlockSize: 20 }),
    );
    await m.load(source);
    // dob: one block of 30 (> 20, no pairs); names: p1–q; zip: 10 blocks of 3 → 30 pairs.
    expect(await m.candidates()).toBe(31);
    const big = new Matcher(
      conn,
      settings([['dob'], ['first_name', 'last_name'], ['zip']], { maxBlockSize: 30 }),
      'big',
    );
    await big.load(source);
    expect(await big.candidates()).toBe((30 * 29) / 2 + 1);
    expect(await big.candidates(['q'])).toBe(1);
    // p3: the 29 others of its dob; its zip's p13 and p23 are among them.
    expect(await big.candidates(['p3'])).toBe(29);
    await m.drop();
    await big.drop();
  });
});
