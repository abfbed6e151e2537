import { createHash } from 'node:crypto';
import Fastify from 'fastify';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { IdentityConfig } from '../../src/config/identity-schema.js';
import { TributaryError } from '../../src/errors.js';
import { compileRules, type IdentityRules } from '../../src/identity/identifiers.js';
import { IdentityEngine, toIdentityEvent } from '../../src/identity/identity-engine.js';
import { IdentityStage } from '../../src/identity/identity-stage.js';
import { PostgresIdentityStore } from '../../src/identity/postgres/postgres-identity-store.js';
import {
  SharedIdentityStage,
  type SharedIdentityStageOptions,
} from '../../src/identity/postgres/shared-identity-stage.js';
import { profileRoutes } from '../../src/identity/profile-routes.js';
import { EventFeed } from '../../src/pipeline/event-feed.js';
import type { StoredEvent } from '../../src/store/store.js';
import { pgUnreachable } from '../pg.js';
import { COMPUTED, goldenScenarios } from './golden-scenarios.js';
import { createEventsTable, pgIdentityPipeline, scratchDatabase, toStored } from './pg-harness.js';
import { byFirst, embedded, partitionOf, prng, stored, workload } from './workload.js';

const pgProblem = await pgUnreachable();

const rulesOf = (identity: unknown) => compileRules(IdentityConfig.parse(identity));

/** Hands the events to the stage in batches of `size()` events, each up to the offset past its last event. */
async function handleInBatches(
  stage: { handle(events: readonly StoredEvent[], next: number): Promise<void> },
  events: readonly StoredEvent[],
  size: () => number,
): Promise<void> {
  for (let at = 0; at < events.length; ) {
    const batch = events.slice(at, at + size());
    // The next offset is past the batch's last event (offsets are the log's, with gaps).
    await stage.handle(batch, batch[batch.length - 1]!.logOffset + 1);
    at += batch.length;
  }
}

/** Checks that PostgreSQL holds the embedded engine's profiles and event assignments; returns what it holds. */
async function expectEmbedded(pool: pg.Pool, schema: string, want: ReturnType<typeof embedded>) {
  const got = await stored(pool, schema);
  expect(got.groups).toEqual(want.groups);
  expect(got.eventGroup).toEqual(want.eventGroup);
  return got;
}

/** The `n` of a one-row query. */
async function intOf(pool: pg.Pool, sql: string): Promise<number> {
  return (await pool.query<{ n: number }>(sql)).rows[0]!.n;
}

/** A shared stage on the schema, as partition 0's consumer unless told, its clock at 0. */
const sharedStage = (
  pool: pg.Pool,
  schema: string,
  rules: IdentityRules,
  options: Partial<SharedIdentityStageOptions> = {},
) => SharedIdentityStage.open({ pool, schema, rules, consumer: 'identity:p0', now: () => 0, ...options });

const decisionCount = (pool: pg.Pool, schema: string) =>
  intOf(pool, `SELECT count(*)::int AS n FROM ${schema}.identity_decisions`);

