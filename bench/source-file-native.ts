/**
 * A prototype of issue 17's native CSV path, measured before it is built: the objects of a
 * CSV loaded by DuckDB itself into a file-backed workspace, JavaScript touching no row, with
 * the conversions and key the JavaScript path gives (`nativeCast`, `nativeKeySql`), against
 * `read_csv` into a table of the same file in the same run (the file source benchmark's
 * baseline). The runner does not use this path yet: it is the SQL the store would run.
 *
 *   npm run bench:source-file-native
 *   BENCH_ROWS=200000 npm run bench:source-file-native
 *
 * One transaction, as the store's commit would be: a scan that counts bad rows, rows without
 * a key and duplicate keys (DuckDB's rejects table takes the rows of a wrong column count),
 * the DELETE of the file's keys, the INSERT of its good rows. The prototype runs in a child
 * process of its own, so its peak RSS is its own.
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { quoteIdent, sqlString } from '../src/platform/duckdb/duckdb-sql.js';
import { nativeCast } from '../src/sources/file/native-cast.js';
import { nativeKeySql } from '../src/sources/file/native-key.js';
import type { ColumnType } from '../src/sources/streams-schema.js';
import { SQL_TYPE } from '../src/store/duckdb/duckdb-source-store.js';
import { writeRowsCsv } from './lib/csv-rows.js';
import { envInt } from './lib/env.js';
import { runChildScript } from './lib/proc.js';
import { int, markdownTable } from './lib/report.js';

const ROWS = envInt('BENCH_ROWS', 1_000_000);
const COLUMNS: Record<string, ColumnType> = {
  id: 'integer',
  email: 'string',
  name: 'string',
  plan: 'string',
  amount: 'number',
  created_at: 'timestamp',
};

type Steps = Record<string, number>;

/** The child: the native load into a fresh file-backed workspace; prints its steps' seconds and peak RSS. */
async function child(file: string, dbFile: string): Promise<void> {
  const instance = await DuckDBInstance.create(dbFile);
  const c = await instance.connect();
  const names = Object.keys(COLUMNS);
  await c.run('CREATE SCHEMA bench');
  await c.run(
    `CREATE TABLE bench.rows (_tributary_key VARCHAR NOT NULL, _tributary_synced_at TIMESTAMPTZ NOT NULL,
       _tributary_deleted BOOLEAN NOT NULL, _tributary_run_id VARCHAR,
       ${names.map((n) => `${quoteIdent(n)} ${SQL_TYPE[COLUMNS[n]!]}`).join(', ')})`,
  );
  const casts = names.map((n) => nativeCast(n, COLUMNS[n]!)!);
  const key = nativeKeySql(['id'], COLUMNS)!;
  const scan = (n: number) =>
    `read_csv(${sqlString(file)}, header = true, all_varchar = true, delim = ',', quote = '"',
       compression = 'auto', store_rejects = true, rejects_scan = 'scan_${n}', rejects_table = 'rejects_${n}',
       columns = {${names.map((x) => `${sqlString(x)}: 'VARCHAR'`).join(', ')}})`;
  const bad = casts.map((x) => x.bad).join(' OR ');
  // The typed row, then its key over the typed columns.
  const typed = (n: number) =>
    `(SELECT ${casts.map((x, i) => `${x.value} AS ${quoteIdent(names[i]!)}`).join(', ')}, ${bad} AS _bad FROM ${scan(n)})`;
  const keyed = (n: number) => `(SELECT *, ${key} AS _key FROM ${typed(n)})`;
  const steps: Steps = {};
  const step = async (name: string, fn: () => Promise<unknown>) => {
    const t = performance.now();
    await fn();
    steps[name] = (performance.now() - t) / 1000;
  };
  const t0 = performance.now();
  await c.run('BEGIN TRANSACTION');
  let counts: unknown[] = [];
  await step('scan: bad values, no key, duplicate keys', async () => {
    const r = await c.runAndReadAll(
      `SELECT count(*) FILTER (WHERE _bad), count(*) FILTER (WHERE NOT _bad AND _key IS NULL),
              count(_key) FILTER (WHERE NOT _bad) - count(DISTINCT _key) FILTER (WHERE NOT _bad) FROM ${keyed(1)}`,
    );
    counts = r.getRows()[0]!;
  });
  if (counts.some((n) => n !== 0n)) throw new Error(`the generated file has bad rows: ${counts.join(', ')}`);
  await step('delete the file’s keys', () =>
    c.run(`DELETE FROM bench.rows WHERE _tributary_key IN (SELECT _key FROM ${keyed(2)} WHERE NOT _bad)`),
  );
  await step('insert the good rows', () =>
    c.run(
      `INSERT INTO bench.rows SELECT _key, now(), false, 'run', ${names.map(quoteIdent).join(', ')}
       FROM ${keyed(3)} WHERE NOT _bad AND _key IS NOT NULL`,
    ),
  );
  await step('commit', () => c.run('COMMIT'));
  const seconds = (performance.now() - t0) / 1000;
  const n = await c.runAndReadAll('SELECT count(*) FROM bench.rows');
  c.closeSync();
  instance.closeSync();
  process.stdout.write(
    `${JSON.stringify({ seconds, steps, objects: Number(n.getRows()[0]![0]), maxRssMb: process.resourceUsage().maxRSS / 1024 })}\n`,
  );
}

async function duckdbTable(file: string): Promise<number> {
  const instance = await DuckDBInstance.create(':memory:');
  const conn = await instance.connect();
  const t = performance.now();
  await conn.run(`CREATE TABLE t AS SELECT * FROM read_csv(${sqlString(file)}, header = true)`);
  const s = (performance.now() - t) / 1000;
  conn.closeSync();
  instance.closeSync();
  return s;
}

async function main(): Promise<void> {
  if (process.argv[2] === '--child') return child(process.argv[3]!, process.argv[4]!);
  const dir = mkdtempSync(join(tmpdir(), 'bench-source-file-native-'));
  try {
    const file = join(dir, 'rows.csv');
    await writeRowsCsv(file, ROWS);
    const size = statSync(file).size;
    const ours = runChildScript<{
      seconds: number;
      steps: Steps;
      objects: number;
      maxRssMb: number;
    }>(import.meta.url, [file, join(dir, 'warehouse.duckdb')]);
    if (ours.objects !== ROWS) throw new Error(`loaded ${ours.objects} objects`);
    const table = await duckdbTable(file);
    const rate = (s: number) => int(ROWS / s);
    process.stdout.write(
      `\nFile source, native prototype: ${int(ROWS)} rows, ${(size / 1024 / 1024).toFixed(0)} MB CSV; ${cpus().length} cores, load ${loadavg()[0]!.toFixed(1)}\n\n`,
    );
    process.stdout.write(
      `${markdownTable(
        ['what', 'seconds', 'rows/s', 'vs read_csv into a table'],
        [
          [
            'native prototype: objects loaded by DuckDB (one transaction)',
            ours.seconds.toFixed(2),
            rate(ours.seconds),
            `${(table / ours.seconds).toFixed(2)}x`,
          ],
          ...Object.entries(ours.steps).map(([name, s]) => [`  ${name}`, s.toFixed(2), '', '']),
          ['DuckDB read_csv into a table (baseline)', table.toFixed(2), rate(table), '1.00x'],
        ],
        ['l', 'r', 'r', 'r'],
      )}\n\npeak RSS of the prototype process: ${ours.maxRssMb.toFixed(0)} MB\n`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
