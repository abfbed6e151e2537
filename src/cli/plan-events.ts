import { existsSync } from 'node:fs';
import { MappingStage } from '../pipeline/stages/mapping-stage.js';
import { sqlString } from '../platform/duckdb/duckdb-sql.js';
import { type AdminOptions, adminQuery } from './admin-client.js';
import { configPath, resolveWorkspace } from './workspace.js';

/**
 * The newest accepted events of the raw archive (`log.raw_events`), through the admin API,
 * oldest first; of one source, or of all. At most the server's `query.maxRows` of them.
 */
export async function archivedEvents(
  opts: AdminOptions,
  source: string | undefined,
  last: number,
): Promise<unknown[]> {
  const where = source === undefined ? '' : ` AND source_id = ${sqlString(source)}`;
  const { rows } = await adminQuery(
    opts,
    `SELECT CAST(event AS VARCHAR) AS e FROM log.raw_events WHERE status = 'accepted'${where}
     ORDER BY log_offset DESC LIMIT ${Math.max(1, Math.trunc(last))}`,
  );
  return rows.reverse().map((r) => JSON.parse(String(r.e)) as unknown);
}

/** The source's mapping from the workspace configuration, when there is one, so plans see canonical names. */
export function sourceMapping(opts: AdminOptions, source: string | undefined): MappingStage | undefined {
  if (source === undefined || !existsSync(configPath(opts))) return undefined;
  const ws = resolveWorkspace(opts, process.env);
  const mapping = ws.loaded.config.sources.find((s) => s.id === source)?.mapping;
  return mapping ? new MappingStage(mapping) : undefined;
}

export function parseCount(text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new Error(`expected a positive whole number, got "${text}"`);
  return n;
}
