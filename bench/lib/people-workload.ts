import { prng } from './events.js';

/**
 * A workload whose identities merge across partitions, with its ground truth: per person an
 * anonymous browser id, a mobile device id, a user id and an email, and ten events:
 * - three tracks and a page as the anonymous browser (partitioned by the anonymous id),
 * - an identify naming the user id, the browser's anonymous id and the email (by the user id),
 * - four tracks as the user (by the user id),
 * - a track from the mobile app as its device's anonymous id with the email in
 *   `context.traits` (by the device id).
 * So each person's events land in up to three partitions, and only the identify and the
 * mobile track link them: every person must end as one profile holding exactly four
 * identifiers, with all ten events.
 */
export interface PeopleWorkload {
  /** Segment events, shuffled (seeded), each with `messageId` `m-<person>-<k>`. */
  events: Record<string, unknown>[];
  /** Per person the sorted `type:value` identifiers of its profile. */
  profiles: string[][];
  counts: { tracks: number; identifies: number; pages: number };
}

export const EVENTS_PER_PERSON = 10;

export function peopleWorkload(people: number, seed = 7, tag = 'p'): PeopleWorkload {
  const rand = prng(seed);
  const events: Record<string, unknown>[] = [];
  const profiles: string[][] = [];
  const t0 = Date.parse('2026-11-01T00:00:00Z');
  for (let i = 0; i < people; i++) {
    const anon = `${tag}-anon-${i}`;
    const device = `${tag}-dev-${i}`;
    const user = `${tag}-user-${i}`;
    const email = `${tag}.person${i}@example.com`;
    profiles.push(
      [`anonymous_id:${anon}`, `anonymous_id:${device}`, `email:${email}`, `user_id:${user}`].sort(),
    );
    let k = 0;
    const at = () => new Date(t0 + i * 1000 + k * 10).toISOString();
    const id = () => `m-${tag}-${i}-${k++}`;
    for (let j = 0; j < 3; j++) {
      events.push({
        type: 'track',
        event: 'Product Viewed',
        anonymousId: anon,
        properties: { sku: `sku-${j}` },
        timestamp: at(),
        messageId: id(),
      });
    }
    events.push({ type: 'page', name: 'Pricing', anonymousId: anon, timestamp: at(), messageId: id() });
    events.push({
      type: 'identify',
      userId: user,
      anonymousId: anon,
      traits: { email, plan: 'pro' },
      timestamp: at(),
      messageId: id(),
    });
    for (let j = 0; j < 4; j++) {
      events.push({
        type: 'track',
        event: 'Order Completed',
        userId: user,
        properties: { revenue: 10 + j },
        timestamp: at(),
        messageId: id(),
      });
    }
    events.push({
      type: 'track',
      event: 'App Opened',
      anonymousId: device,
      context: { traits: { email }, device: { type: 'ios' } },
      timestamp: at(),
      messageId: id(),
    });
  }
  // Shuffled, so a person's events arrive in any order and in different requests.
  for (let i = events.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [events[i], events[j]] = [events[j]!, events[i]!];
  }
  return { events, profiles, counts: { tracks: people * 8, identifies: people, pages: people } };
}

/** The person a workload messageId belongs to. */
export function personOf(messageId: string): number {
  return Number(messageId.split('-')[2]);
}
