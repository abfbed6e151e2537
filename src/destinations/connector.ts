import type { DuckDBInstance } from '@duckdb/node-api';
import type { z } from 'zod';
import type { ErrorCode } from '../errors.js';
import type { CheckpointGate } from '../platform/duckdb/checkpoint-gate.js';
import type { OffsetScope, WarehouseDestination } from './destination.js';

/**
 * A destination kind: one folder under `src/destinations/`, one line in `./registry.ts`.
 * `spec.ts` in its folder exports the {@link DestinationKind} (zod and configuration helpers
 * only, so the configuration composes every kind's spec without loading an engine); the
 * connector, loaded on first use, checks and creates destinations of the kind.
 */
export interface DestinationKind<C extends { type: string; id: string } = { type: string; id: string }> {
  /** The `type:` of its entries under `destinations:`. */
  type: C['type'];
  /** The zod spec of an entry: validation, the TypeScript type and the configuration docs. */
  config: z.ZodType<C, unknown>;
  capabilities: DestinationCapabilities;
  /** The implementation (engines and drivers), imported when a destination of the kind starts. */
  connector(): Promise<DestinationConnector<C>>;
}

export interface DestinationCapabilities {
  /**
   * Takes `transformations:` (functions run on each event before it loads): the runner wraps it
   * in the transforming decorator. A kind that cannot load a retry without moving its offset
   * (the Parquet lake) takes none.
   */
  transformations: boolean;
  /**
   * Can run once per log partition, each instance with an offset of its own: the scale-out
   * deployment. A kind with a single writer (a DuckDB file, a lake folder) cannot.
   */
  perPartition: boolean;
}

/** What a destination is created with, besides its configuration. */
export interface DestinationContext {
  /** The process's DuckDB instance; absent in scale-out. */
  instance?: DuckDBInstance;
  /** The data folder: relative paths resolve against it. */
  dataDir: string;
  /** Key of its stored offset: the id, with the partition's suffix when it runs per partition. */
  offsetKey: string;
  /** The gate of the embedded warehouse file's checkpoints; absent in scale-out. */
  checkpoints?: CheckpointGate;
  /** The workspace and log its offsets are stored for; absent: keyed by destination alone. */
  scope?: OffsetScope;
}

/**
 * The outcome of {@link DestinationConnector.check}: never a throw, so a configuration check
 * lists every destination's problem with its stable code.
 */
export type CheckResult = { ok: true } | { ok: false; code: ErrorCode; message: string };

export interface DestinationConnector<C> {
  /**
   * Connects or opens what the destination writes to, and reports a wrong host, port,
   * password, database or path as a {@link CheckResult} with a stable code. Writes nothing.
   */
  check(config: C, ctx: { dataDir: string }): Promise<CheckResult>;
  /** The destination, ready to load (its offset is read by the runner). */
  create(config: C, ctx: DestinationContext): Promise<WarehouseDestination>;
}
