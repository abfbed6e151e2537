/**
 * The Fellegi–Sunter parameters, estimated without labels, on comparison patterns counted in
 * SQL (a pattern is one level per field, with how many pairs share it): u from random pairs
 * (almost all non-matches), m by expectation–maximisation over candidate pairs with u fixed.
 * Pure: no I/O.
 */

/** Comparison levels of some pairs (level 0 = a value missing: no evidence) and how many pairs. */
export interface Pattern {
  levels: readonly number[];
  count: number;
}

/** Per field, the probability of each level (index = level; index 0, "missing", is unused). */
export type LevelProbabilities = number[][];

/**
 * u per field and level from the patterns of random pairs, with one pseudo-pair per level so
 * a level no random pair reached is rare, not impossible (its weight stays finite).
 */
export function estimateU(patterns: readonly Pattern[], levelCounts: readonly number[]): LevelProbabilities {
  return levelCounts.map((n, f) => {
    const counts = new Array<number>(n).fill(0);
    for (const p of patterns) counts[p.levels[f]!]! += p.count;
    let total = 0;
    for (let l = 1; l < n; l++) total += counts[l]! + 1;
    return counts.map((c, l) => (l === 0 ? 0 : (c + 1) / total));
  });
}

/** A starting m: the best level likely, the others less so, "different" least. */
export function initialM(levelCounts: readonly number[]): LevelProbabilities {
  return levelCounts.map((n) => {
    const k = n - 1;
    if (k <= 1) return [0, 1];
    const m = new Array<number>(n).fill(0);
    m[1] = 0.7;
    for (let l = 2; l < n - 1; l++) m[l] = 0.25 / (k - 2);
    m[n - 1] = 0.05;
    if (k === 2) m[1] = 0.95;
    return m;
  });
}

export interface EmResult {
  m: LevelProbabilities;
  /** Share of matches among the patterns' pairs. */
  lambda: number;
  iterations: number;
  converged: boolean;
}

/** Smallest m or u used in a ratio: keeps weights finite. */
const FLOOR = 1e-6;

/** The probability that a pattern is a match, given m, u, lambda and which fields count. */
export function matchProbability(
  levels: readonly number[],
  m: LevelProbabilities,
  u: LevelProbabilities,
  lambda: number,
  include?: readonly boolean[],
): number {
  let logRatio = Math.log(lambda) - Math.log(1 - lambda);
  for (let f = 0; f < levels.length; f++) {
    const l = levels[f]!;
    if (l === 0 || (include && !include[f])) continue;
    logRatio += Math.log(Math.max(m[f]![l]!, FLOOR)) - Math.log(Math.max(u[f]![l]!, FLOOR));
  }
  if (logRatio > 700) return 1;
  return 1 / (1 + Math.exp(-logRatio));
}

/**
 * Expectation–maximisation of m and lambda over the patterns of candidate pairs, u fixed.
 * Fields with `include[f]` false (those a blocking rule made equal) keep their starting m and
 * take no part in the likelihood.
 */
export function expectationMaximisation(
  patterns: readonly Pattern[],
  u: LevelProbabilities,
  options: {
    include: readonly boolean[];
    m?: LevelProbabilities;
    lambda?: number;
    maxIterations?: number;
    tolerance?: number;
  },
): EmResult {
  const levelCounts = u.map((x) => x.length);
  let m = (options.m ?? initialM(levelCounts)).map((x) => [...x]);
  let lambda = options.lambda ?? 0.3;
  const max = options.maxIterations ?? 100;
  const tol = options.tolerance ?? 1e-6;
  let iterations = 0;
  let converged = false;
  while (iterations < max) {
    iterations++;
    const weighted = levelCounts.map((n) => new Array<number>(n).fill(0));
    let matches = 0;
    let total = 0;
    for (const p of patterns) {
      const pm = matchProbability(p.levels, m, u, lambda, options.include) * p.count;
      matches += pm;
      total += p.count;
      for (let f = 0; f < p.levels.length; f++) weighted[f]![p.levels[f]!]! += pm;
    }
    if (total === 0) break;
    const next = m.map((old, f) => {
      if (!options.include[f]) return old;
      let sum = 0;
      for (let l = 1; l < old.length; l++) sum += weighted[f]![l]!;
      if (sum <= 0) return old;
      return old.map((_, l) => (l === 0 ? 0 : Math.max(weighted[f]![l]! / sum, FLOOR)));
    });
    const nextLambda = Math.min(Math.max(matches / total, 1e-9), 1 - 1e-9);
    let change = Math.abs(nextLambda - lambda);
    for (let f = 0; f < m.length; f++)
      for (let l = 1; l < m[f]!.length; l++) change = Math.max(change, Math.abs(next[f]![l]! - m[f]![l]!));
    m = next;
    lambda = nextLambda;
    if (change < tol) {
      converged = true;
      break;
    }
  }
  return { m, lambda, iterations, converged };
}

/** Lambda alone (m and u fixed): the share of matches among the patterns' pairs. */
export function estimateLambda(
  patterns: readonly Pattern[],
  m: LevelProbabilities,
  u: LevelProbabilities,
  start = 0.1,
): number {
  let lambda = start;
  for (let i = 0; i < 200; i++) {
    let matches = 0;
    let total = 0;
    for (const p of patterns) {
      matches += matchProbability(p.levels, m, u, lambda) * p.count;
      total += p.count;
    }
    if (total === 0) return lambda;
    const next = Math.min(Math.max(matches / total, 1e-12), 1 - 1e-9);
    if (Math.abs(next - lambda) < 1e-9) return next;
    lambda = next;
  }
  return lambda;
}
