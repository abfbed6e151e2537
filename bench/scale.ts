/**
 * Scale-out benchmark: end-to-end events/s of the same workload through
 *  - the embedded default (one `tributary start`, DuckDB log, state and warehouse) — the baseline,
 *  - scale-out with one ingest process and 1 worker (NATS JetStream + PostgreSQL),
 *  - scale-out with one ingest process and 2 workers,
 * all in one run on this machine. The workload is bench/lib/people-workload.ts: people whose
 * events land in different partitions and merge into one profile each. End to end means from
 * the first request until every event is in `events`, resolved into its profile, and loaded
 * into the Segment tables; the acknowledged rate (until the last 200) is printed too.
 *
 *   npm run bench:scale -- [--people N] [--partitions N] [--batch N] [--concurrency N]
 *
 * Needs NATS with JetStream (default nats://127.0.0.1:4222, or $BENCH_NATS_URL) and PostgreSQL
 * (postgres://postgres@127.0.0.1:5432/test, or $BENCH_PG_URL): it makes a stream and a
 * database of its own and removes them after.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import pg from 'pg';
import { ensureBuild, serverNodeOptions } from './lib/build.js';
import { peopleWorkload } from './lib/people-workload.js';
import { type Child, freePort, sleep, spawnChild, stopChild, waitReady } from './lib/proc.js';
import { int, markdownTable } from './lib/report.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const { values: args } = parseArgs({
  options: {
    people: { type: 'string', default: '10000' },
    partitions: { type: 'string', default: '8' },
    batch: { type: 'string', default: '500' },
    concurrency: { type: 'string', default: '8' },
  },
});
const PEOPLE = Number(args.people);
const PARTITIONS = Number(args.partitions);
const BATCH = Number(args.batch);
const CONCURRENCY = Number(args.concurrency);
const NATS_URL = process.env.BENCH_NATS_URL ?? 'nats://127.0.0.1:4222';
const PG_URL = process.env.BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const TOKEN = `tka_bench_${randomBytes(12).toString('hex')}`;
const WRITE_KEY = 'wk_bench_scale';

const log = (line = '') => process.stdout.write(`${line}\n`);

interface Deployment {
  name: string;
  /** Processes besides the one serving HTTP. */
  workers: number;
  scaleOut: boolean;
}

interface Outcome {
  name: string;
  events: number;
  ackedPerSec: number;
  endToEndPerSec: number;
  seconds: number;
  exact: boolean;
  detail: string;
}

async function adminQuery(url: string, sql: string): Promise<Record<string, unknown>[]> {
  const res = await fetch(`${url}/admin/v1/query`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ sql }),
  });
  const body = (await res.json()) as { rows?: Record<string, unknown>[]; message?: string };
  if (res.status !== 200) throw new Error(`query failed (${res.status}): ${body.message}`);
  return body.rows!;
}

async function send(url: string, events: Record<string, unknown>[]): Promise<void> {
  let next = 0;
  const auth = `Basic ${Buffer.from(`${WRITE_KEY}:`).toString('base64')}`;
  const sender = async () => {
    for (let i = next; i < events.length; i = next) {
      next += BATCH;
      const body = JSON.stringify({ batch: events.slice(i, i + BATCH) });
      for (let attempt = 0; ; attempt++) {
        const res = await fetch(`${url}/v1/batch`, {
          method: 'POST',
          headers: { authorization: auth, 'content-type': 'application/json' },
          body,
        }).catch(() => undefined);
        if (res?.status === 200) {
          await res.text();
          break;
        }
        if (attempt > 50) throw new Error(`batch refused: ${res?.status} ${await res?.text()}`);
        await sleep(200);
      }
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, sender));
}

