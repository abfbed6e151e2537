/**
 * What a record becomes: its key, its objects row and its events. No I/O.
 */
import { createHash } from 'node:crypto';
import type { RawEvent } from '../log/event-log.js';
import { normalizeEvent } from '../spec/normalize.js';
import type { ColumnSet, EventMapping, StreamSettings } from './streams-schema.js';

/** JSON text of a value, with what JSON lacks made plain: dates as ISO, bigints as digits, bytes as base64. */
export function jsonText(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => {
    if (typeof v === 'bigint') return Number.isSafeInteger(Number(v)) ? Number(v) : v.toString();
    if (v instanceof Uint8Array) return Buffer.from(v).toString('base64');
    return v;
  });
}

/** A value as JSON: dates become ISO text (via toJSON), bigints numbers where exact. */
function plain(value: unknown): unknown {
  if (value === undefined) return null;
  if (value instanceof Date) return Number.isNaN(value.getTime()) ? null : value.toISOString();
  if (typeof value === 'bigint')
    return Number.isSafeInteger(Number(value)) ? Number(value) : value.toString();
  if (value instanceof Uint8Array) return Buffer.from(value).toString('base64');
  return value;
}

export type KeyResult = { ok: true; key: string } | { ok: false; column: string };

/**
 * The row's key: its primary key's values as a JSON array; without a primary key, a hash of
 * the whole row (identical rows are one object).
 */
export function recordKey(data: Record<string, unknown>, primaryKey: readonly string[]): KeyResult {
  if (primaryKey.length === 1) {
    // The common case, without the generic walk: one text or number column.
    const v = data[primaryKey[0]!];
    if (typeof v === 'string' && v !== '') return { ok: true, key: JSON.stringify([v]) };
    if (typeof v === 'number' && Number.isFinite(v)) return { ok: true, key: `[${v}]` };
  }
  if (primaryKey.length === 0)
    return { ok: true, key: `#${createHash('sha256').update(jsonText(data)).digest('hex')}` };
  const values: unknown[] = [];
  for (const c of primaryKey) {
    const v = plain(data[c]);
    if (v === null || v === '') return { ok: false, column: c };
    values.push(v);
  }
  return { ok: true, key: jsonText(values) };
}

/** The row's values in the table's column order. */
export function objectValues(data: Record<string, unknown>, keys: readonly string[]): unknown[] {
  const out = new Array<unknown>(keys.length);
  for (let i = 0; i < keys.length; i++) out[i] = plain(data[keys[i]!]);
  return out;
}

function copyColumns(data: Record<string, unknown>, set: ColumnSet | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (set === undefined) return out;
  if (set === '*') {
    for (const [k, v] of Object.entries(data)) if (v !== undefined && v !== null) out[k] = plain(v);
  } else if (Array.isArray(set)) {
    for (const c of set) if (data[c] !== undefined && data[c] !== null) out[c] = plain(data[c]);
  } else {
    for (const [name, c] of Object.entries(set))
      if (data[c] !== undefined && data[c] !== null) out[name] = plain(data[c]);
  }
  return out;
}

function text(v: unknown): string | undefined {
  const p = plain(v);
  if (p === null || p === '') return undefined;
  return typeof p === 'string' ? p : String(p);
}

export type EventResult = { ok: true; event: RawEvent } | { ok: false; reason: string };

export interface RecordContext {
  sourceId: string;
  stream: string;
  key: string;
  /** sha256 of the record's content: a changed row is a new event, the same row read again is not. */
  contentHash: string;
  location?: string;
  receivedAt: number;
}

/**
 * The messageId of a row's event: derived from the source, stream, key, the mapping and the
 * row's content, so a row read again (a resumed sync, a re-imported file) is the same event
 * and the pipeline's dedupe keeps it out, while a changed row is a new event.
 */
export function recordMessageId(ctx: RecordContext, mapping: number | string): string {
  return `src-${createHash('sha256')
    .update(jsonText([ctx.sourceId, ctx.stream, ctx.key, mapping, ctx.contentHash]))
    .digest('hex')
    .slice(0, 40)}`;
}

export function contentHash(data: Record<string, unknown>): string {
  return createHash('sha256').update(jsonText(data)).digest('hex');
}

/** One event of a row, normalized as the collection API does. */
export function mappedEvent(
  data: Record<string, unknown>,
  m: EventMapping,
  index: number,
  ctx: RecordContext,
): EventResult {
  const raw: Record<string, unknown> = { type: m.type, messageId: recordMessageId(ctx, index) };
  const userId = m.userId ? text(data[m.userId]) : undefined;
  const anon = m.anonymousId ? text(data[m.anonymousId]) : undefined;
  if (userId !== undefined) raw.userId = userId;
  if (anon !== undefined) raw.anonymousId = `${m.anonymousIdPrefix ?? ''}${anon}`;
  if (m.type === 'track') raw.event = m.eventColumn ? text(data[m.eventColumn]) : m.event;
  if (m.type === 'group') raw.groupId = m.groupId ? text(data[m.groupId]) : undefined;
  if (m.timestamp) {
    const ts = text(data[m.timestamp]);
    if (ts !== undefined) raw.timestamp = ts;
  }
  if (m.type === 'track') raw.properties = copyColumns(data, m.properties);
  else raw.traits = copyColumns(data, m.traits);
  raw.context = {
    library: { name: 'tributary-source' },
    source: { stream: ctx.stream, ...(ctx.location ? { location: ctx.location } : {}) },
  };
  return finish(raw, ctx);
}

/** The identify event that joins a row to identity: anonymousId `<source>:<stream>:<key>`, the identifiers as traits. */
export function identifiersEvent(
  data: Record<string, unknown>,
  identifiers: Readonly<Record<string, string>>,
  ctx: RecordContext,
): EventResult | undefined {
  const traits: Record<string, unknown> = {};
  for (const [name, column] of Object.entries(identifiers)) {
    const v = text(data[column]);
    if (v !== undefined) traits[name] = v;
  }
  if (Object.keys(traits).length === 0) return undefined;
  const raw: Record<string, unknown> = {
    type: 'identify',
    messageId: recordMessageId(ctx, 'identifiers'),
    anonymousId: `${ctx.sourceId}:${ctx.stream}:${ctx.key}`,
    traits,
    context: { library: { name: 'tributary-source' }, source: { stream: ctx.stream } },
  };
  if (typeof traits.userId === 'string') raw.userId = traits.userId;
  return finish(raw, ctx);
}

function finish(raw: Record<string, unknown>, ctx: RecordContext): EventResult {
  const r = normalizeEvent(raw, {
    receivedAt: ctx.receivedAt,
    newMessageId: () => recordMessageId(ctx, 'generated'),
  });
  if (!r.ok) return { ok: false, reason: `${r.code}: ${r.message}` };
  const e = r.event;
  return {
    ok: true,
    event: {
      sourceId: ctx.sourceId,
      messageId: e.messageId,
      receivedAt: ctx.receivedAt,
      status: 'accepted',
      json: JSON.stringify(e),
      identityKey: (e.userId ?? e.anonymousId) as string | undefined,
    },
  };
}

/** Whether the stream produces events at all. */
export function makesEvents(s: Pick<StreamSettings, 'events' | 'identifiers'>): boolean {
  return s.events.length > 0 || (s.identifiers !== undefined && Object.keys(s.identifiers).length > 0);
}
