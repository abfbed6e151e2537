import { describe, expect, it } from 'vitest';
import { DedupeIndex, hashKey } from './dedupe.js';

const DAY = 86_400_000;

describe('DedupeIndex', () => {
  it('remembers keys within the window and forgets them after', () => {
    const idx = new DedupeIndex(7 * DAY);
    const t0 = Date.parse('2026-11-01T00:00:00Z');
    idx.add('web', 'm1', t0);
    expect(idx.mightContain('web', 'm1', t0 + DAY)).toBe(true);
    expect(idx.mightContain('web', 'm2', t0 + DAY)).toBe(false);
    expect(idx.mightContain('app', 'm1', t0 + DAY)).toBe(false);
    expect(idx.mightContain('web', 'm1', t0 + 9 * DAY)).toBe(false);
    idx.expire(t0 + 9 * DAY);
    expect(idx.size).toBe(0);
  });

  it('keeps the pair distinct from concatenations', () => {
    expect(hashKey('ab', 'c')).not.toBe(hashKey('a', 'bc'));
  });

  it('hashes 200,000 distinct keys without a collision', () => {
    const seen = new Set<number>();
    for (let i = 0; i < 200_000; i++) seen.add(hashKey('web', `msg-${i}`));
    expect(seen.size).toBe(200_000);
  });
});
