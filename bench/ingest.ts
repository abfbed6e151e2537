/**
 * Ingest benchmark: Tributary's collection API against a bare node:http baseline.
 *
 *   npm run bench:ingest                 (15 s per scenario)
 *   BENCH_DURATION=10 npm run bench:ingest
 *
 * Environment: BENCH_DURATION (measured seconds per scenario, default 15), BENCH_WARMUP
 * (seconds, default 3), BENCH_CONNECTIONS (default 50), BENCH_BATCH_SIZE (events per batch
 * request, default 100), BENCH_CATCHUP_TIMEOUT (seconds to wait for the loader, default 300),
 * BENCH_COLLECT_ONLY=1 (identity resolution and the Segment-table destination off, so the
 * server does only what collection and the `events` loader need), BENCH_SERVER_NODE_ARGS
 * (space-separated Node options for the Tributary child, e.g. `--cpu-prof --cpu-prof-dir=DIR`),
 * BENCH_SCENARIOS (comma-separated name prefixes, e.g. `batch`: run only those scenarios),
 * BENCH_CONFIG_EXTRA (YAML appended to Tributary's configuration, e.g. `storage: {threads: 2}`).
 *
 * Both servers run as child processes and get the same autocannon settings. Tributary
 * answers 200 only once events are group-committed to its DuckDB event log; the bare
 * server only parses the JSON. Results: a Markdown table on stdout and a JSON file in
 * bench/results/.
 */

import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureBuild, serverNodeOptions } from './lib/build.js';
import { envNumber } from './lib/env.js';
import { BodyPool, MessageIds } from './lib/events.js';
import { type LoadResult, runLoad } from './lib/load.js';
import {
  type Child,
  cpuSecondsOf,
  freePort,
  machineCpuSeconds,
  memoryOf,
  RssSampler,
  sleep,
  spawnChild,
  stopChild,
  waitReady,
} from './lib/proc.js';
import { int, markdownTable, mb, ms, pct, type RunRow, resultsTable } from './lib/report.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const WRITE_KEY = 'wk_web_123';
const CONFIG_YAML = `version: 1
sources:
  - id: web
    type: http
    writeKey: ${WRITE_KEY}
`;

const DURATION_S = envNumber('BENCH_DURATION', 15);
const WARMUP_S = envNumber('BENCH_WARMUP', 3);
const CONNECTIONS = Math.round(envNumber('BENCH_CONNECTIONS', 50));
const BATCH_SIZE = Math.round(envNumber('BENCH_BATCH_SIZE', 100));
const CATCHUP_TIMEOUT_S = envNumber('BENCH_CATCHUP_TIMEOUT', 300);
const REQUEST_TIMEOUT_S = 10;
/** Extra Node options for the Tributary child, e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof`. */
const SERVER_NODE_ARGS = (process.env.BENCH_SERVER_NODE_ARGS ?? '').split(' ').filter((a) => a !== '');
const POOL_SIZE = 256;

interface Scenario {
  name: string;
  path: string;
  connections: number;
  pipelining: number;
  eventsPerRequest: number;
  /** Seed of the scenario's body pool. */
  seed: number;
}

const ALL_SCENARIOS: Scenario[] = [
  {
    name: 'single',
    path: '/v1/track',
    connections: CONNECTIONS,
    pipelining: 1,
    eventsPerRequest: 1,
    seed: 1000,
  },
  {
    name: `batch-${BATCH_SIZE}`,
    path: '/v1/batch',
    connections: CONNECTIONS,
    pipelining: 1,
    eventsPerRequest: BATCH_SIZE,
    seed: 1001,
  },
];
const ONLY = (process.env.BENCH_SCENARIOS ?? '').split(',').filter((n) => n !== '');
const SCENARIOS = ALL_SCENARIOS.filter((s) => ONLY.length === 0 || ONLY.some((n) => s.name.startsWith(n)));
if (SCENARIOS.length === 0)
  throw new Error(`BENCH_SCENARIOS: no scenario matches "${process.env.BENCH_SCENARIOS}"`);

