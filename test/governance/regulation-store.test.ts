import { DuckDBInstance } from '@duckdb/node-api';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { DeletionService } from '../../src/governance/privacy/deletion-service.js';
import type { RegulationStore } from '../../src/governance/privacy/regulation.js';
import { Suppressions } from '../../src/governance/privacy/suppressions.js';
import { DuckDBRegulationStore } from '../../src/store/duckdb/duckdb-regulation-store.js';
import { PostgresRegulationStore } from '../../src/store/postgres/postgres-regulation-store.js';
import { pgUnreachable, scratchDatabase } from '../pg.js';

/** The regulation store port, one body for both adapters; and what the deletion service refuses. */

const pgDown = await pgUnreachable();
const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanups.splice(0)) await c();
});

const adapters: [string, () => Promise<RegulationStore>, string | undefined][] = [
  [
    'duckdb',
    async () => {
      const inst = await DuckDBInstance.create(':memory:');
      const store = await DuckDBRegulationStore.open(inst);
      cleanups.push(async () => {
        await store.close();
        inst.closeSync();
      });
      return store;
    },
    undefined,
  ],
  [
    'postgres',
    async () => {
      const db = await scratchDatabase('trib_regs');
      const pool = new pg.Pool({ connectionString: db.url });
      cleanups.push(async () => {
        await pool.end();
        await db.drop();
      });
      return PostgresRegulationStore.open(pool, 'state');
    },
    pgDown,
  ],
];

for (const [name, open, down] of adapters) {
  describe.skipIf(down !== undefined)(`regulation store (${name})`, () => {
    it('keeps steps, their outcomes and the suppression hashes; forgets the identities once every step is done', async () => {
      const store = await open();
      const reg = await store.create({
        id: 'r1',
        identities: [{ type: 'email', value: 'a@x.io' }],
        steps: ['events', 'log'],
        suppress: ['h1'],
      });
      expect(reg).toMatchObject({
        id: 'r1',
        status: 'pending',
        identities: [{ type: 'email', value: 'a@x.io' }],
      });
      expect(reg.steps.map((s) => [s.store, s.status, s.attempts])).toEqual([
        ['events', 'pending', 0],
        ['log', 'pending', 0],
      ]);
      await store.setStep('r1', 'events', 'failed', 'disk full');
      let got = await store.get('r1');
      expect(got?.status).toBe('failed');
      expect(got?.steps[0]).toMatchObject({
        store: 'events',
        status: 'failed',
        reason: 'disk full',
        attempts: 1,
      });
      expect((await store.unfinished(10)).map((r) => r.id)).toEqual(['r1']);
      await store.setResolved('r1', [{ type: 'user_id', value: 'u1' }], ['h2', 'h1']);
      expect((await store.suppressed()).sort()).toEqual(['h1', 'h2']);
      await store.addSteps('r1', ['destination:lake', 'log']);
      await store.setStep('r1', 'events', 'done');
      await store.setStep('r1', 'log', 'done');
      got = await store.get('r1');
      expect(got?.status).toBe('pending');
      expect(got?.resolved).toEqual([{ type: 'user_id', value: 'u1' }]);
      await store.setStep('r1', 'destination:lake', 'done');
      got = await store.get('r1');
      expect(got).toMatchObject({ status: 'done', identities: [], resolved: [] });
      expect(await store.unfinished(10)).toEqual([]);
      expect((await store.list(10)).map((r) => r.id)).toEqual(['r1']);
      expect(await store.get('nope')).toBeUndefined();
    });
  });
}

describe('deletion requests', () => {
  it('refuses an empty, oversized or malformed list, and suppresses what it takes at once', async () => {
    const inst = await DuckDBInstance.create(':memory:');
    const regulations = await DuckDBRegulationStore.open(inst);
    const suppressions = new Suppressions('salt', regulations);
    const service = new DeletionService({
      regulations,
      suppressions,
      store: { erase: async () => ({ events: 0, failed: 0 }) },
      stores: () => [],
    });
    await expect(service.request([])).rejects.toMatchObject({ code: 'TRIB_ERR_PRIVACY_BAD_REQUEST' });
    await expect(
      service.request(Array.from({ length: 5001 }, (_, i) => `user_id:u${i}`)),
    ).rejects.toMatchObject({
      code: 'TRIB_ERR_PRIVACY_BAD_REQUEST',
    });
    await expect(service.request(['no-colon'])).rejects.toMatchObject({
      code: 'TRIB_ERR_PRIVACY_BAD_REQUEST',
    });
    await expect(service.request([{ type: 'email' }])).rejects.toMatchObject({
      code: 'TRIB_ERR_PRIVACY_BAD_REQUEST',
    });
    expect(suppressions.suppresses('web', { userId: 'u1' })).toBe(false);
    const reg = await service.request(['userId:u1', { type: 'email', value: ' Ada@Example.com ' }]);
    expect(reg.identities).toEqual([
      { type: 'user_id', value: 'u1' },
      { type: 'email', value: 'Ada@Example.com' },
    ]);
    expect(suppressions.suppresses('web', { userId: 'u1' })).toBe(true);
    expect(suppressions.suppresses('web', { anonymousId: 'x', traits: { email: 'ada@example.com' } })).toBe(
      true,
    );
    expect(suppressions.suppresses('web', { userId: 'u2' })).toBe(false);
    // The store holds hashes, never the identities, in the suppression list.
    expect((await regulations.suppressed()).some((h) => h.includes('u1') || h.includes('example'))).toBe(
      false,
    );
    await service.stop();
    await regulations.close();
    inst.closeSync();
  });
});
