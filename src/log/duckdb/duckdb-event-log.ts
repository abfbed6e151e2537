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
import { decodeEntry, encodeRecord } from './entry-codec.js';

export interface DuckDBEventLogOptions {
  /** Catalog (attached database) holding the log tables. Default `log`. */
  catalog?: string;
  /** Most records one group commit writes; the rest wait for the next. Default 20,000. */
  maxGroupRecords?: number;
  /** How often an idle consumer looks for records appended by another process. Default 500 ms. */
  pollIntervalMs?: number;
}

interface PendingAppend {
  lines: string;
  count: number;
  resolve: (r: AppendResult) => void;
  reject: (err: unknown) => void;
}

/**
 * The embedded event log: an append-only table in its own DuckDB file.
 *
 * Appends are group-committed: while one commit is in flight (DuckDB fsyncs its WAL on
 * commit), every append that arrives waits and goes into the next commit as one row, so
 * a burst of requests costs one disk flush. Each row holds a contiguous range of offsets
 * and the records as lines (`<envelope JSON>\t<event JSON>`); the view `raw_events` shows
 * one row per record and is the queryable raw archive that replay reads.
 */
export class DuckDBEventLog implements EventLog {
  private readonly catalog: string;
  private readonly maxGroupRecords: number;
  private readonly pollIntervalMs: number;
  private readonly appended = new EventEmitter();
  private readonly pending: PendingAppend[] = [];
  private pendingRecords = 0;
  private flushing = false;
  private nextOffset = 0;
  private closed = false;
  private readonly subscriptions = new Set<Subscription>();

  private constructor(
    private readonly instance: DuckDBInstance,
    private readonly writer: DuckDBConnection,
    private readonly reader: DuckDBConnection,
    private readonly insert: DuckDBPreparedStatement,
    options: DuckDBEventLogOptions,
  ) {
    this.catalog = options.catalog ?? 'log';
    this.maxGroupRecords = options.maxGroupRecords ?? 20_000;
    this.pollIntervalMs = options.pollIntervalMs ?? 500;
    this.appended.setMaxListeners(0);
  }

  /** Opens (creating if needed) the log tables in `catalog` of `instance`. */
  static async open(instance: DuckDBInstance, options: DuckDBEventLogOptions = {}): Promise<DuckDBEventLog> {
    const catalog = options.catalog ?? 'log';
    const q = quoteIdent(catalog);
    const writer = await instance.connect();
    await writer.run(`CREATE TABLE IF NOT EXISTS ${q}.entries (
      first_offset BIGINT NOT NULL,
      last_offset BIGINT NOT NULL,
      committed_at TIMESTAMPTZ NOT NULL,
      payload VARCHAR NOT NULL)`);
    await writer.run(`CREATE TABLE IF NOT EXISTS ${q}.consumer_offsets (
      consumer VARCHAR PRIMARY KEY,
      next_offset BIGINT NOT NULL,
      updated_at TIMESTAMPTZ NOT NULL)`);
    await writer.run(`CREATE OR REPLACE VIEW ${q}.raw_events AS
      SELECT first_offset + i - 1 AS log_offset,
             json_extract_string(env, '$.source_id') AS source_id,
             json_extract_string(env, '$.message_id') AS message_id,
             make_timestamptz(CAST(json_extract(env, '$.received_at') AS BIGINT) * 1000) AS received_at,
             json_extract_string(env, '$.status') AS status,
             json_extract_string(env, '$.code') AS code,
             json_extract_string(env, '$.reason') AS reason,
             CAST(event AS JSON) AS event,
             committed_at
      FROM (
        SELECT first_offset, committed_at, i,
               split_part(line, chr(9), 1) AS env,
               substr(line, strpos(line, chr(9)) + 1) AS event
        FROM (
          SELECT first_offset, committed_at,
                 unnest(string_split(payload, chr(10))) AS line,
                 generate_subscripts(string_split(payload, chr(10)), 1) AS i
          FROM entries))`);
    const insert = await writer.prepare(`INSERT INTO ${q}.entries VALUES ($1, $2, now(), $3)`);
    const reader = await instance.connect();
    const log = new DuckDBEventLog(instance, writer, reader, insert, options);
    const end = await reader.runAndReadAll(`SELECT COALESCE(MAX(last_offset) + 1, 0) FROM ${q}.entries`);
    log.nextOffset = Number(end.getRows()[0]?.[0] ?? 0);
    return log;
  }

