import { dirname } from 'node:path';
import { pino } from 'pino';
import { TributaryError } from '../errors.js';
import { startServer } from '../server/server.js';
import { resolveAdminToken, resolveWorkspace, writeServerFile } from './workspace.js';

export interface StartOptions {
  config?: string;
  port?: string;
  host?: string;
  dataDir?: string;
}

export async function startCommand(opts: StartOptions): Promise<void> {
  const env = process.env;
  const logger = pino({ level: env.TRIBUTARY_LOG_LEVEL ?? 'info', base: { service: 'tributary' } });
  const ws = resolveWorkspace({ config: opts.config, dataDir: opts.dataDir, create: true }, env);
  for (const w of ws.loaded.warnings) logger.warn(w);
  const { token, generated } = resolveAdminToken(ws.dataDir, env, true);
  const port = opts.port === undefined ? undefined : parsePort(opts.port);
  const server = await startServer({
    config: ws.loaded.config,
    dataDir: ws.dataDir,
    adminToken: token!,
    logger,
    port,
    host: opts.host,
    configDir: dirname(ws.loaded.path),
    piiSalt: env.TRIBUTARY_PII_SALT || undefined,
    env,
  });

  const removeServerFile = writeServerFile(ws.dataDir, server.url);
  const source = ws.loaded.config.sources.find((s) => s.enabled) ?? ws.loaded.config.sources[0]!;
  const lines = [
    '',
    `Tributary is collecting at ${server.url}`,
    ws.created ? `  created workspace ${ws.loaded.path}` : `  configuration ${ws.loaded.path}`,
    `  data           ${ws.dataDir}`,
    ...ws.loaded.config.sources.map(
      (s) => `  source ${s.id.padEnd(8)} write key ${s.writeKey}${s.enabled ? '' : ' (disabled)'}`,
    ),
    generated
      ? `  admin token    ${token} (generated, kept in ${ws.dataDir}/admin-token; set TRIBUTARY_ADMIN_TOKEN to choose one)`
      : "  admin token    from TRIBUTARY_ADMIN_TOKEN or the workspace's admin-token file",
    '',
    'Send events with @segment/analytics-node:',
    '',
    "  import { Analytics } from '@segment/analytics-node'",
    `  const analytics = new Analytics({ writeKey: '${source.writeKey}', host: '${server.url}' })`,
    "  analytics.track({ userId: 'user-1', event: 'Signed Up', properties: { plan: 'free' } })",
    '',
    `Then: npx tributary query "SELECT type, event, user_id, received_at FROM events ORDER BY received_at DESC LIMIT 10"`,
    '',
  ];
  process.stdout.write(`${lines.join('\n')}\n`);

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) {
      logger.warn({ signal }, 'second signal: exiting without draining');
      process.exit(1);
    }
    stopping = true;
    logger.info({ signal }, 'shutting down: draining requests and the loader');
    server.close().then(
      () => {
        removeServerFile();
        process.exit(0);
      },
      (err) => {
        logger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}

function parsePort(text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0 || n > 65535) {
    throw new TributaryError('TRIB_ERR_CONFIG_INVALID', [
      `  --port: expected an integer 0-65535, got "${text}"`,
    ]);
  }
  return n;
}
