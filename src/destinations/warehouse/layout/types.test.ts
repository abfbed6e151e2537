import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { canonicalTimestamp, castCell, castValue, inferType, widen } from './types.js';

/** `String.prototype.toWellFormed` (ES2024, in Node 20; not in this project's lib). */
const wellFormed = (s: string): string => (s as unknown as { toWellFormed(): string }).toWellFormed();

describe('column types', () => {
  it('infers the type of a first value', () => {
    expect(inferType(3)).toBe('bigint');
    expect(inferType(2 ** 60)).toBe('double');
    expect(inferType(3.5)).toBe('double');
    expect(inferType(true)).toBe('boolean');
    expect(inferType('2026-11-20T10:00:00Z')).toBe('timestamp');
    expect(inferType('2026-11-20')).toBe('varchar');
    expect(inferType('hello')).toBe('varchar');
    expect(inferType([1])).toBe('json');
    expect(inferType({ a: 1 })).toBe('json');
    expect(inferType(null)).toBeUndefined();
  });

  it('reads ISO-8601 date-times into one canonical UTC form, and refuses days that do not exist', () => {
    expect(canonicalTimestamp('2026-11-20T10:00:00Z')).toBe('2026-11-20T10:00:00.000Z');
    expect(canonicalTimestamp('2026-11-20 10:00')).toBe('2026-11-20T10:00:00.000Z');
    expect(canonicalTimestamp('2026-11-20T10:00:00.123456+01:30')).toBe('2026-11-20T08:30:00.123Z');
    expect(canonicalTimestamp('2026-11-20T10:00:00-0500')).toBe('2026-11-20T15:00:00.000Z');
    expect(canonicalTimestamp('2026-02-30T10:00:00Z')).toBeUndefined();
    expect(canonicalTimestamp('2026-11-20T24:00:00Z')).toBeUndefined();
    expect(canonicalTimestamp('yesterday')).toBeUndefined();
  });

  it('widens bigint to double only', () => {
    expect(widen('bigint', 'double')).toBe('double');
    expect(widen('double', 'bigint')).toBe('double');
    expect(widen('timestamp', 'varchar')).toBe('timestamp');
    expect(widen('varchar', 'bigint')).toBe('varchar');
  });

  it('casts or refuses with a reason, never throws', () => {
    expect(castValue('bigint', '42')).toEqual({ ok: true, value: '42' });
    expect(castValue('double', '1e3')).toEqual({ ok: true, value: '1000' });
    expect(castValue('varchar', [1, 'a'])).toEqual({ ok: true, value: '[1,"a"]' });
    expect(castValue('boolean', 'yes')).toEqual({
      ok: false,
      reason: 'the string "yes" cannot be cast to boolean',
    });
    expect(castValue('varchar', 'a\u0000b').ok).toBe(false);
    const types = ['bigint', 'double', 'boolean', 'timestamp', 'varchar', 'json'] as const;
    fc.assert(
      fc.property(fc.constantFrom(...types), fc.jsonValue(), (type, value) => {
        const cast = castValue(type, value);
        if (cast.ok && type === inferType(value)) expect(cast.value === null).toBe(value === null);
        if (!cast.ok) expect(cast.reason).toMatch(/cannot be/);
      }),
      { numRuns: 1000 },
    );
  });

  it('writes JSON values with lone surrogates replaced by U+FFFD, so both engines take them', () => {
    const value = ['\ud800', 'a\\ud800', '\ud83d\ude00', '\udfff\ud800', { '\udc00k': 'x\\\ud801' }];
    expect(JSON.parse(castCell('json', value)!)).toEqual([
      '\ufffd',
      'a\\ud800',
      '\ud83d\ude00',
      '\ufffd\ufffd',
      { '\ufffdk': 'x\\\ufffd' },
    ]);
    fc.assert(
      fc.property(fc.array(fc.string({ unit: 'binary' })), (strings) => {
        const cell = castCell('json', strings);
        if (strings.some((t) => t.includes('\u0000'))) return cell === undefined;
        expect(JSON.parse(cell!)).toEqual(strings.map(wellFormed));
        expect(cell).toBe(wellFormed(cell!));
      }),
    );
  });
});
