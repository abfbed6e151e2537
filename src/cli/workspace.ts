import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ensureWorkspaceConfig, type LoadedConfig, loadConfigFile } from '../config/load.js';

export const DEFAULT_DATA_DIR = '.tributary';

export interface WorkspaceOptions {
  config?: string;
  dataDir?: string;
  /** Create `<dataDir>/tributary.yaml` when no configuration exists. */
  create?: boolean;
}

export interface Workspace {
  loaded: LoadedConfig;
  dataDir: string;
  created: boolean;
}

const LOCAL_CONFIG = 'tributary.yaml';

/** Where the configuration is looked for (see `resolveWorkspace`); the file may not exist. */
export function configPath(opts: Pick<WorkspaceOptions, 'config' | 'dataDir'>): string {
  if (opts.config) return opts.config;
  if (existsSync(LOCAL_CONFIG)) return LOCAL_CONFIG;
  return join(opts.dataDir ?? DEFAULT_DATA_DIR, 'tributary.yaml');
}

/**
 * Finds the configuration: `--config FILE`, else `./tributary.yaml`, else
 * `<data-dir>/tributary.yaml` (created with one HTTP source when `create` is set).
 */
export function resolveWorkspace(opts: WorkspaceOptions, env: NodeJS.ProcessEnv): Workspace {
  const created =
    !opts.config && !existsSync(LOCAL_CONFIG) && opts.create === true
      ? ensureWorkspaceConfig(opts.dataDir ?? DEFAULT_DATA_DIR).created
      : false;
  const loaded = loadConfigFile(resolve(configPath(opts)), env);
  const dataDir = resolve(opts.dataDir ?? loaded.config.storage.dataDir);
  return { loaded, dataDir, created };
}

/**
 * The admin token: `TRIBUTARY_ADMIN_TOKEN`, else the one kept in `<dataDir>/admin-token`,
 * else a new one written there (mode 0600) and reported as generated.
 */
export function resolveAdminToken(
  dataDir: string,
  env: NodeJS.ProcessEnv,
  create: boolean,
): { token: string | undefined; generated: boolean } {
  if (env.TRIBUTARY_ADMIN_TOKEN) return { token: env.TRIBUTARY_ADMIN_TOKEN, generated: false };
  const file = join(dataDir, 'admin-token');
  if (existsSync(file)) return { token: readFileSync(file, 'utf8').trim(), generated: false };
  if (!create) return { token: undefined, generated: false };
  mkdirSync(dataDir, { recursive: true });
  const token = `tka_${randomBytes(24).toString('base64url')}`;
  writeFileSync(file, `${token}\n`, { mode: 0o600 });
  return { token, generated: true };
}

/** `<dataDir>/server.json`: where the workspace's running server listens, for the other verbs. */
export function writeServerFile(dataDir: string, url: string): () => void {
  const file = join(dataDir, 'server.json');
  writeFileSync(file, `${JSON.stringify({ url, pid: process.pid })}\n`);
  return () => rmSync(file, { force: true });
}

/** The URL of the workspace's server if its process is still alive. */
export function readServerFile(dataDir: string): string | undefined {
  try {
    const { url, pid } = JSON.parse(readFileSync(join(dataDir, 'server.json'), 'utf8')) as {
      url: string;
      pid: number;
    };
    process.kill(pid, 0);
    return url;
  } catch {
    return undefined;
  }
}
