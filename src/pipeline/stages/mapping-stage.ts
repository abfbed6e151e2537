import { type CountryCode, parsePhoneNumberFromString } from 'libphonenumber-js';
import type { MappingConfig, Normalizer } from '../../config/quality-schema.js';
import { isPlainObject, type JsonObject } from '../../spec/event.js';
import type { PipelineEvent, Stage, StageResult } from './stage.js';
import { annotate } from './stage.js';

/** One change the mapping made, kept on the event under `_tributary.mapped` (never the old value of a field). */
export interface MappingChange {
  field: string;
  op: 'rename_event' | 'rename' | 'normalize' | 'conflict' | 'unparsable';
  from?: string;
  to?: string;
  normalizer?: Normalizer;
}

/** Words of a name: `Logged In`, `logged_in`, `loggedIn`, `LOGGED-IN` all give `logged`, `in`. */
export function words(name: string): string[] {
  return name
    .replace(/([a-z0-9])([A-Z])/g, '$1 $2')
    .toLowerCase()
    .split(/[^\p{L}\p{N}]+/u)
    .filter((w) => w !== '');
}

export function applyStyle(name: string, style: MappingConfig['events']['style']): string {
  const w = words(name);
  if (style === 'none' || w.length === 0) return name;
  if (style === 'snake_case') return w.join('_');
  if (style === 'camel_case')
    return w.map((x, i) => (i === 0 ? x : x[0]!.toUpperCase() + x.slice(1))).join('');
  return w.map((x) => x[0]!.toUpperCase() + x.slice(1)).join(' ');
}

/** The key names are compared by: their words, joined by `_` (`logIn`, `Log In` → `log_in`). */
export const wordKey = (name: string) => words(name).join('_');

/** Most distinct names a mapping remembers the result for (event names and keys repeat). */
const CACHE_MAX = 10_000;

/** `f` with its results kept for up to CACHE_MAX inputs (then the cache starts afresh). */
function cached<T>(f: (s: string) => T): (s: string) => T {
  let cache = new Map<string, T>();
  return (s) => {
    const hit = cache.get(s);
    if (hit !== undefined || cache.has(s)) return hit as T;
    const v = f(s);
    if (cache.size >= CACHE_MAX) cache = new Map();
    cache.set(s, v);
    return v;
  };
}

/** The objects whose keys are mapped and normalized. */
const FIELD_OBJECTS = ['properties', 'traits'] as const;

/**
 * Event-name aliases and naming style, key mapping (in `properties`, `traits` and
 * `context.traits`) and value normalizers. Names and keys are matched by their words, so
 * an alias `log_in` also catches `Log In` and `logIn`.
 */
export class MappingStage implements Stage {
  readonly name = 'mapping';
  private readonly eventAliases = new Map<string, string>();
  private readonly keyAliases = new Map<string, string>();
  private readonly normalizers: ReadonlyMap<string, readonly Normalizer[]>;
  private readonly style: MappingConfig['events']['style'];
  private readonly region: CountryCode | undefined;
  /** Event name → mapped name. */
  private readonly eventName: (name: string) => string;
  /** Key → canonical key, or undefined. */
  private readonly canonicalKey: (key: string) => string | undefined;

  constructor(config: MappingConfig) {
    for (const [canonical, aliases] of Object.entries(config.events.aliases)) {
      this.eventAliases.set(wordKey(canonical), canonical);
      for (const a of aliases) this.eventAliases.set(wordKey(a), canonical);
    }
    for (const [canonical, aliases] of Object.entries(config.fields)) {
      for (const a of aliases) this.keyAliases.set(wordKey(a), canonical);
    }
    this.normalizers = new Map(Object.entries(config.normalize));
    this.style = config.events.style;
    this.region = config.defaultRegion as CountryCode | undefined;
    this.eventName = cached((n) => this.eventAliases.get(wordKey(n)) ?? applyStyle(n, this.style));
    this.canonicalKey = cached((k) => this.keyAliases.get(wordKey(k)));
  }

