/**
 * One measurement, not a test: a reverse-ETL model of 1,000,000 rows in the embedded
 * warehouse (DuckDB), synced to a local HTTP receiver that takes batches (a child process:
 * node:http, JSON.parse of each batch, one result per row). In the same run:
 *
 * - **full send** (the baseline): the model's rows, mapped to JSON by DuckDB, streamed out and
 *   sent in batches through the same destination, with no snapshot — what a sync without
 *   diffing does on every run;
 * - **first run**: `runModel` with an empty snapshot (every row is new: sent, and recorded);
 * - **diffing runs**: 1% of the rows changed (`UPDATE … WHERE id % 100 = k`), then `runModel`,
 *   which diffs the result against the snapshot in DuckDB and sends the 10,000 changed rows;
 * - **no-change run**: `runModel` with nothing changed (the diff's own cost).
 *
 *   flock /tmp/bench.lock npm run bench:reverse-etl -- [rows=1000000] [rounds=3]
 *
 * Medians over `rounds` for the diffing runs; the first run is measured once, the full send
 * before and after the diffing runs, the faster one the baseline (the machine's load moves).
 */

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { DuckDBInstance } from '@duckdb/node-api';
import { runModel, toDelivery } from '../src/destinations/reverse-etl/model-sync.js';
import { ModelConfig } from '../src/destinations/reverse-etl/spec.js';
import type { Delivery, SendResult, StreamDestination } from '../src/destinations/stream.js';
import { DuckDBModelStore } from '../src/store/duckdb/duckdb-model-store.js';
import { int, markdownTable } from './lib/report.js';

const [rows = 1_000_000, rounds = 3] = process.argv.slice(2).map(Number);
const BATCH = 1000;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** The receiver: a child process so its parsing does not share the sender's event loop. */
const RECEIVER = `
const http = require('node:http');
let rows = 0;
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const batch = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    rows += batch.length;
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify(batch.map(() => ({ status: 'ok' }))));
  });
});
server.keepAliveTimeout = 60000;
server.listen(0, '127.0.0.1', () => console.log(server.address().port));
process.on('message', () => process.send(rows));
`;

async function startReceiver() {
  const child = spawn(process.execPath, ['-e', RECEIVER], { stdio: ['ignore', 'pipe', 'inherit', 'ipc'] });
  const [line] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string];
  const url = `http://127.0.0.1:${line.trim()}`;
  const received = async () => {
    child.send('count');
    const [n] = (await once(child, 'message')) as [number];
    return n;
  };
  return { url, received, stop: () => child.kill() };
}

/** The streaming destination under test: a batch per POST, a result per row. */
function httpDestination(url: string): StreamDestination {
  return {
    id: 'receiver',
    async send(batch: readonly Delivery[], signal: AbortSignal): Promise<SendResult[]> {
      const res = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(batch),
        signal,
      });
      if (!res.ok) throw new Error(`receiver answered ${res.status}`);
      return (await res.json()) as SendResult[];
    },
    async close() {},
  };
}