interface ScenarioResult {
  server: 'bare' | 'tributary';
  scenario: Scenario;
  warmup: LoadResult;
  measured: LoadResult;
  /** Highest VmRSS polled during this scenario (warm-up and measured run), bytes. */
  peakRssBytes: number;
  /** VmHWM at the end of the scenario: peak RSS over the child's whole life so far, bytes. */
  hwmBytes: number;
  /** Server CPU during the measured run, as a share of one core (the machine has cpus().length). */
  serverCpu: number;
  /**
   * CPU used during the measured run by everything else on the machine (not the server, not
   * this process), as a share of one core: anything well above 0 means a noisy neighbour.
   */
  otherCpu: number;
  loader?: LoaderProgress;
}

interface LoaderProgress {
  /** Events the loader moved into the warehouse during the measured run, per second. */
  loadedPerSDuringRun: number;
  /** Log records not yet loaded when the measured run ended. */
  lagAtEnd: number;
  catchUp: CatchUp;
  /** Highest RSS polled from the start of the scenario to the end of the catch-up, bytes. */
  peakRssWithCatchUpBytes: number;
}

interface CatchUp {
  caughtUp: boolean;
  ms: number;
  endOffset: number;
  position: number;
}

interface Health {
  status: string;
  log: { endOffset: number };
  loader: { position: number };
}

// ---------------------------------------------------------------------------------------
// Everything that must be undone, whatever happens.

const children: Child[] = [];
const tempDirs: string[] = [];

function emergencyCleanup(): void {
  for (const c of children) if (!c.exit) c.proc.kill('SIGKILL');
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
}

for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(signal, () => {
    process.stderr.write(`\n${signal}: killing the servers and removing temp dirs\n`);
    emergencyCleanup();
    process.exit(130);
  });
}

// ---------------------------------------------------------------------------------------

function log(line = ''): void {
  process.stdout.write(`${line}\n`);
}

async function getJson<T>(url: string, init: RequestInit = {}, timeoutMs = 10_000): Promise<T> {
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(timeoutMs) });
  const text = await res.text();
  if (!res.ok) throw new Error(`${init.method ?? 'GET'} ${url}: HTTP ${res.status} ${text.slice(0, 300)}`);
  return JSON.parse(text) as T;
}

const health = (url: string) => getJson<Health>(`${url}/healthz`);

/** Polls /healthz until the loader's position reaches the log's end (and stays there). */
async function waitCaughtUp(url: string, timeoutMs: number): Promise<CatchUp> {
  const started = Date.now();
  let h = await health(url);
  let firstEqualAt: number | undefined;
  for (;;) {
    if (h.loader.position >= h.log.endOffset) {
      firstEqualAt ??= Date.now();
      // Requests cut off when the load stopped may still be committing: confirm it holds.
      if (Date.now() - firstEqualAt >= 300) {
        return {
          caughtUp: true,
          ms: firstEqualAt - started,
          endOffset: h.log.endOffset,
          position: h.loader.position,
        };
      }
    } else {
      firstEqualAt = undefined;
    }
    if (Date.now() - started > timeoutMs) {
      return {
        caughtUp: false,
        ms: Date.now() - started,
        endOffset: h.log.endOffset,
        position: h.loader.position,
      };
    }
    await sleep(50);
    h = await health(url);
  }
}

async function query(
  url: string,
  token: string,
  sql: string,
  timeoutMs = 30_000,
): Promise<Record<string, unknown>[]> {
  const r = await getJson<{ rows: Record<string, unknown>[] }>(
    `${url}/admin/v1/query`,
    {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ sql }),
    },
    timeoutMs,
  );
  return r.rows;
}

