import { sqlString } from '../platform/duckdb/duckdb-sql.js';
import type {
  FailedDetailRow,
  FailedFilter,
  FailedPayload,
  FailedSummary,
  QueryResult,
  Store,
} from './store.js';

/** The typed reads and updates of `failed_events` the store port offers. */
export type FailedQueries = Pick<
  Store,
  'listFailed' | 'failedById' | 'failedToRetry' | 'markRetried' | 'retriesOf'
>;

/**
 * The `failed_events` queries of both adapters, as SQL DuckDB and PostgreSQL read alike (the
 * PostgreSQL store runs it with its schema on the search path and `epoch_ms` defined). Values
 * enter as quoted literals; `run` is the adapter's own trusted query.
 */
export function failedQueries(run: (sql: string) => Promise<QueryResult>): FailedQueries {
  return {
    async listFailed(filter) {
      const limit = Math.min(Math.max(1, Math.trunc(filter.limit ?? 100)), 10_000);
      const r = await run(
        `SELECT id, source_id, message_id, stage, code, reason, CAST(received_at AS VARCHAR) AS received_at,
                CAST(failed_at AS VARCHAR) AS failed_at, retry_state, retry_of
         FROM failed_events WHERE ${where(filter)} ORDER BY log_offset DESC LIMIT ${limit}`,
      );
      return r.rows as unknown as FailedSummary[];
    },

    async failedById(id) {
      const r = await run(
        `SELECT id, log_offset, source_id, message_id, stage, code, reason, CAST(received_at AS VARCHAR) AS received_at,
                CAST(failed_at AS VARCHAR) AS failed_at, retry_state, retry_of, CAST(retried_at AS VARCHAR) AS retried_at,
                CAST(payload AS VARCHAR) AS payload, CAST(logs AS VARCHAR) AS logs
         FROM failed_events WHERE id = ${sqlString(id)}`,
      );
      return r.rows[0] as unknown as FailedDetailRow | undefined;
    },

    async failedToRetry(filter) {
      const limit = Math.min(Math.max(1, Math.trunc(filter.limit ?? 10_000)), 100_000);
      const r = await run(
        `SELECT id, log_offset, source_id, message_id, stage, code, epoch_ms(received_at) AS received_ms, CAST(payload AS VARCHAR) AS payload
         FROM failed_events WHERE ${where({ ...filter, includeRetried: false })}
         ORDER BY log_offset LIMIT ${limit}`,
      );
      return r.rows.map(
        (row): FailedPayload => ({
          id: String(row.id),
          logOffset: Number(row.log_offset),
          sourceId: String(row.source_id),
          messageId: typeof row.message_id === 'string' ? row.message_id : null,
          stage: String(row.stage),
          code: String(row.code),
          receivedAt: Number(row.received_ms),
          json: String(row.payload),
        }),
      );
    },

    async markRetried(ids) {
      if (ids.length === 0) return;
      await run(
        `UPDATE failed_events SET retry_state = 'retried', retried_at = now() WHERE id IN (${ids.map(sqlString).join(', ')})`,
      );
    },

    async retriesOf(ids) {
      if (ids.length === 0) return new Map();
      const r = await run(
        `SELECT retry_of, id FROM failed_events WHERE retry_of IN (${ids.map(sqlString).join(', ')})`,
      );
      return new Map(r.rows.map((row) => [String(row.retry_of), String(row.id)]));
    },
  };
}

function where(f: FailedFilter): string {
  const c: string[] = ['true'];
  if (f.ids?.length) c.push(`id IN (${f.ids.map(sqlString).join(', ')})`);
  if (f.messageId !== undefined) c.push(`message_id = ${sqlString(f.messageId)}`);
  if (f.source) c.push(`source_id = ${sqlString(f.source)}`);
  if (f.stage) c.push(`stage = ${sqlString(f.stage)}`);
  if (f.code) c.push(`code = ${sqlString(f.code)}`);
  if (!f.includeRetried) c.push(`retry_state = 'new'`);
  return c.join(' AND ');
}
