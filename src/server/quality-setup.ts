import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { formatIssues } from '../config/load.js';
import { type PlanRef, TrackingPlan } from '../config/quality-schema.js';
import type { SourceConfig } from '../config/schema.js';
import { TributaryError } from '../errors.js';
import { PiiClassifier } from '../pipeline/privacy/pii-classifier.js';
import { MappingStage } from '../pipeline/stages/mapping-stage.js';
import { PlanStage } from '../pipeline/stages/plan-stage.js';
import type { Stage } from '../pipeline/stages/stage.js';

export interface QualitySetup {
  /** Privacy policy per source id, applied at collection. */
  privacy: Map<string, PiiClassifier>;
  /** Loader stages per source id: mapping → plan → transformations. */
  stages: Map<string, Stage[]>;
}

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

/** `<dataDir>/pii-salt`: the workspace's hashing salt, made (mode 0600) on first use. */
export function workspaceSalt(dataDir: string): string {
  const file = join(dataDir, 'pii-salt');
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  mkdirSync(dataDir, { recursive: true });
  const salt = randomBytes(32).toString('base64url');
  writeFileSync(file, `${salt}\n`, { mode: 0o600 });
  return salt;
}

/**
 * Builds the quality stages of every source from the configuration. Plan files and
 * function files are resolved against `baseDir` (the configuration file's folder).
 */
export function buildQuality(sources: readonly SourceConfig[], baseDir: string, salt: string): QualitySetup {
  const privacy = new Map<string, PiiClassifier>();
  const stages = new Map<string, Stage[]>();
  for (const s of sources) {
    if (s.privacy) privacy.set(s.id, new PiiClassifier(s.privacy, salt));
    const list: Stage[] = [];
    if (s.mapping) list.push(new MappingStage(s.mapping));
    if (s.plans && s.plans.length > 0) {
      try {
        list.push(new PlanStage(resolvePlans(s.plans, baseDir)));
      } catch (err) {
        if (err instanceof TributaryError) throw err;
        throw new TributaryError('TRIB_ERR_PLAN_INVALID', [`sources[${s.id}]: ${(err as Error).message}`], {
          cause: err,
        });
      }
    }
    if (list.length > 0) stages.set(s.id, list);
  }
  return { privacy, stages };
}
