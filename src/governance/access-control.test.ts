import { DuckDBInstance } from '@duckdb/node-api';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import { TributaryError } from '../errors.js';
import { DuckDBGovernanceStore } from '../store/duckdb/duckdb-governance-store.js';
import { ADMIN_TOKEN_PRINCIPAL, installAccessControl } from './access-control.js';
import { Governance } from './governance.js';
import { governanceRoutes } from './governance-routes.js';

const opened: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const close of opened.splice(0)) await close();
});

/** The access layer alone on a Fastify app, as the server installs it, with one route of no rule. */
async function app(secureCookie: 'auto' | 'always' | 'never', trustProxy = false) {
  const instance = await DuckDBInstance.create(':memory:');
  const store = await DuckDBGovernanceStore.open(instance);
  const governance = new Governance(store, { secureCookie });
  await governance.addUser(
    { name: 'ana', role: 'viewer', password: 'a long password' },
    ADMIN_TOKEN_PRINCIPAL,
  );
  const a: FastifyInstance = Fastify({ trustProxy });
  a.removeAllContentTypeParsers();
  a.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
  a.setErrorHandler((err: Error & { statusCode?: number }, _req, reply) => {
    const e = err instanceof TributaryError ? err : undefined;
    reply.status(e?.statusCode ?? err.statusCode ?? 500).send(e?.toJSON() ?? { message: err.message });
  });
  await installAccessControl(a, { governance, adminToken: 'admin-secret' });
  governanceRoutes(a, governance);
  a.get('/admin/v1/forgotten', async () => ({ secret: 'everything' }));
  opened.push(async () => {
    await a.close();
    await store.close();
    instance.closeSync();
  });
  return { a, governance };
}

const login = (a: FastifyInstance, headers: Record<string, string> = {}) =>
  a.inject({
    method: 'POST',
    url: '/admin/v1/session',
    headers,
    payload: JSON.stringify({ user: 'ana', password: 'a long password' }),
  });

describe('the access layer', () => {
  it('refuses a route that has no rule, even to the owner, and audits the refusal', async () => {
    const { a, governance } = await app('auto');
    const r = await a.inject({
      url: '/admin/v1/forgotten',
      headers: { authorization: 'Bearer admin-secret' },
    });
    expect(r.statusCode).toBe(403);
    expect(r.json().code).toBe('TRIB_ERR_AUTH_NO_RULE');
    expect(r.body).not.toContain('everything');
    const [entry] = await governance.listAudit({ action: 'unknown-route' });
    expect(entry).toMatchObject({
      outcome: 'denied',
      route: '/admin/v1/forgotten',
      code: 'TRIB_ERR_AUTH_NO_RULE',
    });
  });

  it('sets Secure on the session cookie over HTTPS (auto), always, or never', async () => {
    const secure = (res: { headers: Record<string, unknown> }) =>
      /;\s*Secure/i.test(String(res.headers['set-cookie']));
    expect(secure(await login((await app('auto')).a))).toBe(false);
    const behindTls = (await app('auto', true)).a;
    expect(secure(await login(behindTls, { 'x-forwarded-proto': 'https' }))).toBe(true);
    // From a client that is no trusted proxy, the header is not believed.
    expect(secure(await login((await app('auto', false)).a, { 'x-forwarded-proto': 'https' }))).toBe(false);
    expect(secure(await login((await app('always')).a))).toBe(true);
    expect(secure(await login((await app('never')).a, { 'x-forwarded-proto': 'https' }))).toBe(false);
  });

  it('answers malformed credentials with 401 and a stable code, never 500', async () => {
    const { a } = await app('auto');
    for (const authorization of [
      'Bearer',
      'Bearer ',
      'Basic abc',
      `Bearer ${'x'.repeat(10_000)}`,
      'Bearer trb_',
    ]) {
      const r = await a.inject({ url: '/admin/v1/me', headers: { authorization } });
      expect(r.statusCode, authorization.slice(0, 20)).toBe(401);
      expect(r.json().code).toMatch(/^TRIB_ERR_AUTH_/);
    }
    const cookie = await a.inject({ url: '/admin/v1/me', headers: { cookie: 'tributary_session=forged' } });
    expect(cookie.json().code).toBe('TRIB_ERR_AUTH_SESSION_EXPIRED');
  });
});
