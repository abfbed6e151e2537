import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { DuckDBEventLog } from '../log/duckdb/duckdb-event-log.js';
import { DuckDBSourceStore } from '../store/duckdb/duckdb-source-store.js';
import { DuckDBStore } from '../store/duckdb/duckdb-store.js';
import { type PullSourceConfig, SourceRunner } from './runner.js';
import type { PullSourceConnector, SourceMessage } from './source.js';
import { StreamSettings } from './streams-schema.js';

/**
 * The runner against the real DuckDB store and event log, with a tiny in-test connector that
 * yields what each test scripts (the file connector runs the conformance suite in test/).
 */

type Script = (state: Readonly<Record<string, unknown>>) => SourceMessage[] | Error;

function scripted(scripts: Script[]): PullSourceConnector<unknown> & { reads: number } {
  const c = {
    type: 'scripted',
    kind: 'pull' as const,
    spec: z.unknown(),
    reads: 0,
    async check() {
      return { ok: true as const };
    },
    async discover() {
      return {
        streams: [
          {
            name: 'people',
            columns: [
              { name: 'id', sourceType: 'int', jsonType: 'integer' as const, nullable: false },
              { name: 'email', sourceType: 'text', jsonType: 'string' as const, nullable: true },
            ],
            primaryKey: ['id'],
            cursorCandidates: [],
            syncModes: ['full_refresh', 'incremental'] as const,
          },
        ],
      };
    },
    async *read(_config: unknown, _streams: unknown, state: Readonly<Record<string, unknown>>) {
      const script = scripts[c.reads++]!;
      const out = script(state);
      for (const m of Array.isArray(out) ? out : []) yield m;
      if (out instanceof Error) throw out;
    },
  };
  return c;
}

const rec = (id: number | string, email = `p${id}@example.com`): SourceMessage => ({
  type: 'record',
  stream: 'people',
  data: { id, email },
  location: `people#${id}`,
});

