import type { RawEvent } from '../event-log.js';

/**
 * One record's envelope as a line of a group commit: a JSON object of its fields other than
 * the event. JSON text never holds a raw newline (JSON.stringify escapes it), so DuckDB
 * splits the envelopes, and the events (each JSON text too), at newlines safely. The event
 * JSON travels in a string of its own and is stored as it is, never parsed again.
 */
export function encodeEnvelope(r: RawEvent): string {
  let env = `{"source_id":${JSON.stringify(r.sourceId)},"message_id":${JSON.stringify(r.messageId)},"received_at":${r.receivedAt},"status":"${r.status}"`;
  if (r.code !== undefined) env += `,"code":${JSON.stringify(r.code)}`;
  if (r.reason !== undefined) env += `,"reason":${JSON.stringify(r.reason)}`;
  return `${env}}`;
}
