import type { StoredEvent } from '../../store/store.js';

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
