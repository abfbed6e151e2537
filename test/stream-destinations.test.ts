import { randomBytes } from 'node:crypto';
import { createServer as createHttpServer } from 'node:http';
import { createConnection, createServer } from 'node:net';
import amqp from 'amqplib';
import { Redis } from 'ioredis';
import mqtt from 'mqtt';
import mysql from 'mysql2/promise';
import pg from 'pg';
import { amqpDestination } from '../src/destinations/amqp/spec.js';
import { httpDestination } from '../src/destinations/http/spec.js';
import { mqttDestination } from '../src/destinations/mqtt/spec.js';
import { mysqlUpsertDestination } from '../src/destinations/mysql-upsert/spec.js';
import { postgresUpsertDestination } from '../src/destinations/postgres-upsert/spec.js';
import { redisStreamsDestination } from '../src/destinations/redis-streams/spec.js';
import { type Received, streamDestinationConformance } from './conformance/stream-destination-conformance.js';
import { PG_ADMIN, pgUnreachable } from './pg.js';

/** The stream destination conformance suite against the machine's PostgreSQL, MariaDB, RabbitMQ, Mosquitto and Redis. */

const suffix = () => randomBytes(5).toString('hex');
const context = { dataDir: '/nonexistent' };

/** Why nothing answers on a local port, or undefined when something does. */
function portProblem(port: number, service: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    const s = createConnection({ host: '127.0.0.1', port });
    s.setTimeout(2000);
    s.once('connect', () => {
      s.destroy();
      resolve(undefined);
    });
    s.once('error', (e) => resolve(`${service} is not running on 127.0.0.1:${port}: ${e.message}`));
    s.once('timeout', () => {
      s.destroy();
      resolve(`${service} does not answer on 127.0.0.1:${port}`);
    });
  });
}

/** A local port nothing listens on: one the system gave out and that was closed again. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

/** A payload larger than the 2,000 bytes the broker harnesses allow. */
const tooLarge = {
  unencodable: { entry: { maxMessageBytes: 2_000 }, payload: { type: 'track', blob: 'x'.repeat(5_000) } },
};

// --- PostgreSQL: a schema of the test's own in the database `test`.
streamDestinationConformance('postgres-upsert', await pgUnreachable(), async () => {
  const schema = `trib_sc_${suffix()}`;
  const admin = new pg.Client(PG_ADMIN);
  await admin.connect();
  await admin.query(`CREATE SCHEMA ${schema}`);
  const base = {
    type: 'postgres-upsert',
    host: '127.0.0.1',
    port: 5432,
    database: 'test',
    user: 'postgres',
    schema,
  };
  const entry = {
    ...base,
    id: 'pg-upsert',
    batchSize: 100,
    table: 'events',
    columns: {
      message_id: '$key',
      user_id: 'userId',
      n: { path: 'properties.n', type: 'integer' },
      payload: '$',
    },
    key: ['message_id'],
    createTable: true,
  };
  return {
    kind: postgresUpsertDestination,
    entry,
    via: (port) => ({ ...entry, port }),
    target: { host: '127.0.0.1', port: 5432 },
    context,
    async received(): Promise<Received[]> {
      const r = await admin
        .query(`SELECT message_id, payload FROM ${schema}.events ORDER BY message_id`)
        .catch(() => ({ rows: [] }));
      return r.rows.map((x) => ({ key: x.message_id, payload: x.payload }));
    },
    dedup: 'receiver',
    ordered: false,
    unencodable: {
      payload: { type: 'track', userId: 'u9', properties: { n: 'not a number' } },
      code: 'TRIB_ERR_DEST_ROW_REFUSED',
    },
    wrong: [
      {
        why: 'a closed port',
        entry: { ...entry, port: await closedPort() },
        code: 'TRIB_ERR_DEST_CHECK_UNREACHABLE',
      },
      {
        why: 'an unknown user',
        entry: { ...entry, user: 'trib_no_such_user' },
        code: 'TRIB_ERR_DEST_CHECK_AUTH',
      },
      {
        why: 'an unknown database',
        entry: { ...entry, database: 'trib_no_such_db' },
        code: 'TRIB_ERR_DEST_CHECK_DATABASE',
      },
      {
        why: 'a table that does not exist',
        entry: { ...entry, table: 'missing', createTable: false },
        code: 'TRIB_ERR_DEST_CHECK_FAILED',
      },
    ],
    table: {
      entry: {
        ...base,
        id: 'pg-crm',
        table: 'crm',
        columns: { user_id: 'user_id', plan: 'plan', seats: { path: 'seats', type: 'integer' } },
        key: ['user_id'],
        createTable: true,
        identityColumns: { user_id: 'user_id' },
      },
      async rows() {
        return (await admin.query(`SELECT user_id, plan, seats FROM ${schema}.crm ORDER BY user_id`)).rows;
      },
    },
    async cleanup() {
      await admin.query(`DROP SCHEMA ${schema} CASCADE`);
      await admin.end();
    },
  };
});

