import { EventEmitter } from 'node:events';
import { mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import {
  type DuckDBConnection,
  type DuckDBInstance,
  type DuckDBPreparedStatement,
  DuckDBTimestampTZValue,
} from '@duckdb/node-api';
import { TributaryError } from '../../errors.js';
import { Pause } from '../../platform/async/pause.js';
import {
  containsAny,
  eraseRows,
  inList,
  type RowTarget,
  scrubFreeBlocks,
} from '../../platform/duckdb/duckdb-erase.js';
import { quoteIdent, sqlString } from '../../platform/duckdb/duckdb-sql.js';
import { largeTextCompression } from '../../platform/duckdb/duckdb-storage.js';
import type {
  AppendResult,
  ConsumeOptions,
  Delivered,
  EventLog,
  RawEvent,
  Subscription,
} from '../event-log.js';
import type { ArchiveRange, RawArchive } from '../raw-archive.js';
import { encodeEnvelope } from './entry-codec.js';

export interface DuckDBEventLogOptions {
  /** Folder of the segment files (`seg-<first offset>.duckdb`). Created if missing. */
  segmentDir: string;
  /** Catalog (attached database) holding consumer offsets and the `raw_events` view. Default `log`. */
  catalog?: string;
  /** Most records one group commit writes; the rest wait for the next. Default 20,000. */
  maxGroupRecords?: number;
  /**
   * Records of the latest commits kept in memory, so a consumer that keeps up reads them
   * without a query or a parse. Default 100,000.
   */
  tailRecords?: number;
  /**
   * Bytes of records after which new commits go to a new segment and the full one is
   * checkpointed in the background. Default 64 MB.
   */
  segmentBytes?: number;
  /**
   * Commits in flight at once, each on its own connection. Default 1: DuckDB commits to one
   * database file one after the other anyway, so a second commit in flight mostly waits,
   * and splitting the waiting appends over two commits doubles DuckDB's fixed cost per
   * commit. With one, everything that arrives during a commit goes into the next.
   */
  concurrentCommits?: number;
  /** How often an idle consumer looks for records appended by another process. Default 500 ms. */
  pollIntervalMs?: number;
}

interface Writer {
  conn: DuckDBConnection;
  /** The insert into the active segment; prepared once segments are known. */
  insert?: DuckDBPreparedStatement;
}

/** One segment: a DuckDB file holding the records of offsets `[first, end)`. */
interface Segment {
  first: number;
  end: number;
  catalog: string;
  bytes: number;
}

const SEGMENT_FILE = /^seg-(\d{20})\.duckdb$/;

function segmentFile(first: number): string {
  return `seg-${String(first).padStart(20, '0')}.duckdb`;
}

/**
 * Refuses to open a log that lost a segment file: `<catalog>.segments` lists every segment
 * the log created, and a file listed but absent (or no file at all where consumers have read
 * records) would otherwise start as an empty archive, its events silently gone. Files found
 * but not listed (a log from before the list) are listed.
 */
async function checkSegments(
  conn: DuckDBConnection,
  catalog: string,
  segmentDir: string,
  files: readonly number[],
): Promise<void> {
  const c = quoteIdent(catalog);
  await conn.run(`CREATE TABLE IF NOT EXISTS ${c}.segments (
    first_offset BIGINT PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL)`);
  const listed = (await conn.runAndReadAll(`SELECT first_offset FROM ${c}.segments ORDER BY first_offset`))
    .getRows()
    .map(([first]) => Number(first));
  const found = new Set(files);
  const missing = listed.filter((first) => !found.has(first));
  if (missing.length === 0 && files.length === 0) {
    // A log from before the list, every file gone: its consumers read records from somewhere.
    const read = await conn.runAndReadAll(`SELECT COALESCE(max(next_offset), 0) FROM ${c}.consumer_offsets`);
    if (Number(read.getRows()[0]?.[0] ?? 0) > 0) missing.push(0);
  }
  if (missing.length > 0) {
    throw new TributaryError('TRIB_ERR_LOG_SEGMENT_MISSING', [
      missing.map(segmentFile).join(', '),
      segmentDir,
      missing.join(', '),
    ]);
  }
  for (const first of files) {
    await conn.run(`INSERT OR IGNORE INTO ${c}.segments VALUES ($1, now())`, [BigInt(first)]);
  }
}

function segmentCatalog(first: number): string {
  return `log_seg_${first}`;
}

/**
 * A segment's table. The events are JSON text with unique ids in it, which DuckDB's
 * dictionary compression cannot shrink, and a checkpoint that analyses them for each method
 * costs CPU on every event: their compression is forced. zstd in a segment file of a format
 * that has it (`largeTextCompression`), else FSST (in a test of 100,000 events, 1.81 instead
 * of 2.35 µs of CPU per event at a checkpoint, a file 4% smaller). Segments made before keep
 * their own choice.
 */
function recordsTable(eventCompression: string): string {
  return `(
  log_offset BIGINT NOT NULL,
  committed_at TIMESTAMPTZ NOT NULL,
  source_id VARCHAR NOT NULL,
  message_id VARCHAR NOT NULL,
  received_at TIMESTAMPTZ NOT NULL,
  status VARCHAR NOT NULL,
  code VARCHAR,
  reason VARCHAR,
  event VARCHAR ${eventCompression} NOT NULL)`;
}

/**
 * One group commit: the first offset in `$1`, the commit time in `$4`, the envelopes (JSON
 * lines) in `$2` and the events (JSON lines) in `$3`, the n-th of each belonging to one
 * record. DuckDB splits both strings into rows on its own threads; the events are stored as
 * split, without a scan of their text.
 *
 * The statement is prepared once and must stay valid as prepared: DuckDB binds and
 * optimizes it again on every run (about a millisecond of CPU, whatever the number of
 * records) when it calls `now()` or a parameter's type is left to inference. Hence the
 * explicit casts and the commit time as a parameter.
 */
function insertSql(catalog: string): string {
  return `INSERT INTO ${quoteIdent(catalog)}.records
    SELECT CAST($1 AS BIGINT) + i - 1, CAST($4 AS TIMESTAMPTZ), f[1], f[2],
           make_timestamptz(CAST(f[3] AS BIGINT) * 1000), f[4], f[5], f[6], event
    FROM (
      SELECT event, i,
             json_extract_string(envelope,
               ['$.source_id', '$.message_id', '$.received_at', '$.status', '$.code', '$.reason']) AS f
      FROM (SELECT unnest(envelopes) AS envelope, unnest(events) AS event,
                   generate_subscripts(envelopes, 1) AS i
            FROM (SELECT string_split($2, chr(10)) AS envelopes, string_split($3, chr(10)) AS events)))`;
}

interface PendingAppend {
  records: readonly RawEvent[];
  /** The records' envelopes, one line each (see `encodeEnvelope`). */
  envelopes: string;
  /** The records' event JSON, one line each. */
  events: string;
  count: number;
  resolve: (r: AppendResult) => void;
  reject: (err: unknown) => void;
}

/**
 * The embedded event log: append-only DuckDB files, one per segment of offsets, one row
 * per record.
 *
 * Appends are group-committed: while commits are in flight (DuckDB fsyncs its WAL on
 * commit), every append that arrives waits and goes into the next commit, so a burst of
 * requests costs one disk flush. A commit sends its records as two strings of lines (the
 * envelopes, the events) and DuckDB splits them into rows on its own threads.
 *
 * Segments keep checkpoints off the commit path. DuckDB checkpoints inside the commit that
 * crosses its WAL threshold, or not at all while other writes are active, and a checkpoint
 * rewrites the unfilled last row group. So the log writes to one segment until it holds
 * `segmentBytes`, then moves new commits to a new segment and checkpoints the full one in
 * the background, where no commit waits for it. The view `raw_events` (in `catalog`, with
 * the consumer offsets) unions the segments: it is the queryable raw archive replay reads.
 */
export class DuckDBEventLog implements EventLog, RawArchive {
  private readonly catalog: string;
  private readonly segmentDir: string;
  private readonly maxGroupRecords: number;
  private readonly pollIntervalMs: number;
  private readonly segmentBytes: number;
  private readonly maxTailRecords: number;
  private readonly appended = new EventEmitter();
  private readonly pending: PendingAppend[] = [];
  /** Next offset to assign. */
  private nextOffset = 0;
  /** Every offset below this is durable or belongs to a failed commit: readers stop here. */
  private durableEnd = 0;
  /** Commits in flight, by first offset, and whether each has finished. */
  private readonly inFlight = new Map<number, { end: number; done: boolean }>();
  private readonly idleWriters: Writer[];
  private readonly allWriters: Writer[];
  /** In offset order; the last one takes the commits. */
  private readonly segments: Segment[] = [];
  private rotationDue = false;
  private rotating: Promise<void> | undefined;
  private checkpointing: Promise<void> = Promise.resolve();
  /** The latest committed groups, in offset order (failed commits leave gaps). */
  private readonly tail: { first: number; records: readonly RawEvent[] }[] = [];
  private tailCount = 0;
  private closed = false;
  private readonly subscriptions = new Set<Subscription>();
  /** A UUID created with the log (see `logIdentity`). */
  id = '';
  /** Reports a failed background checkpoint or view update (the log goes on). */
  onMaintenanceError: (err: unknown) => void = () => {};

  private constructor(
    private readonly instance: DuckDBInstance,
    writers: Writer[],
    private readonly reader: DuckDBConnection,
    private readonly maintenance: DuckDBConnection,
    options: DuckDBEventLogOptions,
  ) {
    this.catalog = options.catalog ?? 'log';
    this.segmentDir = options.segmentDir;
    this.maxGroupRecords = options.maxGroupRecords ?? 20_000;
    this.pollIntervalMs = options.pollIntervalMs ?? 500;
    this.segmentBytes = options.segmentBytes ?? 64 * 1024 * 1024;
    this.maxTailRecords = options.tailRecords ?? 100_000;
    this.appended.setMaxListeners(0);
    this.idleWriters = writers;
    this.allWriters = [...writers];
  }

  /**
   * Opens the log: the consumer offsets in `catalog` of `instance` (already attached), and
   * every segment file in `segmentDir` (a first one is created when there is none).
   */
  static async open(instance: DuckDBInstance, options: DuckDBEventLogOptions): Promise<DuckDBEventLog> {
    const catalog = options.catalog ?? 'log';
    mkdirSync(options.segmentDir, { recursive: true });
    const maintenance = await instance.connect();
    await maintenance.run(`CREATE TABLE IF NOT EXISTS ${quoteIdent(catalog)}.consumer_offsets (
      consumer VARCHAR PRIMARY KEY,
      next_offset BIGINT NOT NULL,
      updated_at TIMESTAMPTZ NOT NULL)`);
    const writers: Writer[] = [];
    for (let i = 0; i < (options.concurrentCommits ?? 1); i++) {
      writers.push({ conn: await instance.connect() });
    }
    const log = new DuckDBEventLog(instance, writers, await instance.connect(), maintenance, options);
    log.id = await logIdentity(maintenance, catalog);
    const files = readdirSync(options.segmentDir)
      .map((f) => SEGMENT_FILE.exec(f))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => Number(m[1]))
      .sort((a, b) => a - b);
    await checkSegments(maintenance, catalog, options.segmentDir, files);
    for (const [i, first] of files.entries()) {
      const catalogName = await log.attachSegment(first);
      // Only the active (last) segment's size matters: full ones never take commits again.
      const active = i === files.length - 1;
      const r = await maintenance.runAndReadAll(
        `SELECT COALESCE(max(log_offset) + 1, $1), ${active ? 'COALESCE(sum(length(event)), 0)' : '0'}
         FROM ${quoteIdent(catalogName)}.records`,
        [BigInt(first)],
      );
      const [end, bytes] = r.getRows()[0]!;
      log.segments.push({ first, end: Number(end), catalog: catalogName, bytes: Number(bytes) });
    }
    const last = log.segments[log.segments.length - 1];
    // Offsets of commits that failed at the very end were never stored, but a consumer may
    // have skipped past them: never hand them out again.
    const skipped = await maintenance.runAndReadAll(
      `SELECT COALESCE(max(next_offset), 0) FROM ${quoteIdent(catalog)}.consumer_offsets`,
    );
    log.nextOffset = Math.max(last ? last.end : 0, Number(skipped.getRows()[0]?.[0] ?? 0));
    log.durableEnd = log.nextOffset;
    if (!last) log.segments.push(await log.createSegment(log.nextOffset));
    else last.end = log.nextOffset;
    await log.useActiveSegment();
    await log.updateView();
    return log;
  }

  private async attachSegment(first: number): Promise<string> {
    const catalogName = segmentCatalog(first);
    const path = join(this.segmentDir, segmentFile(first));
    await this.maintenance.run(`ATTACH IF NOT EXISTS ${sqlString(path)} AS ${quoteIdent(catalogName)}`);
    const compression = await largeTextCompression(this.maintenance, catalogName, 'USING COMPRESSION fsst');
    await this.maintenance.run(
      `CREATE TABLE IF NOT EXISTS ${quoteIdent(catalogName)}.records ${recordsTable(compression)}`,
    );
    return catalogName;
  }

  private async createSegment(first: number): Promise<Segment> {
    const segment = { first, end: first, catalog: await this.attachSegment(first), bytes: 0 };
    await this.maintenance.run(
      `INSERT OR IGNORE INTO ${quoteIdent(this.catalog)}.segments VALUES ($1, now())`,
      [BigInt(first)],
    );
    return segment;
  }

  private async useActiveSegment(): Promise<void> {
    const active = this.segments[this.segments.length - 1]!;
    for (const w of this.allWriters) {
      w.insert?.destroySync();
      w.insert = await w.conn.prepare(insertSql(active.catalog));
    }
  }

  private async updateView(): Promise<void> {
    const union = this.segments
      .map((s) => `SELECT * FROM ${quoteIdent(s.catalog)}.records`)
      .join('\n      UNION ALL ');
    await this.maintenance.run(`CREATE OR REPLACE VIEW ${quoteIdent(this.catalog)}.raw_events AS
      SELECT log_offset, source_id, message_id, received_at, status, code, reason,
             CAST(event AS JSON) AS event, committed_at
      FROM (${union})`);
  }

  append(records: readonly RawEvent[]): Promise<AppendResult> {
    if (this.closed) return Promise.reject(new Error('event log is closed'));
    if (records.length === 0) return Promise.resolve({ firstOffset: this.nextOffset });
    let envelopes = encodeEnvelope(records[0]!);
    let events = records[0]!.json;
    for (let i = 1; i < records.length; i++) {
      const r = records[i]!;
      envelopes += `\n${encodeEnvelope(r)}`;
      events += `\n${r.json}`;
    }
    return new Promise<AppendResult>((resolve, reject) => {
      this.pending.push({ records, envelopes, events, count: records.length, resolve, reject });
      this.startCommits();
    });
  }

  /**
   * Starts a commit on every idle writer connection while appends wait. Offsets are assigned
   * when a commit starts; commits may finish out of order, so readers only see offsets below
   * `durableEnd`, the end of the finished prefix. While a segment change is due, no commit
   * starts: the change waits for the commits in flight, then takes a few milliseconds.
   */
  private startCommits(): void {
    if (this.paused) return;
    if (this.rotationDue) {
      if (this.inFlight.size === 0) this.rotating ??= this.rotate();
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
      const first = this.nextOffset;
      this.nextOffset += count;
      const writer = this.idleWriters.pop()!;
      this.inFlight.set(first, { end: first + count, done: false });
      void this.commit(writer, group, first);
    }
  }

  private async commit(writer: Writer, group: PendingAppend[], first: number): Promise<void> {
    const envelopes = group.length === 1 ? group[0]!.envelopes : group.map((g) => g.envelopes).join('\n');
    const events = group.length === 1 ? group[0]!.events : group.map((g) => g.events).join('\n');
    let error: unknown;
    try {
      const insert = writer.insert!;
      insert.bindBigInt(1, BigInt(first));
      insert.bindVarchar(2, envelopes);
      insert.bindVarchar(3, events);
      insert.bindTimestampTZ(4, new DuckDBTimestampTZValue(BigInt(Date.now()) * 1000n));
      await insert.run();
    } catch (err) {
      error = err ?? new Error('commit failed');
    }
    const flight = this.inFlight.get(first)!;
    flight.done = true;
    this.idleWriters.push(writer);
    if (error === undefined) {
      const active = this.segments[this.segments.length - 1]!;
      active.end = Math.max(active.end, flight.end);
      active.bytes += envelopes.length + events.length;
      if (active.bytes >= this.segmentBytes) this.rotationDue = true;
      if (this.maxTailRecords > 0) this.keepInTail(first, group);
    }
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

  /** Moves commits to a new segment, then checkpoints the full one in the background. */
  private async rotate(): Promise<void> {
    const full = this.segments[this.segments.length - 1]!;
    try {
      full.end = Math.max(full.end, this.nextOffset);
      this.segments.push(await this.createSegment(this.nextOffset));
      await this.useActiveSegment();
    } catch (err) {
      // Stay on the full segment; a later commit tries again.
      this.onMaintenanceError(err);
      if (this.segments[this.segments.length - 1] !== full) this.segments.pop();
      full.bytes = 0;
    } finally {
      this.rotationDue = false;
      this.rotating = undefined;
      this.startCommits();
    }
    if (this.segments[this.segments.length - 1] === full) return;
    this.checkpointing = this.checkpointing.then(async () => {
      try {
        await this.updateView();
        await this.maintenance.run(`CHECKPOINT ${quoteIdent(full.catalog)}`);
      } catch (err) {
        this.onMaintenanceError(err);
      }
    });
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

  /**
   * Erases a person's records from every segment (a deletion request, see
   * `src/governance/privacy/`): records of their user or anonymous ids or messageIds, or whose
   * event text contains one of `target.values`. Each segment holding one is rewritten in place
   * and its file's free blocks overwritten (`src/platform/duckdb/duckdb-erase.ts`), so no byte
   * of them stays; offsets of the records erased become holes, which readers skip as they skip
   * a failed commit's. Runs between the background checkpoints of full segments. Returns the
   * records erased.
   */
  erase(target: RowTarget): Promise<number> {
    const job = this.checkpointing.then(async () => {
      // Commits pause while the segments are written anew (their inserts are prepared again after).
      await this.pauseCommits();
      try {
        let n = 0;
        const p = [
          JSON.stringify(target.userIds),
          JSON.stringify(target.anonymousIds),
          JSON.stringify(target.messageIds),
          JSON.stringify(target.values),
        ];
        const match = `${inList("json_extract_string(event, '$.userId')", 1)} OR ${inList("json_extract_string(event, '$.anonymousId')", 2)}
          OR ${inList('message_id', 3)} OR ${containsAny('event', 4)} OR ${containsAny("coalesce(reason, '')", 4)}`;
        for (const seg of [...this.segments]) {
          const erased = await eraseRows(
            this.maintenance,
            { catalog: seg.catalog, schema: 'main', name: 'records' },
            match,
            p,
          );
          if (erased > 0) this.unscrubbed.add(seg.catalog);
          n += erased;
        }
        // The in-memory tail is only for consumers that keep up: dropped rather than serve erased records.
        this.tail.length = 0;
        this.tailCount = 0;
        return n;
      } finally {
        await this.useActiveSegment().catch((err) => this.onMaintenanceError(err));
        await this.updateView().catch((err) => this.onMaintenanceError(err));
        this.paused?.resume();
        this.paused = undefined;
        this.startCommits();
      }
    });
    this.checkpointing = job.then(
      () => undefined,
      () => undefined,
    );
    return job;
  }

  /** Segments written anew by `erase` whose free blocks still hold what was erased. */
  private readonly unscrubbed = new Set<string>();

  /** Overwrites the free blocks of the segments `erase` wrote anew (see `src/platform/duckdb/duckdb-erase.ts`). */
  scrub(): Promise<void> {
    const job = this.checkpointing.then(async () => {
      for (const catalog of [...this.unscrubbed]) {
        await scrubFreeBlocks(this.maintenance, catalog);
        this.unscrubbed.delete(catalog);
      }
    });
    this.checkpointing = job.catch(() => undefined);
    return job;
  }

  /** Holds new commits back and resolves once none is in flight. */
  private async pauseCommits(): Promise<void> {
    let resume!: () => void;
    const resumed = new Promise<void>((r) => (resume = r));
    this.paused = { resume, resumed };
    while (this.inFlight.size > 0) await new Promise((r) => setTimeout(r, 5));
  }

  private paused: { resume: () => void; resumed: Promise<void> } | undefined;

  endOffset(): number {
    return this.durableEnd;
  }

  /** The segments, oldest first: offsets `[first, end)` each. */
  segmentRanges(): { first: number; end: number }[] {
    return this.segments.map((s) => ({ first: s.first, end: s.end }));
  }

  async committedOffset(group: string, conn: DuckDBConnection = this.reader): Promise<number> {
    const r = await conn.runAndReadAll(
      `SELECT next_offset FROM ${quoteIdent(this.catalog)}.consumer_offsets WHERE consumer = $1`,
      [group],
    );
    return Number(r.getRows()[0]?.[0] ?? 0);
  }

  async read(from: number, max: number, conn: DuckDBConnection = this.reader): Promise<Delivered[]> {
    return (await this.readFrom(from, max, conn)).records;
  }

  /**
   * Reads the durable records in `[from, from + max)`; `next` is where the following read
   * starts. Offsets of a failed commit were never written: a read at such a hole skips to
   * the next record, or to the durable end when nothing follows.
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
    const upTo = Math.min(from + Math.max(1, max), end);
    const records: Delivered[] = [];
    let nextRecord: number | undefined;
    for (const seg of this.segments) {
      if (seg.end <= from || seg.first >= upTo) continue;
      const r = await conn.runAndReadAll(
        `SELECT log_offset, source_id, message_id, epoch_ms(received_at), status, code, reason, event
         FROM ${quoteIdent(seg.catalog)}.records WHERE log_offset >= $1 AND log_offset < $2 ORDER BY log_offset`,
        [BigInt(from), BigInt(upTo)],
      );
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
    }
    if (records.length > 0) return { records, next: records[records.length - 1]!.offset + 1 };
    // A failed commit left a hole at `from`: continue at the next record, if any.
    for (const seg of this.segments) {
      if (seg.end <= from) continue;
      const r = await conn.runAndReadAll(
        `SELECT min(log_offset) FROM ${quoteIdent(seg.catalog)}.records WHERE log_offset >= $1 AND log_offset < $2`,
        [BigInt(from), BigInt(end)],
      );
      const at = r.getRows()[0]?.[0];
      if (at !== null && at !== undefined) {
        nextRecord = Number(at);
        break;
      }
    }
    return { records: [], next: nextRecord ?? end };
  }

  /** Every durable record with this messageId, in log order (a scan of each segment). */
  recordsOf(messageId: string): Promise<Delivered[]> {
    return this.archiveRead('message_id = $1', [messageId], 1_000);
  }

  /**
   * The source's durable records received in `[fromMs, toMs)` from `fromOffset` on, in log
   * order: segments are read oldest first until `limit` records are found.
   */
  readRange(range: ArchiveRange): Promise<Delivered[]> {
    return this.archiveRead(
      `source_id = $1 AND received_at >= make_timestamptz(CAST($2 AS BIGINT) * 1000)
       AND received_at < make_timestamptz(CAST($3 AS BIGINT) * 1000) AND log_offset >= $4`,
      [
        range.sourceId,
        BigInt(Math.trunc(range.fromMs)),
        BigInt(Math.trunc(range.toMs)),
        BigInt(range.fromOffset ?? 0),
      ],
      range.limit,
    );
  }

  private async archiveRead(where: string, params: (string | bigint)[], limit: number): Promise<Delivered[]> {
    const end = this.durableEnd;
    const from = params.length >= 4 ? Number(params[3]) : 0;
    const out: Delivered[] = [];
    // A connection of its own: the consumers' reader is never shared with an archive read.
    const conn = await this.instance.connect();
    try {
      for (const seg of [...this.segments]) {
        if (out.length >= limit) break;
        if (seg.end <= from) continue;
        const r = await conn.runAndReadAll(
          `SELECT log_offset, source_id, message_id, epoch_ms(received_at), status, code, reason, event
           FROM ${quoteIdent(seg.catalog)}.records WHERE ${where} AND log_offset < ${end}
           ORDER BY log_offset LIMIT ${Math.trunc(limit - out.length)}`,
          params,
        );
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
          out.push(d);
        }
      }
    } finally {
      conn.closeSync();
    }
    return out;
  }

  consume(
    group: string,
    handle: (batch: Delivered[]) => Promise<void>,
    options: ConsumeOptions = {},
  ): Subscription {
    const maxBatch = options.maxBatch ?? 5000;
    const lingerMs = options.lingerMs ?? 0;
    // The linger after a short batch ends only on stop, not on new records.
    const linger = new Pause();
    let stopping = false;
    let position = -1;
    const waiter = new Pause();
    const drainWaiters: { target: number; resolve: () => void }[] = [];
    let notified = false;
    const onAppend = () => {
      notified = true;
      waiter.wake();
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
        position = options.from ?? (await this.committedOffset(group, conn));
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
            await waiter.sleep(this.pollIntervalMs);
            continue;
          }
          if (batch.length === 0) {
            settleDrains();
            // An append that finished while we were reading is not missed.
            if (!notified) await waiter.sleep(this.pollIntervalMs);
            continue;
          }
          try {
            await handle(batch);
          } catch (err) {
            options.onError?.(err);
            await waiter.sleep(Math.min(5000, this.pollIntervalMs * 2));
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
            await linger.sleep(lingerMs);
          }
        }
      } finally {
        conn.closeSync();
      }
    })();

    const sub: Subscription = {
      stop: async () => {
        stopping = true;
        waiter.wake();
        linger.wake();
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

  async close(): Promise<void> {
    for (const sub of [...this.subscriptions]) await sub.stop();
    while (this.pending.length > 0 || this.inFlight.size > 0 || this.rotating) {
      await new Promise((r) => setTimeout(r, 5));
    }
    await this.checkpointing;
    this.closed = true;
    for (const w of this.allWriters) {
      w.insert?.destroySync();
      w.conn.closeSync();
    }
    this.reader.closeSync();
    this.maintenance.closeSync();
  }
}

/**
 * The log's identity: a UUID in `<catalog>.log_identity`, created on the first open (by
 * this version: a log of an older one gets its identity then, and keeps it).
 */
async function logIdentity(c: DuckDBConnection, catalog: string): Promise<string> {
  const table = `${quoteIdent(catalog)}.log_identity`;
  await c.run(`CREATE TABLE IF NOT EXISTS ${table} (id VARCHAR NOT NULL, created_at TIMESTAMPTZ NOT NULL)`);
  await c.run(`INSERT INTO ${table} SELECT CAST(uuid() AS VARCHAR), now() WHERE NOT EXISTS (FROM ${table})`);
  const r = await c.runAndReadAll(`SELECT id FROM ${table} ORDER BY created_at LIMIT 1`);
  return String(r.getRows()[0]![0]);
}
