import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BadValue } from '../sql/driver.js';
import { isoDate, isoTimestamp } from '../sql/values.js';
import { parseArray } from './values.js';

describe('parseArray', () => {
  it('reads quoted, NULL, nested and dimensioned arrays', () => {
    expect(parseArray('{}')).toEqual([]);
    expect(parseArray('{1,NULL,"NULL","a\\"b","c\\\\d"," x "}')).toEqual([
      '1',
      null,
      'NULL',
      'a"b',
      'c\\d',
      ' x ',
    ]);
    expect(parseArray('{{1,2},{3,4}}')).toEqual([
      ['1', '2'],
      ['3', '4'],
    ]);
    expect(parseArray('[0:1]={7,8}')).toEqual(['7', '8']);
  });

  it('refuses what is not array text, with BadValue', () => {
    for (const bad of ['', '{', '{1,2', '{"a}', '{1}x', 'nope'])
      expect(() => parseArray(bad), bad).toThrow(BadValue);
  });

  it('is total: any text parses or throws BadValue, nothing else', () => {
    fc.assert(
      fc.property(fc.string(), (s) => {
        try {
          parseArray(s);
        } catch (err) {
          expect(err).toBeInstanceOf(BadValue);
        }
      }),
    );
  });
});

describe('isoTimestamp / isoDate', () => {
  it('keeps microseconds, marks UTC, writes BC and far years in ISO 8601 expanded form', () => {
    expect(isoTimestamp('2024-01-02 03:04:05.123456+00')).toBe('2024-01-02T03:04:05.123456Z');
    expect(isoTimestamp('2024-01-02 03:04:05')).toBe('2024-01-02T03:04:05Z');
    expect(isoTimestamp('0001-01-01 00:00:00+00 BC')).toBe('0000-01-01T00:00:00Z');
    expect(isoTimestamp('12024-01-01 00:00:00+00')).toBe('+012024-01-01T00:00:00Z');
    expect(isoTimestamp('2024-01-02 03:04:05+05:30')).toBe('2024-01-01T21:34:05.000Z');
    expect(isoDate('0044-03-15 BC')).toBe('-000043-03-15');
    expect(isoDate('infinity')).toBe('infinity');
  });

  it('refuses impossible calendar dates', () => {
    expect(() => isoDate('2024-00-10')).toThrow(BadValue);
    expect(() => isoTimestamp('2024-13-01 00:00:00')).toThrow(BadValue);
  });
});
