import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Delivery, SendResult, StreamDestination } from '../../src/destinations/stream.js';

/**
 * A real HTTP receiver for reverse-ETL tests: it takes batches of deliveries as JSON and
 * keeps a table by primary key (`orderKey`) the way a CRM would, answering one result per
 * row. It fails rows or whole requests on demand.
 */
export class RowReceiver {
  /** Primary key → the row as last written. */
  readonly table = new Map<string, Record<string, unknown>>();
  /** Every delivery taken, in order. */
  readonly received: Delivery[] = [];
  /** Requests answered (whatever the answer). */
  requests = 0;
  /** Primary keys answered `failed` (a refused value). */
  readonly refuse = new Set<string>();
  /** Primary keys answered `retryable` (the receiver was busy). */
  readonly busy = new Set<string>();
  /** Requests (1-based) answered 500: the connector throws, the whole batch is retryable. */
  readonly crashOn = new Set<number>();
  /** Called with each request's number before it is answered (to stop a run mid-send). */
  onRequest: (n: number) => void = () => {};

  private constructor(
    private readonly server: Server,
    readonly url: string,
  ) {}

  static async start(): Promise<RowReceiver> {
    let self!: RowReceiver;
    const server = createServer(async (req, res) => {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      const answer = self.take(JSON.parse(Buffer.concat(chunks).toString('utf8')) as Delivery[]);
      res.statusCode = Array.isArray(answer) ? 200 : 500;
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(answer));
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    self = new RowReceiver(server, `http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    return self;
  }

  private take(batch: Delivery[]): SendResult[] | { error: string } {
    const n = ++this.requests;
    this.onRequest(n);
    if (this.crashOn.has(n)) return { error: 'receiver crashed' };
    return batch.map((d) => {
      if (this.refuse.has(d.orderKey))
        return { status: 'failed', code: 'TRIB_ERR_DEST_RECORD_REFUSED', error: `row ${d.orderKey} refused` };
      if (this.busy.has(d.orderKey)) return { status: 'retryable', error: `row ${d.orderKey}: busy` };
      this.received.push(d);
      if (d.op === 'delete') this.table.delete(d.orderKey);
      else if (d.op === 'insert' && this.table.has(d.orderKey))
        return { status: 'failed', code: 'TRIB_ERR_DEST_RECORD_REFUSED', error: 'duplicate key' };
      else if (d.op === 'update' && !this.table.has(d.orderKey))
        return { status: 'ok', detail: 'no such row' };
      else this.table.set(d.orderKey, d.payload);
      return { status: 'ok' };
    });
  }

  /** A streaming destination posting each batch to this receiver: the test's connector. */
  destination(id = 'crm'): StreamDestination {
    const url = this.url;
    return {
      id,
      async send(batch, signal) {
        const res = await fetch(url, { method: 'POST', body: JSON.stringify(batch), signal });
        const body = (await res.json()) as SendResult[] | { error: string };
        if (!res.ok || !Array.isArray(body)) throw new Error(`receiver answered ${res.status}`);
        return body;
      },
      async close() {},
    };
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    this.server.close();
    await once(this.server, 'close');
  }
}
