/**
 * The read both database sources share: full refresh and incremental by cursor column, each
 * streamed in one snapshot, with keyset checkpoints every `checkpointEvery` rows.
 *
 * Incremental (see `./bound.ts` and docs/sources-databases.md): a sync reads the rows whose
 * cursor is at or past the stream's lower bound, ordered by (cursor, key), plus the rows
 * whose cursor is NULL (every sync: they cannot be placed on the cursor), and saves as the
 * next lower bound a mark taken before its snapshot that no transaction still open could
 * write below. Rows at or past that bound are read again by the next sync (the runner's
 * upsert by primary key and record-derived messageIds absorb them); no row is missed.
 */
import type { ConfiguredStream, SourceContext, SourceMessage } from '../source.js';
import { keepMarks, type LowerBound, nextLowerBound, START } from './bound.js';
import { BadValue, newParams, type ResultField, type RowBatch, type SqlConnection } from './driver.js';
import { describeError, SourceError } from './errors.js';
import type { SqlSourceConfig, SqlStreamConfig, TableRef } from './spec.js';
import { decodeT, encodeT, FullRefreshState, IncrementalState, parseState, sameList } from './state.js';

/** Kinds an incremental sync can order by. */
export const CURSOR_KINDS = new Set(['integer', 'decimal', 'float', 'timestamptz', 'timestamp', 'date']);

/** The largest payload a failed row keeps (its text), so one huge row cannot swamp the failures. */
const MAX_FAILED_PAYLOAD = 64 * 1024;

export interface ResolvedStream {
  name: string;
  /** The FROM item: a quoted table or `(query) AS q`. */
  relation: string;
  /** `public.users` or `query contacts`, for errors and locations. */
  label: string;
  schema: string | undefined;
  table: string | undefined;
  config: SqlStreamConfig | undefined;
}

/** Splits `schema.table` on its first dot; a bare name has no schema. */
export function splitTable(ref: TableRef): { schema: string | undefined; name: string } {
  if (typeof ref !== 'string') return { schema: ref.schema, name: ref.name };
  const dot = ref.indexOf('.');
  return dot < 0 ? { schema: undefined, name: ref } : { schema: ref.slice(0, dot), name: ref.slice(dot + 1) };
}

/** The columns of a stream's table or query (`ResolvedStream.relation`), from it read with no rows. */
export function describeRelation(conn: SqlConnection, relation: string): Promise<ResultField[]> {
  return conn.describe(`SELECT * FROM ${relation} WHERE 1 = 0`);
}

/** The stream's table or query: from the configuration, or the stream name read as `schema.table`. */
export function resolveStream(conn: SqlConnection, config: SqlSourceConfig, name: string): ResolvedStream {
  const configured = config.streams.find((s) => s.name === name);
  if (configured?.query !== undefined) {
    return {
      name,
      relation: `(${configured.query.trim().replace(/;\s*$/, '')}) AS ${conn.dialect.quoteIdent('tributary_q')}`,
      label: `query ${name}`,
      schema: undefined,
      table: undefined,
      config: configured,
    };
  }
  const { schema, name: table } = splitTable(configured?.table ?? name);
  return {
    name,
    relation: conn.dialect.quoteTable(schema, table),
    label: schema === undefined ? table : `${schema}.${table}`,
    schema,
    table,
    config: configured,
  };
}

/** The source id for messages. */
export function sourceLabel(config: SqlSourceConfig): string {
  return config.id ?? config.host ?? 'database';
}

interface ReadPlan {
  stream: ResolvedStream;
  fields: ResultField[];
  primaryKey: string[];
}

async function plan(
  conn: SqlConnection,
  config: SqlSourceConfig,
  configured: ConfiguredStream,
): Promise<ReadPlan> {
  const stream = resolveStream(conn, config, configured.name);
  const q = conn.dialect.quoteIdent;
  let fields: ResultField[];
  try {
    fields = await describeRelation(conn, stream.relation);
  } catch (err) {
    if (err instanceof SourceError && err.retryable) throw err;
    throw new SourceError(
      'TRIB_ERR_SOURCE_STREAM_NOT_FOUND',
      [sourceLabel(config), stream.label, describeError(err)],
      { cause: err },
    );
  }
  let primaryKey =
    configured.primaryKey.length > 0 ? [...configured.primaryKey] : (stream.config?.primaryKey ?? []);
  if (primaryKey.length === 0 && stream.table !== undefined)
    primaryKey = await conn.primaryKey(stream.schema, stream.table);
  for (const k of primaryKey) {
    if (!fields.some((f) => f.name === k))
      throw new SourceError('TRIB_ERR_SOURCE_STREAM_NOT_FOUND', [
        sourceLabel(config),
        stream.label,
        `its primary key column ${q(k)} is not one of its columns`,
      ]);
  }
  return { stream, fields, primaryKey };
}

