import { describe, expect, it } from 'vitest';
import { IdentityConfig } from '../config/identity-schema.js';
import { compileRules } from './identifiers.js';
import { IdentityEngine, toIdentityEvent } from './identity-engine.js';

const DAY = 86_400_000;
const T0 = Date.parse('2026-11-01T00:00:00Z');

function engine(config: unknown, now = T0) {
  const rules = compileRules(IdentityConfig.parse(config));
  let n = 0;
  const e = new IdentityEngine(rules, { newId: () => `p${++n}`, now: () => now });
  let offset = 0;
  const send = (event: Record<string, unknown>, at: number, sourceId = 'web') => {
    const ts = new Date(at).toISOString();
    const o = offset++;
    return e.resolve(
      toIdentityEvent(
        {
          logOffset: o,
          sourceId,
          messageId: `m${o}`,
          receivedAt: at,
          json: JSON.stringify({ ...event, timestamp: ts, receivedAt: ts }),
        },
        rules,
      ),
    );
  };
  return { e, send };
}

describe('IdentityEngine (in memory)', () => {
  it('counts a windowed limit only over identifiers first seen within the window', () => {
    const { e, send } = engine({ identifiers: { anonymous_id: { limit: 1, within: '1d' } } });
    send({ type: 'identify', userId: 'u', anonymousId: 'a1' }, T0);
    const sameDay = send({ type: 'track', event: 'E', userId: 'u', anonymousId: 'a2' }, T0 + DAY / 2);
    expect(sameDay.leftOut).toEqual([{ identifier: 'anonymous_id:a2', reason: 'limit:anonymous_id' }]);
    const later = send({ type: 'track', event: 'E', userId: 'u', anonymousId: 'a3' }, T0 + 2 * DAY);
    expect(later).toMatchObject({ action: 'attach', limited: false, leftOut: [] });
    expect([...e.profileOf('user_id:u')!.identifiers.keys()].sort()).toEqual([
      'anonymous_id:a1',
      'anonymous_id:a3',
      'user_id:u',
    ]);
  });

  it('keeps a trait by source priority, and computes windowed traits at read time', async () => {
    const { e, send } = engine({
      traits: { rules: { plan: 'source_priority' }, sourcePriority: ['billing'] },
      computed: [{ name: 'recent_orders', op: 'count', event: 'Order Completed', window: '7d' }],
    });
    send({ type: 'identify', userId: 'u', traits: { plan: 'pro', name: 'Ada' } }, T0, 'billing');
    send({ type: 'identify', userId: 'u', traits: { plan: 'free', name: 'Ada L.' } }, T0 + 1, 'web');
    send({ type: 'track', userId: 'u', event: 'Order Completed' }, T0);
    send({ type: 'track', userId: 'u', event: 'Order Completed' }, T0 + 10 * DAY);
    const p = e.profileOf('user_id:u')!;
    expect(p.traits.get('plan')).toMatchObject({ value: 'pro', sourceId: 'billing' });
    expect(p.traits.get('name')).toMatchObject({ value: 'Ada L.', sourceId: 'web' });
    const { computedValue } = await import('./traits.js');
    const def = e.rules.computed[0]!;
    expect(computedValue(def, p.computed.get('recent_orders'), T0 + 10 * DAY)).toBe(1);
    expect(computedValue(def, p.computed.get('recent_orders'), T0 + 5 * DAY)).toBe(2);
    expect(computedValue(def, p.computed.get('recent_orders'), T0 + 30 * DAY)).toBe(0);
  });

  it('merges several profiles at once into the oldest, recording one merge per absorbed profile', () => {
    const { e, send } = engine({});
    send({ type: 'page', anonymousId: 'a' }, T0);
    send({ type: 'page', anonymousId: 'b' }, T0 + 1);
    send({ type: 'page', anonymousId: 'c' }, T0 + 2);
    const d = send(
      {
        type: 'identify',
        anonymousId: 'a',
        context: {
          externalIds: [
            { id: 'b', type: 'anonymous_id' },
            { id: 'c', type: 'anonymous_id' },
          ],
        },
      },
      T0 + 3,
    );
    expect(d).toMatchObject({ action: 'merge', profileId: 'p1', involved: ['p1', 'p2', 'p3'] });
    const changes = e.takeChanges();
    expect(changes.merges.map((m) => [m.profileId, m.mergedProfileId])).toEqual([
      ['p1', 'p2'],
      ['p1', 'p3'],
    ]);
    expect(changes.remap).toEqual(
      new Map([
        ['p2', 'p1'],
        ['p3', 'p1'],
      ]),
    );
    expect(e.profiles.size).toBe(1);
  });
});
