import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * `tributary start` as a child process, for the crash tests: one Node process (tsx as a
 * loader, so no build and no wrapper process), so SIGKILL kills the server itself.
 */

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CLI = join(ROOT, 'src', 'cli', 'index.ts');

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export interface Child {
  proc: ChildProcess;
  url: string;
  output: () => string;
  exited: Promise<void>;
}

/** What /healthz answers (the parts the crash tests read). */
export interface Health {
  status: string;
  log: { endOffset: number };
  loader: { position: number };
  destinations: Record<string, { position: number }>;
}

/** Starts servers on one configuration and data folder, and kills what is left at the end. */
export class CliChildren {
  private readonly children = new Set<ChildProcess>();

  constructor(private readonly opts: { configPath: string; dataDir: string; adminToken: string }) {}

  /**
   * Starts `tributary start --port 0` (or with `args` instead of `--port 0 --host 127.0.0.1`)
   * and waits until it prints its URL (`ready`) and serves /healthz.
   */
  async start(timeoutMs = 30_000, options: { args?: string[]; ready?: RegExp } = {}): Promise<Child> {
    const { configPath, dataDir, adminToken } = this.opts;
    const proc = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        CLI,
        'start',
        '--config',
        configPath,
        ...(options.args ?? ['--port', '0', '--host', '127.0.0.1']),
        '--data-dir',
        dataDir,
      ],
      {
        cwd: ROOT,
        env: {
          ...process.env,
          TRIBUTARY_ADMIN_TOKEN: adminToken,
          // TRIB_TEST_LOG_LEVEL=info shows the children's info logs when a test fails.
          TRIBUTARY_LOG_LEVEL: process.env.TRIB_TEST_LOG_LEVEL ?? 'warn',
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    this.children.add(proc);
    let out = '';
    proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<void>((r) => proc.once('exit', () => r()));
    const output = () => out;
    const ready = options.ready ?? /collecting at (http:\/\/\S+)/;

    // The server prints its URL once it listens (--port 0 picks a free one).
    const deadline = Date.now() + timeoutMs;
    let url: string | undefined;
    while (!url) {
      if (proc.exitCode !== null || proc.signalCode !== null)
        throw new Error(`server exited (${proc.exitCode ?? proc.signalCode}):\n${out}`);
      if (Date.now() > deadline) throw new Error(`server did not start in ${timeoutMs / 1000} s:\n${out}`);
      url = ready.exec(out)?.[1];
      if (!url) await sleep(25);
    }
    await health({ url, output }, deadline);
    return { proc, url, output, exited };
  }

  /** Kills every child still running. */
  async killAll(): Promise<void> {
    for (const proc of this.children) {
      if (proc.exitCode === null && proc.signalCode === null) {
        const gone = new Promise((r) => proc.once('exit', r));
        proc.kill('SIGKILL');
        await Promise.race([gone, sleep(5000)]);
      }
    }
  }
}

/** /healthz of the child, polled until it answers or the deadline passes. */
export async function health(
  child: Pick<Child, 'url' | 'output'>,
  deadline = Date.now() + 10_000,
): Promise<Health> {
  for (;;) {
    try {
      const res = await fetch(`${child.url}/healthz`);
      if (res.status === 200) return (await res.json()) as Health;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`/healthz did not answer:\n${child.output()}`);
    await sleep(25);
  }
}

/** SIGKILL, and waits for the process to be gone. */
export async function kill9(child: Child): Promise<void> {
  child.proc.kill('SIGKILL');
  await Promise.race([
    child.exited,
    sleep(5000).then(() => {
      throw new Error('child did not die after SIGKILL');
    }),
  ]);
  if (child.proc.signalCode !== 'SIGKILL')
    throw new Error(`child ended by ${child.proc.signalCode ?? child.proc.exitCode}`);
}
