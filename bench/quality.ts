/**
 * Quality benchmark: ingest-to-warehouse throughput with a realistic tracking plan, mapping
 * and PII policy on, against the same run with them off.
 *
 *   npm run bench:quality
 *   BENCH_EVENTS=50000 BENCH_ROUNDS=3 npm run bench:quality
 *
 * Environment: BENCH_EVENTS (events per run, default 100,000), BENCH_ROUNDS (runs per mode,
 * default 3), BENCH_CONCURRENCY (requests in flight, default 8), BENCH_BATCH_SIZE (events per
 * request, default 100).
 *
 * Three measurements per round, each with the stages off and on, modes alternating so drift
 * on the shared machine hits both:
 *
 * 1. end to end: a fresh server (a child process, `tributary start` under tsx) on a fresh data
 *    folder; the events go as batches through the collection API, and the clock stops when
 *    the loader has written the last of them to `events` (polled on /healthz);
 * 2. collection CPU, in this process: envelope checks (normalizeEvent), the privacy policy when
 *    on, and serialisation of every event, as the collection route does per event;
 * 3. loader, in this process: the records are appended to a fresh DuckDB event log first, then a
 *    loader (with the source's stages when on) is started and timed until it has written them
 *    all to the DuckDB warehouse.
 *
 * The events are the ingest benchmark's (bench/lib/events.ts): every one passes the plan, so
 * both modes load the same rows. Prints medians per mode and the ratios; JSON to bench/results/.
 */

import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DuckDBInstance } from '@duckdb/node-api';
import { parseConfig } from '../src/config/load.js';
import { StorageConfig } from '../src/config/schema.js';
import { DuckDBEventLog } from '../src/log/duckdb/duckdb-event-log.js';
import type { RawEvent } from '../src/log/event-log.js';
import { WarehouseLoader } from '../src/pipeline/warehouse-loader.js';
import { embeddedDuckDBOptions } from '../src/platform/duckdb/duckdb-options.js';
import { buildQuality, closeStages } from '../src/server/quality-setup.js';
import { isPlainObject } from '../src/spec/event.js';
import { normalizeEvent } from '../src/spec/normalize.js';
import { DuckDBStore } from '../src/store/duckdb/duckdb-store.js';
import { serverNodeOptions } from './lib/build.js';
import { envInt } from './lib/env.js';
import { BodyPool, EVENT_NAMES, MessageIds } from './lib/events.js';
import { freePort, sleep, spawnChild, stopChild, waitReady } from './lib/proc.js';
import { int, markdownTable, pct } from './lib/report.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const WRITE_KEY = 'wk_web_123';
const TOKEN = 'bench-admin-token';

const EVENTS = envInt('BENCH_EVENTS', 100_000);
const ROUNDS = envInt('BENCH_ROUNDS', 3);
const CONCURRENCY = envInt('BENCH_CONCURRENCY', 8);
const BATCH = envInt('BENCH_BATCH_SIZE', 100);

const PRODUCT_SCHEMA = {
  type: 'object',
  required: ['product_id', 'price', 'currency'],
  properties: {
    product_id: { type: 'string', pattern: '^sku-\\d+$' },
    name: { type: 'string', maxLength: 200 },
    price: { type: 'number', minimum: 0 },
    quantity: { type: 'integer', minimum: 1 },
    currency: { enum: ['USD', 'EUR', 'GBP'] },
  },
};
const PLAN = {
  name: 'web',
  onViolation: 'block',
  onUnplannedEvent: 'block',
  context: {
    type: 'object',
    required: ['library'],
    properties: { library: { type: 'object', required: ['name'] }, ip: { type: 'string' } },
  },
  events: Object.fromEntries(EVENT_NAMES.map((n) => [n, { properties: PRODUCT_SCHEMA }])),
};

