/**
 * Text every store can hold. JavaScript strings may hold a lone UTF-16 surrogate, which
 * DuckDB's and PostgreSQL's JSON parsers refuse, and U+0000, which PostgreSQL's `jsonb` and
 * text refuse; one such value would stop a whole load. Both become U+FFFD, what a UTF-8
 * decoder does with bytes it cannot read. Used at collection, by the loader and by the
 * destinations, so every path repairs a value the same way.
 */

/** A surrogate that is not half of a pair, or U+0000 (UTF-16 code units: no `u` flag). */
// biome-ignore lint/suspicious/noControlCharactersInRegex: U+0000 is what is looked for
const UNSTORABLE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]|\u0000/;
const UNSTORABLE_ALL = new RegExp(UNSTORABLE.source, 'g');
/** A JSON escape of a UTF-16 surrogate (high or low, maybe half of a valid pair) or of U+0000. */
const UNSTORABLE_ESCAPE = /\\u(?:[dD][89a-fA-F]|0000)/;

/** The text with each lone surrogate and each U+0000 replaced by U+FFFD. */
export function storableText(text: string): string {
  return UNSTORABLE.test(text) ? text.replace(UNSTORABLE_ALL, '\uFFFD') : text;
}

/**
 * Whether JSON text may hold, once parsed, a string {@link storableText} would change: a
 * surrogate or a U+0000 reaches a parsed string only through a `\u` escape (raw surrogate
 * bytes are not UTF-8, and JSON refuses a raw control character). A substring search first,
 * far cheaper than the regex, since most texts have no `\u` at all.
 */
export function mayHoldUnstorable(json: string): boolean {
  return json.includes('\\u') && UNSTORABLE_ESCAPE.test(json);
}

/**
 * Applies {@link storableText}, in place, to every string and key of a parsed JSON value. A key
 * that becomes equal to a key already there is dropped (the existing key keeps its value).
 * The value must be bounded in depth (a parsed request body is, by `sanitizeTree`).
 */
export function toStorableTree(value: unknown): unknown {
  if (typeof value === 'string') return storableText(value);
  if (typeof value !== 'object' || value === null) return value;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) value[i] = toStorableTree(value[i]);
    return value;
  }
  const obj = value as Record<string, unknown>;
  for (const key of Object.keys(obj)) {
    const item = toStorableTree(obj[key]);
    const fixed = storableText(key);
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
 * JSON text whose strings and keys are all storable (see {@link storableText}). Text that
 * cannot hold an unstorable value is returned as it is, at the cost of a substring search;
 * text that is not JSON is returned as it is too (the engine then refuses it alone).
 */
export function wellFormedJson(json: string): string {
  if (!mayHoldUnstorable(json)) return json;
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch {
    return json;
  }
  return JSON.stringify(toStorableTree(value)) ?? json;
}
