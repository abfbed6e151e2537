/**
 * The source port, modelled on the Airbyte protocol: a connector declares its configuration
 * (a zod spec), checks a configuration against the real system, discovers the streams it can
 * read, and reads the streams the user selected, yielding records and state checkpoints. The
 * connector never stores anything: the runner (`./runner.ts`) writes the records a checkpoint
 * covers, then the checkpoint's state, so a sync that stops anywhere resumes from the last
 * committed state and re-reads at most what that state did not cover (writes are idempotent:
 * objects are upserted by primary key, events carry a messageId derived from the record).
 *
 * Push sources (webhooks) have no `read`: the server hands each request to the receiver the
 * connector opened (see `PushSourceConnector`).
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

/** A request as a push source's route received it: the raw bytes and lowercase header names. */
export interface PushRequest {
  /** The body exactly as sent: signatures are checked over these bytes. */
  body: Buffer;
  headers: Readonly<Record<string, string | undefined>>;
  /** Epoch milliseconds of receipt. */
  receivedAt: number;
}

/**
 * Whether a request is the vendor's. A failure is answered 401 with its stable code and
 * nothing is stored; `header` names where the vendor signs (never the secret or signature).
 */
export type PushVerifyResult =
  | { ok: true; deliveryId?: string }
  | { ok: false; code: string; header: string };

/**
 * What one verified request becomes: events (not yet normalized; the route checks, stores
 * and counts them), nothing (`ignored`: acknowledged, not stored), or a failure (the body is
 * unreadable, no rule places it), stored in `failed_events` at stage `source` with its code
 * and acknowledged, so the vendor does not retry it for ever.
 */
export type PushMapResult =
  | { kind: 'events'; events: Record<string, unknown>[] }
  | { kind: 'ignored' }
  | { kind: 'failed'; code: string; reason: string };

/** One configured push source, opened: the route calls `verify`, then `map`, per request. */
export interface PushReceiver {
  /** Largest body the route takes for it; larger ones get 413. */
  readonly maxBodyBytes: number;
  /** Whether the route keeps the body, as text, in the delivery's first event. */
  readonly keepRaw: boolean;
  /** How its requests are authenticated (`stripe`, `hmac`, …), stored with each event. */
  readonly scheme: string;
  /** Checks the signature over the raw bytes, in constant time; never throws for a bad request. */
  verify(req: PushRequest): Promise<PushVerifyResult>;
  /**
   * Turns a verified request into events. The events' messageIds derive from the delivery
   * id (the vendor's, else a hash of the body), so a redelivery is stored once.
   */
  map(req: PushRequest, verified: { deliveryId?: string }): Promise<PushMapResult & { deliveryId: string }>;
  close(): Promise<void>;
}

/**
 * A source that sends to Tributary (webhooks). Where a pull source's runner reads, a push
 * source's route (`POST /webhooks/:sourceId`) receives: `open` prepares one configured source
 * (its verifier, its compiled mapping or function sandbox) and the route hands it each
 * request. The route, not the connector, appends to the log and answers only once the
 * append is durable.
 */
export interface PushSourceConnector<C> extends ConnectorBase<C> {
  readonly kind: 'push';
  open(
    config: C,
    ctx: Omit<SourceContext, 'signal'> & { env: Record<string, string | undefined> },
  ): Promise<PushReceiver>;
}

export type SourceConnector<C = unknown> = PullSourceConnector<C> | PushSourceConnector<C>;
