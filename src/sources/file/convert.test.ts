import { describe, expect, it } from 'vitest';
import { convertValue } from './convert.js';

describe('convertValue', () => {
  it('converts text to each declared type', () => {
    expect(convertValue('n', 'integer', ' 42 ')).toEqual({ ok: true, value: 42 });
    expect(convertValue('n', 'integer', '9007199254740993')).toEqual({ ok: true, value: '9007199254740993' });
    expect(convertValue('x', 'number', '1.5e3')).toEqual({ ok: true, value: 1500 });
    expect(convertValue('b', 'boolean', 'Yes')).toEqual({ ok: true, value: true });
    expect(convertValue('b', 'boolean', '0')).toEqual({ ok: true, value: false });
    expect(convertValue('t', 'timestamp', '2026-01-02T10:00:00Z')).toEqual({
      ok: true,
      value: '2026-01-02T10:00:00Z',
    });
    expect(convertValue('t', 'timestamp', '2026-01-02T12:00:00+02:00')).toEqual({
      ok: true,
      value: '2026-01-02T10:00:00.000Z',
    });
    expect(convertValue('d', 'date', '2024-02-29')).toEqual({ ok: true, value: '2024-02-29' });
    expect(convertValue('j', 'json', '{"a":[1]}')).toEqual({ ok: true, value: { a: [1] } });
    expect(convertValue('s', 'string', 12)).toEqual({ ok: true, value: '12' });
  });

  it('makes empty text null whatever the type', () => {
    for (const t of ['string', 'integer', 'number', 'boolean', 'timestamp', 'date', 'json'] as const)
      expect(convertValue('c', t, '')).toEqual({ ok: true, value: null });
  });

  it('refuses text that is not the type, naming the column and the value', () => {
    const cases = [
      ['integer', '4.5'],
      ['integer', '99999999999999999999'],
      ['number', 'abc'],
      ['boolean', 'maybe'],
      ['timestamp', '2026-02-30T00:00:00Z'],
      ['date', '2023-02-29'],
      ['json', '{nope'],
    ] as const;
    for (const [type, value] of cases) {
      const r = convertValue('amount', type, value);
      expect(r.ok, `${type} ${value}`).toBe(false);
      if (!r.ok) expect(r.reason).toContain(`column amount: ${JSON.stringify(value)}`);
    }
  });
});
