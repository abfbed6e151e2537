import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { type RunningServer, startServer } from '../../src/server/server.js';

/**
 * An analyst's SQL (the integrator marks the request; here a header does) reads masked views:
 * personal columns are keyed digests, JSON columns NULL, raw tables out of reach whatever the
 * query does with them.
 */

const ADMIN = 'mask-admin';
const WRITE_KEY = 'wk_mask';
const EMAIL = 'ada.mask@example.org';
let server: RunningServer;
let dataDir: string;

const q = async (sql: string, analyst = true) => {
  const res = await server.app.inject({
    method: 'POST',
    url: '/admin/v1/query',
    headers: {
      authorization: `Bearer ${ADMIN}`,
      'content-type': 'application/json',
      ...(analyst ? { 'x-test-role': 'analyst' } : {}),
    },
    payload: JSON.stringify({ sql }),
  });
  return { status: res.statusCode, body: res.json() as { rows?: Record<string, unknown>[]; code?: string } };
};
const rows = async (sql: string, analyst = true) => {
  const r = await q(sql, analyst);
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body.rows!;
};

beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'trib-mask-'));
  const { config } = parseConfig(
    `version: 1
sources:
  - id: web
    type: http
    writeKey: ${WRITE_KEY}
privacy:
  personalColumns: [plan_secret_code]
`,
    {},
  );
  server = await startServer({
    config,
    dataDir,
    adminToken: ADMIN,
    logger: pino({ level: 'silent' }),
    port: 0,
    host: '127.0.0.1',
    maskPersonal: (req) => req.headers['x-test-role'] === 'analyst',
  });
  const res = await server.app.inject({
    method: 'POST',
    url: '/v1/batch',
    headers: {
      authorization: `Basic ${Buffer.from(`${WRITE_KEY}:`).toString('base64')}`,
      'content-type': 'application/json',
    },
    payload: JSON.stringify({
      batch: [
        {
          type: 'identify',
          messageId: 'm1',
          userId: 'u1',
          traits: { email: EMAIL, first_name: 'Ada', plan: 'pro', plan_secret_code: 'X-77' },
        },
        { type: 'identify', messageId: 'm2', userId: 'u2', traits: { email: EMAIL, plan: 'free' } },
        {
          type: 'track',
          messageId: 'm3',
          userId: 'u1',
          event: 'Order Completed',
          properties: { total: 5, email: EMAIL },
        },
      ],
    }),
  });
  expect(res.statusCode).toBe(200);
  await server.loader.drained();
  await Promise.all(server.destinations.map((d) => d.drained()));
  await server.identity?.drained();
});

afterAll(async () => {
  await server?.close();
  rmSync(dataDir, { recursive: true, force: true });
});

