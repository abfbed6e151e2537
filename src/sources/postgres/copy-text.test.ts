import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CopyTextParser, unescapeCopy } from './copy-text.js';

/** COPY's text format of one value, as PostgreSQL writes it. */
function copyEscape(v: string | null): string {
  if (v === null) return '\\N';
  return v.replace(
    /[\\\n\r\t\b\f\v]/g,
    (c) =>
      ({ '\\': '\\\\', '\n': '\\n', '\r': '\\r', '\t': '\\t', '\b': '\\b', '\f': '\\f', '\v': '\\v' })[c]!,
  );
}

describe('CopyTextParser', () => {
  it('reads rows split anywhere across chunks, multi-byte characters included, and undoes escapes', () => {
    const rows = [
      ['1', 'é\tü\n"x"', null],
      ['2', '\\N', ''],
      ['3', '日本\\x', 'a\rb'],
    ];
    const bytes = Buffer.from(rows.map((r) => `${r.map(copyEscape).join('\t')}\n`).join(''));
    for (let cut = 1; cut < bytes.length; cut++) {
      const p = new CopyTextParser(3);
      const out: (string | null)[][] = [];
      p.push(bytes.subarray(0, cut), out);
      p.push(bytes.subarray(cut), out);
      p.end();
      expect(out, `cut at ${cut}`).toEqual(rows);
    }
  });

  it('reads empty rows of a one-column result, whatever the cut', () => {
    const bytes = Buffer.from('\na\n\n');
    for (let cut = 0; cut <= bytes.length; cut++) {
      const p = new CopyTextParser(1);
      const out: (string | null)[][] = [];
      p.push(bytes.subarray(0, cut), out);
      p.push(bytes.subarray(cut), out);
      p.end();
      expect(out, `cut at ${cut}`).toEqual([[''], ['a'], ['']]);
    }
  });

  it('round-trips any values', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.array(fc.option(fc.string({ unit: 'binary' }), { nil: null }), { minLength: 2, maxLength: 2 }),
        ),
        (rows) => {
          const p = new CopyTextParser(2);
          const out: (string | null)[][] = [];
          p.push(Buffer.from(rows.map((r) => `${r.map(copyEscape).join('\t')}\n`).join('')), out);
          p.end();
          expect(out).toEqual(rows);
        },
      ),
    );
  });

  it('refuses a row with the wrong column count, and data ending mid-row', () => {
    expect(() => new CopyTextParser(2).push(Buffer.from('a\n'), [])).toThrow(/columns/);
    const p = new CopyTextParser(1);
    p.push(Buffer.from('a\nb'), []);
    expect(() => p.end()).toThrow(/mid-row/);
    expect(unescapeCopy('\\N')).toBeNull();
  });
});
