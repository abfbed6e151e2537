import {
  AckPolicy,
  type ConsumerConfig,
  type ConsumerInfo,
  DeliverPolicy,
  DiscardPolicy,
  JetStreamApiError,
  type JetStreamClient,
  type JetStreamManager,
  jetstream,
  jetstreamManager,
  type PubAck,
  RetentionPolicy,
  StorageType,
} from '@nats-io/jetstream';
import {
  connect,
  createInbox,
  type Msg,
  type NatsConnection,
  type Subscription as NatsSub,
} from '@nats-io/transport-node';
import { TributaryError } from '../../errors.js';
import { Pause } from '../../platform/async/pause.js';
import type {
  AppendResult,
  ConsumeOptions,
  Delivered,
  EventLog,
  RawEvent,
  Subscription,
} from '../event-log.js';

export interface NatsEventLogOptions {
  /** NATS servers to connect to, e.g. `['nats://127.0.0.1:4222']`. */
  servers: string[];
  /** Stream name (no `.`, `*`, `>` or spaces); its subjects are `<stream>.p.<n>`. */
  stream: string;
  /**
   * Partitions (subjects) of the stream. Fixed when the stream is created: opening an existing
   * stream with another count fails with `TRIB_ERR_CONFIG_INVALID`.
   */
  partitions: number;
  /** Copies of the stream on a NATS cluster (1, 3 or 5). Default 1. */
  replicas?: number;
  /**
   * How long JetStream remembers a `Nats-Msg-Id` (`<sourceId>:<messageId>`) to drop a
   * re-published copy. Default 2 minutes.
   */
  duplicateWindowMs?: number;
  /** Connection name shown in NATS monitoring. */
  name?: string;
  /** How long an append waits for each publish ack before it fails. Default 5,000 ms. */
  publishTimeoutMs?: number;
  /** Pause before a consumer retries after a failed handler or a lost connection. Default 1,000 ms. */
  retryMs?: number;
}

/** Marks a stream this adapter created, and records its partition count. */
const DESCRIPTION = /^tributary event log; partitions=(\d+)$/;
/** How long one pull request waits on the server for records when there are none. */
const PULL_EXPIRES_MS = 5000;
/** Extra time for a pull's end-of-request status to arrive before the pull counts as lost. */
const PULL_GRACE_MS = 2000;
/** How long records arriving for an open request are gathered before they are handed over. */
const PULL_GATHER_MS = 20;
const API_TIMEOUT_MS = 5000;

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder();

/**
 * The partition of `key`: FNV-1a (32 bit) of its UTF-8 bytes, modulo `partitions`. Part of
 * the stored format: every process and every release must compute the same value.
 *
 * @example partitionFor('user-42', 8) // always the same number in [0, 8)
 */
