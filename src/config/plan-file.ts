import { readFileSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { TributaryError } from '../errors.js';
import { formatIssues } from './load.js';
import { type PlanRef, TrackingPlan } from './quality-schema.js';

/** Reads a plan file (YAML or JSON) and validates it. */
export function loadPlanFile(file: string): TrackingPlan {
  let raw: unknown;
  try {
    raw = parseYaml(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new TributaryError('TRIB_ERR_PLAN_INVALID', [`${file}: ${(err as Error).message}`], { cause: err });
  }
  const parsed = TrackingPlan.safeParse(raw);
  if (!parsed.success)
    throw new TributaryError('TRIB_ERR_PLAN_INVALID', [`${file}:\n${formatIssues(parsed.error.issues)}`]);
  return parsed.data;
}

export function resolvePlans(refs: readonly PlanRef[], baseDir: string): TrackingPlan[] {
  return refs.map((r) =>
    'file' in r ? loadPlanFile(isAbsolute(r.file) ? r.file : resolve(baseDir, r.file)) : r,
  );
}
