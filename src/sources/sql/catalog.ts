/** What `discover` says of a column, from its kind; and `discover` / `check` for both databases. */
import type { Catalog, CheckResult, ColumnDescriptor, SourceContext, StreamDescriptor } from '../source.js';
import type { ColumnKind, SqlConnection } from './driver.js';
import { SourceError } from './errors.js';
import { CURSOR_KINDS, describeRelation, resolveStream, sourceLabel } from './read.js';
import type { SqlSourceConfig } from './spec.js';

export function columnJsonType(kind: ColumnKind): ColumnDescriptor['jsonType'] {
  switch (kind) {
    case 'integer':
      return 'integer';
    case 'float':
      return 'number';
    case 'boolean':
      return 'boolean';
    case 'timestamptz':
    case 'timestamp':
      return 'timestamp';
    case 'date':
      return 'date';
    case 'json':
      return 'object';
    case 'array':
      return 'array';
    default:
      return 'string';
  }
}

export function cursorCandidate(kind: ColumnKind): boolean {
  return CURSOR_KINDS.has(kind) && kind !== 'float';
}

/** A row of a database's catalog query: one column of a table or view, its kind already mapped. */
export interface CatalogColumn {
  schema: string;
  table: string;
  column: string;
  sourceType: string;
  kind: ColumnKind;
  nullable: boolean;
  /** The column's position in the primary key (any increasing numbers), null when not in it. */
  keyPosition: number | null;
}

/**
 * The catalog's columns, in table and column order, as one stream per table (`schema.table`),
 * its primary key in key order and the columns that can be a cursor.
 */
export function catalogStreams(columns: Iterable<CatalogColumn>): StreamDescriptor[] {
  const streams = new Map<string, StreamDescriptor & { keyOrder: Map<string, number> }>();
  for (const c of columns) {
    const name = `${c.schema}.${c.table}`;
    let s = streams.get(name);
    if (!s) {
      s = {
        name,
        columns: [],
        primaryKey: [],
        cursorCandidates: [],
        syncModes: ['full_refresh', 'incremental'],
        keyOrder: new Map(),
      };
      streams.set(name, s);
    }
    s.columns.push({
      name: c.column,
      sourceType: c.sourceType,
      jsonType: columnJsonType(c.kind),
      nullable: c.nullable,
    });
    if (c.keyPosition !== null) s.keyOrder.set(c.column, c.keyPosition);
    if (cursorCandidate(c.kind)) s.cursorCandidates.push(c.column);
  }
  return [...streams.values()].map(({ keyOrder, ...s }) => ({
    ...s,
    primaryKey: [...keyOrder.entries()].sort((a, b) => a[1] - b[1]).map(([k]) => k),
  }));
}

/**
 * The configured streams under their own names (what the runner types objects tables and
 * takes a default primary key from), then every readable table and view as `schema.table`
 * (a configured table again, so the list still shows every table to choose from). A configured
 * stream that cannot be described is left out here; its read reports why.
 */
export async function discoverSql(
  connect: () => Promise<SqlConnection>,
  config: SqlSourceConfig,
  _ctx: SourceContext,
): Promise<Catalog> {
  const conn = await connect();
  try {
    const tables = await conn.catalog();
    const streams: StreamDescriptor[] = [];
    for (const s of config.streams) {
      const r = resolveStream(conn, config, s.name);
      let fields: Awaited<ReturnType<SqlConnection['describe']>>;
      try {
        fields = await describeRelation(conn, r.relation);
      } catch (err) {
        if (err instanceof SourceError && err.retryable) throw err;
        continue;
      }
      const table =
        r.table === undefined ? undefined : tables.find((t) => t.name === s.name || sameTable(t.name, r));
      const configuredKey = s.primaryKey ?? [];
      streams.push({
        name: s.name,
        columns: fields.map((f) => ({
          name: f.name,
          sourceType: f.sourceType,
          jsonType: columnJsonType(f.kind),
          nullable: table?.columns.find((c) => c.name === f.name)?.nullable ?? true,
        })),
        primaryKey:
          configuredKey.length > 0
            ? configuredKey
            : r.table !== undefined
              ? await conn.primaryKey(r.schema, r.table)
              : [],
        cursorCandidates: fields.filter((f) => cursorCandidate(f.kind)).map((f) => f.name),
        syncModes: ['full_refresh', 'incremental'],
      });
    }
    for (const t of tables) if (!streams.some((s) => s.name === t.name)) streams.push(t);
    return { streams };
  } finally {
    await conn.end().catch(() => {});
  }
}

/** Whether a catalog name (`schema.table`) is the stream's table (a bare table name matches any schema). */
function sameTable(name: string, r: { schema: string | undefined; table: string | undefined }): boolean {
  return r.schema === undefined ? name.endsWith(`.${r.table}`) : name === `${r.schema}.${r.table}`;
}

/** Connects, then describes every configured stream: the first problem as a clear error, never a throw. */
export async function checkSql(
  connect: () => Promise<SqlConnection>,
  config: SqlSourceConfig,
  _ctx: SourceContext,
): Promise<CheckResult> {
  let conn: SqlConnection;
  try {
    conn = await connect();
  } catch (err) {
    return asCheckError(err);
  }
  try {
    await conn.query('SELECT 1');
    for (const s of config.streams) {
      const r = resolveStream(conn, config, s.name);
      let fields: Awaited<ReturnType<SqlConnection['describe']>>;
      try {
        fields = await describeRelation(conn, r.relation);
      } catch (err) {
        if (err instanceof SourceError) return asCheckError(err);
        const e = err as { code?: string; errno?: number; message?: string };
        const denied = e.code === '42501' || e.errno === 1142 || e.errno === 1143;
        return asCheckError(
          denied
            ? new SourceError('TRIB_ERR_SOURCE_PERMISSION', [sourceLabel(config), r.label, e.message ?? ''])
            : new SourceError('TRIB_ERR_SOURCE_STREAM_NOT_FOUND', [
                sourceLabel(config),
                r.label,
                e.message ?? '',
              ]),
        );
      }
      if (s.syncMode === 'incremental' && s.cursorField !== undefined) {
        const f = fields.find((x) => x.name === s.cursorField);
        if (f === undefined || !CURSOR_KINDS.has(f.kind))
          return asCheckError(
            new SourceError('TRIB_ERR_SOURCE_CURSOR_INVALID', [
              r.label,
              s.cursorField,
              f === undefined
                ? 'no such column'
                : `its type ${f.sourceType} does not order rows by when they were written`,
            ]),
          );
      }
      for (const k of s.primaryKey ?? [])
        if (!fields.some((f) => f.name === k))
          return asCheckError(
            new SourceError('TRIB_ERR_SOURCE_STREAM_NOT_FOUND', [
              sourceLabel(config),
              r.label,
              `its primary key column ${k} is not one of its columns`,
            ]),
          );
    }
    return { ok: true };
  } catch (err) {
    return asCheckError(err);
  } finally {
    await conn.end().catch(() => {});
  }
}

function asCheckError(err: unknown): CheckResult {
  if (err instanceof SourceError) return { ok: false, code: err.code, message: err.message };
  return { ok: false, code: 'TRIB_ERR_SOURCE_QUERY_FAILED', message: (err as Error)?.message ?? String(err) };
}
