import type { TrackingPlan } from '../../config/quality-schema.js';
import { isPlainObject, type JsonObject } from '../../spec/event.js';

/** Share of events a key must appear in to be drafted as required. */
export const REQUIRED_SHARE = 0.95;
/** Most distinct values a string may take to be drafted as an enum. */
export const ENUM_MAX_VALUES = 10;
/** An enum also needs each value seen this many times on average, so a handful of events does not make one. */
export const ENUM_MIN_REPEATS = 3;
const MAX_DEPTH = 3;

/** What was seen of one key across events. */
interface KeyStats {
  count: number;
  types: Set<string>;
  /** Distinct string values, until there are too many (then undefined). */
  strings?: Set<string>;
  stringCount: number;
  /** Objects seen under the key, for nested schemas. */
  object?: ObjectStats;
  items: Set<string>;
}

interface ObjectStats {
  count: number;
  keys: Map<string, KeyStats>;
}

const newObject = (): ObjectStats => ({ count: 0, keys: new Map() });

function jsonType(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  return typeof v;
}

function observe(stats: ObjectStats, obj: JsonObject, depth: number): void {
  stats.count++;
  for (const [k, v] of Object.entries(obj)) {
    let ks = stats.keys.get(k);
    if (!ks) {
      ks = { count: 0, types: new Set(), strings: new Set(), stringCount: 0, items: new Set() };
      stats.keys.set(k, ks);
    }
    ks.count++;
    ks.types.add(jsonType(v));
    if (typeof v === 'string') {
      ks.stringCount++;
      if (ks.strings) {
        ks.strings.add(v);
        if (ks.strings.size > ENUM_MAX_VALUES) ks.strings = undefined;
      }
    } else if (isPlainObject(v) && depth < MAX_DEPTH) {
      ks.object ??= newObject();
      observe(ks.object, v, depth + 1);
    } else if (Array.isArray(v)) {
      for (const item of v) ks.items.add(jsonType(item));
    }
  }
}

function schemaOf(stats: ObjectStats): JsonObject {
  const properties: JsonObject = {};
  const required: string[] = [];
  for (const [k, ks] of [...stats.keys].sort(([a], [b]) => a.localeCompare(b))) {
    let types = [...ks.types];
    // An integer seen next to a fraction is a number.
    if (types.includes('number')) types = types.filter((t) => t !== 'integer');
    const p: JsonObject = { type: types.length === 1 ? types[0] : types.sort() };
    if (
      types.length === 1 &&
      types[0] === 'string' &&
      ks.strings &&
      ks.strings.size > 0 &&
      ks.stringCount >= ks.strings.size * ENUM_MIN_REPEATS
    ) {
      p.enum = [...ks.strings].sort();
    }
    if (types.length === 1 && types[0] === 'object' && ks.object) Object.assign(p, schemaOf(ks.object));
    if (types.length === 1 && types[0] === 'array' && ks.items.size === 1)
      p.items = { type: [...ks.items][0] };
    properties[k] = p;
    if (ks.count >= stats.count * REQUIRED_SHARE) required.push(k);
  }
  const schema: JsonObject = { type: 'object', properties };
  if (required.length > 0) schema.required = required;
  return schema;
}

/**
 * Drafts a tracking plan from archived events, for a person to edit: every track event name
 * seen, and for each a schema of its properties (JSON types; `required` for keys present in
 * at least 95% of its events; `enum` for strings with at most 10 values, each seen 3 times on
 * average), and schemas of identify and group traits. Violations are only reported
 * (`allow`), so the draft can run before it is trusted.
 */
export function inferPlan(name: string, events: Iterable<unknown>): TrackingPlan {
  const tracks = new Map<string, ObjectStats>();
  const identify = newObject();
  const group = newObject();
  for (const e of events) {
    if (!isPlainObject(e)) continue;
    if (e.type === 'track' && typeof e.event === 'string') {
      const s = tracks.get(e.event) ?? newObject();
      tracks.set(e.event, s);
      observe(s, isPlainObject(e.properties) ? e.properties : {}, 0);
    } else if (e.type === 'identify') {
      observe(identify, isPlainObject(e.traits) ? e.traits : {}, 0);
    } else if (e.type === 'group') {
      observe(group, isPlainObject(e.traits) ? e.traits : {}, 0);
    }
  }
  const plan: TrackingPlan = { name, onViolation: 'allow', onUnplannedEvent: 'allow', events: {} };
  for (const [event, s] of [...tracks].sort(([a], [b]) => a.localeCompare(b))) {
    plan.events[event] = { description: `seen ${s.count} times`, properties: schemaOf(s) };
  }
  if (identify.count > 0) plan.identify = { traits: schemaOf(identify) };
  if (group.count > 0) plan.group = { traits: schemaOf(group) };
  return plan;
}
