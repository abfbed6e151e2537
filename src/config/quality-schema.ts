import { z } from 'zod';

/** A short duration: `250ms`, `2s`, or milliseconds. (Not schema.ts's Duration: that module imports this one.) */
const ShortDuration = z
  .union([
    z.number().int().positive(),
    z.string().regex(/^\d+(ms|s)$/, 'expected a duration such as "500ms" or "2s"'),
  ])
  .transform((v) =>
    typeof v === 'number' ? v : v.endsWith('ms') ? Number(v.slice(0, -2)) : Number(v.slice(0, -1)) * 1000,
  );

/** What a tracking plan does with an event that breaks its schema. */
export const ViolationAction = z
  .enum(['allow', 'omit_properties', 'block'])
  .describe(
    'allow: the event passes carrying its violations; omit_properties: unplanned properties are dropped; block: the event goes to failed_events.',
  );
export type ViolationAction = z.infer<typeof ViolationAction>;

/** A JSON Schema, checked by ajv when the plan is compiled. */
const JsonSchema = z
  .record(z.string(), z.unknown())
  .describe('A JSON Schema (draft 2020-12; formats from ajv-formats).');

export const PlannedEvent = z
  .object({
    description: z.string().optional(),
    properties: JsonSchema.optional().describe('Schema of `properties`.'),
    context: JsonSchema.optional().describe('Schema of `context`, for this event only.'),
  })
  .strict();

/** A tracking plan: the events a source may send and the shape of each. */
export const TrackingPlan = z
  .object({
    name: z.string().min(1).describe('Name of the plan, reported with its violations.'),
    onViolation: ViolationAction.default('allow'),
    onUnplannedEvent: z
      .enum(['allow', 'block'])
      .default('allow')
      .describe('What happens to a track event the plan does not name.'),
    events: z
      .record(z.string(), PlannedEvent)
      .default({})
      .describe('Allowed track event names and their schemas.'),
    identify: z.object({ traits: JsonSchema.optional() }).strict().optional(),
    group: z.object({ traits: JsonSchema.optional() }).strict().optional(),
    context: JsonSchema.optional().describe('Schema of `context` for every event.'),
  })
  .strict();
export type TrackingPlan = z.infer<typeof TrackingPlan>;

/** A plan inline in the configuration, or a YAML/JSON file holding one (relative to the configuration file). */
export const PlanRef = z.union([z.object({ file: z.string().min(1) }).strict(), TrackingPlan]);
export type PlanRef = z.infer<typeof PlanRef>;

export const Normalizer = z.enum(['trim', 'lowercase', 'email', 'e164', 'iso_date']);
export type Normalizer = z.infer<typeof Normalizer>;

export const MappingConfig = z
  .object({
    events: z
      .object({
        aliases: z
          .record(z.string(), z.array(z.string()))
          .default({})
          .describe('Canonical track event name → names that mean it.'),
        style: z
          .enum(['none', 'snake_case', 'title_case', 'camel_case'])
          .default('none')
          .describe('Naming style applied to event names that no alias names.'),
      })
      .strict()
      .prefault({}),
    fields: z
      .record(z.string(), z.array(z.string()))
      .default({})
      .describe('Canonical property/trait key → keys that mean it (in properties, traits, context.traits).'),
    normalize: z
      .record(z.string(), z.array(Normalizer))
      .default({})
      .describe('Key (after mapping) → normalizers applied in order to its values.'),
    defaultRegion: z
      .string()
      .regex(/^[A-Z]{2}$/)
      .optional()
      .describe('Country (ISO 3166 alpha-2) for phone numbers written without a country code.'),
  })
  .strict();
export type MappingConfig = z.infer<typeof MappingConfig>;

export const PiiAction = z.enum(['allow', 'mask', 'hash', 'drop', 'block']);
export type PiiAction = z.infer<typeof PiiAction>;

export const PiiMatcher = z
  .object({
    name: z
      .string()
      .regex(/^[a-z][a-z0-9_]*$/)
      .describe('Class name, usable as a policy key.'),
    category: z.enum(['red', 'yellow']).default('yellow'),
    key: z.string().optional().describe('Regex matched against field names (case-insensitive).'),
    value: z.string().optional().describe('Regex matched against string values.'),
  })
  .strict()
  .refine((m) => m.key !== undefined || m.value !== undefined, 'give a key or a value regex')
  .superRefine((m, ctx) => {
    for (const field of ['key', 'value'] as const) {
      const re = m[field];
      if (re === undefined) continue;
      try {
        new RegExp(re);
      } catch (err) {
        ctx.addIssue({
          code: 'custom',
          path: [field],
          message: `not a valid regex: ${(err as Error).message}`,
        });
      }
    }
  });
export type PiiMatcher = z.infer<typeof PiiMatcher>;

export const PrivacyConfig = z
  .object({
    policy: z
      .partialRecord(PiiAction, z.array(z.string().min(1)))
      .default({})
      .describe(
        'Action → classes (card_number, ssn, password, secret, email, phone, address, name, ip, or a matcher name) or categories (red, yellow). Defaults: red → drop, yellow → allow.',
      )
      .superRefine((policy, ctx) => {
        const seen = new Map<string, string>();
        for (const [action, names] of Object.entries(policy)) {
          for (const name of names ?? []) {
            if (seen.has(name))
              ctx.addIssue({
                code: 'custom',
                path: [action],
                message: `"${name}" is also under ${seen.get(name)}`,
              });
            seen.set(name, action);
          }
        }
      }),
    matchers: z
      .array(PiiMatcher)
      .default([])
      .describe('Matchers of your own, checked after the built-in ones.'),
  })
  .strict();
export type PrivacyConfig = z.infer<typeof PrivacyConfig>;

export const TransformationConfig = z
  .object({
    id: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,62}$/),
    file: z.string().min(1).describe('JavaScript or TypeScript file whose default export is the function.'),
    timeout: ShortDuration.prefault('1s').describe('Longest one event may take.'),
    memoryLimit: z
      .number()
      .int()
      .min(8)
      .max(4096)
      .default(64)
      .describe(
        "All memory of the function's engine, MB: objects, strings, ArrayBuffers; held between 24 and 2048.",
      ),
    grants: z
      .object({
        env: z
          .array(z.string())
          .default([])
          .describe('Environment variables the function may read (as `env.NAME`).'),
        network: z
          .array(z.string().min(1))
          .optional()
          .describe(
            'Host names the function may reach with fetch (it may then be async). Default: no network.',
          ),
      })
      .strict()
      .prefault({}),
  })
  .strict();
export type TransformationConfig = z.infer<typeof TransformationConfig>;

/** The data-quality keys of one source. */
export const SourceQualityConfig = {
  plans: z
    .array(PlanRef)
    .optional()
    .describe('Tracking plans, checked in order; the first naming an event judges it.'),
  mapping: MappingConfig.optional(),
  privacy: PrivacyConfig.optional(),
  transformations: z
    .array(TransformationConfig)
    .optional()
    .describe('Functions run in order on every event.'),
};
