import type { Regulation } from '../governance/privacy/regulation.js';
import { type AdminOptions, adminRequest } from './admin-client.js';

/** `tributary privacy status [ID]`: a deletion request's status per store, or the latest requests. */
export async function privacyStatusCommand(
  id: string | undefined,
  opts: AdminOptions & { json?: boolean },
): Promise<void> {
  if (id === undefined) {
    const { deletions } = await adminRequest<{ deletions: Regulation[] }>(
      opts,
      'GET',
      '/admin/v1/privacy/deletions',
    );
    if (opts.json) {
      process.stdout.write(`${JSON.stringify(deletions)}\n`);
      return;
    }
    for (const r of deletions) process.stdout.write(`${r.id}  ${r.status.padEnd(7)}  ${r.createdAt}\n`);
    return;
  }
  const reg = await adminRequest<Regulation>(
    opts,
    'GET',
    `/admin/v1/privacy/deletions/${encodeURIComponent(id)}`,
  );
  if (opts.json) {
    process.stdout.write(`${JSON.stringify(reg)}\n`);
    return;
  }
  printRegulation(reg);
}

export function printRegulation(reg: Regulation): void {
  const out = [`deletion ${reg.id}: ${reg.status} (requested ${reg.createdAt})`];
  for (const s of reg.steps) {
    out.push(
      `  ${s.store.padEnd(28)} ${s.status.padEnd(7)} attempts ${s.attempts}${s.reason ? `  ${s.reason}` : ''}`,
    );
  }
  process.stdout.write(`${out.join('\n')}\n`);
}
