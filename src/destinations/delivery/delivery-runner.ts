import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { DestinationConfig } from '../../config/destinations-schema.js';
import { TributaryError } from '../../errors.js';
import type { Delivered } from '../../log/event-log.js';
import type { EventFeed, FeedSubscription } from '../../pipeline/event-feed.js';
import { runStages } from '../../pipeline/stages/runner.js';
import type { Stage } from '../../pipeline/stages/stage.js';
import { isPlainObject } from '../../spec/event.js';
import type { DeliveryJob, QueuedDelivery } from '../../store/delivery-queue.js';
import type { FailedRow, Store, StoredEvent } from '../../store/store.js';
import {
  buildDestinationTransforms,
  type DestinationRetryItem,
  destinationStage,
} from '../destination-transforms.js';
import { destinationKind, isStreamKind } from '../registry.js';
import type { RunningDestination } from '../runner.js';
import type {
  AttemptRecorder,
  Delivery,
  DeliveryAttempt,
  DeliveryOp,
  SendResult,
  StreamDestination,
} from '../stream.js';
import { type BreakerState, backoffMs, CircuitBreaker, RateLimit } from './breaker.js';
import { type DeliveryMetrics, type DeliveryProgress, deliveryMetrics } from './delivery-metrics.js';
import { EventGate } from './event-gate.js';

/** The common settings of every streaming kind (`streamCommon`), as the runner reads them. */
interface StreamSettings {
  id: string;
  type: string;
  enabled: boolean;
  batchSize: number;
  retryWindow: number;
  timeout: number;
  concurrency: number;
  rateLimit?: number;
  backoff: { initial: number; max: number };
  breaker: { failures: number; cooldown: number };
  queueBatch: number;
  startFrom: 'now' | 'beginning';
  filters?: Parameters<typeof EventGate.compile>[1];
  consent?: Parameters<typeof EventGate.compile>[2];
}

/** The store as the delivery runner uses it: its queue, its offsets, failed events. */
export type DeliveryStore = Pick<
  Store,
  | 'consumerOffset'
  | 'enqueueDeliveries'
  | 'nextDeliveries'
  | 'expiredDeliveries'
  | 'settleDeliveries'
  | 'deliveryBacklog'
>;

/** A streaming destination the delivery runner runs: the warehouse runner's view, and its progress. */
export interface RunningStreamDestination extends RunningDestination {
  progress(): DeliveryProgress;
  /** Resolves once nothing is queued, or the destination cannot deliver now (breaker open, backoff). */
  idle(): Promise<void>;
  retry(items: readonly DestinationRetryItem[]): Promise<{ pending: readonly string[] }>;
}

export interface StreamRunnerOptions {
  destinations: readonly DestinationConfig[];
  feed: EventFeed;
  store: DeliveryStore;
  logger: Logger;
  registry: Registry;
  /** The log's end offset, for the lag. */
  endOffset: () => number;
  /** Where the loader is: a new destination with `startFrom: now` starts there. */
  loaderPosition: () => number;
  dataDir: string;
  /** The configuration file's folder: function files resolve against it. */
  baseDir: string;
  env: Record<string, string | undefined>;
  /** Where every attempt is recorded (lineage); default none. */
  attempts?: AttemptRecorder;
  /**
   * How long `failed retry` waits for the deliveries it queued to be delivered or to fail
   * again before it reports them `sent`. Default 10 s.
   */
  retryWaitMs?: number;
}

/** Most jobs read from the queue at once. */
const REFILL = 1_000;
/** Most jobs of one order key read at once. */
const PER_KEY = 16;

/** The queue and feed consumer of a destination. */
export const deliveryQueue = (id: string) => `delivery:${id}`;

/**
 * Starts the configured streaming destinations: each follows the event feed, applies its
 * filters, consent gate and transformations, and queues what it will send in the store, in the
 * same transaction as its feed offset; then delivers from the queue (see docs/architecture.md,
 * "Streaming destinations").
 */
