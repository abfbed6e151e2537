import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import pg from 'pg';
import { describe, it } from 'vitest';
import { destinationConformance } from './conformance/destination-conformance.js';
import { storedEvent } from './conformance/warehouse-conformance.js';
import { pgUnreachable, scratchDatabase } from './pg.js';

/** The destination conformance suite against every kind of the registry. */

/** A local port nothing listens on: one the system gave out and that was closed again. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

/** A data folder with a file where a folder is expected, for the path checks. */
function dataDir() {
  const dir = mkdtempSync(join(tmpdir(), 'trib-dest-conf-'));
  writeFileSync(join(dir, 'a-file'), 'x');
  return dir;
}

const blocked = (offset: number, n: number) =>
  storedEvent(offset, { type: 'track', event: 'Blocked', userId: 'u1', properties: { n } });

destinationConformance('duckdb', async () => {
  const dir = dataDir();
  const instance = await DuckDBInstance.create(join(dir, 'warehouse.duckdb'));
  const conn = await instance.connect();
  const run = async (sql: string) => (await conn.runAndReadAll(sql)).getRows();
  return {
    entry: { id: 'wh', type: 'duckdb' },
    context: { instance, dataDir: dir },
    loadedIds: async () =>
      (await run('SELECT id FROM "web"."tracks" WHERE event_text = \'Order Completed\' ORDER BY id')).map(
        (r) => String(r[0]),
      ),
    async refusal(d, from) {
      await d.load([blocked(from, 1)], from + 1);
      // Another writer changed a column's type: the value planned for it cannot go in.
      await run('ALTER TABLE "web"."blocked" ALTER COLUMN n TYPE BOOLEAN USING (n <> 0)');
      return { next: from + 1, bad: blocked(from + 1, 5) };
    },
    wrong: [
      {
        why: 'a file under a file',
        entry: { id: 'wh', type: 'duckdb', path: 'a-file/w.duckdb' },
        code: 'TRIB_ERR_DEST_CHECK_PATH',
      },
      {
        why: 'a folder as the file',
        entry: { id: 'wh', type: 'duckdb', path: '.' },
        code: 'TRIB_ERR_DEST_CHECK_PATH',
      },
    ],
    async cleanup() {
      conn.closeSync();
      instance.closeSync();
      rmSync(dir, { recursive: true, force: true });
    },
  };
});

destinationConformance('parquet', async () => {
  const dir = dataDir();
  const instance = await DuckDBInstance.create(':memory:');
  const conn = await instance.connect();
  return {
    entry: { id: 'lake', type: 'parquet', path: 'lake' },
    context: { instance, dataDir: dir },
    loadedIds: async () => {
      if (!existsSync(join(dir, 'lake', 'source=web', 'event=order_completed'))) return [];
      const r = await conn.runAndReadAll(
        `SELECT id FROM read_parquet('${join(dir, 'lake')}/source=*/event=order_completed/date=*/*.parquet', hive_partitioning = true) ORDER BY id`,
      );
      return r.getRows().map((row) => String(row[0]));
    },
    // A lone surrogate: JavaScript writes it as JSON, DuckDB's JSON parser refuses it.
    refusal: async (_d, from) => ({
      next: from,
      bad: storedEvent(from, { type: 'track', event: 'X', userId: 'u1', properties: { s: '\ud800' } }),
    }),
    wrong: [
      {
        why: 'a file as the folder',
        entry: { id: 'lake', type: 'parquet', path: 'a-file' },
        code: 'TRIB_ERR_DEST_CHECK_PATH',
      },
    ],
    async cleanup() {
      conn.closeSync();
      instance.closeSync();
      rmSync(dir, { recursive: true, force: true });
    },
  };
});

const pgDown = await pgUnreachable();
if (pgDown === undefined) {
  destinationConformance('postgres', async () => {
    const db = await scratchDatabase('dest_conf');
    const dir = dataDir();
    const client = new pg.Client(db.config);
    await client.connect();
    const port = await closedPort();
    return {
      entry: { id: 'pg', type: 'postgres', connectionString: db.url },
      context: { dataDir: dir },
      loadedIds: async () =>
        (
          await client.query<{ id: string }>(
            "SELECT id FROM web.tracks WHERE event_text = 'Order Completed' ORDER BY id",
          )
        ).rows
          .map((r) => r.id)
          .sort(),
      async refusal(d, from) {
        await d.load([blocked(from, 1)], from + 1);
        await client.query('ALTER TABLE web.blocked ALTER COLUMN n TYPE BOOLEAN USING (n <> 0)');
        return { next: from + 1, bad: blocked(from + 1, 5) };
      },
      wrong: [
        {
          why: 'a port nothing listens on',
          entry: { id: 'pg', type: 'postgres', host: '127.0.0.1', port, user: 'postgres', database: db.name },
          code: 'TRIB_ERR_DEST_CHECK_UNREACHABLE',
        },
        {
          why: 'a host that does not resolve',
          entry: {
            id: 'pg',
            type: 'postgres',
            connectionString: `postgres://postgres@no-such-host.invalid/${db.name}`,
          },
          code: 'TRIB_ERR_DEST_CHECK_UNREACHABLE',
        },
        {
          why: 'a user the server refuses',
          entry: { id: 'pg', type: 'postgres', host: '127.0.0.1', user: 'no_such_role_x', database: db.name },
          code: 'TRIB_ERR_DEST_CHECK_AUTH',
        },
        {
          why: 'a database that does not exist',
          entry: { id: 'pg', type: 'postgres', connectionString: `${db.url}_missing` },
          code: 'TRIB_ERR_DEST_CHECK_DATABASE',
        },
      ],
      async cleanup() {
        await client.end();
        await db.drop();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  });
} else {
  describe.skip(`destination conformance: postgres (${pgDown})`, () => {
    it('needs PostgreSQL', () => {});
  });
}
