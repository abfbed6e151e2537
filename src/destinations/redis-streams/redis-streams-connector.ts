import { Redis, type RedisOptions } from 'ioredis';
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
import type { RedisStreamsConfig } from './spec.js';

/**
 * XADD guarded by the idempotency key, atomically (a script runs alone): a key remembered
 * answers the entry id it got the first time and adds nothing; otherwise the entry is added
 * and its id remembered for the TTL. KEYS: stream, guard. ARGV: key, op, payload, ttl, maxLen (0: none).
 */
const GUARDED_XADD = `
local seen = redis.call('GET', KEYS[2])
if seen then return {0, seen} end
local id
if ARGV[5] ~= '0' then
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[5], '*', 'messageId', ARGV[1], 'op', ARGV[2], 'payload', ARGV[3])
else
  id = redis.call('XADD', KEYS[1], '*', 'messageId', ARGV[1], 'op', ARGV[2], 'payload', ARGV[3])
end
redis.call('SET', KEYS[2], id, 'EX', ARGV[4])
return {1, id}
`;

/** Adds entries to Redis streams: one pipeline per batch, in order. */
export const redisStreamsConnector: StreamConnector<RedisStreamsConfig> = {
  async check(config) {
    const client = new Redis({
      ...options(config),
      lazyConnect: true,
      retryStrategy: () => null,
      maxRetriesPerRequest: 0,
    });
    // The connection's own error (ECONNREFUSED, WRONGPASS): connect() rejects with "Connection is closed".
    let cause: unknown;
    client.on('error', (err) => {
      cause ??= err;
    });
    try {
      await client.connect();
      // ioredis only warns when the server refuses AUTH for having no password: ask again, so a
      // password the server does not expect is named too.
      const o = options(config);
      if (o.password !== undefined)
        await (o.username !== undefined ? client.auth(o.username, o.password) : client.auth(o.password));
      // The same for SELECT of a database out of range.
      if (o.db !== undefined && o.db !== 0) await client.select(o.db);
      await client.ping();
      return { ok: true };
    } catch (err) {
      return checkFailure(config, cause ?? err);
    } finally {
      client.disconnect();
    }
  },

  async create(config) {
    return new RedisStreamsDestination(config);
  },
};

interface GuardedClient {
  tribGuardedXadd(
    stream: string,
    guard: string,
    key: string,
    op: string,
    payload: string,
    ttl: number,
    maxLen: number,
  ): void;
}

class RedisStreamsDestination implements StreamDestination {
  readonly id: string;
  private readonly redis: Redis;

  constructor(private readonly config: RedisStreamsConfig) {
    this.id = config.id;
    this.redis = new Redis({
      ...options(config),
      // Offline, a send is retryable at once rather than queued in this process.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      retryStrategy: (times) => Math.min(times * 200, 2000),
    });
    this.redis.on('error', () => undefined);
    this.redis.defineCommand('tribGuardedXadd', { numberOfKeys: 2, lua: GUARDED_XADD });
  }

  async send(batch: readonly Delivery[], signal: AbortSignal): Promise<SendResult[]> {
    // Connecting (at start, or a reconnect under way): wait for that attempt's outcome.
    if (this.redis.status !== 'ready' && this.redis.status !== 'end')
      await nextEvent(this.redis, ['ready', 'close', 'end'], signal);
    const results: (SendResult | undefined)[] = [];
    const sent: { i: number; stream: string }[] = [];
    const pipeline = this.redis.pipeline();
    const guarded = pipeline as unknown as GuardedClient;
    batch.forEach((d, i) => {
      const body = encodeBody(this.id, d, this.config.maxMessageBytes);
      if (!Buffer.isBuffer(body)) {
        results[i] = body;
        return;
      }
      const stream = renderTemplate(this.config.stream, d);
      if (stream === '') {
        results[i] = failedResult('TRIB_ERR_DEST_PAYLOAD_UNENCODABLE', [
          this.id,
          'the stream template gives an empty key',
        ]);
        return;
      }
      const payload = body.toString('utf8');
      if (this.config.dedupTtl > 0)
        guarded.tribGuardedXadd(
          stream,
          `${this.config.dedupPrefix}${this.id}:${d.key}`,
          d.key,
          d.op,
          payload,
          this.config.dedupTtl,
          this.config.maxLen ?? 0,
        );
      else if (this.config.maxLen !== undefined)
        pipeline.xadd(
          stream,
          'MAXLEN',
          '~',
          this.config.maxLen,
          '*',
          'messageId',
          d.key,
          'op',
          d.op,
          'payload',
          payload,
        );
      else pipeline.xadd(stream, '*', 'messageId', d.key, 'op', d.op, 'payload', payload);
      sent.push({ i, stream });
    });
    if (sent.length === 0) return results as SendResult[];
    const replies = await untilAborted(
      pipeline.exec().catch((err: unknown) => (err instanceof Error ? err : new Error(String(err)))),
      signal,
      () => new Error(abortedText(signal)),
    );
    sent.forEach(({ i, stream }, n) => {
      if (replies instanceof Error || replies === null) {
        results[i] = retryableResult(replies ?? 'the connection closed');
        return;
      }
      const [err, reply] = replies[n] ?? [new Error('no reply')];
      if (err) {
        results[i] = retryableResult(err);
        return;
      }
      const id = Array.isArray(reply) ? String(reply[1]) : String(reply);
      const again = Array.isArray(reply) && Number(reply[0]) === 0;
      results[i] = { status: 'ok', detail: `${stream} ${id}${again ? ' (delivered before)' : ''}` };
    });
    return results as SendResult[];
  }

  async close(): Promise<void> {
    // QUIT waits for the server's answer; a frozen connection never gives it.
    if (!(await settlesWithin(this.redis.quit(), CLOSE_GRACE_MS))) this.redis.disconnect();
  }
}

function options(c: RedisStreamsConfig): RedisOptions {
  const common: RedisOptions = { connectTimeout: c.connectTimeout };
  if (c.connectionString !== undefined) {
    const u = new URL(c.connectionString);
    return {
      ...common,
      host: u.hostname,
      port: Number(u.port || 6379),
      username: decodeURIComponent(u.username) || undefined,
      password: decodeURIComponent(u.password) || undefined,
      db: u.pathname.length > 1 ? Number(u.pathname.slice(1)) : 0,
      tls: u.protocol === 'rediss:' ? {} : undefined,
    };
  }
  return { ...common, host: c.host, port: c.port, db: c.db, username: c.user, password: c.password };
}

function checkFailure(c: RedisStreamsConfig, err: unknown): CheckResult {
  const e = err as { code?: string };
  const text = errorText(err);
  const address = c.connectionString !== undefined ? '(connection string)' : `${c.host}:${c.port}`;
  if ((e.code !== undefined && UNREACHABLE_CODES.has(e.code)) || /ECONNREFUSED|timeout|ETIMEDOUT/i.test(text))
    return checkFailed('TRIB_ERR_DEST_CHECK_UNREACHABLE', [c.id, address, text]);
  if (/WRONGPASS|NOAUTH|\bAUTH\b|NOPERM/i.test(text))
    return checkFailed('TRIB_ERR_DEST_CHECK_AUTH', [c.id, c.user ?? 'default', text]);
  if (/DB index/i.test(text)) return checkFailed('TRIB_ERR_DEST_CHECK_DATABASE', [c.id, String(c.db), text]);
  return checkFailed('TRIB_ERR_DEST_CHECK_FAILED', [c.id, text]);
}
