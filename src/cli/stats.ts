import type { DeliveryProgress } from '../destinations/delivery/delivery-metrics.js';
import type { SourceStats } from '../observe/stats.js';
import { type AdminOptions, adminRequest } from './admin-client.js';

/** `tributary stats`: the reconciled counts per source and stage since the server started. */
export async function statsCommand(opts: AdminOptions & { json?: boolean }): Promise<void> {
  const { sources, destinations = [] } = await adminRequest<{
    sources: SourceStats[];
    destinations?: DeliveryProgress[];
  }>(opts, 'GET', '/admin/v1/stats');
  if (opts.json) {
    process.stdout.write(`${JSON.stringify(sources)}\n`);
    return;
  }
  const out: string[] = [];
  for (const s of sources) {
    out.push(
      `source ${s.source}`,
      `  received ${s.received} = accepted ${s.accepted} + rejected ${s.rejected}`,
      `  accepted ${s.accepted} = passed ${s.passed} + blocked ${s.blocked} + failed ${s.failed} + pending ${s.pending}`,
    );
    for (const [code, n] of Object.entries(s.rejectedByCode)) out.push(`  rejected  ${code}: ${n}`);
    for (const [stage, outcomes] of Object.entries(s.byStage)) {
      out.push(
        `  stage ${stage.padEnd(9)} ${Object.entries(outcomes)
          .map(([o, n]) => `${o} ${n}`)
          .join(', ')}`,
      );
    }
  }
  for (const d of destinations) {
    out.push(
      `destination ${d.destination} (${d.type})`,
      `  delivered ${d.delivered}, failed ${d.failed}, retried ${d.retried}, filtered ${d.filtered}, consent-blocked ${d.consentBlocked}`,
      `  queued ${d.queued} (oldest ${Math.round(d.oldestQueuedMs / 1000)} s), log lag ${d.lag}, breaker ${d.breaker}${d.lastError ? `, last error: ${d.lastError}` : ''}`,
    );
  }
  process.stdout.write(`${out.join('\n')}\n`);
}
