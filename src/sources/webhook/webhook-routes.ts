import { randomUUID } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { Counter, type Registry } from 'prom-client';
import type { CollectObserver } from '../../collect/collect-routes.js';
import { TributaryError } from '../../errors.js';
import type { EventLog, RawEvent } from '../../log/event-log.js';
import type { PiiClassifier } from '../../pipeline/privacy/pii-classifier.js';
import { isPlainObject } from '../../spec/event.js';
import { MAX_MESSAGE_ID_LENGTH, normalizeEvent } from '../../spec/normalize.js';
import type { PushReceiver, PushRequest } from '../source.js';

export interface WebhookRoutesDeps {
  /** Enabled push sources, opened, by id. */
  webhooks: ReadonlyMap<string, PushReceiver>;
  log: EventLog;
  /** The collection API's event counters: received = accepted + rejected, per source. */
  observer: CollectObserver;
  privacy?: ReadonlyMap<string, PiiClassifier>;
  registry: Registry;
}

/** Largest body kept, as text, in its event (`keepRaw`). */
export const RAW_MAX_BYTES = 256 * 1024;

/** Outcomes of webhook requests, by source (`tributary_webhook_requests_total`). */
export type WebhookOutcome = 'stored' | 'failed' | 'ignored' | 'unauthorized' | 'too_large';

/** The request's headers, names lowercase, one value each (a repeated header's first). */
function headersOf(req: FastifyRequest): Record<string, string | undefined> {
  const out: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(req.headers)) out[k] = Array.isArray(v) ? v[0] : v;
  return out;
}

/** The userId, else the anonymousId, as text (the log's partition key). */
function identityKeyOf(event: { userId?: unknown; anonymousId?: unknown }): string | undefined {
  const id = event.userId ?? event.anonymousId;
  return id === undefined || id === null || id === '' ? undefined : String(id);
}

/** What a failed delivery keeps: the payload as JSON when it is, else the body's text. */
function payloadText(body: Buffer): string {
  const text = body.toString('utf8');
  try {
    JSON.parse(text);
    return text;
  } catch {
    return JSON.stringify(text);
  }
}

/**
 * `POST /webhooks/:sourceId`: the signature is checked over the raw body (401 and nothing
 * stored when it fails), the payload is mapped to events, and the events (or the delivery,
 * as a rejected record bound for `failed_events`) are appended to the log; the 200 is sent
 * only once the append is durable. A delivery's events carry the vendor's delivery id as
 * their messageId, so the loader's dedupe stores a redelivery once.
 */
