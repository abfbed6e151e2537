/**
 * Parses the text format of `COPY … TO STDOUT` (rows ended by `\n`, columns split by `\t`,
 * `\N` for NULL, backslash escapes) into rows of strings, chunk by chunk: a row or a UTF-8
 * character split across chunks is carried to the next one.
 */
import { BadValue } from '../sql/driver.js';

const NEWLINE = 10;
const ESCAPES: Record<string, string> = { b: '\b', f: '\f', n: '\n', r: '\r', t: '\t', v: '\v', '\\': '\\' };

/** Undoes COPY's escapes in one column's text (only called when it holds a backslash). */
export function unescapeCopy(text: string): string | null {
  if (text === '\\N') return null;
  return text.replace(
    /\\(?:([0-7]{1,3})|x([0-9a-fA-F]{1,2})|(.))/g,
    (_, oct?: string, hex?: string, ch?: string) => {
      if (oct !== undefined) return String.fromCharCode(Number.parseInt(oct, 8));
      if (hex !== undefined) return String.fromCharCode(Number.parseInt(hex, 16));
      return ESCAPES[ch!] ?? ch!;
    },
  );
}

export class CopyTextParser {
  private rest: Buffer | undefined;

  constructor(private readonly columns: number) {}

  /** Parses the complete rows of `chunk` (and what was carried) into `out`. */
  push(chunk: Buffer, out: (string | null)[][]): void {
    let start = 0;
    if (this.rest !== undefined) {
      // Only the carried part and the head of this chunk up to its first row end are copied.
      const first = chunk.indexOf(NEWLINE);
      if (first < 0) {
        this.rest = Buffer.concat([this.rest, chunk]);
        return;
      }
      const head = Buffer.concat([this.rest, chunk.subarray(0, first)]);
      this.rest = undefined;
      this.row(head.toString('utf8'), out);
      start = first + 1;
    }
    const last = chunk.lastIndexOf(NEWLINE);
    if (last < start) {
      if (start < chunk.length) this.rest = Buffer.from(chunk.subarray(start));
      return;
    }
    if (last < chunk.length - 1) this.rest = Buffer.from(chunk.subarray(last + 1));
    const lines = chunk.toString('utf8', start, last).split('\n');
    for (const line of lines) this.row(line, out);
  }

  private row(line: string, out: (string | null)[][]): void {
    const row: (string | null)[] = line.split('\t');
    if (row.length !== this.columns)
      throw new BadValue(`COPY gave ${row.length} columns, not ${this.columns}`);
    if (line.includes('\\')) {
      for (let i = 0; i < row.length; i++) {
        const v = row[i]!;
        if (v.includes('\\')) row[i] = unescapeCopy(v);
      }
    }
    out.push(row);
  }

  /** The end of the data: nothing may be left over. */
  end(): void {
    if (this.rest !== undefined && this.rest.length > 0) throw new BadValue('COPY ended mid-row');
  }
}
