import { z } from 'zod';
import { Duration } from '../../config/duration.js';

/** A field name of the matcher: also a column name of its scratch tables. */
const FieldName = z
  .string()
  .regex(
    /^[a-z][a-z0-9_]{0,62}$/,
    'use lowercase letters, digits and "_" (at most 63), starting with a letter',
  );

/**
 * How a field is compared; each kind has its levels, best first (see `comparisons.ts`):
 * - `name`: exact, (swapped with `swapWith`,) one edit (Damerau), Jaro–Winkler ≥ 0.92, ≥ 0.80, else
 * - `text` (addresses, cities): exact, Jaro–Winkler ≥ 0.92, ≥ 0.80, else
 * - `email`: exact, same local part, Jaro–Winkler ≥ 0.88, else
 * - `date`: exact, day and month transposed or one typo, within `tolerance` days, else
 * - `code` (postcodes, ids, house numbers): exact, one edit, two edits, else
 * - `phone`: same digits, same last 8 digits, one edit, else
 * - `number`: exact, within `tolerance` (relative), else
 * - `exact`: exact, else
 * A missing value on either side is its own level with no weight.
 */
export const MatchComparisonKind = z.enum([
  'name',
  'text',
  'email',
  'date',
  'code',
  'phone',
  'number',
  'exact',
]);
export type MatchComparisonKind = z.infer<typeof MatchComparisonKind>;

export const MatchField = z
  .object({
    name: FieldName.describe('Name of the field (first_name, surname, dob, email, ...).'),
    comparison: MatchComparisonKind.describe('How two values are compared (levels, best first).'),
    traits: z
      .array(z.string().min(1).max(255))
      .optional()
      .describe('Profile trait names holding the value, first found wins (default: the field name).'),
    identifier: z
      .string()
      .regex(/^[a-z][a-z0-9_]{0,62}$/)
      .optional()
      .describe('Take the value from an identifier of this type instead (email, phone).'),
    tolerance: z
      .number()
      .positive()
      .optional()
      .describe('date: days apart still close (default 365); number: relative difference (default 0.1).'),
    swapWith: FieldName.optional().describe(
      'name: another name field the value may have been written in (first and last name swapped): a level of its own.',
    ),
    termFrequency: z
      .boolean()
      .optional()
      .describe(
        'Weigh an exact match by how rare the value is ("Smith" weaker than "Wojciechowski"). Default on for name, text, code, email.',
      ),
  })
  .strict();
export type MatchField = z.infer<typeof MatchField>;

/** One part of a blocking rule: the field's normalised value, or a transform of it. */
export const BlockingKey = z.union([
  FieldName,
  z
    .object({
      field: FieldName,
      transform: z
        .enum(['exact', 'prefix', 'suffix', 'year', 'local', 'domain'])
        .describe(
          'prefix/suffix: first/last `length` characters; year of a date; local/domain part of an email.',
        ),
      length: z.number().int().min(1).max(64).optional().describe('For prefix and suffix (default 3).'),
    })
    .strict(),
]);
export type BlockingKey = z.infer<typeof BlockingKey>;

/** Records are candidate pairs when every key of one rule is equal (and not missing); rules are unioned. */
export const BlockingRule = z.array(BlockingKey).min(1).max(8);
export type BlockingRule = z.infer<typeof BlockingRule>;

/** Field names are unique, `swapWith` and blocking keys name fields. */
function checkFields(
  s: { fields: MatchField[]; blocking: BlockingRule[]; review: number; autoMerge: number },
  ctx: z.RefinementCtx,
): void {
  const names = new Set<string>();
  s.fields.forEach((f, i) => {
    if (names.has(f.name))
      ctx.addIssue({ code: 'custom', path: ['fields', i, 'name'], message: 'duplicate field' });
    names.add(f.name);
  });
  s.fields.forEach((f, i) => {
    if (f.swapWith !== undefined && (!names.has(f.swapWith) || f.swapWith === f.name))
      ctx.addIssue({
        code: 'custom',
        path: ['fields', i, 'swapWith'],
        message: `no other field named ${f.swapWith}`,
      });
  });
  s.blocking.forEach((rule, i) => {
    rule.forEach((k, j) => {
      const field = typeof k === 'string' ? k : k.field;
      if (!names.has(field))
        ctx.addIssue({ code: 'custom', path: ['blocking', i, j], message: `no field named ${field}` });
    });
  });
  if (s.review > s.autoMerge)
    ctx.addIssue({ code: 'custom', path: ['review'], message: 'review must not be above autoMerge' });
}

