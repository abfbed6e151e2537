import { z } from 'zod';
import { TransformationConfig } from './quality-schema.js';

/**
 * What every destination connector's configuration spec shares (`src/destinations/<kind>/spec.ts`
 * builds on it). Only zod and configuration helpers here: the configuration composes the specs
 * without loading any engine.
 */

/** Durations as `500ms`, `1s`, or milliseconds (the same form as the other durations). */
export const Interval = z
  .union([
    z.number().int().nonnegative(),
    z.string().regex(/^\d+(\.\d+)?\s*(ms|s|m)$/, 'expected "500ms", "1s" or "1m"'),
  ])
  .transform((v) => {
    if (typeof v === 'number') return v;
    const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m)$/.exec(v)!;
    return Math.round(Number(m[1]) * ({ ms: 1, s: 1000, m: 60_000 } as const)[m[2] as 'ms' | 's' | 'm']);
  });

/** The fields of every destination, whatever its `type`. */
export const destinationCommon = {
  id: z
    .string()
    .regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, 'use lowercase letters, digits, "-" and "_" (at most 63)')
    .describe('Stable name of the destination; its load offset is stored under it.'),
  enabled: z
    .boolean()
    .default(true)
    .describe('A disabled destination is not loaded (it resumes where it stopped).'),
  interval: Interval.prefault('1s').describe(
    'Least time from the start of one load to the next while the destination keeps up (a full batch waiting loads at once).',
  ),
  maxBatch: z.number().int().min(1).max(1_000_000).default(10_000).describe('Most events per load.'),
  transformations: z
    .array(TransformationConfig)
    .optional()
    .describe(
      'Functions run in order on every event before this destination loads it; `events` and other destinations are untouched. Not on parquet destinations.',
    ),
};

/**
 * The fields of every streaming destination (`src/destinations/stream.ts`): what the delivery
 * runner applies the same way to every kind.
 */
export const streamCommon = {
  id: destinationCommon.id,
  enabled: destinationCommon.enabled,
  transformations: destinationCommon.transformations,
  batchSize: z
    .number()
    .int()
    .min(1)
    .max(10_000)
    .default(1)
    .describe('Events per request; 1 sends them one by one. More only on kinds that batch.'),
};