let dir: string | undefined;
let close: (() => Promise<void>) | undefined;
afterEach(async () => {
  await close?.();
  close = undefined;
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

async function setup(connector: PullSourceConnector<unknown>) {
  dir = mkdtempSync(join(tmpdir(), 'trib-runner-'));
  const instance = await DuckDBInstance.create(join(dir, 'w.duckdb'));
  const c = await instance.connect();
  await c.run(`ATTACH '${join(dir, 'log.duckdb')}' AS log`);
  const log = await DuckDBEventLog.open(instance, { catalog: 'log', segmentDir: join(dir, 'segments') });
  const warehouse = await DuckDBStore.open(instance);
  const store = await DuckDBSourceStore.open(instance);
  const runner = new SourceRunner({
    store,
    log,
    connector: async () => connector,
    baseDir: dir,
    retryDelayMs: 1,
  });
  close = async () => {
    c.closeSync();
    await store.close();
    await warehouse.close();
    await log.close();
    instance.closeSync();
  };
  const rows = async (sql: string) => (await c.runAndReadAll(sql)).getRowObjectsJson();
  return { runner, rows, log };
}

function source(stream: Partial<z.input<typeof StreamSettings>> = {}, retries = 0): PullSourceConfig {
  return {
    id: 'crm',
    type: 'scripted',
    retries,
    streams: [StreamSettings.parse({ name: 'people', primaryKey: ['id'], ...stream })],
  };
}

describe('SourceRunner', () => {
  it('marks objects not seen by a completed full refresh as deleted, and brings back one seen again', async () => {
    const c = scripted([
      () => [
        rec(1),
        rec(2),
        rec(3),
        { type: 'state', stream: 'people', state: 'a' },
        { type: 'complete', stream: 'people' },
      ],
      () => [
        rec(1),
        rec(3),
        { type: 'state', stream: 'people', state: 'b' },
        { type: 'complete', stream: 'people' },
      ],
      () => [rec(2), rec(3), { type: 'complete', stream: 'people' }],
    ]);
    const { runner, rows } = await setup(c);
    const s = source({ syncMode: 'full_refresh' });
    expect((await runner.sync(s, { trigger: 't' })).status).toBe('succeeded');
    expect((await runner.sync(s, { trigger: 't' })).status).toBe('succeeded');
    expect(await rows('SELECT id, _tributary_deleted AS d FROM crm.people ORDER BY id')).toEqual([
      { id: '1', d: false },
      { id: '2', d: true },
      { id: '3', d: false },
    ]);
    await runner.sync(s, { trigger: 't' });
    expect(await rows('SELECT id, _tributary_deleted AS d FROM crm.people ORDER BY id')).toEqual([
      { id: '1', d: true },
      { id: '2', d: false },
      { id: '3', d: false },
    ]);
  });

  it('resumes an interrupted full refresh from its state without deleting what the first attempt read', async () => {
    const seen: unknown[] = [];
    const c = scripted([]);
    // Reads: a completed cycle (row 9); an interrupted one (rows 1, 2, a state, then the connection drops); its resumption (row 3).
    c.read = async function* (_cfg, _streams, state) {
      const i = c.reads++;
      const out = [
        () => [rec(9), { type: 'complete', stream: 'people' }],
        () => [rec(1), rec(2), { type: 'state', stream: 'people', state: 'half' }],
        () => [rec(3), { type: 'complete', stream: 'people' }],
      ][i]!() as SourceMessage[];
      seen.push(state.people);
      for (const m of out) yield m;
      if (i === 1) throw new Error('connection lost');
    };
    const { runner, rows } = await setup(c);
    const s = source({ syncMode: 'full_refresh' }, 0);
    await runner.sync(s, { trigger: 't' });
    const failed = await runner.sync(s, { trigger: 't' });
    expect(failed).toMatchObject({ status: 'failed', error: expect.stringMatching(/connection lost/) });
    const resumed = await runner.sync(s, { trigger: 't' });
    expect(resumed.status).toBe('succeeded');
    // A completed cycle starts from nothing; the interrupted one resumed from its state.
    expect(seen).toEqual([undefined, undefined, 'half']);
    expect(await rows('SELECT id, _tributary_deleted AS d FROM crm.people ORDER BY id')).toEqual([
      { id: '1', d: false },
      { id: '2', d: false },
      { id: '3', d: false },
      { id: '9', d: true },
    ]);
  });

  it('retries a failed read from the last committed state, with the run counting each row once', async () => {
    let reads = 0;
    const states: unknown[] = [];
    const c = scripted([]);
    c.read = async function* (_cfg, _streams, state) {
      states.push(state.people);
      reads++;
      if (state.people === undefined) {
        yield rec(1);
        yield { type: 'state', stream: 'people', state: 1 };
        yield rec(2);
        throw new Error('connection reset');
      }
      yield rec(2);
      yield rec(3);
      yield { type: 'state', stream: 'people', state: 3 };
    };
    const { runner, rows } = await setup(c);
    const r = await runner.sync(source({}, 2), { trigger: 't' });
    expect(r).toMatchObject({ status: 'succeeded', attempts: 2, rows: 3, objects: 3 });
    expect(states).toEqual([undefined, 1]);
    expect(reads).toBe(2);
    expect(await rows('SELECT count(*) AS n FROM crm.people')).toEqual([{ n: '3' }]);
  });

  it('stores a value its column cannot hold as a failure (TRIB_ERR_SOURCE_UNSTORABLE) and the rest', async () => {
    const c = scripted([() => [rec(1), rec('x2'), rec(3), { type: 'state', stream: 'people', state: 's' }]]);
    const { runner, rows } = await setup(c);
    const r = await runner.sync(source({ primaryKey: ['email'] }), { trigger: 't' });
    expect(r).toMatchObject({ status: 'succeeded', objects: 2, failed: 1 });
    expect(await rows('SELECT id FROM crm.people ORDER BY id')).toEqual([{ id: '1' }, { id: '3' }]);
    expect(await rows("SELECT stage, code FROM failed_events WHERE source_id = 'crm'")).toEqual([
      { stage: 'source', code: 'TRIB_ERR_SOURCE_UNSTORABLE' },
    ]);
  });

  it('fails a row without a key or whose event is invalid, and appends the valid events', async () => {
    const c = scripted([
      () => [
        rec(1),
        { type: 'record', stream: 'people', data: { id: null, email: 'nokey@example.com' } },
        { type: 'record', stream: 'people', data: { id: 4, email: null } },
        { type: 'state', stream: 'people', state: 's' },
      ],
    ]);
    const { runner, rows, log } = await setup(c);
    const s = source({ events: { type: 'track', event: 'Person Seen', anonymousId: 'email' } });
    const r = await runner.sync(s, { trigger: 't' });
    expect(r).toMatchObject({ status: 'succeeded', objects: 2, events: 1, failed: 2 });
    expect(log.endOffset()).toBe(1);
    expect(await rows("SELECT code FROM failed_events WHERE source_id = 'crm' ORDER BY code")).toEqual([
      { code: 'TRIB_ERR_SOURCE_EVENT_INVALID' },
      { code: 'TRIB_ERR_SOURCE_MISSING_KEY' },
    ]);
  });

  it('runs one sync of a source at a time', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const c = scripted([]);
    c.read = async function* () {
      await gate;
      yield rec(1);
    };
    const { runner } = await setup(c);
    const first = runner.sync(source(), { trigger: 't' });
    await expect(runner.sync(source(), { trigger: 't' })).rejects.toMatchObject({
      code: 'TRIB_ERR_SOURCE_BUSY',
    });
    release();
    expect((await first).status).toBe('succeeded');
    expect((await runner.sync(source(), { trigger: 't' })).status).toBe('succeeded');
  });

  it('gives fields the store could not take as columns names of their own', async () => {
    const c = scripted([
      () => [
        {
          type: 'record',
          stream: 'people',
          data: {
            id: 1,
            email: 'a@x.com',
            Email: 'A@X.COM',
            _tributary_key: 'mine',
            '': 'blank',
            ['é'.repeat(40)]: 'long',
          },
        },
        { type: 'state', stream: 'people', state: 's' },
      ],
    ]);
    const { runner, rows } = await setup(c);
    const r = await runner.sync(source(), { trigger: 't' });
    expect(r, r.error).toMatchObject({ status: 'succeeded', objects: 1 });
    const [row] = await rows('SELECT * EXCLUDE (_tributary_synced_at, _tributary_run_id) FROM crm.people');
    expect(row).toEqual({
      _tributary_key: '[1]',
      _tributary_deleted: false,
      id: '1',
      email: 'a@x.com',
      Email_2: 'A@X.COM',
      source_tributary_key: 'mine',
      column: 'blank',
      ['é'.repeat(28)]: 'long',
    });
  });
});
