import { DuckDBInstance } from '@duckdb/node-api';
import { afterEach, describe, expect, it } from 'vitest';
import { TributaryError } from '../errors.js';
import { DuckDBGovernanceStore } from '../store/duckdb/duckdb-governance-store.js';
import { ADMIN_TOKEN_PRINCIPAL } from './access-control.js';
import { Governance } from './governance.js';

const DAY = 86_400_000;
const opened: { close(): Promise<void> }[] = [];
afterEach(async () => {
  for (const o of opened.splice(0)) await o.close();
});

/** A Governance over an in-memory DuckDB store, on a clock the test moves. */
async function governance(options: ConstructorParameters<typeof Governance>[1] = {}) {
  const instance = await DuckDBInstance.create(':memory:');
  const store = await DuckDBGovernanceStore.open(instance);
  opened.push({
    close: async () => {
      await store.close();
      instance.closeSync();
    },
  });
  const clock = { now: Date.UTC(2026, 5, 1) };
  const g = new Governance(store, { ...options, now: () => clock.now });
  return { g, store, clock };
}

const code = (p: Promise<unknown>) =>
  p.then(
    () => 'ok',
    (err: unknown) => (err instanceof TributaryError ? err.code : String(err)),
  );

describe('Governance', () => {
  it('makes one first owner even when two processes start at once', async () => {
    const { g, store } = await governance();
    const both = await Promise.all([g.bootstrapOwner(), g.bootstrapOwner()]);
    expect(both.filter((x) => x !== undefined)).toHaveLength(1);
    expect(await store.countRole('owner')).toBe(1);
    expect(await g.bootstrapOwner()).toBeUndefined();
  });

  it('unlocks a name once the lockout has passed', async () => {
    const { g, clock } = await governance({ maxFailures: 3, lockoutMs: 60_000 });
    await g.addUser({ name: 'ana', role: 'analyst', password: 'a long password' }, ADMIN_TOKEN_PRINCIPAL);
    for (let i = 0; i < 3; i++)
      expect(await code(g.login('ana', 'wrong'))).toBe('TRIB_ERR_AUTH_BAD_CREDENTIALS');
    expect(await code(g.login('ana', 'a long password'))).toBe('TRIB_ERR_AUTH_LOCKED');
    clock.now += 59_000;
    expect(await code(g.login('ana', 'a long password'))).toBe('TRIB_ERR_AUTH_LOCKED');
    clock.now += 2_000;
    expect(await code(g.login('ana', 'a long password'))).toBe('ok');
  });

  it('ends sessions at their expiry and tokens at theirs', async () => {
    const { g, clock } = await governance({ sessionTtlMs: 1000 });
    await g.addUser({ name: 'eng', role: 'engineer', password: 'a long password' }, ADMIN_TOKEN_PRINCIPAL);
    const s = await g.login('eng', 'a long password');
    expect((await g.sessionPrincipal(s.cookie)).principal).toMatchObject({ name: 'eng', role: 'engineer' });
    const { token } = await g.createToken(
      { name: 't', user: 'eng', expiresInDays: 1 },
      ADMIN_TOKEN_PRINCIPAL,
    );
    clock.now += 1000;
    expect(await code(g.sessionPrincipal(s.cookie))).toBe('TRIB_ERR_AUTH_SESSION_EXPIRED');
    expect((await g.tokenPrincipal(token))?.role).toBe('engineer');
    clock.now += DAY;
    expect(await code(g.tokenPrincipal(token))).toBe('TRIB_ERR_AUTH_TOKEN_INVALID');
    expect(await g.tokenPrincipal('not-a-trb-token')).toBeUndefined();
  });

  it('purges audit entries past the retention and keeps the rest', async () => {
    const { g, clock } = await governance({ auditRetentionMs: 90 * DAY });
    const entry = (at: number) => ({
      at,
      actorKind: 'user',
      actorId: 'u',
      actorName: 'ana',
      role: 'analyst',
      ip: '::1',
      action: 'query.run',
      method: 'POST',
      route: '/admin/v1/query',
      target: null,
      details: null,
      outcome: 'ok' as const,
      status: 200,
      code: null,
    });
    await g.audit([entry(clock.now - 91 * DAY), entry(clock.now - 89 * DAY), entry(clock.now)]);
    expect(await g.purge()).toEqual({ audit: 1, sessions: 0 });
    expect((await g.listAudit({})).map((e) => e.at)).toEqual([clock.now, clock.now - 89 * DAY]);
  });

  it('never stores a password, a session id or a token as given', async () => {
    const { g, store } = await governance();
    await g.addUser({ name: 'ana', role: 'analyst', password: 'a long password' }, ADMIN_TOKEN_PRINCIPAL);
    const s = await g.login('ana', 'a long password');
    const { token } = await g.createToken({ name: 't', user: 'ana' }, ADMIN_TOKEN_PRINCIPAL);
    const dump = JSON.stringify([
      await store.listUsers(),
      await store.listTokens(),
      await store.sessionByHash('x', 0),
    ]);
    expect(dump).toContain('$argon2id$');
    for (const secret of ['a long password', s.cookie, token]) expect(dump).not.toContain(secret);
  });
});
