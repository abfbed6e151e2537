import type pg from 'pg';
import { TributaryError } from '../../errors.js';
import type { EventFeed, FeedSubscription } from '../../pipeline/event-feed.js';
import { Slice } from '../../platform/async/slice.js';
import { Turns } from '../../platform/async/turns.js';
import type { StoredEvent } from '../../store/store.js';
import type { IdentityRules } from '../identifiers.js';
import { type IdentityChanges, IdentityEngine, toIdentityEvent } from '../identity-engine.js';
import { PostgresIdentityStore } from './postgres-identity-store.js';

export interface SharedIdentityStageOptions {
  /** The process's pool, shared by every stage of the process (never ended here). */
  pool: pg.Pool;
  /** Schema of the identity tables. Default `tributary`. */
  schema?: string;
  rules: IdentityRules;
  /** This stage's offset key: one per partition, e.g. `identity:p3`. */
  consumer: string;
  /** A store opened already (one per process); opened from `pool` and `schema` when absent. */
  store?: PostgresIdentityStore;
  onError?: (err: unknown) => void;
  /** Called after each committed batch (metrics). */
  onCommitted?: (changes: IdentityChanges) => void;
  /** Most events per feed call. Default 5,000. */
  maxBatch?: number;
  newId?: () => string;
  now?: () => number;
}

/**
 * Identity resolution for one partition of the log in the scale-out deployment, with the
 * identity graph in PostgreSQL shared by every worker. Each batch is one transaction:
 *
 * 1. `pg_advisory_xact_lock` on the schema's identity graph;
 * 2. load the working set: the profiles holding any identifier of the batch (whole), and the
 *    blocks naming any identifier of those profiles or of the batch;
 * 3. resolve the batch with a fresh `IdentityEngine` holding only that working set (it is
 *    closed: an event only reaches profiles through its identifiers, all loaded);
 * 4. write the changes, decisions and assignments; commit (the lock goes with it).
 *
 * Before all that, in the same transaction, this consumer's offset moves by compare-and-set.
 *
 * Why one graph-wide lock rather than per-identifier or per-profile locks: a batch reads and
 * rewrites whole profiles, and a profile is reached through any of its identifiers, so two
 * batches with disjoint identifiers can still update (or merge) the same profile. Fine-grained
 * locking needs identifier locks, then profile locks, then a re-check that the holders did
 * not move in between, with deadlock retries and one lock per identifier of the batch
 * (PostgreSQL's lock table is finite). The single lock is simple and deadlock-free (every
 * transaction takes its consumer's offset row, then the graph lock; unmerges only the graph
 * lock), and it serialises only identity commits: the log, the warehouse loader and the other
 * stages of every worker run beside it. The price: identity throughput is that of one commit
 * stream (about 12,000 events/s on the 2-core development machine with 5,000-event batches;
 * two concurrent stages reach about 1.1 to 1.3 times one), however many workers there are.
 * Resolution equals the embedded engine's for the same events in the same commit order, by
 * construction: the engine is the same, and the working set is all it can read.

 * Exactly once per partition: the offset moves in the same transaction as the results, only
 * from the offset this stage last read or committed; `TRIB_ERR_STATE_OFFSET_MOVED` means
 * another worker committed for the consumer (it took the partition over): nothing was
 * written, and the stage is fenced: it refuses every later batch with the same error (its
 * feed retries and reports it through `onError` until the owner stops it), so a worker that
 * lost a partition never resolves it again; a new stage is opened when the partition comes back.
 */
export class SharedIdentityStage {
  private readonly turns = new Turns();
  private subscription: FeedSubscription | undefined;
  private committedOffset = 0;
  /** Set once another worker moved this consumer's offset: the stage never commits again. */
  private fenced: TributaryError | undefined;

  private constructor(
    readonly store: PostgresIdentityStore,
    private readonly options: SharedIdentityStageOptions,
  ) {}

  static async open(options: SharedIdentityStageOptions): Promise<SharedIdentityStage> {
    const store =
      options.store ??
      (await PostgresIdentityStore.open({
        pool: options.pool,
        schema: options.schema,
        computed: options.rules.computed,
        now: options.now,
      }));
    const stage = new SharedIdentityStage(store, options);
    stage.committedOffset = await store.offsetOf(options.consumer);
    return stage;
  }

  /** Starts following the partition's feed from the stored offset of `consumer`. */
  follow(feed: EventFeed): void {
    this.subscription = feed.subscribe({
      name: this.options.consumer,
      from: () => this.turns.run(() => this.reread()),
      handle: (events, next) => this.handle(events, next),
      maxBatch: this.options.maxBatch ?? 5_000,
      onError: this.options.onError,
    });
  }

  /** Reads the stored offset again (after a failed batch, the feed resumes there). */
  private async reread(): Promise<number> {
    this.committedOffset = await this.store.offsetOf(this.options.consumer);
    return this.committedOffset;
  }

  async drained(): Promise<void> {
    await this.subscription?.drained();
  }

  async stop(): Promise<void> {
    await this.subscription?.stop();
    this.subscription = undefined;
    await this.turns.idle();
  }

  /** The log offset this stage has resolved and committed up to. */
  position(): number {
    return this.committedOffset;
  }

  /**
   * Resolves a batch and commits it with `nextOffset` in one transaction (see the class
   * comment). The batch must start at `position()`. On any failure nothing is written and
   * the batch can be handed over again.
   */
  handle(events: readonly StoredEvent[], nextOffset: number): Promise<void> {
    return this.turns.run(async () => {
      if (this.fenced) throw this.fenced;
      const { rules, consumer } = this.options;
      const parsed = events.map((e) => toIdentityEvent(e, rules));
      const keys = new Set<string>();
      for (const ev of parsed) for (const id of ev.identifiers) keys.add(id.key);
      const expected = this.committedOffset;
      let changes: IdentityChanges | undefined;
      await this.transaction(async (c) => {
        // The offset first: a stage whose partition was taken over stops before any work,
        // and the row lock it takes keeps the consumer's offset still until the commit.
        await this.store.moveOffset(c, consumer, expected, nextOffset);
        if (parsed.length > 0) {
          await this.store.lockGraph(c);
          const snap = await this.store.loadWorkingSet(c, [...keys]);
          const engine = new IdentityEngine(rules, { newId: this.options.newId, now: this.options.now });
          for (const p of snap.profiles) engine.loadProfile(p);
          for (const b of snap.blocks) engine.loadBlock(b);
          // Let requests in between: a batch is thousands of events.
          const slice = new Slice();
          for (const event of parsed) {
            if (slice.due()) await slice.pass();
            engine.resolve(event);
          }
          changes = engine.takeChanges();
          await this.store.write(c, changes, (id) => engine.profiles.get(id));
        }
      });
      this.committedOffset = nextOffset;
      if (changes) this.options.onCommitted?.(changes);
    });
  }

  private async transaction(fn: Parameters<PostgresIdentityStore['transaction']>[0]): Promise<void> {
    try {
      await this.store.transaction(fn);
    } catch (err) {
      if (err instanceof TributaryError && err.code === 'TRIB_ERR_STATE_OFFSET_MOVED') this.fenced = err;
      throw err;
    }
  }

  /** Whether another worker took this consumer over (the stage refuses every batch since). */
  isFenced(): boolean {
    return this.fenced !== undefined;
  }
}
