import { afterEach, describe, expect, it } from 'vitest';
import type { ProfileApi } from '../../src/identity/profile-routes.js';
import type { TestEvent } from './harness.js';

/**
 * What the golden scenarios need of a store: a real pipeline in front of it, the Profile API
 * and SQL on its tables. SQL in the scenarios is the subset DuckDB and PostgreSQL read alike
 * (`count(*)::int`, `::text`, `JOIN … USING`), run with the store's tables first in the path.
 */
export interface ScenarioPipeline {
  /** The Profile API over the store. */
  stage: ProfileApi;
  /** Stores the events and returns once identity has resolved them. */
  send(events: TestEvent[]): Promise<void>;
  /** The profile id of each stored event, by messageId. */
  eventProfiles(): Promise<Record<string, string | null>>;
  query(sql: string): Promise<Record<string, unknown>[]>;
  /** Stops this pipeline and opens another on the same storage, as after a restart. */
  reopen(): Promise<ScenarioPipeline>;
  /** Stops the pipeline and removes what it stored; safe to call after `reopen`. */
  destroy(): Promise<void>;
}

/** A fresh pipeline on empty storage, with this identity configuration (the config file's `identity`). */
export type MakeScenarioPipeline = (options: { identity?: unknown }) => Promise<ScenarioPipeline>;

/** Computed traits the scenarios (and the stores' own tests) check. */
export const COMPUTED = {
  computed: [
    { name: 'orders', op: 'count', event: 'Order Completed' },
    { name: 'revenue', op: 'sum', event: 'Order Completed', property: 'properties.total' },
    { name: 'first_order', op: 'first', event: 'Order Completed' },
  ],
};

/** An order on an anonymous device: the computed traits count and sum it. */
const order = (messageId: string, at: number, anonymousId: string, total: number): TestEvent => ({
  type: 'track',
  messageId,
  at,
  anonymousId,
  event: 'Order Completed',
  properties: { total },
});

/** One identity decision of an event, with `left_out` as JSON text. */
const DECISION_SQL =
  'SELECT message_id, action, limited, profile_id, left_out::text AS l FROM identity_decisions JOIN events USING (log_offset, message_id)';

/**
 * The identity golden scenarios, the same bodies against every store (DuckDB embedded,
 * PostgreSQL in scale-out); `label` names the store in the test names.
 */
