import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import { TributaryError } from '../../errors.js';
import type { ErasureTarget } from '../../governance/privacy/erasure.js';
import { advisoryXactLock } from '../../platform/postgres/advisory-locks.js';
import { pgIdent } from '../../platform/postgres/pg-sql.js';
import type { ConfigVersionStore } from '../config-versions.js';
import {
  type DeliveryBacklog,
  type DeliveryEnqueue,
  type DeliveryJob,
  type DeliveryQueue,
  type DeliverySettlement,
  JOB_COLUMNS,
  jobFromRow,
} from '../delivery-queue.js';
import { type FailedQueries, failedQueries } from '../failed-queries.js';
import { attemptRow, LINEAGE_SCHEMA_SQL, type LineageQueries, lineageQueries } from '../lineage-queries.js';
import { findRefused, refusedFailedRow, storableFailedRow } from '../storable.js';
import type {
  DeliveryAttemptRow,
  EventRow,
  FailedRow,
  QueryResult,
  Store,
  StoreBatch,
  StoredEvent,
  WriteReport,
} from '../store.js';
import { eventKey } from '../store.js';
import { configVersionsSchemaSql, PostgresConfigVersions } from './postgres-config-versions.js';

export interface PostgresStoreOptions {
  /** Connection string, e.g. `postgres://tributary@db:5432/tributary`. */
  url: string;
  /** Schema of the tables. Default `tributary`. */
  schema?: string;
  /** Most connections of the pool (shared with the identity store). Default 10. */
  maxConnections?: number;
}

/** pg's type id of `bigint`, whose values it hands over as strings. */
const INT8 = 20;

/** Keys per page when streaming the dedupe index. */
const KEYS_PAGE = 20_000;

function schemaSql(s: string): string[] {
  const t = (name: string) => `${s}.${name}`;
  return [
    `CREATE SCHEMA IF NOT EXISTS ${s}`,
    // Same columns as DuckDB's `events`, plus the log partition the row came from.
    `CREATE TABLE IF NOT EXISTS ${t('events')} (
      message_id text NOT NULL,
      source_id text NOT NULL,
      type text NOT NULL,
      event text,
      user_id text,
      anonymous_id text,
      "timestamp" timestamptz NOT NULL,
      received_at timestamptz NOT NULL,
      log_offset bigint NOT NULL,
      payload jsonb NOT NULL,
      log_partition integer NOT NULL DEFAULT 0)`,
    `CREATE INDEX IF NOT EXISTS events_partition_offset ON ${t('events')} (log_partition, log_offset)`,
    `CREATE TABLE IF NOT EXISTS ${t('failed_events')} (
      log_offset bigint NOT NULL,
      source_id text NOT NULL,
      message_id text,
      stage text NOT NULL,
      code text NOT NULL,
      reason text NOT NULL,
      received_at timestamptz NOT NULL,
      payload jsonb NOT NULL,
      id text PRIMARY KEY,
      failed_at timestamptz NOT NULL,
      logs jsonb,
      retry_state text NOT NULL DEFAULT 'new',
      retried_at timestamptz,
      retry_of text,
      log_partition integer NOT NULL DEFAULT 0)`,
    `CREATE INDEX IF NOT EXISTS failed_events_retry_of ON ${t('failed_events')} (retry_of)`,
    `CREATE TABLE IF NOT EXISTS ${t('consumer_offsets')} (
      consumer text PRIMARY KEY,
      next_offset bigint NOT NULL,
      updated_at timestamptz NOT NULL DEFAULT now())`,
    // "C" collation: the keys are compared, never sorted for people, and byte order is faster.
    `CREATE TABLE IF NOT EXISTS ${t('event_keys')} (
      source_id text COLLATE "C" NOT NULL,
      message_id text COLLATE "C" NOT NULL,
      received_at timestamptz NOT NULL,
      PRIMARY KEY (source_id, message_id))`,
    `CREATE INDEX IF NOT EXISTS event_keys_received_at ON ${t('event_keys')} (received_at)`,
    // The streaming destinations' queue (../delivery-queue.ts); times in epoch milliseconds.
    `CREATE TABLE IF NOT EXISTS ${t('delivery_queue')} (
      seq bigserial PRIMARY KEY,
      queue text NOT NULL,
      message_key text NOT NULL,
      order_key text COLLATE "C" NOT NULL,
      op text NOT NULL,
      payload text NOT NULL,
      log_offset bigint NOT NULL,
      source_id text NOT NULL,
      received_at bigint NOT NULL,
      enqueued_at bigint NOT NULL,
      attempts integer NOT NULL DEFAULT 0,
      not_before bigint NOT NULL,
      last_error text,
      retry_of text)`,
    `CREATE INDEX IF NOT EXISTS delivery_queue_order ON ${t('delivery_queue')} (queue, order_key, seq)`,
    // DuckDB's function of that name, so the failed-event store's SQL runs here unchanged.
    `CREATE OR REPLACE FUNCTION ${t('epoch_ms')}(timestamptz) RETURNS bigint
      LANGUAGE sql IMMUTABLE PARALLEL SAFE AS 'SELECT floor(extract(epoch FROM $1) * 1000)::bigint'`,
    // The lineage tables, created in the schema (the statements name no schema).
    `SET LOCAL search_path TO ${s}`,
    ...LINEAGE_SCHEMA_SQL,
    'CREATE INDEX IF NOT EXISTS delivery_attempts_at ON delivery_attempts ("at")',
  ];
}

