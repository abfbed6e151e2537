import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TributaryError } from '../src/errors.js';
import { PostgresStore } from '../src/store/postgres/postgres-store.js';
import { PostgresUserQueries } from '../src/store/postgres/postgres-user-query.js';
import { DEFAULT_USER_QUERY_LIMITS, type UserQueryLimits } from '../src/store/user-query.js';
import { PG_ADMIN, pgUnreachable } from './pg.js';

/** Issue 16, finding 3 in scale-out: the admin SQL runs as a read-only role, within limits. */

const pgProblem = await pgUnreachable();
const EVENTS = 3;

if (pgProblem) {
  describe.skip(`PostgresUserQueries (PostgreSQL at 127.0.0.1:5432 unreachable: ${pgProblem})`, () => {
    it('skipped', () => {});
  });
} else {
  describe('PostgresUserQueries', () => {
    const suffix = randomBytes(6).toString('hex');
    const database = `trib_query_${suffix}`;
    const role = `trib_reader_${suffix}`;
    const at = (user: string) => `postgres://${user}@${PG_ADMIN.host}:${PG_ADMIN.port}/${database}`;
    const admin = new pg.Client(PG_ADMIN);
    let store: PostgresStore;
    let queries: PostgresUserQueries;

    const run = (sql: string, limits: Partial<UserQueryLimits> = {}) =>
      queries.userQuery(sql, { ...DEFAULT_USER_QUERY_LIMITS, ...limits });
    const code = (sql: string, limits: Partial<UserQueryLimits> = {}) =>
      run(sql, limits).then(
        () => 'answered',
        (err: unknown) => (err instanceof TributaryError ? err.code : String(err)),
      );

    beforeAll(async () => {
      await admin.connect();
      await admin.query(`CREATE DATABASE ${database}`);
      store = await PostgresStore.open({ url: at(PG_ADMIN.user!), schema: 'tributary' });
      await store.write({
        events: Array.from({ length: EVENTS }, (_, i) => ({
          messageId: `m-${i}`,
          sourceId: 'web',
          receivedAt: 1_790_000_000_000 + i,
          logOffset: i,
          json: JSON.stringify({ type: 'track', event: 'E', userId: `u${i}`, messageId: `m-${i}` }),
        })),
        failed: [],
        consumer: 'loader',
        nextOffset: EVENTS,
      });
      // What docs/operations.md asks of the operator.
      await admin.query(`CREATE ROLE ${role} LOGIN`);
      await store.pool.query(`GRANT CONNECT ON DATABASE ${database} TO ${role};
        GRANT USAGE ON SCHEMA tributary TO ${role};
        GRANT SELECT ON ALL TABLES IN SCHEMA tributary TO ${role}`);
      queries = await PostgresUserQueries.open({ url: at(role), schema: 'tributary' });
    });
    afterAll(async () => {
      await queries?.close();
      await store?.close();
      await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
      await admin.query(`DROP ROLE IF EXISTS ${role}`);
      await admin.end();
    });

    it('runs a SELECT over the state tables (search path: the schema)', async () => {
      expect(await run('SELECT count(*) AS n FROM events')).toEqual({
        columns: ['n'],
        rows: [{ n: EVENTS }],
        truncated: false,
      });
    });

    it('reads through a cursor: a 40,000,000-row result returns maxRows rows and says it was cut', async () => {
      const r = await run('SELECT generate_series(1, 40000000) AS g');
      expect(r.rows).toHaveLength(DEFAULT_USER_QUERY_LIMITS.maxRows);
      expect(r.truncated).toBe(true);
      const small = await run('SELECT generate_series(1, 6) AS g', { maxRows: 5 });
      expect(small.rows.map((x) => x.g)).toEqual([1, 2, 3, 4, 5]);
      expect(small.truncated).toBe(true);
    });

    it('leaves a row past maxBytes in PostgreSQL: a value too long for a JavaScript string does not take the process down', {
      timeout: 120_000,
    }, async () => {
      // PostgreSQL needs seconds to build the value; the point is the outcome, not the time.
      expect(await run("SELECT repeat('x', 600000000) AS s", { timeoutMs: 110_000 })).toEqual({
        columns: ['s'],
        rows: [],
        truncated: true,
      });
      const r = await run("SELECT g, repeat('x', 1000) AS s FROM generate_series(1, 100) g ORDER BY g", {
        maxBytes: 2048,
      });
      expect(r.rows.map((x) => x.g)).toEqual([1, 2]);
      expect(r.truncated).toBe(true);
      expect((await run('SELECT 1 AS a, 2 AS a, NULL AS n;')).rows).toEqual([{ a: 2, n: null }]);
    });

    it('changes nothing and reads no file: writes, COPY, server files and a second statement are refused', async () => {
      const target = join(tmpdir(), `trib-query-${suffix}.csv`);
      for (const sql of [
        'DROP TABLE events',
        'DELETE FROM events',
        `COPY events TO '${target}'`,
        "SELECT pg_read_file('/etc/passwd')",
        "SELECT * FROM pg_ls_dir('.')",
        'SELECT 1; DROP TABLE events',
        'WITH d AS (DELETE FROM events RETURNING *) SELECT * FROM d',
        'SELECT * FROM consumer_offsets FOR UPDATE',
      ]) {
        expect(await code(sql), sql).toBe('TRIB_ERR_QUERY_NOT_ALLOWED');
      }
      expect(existsSync(target)).toBe(false);
      expect((await run('SELECT count(*) AS n FROM events')).rows).toEqual([{ n: EVENTS }]);
    });

    it('stops a statement at the timeout with TRIB_ERR_QUERY_TIMEOUT, and answers the next one', async () => {
      expect(await code('SELECT pg_sleep(30)', { timeoutMs: 100 })).toBe('TRIB_ERR_QUERY_TIMEOUT');
      expect((await run('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    });

    it('answers a wrong query with its message', async () => {
      expect(await code('SELECT no_such_column FROM events')).toBe('TRIB_ERR_QUERY_FAILED');
      expect(await code('SELECT 1 +')).toBe('TRIB_ERR_QUERY_FAILED');
    });

    it('refuses to start with a superuser as the query role', async () => {
      await expect(
        PostgresUserQueries.open({ url: at(PG_ADMIN.user!), schema: 'tributary' }),
      ).rejects.toThrow(/superuser/);
    });
  });
}
