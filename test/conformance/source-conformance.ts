import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { openEmbeddedSources } from '../../src/server/embedded-sources.js';
import { startTestServer, type TestServer } from '../helpers.js';

/**
 * The suite every pull connector passes (files, PostgreSQL, MySQL), against the real runner,
 * store and event log of the embedded server. A connector plugs in with a fixture: the YAML of
 * a source whose stream `rows` reads rows of (id integer, email text, name text), and a way to
 * add such rows (and bad ones) to the system it reads.
 *
 * The stream must be configured with `CONFORMANCE_STREAM` (objects keyed by id, and a track
 * event per row), so both objects and events are checked.
 */
export const CONFORMANCE_STREAM = `primaryKey: [id]
        columns: { id: integer }
        events:
          type: track
          event: Row Added
          anonymousId: email
          properties: [name]`;

export interface ConformanceRow {
  id: number;
  email: string;
  name: string;
}

export interface SourceFixture {
  /** The source's id in `sourceYaml`. */
  sourceId: string;
  /**
   * The source as a YAML list item (indented by 2, starting `  - id: …`), whose stream `rows`
   * carries `CONFORMANCE_STREAM` (indented by 8).
   */
  sourceYaml: string;
  /** Adds rows to the system the source reads (a new file, rows inserted in a table). */
  addRows(rows: readonly ConformanceRow[]): Promise<void>;
  /**
   * Adds records the connector cannot read as rows (a wrong column count, an unparseable value)
   * beside `good`; returns the codes of the failures they must make.
   */
  addBadRows(good: readonly ConformanceRow[]): Promise<string[]>;
  /** Sources (YAML items like `sourceYaml`) that `check` must refuse, with the code expected. */
  brokenSources(): { yaml: string; code: string }[];
  /**
   * Rows at its saved bound a sync reads again by design, at most (a database cursor is
   * inclusive: rows sharing the last cursor value may still be committed; docs/sources-databases.md).
   * They are upserted, never stored twice. Default 0: a sync reads exactly what is new.
   */
  rereads?: number;
  cleanup(): Promise<void>;
}

/** A row of a database table: a conformance row, or one without a key (a bad row). */
export type TableRow = ConformanceRow | { id: null; email: string; name: string };

/**
 * `addRows` and `addBadRows` of a database fixture, from `insertChunk`, which inserts up to
 * 5,000 rows in one statement. The bad row is one without a key, among the good ones.
 */
export function tableRows(
  insertChunk: (rows: readonly TableRow[]) => Promise<unknown>,
): Pick<SourceFixture, 'addRows' | 'addBadRows'> {
  const insert = async (rows: readonly TableRow[]) => {
    for (let i = 0; i < rows.length; i += 5_000) await insertChunk(rows.slice(i, i + 5_000));
  };
  return {
    addRows: insert,
    async addBadRows(good) {
      const half = Math.floor(good.length / 2);
      await insert([
        ...good.slice(0, half),
        { id: null, email: 'nokey@example.com', name: 'No key' },
        ...good.slice(half),
      ]);
      return ['TRIB_ERR_SOURCE_MISSING_KEY'];
    },
  };
}

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CLI = join(ROOT, 'src', 'cli', 'index.ts');

export function rows(from: number, to: number): ConformanceRow[] {
  return Array.from({ length: to - from }, (_, i) => ({
    id: from + i,
    email: `user${from + i}@example.com`,
    name: `Name ${from + i}`,
  }));
}

function configYaml(f: SourceFixture): string {
  return `version: 1\nsources:\n  - id: web\n    type: http\n    writeKey: wk_web_123\n${f.sourceYaml}\nquery:\n  maxRows: 1000000\n  maxBytes: 1073741824\n`;
}

