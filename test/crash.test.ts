import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Child, CliChildren, type Health, health, kill9, sleep } from './cli-child.js';
import { basicAuth, MINIMAL_CONFIG, WRITE_KEY } from './helpers.js';

/**
 * Crash safety of the real CLI: `tributary start` runs as a child process (through tsx, so
 * no build is needed) and is killed with SIGKILL while clients are sending, and again while
 * the loader is working through a backlog. After each restart on the same data folder every
 * event whose request was answered 200 must be in `events`, and none twice.
 */

const ADMIN_TOKEN = 'crash-test-admin-token';
const SENDERS = 4;
const BATCH_SIZE = 50;

const cli = new CliChildren({
  get configPath() {
    return configPath;
  },
  get dataDir() {
    return dataDir;
  },
  adminToken: ADMIN_TOKEN,
});
let workDir: string;
let configPath: string;
let dataDir: string;

beforeAll(() => {
  workDir = mkdtempSync(join(tmpdir(), 'tributary-crash-'));
  configPath = join(workDir, 'tributary.yaml');
  dataDir = join(workDir, 'data');
  // Every acknowledged id is read back through the query endpoint: no row limit may cut them.
  writeFileSync(configPath, `${MINIMAL_CONFIG}query:\n  maxRows: 1000000\n  maxBytes: 1073741824\n`);
});

afterAll(async () => {
  await cli.killAll();
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

const startChild = () => cli.start(20_000);

/** Polls /healthz until the loader has loaded everything in the log. */
async function waitLoaded(child: Child, timeoutMs = 15_000): Promise<Health> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const h = await health(child, deadline);
    if (h.loader.position === h.log.endOffset) return h;
    if (Date.now() > deadline)
      throw new Error(`loader stuck at ${h.loader.position} of ${h.log.endOffset}:\n${child.output()}`);
    await sleep(50);
  }
}

async function adminQuery(child: Child, sql: string): Promise<Record<string, unknown>[]> {
  const res = await fetch(`${child.url}/admin/v1/query`, {
    method: 'POST',
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ sql }),
  });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`query failed (${res.status}): ${text}`);
  const result = JSON.parse(text) as { rows: Record<string, unknown>[]; truncated: boolean };
  if (result.truncated) throw new Error(`query result truncated: ${sql}`);
  return result.rows;
}

/** Count of rows per message_id in `events`. */
async function storedCounts(child: Child): Promise<Map<string, number>> {
  const rows = await adminQuery(child, 'SELECT message_id, count(*) AS c FROM events GROUP BY 1');
  return new Map(rows.map((r) => [String(r.message_id), Number(r.c)]));
}

/** Clients sending batches concurrently; an id counts as acknowledged only once its 200 arrived. */
class Load {
  readonly acked: string[] = [];
  readonly attempted = new Set<string>();
  ackedBatches = 0;
  failedRequests = 0;
  private stopped = false;
  private readonly workers: Promise<void>[];

  constructor(
    readonly url: string,
    readonly tag: string,
    senders = SENDERS,
    readonly batchSize = BATCH_SIZE,
    /** Called as soon as a batch is acknowledged. */
    private readonly onAck?: (load: Load) => void,
  ) {
    this.workers = Array.from({ length: senders }, (_, w) => this.run(w));
  }

  private async run(worker: number): Promise<void> {
    for (let seq = 0; !this.stopped; seq++) {
      const ids = Array.from({ length: this.batchSize }, (_, i) => `${this.tag}-${worker}-${seq}-${i}`);
      for (const id of ids) this.attempted.add(id);
      const body = JSON.stringify({
        batch: ids.map((messageId, i) => ({
          type: 'track',
          messageId,
          userId: `user-${worker}-${i % 7}`,
          event: 'Crash Test',
          properties: { worker, seq, i },
        })),
        sentAt: new Date().toISOString(),
      });
      try {
        const res = await fetch(`${this.url}/v1/batch`, {
          method: 'POST',
          headers: { authorization: basicAuth(WRITE_KEY), 'content-type': 'application/json' },
          body,
        });
        const reply = (await res.json()) as { success?: boolean; accepted?: number };
        if (res.status !== 200 || reply.success !== true || reply.accepted !== ids.length) {
          throw new Error(`unexpected answer ${res.status}: ${JSON.stringify(reply)}`);
        }
        this.acked.push(...ids);
        this.ackedBatches++;
        this.onAck?.(this);
      } catch {
        // The server died with this request in flight: not acknowledged, and this sender stops.
        this.failedRequests++;
        return;
      }
    }
  }

