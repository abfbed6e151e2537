import { existsSync } from 'node:fs';
import { configPath, readServerFile, resolveAdminToken, resolveWorkspace } from './workspace.js';

export interface QueryOptions {
  json?: boolean;
  url?: string;
  config?: string;
  dataDir?: string;
}

/**
 * Where the running server is: `--url`, else `TRIBUTARY_URL`, else the address the
 * workspace's running server recorded (it may have been started with `--port`), else the
 * configured port on 127.0.0.1; and the admin token to send it.
 */
export function resolveServer(
  opts: QueryOptions,
  env: NodeJS.ProcessEnv,
): { url: string; token: string | undefined } {
  let ws: ReturnType<typeof resolveWorkspace> | undefined;
  // Without a readable configuration the defaults (127.0.0.1:8080) still apply.
  if (existsSync(configPath(opts))) {
    try {
      ws = resolveWorkspace(opts, env);
    } catch {
      ws = undefined;
    }
  }
  const url = (
    opts.url ??
    (env.TRIBUTARY_URL || undefined) ??
    (ws && readServerFile(ws.dataDir)) ??
    `http://127.0.0.1:${ws?.loaded.config.server.port ?? 8080}`
  ).replace(/\/$/, '');
  const token =
    env.TRIBUTARY_ADMIN_TOKEN || (ws ? resolveAdminToken(ws.dataDir, env, false).token : undefined);
  return { url, token };
}

export async function queryCommand(sql: string, opts: QueryOptions): Promise<void> {
  const { url, token } = resolveServer(opts, process.env);
  let res: Response;
  try {
    res = await fetch(`${url}/admin/v1/query`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify({ sql }),
    });
  } catch (err) {
    throw new Error(
      `cannot reach the Tributary server at ${url} (${(err as Error).cause ?? (err as Error).message}); start it with "npm start" or pass --url`,
    );
  }
  const body = (await res.json()) as { rows?: Record<string, unknown>[]; code?: string; message?: string };
  if (!res.ok) throw new Error(`${body.code ?? res.status}: ${body.message ?? res.statusText}`);
  const rows = body.rows ?? [];
  if (opts.json) process.stdout.write(`${JSON.stringify(rows)}\n`);
  else if (rows.length === 0) process.stdout.write('(no rows)\n');
  else console.table(rows);
}
