import type { FailedRow } from '../store/store.js';

/**
 * A failure of stage `source` for `failed_events`: a record that never reached the event log
 * (so no log offset: -1), with where it came from and what was read.
 */
export function sourceFailure(
  sourceId: string,
  stream: string,
  code: string,
  reason: string,
  payload: unknown,
  location?: string,
): FailedRow {
  const now = new Date().toISOString();
  return {
    logOffset: -1,
    sourceId,
    messageId: `source:${stream}${location ? `:${location}` : ''}`.slice(0, 300),
    stage: 'source',
    code,
    reason: location ? `${location}: ${reason}` : reason,
    receivedAt: now,
    json: JSON.stringify({ stream, ...(location ? { location } : {}), payload }),
  };
}