/**
 * Loads the staged rows: each key goes into `event_keys` once, and only the rows whose key
 * was new go into `events` (with the columns derived from the JSON, as DuckDB's loader does).
 * Returns the positions of the rows left out.
 */
function loadSql(s: string): string {
  return `
  WITH k AS (
    INSERT INTO ${s}.event_keys (source_id, message_id, received_at)
    SELECT source_id, message_id, to_timestamp(received_ms / 1000.0) FROM pg_temp._stage_events
    ON CONFLICT DO NOTHING RETURNING source_id, message_id),
  i AS (
    INSERT INTO ${s}.events
    SELECT message_id, source_id, payload->>'type',
           coalesce(payload->>'event', CASE WHEN payload->>'type' IN ('page', 'screen')
                                            THEN coalesce(payload->>'name', payload->'properties'->>'name') END),
           payload->>'userId', payload->>'anonymousId',
           coalesce((payload->>'timestamp')::timestamptz, to_timestamp(received_ms / 1000.0)),
           coalesce((payload->>'receivedAt')::timestamptz, to_timestamp(received_ms / 1000.0)),
           log_offset, payload, $1
    FROM pg_temp._stage_events s JOIN k USING (source_id, message_id)
    ORDER BY s.n)
  SELECT s.n FROM pg_temp._stage_events s LEFT JOIN k USING (source_id, message_id) WHERE k.source_id IS NULL`;
}

/**
 * State of the scale-out deployment in PostgreSQL: the `events` the loaders write and the
 * feeds read (one log partition per {@link PostgresStore.partition} view),
 * `failed_events`, the consumers' offsets and the dedupe index `event_keys`.
 *
 * Exactly-once with competing writers: a write locks its consumer's offset row first
 * (`SELECT … FOR UPDATE`) and writes only when the stored offset is the one the writer read
 * its batch from (`fromOffset`); a process that lost its partition to another and kept
 * going gets `TRIB_ERR_STATE_OFFSET_MOVED` instead of writing the batch a second time.
 * An event whose (source, messageId) is in `event_keys` already (written through another
 * partition) is left out in the same transaction.
 *
 * @example
 * const store = await PostgresStore.open({ url: 'postgres://db/tributary' });
 * const p3 = store.partition(3); // the loader and the feed of log partition 3 use this
 */
export class PostgresStore implements Store, DeliveryQueue {
  private readonly s: string;
  private readonly load: string;

  private constructor(
    /** The process's pool; the identity store shares it. */
    readonly pool: pg.Pool,
    readonly schema: string,
  ) {
    this.s = pgIdent(schema);
    this.configVersions = new PostgresConfigVersions(pool, this.s, (work) => this.transaction(work));
    this.load = loadSql(this.s);
  }

