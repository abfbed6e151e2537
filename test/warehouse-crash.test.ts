import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Child, CliChildren, type Health, health, kill9, sleep } from './cli-child.js';
import { basicAuth, MINIMAL_CONFIG, WRITE_KEY } from './helpers.js';
import { pgUnreachable, type ScratchDatabase, scratchDatabase } from './pg.js';

/**
 * Exactly-once loads into the Segment tables, through the real CLI: `tributary start` runs
 * as a child process with the embedded DuckDB destination, a Parquet lake and, when
 * PostgreSQL answers, a PostgreSQL destination, and is killed with SIGKILL while the
 * destinations are loading, two or three times. After the last restart has caught up, every
 * acknowledged messageId must be in `tracks` and in the event's table exactly once in each
 * engine, and once in the lake's committed files, and nothing else.
 */

const ADMIN_TOKEN = 'warehouse-crash-admin-token';
const pgProblem = await pgUnreachable();

let workDir: string;
let configPath: string;
let db: ScratchDatabase | undefined;
const cli = new CliChildren({
  get configPath() {
    return configPath;
  },
  get dataDir() {
    return join(workDir, 'data');
  },
  adminToken: ADMIN_TOKEN,
});

beforeAll(async () => {
  workDir = mkdtempSync(join(tmpdir(), 'tributary-wh-crash-'));
  configPath = join(workDir, 'tributary.yaml');
  let destinations = `destinations:
  - id: warehouse
    type: duckdb
    interval: 200ms
    maxBatch: 2000
  - id: lake
    type: parquet
    path: lake
    interval: 200ms
    maxBatch: 2000
`;
  if (!pgProblem) {
    db = await scratchDatabase('trib_crash');
    destinations += `  - id: pg
    type: postgres
    connectionString: ${db.url}
    interval: 200ms
    maxBatch: 2000
`;
  }
  // Every id is counted through the query endpoint: no row limit may cut them.
  writeFileSync(
    configPath,
    `${MINIMAL_CONFIG + destinations}query:\n  maxRows: 1000000\n  maxBytes: 1073741824\n`,
  );
});

afterAll(async () => {
  await cli.killAll();
  await db?.drop();
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

const startChild = () => cli.start();

/** How far the slowest destination is behind the log. */
const lag = (h: Health) =>
  Math.max(...Object.values(h.destinations).map((d) => h.log.endOffset - Math.max(d.position, 0)));

/** Senders posting 200-event batches until stopped; an id counts once its 200 arrived. */
class Load {
  readonly acked: string[] = [];
  readonly attempted = new Set<string>();
  private stopped = false;
  private readonly workers: Promise<void>[];

  constructor(
    readonly url: string,
    readonly tag: string,
  ) {
    this.workers = Array.from({ length: 4 }, (_, w) => this.run(w));
  }

  private async run(worker: number): Promise<void> {
    for (let seq = 0; !this.stopped; seq++) {
      const ids = Array.from({ length: 200 }, (_, i) => `${this.tag}-${worker}-${seq}-${i}`);
      for (const id of ids) this.attempted.add(id);
      try {
        const res = await fetch(`${this.url}/v1/batch`, {
          method: 'POST',
          headers: { authorization: basicAuth(WRITE_KEY), 'content-type': 'application/json' },
          body: JSON.stringify({
            batch: ids.map((messageId, i) => ({
              type: 'track',
              messageId,
              userId: `user-${i % 13}`,
              event: 'Crash Test',
              properties: { worker, seq, i, price: i % 2 === 0 ? i : i + 0.5, tags: ['a', String(i)] },
            })),
          }),
        });
        if (res.status !== 200) throw new Error(`status ${res.status}`);
        await res.arrayBuffer();
        this.acked.push(...ids);
      } catch {
        return; // the server died with this request in flight
      }
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.workers);
  }
}

/** Sends until the destinations are behind, then kills the child right away. */
async function killDuringLoads(child: Child, load: Load): Promise<number> {
  const deadline = Date.now() + 8_000;
  let behind = 0;
  while (Date.now() < deadline) {
    await sleep(100);
    const h = await health(child);
    behind = lag(h);
    if (behind > 0 && Object.values(h.destinations).every((d) => d.position > 0)) break;
  }
  await kill9(child);
  await load.stop();
  return behind;
}

async function adminCounts(child: Child, sql: string): Promise<Map<string, number>> {
  const res = await fetch(`${child.url}/admin/v1/query`, {
    method: 'POST',
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ sql }),
  });
  expect(res.status).toBe(200);
  const result = (await res.json()) as { rows: { id: string; c: number }[]; truncated: boolean };
  expect(result.truncated).toBe(false);
  const rows = result.rows;
  return new Map(rows.map((r) => [r.id, Number(r.c)]));
}

