import type { ComputedTrait, TraitRuleName } from '../config/identity-schema.js';
import type { JsonObject } from '../spec/event.js';
import { getPath } from './identifiers.js';

/** One trait value on a profile, with where it came from. */
export interface TraitValue {
  value: unknown;
  /** Event timestamp, epoch ms. */
  timestamp: number;
  sourceId: string;
  logOffset: number;
}

/** Which of two values of a trait the profile keeps, by the trait's rule. */
export function pickTrait(
  a: TraitValue,
  b: TraitValue,
  rule: TraitRuleName,
  sourceRank: (s: string) => number,
): TraitValue {
  const latest =
    a.timestamp !== b.timestamp ? (a.timestamp > b.timestamp ? a : b) : a.logOffset >= b.logOffset ? a : b;
  if (rule === 'latest') return latest;
  if (rule === 'first') {
    if (a.timestamp !== b.timestamp) return a.timestamp < b.timestamp ? a : b;
    return a.logOffset <= b.logOffset ? a : b;
  }
  const ra = sourceRank(a.sourceId);
  const rb = sourceRank(b.sourceId);
  return ra === rb ? latest : ra < rb ? a : b;
}

/** The running aggregate of a computed trait over one bucket (a UTC day when windowed, else all time). */
export interface Aggregate {
  count: number;
  sum: number;
  min: number | null;
  max: number | null;
  first: unknown;
  firstTs: number;
  last: unknown;
  lastTs: number;
}

/** Buckets of a computed trait: day number → aggregate (bucket 0 when there is no window). */
export type ComputedState = Map<number, Aggregate>;

const DAY_MS = 86_400_000;

function emptyAggregate(): Aggregate {
  return {
    count: 0,
    sum: 0,
    min: null,
    max: null,
    first: null,
    firstTs: Infinity,
    last: null,
    lastTs: -Infinity,
  };
}

/** Whether an event counts towards a computed trait. */
export function matchesComputed(def: ComputedTrait, event: JsonObject): boolean {
  if (def.event === undefined) return true;
  if (def.event.startsWith('type:')) return event.type === def.event.slice(5);
  return event.type === 'track' && event.event === def.event;
}

/** Adds one event to a computed trait's state. */
export function addToComputed(
  state: ComputedState,
  def: ComputedTrait,
  event: JsonObject,
  timestamp: number,
): void {
  let value: unknown = timestamp;
  if (def.property) {
    value = getPath(event, def.property.split('.'));
    if (value === undefined) return;
  } else if (def.op === 'first' || def.op === 'last') {
    value = new Date(timestamp).toISOString();
  }
  let num: number | undefined;
  if (def.op === 'sum' || def.op === 'min' || def.op === 'max') {
    num =
      typeof value === 'number'
        ? value
        : typeof value === 'string' && value.trim() !== ''
          ? Number(value)
          : NaN;
    if (!Number.isFinite(num)) return;
  }
  const bucket = def.window === undefined ? 0 : Math.floor(timestamp / DAY_MS);
  let agg = state.get(bucket);
  if (!agg) {
    agg = emptyAggregate();
    state.set(bucket, agg);
  }
  agg.count++;
  if (num !== undefined) {
    agg.sum += num;
    agg.min = agg.min === null ? num : Math.min(agg.min, num);
    agg.max = agg.max === null ? num : Math.max(agg.max, num);
  }
  if (timestamp < agg.firstTs) {
    agg.firstTs = timestamp;
    agg.first = value;
  }
  if (timestamp >= agg.lastTs) {
    agg.lastTs = timestamp;
    agg.last = value;
  }
}

function combine(a: Aggregate, b: Aggregate): Aggregate {
  return {
    count: a.count + b.count,
    sum: a.sum + b.sum,
    min: a.min === null ? b.min : b.min === null ? a.min : Math.min(a.min, b.min),
    max: a.max === null ? b.max : b.max === null ? a.max : Math.max(a.max, b.max),
    first: a.firstTs <= b.firstTs ? a.first : b.first,
    firstTs: Math.min(a.firstTs, b.firstTs),
    last: a.lastTs >= b.lastTs ? a.last : b.last,
    lastTs: Math.max(a.lastTs, b.lastTs),
  };
}

/** Folds `from` into `into` (profiles merging). */
export function mergeComputed(into: ComputedState, from: ComputedState): void {
  for (const [bucket, agg] of from) {
    const mine = into.get(bucket);
    into.set(bucket, mine ? combine(mine, agg) : { ...agg });
  }
}

/** The value of a computed trait at `now`: buckets older than the window are left out. */
export function computedValue(def: ComputedTrait, state: ComputedState | undefined, now: number): unknown {
  let total = emptyAggregate();
  if (state) {
    const oldest = def.window === undefined ? -Infinity : Math.floor((now - def.window) / DAY_MS);
    for (const [bucket, agg] of state) if (bucket >= oldest) total = combine(total, agg);
  }
  switch (def.op) {
    case 'count':
      return total.count;
    case 'sum':
      return total.sum;
    case 'min':
      return total.min;
    case 'max':
      return total.max;
    case 'first':
      return total.count === 0 ? null : total.first;
    case 'last':
      return total.count === 0 ? null : total.last;
  }
}

/** Drops buckets that can no longer fall inside the window. */
export function pruneComputed(def: ComputedTrait, state: ComputedState, now: number): void {
  if (def.window === undefined) return;
  const oldest = Math.floor((now - def.window) / DAY_MS) - 1;
  for (const bucket of state.keys()) if (bucket < oldest) state.delete(bucket);
}

export function computedToJson(state: ComputedState): string {
  const out: Record<string, Aggregate> = {};
  for (const [b, agg] of state) {
    out[b] = {
      ...agg,
      firstTs: Number.isFinite(agg.firstTs) ? agg.firstTs : 0,
      lastTs: Number.isFinite(agg.lastTs) ? agg.lastTs : 0,
    };
  }
  return JSON.stringify(out);
}

export function computedFromJson(text: string): ComputedState {
  const state: ComputedState = new Map();
  for (const [b, agg] of Object.entries(JSON.parse(text) as Record<string, Aggregate>))
    state.set(Number(b), agg);
  return state;
}
