import { createHash } from 'node:crypto';

/** Longest identifier both engines keep whole (PostgreSQL's NAMEDATALEN − 1, in bytes). */
export const MAX_NAME_BYTES = 63;

/** Every name the sanitizer returns matches this. */
export const NAME_PATTERN = /^[a-z_][a-z0-9_]{0,62}$/;

/**
 * Reserved keywords of PostgreSQL (`pg_get_keywords()`, category R) and DuckDB
 * (`duckdb_keywords()`, category reserved). Identifiers are always quoted, so this is for
 * the analysts who write SQL by hand: a column they can name without quotes.
 */
const RESERVED = new Set(
  `all analyse analyze and any array as asc asymmetric authorization binary both case cast check collate
  collation column concurrently constraint create cross current_catalog current_date current_role
  current_schema current_time current_timestamp current_user default deferrable desc describe distinct do
  else end except false fetch for foreign freeze from full grant group having ilike in initially inner
  intersect into is isnull join lambda lateral leading left like limit localtime localtimestamp natural not
  notnull null offset on only or order outer overlaps pivot pivot_longer pivot_wider placing primary
  qualify references returning right select session_user show similar some summarize symmetric
  system_user table tablesample then to trailing true union unique unpivot user using variadic verbose
  when where window with`.split(/\s+/),
);

/** Whether `name` is a reserved word of PostgreSQL or DuckDB. */
export function isReservedWord(name: string): boolean {
  return RESERVED.has(name);
}

/**
 * Folds any string into a warehouse identifier: accents dropped, camelCase split, lowercase,
 * every run of other characters one `_`, no leading or trailing `_`, a `_` prefix before a
 * leading digit or a reserved word, at most 63 bytes. Different inputs may fold to the same
 * name; {@link NameRegistry} resolves those collisions.
 *
 * @example sanitizeName('Order Completed') // 'order_completed'
 * @example sanitizeName('productID') // 'product_id'
 * @example sanitizeName('2fa enabled') // '_2fa_enabled'
 */
export function sanitizeName(original: string): string {
  let s = original.normalize('NFKD').replace(/[\u0300-\u036f]/g, '');
  s = s.replace(/([a-z0-9])([A-Z])/g, '$1_$2').replace(/([A-Z]+)([A-Z][a-z])/g, '$1_$2');
  s = s
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '_')
    .replace(/^_+|_+$/g, '');
  if (s === '') return '_';
  if (/^[0-9]/.test(s) || RESERVED.has(s)) s = `_${s}`;
  return s.slice(0, MAX_NAME_BYTES);
}

/** Eight hex digits of a hash of `key`: the suffix that keeps colliding names apart. */
function shortHash(key: string): string {
  return createHash('sha256').update(key).digest('hex').slice(0, 8);
}

/**
 * The names given out within one scope (the columns of a table, the tables of a schema):
 * each original key gets one name, no two keys share one, and what was given is kept. A
 * name that is already taken, after folding or truncation, gets a hash suffix of the key.
 * Recorded assignments are loaded back with {@link NameRegistry.restore}, so names stay the
 * same across restarts.
 */
export class NameRegistry {
  private readonly byKey = new Map<string, string>();
  private readonly byName = new Map<string, string>();

  /** The name given to `key`, if any. */
  get(key: string): string | undefined {
    return this.byKey.get(key);
  }

  /** Whether `name` is taken in this scope. */
  taken(name: string): boolean {
    return this.byName.has(name);
  }

  get size(): number {
    return this.byKey.size;
  }

  /** Records an assignment made earlier (read back from the warehouse). */
  restore(key: string, name: string): void {
    this.byKey.set(key, name);
    this.byName.set(name, key);
  }

  /**
   * The name for `key`: its recorded one, else `base` (default `sanitizeName(key)`) when
   * free, else `base` shortened with a hash suffix of the key.
   */
  assign(key: string, base = sanitizeName(key)): string {
    const known = this.byKey.get(key);
    if (known !== undefined) return known;
    let name = base;
    for (let attempt = 0; this.byName.has(name); attempt++) {
      const suffix = shortHash(attempt === 0 ? key : `${key}\u0000${attempt}`);
      name = `${base.slice(0, MAX_NAME_BYTES - suffix.length - 1)}_${suffix}`;
    }
    this.restore(key, name);
    return name;
  }
}
