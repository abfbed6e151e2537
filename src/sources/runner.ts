/**
 * The source runner: reads a pull source's streams from their committed state and makes what
 * each checkpoint covers durable before the checkpoint itself.
 *
 * Per checkpoint (a `state` message, or a full buffer):
 *   1. the rows' events are appended to the event log, which resolves once they are durable;
 *   2. one store transaction upserts the rows' objects, stores the failures (stage `source`),
 *      marks deletions of a completed full refresh, stores the streams' states and the run's
 *      progress.
 * A crash before 2 leaves the old state: the sync re-reads those rows; their objects are
 * upserted by key and their events carry the same messageIds (derived from the row), which
 * the pipeline's dedupe keeps out of `events`. A crash after 2 re-reads nothing. So nothing is
 * lost and nothing stored twice (docs/architecture.md, "Sources").
 */
import { TributaryError } from '../errors.js';
import type { EventLog, RawEvent } from '../log/event-log.js';
import type { ObjectRow, ObjectTable, RunProgress, SourceStore, SyncRun } from '../store/source-store.js';
import type { FailedRow } from '../store/store.js';
import { sourceFailure } from './failures.js';
import {
  contentHash,
  identifiersEvent,
  makesEvents,
  mappedEvent,
  objectValues,
  recordKey,
} from './records.js';
import type {
  Catalog,
  ConfiguredStream,
  PullSourceConnector,
  SourceContext,
  SourceMessage,
} from './source.js';
import type { ColumnType, StreamSettings } from './streams-schema.js';

/** A pull source as the runner needs it: the common fields and streams with their settings. */
export interface PullSourceConfig {
  id: string;
  type: string;
  enabled?: boolean;
  retries?: number;
  streams: readonly StreamSettings[];
}

/** What the runner stores per stream: the connector's state, and the start of a full refresh in progress. */
interface StoredStreamState {
  state?: unknown;
  /** Epoch ms the current full-refresh cycle started (kept across resumed syncs). */
  cycleStart?: number;
  /** The last full refresh completed: the next one starts from the beginning. */
  complete?: boolean;
}

export interface RunnerDeps {
  store: SourceStore;
  log: EventLog;
  /** The connector of a kind (default: the registry's). */
  connector: (type: string) => Promise<PullSourceConnector<unknown> | undefined>;
  /** The configuration file's folder. */
  baseDir: string;
  /** Records buffered before they are written without waiting for a checkpoint. Default 50,000. */
  maxBuffered?: number;
  /** First retry delay; doubles per attempt (default 1 s). */
  retryDelayMs?: number;
  onRetry?: (sourceId: string, attempt: number, err: unknown) => void;
  /**
   * Fault injection for tests: runs after the log append of a checkpoint and before its store
   * commit. A throw there is a crash between records and state.
   */
  afterAppend?: () => void | Promise<void>;
}

export interface LiveProgress extends RunProgress {
  runId: string;
  stream?: string;
  startedAt: number;
}

export interface SyncOptions {
  /** `schedule`, `api`, `cli`, `import`. */
  trigger: string;
  /** Only these streams (default all). */
  streams?: readonly string[];
  signal?: AbortSignal;
  onProgress?: (p: LiveProgress) => void;
  /** Called with the run's id once the run is recorded. */
  onStart?: (runId: string) => void;
  /** Called after each commit with the run's committed counts. */
  onCommit?: (p: RunProgress) => void;
}

export interface SyncSummary extends RunProgress {
  runId: string;
  sourceId: string;
  status: 'succeeded' | 'failed';
  error?: string;
  attempts: number;
}

const TYPE_OF_JSON: Record<string, ColumnType> = {
  string: 'string',
  integer: 'integer',
  number: 'number',
  boolean: 'boolean',
  timestamp: 'timestamp',
  date: 'date',
  object: 'json',
  array: 'json',
};

/** Runs syncs, one at a time per source. */
export class SourceRunner {
  private readonly running = new Map<string, LiveProgress>();

  constructor(private readonly deps: RunnerDeps) {}

  /** A runner on the same store and log with some settings replaced (tests inject faults so). */
  fork(changes: Partial<RunnerDeps>): SourceRunner {
    return new SourceRunner({ ...this.deps, ...changes });
  }

  /** The running sync of a source, if any. */
  live(sourceId: string): LiveProgress | undefined {
    return this.running.get(sourceId);
  }

