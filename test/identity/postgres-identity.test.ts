import Fastify from 'fastify';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { IdentityConfig } from '../../src/config/identity-schema.js';
import { TributaryError } from '../../src/errors.js';
import { compileRules } from '../../src/identity/identifiers.js';
import { IdentityEngine, toIdentityEvent } from '../../src/identity/identity-engine.js';
import { IdentityStage } from '../../src/identity/identity-stage.js';
import { PostgresIdentityStore } from '../../src/identity/postgres/postgres-identity-store.js';
import { SharedIdentityStage } from '../../src/identity/postgres/shared-identity-stage.js';
import { profileRoutes } from '../../src/identity/profile-routes.js';
import { EventFeed } from '../../src/pipeline/event-feed.js';
import type { StoredEvent } from '../../src/warehouse/warehouse.js';
import { pgUnreachable } from '../pg.js';
import { createEventsTable, pgIdentityPipeline, scratchDatabase, toStored } from './pg-harness.js';
import { byFirst, embedded, partitionOf, prng, stored, workload } from './workload.js';

const pgProblem = await pgUnreachable();

const COMPUTED = {
  computed: [
    { name: 'orders', op: 'count', event: 'Order Completed' },
    { name: 'revenue', op: 'sum', event: 'Order Completed', property: 'properties.total' },
    { name: 'first_order', op: 'first', event: 'Order Completed' },
  ],
};

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

  describe('identity on PostgreSQL: golden scenarios through one SharedIdentityStage', () => {
    // Each scenario has a schema of its own in the scratch database.
    const fresh = async (options: Parameters<typeof pgIdentityPipeline>[1] = {}) => {
      const p = await pgIdentityPipeline(db.config, { ...options, schema: `golden${schemaNo++}` });
      return { ...p, destroy: () => p.close() };
    };

    it('anonymous → identify: earlier anonymous events belong to the profile once the link exists', async () => {
      const p = await fresh();
      try {
        await p.send([
          { type: 'page', messageId: 'a1', at: 0, anonymousId: 'anon-1', name: 'Home' },
          { type: 'track', messageId: 'a2', at: 1, anonymousId: 'anon-1', event: 'Viewed Product' },
        ]);
        const before = await p.eventProfiles();
        await p.send([
          {
            type: 'identify',
            messageId: 'a3',
            at: 2,
            anonymousId: 'anon-1',
            userId: 'u-ada',
            traits: { email: ' Ada@Example.COM ', name: 'Ada' },
          },
        ]);
        const profile = await p.stage.getProfile('email:ada@example.com');
        expect(profile.identifiers.map((i) => `${i.type}:${i.value}`).sort()).toEqual([
          'anonymous_id:anon-1',
          'email:ada@example.com',
          'user_id:u-ada',
        ]);
        expect(profile.traits).toMatchObject({ name: 'Ada' });
        expect(await p.eventProfiles()).toEqual({
          a1: profile.profileId,
          a2: profile.profileId,
          a3: profile.profileId,
        });
        expect(before.a1).toBe(profile.profileId);
        expect(profile.recentEvents.map((e) => e.messageId)).toEqual(['a3', 'a2', 'a1']);
        expect(profile.recentEvents[0]!.timestamp).toBe('2026-11-01T10:02:00.000Z');
      } finally {
        await p.destroy();
      }
    });

    it('two devices then login: both devices merge into one profile, with the merge recorded', async () => {
      const p = await fresh({ identity: COMPUTED });
      try {
        await p.send([
          {
            type: 'track',
            messageId: 'd1',
            at: 0,
            anonymousId: 'phone',
            event: 'Order Completed',
            properties: { total: 10 },
          },
          {
            type: 'track',
            messageId: 'd2',
            at: 1,
            anonymousId: 'laptop',
            event: 'Order Completed',
            properties: { total: 5 },
          },
          { type: 'identify', messageId: 'd3', at: 2, anonymousId: 'phone', userId: 'u-1' },
        ]);
        expect(await p.query('SELECT count(*)::int AS n FROM profiles')).toEqual([{ n: 2 }]);
        await p.send([{ type: 'identify', messageId: 'd4', at: 3, anonymousId: 'laptop', userId: 'u-1' }]);
        const profile = await p.stage.getProfile('user_id:u-1');
        expect(profile.identifiers.map((i) => i.value).sort()).toEqual(['laptop', 'phone', 'u-1']);
        expect(profile.computedTraits).toEqual({
          orders: 2,
          revenue: 15,
          first_order: '2026-11-01T10:00:00.000Z',
        });
        expect(profile.merges).toHaveLength(1);
        expect(profile.merges[0]).toMatchObject({ profileId: profile.profileId, messageId: 'd4' });
        expect(new Set(Object.values(await p.eventProfiles()))).toEqual(new Set([profile.profileId]));
        expect(await p.query('SELECT count(*)::int AS n FROM profiles')).toEqual([{ n: 1 }]);
        expect(await p.query('SELECT count(*)::int AS n FROM profile_merges')).toEqual([{ n: 1 }]);
        expect(
          await p.query("SELECT value::text AS v FROM profile_computed_traits WHERE name = 'revenue'"),
        ).toEqual([{ v: '15' }]);
        // The merged-away profile id still names the person.
        const absorbed = (await p.query('SELECT profile_id FROM profile_aliases'))[0]!.profile_id as string;
        expect((await p.stage.getProfile(`profile_id:${absorbed}`)).profileId).toBe(profile.profileId);
      } finally {
        await p.destroy();
      }
    });

    it('shared device with two users: the second login does not glue the users together', async () => {
      const p = await fresh();
      try {
        await p.send([
          {
            type: 'identify',
            messageId: 's1',
            at: 0,
            anonymousId: 'tablet',
            userId: 'mum',
            traits: { name: 'Mum' },
          },
          { type: 'track', messageId: 's2', at: 1, anonymousId: 'tablet', userId: 'mum', event: 'Read' },
          {
            type: 'identify',
            messageId: 's3',
            at: 2,
            anonymousId: 'tablet',
            userId: 'kid',
            traits: { name: 'Kid' },
          },
          { type: 'track', messageId: 's4', at: 3, anonymousId: 'tablet', userId: 'kid', event: 'Played' },
        ]);
        const mum = await p.stage.getProfile('user_id:mum');
        const kid = await p.stage.getProfile('user_id:kid');
        expect(mum.profileId).not.toBe(kid.profileId);
        expect(mum.identifiers.map((i) => i.value).sort()).toEqual(['mum', 'tablet']);
        expect(kid.identifiers.map((i) => i.value)).toEqual(['kid']);
        expect(kid.traits).toEqual({ name: 'Kid' });
        expect(mum.traits).toEqual({ name: 'Mum' });
        const ev = await p.eventProfiles();
        expect([ev.s1, ev.s2, ev.s3, ev.s4]).toEqual([
          mum.profileId,
          mum.profileId,
          kid.profileId,
          kid.profileId,
        ]);
        expect(
          await p.query(
            "SELECT action, limited, left_out::text AS left_out FROM identity_decisions WHERE message_id = 's3'",
          ),
        ).toEqual([
          {
            action: 'new',
            limited: true,
            left_out: '[{"identifier":"anonymous_id:tablet","reason":"limit:user_id"}]',
          },
        ]);
        const why = await p.stage.explain('user_id:mum', 'user_id:kid');
        expect(why.sameProfile).toBe(false);
        expect(why.summary).toContain('carried anonymous_id:tablet of profile');
        expect(why.summary).toContain('left out (limit:user_id)');
        expect(await p.stage.search('name', 'Kid')).toEqual([
          { profileId: kid.profileId, traits: { name: 'Kid' } },
        ]);
      } finally {
        await p.destroy();
      }
    });

    it('a blocked placeholder email never joins strangers', async () => {
      const p = await fresh();
      try {
        await p.send([
          { type: 'identify', messageId: 'b1', at: 0, userId: 'u-1', traits: { email: 'null' } },
          {
            type: 'identify',
            messageId: 'b2',
            at: 1,
            userId: 'u-2',
            traits: { email: 'NULL ', phone: '000-000' },
          },
          { type: 'identify', messageId: 'b3', at: 2, userId: 'u-3', traits: { email: 'test@example.com' } },
          { type: 'identify', messageId: 'b4', at: 3, userId: 'u-4', traits: { email: 'TEST@example.com' } },
        ]);
        expect(await p.query('SELECT count(*)::int AS n FROM profiles')).toEqual([{ n: 4 }]);
        expect(
          await p.query("SELECT count(*)::int AS n FROM profile_identifiers WHERE type <> 'user_id'"),
        ).toEqual([{ n: 0 }]);
        const d = await p.query("SELECT left_out::text AS l FROM identity_decisions WHERE message_id = 'b2'");
        expect(JSON.parse(String(d[0]!.l))).toEqual([
          { identifier: 'email:null', reason: 'blocked_value' },
          { identifier: 'phone:000-000', reason: 'blocked_value' },
        ]);
        const why = await p.stage.explain('email:null');
        expect(why.identifiers).toEqual([{ identifier: 'email:null', profileId: null }]);
        expect(why.summary).toContain('blocked_value');
      } finally {
        await p.destroy();
      }
    });

    it('a limit stops a merge: the lower-priority identifier is left out', async () => {
      const p = await fresh({ identity: { identifiers: { device_id: { limit: 2 } } } });
      try {
        await p.send([
          { type: 'identify', messageId: 'l1', at: 0, userId: 'ann', traits: { email: 'ann@x.io' } },
          { type: 'identify', messageId: 'l2', at: 1, userId: 'bob', traits: { email: 'bob@x.io' } },
          { type: 'identify', messageId: 'l3', at: 2, userId: 'ann', traits: { email: 'bob@x.io' } },
          {
            type: 'track',
            messageId: 'l4',
            at: 3,
            userId: 'ann',
            event: 'E',
            context: { device: { id: 'd1' } },
          },
          {
            type: 'track',
            messageId: 'l5',
            at: 4,
            userId: 'ann',
            event: 'E',
            context: { device: { id: 'd2' } },
          },
          {
            type: 'track',
            messageId: 'l6',
            at: 5,
            userId: 'ann',
            event: 'E',
            context: { device: { id: 'd3' } },
          },
        ]);
        const ann = await p.stage.getProfile('user_id:ann');
        const bob = await p.stage.getProfile('email:bob@x.io');
        expect(bob.profileId).not.toBe(ann.profileId);
        expect(ann.identifiers.map((i) => `${i.type}:${i.value}`).sort()).toEqual([
          'device_id:d1',
          'device_id:d2',
          'email:ann@x.io',
          'user_id:ann',
        ]);
        expect(
          await p.query(
            "SELECT message_id, action, limited, left_out::text AS l FROM identity_decisions WHERE message_id IN ('l3', 'l6') ORDER BY 1",
          ),
        ).toEqual([
          {
            message_id: 'l3',
            action: 'attach',
            limited: true,
            l: '[{"identifier":"email:bob@x.io","reason":"limit:user_id"}]',
          },
          {
            message_id: 'l6',
            action: 'attach',
            limited: true,
            l: '[{"identifier":"device_id:d3","reason":"limit:device_id"}]',
          },
        ]);
        expect(await p.query('SELECT count(*)::int AS n FROM profile_merges')).toEqual([{ n: 0 }]);
      } finally {
        await p.destroy();
      }
    });

    it('unmerge splits identifiers, traits, computed traits and events back, and the link does not re-merge', async () => {
      const p = await fresh({ identity: COMPUTED });
      try {
        await p.send([
          {
            type: 'identify',
            messageId: 'u1',
            at: 0,
            userId: 'ada',
            traits: { email: 'ada@x.io', name: 'Ada' },
          },
          {
            type: 'track',
            messageId: 'u2',
            at: 1,
            userId: 'ada',
            event: 'Order Completed',
            properties: { total: 30 },
          },
          {
            type: 'identify',
            messageId: 'u3',
            at: 2,
            anonymousId: 'kiosk',
            traits: { email: 'bob@x.io', name: 'Bob' },
          },
          {
            type: 'track',
            messageId: 'u4',
            at: 3,
            anonymousId: 'kiosk',
            event: 'Order Completed',
            properties: { total: 7 },
          },
          { type: 'track', messageId: 'u5', at: 4, anonymousId: 'kiosk', userId: 'ada', event: 'Viewed' },
        ]);
        const merged = await p.stage.getProfile('user_id:ada');
        const bobId = (await p.query("SELECT profile_id FROM identity_decisions WHERE message_id = 'u3'"))[0]!
          .profile_id as string;
        expect(merged.identifiers).toHaveLength(4);
        expect(merged.traits.name).toBe('Bob');
        expect(merged.computedTraits).toMatchObject({ orders: 2, revenue: 37 });
        expect(merged.merges).toHaveLength(1);
        const mergeId = merged.merges[0]!.mergeId;

        const result = await p.stage.unmerge(mergeId);
        expect(result.profiles.sort()).toEqual([merged.profileId, bobId].sort());
        const ada = await p.stage.getProfile('user_id:ada');
        const bob = await p.stage.getProfile('anonymous_id:kiosk');
        expect(ada.profileId).toBe(merged.profileId);
        expect(bob.profileId).toBe(bobId);
        expect(ada.identifiers.map((i) => i.value).sort()).toEqual(['ada', 'ada@x.io']);
        expect(bob.identifiers.map((i) => i.value).sort()).toEqual(['bob@x.io', 'kiosk']);
        expect(ada.traits).toEqual({ email: 'ada@x.io', name: 'Ada' });
        expect(bob.traits).toEqual({ email: 'bob@x.io', name: 'Bob' });
        expect(ada.computedTraits).toMatchObject({ orders: 1, revenue: 30 });
        expect(bob.computedTraits).toMatchObject({ orders: 1, revenue: 7 });
        const ev = await p.eventProfiles();
        expect([ev.u1, ev.u2, ev.u3, ev.u4, ev.u5]).toEqual([
          ada.profileId,
          ada.profileId,
          bobId,
          bobId,
          ada.profileId,
        ]);
        expect(ada.merges[0]).toMatchObject({ mergeId, unmergedAt: expect.any(String) });
        await expect(p.stage.unmerge(mergeId)).rejects.toMatchObject({ kind: 'merge_not_found' });

        // The same link again: blocked (the block is found through the batch's identifiers).
        await p.send([
          { type: 'track', messageId: 'u6', at: 5, anonymousId: 'kiosk', userId: 'ada', event: 'Viewed' },
        ]);
        expect((await p.stage.getProfile('anonymous_id:kiosk')).profileId).toBe(bobId);
        expect((await p.stage.getProfile('user_id:ada')).profileId).toBe(ada.profileId);
        const d = await p.query("SELECT left_out::text AS l FROM identity_decisions WHERE message_id = 'u6'");
        expect(String(d[0]!.l)).toContain('blocked_link:');
        expect(await p.query('SELECT count(*)::int AS n FROM profile_blocks')).toEqual([{ n: 1 }]);
        // Identifiers the block does not name, linking the two sides: the block is found through
        // the other identifiers of the profiles the batch touches.
        await p.send([
          {
            type: 'track',
            messageId: 'u7',
            at: 6,
            userId: 'ada',
            event: 'E',
            context: { device: { id: 'hw-ada' } },
          },
          {
            type: 'track',
            messageId: 'u8',
            at: 7,
            anonymousId: 'kiosk',
            event: 'E',
            context: { device: { id: 'hw-k' } },
          },
        ]);
        await p.send([
          {
            type: 'track',
            messageId: 'u9',
            at: 8,
            event: 'E',
            anonymousId: 'x',
            context: { device: { id: 'hw-ada' }, externalIds: [{ type: 'kiosk_hw', id: 'hw-k' }] },
          },
          {
            type: 'track',
            messageId: 'u10',
            at: 9,
            event: 'E',
            context: { device: { id: 'hw-k' } },
            anonymousId: 'x',
          },
        ]);
        expect((await p.stage.getProfile('device_id:hw-k')).profileId).toBe(bobId);
        expect((await p.stage.getProfile('device_id:hw-ada')).profileId).toBe(ada.profileId);
        const d10 = await p.query(
          "SELECT left_out::text AS l FROM identity_decisions WHERE message_id = 'u10'",
        );
        expect(String(d10[0]!.l)).toContain('blocked_link:');
        const why = await p.stage.explain('user_id:ada', 'anonymous_id:kiosk');
        expect(why.sameProfile).toBe(false);
        expect(why.summary).toMatch(/carried anonymous_id:kiosk of profile .*left out \(blocked_link:/);
      } finally {
        await p.destroy();
      }
    });

    it('unmerge keeps the merges it does not undo: events of a device merged earlier stay with the person', async () => {
      const p = await fresh({ identity: COMPUTED });
      try {
        await p.send([
          {
            type: 'track',
            messageId: 'k1',
            at: 0,
            anonymousId: 'phone',
            event: 'Order Completed',
            properties: { total: 1 },
          },
          {
            type: 'track',
            messageId: 'k2',
            at: 1,
            anonymousId: 'laptop',
            event: 'Order Completed',
            properties: { total: 2 },
          },
          { type: 'identify', messageId: 'k3', at: 2, anonymousId: 'phone', userId: 'ada' },
          { type: 'identify', messageId: 'k4', at: 3, anonymousId: 'laptop', userId: 'ada' },
          {
            type: 'track',
            messageId: 'k5',
            at: 4,
            anonymousId: 'kiosk',
            event: 'Order Completed',
            properties: { total: 4 },
          },
          { type: 'track', messageId: 'k6', at: 5, anonymousId: 'kiosk', userId: 'ada', event: 'Viewed' },
        ]);
        const merged = await p.stage.getProfile('user_id:ada');
        expect(merged.merges.map((m) => m.messageId)).toEqual(['k4', 'k6']);
        await p.stage.unmerge(merged.merges[1]!.mergeId);
        const ada = await p.stage.getProfile('user_id:ada');
        const kiosk = await p.stage.getProfile('anonymous_id:kiosk');
        expect(ada.identifiers.map((i) => i.value).sort()).toEqual(['ada', 'laptop', 'phone']);
        expect(ada.computedTraits).toMatchObject({ orders: 2, revenue: 3 });
        expect(kiosk.computedTraits).toMatchObject({ orders: 1, revenue: 4 });
        const ev = await p.eventProfiles();
        expect([ev.k1, ev.k2, ev.k3, ev.k4, ev.k6]).toEqual(Array(5).fill(ada.profileId));
        expect(ev.k5).toBe(kiosk.profileId);
        const live = new Set((await p.query('SELECT profile_id FROM profiles')).map((r) => r.profile_id));
        for (const id of Object.values(ev)) expect(live.has(id)).toBe(true);
        await p.send([
          { type: 'identify', messageId: 'k7', at: 6, anonymousId: 'kiosk', traits: { email: 'bob@x.io' } },
        ]);
        await p.send([
          { type: 'track', messageId: 'k8', at: 7, anonymousId: 'tablet', event: 'E' },
          { type: 'identify', messageId: 'k9', at: 8, anonymousId: 'tablet', traits: { email: 'bob@x.io' } },
        ]);
        const bob = await p.stage.getProfile('email:bob@x.io');
        const after = await p.eventProfiles();
        expect([after.k5, after.k7, after.k8, after.k9]).toEqual(Array(4).fill(bob.profileId));
      } finally {
        await p.destroy();
      }
    });

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

    it('out-of-order events: traits by event timestamp, late anonymous events still join the profile', async () => {
      const p = await fresh({ identity: { ...COMPUTED, traits: { rules: { signup_plan: 'first' } } } });
      try {
        await p.send([
          {
            type: 'identify',
            messageId: 'o1',
            at: 60,
            anonymousId: 'a',
            userId: 'u',
            traits: { plan: 'pro', signup_plan: 'pro' },
          },
          {
            type: 'identify',
            messageId: 'o2',
            at: 10,
            userId: 'u',
            traits: { plan: 'free', signup_plan: 'free' },
          },
          {
            type: 'track',
            messageId: 'o3',
            at: 5,
            anonymousId: 'a',
            event: 'Order Completed',
            properties: { total: 1 },
          },
          {
            type: 'track',
            messageId: 'o4',
            at: 0,
            anonymousId: 'a',
            event: 'Order Completed',
            properties: { total: 2 },
          },
        ]);
        const u = await p.stage.getProfile('user_id:u');
        expect(u.traits).toEqual({ plan: 'pro', signup_plan: 'free' });
        expect(u.computedTraits).toEqual({ orders: 2, revenue: 3, first_order: '2026-11-01T10:00:00.000Z' });
        expect(u.firstSeen).toBe('2026-11-01T10:00:00.000Z');
        expect(u.lastSeen).toBe('2026-11-01T11:00:00.000Z');
        expect(new Set(Object.values(await p.eventProfiles()))).toEqual(new Set([u.profileId]));
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
      const rules = compileRules(
        IdentityConfig.parse({ ...COMPUTED, identifiers: { anonymous_id: { limit: 2 } } }),
      );
      const events = toStored(workload(7, 60, 25, true), 0);
      const want = embedded(rules, events);
      expect([...want.decisions.values()].some((d) => d.limited)).toBe(true);
      expect([...want.decisions.values()].some((d) => d.action === 'merge')).toBe(true);
      const pool = new pg.Pool(db.config);
      try {
        const schema = 'one_stage';
        const stage = await SharedIdentityStage.open({
          pool,
          schema,
          rules,
          consumer: 'identity:p0',
          now: () => 0,
        });
        const rnd = prng(3);
        for (let i = 0; i < events.length; ) {
          const n = 1 + Math.floor(rnd() * 120);
          const part = events.slice(i, i + n);
          await stage.handle(part, part[part.length - 1]!.logOffset + 1);
          i += n;
        }
        expect(stage.position()).toBe(events.length);
        const got = await stored(pool, schema);
        expect(got.groups).toEqual(want.groups);
        expect(got.profiles).toBe(want.groups.length);
        expect(got.eventGroup).toEqual(want.eventGroup);
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
        const store = stage.store;
        const loaded = await store.loadProfiles(pool, null);
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
      } finally {
        await pool.end();
      }
    });

    it('the embedded IdentityStage runs on the PostgreSQL store too (the IdentityStore port)', async () => {
      const rules = compileRules(
        IdentityConfig.parse({ ...COMPUTED, identifiers: { anonymous_id: { limit: 2 } } }),
      );
      const events = toStored(workload(17, 40, 20, true), 0);
      const want = embedded(rules, events);
      const pool = new pg.Pool(db.config);
      try {
        const schema = 'port';
        const store = await PostgresIdentityStore.open({
          pool,
          schema,
          computed: rules.computed,
          now: () => 0,
        });
        const stage = await IdentityStage.open(store, rules, { now: () => 0 });
        for (let i = 0; i < events.length; i += 97) {
          const part = events.slice(i, i + 97);
          await stage.handle(part, part[part.length - 1]!.logOffset + 1);
        }
        expect(await store.offset()).toBe(events.length);
        const got = await stored(pool, schema);
        expect(got.groups).toEqual(want.groups);
        expect(got.eventGroup).toEqual(want.eventGroup);
        // A restart loads the whole graph back: the same profiles as the stage held.
        const again = await IdentityStage.open(store, rules, { now: () => 0 });
        const ids = (st: IdentityStage) =>
          [...st.profiles()].map((p) => [...p.identifiers.keys()].sort()).sort(byFirst);
        expect(ids(again)).toEqual(want.groups);
        expect(ids(again)).toEqual(ids(stage));
      } finally {
        await pool.end();
      }
    });

    it('two stages on two pools resolve interleaved partitions concurrently into the embedded profiles', async () => {
      const rules = compileRules(IdentityConfig.parse(COMPUTED));
      const events = toStored(workload(11, 400, 15), 0);
      const want = embedded(rules, events);
      expect([...want.decisions.values()].some((d) => d.limited)).toBe(false);
      // Partitioned by the identity key (userId, else anonymousId), as the log does.
      const part = (s: StoredEvent) => partitionOf(s, 2);
      const partitions = [events.filter((s) => part(s) === 0), events.filter((s) => part(s) === 1)];
      expect(Math.min(partitions[0]!.length, partitions[1]!.length)).toBeGreaterThan(events.length / 4);
      const schema = 'two_stages';
      const pools = [new pg.Pool(db.config), new pg.Pool(db.config)];
      try {
        // Both "processes" start at once: the DDL lock keeps their CREATEs apart.
        const stages = await Promise.all(
          pools.map((pool, i) =>
            SharedIdentityStage.open({ pool, schema, rules, consumer: `identity:p${i}`, now: () => 0 }),
          ),
        );
        let overlapped = 0;
        let inFlight = 0;
        await Promise.all(
          stages.map(async (stage, i) => {
            const rnd = prng(100 + i);
            const evs = partitions[i]!;
            for (let at = 0; at < evs.length; ) {
              const n = 1 + Math.floor(rnd() * 200);
              const batch = evs.slice(at, at + n);
              // The next offset of a partition is past its last event (offsets are the log's).
              inFlight++;
              if (inFlight > 1) overlapped++;
              await stage.handle(batch, batch[batch.length - 1]!.logOffset + 1);
              inFlight--;
              at += n;
            }
          }),
        );
        expect(overlapped).toBeGreaterThan(0);
        const got = await stored(pools[0]!, schema);
        expect(got.groups).toEqual(want.groups);
        expect(got.profiles).toBe(want.groups.length);
        expect(got.eventGroup).toEqual(want.eventGroup);
        // Every event was resolved once; each merge removed one profile.
        const counts = await pools[0]!.query<{ d: number; m: number; n: number }>(
          `SELECT (SELECT count(*)::int FROM ${schema}.identity_decisions) AS d,
                  (SELECT count(*)::int FROM ${schema}.profile_merges) AS m,
                  (SELECT count(*)::int FROM ${schema}.identity_decisions WHERE action = 'new') AS n`,
        );
        expect(counts.rows[0]!.d).toBe(events.length);
        expect(counts.rows[0]!.n - counts.rows[0]!.m).toBe(want.groups.length);
        const sum = await pools[0]!.query<{ n: number }>(
          `SELECT sum(event_count)::int AS n FROM ${schema}.profiles`,
        );
        expect(sum.rows[0]!.n).toBe(events.length);
      } finally {
        await Promise.all(pools.map((p) => p.end()));
      }
    });
  });

  describe('identity on PostgreSQL: offsets and failures', () => {
    it('a stale commit is refused with TRIB_ERR_STATE_OFFSET_MOVED and writes nothing', async () => {
      const rules = compileRules(IdentityConfig.parse({}));
      const schema = 'cas';
      const pool = new pg.Pool(db.config);
      try {
        const events = toStored(workload(5, 10, 5), 0);
        const a = await SharedIdentityStage.open({ pool, schema, rules, consumer: 'identity:p0' });
        const b = await SharedIdentityStage.open({ pool, schema, rules, consumer: 'identity:p0' });
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
        const c = await SharedIdentityStage.open({ pool, schema, rules, consumer: 'identity:p1' });
        expect(c.position()).toBe(0);
        const d = await pool.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM ${schema}.identity_decisions`,
        );
        expect(d.rows[0]!.n).toBe(events.length);
      } finally {
        await pool.end();
      }
    });

    it('follows a partition feed from the stored offset; after a takeover the old owner is refused', async () => {
      const rules = compileRules(IdentityConfig.parse(COMPUTED));
      const schema = 'follow';
      const pool = new pg.Pool(db.config);
      try {
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
        const a = await SharedIdentityStage.open({
          pool,
          schema,
          rules,
          consumer: 'identity:p0',
          maxBatch: 7,
          now: () => 0,
          onError: (e) => errors.push(e),
        });
        a.follow(feed);
        load(events.length - 10);
        await a.drained();
        expect(a.position()).toBe(loader.position());
        expect(errors).toEqual([]);
        // Another worker takes the partition over and resolves the rest.
        const b = await SharedIdentityStage.open({
          pool,
          schema,
          rules,
          consumer: 'identity:p0',
          now: () => 0,
        });
        const rest = events.slice(loaded);
        await b.handle(rest, rest[rest.length - 1]!.logOffset + 1);
        load(10);
        await vi.waitFor(() => expect(errors.length).toBeGreaterThan(0));
        await a.stop();
        expect(errors[0]).toMatchObject({ code: 'TRIB_ERR_STATE_OFFSET_MOVED' });
        const want = embedded(rules, events);
        const got = await stored(pool, schema);
        expect(got.groups).toEqual(want.groups);
        expect(got.eventGroup).toEqual(want.eventGroup);
        const d = await pool.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM ${schema}.identity_decisions`,
        );
        expect(d.rows[0]!.n).toBe(events.length);
      } finally {
        await pool.end();
      }
    });

    it('a worker that stalls holding the graph lock is cut off by PostgreSQL, and the others go on', async () => {
      const rules = compileRules(IdentityConfig.parse({}));
      const schema = 'stall';
      const pools = [new pg.Pool(db.config), new pg.Pool(db.config)];
      try {
        const frozen = await PostgresIdentityStore.open({
          pool: pools[0]!,
          schema,
          idleInTransactionMs: 200,
        });
        const stage = await SharedIdentityStage.open({
          pool: pools[1]!,
          schema,
          rules,
          consumer: 'identity:p1',
        });
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
      } finally {
        await Promise.all(pools.map((p) => p.end()));
      }
    });

    it('a transaction that fails midway leaves nothing behind, and the batch resolves again correctly', async () => {
      const rules = compileRules(IdentityConfig.parse(COMPUTED));
      const schema = 'midway';
      const pool = new pg.Pool(db.config);
      try {
        const events = toStored(workload(9, 30, 10), 0);
        const stage = await SharedIdentityStage.open({
          pool,
          schema,
          rules,
          consumer: 'identity:p0',
          now: () => 0,
        });
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
        const want = embedded(rules, events);
        const got = await stored(pool, schema);
        expect(got.groups).toEqual(want.groups);
        expect(got.eventGroup).toEqual(want.eventGroup);
        expect(await stage.store.offsetOf('identity:p0')).toBe(events.length);
      } finally {
        await pool.end();
      }
    });

    it('the events_with_profile view is made only once `events` exists', async () => {
      const pool = new pg.Pool(db.config);
      try {
        const store = await PostgresIdentityStore.open({ pool, schema: 'views' });
        // Once set up, opening runs no DDL: it returns while a batch holds the graph lock.
        await store.transaction(async (c) => {
          await store.lockGraph(c);
          await PostgresIdentityStore.open({ pool, schema: 'views' });
        });
        expect(await store.ensureViews()).toBe(false);
        await createEventsTable(pool, 'views');
        expect(await store.ensureViews()).toBe(true);
        const r = await pool.query("SELECT count(*)::int AS n FROM pg_views WHERE schemaname = 'views'");
        expect(r.rows[0]!.n).toBe(2);
      } finally {
        await pool.end();
      }
    });
  });
}
