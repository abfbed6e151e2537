import { Gauge, type Registry } from 'prom-client';

/** A pipeline part whose progress the health check follows (a loader, identity, a destination). */
export interface Watched {
  /** Its name in `/healthz` and the metric's `component` label, e.g. `loader`, `destination:lake:p3`. */
  name: string;
  /** The log offset it has handled up to. */
  position(): number;
  /** The offset up to which work waits for it: it is behind while `position() < target()`. */
  target(): number;
  /** Its last error since it last made progress, if any. */
  lastError(): unknown;
}

/** A part that has not advanced while work waited, for longer than `stallAfter`. */
export interface Stall {
  component: string;
  position: number;
  target: number;
  /** When it was last seen to advance (or idle). */
  since: string;
  /** Its last error's message, or why it is thought stuck. */
  reason: string;
}

export interface HealthReport {
  /** `degraded` when a part stalled: events are still accepted and kept in the log. */
  status: 'ok' | 'degraded';
  stalled: Stall[];
}

export interface StallWatchOptions {
  /** How long a part may stay at one position while work waits. */
  stallAfterMs: number;
  now?: () => number;
  /** Where the `tributary_stalled` gauge is registered. */
  registry?: Registry;
}

interface Sample {
  watched: Watched;
  position: number;
  /** When `position` was first seen, or last seen with nothing waiting. */
  since: number;
}

/**
 * Tells whether the pipeline's parts keep up: a part that stays at one position while work
 * waits for it (`position < target`) for longer than `stallAfterMs` is stalled. Positions are
 * sampled on each `check()` (by `/healthz`, the metrics scrape, and the server's timer), so a
 * stall is seen at most one sampling interval late, never early.
 *
 * @example
 * const watch = new StallWatch({ stallAfterMs: 300_000, registry });
 * watch.watch({ name: 'loader', position: () => loader.position(), target: () => log.endOffset(),
 *   lastError: () => loader.lastError() });
 * watch.check(); // { status: 'ok', stalled: [] }
 */
export class StallWatch {
  private readonly samples = new Set<Sample>();
  private readonly stallAfterMs: number;
  private readonly now: () => number;

  constructor(options: StallWatchOptions) {
    this.stallAfterMs = options.stallAfterMs;
    this.now = options.now ?? Date.now;
    if (options.registry) {
      const watch = this;
      new Gauge({
        name: 'tributary_stalled',
        help: 'Pipeline parts (loader, identity, destinations) that have not advanced while work waited for longer than server.health.stallAfter: 1 stalled, 0 keeping up.',
        labelNames: ['component'],
        registers: [options.registry],
        collect() {
          this.reset();
          const stalled = new Set(watch.check().stalled.map((s) => s.component));
          for (const s of watch.samples)
            this.set({ component: s.watched.name }, stalled.has(s.watched.name) ? 1 : 0);
        },
      });
    }
  }

  /** Follows `watched` until the returned function is called. */
  watch(watched: Watched): () => void {
    const sample: Sample = { watched, position: watched.position(), since: this.now() };
    this.samples.add(sample);
    return () => this.samples.delete(sample);
  }

  /** Samples every part and reports the stalled ones. */
  check(): HealthReport {
    const now = this.now();
    const stalled: Stall[] = [];
    for (const s of this.samples) {
      const position = s.watched.position();
      const target = s.watched.target();
      if (position !== s.position || position >= target) {
        s.position = position;
        s.since = now;
        continue;
      }
      if (now - s.since <= this.stallAfterMs) continue;
      const err = s.watched.lastError();
      stalled.push({
        component: s.watched.name,
        position,
        target,
        since: new Date(s.since).toISOString(),
        reason:
          err === undefined
            ? `no progress for ${Math.round((now - s.since) / 1000)} s with work waiting (no error reported: a load may hang)`
            : typeof err === 'object' && err !== null && 'message' in err
              ? String(err.message)
              : String(err),
      });
    }
    return { status: stalled.length > 0 ? 'degraded' : 'ok', stalled };
  }
}