/**
 * Reads the streams one after the other, on one connection. Messages are made a database
 * batch at a time and handed out one by one without an async generator per message (which
 * costs more than reading the row).
 */
export function readSql(
  connect: () => Promise<SqlConnection>,
  config: SqlSourceConfig,
  streams: readonly ConfiguredStream[],
  state: Readonly<Record<string, unknown>>,
  ctx: SourceContext,
): AsyncIterable<SourceMessage> {
  return flatten(() => readBatches(connect, config, streams, state, ctx));
}

/** One message at a time from a source of message arrays; `return` (a consumer's `break`) reaches the source. */
export function flatten<T>(source: () => AsyncIterable<T[]>): AsyncIterable<T> {
  return {
    [Symbol.asyncIterator](): AsyncIterator<T> {
      const it = source()[Symbol.asyncIterator]();
      let buffer: T[] = [];
      let i = 0;
      return {
        async next(): Promise<IteratorResult<T>> {
          while (i >= buffer.length) {
            const r = await it.next();
            if (r.done) return { done: true, value: undefined };
            buffer = r.value;
            i = 0;
          }
          return { done: false, value: buffer[i++]! };
        },
        async return(): Promise<IteratorResult<T>> {
          await it.return?.();
          return { done: true, value: undefined };
        },
      };
    },
  };
}

async function* readBatches(
  connect: () => Promise<SqlConnection>,
  config: SqlSourceConfig,
  streams: readonly ConfiguredStream[],
  state: Readonly<Record<string, unknown>>,
  ctx: SourceContext,
): AsyncGenerator<SourceMessage[]> {
  const conn = await connect();
  try {
    for (const configured of streams) {
      if (ctx.signal.aborted) return;
      const p = await plan(conn, config, configured);
      if (configured.syncMode === 'incremental')
        yield* readIncremental(conn, config, configured, p, state, ctx);
      else yield* readFullRefresh(conn, config, p, state[configured.name], ctx);
    }
  } finally {
    await conn.end().catch(() => {});
  }
}

function indexOfField(fields: readonly ResultField[], name: string): number {
  return fields.findIndex((f) => f.name === name);
}

/** A row as a record, or as a failure when a value cannot be converted. */
function toMessage(
  stream: ResolvedStream,
  fields: readonly ResultField[],
  row: readonly unknown[],
): SourceMessage {
  const data: Record<string, unknown> = {};
  try {
    for (let i = 0; i < fields.length; i++) {
      const raw = row[i];
      data[fields[i]!.name] = raw === null || raw === undefined ? null : fields[i]!.convert(raw);
    }
    return { type: 'record', stream: stream.name, data, location: stream.label };
  } catch (err) {
    if (!(err instanceof BadValue)) throw err;
    const text: Record<string, string | null> = {};
    fields.forEach((f, i) => {
      const raw = row[i];
      text[f.name] = raw === null || raw === undefined ? null : safeText(f, raw);
    });
    let payload = JSON.stringify(text);
    if (payload.length > MAX_FAILED_PAYLOAD) payload = `${payload.slice(0, MAX_FAILED_PAYLOAD)}…`;
    return {
      type: 'failed',
      stream: stream.name,
      code: 'TRIB_ERR_SOURCE_BAD_VALUE',
      reason: `${stream.label}: ${err.message}`,
      payload,
      location: stream.label,
    };
  }
}

function safeText(f: ResultField, raw: unknown): string {
  try {
    return f.text(raw);
  } catch {
    return String(raw);
  }
}

/** Runs `sql` and yields its batches; a failure becomes a `SourceError`. */
async function* batches(
  conn: SqlConnection,
  config: SqlSourceConfig,
  stream: ResolvedStream,
  sql: string,
  params: readonly unknown[],
): AsyncGenerator<RowBatch> {
  try {
    yield* conn.stream(sql, params, config.batchSize);
  } catch (err) {
    if (err instanceof SourceError) throw err;
    throw new SourceError(
      'TRIB_ERR_SOURCE_QUERY_FAILED',
      [sourceLabel(config), stream.label, describeError(err)],
      { cause: err },
    );
  }
}

