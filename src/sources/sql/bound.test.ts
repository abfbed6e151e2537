import { describe, expect, it } from 'vitest';
import { keepMarks, MAX_MARKS, type Mark, nextLowerBound, START } from './bound.js';

const marks = [
  { t: 100, max: '10' },
  { t: 200, max: '20' },
  { t: 300, max: '30' },
];

describe('nextLowerBound', () => {
  it('moves to the newest mark when no transaction is open', () => {
    expect(nextLowerBound(START, marks, [], 0)).toEqual({ value: '30', t: 300 });
  });

  it('stops at the newest mark taken before the oldest open transaction started', () => {
    expect(nextLowerBound(START, marks, [250], 0)).toEqual({ value: '20', t: 200 });
    expect(nextLowerBound(START, marks, [350, 150], 0)).toEqual({ value: '10', t: 100 });
    // A mark taken at the very second the transaction started does not bound it.
    expect(nextLowerBound(START, marks, [200], 0)).toEqual({ value: '10', t: 100 });
  });

  it('takes the clock skew off the start of a transaction', () => {
    expect(nextLowerBound(START, marks, [250], 0)).toEqual({ value: '20', t: 200 });
    expect(nextLowerBound(START, marks, [250], 60)).toEqual({ value: '10', t: 100 });
  });

  it('holds the bound for a transaction older than every mark, or whose start is hidden', () => {
    const current = { value: '5', t: 50 };
    expect(nextLowerBound(current, marks, [90], 0)).toBe(current);
    expect(nextLowerBound(current, marks, [null, 400], 0)).toBe(current);
    expect(nextLowerBound(current, [], [], 0)).toBe(current);
  });

  it('never goes back to an older mark than the current bound came from', () => {
    const current = { value: '30', t: 300 };
    expect(nextLowerBound(current, marks, [250], 0)).toBe(current);
  });

  it('an empty stream at the mark bounds nothing', () => {
    expect(nextLowerBound(START, [{ t: 100, max: null }], [], 0)).toEqual({ value: null, t: 100 });
  });
});

describe('keepMarks', () => {
  it('keeps the newest marks only', () => {
    let kept: Mark[] = [{ t: 0, max: '0' }];
    for (let i = 1; i <= 40; i++) kept = keepMarks(kept, { t: i, max: String(i) });
    expect(kept).toHaveLength(MAX_MARKS);
    expect(kept.at(-1)).toEqual({ t: 40, max: '40' });
  });
});
