import type { DuckDBInstance } from '@duckdb/node-api';
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { DestinationConfig } from '../config/destinations-schema.js';
import { TributaryError } from '../errors.js';
import type { EventFeed, FeedSubscription } from '../pipeline/event-feed.js';
import type { Stage } from '../pipeline/stages/stage.js';
import type { CheckpointGate } from '../platform/duckdb/checkpoint-gate.js';
import type { RowTarget } from '../platform/duckdb/duckdb-erase.js';
import type { Store, StoredEvent } from '../store/store.js';
import type { RecordFailure, WarehouseDestination, WarehouseRow } from './destination.js';
import {
  buildDestinationTransforms,
  type DestinationRetryItem,
  destinationFailure,
  TransformingDestination,
} from './destination-transforms.js';
import { destinationKind, isStreamKind } from './registry.js';

export { destinationPath } from './destination-path.js';

/** A destination following the feed. */
export interface RunningDestination {
  id: string;
  type: DestinationConfig['type'];
  /** Key of its stored offset: the id, with the partition's suffix when it runs per partition. */
  offsetKey: string;
  /** The log offset loaded up to (−1 until the stored one was read). */
  position(): number;
  /**
   * Why the last load failed, while the destination retries it (undefined once a load
   * succeeds): for health reporting.
   */
  lastError(): { message: string; at: Date } | undefined;
  drained(): Promise<void>;
  /**
   * Runs failed events of this destination's functions through its current functions and
   * loads them into it alone (absent on parquet destinations, which take no transformations).
   */
  retry?(items: readonly DestinationRetryItem[]): Promise<{ pending: readonly string[] } | undefined>;
  /**
   * Loads events again (a replay) through its current functions, at its stored offset, so its
   * position does not move; the tables merge on `id` (absent on parquet destinations).
   */
  replay?(events: readonly StoredEvent[]): Promise<{ ok: number; failed: number }>;
  /** The rows a stored event became in its tables, for `tributary trace` (SQL destinations). */
  rowsOf?(event: StoredEvent): Promise<WarehouseRow[]>;
  /**
   * Deletes a person's rows or files from what the destination wrote (a deletion request,
   * `src/governance/privacy/`); returns the rows erased. Absent when its kind cannot.
   */
  erase?(target: RowTarget): Promise<number>;
  stop(): Promise<void>;
}

/**
 * Builds the configured warehouse destinations and subscribes each to the event feed. The
 * DuckDB ones share the process's DuckDB instance (a file is open once per process): the
 * embedded warehouse file by default, another file attached under `dest_<id>`.
 */
