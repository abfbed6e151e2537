import { dirname } from 'node:path';
import { checkQuality } from '../server/quality-setup.js';
import { checkWebhooks } from '../sources/webhook/index.js';
import { resolveWorkspace } from './workspace.js';

export function configCheckCommand(opts: { config?: string; dataDir?: string }): void {
  const ws = resolveWorkspace({ config: opts.config, dataDir: opts.dataDir }, process.env);
  for (const w of ws.loaded.warnings) process.stderr.write(`warning: ${w}\n`);
  const c = ws.loaded.config;
  checkQuality(c.sources, dirname(ws.loaded.path), c.destinations);
  checkWebhooks(c.sources, dirname(ws.loaded.path));
  process.stdout.write(
    `${ws.loaded.path}: valid (version ${c.version}, ${c.sources.length} source${c.sources.length === 1 ? '' : 's'}, ` +
      `listening on ${c.server.host}:${c.server.port}, data in ${ws.dataDir})\n`,
  );
}