  /** Connects and creates the tables when missing (safe when several processes start at once). */
  static async open(opts: PostgresStoreOptions): Promise<PostgresStore> {
    const pool = new pg.Pool({ connectionString: opts.url, max: opts.maxConnections ?? 10 });
    // An idle connection that breaks is dropped by the pool; without a listener it would crash the process.
    pool.on('error', () => undefined);
    const store = new PostgresStore(pool, opts.schema ?? 'tributary');
    try {
      await store.transaction(async (c) => {
        // Concurrent CREATE … IF NOT EXISTS can still fail on the catalog's unique indexes.
        await advisoryXactLock(c, `state-schema:${store.schema}`);
        for (const sql of schemaSql(store.s)) await c.query(sql);
        for (const sql of configVersionsSchemaSql(store.s)) await c.query(sql);
      });
    } catch (err) {
      await pool.end().catch(() => undefined);
      throw err;
    }
    return store;
  }

  /**
   * The store as one log partition sees it: `write` stores rows under partition `p` and
   * `readEvents` reads only those; offsets, the dedupe index and `failed_events` are shared. The
   * store itself is the view of partition 0 (an unpartitioned log). Closing a view does
   * nothing: the store owns the pool. A view lists no recent keys: its `write` drops a key
   * already in `event_keys` (from any partition, at any time) by itself, so a partition's
   * loader need not load every partition's keys into memory when it starts.
   */
  private readonly failed = failedQueries((sql) => this.query(sql));
  readonly listFailed: FailedQueries['listFailed'] = (f) => this.failed.listFailed(f);
  readonly failedById: FailedQueries['failedById'] = (id) => this.failed.failedById(id);
  readonly failedToRetry: FailedQueries['failedToRetry'] = (f) => this.failed.failedToRetry(f);
  readonly markRetried: FailedQueries['markRetried'] = (ids) => this.failed.markRetried(ids);
  readonly retriesOf: FailedQueries['retriesOf'] = (ids) => this.failed.retriesOf(ids);
  private readonly configVersions: PostgresConfigVersions;
  readonly appendConfigVersion: ConfigVersionStore['appendConfigVersion'] = (v, e) =>
    this.configVersions.appendConfigVersion(v, e);
  readonly configVersion: ConfigVersionStore['configVersion'] = (n) => this.configVersions.configVersion(n);
  readonly latestConfigVersion: ConfigVersionStore['latestConfigVersion'] = () =>
    this.configVersions.latestConfigVersion();
  readonly latestFileConfigVersion: ConfigVersionStore['latestFileConfigVersion'] = () =>
    this.configVersions.latestFileConfigVersion();
  readonly listConfigVersions: ConfigVersionStore['listConfigVersions'] = (l) =>
    this.configVersions.listConfigVersions(l);

  private readonly lineage = lineageQueries((sql) => this.query(sql));
  readonly eventsOf: LineageQueries['eventsOf'] = (id, at) => this.lineage.eventsOf(id, at);
  /** One INSERT of arrays per call (`unnest`), the values as parameters. */
  async recordAttempts(attempts: readonly DeliveryAttemptRow[]): Promise<void> {
    if (attempts.length === 0) return;
    const rows = attempts.map(attemptRow);
    await this.pool.query(
      `INSERT INTO ${this.s}.delivery_attempts
       SELECT * FROM unnest($1::text[], $2::text[], $3::integer[], $4::timestamptz[], $5::text[], $6::float8[], $7::text[])`,
      [
        rows.map((r) => r.destination),
        rows.map((r) => r.messageId),
        rows.map((r) => r.attempt),
        rows.map((r) => r.at),
        rows.map((r) => r.status),
        rows.map((r) => r.latencyMs),
        rows.map((r) => r.detail),
      ],
    );
  }
  readonly attemptsOf: LineageQueries['attemptsOf'] = (id) => this.lineage.attemptsOf(id);
  readonly purgeAttempts: LineageQueries['purgeAttempts'] = (t) => this.lineage.purgeAttempts(t);
  readonly saveReplayRun: LineageQueries['saveReplayRun'] = (r) => this.lineage.saveReplayRun(r);
  readonly replayRuns: LineageQueries['replayRuns'] = (o) => this.lineage.replayRuns(o);

