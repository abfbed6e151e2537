/**
 * The fields every source has, whatever its kind: every source's events go through the
 * pipeline, so the quality settings (plans, mapping, privacy, transformations) are common.
 * Light: zod and config helpers only.
 */
import { z } from 'zod';
import { SourceQualityConfig } from '../config/quality-schema.js';

export const SourceId = z
  .string()
  .regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, 'use lowercase letters, digits, "-" and "_" (at most 63)')
  .describe('Stable identifier of the source; stored with every event.');

/** Spread into each kind's `z.object({ ...commonSourceFields, type: z.literal(...), ... })`. */
export const commonSourceFields = {
  id: SourceId,
  name: z.string().optional().describe('Display name.'),
  labels: z
    .array(z.string().min(1).max(63))
    .optional()
    .describe('Labels a role may be limited to (users add --sources label:NAME), besides the source id.'),
  enabled: z
    .boolean()
    .default(true)
    .describe(
      'A disabled source takes no events (HTTP: its write key answers 401; pull sources are not synced).',
    ),
  ...SourceQualityConfig,
};
