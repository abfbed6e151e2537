import type { Delivered, RawEvent } from '../event-log.js';

/**
 * One record as a line of a log row: `<envelope JSON>\t<event JSON>`. JSON text never
 * holds a raw tab or newline (JSON.stringify escapes both), so the line splits safely,
 * and the event JSON is carried through untouched, never parsed twice.
 */
export function encodeRecord(r: RawEvent): string {
  let env = `{"source_id":${JSON.stringify(r.sourceId)},"message_id":${JSON.stringify(r.messageId)},"received_at":${r.receivedAt},"status":"${r.status}"`;
  if (r.code !== undefined) env += `,"code":${JSON.stringify(r.code)}`;
  if (r.reason !== undefined) env += `,"reason":${JSON.stringify(r.reason)}`;
  return `${env}}\t${r.json}`;
}

export function decodeEntry(line: string, offset: number): Delivered {
  const tab = line.indexOf('\t');
  const env = JSON.parse(line.slice(0, tab)) as {
    source_id: string;
    message_id: string;
    received_at: number;
    status: 'accepted' | 'rejected';
    code?: string;
    reason?: string;
  };
  const d: Delivered = {
    offset,
    sourceId: env.source_id,
    messageId: env.message_id,
    receivedAt: env.received_at,
    status: env.status,
    json: line.slice(tab + 1),
  };
  if (env.code !== undefined) d.code = env.code;
  if (env.reason !== undefined) d.reason = env.reason;
  return d;
}
