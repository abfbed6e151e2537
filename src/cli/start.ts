import cluster from 'node:cluster';
import { readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { type Logger, pino } from 'pino';
import { isScaleOut, type TributaryConfig } from '../config/schema.js';
import { TributaryError } from '../errors.js';
import { workspaceSalt } from '../server/quality-setup.js';
import { type Role, startScaleOut } from '../server/scale-out.js';
import { startServer } from '../server/server.js';
import { resolveAdminToken, resolveWorkspace, writeServerFile } from './workspace.js';

export interface StartOptions {
  config?: string;
  port?: string;
  host?: string;
  dataDir?: string;
  role?: string;
  processes?: string;
}

const ROLES = ['ingest', 'worker', 'all'] as const;

export async function startCommand(opts: StartOptions): Promise<void> {
  const env = process.env;
  const logger = pino({
    level: env.TRIBUTARY_LOG_LEVEL ?? 'info',
    base: { service: 'tributary', ...(cluster.isWorker ? { pid: process.pid } : {}) },
  });
  const ws = resolveWorkspace({ config: opts.config, dataDir: opts.dataDir, create: true }, env);
  if (cluster.isPrimary) for (const w of ws.loaded.warnings) logger.warn(w);
  const { token, generated } = resolveAdminToken(ws.dataDir, env, true);
  const port = opts.port === undefined ? undefined : parsePort(opts.port);
  const role = parseRole(opts.role);
  const processes = parseProcesses(opts.processes);
  const config = ws.loaded.config;
  if (!isScaleOut(config)) {
    if (role !== 'all' || processes !== 1) {
      throw new TributaryError('TRIB_ERR_CONFIG_INVALID', [
        '  --role and --processes need the scale-out configuration (log.type "nats", state.type "postgres"; docs/operations.md)',
      ]);
    }
  } else {
    if (processes > 1 && role !== 'ingest') {
      throw new TributaryError('TRIB_ERR_CONFIG_INVALID', [
        '  --processes: only ingest processes share a port; start more workers as separate processes',
      ]);
    }
    if (cluster.isPrimary && !env.TRIBUTARY_PII_SALT) {
      logger.warn(
        "TRIBUTARY_PII_SALT is not set: PII hashes use this data folder's salt; give every process of the workspace the same one (docs/operations.md)",
      );
    }
    if (cluster.isPrimary && !env.TRIBUTARY_ADMIN_TOKEN && role !== 'worker') {
      logger.warn(
        "TRIBUTARY_ADMIN_TOKEN is not set: this process uses its data folder's token; give every ingest process the same one",
      );
    }
    const salt = env.TRIBUTARY_PII_SALT || workspaceSalt(ws.dataDir);
    if (processes > 1 && cluster.isPrimary) {
      if ((port ?? config.server.port) === 0) {
        throw new TributaryError('TRIB_ERR_CONFIG_INVALID', [
          '  --processes: the processes share one port; give a fixed one, not 0',
        ]);
      }
      superviseIngest(processes, logger, { ...env, TRIBUTARY_ADMIN_TOKEN: token!, TRIBUTARY_PII_SALT: salt });
      printBanner(config, ws, {
        url: `http://${displayHost(opts.host ?? config.server.host)}:${port ?? config.server.port}`,
        token: token!,
        generated,
        role,
        processes,
      });
      return;
    }
    const server = await startScaleOut({
      role,
      config,
      dataDir: ws.dataDir,
      adminToken: token!,
      logger,
      port: role === 'worker' ? port : (port ?? config.server.port),
      host: opts.host,
      configDir: dirname(ws.loaded.path),
      piiSalt: salt,
      env,
    });
    if (cluster.isWorker && server.firstOwner)
      process.stdout.write(`${ownerLines(server.firstOwner).join('\n')}\n`);
    if (cluster.isPrimary) {
      if (role !== 'worker') {
        printBanner(config, ws, {
          url: server.url!,
          token: token!,
          generated,
          role,
          processes,
          firstOwner: server.firstOwner,
        });
      } else {
        const at = server.url ? `; health and metrics at ${server.url}` : '';
        process.stdout.write(`Tributary worker running${at}\n`);
      }
    }
    onSignals(logger, () => server.close());
    return;
  }
  const server = await startServer({
    config,
    dataDir: ws.dataDir,
    adminToken: token!,
    logger,
    port,
    host: opts.host,
    configDir: dirname(ws.loaded.path),
    piiSalt: env.TRIBUTARY_PII_SALT || undefined,
    env,
    // The server keeps the configuration's versions: the file wins when it changed, else the latest runs.
    configFile: { text: readFileSync(ws.loaded.path, 'utf8'), path: ws.loaded.path },
  });

  const removeServerFile = writeServerFile(ws.dataDir, server.url);
  printBanner(server.config, ws, {
    url: server.url,
    token: token!,
    generated,
    role,
    processes,
    firstOwner: server.firstOwner,
  });
  onSignals(logger, async () => {
    await server.close();
    removeServerFile();
  });
}

function printBanner(
  config: TributaryConfig,
  ws: ReturnType<typeof resolveWorkspace>,
  o: {
    url: string;
    token: string;
    generated: boolean;
    role: Role;
    processes: number;
    firstOwner?: { name: string; password: string };
  },
): void {
  const http = config.sources.filter((s) => s.type === 'http');
  const source = http.find((s) => s.enabled) ?? http[0];
  const lines = [
    '',
    `Tributary is collecting at ${o.url}`,
    ws.created ? `  created workspace ${ws.loaded.path}` : `  configuration ${ws.loaded.path}`,
    isScaleOut(config)
      ? `  role           ${o.role}${o.processes > 1 ? ` (${o.processes} processes sharing the port)` : ''}, log on NATS JetStream, state on PostgreSQL`
      : `  data           ${ws.dataDir}`,
    ...config.sources.map(
      (s) =>
        `  source ${s.id.padEnd(8)} ${s.type === 'http' ? `write key ${s.writeKey}` : s.type === 'webhook' ? `webhook ${o.url}/webhooks/${s.id}` : `${s.type} source`}${s.enabled ? '' : ' (disabled)'}`,
    ),
    o.generated
      ? `  admin token    ${o.token} (generated, kept in ${ws.dataDir}/admin-token; set TRIBUTARY_ADMIN_TOKEN to choose one)`
      : "  admin token    from TRIBUTARY_ADMIN_TOKEN or the workspace's admin-token file",
    ...(o.firstOwner ? ownerLines(o.firstOwner) : []),
    ...(source
      ? [
          '',
          'Send events with @segment/analytics-node:',
          '',
          "  import { Analytics } from '@segment/analytics-node'",
          `  const analytics = new Analytics({ writeKey: '${source.writeKey}', host: '${o.url}' })`,
          "  analytics.track({ userId: 'user-1', event: 'Signed Up', properties: { plan: 'free' } })",
        ]
      : []),
    '',
    `Then: npx tributary query "SELECT type, event, user_id, received_at FROM events ORDER BY received_at DESC LIMIT 10"`,
    '',
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

/** The first owner's credentials, printed once: the password is kept nowhere else. */
function ownerLines(owner: { name: string; password: string }): string[] {
  return [
    `  first owner    user "${owner.name}", password ${owner.password} (shown once: log in and keep it, or add users with "tributary users add")`,
  ];
}

/** Drains on SIGINT / SIGTERM; a second signal exits at once. */
function onSignals(logger: Logger, close: () => Promise<void>): void {
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) {
      logger.warn({ signal }, 'second signal: exiting without draining');
      process.exit(1);
    }
    stopping = true;
    logger.info({ signal }, 'shutting down: draining requests and the pipeline');
    close().then(
      () => process.exit(0),
      (err) => {
        logger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}

/**
 * Runs `processes` ingest processes sharing one port (node:cluster: this process accepts the
 * connections and hands them out). One that dies, even by kill -9, is replaced; its clients
 * see a failed request and retry. A signal is passed on, and this process exits once all have.
 */
function superviseIngest(processes: number, logger: Logger, env: NodeJS.ProcessEnv): void {
  let stopping = false;
  const fork = () => cluster.fork(env);
  cluster.on('exit', (worker, code, signal) => {
    if (stopping) {
      if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(0);
      return;
    }
    logger.warn({ pid: worker.process.pid, code, signal }, 'ingest process died; starting another');
    fork();
  });
  for (let i = 0; i < processes; i++) fork();
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) process.exit(1);
    stopping = true;
    logger.info({ signal }, 'shutting down the ingest processes');
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill(signal);
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}

function displayHost(host: string): string {
  return host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
}

function parseRole(text: string | undefined): Role {
  if (text === undefined) return 'all';
  if ((ROLES as readonly string[]).includes(text)) return text as Role;
  throw new TributaryError('TRIB_ERR_CONFIG_INVALID', [
    `  --role: expected ingest, worker or all, got "${text}"`,
  ]);
}

function parseProcesses(text: string | undefined): number {
  if (text === undefined) return 1;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1 || n > 256) {
    throw new TributaryError('TRIB_ERR_CONFIG_INVALID', [
      `  --processes: expected an integer 1-256, got "${text}"`,
    ]);
  }
  return n;
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
