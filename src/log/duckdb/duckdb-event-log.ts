import { EventEmitter } from 'node:events';
import type { DuckDBConnection, DuckDBInstance, DuckDBPreparedStatement } from '@duckdb/node-api';
import type {
  AppendResult,
  ConsumeOptions,
  Delivered,
  EventLog,
  RawEvent,
  Subscription,
} from '../event-log.js';
import { encodeRecord } from './entry-codec.js';

export interface DuckDBEventLogOptions {
  /** Catalog (attached database) holding the log tables. Default `log`. */
  catalog?: string;
  /** Most records one group commit writes; the rest wait for the next. Default 20,000. */
  maxGroupRecords?: number;
  /**
   * Records of the latest commits kept in memory, so a consumer that keeps up reads them
   * without a query or a parse. Default 100,000.
   */
  tailRecords?: number;
  /**
   * WAL bytes after which the log checkpoints, between commits. DuckDB's own automatic
   * checkpoint runs inside the commit that crosses its threshold, or not at all while other
   * writes are active, as they nearly always are under load. Default 32 MB.
   */
  checkpointBytes?: number;
  /**
   * Commits in flight at once, each on its own connection. Default 2: while one commit
   * waits for the disk, the next is being written.
   */
  concurrentCommits?: number;
  /** How often an idle consumer looks for records appended by another process. Default 500 ms. */
  pollIntervalMs?: number;
}

interface Writer {
  conn: DuckDBConnection;
  insert: DuckDBPreparedStatement;
}

function schemaSql(q: string): string[] {
  return [
    `CREATE TABLE IF NOT EXISTS ${q}.records (
      log_offset BIGINT NOT NULL,
      committed_at TIMESTAMPTZ NOT NULL,
      source_id VARCHAR NOT NULL,
      message_id VARCHAR NOT NULL,
      received_at TIMESTAMPTZ NOT NULL,
      status VARCHAR NOT NULL,
      code VARCHAR,
      reason VARCHAR,
      event VARCHAR NOT NULL)`,
    `CREATE TABLE IF NOT EXISTS ${q}.consumer_offsets (
      consumer VARCHAR PRIMARY KEY,
      next_offset BIGINT NOT NULL,
      updated_at TIMESTAMPTZ NOT NULL)`,
    `CREATE OR REPLACE VIEW ${q}.raw_events AS
      SELECT log_offset, source_id, message_id, received_at, status, code, reason,
             CAST(event AS JSON) AS event, committed_at
      FROM records`,
  ];
}

/**
 * One group commit: the lines (`<envelope JSON>\t<event JSON>`) arrive as one string and
 * DuckDB splits them into one row per record on its own threads.
 */
function insertSql(q: string): string {
  return `INSERT INTO ${q}.records
    SELECT $1 + i - 1, now(), f[1], f[2], make_timestamptz(CAST(f[3] AS BIGINT) * 1000), f[4], f[5], f[6],
           substr(line, strpos(line, chr(9)) + 1)
    FROM (
      SELECT line, i,
             json_extract_string(split_part(line, chr(9), 1),
               ['$.source_id', '$.message_id', '$.received_at', '$.status', '$.code', '$.reason']) AS f
      FROM (SELECT unnest(lines) AS line, generate_subscripts(lines, 1) AS i
            FROM (SELECT string_split($2, chr(10)) AS lines)))`;
}

interface PendingAppend {
  records: readonly RawEvent[];
  lines: string;
  count: number;
  resolve: (r: AppendResult) => void;
  reject: (err: unknown) => void;
}

/**
 * The embedded event log: an append-only table (`records`, one row per record) in its own
 * DuckDB file.
 *
 * Appends are group-committed: while commits are in flight (DuckDB fsyncs its WAL on
 * commit), every append that arrives waits and goes into the next commit, so a burst of
 * requests costs one disk flush. A commit sends its records as one string of lines and
 * DuckDB splits it into rows on its own threads. One row per record keeps checkpoints
 * bounded: DuckDB rewrites the unfilled last row group at each checkpoint, and rows of
 * whole group commits (megabytes each) would make that group, and every checkpoint, grow
 * with the log. The view `raw_events` is the queryable raw archive that replay reads.
 */
export class DuckDBEventLog implements EventLog {
  private readonly catalog: string;
  private readonly maxGroupRecords: number;
  private readonly pollIntervalMs: number;
  private readonly appended = new EventEmitter();
  private readonly pending: PendingAppend[] = [];
  private pendingRecords = 0;
  /** Next offset to assign. */
  private nextOffset = 0;
  /** Every offset below this is durable or belongs to a failed commit: readers stop here. */
  private durableEnd = 0;
  /** Commits in flight, by first offset, and whether each has finished. */
  private readonly inFlight = new Map<number, { end: number; done: boolean }>();
  private readonly idleWriters: Writer[];
  private closed = false;
  private readonly subscriptions = new Set<Subscription>();

