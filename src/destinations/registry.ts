import type { DestinationKind } from './connector.js';
import { parquetDestination } from './lake/spec.js';
import { duckdbDestination, postgresDestination } from './warehouse/spec.js';

/**
 * Every destination kind, one line each. The configuration's `DestinationConfig` union is
 * composed from their specs and the runner creates destinations through them: a new kind is
 * its folder and a line here. Importing this module loads only the specs (zod), no engine.
 */
export const DESTINATION_KINDS = [duckdbDestination, postgresDestination, parquetDestination] as const;

/** The kind of a destination's `type`. */
export function destinationKind(type: string): DestinationKind<{ type: string; id: string }> {
  const kind = DESTINATION_KINDS.find((k) => k.type === type);
  if (kind === undefined) throw new Error(`unknown destination type "${type}"`);
  return kind as unknown as DestinationKind<{ type: string; id: string }>;
}
