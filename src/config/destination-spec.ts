import { z } from 'zod';
import { Duration } from './duration.js';
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

/** The Segment event types, for `filters.types`. */
const EVENT_TYPES = ['track', 'identify', 'page', 'screen', 'group', 'alias'] as const;

/**
 * Which events a streaming destination takes; every given test must pass. Events left out are
 * counted (`tributary_delivery_events_total{outcome="filtered"}`), not stored.
 */
export const StreamFilters = z
  .object({
    sources: z.array(z.string().min(1)).min(1).optional().describe('Only events of these source ids.'),
    types: z.array(z.enum(EVENT_TYPES)).min(1).optional().describe('Only events of these types.'),
    events: z
      .array(z.string())
      .min(1)
      .optional()
      .describe(
        'Only these names: the `event` of a track, the `name` of a page or screen. Events without a name (identify, group, alias) are not affected; leave them out with `types`.',
      ),
    condition: z
      .string()
      .min(1)
      .optional()
      .describe(
        'A JSONata expression on the event (https://jsonata.org), e.g. `properties.revenue > 100 and context.locale = "de-DE"`: the event is sent when it yields true. An expression that fails on an event counts it as filtered.',
      ),
  })
  .strict();
export type StreamFilters = z.infer<typeof StreamFilters>;

/** Consent gating by the Segment consent spec (`context.consent.categoryPreferences`). */
export const StreamConsent = z
  .object({
    categories: z
      .array(z.string().min(1))
      .min(1)
      .describe(
        'Consent categories the destination needs (e.g. `Advertising`): an event is sent only when `context.consent.categoryPreferences` holds `true` for every one of them.',
      ),
    missing: z
      .enum(['send', 'block'])
      .default('send')
      .describe(
        'An event without `context.consent.categoryPreferences` at all: `send` (as Segment does; the consent was not collected) or `block`.',
      ),
  })
  .strict();
export type StreamConsent = z.infer<typeof StreamConsent>;

/** The circuit breaker of a streaming destination. */
export const StreamBreaker = z
  .object({
    failures: z
      .number()
      .int()
      .min(1)
      .default(10)
      .describe(
        'Consecutive retryable failures (timeouts, 5xx, 429, lost connections) that open the breaker.',
      ),
    cooldown: Duration.prefault('30s').describe(
      'How long an open breaker sends nothing; then one request probes the receiver (half-open): success closes it, a failure opens it again.',
    ),
  })
  .strict();
export type StreamBreaker = z.infer<typeof StreamBreaker>;

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
  filters: StreamFilters.optional().describe('Which events the destination takes (default: all).'),
  consent: StreamConsent.optional().describe('Consent categories the destination needs (default: none).'),
  retryWindow: Duration.prefault('4h').describe(
    'How long a delivery is retried after it was queued; past it, it goes to failed_events (code TRIB_ERR_DELIVERY_EXPIRED), from which `tributary failed retry` sends it again.',
  ),
  timeout: Duration.prefault('10s').describe(
    'Most time one request may take; a request that takes longer is aborted and retried.',
  ),
  concurrency: z
    .number()
    .int()
    .min(1)
    .max(1000)
    .default(8)
    .describe('Requests in flight at once (one user has at most one: their events go in order).'),
  rateLimit: z.number().positive().optional().describe('Most requests per second (default: no limit).'),
  backoff: z
    .object({
      initial: Duration.prefault('1s').describe('Delay before the first retry.'),
      max: Duration.prefault('10m').describe('Longest delay between two retries.'),
    })
    .strict()
    .prefault({})
    .describe('Exponential backoff with full jitter between retries; a Retry-After the receiver gives wins.'),
  breaker: StreamBreaker.prefault({}).describe(
    'Stops sending to a receiver that keeps failing, and probes it later.',
  ),
  startFrom: z
    .enum(['now', 'beginning'])
    .default('now')
    .describe(
      'Where a new destination starts: `now`, the events stored from its first start on (as Segment does), or `beginning`, every event in `events` (a backfill). Once started it resumes where it stopped.',
    ),
  queueBatch: z
    .number()
    .int()
    .min(1)
    .max(100_000)
    .default(5_000)
    .describe('Most events taken from the event feed into the delivery queue at once.'),
};

/**
 * The check of a broker kind whose entry names its server either by `connectionString` or by
 * `host` (and the fields beside it), never both: for `.superRefine`.
 */
export function connectionStringOrHost(
  c: { connectionString?: string; host?: string },
  ctx: { addIssue(issue: { code: 'custom'; message: string; path: string[] }): void },
): void {
  if (c.connectionString === undefined && c.host === undefined)
    ctx.addIssue({ code: 'custom', message: 'give connectionString or host', path: ['host'] });
  if (c.connectionString !== undefined && c.host !== undefined)
    ctx.addIssue({ code: 'custom', message: 'give connectionString or host, not both', path: ['host'] });
}
