import type { ConfigVersionSummary } from '../store/config-versions.js';
import { type AdminOptions, adminRequest } from './admin-client.js';

/** `tributary config versions`: the configuration's versions, newest first, the running one marked. */
export async function configVersionsCommand(
  opts: AdminOptions & { limit?: string; json?: boolean },
): Promise<void> {
  const limit = opts.limit === undefined ? '' : `?limit=${encodeURIComponent(opts.limit)}`;
  const { versions } = await adminRequest<{ versions: ConfigVersionSummary[] }>(
    opts,
    'GET',
    `/admin/v1/config/versions${limit}`,
  );
  if (opts.json) {
    process.stdout.write(`${JSON.stringify(versions)}\n`);
    return;
  }
  const { version } = await adminRequest<{ version: ConfigVersionSummary }>(opts, 'GET', '/admin/v1/config');
  const lines = versions.map(
    (v) =>
      `${v.n === version.n ? '*' : ' '} ${String(v.n).padStart(4)}  ${v.at}  ${v.origin.padEnd(6)}  ${v.author.padEnd(12)}  ${v.message}`,
  );
  process.stdout.write(
    `${['  version  stored at                 origin  author        message', ...lines].join('\n')}\n`,
  );
}