export function goldenScenarios(label: string, make: MakeScenarioPipeline): void {
  describe(`identity resolution: golden scenarios (${label})`, () => {
    const open: ScenarioPipeline[] = [];
    afterEach(async () => {
      // Newest first: a reopened pipeline goes before the one whose storage it shares.
      for (const p of open.splice(0).reverse()) await p.destroy();
    });
    const track = (p: ScenarioPipeline) => {
      open.push(p);
      return p;
    };
    const pipeline = async (identity?: unknown) => track(await make({ identity }));
    const decisions = async (p: ScenarioPipeline, messageIds: string[]) =>
      p.query(
        `${DECISION_SQL} WHERE message_id IN (${messageIds.map((m) => `'${m}'`).join(', ')}) ORDER BY 1`,
      );

    it('anonymous → identify: earlier anonymous events belong to the profile once the link exists', async () => {
      const p = await pipeline();
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
      expect(await p.query('SELECT type, value FROM profile_identifiers ORDER BY type')).toEqual([
        { type: 'anonymous_id', value: 'anon-1' },
        { type: 'email', value: 'ada@example.com' },
        { type: 'user_id', value: 'u-ada' },
      ]);
    });

    it('two devices then login: both devices merge into one profile, with the merge recorded', async () => {
      const p = await pipeline(COMPUTED);
      await p.send([
        order('d1', 0, 'phone', 10),
        order('d2', 1, 'laptop', 5),
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
    });

    it('shared device with two users: the second login does not glue the users together', async () => {
      const p = await pipeline();
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
      expect(await decisions(p, ['s3'])).toEqual([
        {
          message_id: 's3',
          action: 'new',
          limited: true,
          profile_id: kid.profileId,
          l: '[{"identifier":"anonymous_id:tablet","reason":"limit:user_id"}]',
        },
      ]);
      const why = await p.stage.explain('user_id:mum', 'user_id:kid');
      expect(why.sameProfile).toBe(false);
      expect(why.summary).toContain('carried anonymous_id:tablet of profile');
      expect(why.summary).toContain('left out (limit:user_id)');
      expect(await p.stage.search('name', 'Kid')).toEqual([
        { profileId: kid.profileId, traits: { name: 'Kid' } },
      ]);
    });

    it('a blocked placeholder email never joins strangers', async () => {
      const p = await pipeline();
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
      const d = await decisions(p, ['b2']);
      expect(JSON.parse(String(d[0]!.l))).toEqual([
        { identifier: 'email:null', reason: 'blocked_value' },
        { identifier: 'phone:000-000', reason: 'blocked_value' },
      ]);
      const why = await p.stage.explain('email:null');
      expect(why.identifiers).toEqual([{ identifier: 'email:null', profileId: null }]);
      expect(why.summary).toContain('blocked_value');
    });

    it('a limit stops a merge: the lower-priority identifier is left out', async () => {
      const p = await pipeline({ identifiers: { device_id: { limit: 2 } } });
      const device = (messageId: string, at: number, id: string): TestEvent => ({
        type: 'track',
        messageId,
        at,
        userId: 'ann',
        event: 'E',
        context: { device: { id } },
      });
      await p.send([
        { type: 'identify', messageId: 'l1', at: 0, userId: 'ann', traits: { email: 'ann@x.io' } },
        { type: 'identify', messageId: 'l2', at: 1, userId: 'bob', traits: { email: 'bob@x.io' } },
        // Ann's session carries Bob's email (a forwarded link): merging would give two user_ids.
        { type: 'identify', messageId: 'l3', at: 2, userId: 'ann', traits: { email: 'bob@x.io' } },
        device('l4', 3, 'd1'),
        device('l5', 4, 'd2'),
        device('l6', 5, 'd3'),
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
      expect(await decisions(p, ['l3', 'l6'])).toEqual([
        {
          message_id: 'l3',
          action: 'attach',
          limited: true,
          profile_id: ann.profileId,
          l: '[{"identifier":"email:bob@x.io","reason":"limit:user_id"}]',
        },
        {
          message_id: 'l6',
          action: 'attach',
          limited: true,
          profile_id: ann.profileId,
          l: '[{"identifier":"device_id:d3","reason":"limit:device_id"}]',
        },
      ]);
      expect(await p.query('SELECT count(*)::int AS n FROM profile_merges')).toEqual([{ n: 0 }]);
    });

    it('unmerge splits identifiers, traits, computed traits and events back, and the link does not re-merge', async () => {
      const p = await pipeline(COMPUTED);
      const kioskAda = (messageId: string, at: number): TestEvent => ({
        type: 'track',
        messageId,
        at,
        anonymousId: 'kiosk',
        userId: 'ada',
        event: 'Viewed',
      });
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
        order('u4', 3, 'kiosk', 7),
        // The mistaken link: Ada's user id on the kiosk session.
        kioskAda('u5', 4),
      ]);
      const merged = await p.stage.getProfile('user_id:ada');
      const bobId = (await decisions(p, ['u3']))[0]!.profile_id as string;
      expect(merged.identifiers).toHaveLength(4);
      expect(merged.traits.name).toBe('Bob'); // latest event timestamp wins: Bob's identify came later
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

      // The same link again: blocked.
      await p.send([kioskAda('u6', 5)]);
      expect((await p.stage.getProfile('anonymous_id:kiosk')).profileId).toBe(bobId);
      expect((await p.stage.getProfile('user_id:ada')).profileId).toBe(ada.profileId);
      expect(String((await decisions(p, ['u6']))[0]!.l)).toContain('blocked_link:');
      expect(await p.query('SELECT count(*)::int AS n FROM profile_blocks')).toEqual([{ n: 1 }]);
      expect(
        await p.query(
          'SELECT count(*)::int AS n FROM profile_merges WHERE unmerged_at IS NOT NULL AND block_id IS NOT NULL',
        ),
      ).toEqual([{ n: 1 }]);
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
      expect(String((await decisions(p, ['u10']))[0]!.l)).toContain('blocked_link:');
      const why = await p.stage.explain('user_id:ada', 'anonymous_id:kiosk');
      expect(why.sameProfile).toBe(false);
      expect(why.summary).toMatch(/carried anonymous_id:kiosk of profile .*left out \(blocked_link:/);

      // The state survives a restart: the store holds what memory held.
      const again = track(await p.reopen());
      expect((await again.stage.getProfile('anonymous_id:kiosk')).profileId).toBe(bobId);
      expect((await again.stage.getProfile('user_id:ada')).computedTraits).toMatchObject({
        orders: 1,
        revenue: 30,
      });
      await again.send([kioskAda('u11', 10)]);
      expect((await again.stage.getProfile('anonymous_id:kiosk')).profileId).toBe(bobId);
    });

    it('unmerge keeps the merges it does not undo: events of a device merged earlier stay with the person', async () => {
      const p = await pipeline(COMPUTED);
      await p.send([
        order('k1', 0, 'phone', 1),
        order('k2', 1, 'laptop', 2),
        { type: 'identify', messageId: 'k3', at: 2, anonymousId: 'phone', userId: 'ada' },
        { type: 'identify', messageId: 'k4', at: 3, anonymousId: 'laptop', userId: 'ada' },
        order('k5', 4, 'kiosk', 4),
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
      // Every event maps to a live profile.
      const live = new Set((await p.query('SELECT profile_id FROM profiles')).map((r) => r.profile_id));
      for (const id of Object.values(ev)) expect(live.has(id)).toBe(true);
      // Later merges still carry the events along.
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
    });

    it('out-of-order events: traits by event timestamp, late anonymous events still join the profile', async () => {
      const p = await pipeline({ ...COMPUTED, traits: { rules: { signup_plan: 'first' } } });
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
        order('o3', 5, 'a', 1),
        order('o4', 0, 'a', 2),
      ]);
      const u = await p.stage.getProfile('user_id:u');
      expect(u.traits).toEqual({ plan: 'pro', signup_plan: 'free' });
      expect(u.computedTraits).toEqual({ orders: 2, revenue: 3, first_order: '2026-11-01T10:00:00.000Z' });
      expect(u.firstSeen).toBe('2026-11-01T10:00:00.000Z');
      expect(u.lastSeen).toBe('2026-11-01T11:00:00.000Z');
      expect(new Set(Object.values(await p.eventProfiles()))).toEqual(new Set([u.profileId]));
    });
  });
}
