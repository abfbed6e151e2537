import { createHmac, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sign as githubSign } from '@octokit/webhooks-methods';
import { Webhook } from 'standardwebhooks';
import Stripe from 'stripe';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, basicAuth, sqlList, startTestServer, type TestServer, WRITE_KEY } from './helpers.js';

// Signing secrets, as the vendors make them (never literals in the configuration: ${ENV}).
const STRIPE_SECRET = `whsec_${randomUUID().replace(/-/g, '')}`;
const GITHUB_SECRET = `gh-${randomUUID()}`;
const SVIX_SECRET = `whsec_${Buffer.from(randomUUID()).toString('base64')}`;
const SHOPIFY_SECRET = `shpss_${randomUUID()}`;
const HMAC_SECRET = `hm-${randomUUID()}`;

const stripe = new Stripe('sk_test_unused');
const fnDir = mkdtempSync(join(tmpdir(), 'tributary-webhook-fn-'));
const fnFile = join(fnDir, 'split.js');
writeFileSync(
  fnFile,
  `export default function ({ payload, headers }) {
     if (payload.skip) return null;
     if (payload.longId) return { type: 'track', event: 'Long', userId: 'u', messageId: 'm'.repeat(200) };
     return payload.items.map((it) => ({ type: 'track', event: 'Item ' + it.name, userId: payload.user,
       properties: { sku: it.sku, via: headers['x-via'] } }));
   }`,
);

const yaml = `version: 1
sources:
  - id: web
    type: http
    writeKey: ${WRITE_KEY}
  - id: stripe
    type: webhook
    verify: { kind: stripe, secret: "\${STRIPE_SECRET}" }
    preset: stripe
  - id: github
    type: webhook
    verify: { kind: github, secret: "\${GITHUB_SECRET}" }
    preset: github
  - id: svix
    type: webhook
    verify: { kind: standardwebhooks, secret: "\${SVIX_SECRET}" }
    rules:
      - when: { type: "user.*" }
        type: identify
        userId: data.id
        email: data.email
        traits: { plan: data.plan }
  - id: shop
    type: webhook
    verify: { kind: shopify, secret: "\${SHOPIFY_SECRET}" }
    maxBodyBytes: 2048
    rules:
      - when: { "@x-shopify-topic": orders/create }
        event: Order Completed
        anonymousId: [customer.id, email]
        email: email
        properties:
          order_id: id
          total: total_price
          currency: currency
  - id: generic
    type: webhook
    verify:
      kind: hmac
      secret: "\${HMAC_SECRET}"
      header: X-Signature
      prefix: "sha256="
      timestamp: { header: X-Timestamp, tolerance: 5m, signedContent: "{timestamp}:{body}" }
      deliveryId: { header: X-Delivery }
    unmatched: ignore
    rules:
      - when: { kind: signup }
        event: "Signed Up via {channel}"
        userId: user.id
        externalIds: { crm_id: user.crm }
  - id: off-hook
    type: webhook
    enabled: false
    verify: { kind: none }
    preset: github
  - id: fn
    type: webhook
    verify: { kind: none, deliveryId: { path: id } }
    function: { file: ${JSON.stringify(fnFile)} }
`;

let server: TestServer;

beforeAll(async () => {
  server = await startTestServer({
    yaml,
    env: { STRIPE_SECRET, GITHUB_SECRET, SVIX_SECRET, SHOPIFY_SECRET, HMAC_SECRET },
  });
});
afterAll(async () => {
  await server?.stop();
  rmSync(fnDir, { recursive: true, force: true });
});

