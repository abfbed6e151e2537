import { z } from 'zod';
import { MatchingConfig } from '../identity/matching/matching-schema.js';
import { Duration } from './duration.js';

/** Identifier type names: lowercase letters, digits and `_` (`user_id`, `email`, `stripe_customer_id`). */
const IdentifierType = z
  .string()
  .regex(
    /^[a-z][a-z0-9_]{0,62}$/,
    'use lowercase letters, digits and "_" (at most 63), starting with a letter',
  );

export const IdentifierRule = z
  .object({
    limit: z
      .number()
      .int()
      .min(1)
      .optional()
      .describe('Most identifiers of this type one profile may hold (user_id 1, others 5 by default).'),
    within: Duration.optional().describe(
      'Count the limit only over identifiers first seen within this window before the event (e.g. "7d").',
    ),
    priority: z
      .number()
      .int()
      .min(1)
      .optional()
      .describe(
        '1 is highest. When a merge would break a limit, the lowest-priority identifiers are left out.',
      ),
  })
  .strict();
export type IdentifierRule = z.infer<typeof IdentifierRule>;

export const BlockedValue = z.union([
  z.string().describe('A value that is never an identifier (compared after normalisation).'),
  z
    .object({
      regex: z
        .string()
        .refine((s) => {
          try {
            new RegExp(s);
            return true;
          } catch {
            return false;
          }
        }, 'not a valid regular expression')
        .describe('A regular expression; matching values are never identifiers.'),
      types: z.array(IdentifierType).optional().describe('Only for these identifier types (default: all).'),
    })
    .strict(),
]);
export type BlockedValue = z.infer<typeof BlockedValue>;

export const IdentifierPath = z
  .object({
    source: z.string().optional().describe('Only events of this source id (default: every source).'),
    path: z
      .string()
      .regex(
        /^[A-Za-z0-9_$-]+(\.[A-Za-z0-9_$-]+)*$/,
        'a dotted path such as properties.ticket_requester_email',
      )
      .describe('Dotted path into the event.'),
    type: IdentifierType.describe('Identifier type of the value found there.'),
  })
  .strict();
export type IdentifierPath = z.infer<typeof IdentifierPath>;

export const TraitRuleName = z.enum(['latest', 'first', 'source_priority']);
export type TraitRuleName = z.infer<typeof TraitRuleName>;

export const ComputedTrait = z
  .object({
    name: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,62}$/, 'a name of letters, digits and "_"'),
    op: z.enum(['count', 'sum', 'min', 'max', 'first', 'last']).describe('How events are aggregated.'),
    event: z
      .string()
      .optional()
      .describe('Track event name to count (default: every event; `type:page` etc. for an event type).'),
    property: z
      .string()
      .optional()
      .describe(
        'Dotted path of the value to aggregate (needed by sum, min, max; first/last default to the timestamp).',
      ),
    window: Duration.optional().describe('Only events whose timestamp is within this window before now.'),
  })
  .strict()
  .superRefine((c, ctx) => {
    if ((c.op === 'sum' || c.op === 'min' || c.op === 'max') && !c.property)
      ctx.addIssue({ code: 'custom', path: ['property'], message: `op ${c.op} needs a property` });
  });
export type ComputedTrait = z.infer<typeof ComputedTrait>;

/** Segment's defaults: placeholders and zero-like values never glue strangers together. */
export const DEFAULT_BLOCKED_VALUES: BlockedValue[] = [
  '',
  'null',
  'undefined',
  'none',
  'nil',
  'anonymous',
  'unknown',
  '-1',
  'n/a',
  { regex: '^[0-]*$' },
  { regex: '^(test|noreply|no-reply|null|none|unknown)@', types: ['email'] },
];

export const IdentityConfig = z
  .object({
    enabled: z.boolean().default(true).describe('Resolve identities into profiles as events arrive.'),
    identifiers: z
      .record(IdentifierType, IdentifierRule)
      .default({})
      .describe(
        'Per identifier type: limit, window and priority (user_id: 1, priority 1; email: 5, priority 2).',
      ),
    defaultLimit: z.number().int().min(1).default(5).describe('Limit of every type not listed.'),
    blockedValues: z
      .array(BlockedValue)
      .default(DEFAULT_BLOCKED_VALUES)
      .describe('Values that are never identifiers: exact strings, or {regex, types}.'),
    paths: z
      .array(IdentifierPath)
      .default([])
      .describe('More identifiers taken from event fields, per source.'),
    phoneDefaultCountry: z
      .string()
      .regex(/^[A-Z]{2}$/, 'a two-letter country code such as US or DE')
      .optional()
      .describe(
        'Country of phone numbers written without +country code (otherwise such numbers are kept as digits).',
      ),
    traits: z
      .object({
        default: TraitRuleName.default('latest').describe(
          'latest: newest event timestamp wins; first; source_priority.',
        ),
        rules: z.record(z.string(), TraitRuleName).default({}).describe('Rule per trait name.'),
        sourcePriority: z
          .array(z.string())
          .default([])
          .describe('Source ids, most trusted first, for source_priority.'),
      })
      .strict()
      .default({ default: 'latest', rules: {}, sourcePriority: [] }),
    computed: z
      .array(ComputedTrait)
      .default([])
      .describe('Computed traits kept up to date as events arrive.'),
    matching: MatchingConfig.default(MatchingConfig.parse({})).describe(
      'Probabilistic matching of profiles that share no identifier (off by default; see the README).',
    ),
    readToken: z
      .string()
      .min(16, 'a read token needs at least 16 characters')
      .optional()
      .describe(
        'Bearer token that may read profiles (the admin token always may); only as an ${ENV} reference.',
      ),
  })
  .strict();
export type IdentityConfig = z.infer<typeof IdentityConfig>;

export const IDENTITY_DEFAULTS: IdentityConfig = IdentityConfig.parse({});
