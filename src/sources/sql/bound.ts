/**
 * Where the next incremental sync of a stream may start: the safe lower bound.
 *
 * A sync reads every row whose cursor is at or past its lower bound, in a snapshot. A row
 * still being written (its transaction open at the snapshot) is invisible to it and may
 * commit later with a cursor value below anything the sync read: the next sync must not
 * start past it. So the next bound is never the largest cursor read; it is a *mark*: before
 * each sync the connector records `max(cursor)` and then the server clock (`t`). A
 * transaction that starts after `t` writes cursor values at or past that max (cursor values
 * grow as they are assigned: `now()`, a sequence, an auto-increment, a server clock), so the
 * mark bounds what it can write. Transactions open when the sync starts are listed with their
 * start times; each is bounded by the newest mark taken before it started (less `clockSkew`,
 * for writers whose clock or statement starts a little before their transaction). The next
 * lower bound is the oldest such mark; a transaction older than every mark kept (or whose
 * start the connector may not see) holds the bound where it is. See docs/sources-databases.md.
 */

/** `max(cursor)` (the server's text, or null for none) and the server clock just after it. */
export interface Mark {
  /** Server clock, epoch seconds, read after `max` was. */
  t: number;
  /** The greatest cursor value then, as the server writes it; null when the stream had none. */
  max: string | null;
}

/** The lower bound of a sync: rows with a cursor at or past `value` are read (null: every row). */
export interface LowerBound {
  value: string | null;
  /** Clock of the mark it came from (-Infinity: the start). */
  t: number;
}

export const START: LowerBound = { value: null, t: Number.NEGATIVE_INFINITY };

/** Most marks a stream's state keeps: a transaction older than the oldest holds the bound. */
export const MAX_MARKS = 24;

/**
 * The lower bound the sync after this one may use.
 * @param current the bound this sync reads from (safe: by induction)
 * @param marks marks, oldest first, the newest taken by this sync before `open` was listed
 * @param open start times (epoch seconds) of the transactions open before this sync's
 *   snapshot, other than its own; null for one whose start the connector cannot see
 * @param skewSeconds how long before its transaction a writer may assign a cursor value
 */
export function nextLowerBound(
  current: LowerBound,
  marks: readonly Mark[],
  open: readonly (number | null)[],
  skewSeconds: number,
): LowerBound {
  let limit = marks.length - 1;
  for (const start of open) {
    if (start === null) return current;
    // The newest mark taken strictly before the transaction started (minus the skew).
    let j = limit;
    while (j >= 0 && !(marks[j]!.t < start - skewSeconds)) j--;
    if (j < 0) return current;
    limit = j;
  }
  if (limit < 0) return current;
  const mark = marks[limit]!;
  // Both bounds are safe; the newer mark reads less again.
  return mark.t >= current.t ? { value: mark.max, t: mark.t } : current;
}

/** The marks to keep: the newest {@link MAX_MARKS}. */
export function keepMarks(marks: readonly Mark[], added: Mark): Mark[] {
  const out = [...marks, added];
  return out.slice(Math.max(0, out.length - MAX_MARKS));
}
