import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';

/**
 * Issue 19 from the command line: `start` makes the first owner and prints its password once;
 * `users`, `tokens` and `audit` go through the admin API, as the admin token or an API token.
 */

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CLI = ['--import', import.meta.resolve('tsx'), join(ROOT, 'src/cli/index.ts')];
const children: ChildProcess[] = [];
const dir = mkdtempSync(join(tmpdir(), 'trib-gov-cli-'));

afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

async function freePort(): Promise<number> {
  return new Promise((res) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => res(port));
    });
  });
}

async function cli(args: string[], env: Record<string, string> = {}) {
  try {
    const r = await promisify(execFile)(process.execPath, [...CLI, ...args], {
      cwd: dir,
      env: { ...process.env, TRIBUTARY_ADMIN_TOKEN: '', TRIBUTARY_TOKEN: '', ...env },
    });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

/** `tributary start` in the test's folder; resolves with its banner once it serves, and a stop. */
async function start(port: number): Promise<{ out: string; stop: () => Promise<void> }> {
  const child = spawn(process.execPath, [...CLI, 'start', '--port', String(port)], {
    cwd: dir,
    env: { ...process.env, TRIBUTARY_ADMIN_TOKEN: '', TRIBUTARY_LOG_LEVEL: 'warn' },
  });
  children.push(child);
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const deadline = Date.now() + 30_000;
  while (!out.includes('Then:') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  expect(out).toContain('Then:');
  const exit = new Promise<void>((r) => child.on('exit', () => r()));
  return {
    out,
    stop: async () => {
      child.kill('SIGTERM');
      await exit;
    },
  };
}

describe('tributary users, tokens and audit', () => {
  it('start prints the first owner once; users, tokens and audit work through the admin API', async () => {
    const port = await freePort();
    const first = await start(port);
    const owner = /first owner\s+user "owner", password (\S+)/.exec(first.out);
    expect(owner, first.out).not.toBeNull();
    const url = `http://127.0.0.1:${port}`;
    const login = await fetch(`${url}/admin/v1/session`, {
      method: 'POST',
      body: JSON.stringify({ user: 'owner', password: owner![1] }),
    });
    expect(login.status).toBe(200);

    // As the admin token (the workspace's file): add a user limited to a label, and a token of hers.
    const added = await cli([
      'users',
      'add',
      'ana',
      '--role',
      'analyst',
      '--sources',
      'web,label:eu',
      '--json',
    ]);
    expect(added.code, added.stderr).toBe(0);
    const made = JSON.parse(added.stdout);
    expect(made.user).toMatchObject({ name: 'ana', role: 'analyst', sources: ['web', 'label:eu'] });
    expect(made.password).toMatch(/^[\w-]{20,}$/);
    const created = await cli(['tokens', 'create', 'notebook', '--user', 'ana', '--json']);
    expect(created.code, created.stderr).toBe(0);
    const token = JSON.parse(created.stdout) as { token: string; id: string };
    expect(token.token).toMatch(/^trb_/);

    // Her token may not manage users; the refusal is in the trail the audit verb reads.
    const denied = await fetch(`${url}/admin/v1/users`, {
      headers: { authorization: `Bearer ${token.token}` },
    });
    expect(denied.status).toBe(403);
    const audit = await cli(['audit', '--action', 'users.', '--since', '1h', '--json']);
    expect(audit.code, audit.stderr).toBe(0);
    const entries = JSON.parse(audit.stdout) as { action: string; actorName: string; outcome: string }[];
    expect(entries.map((e) => `${e.action} ${e.actorName} ${e.outcome}`)).toEqual([
      'users.list notebook denied',
      'users.add admin-token ok',
    ]);
    await first.stop();
  }, 90_000);
});
