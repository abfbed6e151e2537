/**
 * The source port, modelled on the Airbyte protocol: a connector declares its configuration
 * (a zod spec), checks a configuration against the real system, discovers the streams it can
 * read, and reads the streams the user selected, yielding records and state checkpoints. The
 * connector never stores anything: the runner (`./runner.ts`) writes the records a checkpoint
 * covers, then the checkpoint's state, so a sync that stops anywhere resumes from the last
 * committed state and re-reads at most what that state did not cover (writes are idempotent:
 * objects are upserted by primary key, events carry a messageId derived from the record).
 *
 * Push sources (webhooks) have no `read`: the server hands each request to the connector's
 * `receive` (see `PushSourceConnector`).
 */
import type { z } from 'zod';

/** One column of a stream, as the source system describes it. */
export interface ColumnDescriptor {
  name: string;
  /** The source system's type name (`timestamptz`, `bigint unsigned`, `VARCHAR`, …). */
  sourceType: string;
  /** The JSON type a value of it becomes (see the connector's type mapping). */
  jsonType: 'string' | 'number' | 'integer' | 'boolean' | 'object' | 'array' | 'timestamp' | 'date';
  nullable: boolean;
}

/** A stream the source can read: a table, a query, a file's rows. */
export interface StreamDescriptor {
  name: string;
  columns: ColumnDescriptor[];
  /** Columns that identify a row (empty when the source has no key). */
  primaryKey: string[];
  /** Columns an incremental sync may use as its cursor. */
  cursorCandidates: string[];
  syncModes: readonly ('full_refresh' | 'incremental')[];
}

export interface Catalog {
  streams: StreamDescriptor[];
}

/** A stream as the user configured it: what to read, and how. */
export interface ConfiguredStream {
  name: string;
  syncMode: 'full_refresh' | 'incremental';
  /** Required for `incremental`. */
  cursorField?: string;
  primaryKey: string[];
}

/**
 * What `read` yields. A `state` message is a checkpoint: every record and failure of its
 * stream yielded before it is covered by it, and a sync resumed with that state must not
 * yield them again except where the connector says so (a lookback window re-reads, the
 * runner's upsert absorbs it).
 */
export type SourceMessage =
  | {
      type: 'record';
      stream: string;
      data: Record<string, unknown>;
      /** Where the record came from, for failures downstream (`file.csv:42`, `public.users`). */
      location?: string;
    }
  | {
      /** A record the connector could not read (wrong column count, unparseable value). */
      type: 'failed';
      stream: string;
      /** Stable `TRIB_ERR_SOURCE_*` code. */
      code: string;
      reason: string;
      /** What was read, as text, made storable by the runner. */
      payload: string;
      location?: string;
    }
  | { type: 'state'; stream: string; state: unknown }
  | {
      /** Advisory progress for terminals and the API; never persisted. */
      type: 'progress';
      stream?: string;
      rows: number;
      bytes?: number;
      totalBytes?: number;
      totalRows?: number;
    }
  | {
      /**
       * A full refresh of the stream read every row that exists: rows of the stream's
       * objects not seen since `syncStartedAt` are marked deleted.
       */
      type: 'complete';
      stream: string;
    };

/** What `check` found: a wrong host, port, password or path is a clear error, not a throw. */
export type CheckResult = { ok: true } | { ok: false; code: string; message: string };

export interface SourceContext {
  /** Aborted when the sync is stopped (shutdown, a new sync of the same source). */
  signal: AbortSignal;
  /** The configuration file's folder: relative paths resolve against it. */
  baseDir: string;
}

interface ConnectorBase<C> {
  /** The `type:` of the source in the configuration. */
  readonly type: string;
  /** The connector's configuration: validation, the TypeScript type, the docs table, the console form. */
  readonly spec: z.ZodType<C>;
}

/** A source Tributary reads from (files, databases, APIs). */
export interface PullSourceConnector<C> extends ConnectorBase<C> {
  readonly kind: 'pull';
  check(config: C, ctx: SourceContext): Promise<CheckResult>;
  discover(config: C, ctx: SourceContext): Promise<Catalog>;
  /**
   * Reads the streams from their states (undefined: from the beginning). Never throws for
   * one bad record (yield `failed`); throws for what stops the whole read (connection lost,
   * file gone), after which the runner retries from the last committed state.
   */
  read(
    config: C,
    streams: readonly ConfiguredStream[],
    state: Readonly<Record<string, unknown>>,
    ctx: SourceContext,
  ): AsyncIterable<SourceMessage>;
}

/** A source that sends to Tributary (webhooks): each request is turned into events. */
export interface PushSourceConnector<C> extends ConnectorBase<C> {
  readonly kind: 'push';
}

export type SourceConnector<C = unknown> = PullSourceConnector<C> | PushSourceConnector<C>;
