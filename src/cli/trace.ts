import type { TraceReport } from '../observe/lineage/trace.js';
import { type AdminOptions, adminRequest } from './admin-client.js';

const short = (v: unknown, max = 160) => {
  const t = typeof v === 'string' ? v : JSON.stringify(v);
  return t.length > max ? `${t.slice(0, max - 1)}…` : t;
};

/** The trace as people read it: one section per step of the path. */
export function formatTrace(t: TraceReport): string {
  const out: string[] = [`message ${t.messageId}`];
  out.push('', 'received');
  if (t.records.length === 0)
    out.push('  (no record in the event log: the log of this deployment has no archive)');
  for (const r of t.records) {
    const code = r.code ? ` ${r.code}${r.reason ? `: ${r.reason}` : ''}` : '';
    out.push(
      `  offset ${r.logOffset}  source ${r.sourceId}  at ${r.receivedAt}  ${r.status}${code}  → ${r.outcome}`,
    );
    out.push(`    raw ${short(r.raw)}`);
  }
  if (t.failures.length > 0) {
    out.push('', 'failed');
    for (const f of t.failures) {
      out.push(`  stage ${f.stage}  ${f.code}  ${f.reason}`);
      out.push(
        `    id ${f.id}  source ${f.source_id}  at ${f.failed_at}  ${f.retry_state}${f.retry_of ? `  retry of ${f.retry_of}` : ''}`,
      );
    }
  }
  for (const e of t.events) {
    out.push(
      '',
      `accepted into events (offset ${e.logOffset}, source ${e.sourceId}, received ${e.receivedAt}${e.messageId === t.messageId ? '' : `, as message ${e.messageId}`})`,
    );
    if (e.mapped.length > 0) out.push(`  mapping   ${short(e.mapped)}`);
    if (e.violations.length > 0) out.push(`  plan      violations ${short(e.violations)}`);
    const id = e.identity;
    if (id) {
      const d = id.decision;
      out.push(`  identity  identifiers ${id.identifiers.join(', ') || '(none)'}`);
      if (d) {
        out.push(
          `            ${d.action}${d.limited ? ' (limited)' : ''} → profile ${d.profileId ?? '(none)'}${id.profileId && id.profileId !== d.profileId ? `, now ${id.profileId}` : ''}  rule ${d.rule}`,
        );
        for (const l of d.leftOut) out.push(`            left out ${short(l)}`);
      } else out.push('            not resolved yet');
      for (const m of id.merges)
        out.push(
          `            merged ${m.mergedProfileId} into ${m.profileId} (merge ${m.mergeId}; ${m.mergedIdentifiers.join(', ')})`,
        );
      for (const m of id.laterMerges)
        out.push(`            later merged into ${m.profileId} by ${m.messageId} (merge ${m.mergeId})`);
    }
    for (const w of e.warehouses) {
      out.push(
        `  ${w.type} ${w.destination}  ${w.loaded ? 'loaded' : 'not loaded yet'}${w.error ? `  (rows not read: ${w.error})` : ''}`,
      );
      for (const r of w.rows) out.push(`    ${r.schema}.${r.table}  ${short(r.row)}`);
    }
  }
  if (t.attempts.length > 0) {
    out.push('', 'delivery attempts');
    for (const a of t.attempts)
      out.push(
        `  ${a.destination}  #${a.attempt}  ${a.at}  ${a.status}  ${Math.round(a.latencyMs)} ms${a.detail ? `  ${short(a.detail, 120)}` : ''}`,
      );
  }
  return out.join('\n');
}

/** `tributary trace MESSAGE_ID`: one message's whole path, from the running server. */
export async function traceCommand(
  messageId: string,
  opts: AdminOptions & { json?: boolean },
): Promise<void> {
  const t = await adminRequest<TraceReport>(opts, 'GET', `/admin/v1/trace/${encodeURIComponent(messageId)}`);
  process.stdout.write(opts.json ? `${JSON.stringify(t)}\n` : `${formatTrace(t)}\n`);
}
