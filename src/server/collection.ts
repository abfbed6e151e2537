import type { FastifyInstance } from 'fastify';
import type { SourceConfig } from '../config/schema.js';
import type { EventLog } from '../log/event-log.js';
import type { Metrics } from '../observe/metrics.js';
import type { QualityMetrics } from '../observe/quality-metrics.js';
import { type DestinationRetrier, FailedStore } from '../pipeline/failed-store.js';
import type { LoaderObserver } from '../pipeline/warehouse-loader.js';
import type { HttpSourceSpec } from '../sources/http/spec.js';
import type { Store } from '../store/store.js';

/**
 * What the collection routes and the failed-event store need from a composition root: the
 * enabled sources by write key, the counters they report to, and the failed-event store, whose
 * retries enter the log again and are counted as received and accepted, so the counts reconcile.
 */
export function collectionParts(opts: {
  sources: readonly SourceConfig[];
  metrics: Metrics;
  quality: QualityMetrics;
  warehouse: Store;
  log: EventLog;
  /** Resolves once the pipeline has loaded what was appended before the call. */
  drained: () => Promise<void>;
  destination?: (id: string) => DestinationRetrier | undefined;
}) {
  const { metrics, quality } = opts;
  const sourcesByWriteKey = new Map<string, HttpSourceSpec>();
  for (const s of opts.sources) if (s.enabled && s.type === 'http') sourcesByWriteKey.set(s.writeKey, s);
  const observer = {
    received: (s: string, n: number) => metrics.received.inc({ source: s }, n),
    accepted: (s: string, n: number) => metrics.accepted.inc({ source: s }, n),
    rejected: (s: string, code: string, n: number) => metrics.rejected.inc({ source: s, code }, n),
    privacy: quality.privacy.bind(quality),
  };
  const failed = new FailedStore(
    opts.warehouse,
    opts.log,
    {
      retried: (s, n) => {
        quality.retried.inc({ source: s }, n);
        observer.received(s, n);
        observer.accepted(s, n);
      },
    },
    opts.drained,
    opts.destination,
  );
  return { sourcesByWriteKey, observer, failed };
}

/** The loader's counters: loaded, deduplicated, failed and each stage's outcomes per source. */
export function loaderObserver(
  metrics: Metrics,
  quality: QualityMetrics,
  error: (err: unknown) => void,
): LoaderObserver {
  return {
    loaded: (s, n) => metrics.loaded.inc({ source: s }, n),
    deduplicated: (s, n) => metrics.deduplicated.inc({ source: s }, n),
    failedStored: (s, n) => metrics.failedStored.inc({ source: s }, n),
    outcome: (s, stage, outcome, n) => quality.outcome(s, stage, outcome, n),
    error,
  };
}

/** Listens, and returns the port taken and the URL clients on this machine reach it at. */
export async function listen(
  app: FastifyInstance,
  host: string,
  port: number,
): Promise<{ url: string; port: number }> {
  await app.listen({ port, host });
  const address = app.server.address();
  const bound = typeof address === 'object' && address ? address.port : port;
  const urlHost = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
  return { url: `http://${urlHost}:${bound}`, port: bound };
}
