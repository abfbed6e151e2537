import type { Delivered } from './event-log.js';

/** Which records of the raw archive a replay reads. */
export interface ArchiveRange {
  sourceId: string;
  /** Receipt time, epoch ms: `fromMs <= receivedAt < toMs`. */
  fromMs: number;
  toMs: number;
  /** Only records at or past this log offset (to page through a range). Default 0. */
  fromOffset?: number;
  /** Most records returned. */
  limit: number;
}

/**
 * The event log read as an archive (lineage and replay), beside its consumers: records by
 * messageId and by receipt time. The DuckDB log implements it over its segments (the
 * `raw_events` view's tables); the NATS log does not yet.
 */
export interface RawArchive {
  /** Every record of the log with this messageId (any source, accepted or rejected), in log order. */
  recordsOf(messageId: string): Promise<Delivered[]>;
  /** The records of a source received in a time range, in log order, at most `limit`. */
  readRange(range: ArchiveRange): Promise<Delivered[]>;
}
