import { readFileSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import type { TransformationConfig } from '../../config/quality-schema.js';
import { TributaryError } from '../../errors.js';
import { TransformStage } from '../stages/transform-stage.js';
import { compileFunction } from './compile.js';
import { Sandbox } from './sandbox.js';

/*
 * A configured transformation as a stage: its file read and compiled, its sandbox started.
 * Shared by the sources' stages (server/quality-setup.ts) and the destinations' own
 * (destinations/destination-transforms.ts).
 */

/** A transformation's file, compiled to JavaScript. @throws `TRIB_ERR_TRANSFORM_INVALID` */
export function compiledFunction(
  owner: string,
  t: TransformationConfig,
  baseDir: string,
): { file: string; code: string } {
  const file = isAbsolute(t.file) ? t.file : resolve(baseDir, t.file);
  try {
    return { file, code: compileFunction(readFileSync(file, 'utf8'), file) };
  } catch (err) {
    throw new TributaryError(
      'TRIB_ERR_TRANSFORM_INVALID',
      [`${owner}.transformations[${t.id}]: ${(err as Error).message}`],
      { cause: err },
    );
  }
}

/** One transformation's sandbox, started. @throws `TRIB_ERR_TRANSFORM_INVALID` */
export async function transformStage(
  owner: string,
  t: TransformationConfig,
  baseDir: string,
  env: Record<string, string | undefined>,
): Promise<TransformStage> {
  const { file, code } = compiledFunction(owner, t, baseDir);
  const granted: Record<string, string> = {};
  for (const name of t.grants.env) {
    const v = env[name];
    if (v !== undefined) granted[name] = v;
  }
  const sandbox = new Sandbox({
    code,
    filename: file,
    timeoutMs: t.timeout,
    memoryMb: t.memoryLimit,
    env: granted,
    network: t.grants.network,
  });
  try {
    await sandbox.start();
  } catch (err) {
    await sandbox.close();
    throw new TributaryError(
      'TRIB_ERR_TRANSFORM_INVALID',
      [`${owner}.transformations[${t.id}]: ${(err as Error).message}`],
      {
        cause: err,
      },
    );
  }
  return new TransformStage(t.id, sandbox);
}