/** Lines of a pino log file at warn level or above, grouped by message. */
function logProblems(file: string): { count: number; byMessage: Record<string, number>; samples: string[] } {
  const byMessage: Record<string, number> = {};
  const samples: string[] = [];
  let count = 0;
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return { count, byMessage, samples };
  }
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    let entry: { level?: number; msg?: string; err?: { message?: string } };
    try {
      entry = JSON.parse(line) as typeof entry;
    } catch {
      continue;
    }
    if ((entry.level ?? 0) < 40) continue;
    count++;
    const key = `${entry.msg ?? '?'}${entry.err?.message ? `: ${entry.err.message}` : ''}`;
    byMessage[key] = (byMessage[key] ?? 0) + 1;
    if (samples.length < 5) samples.push(line.slice(0, 1000));
  }
  return { count, byMessage, samples };
}

function summarize(r: ScenarioResult): string {
  const m = r.measured;
  const parts = [
    `  ${r.server.padEnd(9)} ${r.scenario.name.padEnd(10)}`,
    `${int(m.requestsPerS).padStart(7)} req/s`,
    `${int(m.eventsPerS).padStart(9)} events/s`,
    `p50 ${ms(m.latencyMs.p50)} ms`,
    `p99 ${ms(m.latencyMs.p99)} ms`,
    `non-2xx ${m.non2xx}`,
    `errors ${m.errors}`,
    `peak RSS ${mb(r.peakRssBytes)}`,
    `server CPU ${pct(r.serverCpu)}`,
    `generator CPU ${pct(m.generatorCpu)}`,
    `other CPU ${pct(r.otherCpu)}`,
  ];
  return parts.join('  ');
}

async function runScenarios(
  server: 'bare' | 'tributary',
  child: Child,
  url: string,
  pools: Map<string, BodyPool>,
): Promise<ScenarioResult[]> {
  const headers = {
    'content-type': 'application/json',
    authorization: `Basic ${Buffer.from(`${WRITE_KEY}:`).toString('base64')}`,
  };
  const out: ScenarioResult[] = [];
  for (const scenario of SCENARIOS) {
    const pool = pools.get(scenario.name)!;
    const load = (durationS: number) =>
      runLoad({
        url,
        path: scenario.path,
        connections: scenario.connections,
        pipelining: scenario.pipelining,
        durationS,
        headers,
        pool,
        timeoutS: REQUEST_TIMEOUT_S,
      });
    const sampler = new RssSampler(child.pid);
    const warmup = await load(WARMUP_S);
    if (child.exit) throw new Error(`${child.name} exited during warm-up: ${JSON.stringify(child.exit)}`);
    const before = server === 'tributary' ? await health(url) : undefined;
    const beforeAt = Date.now();
    const cpu0 = cpuSecondsOf(child.pid);
    const machine0 = machineCpuSeconds();
    const t0 = process.hrtime.bigint();
    const measured = await load(DURATION_S);
    const wallS = Number(process.hrtime.bigint() - t0) / 1e9;
    const serverCpu = (cpuSecondsOf(child.pid) - cpu0) / wallS;
    const machineCpu = (machineCpuSeconds().busy - machine0.busy) / wallS;
    const after = server === 'tributary' ? await health(url) : undefined;
    const afterAt = Date.now();
    const peakRssBytes = sampler.peak;
    if (child.exit) throw new Error(`${child.name} exited during the run: ${JSON.stringify(child.exit)}`);
    const result: ScenarioResult = {
      server,
      scenario,
      warmup,
      measured,
      peakRssBytes,
      hwmBytes: memoryOf(child.pid)?.hwm ?? Number.NaN,
      serverCpu,
      otherCpu: Math.max(0, machineCpu - serverCpu - measured.generatorCpu),
    };
    if (before && after) {
      const lagAtEnd = after.log.endOffset - after.loader.position;
      log(`  ${server} ${scenario.name}: waiting for the loader (${int(lagAtEnd)} records behind)…`);
      const catchUp = await waitCaughtUp(url, CATCHUP_TIMEOUT_S * 1000);
      result.loader = {
        loadedPerSDuringRun: ((after.loader.position - before.loader.position) * 1000) / (afterAt - beforeAt),
        lagAtEnd,
        catchUp,
        peakRssWithCatchUpBytes: sampler.peak,
      };
      log(
        `  ${server} ${scenario.name}: loader ${catchUp.caughtUp ? 'caught up' : 'NOT caught up'} after ${(catchUp.ms / 1000).toFixed(1)} s ` +
          `(position ${int(catchUp.position)} / end ${int(catchUp.endOffset)}); it loaded ${int(result.loader.loadedPerSDuringRun)} events/s during the run; ` +
          `peak RSS incl. catch-up ${mb(result.loader.peakRssWithCatchUpBytes)}`,
      );
    }
    sampler.stop();
    log(summarize(result));
    out.push(result);
  }
  return out;
}

