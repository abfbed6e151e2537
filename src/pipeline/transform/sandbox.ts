import { Worker } from 'node:worker_threads';
import { Turns } from '../../turns.js';
import { SANDBOX_WORKER_CODE } from './sandbox-worker.js';

export interface SandboxOptions {
  /** CommonJS JavaScript whose `module.exports` (or its `default`) is the function. */
  code: string;
  filename: string;
  /** Longest one event may take, ms. */
  timeoutMs: number;
  /** Heap limit of the worker, MB. */
  memoryMb: number;
  /** Environment variables granted to the function, readable as `env.NAME`. */
  env: Record<string, string>;
  /**
   * Host names the function may reach with `fetch` (it may then be async). Without it the
   * function has no network and must be synchronous.
   */
  network?: string[];
}

/** What became of one input event. */
export type SandboxResult =
  | { ok: true; events: unknown[]; logs: string[] }
  | { ok: false; code: string; message: string; logs: string[] };

interface WorkerResult {
  i: number;
  events?: unknown[];
  code?: string;
  error?: string;
  logs: string[];
}

type Message =
  | { type: 'ready' }
  | { type: 'init-error'; message: string }
  | { type: 'done'; id: number; results: WorkerResult[] }
  | { type: 'crash'; id: number; message: string };

class WorkerDied extends Error {
  constructor(
    message: string,
    readonly outOfMemory: boolean,
    readonly hung = false,
  ) {
    super(message);
  }
}

/**
 * Runs a user function over events in a worker thread with a heap limit, inside a `vm`
 * context with a per-event time limit. A throw or a timeout fails that event only. A
 * function that exhausts the heap kills the worker: the batch is run again one event at
 * a time in fresh workers, so only the event that blows up fails (its log lines die with
 * the worker). Batches run one at a time, in order.
 */
export class Sandbox {
  private worker: Worker | undefined;
  private pending = new Map<number, { resolve: (r: WorkerResult[]) => void; reject: (e: Error) => void }>();
  private nextId = 0;
  private readonly turns = new Turns();
  private closed = false;

  constructor(private readonly opts: SandboxOptions) {}

  /** Starts the worker and loads the function; rejects when the code does not load or exports no function. */
  async start(): Promise<void> {
    await this.spawn();
  }

  run(events: readonly unknown[]): Promise<SandboxResult[]> {
    return this.turns.run(() => this.runNow(events));
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.turns.idle();
    await this.worker?.terminate();
    this.worker = undefined;
  }

  private async runNow(events: readonly unknown[]): Promise<SandboxResult[]> {
    if (events.length === 0) return [];
    try {
      return toResults(
        await this.send(JSON.stringify(events), events.length),
        events.length,
        this.opts.filename,
      );
    } catch (err) {
      if (!(err instanceof WorkerDied)) throw err;
      if (events.length === 1) {
        return [
          {
            ok: false,
            code: err.outOfMemory
              ? 'TRIB_ERR_TRANSFORM_MEMORY'
              : err.hung
                ? 'TRIB_ERR_TRANSFORM_TIMEOUT'
                : 'TRIB_ERR_TRANSFORM_CRASHED',
            message: err.outOfMemory
              ? `the function used more than its ${this.opts.memoryMb} MB heap`
              : err.hung
                ? `the function never yielded (${err.message}); its worker was stopped`
                : `the sandbox died: ${err.message}`,
            logs: [],
          },
        ];
      }
      const out: SandboxResult[] = [];
      for (const e of events) out.push(...(await this.runNow([e])));
      return out;
    }
  }

  private async send(input: string, n: number): Promise<WorkerResult[]> {
    if (!this.worker) await this.spawn();
    const worker = this.worker!;
    const id = this.nextId++;
    // A function that never yields (an endless chain of awaits keeps the worker's own timers
    // from firing) is stopped from here: the worker is ended and the batch run again alone.
    const watchdogMs = 2 * n * this.opts.timeoutMs + 1000;
    return new Promise<WorkerResult[]>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        if (this.worker === worker) this.worker = undefined;
        void worker.terminate();
        reject(new WorkerDied(`no answer within ${watchdogMs} ms`, false, true));
      }, watchdogMs);
      this.pending.set(id, {
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      worker.postMessage({ id, input, n });
    });
  }

  private spawn(): Promise<void> {
    if (this.closed) return Promise.reject(new Error('sandbox closed'));
    const { code, filename, timeoutMs, env, memoryMb, network } = this.opts;
    const worker = new Worker(SANDBOX_WORKER_CODE, {
      eval: true,
      workerData: { code, filename, timeoutMs, env, network },
      env: {},
      resourceLimits: {
        maxOldGenerationSizeMb: memoryMb,
        maxYoungGenerationSizeMb: Math.max(1, Math.min(16, Math.floor(memoryMb / 4))),
        stackSizeMb: 4,
      },
      stdout: true,
      stderr: true,
    });
    this.worker = worker;
    return new Promise<void>((resolve, reject) => {
      let ready = false;
      worker.on('message', (m: Message) => {
        if (m.type === 'ready') {
          ready = true;
          resolve();
        } else if (m.type === 'init-error') {
          reject(new Error(m.message));
          void worker.terminate();
        } else {
          const p = this.pending.get(m.id);
          this.pending.delete(m.id);
          if (m.type === 'done') p?.resolve(m.results);
          else p?.reject(new WorkerDied(m.message, false));
        }
      });
      const died = (err: Error & { code?: string }) => {
        if (this.worker === worker) this.worker = undefined;
        if (!ready) reject(err);
        const dead = new WorkerDied(err.message, err.code === 'ERR_WORKER_OUT_OF_MEMORY');
        for (const p of this.pending.values()) p.reject(dead);
        this.pending.clear();
      };
      worker.on('error', died);
      worker.on('exit', (codeNo) => died(new Error(`worker exited with code ${codeNo}`)));
    });
  }
}

/** An error's message and the stack frames in the user's file, not the sandbox's own. */
function userFrames(stack: string, filename: string): string {
  return stack
    .split('\n')
    .filter((line, i) => i === 0 || line.includes(filename))
    .join('\n');
}

function toResults(raw: WorkerResult[], n: number, filename: string): SandboxResult[] {
  const out: SandboxResult[] = new Array(n);
  for (const r of raw) {
    out[r.i] =
      r.code === undefined
        ? { ok: true, events: r.events ?? [], logs: r.logs }
        : { ok: false, code: r.code, message: userFrames(r.error ?? '', filename), logs: r.logs };
  }
  for (let i = 0; i < n; i++) {
    out[i] ??= {
      ok: false,
      code: 'TRIB_ERR_TRANSFORM_CRASHED',
      message: 'no result from the sandbox',
      logs: [],
    };
  }
  return out;
}
