import { type CountryCode, parsePhoneNumberFromString } from 'libphonenumber-js';
import type {
  BlockedValue,
  ComputedTrait,
  IdentityConfig,
  TraitRuleName,
} from '../config/identity-schema.js';
import { isPlainObject, type JsonObject } from '../spec/event.js';

/** One identifier as the graph holds it: a type and a normalised value. */
export interface Identifier {
  type: string;
  value: string;
  /** `type:value`, the graph's key. */
  key: string;
}

/** An identifier that was not used, and why (`blocked_value`, `invalid`, `limit:user_id`, …). */
export interface LeftOut {
  identifier: string;
  reason: string;
}

export function identifierKey(type: string, value: string): string {
  return `${type}:${value}`;
}

/** Parses `type:value` (the value may itself hold colons). */
export function parseIdentifierKey(text: string): Identifier | undefined {
  const i = text.indexOf(':');
  if (i <= 0 || i === text.length - 1) return undefined;
  const type = text.slice(0, i);
  const value = text.slice(i + 1);
  return { type, value, key: text };
}

/** The resolution settings, compiled once from `identity:` in the configuration. */
export interface IdentityRules {
  limit(type: string): number;
  /** Window of the limit in ms, if any. */
  within(type: string): number | undefined;
  /** 1 is highest. */
  priority(type: string): number;
  isBlocked(type: string, value: string): boolean;
  paths: readonly { source?: string; path: string[]; type: string }[];
  phoneDefaultCountry?: CountryCode;
  traitRule(name: string): TraitRuleName;
  /** Lower is more trusted; sources not listed come last. */
  sourceRank(sourceId: string): number;
  computed: readonly ComputedTrait[];
}

/** Segment's defaults: `user_id` 1, every other type the default limit; user_id, then email, then the rest. */
export function compileRules(config: IdentityConfig): IdentityRules {
  const exact = new Set<string>();
  const patterns: { re: RegExp; types?: Set<string> }[] = [];
  for (const b of config.blockedValues as BlockedValue[]) {
    if (typeof b === 'string') exact.add(b.trim().toLowerCase());
    else patterns.push({ re: new RegExp(b.regex, 'i'), types: b.types ? new Set(b.types) : undefined });
  }
  const ranks = new Map(config.traits.sourcePriority.map((s, i) => [s, i]));
  const defaultPriority: Record<string, number> = { user_id: 1, email: 2 };
  return {
    limit: (type) => config.identifiers[type]?.limit ?? (type === 'user_id' ? 1 : config.defaultLimit),
    within: (type) => config.identifiers[type]?.within,
    priority: (type) => config.identifiers[type]?.priority ?? defaultPriority[type] ?? 3,
    isBlocked(type, value) {
      if (exact.has(value.toLowerCase())) return true;
      for (const p of patterns) if ((!p.types || p.types.has(type)) && p.re.test(value)) return true;
      return false;
    },
    paths: config.paths.map((p) => ({ source: p.source, path: p.path.split('.'), type: p.type })),
    phoneDefaultCountry: config.phoneDefaultCountry as CountryCode | undefined,
    traitRule: (name) => config.traits.rules[name] ?? config.traits.default,
    sourceRank: (s) => ranks.get(s) ?? Number.MAX_SAFE_INTEGER,
    computed: config.computed,
  };
}

/** A value at a dotted path of an object. */
export function getPath(obj: unknown, path: readonly string[]): unknown {
  let v: unknown = obj;
  for (const p of path) {
    if (!isPlainObject(v)) return undefined;
    v = v[p];
  }
  return v;
}

/** A value the privacy policy hashed (`privacy.policy.hash`): already in normalised form. */
const HASHED = /^sha256:[0-9a-f]{64}$/;

/**
 * The normalised form of a value of the given type, or a reason it is not an identifier.
 * Every value is trimmed; email is lowercased; phone becomes E.164 (`+14155550100`). An email
 * or phone the privacy policy hashed (`sha256:<hex>`, of the same normalised form) is kept
 * as it is, so hashed identifiers still join profiles.
 */
/**
 * Longest identifier value kept, in UTF-16 code units: at most 2,048 bytes of UTF-8 with its
 * type, within PostgreSQL's index entry limit. A longer one is left out (`too_long`).
 */
export const MAX_IDENTIFIER_LENGTH = 512;

