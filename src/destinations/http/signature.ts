import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * The request signature of the HTTP destination, in the scheme Stripe made familiar:
 * `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` with the shared secret. The
 * timestamp is signed with the body, so a receiver that also refuses old timestamps (say,
 * older than 5 minutes) is safe from replays.
 *
 * @example signatureHeader('secret-of-16-chars', '{"a":1}', 1767225600)
 * // 't=1767225600,v1=…'
 */
export function signatureHeader(
  secret: string,
  body: string,
  unixSeconds = Math.floor(Date.now() / 1000),
): string {
  const mac = createHmac('sha256', secret).update(`${unixSeconds}.`).update(body).digest('hex');
  return `t=${unixSeconds},v1=${mac}`;
}

/**
 * What a receiver does with the header: true when `v1` is the HMAC of `"<t>.<body>"` and `t`
 * is at most `toleranceSeconds` away from `now`.
 */
export function verifySignature(
  secret: string,
  body: string,
  header: string,
  toleranceSeconds = 300,
  now = Math.floor(Date.now() / 1000),
): boolean {
  const parts = new Map(
    header.split(',').map((p) => {
      const i = p.indexOf('=');
      return [p.slice(0, i).trim(), p.slice(i + 1).trim()] as const;
    }),
  );
  const t = Number(parts.get('t'));
  const v1 = parts.get('v1') ?? '';
  if (!Number.isInteger(t) || Math.abs(now - t) > toleranceSeconds) return false;
  const expected = createHmac('sha256', secret).update(`${t}.`).update(body).digest();
  const given = Buffer.from(v1, 'hex');
  return given.length === expected.length && timingSafeEqual(given, expected);
}
