/**
 * Clustering of accepted pairs. Plain connected components let one weak link chain two
 * different people together (A≈B, B≈C, yet A and C clearly differ). Here links are taken
 * strongest first, and two groups are not joined when a veto pair (two of their records
 * clearly different) lies between them. Pure: no I/O.
 */

export interface Link {
  a: number;
  b: number;
  weight: number;
}

/** Union–find over record indexes 0..n-1 (path halving, union by size). */
export class UnionFind {
  readonly parent: Int32Array;
  readonly size: Int32Array;

  constructor(n: number) {
    this.parent = new Int32Array(n);
    this.size = new Int32Array(n).fill(1);
    for (let i = 0; i < n; i++) this.parent[i] = i;
  }

  find(x: number): number {
    const p = this.parent;
    while (p[x] !== x) {
      p[x] = p[p[x]!]!;
      x = p[x]!;
    }
    return x;
  }

  /** Joins the groups of a and b; returns the new root. */
  union(a: number, b: number): number {
    let ra = this.find(a);
    let rb = this.find(b);
    if (ra === rb) return ra;
    if (this.size[ra]! < this.size[rb]!) [ra, rb] = [rb, ra];
    this.parent[rb] = ra;
    this.size[ra]! += this.size[rb]!;
    return ra;
  }
}

/** Connected components: the root of each record's group. */
export function connectedComponents(n: number, links: readonly Link[]): Int32Array {
  const uf = new UnionFind(n);
  for (const l of links) uf.union(l.a, l.b);
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = uf.find(i);
  return out;
}

export interface GuardedClusters {
  /** The root of each record's group. */
  roots: Int32Array;
  /** Links not taken because a veto pair lay between their groups. */
  vetoed: Link[];
}

/**
 * Groups records by the links, strongest first, never joining two groups with a veto pair
 * (two records known to differ) between them.
 */
export function guardedClusters(
  n: number,
  links: readonly Link[],
  vetoes: readonly (readonly [number, number])[],
): GuardedClusters {
  const uf = new UnionFind(n);
  const members = new Map<number, number[]>();
  const against = new Map<number, number[]>();
  for (const [a, b] of vetoes) {
    (against.get(a) ?? against.set(a, []).get(a)!).push(b);
    (against.get(b) ?? against.set(b, []).get(b)!).push(a);
  }
  const vetoed: Link[] = [];
  const sorted = [...links].sort((x, y) => y.weight - x.weight || x.a - y.a || x.b - y.b);
  for (const link of sorted) {
    const ra = uf.find(link.a);
    const rb = uf.find(link.b);
    if (ra === rb) continue;
    if (against.size > 0) {
      const ma = members.get(ra) ?? [ra];
      const mb = members.get(rb) ?? [rb];
      const [small, otherRoot] = ma.length <= mb.length ? [ma, rb] : [mb, ra];
      let blocked = false;
      for (const x of small) {
        for (const y of against.get(x) ?? []) {
          if (uf.find(y) === otherRoot) {
            blocked = true;
            break;
          }
        }
        if (blocked) break;
      }
      if (blocked) {
        vetoed.push(link);
        continue;
      }
      const root = uf.union(ra, rb);
      const merged = ma.length >= mb.length ? ma : mb;
      for (const x of ma.length >= mb.length ? mb : ma) merged.push(x);
      members.delete(ra);
      members.delete(rb);
      members.set(root, merged);
    } else {
      uf.union(ra, rb);
    }
  }
  const roots = new Int32Array(n);
  for (let i = 0; i < n; i++) roots[i] = uf.find(i);
  return { roots, vetoed };
}