  partition(p: number): Store {
    if (!Number.isInteger(p) || p < 0) throw new RangeError(`partition must be a non-negative integer: ${p}`);
    return {
      write: (batch) => this.writePartition(p, batch),
      consumerOffset: (c) => this.consumerOffset(c),
      existingKeys: (keys, since) => this.existingKeys(keys, since),
      recentKeys: async function* () {},
      readEvents: (from, to, limit) => this.readPartition(p, from, to, limit),
      listFailed: (f) => this.listFailed(f),
      failedById: (id) => this.failedById(id),
      failedToRetry: (f) => this.failedToRetry(f),
      markRetried: (ids) => this.markRetried(ids),
      retriesOf: (ids) => this.retriesOf(ids),
      appendConfigVersion: (v, e) => this.appendConfigVersion(v, e),
      configVersion: (n) => this.configVersion(n),
      latestConfigVersion: () => this.latestConfigVersion(),
      latestFileConfigVersion: () => this.latestFileConfigVersion(),
      listConfigVersions: (l) => this.listConfigVersions(l),
      eventsOf: (id, at) => this.eventsOf(id, at),
      recordAttempts: (a) => this.recordAttempts(a),
      attemptsOf: (id) => this.attemptsOf(id),
      purgeAttempts: (t) => this.purgeAttempts(t),
      saveReplayRun: (r) => this.saveReplayRun(r),
      replayRuns: (o) => this.replayRuns(o),
      erase: (t) => this.erase(t),
      enqueueDeliveries: (b) => this.enqueueDeliveries(b),
      nextDeliveries: (q, now, limit, perKey) => this.nextDeliveries(q, now, limit, perKey),
      expiredDeliveries: (q, before, limit) => this.expiredDeliveries(q, before, limit),
      settleDeliveries: (st) => this.settleDeliveries(st),
      deliveryBacklog: (q) => this.deliveryBacklog(q),
      close: async () => {},
    };
  }

  enqueueDeliveries(batch: DeliveryEnqueue): Promise<void> {
    return this.transaction(async (c) => {
      const j = batch.jobs;
      if (j.length > 0) {
        // WITH ORDINALITY … ORDER BY: the serial numbers follow the order given.
        await c.query(
          `INSERT INTO ${this.s}.delivery_queue (queue, message_key, order_key, op, payload, log_offset, source_id,
             received_at, enqueued_at, attempts, not_before, retry_of)
           SELECT $1, k, ok, op, pl, lo, src, ra, $9, 0, $9, ro
           FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[], $8::bigint[], $10::text[])
             WITH ORDINALITY AS u(k, ok, op, pl, lo, src, ra, ro, n)
           ORDER BY n`,
          [
            batch.queue,
            j.map((d) => withoutNul(d.key)),
            j.map((d) => withoutNul(d.orderKey)),
            j.map((d) => d.op),
            j.map((d) => withoutNul(d.payload)),
            j.map((d) => Math.trunc(d.logOffset)),
            j.map((d) => withoutNul(d.sourceId)),
            j.map((d) => Math.trunc(d.receivedAt)),
            Date.now(),
            j.map((d) => d.retryOf ?? null),
          ],
        );
      }
      if (batch.failed.length > 0) await this.writeFailed(c, 0, batch.failed.map(storableFailedRow));
      if (batch.consumer !== undefined) {
        await c.query(
          `INSERT INTO ${this.s}.consumer_offsets (consumer, next_offset) VALUES ($1, $2)
           ON CONFLICT (consumer) DO UPDATE SET next_offset = excluded.next_offset, updated_at = now()`,
          [batch.consumer, Math.trunc(batch.nextOffset ?? 0)],
        );
      }
    });
  }

