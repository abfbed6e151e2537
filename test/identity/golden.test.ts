import { afterEach, describe, expect, it } from 'vitest';
import type { IdentityStore } from '../../src/identity/identity-store.js';
import { type IdentityPipeline, identityPipeline, type TestEvent } from './harness.js';

const open: IdentityPipeline[] = [];
afterEach(async () => {
  for (const p of open.splice(0)) await p.destroy();
});
async function pipeline(options: Parameters<typeof identityPipeline>[0] = {}) {
  const p = await identityPipeline(options);
  open.push(p);
  return p;
}

const COMPUTED = {
  computed: [
    { name: 'orders', op: 'count', event: 'Order Completed' },
    { name: 'revenue', op: 'sum', event: 'Order Completed', property: 'properties.total' },
    { name: 'first_order', op: 'first', event: 'Order Completed' },
  ],
};

describe('identity resolution: golden scenarios (real DuckDB store)', () => {
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
    const after = await p.eventProfiles();
    expect(after).toEqual({ a1: profile.profileId, a2: profile.profileId, a3: profile.profileId });
    expect(before.a1).toBe(profile.profileId);
    expect(profile.recentEvents.map((e) => e.messageId)).toEqual(['a3', 'a2', 'a1']);
    const rows = await p.query('SELECT type, value FROM profile_identifiers ORDER BY type');
    expect(rows).toEqual([
      { type: 'anonymous_id', value: 'anon-1' },
      { type: 'email', value: 'ada@example.com' },
      { type: 'user_id', value: 'u-ada' },
    ]);
  });

  it('two devices then login: both devices merge into one profile, with the merge recorded', async () => {
    const p = await pipeline({ identity: COMPUTED });
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
    expect((await p.query('SELECT count(*) AS n FROM profiles'))[0]!.n).toBe(2);
    await p.send([{ type: 'identify', messageId: 'd4', at: 3, anonymousId: 'laptop', userId: 'u-1' }]);
    const profile = await p.stage.getProfile('user_id:u-1');
    expect(profile.identifiers.map((i) => i.value).sort()).toEqual(['laptop', 'phone', 'u-1']);
    expect(profile.computedTraits).toEqual({
      orders: 2,
      revenue: 15,
      first_order: new Date(Date.parse('2026-11-01T10:00:00Z')).toISOString(),
    });
    expect(profile.merges).toHaveLength(1);
    expect(profile.merges[0]).toMatchObject({ profileId: profile.profileId, messageId: 'd4' });
    expect(new Set(Object.values(await p.eventProfiles()))).toEqual(new Set([profile.profileId]));
    expect(await p.query('SELECT count(*) AS n FROM profiles')).toEqual([{ n: 1 }]);
    expect(await p.query('SELECT count(*) AS n FROM profile_merges')).toEqual([{ n: 1 }]);
    const computed = await p.query(
      "SELECT CAST(value AS VARCHAR) AS v FROM profile_computed_traits WHERE name = 'revenue'",
    );
    expect(computed).toEqual([{ v: '15' }]);
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
    const d = await p.query(
      "SELECT action, limited, CAST(left_out AS VARCHAR) AS left_out FROM identity_decisions JOIN events USING (log_offset, message_id) WHERE message_id = 's3'",
    );
    expect(d).toEqual([
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
    expect(await p.query('SELECT count(*) AS n FROM profiles')).toEqual([{ n: 4 }]);
    expect(await p.query("SELECT count(*) AS n FROM profile_identifiers WHERE type <> 'user_id'")).toEqual([
      { n: 0 },
    ]);
    const d = await p.query(
      "SELECT CAST(left_out AS VARCHAR) AS l FROM identity_decisions JOIN events USING (log_offset, message_id) WHERE message_id = 'b2'",
    );
    expect(JSON.parse(String(d[0]!.l))).toEqual([
      { identifier: 'email:null', reason: 'blocked_value' },
      { identifier: 'phone:000-000', reason: 'blocked_value' },
    ]);
    const why = await p.stage.explain('email:null');
    expect(why.identifiers).toEqual([{ identifier: 'email:null', profileId: null }]);
    expect(why.summary).toContain('blocked_value');
  });

  it('a limit stops a merge: the lower-priority identifier is left out', async () => {
    const p = await pipeline({ identity: { identifiers: { device_id: { limit: 2 } } } });
    await p.send([
      { type: 'identify', messageId: 'l1', at: 0, userId: 'ann', traits: { email: 'ann@x.io' } },
      { type: 'identify', messageId: 'l2', at: 1, userId: 'bob', traits: { email: 'bob@x.io' } },
      // Ann's session carries Bob's email (a forwarded link): merging would give two user_ids.
      { type: 'identify', messageId: 'l3', at: 2, userId: 'ann', traits: { email: 'bob@x.io' } },
      { type: 'track', messageId: 'l4', at: 3, userId: 'ann', event: 'E', context: { device: { id: 'd1' } } },
      { type: 'track', messageId: 'l5', at: 4, userId: 'ann', event: 'E', context: { device: { id: 'd2' } } },
      { type: 'track', messageId: 'l6', at: 5, userId: 'ann', event: 'E', context: { device: { id: 'd3' } } },
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
    const rows = await p.query(
      "SELECT message_id, action, limited, CAST(left_out AS VARCHAR) AS l FROM identity_decisions JOIN events USING (log_offset, message_id) WHERE message_id IN ('l3', 'l6') ORDER BY 1",
    );
    expect(rows).toEqual([
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
    expect(await p.query('SELECT count(*) AS n FROM profile_merges')).toEqual([{ n: 0 }]);
  });

  it('unmerge splits identifiers, traits, computed traits and events back, and the link does not re-merge', async () => {
    const p = await pipeline({ identity: COMPUTED });
    await p.send([
      { type: 'identify', messageId: 'u1', at: 0, userId: 'ada', traits: { email: 'ada@x.io', name: 'Ada' } },
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
      // The mistaken link: Ada's user id on the kiosk session.
      { type: 'track', messageId: 'u5', at: 4, anonymousId: 'kiosk', userId: 'ada', event: 'Viewed' },
    ]);
    const merged = await p.stage.getProfile('user_id:ada');
    const bobId = (
      await p.query(
        "SELECT profile_id FROM identity_decisions JOIN events USING (log_offset, message_id) WHERE message_id = 'u3'",
      )
    )[0]!.profile_id;
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

    // The same link again: blocked.
    await p.send([
      { type: 'track', messageId: 'u6', at: 5, anonymousId: 'kiosk', userId: 'ada', event: 'Viewed' },
    ]);
    expect((await p.stage.getProfile('anonymous_id:kiosk')).profileId).toBe(bobId);
    expect((await p.stage.getProfile('user_id:ada')).profileId).toBe(ada.profileId);
    const d = await p.query(
      "SELECT CAST(left_out AS VARCHAR) AS l FROM identity_decisions JOIN events USING (log_offset, message_id) WHERE message_id = 'u6'",
    );
    expect(String(d[0]!.l)).toContain('blocked_link:');
    expect(await p.query('SELECT count(*) AS n FROM profile_blocks')).toEqual([{ n: 1 }]);
    expect(
      await p.query(
        'SELECT count(*) AS n FROM profile_merges WHERE unmerged_at IS NOT NULL AND block_id IS NOT NULL',
      ),
    ).toEqual([{ n: 1 }]);
    const why = await p.stage.explain('user_id:ada', 'anonymous_id:kiosk');
    expect(why.sameProfile).toBe(false);
    expect(why.summary).toMatch(/carried anonymous_id:kiosk of profile .*left out \(blocked_link:/);

    // The state survives a restart: the store holds what memory held.
    await p.close();
    const again = await pipeline({ identity: COMPUTED, dir: p.dir });
    expect((await again.stage.getProfile('anonymous_id:kiosk')).profileId).toBe(bobId);
    expect((await again.stage.getProfile('user_id:ada')).computedTraits).toMatchObject({
      orders: 1,
      revenue: 30,
    });
    await again.send([
      { type: 'track', messageId: 'u7', at: 6, anonymousId: 'kiosk', userId: 'ada', event: 'Viewed' },
    ]);
    expect((await again.stage.getProfile('anonymous_id:kiosk')).profileId).toBe(bobId);
  });

  it('unmerge keeps the merges it does not undo: events of a device merged earlier stay with the person', async () => {
    const p = await pipeline({ identity: COMPUTED });
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
    const p = await pipeline({
      identity: {
        ...COMPUTED,
        traits: { rules: { signup_plan: 'first' } },
      },
    });
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
  });
});

describe('identity resolution: exactly once', () => {
  it('a commit that fails before or after the transaction is retried without counting twice', async () => {
    let failBefore = 1;
    let failAfter = 1;
    const wrap = (store: IdentityStore): IdentityStore => ({
      ...store,
      offset: () => store.offset(),
      load: () => store.load(),
      eventsOfProfile: (id) => store.eventsOfProfile(id),
      recentEvents: (id, n) => store.recentEvents(id, n),
      decisions: (a, b, n) => store.decisions(a, b, n),
      close: () => store.close(),
      async commit(changes, profile, next) {
        if (changes.assignments.length > 0 && failBefore-- > 0) throw new Error('disk full (before)');
        await store.commit(changes, profile, next);
        // Committed, but the stage never hears it: the feed retries from the stored offset.
        if (changes.assignments.length > 0 && failAfter-- > 0) throw new Error('connection lost (after)');
      },
    });
    const p = await pipeline({ identity: COMPUTED, wrap });
    const orders = (from: number, n: number) =>
      Array.from({ length: n }, (_, i) => ({
        type: 'track',
        messageId: `e${from + i}`,
        at: from + i,
        userId: 'u',
        event: 'Order Completed',
        properties: { total: 2 },
      }));
    await p.send(orders(0, 3));
    await p.send(orders(3, 2));
    expect(p.errors.map((e) => (e as Error).message)).toEqual([
      'disk full (before)',
      'connection lost (after)',
    ]);
    const u = await p.stage.getProfile('user_id:u');
    expect(u.computedTraits).toMatchObject({ orders: 5, revenue: 10 });
    expect(u.eventCount).toBe(5);
    expect(
      await p.query('SELECT count(*) AS n, count(DISTINCT log_offset) AS d FROM identity_decisions'),
    ).toEqual([{ n: 5, d: 5 }]);

    // A restart resumes from the stored offset: nothing is resolved again.
    await p.close();
    const again = await pipeline({ identity: COMPUTED, dir: p.dir });
    await again.send(orders(5, 1));
    const after = await again.stage.getProfile('user_id:u');
    expect(after.computedTraits).toMatchObject({ orders: 6, revenue: 12 });
    expect(await again.query('SELECT count(*) AS n FROM profile_events')).toEqual([{ n: 6 }]);
  });
});

describe('identity store', () => {
  it('holds exactly what memory holds after a mixed workload of attaches, merges and limits', async () => {
    const p = await pipeline({ identity: { ...COMPUTED, identifiers: { device_id: { limit: 2 } } } });
    const events: TestEvent[] = [];
    let n = 0;
    // 30 people, each with two anonymous devices, identifies and orders; every 5th shares a device.
    for (let person = 0; person < 30; person++) {
      for (const device of [`d${person}a`, `d${person}b`]) {
        events.push({ type: 'page', messageId: `m${n++}`, at: n, anonymousId: device, name: 'Home' });
        events.push({
          type: 'identify',
          messageId: `m${n++}`,
          at: n,
          anonymousId: device,
          userId: `u${person}`,
          traits: { email: `p${person}@x.io`, plan: n % 2 ? 'pro' : 'free' },
          context: { device: { id: `hw-${device}` } },
        });
        events.push({
          type: 'track',
          messageId: `m${n++}`,
          at: n,
          anonymousId: person % 5 === 0 ? `d${person + 1}a` : device,
          userId: `u${person}`,
          event: 'Order Completed',
          properties: { total: person },
          context: { device: { id: `hw-extra-${person}-${device}` } },
        });
      }
    }
    for (let i = 0; i < events.length; i += 7) await p.send(events.slice(i, i + 7));
    // Identifiers attached in a later transaction than the profile's creation, with no merge after.
    const late = [0, 1, 2].map((i) => `late-${i}`);
    await p.send(
      late.map((a) => ({ type: 'page', messageId: `${a}-p`, at: 500, anonymousId: a, name: 'Home' })),
    );
    await p.send(
      late.map((a) => ({
        type: 'track',
        messageId: `${a}-t`,
        at: 501,
        anonymousId: a,
        userId: `u-${a}`,
        event: 'E',
      })),
    );
    const keys = (await p.query('SELECT type, value FROM profile_identifiers ORDER BY 1, 2')).map(
      (r) => `${r.type}:${r.value}`,
    );
    expect(keys.length).toBeGreaterThan(150);
    const view = async (stage: typeof p.stage) =>
      Promise.all(
        keys.map(async (k) => {
          const v = await stage.getProfile(k, { now: 0 });
          return {
            ...v,
            identifiers: [...v.identifiers].sort((a, b) =>
              `${a.type}:${a.value}`.localeCompare(`${b.type}:${b.value}`),
            ),
          };
        }),
      );
    const before = await view(p.stage);
    await p.close();
    const again = await pipeline({
      identity: { ...COMPUTED, identifiers: { device_id: { limit: 2 } } },
      dir: p.dir,
    });
    expect(await view(again.stage)).toEqual(before);
    expect(await again.query('SELECT count(*) AS n FROM profiles')).toEqual([
      { n: new Set(before.map((b) => b.profileId)).size },
    ]);
  });
});
