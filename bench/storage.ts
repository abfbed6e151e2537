/**
 * What the storage format of the embedded DuckDB files costs: the log's events and the
 * warehouse's payloads written, checkpointed and read back, in files of the format DuckDB
 * writes by default (v1.0.0: the log forces FSST, the warehouse leaves the choice to DuckDB)
 * and in the server's (v1.2.0, zstd forced on both; src/platform/duckdb/duckdb-storage.ts). Rounds alternate
 * the two formats in one run, on the same generated events.
 *
 *   npm run bench:storage
 *   BENCH_EVENTS=100000 BENCH_ROUNDS=5 npm run bench:storage
 *
 * Environment: BENCH_EVENTS (events per round, default 200,000, each distinct: the pool of
 * generated events is as large as the round, so no two events repeat but their messageIds),
 * BENCH_ROUNDS (rounds per format, default 3). Per round: the events appended to the log in
 * appends of 100 with 50 in flight (as the ingest benchmark's batches), loaded into `events`
 * in transactions of 10,000 (as the loader), every file checkpointed; then, after a restart, a
 * scan of the payloads and a read of the log from its tables. The log's CPU includes the
 * checkpoints of the segments it filled (it is closed before the load); the last columns'
 * checkpoints are those of what was still in a WAL: the active segment and the warehouse.
 */
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { StorageConfig } from '../src/config/schema.js';
import { DuckDBEventLog } from '../src/log/duckdb/duckdb-event-log.js';
import type { RawEvent } from '../src/log/event-log.js';
import { toEventRow } from '../src/pipeline/warehouse-loader.js';
import { embeddedDuckDBOptions } from '../src/platform/duckdb/duckdb-options.js';
import { DuckDBStore } from '../src/store/duckdb/duckdb-store.js';
import { envInt } from './lib/env.js';
import { BodyPool, MessageIds } from './lib/events.js';
import { int, markdownTable } from './lib/report.js';

const EVENTS = envInt('BENCH_EVENTS', 200_000);
const ROUNDS = envInt('BENCH_ROUNDS', 3);
const PER_APPEND = 100;
const IN_FLIGHT = 50;
const LOAD_BATCH = 10_000;

type Format = 'v1.0.0' | 'v1.2.0';
const FORMATS: Format[] = ['v1.0.0', 'v1.2.0'];

interface Round {
  format: Format;
  logCpuUs: number;
  loadCpuUs: number;
  checkpointCpuUs: number;
  logBytes: number;
  warehouseBytes: number;
  scanMs: number;
  readMs: number;
}

/** Realistic server-side events (the ingest benchmark's), distinct, with the fields the server adds. */
function makeEvents(n: number): RawEvent[] {
  const bodies = new BodyPool(new MessageIds(), { eventsPerRequest: 1, size: n, seed: 11 });
  const receivedAt = Date.now();
  const out: RawEvent[] = [];
  for (let i = 0; i < n; i++) {
    const e = JSON.parse(bodies.next().toString()) as Record<string, unknown>;
    e.type = 'track';
    e.receivedAt = new Date(receivedAt + i).toISOString();
    out.push({
      sourceId: 'web',
      messageId: String(e.messageId),
      receivedAt: receivedAt + i,
      status: 'accepted',
      json: JSON.stringify(e),
    });
  }
  return out;
}

function cpuMicros(since: NodeJS.CpuUsage): number {
  const u = process.cpuUsage(since);
  return u.user + u.system;
}

function bytesUnder(dir: string): number {
  let n = 0;
  for (const f of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (f.isFile()) n += statSync(join(f.parentPath, f.name)).size;
  }
  return n;
}

async function open(dir: string, format: Format) {
  const instance = await DuckDBInstance.create(join(dir, 'warehouse.duckdb'), {
    ...embeddedDuckDBOptions(StorageConfig.parse({})),
    storage_compatibility_version: format,
  });
  const conn = await instance.connect();
  await conn.run(`ATTACH IF NOT EXISTS '${join(dir, 'log.duckdb')}' AS log`);
  const log = await DuckDBEventLog.open(instance, { segmentDir: join(dir, 'segments'), tailRecords: 0 });
  const warehouse = await DuckDBStore.open(instance);
  return { instance, conn, log, warehouse };
}

