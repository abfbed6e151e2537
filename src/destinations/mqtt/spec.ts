import { z } from 'zod';
import { connectionStringOrHost, Interval, streamCommon } from '../../config/destination-spec.js';
import type { StreamDestinationKind } from '../stream.js';

/** `mqtt`: events and rows published to an MQTT broker (Mosquitto, EMQX, HiveMQ) at QoS 1. */
export const MqttConfig = z
  .object({
    ...streamCommon,
    type: z
      .literal('mqtt')
      .describe('mqtt: messages published to an MQTT broker at QoS 1 (or 2), acknowledged by it.'),
    connectionString: z
      .string()
      .regex(/^(mqtts?|wss?):\/\//, 'an mqtt://, mqtts://, ws:// or wss:// URL')
      .refine((v) => URL.canParse(v), 'not a valid URL')
      .optional()
      .describe('mqtt://host:1883 (mqtts:// for TLS); a password in it must be an ${ENV} reference.'),
    host: z.string().min(1).optional().describe('Host, when no connection string is given.'),
    port: z.number().int().min(1).max(65535).default(1883).describe('Port.'),
    user: z.string().min(1).optional().describe('User name.'),
    password: z.string().optional().describe('Password, only as an ${ENV} reference.'),
    topic: z
      .string()
      .min(1)
      .default('tributary/{type}')
      .describe(
        'Topic template: `{path}` takes a value of the event or row (`{type}`, `{event}`, `{context.traits.plan}`); "/", "+" and "#" in a value become "_", an absent value gives "".',
      ),
    qos: z
      .union([z.literal(1), z.literal(2)])
      .default(1)
      .describe('1: ok on PUBACK; 2: ok on PUBCOMP (exactly once to the broker).'),
    retain: z.boolean().default(false).describe('Publish retained messages.'),
    protocolVersion: z
      .union([z.literal(5), z.literal(4)])
      .default(5)
      .describe(
        '5: the key travels as the user property `idempotency-key` (and `op`); 4 (MQTT 3.1.1, no user properties): the body is `{ "idempotencyKey", "op", "payload" }`.',
      ),
    clientId: z
      .string()
      .min(1)
      .max(128)
      .optional()
      .describe(
        'Client id, stable so the broker keeps the session (clean: false); default tributary-<id>. Unique per running instance.',
      ),
    clean: z
      .boolean()
      .default(false)
      .describe('Start a clean session (false keeps unacknowledged QoS 1 messages across reconnects).'),
    maxMessageBytes: z
      .number()
      .int()
      .min(1)
      .max(256 * 1024 * 1024)
      .default(1024 * 1024)
      .describe(
        "Larger messages fail (TRIB_ERR_DEST_MESSAGE_TOO_LARGE); keep it at or under the broker's message_size_limit.",
      ),
    keepalive: Interval.prefault('30s').describe(
      'MQTT keep-alive: a silent connection is dropped after 1.5 times this.',
    ),
    connectTimeout: Interval.prefault('10s').describe('Most time to open a connection.'),
  })
  .strict()
  .superRefine(connectionStringOrHost);
export type MqttConfig = z.infer<typeof MqttConfig>;

/** Publishes to an MQTT broker: QoS 1, a persistent session, the idempotency key as a user property. */
export const mqttDestination = {
  delivery: 'stream',
  type: 'mqtt',
  config: MqttConfig,
  capabilities: { batching: true, deletion: false, rows: true },
  connector: async () => (await import('./mqtt-connector.js')).mqttConnector,
} satisfies StreamDestinationKind<MqttConfig>;
