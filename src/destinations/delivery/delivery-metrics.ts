import { Counter, Gauge, type Registry } from 'prom-client';
import type { BreakerState } from './breaker.js';

/** What one streaming destination reports to the metrics, `/healthz` and `tributary stats`. */
export interface DeliveryProgress {
  destination: string;
  type: string;
  /** The log offset the destination has taken events up to (queued, filtered or failed). */
  position: number;
  /** Log records it has not taken yet. */
  lag: number;
  /** Deliveries in its queue. */
  queued: number;
  /** Age of the oldest queued delivery, in milliseconds (0 when the queue is empty). */
  oldestQueuedMs: number;
  breaker: BreakerState;
  /** Since the server started. */
  delivered: number;
  failed: number;
  retried: number;
  filtered: number;
  consentBlocked: number;
  lastError?: string;
}

/** The counters of the delivery runner in one registry, created on first use. */
export interface DeliveryMetrics {
  events: Counter<'destination' | 'outcome'>;
  attempts: Counter<'destination' | 'status'>;
  failedByCode: Counter<'destination' | 'code'>;
  /** The running destinations' progress, read by the gauges at each scrape. */
  live: Set<() => DeliveryProgress>;
}

const byRegistry = new WeakMap<Registry, DeliveryMetrics>();

const BREAKER_VALUE: Record<BreakerState, number> = { closed: 0, 'half-open': 1, open: 2 };

export function deliveryMetrics(registry: Registry): DeliveryMetrics {
  const known = byRegistry.get(registry);
  if (known) return known;
  const registers = [registry];
  const live = new Set<() => DeliveryProgress>();
  const gauge = (name: string, help: string, value: (p: DeliveryProgress) => number) =>
    new Gauge({
      name,
      help,
      labelNames: ['destination'],
      registers,
      collect() {
        this.reset();
        for (const progress of live) {
          const p = progress();
          this.set({ destination: p.destination }, value(p));
        }
      },
    });
  gauge(
    'tributary_delivery_lag_events',
    'Log records a streaming destination has not taken into its queue yet.',
    (p) => p.lag,
  );
  gauge(
    'tributary_delivery_queue_events',
    'Deliveries waiting in a streaming destination’s queue.',
    (p) => p.queued,
  );
  gauge(
    'tributary_delivery_oldest_queued_seconds',
    'Age of the oldest delivery in a streaming destination’s queue.',
    (p) => p.oldestQueuedMs / 1000,
  );
  gauge(
    'tributary_delivery_breaker_state',
    'Circuit breaker of a streaming destination: 0 closed, 1 half-open (probing), 2 open.',
    (p) => BREAKER_VALUE[p.breaker],
  );
  const metrics: DeliveryMetrics = {
    events: new Counter({
      name: 'tributary_delivery_events_total',
      help: 'Events of a streaming destination by outcome: delivered, failed (in failed_events), filtered, consent_blocked, dropped (by its functions).',
      labelNames: ['destination', 'outcome'],
      registers,
    }),
    attempts: new Counter({
      name: 'tributary_delivery_attempts_total',
      help: 'Deliveries tried, by result: ok, retryable (retried later), failed.',
      labelNames: ['destination', 'status'],
      registers,
    }),
    failedByCode: new Counter({
      name: 'tributary_delivery_failed_total',
      help: 'Deliveries moved to failed_events, by code.',
      labelNames: ['destination', 'code'],
      registers,
    }),
    live,
  };
  byRegistry.set(registry, metrics);
  return metrics;
}
