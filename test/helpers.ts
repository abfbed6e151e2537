import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, expect } from 'vitest';
import { parseConfig } from '../src/config/load.js';
import { type RunningServer, startServer } from '../src/server/server.js';

export const WRITE_KEY = 'wk_web_123';
export const ADMIN_TOKEN = 'test-admin-token';

export const MINIMAL_CONFIG = `version: 1
sources:
  - id: web
    type: http
    writeKey: ${WRITE_KEY}
`;

export interface TestServer extends RunningServer {
  dataDir: string;
  /** Runs SQL through the admin API. */
  query(sql: string): Promise<Record<string, unknown>[]>;
  /** Waits until everything appended so far is in the warehouse. */
  settle(): Promise<void>;
  stop(): Promise<void>;
}

/** Starts an embedded server on a free port with a fresh data folder (or the one given). */
export async function startTestServer(
  opts: { yaml?: string; dataDir?: string; env?: Record<string, string> } = {},
): Promise<TestServer> {
  const dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), 'tributary-test-'));
  const { config } = parseConfig(opts.yaml ?? MINIMAL_CONFIG, opts.env ?? {});
  const server = await startServer({
    config,
    dataDir,
    adminToken: ADMIN_TOKEN,
    logger: pino({ level: 'silent' }),
    port: 0,
    host: '127.0.0.1',
  });
  return Object.assign(server, {
    dataDir,
    async query(sql: string) {
      const res = await server.app.inject({
        method: 'POST',
        url: '/admin/v1/query',
        headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
        payload: JSON.stringify({ sql }),
      });
      if (res.statusCode !== 200) throw new Error(`query failed: ${res.body}`);
      const result = res.json() as { rows: Record<string, unknown>[]; truncated: boolean };
      if (result.truncated) throw new Error(`query result truncated (query.maxRows/maxBytes): ${sql}`);
      return result.rows;
    },
    settle: () => server.loader.drained(),
    async stop() {
      await server.close();
      if (!opts.dataDir) rmSync(dataDir, { recursive: true, force: true });
    },
  });
}

export function basicAuth(key: string): string {
  return `Basic ${Buffer.from(`${key}:`).toString('base64')}`;
}

/** Sends `batch` to `/v1/batch` with the test source's write key and expects a 200. */
export async function sendBatch(
  server: TestServer,
  batch: readonly Record<string, unknown>[],
): Promise<void> {
  const res = await server.app.inject({
    method: 'POST',
    url: '/v1/batch',
    headers: { authorization: basicAuth(WRITE_KEY), 'content-type': 'application/json' },
    payload: JSON.stringify({ batch }),
  });
  expect(res.statusCode, res.body).toBe(200);
}

/** A Jitsu-style `id:secret` write key, for a second source. */
export const JITSU_KEY = 'js.key:s3cret';

/** Two sources: `web` (WRITE_KEY) and `jitsu` (JITSU_KEY). */
export const WEB_AND_JITSU_CONFIG = `${MINIMAL_CONFIG}  - id: jitsu
    type: http
    writeKey: "${JITSU_KEY}"
`;

/** Quoted SQL string literals for an IN list. */
export const sqlList = (ids: readonly string[]) => ids.map((id) => `'${id.replace(/'/g, "''")}'`).join(', ');

/** An `events` row with the library the client named, as the SDK tests read it. */
export interface StoredRow {
  message_id: string;
  source_id: string;
  type: string;
  event: string | null;
  user_id: string | null;
  anonymous_id: string | null;
  library: string | null;
  library_version: string | null;
}

/** The stored events with these messageIds, in messageId order. */
export async function storedRows(server: TestServer, ids: readonly string[]): Promise<StoredRow[]> {
  return (await server.query(
    `SELECT message_id, source_id, type, event, user_id, anonymous_id,
            json_extract_string(payload, '$.context.library.name') AS library,
            json_extract_string(payload, '$.context.library.version') AS library_version
     FROM events WHERE message_id IN (${sqlList(ids)}) ORDER BY message_id`,
  )) as unknown as StoredRow[];
}

/** Servers and folders a test file's tests leave behind, stopped and removed after each test. */
export function cleanupAfterEach(): { servers: TestServer[]; dirs: string[] } {
  const servers: TestServer[] = [];
  const dirs: string[] = [];
  afterEach(async () => {
    for (const s of servers.splice(0)) await s.stop();
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  return { servers, dirs };
}
