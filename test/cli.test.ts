import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { serverNodeOptions } from '../bench/lib/build.js';
import { MINIMAL_CONFIG } from './helpers.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
// One process (no tsx wrapper process), so killing the child kills the server.
const CLI = ['--import', import.meta.resolve('tsx'), join(ROOT, 'src/cli/index.ts')];
const run = promisify(execFile);
const children: ChildProcess[] = [];
const dirs: string[] = [];

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'trib-cli-'));
  dirs.push(d);
  return d;
}

async function freePort(): Promise<number> {
  return new Promise((res) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => res(port));
    });
  });
}

async function cli(args: string[], cwd: string, env: Record<string, string> = {}) {
  try {
    const r = await run(process.execPath, [...CLI, ...args], { cwd, env: { ...process.env, ...env } });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('tributary CLI', () => {
  it("npm start and bench:identity run Node with the options of the tributary command's #! line", () => {
    const options = serverNodeOptions(ROOT);
    expect(options).toContain('--max-semi-space-size=64');
    const { scripts } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
      scripts: Record<string, string>;
    };
    expect(scripts.start).toBe(`node ${options.join(' ')} dist/cli/index.js start`);
    expect(scripts['bench:identity']).toBe(`node ${options.join(' ')} --import tsx bench/identity.ts`);
  });

  it('config check reports a valid file, and every problem of an invalid one with its key path', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'ok.yaml'), MINIMAL_CONFIG);
    const ok = await cli(['config', 'check', '--config', 'ok.yaml'], dir);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toContain('valid');
    writeFileSync(
      join(dir, 'bad.yaml'),
      'version: 1\nsources:\n  - id: web\n    type: http\nserver:\n  port: "eighty"\n',
    );
    const bad = await cli(['config', 'check', '--config', 'bad.yaml'], dir);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('TRIB_ERR_CONFIG_INVALID');
    expect(bad.stderr).toContain('sources[0].writeKey');
    expect(bad.stderr).toContain('server.port');
  });

  it('start refuses a role or processes without the scale-out configuration, and a bad role, with their key', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'tributary.yaml'), MINIMAL_CONFIG);
    const worker = await cli(['start', '--role', 'worker', '--data-dir', 'data'], dir);
    expect(worker.code).not.toBe(0);
    expect(worker.stderr).toContain('TRIB_ERR_CONFIG_INVALID');
    expect(worker.stderr).toContain('--role and --processes need the scale-out configuration');
    const bad = await cli(['start', '--role', 'boss', '--data-dir', 'data'], dir);
    expect(bad.stderr).toContain('--role: expected ingest, worker or all, got "boss"');
    writeFileSync(
      join(dir, 'scale.yaml'),
      `${MINIMAL_CONFIG}log: {type: nats}\nstate: {type: postgres, connectionString: "postgres://127.0.0.1/x"}\n`,
    );
    const shared = await cli(['start', '-c', 'scale.yaml', '--role', 'worker', '--processes', '2'], dir);
    expect(shared.stderr).toContain('--processes: only ingest processes share a port');
    const zero = await cli(
      ['start', '-c', 'scale.yaml', '--role', 'ingest', '--processes', '2', '--port', '0'],
      dir,
    );
    expect(zero.stderr).toContain('--processes: the processes share one port; give a fixed one, not 0');
  });

  it('sources list prints the configured sources', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'tributary.yaml'), MINIMAL_CONFIG);
    const r = await cli(['sources', 'list', '--json'], dir);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual([
      { id: 'web', type: 'http', name: 'web', enabled: true, writeKey: 'wk_web_123' },
    ]);
  });

  it('start with no configuration creates a workspace, prints the key, URL and snippet; query reads it back; SIGTERM drains', async () => {
    const dir = tempDir();
    const port = await freePort();
    const child = spawn(process.execPath, [...CLI, 'start', '--port', String(port)], {
      cwd: dir,
      env: { ...process.env, TRIBUTARY_ADMIN_TOKEN: '', TRIBUTARY_LOG_LEVEL: 'warn' },
    });
    children.push(child);
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const deadline = Date.now() + 20_000;
    while (!out.includes('Then:') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(out).toContain(`Tributary is collecting at http://127.0.0.1:${port}`);
    const writeKey = /write key (wk_[0-9a-f]{24})/.exec(out)?.[1];
    expect(writeKey).toBeDefined();
    expect(out).toContain("import { Analytics } from '@segment/analytics-node'");
    expect(out).toContain(`new Analytics({ writeKey: '${writeKey}', host: 'http://127.0.0.1:${port}' })`);
    const token = /admin token\s+(tka_\S+)/.exec(out)?.[1];
    expect(token).toBeDefined();
    expect(readFileSync(join(dir, '.tributary/admin-token'), 'utf8').trim()).toBe(token);
    expect(readFileSync(join(dir, '.tributary/tributary.yaml'), 'utf8')).toContain(writeKey!);

    const res = await fetch(`http://127.0.0.1:${port}/v1/track`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${writeKey}:`).toString('base64')}` },
      body: JSON.stringify({ userId: 'cli-user', event: 'From CLI test', messageId: 'cli-1' }),
    });
    expect(res.status).toBe(200);

    // The query finds the server through the workspace config and the admin token through its file.
    let rows: { user_id: string; event: string }[] = [];
    for (let i = 0; i < 40 && rows.length === 0; i++) {
      const q = await cli(
        ['query', '--json', "SELECT user_id, event FROM events WHERE message_id = 'cli-1'"],
        dir,
        {
          TRIBUTARY_ADMIN_TOKEN: '',
        },
      );
      expect(q.code, q.stderr).toBe(0);
      rows = JSON.parse(q.stdout);
      if (rows.length === 0) await new Promise((r) => setTimeout(r, 50));
    }
    expect(rows).toEqual([{ user_id: 'cli-user', event: 'From CLI test' }]);

    const url = await cli(
      ['query', '--json', '--url', `http://127.0.0.1:${port}`, 'SELECT 1 AS one'],
      tempDir(),
      {
        TRIBUTARY_ADMIN_TOKEN: token!,
      },
    );
    expect(JSON.parse(url.stdout)).toEqual([{ one: 1 }]);
    const denied = await cli(
      ['query', '--json', '--url', `http://127.0.0.1:${port}`, 'SELECT 1'],
      tempDir(),
      {
        TRIBUTARY_ADMIN_TOKEN: 'wrong',
      },
    );
    expect(denied.code).toBe(1);
    expect(denied.stderr).toContain('TRIB_ERR_AUTH_ADMIN_TOKEN');

    const exit = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    child.kill('SIGTERM');
    expect(await exit).toBe(0);
  });
});
