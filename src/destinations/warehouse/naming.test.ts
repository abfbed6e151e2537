import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isReservedWord, NAME_PATTERN, NameRegistry, sanitizeName } from './naming.js';

/** Keys as clients send them: any unicode, ASCII-heavy names, and long ones. */
const anyKey = fc.oneof(
  fc.string({ unit: 'grapheme', maxLength: 80 }),
  fc.string({ unit: fc.constantFrom(...'aAzZ09_ -.$'.split('')), maxLength: 120 }),
  fc.constantFrom('select', 'Order', 'user', 'id', '', '__', '2fa', 'ÉtéPlan', '日本語'),
);

describe('sanitizeName', () => {
  it('folds names as Segment does', () => {
    expect(sanitizeName('Order Completed')).toBe('order_completed');
    expect(sanitizeName('productID')).toBe('product_id');
    expect(sanitizeName('HTTPStatusCode')).toBe('http_status_code');
    expect(sanitizeName('2fa enabled')).toBe('_2fa_enabled');
    expect(sanitizeName('select')).toBe('_select');
    expect(sanitizeName('Crème brûlée!')).toBe('creme_brulee');
    expect(sanitizeName('日本語')).toBe('_');
    expect(sanitizeName('a'.repeat(100))).toBe('a'.repeat(63));
  });

  it('is total and always gives a valid identifier that is not a bare reserved word', () => {
    fc.assert(
      fc.property(anyKey, (key) => {
        const name = sanitizeName(key);
        expect(name).toMatch(NAME_PATTERN);
        expect(Buffer.byteLength(name)).toBeLessThanOrEqual(63);
        expect(isReservedWord(name)).toBe(false);
      }),
      { numRuns: 2000 },
    );
  });

  it('is deterministic and idempotent', () => {
    fc.assert(
      fc.property(anyKey, (key) => {
        expect(sanitizeName(key)).toBe(sanitizeName(key));
        expect(sanitizeName(sanitizeName(key))).toBe(sanitizeName(key));
      }),
      { numRuns: 1000 },
    );
  });
});

describe('NameRegistry', () => {
  it('gives distinct valid names to distinct keys of one scope, and the same name to the same key', () => {
    fc.assert(
      fc.property(fc.array(anyKey, { maxLength: 60 }), (keys) => {
        const reg = new NameRegistry();
        const names = new Map<string, string>();
        for (const k of keys) {
          const name = reg.assign(k);
          expect(name).toMatch(NAME_PATTERN);
          if (names.has(k)) expect(name).toBe(names.get(k));
          names.set(k, name);
        }
        expect(new Set(names.values()).size).toBe(names.size);
      }),
      { numRuns: 500 },
    );
  });

  it('gives the same names for the same keys in the same order, and after a restore', () => {
    fc.assert(
      fc.property(fc.array(anyKey, { maxLength: 40 }), fc.array(anyKey, { maxLength: 10 }), (keys, more) => {
        const a = new NameRegistry();
        const b = new NameRegistry();
        const first = keys.map((k) => a.assign(k));
        expect(keys.map((k) => b.assign(k))).toEqual(first);
        const restored = new NameRegistry();
        for (const [i, k] of keys.entries()) restored.restore(k, first[i]!);
        expect(more.map((k) => restored.assign(k))).toEqual(more.map((k) => a.assign(k)));
      }),
      { numRuns: 300 },
    );
  });

  it('adds a hash suffix when names collide after folding or truncation', () => {
    const reg = new NameRegistry();
    expect(reg.assign('Plan')).toBe('plan');
    const second = reg.assign('plan');
    expect(second).toMatch(/^plan_[0-9a-f]{8}$/);
    const long = 'x'.repeat(70);
    expect(reg.assign(long)).toBe('x'.repeat(63));
    const longer = reg.assign(`${long}y`);
    expect(longer).toMatch(/^x{54}_[0-9a-f]{8}$/);
    expect(reg.assign('plan')).toBe(second);
  });
});
