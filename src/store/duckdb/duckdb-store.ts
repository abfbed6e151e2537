import { randomUUID } from 'node:crypto';
import {
  type DuckDBAppender,
  type DuckDBConnection,
  type DuckDBInstance,
  type DuckDBPreparedStatement,
  DuckDBTypeId,
} from '@duckdb/node-api';
import { TributaryError } from '../../errors.js';
import type { ErasureTarget } from '../../governance/privacy/erasure.js';
import { Slice } from '../../platform/async/slice.js';
import { Turns } from '../../platform/async/turns.js';
import { CheckpointGate } from '../../platform/duckdb/checkpoint-gate.js';
import { containsAny, eraseRows, inList, scrubFreeBlocks } from '../../platform/duckdb/duckdb-erase.js';
import { quoteIdent, sqlString } from '../../platform/duckdb/duckdb-sql.js';
import { largeTextCompression } from '../../platform/duckdb/duckdb-storage.js';
import type { ConfigVersionStore } from '../config-versions.js';
import {
  type DeliveryBacklog,
  type DeliveryEnqueue,
  type DeliveryJob,
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
import type { UserQueries, UserQueryLimits, UserQueryOptions, UserQueryResult } from '../user-query.js';
import { DuckDBConfigVersions } from './duckdb-config-versions.js';
import { MASKED_CATALOG, type MaskingOptions, refreshMaskedViews } from './duckdb-masked-views.js';
import { runUserQuery } from './duckdb-user-query.js';

const INTEGER_TYPES = new Set<DuckDBTypeId>([
  DuckDBTypeId.BIGINT,
  DuckDBTypeId.UBIGINT,
  DuckDBTypeId.HUGEINT,
  DuckDBTypeId.UHUGEINT,
]);

/** The warehouse's tables; `payloadCompression` is the clause of `events.payload`. */
const schemaSql = (payloadCompression: string) => [
  `CREATE TABLE IF NOT EXISTS events (
    message_id VARCHAR NOT NULL,
    source_id VARCHAR NOT NULL,
    type VARCHAR NOT NULL,
    event VARCHAR,
    user_id VARCHAR,
    anonymous_id VARCHAR,
    "timestamp" TIMESTAMPTZ NOT NULL,
    received_at TIMESTAMPTZ NOT NULL,
    log_offset BIGINT NOT NULL,
    payload JSON ${payloadCompression} NOT NULL)`,
  `CREATE TABLE IF NOT EXISTS failed_events (
    log_offset BIGINT NOT NULL,
    source_id VARCHAR NOT NULL,
    message_id VARCHAR,
    stage VARCHAR NOT NULL,
    code VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    received_at TIMESTAMPTZ NOT NULL,
    payload JSON NOT NULL)`,
  // Added for the failed-event store; ALTER keeps warehouses made by earlier releases readable.
  'ALTER TABLE failed_events ADD COLUMN IF NOT EXISTS id VARCHAR',
  'ALTER TABLE failed_events ADD COLUMN IF NOT EXISTS failed_at TIMESTAMPTZ',
  'ALTER TABLE failed_events ADD COLUMN IF NOT EXISTS logs JSON',
  'ALTER TABLE failed_events ADD COLUMN IF NOT EXISTS retry_state VARCHAR',
  'ALTER TABLE failed_events ADD COLUMN IF NOT EXISTS retried_at TIMESTAMPTZ',
  'ALTER TABLE failed_events ADD COLUMN IF NOT EXISTS retry_of VARCHAR',
  "UPDATE failed_events SET id = CAST(uuid() AS VARCHAR), failed_at = received_at, retry_state = 'new' WHERE id IS NULL",
  'CREATE SCHEMA IF NOT EXISTS _tributary',
  `CREATE TABLE IF NOT EXISTS _tributary.consumer_offsets (
    consumer VARCHAR PRIMARY KEY,
    next_offset BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL)`,
  ...LINEAGE_SCHEMA_SQL,
  // The streaming destinations' queue (../delivery-queue.ts); times in epoch milliseconds.
  // No index: DuckDB scans it fast, and an ART index would refuse updates of a row deleted and
  // queued again in one transaction.
  `CREATE TABLE IF NOT EXISTS _tributary.delivery_queue (
    queue VARCHAR NOT NULL,
    seq BIGINT NOT NULL,
    message_key VARCHAR NOT NULL,
    order_key VARCHAR NOT NULL,
    op VARCHAR NOT NULL,
    payload VARCHAR NOT NULL,
    log_offset BIGINT NOT NULL,
    source_id VARCHAR NOT NULL,
    received_at BIGINT NOT NULL,
    enqueued_at BIGINT NOT NULL,
    attempts INTEGER NOT NULL,
    not_before BIGINT NOT NULL,
    last_error VARCHAR,
    retry_of VARCHAR)`,
];

/**
 * One load: `$1` holds a line per event with its messageId, source and log offset (a JSON
 * object each), `$2` the events' JSON, a line each, in the same order. DuckDB splits both on
 * its own threads and takes the columns from the JSON in one parse per row (a multi-path
 * extract): the event loop hands over two strings instead of four values per event.
 */
const LOAD_EVENTS_SQL = `
  INSERT INTO events
  SELECT k[1], k[2], f[1],
         coalesce(f[2], CASE WHEN f[1] IN ('page', 'screen') THEN coalesce(f[3], f[8]) END), f[4], f[5],
         CAST(f[6] AS TIMESTAMPTZ), CAST(f[7] AS TIMESTAMPTZ), CAST(k[3] AS BIGINT), payload
  FROM (
    SELECT json_extract_string(key, ['$.m', '$.s', '$.o']) AS k, payload,
           json_extract_string(payload, ['$.type', '$.event', '$.name', '$.userId', '$.anonymousId',
                                         '$.timestamp', '$.receivedAt', '$.properties.name']) AS f
    FROM (SELECT unnest(string_split($1, chr(10))) AS key, unnest(string_split($2, chr(10))) AS payload))`;

/** A line of `LOAD_EVENTS_SQL`'s `$1`: JSON.stringify escapes any newline in the ids. */
function keyLine(e: EventRow): string {
  return `{"m":${JSON.stringify(e.messageId)},"s":${JSON.stringify(e.sourceId)},"o":${Math.trunc(e.logOffset)}}`;
}

/**
 * An event's JSON as one line. A raw newline in JSON text can only be whitespace between
 * tokens (strings escape theirs), so a space in its place leaves the same JSON value.
 */
function payloadLine(json: string): string {
  return json.includes('\n') ? json.replaceAll('\n', ' ') : json;
}

/**
 * DuckDB's errors about the data of a statement (malformed JSON, a value out of range or of
 * the wrong type, a NOT NULL column left empty), as opposed to I/O, memory or connection
 * errors, which say nothing about the rows. Told apart by the type DuckDB names first.
 */
export function isDuckDBDataError(err: unknown): boolean {
  return (
    err instanceof Error &&
    /^(Invalid Input|Conversion|Constraint|Out of Range|Mismatch Type) Error\b/.test(err.message)
  );
}

/**
 * The embedded warehouse: tables in the main DuckDB database. A write is one explicit
 * transaction: the events as two strings of lines split by DuckDB, the failed events through
 * DuckDB's appender, and the consumer's offset.
 */
export class DuckDBStore implements Store, UserQueries {
  private walBytes = 0;
  /**
   * The file's checkpoints: a destination loading into this file (the DuckDB destination's
   * default) flushes its appenders only while none runs (src/platform/duckdb/checkpoint-gate.ts).
   */
  readonly checkpoints = new CheckpointGate();
  /** Reports a checkpoint that failed (it is retried after the next write). */
  onCheckpointError: (err: unknown) => void = () => {};

  private constructor(
    private readonly instance: DuckDBInstance,
    private readonly writer: DuckDBConnection,
    private readonly reader: DuckDBConnection,
    private readonly catalog: string,
    private readonly checkpointBytes: number,
    private loadEvents: DuckDBPreparedStatement,
    private failedAppender: DuckDBAppender,
    private readonly configVersions: DuckDBConfigVersions,
    private readonly queueAppender: DuckDBAppender,
    /** The last `seq` of the delivery queue: this store is the file's one writer. */
    private queueSeq: number,
  ) {}

  /**
   * @param options.checkpointBytes bytes written after which the warehouse checkpoints,
   *   between two loads, so no load stalls on DuckDB's own checkpoint (default 32 MB).
   */
  static async open(
    instance: DuckDBInstance,
    options: { checkpointBytes?: number } = {},
  ): Promise<DuckDBStore> {
    const writer = await instance.connect();
    const catalog = String((await writer.runAndReadAll('SELECT current_database()')).getRows()[0]![0]);
    // Every event's JSON is stored here: zstd where the file has it (src/platform/duckdb/duckdb-storage.ts),
    // else DuckDB's own choice, as in warehouses made before.
    for (const sql of schemaSql(await largeTextCompression(writer, catalog, ''))) await writer.run(sql);
    const reader = await instance.connect();
    return new DuckDBStore(
      instance,
      writer,
      reader,
      catalog,
      options.checkpointBytes ?? 32 * 1024 * 1024,
      await writer.prepare(LOAD_EVENTS_SQL),
      await writer.createAppender('failed_events'),
      await DuckDBConfigVersions.open(instance),
      await writer.createAppender('delivery_queue', '_tributary'),
      Number(
        (
          await writer.runAndReadAll('SELECT coalesce(max(seq), 0) FROM _tributary.delivery_queue')
        ).getRows()[0]![0],
      ),
    );
  }

  /**
   * Three round trips to DuckDB's threads per batch at most, whatever its size: the event
   * loop of a busy server is slow to come back to an awaiting loader, so fewer awaits load
   * faster.
   */
  write(batch: StoreBatch): Promise<WriteReport> {
    // One writer connection and appender: the loader and the destinations' failure writes take turns.
    return this.writes.run(() => this.writeIsolated(batch));
  }

  private readonly writes = new Turns();

  /**
   * The batch in one transaction; when DuckDB refuses the events for their data, the refused
   * ones are found by trial loads that are rolled back (DuckDB has no savepoints: a failed
   * statement aborts its transaction), then the rest is written with them as failed events.
   * A batch DuckDB takes costs nothing more.
   */
  private async writeIsolated(batch: StoreBatch): Promise<WriteReport> {
    const failed = batch.failed.map(storableFailedRow);
    try {
      await this.writeNow(batch.events, failed, batch);
      return { duplicates: [], refused: [] };
    } catch (err) {
      if (batch.events.length === 0 || !isDuckDBDataError(err)) throw err;
    }
    const refused = await findRefused(batch.events, (slice) => this.tryLoad(slice), isDuckDBDataError, true);
    const bad = new Set(refused.map((r) => r.index));
    const events = batch.events.filter((_, i) => !bad.has(i));
    for (const r of refused) failed.push(refusedFailedRow(batch.events[r.index]!, r.reason));
    await this.writeNow(events, failed, batch);
    return { duplicates: [], refused };
  }

  /** Loads the events in a transaction that is rolled back: throws what DuckDB says of them. */
  private async tryLoad(events: readonly EventRow[]): Promise<void> {
    await this.writer.run('BEGIN TRANSACTION');
    try {
      await this.loadRows(events);
    } finally {
      await this.writer.run('ROLLBACK');
    }
  }

  private async loadRows(events: readonly EventRow[]): Promise<void> {
    if (events.length === 0) return;
    let keys = keyLine(events[0]!);
    let payloads = payloadLine(events[0]!.json);
    for (let i = 1; i < events.length; i++) {
      keys += `\n${keyLine(events[i]!)}`;
      payloads += `\n${payloadLine(events[i]!.json)}`;
    }
    this.loadEvents.bindVarchar(1, keys);
    this.loadEvents.bindVarchar(2, payloads);
    await this.loadEvents.run();
  }

  private async writeNow(
    events: readonly EventRow[],
    failed: readonly FailedRow[],
    batch: StoreBatch,
  ): Promise<void> {
    const w = this.writer;
    await w.run('BEGIN TRANSACTION');
    try {
      await this.loadRows(events);
      this.appendFailed(failed);
      await w.run(
        `INSERT OR REPLACE INTO _tributary.consumer_offsets VALUES (${sqlString(batch.consumer)}, ${Math.trunc(batch.nextOffset)}, now());
         COMMIT`,
      );
    } catch (err) {
      await w.run('ROLLBACK').catch(() => undefined);
      throw err;
    }
    let bytes = 0;
    for (const e of events) bytes += e.json.length;
    for (const f of failed) bytes += f.json.length;
    await this.wrote(bytes);
  }

  /** Appends failed events within the writer's open transaction. */
  private appendFailed(failed: readonly FailedRow[]): void {
    if (failed.length === 0) return;
    const ap = this.failedAppender;
    const now = new Date().toISOString();
    for (const f of failed) {
      ap.appendBigInt(BigInt(f.logOffset));
      ap.appendVarchar(f.sourceId);
      ap.appendVarchar(f.messageId);
      ap.appendVarchar(f.stage);
      ap.appendVarchar(f.code);
      ap.appendVarchar(f.reason);
      ap.appendVarchar(f.receivedAt);
      ap.appendVarchar(f.json);
      ap.appendVarchar(randomUUID());
      ap.appendVarchar(now);
      if (f.logs === undefined) ap.appendNull();
      else ap.appendVarchar(JSON.stringify(f.logs));
      ap.appendVarchar('new');
      ap.appendNull();
      if (f.retryOf === undefined) ap.appendNull();
      else ap.appendVarchar(f.retryOf);
      ap.endRow();
    }
    ap.flushSync();
  }

  /** Counts bytes written and checkpoints the file once enough were, between two writes. */
  private async wrote(bytes: number): Promise<void> {
    this.walBytes += bytes;
    if (this.walBytes >= this.checkpointBytes) {
      try {
        await this.checkpoints.checkpoint(() => this.writer.run(`CHECKPOINT ${quoteIdent(this.catalog)}`));
        this.walBytes = 0;
      } catch (err) {
        this.onCheckpointError(err);
      }
    }
  }

  /**
   * Runs `work` in a transaction of the writer connection, in turn with the other writes;
   * `work` answers the bytes it wrote, for the checkpoints.
   */
  private transaction(work: (w: DuckDBConnection) => Promise<number>): Promise<void> {
    return this.writes.run(async () => {
      const w = this.writer;
      await w.run('BEGIN TRANSACTION');
      let bytes: number;
      try {
        bytes = await work(w);
        await w.run('COMMIT');
      } catch (err) {
        await w.run('ROLLBACK').catch(() => undefined);
        throw err;
      }
      await this.wrote(bytes);
    });
  }

  enqueueDeliveries(batch: DeliveryEnqueue): Promise<void> {
    const failed = batch.failed.map(storableFailedRow);
    return this.transaction(async (w) => {
      const ap = this.queueAppender;
      const now = Date.now();
      let seq = this.queueSeq;
      let bytes = 0;
      for (const j of batch.jobs) {
        ap.appendVarchar(batch.queue);
        ap.appendBigInt(BigInt(++seq));
        ap.appendVarchar(j.key);
        ap.appendVarchar(j.orderKey);
        ap.appendVarchar(j.op);
        ap.appendVarchar(j.payload);
        ap.appendBigInt(BigInt(Math.trunc(j.logOffset)));
        ap.appendVarchar(j.sourceId);
        ap.appendBigInt(BigInt(Math.trunc(j.receivedAt)));
        ap.appendBigInt(BigInt(now));
        ap.appendInteger(0);
        ap.appendBigInt(BigInt(now));
        ap.appendNull();
        if (j.retryOf === undefined) ap.appendNull();
        else ap.appendVarchar(j.retryOf);
        ap.endRow();
        bytes += j.payload.length;
      }
      ap.flushSync();
      this.appendFailed(failed);
      if (batch.consumer !== undefined) {
        await w.run(
          `INSERT OR REPLACE INTO _tributary.consumer_offsets VALUES (${sqlString(batch.consumer)}, ${Math.trunc(batch.nextOffset ?? 0)}, now())`,
        );
      }
      // A batch rolled back leaves a gap in the numbers, which only order.
      this.queueSeq = seq;
      return bytes + failed.reduce((n, f) => n + f.json.length, 0);
    });
  }

  async nextDeliveries(queue: string, now: number, limit: number, perKey = 1): Promise<DeliveryJob[]> {
    // Ranked on the narrow columns first: the payloads are read for the chosen jobs alone.
    return this.readJobs(
      `WITH r AS (
         SELECT seq, order_key, not_before, row_number() OVER (PARTITION BY order_key ORDER BY seq) AS rn
         FROM _tributary.delivery_queue WHERE queue = $1),
       due AS (SELECT order_key FROM r WHERE rn = 1 AND not_before <= $2),
       pick AS (SELECT r.seq FROM r JOIN due USING (order_key) WHERE r.rn <= $4 ORDER BY r.seq LIMIT $3)
       SELECT ${JOB_COLUMNS} FROM _tributary.delivery_queue JOIN pick USING (seq)
       WHERE queue = $1 ORDER BY seq`,
      [
        queue,
        BigInt(Math.trunc(now)),
        BigInt(Math.max(0, Math.trunc(limit))),
        BigInt(Math.max(1, Math.trunc(perKey))),
      ],
    );
  }

  async expiredDeliveries(queue: string, enqueuedBefore: number, limit: number): Promise<DeliveryJob[]> {
    return this.readJobs(
      `SELECT ${JOB_COLUMNS} FROM _tributary.delivery_queue
       WHERE queue = $1 AND enqueued_at < $2 ORDER BY seq LIMIT $3`,
      [queue, BigInt(Math.trunc(enqueuedBefore)), BigInt(Math.max(0, Math.trunc(limit)))],
    );
  }

  private async readJobs(sql: string, params: (string | bigint)[]): Promise<DeliveryJob[]> {
    const r = await this.reader.runAndReadAll(sql, params);
    return (r.getRowObjects() as Record<string, unknown>[]).map(jobFromRow);
  }

  settleDeliveries(s: DeliverySettlement): Promise<void> {
    if (s.done.length === 0 && s.retry.length === 0 && s.failed.length === 0) return Promise.resolve();
    const q = sqlString(s.queue);
    const list = (seqs: readonly number[]) => seqs.map((n) => Math.trunc(n)).join(', ');
    return this.transaction(async (w) => {
      if (s.done.length > 0)
        await w.run(`DELETE FROM _tributary.delivery_queue WHERE queue = ${q} AND seq IN (${list(s.done)})`);
      if (s.retry.length > 0) {
        const values = s.retry
          .map(
            (r) =>
              `(${Math.trunc(r.seq)}, ${Math.trunc(r.attempts)}, ${Math.trunc(r.notBefore)}, ${sqlString(r.lastError)})`,
          )
          .join(', ');
        await w.run(
          `UPDATE _tributary.delivery_queue AS d SET attempts = v.a, not_before = v.nb, last_error = v.e
           FROM (VALUES ${values}) AS v(s, a, nb, e) WHERE d.queue = ${q} AND d.seq = v.s`,
        );
      }
      if (s.failed.length === 0) return 0;
      // Only deliveries still queued move to failed_events: one settled meanwhile is not stored twice.
      const removed = await w.runAndReadAll(
        `DELETE FROM _tributary.delivery_queue WHERE queue = ${q} AND seq IN (${list(s.failed.map((f) => f.seq))}) RETURNING seq`,
      );
      const gone = new Set(removed.getRows().map((r) => Number(r[0])));
      const failed = s.failed.filter((f) => gone.has(f.seq)).map((f) => storableFailedRow(f.row));
      this.appendFailed(failed);
      return failed.reduce((n, f) => n + f.json.length, 0);
    });
  }

  async deliveryBacklog(queue: string): Promise<DeliveryBacklog> {
    const conn = await this.instance.connect();
    try {
      const r = await conn.runAndReadAll(
        'SELECT count(*), min(enqueued_at) FROM _tributary.delivery_queue WHERE queue = $1',
        [queue],
      );
      const [n, oldest] = r.getRows()[0] ?? [0n, null];
      return {
        jobs: Number(n),
        oldestEnqueuedAt: oldest === null || oldest === undefined ? null : Number(oldest),
      };
    } finally {
      conn.closeSync();
    }
  }

  async consumerOffset(consumer: string): Promise<number> {
    const r = await this.reader.runAndReadAll(
      'SELECT next_offset FROM _tributary.consumer_offsets WHERE consumer = $1',
      [consumer],
    );
    return Number(r.getRows()[0]?.[0] ?? 0);
  }

  async existingKeys(
    keys: readonly { sourceId: string; messageId: string }[],
    sinceMs: number,
  ): Promise<Set<string>> {
    const found = new Set<string>();
    if (keys.length === 0) return found;
    const ids = [...new Set(keys.map((k) => k.messageId))];
    const params = ids.map((_, i) => `$${i + 2}`).join(', ');
    const r = await this.reader.runAndReadAll(
      `SELECT source_id, message_id FROM events
       WHERE received_at >= make_timestamptz(CAST($1 AS BIGINT) * 1000) AND message_id IN (${params})`,
      [BigInt(sinceMs), ...ids],
    );
    for (const [sourceId, messageId] of r.getRows()) found.add(eventKey(String(sourceId), String(messageId)));
    return found;
  }

  async *recentKeys(
    sinceMs: number,
  ): AsyncIterable<{ sourceId: string; messageId: string; receivedAt: number }> {
    const conn = await this.instance.connect();
    try {
      const result = await conn.stream(
        `SELECT source_id, message_id, epoch_ms(received_at) FROM events
         WHERE received_at >= make_timestamptz(CAST($1 AS BIGINT) * 1000)`,
        [BigInt(sinceMs)],
      );
      for (;;) {
        const chunk = await result.fetchChunk();
        if (!chunk || chunk.rowCount === 0) break;
        for (const [sourceId, messageId, receivedAt] of chunk.getRows()) {
          yield { sourceId: String(sourceId), messageId: String(messageId), receivedAt: Number(receivedAt) };
        }
      }
    } finally {
      conn.closeSync();
    }
  }

  async readEvents(from: number, to: number, limit: number): Promise<StoredEvent[]> {
    // Its own connection: several stages follow the loader at once.
    const conn = await this.instance.connect();
    try {
      return await readEventRows(conn, from, to, limit);
    } finally {
      conn.closeSync();
    }
  }

  /**
   * Runs a user's SQL from the admin API on a connection of its own: one SELECT over the
   * catalog's tables, vetted before it is bound, within `limits` (see `./duckdb-user-query.ts`).
   * The instance itself reads no files beyond its own (`lockDownDuckDB`, src/platform/duckdb/duckdb-options.ts).
   */
  async userQuery(
    sql: string,
    limits: UserQueryLimits,
    options: UserQueryOptions = {},
  ): Promise<UserQueryResult> {
    const conn = await this.instance.connect();
    try {
      if (!options.mask) return await runUserQuery(conn, sql, limits);
      if (!this.masking)
        throw new TributaryError('TRIB_ERR_QUERY_NOT_ALLOWED', [
          'masked queries need the masking salt (server setup)',
        ]);
      const masking = this.masking;
      // The views follow the tables (destinations add tables and columns as events come).
      await this.maskedViews.run(() => refreshMaskedViews(conn, this.catalog, masking));
      await conn.run(`USE ${quoteIdent(MASKED_CATALOG)}`);
      return await runUserQuery(conn, sql, limits, { onlyCatalog: MASKED_CATALOG });
    } finally {
      conn.closeSync();
    }
  }

  /**
   * How queries with `mask` are masked (`./duckdb-masked-views.ts`); set by the server. Unset,
   * a masked query is refused.
   */
  masking: MaskingOptions | undefined;
  private readonly maskedViews = new Turns();

  /**
   * Deletes the person's rows (see `Store.erase`): the two tables are rewritten without them
   * and the file's free blocks overwritten (`src/platform/duckdb/duckdb-erase.ts`), between
   * the loader's writes. The file's free blocks still hold them until `scrub`.
   */
  erase(target: ErasureTarget): Promise<{ events: number; failed: number }> {
    return this.writes.run(async () => {
      const conn = await this.instance.connect();
      try {
        const p = [
          JSON.stringify(target.userIds),
          JSON.stringify(target.anonymousIds),
          JSON.stringify(target.messageIds),
          JSON.stringify(target.values),
        ];
        const table = (name: string) => ({ catalog: this.catalog, schema: 'main', name });
        // The tables are made anew: the load statement and the appender are made again for them.
        this.loadEvents.destroySync();
        this.failedAppender.closeSync();
        const events = await eraseRows(
          conn,
          table('events'),
          `${inList('user_id', 1)} OR ${inList('anonymous_id', 2)} OR ${inList('message_id', 3)} OR ${containsAny('CAST(payload AS VARCHAR)', 4)}`,
          p,
        );
        const failed = await eraseRows(
          conn,
          table('failed_events'),
          `${inList("json_extract_string(payload, '$.userId')", 1)} OR ${inList("json_extract_string(payload, '$.anonymousId')", 2)} OR ${inList('message_id', 3)} OR ${containsAny('CAST(payload AS VARCHAR)', 4)}`,
          p,
        );
        return { events, failed };
      } finally {
        conn.closeSync();
        this.loadEvents = await this.writer.prepare(LOAD_EVENTS_SQL);
        this.failedAppender = await this.writer.createAppender('failed_events');
      }
    });
  }

  /**
   * Overwrites the free blocks of the warehouse file (after erasures: see
   * `src/platform/duckdb/duckdb-erase.ts`), while destinations' flushes into it wait.
   */
  scrub(): Promise<void> {
    return this.writes.run(async () => {
      const conn = await this.instance.connect();
      try {
        await this.checkpoints.checkpoint(() => scrubFreeBlocks(conn, this.catalog));
      } finally {
        conn.closeSync();
      }
    });
  }

  /** Runs trusted SQL (the server's own, never a user's): any statement, the whole result read. */
  private readonly failed = failedQueries((sql) => this.query(sql));
  readonly listFailed: FailedQueries['listFailed'] = (f) => this.failed.listFailed(f);
  readonly failedById: FailedQueries['failedById'] = (id) => this.failed.failedById(id);
  readonly failedToRetry: FailedQueries['failedToRetry'] = (f) => this.failed.failedToRetry(f);
  readonly markRetried: FailedQueries['markRetried'] = (ids) => this.failed.markRetried(ids);
  readonly retriesOf: FailedQueries['retriesOf'] = (ids) => this.failed.retriesOf(ids);
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
  readonly attemptsOf: LineageQueries['attemptsOf'] = (id) => this.lineage.attemptsOf(id);
  readonly purgeAttempts: LineageQueries['purgeAttempts'] = (t) => this.lineage.purgeAttempts(t);
  readonly saveReplayRun: LineageQueries['saveReplayRun'] = (r) => this.lineage.saveReplayRun(r);
  readonly replayRuns: LineageQueries['replayRuns'] = (o) => this.lineage.replayRuns(o);

  /**
   * Runs trusted SQL of the process's own on the store's DuckDB (not part of the `Store`
   * port): the embedded server's pending count over `log.raw_events`, and tests.
   */
  async query(sql: string): Promise<QueryResult> {
    const conn = await this.instance.connect();
    try {
      const reader = await conn.runAndReadAll(sql);
      const columns = reader.columnNames();
      const rows = reader.getRowObjectsJson() as Record<string, unknown>[];
      // JSON conversion renders 64-bit integers as strings; give back numbers where exact.
      const integer = reader.columnTypes().map((t) => INTEGER_TYPES.has(t.typeId));
      columns.forEach((name, i) => {
        if (!integer[i]) return;
        for (const row of rows) {
          const v = row[name];
          if (typeof v === 'string' && Number.isSafeInteger(Number(v))) row[name] = Number(v);
        }
      });
      return { columns, rows };
    } finally {
      conn.closeSync();
    }
  }

  private attemptWriter: { conn: DuckDBConnection; appender: DuckDBAppender } | undefined;
  private readonly attemptTurns = new Turns();

  /**
   * Delivery attempts through DuckDB's appender on a connection of their own (a flush commits
   * them): about 3 µs of CPU per attempt, where one INSERT of literal rows cost 43 (bench/lineage.ts).
   */
  recordAttempts(attempts: readonly DeliveryAttemptRow[]): Promise<void> {
    return this.attemptTurns.run(async () => {
      if (attempts.length === 0) return;
      this.attemptWriter ??= await (async () => {
        const conn = await this.instance.connect();
        return { conn, appender: await conn.createAppender('delivery_attempts') };
      })();
      const ap = this.attemptWriter.appender;
      try {
        for (const a of attempts) {
          const row = attemptRow(a);
          ap.appendVarchar(row.destination);
          ap.appendVarchar(row.messageId);
          ap.appendInteger(row.attempt);
          ap.appendVarchar(row.at);
          ap.appendVarchar(row.status);
          ap.appendDouble(row.latencyMs);
          if (row.detail === null) ap.appendNull();
          else ap.appendVarchar(row.detail);
          ap.endRow();
        }
        ap.flushSync();
      } catch (err) {
        // An appender whose flush failed holds the rows still: start over with a new one.
        this.attemptWriter.appender.closeSync();
        this.attemptWriter.conn.closeSync();
        this.attemptWriter = undefined;
        throw err;
      }
    });
  }

  async close(): Promise<void> {
    await this.attemptTurns.idle();
    try {
      this.attemptWriter?.appender.closeSync();
    } catch {
      // rows it could not flush were reported to the caller already
    }
    this.attemptWriter?.conn.closeSync();
    this.loadEvents.destroySync();
    this.failedAppender.closeSync();
    this.configVersions.close();
    this.queueAppender.closeSync();
    this.writer.closeSync();
    this.reader.closeSync();
  }
}

/**
 * One event per line: log offset, receivedAt (epoch ms), source id and message id as JSON
 * strings, then the payload. The fields are separated by U+001F and the lines by U+001E, which
 * valid JSON text never holds raw (and the ids are JSON-escaped), so DuckDB hands over a batch
 * as one string: converting it value by value costs the event loop several times more.
 */
const EVENT_LINE = `concat(log_offset, chr(31), epoch_ms(received_at), chr(31), to_json(source_id), chr(31),
  to_json(message_id), chr(31), CAST(payload AS VARCHAR))`;

async function readEventRows(
  conn: DuckDBConnection,
  from: number,
  to: number,
  limit: number,
): Promise<StoredEvent[]> {
  // The last offset within the limit (null when fewer events remain): a cheap top-N over the
  // offsets alone, so the batch's text is built by a range scan, not a sort of whole rows.
  const r = await conn.runAndReadAll(
    `WITH cut AS (
       SELECT max(log_offset) AS hi, count(*) AS n FROM (
         SELECT log_offset FROM events WHERE log_offset >= $1 AND log_offset < $2 ORDER BY log_offset LIMIT $3))
     SELECT count(*), string_agg(${EVENT_LINE}, chr(30) ORDER BY log_offset)
     FROM events, cut WHERE log_offset >= $1 AND log_offset < $2 AND (cut.n < $3 OR log_offset <= cut.hi)`,
    [BigInt(from), BigInt(to), BigInt(limit)],
  );
  const [count, text] = r.getRows()[0] ?? [0n, null];
  const events =
    text === null || text === undefined ? [] : await parseEventLines(String(text), Number(count));
  if (events === undefined) return readEventRowsOneByOne(conn, from, to, limit);
  // The range holds every event of its last offset: the limit cuts inside it, as a LIMIT would.
  return events.length > limit ? events.slice(0, limit) : events;
}

/** The lines of `EVENT_LINE`, or undefined when they are not `count` well-formed lines. */
async function parseEventLines(text: string, count: number): Promise<StoredEvent[] | undefined> {
  const lines = text.split('\u001e');
  if (lines.length !== count) return undefined;
  const events: StoredEvent[] = new Array(count);
  // A stage reads tens of thousands of lines at once: requests get their turns in between.
  const slice = new Slice();
  for (let i = 0; i < count; i++) {
    if ((i & 63) === 0 && slice.due()) await slice.pass();
    const line = lines[i]!;
    const a = line.indexOf('\u001f');
    const b = line.indexOf('\u001f', a + 1);
    const c = line.indexOf('\u001f', b + 1);
    const d = line.indexOf('\u001f', c + 1);
    if (a < 0 || b < 0 || c < 0 || d < 0) return undefined;
    events[i] = {
      logOffset: Number(line.slice(0, a)),
      receivedAt: Number(line.slice(a + 1, b)),
      sourceId: jsonString(line.slice(b + 1, c)),
      messageId: jsonString(line.slice(c + 1, d)),
      json: line.slice(d + 1),
    };
  }
  return events;
}

/** A JSON string literal's value; most ids need no unescaping. */
function jsonString(literal: string): string {
  return literal.includes('\\') ? (JSON.parse(literal) as string) : literal.slice(1, -1);
}

/** The same rows, converted value by value: for a batch whose text did not split cleanly. */
async function readEventRowsOneByOne(
  conn: DuckDBConnection,
  from: number,
  to: number,
  limit: number,
): Promise<StoredEvent[]> {
  const r = await conn.runAndReadAll(
    `SELECT log_offset, source_id, message_id, epoch_ms(received_at), CAST(payload AS VARCHAR) FROM events
     WHERE log_offset >= $1 AND log_offset < $2 ORDER BY log_offset LIMIT $3`,
    [BigInt(from), BigInt(to), BigInt(limit)],
  );
  return r.getRows().map(([logOffset, sourceId, messageId, receivedAt, json]) => ({
    logOffset: Number(logOffset),
    sourceId: String(sourceId),
    messageId: String(messageId),
    receivedAt: Number(receivedAt),
    json: String(json),
  }));
}
