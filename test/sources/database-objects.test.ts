import { randomBytes } from 'node:crypto';
import mysql from 'mysql2/promise';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers.js';
import { pgUnreachable, type ScratchDatabase, scratchDatabase } from '../pg.js';

/**
 * What a database row becomes in its objects table: the columns typed from the discovered
 * catalog (no `columns:` given), full refresh by default, deletions marked.
 */
const problem = await pgUnreachable();

/** The warehouse types of an objects table's source columns (bookkeeping columns left out), in table order. */
async function columnTypes(
  server: TestServer,
  schema: string,
  table: string,
): Promise<Record<string, unknown>> {
  const types = await server.query(
    `SELECT column_name AS name, data_type AS type FROM information_schema.columns
      WHERE table_schema = '${schema}' AND table_name = '${table}' AND column_name NOT LIKE '\\_tributary%' ESCAPE '\\'
      ORDER BY ordinal_position`,
  );
  return Object.fromEntries(types.map((t) => [t.name, t.type]));
}

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
    expect(await columnTypes(server, 'billing', 'accounts')).toEqual({
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

  it('syncs on its schedule (croner): a scheduled full refresh sees a row inserted since', async () => {
    const scheduledServer = await startTestServer({
      yaml: `version: 1
sources:
  - id: web
    type: http
    writeKey: wk_web_123
  - id: billing
    type: postgres
    connectionString: ${db.url}
    schedule: "* * * * * *"
    streams:
      - { name: accounts, table: public.accounts }
`,
    });
    try {
      const scheduled = async () =>
        (await scheduledServer.sources.runner.runs('billing')).filter(
          (r) => r.trigger === 'schedule' && r.status !== 'running',
        );
      while ((await scheduled()).length < 1) await new Promise((r) => setTimeout(r, 100));
      await c.query('INSERT INTO accounts (id) VALUES (3)');
      const before = (await scheduled()).length;
      while ((await scheduled()).length < before + 2) await new Promise((r) => setTimeout(r, 100));
      expect((await scheduled()).every((r) => r.status === 'succeeded')).toBe(true);
      expect(
        await scheduledServer.query(
          'SELECT id FROM billing.accounts WHERE NOT _tributary_deleted ORDER BY id',
        ),
      ).toEqual([{ id: 1 }, { id: 3 }]);
    } finally {
      await scheduledServer.stop();
    }
  });
});

const MYSQL = { host: '127.0.0.1', port: 3306, user: 'root', password: '' };
const mysqlProblem = await mysql
  .createConnection({ ...MYSQL, connectTimeout: 2000 })
  .then((c) => c.end().then(() => undefined))
  .catch((err: Error) => err.message);

describe.skipIf(mysqlProblem !== undefined)('database rows as objects (MariaDB, through the runner)', () => {
  const database = `dbobj_${randomBytes(6).toString('hex')}`;
  let admin: mysql.Connection;
  let server: TestServer;

  beforeAll(async () => {
    admin = await mysql.createConnection(MYSQL);
    await admin.query(`CREATE DATABASE ${database}`);
    await admin.query(`CREATE TABLE ${database}.orders (
      id INT PRIMARY KEY, total DECIMAL(12, 2), placed DATETIME(6), shipped DATE, paid TINYINT(1),
      big BIGINT UNSIGNED, huge BIGINT UNSIGNED, attrs JSON)`);
    await admin.query(`INSERT INTO ${database}.orders VALUES
      (1, 19.99, '2024-03-01 12:00:00.123456', '2024-03-02', 1, 9007199254740993, 1, '{"gift": true}'),
      (2, NULL, NULL, NULL, NULL, NULL, 18446744073709551615, NULL)`);
    server = await startTestServer({
      yaml: `version: 1
sources:
  - id: web
    type: http
    writeKey: wk_web_123
  - id: shop
    type: mysql
    host: ${MYSQL.host}
    user: ${MYSQL.user}
    database: ${database}
    streams:
      - { name: orders, table: ${database}.orders }
`,
    });
  });
  afterAll(async () => {
    await server?.stop();
    await admin?.query(`DROP DATABASE IF EXISTS ${database}`);
    await admin?.end();
  });

  it('types the columns from the catalog; an unsigned BIGINT past 2^63 - 1 is a failed row, the rest stored', async () => {
    expect(await server.sources.check('shop')).toEqual({ ok: true });
    const catalog = await server.sources.discover('shop');
    // The configured stream first, under its own name, with the table's key.
    expect(catalog.streams[0]).toMatchObject({ name: 'orders', primaryKey: ['id'] });
    expect(catalog.streams.some((s) => s.name === `${database}.orders`)).toBe(true);
    const r = await server.sources.sync('shop', { trigger: 'test' });
    expect(r, r.error).toMatchObject({ status: 'succeeded', rows: 2, objects: 1, failed: 1 });
    expect(await columnTypes(server, 'shop', 'orders')).toEqual({
      id: 'BIGINT',
      total: 'VARCHAR',
      placed: 'TIMESTAMP WITH TIME ZONE',
      shipped: 'DATE',
      paid: 'BOOLEAN',
      big: 'BIGINT',
      huge: 'BIGINT',
      attrs: 'JSON',
    });
    expect(
      await server.query(
        `SELECT id, total, epoch_us(placed) AS placed, shipped::VARCHAR AS shipped, paid, big::VARCHAR AS big,
                json_extract(attrs, '$.gift')::BOOLEAN AS gift FROM shop.orders`,
      ),
    ).toEqual([
      {
        id: 1,
        total: '19.99',
        placed: Date.parse('2024-03-01T12:00:00.123Z') * 1000 + 456,
        shipped: '2024-03-02',
        paid: true,
        big: '9007199254740993',
        gift: true,
      },
    ]);
    const [failure] = await server.query(
      `SELECT code FROM failed_events WHERE stage = 'source' AND source_id = 'shop'`,
    );
    expect(failure).toEqual({ code: 'TRIB_ERR_SOURCE_UNSTORABLE' });
  });

  it('stores such a value exactly when its column is declared string', async () => {
    const declared = await startTestServer({
      yaml: `version: 1
sources:
  - id: web
    type: http
    writeKey: wk_web_123
  - id: shop
    type: mysql
    host: ${MYSQL.host}
    user: ${MYSQL.user}
    database: ${database}
    streams:
      - { name: orders, table: ${database}.orders, columns: { huge: string } }
`,
    });
    try {
      const r = await declared.sources.sync('shop', { trigger: 'test' });
      expect(r, r.error).toMatchObject({ status: 'succeeded', rows: 2, objects: 2, failed: 0 });
      expect(await declared.query('SELECT id, huge FROM shop.orders ORDER BY id')).toEqual([
        { id: 1, huge: '1' },
        { id: 2, huge: '18446744073709551615' },
      ]);
    } finally {
      await declared.stop();
    }
  });
});
