import { promisify } from 'node:util';
import { gunzip, inflate } from 'node:zlib';
import { TributaryError } from '../errors.js';
import { mayHoldUnstorable, toStorableTree } from '../spec/well-formed.js';

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
 * key becomes U+FFFD (see {@link toStorableTree}).
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
  if (mayHoldUnstorable(text)) toStorableTree(value);
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
