/** Formatting of the ingest benchmark's results. */

export interface RunRow {
  server: 'bare' | 'tributary';
  scenario: string;
  connections: number;
  eventsPerRequest: number;
  requestsPerS: number;
  eventsPerS: number;
  p50Ms: number;
  p99Ms: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  peakRssBytes: number;
  serverCpu: number;
  generatorCpu: number;
  otherCpu: number;
}

export function int(n: number): string {
  return Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : 'n/a';
}

export function ms(n: number): string {
  if (!Number.isFinite(n)) return 'n/a';
  return n < 10 ? n.toFixed(2) : n.toFixed(1);
}

export function mb(bytes: number): string {
  return Number.isFinite(bytes) && bytes > 0 ? `${(bytes / 1024 / 1024).toFixed(0)} MB` : 'n/a';
}

export function pct(share: number): string {
  return Number.isFinite(share) ? `${(share * 100).toFixed(0)}%` : 'n/a';
}

export function markdownTable(headers: string[], rows: string[][], align: ('l' | 'r')[]): string {
  const line = (cells: string[]) => `| ${cells.join(' | ')} |`;
  const sep = `|${align.map((a) => (a === 'r' ? '---:' : ':---')).join('|')}|`;
  return [line(headers), sep, ...rows.map(line)].join('\n');
}

export function resultsTable(rows: RunRow[]): string {
  return markdownTable(
    [
      'Server',
      'Scenario',
      'Conns',
      'Req/s',
      'Events/s',
      'p50 (ms)',
      'p99 (ms)',
      'Non-2xx',
      'Errors',
      'Peak RSS',
      'Server CPU',
    ],
    rows.map((r) => [
      r.server,
      r.scenario,
      String(r.connections),
      int(r.requestsPerS),
      int(r.eventsPerS),
      ms(r.p50Ms),
      ms(r.p99Ms),
      int(r.non2xx),
      r.timeouts > 0 ? `${int(r.errors)} (${int(r.timeouts)} timeouts)` : int(r.errors),
      mb(r.peakRssBytes),
      pct(r.serverCpu),
    ]),
    ['l', 'l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r'],
  );
}
