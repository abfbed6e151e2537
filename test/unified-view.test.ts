import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Analytics } from '@segment/analytics-node';
import pg from 'pg';
import Stripe from 'stripe';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, startTestServer, type TestServer } from './helpers.js';
import { pgUnreachable, type ScratchDatabase, scratchDatabase } from './pg.js';

/**
 * The mission, end to end (README "One customer, four sources"): the shop's SDK events, Stripe
 * webhooks, a CRM table in PostgreSQL and a help-desk CSV make one profile, and one SQL query
 * joins the tickets and the payments to it. Everything as a user does it: the real Segment
 * SDK, Stripe's own signing, the real CLI (`sources sync`, `import`, `profiles get`) against
 * the running server. The configuration is the README's.
 */

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const CLI = ['--import', import.meta.resolve('tsx'), join(ROOT, 'src/cli/index.ts')];
const STRIPE_WEBHOOK_SECRET = 'whsec_unified_view_0123456789';
const problem = await pgUnreachable();

/** The README's configuration, word for word. */
const YAML = `version: 1
sources:
  - id: shop
    type: http
    writeKey: wk_shop_123
  - id: stripe
    type: webhook
    verify: { kind: stripe, secret: "\${STRIPE_WEBHOOK_SECRET}" }
    preset: stripe
  - id: crm
    type: postgres
    connectionString: \${CRM_DATABASE_URL}
    streams:
      - name: contacts
        table: public.contacts
        identifiers: { email: email, phone: phone, crm_id: crm_id }
        events: { type: identify, anonymousId: crm_id, anonymousIdPrefix: "crm:", traits: [email, company] }
  - id: helpdesk
    type: file
    streams:
      - name: tickets
        primaryKey: [id]
        columns: { id: integer, opened_at: timestamp }
        identifiers: { email: requester_email }
identity:
  paths:
    - { source: crm, path: traits.crm_id, type: crm_id }
`;

