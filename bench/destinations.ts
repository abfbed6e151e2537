/**
 * Streaming destination benchmark: events/s the delivery runner delivers to a local HTTP
 * receiver through the http destination (one by one, and in batches), against a plain `fetch`
 * loop sending the same events to the same receiver in the same run; and the latency added
 * from the 200 at collection to the receiver's request.
 *
 *   npm run bench:destinations
 *   BENCH_EVENTS=20000 BENCH_ROUNDS=3 npm run bench:destinations
 *
 * Environment: BENCH_EVENTS (events per throughput run, default 10,000), BENCH_BATCH (events
 * per request in batch mode, default 50), BENCH_CONCURRENCY (requests in flight, for both,
 * default 8), BENCH_ROUNDS (runs of each scenario, alternating; medians are reported, default
 * 3), BENCH_LATENCY_S (seconds of the latency run, default 5).
 *
 * Delivery from the queue: a first server collects the events and queues them (its receiver
 * unreachable, its breaker open), a second one on the same data folder delivers them; the
 * clock runs from its start until the receiver has them all. End to end: one server, the clock
 * from the first collection request (`POST /v1/batch`, 500 events each, 1,000 users) until the
 * receiver has them all, so it includes collection, the log and the loader. Tributary runs
 * embedded in this process. The receiver is a bare `node:http` server in a child process that
 * parses each body and answers 200, stamping each event's arrival. The baseline is `fetch` in
 * this process: one event (or one batch) per request, the same concurrency, no queue, no
 * retries.
 */

import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { parseConfig } from '../src/config/load.js';
import { startServer } from '../src/server/server.js';
import { envNumber } from './lib/env.js';
import { int, markdownTable } from './lib/report.js';

const WRITE_KEY = 'wk_bench';
const EVENTS = Math.round(envNumber('BENCH_EVENTS', 10_000));
const BATCH = Math.round(envNumber('BENCH_BATCH', 50));
const CONCURRENCY = Math.round(envNumber('BENCH_CONCURRENCY', 8));
const ROUNDS = Math.max(1, Math.round(envNumber('BENCH_ROUNDS', 3)));
const LATENCY_S = envNumber('BENCH_LATENCY_S', 5);
const USERS = 1000;

const RECEIVER = `
import { createServer } from 'node:http';
let arrivals = new Map();
const server = createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    if (req.url === '/stats') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify([...arrivals]));
      return;
    }
    if (req.url === '/reset') { arrivals = new Map(); res.end('{}'); return; }
    const now = Date.now();
    const v = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    for (const e of Array.isArray(v) ? v : [v]) if (!arrivals.has(e.messageId)) arrivals.set(e.messageId, now);
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
  });
});
server.keepAliveTimeout = 60000;
server.listen(0, '127.0.0.1', () => console.log('port ' + server.address().port));
`;

function startReceiver(): Promise<{ proc: ChildProcess; url: string }> {
  const proc = spawn(process.execPath, ['--input-type=module', '-e', RECEIVER], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    let out = '';
    proc.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /port (\d+)/.exec(out);
      if (m) resolve({ proc, url: `http://127.0.0.1:${m[1]}` });
    });
    proc.once('exit', (code) => reject(new Error(`receiver exited ${code}`)));
  });
}

async function arrivals(url: string): Promise<Map<string, number>> {
  return new Map((await (await fetch(`${url}/stats`)).json()) as [string, number][]);
}

const event = (run: string, i: number) => ({
  type: 'track',
  messageId: `${run}-${i}`,
  userId: `user-${i % USERS}`,
  event: 'Order Completed',
  timestamp: new Date().toISOString(),
  properties: { orderId: `o-${i}`, revenue: (i % 500) / 10, currency: 'EUR', items: i % 7 },
  context: { library: { name: 'bench', version: '1' }, locale: 'en-GB' },
});

