import { describe, expect, it } from 'vitest';
import { connectedComponents, guardedClusters } from './clustering.js';

const groups = (roots: Int32Array) => {
  const by = new Map<number, number[]>();
  roots.forEach((r, i) => {
    by.set(r, [...(by.get(r) ?? []), i]);
  });
  return [...by.values()].sort((a, b) => a[0]! - b[0]!);
};

describe('clustering', () => {
  // 0–1 strong, 1–2 weak, 2–3 strong: a chain of two people through a weak link.
  const links = [
    { a: 0, b: 1, weight: 20 },
    { a: 1, b: 2, weight: 4 },
    { a: 2, b: 3, weight: 18 },
  ];

  it('connected components join the whole chain', () => {
    expect(groups(connectedComponents(5, links))).toEqual([[0, 1, 2, 3], [4]]);
  });

  it('the guard refuses the weak link when two records it would join clearly differ', () => {
    const r = guardedClusters(5, links, [[0, 3]]);
    expect(groups(r.roots)).toEqual([[0, 1], [2, 3], [4]]);
    expect(r.vetoed).toEqual([{ a: 1, b: 2, weight: 4 }]);
  });

  it('takes the strongest links first: a veto decides against the weaker side', () => {
    // 2 is close to 1 (weight 10) and to 3 (weight 12); 1 and 3 differ: 2 goes with 3.
    const r = guardedClusters(
      4,
      [
        { a: 1, b: 2, weight: 10 },
        { a: 2, b: 3, weight: 12 },
      ],
      [[1, 3]],
    );
    expect(groups(r.roots)).toEqual([[0], [1], [2, 3]]);
  });

  it('without vetoes it is connected components', () => {
    expect(groups(guardedClusters(5, links, []).roots)).toEqual(groups(connectedComponents(5, links)));
  });
});
