import { afterEach, describe, expect, it } from 'vitest';
import type { CheckResult } from '../../src/destinations/connector.js';
import type {
  Delivery,
  DeliveryOp,
  SendResult,
  StreamContext,
  StreamDestination,
  StreamDestinationKind,
} from '../../src/destinations/stream.js';
import type { ErrorCode } from '../../src/errors.js';
import { TcpProxy } from '../tcp-proxy.js';

/**
 * The suite every streaming destination kind passes (`src/destinations/stream.ts`), through its
 * connector as the delivery runner uses it (`check`, `create`, `send`, `deleteIdentities`):
 * each message reaches the receiver with its idempotency key; a redelivery is seen once by a
 * receiver that dedups on the key; results come one per delivery, in order; a record the
 * connector cannot encode fails alone with a stable code; a receiver that is down gives
 * `retryable` (never a throw) and the same records go through once it is back; `check` names
 * what is wrong; reverse-ETL operations do what they say.
 */

/** One message or row as the receiver holds it. */
export interface Received {
  key: string;
  /** The operation the message carried (brokers), when the receiver keeps it. */
  op?: string;
  payload: Record<string, unknown>;
}

export interface StreamHarness {
  // biome-ignore lint/suspicious/noExplicitAny: each harness names its own kind's config
  kind: StreamDestinationKind<any>;
  /** An entry of the kind on a receiver of the test's own (a new table, exchange, topic, stream). */
  entry: Record<string, unknown>;
  /** The same entry, connecting to 127.0.0.1:`port` (a proxy to the receiver) instead. */
  via(port: number): Record<string, unknown>;
  /** Where the receiver listens, for the proxy. */
  target: { host: string; port: number };
  context: StreamContext;
  /** What the receiver holds, in arrival order; brokers: every copy that arrived. */
  received(): Promise<Received[]>;
  /**
   * `receiver`: the receiver keeps one per key itself (a table by key, a guarded stream);
   * `consumer`: every copy arrives, each with the key, and a consumer that dedups on it sees one.
   */
  dedup: 'receiver' | 'consumer';
  /** Whether the receiver keeps arrival order (brokers), so the suite checks it. */
  ordered: boolean;
  /** A payload the connector cannot deliver (entry changes it needs), and the code it fails with. */
  unencodable: { entry?: Record<string, unknown>; payload: Record<string, unknown>; code: ErrorCode };
  /** Entries `check` must refuse, each with its code. */
  wrong: { why: string; entry: Record<string, unknown>; code: ErrorCode }[];
  /** Table kinds: an entry keyed by `user_id` with columns `plan`, `seats`, and its rows read back. */
  table?: {
    entry: Record<string, unknown>;
    rows(): Promise<{ user_id: string; plan: string | null; seats: number | null }[]>;
  };
  cleanup(): Promise<void>;
}

const track = (key: string, user: string, n: number): Delivery => ({
  key,
  orderKey: user,
  op: 'event',
  payload: { type: 'track', event: 'Order Completed', messageId: key, userId: user, properties: { n } },
});

const row = (op: DeliveryOp, user: string, plan: string, seats: number): Delivery => ({
  key: `crm:${user}:${op}:${plan}`,
  orderKey: user,
  op,
  payload: { user_id: user, plan, seats },
});

const never = () => new AbortController().signal;

/** Polls until `ok` holds for what the receiver got (brokers deliver to consumers asynchronously). */
async function eventually(h: StreamHarness, ok: (r: Received[]) => boolean): Promise<Received[]> {
  let got = await h.received();
  for (let i = 0; i < 100 && !ok(got); i++) {
    await new Promise((r) => setTimeout(r, 100));
    got = await h.received();
  }
  return got;
}

const keysOf = (r: Received[]) => r.map((x) => x.key);
const sorted = (a: string[]) => [...a].sort();
const unique = (a: string[]) => [...new Set(a)];

