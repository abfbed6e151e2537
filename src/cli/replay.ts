import type { ReplayRunView } from '../destinations/replay/replay-service.js';
import { type AdminOptions, adminRequest } from './admin-client.js';

export interface ReplayCliOptions extends AdminOptions {
  source: string;
  from: string;
  to: string;
  destination?: string[];
  dryRun?: boolean;
  rate?: string;
  json?: boolean;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function line(r: ReplayRunView): string {
  const p = r.progress;
  const counts = p
    ? `read ${p.read}  passed ${p.passed}  failed ${p.failed}  filtered ${p.filtered}  rejected ${p.rejected}  duplicates ${p.duplicates}  ${r.dryRun ? 'would deliver' : 'delivered'} ${p.delivered}`
    : `read ${r.read}  passed ${r.passed}  failed ${r.failed}  ${r.dryRun ? 'would deliver' : 'delivered'} ${r.delivered}`;
  return `${r.status.padEnd(7)} ${counts}`;
}

/**
 * `tributary replay --source S --from T1 --to T2 [--destination D] [--dry-run] [--rate N]`:
 * starts the replay on the running server and prints its progress until it ends.
 */
export async function replayCommand(opts: ReplayCliOptions): Promise<void> {
  const rate = opts.rate === undefined ? undefined : Number(opts.rate);
  const { runId } = await adminRequest<{ runId: string }>(opts, 'POST', '/admin/v1/replay', {
    source: opts.source,
    from: opts.from,
    to: opts.to,
    ...(opts.destination?.length ? { destinations: opts.destination } : {}),
    dryRun: opts.dryRun === true,
    ...(rate === undefined ? {} : { rate }),
    requestedBy: `cli (${process.env.USER ?? 'unknown user'})`,
  });
  if (!opts.json)
    process.stderr.write(`replay ${runId}${opts.dryRun ? ' (dry run: nothing is written)' : ''}\n`);
  for (;;) {
    const r = await adminRequest<ReplayRunView>(opts, 'GET', `/admin/v1/replay/${runId}`);
    if (r.status !== 'running') {
      if (opts.json) process.stdout.write(`${JSON.stringify(r)}\n`);
      else {
        process.stdout.write(`${line(r)}\n`);
        for (const [id, d] of Object.entries(r.progress?.destinations ?? {}))
          process.stdout.write(
            `  ${id}: ${d.delivered} ${r.dryRun ? 'would be delivered' : 'delivered'}, ${d.failed} failed\n`,
          );
        if (r.error) process.stdout.write(`error: ${r.error}\n`);
      }
      if (r.status === 'failed') process.exitCode = 1;
      return;
    }
    if (!opts.json && process.stderr.isTTY) process.stderr.write(`\r${line(r)}`);
    await sleep(500);
  }
}
