import type { TrackingPlan } from '../../config/quality-schema.js';
import { isPlainObject, type SegmentEvent } from '../../spec/event.js';
import type { MappingStage } from '../stages/mapping-stage.js';
import { PlanStage } from '../stages/plan-stage.js';

/** What a plan would have done to a set of events. */
export interface PlanCheckReport {
  events: number;
  /** Passed without a violation. */
  clean: number;
  /** Passed carrying violations (`allow`, `omit_properties`, or unplanned and allowed). */
  flagged: number;
  blocked: number;
  unplanned: number;
  /** Properties `omit_properties` would have removed. */
  omittedProperties: number;
  /** Violations by plan, path and message, most frequent first. */
  violations: { plan: string; path: string; message: string; count: number }[];
  /** Events per track event name that no plan names. */
  unplannedEvents: { event: string; count: number }[];
}

/**
 * Runs archived events through plans (after the source's mapping, when given, as the
 * pipeline does) without storing anything, and reports the outcome.
 */
export function checkPlan(
  plans: readonly TrackingPlan[],
  events: Iterable<unknown>,
  mapping?: MappingStage,
): PlanCheckReport {
  const stage = new PlanStage(plans);
  const report: PlanCheckReport = {
    events: 0,
    clean: 0,
    flagged: 0,
    blocked: 0,
    unplanned: 0,
    omittedProperties: 0,
    violations: [],
    unplannedEvents: [],
  };
  const violations = new Map<string, { plan: string; path: string; message: string; count: number }>();
  const unplanned = new Map<string, number>();
  for (const raw of events) {
    if (!isPlainObject(raw)) continue;
    const event = structuredClone(raw) as SegmentEvent;
    mapping?.map(event);
    report.events++;
    const { verdict, fate } = stage.judge({
      record: { offset: 0, sourceId: '', messageId: '', receivedAt: 0, status: 'accepted', json: '' },
      event,
    });
    if (verdict && !verdict.planned) {
      report.unplanned++;
      const name = String(event.event);
      unplanned.set(name, (unplanned.get(name) ?? 0) + 1);
    }
    for (const v of verdict?.violations ?? []) {
      if (v.kind === 'unplanned_event') continue;
      const k = `${v.plan}\u001f${v.path}\u001f${v.message}`;
      const entry = violations.get(k) ?? { plan: v.plan, path: v.path, message: v.message, count: 0 };
      entry.count++;
      violations.set(k, entry);
    }
    report.omittedProperties += verdict?.omitted.length ?? 0;
    if (fate) report.blocked++;
    else if (verdict && (verdict.violations.length > 0 || verdict.omitted.length > 0)) report.flagged++;
    else report.clean++;
  }
  report.violations = [...violations.values()].sort((a, b) => b.count - a.count);
  report.unplannedEvents = [...unplanned]
    .map(([event, count]) => ({ event, count }))
    .sort((a, b) => b.count - a.count);
  return report;
}
