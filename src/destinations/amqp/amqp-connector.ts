import amqp, { type ChannelModel, type ConfirmChannel, type Options } from 'amqplib';
import type { CheckResult } from '../connector.js';
import type { Delivery, SendResult, StreamConnector, StreamDestination } from '../stream.js';
import {
  abortedText,
  CLOSE_GRACE_MS,
  checkFailed,
  encodeBody,
  errorText,
  failedResult,
  renderTemplate,
  retryableResult,
  settlesWithin,
  UNREACHABLE_CODES,
  untilAborted,
} from '../stream-support.js';
import type { AmqpConfig } from './spec.js';

/** Publishes to a RabbitMQ exchange over a confirm channel: `ok` only once the broker confirms. */
export const amqpConnector: StreamConnector<AmqpConfig> = {
  async check(config) {
    let conn: ChannelModel | undefined;
    try {
      conn = await connect(config);
      conn.on('error', () => undefined);
      const ch = await conn.createChannel();
      ch.on('error', () => undefined);
      if (config.exchange !== '' && config.exchangeType === undefined) {
        try {
          await ch.checkExchange(config.exchange);
        } catch (err) {
          return checkFailed('TRIB_ERR_DEST_CHECK_FAILED', [
            config.id,
            `exchange "${config.exchange}" does not exist in vhost ${vhostOf(config)} (${errorText(err)}): declare it, or set exchangeType so the destination declares it`,
          ]);
        }
      }
      return { ok: true };
    } catch (err) {
      return checkFailure(config, err);
    } finally {
      await conn?.close().catch(() => undefined);
    }
  },

  async create(config) {
    return new AmqpDestination(config);
  },
};

/** One connection and confirm channel, opened at the first send and again after it is lost. */
class AmqpDestination implements StreamDestination {
  readonly id: string;
  private conn: ChannelModel | undefined;
  private channel: Promise<ConfirmChannel> | undefined;
  /** Keys the broker returned as unroutable, until their confirm arrives. */
  private readonly returned = new Set<string>();
  private closed = false;

  constructor(private readonly config: AmqpConfig) {
    this.id = config.id;
  }

  private open(): Promise<ConfirmChannel> {
    if (this.channel !== undefined) return this.channel;
    const opening = (async () => {
      const conn = await connect(this.config);
      this.conn = conn;
      const reset = () => {
        if (this.conn === conn) {
          this.conn = undefined;
          this.channel = undefined;
        }
      };
      conn.on('error', () => undefined);
      conn.on('close', reset);
      try {
        const ch = await conn.createConfirmChannel();
        ch.on('error', () => undefined);
        ch.on('close', () => {
          reset();
          conn.close().catch(() => undefined);
        });
        ch.on('return', (msg: { properties: { messageId?: string } }) => {
          if (msg.properties.messageId !== undefined) this.returned.add(msg.properties.messageId);
        });
        if (this.config.exchangeType !== undefined)
          await ch.assertExchange(this.config.exchange, this.config.exchangeType, { durable: true });
        return ch;
      } catch (err) {
        await conn.close().catch(() => undefined);
        throw err;
      }
    })();
    this.channel = opening;
    opening.catch(() => {
      if (this.channel === opening) this.channel = undefined;
    });
    return opening;
  }

  async send(batch: readonly Delivery[], signal: AbortSignal): Promise<SendResult[]> {
    const results: (SendResult | Promise<SendResult>)[] = [];
    const toSend: { i: number; d: Delivery; body: Buffer; routingKey: string }[] = [];
    batch.forEach((d, i) => {
      const body = encodeBody(this.id, d, this.config.maxMessageBytes);
      if (!Buffer.isBuffer(body)) {
        results[i] = body;
        return;
      }
      const routingKey = renderTemplate(this.config.routingKey, d);
      if (Buffer.byteLength(routingKey) > 255) {
        results[i] = failedResult('TRIB_ERR_DEST_PAYLOAD_UNENCODABLE', [
          this.id,
          `the routing key is longer than 255 bytes: ${routingKey.slice(0, 60)}…`,
        ]);
        return;
      }
      toSend.push({ i, d, body, routingKey });
    });
    if (toSend.length === 0) return results as SendResult[];
    if (this.closed) {
      for (const s of toSend) results[s.i] = { status: 'retryable', error: 'the destination is closed' };
      return results as SendResult[];
    }
    const ch = await untilAborted(
      this.open().catch((err: unknown) => (err instanceof Error ? err : new Error(String(err)))),
      signal,
      () => new Error(abortedText(signal)),
    );
    if (ch instanceof Error) {
      const r = retryableResult(ch);
      for (const s of toSend) results[s.i] = r;
      return results as SendResult[];
    }
    for (const s of toSend) results[s.i] = this.publish(ch, s.d, s.body, s.routingKey);
    const settled = await untilAborted(Promise.all(results), signal, () =>
      results.map((r) =>
        r instanceof Promise ? ({ status: 'retryable', error: abortedText(signal) } as const) : r,
      ),
    );
    return settled;
  }