export function partitionFor(key: string, partitions: number): number {
  let h = 0x811c9dc5;
  for (const b of utf8.encode(key)) {
    h ^= b;
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % partitions;
}

/**
 * A durable consumer name for a group: characters NATS does not allow in names (and `_`,
 * the escape) become `_<hex>_`, so distinct groups never share a consumer.
 */
function durableName(group: string, partition: number | undefined): string {
  const safe = group.replace(/[^A-Za-z0-9-]/g, (c) => `_${c.codePointAt(0)!.toString(16)}_`);
  return partition === undefined ? safe : `${safe}_p${partition}`;
}

/**
 * A record as a message body: `<JSON array of the envelope fields>\n<event JSON>`. JSON text
 * holds no raw newline, so the first one ends the envelope, and the event JSON is kept as is.
 */
function encode(r: RawEvent): Uint8Array {
  const env = [r.sourceId, r.messageId, r.receivedAt, r.status, r.code ?? null, r.reason ?? null];
  if (r.identityKey !== undefined) env.push(r.identityKey);
  return utf8.encode(`${JSON.stringify(env)}\n${r.json}`);
}

function decode(data: Uint8Array, offset: number): Delivered {
  const text = utf8Decoder.decode(data);
  const nl = text.indexOf('\n');
  const [sourceId, messageId, receivedAt, status, code, reason, identityKey] = JSON.parse(
    text.slice(0, nl),
  ) as [string, string, number, RawEvent['status'], string | null, string | null, string?];
  const d: Delivered = { sourceId, messageId, receivedAt, status, json: text.slice(nl + 1), offset };
  if (code !== null) d.code = code;
  if (reason !== null) d.reason = reason;
  if (identityKey !== undefined) d.identityKey = identityKey;
  return d;
}

/**
 * The stream sequence of a delivered message, from its ack subject:
 * `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>`, or
 * the newer form with domain and account hash after `$JS.ACK` (and a token at the end).
 */
function streamSeq(reply: string): number {
  const t = reply.split('.');
  return Number(t.length === 9 ? t[5] : t[7]);
}

/**
 * The stream sequence of the consumer's last acknowledged record. A consumer created to
 * start at sequence S reports an ack floor of 0 until its first ack, though everything
 * before S counts as done: its floor is then S - 1.
 */
function ackFloor(info: ConsumerInfo): number {
  if (info.ack_floor.consumer_seq === 0 && info.config.deliver_policy === DeliverPolicy.StartSequence) {
    return Math.max(info.ack_floor.stream_seq, (info.config.opt_start_seq ?? 1) - 1);
  }
  return info.ack_floor.stream_seq;
}

function notFound(err: unknown): boolean {
  return err instanceof JetStreamApiError && err.status === 404;
}

/** What a consume loop reads: the whole stream, or one partition's subject. */
interface View {
  partition: number | undefined;
}

/**
 * The event log on a NATS JetStream stream, for scale-out deployments.
 *
 * Records are routed to `partitions` subjects by a stable hash of their identity key, so one
 * person's events stay in order on one subject while workers share the partitions (see
 * {@link NatsEventLog.partition}). An offset is the stream sequence minus one: unique and
 * growing over the whole stream, but a partition's offsets have gaps, and the records of
 * concurrent appends interleave.
 *
 * An append publishes each record with `Nats-Msg-Id` = `<sourceId>:<messageId>` and resolves
 * once every publish is acknowledged by the stream; a re-publish within the duplicate window
 * (a client retrying after a 503) is dropped by JetStream and keeps its first offset.
 *
 * Each consumer group is a durable pull consumer (per partition for partition views) with
 * ack-all: one acknowledgement after `handle` resolves commits the whole batch. Pulls ask for
 * what is there (`no_wait` with `expires`), so a batch is handed over as soon as records
 * exist, without waiting to fill it.
 *
 * @example
 * const log = await NatsEventLog.open({ servers: ['nats://127.0.0.1:4222'], stream: 'events', partitions: 8 });
 * await log.append(records);
 * const sub = log.partition(3).consume('warehouse', async (batch) => load(batch));
 */
export class NatsEventLog implements EventLog {
  readonly partitions: number;
  /** `nats:<stream>:<creation time>`: a stream deleted and created again is another log. */
  id = '';
  private readonly stream: string;
  private readonly publishTimeoutMs: number;
  private readonly retryMs: number;
  /** One past the last record this process knows of: whole stream, and per partition. */
  private end = 0;
  private readonly partitionEnds: number[];
  private readonly subscriptions = new Set<Subscription>();
  /** Called when the connection drops: pulls in progress are then lost. */
  private readonly disconnectHooks = new Set<() => void>();
  private closed = false;
  private readonly appending = new Set<Promise<unknown>>();

  private constructor(
    private readonly nc: NatsConnection,
    private readonly jsm: JetStreamManager,
    private readonly js: JetStreamClient,
    options: NatsEventLogOptions,
  ) {
    this.stream = options.stream;
    this.partitions = options.partitions;
    this.publishTimeoutMs = options.publishTimeoutMs ?? 5000;
    this.retryMs = options.retryMs ?? 1000;
    this.partitionEnds = new Array<number>(options.partitions).fill(0);
    void (async () => {
      for await (const s of nc.status()) {
        if (s.type === 'disconnect') for (const hook of [...this.disconnectHooks]) hook();
      }
    })();
  }

  /**
   * Connects (reconnecting forever after a loss), then creates the stream (file storage,
   * limits retention) or checks that the existing one has the same partitions.
   */
  static async open(options: NatsEventLogOptions): Promise<NatsEventLog> {
    if (!Number.isInteger(options.partitions) || options.partitions < 1) {
      throw new TributaryError('TRIB_ERR_CONFIG_INVALID', [
        `event log partitions must be a whole number of at least 1, not ${options.partitions}`,
      ]);
    }
    const nc = await connect({
      servers: options.servers,
      name: options.name,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 500,
      // A half-open connection (a server gone without a TCP reset) shows within ~30 s.
      pingInterval: 10_000,
      maxPingOut: 3,
    });
    try {
      const jsm = await jetstreamManager(nc, { timeout: API_TIMEOUT_MS });
      const log = new NatsEventLog(nc, jsm, jetstream(nc, { timeout: API_TIMEOUT_MS }), options);
      await log.ensureStream(options);
      await log.refreshEnds();
      return log;
    } catch (err) {
      await nc.close();
      throw err;
    }
  }

  private subject(p: number): string {
    return `${this.stream}.p.${p}`;
  }

  private async ensureStream(options: NatsEventLogOptions): Promise<void> {
    const description = `tributary event log; partitions=${options.partitions}`;
    let info = await this.jsm.streams.info(this.stream).catch((err: unknown) => {
      if (notFound(err)) return undefined;
      throw err;
    });
    if (!info) {
      try {
        info = await this.jsm.streams.add({
          name: this.stream,
          description,
          subjects: [`${this.stream}.p.*`],
          storage: StorageType.File,
          retention: RetentionPolicy.Limits,
          discard: DiscardPolicy.Old,
          num_replicas: options.replicas ?? 1,
          duplicate_window: (options.duplicateWindowMs ?? 120_000) * 1_000_000,
        });
      } catch (err) {
        // Another process created it first (perhaps with other settings): check that one.
        info = await this.jsm.streams.info(this.stream).catch(() => {
          throw err;
        });
      }
    }
    this.id = `nats:${this.stream}:${info.created}`;
    const m = DESCRIPTION.exec(info.config.description ?? '');
    if (!m) {
      throw new TributaryError('TRIB_ERR_CONFIG_INVALID', [
        `NATS stream "${this.stream}" exists but was not created as a Tributary event log; choose another stream name`,
      ]);
    }
    if (Number(m[1]) !== options.partitions) {
      throw new TributaryError('TRIB_ERR_CONFIG_INVALID', [
        `NATS stream "${this.stream}" has ${m[1]} partitions, the configuration says ${options.partitions}; partitions are fixed when the stream is created (use a new stream to change them)`,
      ]);
    }
  }

  /** Reads the last sequence of the stream and of each partition from the server. */
  private async refreshEnds(): Promise<void> {
    const info = await this.jsm.streams.info(this.stream);
    this.end = Math.max(this.end, info.state.last_seq);
    await Promise.all(
      this.partitionEnds.map(async (_, p) => {
        this.partitionEnds[p] = Math.max(this.partitionEnds[p]!, await this.lastSeqOf(p));
      }),
    );
  }

  /** The sequence of the last record on the server: of the stream, or of one partition. */
  private async lastSeqOf(partition: number | undefined): Promise<number> {
    if (partition === undefined) return (await this.jsm.streams.info(this.stream)).state.last_seq;
    const m = await this.jsm.streams.getMessage(this.stream, { last_by_subj: this.subject(partition) });
    return m?.seq ?? 0;
  }

  partitionOf(r: RawEvent): number {
    return partitionFor(r.identityKey ?? r.messageId, this.partitions);
  }

  /**
   * The same log seen through one partition: `consume()` reads only partition `p` through the
   * durable consumer `<group>_p<p>`; `endOffset`, `committedOffset` and `drained` are about
   * that partition. `append()` routes by key as usual; `close()` stops the view's consumers
   * only (the connection belongs to the log).
   */
  partition(p: number): EventLog {
    if (!Number.isInteger(p) || p < 0 || p >= this.partitions) {
      throw new RangeError(`partition ${p} is outside [0, ${this.partitions})`);
    }
    const subs = new Set<Subscription>();
    return {
      id: this.id,
      append: (records) => this.append(records),
      consume: (group, handle, options) => {
        const sub = this.consumeView({ partition: p }, group, handle, options);
        subs.add(sub);
        return sub;
      },
      endOffset: () => this.partitionEnds[p]!,
      committedOffset: (group) => this.committed(durableName(group, p)),
      close: async () => {
        for (const s of [...subs]) await s.stop();
      },
    };
  }

  async append(records: readonly RawEvent[]): Promise<AppendResult> {
    if (this.closed) throw new Error('event log is closed');
    if (records.length === 0) return { firstOffset: this.end };
    // Published back to back on one connection, so the stream stores them in this order.
    const parts = records.map((r) => this.partitionOf(r));
    const publishing = Promise.allSettled(
      records.map((r, i) =>
        this.js.publish(this.subject(parts[i]!), encode(r), {
          msgID: `${r.sourceId}:${r.messageId}`,
          timeout: this.publishTimeoutMs,
        }),
      ),
    );
    this.appending.add(publishing);
    const settled = await publishing;
    this.appending.delete(publishing);
    const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) throw new TributaryError('TRIB_ERR_LOG_APPEND_FAILED', [], { cause: failed.reason });
    const acks = settled.map((s) => (s as PromiseFulfilledResult<PubAck>).value);
    for (const [i, ack] of acks.entries()) {
      if (ack.seq > this.end) this.end = ack.seq;
      const p = parts[i]!;
      if (ack.seq > this.partitionEnds[p]!) this.partitionEnds[p] = ack.seq;
    }
    return { firstOffset: acks[0]!.seq - 1 };
  }

  endOffset(): number {
    return this.end;
  }

  committedOffset(group: string): Promise<number> {
    return this.committed(durableName(group, undefined));
  }

  /** One past the last acknowledged record: the consumer's ack floor, as an offset. */
  private async committed(name: string): Promise<number> {
    try {
      return ackFloor(await this.jsm.consumers.info(this.stream, name));
    } catch (err) {
      if (notFound(err)) return 0;
      throw err;
    }
  }

  /** Stops the consumers (each finishes its batch in hand), waits for appends, closes the connection. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const sub of [...this.subscriptions]) await sub.stop();
    await Promise.allSettled([...this.appending]);
    await this.nc.drain().catch(() => this.nc.close());
  }

  consume(
    group: string,
    handle: (batch: Delivered[]) => Promise<void>,
    options: ConsumeOptions = {},
  ): Subscription {
    return this.consumeView({ partition: undefined }, group, handle, options);
  }

  /**
   * Makes sure the group's durable consumer exists and is ready for this process, and
   * returns its ack floor (stream sequence).
   *
   * With `takeOver`, records that a previous owner received but never acknowledged (it was
   * killed, or its connection dropped mid-batch) are handed out again at once: the consumer
   * is recreated to start right after its ack floor. JetStream would otherwise redeliver them
   * only after the ack wait, and after later records, which would break the offset order.
   * A crash between the delete and the create leaves no consumer: the group then starts
   * again from the beginning of the stream (records come again; none is lost).
   *
   * One process at a time may consume a group (per partition): a second one taking over
   * deletes the first one's consumer under it. Assigning partitions is the caller's job.
   */
  private async attach(
    view: View,
    name: string,
    maxBatch: number,
    takeOver: boolean,
    resumeAfter: number | undefined,
    rewindTo?: number,
  ): Promise<number> {
    let info: ConsumerInfo | undefined;
    try {
      info = await this.jsm.consumers.info(this.stream, name);
    } catch (err) {
      if (!notFound(err)) throw err;
    }
    let startAfter = resumeAfter;
    // `from` below the ack floor (a consumer whose own store went back): start over from there.
    const rewind = info !== undefined && rewindTo !== undefined && rewindTo < ackFloor(info);
    // Delivered past the ack floor with nothing pending happens too: a server that shut down
    // while records were on their way to a pull.
    if (
      info &&
      (rewind || (takeOver && (info.num_ack_pending > 0 || info.delivered.stream_seq > ackFloor(info))))
    ) {
      startAfter = rewind ? rewindTo : ackFloor(info);
      await this.jsm.consumers.delete(this.stream, name).catch((err: unknown) => {
        if (!notFound(err)) throw err;
      });
      info = undefined;
    }
    if (!info) {
      // Offsets are stream sequences − 1: starting after sequence `from` hands out offset `from` first.
      if (startAfter === undefined && rewindTo !== undefined && rewindTo > 0) startAfter = rewindTo;
      const config: Partial<ConsumerConfig> = {
        durable_name: name,
        ack_policy: AckPolicy.All,
        // Redelivery after the ack wait is a fallback only: this adapter retries a failed
        // batch itself and takes over unacknowledged records when it starts.
        ack_wait: 60_000_000_000,
        max_deliver: -1,
        max_ack_pending: Math.max(maxBatch, 1000),
        // No filter for the whole stream: a filter that matches every subject only slows
        // the server's reads.
        ...(view.partition === undefined ? {} : { filter_subject: this.subject(view.partition) }),
        ...(startAfter === undefined
          ? { deliver_policy: DeliverPolicy.All }
          : { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: startAfter + 1 }),
      };
      return ackFloor(await this.jsm.consumers.add(this.stream, config));
    }
    if (info.config.max_ack_pending !== undefined && info.config.max_ack_pending < maxBatch) {
      await this.jsm.consumers.update(this.stream, name, { max_ack_pending: maxBatch });
    }
    return ackFloor(info);
  }

  private consumeView(
    view: View,
    group: string,
    handle: (batch: Delivered[]) => Promise<void>,
    options: ConsumeOptions = {},
  ): Subscription {
    if (this.closed) throw new Error('event log is closed');
    const maxBatch = options.maxBatch ?? 5000;
    const lingerMs = options.lingerMs ?? 0;
    const name = durableName(group, view.partition);
    let stopping = false;
    /** Stream sequence of the last record handled and acknowledged (undefined until attached). */
    let position: number | undefined;
    const waiter = new Pause();
    let stopPull: (() => void) | undefined;
    const drainWaiters: { target: number; resolve: () => void }[] = [];
    const settleDrains = () => {
      for (let i = drainWaiters.length - 1; i >= 0; i--) {
        if (position !== undefined && position >= drainWaiters[i]!.target) {
          drainWaiters[i]!.resolve();
          drainWaiters.splice(i, 1);
        }
      }
    };
    const sleep = (ms: number) => waiter.sleep(ms);

    const loop = (async () => {
      let attached = false;
      let takeOver = true;
      let puller: Puller | undefined;
      const dropPuller = () => {
        // Unsubscribing makes the server drop a pull still waiting for records.
        puller?.close();
        puller = undefined;
      };
      try {
        while (!stopping) {
          if (!attached) {
            try {
              // `from` counts on the first attach only: later ones resume where this loop is.
              position = await this.attach(
                view,
                name,
                maxBatch,
                takeOver,
                position,
                position === undefined ? options.from : undefined,
              );
              attached = true;
              takeOver = false;
              settleDrains();
            } catch (err) {
              options.onError?.(err);
              await sleep(this.retryMs);
              continue;
            }
          }
          puller ??= new Puller(
            this.nc,
            `$JS.API.CONSUMER.MSG.NEXT.${this.stream}.${name}`,
            this.disconnectHooks,
          );
          const pulled = await puller.pull(maxBatch, (stop) => (stopPull = stop));
          stopPull = undefined;
          if (pulled.outcome === 'stopped') break;
          if (pulled.outcome === 'lost') {
            // The request or some of its records may be gone with the connection: start over
            // from the ack floor with a fresh inbox, so nothing arrives out of order.
            options.onError?.(pulled.error);
            dropPuller();
            attached = false;
            takeOver = true;
            await sleep(this.retryMs);
            continue;
          }
          if (pulled.outcome === 'gone') {
            attached = false;
            await sleep(this.retryMs);
            continue;
          }
          const msgs = pulled.msgs;
          if (msgs.length === 0) continue;
          const batch = msgs.map((m) => decode(m.data, streamSeq(m.reply!) - 1));
          // The same batch again until it is handled: it stays unacknowledged meanwhile, so
          // nothing later is handed out before it.
          let handled = false;
          while (!handled) {
            try {
              await handle(batch);
              handled = true;
            } catch (err) {
              options.onError?.(err);
              await sleep(this.retryMs);
              if (stopping) break;
            }
          }
          // Stopped before the batch was handled: it stays unacknowledged, and the next
          // consume() of the group takes it over.
          if (!handled) break;
          const last = msgs[msgs.length - 1]!;
          try {
            // Ack-all: one acknowledgement, confirmed by the server, commits the batch.
            await this.nc.request(last.reply!, '+ACK', { timeout: API_TIMEOUT_MS });
          } catch (err) {
            // Whether it landed is unknown: take over from the ack floor (the batch may come
            // again: at-least-once).
            options.onError?.(err);
            dropPuller();
            attached = false;
            takeOver = true;
            await sleep(this.retryMs);
            continue;
          }
          position = streamSeq(last.reply!);
          settleDrains();
          if (lingerMs > 0 && msgs.length < maxBatch && !stopping) await sleep(lingerMs);
        }
      } finally {
        dropPuller();
        await this.nc.flush().catch(() => undefined);
      }
    })();

    let stopped = false;
    const sub: Subscription = {
      stop: async () => {
        stopping = true;
        waiter.wake();
        stopPull?.();
        await loop;
        stopped = true;
        this.subscriptions.delete(sub);
        for (const w of drainWaiters.splice(0)) w.resolve();
      },
      drained: async () => {
        let target: number | undefined;
        while (target === undefined && !stopped) {
          try {
            target = await this.lastSeqOf(view.partition);
          } catch {
            await new Promise((r) => setTimeout(r, this.retryMs));
          }
        }
        if (target === undefined) return;
        if (view.partition === undefined) this.end = Math.max(this.end, target);
        else this.partitionEnds[view.partition] = Math.max(this.partitionEnds[view.partition]!, target);
        if (position !== undefined && position >= target) return;
        await new Promise<void>((resolve) => drainWaiters.push({ target: target!, resolve }));
      },
    };
    this.subscriptions.add(sub);
    return sub;
  }
}