/** Rows per id in a Segment table of each engine, and (for `tracks`) in the Parquet lake. */
async function idsIn(child: Child, table: string): Promise<Map<string, number>[]> {
  const out = [await adminCounts(child, `SELECT id, count(*) AS c FROM web.${table} GROUP BY id`)];
  if (table === 'tracks') {
    const lake = join(workDir, 'data', 'lake', 'source=*', 'event=*', 'date=*', '*.parquet');
    // The query endpoint reads no files: the lake is read as any engine would, by a DuckDB of its own.
    const reader = await (await DuckDBInstance.create(':memory:')).connect();
    const r = await reader.runAndReadAll(`SELECT id, count(*) AS c FROM read_parquet('${lake}') GROUP BY id`);
    reader.closeSync();
    out.push(new Map(r.getRows().map(([id, c]) => [String(id), Number(c)])));
  }
  if (db) {
    const c = new pg.Client(db.config);
    await c.connect();
    const r = await c.query<{ id: string; c: string }>(
      `SELECT id, count(*) AS c FROM web.${table} GROUP BY id`,
    );
    await c.end();
    out.push(new Map(r.rows.map((x) => [x.id, Number(x.c)])));
  }
  return out;
}

describe('Segment tables after kill -9 during loads', () => {
  it('hold every acknowledged event exactly once in each engine', { timeout: 90_000 }, async () => {
    if (pgProblem) console.warn(`PostgreSQL part skipped: ${pgProblem}`);
    let child = await startChild();
    const loads: Load[] = [];
    const first = new Load(child.url, `a-${randomUUID()}`);
    loads.push(first);
    const lagAtFirstKill = await killDuringLoads(child, first);

    child = await startChild();
    const second = new Load(child.url, `b-${randomUUID()}`);
    loads.push(second);
    const lagAtSecondKill = await killDuringLoads(child, second);

    // A third kill as soon as the restarted server is working through the backlog.
    child = await startChild();
    const recovering = lag(await health(child));
    if (recovering > 0) {
      await kill9(child);
      child = await startChild();
    }

    const deadline = Date.now() + 45_000;
    for (;;) {
      const h = await health(child);
      if (lag(h) === 0 && h.loader.position === h.log.endOffset) break;
      if (Date.now() > deadline)
        throw new Error(`destinations stuck: ${JSON.stringify(h)}\n${child.output()}`);
      await sleep(100);
    }
    const acked = loads.flatMap((l) => l.acked);
    const attempted = new Set(loads.flatMap((l) => [...l.attempted]));
    expect(acked.length).toBeGreaterThan(0);
    for (const table of ['tracks', 'crash_test']) {
      for (const counts of await idsIn(child, table)) {
        const twice = [...counts].filter(([, c]) => c > 1);
        expect(twice.slice(0, 5), `${table}: ${twice.length} ids stored twice`).toEqual([]);
        const missing = acked.filter((id) => counts.get(id) !== 1);
        expect(missing.slice(0, 5), `${table}: ${missing.length} acknowledged ids missing`).toEqual([]);
        const foreign = [...counts.keys()].filter((id) => !attempted.has(id));
        expect(foreign.slice(0, 5), `${table}: ids never sent`).toEqual([]);
      }
    }
    console.info(
      `warehouse crash: lag at the kills ${lagAtFirstKill} and ${lagAtSecondKill} events, ` +
        `${recovering > 0 ? `killed again ${recovering} behind during recovery` : 'no backlog at restart'}; ` +
        `${acked.length} acknowledged, engines: duckdb + parquet${pgProblem ? '' : ' + postgres'}`,
    );
    await kill9(child);
  });
});
