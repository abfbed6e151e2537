import { type DuckDBConnection, DuckDBInstance } from '@duckdb/node-api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CatalogEntry, refusal } from './duckdb-user-query.js';

let conn: DuckDBConnection;
const catalog: CatalogEntry[] = [
  { database: 'warehouse', schema: 'main', name: 'events' },
  { database: 'warehouse', schema: 'web', name: 'tracks' },
  { database: 'log', schema: 'main', name: 'raw_events' },
  { database: 'system', schema: 'information_schema', name: 'tables' },
];

beforeAll(async () => {
  conn = await (await DuckDBInstance.create(':memory:')).connect();
});
afterAll(() => conn.closeSync());

/** DuckDB's parse tree of `sql`, vetted against the catalog above. */
async function vet(sql: string): Promise<string | undefined> {
  const r = await conn.runAndReadAll('SELECT json_serialize_sql(CAST($1 AS VARCHAR))', [sql]);
  return refusal(JSON.parse(String(r.getRows()[0]![0])), catalog);
}

describe('refusal (the vetting of a user query)', () => {
  it.each([
    'SELECT count(*) FROM events',
    'FROM events',
    'SELECT * FROM EVENTS e JOIN web.tracks t ON e.message_id = t.id',
    'SELECT * FROM warehouse.web.tracks',
    'SELECT * FROM log.raw_events',
    'SELECT * FROM information_schema.tables',
    'WITH a AS (SELECT 1 AS x), b AS (SELECT * FROM a) SELECT * FROM b',
    'WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT * FROM r',
    'SELECT * FROM range(10) UNION ALL SELECT * FROM generate_series(1, 3)',
    "SELECT * FROM events, json_each(events.payload) WHERE user_id = 'x'",
    'SELECT * FROM (VALUES (1), (2)) v(x)',
    'SELECT unnest([1, 2])',
    'SELECT (SELECT count(*) FROM events) AS n',
  ])('allows %s', async (sql) => {
    expect(await vet(sql)).toBeUndefined();
  });

  it.each([
    ["SELECT * FROM read_text('/etc/passwd')", /read_text\(\) is not allowed/],
    ["SELECT * FROM main.read_csv('/etc/passwd')", /read_csv\(\) is not allowed/],
    ["SELECT * FROM 'data/pii-salt'", /"data\/pii-salt" is not a table/],
    ['SELECT * FROM "x.parquet"', /"x.parquet" is not a table/],
    ['SELECT * FROM events WHERE user_id IN (SELECT * FROM "f.csv")', /"f.csv" is not a table/],
    ["SELECT (SELECT content FROM read_text('x')) AS c", /read_text/],
    ['SELECT * FROM events, LATERAL read_text(events.user_id)', /read_text/],
    ["SELECT * FROM query('SELECT 1')", /query\(\) is not allowed/],
    ['SELECT * FROM duckdb_settings()', /duckdb_settings\(\) is not allowed/],
    ['SELECT * FROM other.main.events', /"other.main.events" is not a table/],
    ['SELECT * FROM nowhere.tracks', /"nowhere.tracks" is not a table/],
    // A CTE hides a name only where it is in scope.
    ['WITH a AS (SELECT * FROM "s.csv"), "s.csv" AS (SELECT 1) SELECT * FROM a', /"s.csv" is not a table/],
    ['SELECT * FROM (WITH "s.csv" AS (SELECT 1) SELECT 1), "s.csv"', /"s.csv" is not a table/],
    ['DESCRIBE events', /DESCRIBE, SHOW and SUMMARIZE are not allowed/],
    ["SUMMARIZE 'x.csv'", /not allowed/],
    ['DROP TABLE events', /only a single SELECT/],
    ["COPY events TO '/tmp/x.csv'", /only a single SELECT/],
    ["ATTACH '/tmp/x.duckdb'", /only a single SELECT/],
    ['SELECT 1; SELECT 2', /only a single SELECT/],
    ['', /only a single SELECT/],
  ])('refuses %s', async (sql, why) => {
    expect(await vet(sql)).toMatch(why);
  });
});