  /** Resolves once every sender has finished (stopped, or failed after the kill). */
  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.workers);
  }

  /** Waits until `batches` batches were acknowledged, `ms` passed, or every sender gave up. */
  async until(batches: number, ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    while (this.ackedBatches < batches && Date.now() < deadline && this.failedRequests < SENDERS) {
      await sleep(10);
    }
  }
}

/** Every acknowledged id stored exactly once, nothing stored twice, nothing stored that was never sent. */
function checkStored(phase: string, counts: Map<string, number>, loads: readonly Load[]) {
  const duplicated = [...counts].filter(([, c]) => c > 1);
  expect(duplicated.slice(0, 10), `${phase}: ${duplicated.length} message_ids stored more than once`).toEqual(
    [],
  );
  for (const load of loads) {
    const missing = load.acked.filter((id) => counts.get(id) !== 1);
    expect(
      missing.slice(0, 10),
      `${phase}: ${missing.length} of ${load.acked.length} acknowledged events missing`,
    ).toEqual([]);
  }
  const foreign = [...counts.keys()].filter((id) => !loads.some((l) => l.attempted.has(id)));
  expect(foreign.slice(0, 10), `${phase}: ${foreign.length} stored events never sent`).toEqual([]);
}

describe('tributary start, killed with SIGKILL', () => {
  it('loses no acknowledged event and stores none twice, after a crash during ingest and one during load', {
    timeout: 60_000,
  }, async () => {
    // 1. Crash during ingest: kill -9 while four clients are sending, right as the 300th
    //    batch is acknowledged (or after 1.5 s), so the kill lands among appends in flight.
    let child = await startChild();
    const victim = child;
    const first = new Load(child.url, `ingest-${randomUUID()}`, SENDERS, BATCH_SIZE, (load) => {
      if (load.ackedBatches >= 300) victim.proc.kill('SIGKILL');
    });
    const timer = setTimeout(() => victim.proc.kill('SIGKILL'), 1500);
    await Promise.race([victim.exited, sleep(5000)]);
    clearTimeout(timer);
    await kill9(victim);
    await first.stop();
    expect(first.ackedBatches).toBeGreaterThan(0);
    // Every sender ended on a failed request (the one in flight at the kill, or refused after it).
    expect(first.failedRequests).toBe(SENDERS);

    child = await startChild();
    const afterIngestCrash = await waitLoaded(child);
    expect(afterIngestCrash.log.endOffset).toBeGreaterThanOrEqual(first.acked.length);
    checkStored('after the crash during ingest', await storedCounts(child), [first]);

    // 2. Crash during load: burst until the loader has a backlog, then kill -9 at once.
    let second: Load | undefined;
    let lagAtKill = 0;
    const loads = [first];
    for (let round = 0; round < 5 && lagAtKill === 0; round++) {
      const load = new Load(child.url, `load-${round}-${randomUUID()}`, 8, 500);
      loads.push(load);
      await load.until(Number.POSITIVE_INFINITY, 700);
      await load.stop();
      const h = await health(child);
      lagAtKill = h.log.endOffset - h.loader.position;
      second = load;
    }
    expect(lagAtKill, 'the loader never had a backlog to be killed in').toBeGreaterThan(0);
    await kill9(child);
    expect(second!.failedRequests).toBe(0);

    // 3. Crash during recovery: the restarted server works through the backlog the last
    //    crash left; kill it again before it has caught up.
    child = await startChild();
    const recovering = await health(child);
    const recoveryLag = recovering.log.endOffset - recovering.loader.position;
    if (recoveryLag > 0) {
      await kill9(child);
      child = await startChild();
    }

    const afterLoadCrash = await waitLoaded(child);
    expect(afterLoadCrash.log.endOffset).toBeGreaterThanOrEqual(afterIngestCrash.log.endOffset);
    const counts = await storedCounts(child);
    checkStored('after the crashes during load and recovery', counts, loads);
    // Nothing lost, nothing doubled: as many rows as distinct ids, at least every acknowledged one.
    const acked = loads.reduce((n, l) => n + l.acked.length, 0);
    expect(counts.size).toBeGreaterThanOrEqual(acked);
    expect(counts.size).toBeLessThanOrEqual(afterLoadCrash.log.endOffset);

    console.info(
      `crash during ingest: ${first.ackedBatches} batches acknowledged, ${afterIngestCrash.log.endOffset} events in the log; ` +
        `crash during load: backlog ${lagAtKill} events at the kill; ` +
        `crash during recovery: ${recoveryLag > 0 ? `loader at ${recovering.loader.position} of ${recovering.log.endOffset}` : 'skipped, no backlog'}; ` +
        `${counts.size} events stored of ${acked} acknowledged`,
    );
    await kill9(child);
  });
});
