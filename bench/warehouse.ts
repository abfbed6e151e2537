/**
 * Warehouse benchmark: loading the Segment tables against each engine's raw bulk path, and
 * freshness from the HTTP 200 to queryable on the embedded default.
 *
 *   npm run bench:warehouse
 *   BENCH_EVENTS=200000 BENCH_FRESHNESS_SECONDS=10 npm run bench:warehouse
 *
 * Environment: BENCH_EVENTS (default 1,000,000), BENCH_BATCH (events per load, default 10,000,
 * the destinations' default maxBatch), BENCH_FRESHNESS_SECONDS (default 20),
 * BENCH_FRESHNESS_RATE (background events/s during the freshness run, default 2,000),
 * BENCH_PG (a pg connection string for an admin connection; default postgres@127.0.0.1:5432/test).
 *
 * 1. DuckDB: the same realistic track events (bench/lib/events.ts, parsed and given the
 *    server-side fields) loaded by the DuckDB destination (layout, names, types, staging,
 *    merge on id, offset) and, batch by batch in the same run, the same final rows appended
 *    with DuckDB's appender straight into identical tables (no staging, no merge).
 * 2. PostgreSQL: the same, against a raw `COPY … FROM STDIN` of the same rows into identical
 *    tables. Each side gets its own database, dropped at the end.
 * 3. Freshness: an in-process server with the default configuration under a steady
 *    background load; probes sent every 100 ms and looked for in `web.tracks` every 25 ms.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { DuckDBInstance } from '@duckdb/node-api';
import pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import { pino } from 'pino';
import { parseConfig } from '../src/config/load.js';
import type { SqlEngine } from '../src/destinations/destination.js';
import { DuckDBEngine } from '../src/destinations/warehouse/duckdb/duckdb-engine.js';
import { WarehouseModel } from '../src/destinations/warehouse/layout/warehouse-model.js';
import { PostgresEngine } from '../src/destinations/warehouse/postgres/postgres-engine.js';
import { SegmentWarehouse } from '../src/destinations/warehouse/segment-warehouse.js';
import { pgIdent } from '../src/platform/postgres/pg-sql.js';
import { startServer } from '../src/server/server.js';
import type { StoredEvent } from '../src/store/store.js';
import { envNumber } from './lib/env.js';
import { BodyPool, MessageIds } from './lib/events.js';
import { int, markdownTable, ms } from './lib/report.js';

const EVENTS = Math.round(envNumber('BENCH_EVENTS', 1_000_000));
const BATCH = Math.round(envNumber('BENCH_BATCH', 10_000));
const FRESHNESS_S = envNumber('BENCH_FRESHNESS_SECONDS', 20);
const FRESHNESS_RATE = envNumber('BENCH_FRESHNESS_RATE', 2_000);
const PG_URL = process.env.BENCH_PG ?? 'postgres://postgres@127.0.0.1:5432/test';

/** Batches of stored events as the feed hands them over, generated on the fly (never all in memory). */
function* batches(): Generator<StoredEvent[]> {
  const pool = new BodyPool(new MessageIds(), { eventsPerRequest: 100, size: 64, seed: 7 });
  let offset = 0;
  while (offset < EVENTS) {
    const batch: StoredEvent[] = [];
    while (batch.length < Math.min(BATCH, EVENTS - offset)) {
      const body = JSON.parse(pool.next().toString()) as { batch: Record<string, unknown>[]; sentAt: string };
      for (const e of body.batch) {
        if (batch.length >= Math.min(BATCH, EVENTS - offset)) break;
        const receivedAt = Date.now();
        const at = new Date(receivedAt).toISOString();
        const json = JSON.stringify({
          ...e,
          sentAt: body.sentAt,
          receivedAt: at,
          originalTimestamp: e.timestamp,
        });
        batch.push({
          logOffset: offset + batch.length,
          sourceId: 'web',
          messageId: String(e.messageId),
          receivedAt,
          json,
        });
      }
    }
    offset += batch.length;
    yield batch;
  }
}