  async runs(sourceId: string, limit = 20): Promise<(SyncRun & { live?: LiveProgress })[]> {
    const runs = await this.deps.store.runs(sourceId, limit);
    const live = this.running.get(sourceId);
    return runs.map((r) => (live && r.id === live.runId ? { ...r, ...pick(live), live } : r));
  }

  async connectorOf(source: PullSourceConfig): Promise<PullSourceConnector<unknown>> {
    const c = await this.deps.connector(source.type);
    if (!c) throw new TributaryError('TRIB_ERR_SOURCE_NOT_PULL', [source.id, source.type]);
    return c;
  }

  context(signal?: AbortSignal): SourceContext {
    return { signal: signal ?? new AbortController().signal, baseDir: this.deps.baseDir };
  }

  /**
   * Syncs the source: reads its streams from their committed states until the connector is
   * done; a read that throws is retried (`retries`, backoff) from the last committed state.
   * Resolves with the run's counts; `status: failed` when the retries ran out.
   * @throws TRIB_ERR_SOURCE_BUSY when the source is syncing already.
   */
  async sync(source: PullSourceConfig, opts: SyncOptions): Promise<SyncSummary> {
    const busy = this.running.get(source.id);
    if (busy) throw new TributaryError('TRIB_ERR_SOURCE_BUSY', [source.id, busy.runId, source.id]);
    const live: LiveProgress = {
      runId: '',
      rows: 0,
      objects: 0,
      events: 0,
      failed: 0,
      startedAt: Date.now(),
    };
    this.running.set(source.id, live);
    let unlock: (() => Promise<void>) | undefined;
    try {
      if (this.deps.store.lockSource) {
        // Processes sharing the store: one of them syncs the source at a time.
        unlock = await this.deps.store.lockSource(source.id);
        if (!unlock)
          throw new TributaryError('TRIB_ERR_SOURCE_BUSY', [source.id, 'in another process', source.id]);
        await this.deps.store.abandonRuns(source.id);
      }
      const connector = await this.connectorOf(source);
      const streams = source.streams.filter((s) => !opts.streams || opts.streams.includes(s.name));
      for (const name of opts.streams ?? []) {
        if (!source.streams.some((s) => s.name === name))
          throw new TributaryError('TRIB_ERR_SOURCE_UNKNOWN_STREAM', [
            source.id,
            name,
            source.streams.map((s) => s.name).join(', '),
          ]);
      }
      live.runId = await this.deps.store.startRun(source.id, opts.trigger);
      opts.onStart?.(live.runId);
      const retries = source.retries ?? 3;
      let attempts = 0;
      let lastError: unknown;
      let committed = pick(live);
      const attemptOpts: SyncOptions = {
        ...opts,
        onCommit: (p) => {
          committed = pick(p);
          opts.onCommit?.(p);
        },
      };
      for (;;) {
        attempts++;
        // Rows read past the last commit are read again by this attempt.
        Object.assign(live, committed);
        try {
          await new SyncAttempt(this.deps, source, connector, streams, live, attemptOpts).run();
          await this.deps.store.finishRun(live.runId, 'succeeded', live);
          return { ...pick(live), runId: live.runId, sourceId: source.id, status: 'succeeded', attempts };
        } catch (err) {
          lastError = err;
          if (opts.signal?.aborted || attempts > retries || !retryable(err)) break;
          this.deps.onRetry?.(source.id, attempts, err);
          await sleep((this.deps.retryDelayMs ?? 1000) * 2 ** (attempts - 1), opts.signal);
        }
      }
      const message = lastError instanceof Error ? lastError.message : String(lastError);
      const error =
        lastError instanceof TributaryError
          ? `${lastError.code}: ${message}`
          : `TRIB_ERR_SOURCE_READ_FAILED: ${new TributaryError('TRIB_ERR_SOURCE_READ_FAILED', [source.id, attempts, message]).message}`;
      await this.deps.store.finishRun(live.runId, 'failed', live, error);
      return { ...pick(live), runId: live.runId, sourceId: source.id, status: 'failed', error, attempts };
    } finally {
      this.running.delete(source.id);
      await unlock?.();
    }
  }
}

