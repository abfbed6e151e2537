import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import type { Regulation } from '../../src/governance/privacy/regulation.js';
import { type RunningServer, startServer } from '../../src/server/server.js';
import { pgUnreachable, type ScratchDatabase, scratchDatabase } from '../pg.js';

/**
 * A person's events go in through every source kind (tracking API, webhook, file, database)
 * and out to every destination kind (DuckDB in the warehouse file and in a file of its own,
 * PostgreSQL, the Parquet lake) and identity resolution; a deletion naming only their email
 * erases them everywhere, which the test checks by searching the bytes of every file of the
 * data folder (server stopped, so every file is as it stays) and the text of every row of
 * every PostgreSQL table, and their later events are dropped at collection. The other
 * person's data stays.
 */

const ADMIN = 'privacy-admin-token';
const WRITE_KEY = 'wk_privacy_1';
const VICTIM = {
  userId: 'victim-7f3a9c21',
  email: 'victim.zq81@forget-me.example',
  anonymousId: 'anon-victim-55e1',
  name: 'Zebedee Quuxworth',
};
const KEEPER = { userId: 'keeper-1b2c3d', email: 'keeper.k4@stay.example', name: 'Kept Person' };
const TRACES = [VICTIM.userId, VICTIM.email, VICTIM.anonymousId, VICTIM.name];

const pgDown = await pgUnreachable();

/** Every file under `dir` holding `needle` (as UTF-8 bytes), as paths relative to `dir`. */
function filesHolding(dir: string, needle: string): string[] {
  const bytes = Buffer.from(needle);
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((d) => d.isFile())
    .map((d) => join(d.parentPath, d.name))
    .filter((f) => readFileSync(f).includes(bytes))
    .map((f) => f.slice(dir.length + 1));
}

/** Rows of every table of `c`'s database (outside the system schemas) whose text holds `needle`. */
async function pgRowsHolding(c: pg.Client, needle: string): Promise<string[]> {
  const tables = await c.query<{ s: string; t: string }>(
    `SELECT table_schema AS s, table_name AS t FROM information_schema.tables
     WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('information_schema', 'pg_catalog')`,
  );
  const out: string[] = [];
  for (const { s, t } of tables.rows) {
    const r = await c.query(`SELECT count(*)::int AS n FROM "${s}"."${t}" x WHERE strpos(x::text, $1) > 0`, [
      needle,
    ]);
    if (r.rows[0].n > 0) out.push(`${s}.${t}: ${r.rows[0].n}`);
  }
  return out;
}

