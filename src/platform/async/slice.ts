import { setImmediate as nextTurn } from 'node:timers/promises';

/**
 * How long a stretch of background work (a stage's batch, a load's rows) may hold the event
 * loop before it lets the requests waiting behind it in. A request's latency grows by up to
 * one such stretch, so this bounds what background work adds to it, whatever the machine's
 * speed or the batch's size.
 */
export const SLICE_MS = 2;

/**
 * Background work that gives the event loop back once it has held it for `SLICE_MS`. Start
 * one where the stretch starts and check it every few items:
 *
 * ```ts
 * const slice = new Slice();
 * for (const item of items) {
 *   if (slice.due()) await slice.pass();
 *   work(item);
 * }
 * ```
 */
export class Slice {
  private start = performance.now();

  /** Whether the stretch has held the event loop for its time. */
  due(): boolean {
    return performance.now() - this.start >= SLICE_MS;
  }

  /** Lets the waiting requests in, then starts a new stretch. */
  async pass(): Promise<void> {
    await nextTurn();
    this.start = performance.now();
  }
}
