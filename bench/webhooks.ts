/**
 * Webhook benchmark: signed Stripe deliveries to `POST /webhooks/stripe` (signature checked by
 * the stripe library, the Stripe preset mapping, the raw body kept) against single events to
 * the tracking API's `POST /v1/track`, on the same server in the same run.
 *
 *   npm run bench:webhooks
 *   BENCH_DURATION=10 BENCH_ROUNDS=3 npm run bench:webhooks
 *
 * Environment: BENCH_DURATION (measured seconds per run, default 10), BENCH_WARMUP (seconds,
 * default 3), BENCH_ROUNDS (the two scenarios alternate this many times; medians are
 * reported, default 3), BENCH_CONNECTIONS (default 50).
 *
 * Each Stripe request is a fresh `charge.succeeded` event (a new evt_ id), signed at send time
 * with `stripe.webhooks.generateTestHeaderString`, so nothing is deduplicated. Both answer 200
 * only once the events are committed to the event log.
 */

import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import Stripe from 'stripe';
import { ensureBuild, serverNodeOptions } from './lib/build.js';
import { envNumber } from './lib/env.js';
import { BodyPool, MessageIds } from './lib/events.js';
import { cpuSecondsOf, freePort, sleep, spawnChild, stopChild, waitReady } from './lib/proc.js';
import { int, markdownTable, pct } from './lib/report.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const WRITE_KEY = 'wk_web_123';
const SECRET = `whsec_${randomBytes(24).toString('hex')}`;
const DURATION_S = envNumber('BENCH_DURATION', 10);
const WARMUP_S = envNumber('BENCH_WARMUP', 3);
const ROUNDS = Math.max(1, Math.round(envNumber('BENCH_ROUNDS', 3)));
const CONNECTIONS = Math.round(envNumber('BENCH_CONNECTIONS', 50));

const CONFIG = `version: 1
sources:
  - id: web
    type: http
    writeKey: ${WRITE_KEY}
  - id: stripe
    type: webhook
    verify: { kind: stripe, secret: "\${BENCH_STRIPE_SECRET}" }
    preset: stripe
  - id: stripe-lean
    type: webhook
    verify: { kind: stripe, secret: "\${BENCH_STRIPE_SECRET}" }
    preset: stripe
    keepRaw: false
`;

const stripe = new Stripe('sk_test_unused');
let seq = 0;
const run = randomBytes(4).toString('hex');

/** A charge.succeeded event shaped like Stripe's (about 2 KB), with a fresh id. */
function chargeEvent(): string {
  const n = seq++;
  const customer = `cus_${run}${n % 5000}`;
  return JSON.stringify({
    id: `evt_${run}_${n}`,
    object: 'event',
    api_version: '2024-06-20',
    created: Math.floor(Date.now() / 1000),
    livemode: false,
    pending_webhooks: 1,
    request: { id: `req_${run}${n}`, idempotency_key: `ik-${run}-${n}` },
    type: 'charge.succeeded',
    data: {
      object: {
        id: `ch_${run}${n}`,
        object: 'charge',
        amount: 1000 + (n % 9000),
        amount_captured: 1000 + (n % 9000),
        amount_refunded: 0,
        balance_transaction: `txn_${run}${n}`,
        billing_details: {
          address: { city: 'Berlin', country: 'DE', line1: 'Main St 1', postal_code: '10115' },
          email: `buyer${n % 5000}@example.com`,
          name: 'Ada Buyer',
          phone: null,
        },
        captured: true,
        created: Math.floor(Date.now() / 1000),
        currency: n % 10 === 0 ? 'jpy' : 'eur',
        customer,
        description: 'Order #1042',
        metadata: { order_id: `o-${n}` },
        outcome: {
          network_status: 'approved_by_network',
          risk_level: 'normal',
          risk_score: 32,
          seller_message: 'Payment complete.',
          type: 'authorized',
        },
        paid: true,
        payment_intent: `pi_${run}${n}`,
        payment_method: `pm_${run}${n}`,
        payment_method_details: {
          card: {
            brand: 'visa',
            checks: { address_line1_check: 'pass', cvc_check: 'pass' },
            country: 'DE',
            exp_month: 8,
            exp_year: 2030,
            funding: 'credit',
            last4: '4242',
            network: 'visa',
          },
          type: 'card',
        },
        receipt_email: `buyer${n % 5000}@example.com`,
        receipt_url: `https://pay.stripe.com/receipts/${run}${n}`,
        refunded: false,
        status: 'succeeded',
      },
    },
  });
}

