import { sqlString } from '../platform/duckdb/duckdb-sql.js';
import { storableText } from '../spec/well-formed.js';
import type { DeliveryAttemptRow, QueryResult, ReplayRunRow, Store, StoredEvent } from './store.js';

/**
 * The lineage reads and writes of the store port shared by both adapters (`delivery_attempts`,
 * `replay_runs`, events by id); each adapter writes attempts its own fastest way.
 */
export type LineageQueries = Pick<
  Store,
  'eventsOf' | 'attemptsOf' | 'purgeAttempts' | 'saveReplayRun' | 'replayRuns'
>;

/**
 * The lineage tables, in SQL DuckDB and PostgreSQL read alike (`text` is an alias of
 * VARCHAR in DuckDB). The PostgreSQL store runs them in its schema.
 */
export const LINEAGE_SCHEMA_SQL = [
  `CREATE TABLE IF NOT EXISTS delivery_attempts (
    destination text NOT NULL,
    message_id text NOT NULL,
    attempt integer NOT NULL,
    "at" timestamptz NOT NULL,
    status text NOT NULL,
    latency_ms double precision NOT NULL,
    detail text)`,
  'CREATE INDEX IF NOT EXISTS delivery_attempts_message ON delivery_attempts (message_id)',
  `CREATE TABLE IF NOT EXISTS replay_runs (
    id text PRIMARY KEY,
    requested_by text NOT NULL,
    started_at timestamptz NOT NULL,
    finished_at timestamptz,
    source_id text NOT NULL,
    range_from timestamptz NOT NULL,
    range_to timestamptz NOT NULL,
    destinations text NOT NULL,
    dry_run boolean NOT NULL,
    status text NOT NULL,
    records_read bigint NOT NULL,
    records_passed bigint NOT NULL,
    records_failed bigint NOT NULL,
    records_delivered bigint NOT NULL,
    error text)`,
];

/** Text PostgreSQL can hold (no U+0000) and DuckDB too. */
function text(v: string): string {
  return sqlString(v.includes('\u0000') ? v.replaceAll('\u0000', '\ufffd') : v);
}

function ts(d: Date): string {
  return `CAST(${sqlString(d.toISOString())} AS TIMESTAMPTZ)`;
}

const ATTEMPT_STATUSES = new Set(['ok', 'retryable', 'failed']);

/** An attempt's values as both engines store them: text without U+0000, a known status, a finite latency, detail cut at 2,000 characters. */
export function attemptRow(a: DeliveryAttemptRow): {
  destination: string;
  messageId: string;
  attempt: number;
  at: string;
  status: string;
  latencyMs: number;
  detail: string | null;
} {
  const at = Number.isNaN(a.at.getTime()) ? new Date() : a.at;
  return {
    destination: storableText(a.destination),
    messageId: storableText(a.messageId),
    attempt: Math.trunc(a.attempt) | 0,
    at: at.toISOString(),
    status: ATTEMPT_STATUSES.has(a.status) ? a.status : 'failed',
    latencyMs: Number.isFinite(a.latencyMs) ? a.latencyMs : 0,
    detail: a.detail === undefined ? null : storableText(a.detail.slice(0, 2_000)),
  };
}

/**
 * The lineage queries over an adapter's own trusted query (`run`), values as quoted literals.
 * `ts` renders timestamps as text the same way in both engines (UTC, ISO-8601).
 */
