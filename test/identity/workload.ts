import type pg from 'pg';
import { prng } from '../../bench/lib/events.js';
import type { IdentityRules } from '../../src/identity/identifiers.js';
import { type Decision, IdentityEngine, toIdentityEvent } from '../../src/identity/identity-engine.js';
import type { StoredEvent } from '../../src/store/store.js';
import type { TestEvent } from './harness.js';

// One PRNG for benchmarks and tests (mulberry32), so a failing workload can be replayed.
export { prng };

/**
 * People with several devices (anonymous ids, hardware ids), emails and a login, their events
 * shuffled together; with `shared`, some devices are shared between people (limits get hit).
 */
export function workload(seed: number, people: number, perPerson: number, shared = false): TestEvent[] {
  const rnd = prng(seed);
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(rnd() * xs.length)]!;
  const persons = Array.from({ length: people }, (_, i) => ({
    user: `u${i}`,
    anon: Array.from({ length: 1 + Math.floor(rnd() * 3) }, (_, j) => `a${i}-${j}`),
    emails: Array.from({ length: 1 + Math.floor(rnd() * 2) }, (_, j) => `p${i}.${j}@x.io`),
    hw: Array.from({ length: 1 + Math.floor(rnd() * 2) }, (_, j) => `hw${i}-${j}`),
  }));
  const events: TestEvent[] = [];
  for (let n = 0; n < people * perPerson; n++) {
    const p = pick(persons);
    const anon = shared && rnd() < 0.05 ? pick(pick(persons).anon) : pick(p.anon);
    const r = rnd();
    const base = { messageId: `m${n}`, at: n / 10 };
    if (r < 0.4) events.push({ ...base, type: 'page', anonymousId: anon, name: 'Home' });
    else if (r < 0.6)
      events.push({
        ...base,
        type: 'identify',
        anonymousId: anon,
        userId: p.user,
        traits: { email: pick(p.emails), plan: rnd() < 0.5 ? 'pro' : 'free' },
      });
    else if (r < 0.8)
      events.push({
        ...base,
        type: 'track',
        userId: p.user,
        event: 'Order Completed',
        properties: { total: Math.floor(rnd() * 100) },
        context: { device: { id: pick(p.hw) } },
      });
    else
      events.push({
        ...base,
        type: 'track',
        anonymousId: anon,
        event: 'Viewed',
        context: { traits: { email: pick(p.emails) }, device: { id: pick(p.hw) } },
      });
  }
  return events;
}

/** The embedded engine over the events in order: each profile's identifiers, and each event's decision. */
export function embedded(rules: IdentityRules, stored: readonly StoredEvent[]) {
  const engine = new IdentityEngine(rules, { now: () => 0 });
  const decisions = new Map<string, Decision>();
  for (const s of stored) decisions.set(s.messageId, engine.resolve(toIdentityEvent(s, rules)));
  const groups = new Map<string, string[]>();
  for (const p of engine.profiles.values()) groups.set(p.id, [...p.identifiers.keys()].sort());
  const eventGroup = new Map<string, string | null>();
  for (const [m, d] of decisions) {
    const cur = d.profileId === null ? undefined : engine.current(d.profileId);
    eventGroup.set(m, cur === undefined ? null : groups.get(cur)![0]!);
  }
  return { groups: [...groups.values()].sort(byFirst), eventGroup, decisions };
}

export const byFirst = (a: string[], b: string[]) => (a[0]! < b[0]! ? -1 : a[0]! > b[0]! ? 1 : 0);

/** The same picture read from PostgreSQL: each profile's identifiers, each event's profile (as its first identifier). */
export async function stored(pool: pg.Pool, schema = 'tributary') {
  const ids = await pool.query<{ p: string; k: string }>(
    `SELECT profile_id AS p, type || ':' || value AS k FROM ${schema}.profile_identifiers ORDER BY 2`,
  );
  const groups = new Map<string, string[]>();
  for (const r of ids.rows) (groups.get(r.p) ?? groups.set(r.p, []).get(r.p)!).push(r.k);
  const ev = await pool.query<{ m: string; p: string }>(
    `SELECT message_id AS m, profile_id AS p FROM ${schema}.profile_events`,
  );
  const eventGroup = new Map<string, string | null>();
  for (const r of ev.rows) eventGroup.set(r.m, groups.get(r.p)?.[0] ?? `dangling:${r.p}`);
  const live = await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${schema}.profiles`);
  return { groups: [...groups.values()].sort(byFirst), eventGroup, profiles: live.rows[0]!.n };
}

/** The partition of an event, by its identity key (userId, else anonymousId), as the log partitions. */
export function partitionOf(s: StoredEvent, partitions: number): number {
  const e = JSON.parse(s.json) as { userId?: string; anonymousId?: string };
  const key = e.userId ?? e.anonymousId ?? '';
  let h = 0;
  for (let i = 0; i < key.length; i++) h = (h * 31 + key.charCodeAt(i)) | 0;
  return Math.abs(h) % partitions;
}
