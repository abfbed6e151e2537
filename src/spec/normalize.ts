import type { EventRejectionCode } from '../errors.js';
import { EventRejectionCodes } from '../errors.js';
import {
  type EventType,
  type EventWarning,
  isEventType,
  isPlainObject,
  type JsonObject,
  type SegmentEvent,
} from './event.js';
import { inTimeRange, parseTimestamp } from './timestamp.js';

/** Longest messageId accepted, as Segment documents it. */
export const MAX_MESSAGE_ID_LENGTH = 100;
/** A timestamp further ahead of receipt than this is replaced by `receivedAt`. */
export const MAX_FUTURE_SKEW_MS = 23 * 60 * 60 * 1000;

/** What the request adds to every event it carries. */
export interface RequestEnvelope {
  /** Time of receipt, epoch milliseconds. */
  receivedAt: number;
  /** `receivedAt` as ISO-8601, computed once per request. */
  receivedAtIso?: string;
  /** The caller's address, set as `context.ip` unless the event has one. */
  ip?: string;
  /** Batch-level fields merged into each event (the event's own keys win). */
  context?: JsonObject;
  integrations?: JsonObject;
  sentAt?: unknown;
  /** Type given by the route (`/v1/track`); batch events carry their own. */
  routeType?: EventType;
  newMessageId: () => string;
}

export type NormalizeResult =
  | { ok: true; event: SegmentEvent }
  | { ok: false; code: EventRejectionCode; message: string };

function reject(code: EventRejectionCode, detail?: string): NormalizeResult {
  return {
    ok: false,
    code,
    message: detail ? `${EventRejectionCodes[code]}: ${detail}` : EventRejectionCodes[code],
  };
}

/** A string or finite number id, as a string; `undefined` when absent or empty; `null` when of a wrong type. */
function idValue(value: unknown): string | undefined | null {
  if (value === undefined || value === null || value === '') return undefined;
  if (typeof value === 'string') return value;
  if (typeof value === 'number' && Number.isFinite(value)) return String(value);
  return null;
}

/**
 * A timestamp field: `undefined` when absent, the instant when it is a real ISO-8601
 * date-time within years 0001-9999, else the rejection.
 */
function parseTime(field: string, value: unknown): number | undefined | NormalizeResult {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') return reject('TRIB_ERR_EVENT_INVALID_FIELD', `${field} must be a string`);
  const ms = parseTimestamp(value);
  if (ms !== undefined) return ms;
  return reject('TRIB_ERR_EVENT_INVALID_TIMESTAMP', `${field} ${JSON.stringify(value.slice(0, 40))}`);
}

const OBJECT_FIELDS = ['properties', 'traits', 'context', 'integrations'] as const;
/** The form `Date.prototype.toISOString` gives; such a timestamp (once checked) is stored as sent. */
const CANONICAL_ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

/**
 * Checks one event's envelope and sets the server-side fields: `receivedAt`, a
 * generated `messageId` where absent, `context.ip`, batch-level `context` and
 * `integrations`, and `timestamp`:
 * the client's explicit `timestamp`, else `receivedAt − (sentAt − originalTimestamp)`,
 * else `receivedAt`; a timestamp more than 23 h ahead of receipt becomes `receivedAt`
 * and leaves a warning under `_tributary.warnings`. A timestamp field that is not a real
 * ISO-8601 date-time of years 0001-9999 (`2020-02-30`, `+275760-…`), or a clock-skew
 * correction that leaves those years, rejects the event (`TRIB_ERR_EVENT_INVALID_TIMESTAMP`):
 * every timestamp stored is one DuckDB and PostgreSQL can read.
 *
 * No I/O. An accepted event is the input object, completed in place (it belongs to the
 * request that parsed it); a rejected one is left untouched.
 */
