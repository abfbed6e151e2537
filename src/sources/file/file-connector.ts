/**
 * The file connector: CSV, JSONL and Parquet files (gzipped or not) from a path or a glob.
 *
 * CSV and JSONL are streamed (csv-parse, readline), not read by DuckDB: a bad row must be
 * reported with its file and line and the rest must go on, and DuckDB's `read_csv` either stops
 * at the first bad row or, with `ignore_errors`, drops it, reporting the line only in a rejects
 * table after the whole file is read; streaming also keeps memory flat and gives the runner a
 * checkpoint every `CHECKPOINT_ROWS` rows. The bench (bench/source-file.ts) measures both.
 * Parquet has no bad rows to report and is read by DuckDB (an in-memory instance of its own,
 * since the server's is locked to its own files), chunk by chunk.
 *
 * State, per stream: `{ files: { [path]: { size, mtimeMs, rows, done } } }`. A file whose size
 * and mtime are unchanged resumes after `rows` (every row read, good or failed, counts); a
 * file marked done is not read again; a changed file is read from its start (objects upsert,
 * events dedupe on their messageId).
 */
import { createReadStream, statSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { DuckDBInstance } from '@duckdb/node-api';
import { type CsvError, parse } from 'csv-parse';
import { glob, isDynamicPattern } from 'tinyglobby';
import { TributaryError } from '../../errors.js';
import type {
  Catalog,
  CheckResult,
  ColumnDescriptor,
  ConfiguredStream,
  PullSourceConnector,
  SourceContext,
  SourceMessage,
  StreamDescriptor,
} from '../source.js';
import type { ColumnType } from '../streams-schema.js';
import { convertValue } from './convert.js';
import { type FileFormat, FileSourceSpec, type FileStream } from './spec.js';

/** Rows between two checkpoints. */
export const CHECKPOINT_ROWS = 20_000;

export interface FileState {
  size: number;
  mtimeMs: number;
  rows: number;
  done: boolean;
  error?: string;
}
export interface FileStreamState {
  files: Record<string, FileState>;
}

type Emit = SourceMessage;

/** The files of a stream, sorted, absolute. */
export async function streamFiles(stream: Pick<FileStream, 'path'>, baseDir: string): Promise<string[]> {
  if (!stream.path) return [];
  const pattern = isAbsolute(stream.path) ? stream.path : resolve(baseDir, stream.path);
  if (!isDynamicPattern(pattern)) {
    try {
      return statSync(pattern).isFile() ? [pattern] : [];
    } catch {
      return [];
    }
  }
  return (await glob(pattern, { absolute: true, onlyFiles: true, expandDirectories: false })).sort();
}

export function formatOf(file: string, declared?: FileFormat): FileFormat {
  if (declared) return declared;
  const name = file.toLowerCase().replace(/\.gz$/, '');
  if (name.endsWith('.parquet')) return 'parquet';
  if (name.endsWith('.jsonl') || name.endsWith('.ndjson') || name.endsWith('.json')) return 'jsonl';
  return 'csv';
}

function delimiterOf(file: string, s: FileStream): string {
  if (s.delimiter === 'tab' || s.delimiter === '\\t') return '\t';
  if (s.delimiter) return s.delimiter;
  return /\.tsv(\.gz)?$/i.test(file) ? '\t' : ',';
}

/** The file's bytes, gunzipped when its name ends in .gz; `counter` sees the bytes read from disk. */
function openText(file: string, counter: (n: number) => void): Readable {
  const raw = createReadStream(file, { highWaterMark: 256 * 1024 });
  raw.on('data', (b) => counter((b as Buffer).length));
  if (!/\.gz$/i.test(file)) return raw;
  const gunzip = createGunzip();
  raw.on('error', (err) => gunzip.destroy(err));
  return raw.pipe(gunzip);
}

function fail(stream: string, code: string, reason: string, payload: string, location: string): Emit {
  return { type: 'failed', stream, code, reason, payload, location };
}

/** Header names made usable: blanks become column<N>, repeats get a suffix. */
function headerNames(row: readonly string[]): string[] {
  const seen = new Map<string, number>();
  return row.map((raw, i) => {
    let name = raw.trim() || `column${i + 1}`;
    const n = seen.get(name) ?? 0;
    seen.set(name, n + 1);
    if (n > 0) name = `${name}_${n + 1}`;
    return name;
  });
}

/** Converts the declared columns of a row; the first that fails is the row's failure. */
function typed(
  data: Record<string, unknown>,
  columns: Readonly<Record<string, ColumnType>> | undefined,
): { ok: true } | { ok: false; reason: string } {
  if (!columns) return { ok: true };
  for (const [name, type] of Object.entries(columns)) {
    const c = convertValue(name, type, data[name]);
    if (!c.ok) return c;
    data[name] = c.value;
  }
  return { ok: true };
}

/** Reads one CSV file from row `skip` on. */
async function* readCsv(
  file: string,
  s: FileStream,
  skip: number,
  bytes: (n: number) => void,
): AsyncGenerator<Emit> {
  const input = openText(file, bytes);
  const skipped: CsvError[] = [];
  const parser = parse({
    delimiter: delimiterOf(file, s),
    quote: s.quote,
    bom: true,
    encoding: s.encoding,
    relax_column_count: true,
    skip_empty_lines: true,
    skip_records_with_error: true,
    info: true,
  });
  parser.on('skip', (err: CsvError) => skipped.push(err));
  input.on('error', (err) => parser.destroy(err));
  input.pipe(parser);
  let header: string[] | undefined;
  let n = 0;
  /** The rows the parser skipped since the last call, as failures; they count as rows for `skip`. */
  function* skippedRows() {
    for (const err of skipped.splice(0)) {
      if (n++ < skip) continue;
      yield fail(
        s.name,
        'TRIB_ERR_SOURCE_BAD_ROW',
        err.message,
        '',
        `${file}:${(err as { lines?: number }).lines ?? '?'}`,
      );
    }
  }
  for await (const item of parser as AsyncIterable<{ record: string[]; info: { lines: number } }>) {
    yield* skippedRows();
    const { record, info } = item;
    if (!header) {
      if (s.header) {
        header = headerNames(record);
        continue;
      }
      header = record.map((_, i) => `column${i + 1}`);
    }
    if (n++ < skip) continue;
    const location = `${file}:${info.lines}`;
    if (record.length !== header.length) {
      yield fail(
        s.name,
        'TRIB_ERR_SOURCE_BAD_ROW',
        `expected ${header.length} fields, found ${record.length}`,
        record.join(delimiterOf(file, s)),
        location,
      );
      continue;
    }
    const data: Record<string, unknown> = {};
    for (let i = 0; i < header.length; i++) data[header[i]!] = record[i] === '' ? null : record[i];
    const t = typed(data, s.columns);
    if (!t.ok)
      yield fail(s.name, 'TRIB_ERR_SOURCE_BAD_VALUE', t.reason, record.join(delimiterOf(file, s)), location);
    else yield { type: 'record', stream: s.name, data, location };
  }
  yield* skippedRows();
}

/** Reads one JSONL file from row `skip` on: one JSON object per line. */
async function* readJsonl(
  file: string,
  s: FileStream,
  skip: number,
  bytes: (n: number) => void,
): AsyncGenerator<Emit> {
  const input = openText(file, bytes);
  let line = 0;
  let n = 0;
  for await (const l of boundedLines(input, MAX_LINE_BYTES)) {
    line++;
    let text = l === undefined ? undefined : l.toString(s.encoding);
    if (text !== undefined && line === 1 && text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    if (text !== undefined && text.trim() === '') continue;
    if (n++ < skip) continue;
    const location = `${file}:${line}`;
    if (text === undefined) {
      yield fail(
        s.name,
        'TRIB_ERR_SOURCE_BAD_ROW',
        `the line is longer than ${MAX_LINE_BYTES} bytes`,
        '',
        location,
      );
      continue;
    }
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (err) {
      yield fail(
        s.name,
        'TRIB_ERR_SOURCE_BAD_ROW',
        `not JSON: ${(err as Error).message}`,
        text.slice(0, 10_000),
        location,
      );
      continue;
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      yield fail(
        s.name,
        'TRIB_ERR_SOURCE_BAD_ROW',
        'a line must hold one JSON object',
        text.slice(0, 10_000),
        location,
      );
      continue;
    }
    const data = value as Record<string, unknown>;
    const t = typed(data, s.columns);
    if (!t.ok) yield fail(s.name, 'TRIB_ERR_SOURCE_BAD_VALUE', t.reason, text.slice(0, 10_000), location);
    else yield { type: 'record', stream: s.name, data, location };
  }
}

/** Longest JSONL line read; a longer one is a failed row, not held in memory. */
export const MAX_LINE_BYTES = 16 * 1024 * 1024;

/**
 * The lines of a byte stream (without `\n` and a `\r` before it); a line longer than `max`
 * bytes is yielded as undefined and its bytes are dropped as they come, so memory stays bounded
 * whatever the file holds.
 */
export async function* boundedLines(
  input: AsyncIterable<Buffer>,
  max: number,
): AsyncGenerator<Buffer | undefined> {
  let parts: Buffer[] = [];
  let size = 0;
  let tooLong = false;
  const end = (last: Buffer): Buffer | undefined => {
    if (tooLong) return undefined;
    let b = parts.length === 0 ? last : Buffer.concat([...parts, last]);
    if (b.length > 0 && b[b.length - 1] === 0x0d) b = b.subarray(0, b.length - 1);
    return b;
  };
  for await (const chunk of input) {
    let from = 0;
    for (let nl = chunk.indexOf(0x0a, from); nl !== -1; nl = chunk.indexOf(0x0a, from)) {
      const piece = chunk.subarray(from, nl);
      if (!tooLong && size + piece.length > max) tooLong = true;
      yield end(piece);
      parts = [];
      size = 0;
      tooLong = false;
      from = nl + 1;
    }
    const rest = chunk.subarray(from);
    if (tooLong) continue;
    if (size + rest.length > max) {
      tooLong = true;
      parts = [];
      size = 0;
      continue;
    }
    // A copy: the stream may reuse its chunk's memory.
    parts.push(Buffer.from(rest));
    size += rest.length;
  }
  if (size > 0 || tooLong) yield end(Buffer.alloc(0));
}

/** Reads one Parquet file from row `skip` on, through an in-memory DuckDB of its own. */
async function* readParquet(
  file: string,
  s: FileStream,
  skip: number,
  bytes: (n: number) => void,
): AsyncGenerator<Emit> {
  const instance = await DuckDBInstance.create(':memory:', { threads: '1' });
  const conn = await instance.connect();
  try {
    const result = await conn.stream(`SELECT * FROM read_parquet($1) OFFSET ${Math.trunc(skip)}`, [file]);
    let row = skip;
    bytes(0);
    for await (const rows of result.yieldRowObjectJson()) {
      for (const data of rows as Record<string, unknown>[]) {
        row++;
        const location = `${file}#${row}`;
        const t = typed(data, s.columns);
        if (!t.ok)
          yield fail(
            s.name,
            'TRIB_ERR_SOURCE_BAD_VALUE',
            t.reason,
            JSON.stringify(data).slice(0, 10_000),
            location,
          );
        else yield { type: 'record', stream: s.name, data, location };
      }
    }
  } finally {
    conn.closeSync();
    instance.closeSync();
  }
}

function readFile(
  file: string,
  s: FileStream,
  skip: number,
  bytes: (n: number) => void,
): AsyncGenerator<Emit> {
  switch (formatOf(file, s.format)) {
    case 'csv':
      return readCsv(file, s, skip, bytes);
    case 'jsonl':
      return readJsonl(file, s, skip, bytes);
    case 'parquet':
      return readParquet(file, s, skip, bytes);
  }
}

/** A gzip stream that ends early, or a file that is damaged mid-way: the file's rows stop there. */
function isDamage(err: unknown): boolean {
  const code = (err as { code?: string }).code;
  return (
    code === 'Z_BUF_ERROR' ||
    code === 'Z_DATA_ERROR' ||
    code === 'ERR_STRING_TOO_LONG' ||
    /unexpected end of file|incorrect header check|invalid/i.test((err as Error).message ?? '')
  );
}

async function* readStream(
  s: FileStream,
  prior: FileStreamState | undefined,
  ctx: SourceContext,
): AsyncGenerator<Emit> {
  const files = await streamFiles(s, ctx.baseDir);
  if (s.path && files.length === 0) throw new PathNotFound(s.path);
  const state: FileStreamState = { files: { ...(prior?.files ?? {}) } };
  const totalBytes = files.reduce((n, f) => n + statSync(f).size, 0);
  let bytesBefore = 0;
  let rowsRead = 0;
  for (const file of files) {
    const st = statSync(file);
    const known = state.files[file];
    const same = known !== undefined && known.size === st.size && known.mtimeMs === st.mtimeMs;
    if (same && known.done) {
      bytesBefore += st.size;
      continue;
    }
    const entry: FileState = { size: st.size, mtimeMs: st.mtimeMs, rows: same ? known.rows : 0, done: false };
    state.files[file] = entry;
    let fileBytes = 0;
    const onBytes = (n: number) => (fileBytes += n);
    let sinceCheckpoint = 0;
    try {
      for await (const m of readFile(file, s, entry.rows, onBytes)) {
        if (ctx.signal.aborted) return;
        yield m;
        entry.rows++;
        rowsRead++;
        if (++sinceCheckpoint >= CHECKPOINT_ROWS) {
          sinceCheckpoint = 0;
          yield {
            type: 'progress',
            stream: s.name,
            rows: rowsRead,
            bytes: bytesBefore + fileBytes,
            totalBytes,
          };
          yield { type: 'state', stream: s.name, state: clone(state) };
        }
      }
    } catch (err) {
      if (!isDamage(err)) throw err;
      const reason = (err as Error).message;
      entry.error = reason;
      yield fail(
        s.name,
        'TRIB_ERR_SOURCE_FILE_TRUNCATED',
        `the file ends early or is damaged after row ${entry.rows}: ${reason}`,
        '',
        file,
      );
    }
    entry.done = true;
    bytesBefore += st.size;
    yield { type: 'progress', stream: s.name, rows: rowsRead, bytes: bytesBefore, totalBytes };
    yield { type: 'state', stream: s.name, state: clone(state) };
  }
}

function clone(s: FileStreamState): FileStreamState {
  return { files: Object.fromEntries(Object.entries(s.files).map(([k, v]) => [k, { ...v }])) };
}

class PathNotFound extends Error {
  readonly code = 'TRIB_ERR_SOURCE_PATH_NOT_FOUND';
  constructor(readonly path: string) {
    super(`No file matches ${path}`);
  }
}

/** Column names (and, for Parquet, types) of the stream's first file. */
async function describe(s: FileStream, file: string): Promise<ColumnDescriptor[]> {
  const format = formatOf(file, s.format);
  if (format === 'parquet') {
    const instance = await DuckDBInstance.create(':memory:', { threads: '1' });
    const conn = await instance.connect();
    try {
      const r = await conn.runAndReadAll('DESCRIBE SELECT * FROM read_parquet($1)', [file]);
      return r.getRows().map(([name, type]) => ({
        name: String(name),
        sourceType: String(type),
        jsonType: jsonTypeOfDuckDB(String(type)),
        nullable: true,
      }));
    } finally {
      conn.closeSync();
      instance.closeSync();
    }
  }
  if (format === 'jsonl') return [];
  if (!s.header) return [];
  for await (const m of readCsv(file, { ...s, columns: undefined }, 0, () => {})) {
    if (m.type === 'record')
      return Object.keys(m.data).map((name) => ({
        name,
        sourceType: 'text',
        jsonType: 'string',
        nullable: true,
      }));
    if (m.type === 'failed') continue;
  }
  return [];
}

function jsonTypeOfDuckDB(t: string): ColumnDescriptor['jsonType'] {
  if (/^(BIGINT|INTEGER|SMALLINT|TINYINT|UBIGINT|UINTEGER|USMALLINT|UTINYINT|HUGEINT)$/.test(t))
    return 'integer';
  if (/^(DOUBLE|FLOAT|DECIMAL)/.test(t)) return 'number';
  if (t === 'BOOLEAN') return 'boolean';
  if (t.startsWith('TIMESTAMP')) return 'timestamp';
  if (t === 'DATE') return 'date';
  if (t.endsWith('[]') || t.startsWith('STRUCT') || t.startsWith('MAP')) return 'object';
  return 'string';
}

export const fileConnector: PullSourceConnector<FileSourceSpec> = {
  type: 'file',
  kind: 'pull',
  spec: FileSourceSpec,

  async check(config, ctx): Promise<CheckResult> {
    for (const s of config.streams) {
      if (!s.path) continue;
      const files = await streamFiles(s, ctx.baseDir);
      if (files.length === 0)
        return {
          ok: false,
          code: 'TRIB_ERR_SOURCE_PATH_NOT_FOUND',
          message: `stream ${s.name}: no file matches ${s.path} (relative paths start at ${ctx.baseDir})`,
        };
      try {
        await describe(s, files[0]!);
      } catch (err) {
        return {
          ok: false,
          code: 'TRIB_ERR_SOURCE_FILE_UNREADABLE',
          message: `stream ${s.name}: ${files[0]} cannot be read: ${(err as Error).message}`,
        };
      }
    }
    return { ok: true };
  },

  async discover(config, ctx): Promise<Catalog> {
    const streams: StreamDescriptor[] = [];
    for (const s of config.streams) {
      const files = await streamFiles(s, ctx.baseDir);
      const found = files.length > 0 ? await describe(s, files[0]!).catch(() => []) : [];
      const columns = found.map((c) => {
        const declared = s.columns?.[c.name];
        return declared ? { ...c, jsonType: declared === 'json' ? ('object' as const) : declared } : c;
      });
      streams.push({
        name: s.name,
        columns,
        primaryKey: s.primaryKey,
        cursorCandidates: [],
        syncModes: ['full_refresh', 'incremental'],
      });
    }
    return { streams };
  },

  async *read(config, streams: readonly ConfiguredStream[], state, ctx): AsyncIterable<SourceMessage> {
    for (const c of streams) {
      const s = config.streams.find((x) => x.name === c.name);
      if (!s) continue;
      try {
        yield* readStream(s, state[c.name] as FileStreamState | undefined, ctx);
      } catch (err) {
        if (err instanceof PathNotFound) {
          throw new TributaryError('TRIB_ERR_SOURCE_PATH_NOT_FOUND', [err.path], { cause: err });
        }
        throw err;
      }
      if (c.syncMode === 'full_refresh') yield { type: 'complete', stream: c.name };
    }
  },
};
