import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { type RunningServer, startServer } from '../../src/server/server.js';
import { ADMIN_TOKEN, basicAuth, WRITE_KEY } from '../helpers.js';
import { HttpReceiver } from '../http-receiver.js';
import { PG_ADMIN, pgUnreachable } from '../pg.js';

/**
 * Reverse ETL in the embedded server through the registry's own connectors: a CRM table in the
 * machine's PostgreSQL (postgres-upsert) and a webhook (http), the destinations a team names
 * under `destinations:` and takes no events (`filters.condition: "false"`).
 */

const problem = await pgUnreachable();

describe.skipIf(problem !== undefined)(
  `reverse ETL into real connectors${problem ? ` (${problem})` : ''}`,
  () => {
    const schema = `trib_retl_${randomBytes(4).toString('hex')}`;
    let admin: pg.Client;
    let hook: HttpReceiver;
    let server: RunningServer;
    let dataDir: string;
    const auth = { authorization: `Bearer ${ADMIN_TOKEN}` };

    const send = async (batch: object[]) => {
      const res = await server.app.inject({
        method: 'POST',
        url: '/v1/batch',
        headers: { authorization: basicAuth(WRITE_KEY), 'content-type': 'application/json' },
        payload: JSON.stringify({ batch }),
      });
      expect(res.statusCode).toBe(200);
      await server.loader.drained();
    };
    const order = (userId: string, n: number) => ({
      type: 'track',
      event: 'Order Completed',
      userId,
      messageId: `${userId}-${n}`,
    });
    const run = async (model: string) => {
      const res = await server.app.inject({
        method: 'POST',
        url: `/admin/v1/models/${model}/run`,
        headers: auth,
      });
      expect(res.statusCode, res.body).toBe(200);
      return res.json() as Record<string, unknown>;
    };
    const rows = async () =>
      (await admin.query(`SELECT user_id, orders FROM ${schema}.buyers ORDER BY user_id`)).rows;

    beforeAll(async () => {
      admin = new pg.Client(PG_ADMIN);
      await admin.connect();
      await admin.query(`CREATE SCHEMA ${schema}`);
      hook = await new HttpReceiver().start();
      dataDir = mkdtempSync(join(tmpdir(), 'tributary-retl-conn-'));
      const yaml = `version: 1
sources:
  - id: web
    type: http
    writeKey: ${WRITE_KEY}
destinations:
  - id: warehouse
    type: duckdb
  - id: crm
    type: postgres-upsert
    host: 127.0.0.1
    database: test
    user: postgres
    schema: ${schema}
    table: buyers
    columns: { user_id: user_id, orders: { path: orders, type: integer } }
    key: [user_id]
    createTable: true
    filters: { condition: "false" }
  - id: hook
    type: http
    url: ${hook.url}/rows
    filters: { condition: "false" }
models:
  - id: buyers
    sql: SELECT user_id, count(*) AS orders FROM events WHERE event = 'Order Completed' GROUP BY user_id
    primaryKey: user_id
    destination: crm
    syncMode: mirror
  - id: buyers-hook
    sql: SELECT user_id, count(*) AS orders FROM events WHERE event = 'Order Completed' GROUP BY user_id
    primaryKey: user_id
    destination: hook
    syncMode: mirror
`;
      server = await startServer({
        config: parseConfig(yaml, {}).config,
        dataDir,
        adminToken: ADMIN_TOKEN,
        logger: pino({ level: 'silent' }),
        port: 0,
        host: '127.0.0.1',
      });
    });
    afterAll(async () => {
      await server?.close();
      await hook?.close();
      await admin?.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await admin?.end();
      if (dataDir) rmSync(dataDir, { recursive: true, force: true });
    });

    it('mirrors a model into a PostgreSQL table: upserts what changed, deletes what is gone', async () => {
      await send([order('u1', 1), order('u1', 2), order('u2', 1)]);
      expect(await run('buyers')).toMatchObject({ status: 'succeeded', added: 2, failed: 0 });
      expect(await rows()).toEqual([
        { user_id: 'u1', orders: 2 },
        { user_id: 'u2', orders: 1 },
      ]);
      await send([order('u2', 2)]);
      expect(await run('buyers')).toMatchObject({ added: 0, changed: 1, removed: 0 });
      expect(await rows()).toEqual([
        { user_id: 'u1', orders: 2 },
        { user_id: 'u2', orders: 2 },
      ]);
      // The model's events took no other way: the destinations' filters let no event through.
      expect(hook.requests).toHaveLength(0);
    });

    it('sends a model to a webhook, each row with its operation and idempotency key', async () => {
      expect(await run('buyers-hook')).toMatchObject({ status: 'succeeded', added: 2, failed: 0 });
      expect(hook.requests.map((r) => r.headers['x-tributary-operation'])).toEqual(['upsert', 'upsert']);
      expect(hook.requests.map((r) => (r.json as { user_id: string }).user_id).sort()).toEqual(['u1', 'u2']);
      expect(new Set(hook.requests.map((r) => r.headers['idempotency-key'])).size).toBe(2);
      // Nothing changed: nothing is sent.
      expect(await run('buyers-hook')).toMatchObject({ added: 0, changed: 0, removed: 0 });
      expect(hook.requests).toHaveLength(2);
    });
  },
);
