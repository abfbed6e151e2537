import { amqpDestination } from './amqp/spec.js';
import type { DestinationKind } from './connector.js';
import { httpDestination } from './http/spec.js';
import { parquetDestination } from './lake/spec.js';
import { mqttDestination } from './mqtt/spec.js';
import { mysqlUpsertDestination } from './mysql-upsert/spec.js';
import { postgresUpsertDestination } from './postgres-upsert/spec.js';
import { redisStreamsDestination } from './redis-streams/spec.js';
import type { StreamDestinationKind } from './stream.js';
import { duckdbDestination, postgresDestination } from './warehouse/spec.js';

/**
 * Every destination kind, one line each: the warehouse kinds (loaded by `./runner.ts` with
 * offsets) and the streaming kinds (`delivery: 'stream'`, delivered by `./delivery/`). The
 * configuration's `DestinationConfig` union is composed from their specs and the runners create
 * destinations through them: a new kind is its folder and a line here. Importing this module
 * loads only the specs (zod), no engine.
 */
export const DESTINATION_KINDS = [
  duckdbDestination,
  postgresDestination,
  parquetDestination,
  httpDestination,
  postgresUpsertDestination,
  mysqlUpsertDestination,
  amqpDestination,
  mqttDestination,
  redisStreamsDestination,
] as const;

/** A kind of either runner. */
export type AnyDestinationKind =
  | DestinationKind<{ type: string; id: string }>
  | StreamDestinationKind<{ type: string; id: string }>;

/** The kind of a destination's `type`. */
export function destinationKind(type: string): AnyDestinationKind {
  const kind = DESTINATION_KINDS.find((k) => k.type === type);
  if (kind === undefined) throw new Error(`unknown destination type "${type}"`);
  return kind as unknown as AnyDestinationKind;
}

/** Whether the kind is delivered by the delivery runner (`./delivery/`) rather than loaded. */
export function isStreamKind(
  kind: AnyDestinationKind,
): kind is StreamDestinationKind<{ type: string; id: string }> {
  return 'delivery' in kind && kind.delivery === 'stream';
}

/** Whether destinations of this type take `transformations:` (every streaming kind does). */
export function takesTransformations(type: string): boolean {
  const kind = destinationKind(type);
  return isStreamKind(kind) || kind.capabilities.transformations;
}

/**
 * Whether destinations of this type can run in the scale-out deployment, once per log
 * partition. Streaming kinds run in the embedded deployment only, for now (their queue methods
 * exist in the PostgreSQL store, the workers do not start them yet).
 */
export function runsPerPartition(type: string): boolean {
  const kind = destinationKind(type);
  return !isStreamKind(kind) && kind.capabilities.perPartition;
}