  private constructor(
    private readonly instance: DuckDBInstance,
    writers: Writer[],
    private readonly reader: DuckDBConnection,
    options: DuckDBEventLogOptions,
  ) {
    this.catalog = options.catalog ?? 'log';
    this.maxGroupRecords = options.maxGroupRecords ?? 20_000;
    this.pollIntervalMs = options.pollIntervalMs ?? 500;
    this.appended.setMaxListeners(0);
    this.idleWriters = writers;
    this.allWriters = [...writers];
    this.maxTailRecords = options.tailRecords ?? 100_000;
    this.checkpointBytes = options.checkpointBytes ?? 32 * 1024 * 1024;
  }

  private readonly allWriters: Writer[];
  /** The latest committed groups, in offset order (failed commits leave gaps). */
  private readonly tail: { first: number; records: readonly RawEvent[] }[] = [];
  private tailCount = 0;
  private readonly maxTailRecords: number;
  private readonly checkpointBytes: number;
  private walBytes = 0;
  private checkpointDue = false;
  private checkpointing = false;
  /** Reports a checkpoint that failed (it is retried after the next commit). */
  onCheckpointError: (err: unknown) => void = () => {};

  /** Opens (creating if needed) the log tables in `catalog` of `instance`. */
  static async open(instance: DuckDBInstance, options: DuckDBEventLogOptions = {}): Promise<DuckDBEventLog> {
    const catalog = options.catalog ?? 'log';
    const q = quoteIdent(catalog);
    const setup = await instance.connect();
    for (const sql of schemaSql(q)) await setup.run(sql);
    setup.closeSync();
    const writers: Writer[] = [];
    for (let i = 0; i < (options.concurrentCommits ?? 2); i++) {
      const conn = await instance.connect();
      writers.push({
        conn,
        insert: await conn.prepare(insertSql(q)),
      });
    }
    const reader = await instance.connect();
    const log = new DuckDBEventLog(instance, writers, reader, options);
    const end = await reader.runAndReadAll(`SELECT COALESCE(MAX(log_offset) + 1, 0) FROM ${q}.records`);
    log.nextOffset = Number(end.getRows()[0]?.[0] ?? 0);
    log.durableEnd = log.nextOffset;
    return log;
  }

  append(records: readonly RawEvent[]): Promise<AppendResult> {
    if (this.closed) return Promise.reject(new Error('event log is closed'));
    if (records.length === 0) return Promise.resolve({ firstOffset: this.nextOffset });
    let lines = encodeRecord(records[0]!);
    for (let i = 1; i < records.length; i++) lines += `\n${encodeRecord(records[i]!)}`;
    return new Promise<AppendResult>((resolve, reject) => {
      this.pending.push({ records, lines, count: records.length, resolve, reject });
      this.pendingRecords += records.length;
      this.startCommits();
    });
  }

  /**
   * Starts a commit on every idle writer connection while appends wait. Offsets are assigned
   * when a commit starts; commits may finish out of order, so readers only see offsets below
   * `durableEnd`, the end of the finished prefix.
   */
  private startCommits(): void {
    if (this.checkpointDue) {
      if (this.inFlight.size === 0 && !this.checkpointing) void this.checkpoint();
      return;
    }
    while (this.pending.length > 0 && this.idleWriters.length > 0) {
      let take = 0;
      let count = 0;
      while (
        take < this.pending.length &&
        (take === 0 || count + this.pending[take]!.count <= this.maxGroupRecords)
      ) {
        count += this.pending[take]!.count;
        take++;
      }
      const group = this.pending.splice(0, take);
      this.pendingRecords -= count;
      const first = this.nextOffset;
      this.nextOffset += count;
      const writer = this.idleWriters.pop()!;
      this.inFlight.set(first, { end: first + count, done: false });
      void this.commit(writer, group, first);
    }
  }

