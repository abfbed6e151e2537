import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { verify as verifyGithub } from '@octokit/webhooks-methods';
import { Webhook as StandardWebhook } from 'standardwebhooks';
import Stripe from 'stripe';
import type { PushRequest } from '../source.js';
import type { WebhookVerify } from './spec.js';

/** Why a request is refused (401); the codes are `TRIB_ERR_WEBHOOK_*` in errors.ts. */
export type VerifyFailure =
  | 'TRIB_ERR_WEBHOOK_SIGNATURE_MISSING'
  | 'TRIB_ERR_WEBHOOK_SIGNATURE_INVALID'
  | 'TRIB_ERR_WEBHOOK_TIMESTAMP_STALE';

/**
 * What the check found. `deliveryId`: the vendor's id of the delivery when a header carries
 * it (Stripe's is in the body, read after parsing). `header`: the header the vendor signs in,
 * for the error message (never the secret or the signature).
 */
export type VerifyResult =
  | { ok: true; deliveryId?: string }
  | { ok: false; code: VerifyFailure; header: string };

export type Verifier = (req: PushRequest) => Promise<VerifyResult>;

const fail = (code: VerifyFailure, header: string): VerifyResult => ({ ok: false, code, header });

/** Where each kind carries its delivery id, as a header. */
const DELIVERY_HEADER: Partial<Record<WebhookVerify['kind'], string[]>> = {
  github: ['x-github-delivery'],
  standardwebhooks: ['webhook-id'],
  shopify: ['x-shopify-webhook-id', 'x-shopify-event-id'],
};

function deliveryHeader(kind: WebhookVerify['kind'], headers: PushRequest['headers']): string | undefined {
  for (const h of DELIVERY_HEADER[kind] ?? []) {
    const v = headers[h];
    if (v) return v;
  }
  return undefined;
}

