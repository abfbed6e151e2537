import { describe, expect, it } from 'vitest';
import { retryAfterMs } from './retry-after.js';
import { signatureHeader, verifySignature } from './signature.js';

describe('Retry-After', () => {
  const now = Date.parse('2026-10-21T07:28:00Z');
  it('reads delta-seconds and HTTP-dates', () => {
    expect(retryAfterMs('120', now)).toBe(120_000);
    expect(retryAfterMs(' 0 ', now)).toBe(0);
    expect(retryAfterMs('Wed, 21 Oct 2026 07:28:30 GMT', now)).toBe(30_000);
    expect(retryAfterMs('Wed, 21 Oct 2026 07:27:00 GMT', now)).toBe(0);
  });
  it('ignores what it cannot read', () => {
    for (const v of [null, undefined, '', '-5', '1.5', 'soon', 'Mon, 99 Foo 2026'])
      expect(retryAfterMs(v, now)).toBeUndefined();
  });
});

describe('the request signature', () => {
  const secret = 'a-secret-of-sixteen+';
  it('verifies the body it was made for, within the tolerance', () => {
    const h = signatureHeader(secret, '{"a":1}', 1_800_000_000);
    expect(h).toMatch(/^t=1800000000,v1=[0-9a-f]{64}$/);
    expect(verifySignature(secret, '{"a":1}', h, 300, 1_800_000_100)).toBe(true);
  });
  it('refuses another body, another secret, an old timestamp, a malformed header', () => {
    const h = signatureHeader(secret, '{"a":1}', 1_800_000_000);
    expect(verifySignature(secret, '{"a":2}', h, 300, 1_800_000_000)).toBe(false);
    expect(verifySignature('another-secret-xx', '{"a":1}', h, 300, 1_800_000_000)).toBe(false);
    expect(verifySignature(secret, '{"a":1}', h, 300, 1_800_000_301)).toBe(false);
    expect(verifySignature(secret, '{"a":1}', 'v1=zz', 300, 1_800_000_000)).toBe(false);
  });
});
