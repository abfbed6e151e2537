/**
 * Dedupe index over (source, messageId) within a time window.
 *
 * DuckDB is no key-value store: an ART index or an anti-join over a week of keys gets
 * slower with every batch. So the index is a set of 53-bit hashes per time bucket held in
 * memory, rebuilt from the warehouse at start-up. A hit is only a candidate: the caller
 * confirms it against the stored events before dropping anything, so a hash collision can
 * never lose an event; a miss is certain.
 */
export class DedupeIndex {
  private readonly bucketMs: number;
  private readonly buckets = new Map<number, Set<number>>();

  /** @param windowMs how long a key is remembered (default 7 days). */
  constructor(readonly windowMs: number = 7 * 24 * 60 * 60 * 1000) {
    this.bucketMs = Math.max(1000, Math.ceil(windowMs / 7));
  }

  /** True when the key may have been seen within the window before `atMs`. */
  mightContain(sourceId: string, messageId: string, atMs: number): boolean {
    return this.mightContainHash(hashKey(sourceId, messageId), atMs);
  }

  /** `mightContain` for a key already hashed with `hashKey`. */
  mightContainHash(h: number, atMs: number): boolean {
    const oldest = Math.floor((atMs - this.windowMs) / this.bucketMs);
    for (const [bucket, set] of this.buckets) {
      if (bucket >= oldest && set.has(h)) return true;
    }
    return false;
  }

  add(sourceId: string, messageId: string, receivedAtMs: number): void {
    const bucket = Math.floor(receivedAtMs / this.bucketMs);
    let set = this.buckets.get(bucket);
    if (!set) {
      set = new Set();
      this.buckets.set(bucket, set);
    }
    set.add(hashKey(sourceId, messageId));
  }

  /** Forgets buckets wholly older than the window before `nowMs`. */
  expire(nowMs: number): void {
    const oldest = Math.floor((nowMs - this.windowMs) / this.bucketMs);
    for (const bucket of this.buckets.keys()) if (bucket < oldest) this.buckets.delete(bucket);
  }

  get size(): number {
    let n = 0;
    for (const set of this.buckets.values()) n += set.size;
    return n;
  }
}

/** A 53-bit hash of the pair (two 32-bit multiply-xorshift lanes, in the style of cyrb53). */
export function hashKey(sourceId: string, messageId: string): number {
  let h1 = 0xdeadbeef;
  let h2 = 0x41c6ce57;
  const mix = (c: number) => {
    h1 = Math.imul(h1 ^ c, 2654435761);
    h2 = Math.imul(h2 ^ c, 1597334677);
  };
  for (let i = 0; i < sourceId.length; i++) mix(sourceId.charCodeAt(i));
  mix(0x1f);
  for (let i = 0; i < messageId.length; i++) mix(messageId.charCodeAt(i));
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return 4294967296 * (2097151 & h2) + (h1 >>> 0);
}
