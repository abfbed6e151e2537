/**
 * The database sources against the machine's real PostgreSQL and MariaDB: one body of tests
 * looped over both (as Kysely does), driving `read()` directly and applying what it yields
 * the way the runner will: records upserted by primary key into a Map, the state taken only
 * from a `state` message (a record after the last state is not committed).
 */
import { randomBytes } from 'node:crypto';
import mysql from 'mysql2/promise';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mysqlSource } from '../src/sources/mysql/index.js';
import { postgresSource } from '../src/sources/postgres/index.js';
import type { ConfiguredStream, PullSourceConnector, SourceMessage } from '../src/sources/source.js';
import { SourceError } from '../src/sources/sql/errors.js';
import { pgUnreachable, type ScratchDatabase, scratchDatabase } from './pg.js';

const MYSQL = { host: '127.0.0.1', port: 3306, user: 'root', password: '' };

async function mysqlUnreachable(): Promise<string | undefined> {
  try {
    const c = await mysql.createConnection({ ...MYSQL, connectTimeout: 2000 });
    await c.end();
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

/** A session of its own on the test database, for concurrent writers. */
interface Session {
  exec(sql: string): Promise<void>;
  end(): Promise<void>;
}

interface Db {
  name: string;
  /** Source configuration (before parsing) pointing at the test database. */
  base: Record<string, unknown>;
  session(): Promise<Session>;
  /** Ends the connector's connections from the server side (a lost connection). */
  killReaders(): Promise<number>;
  /** How many connections of the connector the server has. */
  countReaders(): Promise<number>;
  drop(): Promise<void>;
}

interface Dialect {
  name: 'postgres' | 'mysql';
  problem: string | undefined;
  connector: PullSourceConnector<unknown>;
  q(name: string): string;
  /** Column types for the shared tests. */
  ts: string;
  /** The database's "now" as a writer sets a cursor (transaction start / statement start). */
  now: string;
  text: string;
  /** A table name with its schema, as the stream's `table`. */
  table(db: Db, name: string): string;
  open(): Promise<Db>;
}

const postgres: Dialect = {
  name: 'postgres',
  problem: await pgUnreachable(),
  connector: postgresSource as PullSourceConnector<unknown>,
  q: (n) => `"${n.replace(/"/g, '""')}"`,
  ts: 'timestamptz',
  now: 'now()',
  text: 'text',
  table: (_db, name) => `public.${name}`,
  async open() {
    const db: ScratchDatabase = await scratchDatabase('srcdb');
    const sessions: pg.Client[] = [];
    return {
      name: db.name,
      base: { type: 'postgres', connectionString: db.url },
      async session() {
        const c = new pg.Client(db.config);
        c.on('error', () => {});
        await c.connect();
        sessions.push(c);
        return {
          exec: async (sql) => {
            await c.query(sql);
          },
          end: () => c.end(),
        };
      },
      async killReaders() {
        const r = await db.admin.query(
          "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'tributary-source'",
          [db.name],
        );
        return r.rowCount ?? 0;
      },
      async countReaders() {
        const r = await db.admin.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND application_name = 'tributary-source'",
          [db.name],
        );
        return r.rows[0]!.n;
      },
      async drop() {
        for (const c of sessions) await c.end().catch(() => {});
        await db.drop();
      },
    };
  },
};

const mariadb: Dialect = {
  name: 'mysql',
  problem: await mysqlUnreachable(),
  connector: mysqlSource as PullSourceConnector<unknown>,
  q: (n) => `\`${n.replace(/`/g, '``')}\``,
  ts: 'datetime(6)',
  now: 'NOW(6)',
  text: 'varchar(200)',
  table: (db, name) => `${db.name}.${name}`,
  async open() {
    const name = `srcdb_${randomBytes(6).toString('hex')}`;
    const admin = await mysql.createConnection(MYSQL);
    await admin.query(`CREATE DATABASE ${name}`);
    const sessions: mysql.Connection[] = [];
    return {
      name,
      base: { type: 'mysql', host: MYSQL.host, port: MYSQL.port, user: MYSQL.user, database: name },
      async session() {
        const c = await mysql.createConnection({ ...MYSQL, database: name });
        sessions.push(c);
        return {
          exec: async (sql) => {
            await c.query(sql);
          },
          end: () => c.end(),
        };
      },
      async killReaders() {
        const [rows] = await admin.query<mysql.RowDataPacket[]>(
          'SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID()',
          [name],
        );
        const own = new Set(sessions.map((s) => s.threadId));
        let n = 0;
        for (const r of rows) {
          if (own.has(r.ID)) continue;
          await admin.query(`KILL ${Number(r.ID)}`).catch(() => {});
          n++;
        }
        return n;
      },
      async countReaders() {
        const [rows] = await admin.query<mysql.RowDataPacket[]>(
          'SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID()',
          [name],
        );
        const own = new Set(sessions.map((s) => s.threadId));
        return rows.filter((r) => !own.has(r.ID)).length;
      },
      async drop() {
        for (const c of sessions) await c.end().catch(() => {});
        await admin.query(`DROP DATABASE IF EXISTS ${name}`);
        await admin.end();
      },
    };
  },
};

