import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MAX_TIME_MS, MIN_TIME_MS, parseTimestamp } from './timestamp.js';

describe('parseTimestamp', () => {
  it.each([
    ['2026-11-21T13:00:00.000Z', Date.parse('2026-11-21T13:00:00.000Z')],
    ['2026-11-21T13:00:00Z', Date.parse('2026-11-21T13:00:00Z')],
    ['2026-11-21T13:00Z', Date.parse('2026-11-21T13:00:00Z')],
    ['2026-11-21 13:00:00.123456789Z', Date.parse('2026-11-21T13:00:00.123Z')],
    ['2026-11-21T15:00:00+02:00', Date.parse('2026-11-21T13:00:00Z')],
    ['2026-11-21T15:00:00+0200', Date.parse('2026-11-21T13:00:00Z')],
    ['2026-11-21T10:30:00-02:30', Date.parse('2026-11-21T13:00:00Z')],
    ['2026-11-21T13:00:00', Date.parse('2026-11-21T13:00:00Z')],
    ['2026-11-21', Date.parse('2026-11-21T00:00:00Z')],
    ['2024-02-29T00:00:00Z', Date.parse('2024-02-29T00:00:00Z')],
    ['2000-02-29T00:00:00Z', Date.parse('2000-02-29T00:00:00Z')],
    ['0001-01-01T00:00:00.000Z', MIN_TIME_MS],
    ['0099-06-01T00:00:00.000Z', Date.parse('0099-06-01T00:00:00.000Z')],
    ['9999-12-31T23:59:59.999Z', MAX_TIME_MS],
  ])('reads %s', (text, ms) => {
    expect(parseTimestamp(text)).toBe(ms);
  });

  it.each([
    '2020-02-30T00:00:00.000Z',
    '2021-02-29T00:00:00Z',
    '1900-02-29T00:00:00Z',
    '2020-04-31T00:00:00Z',
    '2020-13-01T00:00:00Z',
    '2020-00-10T00:00:00Z',
    '2020-01-00T00:00:00Z',
    '2020-01-01T24:00:00Z',
    '2020-01-01T23:60:00Z',
    '2020-01-01T23:59:60Z',
    '2020-01-01T00:00:00+24:00',
    '0000-01-01T00:00:00Z',
    '0001-01-01T00:00:00+01:00',
    '9999-12-31T23:00:00-01:00',
    '+275760-09-13T00:00:00.000Z',
    '-271821-04-20T00:00:00.000Z',
    '2020/02/03',
    'Feb 3 2020',
    'yesterday',
    '1',
    ' 2020-01-01T00:00:00Z',
    '',
  ])('refuses %s', (text) => {
    expect(parseTimestamp(text)).toBeUndefined();
  });

  it('agrees with Date.parse on every canonical instant of years 0001-9999', () => {
    fc.assert(
      fc.property(fc.integer({ min: MIN_TIME_MS, max: MAX_TIME_MS }), (ms) => {
        const iso = new Date(ms).toISOString();
        expect(parseTimestamp(iso)).toBe(ms);
      }),
    );
  });
});