type PullResult =
  | { outcome: 'ok'; msgs: Msg[] }
  | { outcome: 'stopped' }
  /** The consumer was deleted (by an operator or a new owner): attach again. */
  | { outcome: 'gone' }
  /** The request was lost (connection dropped, no answer): records may be in limbo. */
  | { outcome: 'lost'; error: Error };

/**
 * Pull requests of one consume loop, on one inbox, one open at a time. A request asks for up
 * to `max` records with `no_wait` and `expires`: the server sends what is there and ends the
 * request with a status (404/408), or waits up to `expires` for the first record. While
 * records keep arriving the server may keep a request open far past `expires` (seen on
 * nats-server 2.9 when a backlog is read while producers go on): records are therefore handed
 * to the loop as they arrive, in batches, without waiting for the end of the request, and a
 * new request is sent only once the open one has ended. Everything delivered comes through
 * this one inbox in order, so acknowledging a handled prefix (ack-all) never covers a record
 * that was not handed over. Only silence (nothing at all for `expires` plus a grace) counts as
 * a lost request.
 */
class Puller {
  private readonly sub: NatsSub;
  /** Records delivered and not yet handed to the loop, in stream order. */
  private buffer: Msg[] = [];
  /** A request is open at the server (no ending status yet). */
  private open = false;
  private lastActivity = 0;
  /** How the open request ended badly, for the next pull. */
  private failure: PullResult | undefined;
  private waiting: { max: number; finish: (r: PullResult) => void; gather?: NodeJS.Timeout } | undefined;
  private readonly onDisconnect = () =>
    this.fail({ outcome: 'lost', error: new Error('NATS connection lost during a pull') });