describe.skipIf(problem !== undefined)('one customer, four sources', () => {
  let server: TestServer;
  let db: ScratchDatabase;
  let dir: string;
  let env: Record<string, string>;

  beforeAll(async () => {
    db = await scratchDatabase('unified');
    const c = new pg.Client(db.config);
    await c.connect();
    await c.query(`CREATE TABLE contacts (
      id serial PRIMARY KEY, crm_id text NOT NULL, email text, phone text, company text)`);
    await c.query(`INSERT INTO contacts (crm_id, email, phone, company) VALUES
      ('C-1001', 'Ada@Example.com', '+1 415 555 0100', 'Analytical Engines Ltd'),
      ('C-1002', 'grace@example.com', '+1 415 555 0199', 'Navy')`);
    await c.end();
    dir = mkdtempSync(join(tmpdir(), 'trib-unified-'));
    writeFileSync(join(dir, 'tributary.yaml'), YAML);
    writeFileSync(
      join(dir, 'tickets.csv'),
      'id,requester_email,subject,status,opened_at\n' +
        '1001,ada@example.com,Where is my order?,open,2026-12-01T09:00:00Z\n' +
        '1002,ADA@example.com,Refund for a late delivery,solved,2026-12-02T10:30:00Z\n' +
        '1003,someone.else@example.com,Password reset,open,2026-12-03T08:00:00Z\n',
    );
    env = { STRIPE_WEBHOOK_SECRET, CRM_DATABASE_URL: db.url };
    server = await startTestServer({ yaml: YAML, env, dataDir: join(dir, 'data') });
  });
  afterAll(async () => {
    await server?.stop();
    await db?.drop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  async function cli(args: string[]) {
    const r = await promisify(execFile)(
      process.execPath,
      [...CLI, ...args, '--url', server.url, '--config', join(dir, 'tributary.yaml')],
      { cwd: dir, env: { ...process.env, ...env, TRIBUTARY_ADMIN_TOKEN: ADMIN_TOKEN } },
    );
    return r.stdout;
  }

  async function settled() {
    await server.settle();
    await server.identity!.drained();
  }

  async function stripeWebhook(type: string, object: Record<string, unknown>, id: string) {
    const body = JSON.stringify({
      id,
      object: 'event',
      created: 1_765_000_000,
      livemode: false,
      type,
      data: { object },
    });
    const header = new Stripe('sk_test_unused').webhooks.generateTestHeaderString({
      payload: body,
      secret: STRIPE_WEBHOOK_SECRET,
    });
    const res = await fetch(`${server.url}/webhooks/stripe`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'stripe-signature': header },
      body,
    });
    expect(res.status, await res.text()).toBe(200);
  }

  it('makes one profile of the shop, Stripe, the CRM and the help desk, and joins tickets and payments to it', async () => {
    // 1. The shop's SDK.
    const analytics = new Analytics({ writeKey: 'wk_shop_123', host: server.url, flushAt: 2 });
    analytics.identify({ userId: 'shop-42', traits: { email: 'ada@example.com', name: 'Ada Lovelace' } });
    analytics.track({
      userId: 'shop-42',
      event: 'Order Completed',
      properties: { order_id: 'o-1', total: 42.5 },
    });
    await analytics.closeAndFlush({ timeout: 10_000 });

    // 2. Stripe: the customer (same email), then a charge of that customer.
    await stripeWebhook(
      'customer.created',
      { id: 'cus_ada', object: 'customer', email: 'ada@example.com', name: 'Ada Lovelace' },
      'evt_customer_ada',
    );
    await stripeWebhook(
      'charge.succeeded',
      {
        id: 'ch_1',
        object: 'charge',
        amount: 4250,
        currency: 'usd',
        customer: 'cus_ada',
        status: 'succeeded',
        paid: true,
      },
      'evt_charge_1',
    );

    // 3. The CRM table: checked, discovered and synced by the source service through the CLI.
    expect(JSON.parse(await cli(['sources', 'check', 'crm', '--json']))).toEqual({ ok: true });
    const catalog = JSON.parse(await cli(['sources', 'discover', 'crm', '--json']));
    expect(catalog.streams[0]).toMatchObject({
      name: 'contacts',
      primaryKey: ['id'],
      columns: [
        { name: 'id', jsonType: 'integer', sourceType: 'integer' },
        { name: 'crm_id', jsonType: 'string' },
        { name: 'email', jsonType: 'string' },
        { name: 'phone', jsonType: 'string' },
        { name: 'company', jsonType: 'string' },
      ],
    });
    const sync = JSON.parse(await cli(['sources', 'sync', 'crm', '--json']));
    expect(sync).toMatchObject({ status: 'succeeded', rows: 2, objects: 2, failed: 0 });

    // 4. The help-desk CSV.
    const imported = JSON.parse(
      await cli(['import', join(dir, 'tickets.csv'), '--source', 'helpdesk', '--json']),
    );
    expect(imported).toMatchObject({ status: 'succeeded', rows: 3, objects: 3, failed: 0 });
    await settled();

    // One profile holds every source's identifiers and traits.
    const profile = JSON.parse(await cli(['profiles', 'get', 'email:ada@example.com', '--json']));
    const ids = (profile.identifiers as { type: string; value: string }[]).map((i) => `${i.type}:${i.value}`);
    expect(ids.sort()).toEqual(
      [
        'user_id:shop-42',
        'email:ada@example.com',
        'anonymous_id:cus_ada',
        'stripe_customer_id:cus_ada',
        'crm_id:C-1001',
        'phone:+14155550100',
        'anonymous_id:crm:C-1001',
        'anonymous_id:crm:contacts:[1]',
        'anonymous_id:helpdesk:tickets:[1001]',
        'anonymous_id:helpdesk:tickets:[1002]',
      ].sort(),
    );
    // Identifiers are normalised (the email lowercased, the phone E.164); traits keep the value
    // as the latest source sent it (identity.traits.default: latest): here the last ticket's.
    expect(profile.traits).toMatchObject({
      email: 'ADA@example.com',
      name: 'Ada Lovelace',
      stripe_customer_id: 'cus_ada',
      crm_id: 'C-1001',
      phone: '+1 415 555 0100',
      company: 'Analytical Engines Ltd',
    });
    for (const [type, value] of [
      ['user_id', 'shop-42'],
      ['stripe_customer_id', 'cus_ada'],
      ['crm_id', 'C-1001'],
      ['phone', '+14155550100'],
    ])
      expect(JSON.parse(await cli(['profiles', 'get', `${type}:${value}`, '--json'])).profileId).toBe(
        profile.profileId,
      );
    // Grace (CRM only) and the third ticket's requester stay apart.
    const grace = JSON.parse(await cli(['profiles', 'get', 'crm_id:C-1002', '--json']));
    expect(grace.profileId).not.toBe(profile.profileId);

    // The tickets and the payments of that profile, in one query on the embedded warehouse.
    const rows = await server.query(`
      WITH ada AS (
        SELECT profile_id FROM profile_identifiers WHERE type = 'email' AND value = 'ada@example.com'
      )
      SELECT 'ticket' AS kind, t.id::VARCHAR AS ref, t.subject AS detail, ada.profile_id
        FROM helpdesk.tickets t
        JOIN profile_identifiers i ON i.type = 'anonymous_id' AND i.value = 'helpdesk:tickets:[' || t.id || ']'
        JOIN ada USING (profile_id)
       WHERE NOT t._tributary_deleted
      UNION ALL
      SELECT 'payment', json_extract_string(e.payload, '$.properties.charge_id'),
             json_extract_string(e.payload, '$.properties.amount') || ' ' || json_extract_string(e.payload, '$.properties.currency'),
             ada.profile_id
        FROM events_with_profile e JOIN ada USING (profile_id)
       WHERE e.source_id = 'stripe' AND e.event = 'charge.succeeded'
      ORDER BY kind, ref`);
    expect(rows).toEqual([
      { kind: 'payment', ref: 'ch_1', detail: '42.5 usd', profile_id: profile.profileId },
      { kind: 'ticket', ref: '1001', detail: 'Where is my order?', profile_id: profile.profileId },
      { kind: 'ticket', ref: '1002', detail: 'Refund for a late delivery', profile_id: profile.profileId },
    ]);
  }, 120_000);
});