export function normalizeEvent(raw: unknown, env: RequestEnvelope): NormalizeResult {
  if (!isPlainObject(raw)) return reject('TRIB_ERR_EVENT_NOT_OBJECT');
  const type = env.routeType ?? raw.type;
  if (!isEventType(type)) return reject('TRIB_ERR_EVENT_UNKNOWN_TYPE', JSON.stringify(raw.type ?? null));

  const userId = idValue(raw.userId);
  const anonymousId = idValue(raw.anonymousId);
  if (userId === null) return reject('TRIB_ERR_EVENT_INVALID_FIELD', 'userId must be a string or a number');
  if (anonymousId === null)
    return reject('TRIB_ERR_EVENT_INVALID_FIELD', 'anonymousId must be a string or a number');
  if (userId === undefined && anonymousId === undefined) return reject('TRIB_ERR_EVENT_MISSING_IDENTITY');

  let messageId: string;
  if (raw.messageId === undefined || raw.messageId === null || raw.messageId === '') {
    messageId = env.newMessageId();
  } else if (typeof raw.messageId === 'string') {
    if (raw.messageId.length > MAX_MESSAGE_ID_LENGTH) return reject('TRIB_ERR_EVENT_MESSAGE_ID_TOO_LONG');
    messageId = raw.messageId;
  } else {
    return reject('TRIB_ERR_EVENT_INVALID_FIELD', 'messageId must be a string');
  }

  if (type === 'track' && (typeof raw.event !== 'string' || raw.event.trim() === '')) {
    return reject(
      raw.event === undefined ? 'TRIB_ERR_EVENT_MISSING_EVENT_NAME' : 'TRIB_ERR_EVENT_INVALID_FIELD',
      raw.event === undefined ? undefined : 'event must be a non-empty string',
    );
  }
  if (type !== 'track' && raw.event !== undefined && raw.event !== null && typeof raw.event !== 'string') {
    return reject('TRIB_ERR_EVENT_INVALID_FIELD', 'event must be a string');
  }
  if (type === 'group' && !idValue(raw.groupId)) return reject('TRIB_ERR_EVENT_MISSING_GROUP_ID');
  if (type === 'alias' && !idValue(raw.previousId)) return reject('TRIB_ERR_EVENT_MISSING_PREVIOUS_ID');
  for (const field of OBJECT_FIELDS) {
    const value = raw[field];
    if (value !== undefined && value !== null && !isPlainObject(value)) {
      return reject('TRIB_ERR_EVENT_INVALID_FIELD', `${field} must be an object`);
    }
  }
  for (const field of ['name', 'category', 'groupId', 'previousId'] as const) {
    const value = raw[field];
    if (value !== undefined && value !== null && typeof value !== 'string' && typeof value !== 'number') {
      return reject('TRIB_ERR_EVENT_INVALID_FIELD', `${field} must be a string`);
    }
  }

  const explicit = parseTime('timestamp', raw.timestamp);
  if (typeof explicit === 'object') return explicit;
  const original = parseTime('originalTimestamp', raw.originalTimestamp);
  if (typeof original === 'object') return original;
  const sentAt = parseTime('sentAt', raw.sentAt ?? env.sentAt);
  if (typeof sentAt === 'object') return sentAt;

  const receivedAt = env.receivedAt;
  let timestamp: number;
  let timestampIso: string | undefined;
  if (explicit !== undefined) {
    timestamp = explicit;
    if (CANONICAL_ISO.test(raw.timestamp as string)) timestampIso = raw.timestamp as string;
  } else if (original !== undefined && sentAt !== undefined) {
    timestamp = receivedAt - (sentAt - original);
    // Both readable, yet far apart (0001 and 9999): the corrected instant is no date at all.
    if (!inTimeRange(timestamp)) {
      return reject(
        'TRIB_ERR_EVENT_INVALID_TIMESTAMP',
        'originalTimestamp corrected by sentAt falls outside years 0001-9999',
      );
    }
  } else if (original !== undefined) timestamp = original;
  else timestamp = receivedAt;

  let warnings: EventWarning[] | undefined;
  if (timestamp - receivedAt > MAX_FUTURE_SKEW_MS) {
    warnings = [
      {
        code: 'TRIB_WARN_TIMESTAMP_IN_FUTURE',
        message: `timestamp ${new Date(timestamp).toISOString()} was more than 23 h after receipt; receivedAt used`,
      },
    ];
    timestamp = receivedAt;
    timestampIso = undefined;
  }

  let context: JsonObject;
  if (env.context !== undefined) context = { ...env.context, ...(raw.context as JsonObject | undefined) };
  else context = isPlainObject(raw.context) ? raw.context : {};
  if (env.ip !== undefined && context.ip === undefined) context.ip = env.ip;

  const receivedAtIso = env.receivedAtIso ?? new Date(receivedAt).toISOString();
  const event = raw as SegmentEvent;
  event.type = type;
  event.messageId = messageId;
  event.receivedAt = receivedAtIso;
  event.timestamp =
    timestampIso ?? (timestamp === receivedAt ? receivedAtIso : new Date(timestamp).toISOString());
  event.context = context;
  if (userId !== undefined) event.userId = userId;
  else if (raw.userId !== undefined) delete event.userId;
  if (anonymousId !== undefined) event.anonymousId = anonymousId;
  else if (raw.anonymousId !== undefined) delete event.anonymousId;
  if (env.integrations !== undefined) {
    event.integrations = { ...env.integrations, ...(raw.integrations as JsonObject | undefined) };
  }
  if (raw.sentAt === undefined && typeof env.sentAt === 'string') event.sentAt = env.sentAt;
  if (raw.writeKey !== undefined) delete event.writeKey;
  if (warnings !== undefined) event._tributary = { warnings };
  return { ok: true, event };
}
