/**
 * What recording delivery attempts costs (lineage, `delivery_attempts`):
 *
 * 1. A delivery loop: batches of events POSTed to a local HTTP receiver (a bare node:http
 *    server in this process that parses the JSON and answers 200), one attempt per event
 *    recorded through `LineageRecorder` into a DuckDB store in a temporary folder, against the
 *    same loop recording nothing. Rounds alternate; medians of events/s and the ratio.
 * 2. The store alone: attempts/s `LineageRecorder` writes into DuckDB (and PostgreSQL when it
 *    answers at 127.0.0.1:5432), and CPU µs per attempt.
 *
 *   npm run bench:lineage     (BENCH_ROUNDS=5 BENCH_SECONDS=4 BENCH_BATCH=100 BENCH_ATTEMPTS=200000)
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import type { AttemptRecorder, DeliveryAttempt } from '../src/destinations/stream.js';
import { LineageRecorder } from '../src/observe/lineage/attempt-recorder.js';
import { DuckDBStore } from '../src/store/duckdb/duckdb-store.js';
import { PostgresStore } from '../src/store/postgres/postgres-store.js';
import type { Store } from '../src/store/store.js';
import { pgUnreachable, scratchDatabase } from '../test/pg.js';
import { envInt } from './lib/env.js';

const ROUNDS = envInt('BENCH_ROUNDS', 5);
const SECONDS = envInt('BENCH_SECONDS', 4);
const BATCH = envInt('BENCH_BATCH', 100);
const ATTEMPTS = envInt('BENCH_ATTEMPTS', 200_000);

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const none: AttemptRecorder = { record: async () => {} };

function payload(i: number) {
  return {
    type: 'track',
    event: 'Order Completed',
    userId: `u${i % 5000}`,
    messageId: `m-${i}`,
    timestamp: '2026-12-08T01:00:00.000Z',
    properties: { total: i % 100, currency: 'EUR', sku: `sku-${i % 37}` },
  };
}

/** Sends batches for `seconds`; every event's attempt goes to `recorder`. Returns events/s. */
async function deliveryLoop(
  url: string,
  recorder: AttemptRecorder,
  seconds: number,
  offset: number,
): Promise<number> {
  const end = performance.now() + seconds * 1000;
  let n = 0;
  while (performance.now() < end) {
    const batch = Array.from({ length: BATCH }, (_, i) => payload(offset + n + i));
    const t0 = performance.now();
    const res = await fetch(url, {
      method: 'POST',
      body: JSON.stringify({ batch }),
      headers: { 'content-type': 'application/json' },
    });
    await res.arrayBuffer();
    const latency = performance.now() - t0;
    const at = new Date();
    const attempts: DeliveryAttempt[] = batch.map((e) => ({
      destination: 'hook',
      messageId: e.messageId,
      attempt: 1,
      at,
      status: res.ok ? 'ok' : 'retryable',
      latencyMs: latency,
      detail: `HTTP ${res.status}`,
    }));
    await recorder.record(attempts);
    n += batch.length;
  }
  return n / seconds;
}

async function storeAlone(name: string, store: Store): Promise<void> {
  const rec = new LineageRecorder(store, { flushMs: 1000 });
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const at = new Date();
  for (let i = 0; i < ATTEMPTS; i += 1000) {
    const list: DeliveryAttempt[] = [];
    for (let j = i; j < Math.min(ATTEMPTS, i + 1000); j++)
      list.push({
        destination: 'hook',
        messageId: `m-${j}`,
        attempt: 1,
        at,
        status: 'ok',
        latencyMs: 1.5,
        detail: 'HTTP 200',
      });
    await rec.record(list);
  }
  await rec.stop();
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  console.log(
    `${name}: ${ATTEMPTS} attempts written in ${ms.toFixed(0)} ms = ${Math.round((ATTEMPTS / ms) * 1000)} attempts/s, ` +
      `${((cpu.user + cpu.system) / ATTEMPTS).toFixed(2)} µs CPU/attempt (this process; DuckDB's threads included)`,
  );
  const t1 = performance.now();
  await store.attemptsOf(`m-${ATTEMPTS >> 1}`);
  console.log(
    `${name}: attemptsOf one messageId among ${ATTEMPTS}: ${(performance.now() - t1).toFixed(1)} ms`,
  );
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'bench-lineage-'));
  const receiver = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      JSON.parse(Buffer.concat(chunks).toString('utf8'));
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
    });
  });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/`;
  const instance = await DuckDBInstance.create(join(dir, 'warehouse.duckdb'));
  const store = await DuckDBStore.open(instance);
  const recorder = new LineageRecorder(store);
  recorder.start();
  try {
    await deliveryLoop(url, none, 1, 0); // warm-up
    const rates = { none: [] as number[], recorded: [] as number[] };
    const cpuPerEvent = { none: [] as number[], recorded: [] as number[] };
    const pairs: number[] = [];
    let offset = 1_000_000;
    for (let r = 0; r < ROUNDS; r++) {
      for (const kind of r % 2 === 0 ? (['none', 'recorded'] as const) : (['recorded', 'none'] as const)) {
        const cpu0 = process.cpuUsage();
        const rate = await deliveryLoop(url, kind === 'none' ? none : recorder, SECONDS, offset);
        offset += 10_000_000;
        if (kind === 'recorded') await recorder.flush();
        const cpu = process.cpuUsage(cpu0);
        const us = (cpu.user + cpu.system) / (rate * SECONDS);
        rates[kind].push(rate);
        cpuPerEvent[kind].push(us);
        console.log(
          `round ${r + 1} ${kind.padEnd(8)} ${Math.round(rate)} events/s, ${us.toFixed(2)} µs CPU/event (sender, receiver and recorder)`,
        );
      }
      pairs.push(rates.recorded[r]! / rates.none[r]!);
    }
    console.log(
      `per-round ratios recorded/none: ${pairs.map((p) => p.toFixed(3)).join(', ')} (median ${median(pairs).toFixed(3)}); ` +
        `CPU per event: none ${median(cpuPerEvent.none).toFixed(2)} µs, recorded ${median(cpuPerEvent.recorded).toFixed(2)} µs (medians)`,
    );
    const a = median(rates.none);
    const b = median(rates.recorded);
    console.log(
      `delivery loop, batches of ${BATCH}: none ${Math.round(a)} events/s, recorded ${Math.round(b)} events/s (median of ${ROUNDS}), ratio ${(b / a).toFixed(3)}; attempts written ${recorder.written}`,
    );
    await recorder.stop();
    const fresh = await DuckDBStore.open(await DuckDBInstance.create(join(dir, 'alone.duckdb')));
    await storeAlone('duckdb store', fresh);
    await fresh.close();
    if ((await pgUnreachable()) === undefined) {
      const db = await scratchDatabase('bench_lineage');
      const pg = await PostgresStore.open({ url: db.url });
      try {
        await storeAlone('postgres store', pg);
      } finally {
        await pg.close();
        await db.drop();
      }
    } else console.log('postgres store: skipped (PostgreSQL does not answer at 127.0.0.1:5432)');
  } finally {
    await store.close();
    instance.closeSync();
    receiver.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
