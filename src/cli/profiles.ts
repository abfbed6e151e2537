import { adminRequest } from './admin-client.js';
import type { QueryOptions } from './query.js';

export type ProfilesOptions = QueryOptions & { token?: string };

/**
 * Calls the Profile API of the running server, found as `tributary query` finds it. The token
 * is `--token`, else `TRIBUTARY_PROFILE_TOKEN`, else the admin token.
 */
function call(
  opts: ProfilesOptions,
  method: 'GET' | 'POST',
  path: string,
  body?: unknown,
): Promise<Record<string, unknown>> {
  const token = opts.token ?? (process.env.TRIBUTARY_PROFILE_TOKEN || undefined);
  return adminRequest<Record<string, unknown>>({ ...opts, token }, method, path, body);
}

const out = (text: string): void => {
  process.stdout.write(`${text}\n`);
};

export async function profilesGetCommand(
  id: string,
  opts: ProfilesOptions & { events?: string },
): Promise<void> {
  const p = await call(
    opts,
    'GET',
    `/v1/profiles/${encodeURIComponent(id)}?events=${Number(opts.events ?? 10) || 10}`,
  );
  if (opts.json) return out(JSON.stringify(p));
  out(`profile ${p.profileId}  (${p.eventCount} events, ${p.firstSeen} → ${p.lastSeen})`);
  out('identifiers:');
  for (const i of p.identifiers as { type: string; value: string; sourceId: string; firstSeen: string }[])
    out(`  ${i.type}:${i.value}  (from ${i.sourceId}, ${i.firstSeen})`);
  out('traits:');
  for (const [k, v] of Object.entries(p.traits as object)) out(`  ${k}: ${JSON.stringify(v)}`);
  const computed = Object.entries(p.computedTraits as object);
  if (computed.length > 0) {
    out('computed traits:');
    for (const [k, v] of computed) out(`  ${k}: ${JSON.stringify(v)}`);
  }
  out('recent events:');
  for (const e of p.recentEvents as {
    timestamp: string;
    type: string;
    event: string | null;
    messageId: string;
  }[])
    out(`  ${e.timestamp}  ${e.type}${e.event ? ` ${e.event}` : ''}  ${e.messageId}`);
  const merges = p.merges as {
    mergeId: string;
    mergedProfileId: string;
    messageId: string;
    unmergedAt: string | null;
  }[];
  if (merges.length > 0) {
    out('merges:');
    for (const m of merges)
      out(
        `  ${m.mergeId}: ${m.mergedProfileId} merged by ${m.messageId.startsWith('probabilistic:') ? `probabilistic match ${m.messageId.slice(14)}` : `event ${m.messageId}`}${m.unmergedAt ? ` (unmerged ${m.unmergedAt})` : ''}`,
      );
  }
}

export async function profilesSearchCommand(
  trait: string,
  value: string,
  opts: ProfilesOptions & { limit?: string },
): Promise<void> {
  const q = new URLSearchParams({ trait, value, limit: String(Number(opts.limit ?? 50) || 50) });
  const r = await call(opts, 'GET', `/v1/profiles?${q}`);
  const profiles = r.profiles as { profileId: string; traits: Record<string, unknown> }[];
  if (opts.json) return out(JSON.stringify(profiles));
  if (profiles.length === 0) return out('(no profiles)');
  for (const p of profiles) out(`${p.profileId}  ${JSON.stringify(p.traits)}`);
}

export async function profilesExplainCommand(
  a: string,
  b: string | undefined,
  opts: ProfilesOptions,
): Promise<void> {
  const q = b === undefined ? '' : `?with=${encodeURIComponent(b)}`;
  const r = await call(opts, 'GET', `/v1/profiles/${encodeURIComponent(a)}/explain${q}`);
  if (opts.json) return out(JSON.stringify(r));
  out(String(r.summary));
  const path = r.path as { messageId: string; action: string; rule: string }[];
  for (const d of path) out(`  ${d.messageId}: ${d.action}: ${d.rule}`);
  const refused = r.refused as { messageId: string; leftOut: { identifier: string; reason: string }[] }[];
  for (const d of refused)
    out(`  refused in ${d.messageId}: ${d.leftOut.map((l) => `${l.identifier} (${l.reason})`).join(', ')}`);
  if (r.match) out(waterfall(r.match as Waterfall));
  for (const m of (r.matchedBy ?? []) as { pairId: string; mergeId: string | null; evidence?: Waterfall }[]) {
    out(`merged by probabilistic match ${m.pairId} (merge ${m.mergeId ?? '?'})`);
    if (m.evidence) out(waterfall(m.evidence));
  }
}