  async nextDeliveries(queue: string, now: number, limit: number, perKey = 1): Promise<DeliveryJob[]> {
    const r = await this.pool.query(
      `WITH r AS (
         SELECT seq, order_key, not_before, row_number() OVER (PARTITION BY order_key ORDER BY seq) AS rn
         FROM ${this.s}.delivery_queue WHERE queue = $1),
       due AS (SELECT order_key FROM r WHERE rn = 1 AND not_before <= $2),
       pick AS (SELECT r.seq FROM r JOIN due USING (order_key) WHERE r.rn <= $4 ORDER BY r.seq LIMIT $3)
       SELECT ${JOB_COLUMNS} FROM ${this.s}.delivery_queue JOIN pick USING (seq) ORDER BY seq`,
      [queue, Math.trunc(now), Math.max(0, Math.trunc(limit)), Math.max(1, Math.trunc(perKey))],
    );
    return r.rows.map(jobFromRow);
  }

  async expiredDeliveries(queue: string, enqueuedBefore: number, limit: number): Promise<DeliveryJob[]> {
    const r = await this.pool.query(
      `SELECT ${JOB_COLUMNS} FROM ${this.s}.delivery_queue WHERE queue = $1 AND enqueued_at < $2 ORDER BY seq LIMIT $3`,
      [queue, Math.trunc(enqueuedBefore), Math.max(0, Math.trunc(limit))],
    );
    return r.rows.map(jobFromRow);
  }

  settleDeliveries(st: DeliverySettlement): Promise<void> {
    if (st.done.length === 0 && st.retry.length === 0 && st.failed.length === 0) return Promise.resolve();
    return this.transaction(async (c) => {
      if (st.done.length > 0)
        await c.query(`DELETE FROM ${this.s}.delivery_queue WHERE queue = $1 AND seq = ANY($2::bigint[])`, [
          st.queue,
          st.done,
        ]);
      if (st.retry.length > 0) {
        await c.query(
          `UPDATE ${this.s}.delivery_queue d SET attempts = v.a, not_before = v.nb, last_error = v.e
           FROM unnest($2::bigint[], $3::int[], $4::bigint[], $5::text[]) AS v(s, a, nb, e)
           WHERE d.queue = $1 AND d.seq = v.s`,
          [
            st.queue,
            st.retry.map((r) => r.seq),
            st.retry.map((r) => r.attempts),
            st.retry.map((r) => Math.trunc(r.notBefore)),
            st.retry.map((r) => withoutNul(r.lastError)),
          ],
        );
      }
      if (st.failed.length === 0) return;
      // Only deliveries still queued move to failed_events: one settled meanwhile is not stored twice.
      const removed = await c.query<{ seq: string }>(
        `DELETE FROM ${this.s}.delivery_queue WHERE queue = $1 AND seq = ANY($2::bigint[]) RETURNING seq`,
        [st.queue, st.failed.map((f) => f.seq)],
      );
      const gone = new Set(removed.rows.map((r) => Number(r.seq)));
      const failed = st.failed.filter((f) => gone.has(f.seq)).map((f) => storableFailedRow(f.row));
      if (failed.length > 0) await this.writeFailed(c, 0, failed);
    });
  }

  async deliveryBacklog(queue: string): Promise<DeliveryBacklog> {
    const r = await this.pool.query<{ n: string; oldest: string | null }>(
      `SELECT count(*) AS n, min(enqueued_at) AS oldest FROM ${this.s}.delivery_queue WHERE queue = $1`,
      [queue],
    );
    const row = r.rows[0];
    return { jobs: Number(row?.n ?? 0), oldestEnqueuedAt: row?.oldest == null ? null : Number(row.oldest) };
  }

  write(batch: StoreBatch): Promise<WriteReport> {
    return this.writePartition(0, batch);
  }

  /**
   * Deletes the person's rows (see `Store.erase`), then `VACUUM FULL`s the two tables: a plain
   * VACUUM leaves dead rows' bytes in their pages until overwritten; VACUUM FULL writes the
   * tables anew (it locks them while it runs).
   */
  async erase(target: ErasureTarget): Promise<{ events: number; failed: number }> {
    const p = [target.userIds, target.anonymousIds, target.messageIds, target.values];
    const text = (col: string) =>
      `EXISTS (SELECT 1 FROM unnest($4::text[]) v WHERE strpos(${col}::text, v) > 0)`;
    const out = await this.transaction(async (c) => {
      const e = await c.query(
        `DELETE FROM ${this.s}.events WHERE user_id = ANY($1) OR anonymous_id = ANY($2) OR message_id = ANY($3) OR ${text('payload')}`,
        p,
      );
      const f = await c.query(
        `DELETE FROM ${this.s}.failed_events WHERE payload->>'userId' = ANY($1) OR payload->>'anonymousId' = ANY($2)
           OR message_id = ANY($3) OR ${text('payload')}`,
        p,
      );
      return { events: e.rowCount ?? 0, failed: f.rowCount ?? 0 };
    });
    await this.pool.query(`VACUUM FULL ${this.s}.events`);
    await this.pool.query(`VACUUM FULL ${this.s}.failed_events`);
    return out;
  }

