import { type QueryOptions, resolveServer } from './query.js';

/**
 * Options every verb that talks to the running server takes. `token` replaces the admin
 * token (for the Profile API's read token).
 */
export type AdminOptions = Pick<QueryOptions, 'url' | 'config' | 'dataDir'> & { token?: string };

/**
 * Calls the running server's admin API (found and authorised as `tributary query` does).
 * @throws Error with the server's code and message on an error answer.
 */
export async function adminRequest<T>(
  opts: AdminOptions,
  method: 'GET' | 'POST',
  path: string,
  body?: unknown,
): Promise<T> {
  const server = resolveServer(opts, process.env);
  const url = server.url;
  const token = opts.token ?? server.token;
  let res: Response;
  try {
    res = await fetch(`${url}${path}`, {
      method,
      headers: {
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        ...(token ? { authorization: `Bearer ${token}` } : {}),
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

/** Rows of a SQL query on the server's warehouse. */
export async function adminQuery(opts: AdminOptions, sql: string): Promise<Record<string, unknown>[]> {
  return (await adminRequest<{ rows: Record<string, unknown>[] }>(opts, 'POST', '/admin/v1/query', { sql }))
    .rows;
}
