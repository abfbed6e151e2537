import { readFileSync } from 'node:fs';
import type { Regulation } from '../governance/privacy/regulation.js';
import { type AdminOptions, adminRequest } from './admin-client.js';
import { printRegulation } from './privacy-status.js';

/**
 * `tributary privacy delete user_id:u1 email:ada@example.com …`: asks the running server to
 * delete these people everywhere and suppress their later events (1 to 5,000 identities per
 * request; `--file` reads one `type:value` a line). Prints the request's id and steps.
 */
export async function privacyDeleteCommand(
  identities: string[],
  opts: AdminOptions & { file?: string; json?: boolean },
): Promise<void> {
  const all = [...identities];
  if (opts.file) {
    for (const line of readFileSync(opts.file, 'utf8').split(/\r?\n/))
      if (line.trim() !== '') all.push(line.trim());
  }
  const reg = await adminRequest<Regulation>(opts, 'POST', '/admin/v1/privacy/deletions', {
    identities: all,
  });
  if (opts.json) {
    process.stdout.write(`${JSON.stringify(reg)}\n`);
    return;
  }
  process.stdout.write(
    `deletion ${reg.id} requested for ${all.length} identities; follow it with: tributary privacy status ${reg.id}\n`,
  );
  printRegulation(reg);
}