  private async commit(writer: Writer, group: PendingAppend[], first: number): Promise<void> {
    const payload = group.length === 1 ? group[0]!.lines : group.map((g) => g.lines).join('\n');
    let error: unknown;
    try {
      writer.insert.bindBigInt(1, BigInt(first));
      writer.insert.bindVarchar(2, payload);
      await writer.insert.run();
    } catch (err) {
      error = err ?? new Error('commit failed');
    }
    this.inFlight.get(first)!.done = true;
    this.idleWriters.push(writer);
    if (error === undefined) {
      this.walBytes += payload.length;
      if (this.walBytes >= this.checkpointBytes) this.checkpointDue = true;
    }
    if (error === undefined && this.maxTailRecords > 0) this.keepInTail(first, group);
    // A failed commit leaves a hole of unused offsets: offsets only grow, never get reused.
    let advanced = false;
    for (let c = this.inFlight.get(this.durableEnd); c?.done; c = this.inFlight.get(this.durableEnd)) {
      this.inFlight.delete(this.durableEnd);
      this.durableEnd = c.end;
      advanced = true;
    }
    let offset = first;
    for (const g of group) {
      if (error === undefined) g.resolve({ firstOffset: offset });
      else g.reject(error);
      offset += g.count;
    }
    if (advanced) this.appended.emit('appended', this.durableEnd);
    this.startCommits();
  }

  /**
   * Checkpoints with no commit in flight; appends queue meanwhile and go into the next group
   * commit. A failure (another connection was writing) is retried after the next commit.
   */
  private async checkpoint(): Promise<void> {
    this.checkpointing = true;
    try {
      await this.allWriters[0]!.conn.run(`CHECKPOINT ${quoteIdent(this.catalog)}`);
      this.walBytes = 0;
    } catch (err) {
      this.onCheckpointError(err);
    } finally {
      this.checkpointDue = false;
      this.checkpointing = false;
      this.startCommits();
    }
  }

  private keepInTail(first: number, group: PendingAppend[]): void {
    const records = group.length === 1 ? group[0]!.records : group.flatMap((g) => g.records);
    let at = this.tail.length;
    while (at > 0 && this.tail[at - 1]!.first > first) at--;
    this.tail.splice(at, 0, { first, records });
    this.tailCount += records.length;
    while (this.tailCount > this.maxTailRecords && this.tail.length > 1) {
      this.tailCount -= this.tail.shift()!.records.length;
    }
  }

  /** Serves a read from the in-memory tail when `from` is inside it. */
  private readTail(
    from: number,
    max: number,
    end: number,
  ): { records: Delivered[]; next: number } | undefined {
    if (this.tail.length === 0 || from < this.tail[0]!.first) return undefined;
    const records: Delivered[] = [];
    for (const chunk of this.tail) {
      if (chunk.first >= end || records.length >= max) break;
      if (chunk.first + chunk.records.length <= from) continue;
      for (let i = Math.max(0, from - chunk.first); i < chunk.records.length; i++) {
        records.push({ ...chunk.records[i]!, offset: chunk.first + i });
      }
    }
    // Nothing found: [from, end) holds only offsets of failed commits.
    return { records, next: records.length > 0 ? records[records.length - 1]!.offset + 1 : end };
  }

  endOffset(): number {
    return this.durableEnd;
  }

  /** Records waiting for the next group commit. */
  queuedRecords(): number {
    return this.pendingRecords;
  }

  async committedOffset(group: string, conn: DuckDBConnection = this.reader): Promise<number> {
    const r = await conn.runAndReadAll(
      `SELECT next_offset FROM ${quoteIdent(this.catalog)}.consumer_offsets WHERE consumer = $1`,
      [group],
    );
    return Number(r.getRows()[0]?.[0] ?? 0);
  }

  /**
   * Reads records from `from` on: the rows overlapping `[from, from + max)`. Rows are never
   * split across reads nor fetched twice, so a read returns at most one group commit past `max`.
   */
  async read(from: number, max: number, conn: DuckDBConnection = this.reader): Promise<Delivered[]> {
    return (await this.readFrom(from, max, conn)).records;
  }

