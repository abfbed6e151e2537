/**
 * The transformation sandbox's cost per event: a simple function (adds a property, renames
 * one) run by the real `Sandbox` (QuickJS in WebAssembly, in a worker thread) over batches of
 * events, against the same function run in this process on the same events with the same JSON
 * copies in and out (the least any isolation that copies values could cost). Medians of the
 * timed batches; the ratio is the figure to compare across machines.
 *
 *   npm run bench:sandbox            (BENCH_BATCH=1000 BENCH_BATCHES=15 BENCH_WARMUP=3)
 */
import { Sandbox } from '../src/pipeline/transform/sandbox.js';
import { envInt } from './lib/env.js';

const BATCH = envInt('BENCH_BATCH', 1000);
const BATCHES = envInt('BENCH_BATCHES', 15);
const WARMUP = envInt('BENCH_WARMUP', 3);

const CODE = `module.exports = (event) => {
  event.properties = { ...event.properties, enriched: true, total: (event.properties.price || 0) * 2 };
  if (event.event === 'Order Completed') event.event = 'order_completed';
  return event;
};`;

function events(n: number, seed: number): unknown[] {
  return Array.from({ length: n }, (_, i) => ({
    type: 'track',
    event: i % 3 === 0 ? 'Order Completed' : 'Product Viewed',
    userId: `u${seed}-${i}`,
    messageId: `m${seed}-${i}`,
    timestamp: '2026-12-07T10:00:00.000Z',
    properties: { price: i % 100, sku: `sku-${i % 37}`, currency: 'EUR' },
    context: { library: { name: 'analytics.js', version: '5.0.0' }, page: { path: '/p' } },
  }));
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  const sandbox = new Sandbox({ code: CODE, filename: 'bench.js', timeoutMs: 1000, memoryMb: 64, env: {} });
  await sandbox.start();
  const module = { exports: undefined as unknown };
  new Function('module', CODE)(module);
  const fn = module.exports as (e: unknown) => unknown;

  const inSandbox: number[] = [];
  const inProcess: number[] = [];
  for (let b = 0; b < WARMUP + BATCHES; b++) {
    const batch = events(BATCH, b);
    let t = process.hrtime.bigint();
    const results = await sandbox.run(batch);
    const sandboxNs = Number(process.hrtime.bigint() - t);
    if (results.some((r) => !r.ok)) throw new Error('a bench event failed in the sandbox');
    t = process.hrtime.bigint();
    const out = batch.map((e) => JSON.parse(JSON.stringify(fn(JSON.parse(JSON.stringify(e))))));
    const processNs = Number(process.hrtime.bigint() - t);
    if (out.length !== BATCH) throw new Error('baseline lost events');
    if (b < WARMUP) continue;
    inSandbox.push(sandboxNs / BATCH / 1000);
    inProcess.push(processNs / BATCH / 1000);
  }
  await sandbox.close();
  const s = median(inSandbox);
  const p = median(inProcess);
  console.log(
    `transformation sandbox, ${BATCHES} batches of ${BATCH} events after ${WARMUP} warm-up (medians)`,
  );
  console.log(`  sandbox (the Sandbox class)   ${s.toFixed(1)} µs/event`);
  console.log(`  baseline (same function in-process, JSON copies)  ${p.toFixed(1)} µs/event`);
  console.log(`  ratio sandbox / baseline  ${(s / p).toFixed(1)}×`);
}

await main();
