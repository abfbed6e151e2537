import { TributaryError } from '../../errors.js';
import type { EventIdentity } from '../../identity/identity-stage.js';
import type { Delivered } from '../../log/event-log.js';
import type { RawArchive } from '../../log/raw-archive.js';
import type { DeliveryAttemptRow, FailedSummary, Store, StoredEvent } from '../../store/store.js';

/** A destination as the trace reads it. */
export interface TracedDestination {
  id: string;
  type: string;
  /** The log offset loaded up to (warehouse destinations; −1 before it is known). */
  position?(): number;
  /** The rows a stored event became in its tables. */
  rowsOf?(event: StoredEvent): Promise<{ schema: string; table: string; row: Record<string, unknown> }[]>;
}

export interface TraceDeps {
  /** Undefined where the log has no archive (NATS): the trace starts at `events`. */
  archive?: Pick<RawArchive, 'recordsOf'>;
  store: Pick<Store, 'eventsOf' | 'listFailed' | 'attemptsOf'>;
  /** The loader's position: an accepted record at or past it is still pending. */
  loaderPosition?: () => number;
  identity?: { traceEvent(e: StoredEvent): Promise<EventIdentity> };
  destinations: () => readonly TracedDestination[];
}

/** One record of the log with the messageId, and what the loader did with it. */
export interface TracedRecord {
  logOffset: number;
  sourceId: string;
  receivedAt: string;
  /** As collected: `accepted`, or `rejected` with the code (collection checks, privacy, a webhook's mapping). */
  status: 'accepted' | 'rejected';
  code?: string;
  reason?: string;
  /**
   * What became of it: `loaded` into `events`, `failed` (a stage or the load failed or
   * blocked it: see `failures`), `rejected` at collection, `duplicate` (the same source and
   * messageId was loaded from an earlier record), `filtered` (a function returned nothing),
   * `pending` (the loader has not reached it).
   */
  outcome: 'loaded' | 'failed' | 'rejected' | 'duplicate' | 'filtered' | 'pending';
  /** The record as the log keeps it (the request's event, server fields set). */
  raw: unknown;
}

/** One row of `events` with the messageId and its path after the loader. */
export interface TracedEvent {
  /** The event's messageId: the traced one, or the one a function gave its output. */
  messageId: string;
  logOffset: number;
  sourceId: string;
  receivedAt: string;
  /** Plan violations the event carries (`_tributary.violations`, plans in `warn` mode). */
  violations: unknown[];
  /** What the mapping changed (`_tributary.mapped`). */
  mapped: unknown[];
  event: unknown;
  identity?: EventIdentity;
  /** Warehouse destinations: loaded (their position is past the event) and the table rows. */
  warehouses: {
    destination: string;
    type: string;
    loaded: boolean;
    rows: { schema: string; table: string; row: Record<string, unknown> }[];
    error?: string;
  }[];
}

export interface TraceReport {
  messageId: string;
  records: TracedRecord[];
  /** `failed_events` rows of the messageId: stage (`collect`, `privacy`, `mapping`, `plan`, `transform`, `load`, `destination:<id>`), code, reason. */
  failures: FailedSummary[];
  events: TracedEvent[];
  /** Delivery attempts to streaming destinations (`delivery_attempts`). */
  attempts: (Omit<DeliveryAttemptRow, 'at'> & { at: string })[];
}

function parsed(json: string): unknown {
  try {
    return JSON.parse(json) as unknown;
  } catch {
    return json;
  }
}

function list(v: unknown): unknown[] {
  return Array.isArray(v) ? v : [];
}

/**
 * One message's whole path: the log records of its messageId, the loader's outcome for each,
 * its failures, the events it became (plan violations, mapping), the profile it joined and
 * why, the warehouse rows, and each delivery attempt.
 * @throws TributaryError `TRIB_ERR_TRACE_NOT_FOUND` when nothing anywhere knows the id.
 */
export async function traceMessage(deps: TraceDeps, messageId: string): Promise<TraceReport> {
  const records = deps.archive ? await deps.archive.recordsOf(messageId) : ([] as Delivered[]);
  // With the records' offsets: a function that gave its output another messageId (a fan-out's
  // `<id>-1`) left the events at the record's offset.
  const [failures, stored, attempts] = await Promise.all([
    deps.store.listFailed({ messageId, includeRetried: true, limit: 1000 }),
    deps.store.eventsOf(
      messageId,
      records.filter((r) => r.status === 'accepted').map((r) => r.offset),
    ),
    deps.store.attemptsOf(messageId),
  ]);
  if (records.length === 0 && failures.length === 0 && stored.length === 0 && attempts.length === 0)
    throw new TributaryError('TRIB_ERR_TRACE_NOT_FOUND', [messageId]);

  const loadedAt = new Set(stored.map((e) => e.logOffset));
  const loader = deps.loaderPosition?.();
  const firstLoaded = new Map<string, number>();
  for (const e of stored)
    if (e.messageId === messageId && !firstLoaded.has(e.sourceId)) firstLoaded.set(e.sourceId, e.logOffset);
  const tracedRecords = records.map((r): TracedRecord => {
    let outcome: TracedRecord['outcome'];
    if (r.status === 'rejected') outcome = 'rejected';
    else if (loadedAt.has(r.offset)) outcome = 'loaded';
    else if (loader !== undefined && r.offset >= loader) outcome = 'pending';
    else if ((firstLoaded.get(r.sourceId) ?? Number.POSITIVE_INFINITY) < r.offset) outcome = 'duplicate';
    else if (
      failures.some((f) => f.source_id === r.sourceId && f.stage !== 'collect' && f.stage !== 'privacy')
    )
      outcome = 'failed';
    else outcome = 'filtered';
    return {
      logOffset: r.offset,
      sourceId: r.sourceId,
      receivedAt: new Date(r.receivedAt).toISOString(),
      status: r.status,
      ...(r.code === undefined ? {} : { code: r.code }),
      ...(r.reason === undefined ? {} : { reason: r.reason }),
      outcome,
      raw: parsed(r.json),
    };
  });

  const destinations = deps.destinations();
  const events: TracedEvent[] = [];
  for (const e of stored) {
    const event = parsed(e.json);
    const t = (
      typeof event === 'object' && event !== null ? (event as Record<string, unknown>)._tributary : undefined
    ) as Record<string, unknown> | undefined;
    const warehouses: TracedEvent['warehouses'] = [];
    for (const d of destinations) {
      if (!d.position) continue;
      const position = d.position();
      const w: TracedEvent['warehouses'][number] = {
        destination: d.id,
        type: d.type,
        loaded: position > e.logOffset,
        rows: [],
      };
      try {
        if (d.rowsOf) w.rows = await d.rowsOf(e);
      } catch (err) {
        w.error = (err as Error).message;
      }
      warehouses.push(w);
    }
    events.push({
      messageId: e.messageId,
      logOffset: e.logOffset,
      sourceId: e.sourceId,
      receivedAt: new Date(e.receivedAt).toISOString(),
      violations: list(t?.violations),
      mapped: list(t?.mapped),
      event,
      ...(deps.identity ? { identity: await deps.identity.traceEvent(e) } : {}),
      warehouses,
    });
  }
  return {
    messageId,
    records: tracedRecords,
    failures,
    events,
    attempts: attempts.map((a) => ({ ...a, at: a.at.toISOString() })),
  };
}