async function* readFullRefresh(
  conn: SqlConnection,
  config: SqlSourceConfig,
  p: ReadPlan,
  raw: unknown,
  ctx: SourceContext,
): AsyncGenerator<SourceMessage[]> {
  let out: SourceMessage[] = [];
  const { stream, fields, primaryKey } = p;
  const saved =
    rawMode(raw) === 'full_refresh'
      ? parseState(FullRefreshState, stream.name, raw, (s) =>
          sameList(s.primaryKey, primaryKey) ? undefined : 'the primary key changed',
        )
      : undefined;
  const startedAt = saved?.sync?.startedAt ?? new Date().toISOString();
  const keyIdx = primaryKey.map((k) => indexOfField(fields, k));
  const keyFields = keyIdx.map((i) => fields[i]!);
  const q = conn.dialect.quoteIdent;
  const params = newParams();
  let where = '';
  if (saved?.sync !== undefined && primaryKey.length > 0)
    where = ` WHERE ${conn.dialect.after(params, primaryKey.map(q), saved.sync.after, keyFields)}`;
  const order = primaryKey.length > 0 ? ` ORDER BY ${primaryKey.map(q).join(', ')}` : '';
  const sql = `SELECT * FROM ${stream.relation}${where}${order}`;

  await conn.beginSnapshot();
  let rows = 0;
  let last: readonly unknown[] | undefined;
  for await (const batch of batches(conn, config, stream, sql, params.values)) {
    for (const row of batch.rows) {
      out.push(toMessage(stream, batch.fields, row));
      rows++;
      last = row;
      if (primaryKey.length > 0 && rows % config.checkpointEvery === 0) {
        const after = keyIdx.map((i, n) => keyFields[n]!.text(last![i]));
        out.push({ type: 'progress', stream: stream.name, rows });
        out.push({
          type: 'state',
          stream: stream.name,
          state: {
            v: 1,
            mode: 'full_refresh',
            primaryKey,
            sync: { startedAt, after },
          } satisfies FullRefreshState,
        });
      }
    }
    yield out;
    out = [];
    // Stopped: leave the loop, which gives up a connection still mid-result (no COMMIT after it).
    if (ctx.signal.aborted) break;
  }
  if (ctx.signal.aborted) return;
  await conn.endSnapshot();
  out.push({ type: 'progress', stream: stream.name, rows });
  out.push({ type: 'complete', stream: stream.name });
  out.push({
    type: 'state',
    stream: stream.name,
    state: { v: 1, mode: 'full_refresh', primaryKey } satisfies FullRefreshState,
  });
  yield out;
}

function rawMode(raw: unknown): unknown {
  return raw !== null && typeof raw === 'object' ? (raw as { mode?: unknown }).mode : undefined;
}

