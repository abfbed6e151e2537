import { createHash } from 'node:crypto';
import { Socket } from 'node:net';
import jsonata from 'jsonata';
import type { CheckResult } from '../connector.js';
import type {
  Delivery,
  DeliveryOp,
  IdentityRef,
  SendResult,
  StreamConnector,
  StreamDestination,
} from '../stream.js';
import { retryAfterMs } from './retry-after.js';
import { signatureHeader } from './signature.js';
import type { HttpDestinationConfig } from './spec.js';

/** Most characters of a response body kept in an error (and so in failed_events). */
const ERROR_BODY_CHARS = 300;

/**
 * The HTTP / webhook destination: each delivery's body from the JSONata template (or the event
 * as is), one request per delivery or, with `batchSize` > 1, one request with a JSON array.
 * Answers: 2xx ok; 408, 429, 5xx, network errors and timeouts retryable (with `Retry-After`);
 * any other status refuses the request's deliveries for good. Requests go through Node's
 * `fetch` (undici), which keeps connections alive.
 */
export const httpConnector: StreamConnector<HttpDestinationConfig> = {
  async check(config) {
    return reachable(config.id, config.url);
  },
  async create(config) {
    return new HttpDestination(config);
  },
};

class HttpDestination implements StreamDestination {
  readonly id: string;
  private readonly template: jsonata.Expression | undefined;
  private readonly headers: Record<string, string>;

  constructor(private readonly config: HttpDestinationConfig) {
    this.id = config.id;
    this.template = config.body === undefined ? undefined : jsonata(config.body);
    this.headers = { 'content-type': 'application/json', ...lowerKeys(config.headers) };
    const auth = config.auth;
    if (auth?.type === 'basic')
      this.headers.authorization = `Basic ${Buffer.from(`${auth.username}:${auth.password}`).toString('base64')}`;
    else if (auth?.type === 'bearer') this.headers.authorization = `Bearer ${auth.token}`;
  }

  async send(batch: readonly Delivery[], signal: AbortSignal): Promise<SendResult[]> {
    const results: (SendResult | undefined)[] = new Array(batch.length);
    const bodies: (string | undefined)[] = await Promise.all(
      batch.map(async (d, i) => {
        try {
          const value = this.template
            ? await this.template.evaluate(d.payload, { op: d.op, key: d.key })
            : d.payload;
          if (value === undefined) throw new Error('the body template gave no value for this event');
          return JSON.stringify(value);
        } catch (err) {
          results[i] = {
            status: 'failed',
            code: 'TRIB_ERR_DELIVERY_ENCODE',
            error: `the body template failed on this event: ${(err as Error).message}`,
          };
          return undefined;
        }
      }),
    );
    const ready = batch.map((_, i) => i).filter((i) => results[i] === undefined);
    if (ready.length === 0) return results as SendResult[];
    if (this.config.batchSize > 1) {
      // One request per run of deliveries of the same operation, in order, so the
      // X-Tributary-Operation header holds for the whole array.
      for (let start = 0; start < ready.length; ) {
        const op = batch[ready[start]!]!.op;
        let end = start + 1;
        while (end < ready.length && batch[ready[end]!]!.op === op) end++;
        const run = ready.slice(start, end);
        const body = `[${run.map((i) => bodies[i]).join(',')}]`;
        const key = run.length === 1 ? batch[run[0]!]!.key : batchKey(run.map((i) => batch[i]!.key));
        const r = signal.aborted
          ? ({ status: 'retryable', error: 'the request timed out' } as const)
          : await this.request(this.config.url, body, key, signal, op);
        for (const i of run) results[i] = r;
        start = end;
      }
    } else {
      // In order: the deliveries of one call may be one user's.
      for (const i of ready) {
        if (signal.aborted) results[i] = { status: 'retryable', error: 'the request timed out' };
        else
          results[i] = await this.request(this.config.url, bodies[i]!, batch[i]!.key, signal, batch[i]!.op);
      }
    }
    return results as SendResult[];
  }

