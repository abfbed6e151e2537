/**
 * One measurement, not a test: rows/s of the database sources' `read()` over a CRM-like table
 * (bigint key, timestamptz, two texts, numeric, boolean, json), against the fastest plain
 * read of the same table in the same run: PostgreSQL `COPY (SELECT …) TO STDOUT`, MariaDB a
 * plain streamed `SELECT` through mysql2. What is measured is the connector's part (rows
 * read, converted to JSON records and yielded), and for PostgreSQL also a whole sync through
 * the runner into an objects table of the embedded store (a fresh data folder per run: the
 * rows are inserted, not upserted over earlier ones).
 *
 *   flock /tmp/bench.lock npm run bench:source-database -- [rows=1000000] [runs=3]
 *   BENCH_DATABASES=postgres …   (default postgres,mariadb)
 */

import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import mysql from 'mysql2';
import pg from 'pg';
import { to as copyTo } from 'pg-copy-streams';
import { parseConfig } from '../src/config/load.js';
import { openEmbeddedSources } from '../src/server/embedded-sources.js';
import { mysqlSource } from '../src/sources/mysql/index.js';
import { postgresSource } from '../src/sources/postgres/index.js';
import type { ConfiguredStream, PullSourceConnector } from '../src/sources/source.js';
import { scratchDatabase } from '../test/pg.js';

const [rows = 1_000_000, runs = 3] = process.argv.slice(2).map(Number);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const ctx = { signal: new AbortController().signal, baseDir: '.' };
const databases = (process.env.BENCH_DATABASES ?? 'postgres,mariadb').split(',');