  /**
   * Reads the durable rows overlapping `[from, from + max)`; `next` is where the following
   * read starts. Offsets of a failed commit were never written: a read at such a hole skips
   * to the next row, or to the durable end when nothing follows.
   */
  private async readFrom(
    from: number,
    max: number,
    conn: DuckDBConnection,
  ): Promise<{ records: Delivered[]; next: number }> {
    const end = this.durableEnd;
    if (from >= end) return { records: [], next: from };
    const cached = this.readTail(from, max, end);
    if (cached) return cached;
    const q = quoteIdent(this.catalog);
    const r = await conn.runAndReadAll(
      `SELECT log_offset, source_id, message_id, epoch_ms(received_at), status, code, reason, event
       FROM ${q}.records WHERE log_offset >= $1 AND log_offset < least($2, $3) ORDER BY log_offset`,
      [BigInt(from), BigInt(from + Math.max(1, max)), BigInt(end)],
    );
    if (r.currentRowCount === 0) {
      // A failed commit left a hole at `from`: continue at the next record, if any.
      const next = await conn.runAndReadAll(
        `SELECT min(log_offset) FROM ${q}.records WHERE log_offset >= $1 AND log_offset < $2`,
        [BigInt(from), BigInt(end)],
      );
      const at = next.getRows()[0]?.[0];
      return { records: [], next: at === null || at === undefined ? end : Number(at) };
    }
    const records: Delivered[] = [];
    for (const [offset, sourceId, messageId, receivedAt, status, code, reason, event] of r.getRows()) {
      const d: Delivered = {
        offset: Number(offset),
        sourceId: String(sourceId),
        messageId: String(messageId),
        receivedAt: Number(receivedAt),
        status: status as Delivered['status'],
        json: String(event),
      };
      if (code !== null) d.code = String(code);
      if (reason !== null) d.reason = String(reason);
      records.push(d);
    }
    return { records, next: records.length > 0 ? records[records.length - 1]!.offset + 1 : from };
  }

  consume(
    group: string,
    handle: (batch: Delivered[]) => Promise<void>,
    options: ConsumeOptions = {},
  ): Subscription {
    const maxBatch = options.maxBatch ?? 5000;
    const lingerMs = options.lingerMs ?? 0;
    let stopWake: (() => void) | undefined;
    let stopping = false;
    let position = -1;
    let wake: (() => void) | undefined;
    const drainWaiters: { target: number; resolve: () => void }[] = [];
    let notified = false;
    const onAppend = () => {
      notified = true;
      wake?.();
    };
    this.appended.on('appended', onAppend);

    const settleDrains = () => {
      for (let i = drainWaiters.length - 1; i >= 0; i--) {
        if (position >= drainWaiters[i]!.target) {
          drainWaiters[i]!.resolve();
          drainWaiters.splice(i, 1);
        }
      }
    };

    const loop = (async () => {
      const conn = await this.instance.connect();
      try {
        position = await this.committedOffset(group, conn);
        settleDrains();
        while (!stopping) {
          let batch: Delivered[];
          notified = false;
          try {
            const r = await this.readFrom(position, maxBatch, conn);
            batch = r.records;
            if (batch.length === 0) position = r.next;
          } catch (err) {
            options.onError?.(err);
            await this.sleep(this.pollIntervalMs, (w) => (wake = w));
            continue;
          }
          if (batch.length === 0) {
            settleDrains();
            // An append that finished while we were reading is not missed.
            if (!notified) await this.sleep(this.pollIntervalMs, (w) => (wake = w));
            continue;
          }
          try {
            await handle(batch);
          } catch (err) {
            options.onError?.(err);
            await this.sleep(Math.min(5000, this.pollIntervalMs * 2), (w) => (wake = w));
            continue;
          }
          position = batch[batch.length - 1]!.offset + 1;
          try {
            await conn.run(
              `INSERT OR REPLACE INTO ${quoteIdent(this.catalog)}.consumer_offsets VALUES ($1, $2, now())`,
              [group, BigInt(position)],
            );
          } catch (err) {
            options.onError?.(err);
          }
          settleDrains();
          if (lingerMs > 0 && batch.length < maxBatch && !stopping) {
            await this.sleep(lingerMs, (w) => (stopWake = w));
          }
        }
      } finally {
        conn.closeSync();
      }
    })();

    const sub: Subscription = {
      stop: async () => {
        stopping = true;
        wake?.();
        stopWake?.();
        await loop;
        this.appended.off('appended', onAppend);
        this.subscriptions.delete(sub);
        for (const w of drainWaiters) w.resolve();
      },
      drained: () => {
        const target = this.durableEnd;
        if (position >= target) return Promise.resolve();
        return new Promise<void>((resolve) => drainWaiters.push({ target, resolve }));
      },
    };
    this.subscriptions.add(sub);
    return sub;
  }

  private sleep(ms: number, setWake: (w: () => void) => void): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      setWake(done);
    });
  }

  async close(): Promise<void> {
    for (const sub of [...this.subscriptions]) await sub.stop();
    while (this.pending.length > 0 || this.inFlight.size > 0 || this.checkpointing) {
      await new Promise((r) => setTimeout(r, 5));
    }
    this.closed = true;
    for (const w of this.allWriters) {
      w.insert.destroySync();
      w.conn.closeSync();
    }
    this.reader.closeSync();
  }
}

export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}
