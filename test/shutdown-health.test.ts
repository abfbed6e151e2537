import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Child, CliChildren, health, sleep } from './cli-child.js';
import { basicAuth, MINIMAL_CONFIG, WRITE_KEY } from './helpers.js';
import { pgUnreachable, type ScratchDatabase, scratchDatabase } from './pg.js';

/**
 * A destination whose load cannot go on (its offsets table locked by another session, as a
 * frozen connection or a long migration would) makes /healthz say so, and does not keep
 * SIGTERM from ending the server within server.shutdownTimeout.
 */

interface HealthBody {
  status: string;
  stalled: { component: string; reason: string }[];
  log: { endOffset: number };
  loader: { position: number };
  destinations: Record<string, { position: number }>;
}

const pgProblem = await pgUnreachable();
const ADMIN_TOKEN = 'stuck-test-admin-token';

async function send(child: Child, from: number, n: number): Promise<void> {
  const batch = Array.from({ length: n }, (_, i) => ({
    type: 'track',
    event: 'Order Completed',
    userId: `u${from + i}`,
    messageId: `m-${from + i}`,
  }));
  const res = await fetch(`${child.url}/v1/batch`, {
    method: 'POST',
    headers: { authorization: basicAuth(WRITE_KEY), 'content-type': 'application/json' },
    body: JSON.stringify({ batch }),
  });
  expect(res.status).toBe(200);
}

/** Polls /healthz until `ok` holds of it. */
async function healthUntil(child: Child, ok: (h: HealthBody) => boolean): Promise<HealthBody> {
  for (;;) {
    const h = (await health(child)) as unknown as HealthBody;
    if (ok(h)) return h;
    await sleep(100);
  }
}

if (pgProblem) {
  describe.skip(`stuck destination (PostgreSQL at 127.0.0.1:5432 unreachable: ${pgProblem})`, () => {
    it('needs PostgreSQL', () => {});
  });
} else {
  describe('a destination that cannot load', () => {
    const workDir = mkdtempSync(join(tmpdir(), 'tributary-stuck-'));
    const configPath = join(workDir, 'tributary.yaml');
    let db: ScratchDatabase;
    const cli = new CliChildren({ configPath, dataDir: join(workDir, 'data'), adminToken: ADMIN_TOKEN });

    beforeAll(async () => {
      db = await scratchDatabase('trib_stuck');
      writeFileSync(
        configPath,
        `${MINIMAL_CONFIG}server:
  shutdownTimeout: 5s
  health:
    stallAfter: 1s
identity:
  enabled: false
destinations:
  - id: pgd
    type: postgres
    connectionString: ${db.url}
    interval: 100ms
`,
      );
    });
    afterAll(async () => {
      await cli.killAll();
      await db.drop();
      rmSync(workDir, { recursive: true, force: true });
    });

    it('makes /healthz degraded, naming it, and SIGTERM still ends the server', {
      timeout: 120_000,
    }, async () => {
      const child = await cli.start(30_000);
      await send(child, 0, 5);
      let h = await healthUntil(
        child,
        (b) => b.loader.position === b.log.endOffset && b.destinations.pgd!.position === b.loader.position,
      );
      expect(h.status).toBe('ok');
      expect(h.stalled).toEqual([]);

      const locker = new pg.Client(db.config);
      await locker.connect();
      try {
        await locker.query('BEGIN');
        await locker.query('LOCK TABLE _tributary.warehouse_offsets IN ACCESS EXCLUSIVE MODE');
        await send(child, 5, 5);
        h = await healthUntil(child, (b) => b.status === 'degraded');
        expect(h.stalled.map((s) => s.component)).toEqual(['destination:pgd']);
        const metrics = await (
          await fetch(`${child.url}/metrics`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
        ).text();
        expect(metrics).toMatch(/tributary_stalled\{component="destination:pgd"\} 1/);
        expect(metrics).toMatch(/tributary_stalled\{component="loader"\} 0/);

        child.proc.kill('SIGTERM');
        await child.exited;
        expect(child.proc.exitCode).not.toBeNull();
      } finally {
        await locker.end().catch(() => undefined);
      }
    });
  });
}