// --- MariaDB / MySQL: a database of the test's own.
async function mysqlProblem(): Promise<string | undefined> {
  try {
    const c = await mysql.createConnection({
      host: '127.0.0.1',
      port: 3306,
      user: 'root',
      connectTimeout: 2000,
    });
    await c.end();
    return undefined;
  } catch (err) {
    return `MariaDB is not reachable on 127.0.0.1:3306: ${(err as Error).message}`;
  }
}

streamDestinationConformance('mysql-upsert', await mysqlProblem(), async () => {
  const database = `trib_sc_${suffix()}`;
  const admin = await mysql.createConnection({ host: '127.0.0.1', port: 3306, user: 'root' });
  await admin.query(`CREATE DATABASE ${database}`);
  const base = { type: 'mysql-upsert', host: '127.0.0.1', port: 3306, user: 'root', database };
  const entry = {
    ...base,
    id: 'my-upsert',
    batchSize: 100,
    table: 'events',
    columns: {
      message_id: '$key',
      user_id: 'userId',
      n: { path: 'properties.n', type: 'int' },
      payload: '$',
    },
    key: ['message_id'],
    createTable: true,
  };
  return {
    kind: mysqlUpsertDestination,
    entry,
    via: (port) => ({ ...entry, port }),
    target: { host: '127.0.0.1', port: 3306 },
    context,
    async received(): Promise<Received[]> {
      const [rows] = await admin
        .query<mysql.RowDataPacket[]>(
          `SELECT message_id, payload FROM ${database}.events ORDER BY message_id`,
        )
        .catch(() => [[] as mysql.RowDataPacket[]]);
      return rows.map((x) => ({
        key: x.message_id,
        payload: typeof x.payload === 'string' ? JSON.parse(x.payload) : x.payload,
      }));
    },
    dedup: 'receiver',
    ordered: false,
    unencodable: {
      payload: { type: 'track', userId: 'u9', properties: { n: 'not a number' } },
      code: 'TRIB_ERR_DEST_ROW_REFUSED',
    },
    wrong: [
      {
        why: 'a closed port',
        entry: { ...entry, port: await closedPort() },
        code: 'TRIB_ERR_DEST_CHECK_UNREACHABLE',
      },
      {
        why: 'an unknown user',
        entry: { ...entry, user: 'trib_no_such_user' },
        code: 'TRIB_ERR_DEST_CHECK_AUTH',
      },
      {
        why: 'an unknown database',
        entry: { ...entry, database: 'trib_no_such_db' },
        code: 'TRIB_ERR_DEST_CHECK_DATABASE',
      },
      {
        why: 'a table that does not exist',
        entry: { ...entry, table: 'missing', createTable: false },
        code: 'TRIB_ERR_DEST_CHECK_FAILED',
      },
    ],
    table: {
      entry: {
        ...base,
        id: 'my-crm',
        table: 'crm',
        columns: { user_id: 'user_id', plan: 'plan', seats: { path: 'seats', type: 'int' } },
        key: ['user_id'],
        createTable: true,
        identityColumns: { user_id: 'user_id' },
      },
      async rows() {
        const [rows] = await admin.query<mysql.RowDataPacket[]>(
          `SELECT user_id, plan, seats FROM ${database}.crm ORDER BY user_id`,
        );
        return rows.map((r) => ({ user_id: r.user_id, plan: r.plan, seats: r.seats }));
      },
    },
    async cleanup() {
      await admin.query(`DROP DATABASE ${database}`);
      await admin.end();
    },
  };
});