interface Side {
  /** Loads one batch; returns the milliseconds it took to load (setup not counted). */
  load(batch: StoredEvent[], nextOffset: number): Promise<number>;
  rows(): Promise<number>;
  close(): Promise<void>;
}

/** The destination under test, timed per load. */
function destinationSide(engine: SqlEngine, count: () => Promise<number>): Side {
  const w = new SegmentWarehouse({ name: 'bench', engine });
  return {
    async load(batch, next) {
      const t = performance.now();
      await w.load(batch, next);
      return performance.now() - t;
    },
    rows: count,
    close: () => w.close(),
  };
}

/**
 * The baseline: the same final rows (planned by the same model, untimed), written with the
 * engine's raw bulk path into identical tables; only the write is timed.
 */
function baselineSide(
  engine: SqlEngine,
  write: (schema: string, table: string, columns: string[], rows: (string | null)[][]) => Promise<void>,
  count: () => Promise<number>,
): Side {
  const model = new WarehouseModel({ maxColumns: engine.maxColumns });
  let setup = false;
  return {
    async load(batch) {
      if (!setup) {
        await engine.setup();
        setup = true;
      }
      const plan = model.plan(batch);
      if (plan.changes.length > 0) await engine.apply('baseline', [{ ...plan, tables: [], names: [] }], 0);
      const t = performance.now();
      for (const tl of plan.tables) {
        // the destination sets loaded_at in the engine; the baseline writes it as a value
        const at = new Date().toISOString();
        await write(
          tl.schema,
          tl.table,
          [...tl.columns.map((c) => c.name), 'loaded_at'],
          tl.rows.map((r) => [...r, at]),
        );
      }
      return performance.now() - t;
    },
    rows: count,
    close: () => engine.close(),
  };
}

interface Comparison {
  engine: string;
  ours: { ms: number; rows: number };
  baseline: { ms: number; rows: number };
}

async function compare(engine: string, ours: Side, baseline: Side): Promise<Comparison> {
  let oursMs = 0;
  let baseMs = 0;
  let loaded = 0;
  for (const batch of batches()) {
    loaded += batch.length;
    // Alternate which side goes first, so neither always gets the warmer caches.
    if ((loaded / batch.length) % 2 === 0) {
      oursMs += await ours.load(batch, loaded);
      baseMs += await baseline.load(batch, loaded);
    } else {
      baseMs += await baseline.load(batch, loaded);
      oursMs += await ours.load(batch, loaded);
    }
    if (loaded % 100_000 < batch.length) process.stderr.write(`  ${engine}: ${int(loaded)} events\n`);
  }
  const result = {
    engine,
    ours: { ms: oursMs, rows: await ours.rows() },
    baseline: { ms: baseMs, rows: await baseline.rows() },
  };
  await ours.close();
  await baseline.close();
  return result;
}

async function duckdb(dir: string): Promise<Comparison> {
  const a = await DuckDBInstance.create(join(dir, 'ours.duckdb'));
  const b = await DuckDBInstance.create(join(dir, 'baseline.duckdb'));
  const ca = await a.connect();
  const cb = await b.connect();
  const count = (c: typeof ca) => async () =>
    Number(
      (
        await c.runAndReadAll(
          "SELECT (SELECT count(*) FROM web.tracks) + (SELECT sum(estimated_size) FROM duckdb_tables() WHERE schema_name = 'web' AND table_name NOT IN ('tracks', 'discards'))",
        )
      ).getRows()[0]![0],
    );
  const ours = destinationSide(new DuckDBEngine(a, { catalog: 'ours' }), count(ca));
  const tableColumns = new Map<string, string[]>();
  const baseline = baselineSide(
    new DuckDBEngine(b, { catalog: 'baseline' }),
    async (schema, table, columns, rows) => {
      // The appender fills every column of the table in its order; the order is looked up once.
      const key = `${schema}.${table}`;
      let order = tableColumns.get(key);
      if (!order || columns.some((c) => !order!.includes(c))) {
        const r = await cb.runAndReadAll(
          `SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position`,
          [schema, table],
        );
        order = r.getRows().map((x) => String(x[0]));
        tableColumns.set(key, order);
      }
      const at = order.map((c) => columns.indexOf(c));
      const ap = await cb.createAppender(table, schema);
      for (const r of rows) {
        for (const i of at) {
          const v = i < 0 ? null : r[i]!;
          if (v === null) ap.appendNull();
          else ap.appendVarchar(v);
        }
        ap.endRow();
      }
      ap.flushSync();
      ap.closeSync();
    },
    count(cb),
  );
  const result = await compare('duckdb', ours, baseline);
  ca.closeSync();
  cb.closeSync();
  a.closeSync();
  b.closeSync();
  return result;
}

