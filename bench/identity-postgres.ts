/**
 * One measurement, not a test: identity events/s on PostgreSQL with one `SharedIdentityStage`
 * and with two concurrent stages (two pools, as two worker processes, each following one
 * partition), against the in-memory engine over the same events (the baseline, same run).
 *
 *   npx tsx bench/identity-postgres.ts [events=20000] [batch=5000] [runs=3]
 */
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { IdentityConfig } from '../src/config/identity-schema.js';
import { compileRules } from '../src/identity/identifiers.js';
import { IdentityEngine, toIdentityEvent } from '../src/identity/identity-engine.js';
import { SharedIdentityStage } from '../src/identity/postgres/shared-identity-stage.js';
import type { StoredEvent } from '../src/store/store.js';
import { scratchDatabase, toStored } from '../test/identity/pg-harness.js';
import { partitionOf, workload } from '../test/identity/workload.js';

const [total = 20_000, batch = 5_000, runs = 3] = process.argv.slice(2).map(Number);
const rules = compileRules(
  IdentityConfig.parse({ computed: [{ name: 'orders', op: 'count', event: 'Order Completed' }] }),
);
const events = toStored(workload(42, total / 10, 10), 0);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function feed(stage: SharedIdentityStage, evs: readonly StoredEvent[]) {
  for (let at = 0; at < evs.length; at += batch) {
    const b = evs.slice(at, at + batch);
    await stage.handle(b, b[b.length - 1]!.logOffset + 1);
  }
}

const db = await scratchDatabase();
const results: Record<string, number[]> = { memory: [], one: [], two: [] };
try {
  for (let run = 0; run < runs; run++) {
    let t = performance.now();
    const engine = new IdentityEngine(rules);
    for (const s of events) engine.resolve(toIdentityEvent(s, rules));
    results.memory!.push(events.length / ((performance.now() - t) / 1000));

    const pool = new pg.Pool(db.config);
    const one = await SharedIdentityStage.open({ pool, schema: `one${run}`, rules, consumer: 'identity:p0' });
    t = performance.now();
    await feed(one, events);
    results.one!.push(events.length / ((performance.now() - t) / 1000));
    await pool.end();

    const pools = [new pg.Pool(db.config), new pg.Pool(db.config)];
    const stages = await Promise.all(
      pools.map((p, i) =>
        SharedIdentityStage.open({ pool: p, schema: `two${run}`, rules, consumer: `identity:p${i}` }),
      ),
    );
    const parts = [0, 1].map((i) => events.filter((s) => partitionOf(s, 2) === i));
    t = performance.now();
    await Promise.all(stages.map((s, i) => feed(s, parts[i]!)));
    results.two!.push(events.length / ((performance.now() - t) / 1000));
    await Promise.all(pools.map((p) => p.end()));
  }
} finally {
  await db.drop();
}
const m = Object.fromEntries(Object.entries(results).map(([k, v]) => [k, median(v)]));
console.log(`${events.length} events, batches of ${batch}, median of ${runs} runs (events/s):`);
console.log(`  in-memory engine (baseline)      ${Math.round(m.memory!)}`);
console.log(
  `  one SharedIdentityStage          ${Math.round(m.one!)}  (${(m.one! / m.memory!).toFixed(3)} of baseline)`,
);
console.log(
  `  two concurrent stages (2 pools)  ${Math.round(m.two!)}  (${(m.two! / m.one!).toFixed(2)}× one stage)`,
);
