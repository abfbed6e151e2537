/** Child processes for the benchmark: start, wait until ready, sample memory and CPU, stop. */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';

export interface Child {
  name: string;
  proc: ChildProcess;
  pid: number;
  logFile: string;
  /** Set once the process has exited. */
  exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
}

/** A free TCP port on 127.0.0.1 (the OS picks it; a tiny race before the child binds it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** Spawns `command args`, with stdout and stderr going to `logFile`. */
export function spawnChild(
  name: string,
  command: string,
  args: string[],
  opts: { env: NodeJS.ProcessEnv; cwd: string; logFile: string },
): Child {
  const fd = openSync(opts.logFile, 'a');
  const proc = spawn(command, args, { cwd: opts.cwd, env: opts.env, stdio: ['ignore', fd, fd] });
  closeSync(fd);
  if (proc.pid === undefined) throw new Error(`${name}: could not spawn ${command}`);
  const child: Child = { name, proc, pid: proc.pid, logFile: opts.logFile, exit: undefined };
  proc.on('exit', (code, signal) => {
    child.exit = { code, signal };
  });
  return child;
}

/** Polls `probe` until it resolves true; fails if the child exits or `timeoutMs` passes. */
export async function waitReady(
  child: Child,
  probe: () => Promise<boolean>,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exit) {
      throw new Error(
        `${child.name} exited during startup (${JSON.stringify(child.exit)}); see ${child.logFile}`,
      );
    }
    if (await probe().catch(() => false)) return;
    if (Date.now() > deadline)
      throw new Error(`${child.name} not ready after ${timeoutMs} ms; see ${child.logFile}`);
    await sleep(100);
  }
}

/** SIGTERM, then SIGKILL after `graceMs`. Resolves once the process is gone. */
export async function stopChild(child: Child, graceMs: number): Promise<{ graceful: boolean; ms: number }> {
  const started = Date.now();
  if (child.exit) return { graceful: true, ms: 0 };
  const exited = new Promise<void>((resolve) => child.proc.once('exit', () => resolve()));
  child.proc.kill('SIGTERM');
  const graceful = await Promise.race([exited.then(() => true), sleep(graceMs).then(() => false)]);
  if (!graceful && !child.exit) {
    child.proc.kill('SIGKILL');
    await Promise.race([exited, sleep(5000)]);
  }
  return { graceful, ms: Date.now() - started };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** VmRSS and VmHWM (peak RSS over the process's life) in bytes, from /proc/<pid>/status. */
export function memoryOf(pid: number): { rss: number; hwm: number } | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  const kb = (key: string) =>
    Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? Number.NaN) * 1024;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

let clockTicks: number | undefined;
function ticksPerSecond(): number {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/** User + system CPU seconds the process has used, from /proc/<pid>/stat. */
export function cpuSecondsOf(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may contain spaces) start at field 3.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond();
  } catch {
    return Number.NaN;
  }
}

/** Polls VmRSS every `intervalMs` and keeps the highest value seen. */
export class RssSampler {
  private peakRss = 0;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly pid: number,
    intervalMs = 200,
  ) {
    this.sample();
    this.timer = setInterval(() => this.sample(), intervalMs);
  }

  private sample(): void {
    const m = memoryOf(this.pid);
    if (m && m.rss > this.peakRss) this.peakRss = m.rss;
  }

  /** Highest RSS seen so far, bytes. */
  get peak(): number {
    this.sample();
    return this.peakRss;
  }

  /** Stops sampling; returns the peak RSS seen, bytes. */
  stop(): number {
    clearInterval(this.timer);
    this.sample();
    return this.peakRss;
  }
}

/** Busy and total CPU seconds of the whole machine (all cores), from /proc/stat. */
export function machineCpuSeconds(): { busy: number; total: number } {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
    const v = line.trim().split(/\s+/).slice(1, 9).map(Number);
    const total = v.reduce((a, b) => a + b, 0);
    const idle = (v[3] ?? 0) + (v[4] ?? 0);
    return { busy: (total - idle) / ticksPerSecond(), total: total / ticksPerSecond() };
  } catch {
    return { busy: Number.NaN, total: Number.NaN };
  }
}

/**
 * Runs this script again as `--child <args>` under tsx (its own process, so its peak RSS is its
 * own) and returns the JSON of the last line it prints.
 */
export function runChildScript<T>(scriptUrl: string, args: readonly string[]): T {
  const out = execFileSync(
    process.execPath,
    ['--import', 'tsx', fileURLToPath(scriptUrl), '--child', ...args],
    {
      encoding: 'utf8',
      maxBuffer: 1 << 20,
    },
  );
  return JSON.parse(out.trim().split('\n').at(-1)!) as T;
}
