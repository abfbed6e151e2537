import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { ADMIN_TOKEN, basicAuth, startTestServer, type TestServer, WRITE_KEY } from '../helpers.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const CLI = ['--import', import.meta.resolve('tsx'), join(ROOT, 'src/cli/index.ts')];
const run = promisify(execFile);

let server: TestServer;
let dir: string;

async function cli(...args: string[]) {
  return cliRaw(...args, '--url', server.url);
}

async function cliRaw(...args: string[]) {
  try {
    const r = await run(process.execPath, [...CLI, ...args], {
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
  dir = mkdtempSync(join(tmpdir(), 'trib-qcli-'));
  server = await startTestServer({
    yaml: `version: 1
sources:
  - id: web
    type: http
    writeKey: ${WRITE_KEY}
    plans:
      - name: web
        onViolation: block
        events:
          Signed Up:
            properties: { type: object, required: [plan], properties: { plan: { enum: [free, pro] } } }
`,
  });
  const batch = [
    ...Array.from({ length: 12 }, (_, i) => ({
      type: 'track',
      userId: `u${i}`,
      event: 'Signed Up',
      messageId: `s-${i}`,
      properties: { plan: i % 2 ? 'free' : 'pro' },
    })),
    { type: 'track', userId: 'u-bad', event: 'Signed Up', messageId: 's-bad', properties: { plan: 'gold' } },
  ];
  const res = await server.app.inject({
    method: 'POST',
    url: '/v1/batch',
    headers: { authorization: basicAuth(WRITE_KEY) },
    payload: { batch },
  });
  expect(res.statusCode).toBe(200);
  await server.settle();
});

afterAll(async () => {
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('quality CLI verbs', () => {
  it('stats prints the reconciled counts', async () => {
    const r = await cli('stats');
    expect(r.stderr).toBe('');
    expect(r.stdout).toContain('received 13 = accepted 13 + rejected 0');
    expect(r.stdout).toContain('accepted 13 = passed 12 + blocked 1 + failed 0 + pending 0');
  });

  it('failed list, show and retry', { timeout: 90_000 }, async () => {
    const list = await cli('failed', 'list', '--json');
    const rows = JSON.parse(list.stdout) as { id: string; message_id: string; code: string }[];
    expect(rows.map((r) => [r.message_id, r.code])).toEqual([['s-bad', 'TRIB_ERR_PLAN_VIOLATION']]);
    const show = await cli('failed', 'show', rows[0]!.id);
    expect(show.stdout).toContain('stage       plan');
    expect(show.stdout).toContain('"plan": "gold"');
    const missing = await cli('failed', 'show', 'nope');
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('TRIB_ERR_FAILED_NOT_FOUND');
    const retry = await cli('failed', 'retry', rows[0]!.id, '--wait');
    expect(retry.stdout).toMatch(/1 chosen: 0 recovered, 1 failed again, 0 skipped/);
    const none = await cli('failed', 'retry');
    expect(none.stderr).toContain('TRIB_ERR_FAILED_BAD_REQUEST');
  });

  it('plan infer drafts a plan from the archive; plan check reports what a plan would do', async () => {
    const infer = await cli('plan', 'infer', '--source', 'web', '--out', 'draft.yaml');
    expect(infer.stdout).toContain('wrote draft.yaml: 1 events from 14 archived events');
    // 14: the 13 sent and the retry of the one that failed, all in the raw archive.
    const draft = parse(readFileSync(join(dir, 'draft.yaml'), 'utf8'));
    expect(draft.events['Signed Up'].properties).toEqual({
      type: 'object',
      properties: { plan: { type: 'string', enum: ['free', 'gold', 'pro'] } },
      required: ['plan'],
    });

    const check = await cli('plan', 'check', 'draft.yaml', '--source', 'web', '--json');
    const report = JSON.parse(check.stdout);
    expect(report).toMatchObject({ plan: 'web-draft', valid: true, events: 14, unplanned: 0 });
    expect(report.clean + report.flagged + report.blocked).toBe(14);

    writeFileSync(join(dir, 'broken.yaml'), 'name: x\nevents:\n  A:\n    properties: { type: 12 }\n');
    const broken = await cli('plan', 'check', 'broken.yaml', '--offline');
    expect(broken.code).toBe(1);
    expect(broken.stderr).toContain('TRIB_ERR_PLAN_INVALID');

    // config check loads the plans a configuration references, as start would.
    writeFileSync(
      join(dir, 'with-plan.yaml'),
      `version: 1\nsources:\n  - id: web\n    type: http\n    writeKey: k\n    plans:\n      - file: broken.yaml\n`,
    );
    const configCheck = await cliRaw('config', 'check', '--config', 'with-plan.yaml');
    expect(configCheck.code).toBe(1);
    expect(configCheck.stderr).toContain('TRIB_ERR_PLAN_INVALID');
  });
});
