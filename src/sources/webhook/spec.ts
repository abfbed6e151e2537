import { z } from 'zod';
import { Duration } from '../../config/duration.js';
import { TransformationConfig } from '../../config/quality-schema.js';
import { commonSourceFields, SourceId } from '../common-schema.js';
import { isPath, isTemplate } from './json-path.js';

/**
 * The configuration of a `type: webhook` source: how its requests are verified, how their
 * payloads become Segment events, and its limits. Secrets are `${ENV}` references only (the
 * configuration loader refuses a literal under any key named `secret`).
 */

const Secret = z
  .string()
  .min(1)
  .describe('Signing secret, only as an ${ENV} reference (the loader refuses a literal).');

const Tolerance = Duration.prefault('5m').describe(
  'Oldest a signed timestamp may be (and, for standardwebhooks and hmac, how far ahead); older requests get 401 TRIB_ERR_WEBHOOK_TIMESTAMP_STALE.',
);

const HeaderName = z
  .string()
  .regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/, 'a header name such as X-Signature')
  .transform((h) => h.toLowerCase());

/** Where the vendor's delivery id is, for the vendors Tributary does not know (hmac, none). */
const DeliveryId = z
  .union([
    z.object({ header: HeaderName.describe('Header holding the delivery id.') }).strict(),
    z
      .object({
        path: z.string().refine(isPath, 'a path such as data.id').describe('Path into the payload.'),
      })
      .strict(),
  ])
  .describe(
    'Where the delivery id (the messageId, so redeliveries are stored once) is; default: a hash of the body.',
  );

export const WebhookVerify = z
  .discriminatedUnion('kind', [
    z
      .object({
        kind: z
          .literal('stripe')
          .describe('stripe: Stripe-Signature, checked by the stripe library; delivery id: the event id.'),
        secret: Secret,
        tolerance: Tolerance,
      })
      .strict(),
    z
      .object({
        kind: z
          .literal('github')
          .describe(
            'github: X-Hub-Signature-256, checked by @octokit/webhooks-methods; delivery id: X-GitHub-Delivery.',
          ),
        secret: Secret,
      })
      .strict(),
    z
      .object({
        kind: z
          .literal('standardwebhooks')
          .describe(
            'standardwebhooks: Standard Webhooks / Svix (webhook-id, webhook-timestamp, webhook-signature, or svix-*), checked by the standardwebhooks library with its 5-minute tolerance; delivery id: webhook-id.',
          ),
        secret: Secret.describe('The whsec_… secret (base64), only as an ${ENV} reference.'),
      })
      .strict(),
    z
      .object({
        kind: z
          .literal('shopify')
          .describe(
            'shopify: X-Shopify-Hmac-Sha256, the base64 HMAC-SHA256 of the body; delivery id: X-Shopify-Webhook-Id.',
          ),
        secret: Secret,
      })
      .strict(),
    z
      .object({
        kind: z.literal('hmac').describe('hmac: any vendor signing the body with a shared secret.'),
        secret: Secret,
        header: HeaderName.describe('Header holding the signature.'),
        algorithm: z.enum(['sha256', 'sha1', 'sha512']).default('sha256'),
        encoding: z.enum(['hex', 'base64']).default('hex').describe('How the signature is written.'),
        prefix: z.string().optional().describe('Text before the signature in the header, such as "sha256=".'),
        timestamp: z
          .object({
            header: HeaderName.describe('Header holding the signed time (Unix seconds or milliseconds).'),
            tolerance: Tolerance,
            signedContent: z
              .string()
              .refine((s) => s.split('{body}').length === 2, 'must hold {body} once')
              .default('{timestamp}.{body}')
              .describe("What is signed: {timestamp} and {body} (the raw bytes) in the vendor's form."),
          })
          .strict()
          .optional()
          .describe('A signed timestamp, which makes a replayed request stale.'),
        deliveryId: DeliveryId.optional(),
      })
      .strict(),
    z
      .object({
        kind: z
          .literal('none')
          .describe('none: no check at all; anyone who knows the URL can send. Only for trusted networks.'),
        deliveryId: DeliveryId.optional(),
      })
      .strict(),
  ])
  .describe('How requests are authenticated. Bad or missing signatures get 401 and store nothing.');
export type WebhookVerify = z.infer<typeof WebhookVerify>;

const Path = z.string().refine(isPath, 'a path such as data.object.email, items[0].id or @x-github-event');

/**
 * A value taken from the request: a path (`data.object.email`; `@name` reads a header), a
 * list of paths (the first present wins), or an object: `{ path, currency }` turns minor units
 * into currency units (`1999` with `usd` is `19.99`, with `jpy` `1999`), `{ value }` is a constant.
 */
