import { writeFileSync } from 'node:fs';
import { stringify } from 'yaml';
import { inferPlan } from '../pipeline/plan/infer-plan.js';
import { isPlainObject } from '../spec/event.js';
import type { AdminOptions } from './admin-client.js';
import { archivedEvents, parseCount, sourceMapping } from './plan-events.js';

export interface PlanInferOptions extends AdminOptions {
  source: string;
  last?: string;
  name?: string;
  out?: string;
}

/** `tributary plan infer --source web`: drafts a tracking plan (YAML) from the archived events. */
export async function planInferCommand(opts: PlanInferOptions): Promise<void> {
  const events = await archivedEvents(opts, opts.source, parseCount(opts.last, 10_000));
  const mapping = sourceMapping(opts, opts.source);
  if (mapping) for (const e of events) if (isPlainObject(e)) mapping.map(e);
  const plan = inferPlan(opts.name ?? `${opts.source}-draft`, events);
  const text = `# Drafted by "tributary plan infer" from ${events.length} archived events of source ${opts.source}.\n# Edit it, then set onViolation (allow | omit_properties | block) and onUnplannedEvent.\n${stringify(plan)}`;
  if (opts.out) {
    writeFileSync(opts.out, text);
    process.stdout.write(
      `wrote ${opts.out}: ${Object.keys(plan.events).length} events from ${events.length} archived events\n`,
    );
  } else process.stdout.write(text);
}
