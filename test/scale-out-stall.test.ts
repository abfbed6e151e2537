import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import pg from 'pg';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config/load.js';
import { startScaleOut } from '../src/server/scale-out.js';
import { basicAuth } from './helpers.js';
import { NATS_URL, natsUnreachable } from './nats-server.js';
import { pgUnreachable, type ScratchDatabase, scratchDatabase } from './pg.js';

/**
 * Scale-out: a partition whose loader cannot write (the state's offsets table locked by another
 * session) makes /healthz degraded, naming the partition's loader, and close() still ends.
 */

const skip = (await pgUnreachable()) ?? (await natsUnreachable());
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

if (skip) {
  describe.skip(`scale-out stall (PostgreSQL or NATS unreachable: ${skip})`, () => {
    it('needs PostgreSQL and NATS', () => {});
  });
} else {
  describe('scale-out: a partition that cannot load', () => {
    const id = randomBytes(6).toString('hex');
    const stream = `trib_stall_${id}`;
    const dataDir = mkdtempSync(join(tmpdir(), 'tributary-stall-'));
    let db: ScratchDatabase;
    beforeAll(async () => {
      db = await scratchDatabase('trib_stall');
    });
    afterAll(async () => {
      await db.drop();
      const nc = await connect({ servers: [NATS_URL] });
      await (await jetstreamManager(nc)).streams.delete(stream).catch(() => undefined);
      await nc.close();
      rmSync(dataDir, { recursive: true, force: true });
    });

    it('reports the loader degraded and close() ends within the bound', { timeout: 120_000 }, async () => {
      const url = db.url;
      const { config } = parseConfig(
        `version: 1
sources:
  - {id: web, type: http, writeKey: wk_stall}
server: {shutdownTimeout: 5s, health: {stallAfter: 1s}}
identity: {enabled: false}
log: {type: nats, servers: ["${NATS_URL}"], stream: ${stream}, partitions: 1}
state: {type: postgres, connectionString: "${url}", maxConnections: 4}
destinations: []
`,
        {},
      );
      const server = await startScaleOut({
        role: 'all',
        config,
        dataDir,
        adminToken: 'stall-admin',
        logger: pino({ level: 'silent' }),
        port: 0,
        host: '127.0.0.1',
      });
      const send = async (from: number) => {
        const batch = [0, 1, 2].map((i) => ({
          type: 'track',
          event: 'E',
          userId: `u${i}`,
          messageId: `m-${from + i}`,
        }));
        const res = await fetch(`${server.url}/v1/batch`, {
          method: 'POST',
          headers: { authorization: basicAuth('wk_stall'), 'content-type': 'application/json' },
          body: JSON.stringify({ batch }),
        });
        expect(res.status).toBe(200);
      };
      type Health = {
        status: string;
        stalled: { component: string }[];
        partitions?: Record<string, { loader: number }>;
      };
      const healthUntil = async (ok: (h: Health) => boolean) => {
        for (;;) {
          const h = (await (await fetch(`${server.url}/healthz`)).json()) as Health;
          if (ok(h)) return h;
          await sleep(100);
        }
      };
      const locker = new pg.Client(db.config);
      try {
        await send(0);
        const loaded = await healthUntil((h) => (h.partitions?.['0']?.loader ?? 0) >= 3);
        expect(loaded.status).toBe('ok');

        await locker.connect();
        await locker.query('BEGIN');
        await locker.query('LOCK TABLE tributary.consumer_offsets IN ACCESS EXCLUSIVE MODE');
        await send(3);
        const h = await healthUntil((b) => b.status === 'degraded');
        expect(h.stalled.map((s) => s.component)).toEqual(['loader:p0']);

        const closed = await server.close().then(
          () => 'closed',
          (err: { code?: string }) => err.code,
        );
        expect(['closed', 'TRIB_ERR_SERVER_SHUTDOWN_TIMEOUT']).toContain(closed);
      } finally {
        // The stuck load finishes now, and the rest of the close with it.
        await locker.end().catch(() => undefined);
        await server.close().catch(() => undefined);
      }
    });
  });
}
