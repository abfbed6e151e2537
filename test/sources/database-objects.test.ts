import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers.js';
import { pgUnreachable, type ScratchDatabase, scratchDatabase } from '../pg.js';

/**
 * What a database row becomes in its objects table: the columns typed from the discovered
 * catalog (no `columns:` given), full refresh by default, deletions marked.
 */
const problem = await pgUnreachable();

describe.skipIf(problem !== undefined)('database rows as objects (PostgreSQL, through the runner)', () => {
  let db: ScratchDatabase;
  let server: TestServer;
  let c: pg.Client;

  beforeAll(async () => {
    db = await scratchDatabase('dbobj');
    c = new pg.Client(db.config);
    await c.connect();
    await c.query(`CREATE TABLE accounts (
      id bigint PRIMARY KEY, big int8, balance numeric(30, 10), score double precision, active boolean,
      created timestamptz, born date, meta jsonb, tags text[], photo bytea)`);
    await c.query(`INSERT INTO accounts VALUES
      (1, -9223372036854775808, 12345678901234567890.0123456789, 0.5, true, '2024-03-01 12:00:00+05:30',
       '1990-02-28', '{"plan": "pro", "seats": [1, 2]}', '{a,b}', '\\x00ff'),
      (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)`);
    server = await startTestServer({
      yaml: `version: 1
sources:
  - id: web
    type: http
    writeKey: wk_web_123
  - id: billing
    type: postgres
    connectionString: ${db.url}
    streams:
      - { name: accounts, table: public.accounts }
`,
    });
  });
  afterAll(async () => {
    await server?.stop();
    await c?.end();
    await db?.drop();
  });

  it('types the columns from the catalog and marks rows gone from a full refresh as deleted', async () => {
    const r = await server.sources.sync('billing', { trigger: 'test' });
    expect(r, r.error).toMatchObject({ status: 'succeeded', rows: 2, objects: 2, failed: 0 });
    const types = await server.query(
      `SELECT column_name AS name, data_type AS type FROM information_schema.columns
        WHERE table_schema = 'billing' AND table_name = 'accounts' AND column_name NOT LIKE '\\_tributary%' ESCAPE '\\'
        ORDER BY ordinal_position`,
    );
    expect(Object.fromEntries(types.map((t) => [t.name, t.type]))).toEqual({
      id: 'BIGINT',
      big: 'BIGINT',
      balance: 'VARCHAR',
      score: 'DOUBLE',
      active: 'BOOLEAN',
      created: 'TIMESTAMP WITH TIME ZONE',
      born: 'DATE',
      meta: 'JSON',
      tags: 'JSON',
      photo: 'VARCHAR',
    });
    const [row] = await server.query(
      `SELECT big::VARCHAR AS big, balance, score, active, epoch_ms(created) AS created, born::VARCHAR AS born,
              json_extract_string(meta, '$.plan') AS plan, tags::VARCHAR AS tags, photo
         FROM billing.accounts WHERE id = 1`,
    );
    expect(row).toEqual({
      big: '-9223372036854775808',
      balance: '12345678901234567890.0123456789',
      score: 0.5,
      active: true,
      created: Date.parse('2024-03-01T06:30:00Z'),
      born: '1990-02-28',
      plan: 'pro',
      tags: '["a","b"]',
      photo: 'AP8=',
    });
    await c.query('DELETE FROM accounts WHERE id = 2');
    const again = await server.sources.sync('billing', { trigger: 'test' });
    expect(again.status, again.error).toBe('succeeded');
    expect(
      await server.query('SELECT id, _tributary_deleted AS deleted FROM billing.accounts ORDER BY id'),
    ).toEqual([
      { id: 1, deleted: false },
      { id: 2, deleted: true },
    ]);
  });
});