  run(events: PipelineEvent[]): StageResult {
    for (const pe of events) if (this.map(pe.event).length > 0) pe.changed = true;
    return { pass: events, drop: [], fail: [] };
  }

  /** Maps one event in place and records the changes on it. */
  map(event: JsonObject): MappingChange[] {
    const changes: MappingChange[] = [];
    if (event.type === 'track' && typeof event.event === 'string') {
      const from = event.event;
      const to = this.eventName(from);
      if (to !== from) {
        event.event = to;
        changes.push({ field: 'event', op: 'rename_event', from, to });
      }
    }
    for (const field of FIELD_OBJECTS) {
      if (isPlainObject(event[field])) this.mapObject(event[field] as JsonObject, field, changes);
    }
    const ctx = event.context;
    if (isPlainObject(ctx) && isPlainObject(ctx.traits))
      this.mapObject(ctx.traits, 'context.traits', changes);
    annotate(event, 'mapped', changes);
    return changes;
  }

  private mapObject(obj: JsonObject, path: string, changes: MappingChange[]): void {
    if (this.keyAliases.size > 0) {
      for (const key of Object.keys(obj)) {
        const canonical = this.canonicalKey(key);
        if (canonical === undefined || canonical === key) continue;
        if (obj[canonical] === undefined) {
          obj[canonical] = obj[key];
          changes.push({ field: `${path}.${key}`, op: 'rename', to: `${path}.${canonical}` });
        } else {
          changes.push({ field: `${path}.${key}`, op: 'conflict', to: `${path}.${canonical}` });
        }
        delete obj[key];
      }
    }
    if (this.normalizers.size > 0) {
      for (const [key, list] of this.normalizers) {
        if (obj[key] === undefined || obj[key] === null) continue;
        for (const n of list) {
          const before = obj[key];
          const after = normalize(before, n, this.region);
          if (after === undefined) {
            changes.push({ field: `${path}.${key}`, op: 'unparsable', normalizer: n });
            break;
          }
          if (after !== before) {
            obj[key] = after;
            changes.push({ field: `${path}.${key}`, op: 'normalize', normalizer: n });
          }
        }
      }
    }
  }
}

/** A normalized value, the value itself when the normalizer does not apply to its type, or undefined when it cannot be parsed. */
export function normalize(value: unknown, n: Normalizer, region?: CountryCode): unknown {
  switch (n) {
    case 'trim':
      return typeof value === 'string' ? value.trim() : value;
    case 'lowercase':
      return typeof value === 'string' ? value.toLowerCase() : value;
    case 'email':
      return typeof value === 'string' ? value.trim().toLowerCase() : value;
    case 'e164': {
      if (typeof value !== 'string' && typeof value !== 'number') return value;
      const text = String(value).trim();
      const phone = parsePhoneNumberFromString(text.startsWith('00') ? `+${text.slice(2)}` : text, region);
      return phone?.isValid() ? phone.number : undefined;
    }
    case 'iso_date': {
      let ms: number;
      if (typeof value === 'number') ms = Math.abs(value) < 1e11 ? value * 1000 : value;
      else if (typeof value === 'string') ms = /^\d+$/.test(value.trim()) ? Number(value) : Date.parse(value);
      else return value;
      if (typeof value === 'string' && /^\d+$/.test(value.trim()) && Math.abs(ms) < 1e11) ms *= 1000;
      if (!Number.isFinite(ms) || Math.abs(ms) > 8.64e15) return undefined;
      const iso = new Date(ms).toISOString();
      // Date.parse rolls 2024-02-30 over to March: a written calendar date must survive as it is.
      const ymd = typeof value === 'string' ? /^(\d{4}-\d{2}-\d{2})(?!\d)/.exec(value.trim()) : null;
      if (ymd && !/[T ]\d{2}:\d{2}.*[+-]\d{2}:?\d{2}$/.test(value as string) && iso.slice(0, 10) !== ymd[1]) {
        return undefined;
      }
      return iso;
    }
  }
}