export function lineageQueries(run: (sql: string) => Promise<QueryResult>): LineageQueries {
  return {
    async eventsOf(messageId, offsets = []) {
      const at = offsets.filter(Number.isSafeInteger).slice(0, 1000);
      const r = await run(
        `SELECT log_offset, source_id, message_id, epoch_ms(received_at) AS received_ms, CAST(payload AS VARCHAR) AS payload
         FROM events WHERE message_id = ${text(messageId)}${at.length > 0 ? ` OR log_offset IN (${at.join(', ')})` : ''}
         ORDER BY log_offset, message_id LIMIT 1000`,
      );
      return r.rows.map(
        (row): StoredEvent => ({
          logOffset: Number(row.log_offset),
          sourceId: String(row.source_id),
          messageId: String(row.message_id),
          receivedAt: Number(row.received_ms),
          json: String(row.payload),
        }),
      );
    },

    async attemptsOf(messageId) {
      const r = await run(
        `SELECT destination, message_id, attempt, epoch_ms("at") AS at_ms, status, latency_ms, detail
         FROM delivery_attempts WHERE message_id = ${text(messageId)} ORDER BY "at", destination, attempt LIMIT 10000`,
      );
      return r.rows.map(
        (row): DeliveryAttemptRow => ({
          destination: String(row.destination),
          messageId: String(row.message_id),
          attempt: Number(row.attempt),
          at: new Date(Number(row.at_ms)),
          status: String(row.status) as DeliveryAttemptRow['status'],
          latencyMs: Number(row.latency_ms),
          ...(row.detail === null || row.detail === undefined ? {} : { detail: String(row.detail) }),
        }),
      );
    },

    async purgeAttempts(beforeMs) {
      const r = await run(
        `DELETE FROM delivery_attempts WHERE "at" < ${ts(new Date(beforeMs))} RETURNING 1 AS gone`,
      );
      return r.rows.length;
    },

    async saveReplayRun(x) {
      const cols = `(${text(x.id)}, ${text(x.requestedBy)}, ${ts(x.startedAt)}, ${x.finishedAt ? ts(x.finishedAt) : 'NULL'},
        ${text(x.sourceId)}, ${ts(x.from)}, ${ts(x.to)}, ${text(JSON.stringify(x.destinations))}, ${x.dryRun},
        ${text(x.status)}, ${x.read}, ${x.passed}, ${x.failed}, ${x.delivered}, ${x.error === undefined ? 'NULL' : text(x.error)})`;
      await run(
        `INSERT INTO replay_runs VALUES ${cols}
         ON CONFLICT (id) DO UPDATE SET finished_at = EXCLUDED.finished_at, status = EXCLUDED.status,
           records_read = EXCLUDED.records_read, records_passed = EXCLUDED.records_passed,
           records_failed = EXCLUDED.records_failed, records_delivered = EXCLUDED.records_delivered,
           error = EXCLUDED.error`,
      );
    },

    async replayRuns(options) {
      const limit = Math.min(Math.max(1, Math.trunc(options.limit ?? 20)), 1000);
      const r = await run(
        `SELECT id, requested_by, epoch_ms(started_at) AS started_ms, epoch_ms(finished_at) AS finished_ms, source_id,
                epoch_ms(range_from) AS from_ms, epoch_ms(range_to) AS to_ms, destinations, dry_run, status,
                records_read, records_passed, records_failed, records_delivered, error
         FROM replay_runs ${options.id === undefined ? '' : `WHERE id = ${text(options.id)}`}
         ORDER BY started_at DESC LIMIT ${limit}`,
      );
      return r.rows.map(
        (row): ReplayRunRow => ({
          id: String(row.id),
          requestedBy: String(row.requested_by),
          startedAt: new Date(Number(row.started_ms)),
          ...(row.finished_ms === null || row.finished_ms === undefined
            ? {}
            : { finishedAt: new Date(Number(row.finished_ms)) }),
          sourceId: String(row.source_id),
          from: new Date(Number(row.from_ms)),
          to: new Date(Number(row.to_ms)),
          destinations: JSON.parse(String(row.destinations)) as string[],
          dryRun: row.dry_run === true || row.dry_run === 'true',
          status: String(row.status) as ReplayRunRow['status'],
          read: Number(row.records_read),
          passed: Number(row.records_passed),
          failed: Number(row.records_failed),
          delivered: Number(row.records_delivered),
          ...(row.error === null || row.error === undefined ? {} : { error: String(row.error) }),
        }),
      );
    },
  };
}