// --- RabbitMQ: an exchange of the test's own, and a queue bound to all of it.
streamDestinationConformance('amqp', await portProblem(5672, 'RabbitMQ'), async () => {
  const exchange = `trib-sc-${suffix()}`;
  const conn = await amqp.connect('amqp://guest:guest@127.0.0.1:5672');
  const ch = await conn.createChannel();
  await ch.assertExchange(exchange, 'topic', { durable: false });
  const { queue } = await ch.assertQueue('', { exclusive: true });
  await ch.bindQueue(queue, exchange, '#');
  const got: Received[] = [];
  await ch.consume(
    queue,
    (msg) => {
      if (msg === null) return;
      got.push({
        key: String(msg.properties.messageId),
        op: String(msg.properties.headers?.['x-tributary-op']),
        payload: JSON.parse(msg.content.toString('utf8')),
      });
    },
    { noAck: true },
  );
  const entry = {
    id: 'rabbit',
    type: 'amqp',
    host: '127.0.0.1',
    port: 5672,
    password: 'guest',
    batchSize: 100,
    exchange,
    routingKey: '{type}.{event}',
  };
  return {
    kind: amqpDestination,
    entry,
    via: (port) => ({ ...entry, port }),
    target: { host: '127.0.0.1', port: 5672 },
    context,
    received: async () => [...got],
    dedup: 'consumer',
    ordered: true,
    unencodable: { ...tooLarge.unencodable, code: 'TRIB_ERR_DEST_MESSAGE_TOO_LARGE' },
    wrong: [
      {
        why: 'a closed port',
        entry: { ...entry, port: await closedPort() },
        code: 'TRIB_ERR_DEST_CHECK_UNREACHABLE',
      },
      { why: 'a wrong password', entry: { ...entry, password: 'wrong' }, code: 'TRIB_ERR_DEST_CHECK_AUTH' },
      {
        why: 'an unknown vhost',
        entry: { ...entry, vhost: 'trib-no-such-vhost' },
        code: 'TRIB_ERR_DEST_CHECK_VHOST',
      },
      {
        why: 'an exchange that does not exist',
        entry: { ...entry, exchange: `${exchange}-missing` },
        code: 'TRIB_ERR_DEST_CHECK_FAILED',
      },
    ],
    async cleanup() {
      await ch.deleteExchange(exchange);
      await conn.close();
    },
  };
});

// --- Mosquitto: topics under a prefix of the test's own, read by a subscriber.
streamDestinationConformance('mqtt', await portProblem(1883, 'Mosquitto'), async () => {
  const prefix = `trib-sc-${suffix()}`;
  const clientId = `trib-sc-${suffix()}`;
  const sub = await mqtt.connectAsync('mqtt://127.0.0.1:1883', { protocolVersion: 5, clean: true });
  const got: Received[] = [];
  sub.on('message', (_topic, payload, packet) => {
    const props = packet.properties?.userProperties ?? {};
    got.push({
      key: String(props['idempotency-key']),
      op: String(props.op),
      payload: JSON.parse(payload.toString('utf8')),
    });
  });
  await sub.subscribeAsync(`${prefix}/#`, { qos: 1 });
  const entry = {
    id: 'mosquitto',
    type: 'mqtt',
    host: '127.0.0.1',
    port: 1883,
    batchSize: 100,
    clientId,
    topic: `${prefix}/{type}/{userId}`,
  };
  return {
    kind: mqttDestination,
    entry,
    via: (port) => ({ ...entry, port }),
    target: { host: '127.0.0.1', port: 1883 },
    context,
    received: async () => [...got],
    dedup: 'consumer',
    ordered: true,
    unencodable: { ...tooLarge.unencodable, code: 'TRIB_ERR_DEST_MESSAGE_TOO_LARGE' },
    wrong: [
      {
        why: 'a closed port',
        entry: { ...entry, port: await closedPort() },
        code: 'TRIB_ERR_DEST_CHECK_UNREACHABLE',
      },
    ],
    async cleanup() {
      await sub.endAsync();
      // The destination's persistent session (clean: false) is the broker's to forget.
      const c = await mqtt.connectAsync('mqtt://127.0.0.1:1883', {
        protocolVersion: 5,
        clientId,
        clean: true,
      });
      await c.endAsync();
    },
  };
});

