import { randomBytes } from 'node:crypto';
import { DuckDBInstance } from '@duckdb/node-api';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ModelService } from '../../src/destinations/reverse-etl/model-service.js';
import { runModel } from '../../src/destinations/reverse-etl/model-sync.js';
import { ModelConfig } from '../../src/destinations/reverse-etl/spec.js';
import { DuckDBModelStore } from '../../src/store/duckdb/duckdb-model-store.js';
import type { ModelStore } from '../../src/store/model-store.js';
import { PostgresModelStore } from '../../src/store/postgres/postgres-model-store.js';
import { PostgresUserQueries } from '../../src/store/postgres/postgres-user-query.js';
import { pgUnreachable, scratchDatabase } from '../pg.js';
import { RowReceiver } from './receiver.js';

/** Issue 18 §4: reverse ETL, one body run against each store adapter (Kysely style). */

interface Harness {
  store: ModelStore;
  /** Runs setup SQL on the warehouse (as its owner). */
  exec(sql: string): Promise<void>;
  /** A table of rows (id, email, plan) of the test's own, readable by models. */
  seed(rows: readonly [number, string, string][]): Promise<string>;
  /** A model's SQL that tries to read a file of the host. */
  fileSql: string;
  close(): Promise<void>;
}

let tables = 0;

async function duckdbHarness(): Promise<Harness> {
  const instance = await DuckDBInstance.create(':memory:');
  const conn = await instance.connect();
  const store = await DuckDBModelStore.open(instance);
  const exec = async (sql: string) => {
    await conn.run(sql);
  };
  return {
    store,
    exec,
    async seed(rows) {
      const t = `customers_${++tables}`;
      await exec(`CREATE TABLE ${t} (id INTEGER, email VARCHAR, plan VARCHAR)`);
      if (rows.length > 0) await exec(`INSERT INTO ${t} VALUES ${rows.map(values).join(', ')}`);
      return t;
    },
    fileSql: "SELECT 1 AS id, * FROM read_csv('/etc/passwd')",
    async close() {
      await store.close();
      conn.closeSync();
      instance.closeSync();
    },
  };
}

async function postgresHarness(): Promise<Harness> {
  const db = await scratchDatabase('trib_retl');
  const role = `trib_retl_reader_${randomBytes(4).toString('hex')}`;
  const pool = new pg.Pool({ connectionString: db.url, max: 4 });
  await pool.query('CREATE SCHEMA tributary');
  await db.admin.query(`CREATE ROLE ${role} LOGIN`);
  await pool.query(
    `GRANT CONNECT ON DATABASE ${db.name} TO ${role}; GRANT USAGE ON SCHEMA tributary TO ${role}`,
  );
  const queries = await PostgresUserQueries.open({
    url: db.url.replace('postgres@', `${role}@`),
    schema: 'tributary',
  });
  const store = await PostgresModelStore.open(pool, 'tributary', queries);
  const exec = async (sql: string) => {
    await pool.query(`SET search_path TO tributary; ${sql}`);
  };
  return {
    store,
    exec,
    async seed(rows) {
      const t = `customers_${++tables}`;
      await exec(`CREATE TABLE ${t} (id integer, email text, plan text); GRANT SELECT ON ${t} TO ${role}`);
      if (rows.length > 0) await exec(`INSERT INTO ${t} VALUES ${rows.map(values).join(', ')}`);
      return t;
    },
    fileSql: "SELECT 1 AS id, pg_read_file('/etc/passwd') AS f",
    async close() {
      await store.close();
      await queries.close();
      await pool.end();
      await db.drop();
      const admin = new pg.Client({ host: '127.0.0.1', user: 'postgres', database: 'test' });
      await admin.connect();
      await admin.query(`DROP ROLE IF EXISTS ${role}`).catch(() => undefined);
      await admin.end();
    },
  };
}

