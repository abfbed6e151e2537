import { gzipSync } from 'node:zlib';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { TributaryError } from '../errors.js';
import { decodeBody, parseJsonBody, sanitizeTree } from './body.js';

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof TributaryError ? err.code : `other: ${(err as Error).message}`;
  }
  return undefined;
}

describe('decodeBody', () => {
  it('passes identity bodies within the limit and refuses larger ones', async () => {
    expect((await decodeBody(Buffer.from('abc'), undefined, 3)).toString()).toBe('abc');
    await expect(decodeBody(Buffer.from('abcd'), 'identity', 3)).rejects.toMatchObject({
      code: 'TRIB_ERR_COLLECT_BODY_TOO_LARGE',
    });
  });

  it('gunzips, counting the limit on decoded bytes', async () => {
    const text = JSON.stringify({ a: 'x'.repeat(10_000) });
    const gz = gzipSync(text);
    expect(gz.length).toBeLessThan(1000);
    expect((await decodeBody(gz, 'gzip', 20_000)).toString()).toBe(text);
    await expect(decodeBody(gz, 'gzip', 5_000)).rejects.toMatchObject({
      code: 'TRIB_ERR_COLLECT_BODY_TOO_LARGE',
    });
  });

  it('refuses a corrupt gzip body and an unknown encoding with stable codes', async () => {
    await expect(decodeBody(Buffer.from('not gzip'), 'gzip', 100)).rejects.toMatchObject({
      code: 'TRIB_ERR_COLLECT_BAD_ENCODING',
    });
    await expect(decodeBody(Buffer.from('x'), 'br', 100)).rejects.toMatchObject({
      code: 'TRIB_ERR_COLLECT_UNSUPPORTED_ENCODING',
    });
  });
});