export async function startDestinations(opts: {
  destinations: readonly DestinationConfig[];
  /**
   * The workspace and the event log's identity the destinations' offsets are stored for
   * (SQL destinations). Absent: keyed by destination alone, as before offsets had a scope.
   */
  scope?: { workspace: string; logId: string };
  /** The process's DuckDB instance (DuckDB and Parquet destinations); absent in scale-out. */
  instance?: DuckDBInstance;
  dataDir: string;
  feed: EventFeed;
  logger: Logger;
  /**
   * Where the destination metrics are registered: created on the first call with this
   * registry, reused by later ones (one call per log partition shares them).
   */
  registry: Registry;
  /** The log's end offset, for the lag gauge. */
  endOffset: () => number;
  /** Where a destination's failed events are stored. */
  warehouse: Pick<Store, 'write' | 'consumerOffset'>;
  /** The configuration file's folder: function files resolve against it. */
  baseDir: string;
  /** Environment the functions' grants read from. */
  env: Record<string, string | undefined>;
  /**
   * Appended to each destination's id to key its stored offsets, when the destinations run
   * once per log partition (called once per partition, each with its own `feed`): with `:p3`
   * the offset of destination `pg` is kept under `pg:p3`, its transformation failures'
   * offset under `transform:pg:p3`. Names, tables and the stage of failed events
   * (`destination:pg`) stay shared. Only PostgreSQL destinations take one: a DuckDB file and
   * a Parquet lake have one writer. Default none.
   */
  offsetKeySuffix?: string;
  /**
   * The gate of the embedded warehouse file's checkpoints: DuckDB destinations loading into
   * that file (no `path`) flush their appenders only while no checkpoint runs. Absent in
   * scale-out.
   */
  checkpoints?: CheckpointGate;
}): Promise<RunningDestination[]> {
  const running: RunningDestination[] = [];
  const suffix = opts.offsetKeySuffix ?? '';
  const { loaded, failures, refused, transformed, lag } = destinationMetrics(opts.registry);
  // The lag gauge reads the destinations of this call until they stop.
  const live = new Set<RunningDestination>();
  const tracked = { running: live, endOffset: opts.endOffset };
  lag.add(tracked);
  const failureStore = suffix === '' ? opts.warehouse : withConsumerSuffix(opts.warehouse, suffix);
  for (const config of opts.destinations) {
    if (!config.enabled) continue;
    const kind = destinationKind(config.type);
    // Streaming kinds (no load batches) are delivered by the delivery runner (`./delivery/`).
    if (isStreamKind(kind) || !('maxBatch' in config)) continue;
    if (suffix !== '' && !kind.capabilities.perPartition) {
      for (const d of running) await d.stop();
      throw new TributaryError('TRIB_ERR_DESTINATION_SETUP', [
        config.id,
        `a ${config.type} destination has one writer and cannot run once per log partition; use a postgres destination in the scale-out deployment`,
      ]);
    }
    let destination: WarehouseDestination;
    let transforming: TransformingDestination | undefined;
    let stages: Stage[];
    try {
      stages = await buildDestinationTransforms(config, opts.baseDir, opts.env);
    } catch (err) {
      for (const d of running) await d.stop();
      throw err;
    }
    try {
      const scope = opts.scope && {
        ...opts.scope,
        startOver: 'startOver' in config && config.startOver,
      };
      const connector = await kind.connector();
      destination = await connector.create(config, {
        instance: opts.instance,
        dataDir: opts.dataDir,
        offsetKey: config.id + suffix,
        checkpoints: opts.checkpoints,
        scope,
      });
    } catch (err) {
      for (const s of stages) await s.close?.();
      for (const d of running) await d.stop();
      throw new TributaryError('TRIB_ERR_DESTINATION_SETUP', [config.id, (err as Error).message], {
        cause: err,
      });
    }
    const inner = destination;
    // Every kind that takes transformations gets the wrapper, so a retry still reaches one whose functions were removed.
    if (kind.capabilities.transformations) {
      transforming = new TransformingDestination(destination, stages, failureStore, {
        outcome: (d, outcome, n) => transformed.inc({ destination: d, outcome }, n),
      });
      destination = transforming;
    }
    // Offsets of another log refuse the start here, with what to do; a database that does not
    // answer yet does not (the feed retries it).
    try {
      await destination.storedOffset();
    } catch (err) {
      if (
        err instanceof TributaryError &&
        (err.code === 'TRIB_ERR_DEST_FOREIGN_OFFSETS' || err.code === 'TRIB_ERR_DEST_FOREIGN_LAKE')
      ) {
        await destination.close().catch(() => undefined);
        for (const d of running) await d.stop();
        throw err;
      }
      opts.logger.warn({ err, destination: config.id }, 'destination not reachable at start; retrying');
    }
    let position = -1;
    let failing = false;
    let lastError: { message: string; at: Date } | undefined;
    // Refused events are stored before the load commits, once each: a load redone after a
    // crash skips those below this consumer's offset (as transformation failures are).
    const consumer = `load:${config.id}`;
    const storeRefused = async (failed: readonly RecordFailure[], next: number) => {
      const done = await failureStore.consumerOffset(consumer);
      const fresh = failed.filter((f) => f.event.logOffset >= done);
      if (fresh.length === 0) return;
      await failureStore.write({
        events: [],
        failed: fresh.map((f) => destinationFailure(config.id, f)),
        consumer,
        nextOffset: Math.max(done, next),
      });
    };
    const sub: FeedSubscription = opts.feed.subscribe({
      name: `destination:${config.id}`,
      from: async () => {
        position = await destination.storedOffset();
        return position;
      },
      handle: async (events, next) => {
        const result = await destination.load(events, next, { onFailed: storeRefused });
        if (result.status === 'retryable') throw result.error; // the feed retries the load
        position = next;
        loaded.inc({ destination: config.id }, events.length - result.failed.length);
        if (result.failed.length > 0) {
          refused.inc({ destination: config.id }, result.failed.length);
          opts.logger.warn(
            { destination: config.id, events: result.failed.length, reason: result.failed[0]!.reason },
            'destination refused events; they are in failed_events, the rest is loaded',
          );
        }
        if (failing) opts.logger.info({ destination: config.id }, 'destination loads again');
        failing = false;
        lastError = undefined;
      },
      maxBatch: config.maxBatch,
      intervalMs: config.interval,
      retryMs: 2_000,
      onError: (err) => {
        failing = true;
        lastError = { message: (err as Error)?.message ?? String(err), at: new Date() };
        failures.inc({ destination: config.id });
        opts.logger.error({ err, destination: config.id }, 'destination load failed; retrying');
      },
    });
    const d: RunningDestination = {
      id: config.id,
      offsetKey: config.id + suffix,
      type: config.type,
      position: () => position,
      lastError: () => lastError,
      // A failing destination catches up after it recovers; waiting for it would only stall.
      drained: () => (failing ? Promise.resolve() : sub.drained()),
      retry:
        transforming &&
        (async (items) => {
          await transforming.retry(items);
          return undefined;
        }),
      replay: transforming && ((events) => transforming.replay(events)),
      rowsOf: destination.rowsOf && ((event) => destination.rowsOf!(event)),
      erase: inner.erase && ((target) => inner.erase!(target)),
      async stop() {
        await sub.stop();
        await destination.close();
        live.delete(d);
        if (live.size === 0) lag.delete(tracked);
      },
    };
    running.push(d);
    live.add(d);
  }
  return running;
}