describe('masked SQL for analysts', () => {
  it('masks personal columns with a keyed digest (equal values stay equal), keeps the others, hides JSON', async () => {
    const users = await rows(
      'SELECT id, email, first_name, plan, plan_secret_code FROM web.users ORDER BY plan',
    );
    expect(users).toHaveLength(2);
    for (const u of users) {
      expect(String(u.email)).toMatch(/^masked:[0-9a-f]{24}$/);
      expect(String(u.id)).toMatch(/^masked:/);
    }
    expect(users[0]!.email).toBe(users[1]!.email); // joins and distinct counts still work
    expect(users.map((u) => u.plan)).toEqual(['free', 'pro']);
    expect(users[1]!.first_name).toMatch(/^masked:/);
    expect(users[1]!.plan_secret_code).toMatch(/^masked:/); // named in privacy.personalColumns
    expect(await rows("SELECT payload, user_id FROM events WHERE message_id = 'm1'")).toEqual([
      { payload: null, user_id: expect.stringMatching(/^masked:/) },
    ]);
    // The admin (no mask) sees the values.
    expect(await rows("SELECT email FROM web.users WHERE id = 'u1'", false)).toEqual([{ email: EMAIL }]);
  });

  it('gives no way around the mask: functions, guesses, joins, JSON, CTEs, subqueries', async () => {
    const none = [
      `SELECT id FROM web.users WHERE email = '${EMAIL}'`,
      `SELECT id FROM web.users WHERE lower(email) = '${EMAIL}'`,
      `SELECT id FROM web.users WHERE md5(email) = md5('${EMAIL}')`,
      `SELECT id FROM web.users WHERE sha256(email) = sha256('${EMAIL}')`,
      `SELECT id FROM web.users WHERE email LIKE '%example.org%'`,
      `SELECT u.id FROM web.users u JOIN (VALUES ('${EMAIL}'), ('other@x.io')) v(e) ON u.email = v.e`,
      `WITH x AS (SELECT * FROM web.users) SELECT id FROM x WHERE email = '${EMAIL}'`,
      `SELECT id FROM (SELECT * FROM web.users) s WHERE s.email = '${EMAIL}'`,
      `SELECT message_id FROM events WHERE payload->>'$.traits.email' = '${EMAIL}'`,
      `SELECT message_id FROM events WHERE contains(CAST(payload AS VARCHAR), 'example.org')`,
      `SELECT message_id FROM events e WHERE contains(CAST(e AS VARCHAR), 'example.org')`,
      `SELECT profile_id FROM profile_identifiers WHERE value = '${EMAIL}'`,
    ];
    for (const sql of none) expect(await rows(sql), sql).toEqual([]);
    const refused = [
      'SELECT * FROM log.raw_events',
      'SELECT column_name FROM information_schema.columns',
      'SELECT * FROM information_schema.tables',
      `SELECT * FROM "${(await rows('SELECT current_database() AS d', false))[0]!.d}".main.events`,
      'SELECT * FROM duckdb_tables()',
      'SELECT * FROM duckdb_views()',
      "SELECT * FROM query('SELECT * FROM web.users')",
    ];
    for (const sql of refused) {
      const r = await q(sql);
      expect(r.status, sql).toBeGreaterThanOrEqual(400);
      expect(['TRIB_ERR_QUERY_NOT_ALLOWED', 'TRIB_ERR_QUERY_FAILED'], `${sql}: ${r.body.code}`).toContain(
        r.body.code,
      );
    }
    // The raw archive is there, masked, under another name.
    const raw = await rows('SELECT message_id, event FROM raw_log.raw_events ORDER BY message_id');
    expect(raw.map((r) => r.event)).toEqual([null, null, null]);
  });
});

describe('masked Profile API for analysts', () => {
  const get = async (url: string, analyst = true) => {
    const res = await server.app.inject({
      method: 'GET',
      url,
      headers: { authorization: `Bearer ${ADMIN}`, ...(analyst ? { 'x-test-role': 'analyst' } : {}) },
    });
    return { status: res.statusCode, body: res.json() as Record<string, unknown> };
  };

  it('serves profiles by id with identifiers and personal traits masked, as the SQL masks them', async () => {
    const admin = await get(`/v1/profiles/email:${EMAIL}`, false);
    expect(admin.status).toBe(200);
    const id = admin.body.profileId as string;
    const masked = await get(`/v1/profiles/profile_id:${id}`);
    expect(masked.status).toBe(200);
    const ids = masked.body.identifiers as { type: string; value: string }[];
    expect(ids.length).toBeGreaterThan(0);
    for (const i of ids) expect(i.value).toMatch(/^masked:[0-9a-f]{24}$/);
    const traits = masked.body.traits as Record<string, unknown>;
    expect(traits.email).toMatch(/^masked:/);
    expect(traits.plan_secret_code).toMatch(/^masked:/);
    expect(traits.plan).toBeDefined();
    expect(JSON.stringify(masked.body)).not.toContain(EMAIL);
    // The same digest as the masked SQL column: analysts can join the two.
    const [u] = await rows("SELECT email FROM web.users WHERE plan = 'pro'");
    expect(traits.email).toBe(u!.email);
  });

  it('refuses what would reveal or confirm a value: lookups by identifier, personal searches, explain, matches', async () => {
    for (const url of [
      `/v1/profiles/email:${EMAIL}`,
      '/v1/profiles/user_id:u1',
      `/v1/profiles?trait=email&value=${EMAIL}`,
      `/v1/profiles/email:${EMAIL}/explain`,
      '/v1/profiles/matches',
    ]) {
      const r = await get(url);
      expect(r.status, url).toBe(403);
      expect(r.body.code).toBe('TRIB_ERR_PRIVACY_MASKED');
    }
    const search = await get('/v1/profiles?trait=plan&value=pro');
    expect(search.status).toBe(200);
    expect(JSON.stringify(search.body)).not.toContain(EMAIL);
  });
});
