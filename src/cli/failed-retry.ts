import type { RetryOutcome } from '../pipeline/failed-store.js';
import { type AdminOptions, adminRequest } from './admin-client.js';

export interface FailedRetryOptions extends AdminOptions {
  source?: string;
  stage?: string;
  code?: string;
  wait?: boolean;
  json?: boolean;
}

/**
 * `tributary failed retry [ID...] [--source S] [--stage S] [--code C]`: sends failed events
 * through the current rules again; `--wait` reports whether each was recovered.
 */
export async function failedRetryCommand(ids: string[], opts: FailedRetryOptions): Promise<void> {
  const { results } = await adminRequest<{ results: RetryOutcome[] }>(
    opts,
    'POST',
    '/admin/v1/failed/retry',
    {
      ids: ids.length > 0 ? ids : undefined,
      source: opts.source,
      stage: opts.stage,
      code: opts.code,
      wait: opts.wait === true,
    },
  );
  if (opts.json) {
    process.stdout.write(`${JSON.stringify(results)}\n`);
    return;
  }
  const count = (s: RetryOutcome['status']) => results.filter((r) => r.status === s).length;
  for (const r of results) {
    const extra = r.newId ? ` (failed again as ${r.newId})` : r.reason ? ` (${r.reason})` : '';
    process.stdout.write(`${r.id}  ${r.status}${extra}\n`);
  }
  process.stdout.write(
    opts.wait
      ? `${results.length} chosen: ${count('recovered')} recovered, ${count('failed')} failed again, ${count('skipped')} skipped\n`
      : `${results.length} chosen: ${count('sent')} sent through the pipeline, ${count('skipped')} skipped\n`,
  );
}