/** The destination metrics of one registry, created on first use. */
interface DestinationMetrics {
  loaded: Counter<'destination'>;
  failures: Counter<'destination'>;
  refused: Counter<'destination'>;
  transformed: Counter<'destination' | 'outcome'>;
  /** The running destinations of every `startDestinations` call, for the lag gauge. */
  lag: Set<{ running: ReadonlySet<RunningDestination>; endOffset: () => number }>;
}

const metricsByRegistry = new WeakMap<Registry, DestinationMetrics>();

/**
 * The metrics are created once per registry, so `startDestinations` can be called once per
 * log partition: counters add up over a destination's instances, the lag gauge sums them.
 */
function destinationMetrics(registry: Registry): DestinationMetrics {
  const known = metricsByRegistry.get(registry);
  if (known) return known;
  const registers = [registry];
  const lag: DestinationMetrics['lag'] = new Set();
  const metrics: DestinationMetrics = {
    loaded: new Counter({
      name: 'tributary_destination_events_loaded_total',
      help: 'Events loaded into a warehouse destination.',
      labelNames: ['destination'],
      registers,
    }),
    failures: new Counter({
      name: 'tributary_destination_load_failures_total',
      help: 'Loads that failed and will be retried.',
      labelNames: ['destination'],
      registers,
    }),
    refused: new Counter({
      name: 'tributary_destination_events_refused_total',
      help: 'Events a destination could not store, left out of its load and kept in failed_events.',
      labelNames: ['destination'],
      registers,
    }),
    transformed: new Counter({
      name: 'tributary_destination_transform_events_total',
      help: "Events through a destination's transformations, by outcome (passed, dropped, failed).",
      labelNames: ['destination', 'outcome'],
      registers,
    }),
    lag,
  };
  new Gauge({
    name: 'tributary_destination_lag_events',
    help: 'Log records a destination has not loaded yet (log end offset minus its position), summed over its partitions.',
    labelNames: ['destination'],
    registers,
    collect() {
      const sums = new Map<string, number>();
      for (const { running, endOffset } of lag) {
        for (const d of running) {
          const behind = Math.max(0, endOffset() - Math.max(0, d.position()));
          sums.set(d.id, (sums.get(d.id) ?? 0) + behind);
        }
      }
      this.reset();
      for (const [destination, n] of sums) this.set({ destination }, n);
    },
  });
  metricsByRegistry.set(registry, metrics);
  return metrics;
}

/**
 * The failed-event store as one partition's instance of a destination uses it: its
 * transformation failures' offset (`transform:<id>`) gets the partition's suffix, since each
 * partition has offsets of its own.
 */
function withConsumerSuffix(
  warehouse: Pick<Store, 'write' | 'consumerOffset'>,
  suffix: string,
): Pick<Store, 'write' | 'consumerOffset'> {
  return {
    write: (batch) => warehouse.write({ ...batch, consumer: batch.consumer + suffix }),
    consumerOffset: (consumer) => warehouse.consumerOffset(consumer + suffix),
  };
}
