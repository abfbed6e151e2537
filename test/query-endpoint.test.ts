import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Metrics } from '../src/observe/metrics.js';
import { buildHttpApp } from '../src/server/http-app.js';
import { DEFAULT_USER_QUERY_LIMITS, type UserQueries } from '../src/store/user-query.js';
import {
  ADMIN_TOKEN,
  basicAuth,
  MINIMAL_CONFIG,
  startTestServer,
  type TestServer,
  WRITE_KEY,
} from './helpers.js';

/** Issue 16, finding 3: SQL sent to /admin/v1/query must not reach the host. */

let server: TestServer;
let outside: string;
let salt: string;
const EVENTS = 5;

async function post(s: TestServer, sql: string) {
  const res = await s.app.inject({
    method: 'POST',
    url: '/admin/v1/query',
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
    payload: JSON.stringify({ sql }),
  });
  return { status: res.statusCode, body: res.json() as Record<string, unknown>, text: res.body };
}

async function eventCount(s: TestServer): Promise<number> {
  const r = await s.warehouse.query('SELECT count(*) AS n FROM events');
  return Number(r.rows[0]!.n);
}

beforeAll(async () => {
  server = await startTestServer();
  outside = mkdtempSync(join(tmpdir(), 'tributary-query-outside-'));
  salt = readFileSync(join(server.dataDir, 'pii-salt'), 'utf8').trim();
  const res = await server.app.inject({
    method: 'POST',
    url: '/v1/batch',
    headers: { authorization: basicAuth(WRITE_KEY), 'content-type': 'application/json' },
    payload: JSON.stringify({
      batch: Array.from({ length: EVENTS }, (_, i) => ({ type: 'track', event: 'Viewed', userId: `u${i}` })),
    }),
  });
  expect(res.statusCode).toBe(200);
  await server.settle();
});

afterAll(async () => {
  await server?.stop();
  if (outside) rmSync(outside, { recursive: true, force: true });
});

describe('the query endpoint refuses what reaches the host', () => {
  it('reads no file outside the warehouse: /etc/passwd', async () => {
    for (const sql of [
      "SELECT * FROM read_csv('/etc/passwd')",
      "SELECT * FROM read_text('/etc/passwd')",
      "SELECT * FROM '/etc/passwd'",
      "SELECT content FROM events, read_text('/etc/passwd')",
      "SELECT count(*) FROM events WHERE user_id IN (SELECT content FROM read_text('/etc/passwd'))",
    ]) {
      const r = await post(server, sql);
      expect(r.status, sql).toBe(400);
      expect(r.body.code, sql).toBe('TRIB_ERR_QUERY_NOT_ALLOWED');
      expect(r.text).not.toContain('root:');
    }
  });

  it('never reads the PII salt, by any path', async () => {
    const path = join(server.dataDir, 'pii-salt');
    for (const sql of [
      `SELECT * FROM read_text('${path}')`,
      `SELECT * FROM read_blob('${path}')`,
      `SELECT * FROM read_csv('${path}', header = false)`,
      `SELECT * FROM '${path}'`,
      `SELECT * FROM "${path}"`,
      `SELECT * FROM glob('${server.dataDir}/*')`,
      `SELECT * FROM read_text('${server.dataDir}/*')`,
      `SELECT * FROM query('SELECT * FROM read_text(''${path}'')')`,
      // A CTE named like the file, visible only where it is declared.
      `WITH a AS (SELECT * FROM "${path}"), "${path}" AS (SELECT 1) SELECT * FROM a`,
      `SELECT * FROM (WITH "${path}" AS (SELECT 1) SELECT 1), "${path}"`,
    ]) {
      const r = await post(server, sql);
      expect(r.status, sql).toBe(400);
      expect(r.body.code, sql).toBe('TRIB_ERR_QUERY_NOT_ALLOWED');
      expect(r.text, sql).not.toContain(salt);
    }
  });

  it('keeps the salt out of reach of the engine itself, not only of the vetting', async () => {
    // Trusted SQL is not vetted: the instance's own settings refuse the file.
    await expect(
      server.warehouse.query(`SELECT * FROM read_text('${join(server.dataDir, 'pii-salt')}')`),
    ).rejects.toThrow(/Permission Error/);
    await expect(server.warehouse.query('SET GLOBAL enable_external_access = true')).rejects.toThrow(
      /locked/,
    );
  });

  it('writes no file: COPY … TO is refused and the file does not exist', async () => {
    const target = join(outside, 'copied.csv');
    const r = await post(server, `COPY (SELECT * FROM events) TO '${target}'`);
    expect(r.status).toBe(400);
    expect(r.body.code).toBe('TRIB_ERR_QUERY_NOT_ALLOWED');
    expect(existsSync(target)).toBe(false);
  });

  it('attaches no database', async () => {
    const target = join(outside, 'attached.duckdb');
    const r = await post(server, `ATTACH '${target}' AS other`);
    expect(r.body.code).toBe('TRIB_ERR_QUERY_NOT_ALLOWED');
    expect(existsSync(target)).toBe(false);
  });

  it('installs and loads no extension, and sends no request', async () => {
    let requests = 0;
    const http = createServer((_req, res) => {
      requests++;
      res.statusCode = 404;
      res.end();
    });
    await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
    const port = (http.address() as AddressInfo).port;
    try {
      for (const sql of [
        `INSTALL httpfs FROM 'http://127.0.0.1:${port}'`,
        'LOAD httpfs',
        `SELECT * FROM read_csv('http://127.0.0.1:${port}/x.csv')`,
        `SELECT * FROM 'http://127.0.0.1:${port}/x.csv'`,
      ]) {
        const r = await post(server, sql);
        expect(r.status, sql).toBe(400);
        expect(r.body.code, sql).toBe('TRIB_ERR_QUERY_NOT_ALLOWED');
      }
      expect(requests).toBe(0);
    } finally {
      await new Promise((r) => http.close(r));
    }
  });

  it('changes nothing: DROP, DELETE, SET and a second statement are refused, the events stay', async () => {
    for (const sql of [
      'DROP TABLE events',
      'DELETE FROM events',
      'UPDATE events SET user_id = NULL',
      'CREATE TABLE x AS SELECT 1',
      "SET memory_limit = '1TB'",
      'SELECT 1; DROP TABLE events',
      'SELECT 1; SELECT 2',
      'CALL pragma_version()',
      'EXPLAIN ANALYZE SELECT 1',
      'CHECKPOINT',
    ]) {
      const r = await post(server, sql);
      expect(r.status, sql).toBe(400);
      expect(r.body.code, sql).toBe('TRIB_ERR_QUERY_NOT_ALLOWED');
    }
    expect(await eventCount(server)).toBe(EVENTS);
  });

  it('says what is allowed when it refuses', async () => {
    const r = await post(server, "SELECT * FROM read_text('x')");
    expect(r.body.message).toMatch(/read_text\(\) is not allowed/);
    expect(r.body.message).toMatch(/range, generate_series, unnest/);
  });
});

