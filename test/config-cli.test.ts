import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const CLI = ['--import', import.meta.resolve('tsx'), join(ROOT, 'src/cli/index.ts')];
const run = promisify(execFile);
const TOKEN = 'cli-config-token';
const FILE = `# in git
version: 1
server:
  port: 0
sources:
  - id: web
    type: http
    writeKey: wk_cli_file
`;

const children: ChildProcess[] = [];
const dirs: string[] = [];
afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function cli(args: string[], cwd: string) {
  try {
    const r = await run(process.execPath, [...CLI, ...args], {
      cwd,
      env: { ...process.env, TRIBUTARY_ADMIN_TOKEN: TOKEN, TRIBUTARY_URL: '' },
    });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe('tributary config versions|diff|revert|export', () => {
  it('lists, compares, reverts and exports the versions of a running server', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trib-confcli-'));
    dirs.push(dir);
    writeFileSync(join(dir, 'tributary.yaml'), FILE);
    const child = spawn(process.execPath, [...CLI, 'start', '--host', '127.0.0.1'], {
      cwd: dir,
      env: { ...process.env, TRIBUTARY_ADMIN_TOKEN: TOKEN, TRIBUTARY_LOG_LEVEL: 'warn' },
    });
    children.push(child);
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const deadline = Date.now() + 30_000;
    while (!out.includes('Then:') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const url = /collecting at (http:\/\/\S+)/.exec(out)?.[1];
    expect(url, out).toBeDefined();

    const patch = await fetch(`${url}/admin/v1/config/sources/web?message=new%20key`, {
      method: 'PATCH',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json', 'if-match': '"1"' },
      body: JSON.stringify({ writeKey: 'wk_cli_api' }),
    });
    expect(patch.status).toBe(200);

    const versions = await cli(['config', 'versions', '--json'], dir);
    expect(versions.code, versions.stderr).toBe(0);
    expect(
      (JSON.parse(versions.stdout) as { n: number; origin: string; message: string }[]).map((v) => [
        v.n,
        v.origin,
        v.message,
      ]),
    ).toEqual([
      [2, 'api', 'new key'],
      [1, 'file', `read from ${join(dir, 'tributary.yaml')}`],
    ]);

    const diff = await cli(['config', 'diff'], dir);
    expect(diff.code, diff.stderr).toBe(0);
    expect(diff.stdout).toContain('version 1 → 2: 1 change');
    expect(diff.stdout).toContain('changed  sources web (writeKey)');
    expect(diff.stdout).toContain('-    writeKey: wk_cli_file');
    expect(diff.stdout).toContain('+    writeKey: wk_cli_api');

    const exported = join(dir, 'exported.yaml');
    const exp = await cli(['config', 'export', '-o', exported], dir);
    expect(exp.code, exp.stderr).toBe(0);
    expect(readFileSync(exported, 'utf8')).toBe(FILE.replace('wk_cli_file', 'wk_cli_api'));

    const revert = await cli(['config', 'revert', '1', '-m', 'back to the file'], dir);
    expect(revert.code, revert.stderr).toBe(0);
    expect(revert.stdout).toContain('version 3 (back to the file) is running: changed sources web');
    const track = await fetch(`${url}/v1/track`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from('wk_cli_file:').toString('base64')}` },
      body: JSON.stringify({ userId: 'u', event: 'E', messageId: 'c1' }),
    });
    expect(track.status).toBe(200);

    const exit = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    child.kill('SIGTERM');
    expect(await exit).toBe(0);
    // Each CLI call starts Node with tsx (several seconds on a busy machine).
  }, 180_000);
});
