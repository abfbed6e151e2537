import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import type { ErrorCode } from '../../errors.js';
import { Turns } from '../../platform/async/turns.js';
import { SANDBOX_WORKER_CODE } from './sandbox-worker.js';

const require = createRequire(import.meta.url);
const ENGINE = {
  corePath: require.resolve('quickjs-emscripten-core'),
  variantPath: require.resolve('@jitl/quickjs-wasmfile-release-sync'),
  wasmPath: require.resolve('@jitl/quickjs-wasmfile-release-sync/wasm'),
};

/** The engine's memory cannot start below its initial 16 MB and needs room above it. */
const MIN_MEMORY_MB = 24;
/** The most the engine's module declares it can address. */
const MAX_MEMORY_MB = 2048;

/** Time a new worker may take to start, besides the function's own top level. */
const LOAD_GRACE_MS = 30_000;

export interface SandboxOptions {
  /** CommonJS JavaScript whose `module.exports` (or its `default`) is the function. */
  code: string;
  filename: string;
  /** Longest one event may take, ms. */
  timeoutMs: number;
  /**
   * All the memory of the function's engine, MB: objects, strings, ArrayBuffers and its
   * stack (held between 24 and 2048).
   */
  memoryMb: number;
  /** Environment variables granted to the function, readable as `env.NAME`. */
  env: Record<string, string>;
  /**
   * Host names the function may reach with `fetch` (it may then be async). Without it the
   * function has no network and must be synchronous.
   */
  network?: string[];
  /**
   * How long past `timeoutMs` the worker may take to start its next event before the
   * watchdog replaces it, ms. Default 5000.
   */
  hangGraceMs?: number;
}

/** What became of one input event. */
export type SandboxResult =
  | { ok: true; events: unknown[]; logs: string[] }
  | { ok: false; code: string; message: string; logs: string[] };

/** One event's answer from the worker: the text made inside the engine, or the worker's own verdict. */
interface WorkerResult {
  i: number;
  out?: string;
  code?: string;
  error?: string;
  logs?: string[];
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
    /** The event the worker was running when the watchdog stopped it. */
    readonly hungAt?: number,
  ) {
    super(message);
  }
}

/** Codes the engine's side may give an event; anything else is not believed. */
const ENGINE_CODES: ReadonlySet<string> = new Set<ErrorCode>([
  'TRIB_ERR_TRANSFORM_THREW',
  'TRIB_ERR_TRANSFORM_TIMEOUT',
  'TRIB_ERR_TRANSFORM_MEMORY',
  'TRIB_ERR_TRANSFORM_ASYNC',
  'TRIB_ERR_TRANSFORM_BAD_OUTPUT',
  'TRIB_ERR_TRANSFORM_CRASHED',
]);

interface Live {
  worker: Worker;
  /** [0]: index of the event in flight, -1 when idle; [1]: events started. */
  progress: Int32Array;
}

/**
 * Runs a user function over events in QuickJS compiled to WebAssembly, in a worker thread
 * (see sandbox-worker.ts): the function's memory, all of it, is capped by its WebAssembly
 * memory, each event has a time limit, and nothing but JSON text made inside the engine
 * comes out. A throw, a timeout or a memory failure fails that event only. A watchdog here
 * replaces a worker that takes longer than `timeoutMs + hangGraceMs` over one event: that
 * event fails with `TRIB_ERR_TRANSFORM_UNRESPONSIVE`, the others of the batch run again in
 * the new worker. Batches run one at a time, in order.
 */
export class Sandbox {
  private live: Live | undefined;
  private pending = new Map<number, { resolve: (r: WorkerResult[]) => void; reject: (e: Error) => void }>();
  private nextId = 0;
  private readonly turns = new Turns();
  private closed = false;
  private readonly memoryMb: number;
  private readonly graceMs: number;

