import { createHmac } from 'node:crypto';
import { Counter, type Registry } from 'prom-client';
import type { Identity } from './erasure.js';
import { identityKey, type RegulationStore } from './regulation.js';

/**
 * The suppression list as collection checks it: an in-memory set of keyed hashes of the
 * suppressed identities (never the identities themselves: the list outlives the deletion, and a
 * deleted person's email must not stay readable in it), refreshed from the regulation store,
 * which every process of a scale-out deployment shares. An event is checked only while the
 * set is not empty; then it costs one HMAC per identifier it carries (userId, anonymousId,
 * an email in traits or properties).
 */
export class Suppressions {
  private hashes = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private readonly dropped: Counter<'source'> | undefined;

  constructor(
    private readonly key: string,
    private readonly store: RegulationStore,
    registry?: Registry,
  ) {
    this.dropped = registry
      ? ((registry.getSingleMetric('tributary_events_suppressed_total') as Counter<'source'> | undefined) ??
        new Counter({
          name: 'tributary_events_suppressed_total',
          help: 'Events dropped at collection because they carry an identity a deletion request suppressed.',
          labelNames: ['source'],
          registers: [registry],
        }))
      : undefined;
  }

  /** The keyed hash of an identity as the suppression list stores it. */
  hash(id: Identity): string {
    return createHmac('sha256', this.key).update(identityKey(id)).digest('hex');
  }

  /** Adds hashes at once (the store has them already; the next refresh would bring them too). */
  add(hashes: readonly string[]): void {
    for (const h of hashes) this.hashes.add(h);
  }

  async refresh(): Promise<void> {
    this.hashes = new Set(await this.store.suppressed());
  }

  /** Refreshes every `everyMs` (errors are passed to `onError`; the last set is kept). */
  start(everyMs: number, onError: (err: unknown) => void = () => {}): void {
    this.timer ??= setInterval(() => void this.refresh().catch(onError), everyMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  size(): number {
    return this.hashes.size;
  }

  /**
   * Whether `event` carries a suppressed identity; when it does, it is counted as suppressed
   * for `sourceId`.
   */
  suppresses(sourceId: string, event: unknown): boolean {
    if (this.hashes.size === 0 || typeof event !== 'object' || event === null) return false;
    const e = event as Record<string, unknown>;
    const hit =
      this.has('user_id', e.userId) ||
      this.has('anonymous_id', e.anonymousId) ||
      this.has('email', pick(e.traits, 'email')) ||
      this.has('email', pick(pick(e.context, 'traits'), 'email')) ||
      this.has('email', pick(e.properties, 'email'));
    if (hit) this.dropped?.inc({ source: sourceId });
    return hit;
  }

  private has(type: string, value: unknown): boolean {
    if (typeof value !== 'string' && typeof value !== 'number') return false;
    const v = String(value);
    return v !== '' && this.hashes.has(this.hash({ type, value: v }));
  }
}

function pick(o: unknown, k: string): unknown {
  return typeof o === 'object' && o !== null ? (o as Record<string, unknown>)[k] : undefined;
}

/**
 * `log` with appends that leave out records carrying a suppressed identity: for the sources
 * that append to the log themselves (webhooks, files, databases). The collection API checks
 * events before it builds records (`CollectDeps.suppressed`).
 */
export function suppressingLog<
  L extends { append(records: readonly { sourceId: string; json: string }[]): unknown },
>(log: L, suppressions: Suppressions): L {
  return new Proxy(log, {
    get(target, prop) {
      if (prop === 'append')
        return (records: readonly { sourceId: string; json: string }[]) =>
          target.append(
            suppressions.size() === 0
              ? records
              : records.filter((r) => {
                  let event: unknown;
                  try {
                    event = JSON.parse(r.json);
                  } catch {
                    return true;
                  }
                  return !suppressions.suppresses(r.sourceId, event);
                }),
          );
      const v = Reflect.get(target, prop, target) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}
