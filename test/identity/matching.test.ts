import Fastify from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import { MatchingConfig } from '../../src/identity/matching/matching-schema.js';
import { PROBABILISTIC_TAG, ProfileMatching } from '../../src/identity/matching/profile-matching.js';
import { profileRoutes } from '../../src/identity/profile-routes.js';
import { type IdentityPipeline, identityPipeline } from './harness.js';
import { people } from './people.js';

const CONFIG = {
  enabled: true,
  fields: [
    { name: 'first_name', comparison: 'name' },
    { name: 'last_name', comparison: 'name' },
    { name: 'dob', comparison: 'date' },
    { name: 'city', comparison: 'text' },
  ],
  blocking: [['dob'], ['first_name', 'last_name']],
};

describe('probabilistic matching of profiles (DuckDB identity store)', () => {
  let pipe: IdentityPipeline | undefined;
  let matching: ProfileMatching | undefined;
  afterEach(async () => {
    await matching?.close();
    await pipe?.destroy();
    matching = undefined;
    pipe = undefined;
  });

  async function setup(config: unknown = CONFIG, identity: Record<string, unknown> = {}) {
    pipe = await identityPipeline({ identity });
    const { events } = people(240, 7);
    await pipe.send(events);
    matching = await ProfileMatching.open(pipe.instance, pipe.stage, MatchingConfig.parse(config));
    return { pipe, matching, events };
  }

  const holder = (p: IdentityPipeline, anon: string) => p.stage.lookup(`anonymous_id:${anon}`)?.id;

  it('merges the two devices of one person (rule probabilistic), explains it, and an unmerge undoes it for good', async () => {
    const { pipe, matching } = await setup();
    expect(pipe.stage.profileCount()).toBe(400);
    const summary = await matching.run();
    expect(summary.records).toBe(400);
    expect(summary.merged).toBeGreaterThan(100);
    // Person 1 (two copies, exact) and person 2 (a typo in the surname) are one profile each.
    for (const i of [1, 2, 4, 5]) expect(holder(pipe, `anon-${i}-0`)).toBe(holder(pipe, `anon-${i}-1`));
    // Different people stay apart.
    expect(holder(pipe, 'anon-1-0')).not.toBe(holder(pipe, 'anon-2-0'));

    const profile = await pipe.stage.getProfile('anonymous_id:anon-1-0');
    const merge = profile.merges.find((m) => m.messageId.startsWith(PROBABILISTIC_TAG));
    expect(merge).toBeDefined();
    const merged = await matching.list({ status: 'merged', limit: 1000, evidence: false });
    expect(merged.some((p) => p.mergeId === merge!.mergeId)).toBe(true);

    // The waterfall: each field's level and weight, and the total is the prior plus their sum.
    const a = pipe.stage.lookup('anonymous_id:anon-2-0')!.id;
    const b = pipe.stage.lookup('anonymous_id:anon-3-0')!.id;
    const why = await matching.explainProfiles(a, b);
    expect(why!.fields.map((f) => f.field)).toEqual(['first_name', 'last_name', 'dob', 'city']);
    const sum = why!.prior + why!.fields.reduce((s, f) => s + f.weight + f.termFrequency, 0);
    expect(why!.weight).toBeCloseTo(sum, 9);

    // Undo: the unmerge splits them, and its block keeps the next run from merging them again.
    await pipe.stage.unmerge(merge!.mergeId);
    expect(holder(pipe, 'anon-1-0')).not.toBe(holder(pipe, 'anon-1-1'));
    await matching.run();
    expect(holder(pipe, 'anon-1-0')).not.toBe(holder(pipe, 'anon-1-1'));
    const refused = await matching.list({ status: 'refused', limit: 1000, evidence: false });
    expect(refused.some((p) => /blocked_link/.test(p.reason ?? ''))).toBe(true);
  });

  it('after an unmerge of an event merge that took a probabilistic one with it, incremental matching finds the pair again', async () => {
    const { pipe, matching } = await setup();
    await matching.run();
    expect(holder(pipe, 'anon-1-0')).toBe(holder(pipe, 'anon-1-1'));
    // A login links person 0's device to person 1's merged profile: an event merge.
    await pipe.send([
      { type: 'identify', messageId: 'login-0', anonymousId: 'anon-0-0', userId: 'shared-login', at: 5000 },
      { type: 'identify', messageId: 'login-1', anonymousId: 'anon-1-0', userId: 'shared-login', at: 5001 },
    ]);
    const p = await pipe.stage.getProfile('anonymous_id:anon-1-0');
    const eventMerge = p.merges.find((m) => m.messageId === 'login-1' && m.unmergedAt === null)!;
    expect(holder(pipe, 'anon-0-0')).toBe(holder(pipe, 'anon-1-1'));
    // Undoing it replays the events: person 1's devices share no identifier, so they part too.
    const { profiles } = await pipe.stage.unmerge(eventMerge.mergeId);
    expect(holder(pipe, 'anon-1-0')).not.toBe(holder(pipe, 'anon-1-1'));
    // The profiles the unmerge changed (what `onCommitted` hands the scheduler) are matched again.
    const changed = [...new Set([...profiles, holder(pipe, 'anon-1-0')!, holder(pipe, 'anon-1-1')!])];
    const summary = await matching.matchProfiles(changed);
    expect(summary!.merged).toBeGreaterThanOrEqual(1);
    expect(holder(pipe, 'anon-1-0')).toBe(holder(pipe, 'anon-1-1'));
    // The unmerged (blocked) link stays apart.
    expect(holder(pipe, 'anon-0-0')).not.toBe(holder(pipe, 'anon-1-0'));
  });

  it('never overrides a limit: profiles with different user ids are refused, with the reason', async () => {
    pipe = await identityPipeline();
    const { events } = people(240, 7);
    // Person 1's two devices each logged in with their own user id (limit: one per profile).
    for (const e of events)
      if (e.messageId === 'm-1-0' || e.messageId === 'm-1-1') e.userId = `user-${e.messageId}`;
    await pipe.send(events);
    matching = await ProfileMatching.open(pipe.instance, pipe.stage, MatchingConfig.parse(CONFIG));
    await matching.run();
    expect(holder(pipe, 'anon-1-0')).not.toBe(holder(pipe, 'anon-1-1'));
    expect(holder(pipe, 'anon-4-0')).toBe(holder(pipe, 'anon-4-1'));
    const refused = await matching.list({ status: 'refused', limit: 1000, evidence: false });
    expect(refused.some((p) => p.reason === 'limit:user_id would be broken')).toBe(true);
  });

  it('puts pairs between review and autoMerge on the review list; accept merges, reject is remembered', async () => {
    const { pipe, matching } = await setup({ ...CONFIG, autoMerge: 0.999999999999, review: 0.5 });
    const before = pipe.stage.profileCount();
    await matching.run();
    const review = await matching.list({ limit: 1000 });
    expect(review.length).toBeGreaterThan(2);
    for (const p of review) {
      expect(p.probability).toBeGreaterThanOrEqual(0.5);
      expect(p.probability).toBeLessThan(0.999999999999);
    }
    // Strongest first, with the waterfall.
    expect(review[0]!.weight).toBeGreaterThanOrEqual(review[1]!.weight);
    expect(review[0]!.evidence!.fields).toHaveLength(4);

    const accepted = await matching.decide(review[0]!.pairId, 'accept');
    expect(accepted.status).toBe('accepted');
    expect(pipe.stage.currentProfile(review[0]!.profileA)).toBe(
      pipe.stage.currentProfile(review[0]!.profileB),
    );
    const rejected = await matching.decide(review[1]!.pairId, 'reject');
    expect(rejected.status).toBe('rejected');
    await expect(matching.decide(review[1]!.pairId, 'accept')).rejects.toThrow(/not under review/);

    // The same through the HTTP API (in-process): list with the waterfall, decide, explain.
    const app = Fastify();
    profileRoutes(app, {
      identity: pipe.stage,
      matching,
      profileIdOf: (t) => pipe.stage.lookup(t)?.id,
      isAdmin: (h) => h === 'Bearer admin-token',
      isReader: () => false,
    });
    const auth = { authorization: 'Bearer admin-token' };
    const listed = await app.inject({ method: 'GET', url: '/v1/profiles/matches?limit=5', headers: auth });
    expect(listed.statusCode).toBe(200);
    const pairs = listed.json().pairs as {
      pairId: string;
      profileA: string;
      profileB: string;
      evidence: unknown;
    }[];
    expect(pairs.map((p) => p.pairId)).toEqual(review.slice(2, 7).map((p) => p.pairId));
    const third = pairs[0]!;
    const explained = await app.inject({
      method: 'GET',
      url: `/v1/profiles/profile_id:${third.profileA}/explain?with=profile_id:${third.profileB}`,
      headers: auth,
    });
    expect(explained.statusCode).toBe(200);
    expect(explained.json().sameProfile).toBe(false);
    expect(explained.json().match).toEqual(third.evidence);
    const unauthorised = await app.inject({
      method: 'POST',
      url: `/v1/profiles/matches/${third.pairId}/reject`,
    });
    expect(unauthorised.statusCode).toBe(401);
    const decided = await app.inject({
      method: 'POST',
      url: `/v1/profiles/matches/${third.pairId}/reject`,
      headers: auth,
    });
    expect(decided.json().status).toBe('rejected');
    const twice = await app.inject({
      method: 'POST',
      url: `/v1/profiles/matches/${third.pairId}/accept`,
      headers: auth,
    });
    expect(twice.statusCode).toBe(409);
    expect(twice.json().code).toBe('TRIB_ERR_MATCH_NOT_IN_REVIEW');
    const missing = await app.inject({
      method: 'POST',
      url: '/v1/profiles/matches/nope/accept',
      headers: auth,
    });
    expect(missing.statusCode).toBe(404);
    await app.close();

    // A second run proposes neither again (one is merged, the other rejected).
    await matching.run();
    const again = await matching.list({ limit: 1000, evidence: false });
    const key = (a: string, b: string) =>
      [pipe.stage.currentProfile(a), pipe.stage.currentProfile(b)].sort().join('|');
    const keys = new Set(again.map((p) => key(p.profileA, p.profileB)));
    expect(keys.has(key(review[1]!.profileA, review[1]!.profileB))).toBe(false);
    expect(pipe.stage.profileCount()).toBeLessThan(before);
  });

  it('matches a new profile incrementally against the others, with the model of the last full run; fields per source', async () => {
    // The CRM source names its traits its own way.
    const { pipe, matching } = await setup({
      ...CONFIG,
      sources: {
        crm: { first_name: ['FirstName'], last_name: ['Surname'], dob: ['BirthDate'], city: ['Town'] },
      },
    });
    expect(await matching.matchProfiles(['x'])).toBeUndefined(); // no model yet
    await matching.run();
    const person = people(240, 7).persons[1]!;
    await pipe.send([
      {
        type: 'identify',
        messageId: 'late',
        anonymousId: 'anon-late',
        at: 10_000,
        source: 'crm',
        // A web-style name too, which the crm mapping does not read.
        traits: {
          FirstName: person.first,
          Surname: person.last,
          BirthDate: person.dob,
          Town: person.city,
          first_name: 'zed',
        },
      },
    ]);
    const id = holder(pipe, 'anon-late')!;
    expect(id).not.toBe(holder(pipe, 'anon-1-0'));
    const summary = await matching.matchProfiles([id]);
    expect(summary!.merged).toBe(1);
    expect(holder(pipe, 'anon-late')).toBe(holder(pipe, 'anon-1-0'));
  });

  it('survives hostile trait values: quotes, a huge string, unicode, JSON objects, placeholders', async () => {
    pipe = await identityPipeline();
    const { events } = people(120, 3);
    events.push(
      {
        type: 'identify',
        messageId: 'h1',
        anonymousId: 'h1',
        at: 1,
        traits: {
          first_name: `O'Brien "); DROP TABLE profiles; --`,
          last_name: 'x'.repeat(200_000),
          dob: 'null',
          city: { nested: [1, 2] },
        },
      },
      {
        type: 'identify',
        messageId: 'h2',
        anonymousId: 'h2',
        at: 2,
        traits: { first_name: 'Zoë', last_name: 'Ñúñez 🙂', dob: '31/02/1990', city: 42 },
      },
      {
        type: 'identify',
        messageId: 'h3',
        anonymousId: 'h3',
        at: 3,
        traits: { first_name: 'zoe', last_name: 'nunez', dob: '1990-02-31', city: null },
      },
    );
    await pipe.send(events);
    matching = await ProfileMatching.open(pipe.instance, pipe.stage, MatchingConfig.parse(CONFIG));
    const s = await matching.run();
    expect(s.records).toBe(pipe.stage.profileCount() + s.merged);
    const why = await matching.explainProfiles(holder(pipe, 'h2')!, holder(pipe, 'h3')!);
    // Accents and the emoji are normalised away: the names agree exactly.
    expect(why!.fields.find((f) => f.field === 'first_name')!.level).toBe('exact');
    expect(why!.fields.find((f) => f.field === 'last_name')!.level).toBe('exact');
    expect((await pipe.query('SELECT count(*) AS n FROM profiles'))[0]!.n).toBeDefined();
  });
});