async function round(format: Format, events: RawEvent[]): Promise<Round> {
  const dir = mkdtempSync(join(tmpdir(), 'tributary-bench-storage-'));
  try {
    let { instance, conn, log, warehouse } = await open(dir, format);
    let next = 0;
    const logStart = process.cpuUsage();
    await Promise.all(
      Array.from({ length: IN_FLIGHT }, async () => {
        while (next < events.length) {
          const from = next;
          next += PER_APPEND;
          await log.append(events.slice(from, from + PER_APPEND));
        }
      }),
    );
    // Closing waits for the background checkpoints of the segments the log filled.
    await log.close();
    const logCpuUs = cpuMicros(logStart);
    const loadStart = process.cpuUsage();
    for (let from = 0; from < events.length; from += LOAD_BATCH) {
      const part = events.slice(from, from + LOAD_BATCH);
      await warehouse.write({
        events: part.map((r, i) => toEventRow({ ...r, offset: from + i })),
        failed: [],
        consumer: 'warehouse',
        nextOffset: from + part.length,
        fromOffset: from,
      });
    }
    const loadCpuUs = cpuMicros(loadStart);
    // Whatever is still in a WAL, checkpointed: the active log segment and the warehouse.
    const checkpointStart = process.cpuUsage();
    const catalogs = await conn.runAndReadAll(
      `SELECT database_name FROM duckdb_databases() WHERE NOT internal AND path IS NOT NULL`,
    );
    for (const [name] of catalogs.getRows()) await conn.run(`CHECKPOINT "${String(name)}"`);
    const checkpointCpuUs = cpuMicros(checkpointStart);
    await warehouse.close();
    conn.closeSync();
    instance.closeSync();
    const logBytes = bytesUnder(join(dir, 'segments'));
    const warehouseBytes = statSync(join(dir, 'warehouse.duckdb')).size;

    ({ instance, conn, log, warehouse } = await open(dir, format));
    let t = performance.now();
    const scan = await conn.runAndReadAll(
      `SELECT count(*) FROM events WHERE json_extract_string(payload, '$.event') = 'Order Completed'`,
    );
    if (Number(scan.getRows()[0]![0]) === 0) throw new Error('scan found no events');
    const scanMs = performance.now() - t;
    t = performance.now();
    let read = 0;
    for (let from = 0; from < events.length; ) {
      const batch = await log.read(from, 5000);
      if (batch.length === 0) break;
      read += batch.length;
      from = batch[batch.length - 1]!.offset + 1;
    }
    const readMs = performance.now() - t;
    if (read !== events.length) throw new Error(`read ${read} of ${events.length} records back`);
    await log.close();
    await warehouse.close();
    conn.closeSync();
    instance.closeSync();
    return { format, logCpuUs, loadCpuUs, checkpointCpuUs, logBytes, warehouseBytes, scanMs, readMs };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

console.log(
  `storage formats: ${int(EVENTS)} distinct events per round, ${ROUNDS} rounds per format, alternating; ` +
    `${availableParallelism()} cores (${cpus()[0]?.model}), Node ${process.version}, load average ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
);
const events = makeEvents(EVENTS);
const meanBytes = Math.round(events.reduce((n, e) => n + e.json.length, 0) / events.length);
console.log(`mean event ${meanBytes} bytes of JSON`);
const results: Round[] = [];
for (let r = 0; r < ROUNDS; r++) {
  for (const format of r % 2 === 0 ? FORMATS : [...FORMATS].reverse()) {
    const res = await round(format, events);
    results.push(res);
    console.log(
      `  round ${r + 1} ${format}: log ${(res.logCpuUs / EVENTS).toFixed(2)} µs, load ${(res.loadCpuUs / EVENTS).toFixed(2)} µs, ` +
        `final checkpoints ${(res.checkpointCpuUs / EVENTS).toFixed(2)} µs of CPU per event; ` +
        `files ${(res.logBytes / 1e6).toFixed(1)} + ${(res.warehouseBytes / 1e6).toFixed(1)} MB; ` +
        `scan ${res.scanMs.toFixed(0)} ms, log read ${res.readMs.toFixed(0)} ms`,
    );
  }
}
const rows = FORMATS.map((format) => {
  const mine = results.filter((r) => r.format === format);
  const m = (f: (r: Round) => number) => median(mine.map(f));
  return [
    format === 'v1.0.0' ? 'v1.0.0 (DuckDB default; log FSST)' : 'v1.2.0 (server; zstd)',
    (m((r) => r.logCpuUs) / EVENTS).toFixed(2),
    (m((r) => r.loadCpuUs) / EVENTS).toFixed(2),
    (m((r) => r.checkpointCpuUs) / EVENTS).toFixed(2),
    (m((r) => r.logCpuUs + r.loadCpuUs + r.checkpointCpuUs) / EVENTS).toFixed(2),
    (m((r) => r.logBytes) / 1e6).toFixed(1),
    (m((r) => r.warehouseBytes) / 1e6).toFixed(1),
    m((r) => r.scanMs).toFixed(0),
    m((r) => r.readMs).toFixed(0),
  ];
});
console.log(
  markdownTable(
    [
      'format',
      'log µs/event',
      'load µs/event',
      'final checkpoints µs/event',
      'total µs/event',
      'log files MB',
      'warehouse MB',
      'payload scan ms',
      'log read ms',
    ],
    rows,
    ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r'],
  ),
);
console.log('(medians of the rounds; CPU of the whole process, DuckDB threads included)');
