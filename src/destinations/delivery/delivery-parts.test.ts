import { describe, expect, it } from 'vitest';
import { backoffMs, CircuitBreaker, RateLimit } from './breaker.js';
import { EventGate } from './event-gate.js';

describe('EventGate', () => {
  const consent = (prefs: Record<string, boolean> | undefined) =>
    prefs === undefined ? {} : { context: { consent: { categoryPreferences: prefs } } };
  it('filters by source, type, name and a JSONata condition', async () => {
    const gate = EventGate.compile('d', {
      sources: ['web'],
      types: ['track', 'identify'],
      events: ['Paid'],
      condition: 'properties.total >= 10',
    });
    const paid = { type: 'track', event: 'Paid', properties: { total: 10 } };
    expect(await gate.decide(paid, 'web')).toBe('pass');
    expect(await gate.decide(paid, 'app')).toBe('filtered');
    expect(await gate.decide({ ...paid, event: 'Viewed' }, 'web')).toBe('filtered');
    expect(await gate.decide({ ...paid, properties: { total: 9 } }, 'web')).toBe('filtered');
    expect(await gate.decide({ type: 'page', name: 'Paid', properties: { total: 50 } }, 'web')).toBe(
      'filtered',
    );
    // No name: `events` does not apply; the condition still does.
    expect(await gate.decide({ type: 'identify', properties: { total: 50 } }, 'web')).toBe('pass');
    // A condition that fails on an event filters it.
    const odd = EventGate.compile('d', { condition: '$number(properties.x) > 1' });
    expect(await odd.decide({ type: 'track', properties: { x: 'abc' } }, 'web')).toBe('filtered');
  });
  it('gates by the Segment consent categories', async () => {
    const gate = EventGate.compile('d', undefined, { categories: ['Ads', 'Analytics'], missing: 'send' });
    expect(await gate.decide({ type: 'track', ...consent({ Ads: true, Analytics: true }) }, 'w')).toBe(
      'pass',
    );
    expect(await gate.decide({ type: 'track', ...consent({ Ads: true, Analytics: false }) }, 'w')).toBe(
      'consent',
    );
    expect(await gate.decide({ type: 'track', ...consent({ Ads: true }) }, 'w')).toBe('consent');
    expect(await gate.decide({ type: 'track' }, 'w')).toBe('pass');
    const strict = EventGate.compile('d', undefined, { categories: ['Ads'], missing: 'block' });
    expect(await strict.decide({ type: 'track' }, 'w')).toBe('consent');
  });
  it('names the destination of a condition that does not compile', () => {
    expect(() => EventGate.compile('crm', { condition: 'properties.(' })).toThrow(/destination "crm"/);
  });
});

describe('CircuitBreaker', () => {
  it('opens after N failures in a row, lets one probe through after the cooldown, closes on success', () => {
    let now = 0;
    const b = new CircuitBreaker(3, 1000, () => now);
    b.failure();
    b.success();
    b.failure();
    b.failure();
    expect(b.state).toBe('closed');
    b.failure();
    expect(b.state).toBe('open');
    expect(b.allow()).toBe(false);
    now = 1000;
    expect(b.state).toBe('half-open');
    expect(b.allow()).toBe(true);
    expect(b.allow()).toBe(false);
    b.failure();
    expect(b.state).toBe('open');
    now = 2000;
    expect(b.allow()).toBe(true);
    b.success();
    expect(b.state).toBe('closed');
    expect(b.allow()).toBe(true);
  });
});

describe('backoff and rate limit', () => {
  it('grows exponentially up to the cap, with full jitter', () => {
    expect(backoffMs(1, 100, 10_000, () => 1)).toBe(100);
    expect(backoffMs(4, 100, 10_000, () => 1)).toBe(800);
    expect(backoffMs(30, 100, 10_000, () => 1)).toBe(10_000);
    expect(backoffMs(4, 100, 10_000, () => 0)).toBe(0);
  });
  it('hands out a second’s worth of tokens, then one per interval', () => {
    let now = 0;
    const r = new RateLimit(2, () => now);
    expect(r.take()).toBe(0);
    expect(r.take()).toBe(0);
    expect(r.take()).toBe(500);
    now = 500;
    expect(r.take()).toBe(0);
  });
});