export async function startStreamDestinations(
  opts: StreamRunnerOptions,
): Promise<RunningStreamDestination[]> {
  const running: RunningStreamDestination[] = [];
  const metrics = deliveryMetrics(opts.registry);
  for (const config of opts.destinations) {
    if (!config.enabled) continue;
    const kind = destinationKind(config.type);
    if (!isStreamKind(kind)) continue;
    const settings = config as unknown as StreamSettings;
    let stages: Stage[] = [];
    let destination: StreamDestination;
    let gate: EventGate;
    try {
      gate = EventGate.compile(config.id, settings.filters, settings.consent);
      stages = await buildDestinationTransforms(config, opts.baseDir, opts.env);
      const connector = await kind.connector();
      destination = await connector.create(config, { dataDir: opts.dataDir, env: opts.env });
    } catch (err) {
      for (const s of stages) await s.close?.();
      for (const d of running) await d.stop();
      if (err instanceof TributaryError) throw err;
      throw new TributaryError('TRIB_ERR_DESTINATION_SETUP', [config.id, (err as Error).message], {
        cause: err,
      });
    }
    const d = new DeliveryRunner(settings, destination, gate, stages, opts, metrics);
    d.start();
    running.push(d.handle());
  }
  return running;
}

/** A promise-free wake-up: `sleep` returns at once when `wake` was called since the last sleep. */
class Wake {
  private woken = false;
  private end: (() => void) | undefined;

  wake(): void {
    this.woken = true;
    this.end?.();
  }

  sleep(ms: number): Promise<void> {
    if (this.woken) {
      this.woken = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const timer = setTimeout(done, Math.max(0, ms));
      const self = this;
      function done() {
        clearTimeout(timer);
        if (self.end === done) self.end = undefined;
        self.woken = false;
        resolve();
      }
      this.end = done;
    });
  }
}

/** Results of finished requests waiting to be stored together (group commit). */
interface Settled {
  job: DeliveryJob;
  result: SendResult;
}

class DeliveryRunner {
  private readonly queue: string;
  private readonly consumer: string;
  private readonly breaker: CircuitBreaker;
  private readonly rate: RateLimit | undefined;
  private readonly wake = new Wake();
  private sub: FeedSubscription | undefined;
  private loop: Promise<void> | undefined;
  private stopped = false;
  private readonly stopping = new AbortController();
  private position = -1;
  private lastError: { message: string; at: Date } | undefined;
  /** Order keys and seqs of deliveries in flight. */
  private readonly busyKeys = new Set<string>();
  private readonly busySeqs = new Set<number>();
  private requests = 0;
  private readonly inFlight = new Set<Promise<void>>();
  private settling: Settled[] = [];
  private flushing: Promise<void> | undefined;
  private backlog = { jobs: 0, oldestEnqueuedAt: null as number | null, at: 0 };
  /** Counts local changes of `backlog`, so a count read meanwhile does not overwrite them. */
  private backlogChanges = 0;
  private readonly counts = { delivered: 0, failed: 0, retried: 0, filtered: 0, consentBlocked: 0 };
  /** Retried failed events (`failed_events` ids) waiting to be delivered or to fail again. */
  private readonly retryWaiters = new Map<string, () => void>();
  private lastExpiry = 0;
  private readonly idleWaiters: (() => void)[] = [];
  /**
   * Seqs settled while the loop reads the queue: the read may predate their settling, and must
   * not hand them out again.
   */
  private readonly settledDuringRead = new Set<string>();
  /** Seqs delivered or failed for good and stored while the loop reads the queue. */
  private readonly doneDuringRead = new Set<number>();
  /** Order keys whose job was answered retryable and whose backoff is not stored yet. */
  private readonly retrying = new Set<string>();
  private reading = false;
  /** A read of the queue under way in the background (see `refillAhead`). */
  private refilling: Promise<void> | undefined;
  /**
   * Jobs read from the queue and not sent yet, per order key in queue order: a key's first job
   * was its head when read, and stays so until sent (only this runner takes jobs out).
   */
  private readonly fifo = new Map<string, DeliveryJob[]>();
  /** Jobs the receiver answered for good (ok or refused) whose results are not stored yet. */
  private readonly unsettled = new Set<number>();

  constructor(
    private readonly config: StreamSettings,
    private readonly destination: StreamDestination,
    private readonly gate: EventGate,
    private readonly stages: readonly Stage[],
    private readonly opts: StreamRunnerOptions,
    private readonly metrics: DeliveryMetrics,
  ) {
    this.queue = deliveryQueue(config.id);
    this.consumer = deliveryQueue(config.id);
    this.breaker = new CircuitBreaker(config.breaker.failures, config.breaker.cooldown);
    this.rate = config.rateLimit === undefined ? undefined : new RateLimit(config.rateLimit);
  }