export function sourceConformance(name: string, makeFixture: () => Promise<SourceFixture | undefined>) {
  describe(`source conformance: ${name}`, () => {
    let fixture: SourceFixture | undefined;
    let server: TestServer | undefined;
    let dir: string | undefined;
    afterEach(async () => {
      await server?.stop();
      server = undefined;
      await fixture?.cleanup();
      fixture = undefined;
      if (dir) rmSync(dir, { recursive: true, force: true });
      dir = undefined;
    });

    async function start(): Promise<{ f: SourceFixture; s: TestServer }> {
      fixture = await makeFixture();
      if (!fixture) throw new Error('fixture unavailable');
      server = await startTestServer({ yaml: configYaml(fixture) });
      return { f: fixture, s: server };
    }

    /** Objects (live ones) per id, and events per messageId, of the source. */
    async function stored(s: TestServer, id: string) {
      await s.settle();
      const [o] = await s.query(
        `SELECT count(*) AS ids, coalesce(max(n), 0) AS copies, coalesce(min(id), 0) AS lo, coalesce(max(id), 0) AS hi
         FROM (SELECT id, count(*) AS n FROM "${id}".rows WHERE NOT _tributary_deleted GROUP BY id)`,
      );
      const [e] = await s.query(
        `SELECT count(*) AS people, coalesce(max(n), 0) AS copies
         FROM (SELECT anonymous_id, count(*) AS n FROM events WHERE source_id = '${id}' AND event = 'Row Added' GROUP BY anonymous_id)`,
      );
      return {
        /** Distinct live object ids, the lowest and highest. */
        objects: { count: Number(o!.ids), lo: Number(o!.lo), hi: Number(o!.hi) },
        maxObjectCopies: Number(o!.copies),
        eventPeople: Number(e!.people),
        maxEventCopies: Number(e!.copies),
      };
    }

    it('resumes from its state exactly: a second sync reads only the rows added since', async () => {
      const { f, s } = await start();
      await f.addRows(rows(1, 101));
      const first = await s.sources.sync(f.sourceId, { trigger: 'test' });
      expect(first, first.error).toMatchObject({ status: 'succeeded', rows: 100, objects: 100, events: 100 });
      await f.addRows(rows(101, 151));
      const second = await s.sources.sync(f.sourceId, { trigger: 'test' });
      const again = f.rereads ?? 0;
      expect(second.status, second.error).toBe('succeeded');
      expect(second.rows).toBeGreaterThanOrEqual(50);
      expect(second.rows).toBeLessThanOrEqual(50 + again);
      expect(second).toMatchObject({ objects: second.rows, events: second.rows });
      const third = await s.sources.sync(f.sourceId, { trigger: 'test' });
      expect(third.status).toBe('succeeded');
      expect(third.rows).toBeLessThanOrEqual(again);
      const st = await stored(s, f.sourceId);
      expect(st.objects).toEqual({ count: 150, lo: 1, hi: 150 });
      expect(st).toMatchObject({ maxObjectCopies: 1, eventPeople: 150, maxEventCopies: 1 });
      const runs = await s.sources.runner.runs(f.sourceId);
      expect(runs.map((r) => [r.status, r.rows])).toEqual([
        ['succeeded', third.rows],
        ['succeeded', second.rows],
        ['succeeded', 100],
      ]);
    });

    it('loses and doubles nothing when it stops after the records are written and before the state commits', async () => {
      const { f, s } = await start();
      await f.addRows(rows(1, 5001));
      let appends = 0;
      // Writes every 1,000 records; the third write stops after its events are in the log.
      const crashing = s.sources.runner.fork({
        maxBuffered: 1000,
        afterAppend: () => {
          if (++appends === 3) throw new Error('crash between records and state');
        },
      });
      const source = { ...s.sources.pull(f.sourceId), retries: 0 };
      const failed = await crashing.sync(source, { trigger: 'test' });
      expect(failed.status).toBe('failed');
      expect(failed.error).toMatch(/crash between records and state/);
      expect(appends).toBe(3);
      const resumed = await s.sources.sync(f.sourceId, { trigger: 'test' });
      expect(resumed.status, resumed.error).toBe('succeeded');
      const st = await stored(s, f.sourceId);
      expect(st.objects).toEqual({ count: 5000, lo: 1, hi: 5000 });
      expect(st).toMatchObject({ maxObjectCopies: 1, eventPeople: 5000, maxEventCopies: 1 });
    });

    it('retries a read that fails from the last committed state', async () => {
      const { f, s } = await start();
      await f.addRows(rows(1, 3001));
      let appends = 0;
      const flaky = s.sources.runner.fork({
        maxBuffered: 1000,
        retryDelayMs: 1,
        afterAppend: () => {
          if (++appends === 2) throw new Error('connection lost');
        },
      });
      const r = await flaky.sync({ ...s.sources.pull(f.sourceId), retries: 2 }, { trigger: 'test' });
      expect(r, r.error).toMatchObject({ status: 'succeeded', attempts: 2 });
      const st = await stored(s, f.sourceId);
      expect(st.objects).toEqual({ count: 3000, lo: 1, hi: 3000 });
      expect(st).toMatchObject({ maxObjectCopies: 1, eventPeople: 3000, maxEventCopies: 1 });
    });

    it('isolates bad records: they go to failed_events (stage source) and the rest is stored', async () => {
      const { f, s } = await start();
      const good = rows(1, 21);
      const codes = await f.addBadRows(good);
      const r = await s.sources.sync(f.sourceId, { trigger: 'test' });
      expect(r.status, r.error).toBe('succeeded');
      expect(r.failed).toBe(codes.length);
      const st = await stored(s, f.sourceId);
      expect(st.objects).toEqual({ count: good.length, lo: good[0]!.id, hi: good.at(-1)!.id });
      expect(st.eventPeople).toBe(good.length);
      const failed = await s.query(
        `SELECT code, reason FROM failed_events WHERE stage = 'source' AND source_id = '${f.sourceId}' ORDER BY code`,
      );
      expect(failed.map((x) => x.code)).toEqual([...codes].sort());
      for (const x of failed) expect(String(x.reason)).not.toBe('');
    });

    it('check reports a wrong path, host or password as a clear error with its code', async () => {
      fixture = await makeFixture();
      if (!fixture) throw new Error('fixture unavailable');
      dir = mkdtempSync(join(tmpdir(), 'trib-conf-'));
      for (const broken of fixture.brokenSources()) {
        const { config } = parseConfig(
          `version: 1\nsources:\n  - id: web\n    type: http\n    writeKey: wk_web_123\n${broken.yaml}\n`,
          {},
        );
        const local = await openEmbeddedSources(config, join(dir, 'data'), dir);
        try {
          const r = await local.sources.check(fixture.sourceId);
          expect(r).toMatchObject({ ok: false, code: broken.code });
          if (!r.ok) expect(r.message.length).toBeGreaterThan(10);
        } finally {
          await local.close();
        }
      }
    });

    it('loses and doubles nothing when the process is killed (kill -9) mid-sync', async () => {
      fixture = await makeFixture();
      if (!fixture) throw new Error('fixture unavailable');
      const f = fixture;
      dir = mkdtempSync(join(tmpdir(), 'trib-conf-kill-'));
      const configPath = join(dir, 'tributary.yaml');
      const dataDir = join(dir, 'data');
      writeFileSync(configPath, configYaml(f));
      const total = 60_000;
      for (let i = 1; i <= total; i += 30_000) await f.addRows(rows(i, i + 30_000));
      const sync = () =>
        spawn(
          process.execPath,
          [
            '--import',
            'tsx',
            CLI,
            'sources',
            'sync',
            f.sourceId,
            '--config',
            configPath,
            '--data-dir',
            dataDir,
          ],
          {
            cwd: ROOT,
            env: { ...process.env, TRIBUTARY_URL: '' },
            stdio: ['ignore', 'pipe', 'pipe'],
          },
        );
      const child = sync();
      let err = '';
      const killed = new Promise<{ rows: number }>((resolve, reject) => {
        child.stderr.on('data', (d: Buffer) => {
          err += d.toString();
          const m = /progress rows=(\d+)/.exec(err);
          if (m && child.exitCode === null && !child.killed) {
            child.kill('SIGKILL');
            resolve({ rows: Number(m[1]) });
          }
        });
        child.once('exit', (code, signal) => {
          if (signal !== 'SIGKILL') reject(new Error(`sync ended (${code}) before it was killed:\n${err}`));
        });
      });
      const at = await killed;
      await new Promise((r) => child.once('exit', r));
      expect(at.rows).toBeGreaterThan(0);
      expect(at.rows).toBeLessThan(total);
      // Again, to the end.
      const again = sync();
      let out = '';
      again.stdout.on('data', (d: Buffer) => (out += d.toString()));
      again.stderr.on('data', (d: Buffer) => (out += d.toString()));
      const code = await new Promise((r) => again.once('exit', r));
      expect(code, out).toBe(0);
      server = await startTestServer({ yaml: configYaml(f), dataDir });
      const st = await stored(server, f.sourceId);
      expect(st.objects).toEqual({ count: total, lo: 1, hi: total });
      expect(st).toMatchObject({ maxObjectCopies: 1, eventPeople: total, maxEventCopies: 1 });
      const runs = await server.sources.runner.runs(f.sourceId);
      expect(runs.map((r) => r.status)).toEqual(['succeeded', 'failed']);
      // The second run resumed: it read at most what the first had not committed.
      expect(runs[0]!.rows).toBeLessThanOrEqual(total - at.rows);
    }, 180_000);
  });
}