describe('the query endpoint answers within its limits', () => {
  it('runs a legitimate SELECT over the tables, the log and the catalog', async () => {
    const r = await post(
      server,
      `WITH v AS (SELECT user_id FROM events WHERE event = 'Viewed')
       SELECT (SELECT count(*) FROM v) AS n,
              (SELECT count(*) FROM log.raw_events) AS raw,
              (SELECT count(*) FROM information_schema.tables WHERE table_name = 'events') AS t,
              (SELECT sum(x) FROM range(4) r(x)) AS s,
              current_setting('memory_limit') IS NOT NULL AS setting`,
    );
    expect(r.status).toBe(200);
    expect(r.body).toEqual({
      columns: ['n', 'raw', 't', 's', 'setting'],
      rows: [{ n: EVENTS, raw: EVENTS, t: 1, s: 6, setting: true }],
      truncated: false,
    });
  });

  it('streams a huge result and returns the first rows only: range(40000000)', async () => {
    const r = await post(server, 'SELECT * FROM range(40000000)');
    expect(r.status).toBe(200);
    expect(r.body.truncated).toBe(true);
    expect((r.body.rows as unknown[]).length).toBe(10_000);
    // The server goes on.
    expect((await post(server, 'SELECT 1 AS one')).body.rows).toEqual([{ one: 1 }]);
  });

  it('keeps one huge value out of the event loop: a row past maxBytes is never converted', {
    timeout: 120_000,
  }, async () => {
    // 600 million characters: more than a JavaScript string may hold.
    const r = await post(server, "SELECT repeat('x', 600000000) AS s");
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ columns: ['s'], rows: [], truncated: true });
    expect((await post(server, 'SELECT 1 AS one')).body.rows).toEqual([{ one: 1 }]);
  });

  it('takes a final semicolon, comments and repeated column names', async () => {
    expect((await post(server, 'SELECT 1 AS one; -- done')).body.rows).toEqual([{ one: 1 }]);
    expect((await post(server, 'SELECT 1 AS a, 2 AS a -- twice')).body).toMatchObject({
      columns: ['a', 'a_1'],
      rows: [{ a: 1, a_1: 2 }],
    });
  });

  it('answers a query the engine refuses with its message, and goes on', async () => {
    const r = await post(server, 'SELECT no_such_column FROM events');
    expect(r.status).toBe(400);
    expect(r.body.code).toBe('TRIB_ERR_QUERY_FAILED');
    const parse = await post(server, 'SELEC 1');
    expect(parse.body).toMatchObject({
      code: 'TRIB_ERR_QUERY_FAILED',
      message: expect.stringMatching(/syntax error/),
    });
    expect((await post(server, 'SELECT 1 AS one')).status).toBe(200);
  });
});