async function postgres(): Promise<Comparison | string> {
  const admin = new pg.Client({ connectionString: PG_URL, connectionTimeoutMillis: 3000 });
  try {
    await admin.connect();
  } catch (err) {
    return `PostgreSQL unreachable (${(err as Error).message})`;
  }
  const suffix = randomBytes(5).toString('hex');
  const dbs = [`trib_bench_ours_${suffix}`, `trib_bench_base_${suffix}`];
  for (const d of dbs) await admin.query(`CREATE DATABASE ${d}`);
  const url = (d: string) => {
    const u = new URL(PG_URL);
    u.pathname = `/${d}`;
    return u.toString();
  };
  try {
    const counter = new pg.Client({ connectionString: url(dbs[0]!) });
    const counterB = new pg.Client({ connectionString: url(dbs[1]!) });
    await counter.connect();
    await counterB.connect();
    const count = (c: pg.Client) => async () => {
      const r = await c.query(
        `SELECT (SELECT count(*) FROM web.tracks) + (SELECT sum(n_live_tup) FROM pg_stat_user_tables
          WHERE schemaname = 'web' AND relname NOT IN ('tracks', 'discards')) AS n`,
      );
      return Number(r.rows[0].n);
    };
    const raw = new pg.Client({ connectionString: url(dbs[1]!) });
    await raw.connect();
    const ours = destinationSide(
      new PostgresEngine({ connection: { connectionString: url(dbs[0]!) } }),
      count(counter),
    );
    const baseline = baselineSide(
      new PostgresEngine({ connection: { connectionString: url(dbs[1]!) } }),
      async (schema, table, columns, rows) => {
        let text = '';
        for (const r of rows) {
          text += r.map((v) => (v === null ? '' : `"${v.replace(/"/g, '""')}"`)).join(',');
          text += '\n';
        }
        await pipeline(
          Readable.from([text]),
          raw.query(
            copyFrom(
              `COPY ${pgIdent(schema)}.${pgIdent(table)} (${columns.map(pgIdent).join(', ')}) FROM STDIN (FORMAT csv)`,
            ),
          ),
        );
      },
      count(counterB),
    );
    const result = await compare('postgres', ours, baseline);
    await counter.query('ANALYZE');
    await counterB.query('ANALYZE');
    result.ours.rows = await count(counter)();
    result.baseline.rows = await count(counterB)();
    await counter.end();
    await counterB.end();
    await raw.end();
    return result;
  } finally {
    for (const d of dbs) await admin.query(`DROP DATABASE IF EXISTS ${d} WITH (FORCE)`);
    await admin.end();
  }
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

async function freshness(dir: string): Promise<{ samples: number[]; background: number }> {
  const { config } = parseConfig(
    'version: 1\nsources:\n  - id: web\n    type: http\n    writeKey: wk_bench\n',
    {},
  );
  const server = await startServer({
    config,
    dataDir: join(dir, 'fresh'),
    adminToken: 'bench',
    logger: pino({ level: 'silent' }),
    port: 0,
    host: '127.0.0.1',
  });
  const auth = `Basic ${Buffer.from('wk_bench:').toString('base64')}`;
  const post = (batch: Record<string, unknown>[]) =>
    fetch(`${server.url}/v1/batch`, {
      method: 'POST',
      headers: { authorization: auth, 'content-type': 'application/json' },
      body: JSON.stringify({ batch }),
    }).then(async (r) => {
      await r.arrayBuffer();
      if (r.status !== 200) throw new Error(`status ${r.status}`);
    });
  const pool = new BodyPool(new MessageIds(), { eventsPerRequest: 100, size: 16, seed: 3 });
  const end = Date.now() + FRESHNESS_S * 1000;
  let background = 0;
  const backgroundLoad = (async () => {
    const perTick = FRESHNESS_RATE / 10; // ten ticks a second
    while (Date.now() < end) {
      const t = Date.now();
      const sends: Promise<void>[] = [];
      for (let n = 0; n < perTick; n += 100) {
        const body = JSON.parse(pool.next().toString()) as { batch: Record<string, unknown>[] };
        sends.push(post(body.batch));
        background += body.batch.length;
      }
      await Promise.all(sends);
      await new Promise((r) => setTimeout(r, Math.max(0, 100 - (Date.now() - t))));
    }
  })();
  const pending = new Map<string, number>();
  const samples: number[] = [];
  const poller = (async () => {
    while (Date.now() < end + 5000 && (Date.now() < end || pending.size > 0)) {
      if (pending.size > 0) {
        const ids = [...pending.keys()].map((id) => `'${id}'`).join(', ');
        // Until the first load the table does not exist: that wait counts like any other.
        const r = await server.warehouse
          .query(`SELECT id FROM web.tracks WHERE id IN (${ids})`)
          .catch(() => ({ rows: [] as Record<string, unknown>[] }));
        const now = performance.now();
        for (const row of r.rows) {
          const id = String(row.id);
          samples.push(now - pending.get(id)!);
          pending.delete(id);
        }
      }
      await new Promise((r) => setTimeout(r, 25));
    }
  })();
  let probe = 0;
  while (Date.now() < end) {
    const id = `probe-${randomBytes(4).toString('hex')}-${probe++}`;
    await post([{ type: 'track', messageId: id, userId: 'probe', event: 'Probe', properties: { n: probe } }]);
    pending.set(id, performance.now());
    await new Promise((r) => setTimeout(r, 100));
  }
  await backgroundLoad;
  await poller;
  await server.close();
  return { samples: samples.sort((a, b) => a - b), background };
}

async function main() {
  const dir = mkdtempSync(join(tmpdir(), 'trib-bench-wh-'));
  try {
    console.log(
      `warehouse benchmark: ${int(EVENTS)} events in loads of ${int(BATCH)}, ${cpus().length} cores`,
    );
    const results: Comparison[] = [];
    results.push(await duckdb(dir));
    const p = await postgres();
    if (typeof p === 'string') console.log(`PostgreSQL part skipped: ${p}`);
    else results.push(p);
    const rows = results.map((r) => {
      const ours = (EVENTS / r.ours.ms) * 1000;
      const base = (EVENTS / r.baseline.ms) * 1000;
      return [
        r.engine,
        int(ours),
        r.engine === 'duckdb' ? 'appender' : 'COPY',
        int(base),
        `${((ours / base) * 100).toFixed(0)}%`,
        `${int(r.ours.rows)} / ${int(r.baseline.rows)}`,
      ];
    });
    console.log(
      markdownTable(
        [
          'engine',
          'destination events/s',
          'baseline',
          'baseline events/s',
          'ratio',
          'rows (ours / baseline)',
        ],
        rows,
        ['l', 'r', 'l', 'r', 'r', 'r'],
      ),
    );
    const f = await freshness(dir);
    console.log(
      `freshness (200 → queryable in web.tracks), ${f.samples.length} probes over ${FRESHNESS_S} s with ` +
        `${int(f.background / FRESHNESS_S)} background events/s: p50 ${ms(percentile(f.samples, 50))} ms, ` +
        `p95 ${ms(percentile(f.samples, 95))} ms, max ${ms(f.samples[f.samples.length - 1] ?? Number.NaN)} ms`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
