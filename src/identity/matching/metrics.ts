/**
 * How well predicted groups of records agree with the truth: pairwise precision, recall and
 * F1 (over all pairs of records put together), and B-cubed (per record, the share of its
 * predicted group that is truly its own, and of its true group that was found). Pure.
 */

export interface Scores {
  precision: number;
  recall: number;
  f1: number;
  bcubedPrecision: number;
  bcubedRecall: number;
  bcubedF1: number;
  /** Pairs predicted, true pairs, and pairs both. */
  predictedPairs: number;
  truePairs: number;
  correctPairs: number;
}

const f1 = (p: number, r: number) => (p + r === 0 ? 0 : (2 * p * r) / (p + r));
const pairs = (n: number) => (n * (n - 1)) / 2;

/**
 * Scores `predicted` (record → group) against `truth` (record → group). Records missing from
 * `predicted` are groups of their own.
 */
export function scoreClusters(
  predicted: ReadonlyMap<string, string>,
  truth: ReadonlyMap<string, string>,
): Scores {
  const pred = (id: string) => predicted.get(id) ?? `\u0000${id}`;
  const predSize = new Map<string, number>();
  const trueSize = new Map<string, number>();
  const both = new Map<string, number>();
  for (const [id, t] of truth) {
    const p = pred(id);
    predSize.set(p, (predSize.get(p) ?? 0) + 1);
    trueSize.set(t, (trueSize.get(t) ?? 0) + 1);
    const key = `${p}\u0001${t}`;
    both.set(key, (both.get(key) ?? 0) + 1);
  }
  let predictedPairs = 0;
  for (const n of predSize.values()) predictedPairs += pairs(n);
  let truePairs = 0;
  for (const n of trueSize.values()) truePairs += pairs(n);
  let correctPairs = 0;
  for (const n of both.values()) correctPairs += pairs(n);
  let bp = 0;
  let br = 0;
  for (const [id, t] of truth) {
    const p = pred(id);
    const shared = both.get(`${p}\u0001${t}`)!;
    bp += shared / predSize.get(p)!;
    br += shared / trueSize.get(t)!;
  }
  const n = truth.size;
  const precision = predictedPairs === 0 ? 1 : correctPairs / predictedPairs;
  const recall = truePairs === 0 ? 1 : correctPairs / truePairs;
  const bcubedPrecision = n === 0 ? 1 : bp / n;
  const bcubedRecall = n === 0 ? 1 : br / n;
  return {
    precision,
    recall,
    f1: f1(precision, recall),
    bcubedPrecision,
    bcubedRecall,
    bcubedF1: f1(bcubedPrecision, bcubedRecall),
    predictedPairs,
    truePairs,
    correctPairs,
  };
}

/** Record → group from a list of groups (ids in no group are left out: groups of their own). */
export function groupsToMap(groups: readonly (readonly string[])[]): Map<string, string> {
  const out = new Map<string, string>();
  groups.forEach((g, i) => {
    for (const id of g) out.set(id, `g${i}`);
  });
  return out;
}