async function main(): Promise<void> {
  const startedAt = new Date();
  const loadAverageAtStart = loadavg();
  const build = ensureBuild(ROOT, log);
  const tmpRoot = mkdtempSync(join(tmpdir(), 'tributary-bench-'));
  tempDirs.push(tmpRoot);

  const ids = new MessageIds();
  const pools = new Map<string, BodyPool>();
  for (const s of SCENARIOS) {
    pools.set(
      s.name,
      new BodyPool(ids, { eventsPerRequest: s.eventsPerRequest, size: POOL_SIZE, seed: s.seed }),
    );
  }

  log(`Tributary ingest benchmark — ${startedAt.toISOString()}`);
  log(
    `  node ${process.version}, ${cpus().length} CPUs (${cpus()[0]?.model ?? '?'}), ${mb(totalmem())} RAM, Linux ${release()}`,
  );
  log(`  load average at start: ${loadAverageAtStart.map((l) => l.toFixed(2)).join(' ')}`);
  log(
    `  autocannon: ${CONNECTIONS} connections, pipelining 1, warm-up ${WARMUP_S} s + measured ${DURATION_S} s per scenario`,
  );
  for (const s of SCENARIOS) {
    const p = pools.get(s.name)!;
    log(
      `  ${s.name}: POST ${s.path}, ${s.eventsPerRequest} event(s)/request, body ~${int(p.meanBodyBytes)} B (event ~${p.meanEventBytes} B), ` +
        `${POOL_SIZE} distinct bodies cycled, fresh messageIds on every request`,
    );
  }
  log();

  // --- Baseline --------------------------------------------------------------------------
  const barePort = await freePort();
  const bareUrl = `http://127.0.0.1:${barePort}`;
  const bare = spawnChild(
    'bare server',
    process.execPath,
    ['--import', 'tsx', join(ROOT, 'bench/bare-server.ts'), String(barePort)],
    {
      env: process.env,
      cwd: ROOT,
      logFile: join(tmpRoot, 'bare.log'),
    },
  );
  children.push(bare);
  await waitReady(
    bare,
    async () => (await fetch(bareUrl, { signal: AbortSignal.timeout(1000) })).status > 0,
    30_000,
  );
  log(`bare node:http server (pid ${bare.pid}) at ${bareUrl}`);
  const bareResults = await runScenarios('bare', bare, bareUrl, pools);
  const bareHwm = memoryOf(bare.pid)?.hwm ?? Number.NaN;
  await stopChild(bare, 5000);
  log();

  // --- Tributary -------------------------------------------------------------------------
  const dataDir = join(tmpRoot, 'data');
  const configFile = join(tmpRoot, 'tributary.yaml');
  writeFileSync(
    configFile,
    (process.env.BENCH_COLLECT_ONLY === '1'
      ? `${CONFIG_YAML}destinations: []\nidentity:\n  enabled: false\n`
      : CONFIG_YAML) + (process.env.BENCH_CONFIG_EXTRA ? `${process.env.BENCH_CONFIG_EXTRA}\n` : ''),
  );
  const token = `tka_bench_${randomBytes(18).toString('base64url')}`;
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const tributaryLog = join(tmpRoot, 'tributary.log');
  const trib = spawnChild(
    'tributary',
    process.execPath,
    [
      ...serverNodeOptions(ROOT),
      ...SERVER_NODE_ARGS,
      join(ROOT, 'dist/cli/index.js'),
      'start',
      '--config',
      configFile,
      '--port',
      String(port),
      '--data-dir',
      dataDir,
    ],
    {
      env: { ...process.env, TRIBUTARY_ADMIN_TOKEN: token, TRIBUTARY_LOG_LEVEL: 'warn' },
      cwd: tmpRoot,
      logFile: tributaryLog,
    },
  );
  children.push(trib);
  const startupStarted = Date.now();
  await waitReady(trib, async () => (await health(url)).status === 'ok', 60_000);
  const startupMs = Date.now() - startupStarted;
  log(`tributary (pid ${trib.pid}) at ${url}, ready in ${startupMs} ms, data in ${dataDir}`);
  const tribResults = await runScenarios('tributary', trib, url, pools);
  const tribHwm = memoryOf(trib.pid)?.hwm ?? Number.NaN;

  // --- Verification ----------------------------------------------------------------------
  const final = await health(url);
  const [counts] = await query(
    url,
    token,
    'SELECT count(*) AS n, count(DISTINCT message_id) AS distinct_ids FROM events',
  );
  const [failed] = await query(url, token, 'SELECT count(*) AS n FROM failed_events');
  // The raw archive view splits every log row: tolerate it failing or being slow.
  const rawCount = await query(url, token, 'SELECT count(*) AS n FROM log.raw_events', 60_000).then(
    (rows) => rows[0],
    (err: unknown) => {
      log(`  (counting log.raw_events failed: ${(err as Error).message})`);
      return undefined;
    },
  );
  const acked = tribResults.reduce((sum, r) => sum + r.warmup.ackedEvents + r.measured.ackedEvents, 0);
  const sentEvents = tribResults.reduce(
    (sum, r) => sum + (r.warmup.sent + r.measured.sent) * r.scenario.eventsPerRequest,
    0,
  );
  const verification = {
    ackedEvents: acked,
    sentEvents,
    logEndOffset: final.log.endOffset,
    loaderPosition: final.loader.position,
    rawEvents: Number(rawCount?.n),
    eventsRows: Number(counts?.n),
    distinctMessageIds: Number(counts?.distinct_ids),
    failedEvents: Number(failed?.n),
    messageIdsIssued: ids.issued,
  };
  const stop = await stopChild(trib, 30_000);
  const problems = logProblems(tributaryLog);
  const bareProblems = readFileSync(join(tmpRoot, 'bare.log'), 'utf8').trim();

  // --- Report ----------------------------------------------------------------------------
  const rows: RunRow[] = [...bareResults, ...tribResults].map((r) => ({
    server: r.server,
    scenario: r.scenario.name,
    connections: r.scenario.connections,
    eventsPerRequest: r.scenario.eventsPerRequest,
    requestsPerS: r.measured.requestsPerS,
    eventsPerS: r.measured.eventsPerS,
    p50Ms: r.measured.latencyMs.p50,
    p99Ms: r.measured.latencyMs.p99,
    non2xx: r.measured.non2xx,
    errors: r.measured.errors,
    timeouts: r.measured.timeouts,
    peakRssBytes: r.peakRssBytes,
    serverCpu: r.serverCpu,
    generatorCpu: r.measured.generatorCpu,
    otherCpu: r.otherCpu,
  }));
  const ratios = SCENARIOS.map((s) => {
    const b = bareResults.find((r) => r.scenario === s)!;
    const t = tribResults.find((r) => r.scenario === s)!;
    return { scenario: s.name, tributaryOverBare: t.measured.eventsPerS / b.measured.eventsPerS };
  });
  const single = tribResults.find((r) => r.scenario.eventsPerRequest === 1);
  const batch = tribResults.find((r) => r.scenario.eventsPerRequest > 1);
  const targets: { target: string; measured: string; met: boolean }[] = [];
  if (batch) {
    const batchRatio = ratios.find((r) => r.scenario === batch.scenario.name)!.tributaryOverBare;
    targets.push(
      {
        target: `batches ≥ 100,000 events/s`,
        measured: `${int(batch.measured.eventsPerS)} events/s`,
        met: batch.measured.eventsPerS >= 100_000,
      },
      {
        target: `batches ≥ 50% of the bare server's events/s`,
        measured: pct(batchRatio),
        met: batchRatio >= 0.5,
      },
    );
  }
  if (single) {
    targets.push({
      target: 'single events p99 < 20 ms',
      measured: `${ms(single.measured.latencyMs.p99)} ms`,
      met: single.measured.latencyMs.p99 < 20,
    });
  }

  log();
  log('## Ingest benchmark');
  log();
  log(
    `${startedAt.toISOString().slice(0, 10)}, node ${process.version}, ${cpus().length} CPUs (${cpus()[0]?.model ?? '?'}); ` +
      `load generator (autocannon, ${CONNECTIONS} connections, pipelining 1) on the same machine; ` +
      `${WARMUP_S} s warm-up + ${DURATION_S} s measured per scenario; events ~${pools.get(SCENARIOS[0]!.name)!.meanEventBytes} B, unique messageIds. ` +
      `Tributary answers only after a group commit to its DuckDB event log; the bare server only parses the JSON.`,
  );
  log();
  log(resultsTable(rows));
  log();
  log(
    `Server CPU is a share of one core (the machine has ${cpus().length}). During the measured runs the load generator ` +
      `used ${rows.map((r) => pct(r.generatorCpu)).join(' / ')} and other processes on the machine ` +
      `${rows.map((r) => pct(r.otherCpu)).join(' / ')} of a core (rows in table order). ` +
      'Peak RSS is polled every 200 ms during warm-up and measured run.',
  );
  log();
  log(
    markdownTable(
      [
        'Scenario',
        'Tributary / bare (events/s)',
        'Loader rate during run',
        'Loader lag at end',
        'Catch-up',
        'Peak RSS incl. catch-up',
      ],
      ratios.map((r) => {
        const t = tribResults.find((x) => x.scenario.name === r.scenario)!;
        return [
          r.scenario,
          pct(r.tributaryOverBare),
          `${int(t.loader?.loadedPerSDuringRun ?? Number.NaN)} events/s`,
          `${int(t.loader?.lagAtEnd ?? Number.NaN)} events`,
          t.loader
            ? `${(t.loader.catchUp.ms / 1000).toFixed(1)} s${t.loader.catchUp.caughtUp ? '' : ' (timed out)'}`
            : 'n/a',
          mb(t.loader?.peakRssWithCatchUpBytes ?? Number.NaN),
        ];
      }),
      ['l', 'r', 'r', 'r', 'r', 'r'],
    ),
  );
  log();
  log(
    markdownTable(
      ['Target', 'Measured', 'Met'],
      targets.map((t) => [t.target, t.measured, t.met ? 'yes' : 'no']),
      ['l', 'r', 'l'],
    ),
  );
  log();
  log('Verification (tributary, warm-up + measured runs):');
  log(`  events acknowledged (2xx)      ${int(verification.ackedEvents)}`);
  log(`  events sent (incl. cut off)    ${int(verification.sentEvents)}`);
  log(
    `  log end offset                 ${int(verification.logEndOffset)}  (loader position ${int(verification.loaderPosition)})`,
  );
  log(`  log.raw_events rows            ${int(verification.rawEvents)}`);
  log(
    `  events rows                    ${int(verification.eventsRows)}  (distinct messageIds ${int(verification.distinctMessageIds)})`,
  );
  log(`  failed_events rows             ${int(verification.failedEvents)}`);
  const loadedVsAcked = verification.eventsRows - verification.ackedEvents;
  log(
    `  events rows − acknowledged     ${loadedVsAcked >= 0 ? '+' : ''}${int(loadedVsAcked)}` +
      (loadedVsAcked < 0
        ? '  ← FEWER rows than acknowledged events: acknowledged events are missing'
        : loadedVsAcked > 0
          ? '  (requests cut off when a run stopped can still be committed without being counted as acknowledged)'
          : ''),
  );
  log(`  peak RSS over the whole run    bare ${mb(bareHwm)}, tributary ${mb(tribHwm)} (VmHWM)`);
  log(`  tributary startup ${startupMs} ms, shutdown ${stop.ms} ms${stop.graceful ? '' : ' (SIGKILLed)'}`);
  log(
    `  tributary log lines at warn or above: ${problems.count}` +
      Object.entries(problems.byMessage)
        .map(([m, n]) => `\n    ${n} × ${m}`)
        .join(''),
  );
  if (bareProblems) log(`  bare server output: ${bareProblems.slice(0, 500)}`);

  const resultsDir = join(ROOT, 'bench/results');
  mkdirSync(resultsDir, { recursive: true });
  const file = join(resultsDir, `ingest-${startedAt.toISOString().replace(/[:.]/g, '-')}.json`);
  const json = {
    benchmark: 'ingest',
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    machine: {
      loadAverageAtStart,
      node: process.version,
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model,
      totalMemBytes: totalmem(),
      kernel: release(),
    },
    settings: {
      durationS: DURATION_S,
      warmupS: WARMUP_S,
      connections: CONNECTIONS,
      pipelining: 1,
      requestTimeoutS: REQUEST_TIMEOUT_S,
      distinctBodiesPerScenario: POOL_SIZE,
      uniqueMessageIds: true,
      build,
      scenarios: SCENARIOS.map((s) => ({
        ...s,
        meanBodyBytes: pools.get(s.name)!.meanBodyBytes,
        meanEventBytes: pools.get(s.name)!.meanEventBytes,
      })),
    },
    rows,
    ratios,
    targets,
    runs: [...bareResults, ...tribResults].map((r) => ({
      server: r.server,
      scenario: r.scenario.name,
      warmup: r.warmup,
      measured: r.measured,
      peakRssBytes: r.peakRssBytes,
      hwmBytes: r.hwmBytes,
      serverCpu: r.serverCpu,
      otherCpu: r.otherCpu,
      loader: r.loader,
    })),
    tributary: { startupMs, shutdown: stop, peakRssBytes: tribHwm, verification, logProblems: problems },
    bare: { peakRssBytes: bareHwm },
  };
  writeFileSync(file, `${JSON.stringify(json, null, 2)}\n`);
  log();
  log(`results written to ${file}`);
}

// Bound the whole run: build, two servers × scenarios × (warm-up + measured + slack), catch-ups.
const budgetS =
  300 +
  2 * (60 + SCENARIOS.length * (WARMUP_S + DURATION_S + 2 * (REQUEST_TIMEOUT_S + 10))) +
  SCENARIOS.length * CATCHUP_TIMEOUT_S +
  120;
const watchdog = setTimeout(() => {
  process.stderr.write(`benchmark exceeded its ${budgetS} s budget: killing the servers\n`);
  emergencyCleanup();
  process.exit(2);
}, budgetS * 1000);

main()
  .then(
    () => 0,
    (err: unknown) => {
      process.stderr.write(
        `benchmark failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
      );
      return 1;
    },
  )
  .then(async (code) => {
    for (const c of children) if (!c.exit) await stopChild(c, 10_000);
    for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
    clearTimeout(watchdog);
    process.exit(code);
  });
