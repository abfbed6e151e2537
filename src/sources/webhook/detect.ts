/**
 * Recognises a vendor's webhook sent to the collection API (which would otherwise answer 200
 * and store nothing, or reject it as an event without identity), so the sender learns the
 * webhook URL instead. Headers are checked before the body is decoded; the body only for
 * Stripe, whose event objects are recognisable by shape.
 */

const HEADERS: readonly [string, string][] = [
  ['stripe-signature', 'Stripe'],
  ['x-github-event', 'GitHub'],
  ['x-hub-signature-256', 'GitHub'],
  ['webhook-signature', 'Standard Webhooks'],
  ['svix-signature', 'Svix'],
  ['x-shopify-hmac-sha256', 'Shopify'],
];

/** The vendor whose webhook headers the request carries, if any. */
export function webhookVendorByHeaders(headers: Readonly<Record<string, unknown>>): string | undefined {
  for (const [name, vendor] of HEADERS) if (headers[name] !== undefined) return vendor;
  return undefined;
}

/** Whether a parsed body is a Stripe event (`{"object": "event", "id": "evt_…", "data": {"object": …}}`). */
export function isStripeEventBody(body: Readonly<Record<string, unknown>>): boolean {
  const data = body.data;
  return (
    body.object === 'event' &&
    typeof body.id === 'string' &&
    body.id.startsWith('evt_') &&
    typeof body.type === 'string' &&
    data !== null &&
    typeof data === 'object' &&
    'object' in data
  );
}
