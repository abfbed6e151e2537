import { dirname } from 'node:path';
import { openEmbeddedSources } from '../server/embedded-sources.js';
import type { SourceService } from '../sources/source-service.js';
import { adminRequest } from './admin-client.js';
import { readServerFile, resolveWorkspace } from './workspace.js';

export interface SourcesOptions {
  config?: string;
  dataDir?: string;
  url?: string;
  json?: boolean;
  stream?: string[];
}

export function sourcesListCommand(opts: { config?: string; dataDir?: string; json?: boolean }): void {
  const ws = resolveWorkspace({ config: opts.config, dataDir: opts.dataDir }, process.env);
  const rows = ws.loaded.config.sources.map((s) => ({
    id: s.id,
    type: s.type,
    name: s.name ?? s.id,
    enabled: s.enabled,
    writeKey: s.type === 'http' ? s.writeKey : undefined,
    url: s.type === 'webhook' ? `/webhooks/${s.id}` : undefined,
  }));
  if (opts.json) process.stdout.write(`${JSON.stringify(rows)}\n`);
  else console.table(rows);
}

/**
 * Runs `viaServer` against the workspace's running server (or --url), else `local` on the
 * workspace's own files (check and discover need no files at all).
 */
async function withSources<T>(
  opts: SourcesOptions,
  viaServer: () => Promise<T>,
  local: (sources: SourceService) => Promise<T>,
): Promise<T> {
  const ws = resolveWorkspace({ config: opts.config, dataDir: opts.dataDir }, process.env);
  if (opts.url ?? (process.env.TRIBUTARY_URL || undefined) ?? readServerFile(ws.dataDir)) return viaServer();
  const open = await openEmbeddedSources(ws.loaded.config, ws.dataDir, dirname(ws.loaded.path));
  try {
    return await local(open.sources);
  } finally {
    await open.close();
  }
}

function print(value: unknown, json: boolean | undefined, text: string): void {
  process.stdout.write(json ? `${JSON.stringify(value)}\n` : `${text}\n`);
}

export async function sourcesCheckCommand(id: string, opts: SourcesOptions): Promise<void> {
  const path = `/admin/v1/sources/${encodeURIComponent(id)}/check`;
  const r = await withSources(
    opts,
    () => adminRequest<{ ok: boolean; code?: string; message?: string }>(opts, 'POST', path),
    (s) => s.check(id),
  );
  print(r, opts.json, r.ok ? `source ${id}: ok` : `${r.code}: ${r.message}`);
  if (!r.ok) process.exitCode = 1;
}

export async function sourcesDiscoverCommand(id: string, opts: SourcesOptions): Promise<void> {
  const path = `/admin/v1/sources/${encodeURIComponent(id)}/discover`;
  const catalog = await withSources(
    opts,
    () => adminRequest<Awaited<ReturnType<SourceService['discover']>>>(opts, 'GET', path),
    (s) => s.discover(id),
  );
  const lines = catalog.streams.map(
    (st) =>
      `${st.name} (key: ${st.primaryKey.join(', ') || 'none'})\n${st.columns.map((c) => `  ${c.name.padEnd(24)} ${c.jsonType.padEnd(10)} ${c.sourceType}`).join('\n')}`,
  );
  print(catalog, opts.json, lines.join('\n'));
}

export async function sourcesSyncCommand(id: string, opts: SourcesOptions): Promise<void> {
  const streams = opts.stream?.length ? opts.stream : undefined;
  const q = `?wait=true${streams ? `&stream=${encodeURIComponent(streams.join(','))}` : ''}`;
  const r = await withSources(
    opts,
    () =>
      adminRequest<Awaited<ReturnType<SourceService['sync']>>>(
        opts,
        'POST',
        `/admin/v1/sources/${encodeURIComponent(id)}/sync${q}`,
      ),
    (s) =>
      s.sync(id, {
        trigger: 'cli',
        streams,
        // A line per commit on stderr: what is durable so far.
        onCommit: (p) =>
          process.stderr.write(
            `progress rows=${p.rows} objects=${p.objects} events=${p.events} failed=${p.failed}\n`,
          ),
      }),
  );
  print(
    r,
    opts.json,
    `sync of ${id} ${r.status}: ${r.rows} rows, ${r.objects} objects, ${r.events} events, ${r.failed} failed${r.error ? `\n${r.error}` : ''}`,
  );
  if (r.status !== 'succeeded') process.exitCode = 1;
}