/** One read of the source from its committed state. */
class SyncAttempt {
  private readonly tables = new Map<string, ObjectTable>();
  private settings: Map<string, StreamSettings>;
  private stored: Record<string, StoredStreamState> = {};
  private objects = new Map<string, Map<string, ObjectRow>>();
  private events: RawEvent[] = [];
  private failed: FailedRow[] = [];
  private states: Record<string, StoredStreamState> = {};
  private completed: { stream: string; since: number }[] = [];
  private buffered = 0;
  private readonly receivedAt = Date.now();

  constructor(
    private readonly deps: RunnerDeps,
    private readonly source: PullSourceConfig,
    private readonly connector: PullSourceConnector<unknown>,
    private streams: readonly StreamSettings[],
    private readonly live: LiveProgress,
    private readonly opts: SyncOptions,
  ) {
    this.settings = new Map(streams.map((s) => [s.name, s]));
    // An attempt after a failed one goes on from what the earlier ones committed.
    this.counts = { objects: live.objects, events: live.events, failed: live.failed };
  }

  async run(): Promise<void> {
    const ctx: SourceContext = {
      signal: this.opts.signal ?? new AbortController().signal,
      baseDir: this.deps.baseDir,
    };
    const catalog = await this.connector.discover(this.source, ctx);
    // A stream configured without a key takes the one the source declares (a table's primary key).
    this.streams = this.streams.map((s) => {
      const key = catalog.streams.find((c) => c.name === s.name)?.primaryKey ?? [];
      return s.primaryKey.length === 0 && key.length > 0 ? { ...s, primaryKey: key } : s;
    });
    this.settings = new Map(this.streams.map((s) => [s.name, s]));
    await this.prepareTables(catalog);
    this.stored = (await this.deps.store.states(this.source.id)) as Record<string, StoredStreamState>;
    const configured: ConfiguredStream[] = [];
    const states: Record<string, unknown> = {};
    for (const s of this.streams) {
      configured.push({
        name: s.name,
        syncMode: s.syncMode,
        cursorField: s.cursorField,
        primaryKey: s.primaryKey,
      });
      const st = this.stored[s.name];
      if (s.syncMode === 'full_refresh') {
        // A completed cycle starts again from nothing; an interrupted one resumes.
        const fresh = !st || st.complete === true;
        this.stored[s.name] = {
          state: fresh ? undefined : st.state,
          cycleStart: fresh ? this.receivedAt : (st.cycleStart ?? this.receivedAt),
        };
      }
      if (this.stored[s.name]?.state !== undefined) states[s.name] = this.stored[s.name]!.state;
    }
    try {
      for await (const msg of this.connector.read(this.source, configured, states, ctx)) {
        if (ctx.signal.aborted) throw new Error('the sync was stopped');
        await this.handle(msg);
      }
      await this.flush();
      await this.settle();
    } catch (err) {
      // A commit still in flight finishes (or fails) before the attempt is retried or given up.
      await this.committing?.catch(() => undefined);
      throw err;
    }
  }

  private async handle(msg: SourceMessage): Promise<void> {
    switch (msg.type) {
      case 'record':
        this.record(msg.stream, msg.data, msg.location);
        break;
      case 'failed':
        this.live.rows++;
        this.fail(msg.stream, msg.code, msg.reason, msg.payload, msg.location);
        break;
      case 'state': {
        const prev = this.stored[msg.stream] ?? {};
        this.states[msg.stream] = {
          state: msg.state,
          ...(prev.cycleStart !== undefined ? { cycleStart: prev.cycleStart } : {}),
        };
        this.stored[msg.stream] = this.states[msg.stream]!;
        await this.flush();
        return;
      }
      case 'complete': {
        const prev = this.stored[msg.stream] ?? {};
        if (prev.cycleStart !== undefined)
          this.completed.push({ stream: msg.stream, since: prev.cycleStart });
        this.states[msg.stream] = { state: prev.state, complete: true };
        this.stored[msg.stream] = this.states[msg.stream]!;
        await this.flush();
        return;
      }
      case 'progress':
        if (msg.stream !== undefined) this.live.stream = msg.stream;
        if (msg.bytes !== undefined) this.live.bytes = msg.bytes;
        if (msg.totalBytes !== undefined) this.live.totalBytes = msg.totalBytes;
        this.opts.onProgress?.(this.live);
        return;
    }
    if (this.buffered >= (this.deps.maxBuffered ?? 50_000)) await this.flush();
  }

