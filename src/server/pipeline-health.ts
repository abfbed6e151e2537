import type { TributaryConfig } from '../config/schema.js';
import type { RunningDestination } from '../destinations/runner.js';
import type { StallWatch } from '../observe/health.js';
import type { WarehouseLoader } from '../pipeline/warehouse-loader.js';
import type { UserQueryLimits } from '../store/user-query.js';

/** One pipeline (the embedded one, or a worker's partition), as the health check follows it. */
export interface WatchedPipeline {
  /** Appended to each part's name (`:p3` for a partition), so the parts of many pipelines stay apart. */
  suffix?: string;
  loader: WarehouseLoader;
  /** The log's end as this process knows it. */
  logEnd(): number;
  destinations: readonly RunningDestination[];
  identity?: { position(): number };
  identityError(): unknown;
}

/**
 * Follows the loader against the log's end (or its own batch in hand or failing, where the end
 * is not known), and identity and each destination against the loader. Returns the function
 * that stops following them.
 */
export function watchPipeline(stalls: StallWatch, p: WatchedPipeline): () => void {
  const suffix = p.suffix ?? '';
  const { loader, identity } = p;
  const unwatch = [
    stalls.watch({
      name: `loader${suffix}`,
      position: () => loader.position(),
      target: () => Math.max(p.logEnd(), loader.waiting() ? loader.position() + 1 : 0),
      lastError: () => loader.lastError(),
    }),
    ...p.destinations.map((d) =>
      stalls.watch({
        name: `destination:${d.id}${suffix}`,
        position: () => d.position(),
        target: () => loader.position(),
        lastError: () => d.lastError(),
      }),
    ),
  ];
  if (identity) {
    unwatch.push(
      stalls.watch({
        name: `identity${suffix}`,
        position: () => identity.position(),
        target: () => loader.position(),
        lastError: () => p.identityError(),
      }),
    );
  }
  return () => {
    for (const u of unwatch) u();
  };
}

/** Samples the parts between scrapes too, so a stall is dated from when it began; returns the stop. */
export function sampleStalls(stalls: StallWatch, stallAfterMs: number): () => void {
  const timer = setInterval(() => stalls.check(), Math.max(1000, Math.min(15_000, stallAfterMs / 4))).unref();
  return () => clearInterval(timer);
}

/** The query endpoint's limits from `query:`. */
export function queryLimits(config: TributaryConfig): UserQueryLimits {
  return {
    maxRows: config.query.maxRows,
    maxBytes: config.query.maxBytes,
    timeoutMs: config.query.timeout,
    maxConcurrent: config.query.maxConcurrent,
  };
}
