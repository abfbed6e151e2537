import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { PostgresEngine } from '../src/destinations/warehouse/postgres/postgres-engine.js';
import { SegmentWarehouse } from '../src/destinations/warehouse/segment-warehouse.js';
import { storedEvent } from './conformance/warehouse-conformance.js';
import { PG_ADMIN, pgUnreachable, scratchDatabase } from './pg.js';
import { TcpProxy } from './tcp-proxy.js';

/**
 * A PostgreSQL destination whose connection freezes (the server, or the network to it, stops
 * answering without closing anything) fails its load instead of waiting for ever, and loads
 * again once the server answers.
 */

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const pgProblem = await pgUnreachable();
const track = (offset: number) =>
  storedEvent(offset, { type: 'track', event: 'E', userId: 'u1', properties: { n: offset } });

describe.skipIf(pgProblem !== undefined)(
  `PostgreSQL destination timeouts${pgProblem ? ` (PostgreSQL unreachable: ${pgProblem})` : ''}`,
  () => {
    it('times out on a frozen connection, reports it as retryable, and resumes when the server answers', {
      timeout: 60_000,
    }, async () => {
      const db = await scratchDatabase('trib_to');
      cleanups.push(db.drop);
      const proxy = new TcpProxy(String(PG_ADMIN.host), Number(PG_ADMIN.port));
      await proxy.start();
      cleanups.push(() => proxy.stop());
      const engine = new PostgresEngine({
        connection: { ...db.config, host: '127.0.0.1', port: proxy.port },
        timeouts: { statementMs: 500, connectMs: 500, socketMs: 1_000 },
      });
      const w = new SegmentWarehouse({ name: 'pg', engine });
      cleanups.push(() => w.close());

      expect(await w.storedOffset()).toBe(0);
      expect(await w.load([track(0)], 1)).toEqual({ status: 'ok', failed: [] });

      proxy.freeze();
      const frozen = await w.load([track(1), track(2)], 3);
      expect(frozen.status).toBe('retryable');
      expect(frozen.status === 'retryable' && frozen.error.message).toMatch(/sent nothing|timeout/i);
      // A new connection is not answered either: the connect timeout ends the attempt.
      await expect(w.storedOffset()).rejects.toThrow(/timeout/i);

      proxy.restore();
      expect(await w.storedOffset()).toBe(1);
      expect(await w.load([track(1), track(2)], 3)).toEqual({ status: 'ok', failed: [] });
      expect(await w.storedOffset()).toBe(3);
      const c = new pg.Client(db.config);
      await c.connect();
      const ids = await c.query('SELECT id FROM web.tracks ORDER BY id');
      await c.end();
      expect(ids.rows.map((r) => r.id)).toEqual(['m-0', 'm-1', 'm-2']);
    });
  },
);