describe('a lake folder that holds the data folder', () => {
  it('is refused at start: the engine could reach the PII salt', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'tributary-query-lake-'));
    try {
      for (const path of ['.', '..']) {
        await expect(
          startTestServer({
            dataDir,
            yaml: `${MINIMAL_CONFIG}destinations:\n  - {id: lake, type: parquet, path: "${path}"}\n`,
          }),
        ).rejects.toMatchObject({
          code: 'TRIB_ERR_CONFIG_INVALID',
          message: expect.stringMatching(/PII salt/),
        });
      }
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});

describe('configured limits', () => {
  let limited: TestServer;
  beforeAll(async () => {
    limited = await startTestServer({
      yaml: `${MINIMAL_CONFIG}query:\n  maxRows: 5\n  maxBytes: 2048\n  timeout: 200ms\n`,
    });
  });
  afterAll(async () => {
    await limited?.stop();
  });

  it('stops a statement at the timeout with TRIB_ERR_QUERY_TIMEOUT, and answers the next one', async () => {
    const r = await post(
      limited,
      'SELECT sum(hash(a.range + b.range)) FROM range(100000000) a, range(1000) b',
    );
    expect(r.status).toBe(400);
    expect(r.body.code).toBe('TRIB_ERR_QUERY_TIMEOUT');
    expect((await post(limited, 'SELECT 1 AS one')).body.rows).toEqual([{ one: 1 }]);
  });

  it('cuts the rows at maxRows and says so', async () => {
    const r = await post(limited, 'SELECT * FROM range(6)');
    expect(r.body.rows).toHaveLength(5);
    expect(r.body.truncated).toBe(true);
    const exact = await post(limited, 'SELECT * FROM range(5)');
    expect(exact.body.rows).toHaveLength(5);
    expect(exact.body.truncated).toBe(false);
  });

  it('cuts the result at maxBytes and says so', async () => {
    // Each row is a little over 1,000 bytes as JSON: two fit in 2,048.
    const r = await post(limited, "SELECT repeat('x', 1000) AS s FROM range(3)");
    expect(r.body.rows).toHaveLength(2);
    expect(r.body.truncated).toBe(true);
  });
});

describe('concurrent queries', () => {
  it('runs at most query.maxConcurrent at once; one more is answered 429 TRIB_ERR_QUERY_BUSY', async () => {
    // The real warehouse behind a gate, so the first query is held running for as long as the test needs.
    let started!: () => void;
    const running = new Promise<void>((r) => {
      started = r;
    });
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    let held = false;
    const queries: UserQueries = {
      async userQuery(sql, limits) {
        if (!held) {
          held = true;
          started();
          await gate;
        }
        return server.warehouse.userQuery(sql, limits);
      },
    };
    const metrics = new Metrics({ endOffset: () => 0, loaded: () => 0 });
    const app = await buildHttpApp({
      sources: [],
      sourcesByWriteKey: new Map(),
      log: server.log,
      queries,
      queryLimits: { ...DEFAULT_USER_QUERY_LIMITS, maxConcurrent: 1 },
      metrics,
      adminToken: ADMIN_TOKEN,
      logger: pino({ level: 'silent' }),
      observer: { received: () => {}, accepted: () => {}, rejected: () => {} },
      health: () => ({}),
    });
    try {
      const ask = () =>
        app.inject({
          method: 'POST',
          url: '/admin/v1/query',
          headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
          payload: JSON.stringify({ sql: 'SELECT 1 AS one' }),
        });
      const first = ask();
      await running;
      expect(await metrics.registry.metrics()).toMatch(/^tributary_admin_queries_running 1$/m);
      const second = await ask();
      expect(second.statusCode).toBe(429);
      expect(second.json().code).toBe('TRIB_ERR_QUERY_BUSY');
      release();
      expect((await first).json().rows).toEqual([{ one: 1 }]);
      expect((await ask()).json().rows).toEqual([{ one: 1 }]);
      expect(await metrics.registry.metrics()).toMatch(/^tributary_admin_queries_running 0$/m);
    } finally {
      release();
      await app.close();
    }
  });
});
