import { z } from 'zod';
import { connectionStringOrHost, Interval, streamCommon } from '../../config/destination-spec.js';
import type { StreamDestinationKind } from '../stream.js';

/** `redis-streams`: events and rows added to Redis streams (XADD), each key once. */
export const RedisStreamsConfig = z
  .object({
    ...streamCommon,
    type: z
      .literal('redis-streams')
      .describe('redis-streams: entries added to a Redis stream with XADD, each idempotency key once.'),
    connectionString: z
      .string()
      .regex(/^rediss?:\/\//, 'a redis:// or rediss:// URL')
      .refine((v) => URL.canParse(v), 'not a valid URL')
      .optional()
      .describe('redis://user:${PASSWORD}@host:6379/0; a password in it must be an ${ENV} reference.'),
    host: z.string().min(1).optional().describe('Host, when no connection string is given.'),
    port: z.number().int().min(1).max(65535).default(6379).describe('Port.'),
    db: z.number().int().min(0).default(0).describe('Database number.'),
    user: z.string().min(1).optional().describe('ACL user name (Redis 6+); absent: the default user.'),
    password: z.string().optional().describe('Password, only as an ${ENV} reference.'),
    stream: z
      .string()
      .min(1)
      .default('tributary:{type}')
      .describe(
        'Stream key template: `{path}` takes a value of the event or row (`{type}`, `{event}`); an absent value gives "".',
      ),
    maxLen: z
      .number()
      .int()
      .min(1)
      .optional()
      .describe('Trim each stream to about this many entries (XADD MAXLEN ~); absent: no trimming.'),
    dedupTtl: z
      .number()
      .int()
      .min(0)
      .default(86_400)
      .describe(
        'Seconds a delivered key is remembered, so a redelivery within it adds nothing (an atomic script: check the key, XADD, remember the entry id). 0: plain XADD, consumers dedup on the `messageId` field.',
      ),
    dedupPrefix: z
      .string()
      .default('tributary:dedup:')
      .describe('Prefix of the keys that remember delivered keys (`<prefix><destination id>:<key>`).'),
    maxMessageBytes: z
      .number()
      .int()
      .min(1)
      .max(512 * 1024 * 1024)
      .default(1024 * 1024)
      .describe('Larger payloads fail (TRIB_ERR_DEST_MESSAGE_TOO_LARGE).'),
    connectTimeout: Interval.prefault('10s').describe('Most time to open a connection.'),
  })
  .strict()
  .superRefine(connectionStringOrHost);
export type RedisStreamsConfig = z.infer<typeof RedisStreamsConfig>;

/** Adds entries to Redis streams; a key delivered again within `dedupTtl` adds nothing. */
export const redisStreamsDestination = {
  delivery: 'stream',
  type: 'redis-streams',
  config: RedisStreamsConfig,
  capabilities: { batching: true, deletion: false, rows: true },
  connector: async () => (await import('./redis-streams-connector.js')).redisStreamsConnector,
} satisfies StreamDestinationKind<RedisStreamsConfig>;
