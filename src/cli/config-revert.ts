import type { ConfigChange } from '../config/config-document.js';
import type { ConfigVersionSummary } from '../store/config-versions.js';
import { type AdminOptions, adminRequest } from './admin-client.js';

/**
 * `tributary config revert N`: a new version equal to version N, applied to the running
 * server. Sent against the version running when the command read it (If-Match), so a change
 * made meanwhile by someone else is not undone unseen.
 */
export async function configRevertCommand(
  n: string,
  opts: AdminOptions & { message?: string },
): Promise<void> {
  const { version: running } = await adminRequest<{ version: ConfigVersionSummary }>(
    opts,
    'GET',
    '/admin/v1/config',
  );
  const q = opts.message ? `?message=${encodeURIComponent(opts.message)}` : '';
  const r = await adminRequest<{ version: ConfigVersionSummary; changes: ConfigChange[] }>(
    opts,
    'POST',
    `/admin/v1/config/revert/${encodeURIComponent(n)}${q}`,
    undefined,
    { 'if-match': `"${running.n}"` },
  );
  const what =
    r.changes.map((c) => `${c.change} ${c.section}${c.id ? ` ${c.id}` : ''}`).join(', ') || 'no change';
  process.stdout.write(`version ${r.version.n} (${r.version.message}) is running: ${what}\n`);
}
