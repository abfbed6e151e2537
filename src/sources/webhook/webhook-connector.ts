import { readFileSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { BATCH_MAX_EVENTS, MAX_DEPTH, parseJsonBody } from '../../collect/body.js';
import { TributaryError } from '../../errors.js';
import { compileFunction } from '../../pipeline/transform/compile.js';
import { Sandbox } from '../../pipeline/transform/sandbox.js';
import { MAX_MESSAGE_ID_LENGTH } from '../../spec/normalize.js';
import type { PushMapResult, PushReceiver, PushRequest, PushSourceConnector } from '../source.js';
import { compilePath } from './json-path.js';
import { compileMapping, type Mapper } from './mapping.js';
import { PRESETS } from './presets.js';
import { WebhookSourceConfig } from './spec.js';
import { bodyDeliveryId, createVerifier } from './verify.js';

/** Most events one delivery may make (as a batch of the collection API). */
const MAX_EVENTS_PER_DELIVERY = BATCH_MAX_EVENTS;

/**
 * Headers a mapping or function may read: the request's, less those that carry credentials
 * (a vendor sending Basic auth, a proxy's cookie).
 */
const HIDDEN_HEADERS = new Set(['authorization', 'cookie', 'proxy-authorization']);

export function visibleHeaders(headers: PushRequest['headers']): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers)) if (v !== undefined && !HIDDEN_HEADERS.has(k)) out[k] = v;
  return out;
}

type Parsed = { ok: true; value: unknown } | { ok: false; reason: string };

/**
 * JSON of a verified body, parsed as the collection API parses (`__proto__` keys dropped,
 * nesting capped, unstorable characters repaired); a body that is not JSON is the source's failure.
 */
function parseBody(body: Buffer): Parsed {
  try {
    return { ok: true, value: parseJsonBody(body, MAX_DEPTH) };
  } catch (err) {
    return { ok: false, reason: (err as Error).message };
  }
}

/**
 * The JSON text of a body: itself, or for a form post (GitHub's `application/x-www-form-urlencoded`
 * content type) its `payload` field. The signature was checked over the body as sent.
 */
function jsonOf(req: PushRequest): Buffer {
  const type = req.headers['content-type'] ?? '';
  if (!/^application\/x-www-form-urlencoded\b/i.test(type)) return req.body;
  const payload = new URLSearchParams(req.body.toString('utf8')).get('payload');
  return payload === null ? req.body : Buffer.from(payload, 'utf8');
}

/** The delivery's messageId: the vendor's id when usable, else a hash of the body. */
function deliveryIdOf(
  config: WebhookSourceConfig,
  verified: string | undefined,
  payload: unknown,
  req: PushRequest,
  idPath: ((i: { payload: unknown; headers: PushRequest['headers'] }) => unknown) | undefined,
): string {
  let id: unknown = verified;
  if (
    id === undefined &&
    config.verify.kind === 'stripe' &&
    payload !== null &&
    typeof payload === 'object'
  ) {
    id = (payload as Record<string, unknown>).id;
  }
  if (id === undefined && idPath) id = idPath({ payload, headers: req.headers });
  if (typeof id === 'number' && Number.isFinite(id)) id = String(id);
  return typeof id === 'string' && id !== '' && id.length <= MAX_MESSAGE_ID_LENGTH
    ? id
    : bodyDeliveryId(req.body);
}

/** The source's function file, compiled. @throws `TRIB_ERR_TRANSFORM_INVALID` when it cannot be read or parsed. */
export function compileWebhookFunction(
  config: WebhookSourceConfig,
  baseDir: string,
): { file: string; code: string } {
  const file = isAbsolute(config.function!.file)
    ? config.function!.file
    : resolve(baseDir, config.function!.file);
  try {
    return { file, code: compileFunction(readFileSync(file, 'utf8'), file) };
  } catch (err) {
    throw new TributaryError(
      'TRIB_ERR_TRANSFORM_INVALID',
      [`sources[${config.id}].function: ${(err as Error).message}`],
      {
        cause: err,
      },
    );
  }
}

