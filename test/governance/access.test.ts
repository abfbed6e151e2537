import { readFileSync } from 'node:fs';
import type { LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { registeredRoutes } from '../../src/governance/access-control.js';
import { ROLES, type Role, roleCovers } from '../../src/governance/roles.js';
import { lowestRole, ROUTE_RULES, renderRulesTable, ruleFor } from '../../src/governance/route-rules.js';
import { ADMIN_TOKEN, startTestServer, type TestServer, WRITE_KEY } from '../helpers.js';

/**
 * Issue 19: one access layer. Each role's rights route by route, the rights table in docs/ is
 * the rule table, every registered route has a rule, sessions with CSRF, tokens, lockout,
 * source-scoped roles and the audit trail, on a real embedded server.
 */

const READ_TOKEN = 'profile-read-token-xyz';
const CONFIG = `version: 1
sources:
  - id: web
    type: http
    writeKey: ${WRITE_KEY}
  - id: crm
    type: http
    writeKey: wk_crm_456
    labels: [eu]
  - id: hook
    type: webhook
    verify: { kind: stripe, secret: "\${HOOK_SECRET}" }
    preset: stripe
identity:
  readToken: \${PROFILE_TOKEN}
`;

/** A request that exercises each rule's route (unknown ids: nothing is changed). */
const SAMPLES: Record<string, { url: string; body?: unknown }> = {
  'DELETE /admin/v1/session': { url: '/admin/v1/session' },
  'GET /admin/v1/me': { url: '/admin/v1/me' },
  'GET /admin/v1/users': { url: '/admin/v1/users' },
  'POST /admin/v1/users': { url: '/admin/v1/users', body: { name: '' } },
  'DELETE /admin/v1/users/:name': { url: '/admin/v1/users/nobody-here' },
  'GET /admin/v1/tokens': { url: '/admin/v1/tokens' },
  'POST /admin/v1/tokens': { url: '/admin/v1/tokens', body: { name: '' } },
  'DELETE /admin/v1/tokens/:id': { url: '/admin/v1/tokens/no-such-token' },
  'GET /admin/v1/audit': { url: '/admin/v1/audit?limit=1' },
  'POST /admin/v1/query': { url: '/admin/v1/query', body: { sql: 'SELECT 1 AS one' } },
  'GET /admin/v1/sources': { url: '/admin/v1/sources' },
  'GET /admin/v1/stats': { url: '/admin/v1/stats' },
  'GET /admin/v1/failed': { url: '/admin/v1/failed?limit=1' },
  'GET /admin/v1/failed/:id': { url: '/admin/v1/failed/no-such-id' },
  'POST /admin/v1/failed/retry': { url: '/admin/v1/failed/retry', body: { ids: ['no-such-id'] } },
  'POST /admin/v1/sources/:id/check': { url: '/admin/v1/sources/nosuch/check' },
  'GET /admin/v1/sources/:id/discover': { url: '/admin/v1/sources/nosuch/discover' },
  'POST /admin/v1/sources/:id/discover': { url: '/admin/v1/sources/nosuch/discover' },
  'POST /admin/v1/sources/:id/sync': { url: '/admin/v1/sources/nosuch/sync' },
  'GET /admin/v1/sources/:id/runs': { url: '/admin/v1/sources/nosuch/runs' },
  'POST /admin/v1/sources/:id/import': { url: '/admin/v1/sources/nosuch/import' },
  'GET /v1/profiles': { url: '/v1/profiles?trait=plan&value=none' },
  'GET /v1/profiles/:id': { url: '/v1/profiles/profile_id:nobody' },
  'GET /v1/profiles/:id/explain': { url: '/v1/profiles/profile_id:nobody/explain' },
  'GET /v1/profiles/matches': { url: '/v1/profiles/matches' },
  'POST /v1/profiles/matches/run': { url: '/v1/profiles/matches/run' },
  'POST /v1/profiles/matches/:pairId/:decision': { url: '/v1/profiles/matches/nopair/reject' },
  'POST /v1/profiles/merges/:mergeId/unmerge': { url: '/v1/profiles/merges/nomerge/unmerge' },
  'GET /admin/v1/config': { url: '/admin/v1/config' },
  'GET /admin/v1/config/versions': { url: '/admin/v1/config/versions' },
  'GET /admin/v1/config/versions/:n': { url: '/admin/v1/config/versions/1' },
  'GET /admin/v1/config/diff': { url: '/admin/v1/config/diff' },
  'POST /admin/v1/config/revert/:n': { url: '/admin/v1/config/revert/1' },
  ...Object.fromEntries(
    [
      ['/admin/v1/config/sources/:id', '/admin/v1/config/sources/nosuch'],
      ['/admin/v1/config/destinations/:id', '/admin/v1/config/destinations/nosuch'],
      ['/admin/v1/config/sources/:id/plans/:name', '/admin/v1/config/sources/nosuch/plans/p'],
      ['/admin/v1/config/sources/:id/plans', '/admin/v1/config/sources/nosuch/plans'],
      ['/admin/v1/config/sources/:id/functions/:fid', '/admin/v1/config/sources/nosuch/functions/f'],
      [
        '/admin/v1/config/destinations/:id/functions/:fid',
        '/admin/v1/config/destinations/nosuch/functions/f',
      ],
    ].flatMap(([pattern, url]) =>
      ['PUT', 'PATCH', 'DELETE'].map((m) => [
        `${m} ${pattern}`,
        { url: url!, body: m === 'DELETE' ? undefined : {} },
      ]),
    ),
  ),
  'GET /admin/v1/models': { url: '/admin/v1/models' },
  'POST /admin/v1/models/:id/run': { url: '/admin/v1/models/nosuch/run' },
  'GET /admin/v1/models/:id/runs': { url: '/admin/v1/models/nosuch/runs' },
  'GET /admin/v1/trace/:messageId': { url: '/admin/v1/trace/no-such-message' },
  'POST /admin/v1/replay': { url: '/admin/v1/replay', body: { source: 'nosuch' } },
  'GET /admin/v1/replay': { url: '/admin/v1/replay' },
  'GET /admin/v1/replay/:id': { url: '/admin/v1/replay/nosuch' },
  'POST /admin/v1/privacy/deletions': { url: '/admin/v1/privacy/deletions', body: { identities: [] } },
  'GET /admin/v1/privacy/deletions': { url: '/admin/v1/privacy/deletions' },
  'GET /admin/v1/privacy/deletions/:id': { url: '/admin/v1/privacy/deletions/nosuch' },
};

/** The rights the issue gives each role, on representative routes (independent of the rule table). */
const ISSUE_RIGHTS: [string, Role[]][] = [
  ['GET /admin/v1/stats', ['viewer', 'analyst', 'engineer', 'admin', 'owner']],
  ['POST /admin/v1/query', ['analyst', 'engineer', 'admin', 'owner']],
  ['GET /v1/profiles/:id', ['analyst', 'engineer', 'admin', 'owner']],
  ['GET /admin/v1/failed', ['engineer', 'admin', 'owner']],
  ['POST /admin/v1/failed/retry', ['engineer', 'admin', 'owner']],
  ['POST /admin/v1/sources/:id/sync', ['engineer', 'admin', 'owner']],
  ['POST /v1/profiles/merges/:mergeId/unmerge', ['admin', 'owner']],
  ['GET /admin/v1/audit', ['admin', 'owner']],
  ['POST /admin/v1/users', ['owner']],
  ['DELETE /admin/v1/users/:name', ['owner']],
];

let server: TestServer;
const tokens = {} as Record<Role, string>;

async function call(
  method: string,
  url: string,
  auth?: { bearer?: string; cookie?: string; csrf?: string },
  body?: unknown,
): Promise<LightMyRequestResponse> {
  return server.app.inject({
    method: method as 'GET',
    url,
    headers: {
      ...(auth?.bearer ? { authorization: `Bearer ${auth.bearer}` } : {}),
      ...(auth?.cookie ? { cookie: auth.cookie } : {}),
      ...(auth?.csrf ? { 'x-csrf-token': auth.csrf } : {}),
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    payload: body === undefined ? undefined : JSON.stringify(body),
  });
}

const owner = (method: string, url: string, body?: unknown) =>
  call(method, url, { bearer: ADMIN_TOKEN }, body);

beforeAll(async () => {
  server = await startTestServer({
    yaml: CONFIG,
    env: { HOOK_SECRET: 'whsec_test', PROFILE_TOKEN: READ_TOKEN },
  });
  for (const role of ROLES) {
    const made = await owner('POST', '/admin/v1/users', { name: `${role}-user`, role });
    expect(made.statusCode, made.body).toBe(201);
    const t = await owner('POST', '/admin/v1/tokens', { name: `${role}-token`, user: `${role}-user` });
    expect(t.statusCode, t.body).toBe(201);
    tokens[role] = t.json().token;
  }
});

afterAll(async () => {
  await server?.stop();
});

describe('the rule table', () => {
  it('has a rule for every registered route, and a registered route for every rule', () => {
    const routes = registeredRoutes(server.app);
    expect(routes.length).toBeGreaterThan(30);
    const missing = routes.filter((r) => !ruleFor(r.method, r.url)).map((r) => `${r.method} ${r.url}`);
    expect(missing, 'add a rule to src/governance/route-rules.ts for each').toEqual([]);
    const seen = new Set(routes.map((r) => `${r.method} ${r.url}`));
    const stale = ROUTE_RULES.map((r) => `${r.method} ${r.url}`).filter((k) => !seen.has(k));
    expect(stale, 'rules of routes that do not exist').toEqual([]);
  });

  it('is the table docs/roles.md shows', () => {
    const doc = readFileSync(new URL('../../docs/roles.md', import.meta.url), 'utf8');
    const m = /<!-- rules:start -->\n([\s\S]*?)\n<!-- rules:end -->/.exec(doc);
    expect(
      m,
      'docs/roles.md needs the table between <!-- rules:start --> and <!-- rules:end -->',
    ).not.toBeNull();
    expect(m![1]).toBe(renderRulesTable());
  });

  it('gives each role the rights the issue names', () => {
    for (const [key, roles] of ISSUE_RIGHTS) {
      const [method, url] = key.split(' ') as [string, string];
      const lowest = lowestRole(ruleFor(method, url)!.need)!;
      expect(
        ROLES.filter((r) => roleCovers(r, lowest)),
        key,
      ).toEqual(roles);
    }
  });
});

describe('each role, route by route', () => {
  const guarded = ROUTE_RULES.filter((r) => r.need !== 'public');
  const cases = guarded.flatMap((rule) => ROLES.map((role) => [`${rule.method} ${rule.url}`, role] as const));

  it.each(cases)('%s as %s', async (key, role) => {
    const rule = ruleFor(...(key.split(' ') as [string, string]))!;
    const sample = SAMPLES[key];
    expect(sample, `add a sample request for ${key} to SAMPLES`).toBeDefined();
    const res = await call(rule.method, sample!.url, { bearer: tokens[role] }, sample!.body);
    const lowest = lowestRole(rule.need)!;
    if (roleCovers(role, lowest)) {
      // Allowed by the role; a masked role may still be refused what only shows personal data.
      const refused =
        res.statusCode === 401 || (res.statusCode === 403 && res.json().code !== 'TRIB_ERR_PRIVACY_MASKED');
      expect(refused, `${role} may ${key}: ${res.body}`).toBe(false);
    } else {
      expect(res.statusCode, res.body).toBe(403);
      expect(res.json().code).toBe('TRIB_ERR_AUTH_FORBIDDEN');
    }
  });

  it.each(guarded.map((r) => `${r.method} ${r.url}`))('%s without credentials is 401', async (key) => {
    const [method] = key.split(' ') as [string];
    const res = await call(method, SAMPLES[key]!.url, undefined, SAMPLES[key]!.body);
    expect(res.statusCode).toBe(401);
    expect(res.json().code).toMatch(/^TRIB_ERR_AUTH_/);
  });

  it('keeps the admin token an owner and the read token a profile reader', async () => {
    expect((await owner('GET', '/admin/v1/users')).statusCode).toBe(200);
    expect((await owner('GET', '/admin/v1/me')).json()).toMatchObject({ kind: 'admin-token', role: 'owner' });
    const read = { bearer: READ_TOKEN };
    expect((await call('GET', '/v1/profiles?trait=plan&value=x', read)).statusCode).toBe(200);
    expect((await call('GET', '/admin/v1/stats', read)).statusCode).toBe(403);
    expect((await call('POST', '/admin/v1/query', read, { sql: 'SELECT 1' })).statusCode).toBe(403);
    expect((await call('POST', '/v1/profiles/merges/m/unmerge', read)).json().code).toBe(
      'TRIB_ERR_AUTH_FORBIDDEN',
    );
    // A write key is no credential of the admin API.
    expect((await call('GET', '/admin/v1/stats', { bearer: WRITE_KEY })).json().code).toBe(
      'TRIB_ERR_AUTH_ADMIN_TOKEN',
    );
  });
});

describe('sessions', () => {
  it('logs in with an HttpOnly, SameSite=Strict cookie, needs the CSRF header on unsafe methods, logs out', async () => {
    const made = await owner('POST', '/admin/v1/users', {
      name: 'ana',
      role: 'analyst',
      password: 'correct horse battery',
    });
    expect(made.statusCode).toBe(201);
    expect(made.json()).not.toHaveProperty('password');
    const wrong = await call('POST', '/admin/v1/session', undefined, { user: 'ana', password: 'nope' });
    expect(wrong.statusCode).toBe(401);
    expect(wrong.json().code).toBe('TRIB_ERR_AUTH_BAD_CREDENTIALS');
    const unknown = await call('POST', '/admin/v1/session', undefined, { user: 'ghost', password: 'nope' });
    expect(unknown.json().code).toBe('TRIB_ERR_AUTH_BAD_CREDENTIALS');

    const ok = await call('POST', '/admin/v1/session', undefined, {
      user: 'ana',
      password: 'correct horse battery',
    });
    expect(ok.statusCode, ok.body).toBe(200);
    const setCookie = String(ok.headers['set-cookie']);
    expect(setCookie).toMatch(/^tributary_session=[\w-]{40,};/);
    expect(setCookie).toMatch(/HttpOnly/);
    expect(setCookie).toMatch(/SameSite=Strict/);
    expect(setCookie).toMatch(/Expires=/);
    expect(setCookie).not.toMatch(/Secure/); // plain HTTP and secureCookie: auto
    const cookie = setCookie.split(';')[0]!;
    const csrf = ok.json().csrfToken as string;

    const me = await call('GET', '/admin/v1/me', { cookie });
    expect(me.json()).toMatchObject({ kind: 'user', name: 'ana', role: 'analyst' });
    expect(me.json().permissions).toEqual(['status:read', 'query:run', 'profiles:read']);
    const sql = { sql: 'SELECT 2 AS two' };
    const noCsrf = await call('POST', '/admin/v1/query', { cookie }, sql);
    expect(noCsrf.statusCode).toBe(403);
    expect(noCsrf.json().code).toBe('TRIB_ERR_AUTH_CSRF');
    const badCsrf = await call('POST', '/admin/v1/query', { cookie, csrf: `${csrf}x` }, sql);
    expect(badCsrf.json().code).toBe('TRIB_ERR_AUTH_CSRF');
    const withCsrf = await call('POST', '/admin/v1/query', { cookie, csrf }, sql);
    expect(withCsrf.json().rows).toEqual([{ two: 2 }]);
    // A fresh token from /me works too (a console reloaded).
    const again = await call('POST', '/admin/v1/query', { cookie, csrf: me.json().csrfToken }, sql);
    expect(again.statusCode).toBe(200);
    // The role still applies to a session.
    expect((await call('GET', '/admin/v1/failed', { cookie })).json().code).toBe('TRIB_ERR_AUTH_FORBIDDEN');

    const out = await call('DELETE', '/admin/v1/session', { cookie, csrf });
    expect(out.statusCode).toBe(200);
    expect(String(out.headers['set-cookie'])).toMatch(/tributary_session=;/);
    const after = await call('GET', '/admin/v1/me', { cookie });
    expect(after.statusCode).toBe(401);
    expect(after.json().code).toBe('TRIB_ERR_AUTH_SESSION_EXPIRED');
  });

  it('locks a user name after 5 failed log-ins, even for the right password', async () => {
    await owner('POST', '/admin/v1/users', { name: 'lou', role: 'viewer', password: 'right password 1' });
    for (let i = 0; i < 5; i++) {
      const r = await call('POST', '/admin/v1/session', undefined, { user: 'lou', password: `wrong ${i}` });
      expect(r.json().code).toBe('TRIB_ERR_AUTH_BAD_CREDENTIALS');
    }
    const locked = await call('POST', '/admin/v1/session', undefined, {
      user: 'lou',
      password: 'right password 1',
    });
    expect(locked.statusCode).toBe(429);
    expect(locked.json().code).toBe('TRIB_ERR_AUTH_LOCKED');
  });

  it('refuses hostile log-in bodies with a stable code', async () => {
    for (const body of ['not json', '[]', JSON.stringify({ user: { $ne: 1 }, password: 'x' })]) {
      const r = await server.app.inject({ method: 'POST', url: '/admin/v1/session', payload: body });
      expect([400, 401]).toContain(r.statusCode);
      expect(r.json().code).toMatch(/^TRIB_ERR_(AUTH|GOVERNANCE)_/);
    }
  });

  it('lets no other origin read the admin API with the cookie (no credentialed CORS there)', async () => {
    const origin = { origin: 'https://evil.example' };
    const admin = await server.app.inject({ method: 'GET', url: '/admin/v1/me', headers: origin });
    expect(admin.headers['access-control-allow-credentials']).toBeUndefined();
    const preflight = await server.app.inject({
      method: 'OPTIONS',
      url: '/admin/v1/query',
      headers: { ...origin, 'access-control-request-method': 'POST' },
    });
    expect(preflight.headers['access-control-allow-credentials']).toBeUndefined();
    // The collection API keeps answering browsers' SDKs with credentials.
    const sdk = await server.app.inject({
      method: 'OPTIONS',
      url: '/v1/batch',
      headers: { ...origin, 'access-control-request-method': 'POST' },
    });
    expect(sdk.headers['access-control-allow-credentials']).toBe('true');
  });

  it('made the first owner at start, who can log in', async () => {
    expect(server.firstOwner?.name).toBe('owner');
    // Once there are users, no start makes another.
    expect(await server.governance.bootstrapOwner()).toBeUndefined();
    const ok = await call('POST', '/admin/v1/session', undefined, {
      user: 'owner',
      password: server.firstOwner!.password,
    });
    expect(ok.json().user).toMatchObject({ name: 'owner', role: 'owner' });
    expect((await owner('DELETE', '/admin/v1/users/owner-user')).statusCode).toBe(200);
    const last = await owner('DELETE', '/admin/v1/users/owner');
    expect(last.statusCode).toBe(409);
    expect(last.json().code).toBe('TRIB_ERR_GOVERNANCE_LAST_OWNER');
  });
});

describe('API tokens', () => {
  it('are shown once, limited to their creator, scoped, revocable, with their last use', async () => {
    const eng = { bearer: tokens.engineer };
    const made = await call('POST', '/admin/v1/tokens', eng, { name: 'ci', scopes: ['status:read'] });
    expect(made.statusCode, made.body).toBe(201);
    const { token, id } = made.json() as { token: string; id: string };
    expect(token).toMatch(/^trb_[\w-]{43}$/);
    const listed = await call('GET', '/admin/v1/tokens', eng);
    const mine = listed.json().tokens.find((t: { id: string }) => t.id === id);
    expect(mine).toMatchObject({
      name: 'ci',
      role: 'engineer',
      scopes: ['status:read'],
      user: 'engineer-user',
    });
    expect(JSON.stringify(listed.json())).not.toContain(token);
    expect(mine.lastUsedAt).toBeNull();
    // Scoped to status:read: counts yes, the engineer's failed events no.
    expect((await call('GET', '/admin/v1/stats', { bearer: token })).statusCode).toBe(200);
    expect((await call('GET', '/admin/v1/failed', { bearer: token })).json().code).toBe(
      'TRIB_ERR_AUTH_FORBIDDEN',
    );
    const used = (await call('GET', '/admin/v1/tokens', eng))
      .json()
      .tokens.find((t: { id: string }) => t.id === id);
    expect(used.lastUsedAt).not.toBeNull();

    // Never more than the creator: a higher role, a service token, another user's token.
    for (const body of [
      { name: 'up', role: 'admin' },
      { name: 'svc', service: true },
      { name: 'theirs', user: 'viewer-user' },
    ]) {
      const r = await call('POST', '/admin/v1/tokens', eng, body);
      expect(r.statusCode, JSON.stringify(body)).toBe(403);
    }
    // Someone else's token cannot be seen or revoked.
    const other = await call('DELETE', `/admin/v1/tokens/${id}`, { bearer: tokens.analyst });
    expect(other.statusCode).toBe(404);

    const revoked = await call('DELETE', `/admin/v1/tokens/${id}`, eng);
    expect(revoked.statusCode).toBe(200);
    const dead = await call('GET', '/admin/v1/stats', { bearer: token });
    expect(dead.statusCode).toBe(401);
    expect(dead.json().code).toBe('TRIB_ERR_AUTH_TOKEN_INVALID');
    const forged = await call('GET', '/admin/v1/stats', { bearer: `${token.slice(0, -1)}A` });
    expect(forged.json().code).toBe('TRIB_ERR_AUTH_TOKEN_INVALID');
  });

  it('stop working when their user is removed', async () => {
    await owner('POST', '/admin/v1/users', { name: 'temp', role: 'viewer' });
    const t = (await owner('POST', '/admin/v1/tokens', { name: 't', user: 'temp' })).json().token;
    expect((await call('GET', '/admin/v1/stats', { bearer: t })).statusCode).toBe(200);
    expect((await owner('DELETE', '/admin/v1/users/temp')).statusCode).toBe(200);
    expect((await call('GET', '/admin/v1/stats', { bearer: t })).json().code).toBe(
      'TRIB_ERR_AUTH_TOKEN_INVALID',
    );
  });
});

describe('source-scoped roles', () => {
  it('reach only their sources (by id or label), and never every source at once', async () => {
    await owner('POST', '/admin/v1/users', { name: 'eu-eng', role: 'engineer', sources: ['label:eu'] });
    const t = {
      bearer: (await owner('POST', '/admin/v1/tokens', { name: 'eu', user: 'eu-eng' })).json().token,
    };
    expect((await call('GET', '/admin/v1/failed?source=crm', t)).statusCode).toBe(200);
    expect((await call('GET', '/admin/v1/sources/crm/runs', t)).statusCode).toBe(200);
    for (const [method, url, body] of [
      ['GET', '/admin/v1/failed?source=web'],
      ['GET', '/admin/v1/failed'],
      ['GET', '/admin/v1/sources/web/runs'],
      ['POST', '/admin/v1/sources/web/sync'],
      ['POST', '/admin/v1/failed/retry', { source: 'web' }],
      ['POST', '/admin/v1/failed/retry', { ids: ['x'] }],
      ['POST', '/admin/v1/query', { sql: 'SELECT 1' }],
      ['GET', '/v1/profiles/email:a@b.c'],
    ] as const) {
      const r = await call(method, url, t, body);
      expect(r.statusCode, `${method} ${url} ${r.body}`).toBe(403);
      expect(r.json().code).toBe('TRIB_ERR_AUTH_FORBIDDEN');
    }
    // A token of a scoped user cannot widen the scope.
    const wide = await call('POST', '/admin/v1/tokens', t, { name: 'wide', sources: ['web'] });
    expect(wide.statusCode).toBe(403);
  });
});

describe('the audit trail', () => {
  it('records SQL texts, profile reads, changes and refusals, with who and from where', async () => {
    const sql = "SELECT 'audited' AS word";
    expect((await call('POST', '/admin/v1/query', { bearer: tokens.analyst }, { sql })).statusCode).toBe(200);
    await call('GET', '/v1/profiles/email:someone@example.com', { bearer: READ_TOKEN });
    await call('GET', '/admin/v1/audit', { bearer: tokens.viewer });
    await call('GET', '/admin/v1/stats', { bearer: 'made-up' });

    const list = async (q: string) =>
      (await owner('GET', `/admin/v1/audit?${q}`)).json().entries as Record<string, unknown>[];
    const [query] = await list('action=query.run&actor=analyst-token');
    expect(query).toMatchObject({
      actorKind: 'token',
      actorName: 'analyst-token',
      role: 'analyst',
      ip: '127.0.0.1',
      method: 'POST',
      route: '/admin/v1/query',
      details: { sql },
      outcome: 'ok',
      status: 200,
    });
    const [read] = await list('action=profiles.read');
    // No such profile: the attempt is recorded all the same.
    expect(read).toMatchObject({
      actorKind: 'read-token',
      target: 'email:someone@example.com',
      outcome: 'error',
      status: 404,
      code: 'TRIB_ERR_PROFILE_NOT_FOUND',
    });
    const denied = await list('outcome=denied&action=audit.read');
    expect(denied[0]).toMatchObject({
      actorName: 'viewer-token',
      status: 403,
      code: 'TRIB_ERR_AUTH_FORBIDDEN',
    });
    const anonymous = await list('outcome=denied&action=stats');
    expect(anonymous[0]).toMatchObject({
      actorKind: 'anonymous',
      status: 401,
      code: 'TRIB_ERR_AUTH_ADMIN_TOKEN',
    });
    const logins = await list('action=session.login&outcome=denied');
    expect(logins.some((e) => e.actorName === 'ghost' && e.code === 'TRIB_ERR_AUTH_BAD_CREDENTIALS')).toBe(
      true,
    );
    const adds = await list('action=users.add&actor=admin-token');
    expect(adds.some((e) => e.target === 'ana' && (e.details as { role: string }).role === 'analyst')).toBe(
      true,
    );
    // Unaudited reads stay out; the collection API never writes here.
    expect(await list('action=stats&outcome=ok')).toEqual([]);
    expect(await list('action=collect')).toEqual([]);
    const since = await list(`since=${encodeURIComponent(new Date(Date.now() + 60_000).toISOString())}`);
    expect(since).toEqual([]);
    expect((await owner('GET', '/admin/v1/audit?since=yesterday')).json().code).toBe(
      'TRIB_ERR_GOVERNANCE_BAD_REQUEST',
    );
  });

  it('is out of reach of SQL, like the users and tokens', async () => {
    for (const table of ['users', 'api_tokens', 'sessions', 'audit_log']) {
      const r = await owner('POST', '/admin/v1/query', {
        sql: `SELECT * FROM _tributary_governance.${table}`,
      });
      expect(r.json().code, table).toBe('TRIB_ERR_QUERY_NOT_ALLOWED');
      const bare = await owner('POST', '/admin/v1/query', { sql: `SELECT count(*) FROM ${table}` });
      expect(bare.statusCode, table).toBe(400);
    }
  });
});

describe('personal data by role', () => {
  it('reaches the roles below admin masked, in SQL and profiles, and admins and owners as it is', async () => {
    const email = 'masked.by.role@example.org';
    const sent = await server.app.inject({
      method: 'POST',
      url: '/v1/identify',
      headers: {
        authorization: `Basic ${Buffer.from(`${WRITE_KEY}:`).toString('base64')}`,
        'content-type': 'application/json',
      },
      payload: JSON.stringify({ userId: 'role-u1', messageId: 'role-m1', traits: { email } }),
    });
    expect(sent.statusCode).toBe(200);
    await server.settle();
    const sql = { sql: "SELECT user_id FROM events WHERE message_id = 'role-m1'" };
    // Users and tokens of this test's own (earlier tests remove and revoke some).
    const mine = {} as Record<Role, string>;
    for (const role of ROLES) {
      const made = await owner('POST', '/admin/v1/users', { name: `masking-${role}`, role });
      expect(made.statusCode, made.body).toBe(201);
      const t = await owner('POST', '/admin/v1/tokens', { name: `masking-${role}`, user: `masking-${role}` });
      mine[role] = t.json().token;
    }
    const seen = async (role: Role) => {
      const r = await call('POST', '/admin/v1/query', { bearer: mine[role] }, sql);
      expect(r.statusCode, r.body).toBe(200);
      return String(r.json().rows[0]?.user_id);
    };
    for (const role of ['analyst', 'engineer'] as const) {
      const value = await seen(role);
      expect(value, role).not.toBe('role-u1');
      expect(value, role).toMatch(/^masked:/);
    }
    for (const role of ['admin', 'owner'] as const) expect(await seen(role), role).toBe('role-u1');
    // A masked role cannot look a person up by a personal identifier.
    const byEmail = await call('GET', `/v1/profiles/email:${email}`, { bearer: mine.analyst });
    expect(byEmail.json().code).toBe('TRIB_ERR_PRIVACY_MASKED');
  });
});