const ctx = () => ({ signal: new AbortController().signal, baseDir: '.' });

/** What the runner keeps: rows upserted by key, the committed state, failures, completes. */
class Runner {
  readonly rows = new Map<string, Record<string, unknown>>();
  state: Record<string, unknown> = {};
  failed: Extract<SourceMessage, { type: 'failed' }>[] = [];
  completes = 0;

  constructor(readonly key: string[]) {}

  /**
   * One sync. Records are applied as they come (the runner writes what a checkpoint covers,
   * then commits the state); `stopAfterStates` simulates a crash after that many checkpoints.
   * Returns the records it yielded.
   */
  async sync(
    connector: PullSourceConnector<unknown>,
    config: unknown,
    streams: ConfiguredStream[],
    opts: { stopAfterStates?: number; onState?: (n: number) => Promise<void> } = {},
  ): Promise<Record<string, unknown>[]> {
    const yielded: Record<string, unknown>[] = [];
    let states = 0;
    for await (const m of connector.read(config, streams, this.state, ctx())) {
      if (m.type === 'record') {
        yielded.push(m.data);
        this.rows.set(JSON.stringify(this.key.map((k) => m.data[k])), m.data);
      } else if (m.type === 'failed') this.failed.push(m);
      else if (m.type === 'complete') this.completes++;
      else if (m.type === 'state') {
        this.state = { ...this.state, [m.stream]: m.state };
        states++;
        await opts.onState?.(states);
        if (opts.stopAfterStates !== undefined && states >= opts.stopAfterStates) break;
      }
    }
    return yielded;
  }
}

const incremental = (name: string, cursorField: string, primaryKey: string[] = []): ConfiguredStream => ({
  name,
  syncMode: 'incremental',
  cursorField,
  primaryKey,
});