  /** One message, resolved by its confirm: ack → ok (unless returned unroutable), nack or a closed channel → retryable. */
  private publish(ch: ConfirmChannel, d: Delivery, body: Buffer, routingKey: string): Promise<SendResult> {
    const options: Options.Publish = {
      messageId: d.key,
      persistent: this.config.persistent,
      mandatory: this.config.mandatory,
      contentType: 'application/json',
      timestamp: Math.floor(Date.now() / 1000),
      headers: { 'x-tributary-op': d.op, 'x-tributary-order-key': d.orderKey },
    };
    return new Promise<SendResult>((resolve) => {
      try {
        ch.publish(this.config.exchange, routingKey, body, options, (err) => {
          if (err)
            return resolve(
              retryableResult(err.message === 'message nacked' ? 'the broker nacked the message' : err),
            );
          // A returned message comes before its confirm (AMQP 0-9-1).
          if (this.returned.delete(d.key))
            return resolve({
              status: 'retryable',
              error: `no queue is bound for routing key "${routingKey}" on exchange "${this.config.exchange}"`,
            });
          resolve({ status: 'ok', detail: routingKey });
        });
      } catch (err) {
        // A channel closed under us throws at once.
        resolve(retryableResult(err));
      }
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    const conn = this.conn;
    this.conn = undefined;
    this.channel = undefined;
    if (conn === undefined) return;
    // close() waits for the broker's close-ok; a frozen connection never sends it: cut it.
    if (await settlesWithin(conn.close(), CLOSE_GRACE_MS)) return;
    (conn as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
  }
}

function vhostOf(c: AmqpConfig): string {
  if (c.connectionString === undefined) return c.vhost;
  try {
    return decodeURIComponent(new URL(c.connectionString).pathname.slice(1)) || '/';
  } catch {
    return '(connection string)';
  }
}

function connect(c: AmqpConfig): Promise<ChannelModel> {
  const socket = { timeout: c.connectTimeout };
  const heartbeat = Math.max(1, Math.round(c.heartbeat / 1000));
  if (c.connectionString !== undefined) {
    const url = new URL(c.connectionString);
    if (!url.searchParams.has('heartbeat')) url.searchParams.set('heartbeat', String(heartbeat));
    return amqp.connect(url.toString(), socket);
  }
  return amqp.connect(
    {
      protocol: 'amqp',
      hostname: c.host,
      port: c.port,
      vhost: c.vhost,
      username: c.user,
      password: c.password ?? (c.user === 'guest' ? 'guest' : ''),
      heartbeat,
    },
    socket,
  );
}

/** The check's error: unreachable, refused login, or a vhost the user may not open. */
function checkFailure(c: AmqpConfig, err: unknown): CheckResult {
  const e = err as { code?: string };
  const text = errorText(err);
  let address = `${c.host}:${c.port}`;
  let user = c.user;
  if (c.connectionString !== undefined) {
    try {
      const u = new URL(c.connectionString);
      address = `${u.hostname}:${u.port || '5672'}`;
      user = decodeURIComponent(u.username) || 'guest';
    } catch {
      address = user = '(connection string)';
    }
  }
  if ((e.code !== undefined && UNREACHABLE_CODES.has(e.code)) || /ETIMEDOUT|timeout/i.test(text))
    return checkFailed('TRIB_ERR_DEST_CHECK_UNREACHABLE', [c.id, address, text]);
  if (/\b403\b|ACCESS[-_]REFUSED/i.test(text))
    return checkFailed('TRIB_ERR_DEST_CHECK_AUTH', [c.id, user, text]);
  // The broker closes the connection in answer to connection.open, which only names the vhost
  // (amqplib keeps the reply code out of the error: "Expected ConnectionOpenOk").
  if (/\b530\b|NOT[-_]ALLOWED|vhost|Expected ConnectionOpenOk/i.test(text))
    return checkFailed('TRIB_ERR_DEST_CHECK_VHOST', [c.id, vhostOf(c), text]);
  return checkFailed('TRIB_ERR_DEST_CHECK_FAILED', [c.id, text]);
}
