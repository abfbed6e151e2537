import { z } from 'zod';
import { streamCommon } from '../../config/destination-spec.js';
import type { StreamDestinationKind } from '../stream.js';

/**
 * The configuration spec of the HTTP / webhook destination. Only zod here (see `../stream.ts`);
 * the connector (`./http-connector.ts`) is loaded when a destination of the kind starts.
 */

const httpUrl = z
  .string()
  .url()
  .refine((u) => /^https?:\/\//i.test(u), 'use an http:// or https:// URL');

export const HttpAuth = z
  .discriminatedUnion('type', [
    z
      .object({
        type: z.literal('basic'),
        username: z.string().describe('User name.'),
        password: z.string().describe('Password, as an ${ENV} reference.'),
      })
      .strict(),
    z
      .object({
        type: z.literal('bearer'),
        token: z
          .string()
          .min(1)
          .describe('Token sent as `Authorization: Bearer <token>`, as an ${ENV} reference.'),
      })
      .strict(),
  ])
  .describe('Authorization header: basic or bearer.');
export type HttpAuth = z.infer<typeof HttpAuth>;

export const HttpSignature = z
  .object({
    secret: z
      .string()
      .min(16)
      .describe('Shared HMAC-SHA256 key (at least 16 characters), as an ${ENV} reference.'),
    header: z
      .string()
      .regex(/^[A-Za-z0-9-]+$/)
      .default('X-Tributary-Signature')
      .describe('Header carrying `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.'),
  })
  .strict()
  .describe(
    'Signs each request body so the receiver can verify it came from Tributary (README, "Streaming destinations").',
  );
export type HttpSignature = z.infer<typeof HttpSignature>;

export const HttpDestinationConfig = z
  .object({
    ...streamCommon,
    type: z
      .literal('http')
      .describe('http: sends events to an HTTP endpoint (a webhook), one by one or in batches.'),
    url: httpUrl.describe('Where events are sent.'),
    method: z.enum(['POST', 'PUT', 'PATCH']).default('POST').describe('HTTP method.'),
    headers: z
      .record(z.string().regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/, 'not a header name'), z.string())
      .default({})
      .describe('Extra request headers (values may be ${ENV} references).'),
    auth: HttpAuth.optional(),
    signature: HttpSignature.optional(),
    body: z
      .string()
      .min(1)
      .optional()
      .describe(
        'A JSONata expression (https://jsonata.org) evaluated on the event that gives the JSON body, e.g. `{"name": event, "user": userId, "total": properties.revenue}`. Default: the event as is. With batchSize > 1 the body is a JSON array of these. `$op` is the operation (`event`, or a reverse-ETL row\'s `insert`, `update`, `upsert`, `delete`, also sent as the `X-Tributary-Operation` header) and `$key` the idempotency key.',
      ),
    deletionUrl: httpUrl
      .optional()
      .describe(
        'Where privacy deletions are posted (`{"identities": [{"type": "user_id", "value": "u1"}]}`); without it the destination takes no deletions.',
      ),
  })
  .strict();
export type HttpDestinationConfig = z.infer<typeof HttpDestinationConfig>;

/** An HTTP endpoint (a webhook): events as JSON, one per request or in batches. */
export const httpDestination = {
  delivery: 'stream',
  type: 'http',
  config: HttpDestinationConfig,
  capabilities: { batching: true, deletion: true, rows: true },
  connector: async () => (await import('./http-connector.js')).httpConnector,
} satisfies StreamDestinationKind<HttpDestinationConfig>;