const dir = mkdtempSync(join(tmpdir(), 'bench-retl-'));
const instance = await DuckDBInstance.create(join(dir, 'warehouse.duckdb'));
const conn = await instance.connect();
const rx = await startReceiver();
try {
  let t = performance.now();
  await conn.run(
    `CREATE TABLE customers AS
     SELECT i AS id, 'user' || i || '@example.com' AS email, ['free', 'pro', 'team'][1 + i % 3] AS plan,
            round(i * 1.37 % 5000, 2) AS ltv, TIMESTAMPTZ '2026-01-01' + to_seconds(i) AS last_seen
     FROM range(${rows}) t(i)`,
  );
  console.error(`table of ${int(rows)} rows in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  const store = await DuckDBModelStore.open(instance);
  const model = ModelConfig.parse({
    id: 'customers',
    sql: 'SELECT id, email, plan, ltv, last_seen FROM customers',
    primaryKey: 'id',
    destination: 'receiver',
    syncMode: 'upsert',
    batchSize: BATCH,
    mapping: {
      id: 'userId',
      email: 'traits.email',
      plan: 'traits.plan',
      ltv: 'traits.ltv',
      last_seen: 'traits.lastSeen',
    },
  });
  const destination = httpDestination(rx.url);
  const opts = { store, openDestination: async () => destination };

  // Baseline: every row out of DuckDB, mapped the same way, sent in the same batches; no snapshot.
  const fullSend = async (): Promise<{ sent: number; ms: number }> => {
    const t0 = performance.now();
    const reader = await instance.connect();
    const stream = await reader.stream(
      `SELECT CAST(json_array(q.id) AS VARCHAR), CAST(json_object('userId', q.id, 'traits', json_object('email', q.email,
         'plan', q.plan, 'ltv', q.ltv, 'lastSeen', q.last_seen)) AS VARCHAR)
       FROM (SELECT id, email, plan, ltv, last_seen FROM customers) q`,
    );
    let batch: Delivery[] = [];
    let sent = 0;
    const flush = async () => {
      const results = await destination.send(batch, AbortSignal.timeout(30_000));
      sent += results.filter((r) => r.status === 'ok').length;
      batch = [];
    };
    for (;;) {
      const chunk = await stream.fetchChunk();
      if (!chunk || chunk.rowCount === 0) break;
      for (const [key, payload] of chunk.getRows()) {
        batch.push(
          toDelivery(
            'customers',
            { kind: 'added', key: String(key), checksum: 'full', payload: String(payload) },
            'upsert',
          ),
        );
        if (batch.length >= BATCH) await flush();
      }
    }
    if (batch.length > 0) await flush();
    reader.closeSync();
    const ms = performance.now() - t0;
    console.error(`full send: ${int(sent)} rows in ${(ms / 1000).toFixed(1)} s`);
    return { sent, ms };
  };
  const before = await fullSend();

  t = performance.now();
  const first = await runModel(model, opts, 'bench');
  const firstMs = performance.now() - t;
  if (first.added !== rows)
    throw new Error(`first run sent ${first.added} rows, not ${rows}: ${first.error}`);
  console.error(`first run: ${int(first.added)} rows in ${(firstMs / 1000).toFixed(1)} s`);

  const diffMs: number[] = [];
  const noChangeMs: number[] = [];
  for (let k = 0; k < rounds; k++) {
    await conn.run(`UPDATE customers SET ltv = ltv + 1 WHERE id % 100 = ${k}`);
    t = performance.now();
    const r = await runModel(model, opts, 'bench');
    diffMs.push(performance.now() - t);
    if (r.changed !== Math.ceil((rows - k) / 100) || r.added !== 0 || r.failed !== 0)
      throw new Error(`diffing run ${k}: ${JSON.stringify(r)}`);
    t = performance.now();
    const none = await runModel(model, opts, 'bench');
    noChangeMs.push(performance.now() - t);
    if (none.changed + none.added + none.removed !== 0)
      throw new Error(`no-change run sent rows: ${JSON.stringify(none)}`);
    console.error(
      `round ${k + 1}: ${int(r.changed)} changed rows sent in ${(diffMs[k]! / 1000).toFixed(2)} s; no change ${(noChangeMs[k]! / 1000).toFixed(2)} s`,
    );
  }
  // Measured again after the diffing runs: the machine's load moves during a run, and the
  // ratio is taken against the faster of the two (the smaller claim).
  const after = await fullSend();
  const fullMs = Math.min(before.ms, after.ms);
  const sentFull = before.sent;
  const received = await rx.received();
  const diff = median(diffMs);
  console.log(
    `\n${int(rows)} rows, ${BATCH} per request, ${rounds} rounds, ${cpus().length} cores, load ${loadavg()[0]!.toFixed(1)}; receiver took ${int(received)} rows\n`,
  );
  console.log(
    markdownTable(
      ['run', 'rows sent', 'time (s)', 'rows/s', 'vs full send'],
      [
        [
          `full send, no diff (baseline: faster of ${(before.ms / 1000).toFixed(1)} s before, ${(after.ms / 1000).toFixed(1)} s after)`,
          int(sentFull),
          (fullMs / 1000).toFixed(2),
          int(sentFull / (fullMs / 1000)),
          '1.00×',
        ],
        [
          'first run (empty snapshot)',
          int(first.added),
          (firstMs / 1000).toFixed(2),
          int(first.added / (firstMs / 1000)),
          `${(fullMs / firstMs).toFixed(2)}×`,
        ],
        [
          'diffing run, 1% changed (median)',
          int(Math.ceil(rows / 100)),
          (diff / 1000).toFixed(2),
          '—',
          `${(fullMs / diff).toFixed(1)}× faster`,
        ],
        [
          'no-change run (median)',
          '0',
          (median(noChangeMs) / 1000).toFixed(2),
          '—',
          `${(fullMs / median(noChangeMs)).toFixed(1)}× faster`,
        ],
      ],
      ['l', 'r', 'r', 'r', 'r'],
    ),
  );
  await store.close();
} finally {
  rx.stop();
  conn.closeSync();
  instance.closeSync();
  rmSync(dir, { recursive: true, force: true });
}
