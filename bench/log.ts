/**
 * The embedded event log alone: how many records per second DuckDB's log takes, and at what
 * CPU per record, with no HTTP, no parsing and nothing consuming it. It bounds what collection
 * can reach on this machine: every acknowledged event is one record appended here.
 *
 *   npm run bench:log
 *   BENCH_SECONDS=10 BENCH_IN_FLIGHT=50 npm run bench:log
 *
 * Environment: BENCH_SECONDS (per scenario, default 10), BENCH_IN_FLIGHT (appends waiting at
 * once, default 50, as the ingest benchmark's connections). Scenarios: appends of 1 record
 * (single events) and of 100 (batches). The records are realistic track events (bench/lib/
 * events.ts), built before the clock starts, in the server's DuckDB settings.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { DuckDBEventLog } from '../src/log/duckdb/duckdb-event-log.js';
import type { RawEvent } from '../src/log/event-log.js';
import { embeddedDuckDBOptions } from '../src/platform/duckdb/duckdb-options.js';
import { envInt, envNumber } from './lib/env.js';
import { BodyPool, MessageIds } from './lib/events.js';
import { int, markdownTable } from './lib/report.js';

const SECONDS = envNumber('BENCH_SECONDS', 10);
const IN_FLIGHT = envInt('BENCH_IN_FLIGHT', 50);
/** Distinct appends built up front and cycled (the log does not look at messageIds). */
const POOL = 500;

interface Result {
  perAppend: number;
  records: number;
  seconds: number;
  cpuMicros: number;
}

async function scenario(perAppend: number): Promise<Result> {
  const dir = mkdtempSync(join(tmpdir(), 'tributary-bench-log-'));
  try {
    const instance = await DuckDBInstance.create(
      join(dir, 'warehouse.duckdb'),
      embeddedDuckDBOptions({ memoryLimit: '2GB' }),
    );
    const setup = await instance.connect();
    await setup.run(`ATTACH '${join(dir, 'log.duckdb')}' AS log`);
    setup.closeSync();
    const log = await DuckDBEventLog.open(instance, {
      catalog: 'log',
      segmentDir: join(dir, 'log-segments'),
    });
    const bodies = new BodyPool(new MessageIds(), { eventsPerRequest: 1, size: 256, seed: 7 });
    const appends: RawEvent[][] = [];
    for (let a = 0; a < POOL; a++) {
      const records: RawEvent[] = [];
      for (let i = 0; i < perAppend; i++) {
        const json = bodies.next().toString();
        records.push({
          sourceId: 'web',
          messageId: (JSON.parse(json) as { messageId: string }).messageId,
          receivedAt: Date.now(),
          status: 'accepted',
          json,
        });
      }
      appends.push(records);
    }
    let next = 0;
    let records = 0;
    const end = performance.now() + SECONDS * 1000;
    const cpu = process.cpuUsage();
    const start = performance.now();
    await Promise.all(
      Array.from({ length: IN_FLIGHT }, async () => {
        while (performance.now() < end) {
          const batch = appends[next++ % POOL]!;
          await log.append(batch);
          records += batch.length;
        }
      }),
    );
    const seconds = (performance.now() - start) / 1000;
    const used = process.cpuUsage(cpu);
    await log.close();
    instance.closeSync();
    return { perAppend, records, seconds, cpuMicros: used.user + used.system };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

console.log(
  `embedded log alone: ${IN_FLIGHT} appends in flight, ${SECONDS} s per scenario; ` +
    `${availableParallelism()} cores (${cpus()[0]?.model}), Node ${process.version}, load average ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
);
const rows: string[][] = [];
for (const perAppend of [1, 100]) {
  const r = await scenario(perAppend);
  rows.push([
    String(r.perAppend),
    int(r.records / r.seconds),
    (r.cpuMicros / r.records).toFixed(1),
    `${Math.round((100 * r.cpuMicros) / 1e6 / r.seconds)}%`,
  ]);
}
console.log(
  markdownTable(['records per append', 'records/s', 'CPU µs per record', 'CPU (share of one core)'], rows, [
    'r',
    'r',
    'r',
    'r',
  ]),
);
