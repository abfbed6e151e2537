import { TributaryError } from '../errors.js';

/** What a bounded shutdown's work reports and reads. */
export interface ShutdownSteps {
  /** Names the step in hand, for the error when the bound passes. */
  at(step: string): void;
  /** Milliseconds left before the bound (Infinity without one). */
  left(): number;
  /** Waits for `p`, but at most `ms`: for steps that may be cut short (draining a backlog). */
  upTo(p: Promise<unknown>, ms: number): Promise<void>;
}

/**
 * Runs a shutdown that ends within `timeoutMs` whatever is stuck: a load that cannot go on
 * (a frozen connection, a lock held elsewhere) must not keep a process from exiting. When the
 * bound passes, the promise rejects with `TRIB_ERR_SERVER_SHUTDOWN_TIMEOUT` naming the step in
 * hand, and the caller exits; the work is left behind. Nothing is lost: loads are committed
 * with their offsets, and what was not loaded is loaded from the log at the next start.
 * `timeoutMs` 0 means no bound.
 */
export async function shutdownWithin(
  timeoutMs: number,
  work: (steps: ShutdownSteps) => Promise<void>,
): Promise<void> {
  const deadline = timeoutMs > 0 ? Date.now() + timeoutMs : Infinity;
  let step = 'starting';
  const timers = new Set<NodeJS.Timeout>();
  const steps: ShutdownSteps = {
    at: (s) => {
      step = s;
    },
    left: () => Math.max(0, deadline - Date.now()),
    upTo: async (p, ms) => {
      if (!Number.isFinite(ms)) {
        await p;
        return;
      }
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        p,
        new Promise<void>((resolve) => {
          timer = setTimeout(resolve, Math.max(0, ms));
          timers.add(timer);
        }),
      ]);
      clearTimeout(timer);
    },
  };
  let bound: NodeJS.Timeout | undefined;
  const expired =
    timeoutMs > 0
      ? new Promise<never>((_, reject) => {
          bound = setTimeout(
            () => reject(new TributaryError('TRIB_ERR_SERVER_SHUTDOWN_TIMEOUT', [timeoutMs, step])),
            timeoutMs,
          );
        })
      : new Promise<never>(() => {});
  try {
    await Promise.race([work(steps), expired]);
  } finally {
    clearTimeout(bound);
    for (const t of timers) clearTimeout(t);
  }
}
