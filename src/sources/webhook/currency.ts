/**
 * Amounts in minor units (what Stripe's API sends: `1999` USD cents) as currency units
 * (`19.99`), following Stripe's currency table (docs.stripe.com/currencies): zero-decimal
 * currencies are sent in units, three-decimal ones in thousandths, and ISK and UGX, although
 * zero-decimal, are sent as if they had two decimals (for backwards compatibility).
 */

const ZERO_DECIMAL = new Set([
  'bif',
  'clp',
  'djf',
  'gnf',
  'jpy',
  'kmf',
  'krw',
  'mga',
  'pyg',
  'rwf',
  'vnd',
  'vuv',
  'xaf',
  'xof',
  'xpf',
]);
const THREE_DECIMAL = new Set(['bhd', 'jod', 'kwd', 'omr', 'tnd']);

/** Minor units in one unit of the currency (case-insensitive ISO 4217 code). */
export function minorUnitsPerUnit(currency: string): number {
  const c = currency.toLowerCase();
  if (ZERO_DECIMAL.has(c)) return 1;
  if (THREE_DECIMAL.has(c)) return 1000;
  return 100;
}

/**
 * `amount` minor units of `currency` in units, rounded to the currency's decimals (so
 * `1999 / 100` is `19.99`, not `19.990000000000002`). Undefined for a non-number or a
 * currency that is not a three-letter code.
 */
export function toCurrencyUnits(amount: unknown, currency: unknown): number | undefined {
  if (typeof amount !== 'number' || !Number.isFinite(amount)) return undefined;
  if (typeof currency !== 'string' || !/^[A-Za-z]{3}$/.test(currency)) return undefined;
  const per = minorUnitsPerUnit(currency);
  if (per === 1) return amount;
  const decimals = per === 1000 ? 3 : 2;
  return Number((amount / per).toFixed(decimals));
}
