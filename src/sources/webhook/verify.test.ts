import { createHmac } from 'node:crypto';
import { sign as githubSign } from '@octokit/webhooks-methods';
import { Webhook } from 'standardwebhooks';
import Stripe from 'stripe';
import { describe, expect, it } from 'vitest';
import { WebhookVerify } from './spec.js';
import { bodyDeliveryId, createVerifier } from './verify.js';

const body = Buffer.from('{"id":"evt_1","type":"x"}');
const now = Date.now();
const at = (headers: Record<string, string>, receivedAt = now) => ({ body, headers, receivedAt });
const verifier = (v: unknown) => createVerifier(WebhookVerify.parse(v));

describe('generic hmac', () => {
  const secret = 'shh';
  const mac = (alg: string, content: Buffer | string, enc: 'hex' | 'base64') =>
    createHmac(alg, secret).update(content).digest(enc);

  it('takes each algorithm and encoding, with or without a prefix', async () => {
    const sha512 = verifier({
      kind: 'hmac',
      secret,
      header: 'X-Sig',
      algorithm: 'sha512',
      encoding: 'base64',
    });
    expect(await sha512(at({ 'x-sig': mac('sha512', body, 'base64') }))).toEqual({ ok: true });
    const sha1 = verifier({ kind: 'hmac', secret, header: 'X-Sig', algorithm: 'sha1', prefix: 'sha1=' });
    expect(await sha1(at({ 'x-sig': `sha1=${mac('sha1', body, 'hex')}` }))).toEqual({ ok: true });
    expect(await sha1(at({ 'x-sig': mac('sha1', body, 'hex') }))).toMatchObject({
      ok: false,
      code: 'TRIB_ERR_WEBHOOK_SIGNATURE_INVALID',
    });
    // The right digest under the wrong algorithm, garbage, and another secret's digest.
    const sha256 = verifier({ kind: 'hmac', secret, header: 'X-Sig' });
    for (const sig of [
      mac('sha1', body, 'hex'),
      'zz',
      createHmac('sha256', 'other').update(body).digest('hex'),
    ])
      expect(await sha256(at({ 'x-sig': sig }))).toMatchObject({
        ok: false,
        code: 'TRIB_ERR_WEBHOOK_SIGNATURE_INVALID',
      });
    expect(await sha256(at({}))).toEqual({
      ok: false,
      code: 'TRIB_ERR_WEBHOOK_SIGNATURE_MISSING',
      header: 'x-sig',
    });
  });

  it('accepts any one of several signatures (a secret being rotated)', async () => {
    const v = verifier({ kind: 'hmac', secret, header: 'X-Sig', prefix: 'v1=' });
    const good = `v1=${mac('sha256', body, 'hex')}`;
    expect(await v(at({ 'x-sig': `v1=${'0'.repeat(64)}, ${good}` }))).toEqual({ ok: true });
    expect(await v(at({ 'x-sig': `v1=${'0'.repeat(64)} v1=${'1'.repeat(64)}` }))).toMatchObject({
      ok: false,
    });
  });

  it('signs the timestamp with the body, and refuses it outside the tolerance either way', async () => {
    const v = verifier({
      kind: 'hmac',
      secret,
      header: 'X-Sig',
      timestamp: { header: 'X-Ts', tolerance: '1m', signedContent: 'v0:{timestamp}:{body}' },
      deliveryId: { header: 'X-Id' },
    });
    const signed = (ts: number) => ({
      'x-sig': mac('sha256', Buffer.concat([Buffer.from(`v0:${ts}:`), body]), 'hex'),
      'x-ts': String(ts),
      'x-id': 'd-1',
    });
    const s = Math.floor(now / 1000);
    expect(await v(at(signed(s)))).toEqual({ ok: true, deliveryId: 'd-1' });
    expect(await v(at({ ...signed(s), 'x-ts': String(s + 1) }))).toMatchObject({
      code: 'TRIB_ERR_WEBHOOK_SIGNATURE_INVALID',
    });
    expect(await v(at(signed(s - 120)))).toMatchObject({ code: 'TRIB_ERR_WEBHOOK_TIMESTAMP_STALE' });
    expect(await v(at(signed(s + 120)))).toMatchObject({ code: 'TRIB_ERR_WEBHOOK_TIMESTAMP_STALE' });
    // Milliseconds are read as such.
    const ms = now;
    expect(await v(at(signed(ms)))).toEqual({ ok: true, deliveryId: 'd-1' });
    const { 'x-ts': _, ...noTs } = signed(s);
    expect(await v(at(noTs))).toEqual({
      ok: false,
      code: 'TRIB_ERR_WEBHOOK_SIGNATURE_MISSING',
      header: 'x-ts',
    });
  });
});