export const MatchSettings = z
  .object({
    fields: z.array(MatchField).min(1).max(64),
    blocking: z.array(BlockingRule).min(1).max(32),
    autoMerge: z
      .number()
      .gt(0)
      .lt(1)
      .default(0.99)
      .describe('Match probability from which a pair merges its profiles (rule `probabilistic`).'),
    review: z
      .number()
      .gt(0)
      .lt(1)
      .default(0.8)
      .describe('Match probability from which a pair below autoMerge goes to the review list.'),
    guard: z
      .number()
      .gt(0)
      .lt(1)
      .default(0.001)
      .describe(
        'Chain guard: two groups are not joined when any two of their records have a match probability below this.',
      ),
    maxBlockSize: z
      .number()
      .int()
      .min(2)
      .default(1000)
      .describe(
        'A blocking key shared by more records than this makes no pairs (placeholders, very common values).',
      ),
    sampleSize: z
      .number()
      .int()
      .min(1000)
      .default(300_000)
      .describe('Random pairs compared to estimate u (how often non-matches agree by chance).'),
    seed: z.number().int().min(0).default(42).describe('Seed of the random pairs.'),
  })
  .strict()
  .superRefine(checkFields);
export type MatchSettings = z.infer<typeof MatchSettings>;

/** Fields that work for people, as traits of identify calls and CRM imports name them. */
export const PEOPLE_FIELDS: MatchField[] = [
  {
    name: 'first_name',
    comparison: 'name',
    traits: ['first_name', 'firstName', 'given_name'],
    swapWith: 'last_name',
  },
  {
    name: 'last_name',
    comparison: 'name',
    traits: ['last_name', 'lastName', 'surname', 'family_name'],
    swapWith: 'first_name',
  },
  { name: 'dob', comparison: 'date', traits: ['dob', 'birthday', 'date_of_birth', 'birthdate'] },
  { name: 'email', comparison: 'email', identifier: 'email' },
  { name: 'phone', comparison: 'phone', identifier: 'phone' },
  { name: 'street', comparison: 'text', traits: ['street', 'address', 'address.street', 'address_1'] },
  { name: 'city', comparison: 'text', traits: ['city', 'address.city', 'suburb'] },
  { name: 'postcode', comparison: 'code', traits: ['postcode', 'postal_code', 'zip', 'address.postal_code'] },
];

export const PEOPLE_BLOCKING: BlockingRule[] = [
  ['dob'],
  ['email'],
  ['phone'],
  ['first_name', 'last_name'],
  [{ field: 'last_name', transform: 'prefix', length: 3 }, 'postcode'],
  [{ field: 'first_name', transform: 'prefix', length: 2 }, { field: 'dob', transform: 'year' }, 'city'],
  [{ field: 'email', transform: 'local' }],
];

export const MatchingConfig = z
  .object({
    enabled: z.boolean().default(false).describe('Match profiles that share no identifier (probabilistic).'),
    fields: z.array(MatchField).min(1).max(64).default(PEOPLE_FIELDS).describe('The compared fields.'),
    blocking: z
      .array(BlockingRule)
      .min(1)
      .max(32)
      .default(PEOPLE_BLOCKING)
      .describe('Candidate pairs: records equal on every key of a rule; the rules are unioned.'),
    sources: z
      .record(z.string(), z.record(FieldName, z.array(z.string().min(1).max(255)).min(1)))
      .default({})
      .describe('Per source stream: the trait names of each field in its records (instead of `traits`).'),
    autoMerge: z.number().gt(0).lt(1).default(0.99).describe('Match probability that merges profiles.'),
    review: z
      .number()
      .gt(0)
      .lt(1)
      .default(0.8)
      .describe('Match probability that puts a pair on the review list.'),
    guard: z.number().gt(0).lt(1).default(0.001).describe('Chain guard (see the README).'),
    maxBlockSize: z.number().int().min(2).default(1000).describe('Largest block that makes pairs.'),
    schedule: Duration.optional().describe('Run a full match this often (e.g. "1d"); otherwise on demand.'),
    incremental: z
      .boolean()
      .default(true)
      .describe('Match a new or changed profile as it is resolved (after a first full run).'),
  })
  .strict()
  .superRefine(checkFields);
export type MatchingConfig = z.infer<typeof MatchingConfig>;
