import { createHash } from 'node:crypto';
import { parsePhoneNumberFromString } from 'libphonenumber-js';
import type { PiiAction, PiiMatcher, PrivacyConfig } from '../../config/quality-schema.js';
import type { JsonObject } from '../../spec/event.js';
import { wordKey } from '../stages/mapping-stage.js';

export type PiiCategory = 'red' | 'yellow';

/** What the classifier found and did, for one field. Never holds the value. */
export interface PiiFinding {
  className: string;
  category: PiiCategory;
  action: PiiAction;
  /** Dotted path of the field, array indices as numbers (`properties.cards.0`). */
  path: string;
}

export interface PrivacyResult {
  /** Every field a class matched (allowed ones too). Empty for most events. */
  findings: PiiFinding[];
  /** True when a finding's action is `block`: the event must not be stored. */
  blocked: boolean;
}

interface ClassDef {
  name: string;
  category: PiiCategory;
  /** Normalised key names (lowercase, letters and digits only) that mean this class. */
  keys?: ReadonlySet<string>;
  keyRegex?: RegExp;
  value?: (s: string) => boolean;
}

/** Luhn checksum over the digits of a 13-19 digit card number written with optional spaces or dashes. */
export function isCardNumber(s: string): boolean {
  if (s.length < 13 || s.length > 23 || !isDigit(s.charCodeAt(0)) || !/^\d[\d -]+\d$/.test(s)) return false;
  const digits = s.replace(/[ -]/g, '');
  if (digits.length < 13 || digits.length > 19) return false;
  let sum = 0;
  for (let i = 0; i < digits.length; i++) {
    let d = digits.charCodeAt(digits.length - 1 - i) - 48;
    if (i % 2 === 1) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
  }
  return sum % 10 === 0;
}

/** US SSN as `AAA-GG-SSSS`, without the ranges never issued (000, 666, 9xx areas; 00 group; 0000 serial). */
export function isSsn(s: string): boolean {
  if (s.length !== 11 || s.charCodeAt(3) !== 45) return false;
  const m = /^(\d{3})-(\d{2})-(\d{4})$/.exec(s);
  if (!m) return false;
  const area = m[1]!;
  return area !== '000' && area !== '666' && area[0] !== '9' && m[2] !== '00' && m[3] !== '0000';
}

