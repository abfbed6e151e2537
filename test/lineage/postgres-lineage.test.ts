import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import type { TraceReport } from '../../src/observe/lineage/trace.js';
import { ADMIN_TOKEN, cleanupAfterEach, MINIMAL_CONFIG, sendBatch, startTestServer } from '../helpers.js';
import { pgUnreachable, type ScratchDatabase, scratchDatabase } from '../pg.js';

/** Trace and replay through a PostgreSQL warehouse destination (the Segment tables with `id` as primary key). */

const pgProblem = await pgUnreachable();
const { servers } = cleanupAfterEach();
let db: ScratchDatabase | undefined;
afterAll(async () => {
  await db?.drop();
});

describe.skipIf(pgProblem !== undefined)('lineage with a PostgreSQL destination', () => {
  it('traces the rows an event became and replays a range twice without doubling a row', {
    timeout: 60_000,
  }, async () => {
    db = await scratchDatabase('lineage_dest');
    const server = await startTestServer({
      yaml: `${MINIMAL_CONFIG}destinations:\n  - id: pgwh\n    type: postgres\n    connectionString: ${db.url}\n`,
    });
    servers.push(server);
    const from = new Date(Date.now() - 1000).toISOString();
    await sendBatch(server, [
      { type: 'track', messageId: 'p-1', userId: 'u1', event: 'Order Completed', properties: { total: 7 } },
      { type: 'identify', messageId: 'p-2', userId: 'u1', traits: { email: 'ada@example.com' } },
    ]);
    await server.settle();
    await Promise.all(server.destinations.map((d) => d.drained()));
    const to = new Date(Date.now() + 1000).toISOString();

    const res = await server.app.inject({
      method: 'GET',
      url: '/admin/v1/trace/p-1',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    const t = res.json() as TraceReport;
    const [w] = t.events[0]!.warehouses;
    expect(w).toMatchObject({ destination: 'pgwh', type: 'postgres', loaded: true });
    expect(w!.rows.map((r) => r.table).sort()).toEqual(['order_completed', 'tracks']);
    expect(w!.rows.find((r) => r.table === 'order_completed')!.row).toMatchObject({
      id: 'p-1',
      user_id: 'u1',
    });

    for (let i = 0; i < 2; i++) {
      const r = await server.app.inject({
        method: 'POST',
        url: '/admin/v1/replay',
        headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
        payload: JSON.stringify({ source: 'web', from, to, wait: true }),
      });
      expect(r.json()).toMatchObject({ status: 'done', read: 2, delivered: 2, destinations: ['pgwh'] });
    }
    const c = new pg.Client(db.config);
    await c.connect();
    try {
      const counts = await c.query(
        `SELECT 'tracks' AS t, count(*)::int AS n FROM web.tracks UNION ALL SELECT 'identifies', count(*)::int FROM web.identifies
         UNION ALL SELECT 'users', count(*)::int FROM web.users UNION ALL SELECT 'order_completed', count(*)::int FROM web.order_completed
         ORDER BY 1`,
      );
      expect(counts.rows).toEqual([
        { t: 'identifies', n: 1 },
        { t: 'order_completed', n: 1 },
        { t: 'tracks', n: 1 },
        { t: 'users', n: 1 },
      ]);
    } finally {
      await c.end();
    }
  });
});
