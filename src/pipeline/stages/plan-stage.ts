import type { TrackingPlan } from '../../config/quality-schema.js';
import type { Fate, PipelineEvent, Stage, StageResult } from './stage.js';
import { annotate } from './stage.js';
import { CompiledPlan, type PlanVerdict } from './tracking-plan.js';

/**
 * Tracking plans of one source. The first plan that covers an event judges it; a track
 * event no plan names is unplanned and handled by the first plan's `onUnplannedEvent`.
 * `allow` and `omit_properties` pass the event with its violations under
 * `_tributary.violations`; `block` sends it to the failed-event store.
 */
export class PlanStage implements Stage {
  readonly name = 'plan';
  private readonly plans: CompiledPlan[];

  constructor(plans: readonly TrackingPlan[]) {
    this.plans = plans.map((p) => new CompiledPlan(p));
  }

  /** The verdict for one event (the event is changed in place by `omit_properties`). */
  judge(pe: PipelineEvent): { verdict: PlanVerdict | undefined; fate?: Omit<Fate, 'record' | 'event'> } {
    const event = pe.event;
    const plan = this.plans.find((p) => p.covers(event));
    if (!plan) {
      const first = this.plans[0];
      if (!first || event.type !== 'track') return { verdict: undefined };
      const verdict = first.check(event);
      if (first.onUnplannedEvent === 'block') {
        return {
          verdict,
          fate: {
            stage: this.name,
            code: 'TRIB_ERR_PLAN_UNPLANNED_EVENT',
            reason: `plan "${first.name}": event "${event.event}" is not in the plan`,
            kind: 'blocked',
          },
        };
      }
      return { verdict };
    }
    const verdict = plan.check(event);
    if (verdict.violations.length > 0 && plan.onViolation === 'block') {
      return {
        verdict,
        fate: {
          stage: this.name,
          code: 'TRIB_ERR_PLAN_VIOLATION',
          reason: `plan "${plan.name}": ${verdict.violations.map((v) => `${v.path} ${v.message}`).join('; ')}`,
          kind: 'blocked',
        },
      };
    }
    return { verdict };
  }

  run(events: PipelineEvent[]): StageResult {
    const result: StageResult = { pass: [], drop: [], fail: [] };
    for (const pe of events) {
      const { verdict, fate } = this.judge(pe);
      if (fate) {
        result.fail.push({ record: pe.record, event: pe.event, ...fate });
        continue;
      }
      if (verdict && (verdict.violations.length > 0 || verdict.omitted.length > 0)) {
        annotate(pe.event, 'violations', verdict.violations);
        annotate(pe.event, 'omitted', verdict.omitted);
        pe.changed = true;
      }
      result.pass.push(pe);
    }
    return result;
  }
}
