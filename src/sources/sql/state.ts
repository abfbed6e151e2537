/**
 * The state a database source saves per stream (opaque to the runner). Versioned, and
 * checked against the stream's configuration when read back: a state saved for another
 * cursor or key is refused, not silently misread.
 */
import { z } from 'zod';
import { SourceError } from './errors.js';

const Mark = z.object({ t: z.number(), max: z.string().nullable() });
const Lower = z.object({ value: z.string().nullable(), t: z.number().nullable() });

/** Where a sync stopped mid-way: the rows after `after` (cursor then key, as text) are left. */
const InProgress = z.object({
  /** The bound the next sync takes, computed when this one started. */
  next: Lower,
  phase: z.enum(['null', 'cursor']),
  after: z.array(z.string()),
});

export const IncrementalState = z.object({
  v: z.literal(1),
  mode: z.literal('incremental'),
  cursorField: z.string(),
  primaryKey: z.array(z.string()),
  /** Rows whose cursor is at or past it (and rows with a NULL cursor) are read by the next sync. */
  lower: Lower,
  marks: z.array(Mark),
  sync: InProgress.optional(),
});
export type IncrementalState = z.infer<typeof IncrementalState>;

export const FullRefreshState = z.object({
  v: z.literal(1),
  mode: z.literal('full_refresh'),
  primaryKey: z.array(z.string()),
  /** Present while a full refresh is under way: when it started and the key it reached. */
  sync: z.object({ startedAt: z.string(), after: z.array(z.string()) }).optional(),
});
export type FullRefreshState = z.infer<typeof FullRefreshState>;

/** JSON has no -Infinity: the start of time is saved as null. */
export function encodeT(t: number): number | null {
  return Number.isFinite(t) ? t : null;
}
export function decodeT(t: number | null): number {
  return t ?? Number.NEGATIVE_INFINITY;
}

export function parseState<T>(
  schema: z.ZodType<T>,
  stream: string,
  raw: unknown,
  check: (s: T) => string | undefined,
): T | undefined {
  if (raw === undefined || raw === null) return undefined;
  const parsed = schema.safeParse(raw);
  if (!parsed.success)
    throw new SourceError('TRIB_ERR_SOURCE_STATE_INVALID', [stream, parsed.error.issues[0]?.message ?? '']);
  const problem = check(parsed.data);
  if (problem !== undefined) throw new SourceError('TRIB_ERR_SOURCE_STATE_INVALID', [stream, problem]);
  return parsed.data;
}

export function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}
