import { randomUUID } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { EventRejectionCode } from '../errors.js';
import { EventRejectionCodes, TributaryError } from '../errors.js';
import type { EventLog, RawEvent } from '../log/event-log.js';
import type { PiiClassifier, PrivacyResult } from '../pipeline/privacy/pii-classifier.js';
import type { HttpSourceSpec } from '../sources/http/spec.js';
import { isStripeEventBody, webhookVendorByHeaders } from '../sources/webhook/detect.js';
import { type EventType, isEventType, isPlainObject, type JsonObject, SHORT_TYPES } from '../spec/event.js';
import { MAX_MESSAGE_ID_LENGTH, normalizeEvent } from '../spec/normalize.js';
import {
  BATCH_MAX_BYTES,
  BATCH_MAX_EVENTS,
  decodeBody,
  EVENT_MAX_BYTES,
  MAX_DEPTH,
  parseJsonBody,
} from './body.js';
import { extractWriteKey } from './write-key.js';

/** What the collection routes report, for metrics. */
export interface CollectObserver {
  received(sourceId: string, count: number): void;
  accepted(sourceId: string, count: number): void;
  rejected(sourceId: string, code: string, count: number): void;
  /** What the privacy policy found in one event (class names and paths only, never values). */
  privacy?(sourceId: string, result: PrivacyResult): void;
}

export interface CollectDeps {
  /** Enabled sources by write key. */
  sourcesByWriteKey: ReadonlyMap<string, HttpSourceSpec>;
  log: EventLog;
  observer: CollectObserver;
  /** Privacy policy per source id; sources without one are not classified. */
  privacy?: ReadonlyMap<string, PiiClassifier>;
  /** URL clients reach the server at, when it differs from the request's Host. */
  publicUrl?: string;
  /**
   * Whether an event carries an identity a deletion request suppressed (it counts the drop):
   * such an event is answered like an accepted one and never appended.
   */
  suppressed?: (sourceId: string, event: unknown) => boolean;
}

/**
 * An event is limited to 32 KB as sent. The check on a batch's events is made on the stored
 * form, which carries the server-side fields too (receivedAt, timestamp, context.ip, merged
 * batch context): 1 KB is allowed for them, so an event the client kept under 32 KB passes.
 */
export const STORED_EVENT_MAX_BYTES = EVENT_MAX_BYTES + 1024;

export interface Rejection {
  index: number;
  code: EventRejectionCode;
  message: string;
}

/** The collection API: Segment, RudderStack and Jitsu routes and the SDK settings endpoints. */
export async function collectRoutes(app: FastifyInstance, deps: CollectDeps): Promise<void> {
  const batchRoute = { bodyLimit: BATCH_MAX_BYTES + 1024 };

  for (const type of ['track', 'identify', 'page', 'screen', 'group', 'alias'] as const) {
    app.post(`/v1/${type}`, batchRoute, (req, reply) => collect(req, reply, deps, type));
  }
  app.post('/v1/batch', batchRoute, (req, reply) => collect(req, reply, deps, 'batch'));
  app.post('/v1/import', batchRoute, (req, reply) => collect(req, reply, deps, 'batch'));
  app.post('/beacon/v1/batch', batchRoute, (req, reply) => collect(req, reply, deps, 'batch'));
  app.post<{ Params: { short: string } }>('/v1/:short', batchRoute, (req, reply) => {
    const type = SHORT_TYPES[req.params.short];
    if (req.params.short === 'm') return reply.send({ success: true });
    if (!type) throw new TributaryError('TRIB_ERR_NOT_FOUND', [`POST ${req.url}`]);
    return collect(req, reply, deps, type);
  });
  const jitsu = (req: FastifyRequest<{ Params: { type: string } }>, reply: FastifyReply) => {
    const type = req.params.type;
    if (type === 'batch') return collect(req, reply, deps, 'batch');
    if (!isEventType(type)) throw new TributaryError('TRIB_ERR_COLLECT_UNKNOWN_TYPE', [type]);
    return collect(req, reply, deps, type);
  };
  app.post<{ Params: { type: string } }>('/api/s/:type', batchRoute, jitsu);
  app.post<{ Params: { type: string } }>('/api/s/s2s/:type', batchRoute, jitsu);

  app.get<{ Params: { writeKey: string } }>('/v1/projects/:writeKey/settings', (req, reply) => {
    const source = deps.sourcesByWriteKey.get(req.params.writeKey);
    if (!source) throw new TributaryError('TRIB_ERR_AUTH_UNKNOWN_WRITE_KEY');
    const base = publicBase(req, deps.publicUrl);
    reply.header('cache-control', 'no-cache');
    return {
      integrations: {
        'Segment.io': {
          apiKey: req.params.writeKey,
          apiHost: `${base.host}/v1`,
          protocol: base.protocol,
          unbundledIntegrations: [],
          addBundledMetadata: true,
          maybeBundledConfigIds: {},
        },
      },
      plan: {
        track: { __default: { enabled: true, integrations: {} } },
        identify: { __default: { enabled: true } },
        group: { __default: { enabled: true } },
      },
      edgeFunction: {},
      analyticsNextEnabled: true,
      middlewareSettings: {},
      enabledMiddleware: {},
      metrics: { sampleRate: 0 },
      legacyVideoPluginsEnabled: false,
      remotePlugins: [],
    };
  });

  app.get('/sourceConfig/', (req) => {
    const key = extractWriteKey(req.headers, req.query, undefined);
    if (key === undefined) throw new TributaryError('TRIB_ERR_AUTH_MISSING_WRITE_KEY');
    const source = deps.sourcesByWriteKey.get(key);
    if (!source) throw new TributaryError('TRIB_ERR_AUTH_UNKNOWN_WRITE_KEY');
    return {
      isHosted: false,
      source: {
        id: source.id,
        name: source.name ?? source.id,
        writeKey: key,
        workspaceId: 'tributary',
        enabled: true,
        config: { statsCollection: { errors: { enabled: false }, metrics: { enabled: false } } },
        destinations: [],
      },
    };
  });
}