  constructor(private readonly opts: SandboxOptions) {
    this.memoryMb = Math.min(MAX_MEMORY_MB, Math.max(MIN_MEMORY_MB, opts.memoryMb));
    this.graceMs = opts.hangGraceMs ?? 5000;
  }

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
    await this.live?.worker.terminate();
    this.live = undefined;
  }

  private async runNow(events: readonly unknown[]): Promise<SandboxResult[]> {
    if (events.length === 0) return [];
    try {
      return toResults(
        await this.send(events.map((e) => JSON.stringify(e))),
        events.length,
        this.opts.filename,
      );
    } catch (err) {
      if (!(err instanceof WorkerDied)) throw err;
      if (err.hungAt !== undefined && err.hungAt >= 0 && err.hungAt < events.length) {
        const k = err.hungAt;
        return [
          ...(await this.runNow(events.slice(0, k))),
          {
            ok: false,
            code: 'TRIB_ERR_TRANSFORM_UNRESPONSIVE',
            message: `the sandbox stopped answering (${err.message}); its worker was replaced`,
            logs: [],
          },
          ...(await this.runNow(events.slice(k + 1))),
        ];
      }
      if (events.length === 1) {
        return [
          {
            ok: false,
            code: err.outOfMemory ? 'TRIB_ERR_TRANSFORM_MEMORY' : 'TRIB_ERR_TRANSFORM_CRASHED',
            message: err.outOfMemory
              ? `the sandbox's worker ran out of memory: ${err.message}`
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

  private async send(inputs: string[]): Promise<WorkerResult[]> {
    if (!this.live) await this.spawn();
    const live = this.live!;
    const id = this.nextId++;
    // Each event must start within the time limit and the grace of the one before; the
    // worker counts the events it starts, so a batch of any size is watched event by event.
    const everyMs = this.opts.timeoutMs + this.graceMs;
    return new Promise<WorkerResult[]>((resolve, reject) => {
      let seen = Atomics.load(live.progress, 1);
      const timer = setInterval(() => {
        const started = Atomics.load(live.progress, 1);
        const at = Atomics.load(live.progress, 0);
        if (started !== seen || at < 0) {
          seen = started;
          return;
        }
        clearInterval(timer);
        this.pending.delete(id);
        this.drop(live);
        reject(new WorkerDied(`no answer within ${everyMs} ms`, false, at));
      }, everyMs);
      this.pending.set(id, {
        resolve: (r) => {
          clearInterval(timer);
          resolve(r);
        },
        reject: (e) => {
          clearInterval(timer);
          reject(e);
        },
      });
      live.worker.postMessage({ id, inputs });
    });
  }

  private drop(live: Live): void {
    if (this.live === live) this.live = undefined;
    void live.worker.terminate();
  }

  private spawn(): Promise<void> {
    if (this.closed) return Promise.reject(new Error('sandbox closed'));
    const { code, filename, timeoutMs, env, network } = this.opts;
    const progress = new SharedArrayBuffer(8);
    const worker = new Worker(SANDBOX_WORKER_CODE, {
      eval: true,
      workerData: {
        code,
        filename,
        timeoutMs,
        env,
        network,
        memoryBytes: this.memoryMb * 1024 * 1024,
        progress,
        ...ENGINE,
      },
      env: {},
      // The function's memory is the engine's WebAssembly memory, outside this heap; the
      // heap holds a batch's input and output text.
      resourceLimits: { maxOldGenerationSizeMb: 256, maxYoungGenerationSizeMb: 16, stackSizeMb: 4 },
      stdout: true,
      stderr: true,
    });
    const live: Live = { worker, progress: new Int32Array(progress) };
    Atomics.store(live.progress, 0, -1);
    this.live = live;
    return new Promise<void>((resolve, reject) => {
      let ready = false;
      // Loading runs the file's top level, which may hang as an event can; starting a
      // thread and the engine takes its own time on a busy machine.
      const loadMs = timeoutMs + this.graceMs + LOAD_GRACE_MS;
      const loading = setTimeout(() => {
        reject(new Error(`the function did not load within ${loadMs} ms`));
        this.drop(live);
      }, loadMs);
      worker.on('message', (m: Message) => {
        if (m.type === 'ready') {
          ready = true;
          clearTimeout(loading);
          resolve();
        } else if (m.type === 'init-error') {
          clearTimeout(loading);
          reject(new Error(m.message));
          this.drop(live);
        } else {
          const p = this.pending.get(m.id);
          this.pending.delete(m.id);
          if (m.type === 'done') p?.resolve(m.results);
          else p?.reject(new WorkerDied(m.message, false));
        }
      });
      const died = (err: Error & { code?: string }) => {
        clearTimeout(loading);
        if (this.live !== live) return;
        this.live = undefined;
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

/** An error's message and the first 20 stack frames in the user's file, not the sandbox's own. */
function userFrames(stack: string, filename: string): string {
  return stack
    .split('\n')
    .filter((line, i) => i === 0 || line.includes(filename))
    .slice(0, 21)
    .join('\n');
}

function toResults(raw: WorkerResult[], n: number, filename: string): SandboxResult[] {
  const out: SandboxResult[] = new Array(n);
  for (const r of raw) out[r.i] = toResult(r, filename);
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

/** Reads one answer: the engine's text is parsed here, and only the shape we expect is kept. */
function toResult(r: WorkerResult, filename: string): SandboxResult {
  let v: { code?: unknown; error?: unknown; events?: unknown; logs?: unknown } = r;
  if (r.out !== undefined) {
    try {
      v = JSON.parse(r.out);
    } catch {
      v = {};
    }
  }
  const logs = Array.isArray(v.logs) ? v.logs.filter((l): l is string => typeof l === 'string') : [];
  if (typeof v.code === 'string') {
    return {
      ok: false,
      code: ENGINE_CODES.has(v.code) ? v.code : 'TRIB_ERR_TRANSFORM_CRASHED',
      message: userFrames(typeof v.error === 'string' ? v.error : '', filename),
      logs,
    };
  }
  if (!Array.isArray(v.events))
    return { ok: false, code: 'TRIB_ERR_TRANSFORM_CRASHED', message: 'the sandbox gave no outputs', logs };
  return { ok: true, events: v.events, logs };
}
