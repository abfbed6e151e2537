import { z } from 'zod';
import { connectionStringOrHost, Interval, streamCommon } from '../../config/destination-spec.js';
import type { StreamDestinationKind } from '../stream.js';

/** `amqp`: events and rows published to a RabbitMQ (AMQP 0-9-1) exchange with publisher confirms. */
export const AmqpConfig = z
  .object({
    ...streamCommon,
    type: z
      .literal('amqp')
      .describe('amqp: messages published to a RabbitMQ exchange, confirmed by the broker.'),
    connectionString: z
      .string()
      .regex(/^amqps?:\/\//, 'an amqp:// or amqps:// URL')
      .refine((v) => URL.canParse(v), 'not a valid URL')
      .optional()
      .describe('amqp://user:${PASSWORD}@host:5672/vhost; a password in it must be an ${ENV} reference.'),
    host: z.string().min(1).optional().describe('Host, when no connection string is given.'),
    port: z.number().int().min(1).max(65535).default(5672).describe('Port.'),
    vhost: z.string().default('/').describe('Virtual host.'),
    user: z.string().min(1).default('guest').describe('User.'),
    password: z.string().optional().describe('Password, only as an ${ENV} reference.'),
    exchange: z
      .string()
      .max(255)
      .default('')
      .describe(
        'Exchange published to; "" is the default exchange, which routes to the queue the routing key names.',
      ),
    exchangeType: z
      .enum(['topic', 'direct', 'fanout', 'headers'])
      .optional()
      .describe('Declare the exchange (durable) with this type when connecting; absent: it must exist.'),
    routingKey: z
      .string()
      .default('{type}')
      .describe(
        'Routing key template: `{path}` takes a value of the event or row (`{type}`, `{event}`, `{properties.plan}`, `{$op}`); a value absent gives "". At most 255 bytes once filled.',
      ),
    persistent: z
      .boolean()
      .default(true)
      .describe('Messages survive a broker restart (delivery mode 2) on durable queues.'),
    mandatory: z
      .boolean()
      .default(true)
      .describe(
        'A message no queue is bound for comes back and is retried (instead of being dropped by the broker).',
      ),
    maxMessageBytes: z
      .number()
      .int()
      .min(1)
      .default(16 * 1024 * 1024)
      .describe(
        "Larger messages fail (TRIB_ERR_DEST_MESSAGE_TOO_LARGE); keep it at or under the broker's max_message_size.",
      ),
    heartbeat: Interval.prefault('30s').describe(
      'AMQP heartbeat: a silent connection is closed after about twice this.',
    ),
    connectTimeout: Interval.prefault('10s').describe('Most time to open a connection.'),
  })
  .strict()
  .superRefine(connectionStringOrHost);
export type AmqpConfig = z.infer<typeof AmqpConfig>;

/** Publishes to a RabbitMQ exchange: persistent messages, publisher confirms, messageId = the idempotency key. */
export const amqpDestination = {
  delivery: 'stream',
  type: 'amqp',
  config: AmqpConfig,
  capabilities: { batching: true, deletion: false, rows: true },
  connector: async () => (await import('./amqp-connector.js')).amqpConnector,
} satisfies StreamDestinationKind<AmqpConfig>;