const EMAIL = /^[^\s@]{1,64}@[^\s@.]+(\.[^\s@.]+)+$/;
const PHONE = /^\+[1-9][\d ().-]{6,20}$/;
const IPV4 = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;
const IPV6 = /^[0-9a-f]{0,4}(:[0-9a-f]{0,4}){2,7}$/i;
/** Shapes of well-known credentials: Stripe, AWS access keys, GitHub, Slack, JWTs, PEM keys, bearer tokens. */
const SECRET =
  /^(sk_(live|test)_[A-Za-z0-9]{10,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|xox[abpr]-[A-Za-z0-9-]{10,}|eyJ[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]{8,}|-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*|Bearer\s+\S{16,})$/;

const keySet = (...keys: string[]) => new Set(keys);
const isDigit = (c: number) => c >= 48 && c <= 57;
/** First characters of the credential shapes SECRET knows. */
const SECRET_FIRST = new Set(['s', 'A', 'g', 'x', 'e', '-', 'B']);

/** The built-in classes, red first so a field matching two classes gets the stricter one. */
const BUILT_IN: readonly ClassDef[] = [
  {
    name: 'card_number',
    category: 'red',
    keys: keySet('cardnumber', 'ccnumber', 'creditcard', 'creditcardnumber', 'pan', 'cardno'),
    value: isCardNumber,
  },
  { name: 'ssn', category: 'red', keys: keySet('ssn', 'socialsecuritynumber', 'nationalid'), value: isSsn },
  { name: 'password', category: 'red', keys: keySet('password', 'passwd', 'pwd', 'passphrase', 'pin') },
  {
    name: 'secret',
    category: 'red',
    keys: keySet(
      'secret',
      'clientsecret',
      'token',
      'accesstoken',
      'refreshtoken',
      'authtoken',
      'apikey',
      'apisecret',
      'privatekey',
      'authorization',
      'sessiontoken',
    ),
    value: (s) => s.length >= 16 && s.length <= 8192 && SECRET_FIRST.has(s[0]!) && SECRET.test(s),
  },
  {
    name: 'email',
    category: 'yellow',
    keys: keySet('email', 'emailaddress', 'mail'),
    value: (s) => s.length <= 320 && s.includes('@') && EMAIL.test(s),
  },
  {
    name: 'phone',
    category: 'yellow',
    keys: keySet('phone', 'phonenumber', 'mobile', 'mobilephone', 'tel', 'telephone', 'cellphone'),
    value: (s) => s.length <= 28 && s.charCodeAt(0) === 43 && PHONE.test(s),
  },
  {
    name: 'address',
    category: 'yellow',
    keys: keySet(
      'address',
      'streetaddress',
      'street',
      'addressline1',
      'addressline2',
      'postalcode',
      'zip',
      'zipcode',
    ),
  },
  {
    name: 'name',
    category: 'yellow',
    keys: keySet('firstname', 'lastname', 'fullname', 'surname', 'givenname'),
  },
  {
    name: 'ip',
    category: 'yellow',
    keys: keySet('ip', 'ipaddress'),
    value: (s) =>
      s.length <= 45 && ((isDigit(s.charCodeAt(0)) && IPV4.test(s)) || (s.includes(':') && IPV6.test(s))),
  },
];

/**
 * Top-level fields never classified: the ids and timestamps the pipeline needs as they are,
 * and `_tributary`, which only the server writes (collection removes a client's). Everything
 * else is, `integrations`, `channel` and `version` included. The list is in
 * docs/configuration.md; keep the two together.
 */
export const PRIVACY_EXEMPT_FIELDS: ReadonlySet<string> = new Set([
  'type',
  'messageId',
  'event',
  'name',
  'category',
  'userId',
  'anonymousId',
  'groupId',
  'previousId',
  'timestamp',
  'originalTimestamp',
  'sentAt',
  'receivedAt',
  '_tributary',
]);

const DEFAULT_ACTION: Record<PiiCategory, PiiAction> = { red: 'drop', yellow: 'allow' };
/** How much each action protects a value, least first. */
const ACTION_RANK: Record<PiiAction, number> = { allow: 0, mask: 1, hash: 2, drop: 3, block: 4 };

const normaliseKey = (key: string) => key.toLowerCase().replace(/[^a-z0-9]/g, '');
/** Most distinct keys whose class is remembered (keys repeat from event to event). */
const KEY_CACHE_MAX = 10_000;

/**
 * Classifies the keys and values of an event (properties, traits, context, any custom
 * top-level field; never the envelope's identifiers) and applies the source's policy in
 * place: allow, mask, hash (SHA-256 of salt and value), drop the field, or block the event.
 * A field whose value is blocked is removed too, so what is left may be stored as the
 * blocked event's record. Cheap enough for the collection path: one pass, value patterns
 * only tried on strings of plausible length.
 */
export class PiiClassifier {
  private readonly classes: readonly ClassDef[];
  private readonly byKey = new Map<string, ClassDef>();
  private readonly keyRegexClasses: readonly ClassDef[];
  private readonly valueClasses: readonly ClassDef[];
  private readonly actions: ReadonlyMap<string, PiiAction>;
  /** Alias (as `wordKey` gives it) → the class of the canonical key the mapping renames it to. */
  private readonly aliasKeys = new Map<string, ClassDef>();
  /** Key → class by key (null: none), so a key's name is normalised and matched once. */
  private keyClasses = new Map<string, ClassDef | null>();

  /**
   * @param salt workspace secret mixed into every hash, so hashes cannot be reversed by a dictionary.
   * @param aliases the source's `mapping.fields` (canonical key → keys that mean it): a key the
   * mapping will store under a canonical name is classified as that name, so the policy holds
   * for the name the value ends up under, and before anything is written. Default: none.
   * @example new PiiClassifier(privacy, salt, { email: ['contact_email'] }) // contact_email is an email
   */
  constructor(
    config: PrivacyConfig,
    private readonly salt: string,
    aliases: Readonly<Record<string, readonly string[]>> = {},
  ) {
    const custom = config.matchers.map(toClassDef);
    this.classes = [...BUILT_IN, ...custom];
    for (const c of BUILT_IN) for (const k of c.keys ?? []) this.byKey.set(k, c);
    this.keyRegexClasses = custom.filter((c) => c.keyRegex);
    for (const [canonical, names] of Object.entries(aliases)) {
      const cls = this.keyClass(canonical);
      if (cls === null) continue;
      // Compared as the mapping compares them (by words), so this holds for exactly the keys
      // the mapping renames, in whatever spelling.
      for (const name of names) this.aliasKeys.set(wordKey(name), cls);
    }
    this.valueClasses = this.classes.filter((c) => c.value);
    const chosen = new Map<string, PiiAction>();
    for (const [action, names] of Object.entries(config.policy)) {
      for (const name of names ?? []) chosen.set(name, action as PiiAction);
    }
    const actions = new Map<string, PiiAction>();
    for (const c of this.classes) {
      actions.set(c.name, chosen.get(c.name) ?? chosen.get(c.category) ?? DEFAULT_ACTION[c.category]);
    }
    this.actions = actions;
  }

  /** The action the policy takes for a class. */
  actionFor(className: string): PiiAction | undefined {
    return this.actions.get(className);
  }

  apply(event: JsonObject): PrivacyResult {
    const findings: PiiFinding[] = [];
    const path: (string | number)[] = [];
    for (const key in event) {
      if (PRIVACY_EXEMPT_FIELDS.has(key)) continue;
      this.visit(event, key, path, findings);
    }
    return { findings, blocked: findings.some((f) => f.action === 'block') };
  }

  /**
   * Of two classes a key has (its own name's, and the canonical name's it is mapped to), the
   * one whose action protects more: the value is in the log under the one and in the tables
   * under the other.
   */
  private stricter(a: ClassDef, b: ClassDef): ClassDef {
    return ACTION_RANK[this.actions.get(a.name)!] >= ACTION_RANK[this.actions.get(b.name)!] ? a : b;
  }

  /** The class a key's own name gives, built-in names first (null: none). */
  private keyClass(key: string): ClassDef | null {
    return (
      this.byKey.get(normaliseKey(key)) ?? this.keyRegexClasses.find((c) => c.keyRegex!.test(key)) ?? null
    );
  }

  private classify(key: string | undefined, value: unknown): ClassDef | undefined {
    if (key !== undefined) {
      let byKey = this.keyClasses.get(key);
      if (byKey === undefined) {
        const own = this.keyClass(key);
        const alias = this.aliasKeys.size > 0 ? this.aliasKeys.get(wordKey(key)) : undefined;
        byKey = alias === undefined || alias === own ? own : own === null ? alias : this.stricter(alias, own);
        if (this.keyClasses.size >= KEY_CACHE_MAX) this.keyClasses = new Map();
        this.keyClasses.set(key, byKey);
      }
      if (byKey) {
        if (this.actions.get(byKey.name) !== 'allow') return byKey;
        // An allowed key class does not vouch for the value: `contact_email` mapped onto an
        // allowed class may still hold an email the policy hashes.
        const byValue = this.valueClass(value);
        return byValue === undefined ? byKey : this.stricter(byKey, byValue);
      }
    }
    return this.valueClass(value);
  }

  /** The first class whose value pattern the value (trimmed) matches. */
  private valueClass(value: unknown): ClassDef | undefined {
    let s: string | undefined;
    if (typeof value === 'string') s = trimmed(value);
    else if (typeof value === 'number' && Number.isSafeInteger(value) && value > 1e12) s = String(value);
    if (s === undefined || s.length < 3) return undefined;
    for (const c of this.valueClasses) if (c.value!(s)) return c;
    return undefined;
  }

  /**
   * Classifies `parent[key]`, acts on it, and walks into it when it is kept as it is. The
   * path is a stack of keys, joined only for a finding (most fields have none).
   */
  private visit(
    parent: JsonObject | unknown[],
    key: string | number,
    path: (string | number)[],
    out: PiiFinding[],
  ): void {
    const value = (parent as Record<string | number, unknown>)[key];
    path.push(key);
    const cls = this.classify(typeof key === 'string' ? key : undefined, value);
    if (cls) {
      const action = this.actions.get(cls.name)!;
      out.push({ className: cls.name, category: cls.category, action, path: path.join('.') });
      if (action !== 'allow') {
        this.act(parent, key, value, action, cls.name);
        path.pop();
        return;
      }
    }
    if (Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) this.visit(value, i, path, out);
    } else if (typeof value === 'object' && value !== null) {
      for (const k in value) this.visit(value as JsonObject, k, path, out);
    }
    path.pop();
  }

  private act(
    parent: JsonObject | unknown[],
    key: string | number,
    value: unknown,
    action: PiiAction,
    cls: string,
  ) {
    const target = parent as Record<string | number, unknown>;
    if (action === 'drop' || action === 'block') {
      if (Array.isArray(parent)) target[key] = null;
      else delete target[key];
    } else if (action === 'mask') {
      target[key] = mask(value, cls);
    } else if (action === 'hash') {
      target[key] = this.hash(value, cls);
    }
  }

  private hash(value: unknown, cls: string): string {
    // The forms identity resolution normalises to (identity/identifiers.ts), so a hashed email
    // or phone is the same identifier whatever spaces, case or spelling the client sent.
    let text = typeof value === 'string' ? value.trim() : JSON.stringify(value);
    if (cls === 'email') text = text.toLowerCase();
    else if (cls === 'phone') {
      const phone = parsePhoneNumberFromString(text);
      if (phone?.isPossible()) text = phone.number;
    }
    return `sha256:${createHash('sha256').update(this.salt).update('\u0000').update(text).digest('hex')}`;
  }
}