  private record(stream: string, data: Record<string, unknown>, location?: string): void {
    const s = this.settings.get(stream);
    if (!s) return;
    this.live.rows++;
    const key = recordKey(data, s.primaryKey);
    if (!key.ok) {
      this.fail(
        stream,
        'TRIB_ERR_SOURCE_MISSING_KEY',
        `no value in primary key column ${key.column}`,
        data,
        location,
      );
      return;
    }
    if (s.objects) {
      this.tableFor(stream, data);
      let rows = this.objects.get(stream);
      if (!rows) {
        rows = new Map();
        this.objects.set(stream, rows);
      }
      // The same key twice in one checkpoint: the later row wins, as it would a commit later.
      rows.delete(key.key);
      this.buffered++;
      rows.set(key.key, { key: key.key, values: objectValues(data, this.columnsOf(stream).keys) });
    }
    if (makesEvents(s)) {
      const ctx = {
        sourceId: this.source.id,
        stream,
        key: key.key,
        contentHash: contentHash(data),
        location,
        receivedAt: this.receivedAt,
      };
      const results = s.events.map((m, i) => mappedEvent(data, m, i, ctx));
      if (s.identifiers) {
        const r = identifiersEvent(data, s.identifiers, ctx);
        if (r) results.push(r);
      }
      for (const r of results) {
        if (r.ok) {
          this.events.push(r.event);
          this.buffered++;
        } else this.fail(stream, 'TRIB_ERR_SOURCE_EVENT_INVALID', r.reason, data, location);
      }
    }
  }

  private fail(stream: string, code: string, reason: string, payload: unknown, location?: string): void {
    this.buffered++;
    this.failed.push(sourceFailure(this.source.id, stream, code, reason, payload, location));
  }

  /** The stream's table, with a column added for a field the catalog did not name. */
  private tableFor(stream: string, data: Record<string, unknown>): ObjectTable {
    let t = this.tables.get(stream)!;
    const cols = this.columnsOf(stream);
    let added: { name: string; type: ColumnType }[] | undefined;
    for (const k in data) {
      if (cols.byKey.has(k)) continue;
      added ??= [];
      added.push({ name: cols.add(k), type: guessType(data[k]) });
    }
    if (added) {
      t = { ...t, columns: [...t.columns, ...added] };
      this.tables.set(stream, t);
      this.pendingTables.add(stream);
      // Rows buffered before keep their shorter value lists: pad them.
      for (const row of this.objects.get(stream)?.values() ?? [])
        while (row.values.length < t.columns.length) row.values.push(null);
    }
    return t;
  }

  private readonly pendingTables = new Set<string>();
  private readonly columns = new Map<string, ObjectColumns>();

  private columnsOf(stream: string): ObjectColumns {
    let c = this.columns.get(stream);
    if (!c) {
      c = new ObjectColumns();
      this.columns.set(stream, c);
    }
    return c;
  }

  private async prepareTables(catalog: Catalog): Promise<void> {
    for (const s of this.streams) {
      if (!s.objects) continue;
      const d = catalog.streams.find((c) => c.name === s.name);
      const cols = this.columnsOf(s.name);
      const columns: { name: string; type: ColumnType }[] = [];
      const types = new Map<string, ColumnType>();
      for (const c of d?.columns ?? [])
        types.set(c.name, s.columns?.[c.name] ?? TYPE_OF_JSON[c.jsonType] ?? 'string');
      for (const [name, type] of Object.entries(s.columns ?? {})) if (!types.has(name)) types.set(name, type);
      for (const [key, type] of types) columns.push({ name: cols.add(key), type });
      const table: ObjectTable = { sourceId: this.source.id, stream: s.name, columns };
      this.tables.set(s.name, table);
      await this.deps.store.ensureTable(table);
    }
  }

  /** The commit in flight: the next checkpoint is read (and its events appended) meanwhile. */
  private committing: Promise<void> | undefined;
  /** Counts of everything handed to commits so far (refusals are moved from objects to failed as they are known). */
  private readonly counts: { objects: number; events: number; failed: number };

