import { type ErrorCode, TributaryError } from '../errors.js';
import type { CheckResult } from './connector.js';
import type { Delivery, SendResult } from './stream.js';

/**
 * What the stream connectors (`postgres-upsert/`, `mysql-upsert/`, `amqp/`, `mqtt/`,
 * `redis-streams/`) share: reading a value of a delivery by path, the `{path}` templates of
 * topics, routing keys and stream names, and the shapes of their results.
 */

/**
 * The value at `path` of a delivery: a dotted path into the payload (`properties.plan`,
 * `context.traits.email`), or one of `$key` (the idempotency key), `$op` (`event`, `insert`,
 * `update`, `upsert`, `delete`), `$orderKey`, `$` (the whole payload). Undefined when absent.
 *
 * @example valueAt(d, 'properties.plan') // 'pro'
 */
export function valueAt(d: Delivery, path: string): unknown {
  if (path === '$key') return d.key;
  if (path === '$op') return d.op;
  if (path === '$orderKey') return d.orderKey;
  if (path === '$') return d.payload;
  let v: unknown = d.payload;
  for (const part of path.split('.')) {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return undefined;
    // Own properties only: a path never reaches the prototype (`__proto__`, `constructor`).
    if (!Object.hasOwn(v, part)) return undefined;
    v = (v as Record<string, unknown>)[part];
  }
  return v;
}

const PLACEHOLDER = /\{([^{}]+)\}/g;

/**
 * Fills a template's `{path}` placeholders with the delivery's values ({@link valueAt}); a
 * value that is absent, an object or an array gives an empty text. `clean` rewrites each
 * value (e.g. MQTT takes no `/`, `+`, `#` from a value into a topic).
 *
 * @example renderTemplate('events.{type}.{event}', d) // 'events.track.Order Completed'
 */
export function renderTemplate(
  template: string,
  d: Delivery,
  clean: (v: string) => string = (v) => v,
): string {
  return template.replace(PLACEHOLDER, (_, path: string) => {
    const v = valueAt(d, path.trim());
    if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') return clean(String(v));
    return '';
  });
}

/** The placeholders of a template, for validation of a spec. */
export function templatePaths(template: string): string[] {
  return [...template.matchAll(PLACEHOLDER)].map((m) => m[1]!.trim());
}

/** A `failed` result with its code's message. */
export function failedResult(code: ErrorCode, args: readonly (string | number)[]): SendResult {
  const e = new TributaryError(code, args);
  return { status: 'failed', code: e.code, error: e.message };
}

/** A `retryable` result for an error (trimmed: a driver's message can be long). */
export function retryableResult(err: unknown): SendResult {
  const message = err instanceof Error ? err.message : String(err);
  return { status: 'retryable', error: message.slice(0, 500) || 'unknown error' };
}

/** A failed {@link CheckResult} with its code's message. */
export function checkFailed(code: ErrorCode, args: readonly (string | number)[]): CheckResult {
  const e = new TributaryError(code, args);
  return { ok: false, code: e.code, message: e.message };
}

/** Network errors of a connection that never reached a server. */
export const UNREACHABLE_CODES: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
]);

/** The error text of anything thrown, trimmed for a message. */
export function errorText(err: unknown): string {
  const e = err as { message?: unknown; code?: unknown };
  const text = typeof e?.message === 'string' && e.message !== '' ? e.message : String(e?.code ?? err);
  return text.slice(0, 300);
}

/**
 * The body of a broker message: the payload as JSON bytes, or the `failed` result when it
 * cannot be encoded or is larger than `maxBytes`.
 */
export function encodeBody(
  id: string,
  d: Delivery,
  maxBytes: number,
  shape: (d: Delivery) => unknown = (x) => x.payload,
): Buffer | SendResult {
  let body: Buffer;
  try {
    const json = JSON.stringify(shape(d));
    if (json === undefined) throw new Error('the payload is not a JSON value');
    body = Buffer.from(json, 'utf8');
  } catch (err) {
    return failedResult('TRIB_ERR_DEST_PAYLOAD_UNENCODABLE', [id, errorText(err)]);
  }
  if (body.length > maxBytes)
    return failedResult('TRIB_ERR_DEST_MESSAGE_TOO_LARGE', [id, body.length, maxBytes]);
  return body;
}

/**
 * Resolves with `work`, or with `onAbort()` as soon as `signal` aborts (the work goes on in the
 * background; its late outcome is ignored, so a message may still arrive: at least once).
 */
export function untilAborted<T>(work: Promise<T>, signal: AbortSignal, onAbort: () => T): Promise<T> {
  if (signal.aborted) {
    work.catch(() => undefined);
    return Promise.resolve(onAbort());
  }
  return new Promise<T>((resolve, reject) => {
    const abort = () => resolve(onAbort());
    signal.addEventListener('abort', abort, { once: true });
    work.then(
      (v) => {
        signal.removeEventListener('abort', abort);
        resolve(v);
      },
      (err) => {
        signal.removeEventListener('abort', abort);
        reject(err);
      },
    );
  });
}

/** The error a signal aborted with, as a retryable text. */
export function abortedText(signal: AbortSignal): string {
  const r = signal.reason as { message?: string } | undefined;
  return `aborted before the receiver answered (${r?.message ?? 'timeout'})`;
}

/**
 * Waits until `emitter` emits one of `events` (a client's connect, or the close of a failed
 * attempt) or `signal` aborts: a send to a client that is connecting waits for the outcome
 * of that attempt rather than failing at once.
 */
export function nextEvent(
  emitter: {
    once(event: string, listener: () => void): unknown;
    off(event: string, listener: () => void): unknown;
  },
  events: readonly string[],
  signal: AbortSignal,
): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const done = () => {
      for (const e of events) emitter.off(e, done);
      signal.removeEventListener('abort', done);
      resolve();
    };
    for (const e of events) emitter.once(e, done);
    signal.addEventListener('abort', done, { once: true });
  });
}

/** How long `close()` waits for a receiver to acknowledge a graceful close before cutting the connection. */
export const CLOSE_GRACE_MS = 2_000;

/**
 * Whether `work` settles within `ms`: a close that waits for a receiver's answer (a frozen
 * connection never answers) is bounded, and the caller then cuts the connection.
 */
export async function settlesWithin(work: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([
      work.then(
        () => true,
        () => true,
      ),
      late,
    ]);
  } finally {
    clearTimeout(timer);
  }
}
