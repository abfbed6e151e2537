/**
 * The file source: a generated CSV of BENCH_ROWS rows (default 1,000,000) imported as objects
 * into a fresh embedded workspace (the runner, the file connector, the DuckDB store: what
 * `tributary import` does without a server), against DuckDB's own `read_csv` into a table of
 * the same file in the same run. Also measured, to choose the CSV reader: the rows read and
 * nothing else, by csv-parse (the connector's reader) and by DuckDB's `read_csv` streamed to
 * JavaScript rows (what the connector would do with DuckDB as its reader).
 *
 *   npm run bench:source-file
 *   BENCH_ROWS=200000 npm run bench:source-file
 *
 * The import runs in a child process of its own, so its peak RSS (getrusage maxrss) is the
 * import's alone.
 */
import { createReadStream, mkdtempSync, rmSync, statSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { parse } from 'csv-parse';
import { parseConfig } from '../src/config/load.js';
import { openEmbeddedSources } from '../src/server/embedded-sources.js';
import { writeRowsCsv } from './lib/csv-rows.js';
import { envInt } from './lib/env.js';
import { runChildScript } from './lib/proc.js';
import { int, markdownTable } from './lib/report.js';

const ROWS = envInt('BENCH_ROWS', 1_000_000);

const CONFIG = (file: string) => `version: 1
sources:
  - id: bench
    type: file
    streams:
      - name: rows
        path: ${file}
        primaryKey: [id]
        columns: { id: integer, amount: number, created_at: timestamp }
`;

/** The child: imports the file into a fresh workspace and prints seconds and peak RSS. */
async function child(file: string, dataDir: string): Promise<void> {
  const { config } = parseConfig(CONFIG(file), {});
  const local = await openEmbeddedSources(config, dataDir, tmpdir());
  const t = performance.now();
  const r = await local.sources.sync('bench', { trigger: 'bench' });
  const seconds = (performance.now() - t) / 1000;
  await local.close();
  if (r.status !== 'succeeded') throw new Error(r.error);
  process.stdout.write(
    `${JSON.stringify({ seconds, objects: r.objects, maxRssMb: process.resourceUsage().maxRSS / 1024 })}\n`,
  );
}

async function duckdbTable(file: string): Promise<number> {
  const instance = await DuckDBInstance.create(':memory:');
  const conn = await instance.connect();
  const t = performance.now();
  await conn.run(`CREATE TABLE t AS SELECT * FROM read_csv('${file}', header = true)`);
  const s = (performance.now() - t) / 1000;
  conn.closeSync();
  instance.closeSync();
  return s;
}

async function duckdbRows(file: string): Promise<number> {
  const instance = await DuckDBInstance.create(':memory:');
  const conn = await instance.connect();
  const t = performance.now();
  const result = await conn.stream(`SELECT * FROM read_csv('${file}', header = true, all_varchar = true)`);
  let n = 0;
  for await (const rows of result.yieldRowObjectJson()) n += rows.length;
  const s = (performance.now() - t) / 1000;
  conn.closeSync();
  instance.closeSync();
  if (n !== ROWS) throw new Error(`read ${n} rows`);
  return s;
}

async function csvParseRows(file: string): Promise<number> {
  const t = performance.now();
  let n = 0;
  const parser = createReadStream(file).pipe(parse({ bom: true, relax_column_count: true, info: true }));
  for await (const _ of parser) n++;
  if (n !== ROWS + 1) throw new Error(`read ${n} rows`);
  return (performance.now() - t) / 1000;
}

async function main(): Promise<void> {
  if (process.argv[2] === '--child') return child(process.argv[3]!, process.argv[4]!);
  const dir = mkdtempSync(join(tmpdir(), 'bench-source-file-'));
  try {
    const file = join(dir, 'rows.csv');
    await writeRowsCsv(file, ROWS);
    const size = statSync(file).size;
    const ours = runChildScript<{
      seconds: number;
      objects: number;
      maxRssMb: number;
    }>(import.meta.url, [file, join(dir, 'data')]);
    if (ours.objects !== ROWS) throw new Error(`imported ${ours.objects} objects`);
    const table = await duckdbTable(file);
    const duckRows = await duckdbRows(file);
    const parseRows = await csvParseRows(file);
    const rate = (s: number) => int(ROWS / s);
    process.stdout.write(
      `\nFile source: ${int(ROWS)} rows, ${(size / 1024 / 1024).toFixed(0)} MB CSV; ${cpus().length} cores, load ${loadavg()[0]!.toFixed(1)}\n\n`,
    );
    process.stdout.write(
      `${markdownTable(
        ['what', 'seconds', 'rows/s', 'vs read_csv into a table'],
        [
          [
            'tributary import as objects (runner + file connector + store)',
            ours.seconds.toFixed(2),
            rate(ours.seconds),
            `${(table / ours.seconds).toFixed(2)}x`,
          ],
          ['DuckDB read_csv into a table (baseline)', table.toFixed(2), rate(table), '1.00x'],
          [
            'reader only: csv-parse (the connector reads with it)',
            parseRows.toFixed(2),
            rate(parseRows),
            `${(table / parseRows).toFixed(2)}x`,
          ],
          [
            'reader only: DuckDB read_csv streamed to JS rows',
            duckRows.toFixed(2),
            rate(duckRows),
            `${(table / duckRows).toFixed(2)}x`,
          ],
        ],
        ['l', 'r', 'r', 'r'],
      )}\n\npeak RSS of the import process: ${ours.maxRssMb.toFixed(0)} MB\n`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