  start(): void {
    this.sub = this.opts.feed.subscribe({
      name: `delivery:${this.config.id}`,
      from: async () => {
        this.position = await this.startOffset();
        return this.position;
      },
      handle: async (events, next) => {
        await this.take(events, next);
        this.position = next;
      },
      maxBatch: this.config.queueBatch,
      retryMs: 1_000,
      onError: (err) => {
        this.noteError(err);
        this.opts.logger.error({ err, destination: this.config.id }, 'queueing deliveries failed; retrying');
      },
    });
    this.loop = this.deliverLoop();
    this.metrics.live.add(this.progress);
  }

  handle(): RunningStreamDestination {
    return {
      id: this.config.id,
      type: this.config.type as DestinationConfig['type'],
      offsetKey: this.consumer,
      position: () => this.position,
      lastError: () => this.lastError,
      drained: () => this.sub!.drained(),
      idle: async () => {
        await this.sub!.drained();
        await this.idle();
      },
      retry: (items) => this.retry(items),
      replay: (events) => this.replay(events),
      progress: this.progress,
      stop: () => this.stop(),
    };
  }

  private readonly progress = (): DeliveryProgress => {
    const now = Date.now();
    const b = this.backlog;
    return {
      destination: this.config.id,
      type: this.config.type,
      position: this.position,
      lag: Math.max(0, this.opts.endOffset() - Math.max(0, this.position)),
      queued: b.jobs,
      oldestQueuedMs: b.oldestEnqueuedAt === null ? 0 : Math.max(0, now - b.oldestEnqueuedAt),
      breaker: this.breaker.state,
      ...this.counts,
      ...(this.lastError ? { lastError: this.lastError.message } : {}),
    };
  };

  /**
   * The stored offset; on the first start, `now` pins it at the loader's position. A marker
   * (`<queue>:started`, stored as offset + 1 so it is never 0) tells a first start from a
   * destination that took nothing yet.
   */
  private async startOffset(): Promise<number> {
    const store = this.opts.store;
    const stored = await store.consumerOffset(this.consumer);
    const marker = `${this.consumer}:started`;
    if ((await store.consumerOffset(marker)) > 0) return stored;
    let from = stored;
    if (stored === 0 && this.config.startFrom === 'now') {
      from = this.opts.loaderPosition();
      await store.enqueueDeliveries({
        queue: this.queue,
        jobs: [],
        failed: [],
        consumer: this.consumer,
        nextOffset: from,
      });
    }
    await store.enqueueDeliveries({
      queue: this.queue,
      jobs: [],
      failed: [],
      consumer: marker,
      nextOffset: from + 1,
    });
    return from;
  }

  private noteError(err: unknown): void {
    this.lastError = { message: (err as Error)?.message ?? String(err), at: new Date() };
  }

  // --- Taking events from the feed into the queue -------------------------------------------

  private async take(events: readonly StoredEvent[], next: number): Promise<void> {
    await this.queueEvents(events, { consumer: this.consumer, nextOffset: next });
  }

  /**
   * Events of a replay (`tributary replay`): through the filters, the consent gate and the
   * functions as they are now, into the queue, with their messageIds as idempotency keys so
   * a receiver that dedups takes each once. The feed's offset does not move.
   */
  private async replay(events: readonly StoredEvent[]): Promise<{ ok: number; failed: number }> {
    const { queued, failed } = await this.queueEvents(events);
    return { ok: queued, failed };
  }

