import mqtt, { type IClientOptions, type IClientPublishOptions, type MqttClient } from 'mqtt';
import type { CheckResult } from '../connector.js';
import type { Delivery, SendResult, StreamConnector, StreamDestination } from '../stream.js';
import {
  abortedText,
  CLOSE_GRACE_MS,
  checkFailed,
  encodeBody,
  errorText,
  failedResult,
  nextEvent,
  renderTemplate,
  retryableResult,
  settlesWithin,
  UNREACHABLE_CODES,
  untilAborted,
} from '../stream-support.js';
import type { MqttConfig } from './spec.js';

/** Publishes to an MQTT broker; `ok` once the broker acknowledges (PUBACK at QoS 1). */
export const mqttConnector: StreamConnector<MqttConfig> = {
  async check(config) {
    let client: MqttClient | undefined;
    try {
      // A probe of its own: another client id, so it never takes the destination's session over.
      client = await mqtt.connectAsync(url(config), {
        ...options(config),
        clientId: `${clientId(config)}-check-${process.pid}`,
        clean: true,
        reconnectPeriod: 0,
      });
      return { ok: true };
    } catch (err) {
      return checkFailure(config, err);
    } finally {
      await client?.endAsync(true).catch(() => undefined);
    }
  },

  async create(config) {
    return new MqttDestination(config);
  },
};

/** A value's characters a topic cannot take from it: levels, wildcards, NUL. */
const cleanTopicValue = (v: string) => v.replace(/[/+#]/g, '_').replaceAll(String.fromCharCode(0), '_');

class MqttDestination implements StreamDestination {
  readonly id: string;
  private readonly client: MqttClient;

  constructor(private readonly config: MqttConfig) {
    this.id = config.id;
    this.client = mqtt.connect(url(config), {
      ...options(config),
      clientId: clientId(config),
      clean: config.clean,
      reconnectPeriod: 1000,
      // Publish only while connected: offline, a send is retryable at once rather than queued here.
      queueQoSZero: false,
    });
    // A broker down is a retryable send, not an uncaught error.
    this.client.on('error', () => undefined);
  }

  async send(batch: readonly Delivery[], signal: AbortSignal): Promise<SendResult[]> {
    // Connecting (at start, or a reconnect under way): wait for that attempt's outcome.
    if (!this.client.connected && !this.client.disconnecting)
      await nextEvent(this.client, ['connect', 'close', 'end'], signal);
    const results: (SendResult | Promise<SendResult>)[] = [];
    const v5 = this.config.protocolVersion === 5;
    batch.forEach((d, i) => {
      const body = encodeBody(
        this.id,
        d,
        this.config.maxMessageBytes,
        v5 ? undefined : (x) => ({ idempotencyKey: x.key, op: x.op, payload: x.payload }),
      );
      if (!Buffer.isBuffer(body)) {
        results[i] = body;
        return;
      }
      const topic = renderTemplate(this.config.topic, d, cleanTopicValue);
      if (topic === '' || Buffer.byteLength(topic) > 65_535) {
        results[i] = failedResult('TRIB_ERR_DEST_PAYLOAD_UNENCODABLE', [
          this.id,
          topic === '' ? 'the topic template gives an empty topic' : 'the topic is longer than 65535 bytes',
        ]);
        return;
      }
      if (!this.client.connected) {
        results[i] = { status: 'retryable', error: 'not connected to the MQTT broker' };
        return;
      }
      const opts: IClientPublishOptions = { qos: this.config.qos, retain: this.config.retain };
      if (v5)
        opts.properties = {
          contentType: 'application/json',
          userProperties: { 'idempotency-key': d.key, op: d.op },
        };
      results[i] = this.client.publishAsync(topic, body, opts).then(
        (): SendResult => ({ status: 'ok', detail: topic }),
        (err: unknown) => retryableResult(err),
      );
    });
    return untilAborted(Promise.all(results), signal, () =>
      results.map((r) =>
        r instanceof Promise ? ({ status: 'retryable', error: abortedText(signal) } as const) : r,
      ),
    );
  }

  async close(): Promise<void> {
    // A graceful end waits for messages in flight; a frozen connection never acknowledges them.
    if (await settlesWithin(this.client.endAsync(), CLOSE_GRACE_MS)) return;
    await this.client.endAsync(true).catch(() => undefined);
  }
}

function clientId(c: MqttConfig): string {
  return c.clientId ?? `tributary-${c.id}`;
}

function url(c: MqttConfig): string {
  return c.connectionString ?? `mqtt://${c.host}:${c.port}`;
}

function options(c: MqttConfig): IClientOptions {
  return {
    protocolVersion: c.protocolVersion,
    username: c.user,
    password: c.password,
    keepalive: Math.max(1, Math.round(c.keepalive / 1000)),
    connectTimeout: c.connectTimeout,
  };
}

function checkFailure(c: MqttConfig, err: unknown): CheckResult {
  const e = err as { code?: unknown };
  const text = errorText(err);
  let address = `${c.host}:${c.port}`;
  if (c.connectionString !== undefined) {
    try {
      const u = new URL(c.connectionString);
      address = `${u.hostname}:${u.port || '1883'}`;
    } catch {
      address = '(connection string)';
    }
  }
  if ((typeof e.code === 'string' && UNREACHABLE_CODES.has(e.code)) || /timeout|ETIMEDOUT/i.test(text))
    return checkFailed('TRIB_ERR_DEST_CHECK_UNREACHABLE', [c.id, address, text]);
  // CONNACK 4/5 (MQTT 3.1.1), 134/135 (MQTT 5): bad user name or password, not authorized.
  if (
    e.code === 4 ||
    e.code === 5 ||
    e.code === 134 ||
    e.code === 135 ||
    /not authori[sz]ed|bad user/i.test(text)
  )
    return checkFailed('TRIB_ERR_DEST_CHECK_AUTH', [c.id, c.user ?? '(anonymous)', text]);
  return checkFailed('TRIB_ERR_DEST_CHECK_FAILED', [c.id, text]);
}