/**
 * Returns a maker of request sources: each call signs `n` fresh deliveries (new event ids,
 * signed now with the stripe library, well within the 5-minute tolerance of a run), then
 * hands them out in turn.
 */
function signedStripe(n: number) {
  return () => {
    const bodies: { body: string; headers: Record<string, string> }[] = [];
    for (let i = 0; i < n; i++) {
      const body = chargeEvent();
      bodies.push({
        body,
        headers: {
          'content-type': 'application/json; charset=utf-8',
          'stripe-signature': stripe.webhooks.generateTestHeaderString({ payload: body, secret: SECRET }),
        },
      });
    }
    let i = 0;
    return () => bodies[i++ % n]!;
  };
}

interface Measured {
  scenario: string;
  round: number;
  requestsPerS: number;
  ok: number;
  non2xx: number;
  errors: number;
  p50: number;
  p99: number;
  serverCpu: number;
  /** CPU of this process (autocannon) during the run, as a share of one core. */
  generatorCpu: number;
}

async function load(
  url: string,
  path: string,
  durationS: number,
  next: () => { body: Buffer | string; headers: Record<string, string> },
) {
  const instance = autocannon({
    url: url + path,
    connections: CONNECTIONS,
    pipelining: 1,
    duration: durationS,
    timeout: 10,
    method: 'POST',
    requests: [
      {
        method: 'POST',
        path,
        setupRequest: (req) => {
          const r = next();
          req.body = r.body;
          req.headers = r.headers;
          return req;
        },
      },
    ],
  });
  return await instance;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

async function main(): Promise<void> {
  const log = (line = '') => process.stdout.write(`${line}\n`);
  ensureBuild(ROOT, log);
  const tmp = mkdtempSync(join(tmpdir(), 'tributary-bench-webhooks-'));
  const configFile = join(tmp, 'tributary.yaml');
  writeFileSync(configFile, CONFIG);
  const token = `tka_bench_${randomBytes(18).toString('base64url')}`;
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const trib = spawnChild(
    'tributary',
    process.execPath,
    [
      ...serverNodeOptions(ROOT),
      join(ROOT, 'dist/cli/index.js'),
      'start',
      '--config',
      configFile,
      '--port',
      String(port),
      '--data-dir',
      join(tmp, 'data'),
    ],
    {
      env: {
        ...process.env,
        TRIBUTARY_ADMIN_TOKEN: token,
        TRIBUTARY_LOG_LEVEL: 'warn',
        BENCH_STRIPE_SECRET: SECRET,
      },
      cwd: tmp,
      logFile: join(tmp, 'tributary.log'),
    },
  );
  try {
    await waitReady(trib, async () => (await fetch(`${url}/healthz`)).ok, 60_000);
    log(`Tributary webhook benchmark — ${new Date().toISOString()}`);
    log(
      `  node ${process.version}, ${cpus().length} CPUs, ${int(totalmem() / 2 ** 20)} MB RAM, Linux ${release()}`,
    );
    log(
      `  load average at start: ${loadavg()
        .map((l) => l.toFixed(2))
        .join(' ')}`,
    );
    log(
      `  ${CONNECTIONS} connections, warm-up ${WARMUP_S} s, ${ROUNDS} rounds of ${DURATION_S} s per scenario, alternating`,
    );

    const pool = new BodyPool(new MessageIds(), { eventsPerRequest: 1, size: 256, seed: 1000 });
    const trackHeaders = {
      'content-type': 'application/json',
      authorization: `Basic ${Buffer.from(`${WRITE_KEY}:`).toString('base64')}`,
    };
    const scenarios = {
      'track single': {
        path: '/v1/track',
        next: () => () => ({ body: pool.next(), headers: trackHeaders }),
      },
      'stripe signed': {
        path: '/webhooks/stripe',
        next: signedStripe(Math.max(20_000, Math.ceil(DURATION_S * 3000))),
      },
      'stripe, keepRaw: false': {
        path: '/webhooks/stripe-lean',
        next: signedStripe(Math.max(20_000, Math.ceil(DURATION_S * 3000))),
      },
    } as const;
    log(
      `  stripe body ~${int(Buffer.byteLength(chargeEvent()))} B, track body ~${int(pool.meanBodyBytes)} B`,
    );
    for (const [name, s] of Object.entries(scenarios)) {
      const r = await load(url, s.path, WARMUP_S, s.next());
      if (r.non2xx > 0) throw new Error(`${name}: ${r.non2xx} non-2xx answers in the warm-up`);
    }
    const results: Measured[] = [];
    for (let round = 1; round <= ROUNDS; round++) {
      for (const [name, s] of Object.entries(scenarios)) {
        const cpu0 = cpuSecondsOf(trib.pid);
        const gen0 = process.cpuUsage();
        const t0 = Date.now();
        // Signed before the clock starts, so signing does not take the generator's CPU.
        const next = s.next();
        const r = await load(url, s.path, DURATION_S, next);
        const wallS = (Date.now() - t0) / 1000;
        const serverCpu = (cpuSecondsOf(trib.pid) - cpu0) / wallS;
        const gen = process.cpuUsage(gen0);
        const generatorCpu = (gen.user + gen.system) / 1e6 / wallS;
        const m: Measured = {
          scenario: name,
          round,
          requestsPerS: r['2xx'] / r.duration,
          ok: r['2xx'],
          non2xx: r.non2xx,
          errors: r.errors,
          p50: r.latency.p50,
          p99: r.latency.p99,
          serverCpu,
          generatorCpu,
        };
        results.push(m);
        log(
          `  round ${round} ${name.padEnd(22)} ${int(m.requestsPerS).padStart(6)} req/s  p50 ${m.p50} ms  p99 ${m.p99} ms  non-2xx ${m.non2xx}  errors ${m.errors}  server CPU ${pct(serverCpu)}  generator CPU ${pct(generatorCpu)}`,
        );
        // Let the loader catch up so the next run does not compete with this one's load.
        for (let i = 0; i < 600; i++) {
          const h = (await (await fetch(`${url}/healthz`)).json()) as {
            log: { endOffset: number };
            loader: { position: number };
          };
          if (h.loader.position >= h.log.endOffset) break;
          await sleep(100);
        }
      }
    }
    const med = (name: string) =>
      median(results.filter((r) => r.scenario === name).map((r) => r.requestsPerS));
    const track = med('track single');
    const q = async (sql: string) => {
      const res = await fetch(`${url}/admin/v1/query`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ sql }),
      });
      return ((await res.json()) as { rows: Record<string, unknown>[] }).rows[0]!;
    };
    const stored = await q(
      `SELECT count(*) AS n, count(DISTINCT message_id) AS ids FROM events WHERE source_id LIKE 'stripe%'`,
    );
    const failed = await q(`SELECT count(*) AS n FROM failed_events WHERE source_id LIKE 'stripe%'`);
    log();
    log(
      markdownTable(
        ['scenario', 'median req/s', 'median events/s', 'runs (req/s)'],
        Object.keys(scenarios).map((name) => [
          name,
          int(med(name)),
          int(med(name)),
          results
            .filter((r) => r.scenario === name)
            .map((r) => int(r.requestsPerS))
            .join(', '),
        ]),
        ['l', 'r', 'r', 'l'],
      ),
    );
    log();
    for (const name of ['stripe signed', 'stripe, keepRaw: false']) {
      const perRound = [];
      for (let round = 1; round <= ROUNDS; round++) {
        const of = (n: string) => results.find((r) => r.round === round && r.scenario === n)!.requestsPerS;
        perRound.push(of(name) / of('track single'));
      }
      log(
        `${name} / tracking API single events: ${(med(name) / track).toFixed(2)}× (medians); ` +
          `per round ${perRound.map((r) => r.toFixed(2)).join(', ')}, median ${median(perRound).toFixed(2)}×`,
      );
    }
    const acked = results.filter((r) => r.scenario.startsWith('stripe')).reduce((sum, r) => sum + r.ok, 0);
    log(
      `stripe events stored: ${int(Number(stored.n))} (distinct ids ${int(Number(stored.ids))}; warm-up included), ` +
        `failed_events: ${int(Number(failed.n))}, stripe requests acknowledged in the measured runs: ${int(acked)}`,
    );
    if (Number(stored.n) < acked || Number(failed.n) > 0)
      throw new Error('acknowledged Stripe events are missing');
  } finally {
    await stopChild(trib, 30_000);
    rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