  /** Gates, transforms and queues events; with `offset`, the feed's offset moves with them. */
  private async queueEvents(
    events: readonly StoredEvent[],
    offset?: { consumer: string; nextOffset: number },
  ): Promise<{ queued: number; failed: number }> {
    const passed: StoredEvent[] = [];
    let filtered = 0;
    let consent = 0;
    for (const e of events) {
      let event: unknown;
      try {
        event = JSON.parse(e.json);
      } catch {
        event = undefined;
      }
      const outcome = isPlainObject(event) ? await this.gate.decide(event, e.sourceId) : 'filtered';
      if (outcome === 'pass') passed.push(e);
      else if (outcome === 'consent') consent++;
      else filtered++;
    }
    const { rows, failed } = await this.transform(passed, () => undefined);
    await this.opts.store.enqueueDeliveries({
      queue: this.queue,
      jobs: rows.map(toQueued),
      failed,
      ...offset,
    });
    const id = this.config.id;
    this.counts.filtered += filtered;
    this.counts.consentBlocked += consent;
    this.counts.failed += failed.length;
    if (filtered > 0) this.metrics.events.inc({ destination: id, outcome: 'filtered' }, filtered);
    if (consent > 0) this.metrics.events.inc({ destination: id, outcome: 'consent_blocked' }, consent);
    if (failed.length > 0) this.metrics.events.inc({ destination: id, outcome: 'failed' }, failed.length);
    if (rows.length > 0) {
      this.backlog.jobs += rows.length;
      this.backlog.oldestEnqueuedAt ??= Date.now();
      this.backlogChanges++;
      this.wake.wake();
    }
    return { queued: rows.length, failed: failed.length };
  }

  /** Runs events through the destination's functions; failures as rows of stage `destination:<id>`. */
  private async transform(
    events: readonly StoredEvent[],
    retryOf: (f: FailedRow) => string | undefined,
  ): Promise<{ rows: StoredEvent[]; failed: FailedRow[] }> {
    if (this.stages.length === 0 || events.length === 0) return { rows: [...events], failed: [] };
    const records: Delivered[] = events.map((e) => ({
      offset: e.logOffset,
      sourceId: e.sourceId,
      messageId: e.messageId,
      receivedAt: e.receivedAt,
      status: 'accepted',
      json: e.json,
    }));
    const run = await runStages(this.stages, records);
    const stage = destinationStage(this.config.id);
    let dropped = 0;
    for (const o of run.outcomes) if (o.outcome === 'filtered') dropped++;
    if (dropped > 0) this.metrics.events.inc({ destination: this.config.id, outcome: 'dropped' }, dropped);
    return { rows: run.rows, failed: run.failed.map((f) => ({ ...f, stage, retryOf: retryOf(f) })) };
  }