  readEvents(from: number, to: number, limit: number): Promise<StoredEvent[]> {
    return this.readPartition(0, from, to, limit);
  }

  private async writePartition(p: number, batch: StoreBatch): Promise<WriteReport> {
    return this.transaction(async (c) => {
      await c.query(
        `INSERT INTO ${this.s}.consumer_offsets (consumer, next_offset) VALUES ($1, 0) ON CONFLICT DO NOTHING`,
        [batch.consumer],
      );
      // Held to the commit: a second writer of this consumer waits here, then sees our offset.
      const locked = await c.query<{ next_offset: string }>(
        `SELECT next_offset FROM ${this.s}.consumer_offsets WHERE consumer = $1 FOR UPDATE`,
        [batch.consumer],
      );
      const stored = Number(locked.rows[0]!.next_offset);
      if (batch.fromOffset !== undefined && stored !== batch.fromOffset) {
        throw new TributaryError('TRIB_ERR_STATE_OFFSET_MOVED', [batch.consumer, stored, batch.fromOffset]);
      }
      const duplicates: number[] = [];
      // Each slice under a savepoint: a slice PostgreSQL refuses for its data is undone alone
      // and split until the refused rows are found; the slices it takes stay written.
      let staged = false;
      const attempt = async (slice: readonly EventRow[], offset: number) => {
        await c.query('SAVEPOINT load_events');
        try {
          // Rows staged by an earlier slice of this transaction are in already.
          if (staged) await c.query('DELETE FROM pg_temp._stage_events');
          for (const i of await this.writeEvents(c, p, slice)) duplicates.push(i + offset);
          staged = true;
          await c.query('RELEASE SAVEPOINT load_events');
        } catch (err) {
          await c.query('ROLLBACK TO SAVEPOINT load_events');
          throw err;
        }
      };
      const refused = await findRefused(batch.events, attempt, isPgDataError);
      const failed = batch.failed.map(storableFailedRow);
      for (const r of refused) failed.push(refusedFailedRow(batch.events[r.index]!, r.reason));
      if (failed.length > 0) await this.writeFailed(c, p, failed);
      await c.query(
        `UPDATE ${this.s}.consumer_offsets SET next_offset = $2, updated_at = now() WHERE consumer = $1`,
        [batch.consumer, Math.trunc(batch.nextOffset)],
      );
      return { duplicates: duplicates.sort((a, b) => a - b), refused };
    });
  }

  /**
   * COPY into a temporary staging table, then one statement into `event_keys` and `events`:
   * for 5,000-row batches it measured 175 ms against 210 ms for one insert of the rows as
   * arrays (`unnest`), median of 10 batches on the development machine.
   */
  private async writeEvents(c: pg.PoolClient, p: number, events: readonly EventRow[]): Promise<number[]> {
    await c.query(`CREATE TEMP TABLE IF NOT EXISTS _stage_events (
      n integer, message_id text COLLATE "C", source_id text COLLATE "C", log_offset bigint,
      received_ms bigint, payload jsonb) ON COMMIT DELETE ROWS`);
    // Rows repeating a key of the batch are left out here; the database sees each key once.
    const seen = new Set<string>();
    const duplicates: number[] = [];
    const rows: number[] = [];
    events.forEach((e, i) => {
      const k = eventKey(e.sourceId, e.messageId);
      if (seen.has(k)) duplicates.push(i);
      else {
        seen.add(k);
        rows.push(i);
      }
    });
    await pipeline(
      Readable.from(csvChunks(rows, events)),
      c.query(copyFrom('COPY pg_temp._stage_events FROM STDIN (FORMAT csv)')),
    );
    const left = await c.query<{ n: number }>(this.load, [p]);
    for (const r of left.rows) duplicates.push(r.n);
    return duplicates.sort((a, b) => a - b);
  }

