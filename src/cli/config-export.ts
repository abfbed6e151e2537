import { writeFileSync } from 'node:fs';
import type { ConfigVersionSummary } from '../store/config-versions.js';
import { type AdminOptions, adminRequest } from './admin-client.js';

/**
 * `tributary config export [-o FILE] [--version N]`: the running version (or version N) as
 * YAML, `${ENV}` references as written, to commit to git. Exported over the configuration
 * file, it makes the file and the running version the same again.
 */
export async function configExportCommand(
  opts: AdminOptions & { output?: string; version?: string },
): Promise<void> {
  const n =
    opts.version ??
    String(
      (await adminRequest<{ version: ConfigVersionSummary }>(opts, 'GET', '/admin/v1/config')).version.n,
    );
  const v = await adminRequest<{ version: ConfigVersionSummary; yaml: string }>(
    opts,
    'GET',
    `/admin/v1/config/versions/${encodeURIComponent(n)}`,
  );
  if (opts.output === undefined || opts.output === '-') {
    process.stdout.write(v.yaml);
    return;
  }
  writeFileSync(opts.output, v.yaml, { mode: 0o600 });
  process.stderr.write(`version ${v.version.n} written to ${opts.output}\n`);
}