async function run(d: Deployment): Promise<Outcome> {
  const dir = mkdtempSync(join(tmpdir(), 'tributary-bench-scale-'));
  const id = randomBytes(5).toString('hex');
  const database = `trib_bench_${id}`;
  const stream = `bench_${id}`;
  const children: Child[] = [];
  const admin = new pg.Client({ connectionString: PG_URL });
  await admin.connect();
  try {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    let config = `version: 1\nsources:\n  - {id: web, type: http, writeKey: ${WRITE_KEY}}\n`;
    if (d.scaleOut) {
      await admin.query(`CREATE DATABASE ${database}`);
      const u = new URL(PG_URL);
      u.pathname = `/${database}`;
      config += `log: {type: nats, servers: ["${NATS_URL}"], stream: ${stream}, partitions: ${PARTITIONS}}\n`;
      config += `state: {type: postgres, connectionString: "${u.toString()}"}\n`;
    }
    writeFileSync(join(dir, 'tributary.yaml'), config);
    const env = { ...process.env, TRIBUTARY_ADMIN_TOKEN: TOKEN, TRIBUTARY_LOG_LEVEL: 'warn' };
    const start = (name: string, extra: string[]) => {
      const child = spawnChild(
        name,
        process.execPath,
        [
          ...serverNodeOptions(ROOT),
          join(ROOT, 'dist/cli/index.js'),
          'start',
          '--config',
          join(dir, 'tributary.yaml'),
          '--data-dir',
          join(dir, 'data'),
          ...extra,
        ],
        { env, cwd: dir, logFile: join(dir, `${name}.log`) },
      );
      children.push(child);
      return child;
    };
    const server = start(d.scaleOut ? 'ingest' : 'tributary', [
      '--port',
      String(port),
      ...(d.scaleOut ? ['--role', 'ingest'] : []),
    ]);
    await waitReady(server, async () => (await fetch(`${url}/healthz`)).status === 200, 60_000);
    for (let i = 0; i < d.workers; i++) {
      const wport = await freePort();
      const w = start(`worker-${i}`, ['--role', 'worker', '--port', String(wport)]);
      await waitReady(
        w,
        async () => (await fetch(`http://127.0.0.1:${wport}/healthz`)).status === 200,
        60_000,
      );
    }
    if (d.workers > 1) await sleep(3_000); // let the workers settle their share of the partitions

    const workload = peopleWorkload(PEOPLE, 3, `s${id}`);
    const total = workload.events.length;
    const started = Date.now();
    await send(url, workload.events);
    const acked = Date.now();
    const counts = async () => {
      const [row] = await adminQuery(
        url,
        `SELECT (SELECT count(*) FROM events) AS events,
                (SELECT count(*) FROM profile_event_assignments) AS assigned,
                (SELECT count(*) FROM web.tracks) AS tracks`,
      ).catch(() => [{ events: 0, assigned: 0, tracks: 0 }]);
      return { events: Number(row!.events), assigned: Number(row!.assigned), tracks: Number(row!.tracks) };
    };
    let c = await counts();
    const deadline = Date.now() + 600_000;
    while (c.events < total || c.assigned < total || c.tracks < workload.counts.tracks) {
      if (Date.now() > deadline) throw new Error(`${d.name}: not done after 10 min: ${JSON.stringify(c)}`);
      await sleep(100);
      c = await counts();
    }
    const done = Date.now();
    const [check] = await adminQuery(
      url,
      `SELECT (SELECT count(DISTINCT message_id) FROM events) AS distinct_events,
              (SELECT count(*) FROM profiles) AS profiles`,
    );
    const exact =
      c.events === total &&
      c.assigned === total &&
      c.tracks === workload.counts.tracks &&
      Number(check!.distinct_events) === total &&
      Number(check!.profiles) === PEOPLE;
    return {
      name: d.name,
      events: total,
      ackedPerSec: (total * 1000) / (acked - started),
      endToEndPerSec: (total * 1000) / (done - started),
      seconds: (done - started) / 1000,
      exact,
      detail: `events ${c.events}, assigned ${c.assigned}, tracks ${c.tracks}, profiles ${check!.profiles}`,
    };
  } finally {
    for (const child of children.reverse()) await stopChild(child, 15_000);
    if (d.scaleOut) {
      await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`).catch(() => undefined);
      const nc = await connect({ servers: NATS_URL });
      const jsm = await jetstreamManager(nc);
      await jsm.streams.delete(stream).catch(() => undefined);
      await nc.close();
    }
    await admin.end();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  ensureBuild(ROOT, log);
  log(`bench:scale — ${PEOPLE} people, ${PEOPLE * 10} events, batches of ${BATCH}, ${CONCURRENCY} senders`);
  log(
    `machine: ${cpus().length} CPUs, load ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}; NATS ${NATS_URL}`,
  );
  const deployments: Deployment[] = [
    { name: 'embedded (DuckDB)', workers: 0, scaleOut: false },
    { name: `NATS + PostgreSQL, 1 worker (${PARTITIONS} partitions)`, workers: 1, scaleOut: true },
    { name: `NATS + PostgreSQL, 2 workers (${PARTITIONS} partitions)`, workers: 2, scaleOut: true },
  ];
  const outcomes: Outcome[] = [];
  for (const d of deployments) {
    log(`\n${d.name}: running…`);
    const o = await run(d);
    log(
      `  ${int(o.endToEndPerSec)} events/s end to end (${o.seconds.toFixed(1)} s), acked at ${int(o.ackedPerSec)}/s; ${o.detail}${o.exact ? '' : '  ← NOT EXACT'}`,
    );
    outcomes.push(o);
  }
  const base = outcomes[0]!.endToEndPerSec;
  log('');
  log(
    markdownTable(
      ['deployment', 'end-to-end events/s', 'vs embedded', 'acked events/s', 'exact'],
      outcomes.map((o) => [
        o.name,
        int(o.endToEndPerSec),
        `${(o.endToEndPerSec / base).toFixed(2)}×`,
        int(o.ackedPerSec),
        o.exact ? 'yes' : 'NO',
      ]),
      ['l', 'r', 'r', 'r', 'l'],
    ),
  );
  if (outcomes.length >= 3) {
    log(
      `\n2 workers vs 1 worker: ${(outcomes[2]!.endToEndPerSec / outcomes[1]!.endToEndPerSec).toFixed(2)}×`,
    );
  }
  if (!outcomes.every((o) => o.exact)) process.exitCode = 1;
}

await main();
