import { resolveWorkspace } from './workspace.js';

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
