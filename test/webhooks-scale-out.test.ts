import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import pg from 'pg';
import Stripe from 'stripe';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CliChildren, sleep } from './cli-child.js';
import { NATS_URL, natsUnreachable } from './nats-server.js';
import { pgUnreachable, type ScratchDatabase, scratchDatabase } from './pg.js';

/**
 * Webhook sources in the scale-out deployment (NATS JetStream log, PostgreSQL state), through
 * the real CLI: a signed Stripe delivery, delivered twice, is stored once in PostgreSQL; a
 * badly signed one is refused and stored nowhere.
 */

const ADMIN_TOKEN = 'webhook-scale-admin-token';
const SECRET = `whsec_${randomBytes(16).toString('hex')}`;
const STREAM = `webhooks_${randomBytes(4).toString('hex')}`;
const skip = (await pgUnreachable()) ?? (await natsUnreachable());
const stripe = new Stripe('sk_test_unused');

let workDir: string;
let db: ScratchDatabase | undefined;
const cli = new CliChildren({
  get configPath() {
    return join(workDir, 'tributary.yaml');
  },
  get dataDir() {
    return join(workDir, 'data');
  },
  adminToken: ADMIN_TOKEN,
});

beforeAll(async () => {
  if (skip) return;
  workDir = mkdtempSync(join(tmpdir(), 'tributary-webhook-scale-'));
  db = await scratchDatabase('trib_webhooks');
  process.env.TRIB_TEST_SCALE_STRIPE_SECRET = SECRET;
  writeFileSync(
    join(workDir, 'tributary.yaml'),
    `version: 1
sources:
  - {id: web, type: http, writeKey: wk_scale_webhooks}
  - id: stripe
    type: webhook
    verify: { kind: stripe, secret: "\${TRIB_TEST_SCALE_STRIPE_SECRET}" }
    preset: stripe
log: {type: nats, servers: ["${NATS_URL}"], stream: ${STREAM}, partitions: 2}
state: {type: postgres, connectionString: "${db.url}", maxConnections: 4}
destinations: []
identity: {enabled: false}
`,
  );
});

afterAll(async () => {
  await cli.killAll();
  delete process.env.TRIB_TEST_SCALE_STRIPE_SECRET;
  if (!skip) {
    const nc = await connect({ servers: [NATS_URL] });
    await (await jetstreamManager(nc)).streams.delete(STREAM).catch(() => undefined);
    await nc.close();
  }
  await db?.drop();
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

describe.skipIf(skip !== undefined)(`webhooks in scale-out${skip ? ` (${skip})` : ''}`, () => {
  it('stores a redelivered Stripe event once in PostgreSQL and refuses a bad signature', async () => {
    const child = await cli.start(60_000);
    const id = `evt_scale_${randomBytes(4).toString('hex')}`;
    const sentinel = `${id}_after`;
    // The same customer: the same partition (the log routes by anonymousId), so in order.
    const delivery = (evtId: string, type: string) =>
      JSON.stringify({
        id: evtId,
        object: 'event',
        type,
        created: Math.floor(Date.now() / 1000),
        data: { object: { id: 'cus_scale', email: 'scale@example.com' } },
      });
    const send = async (body: string, secret: string) => {
      const res = await fetch(`${child.url}/webhooks/stripe`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'stripe-signature': stripe.webhooks.generateTestHeaderString({ payload: body, secret }),
        },
        body,
      });
      return { status: res.status, body: (await res.json()) as { code?: string } };
    };
    const body = delivery(id, 'customer.created');
    expect((await send(body, SECRET)).status).toBe(200);
    expect((await send(body, SECRET)).status).toBe(200);
    const bad = await send(delivery(`${id}_forged`, 'customer.created'), 'whsec_wrong');
    expect(bad.status).toBe(401);
    expect(bad.body.code).toBe('TRIB_ERR_WEBHOOK_SIGNATURE_INVALID');
    expect((await send(delivery(sentinel, 'customer.updated'), SECRET)).status).toBe(200);

    const client = new pg.Client(db!.config);
    await client.connect();
    try {
      const read = () =>
        client
          .query<{ message_id: string; type: string; anonymous_id: string }>(
            `SELECT message_id, type, anonymous_id FROM tributary.events WHERE source_id = 'stripe' ORDER BY message_id`,
          )
          .then(
            (r) => r.rows,
            () => [],
          );
      // Once the later delivery is in, the loader has handled the redelivery before it.
      let rows = await read();
      for (let i = 0; i < 600 && !rows.some((r) => r.message_id === sentinel); i++) {
        await sleep(100);
        rows = await read();
      }
      expect(rows).toEqual([
        { message_id: id, type: 'identify', anonymous_id: 'cus_scale' },
        { message_id: sentinel, type: 'identify', anonymous_id: 'cus_scale' },
      ]);
    } finally {
      await client.end();
    }
  }, 120_000);
});