async function waitArrived(url: string, n: number, timeoutMs = 300_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if ((await arrivals(url)).size >= n) return;
    if (Date.now() > deadline) throw new Error('the receiver did not get every event');
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The baseline: `fetch` one event (or one batch) per request, CONCURRENCY at a time. */
async function fetchLoop(url: string, run: string, batch: number): Promise<number> {
  await fetch(`${url}/reset`);
  const bodies: string[] = [];
  for (let i = 0; i < EVENTS; i += batch) {
    const events = Array.from({ length: Math.min(batch, EVENTS - i) }, (_, k) => event(run, i + k));
    bodies.push(JSON.stringify(batch === 1 ? events[0] : events));
  }
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < bodies.length) {
        const body = bodies[next++]!;
        const res = await fetch(`${url}/hook`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'idempotency-key': run },
          body,
        });
        await res.arrayBuffer();
      }
    }),
  );
  return EVENTS / ((performance.now() - started) / 1000);
}

async function withServer<T>(
  receiverUrl: string,
  batch: number,
  work: (s: { url: string; queued: () => number }) => Promise<T>,
  options: { dataDir?: string; url?: string; breaker?: string } = {},
): Promise<T> {
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), 'trib-bench-dest-'));
  const yaml = `version: 1
sources:
  - id: web
    type: http
    writeKey: ${WRITE_KEY}
destinations:
  - id: hook
    type: http
    url: ${options.url ?? `${receiverUrl}/hook`}
    batchSize: ${batch}
    concurrency: ${CONCURRENCY}
    startFrom: beginning
${options.breaker ? `    breaker: ${options.breaker}\n` : ''}`;
  const { config } = parseConfig(yaml, {});
  const server = await startServer({
    config,
    dataDir,
    adminToken: 'bench',
    logger: pino({ level: 'error' }),
    port: 0,
    host: '127.0.0.1',
  });
  try {
    return await work({ url: server.url, queued: () => server.streams[0]!.progress().queued });
  } finally {
    await server.close();
    if (!options.dataDir) rmSync(dataDir, { recursive: true, force: true });
  }
}

/**
 * Events/s of delivery alone: the events are collected and queued by a first server whose
 * receiver is unreachable (its breaker opens at the first failure and stays open), then a
 * second server on the same data folder delivers the queue to the receiver; the clock runs
 * from its start until the receiver has every event.
 */