  /**
   * `tributary failed retry` of this destination's failures: delivery failures are queued again
   * as they were sent, failures of its functions run through its current functions first.
   * Waits (a bounded time) for them to be delivered or to fail again.
   */
  private async retry(items: readonly DestinationRetryItem[]): Promise<{ pending: readonly string[] }> {
    const resend = items.filter((i) => !i.code?.startsWith('TRIB_ERR_TRANSFORM'));
    const rerun = items.filter((i) => i.code?.startsWith('TRIB_ERR_TRANSFORM'));
    const byKey = new Map(rerun.map((i) => [`${i.logOffset}\u001f${i.messageId}`, i.id]));
    const { rows, failed } = await this.transform(
      rerun.map((i) => ({ ...i })),
      (f) => byKey.get(`${f.logOffset}\u001f${f.messageId}`),
    );
    const jobs: QueuedDelivery[] = [
      ...resend.map((i) => ({ ...toQueued(i), retryOf: i.id })),
      ...rows.map((r) => ({
        ...toQueued(r),
        retryOf:
          byKey.get(`${r.logOffset}\u001f${r.messageId}`) ??
          rerun.find((i) => i.logOffset === r.logOffset)?.id,
      })),
    ];
    const waiting = new Map<string, Promise<void>>();
    for (const j of jobs) {
      if (j.retryOf === undefined || waiting.has(j.retryOf)) continue;
      const id = j.retryOf;
      waiting.set(id, new Promise<void>((resolve) => this.retryWaiters.set(id, resolve)));
    }
    await this.opts.store.enqueueDeliveries({ queue: this.queue, jobs, failed });
    this.backlog.jobs += jobs.length;
    this.backlogChanges++;
    this.wake.wake();
    const done = new Set<string>();
    const all = Promise.all([...waiting].map(([id, p]) => p.then(() => done.add(id))));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      all,
      new Promise<void>((r) => {
        timer = setTimeout(r, this.opts.retryWaitMs ?? 10_000);
      }),
    ]);
    clearTimeout(timer);
    for (const id of waiting.keys()) if (!done.has(id)) this.retryWaiters.delete(id);
    return { pending: [...waiting.keys()].filter((id) => !done.has(id)) };
  }

  // --- Delivering from the queue ------------------------------------------------------------

  private async deliverLoop(): Promise<void> {
    const c = this.config;
    const poll = Math.max(5, Math.min(1_000, c.backoff.initial, c.breaker.cooldown));
    while (!this.stopped) {
      try {
        await this.expire();
        if (this.breaker.state === 'open') {
          await this.refreshBacklog(false);
          this.notifyIdle();
          await this.wake.sleep(Math.min(this.breaker.waitMs(), 1_000));
          continue;
        }
        const probing = this.breaker.state === 'half-open';
        const slots = probing ? (this.requests === 0 ? 1 : 0) : c.concurrency - this.requests;
        if (slots <= 0) {
          await this.wake.sleep(poll);
          continue;
        }
        const want = slots * c.batchSize;
        // Reads ahead in the background while fewer than two rounds of requests are buffered;
        // waits for a read only when nothing is.
        const ahead = 2 * c.concurrency * c.batchSize;
        let ready = this.readyKeys(ahead);
        if (ready.length === 0) {
          await this.refilling;
          ready = this.readyKeys(ahead);
          if (ready.length === 0) {
            await this.refill(ahead);
            ready = this.readyKeys(ahead);
          }
        } else if (ready.length < ahead) this.refillAhead(ahead);
        ready = ready.slice(0, want);
        if (ready.length === 0) {
          // Idle only once no answer waits to be stored, a retry's backoff included.
          if (
            this.requests === 0 &&
            this.unsettled.size === 0 &&
            this.retrying.size === 0 &&
            this.flushing === undefined &&
            this.settling.length === 0
          ) {
            await this.refreshBacklog(true);
            this.notifyIdle();
          }
          await this.wake.sleep(poll);
          continue;
        }
        for (let n = 0; n < slots && ready.length > 0 && !this.stopped; n++) {
          if (!this.breaker.allow()) break;
          const wait = this.rate?.take() ?? 0;
          if (wait > 0) {
            await this.wake.sleep(wait);
            break;
          }
          // One job per user in a request: a per-record answer could otherwise reorder them.
          this.dispatch(ready.splice(0, c.batchSize).map((key) => this.fifo.get(key)!.shift()!));
        }
        await this.refreshBacklog(false);
      } catch (err) {
        this.noteError(err);
        this.opts.logger.error({ err, destination: c.id }, 'delivery loop failed; retrying');
        await this.wake.sleep(1_000);
      }
    }
  }

  /** Sends one request in the background; its results are stored with the next group commit. */
  private dispatch(jobs: DeliveryJob[]): void {
    for (const j of jobs) {
      this.busyKeys.add(j.orderKey);
      this.busySeqs.add(j.seq);
    }
    this.requests++;
    const p = this.send(jobs).finally(() => {
      this.inFlight.delete(p);
    });
    this.inFlight.add(p);
  }

  private async send(jobs: DeliveryJob[]): Promise<void> {
    const batch: Delivery[] = [];
    const results: (SendResult | undefined)[] = new Array(jobs.length);
    jobs.forEach((j, i) => {
      try {
        batch.push(toDelivery(j));
      } catch (err) {
        results[i] = { status: 'failed', code: 'TRIB_ERR_DELIVERY_ENCODE', error: (err as Error).message };
      }
    });
    const started = Date.now();
    const signal = AbortSignal.any([AbortSignal.timeout(this.config.timeout), this.stopping.signal]);
    let answers: SendResult[];
    try {
      answers = batch.length === 0 ? [] : await this.destination.send(batch, signal);
      if (answers.length !== batch.length)
        throw new Error(`the connector answered ${answers.length} results for ${batch.length} deliveries`);
    } catch (err) {
      const error = signal.aborted ? 'the request timed out' : (err as Error).message;
      answers = batch.map(() => ({ status: 'retryable', error }));
    }
    let k = 0;
    for (let i = 0; i < jobs.length; i++) results[i] ??= answers[k++]!;
    const latencyMs = Date.now() - started;
    // The receiver answered (ok or a refusal): it is up. Only all-retryable counts against it.
    if (results.every((r) => r!.status === 'retryable')) this.breaker.failure();
    else this.breaker.success();
    const at = new Date(started);
    const attempts: DeliveryAttempt[] = jobs.map((j, i) => {
      const r = results[i]!;
      return {
        destination: this.config.id,
        messageId: j.key,
        attempt: j.attempts + 1,
        at,
        status: r.status,
        latencyMs,
        ...(r.status === 'ok' ? (r.detail ? { detail: r.detail } : {}) : { detail: r.error }),
      };
    });
    if (this.opts.attempts)
      this.opts.attempts
        .record(attempts)
        .catch((err) =>
          this.opts.logger.warn({ err, destination: this.config.id }, 'recording attempts failed'),
        );
    for (const r of results) this.metrics.attempts.inc({ destination: this.config.id, status: r!.status });
    this.settling.push(...jobs.map((job, i) => ({ job, result: results[i]! })));
    // The slot is free once the receiver answered. A user whose event it took (or refused for
    // good) may send the next one now, before the result is stored: after a crash the stored
    // queue sends both again, in order, and the receiver dedups. A user whose event is to be
    // retried waits until its backoff is stored, and reads their queue again then.
    this.requests--;
    jobs.forEach((j, i) => {
      if (results[i]!.status === 'retryable') {
        this.fifo.delete(j.orderKey);
        this.retrying.add(j.orderKey);
        if (this.reading) this.settledDuringRead.add(j.orderKey);
      } else {
        this.unsettled.add(j.seq);
        this.busyKeys.delete(j.orderKey);
      }
    });
    this.wake.wake();
    try {
      await this.flush();
    } finally {
      jobs.forEach((j, i) => {
        this.unsettled.delete(j.seq);
        this.busySeqs.delete(j.seq);
        if (results[i]!.status === 'retryable') {
          this.busyKeys.delete(j.orderKey);
          this.retrying.delete(j.orderKey);
        }
      });
      this.wake.wake();
    }
  }

  /** Stores the settled results of every finished request in one transaction (group commit). */
  private async flush(): Promise<void> {
    while (this.flushing) await this.flushing.catch(() => undefined);
    if (this.settling.length === 0) return;
    const taken = this.settling;
    this.settling = [];
    this.flushing = this.settle(taken).finally(() => {
      this.flushing = undefined;
    });
    await this.flushing;
  }

  private async settle(items: readonly Settled[]): Promise<void> {
    const now = Date.now();
    const c = this.config;
    const done: number[] = [];
    const retry: { seq: number; attempts: number; notBefore: number; lastError: string }[] = [];
    const failed: { seq: number; row: FailedRow; code: string }[] = [];
    const finished: string[] = [];
    for (const { job, result } of items) {
      if (result.status === 'ok') {
        done.push(job.seq);
        if (job.retryOf) finished.push(job.retryOf);
      } else if (result.status === 'failed') {
        failed.push({ seq: job.seq, code: result.code, row: this.failedRow(job, result.code, result.error) });
        if (job.retryOf) finished.push(job.retryOf);
      } else {
        const attempts = job.attempts + 1;
        const delay = Math.max(
          result.retryAfterMs ?? 0,
          backoffMs(attempts, c.backoff.initial, c.backoff.max),
        );
        if (now + delay - job.enqueuedAt > c.retryWindow) {
          const reason = new TributaryError('TRIB_ERR_DELIVERY_EXPIRED', [c.id, c.retryWindow, result.error])
            .message;
          failed.push({
            seq: job.seq,
            code: 'TRIB_ERR_DELIVERY_EXPIRED',
            row: this.failedRow(job, 'TRIB_ERR_DELIVERY_EXPIRED', reason),
          });
          if (job.retryOf) finished.push(job.retryOf);
        } else {
          retry.push({ seq: job.seq, attempts, notBefore: now + delay, lastError: result.error });
        }
      }
    }
    try {
      await this.opts.store.settleDeliveries({
        queue: this.queue,
        done,
        retry,
        failed: failed.map(({ seq, row }) => ({ seq, row })),
      });
    } catch (err) {
      // Not stored: the deliveries stay queued as they were and are sent again (at least once).
      this.noteError(err);
      this.opts.logger.error(
        { err, destination: c.id },
        'storing delivery results failed; they are sent again',
      );
      return;
    }
    if (this.reading) {
      // A read under way may predate this: it must not hand out these jobs again, nor a
      // retried user's jobs (their head now waits for its backoff).
      const retried = new Set(retry.map((r) => r.seq));
      for (const { job } of items)
        if (retried.has(job.seq)) this.settledDuringRead.add(job.orderKey);
        else this.doneDuringRead.add(job.seq);
    }
    this.record(done.length, retry.length, failed);
    for (const id of finished) {
      this.retryWaiters.get(id)?.();
      this.retryWaiters.delete(id);
    }
    const last = items[items.length - 1]?.result;
    if (last && last.status === 'ok' && retry.length === 0) this.lastError = undefined;
    else if (retry.length > 0)
      this.lastError = { message: retry[retry.length - 1]!.lastError, at: new Date() };
  }

  private record(delivered: number, retried: number, failed: readonly { code: string }[]): void {
    const id = this.config.id;
    this.counts.delivered += delivered;
    this.counts.retried += retried;
    this.counts.failed += failed.length;
    this.backlog.jobs = Math.max(0, this.backlog.jobs - delivered - failed.length);
    this.backlogChanges++;
    if (delivered > 0) this.metrics.events.inc({ destination: id, outcome: 'delivered' }, delivered);
    if (failed.length > 0) this.metrics.events.inc({ destination: id, outcome: 'failed' }, failed.length);
    for (const f of failed) this.metrics.failedByCode.inc({ destination: id, code: f.code });
  }

  private failedRow(job: DeliveryJob, code: string, reason: string): FailedRow {
    return {
      logOffset: job.logOffset,
      sourceId: job.sourceId,
      messageId: job.key,
      stage: destinationStage(this.config.id),
      code,
      reason,
      receivedAt: new Date(job.receivedAt).toISOString(),
      json: job.payload,
      ...(job.retryOf ? { retryOf: job.retryOf } : {}),
    };
  }

  /** Order keys, not busy, whose next job is read: at most `max`, oldest first. */
  private readyKeys(max: number): string[] {
    const keys: string[] = [];
    for (const [key, jobs] of this.fifo) {
      if (jobs.length === 0) {
        this.fifo.delete(key);
        continue;
      }
      if (this.busyKeys.has(key)) continue;
      keys.push(key);
      if (keys.length >= max) break;
    }
    return keys;
  }

  /**
   * Reads the next jobs of the due order keys (up to {@link PER_KEY} each, {@link REFILL} in
   * all) into the per-key buffers, leaving out keys in flight and jobs already read, sent or
   * answered.
   */
  private async refill(want: number): Promise<void> {
    // The jobs in flight, answered but not stored, and buffered come first in the queue: read
    // past them, so the users' next jobs are read while their heads are still being sent.
    let known = this.busySeqs.size;
    for (const list of this.fifo.values()) known += list.length;
    const jobs = await this.read(() =>
      this.opts.store.nextDeliveries(this.queue, Date.now(), Math.max(want, REFILL) + known, PER_KEY),
    );
    for (const j of jobs) {
      // A user in flight gets their next jobs buffered (sent once the head is answered); one
      // whose head is to be retried gets none (its later jobs wait behind its backoff).
      if (this.unsettled.has(j.seq) || this.busySeqs.has(j.seq) || this.retrying.has(j.orderKey)) continue;
      const list = this.fifo.get(j.orderKey);
      if (list === undefined) this.fifo.set(j.orderKey, [j]);
      else if (list.length === 0 || j.seq > list[list.length - 1]!.seq) list.push(j);
    }
  }

  /** Starts a {@link refill} in the background, unless one is under way. */
  private refillAhead(want: number): void {
    if (this.refilling) return;
    this.refilling = this.refill(want)
      .catch((err) => {
        this.noteError(err);
        this.opts.logger.error({ err, destination: this.config.id }, 'reading the delivery queue failed');
      })
      .finally(() => {
        this.refilling = undefined;
        this.wake.wake();
      });
  }

  /** Reads jobs from the queue, leaving out those settled meanwhile (the read may not see it). */
  private async read(query: () => Promise<DeliveryJob[]>): Promise<DeliveryJob[]> {
    this.settledDuringRead.clear();
    this.doneDuringRead.clear();
    this.reading = true;
    try {
      const jobs = await query();
      return jobs.filter((j) => !this.settledDuringRead.has(j.orderKey) && !this.doneDuringRead.has(j.seq));
    } finally {
      this.reading = false;
      this.settledDuringRead.clear();
      this.doneDuringRead.clear();
    }
  }

  /** Moves deliveries past the retry window to failed_events (at most once a second). */
  private async expire(): Promise<void> {
    const now = Date.now();
    if (now - this.lastExpiry < Math.min(1_000, this.config.retryWindow)) return;
    this.lastExpiry = now;
    await this.refilling;
    const c = this.config;
    for (;;) {
      const jobs = (
        await this.read(() => this.opts.store.expiredDeliveries(this.queue, now - c.retryWindow, 1_000))
      ).filter((j) => !this.busySeqs.has(j.seq) && !this.unsettled.has(j.seq));
      if (jobs.length === 0) return;
      const expired = new Set(jobs.map((j) => j.seq));
      for (const [key, list] of this.fifo)
        this.fifo.set(
          key,
          list.filter((j) => !expired.has(j.seq)),
        );
      const failed = jobs.map((j) => ({
        seq: j.seq,
        row: this.failedRow(
          j,
          'TRIB_ERR_DELIVERY_EXPIRED',
          new TributaryError('TRIB_ERR_DELIVERY_EXPIRED', [
            c.id,
            c.retryWindow,
            j.lastError ?? 'not sent yet',
          ]).message,
        ),
      }));
      await this.opts.store.settleDeliveries({ queue: this.queue, done: [], retry: [], failed });
      this.record(
        0,
        0,
        jobs.map(() => ({ code: 'TRIB_ERR_DELIVERY_EXPIRED' })),
      );
      for (const j of jobs) {
        if (!j.retryOf) continue;
        this.retryWaiters.get(j.retryOf)?.();
        this.retryWaiters.delete(j.retryOf);
      }
      if (jobs.length < 1_000) return;
    }
  }

  private async refreshBacklog(force: boolean): Promise<void> {
    const now = Date.now();
    if (!force && now - this.backlog.at < 1_000) return;
    const changes = this.backlogChanges;
    const b = await this.opts.store.deliveryBacklog(this.queue);
    // Queued or settled meanwhile: the count read may miss it; the next refresh takes it.
    if (changes === this.backlogChanges) this.backlog = { ...b, at: now };
  }

  /** Resolves once the queue is empty or nothing in it can go now. */
  private idle(): Promise<void> {
    return new Promise((resolve) => {
      this.idleWaiters.push(resolve);
      this.wake.wake();
    });
  }

  private notifyIdle(): void {
    for (const w of this.idleWaiters.splice(0)) w();
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    await this.sub?.stop();
    this.stopped = true;
    this.wake.wake();
    await this.loop;
    await this.refilling;
    // Requests in flight get a moment to finish; then they are aborted and stay queued.
    const bound = new Promise<void>((r) => setTimeout(r, Math.min(2_000, this.config.timeout)).unref());
    await Promise.race([Promise.all(this.inFlight), bound]);
    this.stopping.abort();
    await Promise.all(this.inFlight);
    this.notifyIdle();
    for (const w of this.retryWaiters.values()) w();
    this.metrics.live.delete(this.progress);
    for (const s of this.stages) await s.close?.();
    await this.destination.close();
  }
}

/** An event (or its transformed output) as a queued delivery: ordered by its user. */
function toQueued(e: StoredEvent): QueuedDelivery {
  let orderKey = e.messageId;
  try {
    const v = JSON.parse(e.json) as unknown;
    if (isPlainObject(v)) {
      const user = v.userId ?? v.anonymousId;
      if (typeof user === 'string' && user !== '') orderKey = user;
      else if (typeof user === 'number') orderKey = String(user);
    }
  } catch {
    // not JSON: ordered on its own
  }
  return {
    key: e.messageId,
    orderKey,
    op: 'event',
    payload: e.json,
    logOffset: e.logOffset,
    sourceId: e.sourceId,
    receivedAt: e.receivedAt,
  };
}

function toDelivery(j: DeliveryJob): Delivery {
  const payload = JSON.parse(j.payload) as unknown;
  if (!isPlainObject(payload)) throw new Error('the queued payload is not a JSON object');
  return {
    key: j.key,
    orderKey: j.orderKey,
    op: j.op as DeliveryOp,
    payload,
    ...(j.logOffset >= 0 ? { logOffset: j.logOffset, sourceId: j.sourceId } : {}),
  };
}

export type { BreakerState };