function publicBase(req: FastifyRequest, publicUrl: string | undefined): { protocol: string; host: string } {
  if (publicUrl) {
    const u = new URL(publicUrl);
    return { protocol: u.protocol.replace(':', ''), host: u.host + u.pathname.replace(/\/$/, '') };
  }
  return { protocol: req.protocol, host: req.headers.host ?? `${req.hostname}` };
}

async function collect(
  req: FastifyRequest,
  reply: FastifyReply,
  deps: CollectDeps,
  route: EventType | 'batch',
) {
  const receivedAt = Date.now();
  const isBatch = route === 'batch';
  // A vendor's webhook sent here would be answered 200 and stored as nothing useful.
  const vendor = webhookVendorByHeaders(req.headers);
  if (vendor !== undefined) throw new TributaryError('TRIB_ERR_COLLECT_WEBHOOK_REQUEST', [vendor]);

  // A key in the headers or query is checked before the body is even decoded.
  let writeKey = extractWriteKey(req.headers, req.query, undefined);
  if (writeKey !== undefined && !deps.sourcesByWriteKey.has(writeKey)) {
    throw new TributaryError('TRIB_ERR_AUTH_UNKNOWN_WRITE_KEY');
  }

  const raw = req.body instanceof Buffer ? req.body : Buffer.alloc(0);
  const limit = isBatch ? BATCH_MAX_BYTES : EVENT_MAX_BYTES;
  let decoded: Buffer;
  try {
    decoded = await decodeBody(raw, req.headers['content-encoding'], limit);
  } catch (err) {
    if (!isBatch && err instanceof TributaryError && err.code === 'TRIB_ERR_COLLECT_BODY_TOO_LARGE') {
      throw new TributaryError('TRIB_ERR_COLLECT_EVENT_TOO_LARGE', [EVENT_MAX_BYTES], { cause: err });
    }
    throw err;
  }
  const body = parseJsonBody(decoded, MAX_DEPTH);
  if (!isPlainObject(body)) throw new TributaryError('TRIB_ERR_COLLECT_NOT_AN_OBJECT');
  if (isStripeEventBody(body)) throw new TributaryError('TRIB_ERR_COLLECT_WEBHOOK_REQUEST', ['Stripe']);
  writeKey ??= extractWriteKey({}, undefined, body);
  if (writeKey === undefined) throw new TributaryError('TRIB_ERR_AUTH_MISSING_WRITE_KEY');
  const source = deps.sourcesByWriteKey.get(writeKey);
  if (!source) throw new TributaryError('TRIB_ERR_AUTH_UNKNOWN_WRITE_KEY');

  let items: unknown[];
  let batchContext: JsonObject | undefined;
  let batchIntegrations: JsonObject | undefined;
  let sentAt: unknown;
  if (isBatch) {
    if (!Array.isArray(body.batch)) throw new TributaryError('TRIB_ERR_COLLECT_BATCH_NOT_ARRAY');
    if (body.batch.length > BATCH_MAX_EVENTS)
      throw new TributaryError('TRIB_ERR_COLLECT_TOO_MANY_EVENTS', [BATCH_MAX_EVENTS]);
    items = body.batch;
    batchContext = isPlainObject(body.context) ? body.context : undefined;
    batchIntegrations = isPlainObject(body.integrations) ? body.integrations : undefined;
    sentAt = body.sentAt;
  } else {
    items = [body];
  }

  const ip = req.ip;
  const receivedAtIso = new Date(receivedAt).toISOString();
  const records: RawEvent[] = new Array(items.length);
  const rejected: Rejection[] = [];
  const pii = deps.privacy?.get(source.id);
  const reject = (i: number, json: string, code: EventRejectionCode, message: string) => {
    records[i] = rejectedRecord(source.id, items[i], json, receivedAt, code, message);
    rejected.push({ index: i, code, message });
  };
  let dropped = 0;
  for (let i = 0; i < items.length; i++) {
    const item = items[i];
    // `_tributary` is the server's (warnings, mapping records, a retry's `retryOf`): a client's
    // would be believed downstream, so it is removed, from rejected events too. Retries of
    // failed events are appended to the log by the server (pipeline/failed-store.ts), not here.
    if (isPlainObject(item) && item._tributary !== undefined) delete item._tributary;
    const result = normalizeEvent(item, {
      receivedAt,
      receivedAtIso,
      ip,
      context: batchContext,
      integrations: batchIntegrations,
      sentAt,
      routeType: isBatch ? undefined : route,
      newMessageId: randomUUID,
    });
    if (!result.ok) {
      // A rejected event is stored for the failed-event store: with the policy applied too.
      if (pii && isPlainObject(item)) observePrivacy(deps, source.id, pii.apply(item));
      reject(i, JSON.stringify(item ?? null), result.code, result.message);
      continue;
    }
    if (pii) {
      // Before anything is written: a blocked value, or a dropped one, never reaches the log.
      const found = pii.apply(result.event);
      observePrivacy(deps, source.id, found);
      if (found.blocked) {
        const classes = found.findings
          .filter((f) => f.action === 'block')
          .map((f) => `${f.className} at ${f.path}`);
        reject(
          i,
          JSON.stringify(result.event),
          'TRIB_ERR_EVENT_PII_BLOCKED',
          `${EventRejectionCodes.TRIB_ERR_EVENT_PII_BLOCKED} (${classes.join(', ')})`,
        );
        continue;
      }
    }
    if (deps.suppressed?.(source.id, result.event)) {
      dropped++;
      continue;
    }
    const json = JSON.stringify(result.event);
    if (json.length * 3 > STORED_EVENT_MAX_BYTES && Buffer.byteLength(json) > STORED_EVENT_MAX_BYTES) {
      if (!isBatch) throw new TributaryError('TRIB_ERR_COLLECT_EVENT_TOO_LARGE', [EVENT_MAX_BYTES]);
      reject(i, json, 'TRIB_ERR_EVENT_TOO_LARGE', EventRejectionCodes.TRIB_ERR_EVENT_TOO_LARGE);
      continue;
    }
    records[i] = {
      sourceId: source.id,
      messageId: result.event.messageId,
      receivedAt,
      status: 'accepted',
      json,
      identityKey: identityKeyOf(result.event),
    };
  }

  try {
    // A suppressed event leaves a hole in `records`: it is not appended.
    await deps.log.append(dropped === 0 ? records : records.filter((r) => r !== undefined));
  } catch (err) {
    throw new TributaryError('TRIB_ERR_LOG_APPEND_FAILED', [], { cause: err });
  }
  // Counted once durable, so received = accepted + rejected holds; a refused request is
  // counted under tributary_requests_refused_total instead.
  const accepted = items.length - rejected.length;
  // Suppressed events are answered as accepted (the client learns nothing of a deletion) but
  // counted apart (tributary_events_suppressed_total), so the reconciled counts still add up.
  deps.observer.received(source.id, items.length - dropped);
  deps.observer.accepted(source.id, accepted - dropped);
  const byCode = new Map<string, number>();
  for (const r of rejected) byCode.set(r.code, (byCode.get(r.code) ?? 0) + 1);
  for (const [code, n] of byCode) deps.observer.rejected(source.id, code, n);
  reply.header('content-type', 'application/json; charset=utf-8');
  return { success: true, accepted, rejected };
}

/** The userId, else the anonymousId, as text (see `RawEvent.identityKey`). */
function identityKeyOf(event: { userId?: unknown; anonymousId?: unknown }): string | undefined {
  const id = event.userId ?? event.anonymousId;
  return id === undefined || id === null || id === '' ? undefined : String(id);
}

function observePrivacy(deps: CollectDeps, sourceId: string, result: PrivacyResult): void {
  if (result.findings.length > 0) deps.observer.privacy?.(sourceId, result);
}

/** A rejected event as the log keeps it: under the client's messageId when usable. */
function rejectedRecord(
  sourceId: string,
  item: unknown,
  json: string,
  receivedAt: number,
  code: string,
  reason: string,
): RawEvent {
  const claimed = isPlainObject(item) ? item.messageId : undefined;
  const messageId =
    typeof claimed === 'string' && claimed !== '' && claimed.length <= MAX_MESSAGE_ID_LENGTH
      ? claimed
      : randomUUID();
  return { sourceId, messageId, receivedAt, status: 'rejected', code, reason, json };
}