/** Runs the user's function: `{ payload, headers, deliveryId, sourceId }` in, events out. */
async function functionMapper(
  config: WebhookSourceConfig,
  baseDir: string,
  env: Record<string, string | undefined>,
): Promise<{ run: (input: unknown) => Promise<PushMapResult>; close: () => Promise<void> }> {
  const f = config.function!;
  const { file, code } = compileWebhookFunction(config, baseDir);
  const granted: Record<string, string> = {};
  for (const name of f.grants.env) {
    const v = env[name];
    if (v !== undefined) granted[name] = v;
  }
  let sandbox: Sandbox | undefined;
  try {
    sandbox = new Sandbox({
      code,
      filename: file,
      timeoutMs: f.timeout,
      memoryMb: f.memoryLimit,
      env: granted,
      network: f.grants.network,
    });
    await sandbox.start();
  } catch (err) {
    await sandbox?.close();
    throw new TributaryError(
      'TRIB_ERR_TRANSFORM_INVALID',
      [`sources[${config.id}].function: ${(err as Error).message}`],
      {
        cause: err,
      },
    );
  }
  const box = sandbox;
  return {
    async run(input) {
      const [r] = await box.run([input]);
      if (!r?.ok) {
        return {
          kind: 'failed',
          code: 'TRIB_ERR_WEBHOOK_FUNCTION_FAILED',
          reason: `the function failed (${r?.code ?? 'no result'}): ${r?.ok === false ? r.message : ''}`,
        };
      }
      if (r.events.length === 0) return { kind: 'ignored' };
      if (r.events.length > MAX_EVENTS_PER_DELIVERY)
        return {
          kind: 'failed',
          code: 'TRIB_ERR_WEBHOOK_FUNCTION_FAILED',
          reason: `the function returned ${r.events.length} events; a delivery may make at most ${MAX_EVENTS_PER_DELIVERY}`,
        };
      const events: Record<string, unknown>[] = [];
      for (const [k, e] of r.events.entries()) {
        if (e === null || typeof e !== 'object' || Array.isArray(e))
          return {
            kind: 'failed',
            code: 'TRIB_ERR_WEBHOOK_FUNCTION_FAILED',
            reason: `the function's output ${k} is not an object`,
          };
        events.push(e as Record<string, unknown>);
      }
      return { kind: 'events', events };
    },
    close: () => box.close(),
  };
}

/**
 * Gives each event of a delivery its messageId: the delivery id for the first, then
 * `<deliveryId>-<n>`, the same on every redelivery; an id the mapping set is kept.
 */
function withMessageIds(events: Record<string, unknown>[], deliveryId: string): Record<string, unknown>[] {
  const seen = new Set<string>();
  return events.map((e, k) => {
    let id =
      typeof e.messageId === 'string' && e.messageId !== ''
        ? e.messageId
        : k === 0
          ? deliveryId
          : `${deliveryId}-${k}`;
    if (seen.has(id)) id = `${deliveryId}-${k}`;
    seen.add(id);
    return { ...e, messageId: id };
  });
}

/**
 * The webhook connector: `type: webhook` sources, each at `POST /webhooks/<id>`. `verify`
 * checks the vendor's signature (see verify.ts); `map` parses the body and runs the source's
 * rules (its own `rules:` first, then the preset's) or its function.
 */
export const webhookConnector: PushSourceConnector<WebhookSourceConfig> = {
  type: 'webhook',
  kind: 'push',
  spec: WebhookSourceConfig,
  async open(config, ctx): Promise<PushReceiver> {
    const verifier = createVerifier(config.verify);
    const idSpec = 'deliveryId' in config.verify ? config.verify.deliveryId : undefined;
    const idPath = idSpec && 'path' in idSpec ? compilePath(idSpec.path) : undefined;
    let mapper: Mapper | undefined;
    let fn: Awaited<ReturnType<typeof functionMapper>> | undefined;
    if (config.function) fn = await functionMapper(config, ctx.baseDir, ctx.env);
    else mapper = compileMapping([...(config.rules ?? []), ...(config.preset ? PRESETS[config.preset] : [])]);

    return {
      maxBodyBytes: config.maxBodyBytes,
      keepRaw: config.keepRaw,
      scheme: config.verify.kind,
      verify: (req) => verifier(req),
      async map(req, verified) {
        const parsed = parseBody(jsonOf(req));
        const payload = parsed.ok ? parsed.value : undefined;
        const deliveryId = deliveryIdOf(config, verified.deliveryId, payload, req, idPath);
        if (!parsed.ok)
          return {
            kind: 'failed',
            code: 'TRIB_ERR_WEBHOOK_NOT_JSON',
            reason: parsed.reason,
            deliveryId,
          };
        const headers = visibleHeaders(req.headers);
        let result: PushMapResult;
        if (fn) {
          result = await fn.run({ payload, headers, deliveryId, sourceId: config.id });
        } else {
          const outcome = mapper!({ payload, headers, deliveryId });
          if (outcome.kind === 'unmatched') {
            result =
              config.unmatched === 'ignore'
                ? { kind: 'ignored' }
                : {
                    kind: 'failed',
                    code: 'TRIB_ERR_WEBHOOK_UNMATCHED',
                    reason: `no rule of source ${config.id} matches this payload: add a rule for it, or set unmatched: ignore`,
                  };
          } else if (outcome.kind === 'failed') {
            result = { kind: 'failed', code: outcome.code, reason: outcome.reason };
          } else result = outcome;
        }
        if (result.kind === 'events')
          result = { kind: 'events', events: withMessageIds(result.events, deliveryId) };
        return { ...result, deliveryId };
      },
      close: async () => {
        await fn?.close();
      },
    };
  },
};