for (const d of [postgres, mariadb]) {
  describe.skipIf(d.problem !== undefined)(`database source: ${d.name}`, () => {
    let db: Db;
    let admin: Session;
    const q = d.q;
    const parse = (extra: Record<string, unknown>) => d.connector.spec.parse({ ...db.base, ...extra });

    beforeAll(async () => {
      db = await d.open();
      admin = await db.session();
    });
    afterAll(async () => {
      await db?.drop();
    });

    it('check reports a wrong port, user, database and table as clear errors, and a good config as ok', async () => {
      await admin.exec(`CREATE TABLE ${q('chk')} (id int PRIMARY KEY)`);
      const ok = await d.connector.check(
        parse({ streams: [{ name: 'chk', table: d.table(db, 'chk') }] }),
        ctx(),
      );
      expect(ok).toEqual({ ok: true });
      const port = await d.connector.check(
        parse({
          ...(d.name === 'postgres' ? { connectionString: undefined, database: db.name } : {}),
          host: '127.0.0.1',
          port: 1,
          user: 'root',
        }),
        ctx(),
      );
      expect(port).toMatchObject({ ok: false, code: 'TRIB_ERR_SOURCE_UNREACHABLE' });
      // A host that never answers: the connect timeout, not a hang.
      const silent = await d.connector.check(
        parse({
          ...(d.name === 'postgres' ? { connectionString: undefined, database: db.name } : {}),
          host: '10.255.255.1',
          user: 'root',
          connectTimeout: 300,
        }),
        ctx(),
      );
      expect(silent).toMatchObject({ ok: false, code: 'TRIB_ERR_SOURCE_UNREACHABLE' });
      const user =
        d.name === 'postgres'
          ? await d.connector.check(
              parse({ connectionString: `postgres://no_such_role@127.0.0.1:5432/${db.name}` }),
              ctx(),
            )
          : await d.connector.check(parse({ password: 'wrong-password' }), ctx());
      expect(user).toMatchObject({ ok: false, code: 'TRIB_ERR_SOURCE_AUTH' });
      expect((user as { message: string }).message).toMatch(/password|user/);
      const database =
        d.name === 'postgres'
          ? await d.connector.check(
              parse({ connectionString: 'postgres://postgres@127.0.0.1:5432/no_such_db_x' }),
              ctx(),
            )
          : await d.connector.check(parse({ database: 'no_such_db_x' }), ctx());
      expect(database).toMatchObject({ ok: false, code: 'TRIB_ERR_SOURCE_DATABASE_NOT_FOUND' });
      const table = await d.connector.check(
        parse({ streams: [{ name: 'x', table: d.table(db, 'missing') }] }),
        ctx(),
      );
      expect(table).toMatchObject({ ok: false, code: 'TRIB_ERR_SOURCE_STREAM_NOT_FOUND' });
      const cursor = await d.connector.check(
        parse({
          streams: [{ name: 'x', table: d.table(db, 'chk'), syncMode: 'incremental', cursorField: 'nope' }],
        }),
        ctx(),
      );
      expect(cursor).toMatchObject({ ok: false, code: 'TRIB_ERR_SOURCE_CURSOR_INVALID' });
    });

    it('discovers tables and views with quoted names, columns, types, keys and cursor candidates', async () => {
      const t = 'Odd "name", with `ticks`';
      await admin.exec(
        `CREATE TABLE ${q(t)} (${q('k 1')} int NOT NULL, ${q('k"2')} ${d.text} NOT NULL, ${q('updated at')} ${d.ts} NULL, note ${d.text}, PRIMARY KEY (${q('k"2')}, ${q('k 1')}))`,
      );
      await admin.exec(`CREATE VIEW ${q('v_odd')} AS SELECT ${q('k 1')}, note FROM ${q(t)}`);
      const catalog = await d.connector.discover(parse({}), ctx());
      const s = catalog.streams.find((x) => x.name === d.table(db, t));
      expect(s).toBeDefined();
      expect(s!.columns.map((c) => c.name)).toEqual(['k 1', 'k"2', 'updated at', 'note']);
      expect(s!.primaryKey).toEqual(['k"2', 'k 1']);
      expect(s!.columns.find((c) => c.name === 'updated at')).toMatchObject({
        jsonType: 'timestamp',
        nullable: true,
      });
      expect(s!.columns.find((c) => c.name === 'k 1')).toMatchObject({
        jsonType: 'integer',
        nullable: false,
      });
      expect(s!.cursorCandidates).toEqual(['k 1', 'updated at']);
      const v = catalog.streams.find((x) => x.name === d.table(db, 'v_odd'));
      expect(v?.columns.map((c) => c.name)).toEqual(['k 1', 'note']);
      // And it reads: quoting holds in every statement of an incremental read.
      await admin.exec(`INSERT INTO ${q(t)} VALUES (1, 'a''b"c', ${d.now}, 'x'), (2, 'a''b"c', NULL, 'y')`);
      const r = new Runner(['k"2', 'k 1']);
      await r.sync(d.connector, parse({ checkpointEvery: 1 }), [
        incremental(d.table(db, t), 'updated at', ['k"2', 'k 1']),
      ]);
      await r.sync(d.connector, parse({ checkpointEvery: 1 }), [
        incremental(d.table(db, t), 'updated at', ['k"2', 'k 1']),
      ]);
      expect([...r.rows.values()].map((x) => x.note).sort()).toEqual(['x', 'y']);
    });

    it('full refresh streams every row, checkpoints by key, resumes, and ends with complete (deleted rows are not seen)', async () => {
      await admin.exec(`CREATE TABLE fr (id int PRIMARY KEY, v ${d.text})`);
      const values = Array.from({ length: 95 }, (_, i) => `(${i + 1}, 'v${i + 1}')`).join(', ');
      await admin.exec(`INSERT INTO fr VALUES ${values}`);
      const config = parse({ checkpointEvery: 20, batchSize: 7 });
      const stream: ConfiguredStream = { name: d.table(db, 'fr'), syncMode: 'full_refresh', primaryKey: [] };
      // A crash after the second checkpoint: the resumed read starts after key 40.
      const r = new Runner(['id']);
      const first = await r.sync(d.connector, config, [stream], { stopAfterStates: 2 });
      expect(first.length).toBe(40);
      expect(r.completes).toBe(0);
      const second = await r.sync(d.connector, config, [stream]);
      expect(second.map((x) => x.id)).toEqual(Array.from({ length: 55 }, (_, i) => i + 41));
      expect(r.completes).toBe(1);
      expect(r.rows.size).toBe(95);
      // The next full refresh starts over; a deleted row is not seen, so the runner marks it deleted.
      await admin.exec('DELETE FROM fr WHERE id IN (3, 50)');
      const third = await r.sync(d.connector, config, [stream]);
      expect(third.length).toBe(93);
      expect(third.some((x) => x.id === 3 || x.id === 50)).toBe(false);
      expect(r.completes).toBe(2);
    });

    it('incremental: many rows sharing one cursor value across a checkpoint boundary are read once each', async () => {
      await admin.exec(`CREATE TABLE ties (id int PRIMARY KEY, c ${d.ts} NOT NULL)`);
      const rows = Array.from({ length: 25 }, (_, i) => `(${i + 1}, '2024-05-01 10:00:00')`).join(', ');
      await admin.exec(`INSERT INTO ties VALUES ${rows}`);
      const config = parse({ checkpointEvery: 10, batchSize: 4 });
      const stream = incremental(d.table(db, 'ties'), 'c');
      const r = new Runner(['id']);
      const first = await r.sync(d.connector, config, [stream], { stopAfterStates: 1 });
      expect(first.map((x) => x.id)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
      const second = await r.sync(d.connector, config, [stream]);
      expect(second.map((x) => x.id)).toEqual(Array.from({ length: 15 }, (_, i) => i + 11));
      // More rows with the same value after the sync: the next one reads them (ties are re-read).
      await admin.exec("INSERT INTO ties VALUES (26, '2024-05-01 10:00:00'), (27, '2024-05-01 10:00:00')");
      const third = await r.sync(d.connector, config, [stream]);
      expect(third.map((x) => x.id)).toContain(26);
      expect(third.map((x) => x.id)).toContain(27);
      expect(r.rows.size).toBe(27);
    });

    it('incremental: a transaction that commits late with an older cursor value is still read', async () => {
      await admin.exec(`CREATE TABLE late (id int PRIMARY KEY, v ${d.text}, c ${d.ts} NOT NULL)`);
      await admin.exec(`INSERT INTO late VALUES (1, 'old', ${d.now})`);
      const config = parse({ clockSkew: '0s' });
      const stream = incremental(d.table(db, 'late'), 'c');
      const r = new Runner(['id']);
      await r.sync(d.connector, config, [stream]);
      const a = await db.session();
      const b = await db.session();
      // A takes its cursor value first (an insert and an update), B later; B commits first.
      await a.exec(d.name === 'postgres' ? 'BEGIN' : 'START TRANSACTION');
      await a.exec(`INSERT INTO late VALUES (2, 'a', ${d.now})`);
      await a.exec(`UPDATE late SET v = 'updated by a', c = ${d.now} WHERE id = 1`);
      await new Promise((res) => setTimeout(res, 20)); // B's cursor value is later than A's
      await b.exec(`INSERT INTO late VALUES (3, 'b', ${d.now})`);
      await r.sync(d.connector, config, [stream]);
      expect(r.rows.has('[3]')).toBe(true);
      expect(r.rows.has('[2]')).toBe(false);
      await r.sync(d.connector, config, [stream]); // A still open: the bound must not pass it
      await a.exec('COMMIT');
      await r.sync(d.connector, config, [stream]);
      expect(r.rows.get('[2]')?.v).toBe('a');
      expect(r.rows.get('[1]')?.v).toBe('updated by a');
      await a.end();
      await b.end();
      // With nothing open the bound moves up: a sync with no change reads only the last value again.
      await r.sync(d.connector, config, [stream]);
      const quiet = await r.sync(d.connector, config, [stream]);
      expect(quiet.length).toBeLessThan(3);
    });

    it('incremental: an integer cursor (auto-increment ids) committed out of order is still read', async () => {
      const serial = d.name === 'postgres' ? 'bigserial PRIMARY KEY' : 'bigint AUTO_INCREMENT PRIMARY KEY';
      await admin.exec(`CREATE TABLE ids (id ${serial}, v ${d.text})`);
      await admin.exec("INSERT INTO ids (v) VALUES ('first')");
      const config = parse({ clockSkew: '0s' });
      const stream = incremental(d.table(db, 'ids'), 'id');
      const r = new Runner(['id']);
      await r.sync(d.connector, config, [stream]);
      const a = await db.session();
      await a.exec(d.name === 'postgres' ? 'BEGIN' : 'START TRANSACTION');
      await a.exec("INSERT INTO ids (v) VALUES ('a')"); // id 2, open
      await admin.exec("INSERT INTO ids (v) VALUES ('b')"); // id 3, committed
      await r.sync(d.connector, config, [stream]);
      expect([...r.rows.keys()].sort()).toEqual(['[1]', '[3]']);
      await a.exec('COMMIT');
      await a.end();
      await r.sync(d.connector, config, [stream]);
      expect([...r.rows.keys()].sort()).toEqual(['[1]', '[2]', '[3]']);
    });

    it('incremental: rows with a NULL cursor are read by every sync, and read with their value once set', async () => {
      await admin.exec(`CREATE TABLE nulls (id int PRIMARY KEY, v ${d.text}, c ${d.ts} NULL)`);
      await admin.exec(`INSERT INTO nulls VALUES (1, 'n', NULL), (2, 'x', ${d.now})`);
      const config = parse({});
      const stream = incremental(d.table(db, 'nulls'), 'c');
      const r = new Runner(['id']);
      await r.sync(d.connector, config, [stream]);
      expect(r.rows.size).toBe(2);
      await admin.exec("INSERT INTO nulls VALUES (3, 'late null', NULL)");
      const second = await r.sync(d.connector, config, [stream]);
      expect(second.map((x) => x.id)).toContain(3);
      await admin.exec(`UPDATE nulls SET c = ${d.now}, v = 'set' WHERE id = 1`);
      await r.sync(d.connector, config, [stream]);
      expect(r.rows.get('[1]')).toMatchObject({ v: 'set' });
      expect(r.rows.get('[1]')?.c).not.toBeNull();
    });

    it('incremental under concurrent writers: the rows read equal the table, whatever the commit order', async () => {
      await admin.exec(`CREATE TABLE busy (id int PRIMARY KEY, v int NOT NULL, c ${d.ts} NOT NULL)`);
      const config = parse({ checkpointEvery: 7, batchSize: 5 });
      const stream = incremental(d.table(db, 'busy'), 'c');
      const r = new Runner(['id']);
      const writers = await Promise.all([db.session(), db.session(), db.session()]);
      let stop = false;
      let nextId = 1;
      const write = async (w: Session, seed: number) => {
        let n = seed;
        while (!stop) {
          n = (n * 1103515245 + 12345) % 2147483648;
          await w.exec(d.name === 'postgres' ? 'BEGIN' : 'START TRANSACTION');
          const id = nextId++;
          await w.exec(`INSERT INTO busy VALUES (${id}, 0, ${d.now})`);
          if (id > 3)
            await w.exec(`UPDATE busy SET v = v + 1, c = ${d.now} WHERE id = ${(n % (id - 1)) + 1}`);
          // Hold some transactions open across syncs, so commits land out of cursor order.
          await new Promise((res) => setTimeout(res, n % 4 === 0 ? 60 : n % 5));
          await w.exec(n % 9 === 0 ? 'ROLLBACK' : 'COMMIT');
        }
      };
      const running = writers.map((w, i) => write(w, i + 7));
      for (let i = 0; i < 12 || nextId < 80; i++) await r.sync(d.connector, config, [stream]);
      stop = true;
      await Promise.all(running);
      await r.sync(d.connector, config, [stream]);
      const reader = await mysqlOrPgRows(d, db, 'SELECT id, v FROM busy ORDER BY id');
      expect(reader.length).toBeGreaterThan(40);
      const got = [...r.rows.values()]
        .map((x) => ({ id: x.id, v: x.v }))
        .sort((a, b) => Number(a.id) - Number(b.id));
      expect(got).toEqual(reader);
      for (const w of writers) await w.end();
    });

    it('a connection lost mid-sync throws a retryable error; a read from the last state misses and doubles nothing', async () => {
      // 20,000 rows of 2 KB: the server cannot have sent the whole table into the socket when it is killed.
      await admin.exec(`CREATE TABLE big (id int PRIMARY KEY, c ${d.ts} NOT NULL, pad text)`);
      await admin.exec(
        d.name === 'postgres'
          ? "INSERT INTO big SELECT i, timestamptz '2024-01-01' + (i / 10) * interval '1 second', repeat('x', 2000) FROM generate_series(1, 20000) i"
          : "INSERT INTO big SELECT seq, TIMESTAMP '2024-01-01 00:00:00' + INTERVAL (seq DIV 10) SECOND, REPEAT('x', 2000) FROM seq_1_to_20000",
      );
      const config = parse({ checkpointEvery: 500, batchSize: 100 });
      for (const stream of [
        incremental(d.table(db, 'big'), 'c'),
        { name: d.table(db, 'big'), syncMode: 'full_refresh' as const, primaryKey: [] },
      ]) {
        const r = new Runner(['id']);
        const committed: unknown[] = [];
        let pending: unknown[] = [];
        let error: unknown;
        try {
          for await (const m of d.connector.read(config, [stream], r.state, ctx())) {
            if (m.type === 'record') pending.push(m.data.id);
            if (m.type === 'state') {
              committed.push(...pending);
              pending = [];
              r.state = { [m.stream]: m.state };
              if (committed.length === 1000) expect(await db.killReaders()).toBeGreaterThan(0);
            }
          }
        } catch (err) {
          error = err;
        }
        expect(error).toBeInstanceOf(SourceError);
        expect(error).toMatchObject({ code: 'TRIB_ERR_SOURCE_CONNECTION_LOST', retryable: true });
        expect(committed.length).toBeGreaterThanOrEqual(1000);
        expect(committed.length).toBeLessThan(20000);
        const resumed = await r.sync(d.connector, config, [stream]);
        const all = [...committed, ...resumed.map((x) => x.id)];
        expect(all.length).toBe(20000);
        expect(new Set(all).size).toBe(20000);
      }
    });

    it('a read stopped by its signal mid-stream ends without a final state and leaves no session behind', async () => {
      await admin.exec(`CREATE TABLE stop (id int PRIMARY KEY, pad text)`);
      await admin.exec(
        d.name === 'postgres'
          ? "INSERT INTO stop SELECT i, repeat('y', 1000) FROM generate_series(1, 20000) i"
          : `INSERT INTO stop SELECT seq, REPEAT('y', 1000) FROM ${db.name}.seq_1_to_20000`,
      );
      const abort = new AbortController();
      const seen: SourceMessage['type'][] = [];
      for await (const m of d.connector.read(
        parse({ checkpointEvery: 1000, batchSize: 500 }),
        [{ name: d.table(db, 'stop'), syncMode: 'full_refresh', primaryKey: [] }],
        {},
        { signal: abort.signal, baseDir: '.' },
      )) {
        seen.push(m.type);
        if (m.type === 'state') abort.abort();
      }
      expect(seen.filter((t) => t === 'state')).toHaveLength(1);
      expect(seen).not.toContain('complete');
      expect(seen.filter((t) => t === 'record').length).toBeLessThan(20000);
      // The connector's connection is gone (closed or destroyed), not left reading.
      let left = -1;
      for (let i = 0; i < 50 && left !== 0; i++) {
        left = await db.countReaders();
        if (left !== 0) await new Promise((res) => setTimeout(res, 20));
      }
      expect(left).toBe(0);
    });

    it('reads a named query stream incrementally', async () => {
      await admin.exec(`CREATE TABLE qsrc (id int PRIMARY KEY, c ${d.ts} NOT NULL, email ${d.text})`);
      await admin.exec(`INSERT INTO qsrc VALUES (1, ${d.now}, 'A@X.COM'), (2, ${d.now}, 'b@y.com')`);
      const config = parse({
        streams: [
          {
            name: 'contacts',
            query: `SELECT id, c AS changed, LOWER(email) AS email FROM ${d.name === 'postgres' ? 'qsrc' : `${db.name}.qsrc`}`,
            syncMode: 'incremental',
            cursorField: 'changed',
            primaryKey: ['id'],
            objects: { identifiers: { email: 'email' } }, // a runner key, passed through
          },
        ],
      });
      expect((config as { streams: { objects?: unknown }[] }).streams[0]!.objects).toBeDefined();
      const r = new Runner(['id']);
      await r.sync(d.connector, config, [incremental('contacts', 'changed', ['id'])]);
      expect(r.rows.get('[1]')).toMatchObject({ email: 'a@x.com' });
      const catalog = await d.connector.discover(config, ctx());
      expect(catalog.streams.find((s) => s.name === 'contacts')?.cursorCandidates).toEqual(['id', 'changed']);
    });
  });
}

async function readAll(connector: PullSourceConnector<unknown>, config: unknown, table: string) {
  const out: SourceMessage[] = [];
  for await (const m of connector.read(
    config,
    [{ name: table, syncMode: 'full_refresh', primaryKey: [] }],
    {},
    ctx(),
  ))
    out.push(m);
  return out;
}

describe.skipIf(postgres.problem !== undefined)('postgres source: type mapping', () => {
  let db: Db;
  beforeAll(async () => {
    db = await postgres.open();
  });
  afterAll(async () => {
    await db?.drop();
  });

  it('maps every type to the JSON the docs table gives', async () => {
    const s = await db.session();
    await s.exec(`CREATE TYPE mood AS ENUM ('ok', 'sad'); CREATE DOMAIN money2 AS numeric(12, 2)`);
    await s.exec(`CREATE TABLE types (
      id int PRIMARY KEY, i2 smallint, i8 bigint, i8big bigint, n numeric, nbig numeric(40, 20), f8 float8, fnan float8, finf float4,
      b boolean, tz timestamptz, ts timestamp, d date, dbc date, dinf timestamptz, t time, iv interval,
      j json, jb jsonb, ai int[], at text[], an numeric[], a2 int[][], atz timestamptz[], by bytea, u uuid,
      e mood, m money2, ip inet, big text)`);
    await s.exec(`SET TimeZone = 'Asia/Kolkata'; INSERT INTO types VALUES (1, -32768, 9007199254740991, -9223372036854775808,
      '123456789012345678901234567890.123456789', '1.10000000000000000001', 0.1, 'NaN', '-Infinity',
      true, '2024-03-01 12:00:00.123456+05:30', '2024-03-01 12:00:00.5', '2024-02-29', '0044-03-15 BC', 'infinity', '23:59:59.999999', '1 day 2 hours',
      '{"a": [1, 2.5, "x"], "n": null}', '{"big": 12345678901234567890}', '{1,NULL,-3}', '{"a,b","c\\"d",NULL,"NULL",""}',
      '{1.5,NaN}', '{{1,2},{3,4}}', '{"2024-01-01 00:00:00+00"}', '\\x00ff10', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
      'sad', 12.5, '10.0.0.1/8', repeat('é', 500000)), (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
      NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)`);
    await s.end();
    const messages = await readAll(
      postgres.connector,
      postgres.connector.spec.parse(db.base),
      'public.types',
    );
    const records = messages
      .filter((m) => m.type === 'record')
      .map((m) => (m as { data: Record<string, unknown> }).data);
    expect(records).toHaveLength(2);
    const { big, ...row } = records[0]!;
    expect(big).toBe('é'.repeat(500000));
    expect(row).toEqual({
      id: 1,
      i2: -32768,
      i8: 9007199254740991,
      i8big: '-9223372036854775808',
      n: '123456789012345678901234567890.123456789',
      nbig: '1.10000000000000000001',
      f8: 0.1,
      fnan: 'NaN',
      finf: '-Infinity',
      b: true,
      tz: '2024-03-01T06:30:00.123456Z',
      ts: '2024-03-01T12:00:00.5Z',
      d: '2024-02-29',
      dbc: '-000043-03-15',
      dinf: 'infinity',
      t: '23:59:59.999999',
      iv: 'P1DT2H',
      j: { a: [1, 2.5, 'x'], n: null },
      jb: { big: 12345678901234567000 },
      ai: [1, null, -3],
      at: ['a,b', 'c"d', null, 'NULL', ''],
      an: ['1.5', 'NaN'],
      a2: [
        [1, 2],
        [3, 4],
      ],
      atz: ['2024-01-01T00:00:00Z'],
      by: Buffer.from([0, 255, 16]).toString('base64'),
      u: 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
      e: 'sad',
      m: '12.50',
      ip: '10.0.0.1/8',
    });
    expect(Object.values(records[1]!).filter((v) => v !== null)).toEqual([2]);
    const catalog = await postgres.connector.discover(postgres.connector.spec.parse(db.base), ctx());
    const cols = catalog.streams.find((x) => x.name === 'public.types')!.columns;
    const jsonType = Object.fromEntries(cols.map((c) => [c.name, c.jsonType]));
    expect(jsonType).toMatchObject({
      n: 'string',
      m: 'string',
      tz: 'timestamp',
      jb: 'object',
      ai: 'array',
      by: 'string',
      i8: 'integer',
    });
  });
});

describe.skipIf(mariadb.problem !== undefined)('mysql source: type mapping', () => {
  let db: Db;
  beforeAll(async () => {
    db = await mariadb.open();
  });
  afterAll(async () => {
    await db?.drop();
  });

  it('maps every type to the JSON the docs table gives; a value it cannot read fails its row only', async () => {
    const s = await db.session();
    await s.exec(`CREATE TABLE types (id int PRIMARY KEY, ub bigint unsigned, sb bigint, ti tinyint, b tinyint(1), bit1 bit(1), bit10 bit(10),
      d65 decimal(65, 30), dbl double, fl float, dt datetime(6), ts timestamp(6) NULL, d date, t time(3), y year,
      j json, bl blob, bin binary(4), e enum('a', 'b c'), st set('x', 'y'), txt longtext, zd datetime, pz date)`);
    await s.exec("SET time_zone = '+05:00', sql_mode = ''");
    await s.exec(`INSERT INTO types VALUES (1, 18446744073709551615, -9007199254740993, -128, 1, b'1', b'1000000001',
      '12345678901234567890123456789012345.123456789012345678901234567890', 0.1, 1.5, '2024-03-01 12:00:00.123456',
      '2024-03-01 12:00:00.5', '2024-02-29', '-838:59:59.000', 2024, '{"a": {"b": [true, null]}}', x'00ff', x'01020304',
      'b c', 'x,y', REPEAT('ü', 300000), '0000-00-00 00:00:00', '2024-01-01'),
      (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
      (3, 1, 1, 1, 0, b'0', b'0', 0, 0, 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '2024-00-10')`);
    await s.end();
    const messages = await readAll(
      mariadb.connector,
      mariadb.connector.spec.parse(db.base),
      `${db.name}.types`,
    );
    const records = messages
      .filter((m) => m.type === 'record')
      .map((m) => (m as { data: Record<string, unknown> }).data);
    expect(records.map((r) => r.id)).toEqual([1, 2]);
    const { txt, ...row } = records[0]!;
    expect(txt).toBe('ü'.repeat(300000));
    expect(row).toEqual({
      id: 1,
      ub: '18446744073709551615',
      sb: '-9007199254740993',
      ti: -128,
      b: true,
      bit1: true,
      bit10: 513,
      d65: '12345678901234567890123456789012345.123456789012345678901234567890',
      dbl: 0.1,
      fl: 1.5,
      dt: '2024-03-01T12:00:00.123456Z',
      ts: '2024-03-01T07:00:00.500000Z',
      d: '2024-02-29',
      t: '-838:59:59.000',
      y: 2024,
      j: { a: { b: [true, null] } },
      bl: Buffer.from([0, 255]).toString('base64'),
      bin: Buffer.from([1, 2, 3, 4]).toString('base64'),
      e: 'b c',
      st: 'x,y',
      zd: null,
      pz: '2024-01-01',
    });
    expect(Object.values(records[1]!).filter((v) => v !== null)).toEqual([2]);
    const failed = messages.filter((m) => m.type === 'failed');
    expect(failed).toHaveLength(1);
    expect(failed[0]).toMatchObject({ code: 'TRIB_ERR_SOURCE_BAD_VALUE', stream: `${db.name}.types` });
    expect((failed[0] as { payload: string }).payload).toContain('2024-00-10');
    expect(messages.some((m) => m.type === 'complete')).toBe(true);
  });
});

async function mysqlOrPgRows(d: Dialect, db: Db, sql: string): Promise<{ id: unknown; v: unknown }[]> {
  if (d.name === 'postgres') {
    const c = new pg.Client({ connectionString: db.base.connectionString as string });
    await c.connect();
    const r = await c.query(sql);
    await c.end();
    return r.rows;
  }
  const c = await mysql.createConnection({ ...MYSQL, database: db.name });
  const [rows] = await c.query<mysql.RowDataPacket[]>(sql);
  await c.end();
  return rows.map((x) => ({ id: x.id, v: x.v }));
}