function config(quality: boolean, planFile: string): string {
  const base = `version: 1
sources:
  - id: web
    type: http
    writeKey: ${WRITE_KEY}
`;
  if (!quality) return base;
  return `${base}    plans:
      - file: ${planFile}
    mapping:
      events:
        aliases:
          Product Added: [add_to_cart, product_added]
          Order Completed: [purchase, order_complete]
        style: title_case
      fields:
        product_id: [sku, productId]
        email: [email_address, primary_email, contact_email]
      normalize:
        currency: [trim]
        email: [email]
        phone: [e164]
    privacy:
      policy:
        block: [card_number, ssn]
        drop: [red]
        mask: [ip]
        hash: [email, phone]
`;
}

interface Health {
  log: { endOffset: number };
  loader: { position: number };
}

async function health(url: string): Promise<Health> {
  const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(5000) });
  return (await res.json()) as Health;
}

interface RunResult {
  mode: 'off' | 'on';
  events: number;
  ingestMs: number;
  totalMs: number;
  eventsPerSec: number;
  loaded: number;
}

async function runOnce(mode: 'off' | 'on', pool: BodyPool, planFile: string): Promise<RunResult> {
  const dir = mkdtempSync(join(tmpdir(), `bench-quality-${mode}-`));
  writeFileSync(join(dir, 'tributary.yaml'), config(mode === 'on', planFile));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child = spawnChild(
    `tributary (${mode})`,
    process.execPath,
    [
      ...serverNodeOptions(ROOT),
      '--import',
      import.meta.resolve('tsx'),
      join(ROOT, 'src/cli/index.ts'),
      'start',
      '--port',
      String(port),
      '--data-dir',
      dir,
    ],
    {
      cwd: dir,
      env: {
        ...process.env,
        TRIBUTARY_ADMIN_TOKEN: TOKEN,
        TRIBUTARY_LOG_LEVEL: 'warn',
        TRIBUTARY_PII_SALT: 'bench',
      },
      logFile: join(dir, 'server.log'),
    },
  );
  try {
    await waitReady(child, async () => (await fetch(`${url}/healthz`)).ok, 60_000);
    const auth = `Basic ${Buffer.from(`${WRITE_KEY}:`).toString('base64')}`;
    const requests = Math.ceil(EVENTS / BATCH);
    let next = 0;
    const started = performance.now();
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < requests) {
          next++;
          const body = Buffer.from(pool.next());
          const res = await fetch(`${url}/v1/batch`, {
            method: 'POST',
            headers: { authorization: auth, 'content-type': 'application/json' },
            body,
          });
          const answer = (await res.json()) as { accepted?: number; rejected?: unknown[] };
          if (res.status !== 200 || answer.rejected?.length) {
            throw new Error(`${mode}: HTTP ${res.status} ${JSON.stringify(answer).slice(0, 300)}`);
          }
        }
      }),
    );
    const ingestMs = performance.now() - started;
    for (;;) {
      const h = await health(url);
      if (h.loader.position >= h.log.endOffset) break;
      await sleep(20);
    }
    const totalMs = performance.now() - started;
    const q = await fetch(`${url}/admin/v1/query`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        sql: `SELECT count(*) AS n, count(*) FILTER (WHERE payload->>'$.context.ip' LIKE '%*%') AS masked FROM events`,
      }),
    });
    const row = ((await q.json()) as { rows: { n: number; masked: number }[] }).rows[0]!;
    const loaded = Number(row.n);
    const events = requests * BATCH;
    if (loaded !== events) throw new Error(`${mode}: ${loaded} rows in events, ${events} sent`);
    // The stages did their work: with them on, every stored IP is masked; off, none is.
    if (Number(row.masked) !== (mode === 'on' ? events : 0)) {
      throw new Error(`${mode}: ${row.masked} of ${events} stored events have a masked IP`);
    }
    return { mode, events, ingestMs, totalMs, eventsPerSec: events / (totalMs / 1000), loaded };
  } finally {
    await stopChild(child, 30_000);
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The pool's events, parsed, as the collection route sees them. */
function sampleEvents(pool: BodyPool, count: number): unknown[] {
  const out: unknown[] = [];
  while (out.length < count) {
    const body = JSON.parse(pool.next().toString('utf8')) as { batch: unknown[] };
    out.push(...body.batch);
  }
  return out.slice(0, count);
}

const configText = (mode: 'off' | 'on', planFile: string) => config(mode === 'on', planFile);

/**
 * Phase 2: events/s of the per-event work of collection. One warm-up pass, then the median of
 * three timed passes (the JIT and a shared machine otherwise decide the figure).
 */
async function collectCpu(mode: 'off' | 'on', events: unknown[], planFile: string): Promise<number> {
  const { config: cfg } = parseConfig(configText(mode, planFile), {});
  const q = await buildQuality(cfg.sources, ROOT, 'bench', {});
  const pii = q.privacy.get('web');
  const copies = events.map((e) => JSON.stringify(e));
  const receivedAt = Date.now();
  const pass = () => {
    const started = performance.now();
    let bytes = 0;
    for (const text of copies) {
      const r = normalizeEvent(JSON.parse(text), { receivedAt, ip: '203.0.113.9', newMessageId: randomUUID });
      if (!r.ok) throw new Error(`${mode}: ${r.message}`);
      if (pii?.apply(r.event).blocked) throw new Error(`${mode}: blocked`);
      bytes += JSON.stringify(r.event).length;
    }
    if (bytes === 0) throw new Error('nothing serialised');
    return events.length / ((performance.now() - started) / 1000);
  };
  pass();
  const rates = [pass(), pass(), pass()];
  await closeStages(q.stages);
  return median(rates);
}

/** Phase 3: events/s of the loader over a prefilled log. */
async function loaderRun(mode: 'off' | 'on', events: unknown[], planFile: string): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), `bench-quality-loader-${mode}-`));
  const instance = await DuckDBInstance.create(
    join(dir, 'warehouse.duckdb'),
    embeddedDuckDBOptions(StorageConfig.parse({})),
  );
  try {
    const c = await instance.connect();
    await c.run("SET GLOBAL TimeZone = 'UTC'");
    await c.run(`ATTACH '${join(dir, 'log.duckdb')}' AS log`);
    c.closeSync();
    const log = await DuckDBEventLog.open(instance, { catalog: 'log', segmentDir: join(dir, 'segments') });
    const warehouse = await DuckDBStore.open(instance);
    const { config: cfg } = parseConfig(configText(mode, planFile), {});
    const q = await buildQuality(cfg.sources, ROOT, 'bench', {});
    const pii = q.privacy.get('web');
    const receivedAt = Date.now();
    const records: RawEvent[] = events.map((e) => {
      const r = normalizeEvent(structuredClone(e), {
        receivedAt,
        ip: '203.0.113.9',
        newMessageId: randomUUID,
      });
      if (!r.ok || !isPlainObject(r.event)) throw new Error('bad event');
      r.event.messageId = randomUUID();
      pii?.apply(r.event);
      return {
        sourceId: 'web',
        messageId: r.event.messageId,
        receivedAt,
        status: 'accepted',
        json: JSON.stringify(r.event),
      };
    });
    for (let i = 0; i < records.length; i += 5000) await log.append(records.slice(i, i + 5000));
    const loader = new WarehouseLoader(log, warehouse, { stages: q.stages, lingerMs: 0 });
    const started = performance.now();
    await loader.start();
    await loader.drained();
    const ms = performance.now() - started;
    await loader.stop();
    await closeStages(q.stages);
    const n = (await warehouse.query('SELECT count(*) AS n FROM events')).rows[0]!.n;
    if (Number(n) !== records.length) throw new Error(`${mode}: loader wrote ${n} of ${records.length}`);
    await log.close();
    await warehouse.close();
    return records.length / (ms / 1000);
  } finally {
    instance.closeSync();
    rmSync(dir, { recursive: true, force: true });
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'bench-quality-'));
  const planFile = join(work, 'plan.json');
  writeFileSync(planFile, JSON.stringify(PLAN));
  const ids = new MessageIds();
  const pool = new BodyPool(ids, { eventsPerRequest: BATCH, size: 64, seed: 7 });
  process.stderr.write(
    `bench:quality: ${EVENTS} events per run in batches of ${BATCH} (~${pool.meanEventBytes} B each), ${CONCURRENCY} in flight, ${ROUNDS} rounds, ${cpus().length} cores\n`,
  );
  const results: RunResult[] = [];
  const cpu: Record<'off' | 'on', number[]> = { off: [], on: [] };
  const loads: Record<'off' | 'on', number[]> = { off: [], on: [] };
  const sample = sampleEvents(pool, Math.min(EVENTS, 50_000));
  // Warm the JIT on both loader paths before anything is timed.
  for (const mode of ['off', 'on'] as const) await loaderRun(mode, sample.slice(0, 5000), planFile);
  for (let round = 0; round < ROUNDS; round++) {
    const order: ('off' | 'on')[] = round % 2 === 0 ? ['off', 'on'] : ['on', 'off'];
    for (const mode of order) {
      const r = await runOnce(mode, pool, planFile);
      results.push(r);
      process.stderr.write(
        `  round ${round + 1} ${mode.padEnd(3)} end to end ${int(r.eventsPerSec)} events/s (requests done in ${int(r.ingestMs)} ms, in the warehouse after ${int(r.totalMs)} ms)\n`,
      );
    }
    for (const mode of order) {
      cpu[mode].push(await collectCpu(mode, sample, planFile));
      loads[mode].push(await loaderRun(mode, sample, planFile));
      process.stderr.write(
        `  round ${round + 1} ${mode.padEnd(3)} collection CPU ${int(cpu[mode].at(-1)!)} events/s, loader ${int(loads[mode].at(-1)!)} events/s\n`,
      );
    }
  }
  rmSync(work, { recursive: true, force: true });
  const off = results.filter((r) => r.mode === 'off');
  const on = results.filter((r) => r.mode === 'on');
  const offRate = median(off.map((r) => r.eventsPerSec));
  const onRate = median(on.map((r) => r.eventsPerSec));
  const ratio = onRate / offRate;
  const list = (xs: number[]) => xs.map(int).join(', ');
  const row = (what: string, o: number[], n: number[]) => [
    what,
    int(median(o)),
    int(median(n)),
    pct(median(n) / median(o)),
    `${list(o)} / ${list(n)}`,
  ];
  const rows = [
    row(
      'end to end (HTTP → log → loader → events)',
      off.map((r) => r.eventsPerSec),
      on.map((r) => r.eventsPerSec),
    ),
    row('collection CPU per event (checks, privacy, serialise)', cpu.off, cpu.on),
    row('loader over a prefilled log (dedupe, stages, write)', loads.off, loads.on),
  ];
  const headers = ['measure', 'off events/s', 'on events/s', 'on/off', 'runs (off / on)'];
  process.stdout.write(`\n${markdownTable(headers, rows, ['l', 'r', 'r', 'r', 'r'])}\n\n`);
  const paired = off.map((o, i) => pct(on[i]!.eventsPerSec / o.eventsPerSec)).join(', ');
  process.stdout.write(
    `end-to-end on/off: ${pct(ratio)} (medians of ${ROUNDS} runs per mode; per-round ratios ${paired})\n`,
  );
  mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
  const file = join(ROOT, 'bench/results', `quality-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(
    file,
    JSON.stringify(
      { events: EVENTS, batch: BATCH, concurrency: CONCURRENCY, results, offRate, onRate, ratio, cpu, loads },
      null,
      2,
    ),
  );
  process.stderr.write(`results: ${file}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:quality failed: ${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