  append(records: readonly RawEvent[]): Promise<AppendResult> {
    if (this.closed) return Promise.reject(new Error('event log is closed'));
    if (records.length === 0) return Promise.resolve({ firstOffset: this.nextOffset });
    let lines = encodeRecord(records[0]!);
    for (let i = 1; i < records.length; i++) lines += `\n${encodeRecord(records[i]!)}`;
    return new Promise<AppendResult>((resolve, reject) => {
      this.pending.push({ lines, count: records.length, resolve, reject });
      this.pendingRecords += records.length;
      if (!this.flushing) void this.flushLoop();
    });
  }

  private async flushLoop(): Promise<void> {
    this.flushing = true;
    try {
      while (this.pending.length > 0) {
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
        const last = first + count - 1;
        const payload = group.length === 1 ? group[0]!.lines : group.map((g) => g.lines).join('\n');
        try {
          this.insert.bindBigInt(1, BigInt(first));
          this.insert.bindBigInt(2, BigInt(last));
          this.insert.bindVarchar(3, payload);
          await this.insert.run();
        } catch (err) {
          for (const g of group) g.reject(err);
          continue;
        }
        this.nextOffset = last + 1;
        let offset = first;
        for (const g of group) {
          g.resolve({ firstOffset: offset });
          offset += g.count;
        }
        this.appended.emit('appended', this.nextOffset);
      }
    } finally {
      this.flushing = false;
    }
  }

  endOffset(): number {
    return this.nextOffset;
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

  /** Reads records from `from` on, at most `max` of them (whole rows, trimmed to `from`). */
  async read(from: number, max: number, conn: DuckDBConnection = this.reader): Promise<Delivered[]> {
    const r = await conn.runAndReadAll(
      `SELECT first_offset, payload FROM ${quoteIdent(this.catalog)}.entries
       WHERE last_offset >= $1 ORDER BY first_offset LIMIT 64`,
      [BigInt(from)],
    );
    const out: Delivered[] = [];
    for (const [firstOffset, payload] of r.getRows()) {
      let offset = Number(firstOffset);
      for (const line of String(payload).split('\n')) {
        if (out.length >= max) return out;
        if (offset >= from) out.push(decodeEntry(line, offset));
        offset++;
      }
    }
    return out;
  }

  consume(
    group: string,
    handle: (batch: Delivered[]) => Promise<void>,
    options: ConsumeOptions = {},
  ): Subscription {
    const maxBatch = options.maxBatch ?? 5000;
    let stopping = false;
    let position = -1;
    let wake: (() => void) | undefined;
    const drainWaiters: { target: number; resolve: () => void }[] = [];
    const onAppend = () => wake?.();
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
          try {
            batch = position < this.nextOffset ? await this.read(position, maxBatch, conn) : [];
          } catch (err) {
            options.onError?.(err);
            await this.sleep(this.pollIntervalMs, (w) => (wake = w));
            continue;
          }
          if (batch.length === 0) {
            settleDrains();
            await this.sleep(this.pollIntervalMs, (w) => (wake = w));
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
        }
      } finally {
        conn.closeSync();
      }
    })();

    const sub: Subscription = {
      stop: async () => {
        stopping = true;
        wake?.();
        await loop;
        this.appended.off('appended', onAppend);
        this.subscriptions.delete(sub);
        for (const w of drainWaiters) w.resolve();
      },
      drained: () => {
        const target = this.nextOffset;
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
    while (this.flushing || this.pending.length > 0) await new Promise((r) => setTimeout(r, 5));
    this.closed = true;
    this.insert.destroySync();
    this.writer.closeSync();
    this.reader.closeSync();
  }
}

export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}