describe.skipIf(pgDown !== undefined)(
  'deletion reaches every store (embedded, with PostgreSQL source and destination)',
  () => {
    let dataDir: string;
    let inputDir: string;
    let source: ScratchDatabase;
    let dest: ScratchDatabase;
    let destClient: pg.Client;
    let server: RunningServer | undefined;

    beforeAll(async () => {
      dataDir = mkdtempSync(join(tmpdir(), 'trib-privacy-'));
      inputDir = mkdtempSync(join(tmpdir(), 'trib-privacy-in-'));
      source = await scratchDatabase('trib_priv_src');
      dest = await scratchDatabase('trib_priv_dst');
      const c = new pg.Client(source.config);
      await c.connect();
      await c.query('CREATE TABLE customers (id int PRIMARY KEY, user_id text, email text, name text)');
      await c.query('INSERT INTO customers VALUES (1, $1, $2, $3), (2, $4, $5, $6)', [
        VICTIM.userId,
        VICTIM.email,
        VICTIM.name,
        KEEPER.userId,
        KEEPER.email,
        KEEPER.name,
      ]);
      await c.end();
      writeFileSync(
        join(inputDir, 'people.csv'),
        `uid,email,name\n${VICTIM.userId},${VICTIM.email},${VICTIM.name}\n${KEEPER.userId},${KEEPER.email},${KEEPER.name}\n`,
      );
      destClient = new pg.Client(dest.config);
      await destClient.connect();
    });

    afterAll(async () => {
      await server?.close().catch(() => undefined);
      await destClient?.end();
      await source?.drop();
      await dest?.drop();
      rmSync(dataDir, { recursive: true, force: true });
      rmSync(inputDir, { recursive: true, force: true });
    });

    const yaml = () => `version: 1
sources:
  - id: web
    type: http
    writeKey: ${WRITE_KEY}
  - id: hooks
    type: webhook
    verify: { kind: none }
    rules:
      - when: { kind: signup }
        type: identify
        userId: user.id
        traits: { email: user.email, name: user.name }
  - id: files
    type: file
    streams:
      - name: people
        path: ${join(inputDir, 'people.csv')}
        primaryKey: [uid]
        events:
          type: identify
          userId: uid
          traits: [email, name]
  - id: crm
    type: postgres
    connectionString: ${source.url}
    streams:
      - name: customers
        table: public.customers
        events:
          type: identify
          userId: user_id
          traits: [email, name]
destinations:
  - id: warehouse
    type: duckdb
  - id: other
    type: duckdb
    path: other.duckdb
  - id: lake
    type: parquet
    path: lake
  - id: pg
    type: postgres
    connectionString: ${dest.url}
    schema: segment_{source}
`;

    const start = async () => {
      const { config } = parseConfig(yaml(), {});
      server = await startServer({
        config,
        dataDir,
        adminToken: ADMIN,
        logger: pino({ level: 'silent' }),
        port: 0,
        host: '127.0.0.1',
        deletionRetryMs: 300,
      });
      return server;
    };

    const admin = async (method: 'GET' | 'POST', url: string, body?: unknown) => {
      const res = await server!.app.inject({
        method,
        url,
        headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
        payload: body === undefined ? undefined : JSON.stringify(body),
      });
      return { status: res.statusCode, body: res.json() as Record<string, unknown> };
    };

    const track = async (batch: unknown[]) => {
      const res = await server!.app.inject({
        method: 'POST',
        url: '/v1/batch',
        headers: {
          authorization: `Basic ${Buffer.from(`${WRITE_KEY}:`).toString('base64')}`,
          'content-type': 'application/json',
        },
        payload: JSON.stringify({ batch }),
      });
      expect(res.statusCode).toBe(200);
      return res.json() as { accepted: number; rejected: unknown[] };
    };

    const hook = async (user: { id: string; email: string; name: string }) => {
      const res = await server!.app.inject({
        method: 'POST',
        url: '/webhooks/hooks',
        headers: { 'content-type': 'application/json' },
        payload: JSON.stringify({ kind: 'signup', user }),
      });
      expect(res.statusCode).toBe(200);
    };

    const settle = async (s: RunningServer) => {
      await s.loader.drained();
      await s.identity?.drained();
      await Promise.all(s.destinations.map((d) => d.drained()));
    };

    const query = async (sql: string) => {
      const r = await admin('POST', '/admin/v1/query', { sql });
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      return r.body.rows as Record<string, unknown>[];
    };

    it('erases the person from every table, file and log segment, and suppresses their later events', async () => {
      const s = await start();
      await track([
        {
          type: 'identify',
          messageId: 'v-1',
          userId: VICTIM.userId,
          anonymousId: VICTIM.anonymousId,
          traits: { email: VICTIM.email, name: VICTIM.name },
        },
        {
          type: 'track',
          messageId: 'v-2',
          userId: VICTIM.userId,
          event: 'Order Completed',
          properties: { total: 12 },
        },
        // Only the anonymous id: identity resolution ties it to the person.
        { type: 'page', messageId: 'v-3', anonymousId: VICTIM.anonymousId, name: 'Pricing' },
        // Rejected (impossible timestamp): kept in failed_events with the email in it.
        {
          type: 'track',
          messageId: 'v-4',
          anonymousId: VICTIM.anonymousId,
          event: 'Bad',
          timestamp: '2020-02-30T00:00:00Z',
          properties: { email: VICTIM.email },
        },
        {
          type: 'identify',
          messageId: 'k-1',
          userId: KEEPER.userId,
          traits: { email: KEEPER.email, name: KEEPER.name },
        },
        {
          type: 'track',
          messageId: 'k-2',
          userId: KEEPER.userId,
          event: 'Order Completed',
          properties: { total: 7 },
        },
      ]);
      await hook({ id: VICTIM.userId, email: VICTIM.email, name: VICTIM.name });
      await hook({ id: KEEPER.userId, email: KEEPER.email, name: KEEPER.name });
      expect((await s.sources.sync('files', { trigger: 'test' })).status).toBe('succeeded');
      expect((await s.sources.sync('crm', { trigger: 'test' })).status).toBe('succeeded');
      await settle(s);

      // Before: the person is in every store (rows), so the searches below can fail.
      const victimEvents = await query(
        `SELECT source_id, count(*) AS n FROM events WHERE user_id = '${VICTIM.userId}' OR anonymous_id = '${VICTIM.anonymousId}' GROUP BY 1 ORDER BY 1`,
      );
      expect(victimEvents.map((r) => r.source_id)).toEqual(['crm', 'files', 'hooks', 'web']);
      expect(
        await query(
          `SELECT count(*) AS n FROM failed_events WHERE contains(CAST(payload AS VARCHAR), '${VICTIM.email}')`,
        ),
      ).toEqual([{ n: 1 }]);
      expect((await query(`SELECT id FROM web.users WHERE id = '${VICTIM.userId}'`)).length).toBe(1);
      expect((await query(`SELECT uid FROM files.people WHERE uid = '${VICTIM.userId}'`)).length).toBe(1);
      expect(
        (await query(`SELECT count(*) AS n FROM profile_identifiers WHERE value = '${VICTIM.email}'`))[0]!.n,
      ).toBe(1);
      expect(await pgRowsHolding(destClient, VICTIM.email)).not.toEqual([]);
      expect(filesHolding(dataDir, VICTIM.email).length).toBeGreaterThan(0);

      // The request names the email only; the identity graph finds the user and anonymous ids.
      const created = await admin('POST', '/admin/v1/privacy/deletions', {
        identities: [`email:${VICTIM.email}`],
      });
      expect(created.status).toBe(202);
      const id = created.body.id as string;
      let reg: Regulation | undefined;
      for (const deadline = Date.now() + 90_000; Date.now() < deadline; ) {
        reg = (await admin('GET', `/admin/v1/privacy/deletions/${id}`)).body as unknown as Regulation;
        if (reg.status === 'done') break;
        await new Promise((r) => setTimeout(r, 200));
      }
      expect(reg?.status, JSON.stringify(reg?.steps)).toBe('done');
      expect(reg!.steps.map((st) => st.store).sort()).toEqual([
        'destination:lake',
        'destination:other',
        'destination:pg',
        'destination:warehouse',
        'events',
        'identity',
        'log',
        'scrub',
      ]);
      // Once done, the request keeps no identity of the person (only the suppression hashes).
      expect(reg!.identities).toEqual([]);
      expect(reg!.resolved).toEqual([]);

      // Later events of the person are dropped at collection (any of their identifiers), counted.
      const later = await track([
        { type: 'track', messageId: 'v-9', userId: VICTIM.userId, event: 'Came Back' },
        { type: 'page', messageId: 'v-10', anonymousId: VICTIM.anonymousId, name: 'Again' },
        { type: 'track', messageId: 'k-9', userId: KEEPER.userId, event: 'Came Back' },
      ]);
      expect(later.rejected).toEqual([]);
      await hook({ id: VICTIM.userId, email: VICTIM.email, name: VICTIM.name });
      await settle(s);
      const metrics = (await s.app.inject({ method: 'GET', url: '/metrics' })).body;
      expect(metrics).toContain('tributary_events_suppressed_total{source="web"} 2');
      expect(metrics).toContain('tributary_events_suppressed_total{source="hooks"} 1');

      // The other person is intact everywhere.
      expect(
        await query(`SELECT message_id FROM events WHERE user_id = '${KEEPER.userId}' ORDER BY 1`),
      ).toEqual(
        expect.arrayContaining([{ message_id: 'k-1' }, { message_id: 'k-2' }, { message_id: 'k-9' }]),
      );
      expect((await query(`SELECT id FROM web.users WHERE id = '${KEEPER.userId}'`)).length).toBe(1);
      expect((await query(`SELECT uid FROM files.people WHERE uid = '${KEEPER.userId}'`)).length).toBe(1);
      expect(
        (await query(`SELECT count(*) AS n FROM profile_identifiers WHERE value = '${KEEPER.email}'`))[0]!.n,
      ).toBe(1);
      expect((await pgRowsHolding(destClient, KEEPER.email)).length).toBeGreaterThan(0);
      const keeperLake = await query(
        `SELECT count(*) AS n FROM log.raw_events WHERE contains(CAST(event AS VARCHAR), '${KEEPER.email}')`,
      );
      expect(keeperLake[0]!.n).toBeGreaterThan(0);

      await s.close();
      server = undefined;
      // No trace in any file of the data folder (databases, WALs, log segments, the lake) or any
      // PostgreSQL row.
      for (const t of TRACES) {
        expect(filesHolding(dataDir, t), t).toEqual([]);
        expect(await pgRowsHolding(destClient, t), t).toEqual([]);
      }
      expect(filesHolding(dataDir, KEEPER.email).length).toBeGreaterThan(0);
      // The lake still reads, without the person.
      const lakeFiles = readdirSync(join(dataDir, 'lake'), { recursive: true }).filter((f) =>
        String(f).endsWith('.parquet'),
      );
      expect(lakeFiles.length).toBeGreaterThan(0);
    }, 180_000);
  },
);
