import type { FailedSummary } from '../pipeline/failed-store.js';
import { type AdminOptions, adminRequest } from './admin-client.js';

export interface FailedListOptions extends AdminOptions {
  source?: string;
  stage?: string;
  code?: string;
  all?: boolean;
  limit?: string;
  json?: boolean;
}

/** `tributary failed list`: the newest failed events, not yet retried unless `--all`. */
export async function failedListCommand(opts: FailedListOptions): Promise<void> {
  const q = new URLSearchParams();
  for (const k of ['source', 'stage', 'code', 'limit'] as const) if (opts[k]) q.set(k, opts[k]);
  if (opts.all) q.set('all', 'true');
  const { failed } = await adminRequest<{ failed: FailedSummary[] }>(opts, 'GET', `/admin/v1/failed?${q}`);
  if (opts.json) process.stdout.write(`${JSON.stringify(failed)}\n`);
  else if (failed.length === 0) process.stdout.write('(no failed events)\n');
  else {
    console.table(
      failed.map((f) => ({
        id: f.id,
        source: f.source_id,
        stage: f.stage,
        code: f.code,
        message_id: f.message_id,
        failed_at: f.failed_at,
        state: f.retry_state,
        reason: f.reason.length > 80 ? `${f.reason.slice(0, 77)}...` : f.reason,
      })),
    );
  }
}