async function deliveryRun(receiverUrl: string, run: string, batch: number): Promise<number> {
  await fetch(`${receiverUrl}/reset`);
  const dataDir = mkdtempSync(join(tmpdir(), 'trib-bench-dest-'));
  try {
    await withServer(
      receiverUrl,
      batch,
      async ({ url, queued }) => {
        for (let i = 0; i < EVENTS; i += 500)
          await collect(
            url,
            Array.from({ length: Math.min(500, EVENTS - i) }, (_, k) => event(run, i + k)),
          );
        const deadline = Date.now() + 300_000;
        while (queued() < EVENTS) {
          if (Date.now() > deadline) throw new Error('the events were not queued');
          await new Promise((r) => setTimeout(r, 50));
        }
      },
      { dataDir, url: 'http://127.0.0.1:9/unreachable', breaker: '{ failures: 1, cooldown: 1h }' },
    );
    const started = performance.now();
    return await withServer(
      receiverUrl,
      batch,
      async () => {
        await waitArrived(receiverUrl, EVENTS);
        return EVENTS / ((performance.now() - started) / 1000);
      },
      { dataDir },
    );
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
}

const auth = `Basic ${Buffer.from(`${WRITE_KEY}:`).toString('base64')}`;

async function collect(url: string, events: object[]): Promise<number> {
  const res = await fetch(`${url}/v1/batch`, {
    method: 'POST',
    headers: { authorization: auth, 'content-type': 'application/json' },
    body: JSON.stringify({ batch: events }),
  });
  await res.arrayBuffer();
  if (res.status !== 200) throw new Error(`collection answered ${res.status}`);
  return Date.now();
}

/** Events/s from the first collection request until the receiver has every event. */
async function tributaryRun(receiverUrl: string, run: string, batch: number): Promise<number> {
  await fetch(`${receiverUrl}/reset`);
  return withServer(receiverUrl, batch, async ({ url }) => {
    const started = performance.now();
    for (let i = 0; i < EVENTS; i += 500)
      await collect(
        url,
        Array.from({ length: Math.min(500, EVENTS - i) }, (_, k) => event(run, i + k)),
      );
    await waitArrived(receiverUrl, EVENTS);
    return EVENTS / ((performance.now() - started) / 1000);
  });
}

/** Milliseconds from the 200 at collection to the receiver's request, per event, at a steady trickle. */
async function latencyRun(receiverUrl: string): Promise<number[]> {
  await fetch(`${receiverUrl}/reset`);
  return withServer(receiverUrl, 1, async ({ url }) => {
    const acked = new Map<string, number>();
    const end = Date.now() + LATENCY_S * 1000;
    for (let b = 0; Date.now() < end; b++) {
      const events = Array.from({ length: 10 }, (_, k) => event(`lat-${b}`, k));
      const at = await collect(url, events);
      for (const e of events) acked.set(e.messageId, at);
      await new Promise((r) => setTimeout(r, 100));
    }
    await waitArrived(receiverUrl, acked.size);
    const got = await arrivals(receiverUrl);
    return [...acked].map(([id, at]) => got.get(id)! - at).sort((a, b) => a - b);
  });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const pctl = (sorted: number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;

async function main(): Promise<void> {
  const receiver = await startReceiver();
  try {
    const r = {
      fetch1: [] as number[],
      trib1: [] as number[],
      fetchN: [] as number[],
      tribN: [] as number[],
      end1: [] as number[],
      endN: [] as number[],
    };
    for (let round = 0; round < ROUNDS; round++) {
      r.fetch1.push(await fetchLoop(receiver.url, `f1-${round}`, 1));
      r.trib1.push(await deliveryRun(receiver.url, `t1-${round}`, 1));
      r.fetchN.push(await fetchLoop(receiver.url, `fn-${round}`, BATCH));
      r.tribN.push(await deliveryRun(receiver.url, `tn-${round}`, BATCH));
      r.end1.push(await tributaryRun(receiver.url, `e1-${round}`, 1));
      r.endN.push(await tributaryRun(receiver.url, `en-${round}`, BATCH));
      console.error(
        `round ${round + 1}: one by one ${int(r.trib1[round]!)} vs fetch ${int(r.fetch1[round]!)} events/s; batches ${int(r.tribN[round]!)} vs fetch ${int(r.fetchN[round]!)} events/s; end to end ${int(r.end1[round]!)} / ${int(r.endN[round]!)}`,
      );
    }
    const lat = await latencyRun(receiver.url);
    const row = (mode: string, t: number[], f: number[]) => [
      mode,
      int(median(t)),
      int(median(f)),
      (median(t) / median(f)).toFixed(2),
    ];
    const rows = [
      row('delivery from the queue, one by one', r.trib1, r.fetch1),
      row(`delivery from the queue, batches of ${BATCH}`, r.tribN, r.fetchN),
      row('end to end (collection → receiver), one by one', r.end1, r.fetch1),
      row(`end to end, batches of ${BATCH}`, r.endN, r.fetchN),
    ];
    console.log(
      `\n${EVENTS} events, ${USERS} users, concurrency ${CONCURRENCY}, median of ${ROUNDS} rounds; ${cpus().length} cores (${cpus()[0]?.model}), load ${loadavg()
        .map((l) => l.toFixed(1))
        .join(' ')}, Linux ${release()}, Node ${process.version}\n`,
    );
    console.log(
      markdownTable(['mode', 'Tributary events/s', 'plain fetch events/s', 'ratio'], rows, [
        'l',
        'r',
        'r',
        'r',
      ]),
    );
    console.log(
      `\nadded latency, 200 at collection → receiver's request (${lat.length} events, one by one, 10 events every 100 ms): p50 ${pctl(lat, 50)} ms, p99 ${pctl(lat, 99)} ms`,
    );
  } finally {
    receiver.proc.kill();
  }
}

await main();