/** Compares two byte strings in time independent of where they differ. */
function sameBytes(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

// One instance for its webhook helpers; it makes no API call.
let stripe: Stripe | undefined;

/**
 * The signature check of one source. Every check is made on the raw bytes as received, in
 * constant time, by the vendor's own library where there is one; it never throws for a bad
 * request, and its results carry no secret and no signature.
 */
export function createVerifier(v: WebhookVerify): Verifier {
  switch (v.kind) {
    case 'stripe': {
      stripe ??= new Stripe('sk_unused', { telemetry: false });
      const signature = stripe.webhooks.signature!;
      const toleranceS = Math.max(1, Math.round(v.tolerance / 1000));
      return async ({ body, headers, receivedAt }) => {
        const header = headers['stripe-signature'];
        if (!header) return fail('TRIB_ERR_WEBHOOK_SIGNATURE_MISSING', 'Stripe-Signature');
        try {
          signature.verifyHeader(body, header, v.secret, toleranceS, undefined, receivedAt);
          return { ok: true };
        } catch {
          // Stripe's messages name the secret's length and last characters: they are not kept.
          // Checked again without the tolerance: a good signature then is a stale timestamp.
          try {
            signature.verifyHeader(body, header, v.secret, 0, undefined, receivedAt);
            return fail('TRIB_ERR_WEBHOOK_TIMESTAMP_STALE', 'Stripe-Signature');
          } catch {
            return fail('TRIB_ERR_WEBHOOK_SIGNATURE_INVALID', 'Stripe-Signature');
          }
        }
      };
    }
    case 'github':
      return async ({ body, headers }) => {
        const sig = headers['x-hub-signature-256'];
        if (!sig) return fail('TRIB_ERR_WEBHOOK_SIGNATURE_MISSING', 'X-Hub-Signature-256');
        // The library signs text: bytes that are not UTF-8 would not survive the round trip,
        // and such a body is no GitHub payload.
        const text = body.toString('utf8');
        if (body.length === 0 || !Buffer.from(text, 'utf8').equals(body))
          return fail('TRIB_ERR_WEBHOOK_SIGNATURE_INVALID', 'X-Hub-Signature-256');
        const ok = await verifyGithub(v.secret, text, sig).catch(() => false);
        return ok
          ? { ok: true, deliveryId: deliveryHeader('github', headers) }
          : fail('TRIB_ERR_WEBHOOK_SIGNATURE_INVALID', 'X-Hub-Signature-256');
      };
    case 'standardwebhooks': {
      const wh = new StandardWebhook(v.secret);
      return async ({ body, headers }) => {
        // Svix sends the same headers under its own names.
        const id = headers['webhook-id'] ?? headers['svix-id'];
        const ts = headers['webhook-timestamp'] ?? headers['svix-timestamp'];
        const sig = headers['webhook-signature'] ?? headers['svix-signature'];
        if (!id || !ts || !sig) return fail('TRIB_ERR_WEBHOOK_SIGNATURE_MISSING', 'webhook-signature');
        try {
          wh.verify(
            body,
            { 'webhook-id': id, 'webhook-timestamp': ts, 'webhook-signature': sig },
            {
              jsonParse: false,
            },
          );
          return { ok: true, deliveryId: id };
        } catch (err) {
          const stale = err instanceof Error && /timestamp too (old|new)/i.test(err.message);
          return fail(
            stale ? 'TRIB_ERR_WEBHOOK_TIMESTAMP_STALE' : 'TRIB_ERR_WEBHOOK_SIGNATURE_INVALID',
            'webhook-signature',
          );
        }
      };
    }
    case 'shopify':
      return async ({ body, headers }) => {
        const sig = headers['x-shopify-hmac-sha256'];
        if (!sig) return fail('TRIB_ERR_WEBHOOK_SIGNATURE_MISSING', 'X-Shopify-Hmac-Sha256');
        const expected = createHmac('sha256', v.secret).update(body).digest();
        const given = Buffer.from(sig.trim(), 'base64');
        return sameBytes(given, expected)
          ? { ok: true, deliveryId: deliveryHeader('shopify', headers) }
          : fail('TRIB_ERR_WEBHOOK_SIGNATURE_INVALID', 'X-Shopify-Hmac-Sha256');
      };
    case 'hmac': {
      const [before, after] = (v.timestamp?.signedContent ?? '{body}').split('{body}') as [string, string];
      return async ({ body, headers, receivedAt }) => {
        const raw = headers[v.header];
        if (!raw) return fail('TRIB_ERR_WEBHOOK_SIGNATURE_MISSING', v.header);
        let content: Buffer = body;
        let stale = false;
        if (v.timestamp) {
          const ts = headers[v.timestamp.header];
          if (!ts) return fail('TRIB_ERR_WEBHOOK_SIGNATURE_MISSING', v.timestamp.header);
          const n = Number(ts);
          const ms = Number.isFinite(n) ? (n < 1e11 ? n * 1000 : n) : Number.NaN;
          stale = !(Math.abs(receivedAt - ms) <= v.timestamp.tolerance);
          content = Buffer.concat([
            Buffer.from(before.replaceAll('{timestamp}', ts)),
            body,
            Buffer.from(after.replaceAll('{timestamp}', ts)),
          ]);
        }
        const expected = createHmac(v.algorithm, v.secret).update(content).digest();
        // A header may carry several signatures (secret rotation), comma- or space-separated.
        const candidates = raw.split(/[\s,]+/).filter((s) => s !== '');
        let ok = false;
        for (const c of candidates) {
          if (v.prefix !== undefined && !c.startsWith(v.prefix)) continue;
          const text = v.prefix !== undefined ? c.slice(v.prefix.length) : c;
          const given = v.encoding === 'hex' ? hexBytes(text) : Buffer.from(text, 'base64');
          if (given && sameBytes(given, expected)) ok = true;
        }
        if (!ok) return fail('TRIB_ERR_WEBHOOK_SIGNATURE_INVALID', v.header);
        if (stale) return fail('TRIB_ERR_WEBHOOK_TIMESTAMP_STALE', v.timestamp!.header);
        return {
          ok: true,
          deliveryId: v.deliveryId && 'header' in v.deliveryId ? headers[v.deliveryId.header] : undefined,
        };
      };
    }
    case 'none':
      return async ({ headers }) => ({
        ok: true,
        deliveryId: v.deliveryId && 'header' in v.deliveryId ? headers[v.deliveryId.header] : undefined,
      });
  }
}

function hexBytes(text: string): Buffer | undefined {
  return /^(?:[0-9a-fA-F]{2})+$/.test(text) ? Buffer.from(text, 'hex') : undefined;
}

/** The messageId of a delivery without an id of its own: a hash of its body, so a redelivery is the same. */
export function bodyDeliveryId(body: Buffer): string {
  return `sha256:${createHash('sha256').update(body).digest('hex')}`;
}