export function streamDestinationConformance(
  name: string,
  problem: string | undefined,
  makeHarness: () => Promise<StreamHarness>,
) {
  describe.skipIf(problem !== undefined)(
    `stream destination conformance: ${name}${problem ? ` (${problem})` : ''}`,
    () => {
      let h: StreamHarness | undefined;
      const open: StreamDestination[] = [];
      const proxies: TcpProxy[] = [];
      afterEach(async () => {
        for (const d of open.splice(0)) await d.close().catch(() => undefined);
        for (const p of proxies.splice(0)) await p.stop();
        await h?.cleanup();
        h = undefined;
      });

      async function harness() {
        h = await makeHarness();
        return h;
      }
      async function create(entry: Record<string, unknown>) {
        const config = h!.kind.config.parse(entry);
        const d = await (await h!.kind.connector()).create(config, h!.context);
        open.push(d);
        return d;
      }
      async function check(entry: Record<string, unknown>): Promise<CheckResult> {
        const config = h!.kind.config.parse(entry);
        return (await h!.kind.connector()).check(config, h!.context);
      }

      it('is a stream kind whose spec takes its entry', async () => {
        const { kind, entry } = await harness();
        expect(kind.delivery).toBe('stream');
        expect(kind.config.parse(entry).type).toBe(kind.type);
        expect(() => kind.config.parse({ ...entry, unknownSetting: 1 })).toThrow();
      });

      it('delivers every message with its idempotency key, answering one result per delivery in order', async () => {
        const { entry } = await harness();
        const d = await create(entry);
        const batch = [0, 1, 2, 3, 4].map((i) => track(`k-${i}`, `u${i % 2}`, i));
        const results = await d.send(batch, never());
        expect(results.map((r) => r.status)).toEqual(['ok', 'ok', 'ok', 'ok', 'ok']);
        const got = await eventually(h!, (r) => r.length >= 5);
        if (h!.ordered) expect(keysOf(got)).toEqual(batch.map((b) => b.key));
        else expect(sorted(keysOf(got))).toEqual(sorted(batch.map((b) => b.key)));
        // The payload arrives as sent.
        expect(got.find((g) => g.key === 'k-3')?.payload).toMatchObject({
          userId: 'u1',
          properties: { n: 3 },
        });
        // A second batch follows the first.
        const more = await d.send([track('k-5', 'u0', 5)], never());
        expect(more).toHaveLength(1);
        expect(more[0]!.status).toBe('ok');
        const after = await eventually(h!, (r) => r.length >= 6);
        expect(sorted(keysOf(after))).toEqual(sorted([...batch.map((b) => b.key), 'k-5']));
      });

      it('is seen once by a receiver that dedups on the key when the same delivery is sent twice', async () => {
        const { entry, dedup } = await harness();
        const d = await create(entry);
        const first = track('dup-1', 'u1', 1);
        expect((await d.send([first, track('other-1', 'u2', 2)], never())).map((r) => r.status)).toEqual([
          'ok',
          'ok',
        ]);
        // Redelivered after a lost acknowledgement, alone and within a batch.
        expect((await d.send([first], never()))[0]!.status).toBe('ok');
        expect((await d.send([track('other-2', 'u2', 3), first], never())).map((r) => r.status)).toEqual([
          'ok',
          'ok',
        ]);
        if (dedup === 'receiver') {
          const got = await h!.received();
          expect(sorted(keysOf(got))).toEqual(['dup-1', 'other-1', 'other-2']);
        } else {
          // Every copy carries the key, so a consumer keeping the keys it has seen handles it once.
          const got = await eventually(h!, (r) => r.length >= 5);
          expect(keysOf(got).filter((k) => k === 'dup-1')).toHaveLength(3);
          expect(sorted(unique(keysOf(got)))).toEqual(['dup-1', 'other-1', 'other-2']);
        }
      });

      it('fails only the record it cannot encode, with a stable code, and delivers the rest of the batch', async () => {
        const { entry, unencodable } = await harness();
        const d = await create({ ...entry, ...unencodable.entry });
        const bad: Delivery = { key: 'bad-1', orderKey: 'u9', op: 'event', payload: unencodable.payload };
        const results = await d.send([track('good-1', 'u1', 1), bad, track('good-2', 'u2', 2)], never());
        expect(results.map((r) => r.status)).toEqual(['ok', 'failed', 'ok']);
        const failed = results[1] as Extract<SendResult, { status: 'failed' }>;
        expect(failed.code).toBe(unencodable.code);
        expect(failed.error.length).toBeGreaterThan(20);
        const got = await eventually(h!, (r) => r.length >= 2);
        expect(sorted(unique(keysOf(got)))).toEqual(['good-1', 'good-2']);
        // and it goes on
        expect((await d.send([track('good-3', 'u1', 3)], never()))[0]!.status).toBe('ok');
      });

      it('answers retryable, without throwing, while the receiver is down, and delivers once it is back', async () => {
        const { target, via } = await harness();
        const proxy = new TcpProxy(target.host, target.port);
        await proxy.start();
        proxies.push(proxy);
        const d = await create(via(proxy.port));
        // Up: delivered through the proxy (a client connecting lazily connects now).
        let results: SendResult[] = [];
        for (let i = 0; i < 50; i++) {
          results = await d.send([track('up-1', 'u1', 1)], AbortSignal.timeout(5_000));
          if (results[0]!.status === 'ok') break;
          await new Promise((r) => setTimeout(r, 100));
        }
        expect(results.map((r) => r.status)).toEqual(['ok']);

        proxy.cut();
        const down = [track('down-1', 'u1', 2), track('down-2', 'u2', 3)];
        for (let i = 0; i < 2; i++) {
          // The runner's per-request timeout bounds a send to a receiver that does not answer.
          const r = await d.send(down, AbortSignal.timeout(5_000));
          expect(r.map((x) => x.status)).toEqual(['retryable', 'retryable']);
          for (const x of r) expect(x.status === 'retryable' && x.error.length).toBeGreaterThan(0);
        }

        proxy.restore();
        // The runner retries: the same records go through once the connection is back.
        for (let i = 0; i < 100; i++) {
          results = await d.send(down, AbortSignal.timeout(5_000));
          if (results.every((r) => r.status === 'ok')) break;
          expect(results.every((r) => r.status !== 'failed')).toBe(true);
          await new Promise((r) => setTimeout(r, 100));
        }
        expect(results.map((r) => r.status)).toEqual(['ok', 'ok']);
        const got = await eventually(h!, (r) =>
          ['up-1', 'down-1', 'down-2'].every((k) => keysOf(r).includes(k)),
        );
        expect(sorted(unique(keysOf(got)))).toEqual(['down-1', 'down-2', 'up-1']);
      });

      it('answers retryable at the signal when the receiver stops answering, and closes', async () => {
        const { target, via } = await harness();
        const proxy = new TcpProxy(target.host, target.port);
        await proxy.start();
        proxies.push(proxy);
        const d = await create(via(proxy.port));
        let results: SendResult[] = [];
        for (let i = 0; i < 50; i++) {
          results = await d.send([track('before-1', 'u1', 1)], AbortSignal.timeout(5_000));
          if (results[0]!.status === 'ok') break;
          await new Promise((r) => setTimeout(r, 100));
        }
        expect(results.map((r) => r.status)).toEqual(['ok']);
        // Packets dropped silently: nothing comes back, and nothing says the connection is gone.
        proxy.freeze();
        const r = await d.send(
          [track('frozen-1', 'u1', 2), track('frozen-2', 'u2', 3)],
          AbortSignal.timeout(1_000),
        );
        expect(r.map((x) => x.status)).toEqual(['retryable', 'retryable']);
        // Closing does not wait for the frozen connection to answer.
        open.splice(open.indexOf(d), 1);
        await d.close();
      });

      it('answers retryable for every record when the signal is already aborted', async () => {
        const { entry } = await harness();
        const d = await create(entry);
        const ctl = new AbortController();
        ctl.abort(new Error('request timeout'));
        const results = await d.send([track('late-1', 'u1', 1), track('late-2', 'u2', 2)], ctl.signal);
        expect(results.map((r) => r.status)).toEqual(['retryable', 'retryable']);
      });

      it('checks its configuration, naming a wrong host, port, user, password, vhost or database with its code', async () => {
        const { entry, wrong } = await harness();
        expect(await check(entry)).toEqual({ ok: true });
        expect(wrong.length).toBeGreaterThan(0);
        for (const w of wrong) {
          const result = await check(w.entry);
          expect({ why: w.why, ...result }).toMatchObject({ why: w.why, ok: false, code: w.code });
          expect(result.ok || result.message.length).toBeGreaterThan(20);
        }
      });

      it('takes reverse-ETL operations: insert, update, upsert and delete, and deletes a person on request', async () => {
        const { kind, table } = await harness();
        if (!kind.capabilities.rows) return;
        if (table === undefined) {
          // A broker: every row change arrives with its operation, in order.
          const d = await create(h!.entry);
          const ops: DeliveryOp[] = ['insert', 'update', 'upsert', 'delete'];
          const batch = ops.map((op, i) => row(op, 'u1', `p${i}`, i));
          expect((await d.send(batch, never())).map((r) => r.status)).toEqual(['ok', 'ok', 'ok', 'ok']);
          const got = await eventually(h!, (r) => r.length >= 4);
          expect(got.map((g) => [g.key, g.op])).toEqual(batch.map((b) => [b.key, b.op]));
          expect(got[1]!.payload).toEqual({ user_id: 'u1', plan: 'p1', seats: 1 });
          return;
        }
        const d = await create(table.entry);
        const first = await d.send(
          [row('upsert', 'u1', 'a', 1), row('upsert', 'u2', 'b', 2), row('upsert', 'u3', 'c', 3)],
          never(),
        );
        expect(first.map((r) => r.status)).toEqual(['ok', 'ok', 'ok']);
        const second = await d.send(
          [
            row('update', 'u1', 'a2', 10),
            row('update', 'u9', 'nobody', 0), // no such row: nothing to update
            row('insert', 'u2', 'zz', 99), // exists: an insert leaves it
            row('insert', 'u4', 'd', 4),
            row('delete', 'u3', 'c', 3),
            row('upsert', 'u2', 'b2', 20),
            row('delete', 'u8', 'x', 0), // no such row: nothing to delete
          ],
          never(),
        );
        expect(second.map((r) => r.status)).toEqual(['ok', 'ok', 'ok', 'ok', 'ok', 'ok', 'ok']);
        expect(await table.rows()).toEqual([
          { user_id: 'u1', plan: 'a2', seats: 10 },
          { user_id: 'u2', plan: 'b2', seats: 20 },
          { user_id: 'u4', plan: 'd', seats: 4 },
        ]);
        // The same change again (a retried run) changes nothing.
        expect((await d.send([row('upsert', 'u2', 'b2', 20)], never()))[0]!.status).toBe('ok');
        expect(await table.rows()).toHaveLength(3);
        // A row the table refuses fails alone; its neighbours go in (one statement first, then row by row).
        const mixed = await d.send(
          [
            row('upsert', 'u5', 'e', 5),
            { ...row('upsert', 'u6', 'f', 0), payload: { user_id: 'u6', seats: 'many' } },
            row('upsert', 'u7', 'g', 7),
          ],
          never(),
        );
        expect(mixed.map((r) => r.status)).toEqual(['ok', 'failed', 'ok']);
        expect(mixed[1]!.status === 'failed' && mixed[1]!.code).toBe('TRIB_ERR_DEST_ROW_REFUSED');
        // A row without its key cannot be encoded.
        const keyless = await d.send([{ ...row('upsert', 'u0', 'x', 1), payload: { plan: 'x' } }], never());
        expect(keyless[0]!.status === 'failed' && keyless[0]!.code).toBe('TRIB_ERR_DEST_PAYLOAD_UNENCODABLE');
        expect((await table.rows()).map((r) => r.user_id)).toEqual(['u1', 'u2', 'u4', 'u5', 'u7']);

        if (kind.capabilities.deletion) {
          const deleted = await d.deleteIdentities!(
            [
              { type: 'user_id', value: 'u4' },
              { type: 'email', value: 'nobody@example.com' }, // not mapped: ignored
            ],
            never(),
          );
          expect(deleted.status).toBe('ok');
          expect((await table.rows()).map((r) => r.user_id)).toEqual(['u1', 'u2', 'u5', 'u7']);
        }
      });
    },
  );
}
