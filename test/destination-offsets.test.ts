import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { TributaryError } from '../src/errors.js';
import { basicAuth, MINIMAL_CONFIG, startTestServer, type TestServer, WRITE_KEY } from './helpers.js';
import { pgUnreachable, scratchDatabase } from './pg.js';

/**
 * Destination offsets belong to a workspace and an event log: a second workspace loading
 * into the same PostgreSQL database loads its own events, and a new log (a new data folder)
 * finding an old log's offsets refuses to start unless told to start over.
 */

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function send(server: TestServer, ids: string[]) {
  const res = await server.app.inject({
    method: 'POST',
    url: '/v1/batch',
    headers: { authorization: basicAuth(WRITE_KEY), 'content-type': 'application/json' },
    payload: JSON.stringify({
      batch: ids.map((id) => ({
        type: 'track',
        messageId: id,
        userId: 'u1',
        event: 'E',
        properties: { n: 1 },
      })),
    }),
  });
  expect(res.statusCode).toBe(200);
  await server.loader.drained();
  await Promise.all(server.destinations.map((d) => d.drained()));
}

const pgProblem = await pgUnreachable();

describe.skipIf(pgProblem !== undefined)(
  `destination offsets per workspace and log${pgProblem ? ` (PostgreSQL unreachable: ${pgProblem})` : ''}`,
  () => {
    it('loads two workspaces into one database, and refuses a new log on an old database unless told to start over', {
      timeout: 60_000,
    }, async () => {
      const db = await scratchDatabase('trib_offsets');
      cleanups.push(db.drop);
      const yaml = (head: string, extra = '') => `${MINIMAL_CONFIG}${head}destinations:
  - id: pg
    type: postgres
    connectionString: ${db.url}
    interval: 50ms
${extra}`;
      const dirs = [0, 1].map(() => mkdtempSync(join(tmpdir(), 'trib-offsets-')));
      cleanups.push(async () => {
        for (const d of dirs) rmSync(d, { recursive: true, force: true });
      });
      const start = async (dir: string, head = '', extra = '') => {
        const s = await startTestServer({ yaml: yaml(head, extra), dataDir: dir });
        cleanups.push(() => s.stop());
        return s;
      };
      const stored = async () => {
        const c = new pg.Client(db.config);
        await c.connect();
        try {
          return (await c.query('SELECT id FROM web.e ORDER BY id')).rows.map((r) => r.id);
        } finally {
          await c.end();
        }
      };

      const first = await start(dirs[0]!);
      await send(first, ['a-1', 'a-2']);
      await send(first, ['a-3']);
      // A second workspace, with a log of its own, loading into the same database and tables.
      const second = await start(dirs[1]!, 'workspace: second\n');
      await send(second, ['b-1']);
      expect(await stored()).toEqual(['a-1', 'a-2', 'a-3', 'b-1']);
      await second.stop();

      // The same log under the first workspace's name: offsets of another log, so no start.
      const refused = await startTestServer({ yaml: yaml(''), dataDir: dirs[1]! }).then(
        (s) => s.stop().then(() => undefined),
        (e: unknown) => e,
      );
      expect(refused).toBeInstanceOf(TributaryError);
      expect((refused as TributaryError).code).toBe('TRIB_ERR_DEST_FOREIGN_OFFSETS');
      expect((refused as Error).message).toContain('startOver: true');

      // Told to start over, it loads its log from the start (b-1 merged on id), then goes on.
      await first.stop();
      const over = await start(dirs[1]!, '', '    startOver: true\n');
      await send(over, ['b-2']);
      expect(await stored()).toEqual(['a-1', 'a-2', 'a-3', 'b-1', 'b-2']);
    });
  },
);
