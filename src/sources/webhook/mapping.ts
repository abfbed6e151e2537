import { toCurrencyUnits } from './currency.js';
import { compilePath, compileTemplate, type PathInput } from './json-path.js';
import type { MappedValue, MappingRule } from './spec.js';

/** What the rules made of one payload. No I/O: the routes store the events. */
export type MapOutcome =
  | { kind: 'events'; events: Record<string, unknown>[] }
  /** A rule with `ignore: true` matched: acknowledge, store nothing. */
  | { kind: 'ignored' }
  /** No rule matched. */
  | { kind: 'unmatched' }
  | { kind: 'failed'; code: string; reason: string };

/** A payload, its headers and what the routes know of the request. */
export interface MappingInput extends PathInput {
  /** The vendor's delivery id: the event's messageId. */
  deliveryId: string;
}

export type Mapper = (input: MappingInput) => MapOutcome;

type Getter = (input: PathInput) => unknown;

/** A value's getter: the first present path wins; `{ path, currency }` converts minor units. */
function compileValue(v: MappedValue): Getter {
  if (typeof v === 'string') return compilePath(v);
  if (Array.isArray(v)) return firstOf(v.map(compilePath));
  if ('value' in v) {
    const value = v.value;
    return () => value;
  }
  const amount = typeof v.path === 'string' ? compilePath(v.path) : firstOf(v.path.map(compilePath));
  if (v.currency === undefined) return amount;
  const currency = compilePath(v.currency);
  return (input) => {
    const a = amount(input);
    return a === undefined || a === null ? a : toCurrencyUnits(a, currency(input));
  };
}

function firstOf(getters: Getter[]): Getter {
  return (input) => {
    for (const g of getters) {
      const v = g(input);
      if (v !== undefined && v !== null && v !== '') return v;
    }
    return undefined;
  };
}

/** A `when` condition: path equals the value (or one of the list); `"abc*"` matches a prefix. */
function compileCondition(path: string, expected: unknown): (input: PathInput) => boolean {
  const get = compilePath(path);
  const options = (Array.isArray(expected) ? expected : [expected]) as (string | number | boolean)[];
  const tests = options.map((o) => {
    if (typeof o === 'string' && o.endsWith('*')) {
      const prefix = o.slice(0, -1);
      return (v: unknown) => typeof v === 'string' && v.startsWith(prefix);
    }
    return (v: unknown) => v === o;
  });
  return (input) => {
    const v = get(input);
    return tests.some((t) => t(v));
  };
}

/** An id field: a string or a finite number, as text; anything else is absent. */
function idText(v: unknown): string | undefined {
  if (typeof v === 'string') return v === '' ? undefined : v;
  if (typeof v === 'number' && Number.isFinite(v)) return String(v);
  return undefined;
}

/** Unix seconds (below 10^11) or milliseconds, or text, as the event's timestamp. */
function timestampOf(v: unknown): string | undefined {
  if (typeof v === 'string' && v !== '') {
    if (/^\d{1,15}$/.test(v)) return timestampOf(Number(v));
    return v;
  }
  if (typeof v !== 'number' || !Number.isFinite(v)) return undefined;
  const ms = Math.abs(v) < 1e11 ? v * 1000 : v;
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? undefined : d.toISOString();
}

function compileRecord(rec: Record<string, MappedValue> | undefined): [string, Getter][] {
  return Object.entries(rec ?? {}).map(([k, v]) => [k, compileValue(v)]);
}

/** Own keys only: a key named `__proto__` in a rule stays a plain key. */
function collect(fields: [string, Getter][], input: PathInput): Record<string, unknown> | undefined {
  if (fields.length === 0) return undefined;
  const out: Record<string, unknown> = {};
  for (const [k, get] of fields) {
    const v = get(input);
    if (v !== undefined)
      Object.defineProperty(out, k, { value: v, enumerable: true, writable: true, configurable: true });
  }
  return out;
}

/** One rule, compiled: the event it makes of a payload it matches. */
function compileRule(rule: MappingRule, index: number) {
  const conditions = Object.entries(rule.when ?? {}).map(([p, v]) => compileCondition(p, v));
  const event = rule.event !== undefined ? compileTemplate(rule.event) : undefined;
  const name = rule.name !== undefined ? compileTemplate(rule.name) : undefined;
  const ids = {
    userId: rule.userId && compileValue(rule.userId),
    anonymousId: rule.anonymousId && compileValue(rule.anonymousId),
    groupId: rule.groupId && compileValue(rule.groupId),
  };
  const email = rule.email && compileValue(rule.email);
  const timestamp = rule.timestamp && compileValue(rule.timestamp);
  const externalIds = compileRecord(rule.externalIds);
  const traits = compileRecord(rule.traits);
  const properties = compileRecord(rule.properties);

  const matches = (input: PathInput) => conditions.every((c) => c(input));
  const build = (input: MappingInput): MapOutcome => {
    if (rule.ignore) return { kind: 'ignored' };
    const out: Record<string, unknown> = { type: rule.type, messageId: input.deliveryId };
    if (event) {
      const e = event(input);
      if (e === '')
        return {
          kind: 'failed',
          code: 'TRIB_ERR_WEBHOOK_MAPPING_INVALID',
          reason: `rules[${index}]: the event name "${rule.event}" is empty for this payload`,
        };
      out.event = e;
    }
    if (name) {
      const n = name(input);
      if (n !== '') out.name = n;
    }
    for (const [k, get] of Object.entries(ids)) {
      const v = get ? idText(get(input)) : undefined;
      if (v !== undefined) out[k] = v;
    }
    const ts = timestamp ? timestampOf(timestamp(input)) : undefined;
    if (ts !== undefined) out.timestamp = ts;
    const t = collect(traits, input) ?? {};
    const p = collect(properties, input);
    const context: Record<string, unknown> = {};
    const mail = email ? email(input) : undefined;
    if (typeof mail === 'string' && mail !== '') {
      if (rule.type === 'identify' || rule.type === 'group') t.email ??= mail;
      else context.traits = { email: mail };
    }
    const x: { id: string; type: string; collection: string; encoding: string }[] = [];
    for (const [type, get] of externalIds) {
      const id = idText(get(input));
      if (id !== undefined) x.push({ id, type, collection: 'users', encoding: 'none' });
    }
    if (x.length > 0) context.externalIds = x;
    if (rule.type === 'identify' || rule.type === 'group') {
      if (Object.keys(t).length > 0) out.traits = t;
    } else if (Object.keys(t).length > 0) {
      context.traits = { ...t, ...(context.traits as object | undefined) };
    }
    if (p !== undefined && rule.type !== 'identify') out.properties = p;
    if (Object.keys(context).length > 0) out.context = context;
    return { kind: 'events', events: [out] };
  };
  return { matches, build };
}

/**
 * Compiles rules, tried in order: the first whose `when` matches makes the event (or, with
 * `ignore`, nothing). The event's messageId is the delivery id, so a redelivery is the same
 * event. Email goes to the traits of identify and group, else to `context.traits.email`;
 * external ids to `context.externalIds`; traits of a track go to `context.traits`.
 *
 * @example
 * compileMapping([{ when: { type: 'charge.*' }, type: 'track', event: '{type}',
 *   anonymousId: 'data.object.customer',
 *   properties: { amount: { path: 'data.object.amount', currency: 'data.object.currency' } } }])
 */
export function compileMapping(rules: readonly MappingRule[]): Mapper {
  const compiled = rules.map(compileRule);
  return (input) => {
    for (const r of compiled) if (r.matches(input)) return r.build(input);
    return { kind: 'unmatched' };
  };
}
