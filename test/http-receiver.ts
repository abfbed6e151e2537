import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** One request as the receiver saw it. */
export interface ReceivedRequest {
  n: number;
  at: number;
  method: string;
  path: string;
  headers: IncomingMessage['headers'];
  body: string;
  /** The body parsed: an event, or an array of them. */
  json: unknown;
}

/** What the receiver answers a request (after `delayMs`, if given). */
export interface Answer {
  status: number;
  retryAfter?: string;
  delayMs?: number;
}

/**
 * A webhook receiver for the tests and the benchmark: a plain `node:http` server that reads
 * each request, lets `answer` decide the response (status, Retry-After, a delay past the
 * client's timeout), and dedups events on their `Idempotency-Key` the way a careful receiver
 * does: an event counts as received once, at its first 2xx-answered arrival.
 */
export class HttpReceiver {
  readonly requests: ReceivedRequest[] = [];
  /** Idempotency keys accepted (answered 2xx), in the order first accepted. */
  readonly accepted: string[] = [];
  private readonly acceptedSet = new Set<string>();
  /** Accepted events (each event of a batch), in the order first accepted. */
  readonly events: Record<string, unknown>[] = [];
  private readonly eventIds = new Set<string>();
  /** Requests repeating an accepted key. */
  duplicates = 0;
  private server: Server | undefined;
  url = '';

  constructor(public answer: (req: ReceivedRequest) => Answer = () => ({ status: 200 })) {}

  async start(): Promise<this> {
    this.server = createServer((req, res) => this.handle(req, res));
    this.server.keepAliveTimeout = 60_000;
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      let json: unknown;
      try {
        json = JSON.parse(body);
      } catch {
        json = undefined;
      }
      const r: ReceivedRequest = {
        n: this.requests.length,
        at: Date.now(),
        method: req.method ?? '',
        path: req.url ?? '',
        headers: req.headers,
        body,
        json,
      };
      this.requests.push(r);
      const a = this.answer(r);
      const reply = () => {
        if (a.status >= 200 && a.status < 300) this.accept(r);
        if (res.destroyed) return;
        const headers: Record<string, string> = { 'content-type': 'application/json' };
        if (a.retryAfter !== undefined) headers['retry-after'] = a.retryAfter;
        res.writeHead(a.status, headers).end(a.status < 300 ? '{"ok":true}' : '{"error":"no"}');
      };
      if (a.delayMs) setTimeout(reply, a.delayMs);
      else reply();
    });
  }

  private accept(r: ReceivedRequest): void {
    const key = String(r.headers['idempotency-key'] ?? '');
    if (this.acceptedSet.has(key)) {
      this.duplicates++;
      return;
    }
    this.acceptedSet.add(key);
    this.accepted.push(key);
    for (const e of Array.isArray(r.json) ? r.json : [r.json]) {
      const ev = e as Record<string, unknown>;
      const id = String(ev?.messageId ?? key);
      if (this.eventIds.has(id)) continue;
      this.eventIds.add(id);
      this.events.push(ev);
    }
  }

  /** Whether the event of this messageId was accepted. */
  has(messageId: string): boolean {
    return this.eventIds.has(messageId);
  }

  async waitFor(predicate: () => boolean, timeoutMs = 20_000, what = 'the receiver'): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!predicate()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async close(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }
}
