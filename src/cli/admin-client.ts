import { existsSync } from 'node:fs';
import { configPath, readServerFile, resolveAdminToken, resolveWorkspace } from './workspace.js';

/**
 * Options every verb that talks to the running server takes. `token` replaces the admin
 * token (for the Profile API's read token).
 */
export interface AdminOptions {
  url?: string;
  config?: string;
  dataDir?: string;
  token?: string;
}

/**
 * Where the running server is: `--url`, else `TRIBUTARY_URL`, else the address the
 * workspace's running server recorded (it may have been started with `--port`), else the
 * configured port on 127.0.0.1; and the admin token to send it.
 */
export function resolveServer(
  opts: AdminOptions,
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

/**
 * One request to the server at `url` with a JSON body and answer.
 * @throws Error naming the server when it cannot be reached, or with the server's code and
 *   message on an error answer.
 */
export async function serverRequest<T>(
  url: string,
  method: AdminMethod,
  path: string,
  body: unknown,
  authorization: string | undefined,
  headers: Record<string, string> = {},
): Promise<T> {
  let res: Response;
  try {
    res = await fetch(`${url}${path}`, {
      method,
      headers: {
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        ...(authorization ? { authorization } : {}),
        ...headers,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new Error(
      `cannot reach the Tributary server at ${url} (${(err as Error).cause ?? (err as Error).message}); start it with "npm start" or pass --url`,
    );
  }
  const answer = (await res.json()) as T & { code?: string; message?: string };
  if (!res.ok) throw new Error(`${answer.code ?? res.status}: ${answer.message ?? res.statusText}`);
  return answer;
}

export type AdminMethod = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

/**
 * Calls the running server's admin API (found as `tributary query` does), with `--token`, else
 * `TRIBUTARY_TOKEN` (an API token of one's own, `tributary tokens create`), else the admin token.
 */
export function adminRequest<T>(
  opts: AdminOptions,
  method: AdminMethod,
  path: string,
  body?: unknown,
  headers?: Record<string, string>,
): Promise<T> {
  const server = resolveServer(opts, process.env);
  const token = opts.token ?? (process.env.TRIBUTARY_TOKEN || undefined) ?? server.token;
  return serverRequest<T>(server.url, method, path, body, token ? `Bearer ${token}` : undefined, headers);
}

/**
 * Rows of a SQL query on the server's warehouse; `truncated` when the server's limits
 * (`query.maxRows`, `query.maxBytes`) cut the result.
 */
export async function adminQuery(
  opts: AdminOptions,
  sql: string,
): Promise<{ rows: Record<string, unknown>[]; truncated: boolean }> {
  const r = await adminRequest<{ rows: Record<string, unknown>[]; truncated?: boolean }>(
    opts,
    'POST',
    '/admin/v1/query',
    { sql },
  );
  return { rows: r.rows, truncated: r.truncated === true };
}
