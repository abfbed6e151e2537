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
 * Each run starts a fresh server (a child process, `tributary start` under tsx) on a fresh data
 * folder, sends the events as batches through the collection API, and stops the clock when
 * the loader has written the last of them to `events` (polled on /healthz). Modes alternate,
 * so drift on the shared machine hits both. The events are the ingest benchmark's (bench/lib/
 * events.ts): every one passes the plan, so both modes load the same rows. Prints the median
 * events/s of each mode and the ratio; writes JSON to bench/results/.
 */

import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BodyPool, MessageIds } from './lib/events.js';
import { freePort, sleep, spawnChild, stopChild, waitReady } from './lib/proc.js';
import { int, markdownTable, pct } from './lib/report.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const WRITE_KEY = 'wk_web_123';
const TOKEN = 'bench-admin-token';

function envInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name}: expected a positive integer, got "${raw}"`);
  return n;
}

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
const EVENT_NAMES = [
  'Product Viewed',
  'Product Added',
  'Cart Viewed',
  'Checkout Started',
  'Order Completed',
  'Coupon Applied',
  'Signed Up',
  'Newsletter Subscribed',
];
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

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

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
  for (let round = 0; round < ROUNDS; round++) {
    const order: ('off' | 'on')[] = round % 2 === 0 ? ['off', 'on'] : ['on', 'off'];
    for (const mode of order) {
      const r = await runOnce(mode, pool, planFile);
      results.push(r);
      process.stderr.write(
        `  round ${round + 1} ${mode.padEnd(3)} ${int(r.eventsPerSec)} events/s (requests done in ${int(r.ingestMs)} ms, in the warehouse after ${int(r.totalMs)} ms)\n`,
      );
    }
  }
  rmSync(work, { recursive: true, force: true });
  const off = results.filter((r) => r.mode === 'off');
  const on = results.filter((r) => r.mode === 'on');
  const offRate = median(off.map((r) => r.eventsPerSec));
  const onRate = median(on.map((r) => r.eventsPerSec));
  const ratio = onRate / offRate;
  const rows = [
    ['off (no plan, mapping or PII policy)', int(offRate), off.map((r) => int(r.eventsPerSec)).join(', ')],
    ['on (plan + mapping + PII policy)', int(onRate), on.map((r) => int(r.eventsPerSec)).join(', ')],
  ];
  process.stdout.write(
    `\n${markdownTable(['quality stages', 'median events/s (ingest to warehouse)', 'runs'], rows, ['l', 'r', 'r'])}\n\n`,
  );
  process.stdout.write(
    `on/off ratio: ${pct(ratio)} (the quality stages cost ${pct(1 - ratio)} of throughput)\n`,
  );
  mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
  const file = join(ROOT, 'bench/results', `quality-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(
    file,
    JSON.stringify(
      { events: EVENTS, batch: BATCH, concurrency: CONCURRENCY, results, offRate, onRate, ratio },
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
