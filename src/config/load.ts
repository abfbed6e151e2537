import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parseDocument } from 'yaml';
import type { z } from 'zod';
import { TributaryError } from '../errors.js';
import { hasLiteralPassword } from './destinations-schema.js';
import { TributaryConfig } from './schema.js';

/** Keys whose values are secrets: the file may only reference them as `${ENV}`. */
export const SECRET_KEY = /(password|secret|token|credentials|private_?key)$/i;
const ENV_REF = /\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g;

/** The newest minor version of format 1 this release knows. */
const KNOWN_MINOR = 0;

export interface LoadedConfig {
  config: TributaryConfig;
  path: string;
  warnings: string[];
}

/** Renders a key path as `sources[0].writeKey`. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out === '' ? String(p) : `.${String(p)}`;
  return out || '(root)';
}

/**
 * Parses configuration text: YAML, then `${ENV}` references replaced from `env` (a
 * missing variable is an error naming the key), then the zod schema. Every problem is
 * reported with its key path.
 */
export function parseConfig(
  text: string,
  env: Record<string, string | undefined>,
  path = '<config>',
): LoadedConfig {
  const doc = parseDocument(text, { prettyErrors: true });
  if (doc.errors.length > 0) {
    throw new TributaryError('TRIB_ERR_CONFIG_INVALID', [
      doc.errors.map((e) => `${path}: ${e.message}`).join('\n'),
    ]);
  }
  const problems: string[] = [];
  const raw = substitute(doc.toJS(), [], env, problems);
  if (problems.length > 0) throw new TributaryError('TRIB_ERR_CONFIG_INVALID', [problems.join('\n')]);
  const parsed = TributaryConfig.safeParse(raw);
  if (!parsed.success)
    throw new TributaryError('TRIB_ERR_CONFIG_INVALID', [formatIssues(parsed.error.issues)]);
  const warnings: string[] = [];
  const minor = typeof parsed.data.version === 'string' ? Number(parsed.data.version.split('.')[1] ?? 0) : 0;
  if (minor > KNOWN_MINOR) {
    warnings.push(
      `configuration version ${parsed.data.version} is newer than this release (1.${KNOWN_MINOR}); unknown settings are refused`,
    );
  }
  return { config: parsed.data, path, warnings };
}

export function formatIssues(issues: readonly z.core.$ZodIssue[]): string {
  return issues.map((i) => `  ${formatPath(i.path)}: ${i.message}`).join('\n');
}

export function substitute(
  value: unknown,
  path: PropertyKey[],
  env: Record<string, string | undefined>,
  problems: string[],
): unknown {
  if (typeof value === 'string') {
    const key = path[path.length - 1];
    if (typeof key === 'string' && SECRET_KEY.test(key) && !/^\$\{[A-Za-z_][A-Za-z0-9_]*\}$/.test(value)) {
      problems.push(
        `  ${formatPath(path)}: a secret must be given as an environment reference such as "\${MY_SECRET}"`,
      );
      return value;
    }
    if (typeof key === 'string' && /connectionString$/i.test(key) && hasLiteralPassword(value)) {
      problems.push(
        `  ${formatPath(path)}: the password must be given as an environment reference such as "\${PG_PASSWORD}"`,
      );
      return value;
    }
    return value.replace(ENV_REF, (_, name: string) => {
      const v = env[name];
      if (v === undefined) {
        problems.push(`  ${formatPath(path)}: environment variable ${name} is not set`);
        return '';
      }
      return v;
    });
  }
  if (Array.isArray(value)) return value.map((v, i) => substitute(v, [...path, i], env, problems));
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      if (k === '__proto__' || k === 'constructor' || k === 'prototype') {
        problems.push(`  ${formatPath([...path, k])}: reserved key`);
        continue;
      }
      out[k] = substitute(v, [...path, k], env, problems);
    }
    return out;
  }
  return value;
}

export function loadConfigFile(path: string, env: Record<string, string | undefined>): LoadedConfig {
  if (!existsSync(path)) throw new TributaryError('TRIB_ERR_CONFIG_NOT_FOUND', [path]);
  return parseConfig(readFileSync(path, 'utf8'), env, path);
}

/** Creates `<dataDir>/tributary.yaml` with one HTTP source and a fresh write key, unless it exists. */
export function ensureWorkspaceConfig(dataDir: string): { path: string; created: boolean } {
  const path = join(dataDir, 'tributary.yaml');
  if (existsSync(path)) return { path, created: false };
  mkdirSync(dirname(path), { recursive: true });
  const writeKey = `wk_${randomBytes(12).toString('hex')}`;
  writeFileSync(
    path,
    [
      '# Tributary workspace, created by `tributary start`. Edit freely; see docs/configuration.md.',
      'version: 1',
      'sources:',
      '  - id: default',
      '    type: http',
      '    name: Default HTTP source',
      `    writeKey: ${writeKey}`,
      '',
    ].join('\n'),
    { mode: 0o600 },
  );
  return { path, created: true };
}
