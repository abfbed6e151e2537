import { describe, expect, it } from 'vitest';
import { boundedLines, formatOf } from './file-connector.js';

async function lines(chunks: string[], max: number): Promise<(string | undefined)[]> {
  const out: (string | undefined)[] = [];
  async function* input() {
    for (const c of chunks) yield Buffer.from(c);
  }
  for await (const l of boundedLines(input(), max)) out.push(l?.toString());
  return out;
}

describe('boundedLines', () => {
  it('splits lines across chunks, drops the \\r of CRLF and keeps a last line without \\n', async () => {
    expect(await lines(['a\r\nbb', 'b\n\nc'], 100)).toEqual(['a', 'bbb', '', 'c']);
    expect(await lines([], 100)).toEqual([]);
  });

  it('yields a line longer than the bound as undefined without holding it, and goes on', async () => {
    expect(await lines(['short\n', 'x'.repeat(30), 'x'.repeat(30), '\nafter\n', 'y'.repeat(60)], 50)).toEqual(
      ['short', undefined, 'after', undefined],
    );
  });
});

describe('formatOf', () => {
  it('reads the format from the name, .gz or not, unless declared', () => {
    expect(formatOf('a.CSV.gz')).toBe('csv');
    expect(formatOf('a.tsv')).toBe('csv');
    expect(formatOf('a.ndjson.gz')).toBe('jsonl');
    expect(formatOf('a.parquet')).toBe('parquet');
    expect(formatOf('a.txt', 'jsonl')).toBe('jsonl');
  });
});