  private async writeFailed(c: pg.PoolClient, p: number, f: readonly FailedRow[]): Promise<void> {
    await c.query(
      `INSERT INTO ${this.s}.failed_events (log_offset, source_id, message_id, stage, code, reason, received_at,
         payload, id, failed_at, logs, retry_state, retry_of, log_partition)
       SELECT o, s, m, st, co, r, ra::timestamptz, pl::jsonb, id, now(), lg::jsonb, 'new', ro, $11
       FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                   $8::text[], $9::text[], $10::text[], $12::text[]) AS u(o, s, m, st, co, r, ra, pl, id, lg, ro)`,
      [
        f.map((r) => r.logOffset),
        f.map((r) => withoutNul(r.sourceId)),
        f.map((r) => withoutNul(r.messageId)),
        f.map((r) => withoutNul(r.stage)),
        f.map((r) => withoutNul(r.code)),
        f.map((r) => withoutNul(r.reason)),
        f.map((r) => r.receivedAt),
        f.map((r) => jsonWithoutNul(r.json)),
        f.map(() => randomUUID()),
        f.map((r) => (r.logs === undefined ? null : jsonWithoutNul(JSON.stringify(r.logs)))),
        p,
        f.map((r) => r.retryOf ?? null),
      ],
    );
  }

  async consumerOffset(consumer: string): Promise<number> {
    const r = await this.pool.query<{ next_offset: string }>(
      `SELECT next_offset FROM ${this.s}.consumer_offsets WHERE consumer = $1`,
      [consumer],
    );
    return Number(r.rows[0]?.next_offset ?? 0);
  }

  async existingKeys(
    keys: readonly { sourceId: string; messageId: string }[],
    sinceMs: number,
  ): Promise<Set<string>> {
    const found = new Set<string>();
    if (keys.length === 0) return found;
    const r = await this.pool.query<{ source_id: string; message_id: string }>(
      `SELECT k.source_id, k.message_id FROM ${this.s}.event_keys k
       JOIN unnest($1::text[], $2::text[]) AS q(source_id, message_id)
         ON k.source_id = q.source_id AND k.message_id = q.message_id
       WHERE k.received_at >= to_timestamp($3 / 1000.0)`,
      [keys.map((k) => k.sourceId), keys.map((k) => k.messageId), sinceMs],
    );
    for (const row of r.rows) found.add(eventKey(row.source_id, row.message_id));
    return found;
  }

  async *recentKeys(
    sinceMs: number,
  ): AsyncIterable<{ sourceId: string; messageId: string; receivedAt: number }> {
    // Pages in key order, so no connection is held while the caller consumes.
    let after: [string, string] | undefined;
    for (;;) {
      const r = await this.pool.query<{ source_id: string; message_id: string; ms: string }>(
        `SELECT source_id, message_id, ${this.s}.epoch_ms(received_at) AS ms FROM ${this.s}.event_keys
         WHERE received_at >= to_timestamp($1 / 1000.0) ${after ? 'AND (source_id, message_id) > ($3, $4)' : ''}
         ORDER BY source_id, message_id LIMIT $2`,
        after ? [sinceMs, KEYS_PAGE, after[0], after[1]] : [sinceMs, KEYS_PAGE],
      );
      for (const row of r.rows) {
        yield { sourceId: row.source_id, messageId: row.message_id, receivedAt: Number(row.ms) };
      }
      if (r.rows.length < KEYS_PAGE) return;
      const last = r.rows[r.rows.length - 1]!;
      after = [last.source_id, last.message_id];
    }
  }