  /**
   * Appends the buffered events, then hands the rest to the store in a commit that runs while
   * the next checkpoint is read. Commits stay in order: each waits for the one before, and a
   * failed one fails the next flush (the attempt then retries from the committed state).
   */
  private async flush(): Promise<void> {
    if (
      this.buffered === 0 &&
      this.failed.length === 0 &&
      Object.keys(this.states).length === 0 &&
      this.completed.length === 0
    )
      return;
    const events = this.events;
    const failed = this.failed;
    const states = this.states;
    const completed = this.completed;
    const objects = [...this.objects].map(([stream, rows]) => ({
      table: this.tables.get(stream)!,
      rows: [...rows.values()],
    }));
    this.objects = new Map();
    this.events = [];
    this.failed = [];
    this.states = {};
    this.completed = [];
    this.buffered = 0;
    // Durable before the state that covers them is committed.
    for (let i = 0; i < events.length; i += 10_000) await this.deps.log.append(events.slice(i, i + 10_000));
    await this.deps.afterAppend?.();
    await this.committing;
    for (const stream of this.pendingTables) await this.deps.store.ensureTable(this.tables.get(stream)!);
    this.pendingTables.clear();
    this.counts.objects += objects.reduce((n, o) => n + o.rows.length, 0);
    this.counts.events += events.length;
    this.counts.failed += failed.length;
    const progress: RunProgress = { ...pick(this.live), ...this.counts };
    this.committing = this.deps.store
      .commit({
        sourceId: this.source.id,
        runId: this.live.runId,
        objects,
        failed,
        completed,
        states,
        progress,
      })
      .then((refused) => {
        this.counts.objects -= refused.length;
        this.counts.failed += refused.length;
        Object.assign(this.live, {
          objects: progress.objects - refused.length,
          events: progress.events,
          failed: progress.failed + refused.length,
        });
        this.opts.onCommit?.({ ...progress, objects: this.live.objects, failed: this.live.failed });
        this.opts.onProgress?.(this.live);
      });
  }

  /** Waits for the commit in flight; errors of an abandoned attempt are left to its caller. */
  async settle(): Promise<void> {
    await this.committing;
  }
}

/**
 * The columns of an objects table, from the fields of the rows: a field whose name the store
 * cannot take as it is gets another. Engines compare column names without case (DuckDB) or cut
 * them at 63 bytes (PostgreSQL), and `_tributary_*` names are the table's own: a row with
 * `Email` and `email`, or a field named `_tributary_key`, must not break the table.
 */
export class ObjectColumns {
  /** Field names, in column order. */
  readonly keys: string[] = [];
  readonly byKey = new Map<string, string>();
  private readonly taken = new Set([
    '_tributary_key',
    '_tributary_synced_at',
    '_tributary_deleted',
    '_tributary_run_id',
  ]);

  /** The column of a field (added when new). */
  add(key: string): string {
    const known = this.byKey.get(key);
    if (known !== undefined) return known;
    let base = key.trim() === '' ? 'column' : key;
    if (/^_tributary_/i.test(base)) base = `source${base}`;
    base = cut(base, 56);
    let name = base;
    for (let i = 2; this.taken.has(name.toLowerCase()); i++) name = `${base}_${i}`;
    this.taken.add(name.toLowerCase());
    this.byKey.set(key, name);
    this.keys.push(key);
    return name;
  }
}

/** At most `bytes` UTF-8 bytes of `text`, cut at a character. */
function cut(text: string, bytes: number): string {
  if (Buffer.byteLength(text) <= bytes) return text;
  let out = '';
  for (const ch of text) {
    if (Buffer.byteLength(out + ch) > bytes) break;
    out += ch;
  }
  return out;
}

function guessType(v: unknown): ColumnType {
  if (typeof v === 'boolean') return 'boolean';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  if (typeof v === 'bigint') return 'integer';
  if (v instanceof Date) return 'timestamp';
  if (v !== null && typeof v === 'object' && !(v instanceof Uint8Array)) return 'json';
  return 'string';
}

function pick(p: RunProgress): RunProgress {
  return {
    rows: p.rows,
    objects: p.objects,
    events: p.events,
    failed: p.failed,
    ...(p.bytes !== undefined ? { bytes: p.bytes } : {}),
    ...(p.totalBytes !== undefined ? { totalBytes: p.totalBytes } : {}),
  };
}

/** Errors about the configuration (4xx codes) come back the same on a retry. */
function retryable(err: unknown): boolean {
  return !(err instanceof TributaryError && err.statusCode < 500);
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(t);
      resolve();
    });
  });
}
