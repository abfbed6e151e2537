import { randomBytes, randomUUID } from 'node:crypto';
import { DuckDBInstance } from '@duckdb/node-api';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DuckDBGovernanceStore } from '../../src/store/duckdb/duckdb-governance-store.js';
import type {
  AuditEntry,
  GovernanceStore,
  TokenRecord,
  UserRecord,
} from '../../src/store/governance-store.js';
import {
  governanceSchema,
  PostgresGovernanceStore,
} from '../../src/store/postgres/postgres-governance-store.js';
import { PG_ADMIN, pgUnreachable } from '../pg.js';

/** One body over every adapter of the governance port (users, sessions, tokens, audit). */

const pgProblem = await pgUnreachable();
const T0 = Date.UTC(2026, 0, 1);

interface Adapter {
  store: GovernanceStore;
  /** Tries to change or remove an audit row behind the port's back: the error, or undefined. */
  tamper?: () => Promise<string | undefined>;
  close(): Promise<void>;
}

const adapters: [string, () => Promise<Adapter>][] = [
  [
    'DuckDB',
    async () => {
      const instance = await DuckDBInstance.create(':memory:');
      const store = await DuckDBGovernanceStore.open(instance);
      return {
        store,
        close: async () => {
          await store.close();
          instance.closeSync();
        },
      };
    },
  ],
];
if (!pgProblem) {
  adapters.push([
    'PostgreSQL',
    async () => {
      const schema = `gov_${randomBytes(5).toString('hex')}`;
      const pool = new pg.Pool({ ...PG_ADMIN, max: 3 });
      const store = await PostgresGovernanceStore.open(pool, schema);
      const s = `"${governanceSchema(schema)}"`;
      return {
        store,
        tamper: async () => {
          const tries = [
            `UPDATE ${s}.audit_log SET outcome = 'ok'`,
            `DELETE FROM ${s}.audit_log`,
            `TRUNCATE ${s}.audit_log`,
          ];
          const errors: string[] = [];
          for (const sql of tries) {
            try {
              await pool.query(sql);
            } catch (err) {
              errors.push((err as Error).message);
            }
          }
          return errors.length === tries.length ? errors.join(' | ') : undefined;
        },
        close: async () => {
          await pool.query(`DROP SCHEMA ${s} CASCADE`);
          await pool.end();
        },
      };
    },
  ]);
} else {
  describe.skip(`governance store on PostgreSQL (127.0.0.1:5432 unreachable: ${pgProblem})`, () => {
    it('skipped', () => {});
  });
}

const userRecord = (name: string, role = 'analyst', sources: string[] | null = null): UserRecord => ({
  id: randomUUID(),
  name,
  role,
  sources,
  passwordHash: `$argon2id$fake$${name}`,
  createdAt: T0,
  createdBy: 'test',
});

const tokenRecord = (userId: string | null, extra: Partial<TokenRecord> = {}): TokenRecord => ({
  id: randomUUID(),
  name: 'ci',
  tokenHash: randomBytes(32).toString('hex'),
  prefix: 'trb_abcdef',
  userId,
  role: 'engineer',
  sources: ['web', 'label:eu'],
  scopes: ['sources:operate'],
  createdAt: T0,
  createdBy: 'test',
  expiresAt: T0 + 86_400_000,
  revokedAt: null,
  lastUsedAt: null,
  ...extra,
});

const entry = (at: number, extra: Partial<AuditEntry> = {}): AuditEntry => ({
  at,
  actorKind: 'user',
  actorId: 'u1',
  actorName: 'ada',
  role: 'analyst',
  ip: '127.0.0.1',
  action: 'query.run',
  method: 'POST',
  route: '/admin/v1/query',
  target: null,
  details: { sql: "SELECT 'it''s' -- \u00e9\n" },
  outcome: 'ok',
  status: 200,
  code: null,
  ...extra,
});