export const MappedValue = z.union([
  Path,
  z.array(Path).min(1),
  z
    .object({
      path: z.union([Path, z.array(Path).min(1)]),
      currency: Path.optional().describe('Path of the ISO currency code: the value is in its minor units.'),
    })
    .strict(),
  z.object({ value: z.union([z.string(), z.number(), z.boolean(), z.null()]) }).strict(),
]);
export type MappedValue = z.infer<typeof MappedValue>;

const Scalar = z.union([z.string(), z.number(), z.boolean()]);

export const MappingRule = z
  .object({
    when: z
      .record(Path, z.union([Scalar, z.array(Scalar).min(1)]))
      .optional()
      .describe(
        'Path → value (or list of values) the payload must hold; a string ending in * matches a prefix. All must match; absent: every payload.',
      ),
    ignore: z
      .boolean()
      .optional()
      .describe('Acknowledge matching payloads (2xx) and store nothing (pings, events you do not want).'),
    type: z.enum(['track', 'identify', 'page', 'screen', 'group']).default('track'),
    event: z
      .string()
      .refine(isTemplate, 'a {placeholder} is not a path')
      .optional()
      .describe('Event name (track); {path} placeholders are filled from the payload: "{type}".'),
    name: z
      .string()
      .refine(isTemplate, 'a {placeholder} is not a path')
      .optional()
      .describe('Page or screen name; {path} placeholders as in event.'),
    userId: MappedValue.optional(),
    anonymousId: MappedValue.optional(),
    groupId: MappedValue.optional(),
    email: MappedValue.optional().describe('Email: a trait of identify, else context.traits.email.'),
    externalIds: z
      .record(z.string().regex(/^[a-z][a-z0-9_]{0,62}$/), MappedValue)
      .optional()
      .describe('Identifier type → value, as context.externalIds (stripe_customer_id, github_login).'),
    traits: z.record(z.string(), MappedValue).optional(),
    properties: z.record(z.string(), MappedValue).optional(),
    timestamp: MappedValue.optional().describe(
      'When it happened: Unix seconds or milliseconds, or ISO-8601; default: the time of receipt.',
    ),
  })
  .strict()
  .superRefine((r, ctx) => {
    if (!r.ignore && r.type === 'track' && r.event === undefined)
      ctx.addIssue({ code: 'custom', path: ['event'], message: 'a track rule needs an event name' });
  });
export type MappingRule = z.infer<typeof MappingRule>;

export const WEBHOOK_PRESETS = ['stripe', 'github'] as const;

/** The most bytes a webhook body may have (the log keeps the event, and the raw body beside it). */
export const WEBHOOK_MAX_BODY_BYTES = 4 * 1024 * 1024;

export const WebhookSourceConfig = z
  .object({
    ...commonSourceFields,
    id: SourceId.describe('Stable identifier of the source; its URL is POST /webhooks/<id>.'),
    type: z.literal('webhook').describe('webhook: a SaaS tool posts its events to /webhooks/<id>.'),
    enabled: z.boolean().default(true).describe('A disabled source answers 404.'),
    verify: WebhookVerify,
    preset: z
      .enum(WEBHOOK_PRESETS)
      .optional()
      .describe('Built-in rules: stripe or github (README, "Webhook sources"); rules: come first.'),
    rules: z
      .array(MappingRule)
      .optional()
      .describe('Payload → event rules, tried in order; the first whose `when` matches makes the event.'),
    function: TransformationConfig.omit({ id: true })
      .optional()
      .describe(
        'A function (the transformation sandbox) given { payload, headers, deliveryId, sourceId } that returns events; instead of preset and rules.',
      ),
    unmatched: z
      .enum(['fail', 'ignore'])
      .default('fail')
      .describe(
        'A payload no rule matches: fail stores it in failed_events (TRIB_ERR_WEBHOOK_UNMATCHED); ignore acknowledges it and stores nothing.',
      ),
    keepRaw: z
      .boolean()
      .default(true)
      .describe(
        "Keep the body as received, as text, under context.webhook.payload of the delivery's first event (bodies up to 256 KB; for a larger one, context.webhook.payloadOmitted says so).",
      ),
    maxBodyBytes: z
      .number()
      .int()
      .min(1024)
      .max(WEBHOOK_MAX_BODY_BYTES)
      .default(512 * 1024)
      .describe(
        "Largest body taken; larger ones get 413. With a NATS log, keep it under the server's max_payload (1 MB by default).",
      ),
  })
  .strict()
  .superRefine((s, ctx) => {
    const declarative = s.preset !== undefined || (s.rules?.length ?? 0) > 0;
    if (s.function && declarative)
      ctx.addIssue({
        code: 'custom',
        path: ['function'],
        message: 'give a function, or preset and rules, not both',
      });
    if (!s.function && !declarative)
      ctx.addIssue({
        code: 'custom',
        path: ['rules'],
        message: 'say how payloads become events: preset (stripe, github), rules, or function',
      });
  });
export type WebhookSourceConfig = z.infer<typeof WebhookSourceConfig>;