  constructor(
    private readonly nc: NatsConnection,
    private readonly nextSubject: string,
    private readonly disconnectHooks: Set<() => void>,
  ) {
    this.sub = nc.subscribe(createInbox(), { callback: (err, m) => this.receive(err, m) });
    disconnectHooks.add(this.onDisconnect);
  }

  pull(max: number, setStop: (stop: () => void) => void): Promise<PullResult> {
    if (this.buffer.length > 0) return Promise.resolve({ outcome: 'ok', msgs: this.take(max) });
    if (this.failure) {
      const f = this.failure;
      this.failure = undefined;
      return Promise.resolve(f);
    }
    return new Promise<PullResult>((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const finish = (r: PullResult) => {
        if (this.waiting !== waiting) return;
        clearTimeout(timer);
        clearTimeout(waiting.gather);
        this.waiting = undefined;
        resolve(r);
      };
      const waiting: NonNullable<Puller['waiting']> = { max, finish };
      this.waiting = waiting;
      setStop(() => finish({ outcome: 'stopped' }));
      // Silence for longer than a request may wait: the request (or its answer) is lost.
      const watch = () => {
        const idle = Date.now() - this.lastActivity;
        if (idle >= PULL_EXPIRES_MS + PULL_GRACE_MS) {
          this.open = false;
          finish({ outcome: 'lost', error: new Error('a NATS pull request got no answer') });
        } else {
          timer = setTimeout(watch, PULL_EXPIRES_MS + PULL_GRACE_MS - idle);
        }
      };
      if (!this.open) {
        this.open = true;
        this.lastActivity = Date.now();
        try {
          this.nc.publish(
            this.nextSubject,
            JSON.stringify({ batch: max, no_wait: true, expires: PULL_EXPIRES_MS * 1_000_000 }),
            { reply: this.sub.getSubject() },
          );
        } catch (err) {
          this.open = false;
          finish({ outcome: 'lost', error: err as Error });
          return;
        }
      }
      watch();
    });
  }