// --- Redis: streams and guard keys under a prefix of the test's own.
streamDestinationConformance('redis-streams', await portProblem(6379, 'Redis'), async () => {
  const prefix = `trib-sc-${suffix()}`;
  const redis = new Redis({ host: '127.0.0.1', port: 6379 });
  const entry = {
    id: 'redis',
    type: 'redis-streams',
    host: '127.0.0.1',
    port: 6379,
    batchSize: 100,
    stream: `${prefix}:{type}`,
    dedupPrefix: `${prefix}:dedup:`,
  };
  return {
    kind: redisStreamsDestination,
    entry,
    via: (port) => ({ ...entry, port }),
    target: { host: '127.0.0.1', port: 6379 },
    context,
    async received(): Promise<Received[]> {
      const out: Received[] = [];
      for (const stream of [`${prefix}:track`, `${prefix}:`]) {
        for (const [, fields] of await redis.xrange(stream, '-', '+')) {
          const f = new Map<string, string>();
          for (let i = 0; i < fields.length; i += 2) f.set(fields[i]!, fields[i + 1]!);
          out.push({ key: f.get('messageId')!, op: f.get('op'), payload: JSON.parse(f.get('payload')!) });
        }
      }
      return out;
    },
    dedup: 'receiver',
    ordered: true,
    unencodable: { ...tooLarge.unencodable, code: 'TRIB_ERR_DEST_MESSAGE_TOO_LARGE' },
    wrong: [
      {
        why: 'a closed port',
        entry: { ...entry, port: await closedPort() },
        code: 'TRIB_ERR_DEST_CHECK_UNREACHABLE',
      },
      { why: 'a wrong password', entry: { ...entry, password: 'wrong' }, code: 'TRIB_ERR_DEST_CHECK_AUTH' },
      {
        why: 'a database out of range',
        entry: { ...entry, db: 100_000 },
        code: 'TRIB_ERR_DEST_CHECK_DATABASE',
      },
    ],
    async cleanup() {
      const keys = await redis.keys(`${prefix}*`);
      if (keys.length > 0) await redis.del(...keys);
      redis.disconnect();
    },
  };
});

// --- HTTP: a receiver of the test's own that keeps one request per Idempotency-Key, as a
// receiver that dedups does; the body template fails on purpose for `properties.poison`.
streamDestinationConformance('http', undefined, async () => {
  const got: Received[] = [];
  const keys = new Set<string>();
  const receiver = createHttpServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const key = String(req.headers['idempotency-key'] ?? '');
      if (!keys.has(key)) {
        keys.add(key);
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
        got.push({ key, op: String(req.headers['x-tributary-operation'] ?? ''), payload: body });
      }
      res.writeHead(200).end();
    });
  });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
  const { port } = receiver.address() as { port: number };
  const at = (p: number) => `http://127.0.0.1:${p}/hook`;
  const entry = {
    id: 'hook',
    type: 'http',
    url: at(port),
    body: '$exists(properties.poison) ? $error("poisoned") : $',
  };
  return {
    kind: httpDestination,
    entry,
    via: (p) => ({ ...entry, url: at(p) }),
    target: { host: '127.0.0.1', port },
    context,
    received: async () => [...got],
    dedup: 'receiver',
    ordered: true,
    unencodable: {
      payload: { type: 'track', properties: { poison: true } },
      code: 'TRIB_ERR_DELIVERY_ENCODE',
    },
    wrong: [
      {
        why: 'a closed port',
        entry: { ...entry, url: at(await closedPort()) },
        code: 'TRIB_ERR_DEST_CHECK_UNREACHABLE',
      },
    ],
    async cleanup() {
      receiver.closeAllConnections();
      await new Promise<void>((r) => receiver.close(() => r()));
    },
  };
});
