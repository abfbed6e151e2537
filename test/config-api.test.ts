import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config/load.js';
import { type RunningServer, startServer } from '../src/server/server.js';
import { ADMIN_TOKEN, basicAuth } from './helpers.js';
import { pgUnreachable, scratchDatabase } from './pg.js';

const FILE = `# the team's configuration, kept in git
version: 1
sources:
  - id: web
    type: http
    writeKey: wk_file
  - id: app
    type: http
    writeKey: \${APP_KEY}
`;
const ENV = { APP_KEY: 'wk_app_from_env' };

/** A function that sets `properties.tag`. */
const tagFunction = (tag: string) =>
  `export default function (e: { properties?: Record<string, unknown> }) { return { ...e, properties: { ...e.properties, tag: ${JSON.stringify(tag)} } }; }\n`;

const running: RunningServer[] = [];
const folders: string[] = [];
afterEach(async () => {
  for (const s of running.splice(0)) await s.close();
  for (const d of folders.splice(0)) rmSync(d, { recursive: true, force: true });
});

function folder(): string {
  const d = mkdtempSync(join(tmpdir(), 'trib-confapi-'));
  folders.push(d);
  return d;
}

/** Starts the embedded server as `tributary start` does: with the file's text, so it keeps versions. */
async function start(dataDir: string, text = FILE): Promise<RunningServer> {
  const { config } = parseConfig(text, ENV);
  const s = await startServer({
    config,
    configDir: dataDir,
    configFile: { text, path: join(dataDir, 'tributary.yaml') },
    dataDir,
    adminToken: ADMIN_TOKEN,
    logger: pino({ level: 'silent' }),
    port: 0,
    host: '127.0.0.1',
    env: ENV,
  });
  running.push(s);
  return s;
}

async function stop(s: RunningServer): Promise<void> {
  running.splice(running.indexOf(s), 1);
  await s.close();
}

const admin = { authorization: `Bearer ${ADMIN_TOKEN}` };

type Entry = Record<string, unknown> & { id: string; name?: string };
/** The admin API's answers, as these tests read them. */
interface Answer {
  code: string;
  message: string;
  issues: { path: string; message: string }[];
  version: { n: number; origin: string; author: string; message: string };
  versions: { n: number; message: string }[];
  changes: unknown[];
  config: { sources: Entry[] };
  sources: Entry[];
  diff: string;
}

