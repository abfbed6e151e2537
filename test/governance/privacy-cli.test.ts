import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, sendBatch, startTestServer, type TestServer } from '../helpers.js';

/** `tributary privacy delete` and `status` against a running server, as an operator runs them. */

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const CLI = ['--import', import.meta.resolve('tsx'), join(ROOT, 'src/cli/index.ts')];
const run = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'trib-privacy-cli-'));
let server: TestServer | undefined;

afterAll(async () => {
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

async function cli(args: string[]) {
  try {
    const r = await run(process.execPath, [...CLI, ...args, '--url', server!.url], {
      cwd: dir,
      env: { ...process.env, TRIBUTARY_ADMIN_TOKEN: ADMIN_TOKEN },
    });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe('tributary privacy', () => {
  it('requests a deletion, shows its status per store until done, and refuses a malformed identity', async () => {
    server = await startTestServer();
    await sendBatch(server, [
      { type: 'identify', messageId: 'c1', userId: 'cli-victim-1', traits: { email: 'cli.v@x.io' } },
    ]);
    await server.settle();
    writeFileSync(join(dir, 'ids.txt'), 'email:cli.v@x.io\n\n');
    const made = await cli([
      'privacy',
      'delete',
      'user_id:cli-victim-1',
      '--file',
      join(dir, 'ids.txt'),
      '--json',
    ]);
    expect(made.code, made.stderr).toBe(0);
    const reg = JSON.parse(made.stdout) as { id: string; identities: unknown[] };
    expect(reg.identities).toEqual([
      { type: 'user_id', value: 'cli-victim-1' },
      { type: 'email', value: 'cli.v@x.io' },
    ]);
    let status = '';
    for (let i = 0; i < 200 && !status.includes(': done'); i++) {
      const s = await cli(['privacy', 'status', reg.id]);
      expect(s.code, s.stderr).toBe(0);
      status = s.stdout;
      if (!status.includes(': done')) await new Promise((r) => setTimeout(r, 200));
    }
    expect(status).toContain(`deletion ${reg.id}: done`);
    expect(status).toMatch(/events\s+done/);
    expect(status).toMatch(/destination:warehouse\s+done/);
    const list = await cli(['privacy', 'status']);
    expect(list.stdout).toContain(reg.id);
    const bad = await cli(['privacy', 'delete', 'nocolon']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('TRIB_ERR_PRIVACY_BAD_REQUEST');
    const missing = await cli(['privacy', 'status', 'no-such-id']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('TRIB_ERR_PRIVACY_NOT_FOUND');
    expect(await server.query("SELECT count(*) AS n FROM events WHERE user_id = 'cli-victim-1'")).toEqual([
      { n: 0 },
    ]);
  }, 120_000);
});