  async deleteIdentities(identities: readonly IdentityRef[], signal: AbortSignal): Promise<SendResult> {
    if (this.config.deletionUrl === undefined)
      return {
        status: 'failed',
        code: 'TRIB_ERR_DELIVERY_REFUSED',
        error: 'the destination has no deletionUrl',
      };
    const body = JSON.stringify({ identities, requestedAt: new Date().toISOString() });
    const key = batchKey(identities.map((i) => `${i.type}:${i.value}`));
    return this.request(this.config.deletionUrl, body, `delete:${key}`, signal);
  }

  async close(): Promise<void> {}

  private async request(
    url: string,
    body: string,
    key: string,
    signal: AbortSignal,
    op?: DeliveryOp,
  ): Promise<SendResult> {
    const headers: Record<string, string> = { ...this.headers, 'idempotency-key': key };
    // Events and reverse-ETL rows (insert, update, upsert, delete) tell the receiver what they are.
    if (op !== undefined) headers['x-tributary-operation'] = op;
    if (this.config.signature)
      headers[this.config.signature.header.toLowerCase()] = signatureHeader(
        this.config.signature.secret,
        body,
      );
    let res: Response;
    try {
      res = await fetch(url, { method: this.config.method, headers, body, signal, redirect: 'manual' });
    } catch (err) {
      return { status: 'retryable', error: networkError(err, signal) };
    }
    if (res.status >= 200 && res.status < 300) {
      // The body is read so the connection goes back to the pool.
      await res.arrayBuffer().catch(() => undefined);
      return { status: 'ok', detail: `HTTP ${res.status}` };
    }
    let text = '';
    try {
      text = (await res.text()).slice(0, ERROR_BODY_CHARS);
    } catch {
      // the answer broke off: its status decides
    }
    const error = `HTTP ${res.status}${text === '' ? '' : `: ${text}`}`;
    if (res.status === 408 || res.status === 429 || res.status >= 500) {
      const after = retryAfterMs(res.headers.get('retry-after'));
      return after === undefined
        ? { status: 'retryable', error }
        : { status: 'retryable', error, retryAfterMs: after };
    }
    return { status: 'failed', code: 'TRIB_ERR_DELIVERY_REFUSED', error };
  }
}

/** The `Idempotency-Key` of a batch: the same deliveries in the same order give the same key. */
function batchKey(keys: readonly string[]): string {
  return `batch:${createHash('sha256').update(keys.join('\n')).digest('hex')}`;
}

function lowerKeys(h: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(h).map(([k, v]) => [k.toLowerCase(), v]));
}

/** A fetch failure as one line: the timeout, or undici's cause (`ECONNREFUSED 127.0.0.1:9`). */
function networkError(err: unknown, signal: AbortSignal): string {
  if (signal.aborted) return 'the request timed out';
  const e = err as Error & { cause?: { code?: string; message?: string } };
  return e.cause ? `${e.message}: ${e.cause.code ?? ''} ${e.cause.message ?? ''}`.trim() : e.message;
}

/** Opens (and closes) a TCP connection to the URL's host and port: sends nothing. */
function reachable(id: string, url: string, timeoutMs = 5000): Promise<CheckResult> {
  const u = new URL(url);
  const port = Number(u.port || (u.protocol === 'https:' ? 443 : 80));
  const host = u.hostname.replace(/^\[|\]$/g, '');
  return new Promise((resolve) => {
    const socket = new Socket();
    const done = (r: CheckResult) => {
      socket.destroy();
      resolve(r);
    };
    socket.setTimeout(timeoutMs, () =>
      done({
        ok: false,
        code: 'TRIB_ERR_DEST_CHECK_UNREACHABLE',
        message: `Destination "${id}": nothing answers at ${host}:${port} (no answer in ${timeoutMs} ms); check its url`,
      }),
    );
    socket.once('error', (err) =>
      done({
        ok: false,
        code: 'TRIB_ERR_DEST_CHECK_UNREACHABLE',
        message: `Destination "${id}": nothing answers at ${host}:${port} (${err.message}); check its url`,
      }),
    );
    socket.connect(port, host, () => done({ ok: true }));
  });
}