function values([id, email, plan]: [number, string, string]): string {
  return `(${id}, '${email}', '${plan}')`;
}

const ten = Array.from(
  { length: 10 },
  (_, i) => [i + 1, `u${i + 1}@example.com`, 'free'] as [number, string, string],
);

let modelSeq = 0;
function model(over: Record<string, unknown>): ModelConfig {
  return ModelConfig.parse({
    id: `m${++modelSeq}`,
    primaryKey: 'id',
    destination: 'crm',
    batchSize: 3,
    ...over,
  });
}

const pgProblem = await pgUnreachable();
const adapters: [string, () => Promise<Harness>, string | undefined][] = [
  ['duckdb', duckdbHarness, undefined],
  ['postgres', postgresHarness, pgProblem],
];

for (const [name, open, problem] of adapters) {
  if (problem) {
    describe.skip(`reverse ETL on ${name} (PostgreSQL at 127.0.0.1:5432 unreachable: ${problem})`, () => {
      it('skipped', () => {});
    });
    continue;
  }
  describe(`reverse ETL on ${name}`, () => {
    let h: Harness;
    let rx: RowReceiver;
    const sync = (m: ModelConfig, signal?: AbortSignal) =>
      runModel(m, { store: h.store, openDestination: async () => rx.destination() }, 'test', signal);

    beforeAll(async () => {
      h = await open();
    });
    afterAll(async () => {
      await rx?.close();
      await h?.close();
    });
    const fresh = async () => {
      await rx?.close();
      rx = await RowReceiver.start();
    };

    it('sends every row first, then only the rows added or changed (upsert)', async () => {
      await fresh();
      const t = await h.seed(ten);
      const m = model({ sql: `SELECT id, email, plan FROM ${t}`, syncMode: 'upsert' });
      const first = await sync(m);
      expect(first).toMatchObject({
        status: 'succeeded',
        rows: 10,
        added: 10,
        changed: 0,
        removed: 0,
        failed: 0,
      });
      expect(rx.table.size).toBe(10);
      expect(rx.requests).toBe(4);
      expect(rx.received.every((d) => d.op === 'upsert')).toBe(true);
      expect(rx.table.get('3')).toEqual({ id: 3, email: 'u3@example.com', plan: 'free' });

      const again = await sync(m);
      expect(again).toMatchObject({ status: 'succeeded', added: 0, changed: 0, removed: 0, failed: 0 });
      expect(rx.requests).toBe(4);

      await h.exec(`UPDATE ${t} SET plan = 'pro' WHERE id IN (2, 7)`);
      await h.exec(`INSERT INTO ${t} VALUES (11, 'u11@example.com', 'free')`);
      await h.exec(`DELETE FROM ${t} WHERE id = 9`);
      rx.received.length = 0;
      const third = await sync(m);
      expect(third).toMatchObject({ added: 1, changed: 2, removed: 0, failed: 0 });
      expect(rx.received.map((d) => d.orderKey).sort()).toEqual(['11', '2', '7']);
      expect(rx.table.get('7')).toMatchObject({ plan: 'pro' });
      // upsert does not delete: the row stays at the receiver, and is forgotten by the snapshot
      expect(rx.table.has('9')).toBe(true);
      const d = rx.received.find((x) => x.orderKey === '7')!;
      expect(d.key).toMatch(/^m\d+:7:[0-9a-f]+$/);
      expect(await sync(m)).toMatchObject({ added: 0, changed: 0, removed: 0 });
    });

    it('mirror deletes the rows gone from the result', async () => {
      await fresh();
      const t = await h.seed(ten);
      const m = model({ sql: `SELECT id, email, plan FROM ${t}`, syncMode: 'mirror' });
      await sync(m);
      await h.exec(`DELETE FROM ${t} WHERE id IN (4, 5)`);
      await h.exec(`UPDATE ${t} SET email = 'new@example.com' WHERE id = 1`);
      rx.received.length = 0;
      const r = await sync(m);
      expect(r).toMatchObject({ added: 0, changed: 1, removed: 2, failed: 0 });
      expect([...rx.table.keys()].sort()).toEqual(['1', '10', '2', '3', '6', '7', '8', '9']);
      const deletes = rx.received.filter((x) => x.op === 'delete');
      expect(deletes.map((x) => x.payload)).toEqual([{ id: 4 }, { id: 5 }]);
      expect(deletes[0]!.key).toMatch(/^m\d+:4:[0-9a-f]+:delete$/);
      expect(await sync(m)).toMatchObject({ added: 0, changed: 0, removed: 0 });
    });

    it('insert sends new rows only; update sends new and changed rows as updates', async () => {
      await fresh();
      const t = await h.seed(ten);
      const ins = model({ sql: `SELECT id, email, plan FROM ${t}`, syncMode: 'insert' });
      expect(await sync(ins)).toMatchObject({ added: 10 });
      expect(rx.received.every((d) => d.op === 'insert')).toBe(true);
      await h.exec(`UPDATE ${t} SET plan = 'pro' WHERE id = 1`);
      await h.exec(`INSERT INTO ${t} VALUES (12, 'u12@example.com', 'free')`);
      rx.received.length = 0;
      expect(await sync(ins)).toMatchObject({ added: 1, changed: 0, failed: 0 });
      expect(rx.received.map((d) => [d.op, d.orderKey])).toEqual([['insert', '12']]);
      // The changed row was taken into the snapshot without a send: not found again.
      expect(await sync(ins)).toMatchObject({ added: 0, changed: 0 });

      const upd = model({ sql: `SELECT id, email, plan FROM ${t}`, syncMode: 'update' });
      rx.received.length = 0;
      expect(await sync(upd)).toMatchObject({ added: 11 });
      await h.exec(`UPDATE ${t} SET plan = 'team' WHERE id = 2`);
      rx.received.length = 0;
      expect(await sync(upd)).toMatchObject({ added: 0, changed: 1 });
      expect(rx.received.map((d) => [d.op, d.orderKey])).toEqual([['update', '2']]);
      expect(rx.table.get('2')).toMatchObject({ plan: 'team' });
    });

    it('maps columns to destination fields; a column left out of the mapping changes nothing', async () => {
      await fresh();
      const t = await h.seed(ten.slice(0, 3));
      const m = model({
        sql: `SELECT id, email, plan FROM ${t}`,
        mapping: { id: 'userId', email: 'traits.email' },
        syncMode: 'mirror',
      });
      await sync(m);
      expect(rx.table.get('1')).toEqual({ userId: 1, traits: { email: 'u1@example.com' } });
      await h.exec(`UPDATE ${t} SET plan = 'pro'`);
      expect(await sync(m)).toMatchObject({ added: 0, changed: 0 });
      await h.exec(`DELETE FROM ${t} WHERE id = 3`);
      rx.received.length = 0;
      expect(await sync(m)).toMatchObject({ removed: 1 });
      expect(rx.received[0]).toMatchObject({ op: 'delete', payload: { userId: 3 } });
    });

    it('a new mapping sends every row again', async () => {
      await fresh();
      const t = await h.seed(ten.slice(0, 4));
      const m = model({ sql: `SELECT id, email, plan FROM ${t}`, mapping: { id: 'id', email: 'email' } });
      expect(await sync(m)).toMatchObject({ added: 4 });
      expect(await sync(m)).toMatchObject({ added: 0, changed: 0 });
      const renamed = { ...m, mapping: { id: 'id', email: 'traits.email' } };
      expect(await sync(renamed)).toMatchObject({ added: 0, changed: 4 });
      expect(rx.table.get('2')).toEqual({ id: 2, traits: { email: 'u2@example.com' } });
    });

    it('a row the destination refuses or cannot take now is sent again by the next run', async () => {
      await fresh();
      const t = await h.seed(ten);
      const m = model({ sql: `SELECT id, email, plan FROM ${t}` });
      rx.refuse.add('3');
      rx.busy.add('8');
      const first = await sync(m);
      expect(first).toMatchObject({ status: 'succeeded', added: 8, failed: 2 });
      expect(first.error).toContain('3: TRIB_ERR_DEST_RECORD_REFUSED: row 3 refused');
      expect(first.error).toContain('8: row 8: busy');
      const [run] = await h.store.runs(m.id, 1);
      expect(run).toMatchObject({ status: 'succeeded', added: 8, failed: 2 });
      rx.refuse.clear();
      rx.busy.clear();
      rx.received.length = 0;
      expect(await sync(m)).toMatchObject({ added: 2, failed: 0 });
      expect(rx.received.map((d) => d.orderKey).sort()).toEqual(['3', '8']);
    });

    it('a model whose SQL fails, or reaches for a file, records a failed run and leaves the snapshot', async () => {
      await fresh();
      const t = await h.seed(ten);
      const good = model({ sql: `SELECT id, email, plan FROM ${t}`, syncMode: 'mirror' });
      await sync(good);
      const broken = { ...good, sql: `SELECT id, email, no_such_column FROM ${t}` };
      const r = await sync(broken);
      expect(r.status).toBe('failed');
      expect(r.error).toMatch(/^TRIB_ERR_QUERY_FAILED: /);
      const file = await sync({ ...good, sql: h.fileSql });
      expect(file.status).toBe('failed');
      expect(file.error).toMatch(/^TRIB_ERR_QUERY_NOT_ALLOWED: /);
      const write = await sync({ ...good, sql: `DELETE FROM ${t}` });
      expect(write.status).toBe('failed');
      expect((await h.store.runs(good.id, 10)).map((x) => x.status)).toEqual([
        'failed',
        'failed',
        'failed',
        'succeeded',
      ]);
      // Nothing was deleted at the receiver and the snapshot still holds every row.
      expect(rx.table.size).toBe(10);
      rx.received.length = 0;
      expect(await sync(good)).toMatchObject({ added: 0, changed: 0, removed: 0 });
      expect(rx.received).toEqual([]);
    });

    it('a send that throws mid-run leaves its rows to the next run', async () => {
      await fresh();
      const t = await h.seed(ten);
      const m = model({ sql: `SELECT id, email, plan FROM ${t}` });
      rx.crashOn.add(2);
      const first = await sync(m);
      expect(first).toMatchObject({ status: 'succeeded', added: 7, failed: 3 });
      expect(first.error).toContain('receiver answered 500');
      rx.received.length = 0;
      expect(await sync(m)).toMatchObject({ added: 3, failed: 0 });
      // Batches go in the order of the keys' JSON text ([1], [10], [2], …): the second was 3, 4, 5.
      expect(rx.received.map((d) => d.orderKey).sort()).toEqual(['3', '4', '5']);
    });

    it('a run stopped mid-send sends the rest next run, and every row arrives', async () => {
      await fresh();
      const t = await h.seed(ten);
      const m = model({ sql: `SELECT id, email, plan FROM ${t}` });
      const stop = new AbortController();
      rx.onRequest = (n) => {
        if (n === 2) stop.abort();
      };
      const first = await sync(m, stop.signal);
      rx.onRequest = () => {};
      expect(first.status).toBe('failed');
      expect(first.added).toBeLessThan(10);
      const second = await sync(m);
      expect(second.status).toBe('succeeded');
      expect(first.added + second.added).toBe(10);
      expect(rx.table.size).toBe(10);
      expect(await sync(m)).toMatchObject({ added: 0 });
    });

    it('rows with a NULL or a repeated primary key are not sent and counted failed', async () => {
      await fresh();
      const t = await h.seed([...ten.slice(0, 3), [3, 'dup@example.com', 'free']]);
      await h.exec(`INSERT INTO ${t} VALUES (NULL, 'nobody@example.com', 'free')`);
      const m = model({ sql: `SELECT id, email, plan FROM ${t}` });
      const r = await sync(m);
      expect(r).toMatchObject({ rows: 5, added: 2, failed: 3 });
      expect(r.error).toContain('TRIB_ERR_RETL_BAD_KEY');
      expect([...rx.table.keys()].sort()).toEqual(['1', '2']);
    });

    it('composite keys identify rows by all their columns', async () => {
      await fresh();
      const t = await h.seed([
        [1, 'a@example.com', 'free'],
        [1, 'b@example.com', 'free'],
      ]);
      const m = model({
        sql: `SELECT id, email, plan FROM ${t}`,
        primaryKey: ['id', 'email'],
        syncMode: 'mirror',
      });
      expect(await sync(m)).toMatchObject({ added: 2, failed: 0 });
      expect([...rx.table.keys()].map((k) => JSON.parse(k))).toEqual(
        expect.arrayContaining([
          [1, 'a@example.com'],
          [1, 'b@example.com'],
        ]),
      );
      await h.exec(`DELETE FROM ${t} WHERE email = 'a@example.com'`);
      rx.received.length = 0;
      expect(await sync(m)).toMatchObject({ removed: 1 });
      expect(rx.received[0]!.payload).toEqual({ id: 1, email: 'a@example.com' });
    });

    it('a destination that cannot be opened fails the run before the SQL runs', async () => {
      const t = await h.seed(ten.slice(0, 1));
      const m = model({ sql: `SELECT id FROM ${t}`, destination: 'nowhere' });
      const r = await runModel(
        m,
        {
          store: h.store,
          openDestination: async (id) => {
            throw new Error(`no destination ${id}`);
          },
        },
        'test',
      );
      expect(r.status).toBe('failed');
      expect(r.error).toMatch(/^TRIB_ERR_RETL_DESTINATION: .*no destination nowhere/);
    });

    it('the service runs one run of a model at a time, on demand and on its schedule', async () => {
      await fresh();
      const t = await h.seed(ten);
      const m = model({ sql: `SELECT id, email, plan FROM ${t}`, every: '1s' });
      const errors: unknown[] = [];
      const service = new ModelService([m], {
        store: h.store,
        openDestination: async () => rx.destination(),
        onScheduleError: (_id, err) => errors.push(err),
      });
      // A run a dead process left behind.
      const dead = await h.store.startRun(m.id, 'schedule');
      await service.start();
      if (h.store.lockModel) {
        // Another process of the scale-out deployment running the model.
        const release = await h.store.lockModel(m.id);
        expect(release).toBeDefined();
        await expect(service.run(m.id, 'api')).rejects.toThrow(/running already/);
        await release!();
      }
      const running = service.run(m.id, 'api');
      await expect(service.run(m.id, 'api')).rejects.toThrow(/running already/);
      expect(await running).toMatchObject({ added: 10 });
      expect((await h.store.runs(m.id, 10)).find((r) => r.id === dead)).toMatchObject({
        status: 'failed',
        error: expect.stringContaining('process stopped'),
      });
      await expect(service.run('nope', 'api')).rejects.toThrow(/No reverse-ETL model "nope"/);
      const list = await service.list();
      expect(list[0]).toMatchObject({ id: m.id, destination: 'crm', lastRun: { trigger: 'api' } });
      for (let i = 0; i < 100; i++) {
        if ((await service.runs(m.id, 10)).some((r) => r.trigger === 'schedule' && r.status === 'succeeded'))
          break;
        await new Promise((r) => setTimeout(r, 100));
      }
      await service.stop();
      expect(
        (await service.runs(m.id, 10)).some((r) => r.trigger === 'schedule' && r.status === 'succeeded'),
      ).toBe(true);
      expect(errors).toEqual([]);
    });
  });
}