/** A full-refresh sync of the table through the runner into objects, in a fresh embedded store. */
async function syncObjects(url: string) {
  const dir = mkdtempSync(join(tmpdir(), 'bench-srcdb-sync-'));
  try {
    const { config } = parseConfig(
      `version: 1\nsources:\n  - id: crm\n    type: postgres\n    connectionString: ${url}\n    streams:\n      - { name: contacts, table: public.contacts }\n`,
      {},
    );
    const local = await openEmbeddedSources(config, join(dir, 'data'), dir);
    try {
      const t = performance.now();
      const r = await local.sources.sync('crm', { trigger: 'bench' });
      const s = (performance.now() - t) / 1000;
      if (r.status !== 'succeeded' || r.objects !== rows)
        throw new Error(`sync: ${r.status} ${r.objects} ${r.error}`);
      return rows / s;
    } finally {
      await local.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function readConnector(
  connector: PullSourceConnector<unknown>,
  config: unknown,
  stream: ConfiguredStream,
) {
  let n = 0;
  const t = performance.now();
  for await (const m of connector.read(config, [stream], {}, ctx)) if (m.type === 'record') n++;
  const s = (performance.now() - t) / 1000;
  if (n !== rows) throw new Error(`read ${n} rows, not ${rows}`);
  return rows / s;
}

function report(name: string, results: Record<string, number[]>, baseline: string) {
  const base = median(results[baseline]!);
  console.log(`\n${name}: ${rows.toLocaleString('en')} rows, median of ${runs} runs`);
  for (const [k, v] of Object.entries(results)) {
    const m = median(v);
    console.log(
      `  ${k.padEnd(34)} ${Math.round(m).toLocaleString('en').padStart(10)} rows/s  ${(m / base).toFixed(2)}×  (runs: ${v.map((x) => Math.round(x)).join(', ')})`,
    );
  }
}

async function benchPostgres() {
  const db = await scratchDatabase('bench_srcdb');
  try {
    const c = new pg.Client(db.config);
    await c.connect();
    await c.query(`CREATE TABLE contacts (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL, email text, name text,
      amount numeric(12, 2), active boolean, attrs jsonb)`);
    await c.query(
      `INSERT INTO contacts SELECT i, timestamptz '2024-01-01' + i * interval '1 second', 'user' || i || '@example.com',
         'Name ' || i, (i % 100000) / 100.0, i % 3 = 0, jsonb_build_object('plan', 'pro', 'seats', i % 50)
         FROM generate_series(1, $1) i`,
      [rows],
    );
    await c.query('CREATE INDEX contacts_cursor ON contacts (updated_at, id)');
    await c.query('VACUUM ANALYZE contacts');
    const config = postgresSource.spec.parse({ type: 'postgres', connectionString: db.url });
    const results: Record<string, number[]> = {
      'COPY (SELECT *) TO STDOUT': [],
      'COPY (SELECT * ORDER BY id)': [],
      'read(): full refresh': [],
      'read(): incremental, first sync': [],
      'sync into objects (runner, DuckDB)': [],
    };
    for (let run = 0; run < runs; run++) {
      let t = performance.now();
      let lines = 0;
      const copy = c.query(copyTo('COPY (SELECT * FROM contacts) TO STDOUT'));
      for await (const chunk of copy as AsyncIterable<Buffer>)
        for (let i = chunk.indexOf(10); i >= 0; i = chunk.indexOf(10, i + 1)) lines++;
      if (lines !== rows) throw new Error(`COPY gave ${lines} lines`);
      results['COPY (SELECT *) TO STDOUT']!.push(rows / ((performance.now() - t) / 1000));
      // The same, in the order a full refresh reads (by key, for its checkpoints).
      t = performance.now();
      lines = 0;
      const ordered = c.query(copyTo('COPY (SELECT * FROM contacts ORDER BY id) TO STDOUT'));
      for await (const chunk of ordered as AsyncIterable<Buffer>)
        for (let i = chunk.indexOf(10); i >= 0; i = chunk.indexOf(10, i + 1)) lines++;
      results['COPY (SELECT * ORDER BY id)']!.push(rows / ((performance.now() - t) / 1000));
      t = performance.now();
      results['read(): full refresh']!.push(
        await readConnector(postgresSource as PullSourceConnector<unknown>, config, {
          name: 'public.contacts',
          syncMode: 'full_refresh',
          primaryKey: [],
        }),
      );
      results['read(): incremental, first sync']!.push(
        await readConnector(postgresSource as PullSourceConnector<unknown>, config, {
          name: 'public.contacts',
          syncMode: 'incremental',
          cursorField: 'updated_at',
          primaryKey: [],
        }),
      );
      results['sync into objects (runner, DuckDB)']!.push(await syncObjects(db.url));
    }
    await c.end();
    report('PostgreSQL', results, 'COPY (SELECT *) TO STDOUT');
  } finally {
    await db.drop();
  }
}

async function benchMariadb() {
  const name = `bench_srcdb_${randomBytes(6).toString('hex')}`;
  const c = mysql.createConnection({ host: '127.0.0.1', user: 'root' }).promise();
  await c.query(`CREATE DATABASE ${name}`);
  try {
    await c.query(`CREATE TABLE ${name}.contacts (id bigint PRIMARY KEY, updated_at datetime(6) NOT NULL, email varchar(100),
      name varchar(100), amount decimal(12, 2), active tinyint(1), attrs json, KEY contacts_cursor (updated_at, id))`);
    await c.query(
      `INSERT INTO ${name}.contacts SELECT seq, TIMESTAMP '2024-01-01 00:00:00' + INTERVAL seq SECOND, CONCAT('user', seq, '@example.com'),
         CONCAT('Name ', seq), (seq % 100000) / 100.0, seq % 3 = 0, JSON_OBJECT('plan', 'pro', 'seats', seq % 50)
         FROM ${name}.seq_1_to_${rows}`,
    );
    await c.query(`ANALYZE TABLE ${name}.contacts`);
    const config = mysqlSource.spec.parse({ type: 'mysql', host: '127.0.0.1', user: 'root', database: name });
    const plain = mysql.createConnection({ host: '127.0.0.1', user: 'root', database: name });
    const results: Record<string, number[]> = {
      'SELECT * streamed (mysql2)': [],
      'read(): full refresh': [],
      'read(): incremental, first sync': [],
    };
    for (let run = 0; run < runs; run++) {
      let t = performance.now();
      let n = 0;
      for await (const _ of plain.query('SELECT * FROM contacts').stream({ highWaterMark: 2000 })) n++;
      if (n !== rows) throw new Error(`SELECT gave ${n} rows`);
      results['SELECT * streamed (mysql2)']!.push(rows / ((performance.now() - t) / 1000));
      t = performance.now();
      results['read(): full refresh']!.push(
        await readConnector(mysqlSource as PullSourceConnector<unknown>, config, {
          name: `${name}.contacts`,
          syncMode: 'full_refresh',
          primaryKey: [],
        }),
      );
      results['read(): incremental, first sync']!.push(
        await readConnector(mysqlSource as PullSourceConnector<unknown>, config, {
          name: `${name}.contacts`,
          syncMode: 'incremental',
          cursorField: 'updated_at',
          primaryKey: [],
        }),
      );
    }
    plain.end();
    report('MariaDB', results, 'SELECT * streamed (mysql2)');
  } finally {
    await c.query(`DROP DATABASE ${name}`);
    await c.end();
  }
}

if (databases.includes('postgres')) await benchPostgres();
if (databases.includes('mariadb')) await benchMariadb();
