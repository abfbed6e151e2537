import { dirname } from 'node:path';
import { checkConfig } from '../server/reconfigure.js';
import { resolveWorkspace } from './workspace.js';

export function configCheckCommand(opts: { config?: string; dataDir?: string }): void {
  const ws = resolveWorkspace({ config: opts.config, dataDir: opts.dataDir }, process.env);
  for (const w of ws.loaded.warnings) process.stderr.write(`warning: ${w}\n`);
  const c = ws.loaded.config;
  // The checks a change through the admin API gets too.
  checkConfig(c, dirname(ws.loaded.path), ws.dataDir);
  process.stdout.write(
    `${ws.loaded.path}: valid (version ${c.version}, ${c.sources.length} source${c.sources.length === 1 ? '' : 's'}, ` +
      `listening on ${c.server.host}:${c.server.port}, data in ${ws.dataDir})\n`,
  );
}
