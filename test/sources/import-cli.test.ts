import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, startTestServer } from '../helpers.js';

/**
 * `tributary import` and `tributary sources check|discover|sync` as a user runs them: the
 * real CLI in a child process, on a workspace without a server (the files are opened by the
 * command) and with a server running (the file is uploaded to it).
 */

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const CLI = ['--import', import.meta.resolve('tsx'), join(ROOT, 'src/cli/index.ts')];
const run = promisify(execFile);
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function cli(args: string[], env: Record<string, string> = {}) {
  try {
    const r = await run(process.execPath, [...CLI, ...args], {
      cwd: ROOT,
      env: { ...process.env, TRIBUTARY_URL: '', ...env },
    });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

function workspace() {
  const dir = mkdtempSync(join(tmpdir(), 'trib-import-'));
  dirs.push(dir);
  const config = join(dir, 'tributary.yaml');
  const yaml = `version: 1
sources:
  - id: web
    type: http
    writeKey: wk_web_123
  - id: helpdesk
    type: file
    streams:
      - name: tickets
        path: ${join(dir, 'exports', '*.tsv')}
        primaryKey: [id]
        columns: { id: integer, opened_at: timestamp }
        identifiers: { email: email }
      - name: notes
        primaryKey: [id]
`;
  writeFileSync(config, yaml);
  return { dir, config, yaml, dataDir: join(dir, 'data') };
}

const TICKETS =
  'id\temail\topened_at\n1\tada@example.com\t2026-01-02T10:00:00Z\n2\tbob@example.com\tlater\n3\tcy@example.com\t2026-01-03T10:00:00Z\n';

describe('tributary import', () => {
  it('imports a file into a stream without a server, stores nothing twice on a re-import, and keeps import csv working', async () => {
    const ws = workspace();
    const file = join(ws.dir, 'tickets.tsv.gz');
    writeFileSync(file, gzipSync(Buffer.from(TICKETS)));
    const base = [
      '--source',
      'helpdesk',
      '--stream',
      'tickets',
      '--config',
      ws.config,
      '--data-dir',
      ws.dataDir,
      '--json',
    ];
    const first = await cli(['import', file, ...base]);
    expect(first.code, first.stderr).toBe(0);
    expect(JSON.parse(first.stdout)).toMatchObject({
      status: 'succeeded',
      rows: 3,
      objects: 2,
      events: 2,
      failed: 1,
    });
    const again = await cli(['import', file, ...base]);
    expect(JSON.parse(again.stdout)).toMatchObject({ status: 'succeeded', rows: 0, objects: 0 });

    const contacts = join(ws.dir, 'contacts.csv');
    writeFileSync(contacts, 'Id,Email\nc1,ada@example.com\nc2,\n');
    const legacy = await cli([
      'import',
      'csv',
      contacts,
      '--source',
      'web',
      '--id-column',
      'Id',
      '--map',
      'email=Email',
      '--config',
      ws.config,
      '--data-dir',
      ws.dataDir,
      '--json',
    ]);
    expect(legacy.code, legacy.stderr).toBe(0);
    expect(JSON.parse(legacy.stdout)).toMatchObject({ status: 'succeeded', rows: 2, events: 2 });

    const wrong = await cli([
      'import',
      file,
      '--source',
      'helpdesk',
      '--config',
      ws.config,
      '--data-dir',
      ws.dataDir,
    ]);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain('TRIB_ERR_SOURCE_UNKNOWN_STREAM');

    // The server loads what the imports appended to the log.
    const server = await startTestServer({ yaml: ws.yaml, dataDir: ws.dataDir });
    try {
      await server.settle();
      expect(await server.query('SELECT id, email FROM helpdesk.tickets ORDER BY id')).toEqual([
        { id: 1, email: 'ada@example.com' },
        { id: 3, email: 'cy@example.com' },
      ]);
      expect(
        await server.query(
          "SELECT source_id, anonymous_id FROM events WHERE type = 'identify' ORDER BY anonymous_id",
        ),
      ).toEqual([
        { source_id: 'helpdesk', anonymous_id: 'helpdesk:tickets:[1]' },
        { source_id: 'helpdesk', anonymous_id: 'helpdesk:tickets:[3]' },
        { source_id: 'web', anonymous_id: 'web:c1' },
        { source_id: 'web', anonymous_id: 'web:c2' },
      ]);
      const [failed] = await server.query("SELECT code, reason FROM failed_events WHERE stage = 'source'");
      expect(failed).toMatchObject({
        code: 'TRIB_ERR_SOURCE_BAD_VALUE',
        reason: expect.stringContaining('tickets.tsv.gz:3'),
      });
    } finally {
      await server.stop();
    }
  }, 60_000);

  it('uploads the file to a running server, whose runs report the import', async () => {
    const ws = workspace();
    const server = await startTestServer({ yaml: ws.yaml, dataDir: ws.dataDir });
    try {
      const file = join(ws.dir, 'notes.jsonl');
      writeFileSync(file, '{"id": 1, "text": "hello"}\n{"id": 2, "text": "again"}\n{broken\n');
      const env = { TRIBUTARY_ADMIN_TOKEN: ADMIN_TOKEN };
      const r = await cli(
        [
          'import',
          file,
          '--source',
          'helpdesk',
          '--stream',
          'notes',
          '--url',
          server.url,
          '--config',
          ws.config,
          '--json',
        ],
        env,
      );
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)).toMatchObject({ status: 'succeeded', rows: 3, objects: 2, failed: 1 });
      expect(await server.query('SELECT id, text FROM helpdesk.notes ORDER BY id')).toEqual([
        { id: 1, text: 'hello' },
        { id: 2, text: 'again' },
      ]);
      const runs = await server.app.inject({
        url: '/admin/v1/sources/helpdesk/runs',
        headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
      });
      expect(runs.json()).toMatchObject({
        runs: [{ trigger: 'upload', status: 'succeeded', rows: 3, objects: 2, failed: 1 }],
        live: null,
      });
      const noToken = await server.app.inject({ url: '/admin/v1/sources/helpdesk/runs' });
      expect(noToken.json()).toMatchObject({ code: 'TRIB_ERR_AUTH_ADMIN_TOKEN' });

      // check, discover and sync through the server.
      const check = await cli(
        ['sources', 'check', 'helpdesk', '--url', server.url, '--config', ws.config, '--json'],
        env,
      );
      expect(JSON.parse(check.stdout)).toMatchObject({ ok: false, code: 'TRIB_ERR_SOURCE_PATH_NOT_FOUND' });
      expect(check.code).toBe(1);
      mkdirSync(join(ws.dir, 'exports'));
      writeFileSync(join(ws.dir, 'exports', 'a.tsv'), TICKETS);
      const ok = await cli(['sources', 'check', 'helpdesk', '--url', server.url, '--config', ws.config], env);
      expect(ok.stdout).toContain('source helpdesk: ok');
      const discover = await cli(
        ['sources', 'discover', 'helpdesk', '--url', server.url, '--config', ws.config, '--json'],
        env,
      );
      expect(JSON.parse(discover.stdout).streams[0]).toMatchObject({
        name: 'tickets',
        primaryKey: ['id'],
        columns: [
          { name: 'id', jsonType: 'integer' },
          { name: 'email', jsonType: 'string' },
          { name: 'opened_at', jsonType: 'timestamp' },
        ],
      });
      const sync = await cli(
        [
          'sources',
          'sync',
          'helpdesk',
          '--stream',
          'tickets',
          '--url',
          server.url,
          '--config',
          ws.config,
          '--json',
        ],
        env,
      );
      expect(JSON.parse(sync.stdout)).toMatchObject({ status: 'succeeded', rows: 3, objects: 2, failed: 1 });
      const notPull = await cli(['sources', 'sync', 'web', '--url', server.url, '--config', ws.config], env);
      expect(notPull.stderr).toContain('TRIB_ERR_SOURCE_NOT_PULL');
    } finally {
      await server.stop();
    }
  }, 60_000);
});
