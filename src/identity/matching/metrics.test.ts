import { describe, expect, it } from 'vitest';
import { groupsToMap, scoreClusters } from './metrics.js';

describe('scoreClusters', () => {
  const truth = new Map([
    ['1', 'a'],
    ['2', 'a'],
    ['3', 'b'],
  ]);

  it('pairwise and B-cubed scores of a wrong grouping', () => {
    const s = scoreClusters(groupsToMap([['2', '3']]), truth);
    expect([s.predictedPairs, s.truePairs, s.correctPairs]).toEqual([1, 1, 0]);
    expect([s.precision, s.recall, s.f1]).toEqual([0, 0, 0]);
    expect(s.bcubedPrecision).toBeCloseTo(2 / 3, 12);
    expect(s.bcubedRecall).toBeCloseTo(2 / 3, 12);
  });

  it('a perfect grouping scores 1, and singletons score recall from B-cubed only', () => {
    const perfect = scoreClusters(groupsToMap([['1', '2']]), truth);
    expect([perfect.precision, perfect.recall, perfect.bcubedF1]).toEqual([1, 1, 1]);
    const none = scoreClusters(new Map(), truth);
    expect([none.precision, none.recall]).toEqual([1, 0]);
    expect(none.bcubedRecall).toBeCloseTo((0.5 + 0.5 + 1) / 3, 12);
  });
});
