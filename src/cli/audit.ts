import type { StoredAuditEntry } from '../store/governance-store.js';
import { type AdminOptions, adminRequest } from './admin-client.js';

export interface AuditOptions extends AdminOptions {
  since?: string;
  actor?: string;
  action?: string;
  outcome?: string;
  limit?: string;
  json?: boolean;
}

type Entry = Omit<StoredAuditEntry, 'at'> & { at: string };

/** `tributary audit [--since 24h] [--actor NAME] [--action users.] [--outcome denied] [--json]`: newest first. */
export async function auditCommand(opts: AuditOptions): Promise<void> {
  const q = new URLSearchParams();
  for (const k of ['since', 'actor', 'action', 'outcome', 'limit'] as const) if (opts[k]) q.set(k, opts[k]);
  const { entries } = await adminRequest<{ entries: Entry[] }>(opts, 'GET', `/admin/v1/audit?${q}`);
  if (opts.json) process.stdout.write(`${JSON.stringify(entries)}\n`);
  else if (entries.length === 0) process.stdout.write('(no audit entries)\n');
  else
    console.table(
      entries.map((e) => ({
        at: e.at,
        actor: e.actorName ?? e.actorKind,
        role: e.role ?? '',
        ip: e.ip ?? '',
        action: e.action,
        target: short(e.target ?? ''),
        outcome: e.code ? `${e.outcome} ${e.code}` : e.outcome,
        details: short(e.details ? JSON.stringify(e.details) : ''),
      })),
    );
}

function short(text: string): string {
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}
