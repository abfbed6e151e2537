import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, sendBatch, startTestServer, type TestServer, WRITE_KEY } from '../helpers.js';

/** `tributary trace` and `tributary replay` as a user runs them, against a running embedded server. */

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const CLI = ['--import', import.meta.resolve('tsx'), join(ROOT, 'src/cli/index.ts')];
const run = promisify(execFile);

let server: TestServer;
let dir: string;
let from: string;
let to: string;

async function cli(...args: string[]) {
  try {
    const r = await run(process.execPath, [...CLI, ...args, '--url', server.url], {
      cwd: dir,
      env: { ...process.env, TRIBUTARY_ADMIN_TOKEN: ADMIN_TOKEN },
    });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'trib-lineage-cli-'));
  server = await startTestServer({
    yaml: `version: 1
sources:
  - id: web
    type: http
    writeKey: ${WRITE_KEY}
`,
  });
  from = new Date(Date.now() - 1000).toISOString();
  await sendBatch(server, [
    { type: 'track', messageId: 'cli-1', userId: 'u1', event: 'Order Completed', properties: { total: 5 } },
    { type: 'identify', messageId: 'cli-2', userId: 'u1', traits: { email: 'ada@example.com' } },
  ]);
  await server.settle();
  await Promise.all(server.destinations.map((d) => d.drained()));
  to = new Date(Date.now() + 1000).toISOString();
});

afterAll(async () => {
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('lineage CLI verbs', () => {
  it('trace prints the path, --json the report, and an unknown id fails with its code', {
    timeout: 60_000,
  }, async () => {
    const text = await cli('trace', 'cli-1');
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toContain('message cli-1');
    expect(text.stdout).toContain('→ loaded');
    expect(text.stdout).toContain('web.order_completed');
    const json = await cli('trace', 'cli-2', '--json');
    const report = JSON.parse(json.stdout) as { events: { warehouses: { rows: { table: string }[] }[] }[] };
    expect(report.events[0]!.warehouses[0]!.rows.map((r) => r.table).sort()).toEqual(['identifies', 'users']);
    const missing = await cli('trace', 'nope');
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('TRIB_ERR_TRACE_NOT_FOUND');
  });

  it('replay runs to the end and prints the counts; a dry run says what would be delivered', {
    timeout: 60_000,
  }, async () => {
    const dry = await cli('replay', '--source', 'web', '--from', from, '--to', to, '--dry-run');
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toContain('done');
    expect(dry.stdout).toContain('would deliver 2');
    const real = await cli(
      'replay',
      '--source',
      'web',
      '--from',
      from,
      '--to',
      to,
      '--destination',
      'warehouse',
      '--json',
    );
    expect(real.code, real.stderr).toBe(0);
    expect(JSON.parse(real.stdout)).toMatchObject({
      status: 'done',
      read: 2,
      passed: 2,
      delivered: 2,
      dryRun: false,
    });
    expect(await server.query('SELECT count(*) AS n FROM web.tracks')).toEqual([{ n: 1 }]);
  });
});
