import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { DestinationConfig } from '../config/destinations-schema.js';
import { resolvePlans } from '../config/plan-file.js';
import type { SourceConfig } from '../config/schema.js';
import { takesTransformations } from '../destinations/registry.js';
import { TributaryError } from '../errors.js';
import { PiiClassifier } from '../pipeline/privacy/pii-classifier.js';
import { MappingStage } from '../pipeline/stages/mapping-stage.js';
import { PlanStage } from '../pipeline/stages/plan-stage.js';
import type { Stage } from '../pipeline/stages/stage.js';
import type { TransformStage } from '../pipeline/stages/transform-stage.js';
import { compiledFunction, transformStage } from '../pipeline/transform/function-stage.js';

export interface QualitySetup {
  /** Privacy policy per source id, applied at collection (knowing the source's mapping aliases). */
  privacy: Map<string, PiiClassifier>;
  /** Loader stages per source id: mapping → plan → transformations. */
  stages: Map<string, Stage[]>;
}

/** Closes every stage of a setup (the sandboxes of transformations). */
export async function closeStages(stages: ReadonlyMap<string, readonly Stage[]>): Promise<void> {
  for (const list of stages.values()) for (const s of list) await s.close?.();
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
 * Checks what `buildQuality` would load without starting anything: plan files are read and
 * their schemas compiled, function files compiled (not run).
 * @throws TributaryError `TRIB_ERR_PLAN_INVALID` or `TRIB_ERR_TRANSFORM_INVALID`.
 */
export function checkQuality(
  sources: readonly SourceConfig[],
  baseDir: string,
  destinations: readonly DestinationConfig[] = [],
): void {
  for (const s of sources) {
    planStage(s, baseDir);
    for (const t of s.transformations ?? []) compiledFunction(`sources[${s.id}]`, t, baseDir);
  }
  for (const d of destinations) {
    if (!d.transformations?.length) continue;
    if (!takesTransformations(d.type))
      throw new TributaryError('TRIB_ERR_DESTINATION_TRANSFORM_UNSUPPORTED', [d.id]);
    for (const t of d.transformations) compiledFunction(`destinations[${d.id}]`, t, baseDir);
  }
}

/**
 * Builds the quality stages of every source from the configuration. Plan files and
 * function files are resolved against `baseDir` (the configuration file's folder);
 * functions get the variables of `env` their grants name. Starts the sandboxes, so a
 * function that does not load stops the start-up with its error.
 */
export async function buildQuality(
  sources: readonly SourceConfig[],
  baseDir: string,
  salt: string,
  env: Record<string, string | undefined>,
): Promise<QualitySetup> {
  const started: TransformStage[] = [];
  try {
    return await build(sources, baseDir, salt, env, started);
  } catch (err) {
    for (const s of started) await s.close();
    throw err;
  }
}

/** The source's plan stage, or undefined without plans. @throws `TRIB_ERR_PLAN_INVALID` */
function planStage(s: SourceConfig, baseDir: string): PlanStage | undefined {
  if (!s.plans || s.plans.length === 0) return undefined;
  try {
    return new PlanStage(resolvePlans(s.plans, baseDir));
  } catch (err) {
    if (err instanceof TributaryError) throw err;
    throw new TributaryError('TRIB_ERR_PLAN_INVALID', [`sources[${s.id}]: ${(err as Error).message}`], {
      cause: err,
    });
  }
}

async function build(
  sources: readonly SourceConfig[],
  baseDir: string,
  salt: string,
  env: Record<string, string | undefined>,
  started: TransformStage[],
): Promise<QualitySetup> {
  const privacy = new Map<string, PiiClassifier>();
  const stages = new Map<string, Stage[]>();
  for (const s of sources) {
    // The policy runs at collection, before the mapping renames keys: it is given the
    // mapping's aliases so it acts on the names the values will be stored under.
    if (s.privacy) privacy.set(s.id, new PiiClassifier(s.privacy, salt, s.mapping?.fields));
    const list: Stage[] = [];
    if (s.mapping) list.push(new MappingStage(s.mapping));
    const plan = planStage(s, baseDir);
    if (plan) list.push(plan);
    for (const t of s.transformations ?? []) {
      const stage = await transformStage(`sources[${s.id}]`, t, baseDir, env);
      started.push(stage);
      list.push(stage);
    }
    if (list.length > 0) stages.set(s.id, list);
  }
  return { privacy, stages };
}