async function* readIncremental(
  conn: SqlConnection,
  config: SqlSourceConfig,
  configured: ConfiguredStream,
  p: ReadPlan,
  allState: Readonly<Record<string, unknown>>,
  ctx: SourceContext,
): AsyncGenerator<SourceMessage[]> {
  let out: SourceMessage[] = [];
  const { stream, fields, primaryKey } = p;
  const d = conn.dialect;
  const q = d.quoteIdent;
  const cursorField = configured.cursorField ?? stream.config?.cursorField;
  if (cursorField === undefined)
    throw new SourceError('TRIB_ERR_SOURCE_CURSOR_INVALID', [
      stream.label,
      '(none)',
      'no cursorField is set',
    ]);
  const ci = indexOfField(fields, cursorField);
  if (ci < 0)
    throw new SourceError('TRIB_ERR_SOURCE_CURSOR_INVALID', [stream.label, q(cursorField), 'no such column']);
  const cursor = fields[ci]!;
  if (!CURSOR_KINDS.has(cursor.kind))
    throw new SourceError('TRIB_ERR_SOURCE_CURSOR_INVALID', [
      stream.label,
      q(cursorField),
      `its type ${cursor.sourceType} does not order rows by when they were written`,
    ]);
  const raw = allState[stream.name];
  const saved =
    rawMode(raw) === 'incremental'
      ? parseState(IncrementalState, stream.name, raw, (s) => {
          if (s.cursorField !== cursorField) return `it was saved for cursor ${s.cursorField}`;
          if (!sameList(s.primaryKey, primaryKey)) return 'the primary key changed';
          return undefined;
        })
      : undefined;
  const lower: LowerBound = saved ? { value: saved.lower.value, t: decodeT(saved.lower.t) } : START;
  let marks = saved?.marks ?? [];
  let next: LowerBound;
  let phase: 'null' | 'cursor' = 'null';
  let after: string[] | undefined;
  const qc = q(cursorField);
  if (saved?.sync !== undefined) {
    // A sync stopped mid-way: the bound it computed when it started still holds.
    next = { value: saved.sync.next.value, t: decodeT(saved.sync.next.t) };
    phase = saved.sync.phase;
    after = saved.sync.after;
  } else {
    // The mark: max(cursor), then the clock, then the transactions open; then the snapshot.
    let max: string | null = null;
    for await (const b of batches(
      conn,
      config,
      stream,
      `SELECT ${qc} FROM ${stream.relation} WHERE ${qc} IS NOT NULL ORDER BY ${qc} DESC LIMIT 1`,
      [],
    )) {
      if (b.rows.length > 0) max = b.fields[0]!.text(b.rows[0]![0]);
    }
    const t = await conn.clock();
    const open = await conn.openTransactions();
    marks = keepMarks(marks, { t, max });
    next = nextLowerBound(lower, marks, open, config.clockSkew / 1000);
  }
  const keyIdx = primaryKey.map((k) => indexOfField(fields, k));
  const keyFields = keyIdx.map((i) => fields[i]!);
  const checkpoint = (ph: 'null' | 'cursor', a: string[]): SourceMessage => ({
    type: 'state',
    stream: stream.name,
    state: {
      v: 1,
      mode: 'incremental',
      cursorField,
      primaryKey,
      lower: { value: lower.value, t: encodeT(lower.t) },
      marks,
      sync: { next: { value: next.value, t: encodeT(next.t) }, phase: ph, after: a },
    } satisfies IncrementalState,
  });

  await conn.beginSnapshot();
  let rows = 0;
  // Rows with a NULL cursor, in key order (every sync: nothing places them on the cursor).
  if (phase === 'null') {
    const params = newParams();
    let where = `${qc} IS NULL`;
    if (after !== undefined && primaryKey.length > 0)
      where += ` AND ${d.after(params, primaryKey.map(q), after, keyFields)}`;
    const order = primaryKey.length > 0 ? ` ORDER BY ${primaryKey.map(q).join(', ')}` : '';
    for await (const batch of batches(
      conn,
      config,
      stream,
      `SELECT * FROM ${stream.relation} WHERE ${where}${order}`,
      params.values,
    )) {
      for (const row of batch.rows) {
        out.push(toMessage(stream, batch.fields, row));
        rows++;
        if (primaryKey.length > 0 && rows % config.checkpointEvery === 0) {
          out.push({ type: 'progress', stream: stream.name, rows });
          out.push(
            checkpoint(
              'null',
              keyIdx.map((i, n) => keyFields[n]!.text(row[i])),
            ),
          );
        }
      }
      yield out;
      out = [];
      // Stopped: leave the loop, which gives up a connection still mid-result (no COMMIT after it).
      if (ctx.signal.aborted) break;
    }
    if (ctx.signal.aborted) return;
    after = undefined;
  }
  // Rows at or past the lower bound, in (cursor, key) order.
  {
    const params = newParams();
    const conds: string[] = [];
    if (after !== undefined) {
      conds.push(d.after(params, [qc, ...primaryKey.map(q)], after, [cursor, ...keyFields]));
    } else {
      conds.push(`${qc} IS NOT NULL`);
      if (lower.value !== null) conds.push(`${qc} >= ${d.param(params, lower.value, cursor)}`);
    }
    const order = [qc, ...primaryKey.map(q)].join(', ');
    const sql = `SELECT * FROM ${stream.relation} WHERE ${conds.join(' AND ')} ORDER BY ${order}`;
    let pendingText: string | undefined; // a key-less stream checkpoints when its cursor value changes
    let sinceCheckpoint = 0;
    for await (const batch of batches(conn, config, stream, sql, params.values)) {
      for (const row of batch.rows) {
        if (primaryKey.length === 0) {
          const c = cursor.text(row[ci]);
          if (pendingText !== undefined && c !== pendingText && sinceCheckpoint >= config.checkpointEvery) {
            // Every row of value `pendingText` has been yielded: resume strictly past it.
            out.push({ type: 'progress', stream: stream.name, rows });
            out.push(checkpoint('cursor', [pendingText]));
            sinceCheckpoint = 0;
          }
          pendingText = c;
        }
        out.push(toMessage(stream, batch.fields, row));
        rows++;
        sinceCheckpoint++;
        if (primaryKey.length > 0 && sinceCheckpoint >= config.checkpointEvery) {
          out.push({ type: 'progress', stream: stream.name, rows });
          out.push(
            checkpoint('cursor', [cursor.text(row[ci]), ...keyIdx.map((i, n) => keyFields[n]!.text(row[i]))]),
          );
          sinceCheckpoint = 0;
        }
      }
      yield out;
      out = [];
      // Stopped: leave the loop, which gives up a connection still mid-result (no COMMIT after it).
      if (ctx.signal.aborted) break;
    }
    if (ctx.signal.aborted) return;
  }
  await conn.endSnapshot();
  out.push({ type: 'progress', stream: stream.name, rows });
  out.push({
    type: 'state',
    stream: stream.name,
    state: {
      v: 1,
      mode: 'incremental',
      cursorField,
      primaryKey,
      lower: { value: next.value, t: encodeT(next.t) },
      marks,
    } satisfies IncrementalState,
  });
  yield out;
}