async function call(
  s: RunningServer,
  method: 'GET' | 'PUT' | 'PATCH' | 'DELETE' | 'POST',
  url: string,
  body?: unknown,
  headers: Record<string, string> = {},
) {
  const res = await s.app.inject({
    method,
    url,
    headers: { ...admin, ...headers, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    payload: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.statusCode, body: res.json() as Answer, headers: res.headers };
}

async function track(s: RunningServer, key: string, event: string, messageId: string) {
  return s.app.inject({
    method: 'POST',
    url: '/v1/track',
    headers: { authorization: basicAuth(key), 'content-type': 'application/json' },
    payload: JSON.stringify({ userId: 'u1', event, messageId }),
  });
}

async function rows(s: RunningServer, sql: string) {
  return (await s.warehouse.query(sql)).rows;
}

describe('configuration through the admin API', () => {
  it('a write key changed through the API takes effect on the next request, without a restart', async () => {
    const s = await start(folder());
    expect((await track(s, 'wk_file', 'Before', 'm1')).statusCode).toBe(200);
    const r = await call(s, 'PATCH', '/admin/v1/config/sources/web?message=rotate%20the%20key', {
      writeKey: 'wk_rotated',
    });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.version).toMatchObject({
      n: 2,
      author: 'admin-token',
      message: 'rotate the key',
      origin: 'api',
    });
    expect(r.body.changes).toEqual([
      { section: 'sources', id: 'web', change: 'changed', keys: ['writeKey'] },
    ]);
    expect(r.headers.etag).toBe('"2"');

    const old = await track(s, 'wk_file', 'After', 'm2');
    expect(old.statusCode).toBe(401);
    expect(old.json()).toMatchObject({ code: 'TRIB_ERR_AUTH_UNKNOWN_WRITE_KEY' });
    expect((await track(s, 'wk_rotated', 'After', 'm3')).statusCode).toBe(200);
    await s.loader.drained();
    expect(await rows(s, 'SELECT message_id FROM events ORDER BY message_id')).toEqual([
      { message_id: 'm1' },
      { message_id: 'm3' },
    ]);
    // The admin list of sources follows.
    const listed = await call(s, 'GET', '/admin/v1/sources');
    expect(listed.body.sources[0]).toMatchObject({ id: 'web', writeKey: 'wk_rotated' });
  });

  it('a tracking plan added through the API judges the next batch; deleting it lets events through again', async () => {
    const s = await start(folder());
    const plan = { onUnplannedEvent: 'block', events: { 'Signed Up': {} } };
    const put = await call(s, 'PUT', '/admin/v1/config/sources/web/plans/signup', plan);
    expect(put.status, JSON.stringify(put.body)).toBe(200);
    expect((await track(s, 'wk_file', 'Signed Up', 'p1')).statusCode).toBe(200);
    expect((await track(s, 'wk_file', 'Unplanned', 'p2')).statusCode).toBe(200);
    await s.loader.drained();
    expect(await rows(s, 'SELECT message_id FROM events ORDER BY message_id')).toEqual([
      { message_id: 'p1' },
    ]);
    expect(await rows(s, 'SELECT message_id, stage FROM failed_events ORDER BY message_id')).toEqual([
      { message_id: 'p2', stage: 'plan' },
    ]);

    const del = await call(s, 'DELETE', '/admin/v1/config/sources/web/plans/signup');
    expect(del.status).toBe(200);
    expect((await track(s, 'wk_file', 'Unplanned', 'p3')).statusCode).toBe(200);
    await s.loader.drained();
    expect(await rows(s, 'SELECT message_id FROM events ORDER BY message_id')).toEqual([
      { message_id: 'p1' },
      { message_id: 'p3' },
    ]);
  });

  it('a function added, changed and removed through the API runs on the next batch; one that does not compile is refused', async () => {
    const dir = folder();
    writeFileSync(join(dir, 'tag.ts'), tagFunction('one'));
    writeFileSync(join(dir, 'tag2.ts'), tagFunction('two'));
    writeFileSync(join(dir, 'broken.ts'), 'export default function (e) { return e;');
    const s = await start(dir);
    const tagged = async (id: string) => {
      expect((await track(s, 'wk_file', 'E', id)).statusCode).toBe(200);
      await s.loader.drained();
      const r = await rows(
        s,
        `SELECT json_extract_string(payload, '$.properties.tag') AS tag FROM events WHERE message_id = '${id}'`,
      );
      return r[0]?.tag;
    };
    expect(await tagged('f0')).toBeNull();
    const put = await call(s, 'PUT', '/admin/v1/config/sources/web/functions/tag', { file: 'tag.ts' });
    expect(put.status, JSON.stringify(put.body)).toBe(200);
    expect(await tagged('f1')).toBe('one');
    expect(
      (await call(s, 'PATCH', '/admin/v1/config/sources/web/functions/tag', { file: 'tag2.ts' })).status,
    ).toBe(200);
    expect(await tagged('f2')).toBe('two');
    const broken = await call(s, 'PUT', '/admin/v1/config/sources/web/functions/bad', { file: 'broken.ts' });
    expect(broken.status).toBe(400);
    expect(broken.body.code).toBe('TRIB_ERR_CONFIG_CHANGE_INVALID');
    expect(broken.body.issues[0]!.path).toBe('TRIB_ERR_TRANSFORM_INVALID');
    expect(await tagged('f3')).toBe('two');
    expect((await call(s, 'DELETE', '/admin/v1/config/sources/web/functions/tag')).status).toBe(200);
    expect(await tagged('f4')).toBeNull();
    expect((await call(s, 'GET', '/admin/v1/config')).body.version.n).toBe(4);
  });

  it('shows ${ENV} references, never their values; versions, diffs and a revert', async () => {
    const s = await start(folder());
    const cur = await call(s, 'GET', '/admin/v1/config');
    expect(cur.body.version).toMatchObject({ n: 1, author: 'file', origin: 'file' });
    expect(cur.body.config.sources[1]).toEqual({ id: 'app', type: 'http', writeKey: '${APP_KEY}' });
    expect(JSON.stringify(cur.body)).not.toContain('wk_app_from_env');
    const yaml = await s.app.inject({ method: 'GET', url: '/admin/v1/config?format=yaml', headers: admin });
    expect(yaml.body).toBe(FILE);

    await call(s, 'PUT', '/admin/v1/config/sources/shop', { type: 'http', writeKey: 'wk_shop' });
    await call(s, 'DELETE', '/admin/v1/config/sources/app');
    const versions = await call(s, 'GET', '/admin/v1/config/versions');
    expect(versions.body.versions.map((v) => [v.n, v.message])).toEqual([
      [3, 'DELETE sources/app'],
      [2, 'PUT sources/shop'],
      [1, expect.stringMatching(/^read from .*tributary\.yaml$/)],
    ]);

    const diff = await call(s, 'GET', '/admin/v1/config/diff?from=1&to=3');
    expect(diff.body.changes).toEqual([
      { section: 'sources', id: 'shop', change: 'added' },
      { section: 'sources', id: 'app', change: 'removed' },
    ]);
    expect(diff.body.diff).toContain('-    writeKey: ${APP_KEY}');
    expect(diff.body.diff).toContain('+    writeKey: wk_shop');
    expect((await track(s, 'wk_app_from_env', 'X', 'r1')).statusCode).toBe(401);

    const v2 = await call(s, 'GET', '/admin/v1/config/versions/2');
    expect(v2.body.config.sources.map((x) => x.id)).toEqual(['web', 'app', 'shop']);

    const back = await call(s, 'POST', '/admin/v1/config/revert/1');
    expect(back.status, JSON.stringify(back.body)).toBe(200);
    expect(back.body.version).toMatchObject({ n: 4, origin: 'revert', message: 'revert to version 1' });
    const now = await s.app.inject({ method: 'GET', url: '/admin/v1/config?format=yaml', headers: admin });
    expect(now.body).toBe(FILE);
    expect((await track(s, 'wk_app_from_env', 'X', 'r2')).statusCode).toBe(200);
    expect((await track(s, 'wk_shop', 'X', 'r3')).statusCode).toBe(401);
    expect((await call(s, 'GET', '/admin/v1/config/versions/99')).body.code).toBe(
      'TRIB_ERR_CONFIG_VERSION_NOT_FOUND',
    );
  });

  it('refuses an invalid change with the zod path, and nothing changes', async () => {
    const s = await start(folder());
    const dup = await call(s, 'PATCH', '/admin/v1/config/sources/app', { writeKey: 'wk_file' });
    expect(dup.status).toBe(400);
    expect(dup.body.code).toBe('TRIB_ERR_CONFIG_CHANGE_INVALID');
    expect(dup.body.issues).toContainEqual({
      path: 'sources[1].writeKey',
      message: 'write key already used by sources[0]',
    });
    const bad = await call(s, 'PUT', '/admin/v1/config/sources/web', {
      type: 'http',
      writeKey: 'k',
      enabled: 'yes',
    });
    expect(bad.status).toBe(400);
    expect(bad.body.issues.map((i) => i.path)).toEqual(['sources[0].enabled']);
    const secret = await call(s, 'PUT', '/admin/v1/config/destinations/pg', {
      type: 'postgres',
      connectionString: 'postgres://u:literal@127.0.0.1/x',
    });
    expect(secret.status).toBe(400);
    expect(secret.body.issues[0]!.path).toBe('destinations[1].connectionString');
    const missingPlanFile = await call(s, 'PUT', '/admin/v1/config/sources/web/plans', [
      { file: 'nowhere.yaml' },
    ]);
    expect(missingPlanFile.status).toBe(400);
    expect(missingPlanFile.body.issues[0]!.path).toBe('TRIB_ERR_PLAN_INVALID');
    const missing = await call(s, 'PATCH', '/admin/v1/config/sources/nope', { name: 'x' });
    expect(missing.status).toBe(404);
    expect(missing.body.code).toBe('TRIB_ERR_CONFIG_ENTRY_NOT_FOUND');

    expect((await call(s, 'GET', '/admin/v1/config/versions')).body.versions).toHaveLength(1);
    expect((await track(s, 'wk_file', 'Still', 'i1')).statusCode).toBe(200);
    expect((await track(s, 'wk_app_from_env', 'Still', 'i2')).statusCode).toBe(200);
  });

  it('takes a change only against the current version (If-Match); of two at once, one gets 409', async () => {
    const s = await start(folder());
    const etag = (await call(s, 'GET', '/admin/v1/config')).headers.etag as string;
    expect(etag).toBe('"1"');
    const [a, b] = await Promise.all([
      call(s, 'PATCH', '/admin/v1/config/sources/web', { name: 'A' }, { 'if-match': etag }),
      call(s, 'PATCH', '/admin/v1/config/sources/web', { name: 'B' }, { 'if-match': etag }),
    ]);
    expect([a.status, b.status].sort()).toEqual([200, 409]);
    const lost = a.status === 409 ? a : b;
    expect(lost.body.code).toBe('TRIB_ERR_CONFIG_VERSION_CONFLICT');
    const won = a.status === 200 ? 'A' : 'B';
    const cur = await call(s, 'GET', '/admin/v1/config');
    expect(cur.body.version.n).toBe(2);
    expect(cur.body.config.sources[0]!.name).toBe(won);
    const again = await call(
      s,
      'PATCH',
      '/admin/v1/config/sources/web',
      { name: 'C' },
      { 'if-match': '"2"' },
    );
    expect(again.status).toBe(200);
    // A change that changes nothing stores no version.
    const same = await call(s, 'PATCH', '/admin/v1/config/sources/web', { name: 'C' });
    expect(same.body).toMatchObject({ version: { n: 3 }, changes: [] });
    expect((await call(s, 'GET', '/admin/v1/config/versions')).body.versions).toHaveLength(3);
  });

  it('when the version cannot be stored (another writer got there first), what was started is undone and nothing changes', async () => {
    const s = await start(folder());
    // Another writer of the same store appends version 2 behind this server's back.
    await s.warehouse.appendConfigVersion({
      author: 'other',
      message: 'elsewhere',
      origin: 'api',
      yaml: FILE,
    });
    const key = await call(s, 'PATCH', '/admin/v1/config/sources/web', { writeKey: 'wk_lost' });
    expect(key.status).toBe(409);
    expect(key.body.code).toBe('TRIB_ERR_CONFIG_VERSION_CONFLICT');
    expect((await track(s, 'wk_lost', 'X', 'u1')).statusCode).toBe(401);
    expect((await track(s, 'wk_file', 'X', 'u2')).statusCode).toBe(200);
    const dest = await call(s, 'PUT', '/admin/v1/config/destinations/pg', {
      type: 'postgres',
      connectionString: 'postgres://nobody@127.0.0.1:1/none',
    });
    expect(dest.status).toBe(409);
    expect(s.destinations.map((d) => d.id)).toEqual(['warehouse']);
    expect((await s.warehouse.listConfigVersions()).map((v) => v.n)).toEqual([2, 1]);
  });

  it('refuses what cannot change in a running server with TRIB_ERR_CONFIG_NEEDS_RESTART, changing nothing', async () => {
    const s = await start(folder());
    const hook = await call(s, 'PUT', '/admin/v1/config/sources/stripe', {
      type: 'webhook',
      preset: 'stripe',
      verify: { kind: 'none' },
    });
    expect(hook.status, JSON.stringify(hook.body)).toBe(409);
    expect(hook.body.code).toBe('TRIB_ERR_CONFIG_NEEDS_RESTART');
    const lake = await call(s, 'PUT', '/admin/v1/config/destinations/lake', {
      type: 'parquet',
      path: 'lake2',
    });
    expect(lake.status, JSON.stringify(lake.body)).toBe(409);
    expect(lake.body.message).toContain('lake folder');
    expect((await call(s, 'GET', '/admin/v1/config/versions')).body.versions).toHaveLength(1);
  });

  it('webhook sources added, changed and removed through the API answer on the next request', async () => {
    const hooks = `${FILE}  - id: hooks
    type: webhook
    verify: { kind: none }
    rules:
      - when: { kind: signup }
        event: Signed Up
        userId: user
`;
    const s = await start(folder(), hooks);
    const post = (id: string, body: unknown) =>
      s.app.inject({
        method: 'POST',
        url: `/webhooks/${id}`,
        headers: { 'content-type': 'application/json' },
        payload: JSON.stringify(body),
      });
    expect((await post('hooks', { kind: 'signup', user: 'w1' })).statusCode).toBe(200);
    expect((await post('crm', { kind: 'signup', user: 'w2' })).json()).toMatchObject({
      code: 'TRIB_ERR_WEBHOOK_UNKNOWN_SOURCE',
    });
    const add = await call(s, 'PUT', '/admin/v1/config/sources/crm', {
      type: 'webhook',
      verify: { kind: 'none' },
      rules: [{ when: { kind: 'lead' }, event: 'Lead Created', userId: 'user' }],
    });
    expect(add.status, JSON.stringify(add.body)).toBe(200);
    expect((await post('crm', { kind: 'lead', user: 'w3' })).statusCode).toBe(200);
    const change = await call(s, 'PATCH', '/admin/v1/config/sources/hooks', {
      rules: [{ when: { kind: 'signup' }, event: 'Registered', userId: 'user' }],
    });
    expect(change.status, JSON.stringify(change.body)).toBe(200);
    expect((await post('hooks', { kind: 'signup', user: 'w4' })).statusCode).toBe(200);
    expect((await call(s, 'DELETE', '/admin/v1/config/sources/hooks')).status).toBe(200);
    expect((await post('hooks', { kind: 'signup', user: 'w5' })).statusCode).toBe(404);
    await s.loader.drained();
    expect(await rows(s, 'SELECT source_id, event, user_id FROM events ORDER BY user_id')).toEqual([
      { source_id: 'hooks', event: 'Signed Up', user_id: 'w1' },
      { source_id: 'crm', event: 'Lead Created', user_id: 'w3' },
      { source_id: 'hooks', event: 'Registered', user_id: 'w4' },
    ]);
  });

  it('a pull source added through the API can be synced at once', async () => {
    const dir = folder();
    writeFileSync(join(dir, 'leads.csv'), 'id,email\n1,ada@example.com\n2,bob@example.com\n');
    const s = await start(dir);
    const sync = () =>
      s.app.inject({ method: 'POST', url: '/admin/v1/sources/crm/sync?wait=true', headers: admin });
    expect((await sync()).json()).toMatchObject({ code: 'TRIB_ERR_SOURCE_NOT_FOUND' });
    const put = await call(s, 'PUT', '/admin/v1/config/sources/crm', {
      type: 'file',
      streams: [
        {
          name: 'leads',
          path: join(dir, 'leads.csv'),
          primaryKey: ['id'],
          events: { type: 'identify', anonymousId: 'email' },
        },
      ],
    });
    expect(put.status, JSON.stringify(put.body)).toBe(200);
    const r = await sync();
    expect(r.statusCode, r.body).toBe(200);
    expect(r.json()).toMatchObject({ status: 'succeeded', rows: 2 });
    await s.loader.drained();
    expect(await rows(s, "SELECT anonymous_id FROM events WHERE source_id = 'crm' ORDER BY 1")).toEqual([
      { anonymous_id: 'ada@example.com' },
      { anonymous_id: 'bob@example.com' },
    ]);
  });

  it('a server started without its file keeps no versions and says so', async () => {
    const { config } = parseConfig(FILE, ENV);
    const s = await startServer({
      config,
      dataDir: folder(),
      adminToken: ADMIN_TOKEN,
      logger: pino({ level: 'silent' }),
      port: 0,
      host: '127.0.0.1',
    });
    running.push(s);
    for (const [method, url] of [
      ['GET', '/admin/v1/config'],
      ['PATCH', '/admin/v1/config/sources/web'],
    ] as const) {
      const r = await call(s, method, url, method === 'GET' ? undefined : {});
      expect([r.status, r.body.code]).toEqual([404, 'TRIB_ERR_CONFIG_NOT_MANAGED']);
    }
  });

  it('at start the file wins when it changed since it was read, else the latest version made through the API runs', async () => {
    const dir = folder();
    let s = await start(dir);
    expect((await call(s, 'PATCH', '/admin/v1/config/sources/web', { writeKey: 'wk_api' })).status).toBe(200);
    await stop(s);

    // Same file: version 2 (from the API) runs.
    s = await start(dir);
    let cur = await call(s, 'GET', '/admin/v1/config');
    expect(cur.body.version).toMatchObject({ n: 2, origin: 'api' });
    expect((await track(s, 'wk_api', 'X', 's1')).statusCode).toBe(200);
    expect((await track(s, 'wk_file', 'X', 's2')).statusCode).toBe(401);
    await stop(s);

    // The file changed: it wins and becomes version 3.
    s = await start(dir, FILE.replace('wk_file', 'wk_file_2'));
    cur = await call(s, 'GET', '/admin/v1/config');
    expect(cur.body.version).toMatchObject({ n: 3, origin: 'file', author: 'file' });
    expect((await track(s, 'wk_file_2', 'X', 's3')).statusCode).toBe(200);
    expect((await track(s, 'wk_api', 'X', 's4')).statusCode).toBe(401);
    await stop(s);

    // Unchanged again: nothing new is stored.
    s = await start(dir, FILE.replace('wk_file', 'wk_file_2'));
    expect((await call(s, 'GET', '/admin/v1/config/versions')).body.versions).toHaveLength(3);
  });
});

const pgProblem = await pgUnreachable();
describe.skipIf(pgProblem !== undefined)(
  `destinations through the API${pgProblem ? ` (PostgreSQL unreachable: ${pgProblem})` : ''}`,
  () => {
    it('a PostgreSQL destination added through the API loads the next events; removed, it stops', async () => {
      const db = await scratchDatabase('trib_confapi');
      try {
        const dir = folder();
        writeFileSync(join(dir, 'tag.ts'), tagFunction('one'));
        const s = await start(dir);
        const put = await call(s, 'PUT', '/admin/v1/config/destinations/pg', {
          type: 'postgres',
          connectionString: db.url,
          interval: '50ms',
        });
        expect(put.status, JSON.stringify(put.body)).toBe(200);
        // The file had no destinations: the default warehouse is written out beside the new one.
        expect(put.body.changes).toEqual([{ section: 'destinations', id: 'pg', change: 'added' }]);
        expect((await track(s, 'wk_file', 'To PG', 'd1')).statusCode).toBe(200);
        await s.loader.drained();
        await Promise.all(s.destinations.map((d) => d.drained()));
        expect(s.destinations.map((d) => d.id).sort()).toEqual(['pg', 'warehouse']);
        const c = new pg.Client(db.config);
        await c.connect();
        try {
          const r = await c.query('SELECT id FROM web.tracks');
          expect(r.rows).toEqual([{ id: 'd1' }]);
        } finally {
          await c.end();
        }
        // Changed (a function added): restarted with its new settings, from its stored offset.
        const before = s.destinations.find((d) => d.id === 'pg');
        const patch = await call(s, 'PUT', '/admin/v1/config/destinations/pg/functions/tag', {
          file: 'tag.ts',
        });
        expect(patch.status, JSON.stringify(patch.body)).toBe(200);
        expect(s.destinations.find((d) => d.id === 'pg')).not.toBe(before);
        expect((await track(s, 'wk_file', 'To PG', 'd2')).statusCode).toBe(200);
        await s.loader.drained();
        await Promise.all(s.destinations.map((d) => d.drained()));
        const c2 = new pg.Client(db.config);
        await c2.connect();
        try {
          // The event's own table holds its properties.
          expect((await c2.query('SELECT id, tag FROM web.to_pg ORDER BY id')).rows).toEqual([
            { id: 'd1', tag: null },
            { id: 'd2', tag: 'one' },
          ]);
        } finally {
          await c2.end();
        }
        const del = await call(s, 'DELETE', '/admin/v1/config/destinations/pg');
        expect(del.status).toBe(200);
        expect(s.destinations.map((d) => d.id)).toEqual(['warehouse']);
        await stop(s);
      } finally {
        await db.drop();
      }
    });
  },
);