/** POSTs over real HTTP to the running server. */
async function post(path: string, body: string | Buffer, headers: Record<string, string>) {
  const res = await fetch(`${server.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body,
  });
  const text = await res.text();
  return { status: res.status, text, json: () => JSON.parse(text) as Record<string, unknown> };
}

function stripeHeader(payload: string, opts: { secret?: string; timestamp?: number } = {}) {
  return stripe.webhooks.generateTestHeaderString({
    payload,
    secret: opts.secret ?? STRIPE_SECRET,
    timestamp: opts.timestamp,
  });
}

function stripeEvent(type: string, object: Record<string, unknown>, id = `evt_${randomUUID().slice(0, 18)}`) {
  return JSON.stringify({
    id,
    object: 'event',
    api_version: '2024-06-20',
    created: 1_765_000_000,
    livemode: false,
    type,
    data: { object },
  });
}

async function events(ids: readonly string[]) {
  await server.settle();
  return server.query(
    `SELECT message_id, source_id, type, event, user_id, anonymous_id, payload FROM events
     WHERE message_id IN (${sqlList(ids)}) ORDER BY message_id`,
  );
}

async function failed(sourceId: string) {
  await server.settle();
  return server.query(
    `SELECT message_id, stage, code, reason, payload FROM failed_events WHERE source_id = '${sourceId}' ORDER BY log_offset`,
  );
}

// biome-ignore lint/suspicious/noExplicitAny: JSON read back from the warehouse, checked by the assertions
const parse = (v: unknown) => (typeof v === 'string' ? JSON.parse(v) : v) as Record<string, any>;

describe('Stripe', () => {
  it('stores a customer as an identify with its email and stripe_customer_id, and keeps the raw body', async () => {
    const id = `evt_cust_${randomUUID().slice(0, 8)}`;
    const body = stripeEvent(
      'customer.created',
      {
        id: 'cus_ada',
        object: 'customer',
        email: 'ada@example.com',
        name: 'Ada',
        metadata: { user_id: 'u-ada' },
      },
      id,
    );
    const res = await post('/webhooks/stripe', body, { 'stripe-signature': stripeHeader(body) });
    expect(res.status, res.text).toBe(200);
    const [row] = await events([id]);
    expect(row).toMatchObject({
      source_id: 'stripe',
      type: 'identify',
      user_id: 'u-ada',
      anonymous_id: 'cus_ada',
    });
    const e = parse(row!.payload);
    expect(e.traits).toMatchObject({ email: 'ada@example.com', name: 'Ada', stripe_customer_id: 'cus_ada' });
    expect(e.context.externalIds).toEqual([
      { id: 'cus_ada', type: 'stripe_customer_id', collection: 'users', encoding: 'none' },
    ]);
    expect(e.context.webhook).toMatchObject({
      source: 'stripe',
      kind: 'stripe',
      deliveryId: id,
      payload: body,
    });
    expect(e.timestamp).toBe(new Date(1_765_000_000_000).toISOString());
  });

  it('stores charges as tracks with amounts in currency units, zero-decimal currencies as they are', async () => {
    const usd = `evt_usd_${randomUUID().slice(0, 8)}`;
    const jpy = `evt_jpy_${randomUUID().slice(0, 8)}`;
    const kwd = `evt_kwd_${randomUUID().slice(0, 8)}`;
    const charge = (currency: string, amount: number) => ({
      id: `ch_${currency}`,
      object: 'charge',
      amount,
      amount_refunded: 0,
      currency,
      customer: 'cus_ada',
      billing_details: { email: 'ada@example.com' },
      status: 'succeeded',
    });
    for (const [id, c, a] of [
      [usd, 'usd', 1999],
      [jpy, 'jpy', 1999],
      [kwd, 'kwd', 12345],
    ] as const) {
      const body = stripeEvent('charge.succeeded', charge(c, a), id);
      const res = await post('/webhooks/stripe', body, { 'stripe-signature': stripeHeader(body) });
      expect(res.status, res.text).toBe(200);
    }
    const rows = await events([usd, jpy, kwd]);
    const byId = new Map(rows.map((r) => [r.message_id, parse(r.payload)]));
    expect(
      rows.every((r) => r.type === 'track' && r.event === 'charge.succeeded' && r.anonymous_id === 'cus_ada'),
    ).toBe(true);
    expect(byId.get(usd)!.properties).toMatchObject({ amount: 19.99, amount_refunded: 0, currency: 'usd' });
    expect(byId.get(jpy)!.properties).toMatchObject({ amount: 1999, currency: 'jpy' });
    expect(byId.get(kwd)!.properties).toMatchObject({ amount: 12.345, currency: 'kwd' });
    expect(byId.get(usd)!.context.traits).toEqual({ email: 'ada@example.com' });
  });

  it("joins the customer's identify and charges into one profile through stripe_customer_id", async () => {
    await server.settle();
    await server.identity?.drained();
    const res = await fetch(`${server.url}/v1/profiles/stripe_customer_id:cus_ada`, {
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    const text = await res.text();
    expect(res.status, text).toBe(200);
    const profile = JSON.parse(text) as {
      identifiers: { type: string; value: string }[];
      recentEvents: { messageId: string; event: string | null }[];
    };
    expect(profile.identifiers.map((x) => `${x.type}:${x.value}`).sort()).toEqual([
      'anonymous_id:cus_ada',
      'email:ada@example.com',
      'stripe_customer_id:cus_ada',
      'user_id:u-ada',
    ]);
    expect(profile.recentEvents.map((e) => e.event ?? 'identify').sort()).toEqual([
      'charge.succeeded',
      'charge.succeeded',
      'charge.succeeded',
      'identify',
    ]);
  });

  it('stores a redelivered event once (the event id is the messageId)', async () => {
    const id = `evt_again_${randomUUID().slice(0, 8)}`;
    const body = stripeEvent(
      'invoice.paid',
      { id: 'in_1', customer: 'cus_ada', currency: 'eur', amount_paid: 500, total: 500 },
      id,
    );
    for (let i = 0; i < 3; i++) {
      // Stripe signs each delivery anew: a later timestamp, the same body.
      const res = await post('/webhooks/stripe', body, {
        'stripe-signature': stripeHeader(body, { timestamp: Math.floor(Date.now() / 1000) - 2 + i }),
      });
      expect(res.status, res.text).toBe(200);
    }
    const rows = await events([id]);
    expect(rows).toHaveLength(1);
    expect(parse(rows[0]!.payload).properties).toMatchObject({
      amount_paid: 5,
      total: 5,
      invoice_id: 'in_1',
    });
  });

  it('refuses a wrong secret, a missing header, a changed body and a stale timestamp with 401, storing nothing', async () => {
    const id = `evt_bad_${randomUUID().slice(0, 8)}`;
    const body = stripeEvent('customer.created', { id: 'cus_bad', email: 'bad@example.com' }, id);
    const wrong = await post('/webhooks/stripe', body, {
      'stripe-signature': stripeHeader(body, { secret: 'whsec_not_the_secret' }),
    });
    expect(wrong.status).toBe(401);
    expect(wrong.json().code).toBe('TRIB_ERR_WEBHOOK_SIGNATURE_INVALID');
    expect(wrong.text).not.toContain(STRIPE_SECRET.slice(-4));

    const missing = await post('/webhooks/stripe', body, {});
    expect(missing.status).toBe(401);
    expect(missing.json().code).toBe('TRIB_ERR_WEBHOOK_SIGNATURE_MISSING');

    const changed = await post('/webhooks/stripe', body.replace('bad@', 'evil@'), {
      'stripe-signature': stripeHeader(body),
    });
    expect(changed.status).toBe(401);
    expect(changed.json().code).toBe('TRIB_ERR_WEBHOOK_SIGNATURE_INVALID');

    const stale = await post('/webhooks/stripe', body, {
      'stripe-signature': stripeHeader(body, { timestamp: Math.floor(Date.now() / 1000) - 6 * 60 }),
    });
    expect(stale.status).toBe(401);
    expect(stale.json().code).toBe('TRIB_ERR_WEBHOOK_TIMESTAMP_STALE');

    // A good request after them, so "nothing stored" is read after the loader has passed them.
    const okId = `evt_after_${randomUUID().slice(0, 8)}`;
    const ok = stripeEvent('customer.updated', { id: 'cus_ok', email: 'ok@example.com' }, okId);
    expect((await post('/webhooks/stripe', ok, { 'stripe-signature': stripeHeader(ok) })).status).toBe(200);
    expect(await events([id, okId])).toHaveLength(1);
    const f = await failed('stripe');
    expect(f.filter((r) => r.message_id === id)).toEqual([]);
  });

  it('keeps an event no rule places in failed_events (stage source), acknowledges it, and a retry leaves it there', async () => {
    const unmatched = `evt_payout_${randomUUID().slice(0, 8)}`;
    const body = stripeEvent('payout.paid', { id: 'po_1', amount: 100, currency: 'usd' }, unmatched);
    const res = await post('/webhooks/stripe', body, { 'stripe-signature': stripeHeader(body) });
    expect(res.status).toBe(200);
    expect(res.json()).toMatchObject({ accepted: 0 });
    // A guest charge with neither customer nor email: the mapping cannot give it an identity.
    const anonymous = `evt_guest_${randomUUID().slice(0, 8)}`;
    const guest = stripeEvent('charge.failed', { id: 'ch_guest', amount: 100, currency: 'usd' }, anonymous);
    expect((await post('/webhooks/stripe', guest, { 'stripe-signature': stripeHeader(guest) })).status).toBe(
      200,
    );
    const rows = (await failed('stripe')).filter(
      (r) => r.message_id === unmatched || r.message_id === anonymous,
    );
    expect(rows.map((r) => [r.message_id, r.stage, r.code])).toEqual([
      [unmatched, 'source', 'TRIB_ERR_WEBHOOK_UNMATCHED'],
      [anonymous, 'source', 'TRIB_ERR_WEBHOOK_MAPPING_INVALID'],
    ]);
    expect(parse(rows[0]!.payload)).toEqual(JSON.parse(body));
    expect(parse(rows[1]!.payload).context.webhook.payload).toBe(guest);
    expect(await events([unmatched, anonymous])).toEqual([]);
    // A retry cannot run the source's mapping again: it is refused, and nothing reaches events.
    const retry = await fetch(`${server.url}/admin/v1/failed/retry`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ source: 'stripe', code: 'TRIB_ERR_WEBHOOK_UNMATCHED', wait: true }),
    });
    const results = ((await retry.json()) as { results: { status: string }[] }).results;
    expect(results.length).toBeGreaterThan(0);
    expect(results.every((r) => r.status === 'skipped')).toBe(true);
    expect(await events([unmatched])).toEqual([]);
  });
});

describe('GitHub', () => {
  const push = JSON.stringify({
    ref: 'refs/heads/main',
    after: 'abc123',
    repository: { full_name: 'acme/shop' },
    pusher: { name: 'octo', email: 'octo@example.com' },
    sender: { login: 'octocat', id: 583231 },
    head_commit: { id: 'abc123', message: 'Fix', timestamp: '2026-12-01T10:00:00Z' },
  });

  it('stores a push and an issue with the sender login as identifier, the delivery as messageId', async () => {
    const d1 = randomUUID();
    const d2 = randomUUID();
    const issue = JSON.stringify({
      action: 'opened',
      issue: { number: 7, title: 'Bug', state: 'open' },
      repository: { full_name: 'acme/shop' },
      sender: { login: 'hubot', id: 2 },
    });
    for (const [d, event, body] of [
      [d1, 'push', push],
      [d2, 'issues', issue],
    ]) {
      const res = await post('/webhooks/github', body!, {
        'x-github-event': event!,
        'x-github-delivery': d!,
        'x-hub-signature-256': await githubSign(GITHUB_SECRET, body!),
      });
      expect(res.status, res.text).toBe(200);
    }
    const rows = await events([d1, d2]);
    const byId = new Map(rows.map((r) => [r.message_id, r]));
    expect(byId.get(d1)).toMatchObject({ event: 'push', anonymous_id: 'octocat' });
    expect(byId.get(d2)).toMatchObject({ event: 'issues opened', anonymous_id: 'hubot' });
    const p = parse(byId.get(d1)!.payload);
    expect(p.properties).toMatchObject({
      repository: 'acme/shop',
      ref: 'refs/heads/main',
      head_commit_id: 'abc123',
    });
    expect(p.context.externalIds).toContainEqual({
      id: 'octocat',
      type: 'github_login',
      collection: 'users',
      encoding: 'none',
    });
    expect(p.context.traits).toEqual({ email: 'octo@example.com' });
    expect(parse(byId.get(d2)!.payload).properties).toMatchObject({ number: 7, title: 'Bug' });
  });

  it('reads the form-encoded content type (payload=…), signed over the form body', async () => {
    const d = randomUUID();
    const form = new URLSearchParams({ payload: push }).toString();
    const res = await post('/webhooks/github', form, {
      'content-type': 'application/x-www-form-urlencoded',
      'x-github-event': 'push',
      'x-github-delivery': d,
      'x-hub-signature-256': await githubSign(GITHUB_SECRET, form),
    });
    expect(res.status, res.text).toBe(200);
    const [row] = await events([d]);
    expect(row).toMatchObject({ event: 'push', anonymous_id: 'octocat' });
    expect(parse(row!.payload).context.webhook.payload).toBe(form);
  });

  it('acknowledges a ping and stores nothing; refuses a wrong signature', async () => {
    const d = randomUUID();
    const ping = JSON.stringify({ zen: 'Keep it simple.', hook_id: 1, sender: { login: 'octocat' } });
    const res = await post('/webhooks/github', ping, {
      'x-github-event': 'ping',
      'x-github-delivery': d,
      'x-hub-signature-256': await githubSign(GITHUB_SECRET, ping),
    });
    expect(res.status).toBe(200);
    const bad = await post('/webhooks/github', push, {
      'x-github-event': 'push',
      'x-github-delivery': randomUUID(),
      'x-hub-signature-256': await githubSign('another-secret', push),
    });
    expect(bad.status).toBe(401);
    expect(bad.json().code).toBe('TRIB_ERR_WEBHOOK_SIGNATURE_INVALID');
    expect(await events([d])).toEqual([]);
  });
});

describe('Standard Webhooks, Shopify and generic HMAC', () => {
  it('verifies a Standard Webhooks request (webhook-id is the messageId) and refuses a stale one', async () => {
    const wh = new Webhook(SVIX_SECRET);
    const id = `msg_${randomUUID()}`;
    const body = JSON.stringify({
      type: 'user.created',
      data: { id: 'u-9', email: 'nine@example.com', plan: 'pro' },
    });
    const headers = (at: Date) => ({
      'webhook-id': id,
      'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
      'webhook-signature': wh.sign(id, at, body),
    });
    const res = await post('/webhooks/svix', body, headers(new Date()));
    expect(res.status, res.text).toBe(200);
    const stale = await post('/webhooks/svix', body, headers(new Date(Date.now() - 10 * 60_000)));
    expect(stale.status).toBe(401);
    expect(stale.json().code).toBe('TRIB_ERR_WEBHOOK_TIMESTAMP_STALE');
    // Svix sends the same scheme under its own header names.
    const svixId = `msg_${randomUUID()}`;
    const now = new Date();
    const svix = await post('/webhooks/svix', body, {
      'svix-id': svixId,
      'svix-timestamp': String(Math.floor(now.getTime() / 1000)),
      'svix-signature': wh.sign(svixId, now, body),
    });
    expect(svix.status, svix.text).toBe(200);
    expect((await events([svixId])).map((r) => r.user_id)).toEqual(['u-9']);
    const [row] = await events([id]);
    expect(row).toMatchObject({ type: 'identify', user_id: 'u-9' });
    expect(parse(row!.payload).traits).toEqual({ email: 'nine@example.com', plan: 'pro' });
  });

  it('verifies Shopify HMAC-SHA256 (base64) and refuses a body over maxBodyBytes with 413', async () => {
    const id = randomUUID();
    const body = JSON.stringify({
      id: 5_820_982_911,
      email: 'jon@example.com',
      total_price: '10.00',
      currency: 'USD',
    });
    const hmac = createHmac('sha256', SHOPIFY_SECRET).update(body).digest('base64');
    const res = await post('/webhooks/shop', body, {
      'x-shopify-hmac-sha256': hmac,
      'x-shopify-topic': 'orders/create',
      'x-shopify-webhook-id': id,
    });
    expect(res.status, res.text).toBe(200);
    const wrong = await post('/webhooks/shop', body, {
      'x-shopify-hmac-sha256': createHmac('sha256', 'nope').update(body).digest('base64'),
      'x-shopify-topic': 'orders/create',
      'x-shopify-webhook-id': randomUUID(),
    });
    expect(wrong.status).toBe(401);
    const big = JSON.stringify({ note: 'x'.repeat(4096) });
    const large = await post('/webhooks/shop', big, {
      'x-shopify-hmac-sha256': createHmac('sha256', SHOPIFY_SECRET).update(big).digest('base64'),
    });
    expect(large.status).toBe(413);
    expect(large.json().code).toBe('TRIB_ERR_WEBHOOK_BODY_TOO_LARGE');
    const [row] = await events([id]);
    expect(row).toMatchObject({ event: 'Order Completed', anonymous_id: 'jon@example.com' });
    expect(parse(row!.payload).properties).toEqual({
      order_id: 5_820_982_911,
      total: '10.00',
      currency: 'USD',
    });
  });

  it('verifies a generic HMAC with a signed timestamp; a body that is not JSON goes to failed_events (stage source)', async () => {
    const sign = (body: string, ts: number, secret = HMAC_SECRET) =>
      `sha256=${createHmac('sha256', secret).update(`${ts}:${body}`).digest('hex')}`;
    const now = Math.floor(Date.now() / 1000);
    const id = `d-${randomUUID()}`;
    const body = JSON.stringify({ kind: 'signup', channel: 'web', user: { id: 'u-1', crm: 'crm-77' } });
    const ok = await post('/webhooks/generic', body, {
      'x-signature': sign(body, now),
      'x-timestamp': String(now),
      'x-delivery': id,
    });
    expect(ok.status, ok.text).toBe(200);
    const stale = await post('/webhooks/generic', body, {
      'x-signature': sign(body, now - 600),
      'x-timestamp': String(now - 600),
      'x-delivery': randomUUID(),
    });
    expect(stale.json().code).toBe('TRIB_ERR_WEBHOOK_TIMESTAMP_STALE');
    const noPrefix = await post('/webhooks/generic', body, {
      'x-signature': sign(body, now).slice('sha256='.length),
      'x-timestamp': String(now),
    });
    expect(noPrefix.status).toBe(401);
    // Nothing matches `kind: other` and the source ignores unmatched payloads.
    const other = JSON.stringify({ kind: 'other' });
    const ignored = await post('/webhooks/generic', other, {
      'x-signature': sign(other, now),
      'x-timestamp': String(now),
      'x-delivery': `d-${randomUUID()}`,
    });
    expect(ignored.status).toBe(200);
    const junkId = `d-${randomUUID()}`;
    const junk = 'not json at all';
    const j = await post('/webhooks/generic', junk, {
      'x-signature': sign(junk, now),
      'x-timestamp': String(now),
      'x-delivery': junkId,
    });
    expect(j.status).toBe(200);

    // Over 256 KiB the body is not copied into its event; the mapped fields are kept.
    const bigId = `d-${randomUUID()}`;
    const big = JSON.stringify({
      kind: 'signup',
      channel: 'api',
      user: { id: 'u-2' },
      note: 'x'.repeat(300_000),
    });
    const b = await post('/webhooks/generic', big, {
      'x-signature': sign(big, now),
      'x-timestamp': String(now),
      'x-delivery': bigId,
    });
    expect(b.status, b.text).toBe(200);
    const [bigRow] = await events([bigId]);
    expect(bigRow).toMatchObject({ event: 'Signed Up via api', user_id: 'u-2' });
    expect(parse(bigRow!.payload).context.webhook).toEqual({
      source: 'generic',
      kind: 'hmac',
      deliveryId: bigId,
      payloadOmitted: `the body (${big.length} bytes) is over 262144 bytes, and was not kept`,
    });
    const [row] = await events([id]);
    expect(row).toMatchObject({ event: 'Signed Up via web', user_id: 'u-1' });
    expect(parse(row!.payload).context.externalIds).toEqual([
      { id: 'crm-77', type: 'crm_id', collection: 'users', encoding: 'none' },
    ]);
    const f = await failed('generic');
    expect(f.map((r) => [r.message_id, r.stage, r.code])).toEqual([
      [junkId, 'source', 'TRIB_ERR_WEBHOOK_NOT_JSON'],
    ]);
    expect(parse(f[0]!.payload)).toBe(junk);
  });
});

describe('function sources', () => {
  it('stores each event the function returns, with messageIds the same on every redelivery', async () => {
    const id = `order-${randomUUID()}`;
    const body = JSON.stringify({
      id,
      user: 'u-5',
      items: [
        { name: 'Hat', sku: 'H1' },
        { name: 'Scarf', sku: 'S1' },
      ],
    });
    for (let i = 0; i < 2; i++) {
      const res = await post('/webhooks/fn', body, { 'x-via': 'test' });
      expect(res.status, res.text).toBe(200);
    }
    const rows = await events([id, `${id}-1`]);
    expect(rows.map((r) => [r.message_id, r.event, r.user_id])).toEqual([
      [id, 'Item Hat', 'u-5'],
      [`${id}-1`, 'Item Scarf', 'u-5'],
    ]);
    expect(parse(rows[0]!.payload).properties).toEqual({ sku: 'H1', via: 'test' });
    // The raw body once per delivery: the second event names the delivery instead.
    expect(parse(rows[0]!.payload).context.webhook).toEqual({
      source: 'fn',
      kind: 'none',
      deliveryId: id,
      payload: body,
    });
    expect(parse(rows[1]!.payload).context.webhook).toEqual({ source: 'fn', kind: 'none', deliveryId: id });
    // An event the function made that the envelope checks refuse is kept, under the delivery's id.
    const longId = `order-${randomUUID()}`;
    const skipped = `order-${randomUUID()}`;
    expect((await post('/webhooks/fn', JSON.stringify({ id: longId, longId: true }), {})).status).toBe(200);
    expect((await post('/webhooks/fn', JSON.stringify({ id: skipped, skip: true }), {})).status).toBe(200);
    const f = (await failed('fn')).filter((r) => r.message_id === longId || r.message_id === skipped);
    expect(f.map((r) => [r.message_id, r.stage, r.code])).toEqual([
      [longId, 'source', 'TRIB_ERR_WEBHOOK_MAPPING_INVALID'],
    ]);
    expect(await events([longId, skipped])).toEqual([]);
  });
});

describe('the collection API and the counts', () => {
  it('answers a webhook sent to /v1/track with 400 pointing to the webhook URL, storing nothing', async () => {
    const body = stripeEvent('customer.created', { id: 'cus_x' });
    const signed = await post('/v1/track', body, {
      'stripe-signature': stripeHeader(body),
      authorization: basicAuth(WRITE_KEY),
    });
    expect(signed.status).toBe(400);
    expect(signed.json().code).toBe('TRIB_ERR_COLLECT_WEBHOOK_REQUEST');
    expect(String(signed.json().message)).toContain('/webhooks/');
    const unsigned = await post('/v1/track', body, { authorization: basicAuth(WRITE_KEY) });
    expect(unsigned.json().code).toBe('TRIB_ERR_COLLECT_WEBHOOK_REQUEST');
    const github = await post('/v1/batch', '{"batch":[]}', {
      'x-github-event': 'push',
      authorization: basicAuth(WRITE_KEY),
    });
    expect(github.json().code).toBe('TRIB_ERR_COLLECT_WEBHOOK_REQUEST');
    for (const id of ['nope', 'off-hook', 'web']) {
      const res = await post(`/webhooks/${id}`, '{}', {});
      expect(res.status, id).toBe(404);
      expect(res.json().code, id).toBe('TRIB_ERR_WEBHOOK_UNKNOWN_SOURCE');
    }
  });

  it('counts requests by outcome, and events so that received = accepted + rejected', async () => {
    await server.settle();
    const text = await (await fetch(`${server.url}/metrics`)).text();
    const value = (name: string, labels: string) => {
      const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`));
      return line ? Number(line.split(' ').pop()) : 0;
    };
    expect(
      value('tributary_webhook_requests_total', 'source="stripe",outcome="unauthorized"'),
    ).toBeGreaterThanOrEqual(4);
    expect(
      value('tributary_webhook_requests_total', 'source="github",outcome="ignored"'),
    ).toBeGreaterThanOrEqual(1);
    for (const s of ['stripe', 'github', 'svix', 'shop', 'generic', 'fn']) {
      const received = value('tributary_events_received_total', `source="${s}"`);
      let rejected = 0;
      for (const l of text.split('\n'))
        if (l.startsWith(`tributary_events_rejected_total{source="${s}"`))
          rejected += Number(l.split(' ').pop());
      expect(received, s).toBe(value('tributary_events_accepted_total', `source="${s}"`) + rejected);
    }
    expect(
      value('tributary_events_rejected_total', 'source="stripe",code="TRIB_ERR_WEBHOOK_UNMATCHED"'),
    ).toBeGreaterThanOrEqual(1);
    // The admin API's reconciled counts: every accepted event reached a fate.
    const stats = (await (
      await fetch(`${server.url}/admin/v1/stats`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
    ).json()) as {
      sources: {
        source: string;
        received: number;
        accepted: number;
        rejected: number;
        passed: number;
        blocked: number;
        failed: number;
        pending: number;
      }[];
    };
    for (const s of stats.sources.filter((x) => x.source !== 'web')) {
      expect(s.received, s.source).toBe(s.accepted + s.rejected);
      expect(s.accepted, s.source).toBe(s.passed + s.blocked + s.failed + s.pending);
    }
    expect(stats.sources.find((x) => x.source === 'stripe')!.received).toBeGreaterThan(5);
  });
});