export async function webhookRoutes(app: FastifyInstance, deps: WebhookRoutesDeps): Promise<void> {
  const requests = new Counter({
    name: 'tributary_webhook_requests_total',
    help: 'Webhook requests by source and outcome: stored, failed (kept in failed_events), ignored, unauthorized, too_large.',
    labelNames: ['source', 'outcome'],
    registers: [deps.registry],
  });
  const count = (source: string, outcome: WebhookOutcome) => requests.inc({ source, outcome });
  let largest = 1024;
  for (const w of deps.webhooks.values()) largest = Math.max(largest, w.maxBodyBytes);

  app.post<{ Params: { sourceId: string } }>(
    '/webhooks/:sourceId',
    { bodyLimit: largest },
    async (req, reply) => {
      const receivedAt = Date.now();
      const sourceId = req.params.sourceId;
      const source = deps.webhooks.get(sourceId);
      if (!source) throw new TributaryError('TRIB_ERR_WEBHOOK_UNKNOWN_SOURCE', [sourceId.slice(0, 64)]);
      const body = req.body instanceof Buffer ? req.body : Buffer.alloc(0);
      if (body.length > source.maxBodyBytes) {
        count(sourceId, 'too_large');
        throw new TributaryError('TRIB_ERR_WEBHOOK_BODY_TOO_LARGE', [source.maxBodyBytes]);
      }
      const request: PushRequest = { body, headers: headersOf(req), receivedAt };
      const verified = await source.verify(request);
      if (!verified.ok) {
        count(sourceId, 'unauthorized');
        throw new TributaryError(verified.code as 'TRIB_ERR_WEBHOOK_SIGNATURE_INVALID', [
          verified.header,
          sourceId,
        ]);
      }
      const mapped = await source.map(request, verified);
      if (mapped.kind === 'ignored') {
        count(sourceId, 'ignored');
        return { success: true, accepted: 0, rejected: [] };
      }

      const records: RawEvent[] = [];
      const rejected: { index: number; code: string; message: string }[] = [];
      const reject = (messageId: string, code: string, reason: string, json: string) => {
        rejected.push({ index: records.length, code, message: reason });
        records.push({ sourceId, messageId, receivedAt, status: 'rejected', code, reason, json });
      };
      if (mapped.kind === 'failed') {
        reject(mapped.deliveryId, mapped.code, mapped.reason, payloadText(body));
      } else {
        const pii = deps.privacy?.get(sourceId);
        const receivedAtIso = new Date(receivedAt).toISOString();
        // A body over RAW_MAX_BYTES is not copied into its event, which must stay within what
        // any log takes in one record (NATS: 1 MB by default); the mapped fields still are.
        const raw = body.length <= RAW_MAX_BYTES ? body.toString('utf8') : undefined;
        const omitted = `the body (${body.length} bytes) is over ${RAW_MAX_BYTES} bytes, and was not kept`;
        for (const [k, e] of mapped.events.entries()) {
          const context = isPlainObject(e.context) ? e.context : {};
          const webhook: Record<string, unknown> = {
            source: sourceId,
            kind: source.scheme,
            deliveryId: mapped.deliveryId,
          };
          // Once per delivery: the other events of it share its deliveryId.
          if (source.keepRaw && k === 0) {
            if (raw !== undefined) webhook.payload = raw;
            else webhook.payloadOmitted = omitted;
          }
          e.context = { ...context, webhook };
          delete e._tributary;
          // A function may have set one over the limit: the rejection is filed under the delivery's.
          const claimed = String(e.messageId);
          const messageId = claimed.length <= MAX_MESSAGE_ID_LENGTH ? claimed : mapped.deliveryId;
          const result = normalizeEvent(e, {
            receivedAt,
            receivedAtIso,
            ip: req.ip,
            newMessageId: randomUUID,
          });
          if (!result.ok) {
            // Kept with the raw payload whatever keepRaw says: it is what a fix is made from.
            if (raw !== undefined) webhook.payload = raw;
            else webhook.payloadOmitted = omitted;
            reject(
              messageId,
              'TRIB_ERR_WEBHOOK_MAPPING_INVALID',
              `the mapped event was refused: ${result.message}`,
              JSON.stringify(e),
            );
            continue;
          }
          if (pii) {
            const found = pii.apply(result.event);
            if (found.findings.length > 0) deps.observer.privacy?.(sourceId, found);
            if (found.blocked) {
              const classes = found.findings
                .filter((f) => f.action === 'block')
                .map((f) => `${f.className} at ${f.path}`);
              reject(
                messageId,
                'TRIB_ERR_EVENT_PII_BLOCKED',
                `the source's privacy policy blocks this event (${classes.join(', ')})`,
                JSON.stringify(result.event),
              );
              continue;
            }
          }
          records.push({
            sourceId,
            messageId: result.event.messageId,
            receivedAt,
            status: 'accepted',
            json: JSON.stringify(result.event),
            identityKey: identityKeyOf(result.event),
          });
        }
      }
      try {
        await deps.log.append(records);
      } catch (err) {
        throw new TributaryError('TRIB_ERR_LOG_APPEND_FAILED', [], { cause: err });
      }
      const accepted = records.length - rejected.length;
      deps.observer.received(sourceId, records.length);
      deps.observer.accepted(sourceId, accepted);
      const byCode = new Map<string, number>();
      for (const r of rejected) byCode.set(r.code, (byCode.get(r.code) ?? 0) + 1);
      for (const [code, n] of byCode) deps.observer.rejected(sourceId, code, n);
      count(sourceId, accepted > 0 ? 'stored' : 'failed');
      reply.header('content-type', 'application/json; charset=utf-8');
      return { success: true, accepted, rejected };
    },
  );
}

/** Closes every opened source (their function sandboxes). */
export async function closeWebhooks(webhooks: ReadonlyMap<string, PushReceiver>): Promise<void> {
  await Promise.all([...webhooks.values()].map((w) => w.close()));
}