describe.each(adapters)('governance store: %s', (_name, open) => {
  let a: Adapter;
  beforeAll(async () => {
    a = await open();
  });
  afterAll(async () => {
    await a?.close();
  });

  it('keeps users with unique names, and removing one ends its sessions and revokes its tokens', async () => {
    const ada = userRecord('ada', 'analyst', ['web', 'label:eu']);
    expect(await a.store.insertUser(ada)).toBe(true);
    expect(await a.store.insertUser({ ...userRecord('ada'), role: 'owner' })).toBe(false);
    expect(await a.store.userByName('ada')).toEqual(ada);
    expect(await a.store.userById(ada.id)).toEqual(ada);
    expect(await a.store.userByName("ada' OR '1'='1")).toBeUndefined();
    const bob = userRecord('bob', 'owner');
    await a.store.insertUser(bob);
    expect((await a.store.listUsers()).map((u) => u.name)).toEqual(['ada', 'bob']);
    expect(await a.store.countUsers()).toBe(2);
    expect(await a.store.countRole('owner')).toBe(1);

    await a.store.insertSession({
      idHash: 'h1',
      userId: ada.id,
      csrfSecret: 's',
      createdAt: T0,
      expiresAt: T0 + 1000,
    });
    const t = tokenRecord(ada.id);
    await a.store.insertToken(t);
    expect(await a.store.sessionByHash('h1', T0 + 999)).toMatchObject({
      userId: ada.id,
      expiresAt: T0 + 1000,
    });
    expect(await a.store.sessionByHash('h1', T0 + 1000)).toBeUndefined();

    expect(await a.store.deleteUser(ada.id, T0 + 5)).toBe(true);
    expect(await a.store.deleteUser(ada.id, T0 + 6)).toBe(false);
    expect(await a.store.userByName('ada')).toBeUndefined();
    expect(await a.store.sessionByHash('h1', T0)).toBeUndefined();
    expect((await a.store.tokenById(t.id))?.revokedAt).toBe(T0 + 5);
  });

  it('keeps sessions until they expire, and purges the expired ones', async () => {
    const u = userRecord('carol');
    await a.store.insertUser(u);
    const base = { userId: u.id, csrfSecret: 'x', createdAt: T0 };
    await a.store.insertSession({ ...base, idHash: 'old', expiresAt: T0 + 10 });
    await a.store.insertSession({ ...base, idHash: 'new', expiresAt: T0 + 10_000 });
    expect(await a.store.purgeSessions(T0 + 100)).toBe(1);
    expect(await a.store.sessionByHash('new', T0 + 100)).toBeDefined();
    await a.store.deleteSession('new');
    expect(await a.store.sessionByHash('new', T0 + 100)).toBeUndefined();
  });

  it('keeps tokens by hash with their limits, revokes once, and records their last use', async () => {
    const u = userRecord('dan', 'engineer');
    await a.store.insertUser(u);
    const mine = tokenRecord(u.id);
    const service = tokenRecord(null, {
      role: 'viewer',
      sources: null,
      scopes: null,
      expiresAt: null,
      createdAt: T0 + 1,
    });
    await a.store.insertToken(mine);
    await a.store.insertToken(service);
    expect(await a.store.tokenByHash(mine.tokenHash)).toEqual(mine);
    expect(await a.store.tokenByHash(service.tokenHash)).toEqual(service);
    expect((await a.store.listTokens({ userId: u.id })).map((t) => t.id)).toEqual([mine.id]);
    expect((await a.store.listTokens({ userId: null })).map((t) => t.id)).toContain(service.id);
    expect((await a.store.listTokens({ userId: null })).map((t) => t.id)).not.toContain(mine.id);
    await a.store.touchToken(mine.id, T0 + 42);
    expect((await a.store.tokenById(mine.id))?.lastUsedAt).toBe(T0 + 42);
    expect(await a.store.revokeToken(mine.id, T0 + 50)).toBe(true);
    expect(await a.store.revokeToken(mine.id, T0 + 60)).toBe(false);
    expect((await a.store.tokenByHash(mine.tokenHash))?.revokedAt).toBe(T0 + 50);
    expect(await a.store.revokeToken('no-such-token', T0)).toBe(false);
  });

  it('appends audit entries, filters them newest first, and purges only those past the retention', async () => {
    await a.store.appendAudit([
      entry(T0 - 100 * 86_400_000, { action: 'users.add', actorName: 'owner', target: 'ada' }),
      entry(T0, {}),
      entry(T0 + 1000, {
        outcome: 'denied',
        status: 403,
        code: 'TRIB_ERR_AUTH_FORBIDDEN',
        action: 'users.add',
      }),
      entry(T0 + 2000, { actorKind: 'anonymous', actorId: null, actorName: null, role: null, details: null }),
    ]);
    const all = await a.store.listAudit({});
    expect(all.map((e) => e.at)).toEqual([T0 + 2000, T0 + 1000, T0, T0 - 100 * 86_400_000]);
    expect(all[2]).toMatchObject({ details: { sql: "SELECT 'it''s' -- \u00e9\n" }, ip: '127.0.0.1' });
    expect((await a.store.listAudit({ since: T0 })).length).toBe(3);
    expect((await a.store.listAudit({ outcome: 'denied' })).map((e) => e.code)).toEqual([
      'TRIB_ERR_AUTH_FORBIDDEN',
    ]);
    expect((await a.store.listAudit({ actor: 'owner' })).map((e) => e.target)).toEqual(['ada']);
    expect((await a.store.listAudit({ action: 'users.' })).length).toBe(2);
    expect((await a.store.listAudit({ action: 'users' })).length).toBe(0);
    expect((await a.store.listAudit({ actor: "' OR 1=1 --" })).length).toBe(0);
    expect((await a.store.listAudit({ limit: 1 })).length).toBe(1);

    expect(await a.store.purgeAudit(T0 - 90 * 86_400_000)).toBe(1);
    expect((await a.store.listAudit({})).length).toBe(3);
  });

  it('refuses UPDATE, DELETE and TRUNCATE of the audit log outside the purge (PostgreSQL trigger)', async () => {
    if (!a.tamper) return; // DuckDB has no triggers: its port offers insert and purge only.
    const refused = await a.tamper();
    expect(refused).toMatch(/append-only/);
    expect((await a.store.listAudit({})).length).toBe(3);
  });

  it('keeps an entry whose texts hold U+0000 or a lone surrogate, in the same batch as a plain one', async () => {
    await a.store.appendAudit([
      entry(T0, { target: 'u\u0000x', details: { sql: "SELECT '\u0000' AS nul, '\ud800' AS half" } }),
      entry(T0 + 1, { target: 'plain' }),
    ]);
    const got = await a.store.listAudit({});
    expect(got.some((e) => e.target === 'plain')).toBe(true);
    expect(got.find((e) => e.target === 'u\ufffdx')?.details).toEqual({
      sql: "SELECT '\ufffd' AS nul, '\ufffd' AS half",
    });
  });
});