export function normalizeIdentifier(
  type: string,
  raw: unknown,
  rules: Pick<IdentityRules, 'isBlocked' | 'phoneDefaultCountry'>,
): { value: string } | { reason: string; value: string } {
  if (typeof raw !== 'string' && typeof raw !== 'number') return { reason: 'invalid', value: String(raw) };
  let value = String(raw).trim();
  // Identifiers are keys of the identity store's indexes; PostgreSQL refuses an index entry
  // past a third of a page (2,704 bytes), which would stop resolution of every later event.
  if (value.length > MAX_IDENTIFIER_LENGTH) return { reason: 'too_long', value: `${value.slice(0, 64)}…` };
  if (type === 'email') {
    value = value.toLowerCase();
    if (rules.isBlocked(type, value)) return { reason: 'blocked_value', value };
    if (!/^[^\s@]+@[^\s@]+$/.test(value) && !HASHED.test(value)) return { reason: 'invalid', value };
    return { value };
  }
  if (type === 'phone') {
    if (rules.isBlocked(type, value)) return { reason: 'blocked_value', value };
    if (HASHED.test(value)) return { value };
    const parsed = parsePhoneNumberFromString(value, rules.phoneDefaultCountry);
    if (!parsed?.isPossible()) return { reason: 'invalid', value };
    return { value: parsed.number };
  }
  if (rules.isBlocked(type, value)) return { reason: 'blocked_value', value };
  return { value };
}

/** The identifier type an `externalIds[].type` names (`ios.idfa` → `ios_idfa`). */
export function externalIdType(type: string): string {
  const t = type
    .trim()
    .toLowerCase()
    .replace(/[^a-z0-9_]+/g, '_')
    .replace(/^_+|_+$/g, '');
  if (t === 'user_id' || t === 'userid') return 'user_id';
  return /^[a-z]/.test(t) ? t.slice(0, 63) : `x_${t}`.slice(0, 63);
}

/**
 * Every identifier an event carries: userId, anonymousId (and an alias's previousId), traits and context.traits email and
 * phone, context.device.id, context.externalIds, and the source's configured paths; normalised,
 * deduplicated, with the values that are not identifiers (blocked, invalid) set aside.
 */
export function extractIdentifiers(
  event: JsonObject,
  sourceId: string,
  rules: IdentityRules,
): { identifiers: Identifier[]; leftOut: LeftOut[] } {
  // Runs once per event: no closures, no sets (an event carries a handful of identifiers).
  const out: Extracted = { identifiers: [], leftOut: [] };
  add(out, rules, 'user_id', event.userId);
  add(out, rules, 'anonymous_id', event.anonymousId);
  // analytics.js sends the anonymous id as an alias's previousId.
  if (event.type === 'alias') add(out, rules, 'anonymous_id', event.previousId);
  const context = isPlainObject(event.context) ? event.context : undefined;
  if (event.type === 'identify' && isPlainObject(event.traits)) {
    add(out, rules, 'email', event.traits.email);
    add(out, rules, 'phone', event.traits.phone);
  }
  if (context !== undefined) {
    if (isPlainObject(context.traits)) {
      add(out, rules, 'email', context.traits.email);
      add(out, rules, 'phone', context.traits.phone);
    }
    if (isPlainObject(context.device)) add(out, rules, 'device_id', context.device.id);
    if (Array.isArray(context.externalIds)) {
      for (const x of context.externalIds) {
        if (isPlainObject(x) && typeof x.type === 'string' && x.type.trim() !== '')
          add(out, rules, externalIdType(x.type), x.id);
      }
    }
  }
  for (const p of rules.paths) {
    if (p.source === undefined || p.source === sourceId) add(out, rules, p.type, getPath(event, p.path));
  }
  return out;
}

interface Extracted {
  identifiers: Identifier[];
  leftOut: LeftOut[];
}

function add(out: Extracted, rules: IdentityRules, type: string, raw: unknown): void {
  if (raw === undefined || raw === null) return;
  const n = normalizeIdentifier(type, raw, rules);
  const key = identifierKey(type, n.value);
  for (const i of out.identifiers) if (i.key === key) return;
  for (const l of out.leftOut) if (l.identifier === key) return;
  if ('reason' in n) out.leftOut.push({ identifier: key, reason: n.reason });
  else out.identifiers.push({ type, value: n.value, key });
}