interface Waterfall {
  prior: number;
  weight: number;
  probability: number;
  fields: {
    field: string;
    left: string | null;
    right: string | null;
    level: string;
    weight: number;
    termFrequency: number;
  }[];
}

const signed = (x: number) => `${x >= 0 ? '+' : ''}${x.toFixed(2)}`;
const shown = (v: string | null) =>
  v === null ? '∅' : JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v);

/** The match weight of a pair, field by field (log2 Bayes factors), as Splink's waterfall chart. */
export function waterfall(w: Waterfall): string {
  const lines = ['match weight (log2 odds):', `  prior                      ${signed(w.prior)}`];
  for (const f of w.fields) {
    const tf = Math.abs(f.termFrequency) < 0.005 ? '' : ` (term frequency ${signed(f.termFrequency)})`;
    lines.push(
      `  ${f.field.padEnd(12)} ${f.level.padEnd(14)} ${signed(f.weight + f.termFrequency)}${tf}   ${shown(f.left)} vs ${shown(f.right)}`,
    );
  }
  lines.push(`  total                      ${signed(w.weight)}   probability ${w.probability.toFixed(4)}`);
  return lines.join('\n');
}

export async function profilesMatchesCommand(
  opts: ProfilesOptions & { status?: string; limit?: string; run?: boolean },
): Promise<void> {
  if (opts.run) {
    const s = await call(opts, 'POST', '/v1/profiles/matches/run');
    if (!opts.json)
      out(
        `matched ${s.records} profiles: ${s.candidatePairs} candidate pairs, ${s.merged} merged, ${s.refused} refused, ${s.review} to review (${Math.round(Number(s.ms))} ms)`,
      );
  }
  const q = new URLSearchParams({
    status: opts.status ?? 'review',
    limit: String(Number(opts.limit ?? 50) || 50),
  });
  const r = await call(opts, 'GET', `/v1/profiles/matches?${q}`);
  const pairs = r.pairs as {
    pairId: string;
    profileA: string;
    profileB: string;
    probability: number;
    status: string;
    reason: string | null;
    evidence?: Waterfall;
  }[];
  if (opts.json) return out(JSON.stringify(pairs));
  if (pairs.length === 0) return out('(no pairs)');
  for (const p of pairs) {
    out(
      `${p.pairId}  ${p.profileA} ~ ${p.profileB}  p=${p.probability.toFixed(4)}  ${p.status}${p.reason ? ` (${p.reason})` : ''}`,
    );
    if (p.evidence) out(waterfall(p.evidence));
  }
}

export async function profilesMatchDecideCommand(
  opts: ProfilesOptions & { accept?: string; reject?: string },
): Promise<void> {
  const [pairId, decision] = opts.accept ? [opts.accept, 'accept'] : [opts.reject!, 'reject'];
  const r = await call(opts, 'POST', `/v1/profiles/matches/${encodeURIComponent(pairId)}/${decision}`);
  if (opts.json) return out(JSON.stringify(r));
  out(`${pairId}: ${r.status}${r.reason ? ` (${r.reason})` : ''}${r.mergeId ? `, merge ${r.mergeId}` : ''}`);
}

export async function profilesUnmergeCommand(
  mergeId: string,
  opts: ProfilesOptions & { block?: boolean },
): Promise<void> {
  const r = await call(opts, 'POST', `/v1/profiles/merges/${encodeURIComponent(mergeId)}/unmerge`, {
    block: opts.block !== false,
  });
  if (opts.json) return out(JSON.stringify(r));
  out(
    `unmerged ${mergeId}: profiles ${(r.profiles as string[]).join(', ')}${r.blocked ? '; the link is blocked' : ''}`,
  );
}
