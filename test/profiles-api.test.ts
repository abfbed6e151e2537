import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ADMIN_TOKEN,
  basicAuth,
  MINIMAL_CONFIG,
  startTestServer,
  type TestServer,
  WRITE_KEY,
} from './helpers.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const CLI = ['--import', import.meta.resolve('tsx'), join(ROOT, 'src/cli/index.ts')];
const READ_TOKEN = 'profile-reader-0123456789';
const CRM_KEY = 'wk_crm_456';

const YAML = `version: 1
sources:
  - id: web
    type: http
    writeKey: ${WRITE_KEY}
  - id: crm
    type: http
    writeKey: ${CRM_KEY}
identity:
  readToken: \${PROFILE_TOKEN}
  paths:
    - source: web
      path: properties.ticket_requester_email
      type: email
  computed:
    - name: orders
      op: count
      event: Order Completed
`;

let server: TestServer;
let dir: string;

beforeAll(async () => {
  server = await startTestServer({ yaml: YAML, env: { PROFILE_TOKEN: READ_TOKEN } });
  dir = mkdtempSync(join(tmpdir(), 'trib-profiles-'));
  writeFileSync(join(dir, 'tributary.yaml'), YAML);
});
afterAll(async () => {
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

async function send(batch: Record<string, unknown>[], key = WRITE_KEY) {
  const res = await fetch(`${server.url}/v1/batch`, {
    method: 'POST',
    headers: { authorization: basicAuth(key), 'content-type': 'application/json' },
    body: JSON.stringify({ batch }),
  });
  expect(res.status).toBe(200);
  await server.settle();
  await server.identity!.drained();
}

async function get(path: string, token?: string) {
  const res = await fetch(`${server.url}${path}`, { headers: token ? { authorization: token } : {} });
  // biome-ignore lint/suspicious/noExplicitAny: the assertions check the JSON's shape
  return { status: res.status, body: (await res.json()) as Record<string, any> };
}

async function cli(args: string[]) {
  const r = await promisify(execFile)(process.execPath, [...CLI, ...args], {
    cwd: dir,
    env: { ...process.env, TRIBUTARY_ADMIN_TOKEN: ADMIN_TOKEN, PROFILE_TOKEN: READ_TOKEN },
  });
  return r.stdout;
}

describe('Profile API and CLI (real server)', () => {
  it('resolves events sent over HTTP and serves the profile to the read token, never to a write key', async () => {
    await send([
      { type: 'track', anonymousId: 'browser-1', event: 'Order Completed', messageId: 'p1' },
      {
        type: 'identify',
        anonymousId: 'browser-1',
        userId: 'ada',
        traits: { email: 'Ada@Example.com', plan: 'pro' },
        messageId: 'p2',
      },
      {
        type: 'track',
        userId: 'helpdesk',
        event: 'Ticket Opened',
        properties: { ticket_requester_email: 'ada@example.com' },
        messageId: 'p3',
      },
    ]);
    const ok = await get('/v1/profiles/email:ada@example.com', `Bearer ${READ_TOKEN}`);
    expect(ok.status).toBe(200);
    expect(ok.body.traits).toEqual({ email: 'Ada@Example.com', plan: 'pro' });
    expect(ok.body.computedTraits).toEqual({ orders: 1 });
    expect(
      ok.body.identifiers.map((i: { type: string; value: string }) => `${i.type}:${i.value}`).sort(),
    ).toEqual(['anonymous_id:browser-1', 'email:ada@example.com', 'user_id:ada']);
    expect(ok.body.recentEvents.map((e: { messageId: string }) => e.messageId).sort()).toEqual(['p1', 'p2']);
    // The helpdesk ticket: same email from a declared path, but user_id limit 1 keeps it apart.
    const helpdesk = await get('/v1/profiles/user_id:helpdesk', `Bearer ${ADMIN_TOKEN}`);
    expect(helpdesk.body.profileId).not.toBe(ok.body.profileId);

    expect((await get('/v1/profiles/email:ada@example.com', basicAuth(WRITE_KEY))).body.code).toBe(
      'TRIB_ERR_AUTH_PROFILE_TOKEN',
    );
    expect((await get('/v1/profiles/email:ada@example.com', `Bearer ${WRITE_KEY}`)).status).toBe(401);
    expect((await get('/v1/profiles/email:ada@example.com')).status).toBe(401);
    expect((await get('/v1/profiles/email:nobody@example.com', `Bearer ${READ_TOKEN}`)).body.code).toBe(
      'TRIB_ERR_PROFILE_NOT_FOUND',
    );
    expect((await get('/v1/profiles/nocolon', `Bearer ${READ_TOKEN}`)).body.code).toBe(
      'TRIB_ERR_PROFILE_BAD_IDENTIFIER',
    );

    const search = await get('/v1/profiles?trait=plan&value=pro', `Bearer ${READ_TOKEN}`);
    expect(search.body.profiles.map((p: { profileId: string }) => p.profileId)).toEqual([ok.body.profileId]);

    const rows = await server.query(
      "SELECT count(DISTINCT profile_id) AS n FROM events_with_profile WHERE message_id IN ('p1', 'p2')",
    );
    expect(rows).toEqual([{ n: 1 }]);

    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    expect(metrics).toContain('tributary_identity_events_resolved_total{action="new"} 2');
    expect(metrics).toContain('tributary_identity_events_resolved_total{action="attach"} 1');
    expect(metrics).toContain('tributary_identity_identifiers_left_out_total{reason="limit:user_id"} 1');
    expect(metrics).toContain('tributary_identity_profiles 2');
    expect(metrics).toContain('tributary_identity_lag_events 0');
    const health = (await (await fetch(`${server.url}/healthz`)).json()) as {
      identity: unknown;
      loader: { position: number };
    };
    expect(health.identity).toEqual({ position: health.loader.position, profiles: 2 });
  });

  it('imports CRM contacts from CSV through the same graph, and explains and unmerges from the CLI', {
    timeout: 90_000,
  }, async () => {
    const csv = join(dir, 'contacts.csv');
    writeFileSync(
      csv,
      'Id,Email,Full Name\n17,ada@example.com,Ada Lovelace\n18,grace@example.com,Grace Hopper\n19,,\n',
    );
    const out = await cli([
      'import',
      'csv',
      csv,
      '--source',
      'crm',
      '--id-column',
      'Id',
      '--map',
      'email=Email',
      '--map',
      'name=Full Name',
      '--url',
      server.url,
      '--json',
    ]);
    expect(JSON.parse(out)).toMatchObject({
      file: csv,
      source: 'crm',
      status: 'succeeded',
      rows: 3,
      events: 3,
      failed: 0,
    });
    await server.settle();
    await server.identity!.drained();

    const ada = JSON.parse(await cli(['profiles', 'get', 'user_id:ada', '--json', '--url', server.url]));
    expect(ada.traits).toMatchObject({ name: 'Ada Lovelace', plan: 'pro' });
    expect(ada.identifiers.map((i: { value: string }) => i.value)).toContain('crm:17');

    const why = JSON.parse(
      await cli(['profiles', 'explain', 'user_id:ada', 'anonymous_id:crm:17', '--json', '--url', server.url]),
    );
    expect(why.sameProfile).toBe(true);
    expect(why.path.map((d: { messageId: string }) => d.messageId)).toEqual([
      'p2',
      expect.stringMatching(/^src-/),
    ]);

    // A second browser that logs in merges into Ada; the CLI splits it again.
    await send([
      { type: 'track', anonymousId: 'browser-2', event: 'Order Completed', messageId: 'p4' },
      { type: 'identify', anonymousId: 'browser-2', userId: 'ada', messageId: 'p5' },
    ]);
    const merged = (await get('/v1/profiles/anonymous_id:browser-2', `Bearer ${READ_TOKEN}`)).body;
    expect(merged.profileId).toBe(ada.profileId);
    expect(merged.computedTraits).toEqual({ orders: 2 });
    expect(merged.merges).toHaveLength(1);
    const mergeId = merged.merges[0].mergeId;
    const denied = await fetch(`${server.url}/v1/profiles/merges/${mergeId}/unmerge`, {
      method: 'POST',
      headers: { authorization: `Bearer ${READ_TOKEN}` },
    });
    // The read token is a valid credential without the right to change profiles (docs/roles.md).
    expect(denied.status).toBe(403);
    expect(((await denied.json()) as { code: string }).code).toBe('TRIB_ERR_AUTH_FORBIDDEN');
    const un = JSON.parse(await cli(['profiles', 'unmerge', mergeId, '--json', '--url', server.url]));
    expect(un).toMatchObject({ success: true, blocked: true });
    const browser2 = (await get('/v1/profiles/anonymous_id:browser-2', `Bearer ${READ_TOKEN}`)).body;
    expect(browser2.profileId).not.toBe(ada.profileId);
    expect(browser2.computedTraits).toEqual({ orders: 1 });
    expect((await get('/v1/profiles/user_id:ada', `Bearer ${READ_TOKEN}`)).body.computedTraits).toEqual({
      orders: 1,
    });
    const again = await fetch(`${server.url}/v1/profiles/merges/${mergeId}/unmerge`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    expect(again.status).toBe(404);
    expect(((await again.json()) as { code: string }).code).toBe('TRIB_ERR_PROFILE_MERGE_NOT_FOUND');
    const text = await cli(['profiles', 'get', 'user_id:ada', '--url', server.url]);
    expect(text).toContain(`profile ${ada.profileId}`);
    expect(text).toMatch(/merges:\n {2}\S+: \S+ merged by event p5 \(unmerged /);
    const grace = JSON.parse(
      await cli(['profiles', 'search', 'name', 'Grace Hopper', '--json', '--url', server.url]),
    );
    expect(grace).toHaveLength(1);
  });

  it('fails the rows of a CSV without the key column, and answers profile routes with a code when identity is off', async () => {
    const csv = join(dir, 'bad.csv');
    writeFileSync(csv, 'Email\nx@example.com\n');
    const out = JSON.parse(
      await cli([
        'import',
        'csv',
        csv,
        '--source',
        'crm',
        '--id-column',
        'Id',
        '--url',
        server.url,
        '--json',
      ]),
    );
    expect(out).toMatchObject({ rows: 1, events: 0, failed: 1 });
    const failed = JSON.parse(
      await cli(['failed', 'list', '--source', 'crm', '--stage', 'source', '--json', '--url', server.url]),
    );
    expect(failed.map((f: { code: string }) => f.code)).toEqual(['TRIB_ERR_SOURCE_MISSING_KEY']);
    await expect(
      cli(['import', 'csv', csv, '--source', 'nope', '--id-column', 'Email', '--url', server.url]),
    ).rejects.toMatchObject({
      stderr: expect.stringContaining('TRIB_ERR_SOURCE_NOT_FOUND: No source "nope"'),
    });

    const off = await startTestServer({ yaml: `${MINIMAL_CONFIG}identity:\n  enabled: false\n` });
    try {
      const res = await off.app.inject({
        method: 'GET',
        url: '/v1/profiles/user_id:ada',
        headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
      });
      expect(res.statusCode).toBe(404);
      expect(res.json()).toMatchObject({ code: 'TRIB_ERR_PROFILE_DISABLED' });
      expect(off.identity).toBeUndefined();
    } finally {
      await off.stop();
    }
  });
});