describe("the vendors' schemes", () => {
  it('Stripe: one of several v1 signatures, and the tolerance', async () => {
    const secret = 'whsec_test';
    const v = verifier({ kind: 'stripe', secret, tolerance: '5m' });
    const stripe = new Stripe('sk_test_unused');
    const header = stripe.webhooks.generateTestHeaderString({ payload: body.toString(), secret });
    const other = stripe.webhooks.generateTestHeaderString({
      payload: body.toString(),
      secret: 'whsec_other',
    });
    expect(await v(at({ 'stripe-signature': header }))).toEqual({ ok: true });
    expect(await v(at({ 'stripe-signature': `${header},v1=${other.split('v1=')[1]}` }))).toEqual({
      ok: true,
    });
    expect(await v(at({ 'stripe-signature': other }))).toMatchObject({
      code: 'TRIB_ERR_WEBHOOK_SIGNATURE_INVALID',
    });
    expect(await v(at({ 'stripe-signature': 'garbage' }))).toMatchObject({
      code: 'TRIB_ERR_WEBHOOK_SIGNATURE_INVALID',
    });
    expect(await v(at({ 'stripe-signature': header }, now + 6 * 60_000))).toMatchObject({
      code: 'TRIB_ERR_WEBHOOK_TIMESTAMP_STALE',
    });
  });

  it('GitHub: sha256= over the body, the delivery header as id', async () => {
    const v = verifier({ kind: 'github', secret: 'gh' });
    const sig = await githubSign('gh', body.toString());
    expect(await v(at({ 'x-hub-signature-256': sig, 'x-github-delivery': 'g-1' }))).toEqual({
      ok: true,
      deliveryId: 'g-1',
    });
    expect(await v({ ...at({ 'x-hub-signature-256': sig }), body: Buffer.from([0xff, 0xfe]) })).toMatchObject(
      {
        ok: false,
      },
    );
    expect(await v(at({ 'x-hub-signature-256': sig.toUpperCase() }))).toMatchObject({ ok: false });
  });

  it("Standard Webhooks: a rotated secret's second signature, and the clock", async () => {
    const secret = `whsec_${Buffer.from('a secret of some length').toString('base64')}`;
    const v = verifier({ kind: 'standardwebhooks', secret });
    const wh = new Webhook(secret);
    const old = new Webhook(`whsec_${Buffer.from('the previous secret').toString('base64')}`);
    const d = new Date(now);
    const headers = {
      'webhook-id': 'msg_1',
      'webhook-timestamp': String(Math.floor(now / 1000)),
      'webhook-signature': `${old.sign('msg_1', d, body)} ${wh.sign('msg_1', d, body)}`,
    };
    expect(await v(at(headers))).toEqual({ ok: true, deliveryId: 'msg_1' });
    expect(await v(at({ ...headers, 'webhook-id': 'msg_2' }))).toMatchObject({
      code: 'TRIB_ERR_WEBHOOK_SIGNATURE_INVALID',
    });
  });

  it('Shopify: base64 HMAC-SHA256 of the body', async () => {
    const v = verifier({ kind: 'shopify', secret: 's' });
    const sig = createHmac('sha256', 's').update(body).digest('base64');
    expect(await v(at({ 'x-shopify-hmac-sha256': sig, 'x-shopify-webhook-id': 'w-1' }))).toEqual({
      ok: true,
      deliveryId: 'w-1',
    });
    expect(
      await v(at({ 'x-shopify-hmac-sha256': createHmac('sha256', 's').update(body).digest('hex') })),
    ).toMatchObject({
      ok: false,
    });
  });

  it('none: everything passes, and a body without an id gets a hash of itself', async () => {
    expect(await verifier({ kind: 'none' })(at({}))).toEqual({ ok: true, deliveryId: undefined });
    expect(bodyDeliveryId(body)).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(bodyDeliveryId(body)).toBe(bodyDeliveryId(Buffer.from(body)));
  });
});