  private async readPartition(p: number, from: number, to: number, limit: number): Promise<StoredEvent[]> {
    const r = await this.pool.query<{
      log_offset: string;
      source_id: string;
      message_id: string;
      ms: string;
      payload: string;
    }>(
      `SELECT log_offset, source_id, message_id, ${this.s}.epoch_ms(received_at) AS ms, payload::text AS payload
       FROM ${this.s}.events WHERE log_partition = $1 AND log_offset >= $2 AND log_offset < $3
       ORDER BY log_offset LIMIT $4`,
      [p, from, to, Math.min(limit, Number.MAX_SAFE_INTEGER)],
    );
    return r.rows.map((row) => ({
      logOffset: Number(row.log_offset),
      sourceId: row.source_id,
      messageId: row.message_id,
      receivedAt: Number(row.ms),
      json: row.payload,
    }));
  }

  /**
   * Runs `sql` with the store's schema first on the search path and UTC as the time zone,
   * both for this statement only (the pool is shared), so SQL written for DuckDB's tables
   * (`failed_events`, `epoch_ms`) runs unchanged. Integers that fit are numbers.
   */
  async query(sql: string): Promise<QueryResult> {
    return this.transaction(async (c) => {
      await c.query(`SET LOCAL search_path TO ${this.s}, public`);
      await c.query("SET LOCAL TimeZone TO 'UTC'");
      const r = await c.query(sql);
      const columns = r.fields.map((f) => f.name);
      const rows = r.rows as Record<string, unknown>[];
      for (const f of r.fields) {
        if (f.dataTypeID !== INT8) continue;
        for (const row of rows) {
          const v = row[f.name];
          if (typeof v === 'string' && Number.isSafeInteger(Number(v))) row[f.name] = Number(v);
        }
      }
      return { columns, rows };
    });
  }

  async close(): Promise<void> {
    await this.pool.end();
  }

  private async transaction<T>(work: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    const c = await this.pool.connect();
    let broken: Error | undefined;
    // A connection lost meanwhile (PostgreSQL restarted, the network cut) is reported here,
    // not as an unhandled 'error' event that would end the process; the query in flight
    // fails, and the client is discarded.
    const onError = (err: Error) => {
      broken = err;
    };
    c.on('error', onError);
    try {
      await c.query('BEGIN');
      const result = await work(c);
      await c.query('COMMIT');
      return result;
    } catch (err) {
      await c.query('ROLLBACK').catch((e: Error) => {
        broken = e;
      });
      throw err;
    } finally {
      // A connection whose rollback failed is in an unknown state: the pool discards it.
      c.off('error', onError);
      c.release(broken);
    }
  }
}

/**
 * PostgreSQL's errors about the data of a statement (SQLSTATE class 22, data exception: bad
 * JSON, an impossible timestamp, …; 23, integrity; 54, a row or value over a limit), as opposed
 * to connection, lock or resource errors, which say nothing about the rows.
 */
export function isPgDataError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^(22|23|54)[0-9A-Z]{3}$/.test(code);
}

/**
 * PostgreSQL text cannot hold U+0000, so `jsonb` refuses the escape `\u0000`: it becomes
 * U+FFFD, or one such event would fail its whole batch forever. An escaped backslash
 * before `u0000` (`\\u0000`) is text, not the escape, and stays.
 */
function jsonWithoutNul(json: string): string {
  return json.includes('\\u0000') ? json.replace(/(?<!\\)((?:\\\\)*)\\u0000/g, '$1\\ufffd') : json;
}

function withoutNul(text: string): string {
  return text.includes('\u0000') ? text.replaceAll('\u0000', '\ufffd') : text;
}

/** The staging rows as CSV in chunks of about 1 MB; `n` is the row's position in the batch. */
function* csvChunks(rows: readonly number[], events: readonly EventRow[]): Generator<string> {
  let chunk = '';
  for (const i of rows) {
    const e = events[i]!;
    chunk += `${i},${csvText(e.messageId)},${csvText(e.sourceId)},${Math.trunc(e.logOffset)},${Math.trunc(e.receivedAt)},${csvText(jsonWithoutNul(e.json))}\n`;
    if (chunk.length >= 1 << 20) {
      yield chunk;
      chunk = '';
    }
  }
  if (chunk !== '') yield chunk;
}

function csvText(v: string): string {
  return `"${withoutNul(v).replace(/"/g, '""')}"`;
}
