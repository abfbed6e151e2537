import { Pause } from '../platform/async/pause.js';
import type { Store, StoredEvent } from '../store/store.js';

/** Where the loader is: the warehouse holds every event of the log below `position()`. */
export interface LoaderPosition {
  position(): number;
  onLoaded(listener: (position: number) => void): () => void;
}

export interface FeedConsumerOptions {
  /** Name of the stage, for errors. */
  name: string;
  /** The log offset the stage has handled up to (it stores it with its own writes). */
  from: () => Promise<number>;
  /**
   * Handles stored events in log order. `nextOffset` is the offset to store with the
   * results in the same transaction: after a crash the stage resumes there, so it sees
   * each event exactly once. Called with an empty batch when only the offset moved.
   */
  handle: (events: StoredEvent[], nextOffset: number) => Promise<void>;
  /** Most events per call. Default 5,000. */
  maxBatch?: number;
  /**
   * Least time from the start of one call of `handle` to the next while the stage keeps up:
   * events that arrive meanwhile are handed over together. A full batch waiting is handled at
   * once. Default 0.
   */
  intervalMs?: number;
  /**
   * For a stage that stores each batch in the background while it works on the next one:
   * `handle` may return before its batch is stored, but only once every earlier batch is,
   * and throws if one of them failed. `flush` waits for the last batch and throws if it
   * failed. The feed calls `flush` before it goes idle or stops, and counts a batch as
   * handled (for `drained`) only once it is stored.
   */
  flush?: () => Promise<void>;
  /** Delay before retrying after `handle` threw. Default 1 s. */
  retryMs?: number;
  onError?: (err: unknown) => void;
}

export interface FeedSubscription {
  /** Resolves once the stage has handled every event the loader had stored at the call. */
  drained(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Lets later pipeline stages (identity, destinations) follow the `events` table the loader
 * writes, in log order, each at its own pace and from its own stored offset. Events in
 * `events` are already deduplicated and processed; the feed never changes them.
 */
export class EventFeed {
  constructor(
    private readonly warehouse: Pick<Store, 'readEvents'>,
    private readonly loader: LoaderPosition,
  ) {}

  /**
   * Events of `[from, to)` and where the next read starts. A transformation that returns
   * several events stores them under one log offset, so a full batch never ends inside
   * an offset: its last offset is left to the next read, or read whole when it fills the
   * batch alone.
   */
  private async read(
    from: number,
    to: number,
    max: number,
  ): Promise<{ events: StoredEvent[]; next: number; full: boolean }> {
    const events = await this.warehouse.readEvents(from, to, max);
    if (events.length < max) return { events, next: to, full: false };
    const last = events[events.length - 1]!.logOffset;
    let cut = events.length;
    while (cut > 0 && events[cut - 1]!.logOffset === last) cut--;
    if (cut > 0) return { events: events.slice(0, cut), next: last, full: true };
    const whole = await this.warehouse.readEvents(last, last + 1, Number.MAX_SAFE_INTEGER);
    return { events: whole, next: last + 1, full: true };
  }

  subscribe(options: FeedConsumerOptions): FeedSubscription {
    const maxBatch = options.maxBatch ?? 5_000;
    const retryMs = options.retryMs ?? 1_000;
    const intervalMs = options.intervalMs ?? 0;
    let position = -1;
    // Where every handled event is also stored: `position` itself, unless the stage stores
    // in the background (`flush`), where it trails by the batch in flight.
    let stored = -1;
    let stopped = false;
    let pausing = false;
    const waiter = new Pause();
    const waiters: { target: number; resolve: () => void }[] = [];
    // New events do not end the pause between two loads; `drained` and `stop` do.
    const unsubscribe = this.loader.onLoaded(() => {
      if (!pausing) waiter.wake();
    });

    const settle = () => {
      for (let i = waiters.length - 1; i >= 0; i--) {
        const w = waiters[i]!;
        if (stored >= w.target || stopped) {
          waiters.splice(i, 1);
          w.resolve();
        }
      }
    };
    const sleep = (ms: number) => waiter.sleep(ms);

    // While a stage works through a backlog, the next batch is read as it handles this one.
    let ahead: { from: number; read: ReturnType<EventFeed['read']> } | undefined;
    const discardAhead = async () => {
      const a = ahead;
      ahead = undefined;
      await a?.read.catch(() => undefined);
    };

    const loop = (async () => {
      while (!stopped) {
        try {
          if (position < 0) position = stored = await options.from();
          const to = this.loader.position();
          if (position >= to) {
            if (options.flush && stored < position) {
              await options.flush();
              stored = position;
              settle();
              continue; // events (or a stop) may have come while it flushed: look again
            }
            settle();
            await sleep(60_000);
            continue;
          }
          const started = Date.now();
          const current = ahead?.from === position ? ahead.read : this.read(position, to, maxBatch);
          ahead = undefined;
          const { events, next, full } = await current;
          if (full) {
            const read = this.read(next, this.loader.position(), maxBatch);
            read.catch(() => undefined); // awaited as the next batch, or discarded
            ahead = { from: next, read };
          }
          await options.handle(events, next);
          // A background stage has stored everything before this batch once `handle` returns.
          stored = options.flush ? position : next;
          position = next;
          settle();
          // The interval runs from the start of this load, so a load's own time is not added to it.
          const pause = intervalMs - (Date.now() - started);
          if (pause > 0 && !full && !stopped) {
            pausing = true;
            await sleep(pause);
            pausing = false;
          }
        } catch (err) {
          pausing = false;
          await discardAhead();
          options.onError?.(err);
          position = -1; // re-read the stored offset: the failed batch may or may not be in
          if (!stopped) await sleep(retryMs);
        }
      }
      await discardAhead(); // no read may outlive `stop`: the warehouse may be closed next
      if (options.flush && stored < position) {
        try {
          await options.flush();
          stored = position;
        } catch (err) {
          options.onError?.(err);
        }
      }
      settle();
    })();

    return {
      drained: () =>
        new Promise<void>((resolve) => {
          if (stopped) return resolve();
          const target = this.loader.position();
          if (stored >= target) return resolve();
          waiters.push({ target, resolve });
          waiter.wake();
        }),
      async stop() {
        stopped = true;
        unsubscribe();
        waiter.wake();
        await loop;
      },
    };
  }
}
