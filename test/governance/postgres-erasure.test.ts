import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { targetOf } from '../../src/governance/privacy/erasure.js';
import { PostgresStore } from '../../src/store/postgres/postgres-store.js';
import { pgIdentityPipeline, scratchDatabase } from '../identity/pg-harness.js';
import { pgUnreachable } from '../pg.js';

/**
 * The PostgreSQL store path of a deletion (the scale-out state store): `PostgresStore.erase`
 * (events, failed_events) and `PostgresIdentityStore.erase` after `erasureOf`, checked on
 * the text of every row of every table of the schema; the other person's rows stay.
 */

const pgDown = await pgUnreachable();
const VICTIM = { user: 'victim-pg-91ab', email: 'victim.pg77@forget-me.example', anon: 'anon-pg-victim-3c' };
const KEEPER = { user: 'keeper-pg-22cd', email: 'keeper.pg@stay.example' };

let db: Awaited<ReturnType<typeof scratchDatabase>>;
beforeAll(async () => {
  if (pgDown === undefined) db = await scratchDatabase();
});
afterAll(async () => {
  await db?.drop();
});

async function rowsHolding(pool: pg.Pool, schema: string, needle: string): Promise<string[]> {
  const tables = await pool.query<{ t: string }>(
    `SELECT table_name AS t FROM information_schema.tables WHERE table_schema = $1 AND table_type = 'BASE TABLE'`,
    [schema],
  );
  const out: string[] = [];
  for (const { t } of tables.rows) {
    const r = await pool.query(
      `SELECT count(*)::int AS n FROM "${schema}"."${t}" x WHERE strpos(x::text, $1) > 0`,
      [needle],
    );
    if (r.rows[0].n > 0) out.push(`${t}: ${r.rows[0].n}`);
  }
  return out;
}

describe.skipIf(pgDown !== undefined)('deletion on the PostgreSQL state store', () => {
  it('erases events, failed events, profiles and the identity graph of the person, and nothing else', async () => {
    const schema = 'erasure';
    // The state store first: its `events` is the one the harness then fills.
    const store = await PostgresStore.open({
      url: `postgres://postgres@127.0.0.1:5432/${db.config.database}`,
      schema,
    });
    const p = await pgIdentityPipeline(db.config, { schema });
    try {
      await p.send([
        {
          type: 'identify',
          messageId: 'v1',
          at: 0,
          anonymousId: VICTIM.anon,
          traits: { email: VICTIM.email },
        },
        { type: 'identify', messageId: 'v2', at: 1, userId: VICTIM.user, anonymousId: VICTIM.anon },
        { type: 'track', messageId: 'v3', at: 2, userId: VICTIM.user, event: 'Bought' },
        { type: 'identify', messageId: 'k1', at: 3, userId: KEEPER.user, traits: { email: KEEPER.email } },
      ]);
      try {
        await store.write({
          events: [],
          failed: [
            {
              logOffset: 9,
              sourceId: 'web',
              messageId: 'f1',
              stage: 'collect',
              code: 'TRIB_ERR_EVENT_INVALID_TIMESTAMP',
              reason: 'bad',
              receivedAt: new Date(0).toISOString(),
              json: JSON.stringify({ anonymousId: 'x', properties: { email: VICTIM.email } }),
            },
          ],
          consumer: 'test',
          nextOffset: 10,
        });
        for (const t of [VICTIM.user, VICTIM.email, VICTIM.anon])
          expect((await rowsHolding(p.pool, schema, t)).length, t).toBeGreaterThan(0);

        // As the deletion service does: the person's profile, widened through the graph.
        const holder = await p.pool.query<{ profile_id: string }>(
          `SELECT profile_id FROM ${schema}.profile_identifiers WHERE type = 'email' AND value = $1`,
          [VICTIM.email],
        );
        expect(holder.rows).toHaveLength(1);
        const found = await p.store.erasureOf([holder.rows[0]!.profile_id]);
        expect(found.messageIds.sort()).toEqual(['v1', 'v2', 'v3']);
        const target = targetOf(
          [
            { type: 'email', value: VICTIM.email },
            { type: 'user_id', value: VICTIM.user },
            { type: 'anonymous_id', value: VICTIM.anon },
          ],
          found,
        );
        expect(await store.erase(target)).toEqual({ events: 3, failed: 1 });
        await p.store.erase(target);

        for (const t of [VICTIM.user, VICTIM.email, VICTIM.anon])
          expect(await rowsHolding(p.pool, schema, t), t).toEqual([]);
        expect((await rowsHolding(p.pool, schema, KEEPER.email)).length).toBeGreaterThan(1);
        expect((await p.stage.getProfile(`email:${KEEPER.email}`)).identifiers).toHaveLength(2);
      } finally {
        await store.close();
      }
    } finally {
      await p.destroy();
    }
  });
});