describe('parseJsonBody', () => {
  it('parses JSON and reports invalid JSON', () => {
    expect(parseJsonBody(Buffer.from('{"a":1}'), 64)).toEqual({ a: 1 });
    expect(code(() => parseJsonBody(Buffer.from('{"a":'), 64))).toBe('TRIB_ERR_COLLECT_INVALID_JSON');
    expect(code(() => parseJsonBody(Buffer.from(''), 64))).toBe('TRIB_ERR_COLLECT_INVALID_JSON');
  });

  it('removes __proto__ keys and constructor.prototype so no key reaches a prototype', () => {
    const v = parseJsonBody(
      Buffer.from(
        '{"a":{"__proto__":{"polluted":true}},"constructor":{"prototype":{"polluted":true}},"ok":1}',
      ),
      64,
    ) as Record<string, Record<string, unknown>>;
    expect(Object.hasOwn(v.a!, '__proto__')).toBe(false);
    expect(Object.hasOwn(v, 'constructor')).toBe(false);
    expect(v.ok).toBe(1);
    const merged = Object.assign({}, v.a);
    expect((merged as Record<string, unknown>).polluted).toBeUndefined();
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('accepts nesting of exactly 64 levels and refuses 65', () => {
    const nest = (n: number) => `${'['.repeat(n)}${']'.repeat(n)}`;
    expect(code(() => parseJsonBody(Buffer.from(`{"a":${nest(63)}}`), 64))).toBeUndefined();
    expect(code(() => parseJsonBody(Buffer.from(`{"a":${nest(64)}}`), 64))).toBe('TRIB_ERR_COLLECT_TOO_DEEP');
    // Far deeper than any stack: refused, not crashed.
    expect(code(() => parseJsonBody(Buffer.from(nest(200_000)), 64))).toBe('TRIB_ERR_COLLECT_TOO_DEEP');
  });

  it('strips a UTF-8 byte-order mark', () => {
    expect(parseJsonBody(Buffer.from('\ufeff{"a":1}'), 64)).toEqual({ a: 1 });
  });
});

describe('sanitizeTree', () => {
  it('counts objects and arrays, not scalars', () => {
    expect(sanitizeTree({ a: { b: 1 } }, 1, 2)).toBe(false);
    expect(sanitizeTree({ a: { b: {} } }, 1, 2)).toBe(true);
    expect(sanitizeTree('x', 1, 0)).toBe(false);
  });
});

describe('parseJsonBody: escaped dangerous keys', () => {
  it('removes a __proto__ key spelt with unicode escapes', () => {
    const v = parseJsonBody(Buffer.from('{"a":{"\\u005f_proto__":{"polluted":true}},"b":1}'), 64) as Record<
      string,
      object
    >;
    expect(Object.hasOwn(v.a!, '__proto__')).toBe(false);
    expect(v.b).toBe(1);
  });

  it('removes an escaped constructor.prototype pair inside an array, keeps a plain constructor value', () => {
    const v = parseJsonBody(
      Buffer.from('{"list":[{"\\u0063onstructor":{"prototype":{"polluted":true}},"k":1}],"constructor":"x"}'),
      64,
    ) as { list: Record<string, unknown>[]; constructor: unknown };
    expect(Object.hasOwn(v.list[0]!, 'constructor')).toBe(false);
    expect(v.list[0]!.k).toBe(1);
    expect(v.constructor).toBe('x');
  });
});

describe('lone surrogates and U+0000', () => {
  const parse = (text: string) => parseJsonBody(Buffer.from(text), 64) as Record<string, unknown>;

  it('replaces a lone surrogate in any string by U+FFFD', () => {
    const body = parse(
      '{"properties":{"s":"\\ud800","t":"a\\udfffb","list":["\\udbff",{"deep":"x\\ud83d"}]},"event":"\\udc00"}',
    );
    expect(body).toEqual({
      properties: { s: '\ufffd', t: 'a\ufffdb', list: ['\ufffd', { deep: 'x\ufffd' }] },
      event: '\ufffd',
    });
  });

  it('replaces one in a key, keeping an existing key of the same name', () => {
    expect(parse('{"a\\ud800":1,"b":{"\\udc00":2}}')).toEqual({ 'a\ufffd': 1, b: { '\ufffd': 2 } });
    expect(parse('{"\\ufffd":1,"\\ud800":2}')).toEqual({ '\ufffd': 1 });
  });

  it('replaces U+0000, which PostgreSQL cannot store in jsonb or text', () => {
    expect(parse('{"a":"x\\u0000y","k\\u0000":["\\u0000"]}')).toEqual({
      a: 'x\ufffdy',
      'k\ufffd': ['\ufffd'],
    });
  });

  it('keeps surrogate pairs, escaped or not', () => {
    expect(parse('{"e":"\\ud83d\\ude00","f":"😀","g":"\\\\ud800"}')).toEqual({
      e: '😀',
      f: '😀',
      g: '\\ud800',
    });
  });

  it('gives only well-formed strings and keys, whatever the body', () => {
    // biome-ignore lint/suspicious/noControlCharactersInRegex: U+0000 is what is looked for
    const lone = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]|\u0000/;
    fc.assert(
      fc.property(
        fc.jsonValue({ depthSize: 'small', stringUnit: 'binary' }),
        fc.string({ unit: 'binary' }),
        (value, s) => {
          // JSON.stringify writes a lone surrogate as a \uXXXX escape, as a hostile client would.
          const body = parseJsonBody(Buffer.from(JSON.stringify({ v: value, [s]: s })), 64);
          expect(collectStrings(body).filter((x) => lone.test(x))).toEqual([]);
        },
      ),
      { numRuns: 200 },
    );
  });
});

function collectStrings(v: unknown, out: string[] = []): string[] {
  if (typeof v === 'string') out.push(v);
  else if (Array.isArray(v)) for (const x of v) collectStrings(x, out);
  else if (typeof v === 'object' && v !== null)
    for (const [k, x] of Object.entries(v)) {
      out.push(k);
      collectStrings(x, out);
    }
  return out;
}
