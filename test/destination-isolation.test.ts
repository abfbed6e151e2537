import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { MINIMAL_CONFIG, sendBatch, startTestServer, type TestServer } from './helpers.js';
import { PG_ADMIN, pgUnreachable, scratchDatabase } from './pg.js';
import { TcpProxy } from './tcp-proxy.js';

/**
 * A destination as the server runs it: an event PostgreSQL refuses goes to failed_events and
 * the rest is loaded; a lost connection shows as the destination's last error until the
 * database answers again.
 */

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function send(server: TestServer, batch: Record<string, unknown>[]) {
  await sendBatch(server, batch);
  await server.loader.drained();
}

const track = (id: string, event: string, properties: Record<string, unknown>) => ({
  type: 'track',
  messageId: id,
  userId: 'u1',
  event,
  properties,
});

async function until(check: () => boolean) {
  while (!check()) await new Promise((r) => setTimeout(r, 50));
}

const pgProblem = await pgUnreachable();

describe.skipIf(pgProblem !== undefined)(
  `destination isolation in the server${pgProblem ? ` (PostgreSQL unreachable: ${pgProblem})` : ''}`,
  () => {
    async function database() {
      const db = await scratchDatabase('trib_iso');
      cleanups.push(db.drop);
      const client = new pg.Client(db.config);
      await client.connect();
      cleanups.push(() => client.end());
      return { name: db.name, url: db.url, client };
    }

    it('stores an event PostgreSQL refuses in failed_events and loads the rest', {
      timeout: 60_000,
    }, async () => {
      const db = await database();
      const server = await startTestServer({
        yaml: `${MINIMAL_CONFIG}destinations:
  - id: pg
    type: postgres
    connectionString: ${db.url}
    interval: 50ms
`,
      });
      cleanups.push(() => server.stop());
      const pgDest = server.destinations[0]!;
      await send(server, [track('x-1', 'Blocked', { n: 1 })]);
      await pgDest.drained();
      // Another writer changed the column's type: the next value planned for it cannot go in.
      await db.client.query('ALTER TABLE web.blocked ALTER COLUMN n TYPE boolean USING (n <> 0)');
      await send(server, [
        track('a-1', 'E', { n: 1 }),
        track('x-2', 'Blocked', { n: 5 }),
        track('a-2', 'E', { n: 2 }),
      ]);
      await pgDest.drained();
      await send(server, [track('a-3', 'E', { n: 3 })]);
      await pgDest.drained();

      const ids = await db.client.query('SELECT id FROM web.tracks ORDER BY id');
      expect(ids.rows.map((r) => r.id)).toEqual(['a-1', 'a-2', 'a-3', 'x-1']);
      const failed = await server.query('SELECT message_id, stage, code, reason FROM failed_events');
      expect(failed).toEqual([
        {
          message_id: 'x-2',
          stage: 'destination:pg',
          code: 'TRIB_ERR_DEST_RECORD_REFUSED',
          reason: expect.stringMatching(/Destination "pg" refused the event.*boolean/),
        },
      ]);
      expect(pgDest.position()).toBe(server.loader.position());
      expect(pgDest.lastError()).toBeUndefined();
      const metrics = (await server.app.inject({ method: 'GET', url: '/metrics' })).body;
      expect(metrics).toContain('tributary_destination_events_refused_total{destination="pg"} 1');
    });

    it('reports a lost connection as its last error and loads again once the database answers', {
      timeout: 60_000,
    }, async () => {
      const db = await database();
      const proxy = new TcpProxy(String(PG_ADMIN.host), Number(PG_ADMIN.port));
      await proxy.start();
      cleanups.push(() => proxy.stop());
      const server = await startTestServer({
        yaml: `${MINIMAL_CONFIG}destinations:
  - id: pg
    type: postgres
    connectionString: postgres://${PG_ADMIN.user}@127.0.0.1:${proxy.port}/${db.name}
    interval: 50ms
    connectTimeout: 1s
`,
      });
      cleanups.push(() => server.stop());
      const pgDest = server.destinations[0]!;
      await send(server, [track('a-1', 'E', { n: 1 })]);
      await pgDest.drained();
      proxy.cut();
      await send(server, [track('a-2', 'E', { n: 2 })]);
      await until(() => pgDest.lastError() !== undefined);
      expect(pgDest.lastError()!.message).toMatch(/connect|terminated|ECONNRESET|closed/i);
      expect(pgDest.position()).toBeLessThan(server.loader.position());
      proxy.restore();
      await until(() => pgDest.position() === server.loader.position());
      expect(pgDest.lastError()).toBeUndefined();
      const ids = await db.client.query('SELECT id FROM web.tracks ORDER BY id');
      expect(ids.rows.map((r) => r.id)).toEqual(['a-1', 'a-2']);
    });
  },
);
