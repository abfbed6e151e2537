/**
 * The configured pull sources of a process: check, discover, sync, import a file, and the
 * schedules. Used by the server (admin API, cron) and by `tributary import` without a server.
 */
import { isAbsolute, resolve } from 'node:path';
import { Cron } from 'croner';
import { TributaryError } from '../errors.js';
import type { RunProgress } from '../store/source-store.js';
import type { FileStream } from './file/spec.js';
import type { LiveProgress, PullSourceConfig, SourceRunner, SyncSummary } from './runner.js';
import type { Catalog, CheckResult } from './source.js';
import type { EventMapping } from './streams-schema.js';

/** A source as configured (any kind): pull sources carry `streams`. */
export interface ConfiguredSource {
  id: string;
  type: string;
  enabled: boolean;
  streams?: readonly unknown[];
  schedule?: string;
}

/** What `tributary import` maps onto a stream for an http source (the options of the former `import csv`). */
export interface LegacyImportOptions {
  idColumn: string;
  userIdColumn?: string;
  timestampColumn?: string;
  /** trait → column */
  traits: Record<string, string>;
}

export interface ImportRequest {
  sourceId: string;
  /** The file to read (absolute, or relative to the working directory). */
  file: string;
  stream?: string;
  trigger: string;
  legacy?: LegacyImportOptions;
  onProgress?: (p: LiveProgress) => void;
  onStart?: (runId: string) => void;
  signal?: AbortSignal;
}

export class SourceService {
  private readonly crons: Cron[] = [];
  private readonly stopping = new AbortController();
  private readonly inFlight = new Set<Promise<unknown>>();

  constructor(
    private readonly sources: readonly ConfiguredSource[],
    readonly runner: SourceRunner,
    private readonly onScheduleError: (sourceId: string, err: unknown) => void = () => {},
  ) {}

  /** Whether a source of this id is configured (any kind). @throws TRIB_ERR_SOURCE_NOT_FOUND */
  known(id: string): void {
    if (!this.sources.some((x) => x.id === id)) throw new TributaryError('TRIB_ERR_SOURCE_NOT_FOUND', [id]);
  }

  /** The source as a pull source. @throws TRIB_ERR_SOURCE_NOT_FOUND, TRIB_ERR_SOURCE_NOT_PULL */
  pull(id: string): PullSourceConfig {
    const s = this.sources.find((x) => x.id === id);
    if (!s) throw new TributaryError('TRIB_ERR_SOURCE_NOT_FOUND', [id]);
    if (!Array.isArray(s.streams)) throw new TributaryError('TRIB_ERR_SOURCE_NOT_PULL', [id, s.type]);
    return s as unknown as PullSourceConfig;
  }

  async check(id: string, signal?: AbortSignal): Promise<CheckResult> {
    const source = this.pull(id);
    const c = await this.runner.connectorOf(source);
    return c.check(source, this.runner.context(signal));
  }

  async discover(id: string, signal?: AbortSignal): Promise<Catalog> {
    const source = this.pull(id);
    const c = await this.runner.connectorOf(source);
    return c.discover(source, this.runner.context(signal));
  }

  sync(
    id: string,
    opts: {
      trigger: string;
      streams?: string[];
      onProgress?: (p: LiveProgress) => void;
      onCommit?: (p: RunProgress) => void;
      onStart?: (runId: string) => void;
      signal?: AbortSignal;
    },
  ): Promise<SyncSummary> {
    return this.track(
      this.runner.sync(this.pull(id), { ...opts, signal: opts.signal ?? this.stopping.signal }),
    );
  }

  private track<T>(p: Promise<T>): Promise<T> {
    this.inFlight.add(p);
    void p.then(
      () => this.inFlight.delete(p),
      () => this.inFlight.delete(p),
    );
    return p;
  }

  /** Stops the schedules and the syncs running (each stops after its current record; what it committed stays). */
  async stop(): Promise<void> {
    this.stopSchedules();
    this.stopping.abort();
    await Promise.allSettled([...this.inFlight]);
  }

  /**
   * Reads one file into a stream of the source (`--stream`, else its only stream). A file
   * stream reads it in incremental mode whatever the stream's mode (one file is not every row).
   * An http source takes the options of the former `import csv`: one identify per row.
   */
  importFile(req: ImportRequest): Promise<SyncSummary> {
    const s = this.sources.find((x) => x.id === req.sourceId);
    if (!s) throw new TributaryError('TRIB_ERR_SOURCE_NOT_FOUND', [req.sourceId]);
    const file = isAbsolute(req.file) ? req.file : resolve(req.file);
    let source: PullSourceConfig & { streams: FileStream[] };
    let stream: FileStream;
    if (s.type === 'http') {
      if (!req.legacy) throw new TributaryError('TRIB_ERR_SOURCE_NOT_PULL', [s.id, s.type]);
      stream = legacyStream(s.id, req.legacy, file);
      source = { id: s.id, type: 'file', streams: [stream], retries: 0 };
    } else if (s.type === 'file') {
      const streams = (s.streams ?? []) as FileStream[];
      const name = req.stream ?? (streams.length === 1 ? streams[0]!.name : undefined);
      const found = streams.find((x) => x.name === name);
      if (!found)
        throw new TributaryError('TRIB_ERR_SOURCE_UNKNOWN_STREAM', [
          s.id,
          name ?? '(pass --stream)',
          streams.map((x) => x.name).join(', '),
        ]);
      stream = { ...found, path: file, syncMode: 'incremental' };
      source = { ...(s as unknown as PullSourceConfig), streams: [stream] };
    } else {
      throw new TributaryError('TRIB_ERR_SOURCE_NOT_PULL', [s.id, s.type]);
    }
    return this.track(
      this.runner.sync(source, {
        trigger: req.trigger,
        streams: [stream.name],
        onProgress: req.onProgress,
        onStart: req.onStart,
        signal: req.signal ?? this.stopping.signal,
      }),
    );
  }

  /** Starts the cron of every enabled source with a `schedule`; a run still going when the next is due is skipped. */
  startSchedules(): void {
    for (const s of this.sources) {
      if (!s.enabled || !s.schedule || !Array.isArray(s.streams)) continue;
      const cron = new Cron(
        s.schedule,
        { protect: true, catch: (err) => this.onScheduleError(s.id, err) },
        async () => {
          if (this.runner.live(s.id)) return;
          const r = await this.sync(s.id, { trigger: 'schedule' });
          if (r.status === 'failed') this.onScheduleError(s.id, new Error(r.error));
        },
      );
      this.crons.push(cron);
    }
  }

  stopSchedules(): void {
    for (const c of this.crons.splice(0)) c.stop();
  }
}

/** The stream the former `tributary import csv` options describe. */
function legacyStream(sourceId: string, o: LegacyImportOptions, file: string): FileStream {
  return {
    name: 'import',
    path: file,
    primaryKey: [o.idColumn],
    syncMode: 'incremental',
    objects: false,
    events: [legacyMapping(sourceId, o)],
    quote: '"',
    header: true,
    encoding: 'utf8',
  };
}

/** The identify mapping of the former `import csv`: anonymousId `<source>:<key>`, mapped columns as traits. */
export function legacyMapping(sourceId: string, o: LegacyImportOptions): EventMapping {
  return {
    type: 'identify',
    anonymousId: o.idColumn,
    anonymousIdPrefix: `${sourceId}:`,
    ...(o.userIdColumn ? { userId: o.userIdColumn } : {}),
    ...(o.timestampColumn ? { timestamp: o.timestampColumn } : {}),
    traits: o.traits,
  };
}