/**
 * A string without surrounding white space; the string itself (no copy) when it has none,
 * which a look at its first and last characters tells for most values.
 */
function trimmed(s: string): string {
  if (s.length === 0) return s;
  const first = s.charCodeAt(0);
  const last = s.charCodeAt(s.length - 1);
  return first > 32 && first < 127 && last > 32 && last < 127 ? s : s.trim();
}

/** Masks a value (trimmed): emails keep their first letter and domain, long values their last 4 characters. */
export function mask(value: unknown, cls: string): string {
  const text = typeof value === 'string' ? trimmed(value) : typeof value === 'number' ? String(value) : '';
  if (cls === 'email') {
    const at = text.lastIndexOf('@');
    if (at > 0) return `${text[0]}***${text.slice(at)}`;
  }
  // Code points, not UTF-16 units, when the text has surrogate pairs (emoji, rare scripts).
  if (/[\uD800-\uDFFF]/.test(text)) {
    const chars = [...text];
    return chars.length >= 10 ? `${'*'.repeat(chars.length - 4)}${chars.slice(-4).join('')}` : '****';
  }
  return text.length >= 10 ? `${'*'.repeat(text.length - 4)}${text.slice(-4)}` : '****';
}

function toClassDef(m: PiiMatcher): ClassDef {
  const value = m.value === undefined ? undefined : new RegExp(m.value);
  return {
    name: m.name,
    category: m.category,
    keyRegex: m.key === undefined ? undefined : new RegExp(m.key, 'i'),
    value: value && ((s: string) => s.length <= 8192 && value.test(s)),
  };
}

/**
 * Whether a warehouse column's name says it holds personal data: the name, or its last
 * `_`-separated parts (`context_traits_email`, `first_name`, `context_ip`), is a key the
 * built-in classes know (email, phone, address, name, ip, and the red ones), or it names a
 * person's id (`user_id`, `anonymous_id`). Used to mask columns for analysts and viewers.
 */
export function isPersonalColumnName(column: string): boolean {
  const parts = column
    .toLowerCase()
    .split('_')
    .filter((p) => p !== '');
  if (parts.length === 0) return false;
  const last2 = parts.slice(-2).join('');
  if (last2 === 'userid' || last2 === 'anonymousid') return true;
  for (let i = 0; i < parts.length; i++) {
    const key = normaliseKey(parts.slice(i).join(''));
    if (BUILT_IN.some((c) => c.keys?.has(key))) return true;
  }
  return false;
}
