import { TributaryError } from '../errors.js';
import { findRefused as findRefusedRows } from '../store/storable.js';
import type { StoredEvent } from '../store/store.js';
import type { LoadOptions, LoadResult, RecordFailure } from './destination.js';

/** How a destination tries a load, for {@link loadIsolated}. */
export interface IsolatedLoad {
  /** Loads `events` and the offset; with `commit` false, rolls everything back (a probe). */
  attempt(events: readonly StoredEvent[], commit: boolean): Promise<void>;
  /** Whether an error of `attempt` is the engine refusing a value (rather than failing to run). */
  refusesData(err: unknown): boolean;
}

/** Rounds of splitting before a load that keeps being refused is given up as retryable. */
const MAX_ROUNDS = 3;

/** Longest engine message kept as a failure's reason. */
const MAX_REASON = 1000;

/**
 * A load that one bad event cannot stop. The whole load is tried first (the usual case
 * costs nothing more). When the engine refuses it for a data reason, the load is split in
 * halves, each tried and rolled back, down to the single events it refuses; those are
 * reported (`options.onFailed`, before anything commits) and the others committed with the
 * offset, in one transaction as before. Probing rather than committing the halves keeps one
 * commit per load, so the offset, the rows and the failures' store never disagree after a
 * crash. Any other error (connection, timeout) stores nothing and comes back `retryable`.
 *
 * A refused event costs about 2·log2(n) probes of the load's size halving; a load whose
 * halves are each taken but not together (rare: two events that only conflict jointly) is
 * tried `MAX_ROUNDS` times and then reported retryable.
 */
export async function loadIsolated(
  destination: string,
  events: readonly StoredEvent[],
  nextOffset: number,
  options: LoadOptions | undefined,
  io: IsolatedLoad,
): Promise<LoadResult> {
  try {
    await io.attempt(events, true);
    return { status: 'ok', failed: [] };
  } catch (err) {
    if (!io.refusesData(err)) return retryable(err);
  }
  const failed: RecordFailure[] = [];
  let good = events;
  try {
    for (let round = 0; ; round++) {
      const refused = await findRefused(destination, good, round === 0, io);
      if (refused.length === 0) break;
      failed.push(...refused);
      const out = new Set(refused.map((f) => f.event));
      good = good.filter((e) => !out.has(e));
      if (round + 1 >= MAX_ROUNDS) {
        await io.attempt(good, false); // refused again: nothing more can be learnt
        break;
      }
    }
    if (failed.length > 0) await options?.onFailed?.(failed, nextOffset);
    await io.attempt(good, true);
    return { status: 'ok', failed };
  } catch (err) {
    return retryable(err);
  }
}

/**
 * The events of `events` the engine refuses, each alone, found by the same halving as the
 * loader's ({@link findRefusedRows}, probes rolled back); `known`: `events` itself was just refused.
 */
async function findRefused(
  destination: string,
  events: readonly StoredEvent[],
  known: boolean,
  io: IsolatedLoad,
): Promise<RecordFailure[]> {
  const refused = await findRefusedRows(
    events,
    (slice) => io.attempt(slice, false),
    (err) => io.refusesData(err),
    known,
  );
  return refused.map(({ index, reason }) => ({
    event: events[index]!,
    code: 'TRIB_ERR_DEST_RECORD_REFUSED',
    reason: new TributaryError('TRIB_ERR_DEST_RECORD_REFUSED', [destination, reason.slice(0, MAX_REASON)])
      .message,
  }));
}

function retryable(err: unknown): LoadResult {
  return { status: 'retryable', error: err instanceof Error ? err : new Error(String(err)) };
}
