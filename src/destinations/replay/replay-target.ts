import type { DestinationConfig } from '../../config/destinations-schema.js';
import type { Store, StoredEvent } from '../../store/store.js';
import type { DestinationContext } from '../connector.js';
import type { WarehouseDestination } from '../destination.js';
import { buildDestinationTransforms, TransformingDestination } from '../destination-transforms.js';
import { destinationKind, isStreamKind } from '../registry.js';

/** What a delivery of replayed events did: events delivered, and events that failed (stored in `failed_events`). */
export interface ReplayDelivery {
  ok: number;
  failed: number;
}

/**
 * Where a replay delivers: a destination that takes processed events again with their
 * messageIds and stores none twice. Warehouse destinations merge on `id`
 * ({@link warehouseReplayTarget}); a streaming destination plugs in with its delivery
 * runner's queue, whose receivers dedup on the idempotency key (the messageId).
 */
export interface ReplayTarget {
  readonly id: string;
  /**
   * Delivers the events (in log order), with their messageIds. Throws when nothing could be
   * delivered and the same call may be tried again (the replay stops, its run marked failed).
   */
  deliver(events: readonly StoredEvent[]): Promise<ReplayDelivery>;
}

/**
 * A warehouse destination as a replay target: events are loaded through its current
 * functions at its stored offset (its position does not move), as a failed-event retry is,
 * queued behind the feed's loads; the Segment tables merge on `id`, so a messageId already
 * loaded adds no row.
 */
export function warehouseReplayTarget(d: {
  id: string;
  replay?: (events: readonly StoredEvent[]) => Promise<ReplayDelivery>;
}): ReplayTarget | undefined {
  const replay = d.replay;
  if (!replay) return undefined;
  return { id: d.id, deliver: (events) => replay(events) };
}

/** A replay target the replay opened itself, closed when the run ends. */
export interface OpenedReplayTarget extends ReplayTarget {
  close(): Promise<void>;
}

/**
 * A configured warehouse destination that is not running (`enabled: false`), opened for one
 * replay: a new tool backfilled with exactly the replayed range before it is switched on.
 * Its events go through its functions like a running one's, at its stored offset, so when it
 * is enabled later its feed loads the rest of `events` from there (merging on `id`).
 */
export async function openWarehouseReplayTarget(
  config: DestinationConfig,
  ctx: DestinationContext & {
    store: Pick<Store, 'write' | 'consumerOffset'>;
    baseDir: string;
    env: Record<string, string | undefined>;
  },
): Promise<OpenedReplayTarget | undefined> {
  const kind = destinationKind(config.type);
  // Streaming kinds deliver through their queues, not here; the lake takes no replay.
  if (isStreamKind(kind) || !kind.capabilities.transformations) return undefined;
  const stages = await buildDestinationTransforms(config, ctx.baseDir, ctx.env);
  let inner: WarehouseDestination;
  try {
    inner = await (await kind.connector()).create(config, ctx);
  } catch (err) {
    for (const s of stages) await s.close();
    throw err;
  }
  const d = new TransformingDestination(inner, stages, ctx.store);
  return { id: config.id, deliver: (events) => d.replay(events), close: () => d.close() };
}
