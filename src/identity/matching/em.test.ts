import { describe, expect, it } from 'vitest';
import { estimateLambda, estimateU, expectationMaximisation, type Pattern } from './em.js';

/** Every pattern of three 3-level fields (levels 1..3), with its expected count under the mixture. */
function mixture(m: number[][], u: number[][], lambda: number, n: number): Pattern[] {
  const out: Pattern[] = [];
  for (let a = 1; a <= 3; a++)
    for (let b = 1; b <= 3; b++)
      for (let c = 1; c <= 3; c++) {
        const levels = [a, b, c];
        const pm = levels.reduce((p, l, f) => p * m[f]![l]!, 1);
        const pu = levels.reduce((p, l, f) => p * u[f]![l]!, 1);
        out.push({ levels, count: n * (lambda * pm + (1 - lambda) * pu) });
      }
  return out;
}

describe('expectationMaximisation', () => {
  const m = [
    [0, 0.85, 0.1, 0.05],
    [0, 0.7, 0.2, 0.1],
    [0, 0.9, 0.06, 0.04],
  ];
  const u = [
    [0, 0.01, 0.04, 0.95],
    [0, 0.05, 0.1, 0.85],
    [0, 0.002, 0.02, 0.978],
  ];

  it('recovers m and the share of matches of a mixture, u given', () => {
    const patterns = mixture(m, u, 0.2, 100_000);
    const r = expectationMaximisation(patterns, u, {
      include: [true, true, true],
      maxIterations: 500,
      tolerance: 1e-9,
    });
    expect(r.converged).toBe(true);
    expect(r.lambda).toBeCloseTo(0.2, 2);
    for (let f = 0; f < 3; f++) for (let l = 1; l <= 3; l++) expect(r.m[f]![l]!).toBeCloseTo(m[f]![l]!, 2);
  });

  it('leaves an excluded field (a blocking rule made it agree) at its starting m', () => {
    const patterns = mixture(m, u, 0.3, 10_000);
    const start = [
      [0, 0.5, 0.3, 0.2],
      [0, 0.5, 0.3, 0.2],
      [0, 0.5, 0.3, 0.2],
    ];
    const r = expectationMaximisation(patterns, u, { include: [true, false, true], m: start });
    expect(r.m[1]).toEqual(start[1]);
    expect(r.m[0]![1]!).toBeGreaterThan(0.7);
  });

  it('estimates u with a pseudo-pair per level (never zero), and lambda alone', () => {
    const uu = estimateU(
      [
        { levels: [3, 1], count: 98 },
        { levels: [1, 0], count: 2 },
      ],
      [4, 3],
    );
    expect(uu[0]).toEqual([0, 3 / 103, 1 / 103, 99 / 103]);
    // Field 1: level 0 (missing) is not counted.
    expect(uu[1]).toEqual([0, 99 / 100, 1 / 100]);
    const patterns = mixture(m, u, 0.05, 100_000);
    expect(estimateLambda(patterns, m, u)).toBeCloseTo(0.05, 3);
  });
});
