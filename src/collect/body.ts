import { promisify } from 'node:util';
import { gunzip, inflate } from 'node:zlib';
import { TributaryError } from '../errors.js';

const gunzipAsync = promisify(gunzip);
const inflateAsync = promisify(inflate);

/** Limits on what one request may carry, counted on decoded bytes. */
export interface BodyLimits {
  /** Largest decoded body, bytes. Default 500 KB for batches, 32 KB for single events. */
  maxBytes: number;
  /** Deepest JSON nesting accepted (the body itself is level 1). Default 64. */
  maxDepth: number;
}

export const BATCH_MAX_BYTES = 500 * 1024;
export const EVENT_MAX_BYTES = 32 * 1024;
export const BATCH_MAX_EVENTS = 2500;
export const MAX_DEPTH = 64;

/**
 * Decodes a request body (identity, gzip or deflate), enforcing the byte limit on the
 * decoded size so a small compressed body cannot expand past it. Decompression runs on
 * the thread pool.
 */
export async function decodeBody(
  raw: Buffer,
  encoding: string | undefined,
  maxBytes: number,
): Promise<Buffer> {
  const enc = (encoding ?? 'identity').trim().toLowerCase();
  if (enc === '' || enc === 'identity') {
    if (raw.length > maxBytes) throw new TributaryError('TRIB_ERR_COLLECT_BODY_TOO_LARGE', [maxBytes]);
    return raw;
  }
  if (enc !== 'gzip' && enc !== 'x-gzip' && enc !== 'deflate') {
    throw new TributaryError('TRIB_ERR_COLLECT_UNSUPPORTED_ENCODING', [enc]);
  }
  try {
    const opts = { maxOutputLength: maxBytes };
    return enc === 'deflate' ? await inflateAsync(raw, opts) : await gunzipAsync(raw, opts);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE' || err instanceof RangeError) {
      throw new TributaryError('TRIB_ERR_COLLECT_BODY_TOO_LARGE', [maxBytes], { cause: err });
    }
    throw new TributaryError('TRIB_ERR_COLLECT_BAD_ENCODING', [(err as Error).message], { cause: err });
  }
}

/**
 * Parses JSON whatever the Content-Type said. `__proto__` keys are removed and
 * `constructor.prototype` pairs are dropped, so no key can reach a prototype; nesting
 * deeper than `maxDepth` is refused; a lone UTF-16 surrogate or a U+0000 in a string or a
 * key becomes U+FFFD (see {@link toWellFormedTree}).
 */
export function parseJsonBody(decoded: Buffer, maxDepth: number): unknown {
  let text = decoded.toString('utf8');
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new TributaryError('TRIB_ERR_COLLECT_INVALID_JSON', [(err as Error).message], { cause: err });
  }
  if (sanitizeTree(value, 1, maxDepth)) throw new TributaryError('TRIB_ERR_COLLECT_TOO_DEEP', [maxDepth]);
  // A surrogate or a NUL reaches a parsed string only through a `\uD8xx`-`\uDFxx` or `\u0000`
  // escape: bytes of a surrogate are not UTF-8 (the decoder replaced them already) and JSON
  // refuses a raw control character in a string. Most bodies have no `\u` at all: a substring
  // search, far cheaper than the regex, rules that out first.
  if (text.includes('\\u') && UNSTORABLE_ESCAPE.test(text)) toWellFormedTree(value);
  return value;
}

/** A JSON escape of a UTF-16 surrogate (high or low, maybe half of a valid pair) or of U+0000. */
const UNSTORABLE_ESCAPE = /\\u(?:[dD][89a-fA-F]|0000)/;
/** A surrogate that is not half of a pair, or U+0000. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: U+0000 is what is looked for
const UNSTORABLE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]|\u0000/;
const UNSTORABLE_ALL = new RegExp(UNSTORABLE.source, 'g');

/**
 * The text with each lone surrogate (as `String.prototype.toWellFormed` does) and each U+0000
 * replaced by U+FFFD.
 */
export function wellFormed(text: string): string {
  return UNSTORABLE.test(text) ? text.replace(UNSTORABLE_ALL, '\uFFFD') : text;
}

/**
 * Replaces, in place, every lone surrogate and every U+0000 in the strings and keys of a parsed
 * JSON value by U+FFFD (what a UTF-8 decoder does with invalid bytes), so every string is one
 * DuckDB and PostgreSQL can store: their JSON parsers refuse a lone surrogate, PostgreSQL's
 * `jsonb` and text refuse U+0000, and one such event would otherwise stop a load. A key that becomes equal to a key already there is dropped (the
 * existing key keeps its value). Call after {@link sanitizeTree}, which bounds the depth.
 */
export function toWellFormedTree(value: unknown): unknown {
  if (typeof value === 'string') return wellFormed(value);
  if (typeof value !== 'object' || value === null) return value;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) value[i] = toWellFormedTree(value[i]);
    return value;
  }
  const obj = value as Record<string, unknown>;
  for (const key of Object.keys(obj)) {
    const item = toWellFormedTree(obj[key]);
    const fixed = wellFormed(key);
    if (fixed === key) {
      obj[key] = item;
    } else {
      delete obj[key];
      if (!Object.hasOwn(obj, fixed)) obj[fixed] = item;
    }
  }
  return value;
}

/**
 * One walk over a parsed JSON value (at nesting level `level`): removes every `__proto__` key
 * and every `constructor` key whose value holds a `prototype` key, and returns true when the
 * value nests deeper than `max` (stopping there). JSON.parse keeps such keys as plain own
 * properties, whatever escapes spelt them; they are dropped before any code could copy them
 * onto an object by assignment, which is where they would reach a prototype.
 */
export function sanitizeTree(value: unknown, level: number, max: number): boolean {
  if (typeof value !== 'object' || value === null) return false;
  if (level > max) return true;
  if (Array.isArray(value)) {
    for (const item of value) {
      if (typeof item === 'object' && item !== null && sanitizeTree(item, level + 1, max)) return true;
    }
    return false;
  }
  const obj = value as Record<string, unknown>;
  for (const key in obj) {
    const item = obj[key];
    if (key === '__proto__' || (key === 'constructor' && isPrototypeCarrier(item))) {
      delete obj[key];
      continue;
    }
    if (typeof item === 'object' && item !== null && sanitizeTree(item, level + 1, max)) return true;
  }
  return false;
}

function isPrototypeCarrier(value: unknown): boolean {
  return typeof value === 'object' && value !== null && Object.hasOwn(value, 'prototype');
}
