import type { RawEvent } from '../event-log.js';

/**
 * One record as a line of a group commit: `<envelope JSON>\t<event JSON>`. JSON text never
 * holds a raw tab or newline (JSON.stringify escapes both), so DuckDB splits the lines and
 * the fields safely, and the event JSON is stored as it is, never parsed again.
 */
export function encodeRecord(r: RawEvent): string {
  let env = `{"source_id":${JSON.stringify(r.sourceId)},"message_id":${JSON.stringify(r.messageId)},"received_at":${r.receivedAt},"status":"${r.status}"`;
  if (r.code !== undefined) env += `,"code":${JSON.stringify(r.code)}`;
  if (r.reason !== undefined) env += `,"reason":${JSON.stringify(r.reason)}`;
  return `${env}}\t${r.json}`;
}
