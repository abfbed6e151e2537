import type { ErrorCode } from '../errors.js';
import { storableText, toStorableTree } from '../spec/well-formed.js';
import type { EventRow, FailedRow, RefusedRow } from './store.js';

/**
 * Values JavaScript holds but storage engines refuse, made storable, and the search for the
 * rows an engine refused. Shared by the adapters of the `Store` port and the loader.
 */

/** The stable code of an event the engine refused to store (stage `load`). */
export const UNSTORABLE: ErrorCode = 'TRIB_ERR_LOAD_UNSTORABLE';

/** Longest engine message kept as a failed event's reason. */
const REASON_MAX = 500;

/**
 * JSON text any engine takes as a failed event's payload: the value with lone surrogates and
 * U+0000 (PostgreSQL's `jsonb` refuses it) replaced by U+FFFD; text that is not JSON at all
 * becomes a JSON string holding it.
 */
export function storablePayload(json: string): string {
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch {
    return JSON.stringify(storableText(json));
  }
  return JSON.stringify(toStorableTree(value)) ?? 'null';
}

/** A failed row every engine takes: its payload and texts made storable. */
export function storableFailedRow(f: FailedRow): FailedRow {
  return {
    ...f,
    sourceId: storableText(f.sourceId),
    messageId: storableText(f.messageId),
    stage: storableText(f.stage),
    code: storableText(f.code),
    reason: storableText(f.reason),
    json: storablePayload(f.json),
  };
}

/** The failed row of an event the engine refused, with the engine's reason. */
export function refusedFailedRow(e: EventRow, reason: string): FailedRow {
  const at = new Date(e.receivedAt);
  return storableFailedRow({
    logOffset: e.logOffset,
    sourceId: e.sourceId,
    messageId: e.messageId,
    stage: 'load',
    code: UNSTORABLE,
    reason: `the warehouse refused the event: ${reason.length > REASON_MAX ? `${reason.slice(0, REASON_MAX)}…` : reason}`,
    receivedAt: Number.isNaN(at.getTime()) ? new Date(0).toISOString() : at.toISOString(),
    json: e.json,
  });
}

/**
 * Finds the rows an engine refuses by splitting the batch: `attempt` tries a slice (and, for
 * adapters without savepoints, undoes it), throwing when the engine refuses it. A slice that
 * fails with a data error (`isDataError`) is halved until the single rows are found; any other
 * error (disk, connection) is thrown, so the caller retries the batch. `known` says the whole
 * batch was refused already, which saves one attempt. A batch with k bad rows in n costs about
 * 2k·log2(n) attempts, paid only when a batch is refused.
 *
 * @returns the refused rows' positions with the engine's message, in order.
 */
export async function findRefused<T>(
  rows: readonly T[],
  attempt: (slice: readonly T[], offset: number) => Promise<void>,
  isDataError: (err: unknown) => boolean,
  known = false,
): Promise<RefusedRow[]> {
  const refused: RefusedRow[] = [];
  /** The engine's refusal of rows [from, to), or undefined when it took them. */
  const refusal = async (from: number, to: number): Promise<{ error: unknown } | undefined> => {
    try {
      await attempt(rows.slice(from, to), from);
      return undefined;
    } catch (err) {
      if (!isDataError(err)) throw err;
      return { error: err };
    }
  };
  const visit = async (from: number, to: number, failed: boolean): Promise<void> => {
    if (from >= to) return;
    // A slice known to be refused is split without trying it again; a single row is tried
    // alone even then, for its own message.
    const outcome = failed && to - from > 1 ? { error: undefined } : await refusal(from, to);
    if (outcome === undefined) return;
    if (to - from === 1) {
      refused.push({ index: from, reason: errorMessage(outcome.error) });
      return;
    }
    const mid = from + Math.ceil((to - from) / 2);
    await visit(from, mid, false);
    await visit(mid, to, false);
  };
  await visit(0, rows.length, known);
  return refused;
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
