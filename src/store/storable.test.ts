import { describe, expect, it } from 'vitest';
import { findRefused } from './storable.js';

class DataError extends Error {}
const isDataError = (err: unknown) => err instanceof DataError;

/** An engine that refuses any slice holding a negative number, naming the first one. */
function engine(log: number[][] = []) {
  return async (slice: readonly number[]) => {
    log.push([...slice]);
    const bad = slice.find((n) => n < 0);
    if (bad !== undefined) throw new DataError(`refused ${bad}`);
  };
}

describe('findRefused', () => {
  it('finds every refused row, in order, with the message the engine gave for it alone', async () => {
    const rows = [1, 2, -3, 4, 5, 6, -7, 8, 9, -10];
    expect(await findRefused(rows, engine(), isDataError)).toEqual([
      { index: 2, reason: 'refused -3' },
      { index: 6, reason: 'refused -7' },
      { index: 9, reason: 'refused -10' },
    ]);
  });

  it('finds nothing in a batch the engine takes, after one attempt', async () => {
    const log: number[][] = [];
    expect(await findRefused([1, 2, 3], engine(log), isDataError)).toEqual([]);
    expect(log).toEqual([[1, 2, 3]]);
  });

  it('splits a batch known to be refused without trying it whole again; a single row is tried for its message', async () => {
    const log: number[][] = [];
    expect(await findRefused([1, -2], engine(log), isDataError, true)).toEqual([
      { index: 1, reason: 'refused -2' },
    ]);
    expect(log[0]).toEqual([1]);
    const single: number[][] = [];
    expect(await findRefused([-5], engine(single), isDataError, true)).toEqual([
      { index: 0, reason: 'refused -5' },
    ]);
    expect(single).toEqual([[-5]]);
  });

  it('throws an error that is not about the data, so the caller retries the batch', async () => {
    const down = async () => {
      throw new Error('connection lost');
    };
    await expect(findRefused([1, 2], down, isDataError)).rejects.toThrow('connection lost');
  });
});
