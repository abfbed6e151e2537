/** One autocannon run against one server, with latency recorded at microsecond resolution. */
import { createHistogram } from 'node:perf_hooks';
import autocannon, { type Result } from 'autocannon';
import type { BodyPool } from './events.js';

export interface LoadOptions {
  url: string;
  path: string;
  connections: number;
  pipelining: number;
  durationS: number;
  headers: Record<string, string>;
  pool: BodyPool;
  /** Per-request timeout, seconds. */
  timeoutS: number;
}

export interface LoadResult {
  durationS: number;
  /** Requests answered 2xx. */
  ok: number;
  /** Requests sent (includes ones still in flight when the run stopped). */
  sent: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  statusCodes: Record<string, number>;
  requestsPerS: number;
  eventsPerS: number;
  /** Events in requests answered 2xx (acknowledged as durable by the server). */
  ackedEvents: number;
  latencyMs: { p50: number; p90: number; p99: number; max: number; mean: number };
  /** autocannon's own (whole-millisecond) latency percentiles, for reference. */
  autocannonLatencyMs: { p50: number; p99: number; max: number };
  /** CPU the load generator (this process) used, as a share of one core. */
  generatorCpu: number;
}

/** Runs autocannon for `durationS` seconds; bounded by a watchdog that stops it if it overruns. */
export async function runLoad(opts: LoadOptions): Promise<LoadResult> {
  const hist = createHistogram();
  const { pool } = opts;
  const cpuStart = process.cpuUsage();
  const wallStart = process.hrtime.bigint();
  const instance = autocannon({
    url: opts.url + opts.path,
    connections: opts.connections,
    pipelining: opts.pipelining,
    duration: opts.durationS,
    timeout: opts.timeoutS,
    method: 'POST',
    headers: opts.headers,
    requests: [
      {
        method: 'POST',
        path: opts.path,
        setupRequest: (req) => {
          req.body = pool.next();
          return req;
        },
      },
    ],
  });
  instance.on('response', (_client: unknown, status: number, _bytes: number, ms: number) => {
    if (status >= 200 && status < 300) hist.record(Math.max(1, Math.round(ms * 1000)));
  });
  const watchdog = setTimeout(() => instance.stop(), (opts.durationS + opts.timeoutS + 10) * 1000);
  let result: Result;
  try {
    result = await instance;
  } finally {
    clearTimeout(watchdog);
  }
  const cpu = process.cpuUsage(cpuStart);
  const wallS = Number(process.hrtime.bigint() - wallStart) / 1e9;

  const durationS = result.duration;
  const ok = result['2xx'];
  const statusCodes: Record<string, number> = {};
  for (const [code, s] of Object.entries(result.statusCodeStats)) statusCodes[code] = s.count;
  const us = (p: number) => (hist.count > 0 ? hist.percentile(p) / 1000 : Number.NaN);
  return {
    durationS,
    ok,
    sent: result.requests.sent,
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    statusCodes,
    requestsPerS: ok / durationS,
    eventsPerS: (ok * pool.eventsPerRequest) / durationS,
    ackedEvents: ok * pool.eventsPerRequest,
    latencyMs: {
      p50: us(50),
      p90: us(90),
      p99: us(99),
      max: hist.count > 0 ? hist.max / 1000 : Number.NaN,
      mean: hist.count > 0 ? hist.mean / 1000 : Number.NaN,
    },
    autocannonLatencyMs: { p50: result.latency.p50, p99: result.latency.p99, max: result.latency.max },
    generatorCpu: (cpu.user + cpu.system) / 1e6 / wallS,
  };
}
