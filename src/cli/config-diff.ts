import type { ConfigChange } from '../config/config-document.js';
import { type AdminOptions, adminRequest } from './admin-client.js';

/**
 * `tributary config diff [FROM] [TO]`: what changed between two versions, entry by entry and
 * as a unified diff of their YAML. Default: the running version against the one before.
 */
export async function configDiffCommand(
  from: string | undefined,
  to: string | undefined,
  opts: AdminOptions & { json?: boolean },
): Promise<void> {
  const q = new URLSearchParams();
  if (from !== undefined) q.set('from', from);
  if (to !== undefined) q.set('to', to);
  const d = await adminRequest<{ from: number; to: number; changes: ConfigChange[]; diff: string }>(
    opts,
    'GET',
    `/admin/v1/config/diff${q.size > 0 ? `?${q}` : ''}`,
  );
  if (opts.json) {
    process.stdout.write(`${JSON.stringify(d)}\n`);
    return;
  }
  const summary = d.changes.map(
    (c) =>
      `  ${c.change.padEnd(8)} ${c.section}${c.id ? ` ${c.id}` : ''}${c.keys?.length ? ` (${c.keys.join(', ')})` : ''}`,
  );
  process.stdout.write(
    `${[`version ${d.from} → ${d.to}: ${d.changes.length === 0 ? 'no change' : `${d.changes.length} change${d.changes.length === 1 ? '' : 's'}`}`, ...summary, '', d.diff].join('\n')}`,
  );
}
