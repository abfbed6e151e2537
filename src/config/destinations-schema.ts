import { z } from 'zod';
import { DESTINATION_KINDS } from '../destinations/registry.js';

export { ParquetDestinationConfig } from '../destinations/lake/spec.js';
export { DuckDBDestinationConfig, PostgresDestinationConfig } from '../destinations/warehouse/spec.js';

/** The kinds' specs, as the tuple `z.discriminatedUnion` takes. */
type SpecsOf<T extends readonly unknown[]> = {
  -readonly [K in keyof T]: T[K] extends { config: infer S } ? S : never;
};
const specs = DESTINATION_KINDS.map((k) => k.config) as unknown as SpecsOf<typeof DESTINATION_KINDS>;

/** One entry of `destinations:`, composed from every kind's spec (`src/destinations/registry.ts`). */
export const DestinationConfig = z.discriminatedUnion('type', specs);
export type DestinationConfig = z.infer<typeof DestinationConfig>;

/** With no `destinations` key: the Segment tables in the embedded warehouse file. */
export const DEFAULT_DESTINATIONS = [{ id: 'warehouse', type: 'duckdb' }] as const;

/** The destinations a file lists (no default: see `DestinationsConfig`). */
export const DestinationList = z.array(DestinationConfig).superRefine((list, ctx) => {
  const seen = new Set<string>();
  list.forEach((d, i) => {
    if (seen.has(d.id))
      ctx.addIssue({ code: 'custom', path: [i, 'id'], message: `duplicate destination id "${d.id}"` });
    seen.add(d.id);
  });
});

export const DestinationsConfig = DestinationList.prefault([...DEFAULT_DESTINATIONS]).describe(
  'Where the Segment tables and lake files are loaded; default: the embedded DuckDB warehouse.',
);
export type DestinationsConfig = z.infer<typeof DestinationsConfig>;

/**
 * Whether a connection string carries a password that is not an `${ENV}` reference.
 * Checked on the text before references are replaced.
 */
export function hasLiteralPassword(connectionString: string): boolean {
  const m = /^[a-z][a-z0-9+.-]*:\/\/[^:@/]*:([^@/]*)@/i.exec(connectionString);
  return m !== null && m[1] !== '' && !/^\$\{[A-Za-z_][A-Za-z0-9_]*\}$/.test(m[1]!);
}
