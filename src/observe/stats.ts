import type { Metrics } from './metrics.js';
import type { QualityMetrics } from './quality-metrics.js';

/** The reconciled counts of one source since the server started. */
export interface SourceStats {
  source: string;
  received: number;
  accepted: number;
  rejected: number;
  /** Rejections by code (the privacy policy's blocks are `TRIB_ERR_EVENT_PII_BLOCKED`). */
  rejectedByCode: Record<string, number>;
  /** Reached `events`, or dropped on purpose (a duplicate, or a function returned nothing). */
  passed: number;
  blocked: number;
  failed: number;
  pending: number;
  /** passed, blocked, failed, filtered, deduplicated by the stage that decided (`load`, `dedupe`, `mapping`, `plan`, `transform`, `pipeline`). */
  byStage: Record<string, Record<string, number>>;
}

export interface StatsDeps {
  metrics: Metrics;
  quality: QualityMetrics;
  /** Accepted records of each source still in the log ahead of the loader (counted ones only). */
  pending(): Promise<Map<string, number>>;
  sources: readonly string[];
}

/**
 * received = accepted + rejected; accepted = passed + blocked + failed + pending, where
 * passed counts events loaded, filtered by a function or dropped as duplicates.
 */
export async function collectStats(deps: StatsDeps): Promise<SourceStats[]> {
  const pending = await deps.pending();
  const [received, accepted, rejected, outcomes] = await Promise.all([
    deps.metrics.received.get(),
    deps.metrics.accepted.get(),
    deps.metrics.rejected.get(),
    deps.quality.outcomes.get(),
  ]);
  const stats = new Map<string, SourceStats>();
  const of = (source: string) => {
    let s = stats.get(source);
    if (!s) {
      s = {
        source,
        received: 0,
        accepted: 0,
        rejected: 0,
        rejectedByCode: {},
        passed: 0,
        blocked: 0,
        failed: 0,
        pending: pending.get(source) ?? 0,
        byStage: {},
      };
      stats.set(source, s);
    }
    return s;
  };
  for (const id of deps.sources) of(id);
  for (const v of received.values) of(String(v.labels.source)).received += v.value;
  for (const v of accepted.values) of(String(v.labels.source)).accepted += v.value;
  for (const v of rejected.values) {
    const s = of(String(v.labels.source));
    s.rejected += v.value;
    s.rejectedByCode[String(v.labels.code)] = (s.rejectedByCode[String(v.labels.code)] ?? 0) + v.value;
  }
  for (const v of outcomes.values) {
    const s = of(String(v.labels.source));
    const outcome = String(v.labels.outcome);
    const stage = String(v.labels.stage);
    if (outcome === 'blocked') s.blocked += v.value;
    else if (outcome === 'failed') s.failed += v.value;
    else s.passed += v.value;
    s.byStage[stage] ??= {};
    s.byStage[stage][outcome] = (s.byStage[stage][outcome] ?? 0) + v.value;
  }
  for (const [source, n] of pending) of(source).pending = n;
  return [...stats.values()];
}