  private take(max: number): Msg[] {
    const msgs = this.buffer.length <= max ? this.buffer : this.buffer.slice(0, max);
    this.buffer = this.buffer.length <= max ? [] : this.buffer.slice(max);
    return msgs;
  }

  /** Hands the buffer to the waiting pull: at once when full or ended, else after a short gather. */
  private deliver(now: boolean): void {
    const w = this.waiting;
    if (!w || this.buffer.length === 0) return;
    if (now || this.buffer.length >= w.max) {
      w.finish({ outcome: 'ok', msgs: this.take(w.max) });
    } else {
      w.gather ??= setTimeout(() => w.finish({ outcome: 'ok', msgs: this.take(w.max) }), PULL_GATHER_MS);
    }
  }

  private fail(r: PullResult): void {
    this.open = false;
    if (this.waiting) this.waiting.finish(r);
    else this.failure = r;
  }

  private receive(err: Error | null, m: Msg): void {
    this.lastActivity = Date.now();
    if (err) {
      this.fail({ outcome: 'lost', error: err });
      return;
    }
    if (m.reply) {
      this.buffer.push(m);
      this.deliver(false);
      return;
    }
    // A status message: 100 is a heartbeat; 404 / 408 end the request when nothing (more) is there.
    const code = m.headers?.code ?? 0;
    const description = m.headers?.description ?? '';
    if (code === 100) return;
    if (code === 404 || code === 408) {
      this.open = false;
      if (this.buffer.length > 0) this.deliver(true);
      else this.waiting?.finish({ outcome: 'ok', msgs: [] });
    } else if (code === 409 && /consumer deleted/i.test(description)) {
      this.fail({ outcome: 'gone' });
    } else {
      // Any other end (server shutdown, leadership change, ...) may leave records the server
      // counts as delivered but that never arrived.
      this.fail({ outcome: 'lost', error: new Error(`NATS pull request ended with ${code} ${description}`) });
    }
  }

  close(): void {
    this.disconnectHooks.delete(this.onDisconnect);
    this.waiting?.finish({ outcome: 'stopped' });
    this.sub.unsubscribe();
  }
}
