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
    let buf = chunk;
    if (this.rest !== undefined) {
      buf = Buffer.concat([this.rest, chunk]);
      this.rest = undefined;
    }
    const last = buf.lastIndexOf(NEWLINE);
    if (last < 0) {
      this.rest = buf;
      return;
    }
    if (last < buf.length - 1) this.rest = Buffer.from(buf.subarray(last + 1));
    const lines = buf.toString('utf8', 0, last).split('\n');
    for (const line of lines) {
      const row: (string | null)[] = line.split('\t');
      if (row.length !== this.columns)
        throw new BadValue(`COPY gave ${row.length} columns, not ${this.columns}`);
      for (let i = 0; i < row.length; i++) {
        const v = row[i]!;
        if (v.includes('\\')) row[i] = unescapeCopy(v);
      }
      out.push(row);
    }
  }

  /** The end of the data: nothing may be left over. */
  end(): void {
    if (this.rest !== undefined && this.rest.length > 0) throw new BadValue('COPY ended mid-row');
  }
}
