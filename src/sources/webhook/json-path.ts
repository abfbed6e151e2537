/**
 * Paths into a webhook payload: `data.object.email`, `items[0].price.id`, `["key.with.dots"]`,
 * and `@x-github-event` for a request header. Only own properties of plain objects and array
 * indices are followed, so a path cannot reach `__proto__` or a prototype's members.
 */

export type PathStep = string | number;

/** A parsed path: steps into the payload, or a header name. */
export type ParsedPath = { header: string } | { steps: PathStep[] };

const SEGMENT = /^[A-Za-z0-9_$-]+/;

/** Parses a path; undefined when it is not one. */
export function parsePath(text: string): ParsedPath | undefined {
  if (text.startsWith('@')) {
    const name = text.slice(1);
    return /^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/.test(name) ? { header: name.toLowerCase() } : undefined;
  }
  const steps: PathStep[] = [];
  let rest = text.startsWith('$.') ? text.slice(2) : text;
  if (rest === '') return undefined;
  let first = true;
  while (rest !== '') {
    if (rest.startsWith('[')) {
      const index = /^\[(\d{1,9})\]/.exec(rest);
      if (index) {
        steps.push(Number(index[1]));
        rest = rest.slice(index[0].length);
      } else {
        const quoted = /^\["((?:[^"\\]|\\.)*)"\]/.exec(rest);
        if (!quoted) return undefined;
        steps.push(JSON.parse(`"${quoted[1]}"`) as string);
        rest = rest.slice(quoted[0].length);
      }
    } else {
      if (!first) {
        if (!rest.startsWith('.')) return undefined;
        rest = rest.slice(1);
      }
      const m = SEGMENT.exec(rest);
      if (!m) return undefined;
      steps.push(m[0]);
      rest = rest.slice(m[0].length);
    }
    first = false;
  }
  return { steps };
}

export function isPath(text: string): boolean {
  return parsePath(text) !== undefined;
}

/** What a path reads: the payload and the request's headers (lowercase names). */
export interface PathInput {
  payload: unknown;
  headers: Readonly<Record<string, string | undefined>>;
}

/** The value at a parsed path; undefined when any step is missing. */
export function readPath(input: PathInput, path: ParsedPath): unknown {
  if ('header' in path) return input.headers[path.header];
  let v: unknown = input.payload;
  for (const step of path.steps) {
    if (typeof step === 'number') {
      if (!Array.isArray(v) || step >= v.length) return undefined;
      v = v[step];
    } else {
      if (v === null || typeof v !== 'object' || Array.isArray(v) || !Object.hasOwn(v, step))
        return undefined;
      v = (v as Record<string, unknown>)[step];
    }
  }
  return v;
}

/** Parses once, reads many times. @throws Error when `text` is not a path (the spec checked it). */
export function compilePath(text: string): (input: PathInput) => unknown {
  const path = parsePath(text);
  if (!path) throw new Error(`not a path: ${text}`);
  return (input) => readPath(input, path);
}

const PLACEHOLDER = /\{([^{}]+)\}/g;

/** Whether every `{path}` placeholder of a template is a path. */
export function isTemplate(text: string): boolean {
  for (const m of text.matchAll(PLACEHOLDER)) if (!isPath(m[1]!)) return false;
  return true;
}

/**
 * A template such as `"{@x-github-event} {action}"`: each placeholder is replaced by the
 * string, number or boolean at its path (anything else, or nothing, by ''), then runs of
 * whitespace become one space and the ends are trimmed (`push` has no action: `"push"`).
 */
export function compileTemplate(text: string): (input: PathInput) => string {
  const parts: (string | ((input: PathInput) => unknown))[] = [];
  let at = 0;
  for (const m of text.matchAll(PLACEHOLDER)) {
    parts.push(text.slice(at, m.index));
    parts.push(compilePath(m[1]!));
    at = m.index + m[0].length;
  }
  parts.push(text.slice(at));
  return (input) => {
    let out = '';
    for (const p of parts) {
      if (typeof p === 'string') out += p;
      else {
        const v = p(input);
        if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') out += String(v);
      }
    }
    return out.replace(/\s+/g, ' ').trim();
  };
}
