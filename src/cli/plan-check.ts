import { resolve } from 'node:path';
import { loadPlanFile } from '../config/plan-file.js';
import { TributaryError } from '../errors.js';
import { checkPlan } from '../pipeline/plan/check-plan.js';
import { PlanStage } from '../pipeline/stages/plan-stage.js';
import type { AdminOptions } from './admin-client.js';
import { archivedEvents, parseCount, sourceMapping } from './plan-events.js';

export interface PlanCheckOptions extends AdminOptions {
  source?: string;
  last?: string;
  json?: boolean;
  offline?: boolean;
}

/**
 * `tributary plan check FILE`: validates the plan (its schemas compile), then reports what
 * it would have done to the last N archived events (of `--source`, else of every source).
 */
export async function planCheckCommand(file: string, opts: PlanCheckOptions): Promise<void> {
  const plan = loadPlanFile(resolve(file));
  try {
    new PlanStage([plan]);
  } catch (err) {
    throw new TributaryError('TRIB_ERR_PLAN_INVALID', [(err as Error).message], { cause: err });
  }
  if (opts.offline) {
    process.stdout.write(
      `${file}: plan "${plan.name}" is valid (${Object.keys(plan.events).length} events)\n`,
    );
    return;
  }
  const events = await archivedEvents(opts, opts.source, parseCount(opts.last, 1000));
  const report = checkPlan([plan], events, sourceMapping(opts, opts.source));
  if (opts.json) {
    process.stdout.write(`${JSON.stringify({ plan: plan.name, valid: true, ...report })}\n`);
    return;
  }
  const lines = [
    `${file}: plan "${plan.name}" is valid (${Object.keys(plan.events).length} events, onViolation ${plan.onViolation}, unplanned ${plan.onUnplannedEvent})`,
    `last ${report.events} archived events${opts.source ? ` of ${opts.source}` : ''}:`,
    `  clean    ${report.clean}`,
    `  flagged  ${report.flagged}${report.omittedProperties ? ` (${report.omittedProperties} properties omitted)` : ''}`,
    `  blocked  ${report.blocked}`,
    `  unplanned ${report.unplanned}`,
    ...report.violations.slice(0, 20).map((v) => `  ${String(v.count).padStart(6)}  ${v.path} ${v.message}`),
    ...report.unplannedEvents
      .slice(0, 20)
      .map((u) => `  ${String(u.count).padStart(6)}  unplanned "${u.event}"`),
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}