if (pgProblem) {
  describe.skip(`identity on PostgreSQL (PostgreSQL at 127.0.0.1:5432 unreachable: ${pgProblem})`, () => {
    it('needs PostgreSQL', () => {});
  });
} else {
  let db: Awaited<ReturnType<typeof scratchDatabase>>;
  let schemaNo = 0;
  beforeAll(async () => {
    db = await scratchDatabase();
  });
  afterAll(async () => {
    await db?.drop();
  });
  /** Runs `fn` with `n` pools on the scratch database, and ends them after. */
  async function withPools(n: number, fn: (pools: pg.Pool[]) => Promise<void>): Promise<void> {
    const pools = Array.from({ length: n }, () => new pg.Pool(db.config));
    try {
      await fn(pools);
    } finally {
      await Promise.all(pools.map((p) => p.end()));
    }
  }
  const withPool = (fn: (pool: pg.Pool) => Promise<void>) => withPools(1, ([pool]) => fn(pool!));

  goldenScenarios('PostgreSQL, one SharedIdentityStage', (options) =>
    pgIdentityPipeline(db.config, { ...options, schema: `golden${schemaNo++}` }),
  );

  describe('identity on PostgreSQL: values and identifiers', () => {
    // Each test has a schema of its own in the scratch database.
    const fresh = (options: Parameters<typeof pgIdentityPipeline>[1] = {}) =>
      pgIdentityPipeline(db.config, { ...options, schema: `values${schemaNo++}` });

    it('values with tabs, newlines and backslashes are written and read back as they were', async () => {
      const p = await fresh();
      try {
        const odd = 'a\tb\\c\nd\re \\N';
        await p.send([
          {
            type: 'identify',
            messageId: 'x\t1',
            at: 0,
            userId: odd,
            traits: { note: odd, nested: { k: [odd] } },
          },
        ]);
        const v = await p.stage.getProfile(`user_id:${odd}`);
        expect(v.identifiers).toMatchObject([{ type: 'user_id', value: odd }]);
        expect(v.traits).toEqual({ note: odd, nested: { k: [odd] } });
        expect(await p.stage.search('note', odd)).toHaveLength(1);
        expect(Object.keys(await p.eventProfiles())).toEqual(['x\t1']);
        expect((await p.stage.explain(`user_id:${odd}`)).path.map((d) => d.messageId)).toEqual(['x\t1']);
      } finally {
        await p.destroy();
      }
    });

    it('an identifier too long for an index entry is left out, and the batch and the next resolve', async () => {
      const p = await fresh();
      try {
        // Incompressible, 5,760 characters: past PostgreSQL's 2,704-byte index entry limit.
        const huge = Array.from({ length: 180 }, (_, i) =>
          createHash('md5').update(String(i)).digest('hex'),
        ).join('');
        await p.send([
          {
            type: 'identify',
            messageId: 'h1',
            at: 0,
            userId: huge,
            anonymousId: 'a-huge',
            traits: { [huge]: 1, plan: 'pro' },
          },
          { type: 'track', messageId: 'h2', at: 1, userId: 'u-after', event: 'E' },
        ]);
        await p.send([{ type: 'track', messageId: 'h3', at: 2, userId: 'u-after', event: 'E' }]);
        const ev = await p.eventProfiles();
        expect(ev.h1).not.toBeNull();
        expect(ev.h3).toBe(ev.h2);
        const v = await p.stage.getProfile('anonymous_id:a-huge');
        expect(v.identifiers.map((i: { type: string }) => i.type)).toEqual(['anonymous_id']);
        expect(v.traits).toEqual({ plan: 'pro' });
      } finally {
        await p.destroy();
      }
    });

    it('an empty identifier value (blockedValues emptied) is found again like any other', async () => {
      const p = await fresh({ identity: { blockedValues: [] } });
      try {
        await p.send([{ type: 'track', messageId: 'e1', at: 0, anonymousId: '', event: 'E' }]);
        // In a later batch: the holder is loaded from PostgreSQL.
        await p.send([{ type: 'track', messageId: 'e2', at: 1, anonymousId: ' ', event: 'E' }]);
        const ev = await p.eventProfiles();
        expect(ev.e1).not.toBeNull();
        expect(ev.e2).toBe(ev.e1);
      } finally {
        await p.destroy();
      }
    });
  });

  describe('identity on PostgreSQL: the Profile API routes', () => {
    it('serve profiles, search, explain and unmerge from PostgreSQL', async () => {
      const p = await pgIdentityPipeline(db.config, { schema: 'routes' });
      const app = Fastify();
      app.removeAllContentTypeParsers();
      app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
      app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, _req, reply) => {
        reply.status(err.statusCode ?? 500).send({ code: err.code, message: err.message });
      });
      profileRoutes(app, { identity: p.stage, isAdmin: (h) => h === 'Bearer admin', isReader: () => false });
      const get = async (url: string) => {
        const r = await app.inject({ url, headers: { authorization: 'Bearer admin' } });
        return { status: r.statusCode, body: r.json() as Record<string, unknown> };
      };
      try {
        await p.send([
          { type: 'page', messageId: 'r0', at: 0, anonymousId: 'laptop', name: 'Home' },
          {
            type: 'identify',
            messageId: 'r1',
            at: 0,
            anonymousId: 'phone',
            traits: { email: 'ada@x.io', plan: 'pro' },
          },
          { type: 'identify', messageId: 'r2', at: 1, userId: 'ada', traits: { email: 'ADA@x.io' } },
          { type: 'identify', messageId: 'r3', at: 2, anonymousId: 'laptop', userId: 'ada' },
          {
            type: 'track',
            messageId: 'r4',
            at: 3,
            anonymousId: 'laptop',
            event: 'E',
            context: { device: { id: 'hw' } },
          },
          { type: 'identify', messageId: 'r5', at: 4, anonymousId: 'kiosk', userId: 'bob' },
          { type: 'track', messageId: 'r6', at: 5, anonymousId: 'kiosk', userId: 'ada', event: 'E' },
        ]);
        const ada = await get('/v1/profiles/email:Ada@X.io');
        expect(ada.status).toBe(200);
        expect((ada.body.identifiers as { value: string }[]).map((i) => i.value).sort()).toEqual([
          'ada',
          'ada@x.io',
          'hw',
          'laptop',
          'phone',
        ]);
        expect(ada.body.traits).toEqual({ email: 'ADA@x.io', plan: 'pro' });
        expect((ada.body.recentEvents as { messageId: string }[]).map((e) => e.messageId)).toEqual([
          'r6',
          'r4',
          'r3',
          'r2',
          'r1',
          'r0',
        ]);
        expect(await get('/v1/profiles?trait=plan&value=pro')).toMatchObject({
          status: 200,
          body: { profiles: [{ profileId: ada.body.profileId }] },
        });
        const why = await get('/v1/profiles/anonymous_id:phone/explain?with=device_id:hw');
        expect(why.body).toMatchObject({ sameProfile: true });
        expect(String(why.body.summary)).toContain('r1');
        expect((await get('/v1/profiles/user_id:nobody')).body).toMatchObject({
          code: 'TRIB_ERR_PROFILE_NOT_FOUND',
        });
        expect((await get('/v1/profiles/nocolon')).body).toMatchObject({
          code: 'TRIB_ERR_PROFILE_BAD_IDENTIFIER',
        });
        // The user_id limit kept bob apart (r6 was refused the link); merges are the two devices.
        expect((ada.body.merges as unknown[]).length).toBe(1);
        const mergeId = (ada.body.merges as { mergeId: string }[])[0]!.mergeId;
        const un = await app.inject({
          method: 'POST',
          url: `/v1/profiles/merges/${mergeId}/unmerge`,
          headers: { authorization: 'Bearer admin' },
        });
        expect(un.statusCode).toBe(200);
        expect(un.json()).toMatchObject({ success: true, blocked: true });
        expect((await get('/v1/profiles/anonymous_id:laptop')).body.profileId).not.toBe(
          (await get('/v1/profiles/anonymous_id:phone')).body.profileId,
        );
        const again = await app.inject({
          method: 'POST',
          url: `/v1/profiles/merges/${mergeId}/unmerge`,
          headers: { authorization: 'Bearer admin' },
        });
        expect(again.json()).toMatchObject({ code: 'TRIB_ERR_PROFILE_MERGE_NOT_FOUND' });
      } finally {
        await app.close();
        await p.close();
      }
    });
  });

  describe('identity on PostgreSQL: equal to the embedded engine', () => {
    it('one stage in batches gives the embedded decisions event by event, limits included', async () => {
      const rules = rulesOf({ ...COMPUTED, identifiers: { anonymous_id: { limit: 2 } } });
      const events = toStored(workload(7, 60, 25, true), 0);
      const want = embedded(rules, events);
      expect([...want.decisions.values()].some((d) => d.limited)).toBe(true);
      expect([...want.decisions.values()].some((d) => d.action === 'merge')).toBe(true);
      await withPool(async (pool) => {
        const schema = 'one_stage';
        const stage = await sharedStage(pool, schema, rules);
        const rnd = prng(3);
        await handleInBatches(stage, events, () => 1 + Math.floor(rnd() * 120));
        expect(stage.position()).toBe(events.length);
        const got = await expectEmbedded(pool, schema, want);
        expect(got.profiles).toBe(want.groups.length);
        const d = await pool.query<{ m: string; a: string; l: boolean; lo: string }>(
          `SELECT message_id AS m, action AS a, limited AS l, left_out::text AS lo FROM ${schema}.identity_decisions`,
        );
        expect(d.rows).toHaveLength(events.length);
        for (const row of d.rows) {
          const w = want.decisions.get(row.m)!;
          expect({ m: row.m, a: row.a, l: row.l, lo: JSON.parse(row.lo) }).toEqual({
            m: row.m,
            a: w.action,
            l: w.limited,
            lo: w.leftOut,
          });
        }
        // Traits and computed traits survive the round trips between batches.
        const engine = new IdentityEngine(rules, { now: () => 0 });
        for (const s of events) engine.resolve(toIdentityEvent(s, rules));
        const loaded = await stage.store.loadProfiles(pool, null);
        const norm = (
          ps: Iterable<{
            identifiers: Map<string, unknown>;
            traits: Map<string, { value: unknown }>;
            computed: Map<string, unknown>;
            eventCount: number;
            firstSeen: number;
            lastSeen: number;
          }>,
        ) =>
          [...ps]
            .map((p) => ({
              ids: [...p.identifiers.keys()].sort(),
              traits: Object.fromEntries([...p.traits].map(([k, t]) => [k, t.value])),
              computed: Object.fromEntries(
                [...p.computed].map(([k, s]) => [k, Object.fromEntries(s as Map<number, unknown>)]),
              ),
              n: p.eventCount,
              f: p.firstSeen,
              l: p.lastSeen,
            }))
            .sort((a, b) => (a.ids[0]! < b.ids[0]! ? -1 : 1));
        expect(norm(loaded)).toEqual(norm(engine.profiles.values()));
      });
    });

    it('the embedded IdentityStage runs on the PostgreSQL store too (the IdentityStore port)', async () => {
      const rules = rulesOf({ ...COMPUTED, identifiers: { anonymous_id: { limit: 2 } } });
      const events = toStored(workload(17, 40, 20, true), 0);
      const want = embedded(rules, events);
      await withPool(async (pool) => {
        const schema = 'port';
        const store = await PostgresIdentityStore.open({
          pool,
          schema,
          computed: rules.computed,
          now: () => 0,
        });
        const stage = await IdentityStage.open(store, rules, { now: () => 0 });
        await handleInBatches(stage, events, () => 97);
        await stage.flush(); // its last batch's transaction runs after `handle` returned
        expect(await store.offset()).toBe(events.length);
        await expectEmbedded(pool, schema, want);
        // A restart loads the whole graph back: the same profiles as the stage held.
        const again = await IdentityStage.open(store, rules, { now: () => 0 });
        const ids = (st: IdentityStage) =>
          [...st.profiles()].map((p) => [...p.identifiers.keys()].sort()).sort(byFirst);
        expect(ids(again)).toEqual(want.groups);
        expect(ids(again)).toEqual(ids(stage));
      });
    });

    it('two stages on two pools resolve interleaved partitions concurrently into the embedded profiles', async () => {
      const rules = rulesOf(COMPUTED);
      const events = toStored(workload(11, 400, 15), 0);
      const want = embedded(rules, events);
      expect([...want.decisions.values()].some((d) => d.limited)).toBe(false);
      // Partitioned by the identity key (userId, else anonymousId), as the log does.
      const part = (s: StoredEvent) => partitionOf(s, 2);
      const partitions = [events.filter((s) => part(s) === 0), events.filter((s) => part(s) === 1)];
      expect(Math.min(partitions[0]!.length, partitions[1]!.length)).toBeGreaterThan(events.length / 4);
      const schema = 'two_stages';
      await withPools(2, async (pools) => {
        // Both "processes" start at once: the DDL lock keeps their CREATEs apart.
        const stages = await Promise.all(
          pools.map((pool, i) => sharedStage(pool, schema, rules, { consumer: `identity:p${i}` })),
        );
        let overlapped = 0;
        let inFlight = 0;
        await Promise.all(
          stages.map(async (stage, i) => {
            const rnd = prng(100 + i);
            const counted = {
              async handle(batch: readonly StoredEvent[], next: number) {
                inFlight++;
                if (inFlight > 1) overlapped++;
                await stage.handle(batch, next);
                inFlight--;
              },
            };
            await handleInBatches(counted, partitions[i]!, () => 1 + Math.floor(rnd() * 200));
          }),
        );
        expect(overlapped).toBeGreaterThan(0);
        const got = await expectEmbedded(pools[0]!, schema, want);
        expect(got.profiles).toBe(want.groups.length);
        // Every event was resolved once; each merge removed one profile.
        const counts = await pools[0]!.query<{ d: number; m: number; n: number }>(
          `SELECT (SELECT count(*)::int FROM ${schema}.identity_decisions) AS d,
                  (SELECT count(*)::int FROM ${schema}.profile_merges) AS m,
                  (SELECT count(*)::int FROM ${schema}.identity_decisions WHERE action = 'new') AS n`,
        );
        expect(counts.rows[0]!.d).toBe(events.length);
        expect(counts.rows[0]!.n - counts.rows[0]!.m).toBe(want.groups.length);
        expect(await intOf(pools[0]!, `SELECT sum(event_count)::int AS n FROM ${schema}.profiles`)).toBe(
          events.length,
        );
      });
    });
  });

  describe('identity on PostgreSQL: offsets and failures', () => {
    it('a stale commit is refused with TRIB_ERR_STATE_OFFSET_MOVED and writes nothing', async () => {
      const rules = rulesOf({});
      const schema = 'cas';
      await withPool(async (pool) => {
        const events = toStored(workload(5, 10, 5), 0);
        const a = await sharedStage(pool, schema, rules);
        const b = await sharedStage(pool, schema, rules);
        await b.handle(events.slice(0, 20), 20);
        const before = await stored(pool, schema);
        const err = await a.handle(events.slice(0, 20), 20).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(TributaryError);
        expect((err as TributaryError).code).toBe('TRIB_ERR_STATE_OFFSET_MOVED');
        expect((err as TributaryError).message).toContain('"identity:p0" stored offset 20, not 0');
        expect(await stored(pool, schema)).toEqual(before);
        expect(a.position()).toBe(0);
        // Fenced: it never commits for this consumer again, even from the moved offset.
        expect(a.isFenced()).toBe(true);
        await expect(a.handle([], 20)).rejects.toMatchObject({ code: 'TRIB_ERR_STATE_OFFSET_MOVED' });
        expect(await a.store.offsetOf('identity:p0')).toBe(20);
        // The owner goes on; another consumer's offset is its own.
        await b.handle(events.slice(20), events.length);
        const c = await sharedStage(pool, schema, rules, { consumer: 'identity:p1' });
        expect(c.position()).toBe(0);
        expect(await decisionCount(pool, schema)).toBe(events.length);
      });
    });

    it('follows a partition feed from the stored offset; after a takeover the old owner is refused', async () => {
      const rules = rulesOf(COMPUTED);
      const schema = 'follow';
      await withPool(async (pool) => {
        // One partition's events: log offsets with gaps (the other partitions' events).
        const all = toStored(workload(13, 40, 10), 0);
        const events = all.filter((s) => partitionOf(s, 2) === 0);
        let loaded = 0;
        const listeners = new Set<(n: number) => void>();
        const loader = {
          position: () => (loaded === 0 ? 0 : events[loaded - 1]!.logOffset + 1),
          onLoaded(l: (n: number) => void) {
            listeners.add(l);
            return () => listeners.delete(l);
          },
        };
        const load = (n: number) => {
          loaded = Math.min(events.length, loaded + n);
          for (const l of listeners) l(loader.position());
        };
        const warehouse = {
          readEvents: async (from: number, to: number, limit: number) =>
            events.filter((e) => e.logOffset >= from && e.logOffset < to).slice(0, limit),
        };
        const feed = new EventFeed(warehouse, loader);
        const errors: unknown[] = [];
        const a = await sharedStage(pool, schema, rules, { maxBatch: 7, onError: (e) => errors.push(e) });
        a.follow(feed);
        load(events.length - 10);
        await a.drained();
        expect(a.position()).toBe(loader.position());
        expect(errors).toEqual([]);
        // Another worker takes the partition over and resolves the rest.
        const b = await sharedStage(pool, schema, rules);
        const rest = events.slice(loaded);
        await b.handle(rest, rest[rest.length - 1]!.logOffset + 1);
        load(10);
        await vi.waitFor(() => expect(errors.length).toBeGreaterThan(0));
        await a.stop();
        expect(errors[0]).toMatchObject({ code: 'TRIB_ERR_STATE_OFFSET_MOVED' });
        await expectEmbedded(pool, schema, embedded(rules, events));
        expect(await decisionCount(pool, schema)).toBe(events.length);
      });
    });

    it('a worker that stalls holding the graph lock is cut off by PostgreSQL, and the others go on', async () => {
      const rules = rulesOf({});
      const schema = 'stall';
      await withPools(2, async (pools) => {
        const frozen = await PostgresIdentityStore.open({
          pool: pools[0]!,
          schema,
          idleInTransactionMs: 200,
        });
        const stage = await sharedStage(pools[1]!, schema, rules, { consumer: 'identity:p1' });
        let locked: () => void = () => undefined;
        const holding = new Promise<void>((r) => {
          locked = r;
        });
        const stalled = frozen.transaction(async (c) => {
          await frozen.lockGraph(c);
          locked();
          // Frozen well past the idle timeout (a stopped process, a cut network).
          await new Promise((r) => setTimeout(r, 2_000));
          await c.query('SELECT 1');
        });
        await holding;
        const events = toStored(workload(21, 5, 4), 0);
        await stage.handle(events, events.length);
        await expect(stalled).rejects.toThrow();
        expect(await stage.store.offsetOf('identity:p1')).toBe(events.length);
        // The pool replaced the dropped connection.
        expect((await pools[0]!.query('SELECT 1 AS x')).rows).toEqual([{ x: 1 }]);
      });
    });

    it('a transaction that fails midway leaves nothing behind, and the batch resolves again correctly', async () => {
      const rules = rulesOf(COMPUTED);
      const schema = 'midway';
      await withPool(async (pool) => {
        const events = toStored(workload(9, 30, 10), 0);
        const stage = await sharedStage(pool, schema, rules);
        await stage.handle(events.slice(0, 150), 150);
        const before = await stored(pool, schema);
        // A real fault inside PostgreSQL: the first insert of decisions after this point fails,
        // after the profiles and assignments of the batch were written. (A sequence is not
        // transactional, so the fault fires once.)
        await pool.query(`CREATE SEQUENCE ${schema}.fault`);
        await pool.query(`CREATE FUNCTION ${schema}.fault() RETURNS trigger LANGUAGE plpgsql AS $$
          BEGIN IF nextval('${schema}.fault') = 1 THEN RAISE EXCEPTION 'disk full (injected)'; END IF; RETURN NULL; END $$`);
        await pool.query(`CREATE TRIGGER fault AFTER INSERT ON ${schema}.identity_decisions
          FOR EACH STATEMENT EXECUTE FUNCTION ${schema}.fault()`);
        await expect(stage.handle(events.slice(150), events.length)).rejects.toThrow('disk full (injected)');
        expect(await stored(pool, schema)).toEqual(before);
        expect(await stage.store.offsetOf('identity:p0')).toBe(150);
        expect(stage.position()).toBe(150);
        await stage.handle(events.slice(150), events.length);
        await expectEmbedded(pool, schema, embedded(rules, events));
        expect(await stage.store.offsetOf('identity:p0')).toBe(events.length);
      });
    });

    it('the events_with_profile view is made only once `events` exists', async () => {
      await withPool(async (pool) => {
        const store = await PostgresIdentityStore.open({ pool, schema: 'views' });
        // Once set up, opening runs no DDL: it returns while a batch holds the graph lock.
        await store.transaction(async (c) => {
          await store.lockGraph(c);
          await PostgresIdentityStore.open({ pool, schema: 'views' });
        });
        expect(await store.ensureViews()).toBe(false);
        await createEventsTable(pool, 'views');
        expect(await store.ensureViews()).toBe(true);
        expect(await intOf(pool, "SELECT count(*)::int AS n FROM pg_views WHERE schemaname = 'views'")).toBe(
          2,
        );
      });
    });
  });
}
