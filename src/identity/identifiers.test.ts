import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { IdentityConfig } from '../config/identity-schema.js';
import { compileRules, extractIdentifiers, normalizeIdentifier } from './identifiers.js';

const rules = compileRules(IdentityConfig.parse({ phoneDefaultCountry: 'US' }));

describe('identifiers', () => {
  it('normalises email and phone, and refuses placeholders and unreadable values', () => {
    expect(normalizeIdentifier('email', '  Ada@Example.COM ', rules)).toEqual({ value: 'ada@example.com' });
    expect(normalizeIdentifier('phone', '(415) 555-0132', rules)).toEqual({ value: '+14155550132' });
    expect(normalizeIdentifier('phone', '+49 30 901820', rules)).toEqual({ value: '+4930901820' });
    expect(normalizeIdentifier('phone', 'call me', rules)).toMatchObject({ reason: 'invalid' });
    expect(normalizeIdentifier('email', 'not-an-email', rules)).toMatchObject({ reason: 'invalid' });
    // Past PostgreSQL's index entry limit: left out, so it cannot stop resolution for everyone.
    for (const type of ['user_id', 'anonymous_id', 'email', 'device_id'])
      expect(normalizeIdentifier(type, `${'x'.repeat(600)}@example.com`, rules)).toMatchObject({
        reason: 'too_long',
      });
    expect(normalizeIdentifier('user_id', 'u'.repeat(512), rules)).toEqual({ value: 'u'.repeat(512) });
    for (const v of ['null', 'NULL', 'undefined', 'anonymous', '-1', '', '0000', '0-0', 'N/A'])
      expect(normalizeIdentifier('anonymous_id', v, rules)).toMatchObject({ reason: 'blocked_value' });
    expect(normalizeIdentifier('email', 'Test@example.com', rules)).toMatchObject({
      reason: 'blocked_value',
    });
    expect(normalizeIdentifier('user_id', 42, rules)).toEqual({ value: '42' });
  });

  it('keeps emails and phones the privacy policy hashed, so they still join profiles', () => {
    const hashed = `sha256:${'ab12'.repeat(16)}`;
    expect(normalizeIdentifier('email', ` ${hashed} `, rules)).toEqual({ value: hashed });
    expect(normalizeIdentifier('phone', hashed, rules)).toEqual({ value: hashed });
    expect(normalizeIdentifier('email', 'sha256:xyz', rules)).toMatchObject({ reason: 'invalid' });
  });

  it('takes identifiers from every place an event carries them, and the source paths', () => {
    const r = compileRules(
      IdentityConfig.parse({
        paths: [
          { source: 'support', path: 'properties.ticket_requester_email', type: 'email' },
          { path: 'properties.stripe_customer', type: 'stripe_customer_id' },
        ],
      }),
    );
    const event = {
      type: 'track',
      userId: 'u1',
      anonymousId: 'null',
      properties: { ticket_requester_email: 'Bob@x.io', stripe_customer: 'cus_1' },
      context: {
        traits: { email: 'ada@x.io', phone: '+1 415 555 0132' },
        device: { id: 'dev-9' },
        externalIds: [{ id: 'IDFA-1', type: 'ios.idfa', collection: 'users', encoding: 'none' }],
      },
    };
    const support = extractIdentifiers(event, 'support', r);
    expect(support.identifiers.map((i) => i.key)).toEqual([
      'user_id:u1',
      'email:ada@x.io',
      'phone:+14155550132',
      'device_id:dev-9',
      'ios_idfa:IDFA-1',
      'email:bob@x.io',
      'stripe_customer_id:cus_1',
    ]);
    expect(support.leftOut).toEqual([{ identifier: 'anonymous_id:null', reason: 'blocked_value' }]);
    const web = extractIdentifiers(event, 'web', r);
    expect(web.identifiers.map((i) => i.key)).not.toContain('email:bob@x.io');
  });

  it("takes an alias's previousId as an anonymous id", () => {
    const r = extractIdentifiers({ type: 'alias', userId: 'u1', previousId: 'anon-7' }, 'web', rules);
    expect(r.identifiers.map((i) => i.key)).toEqual(['user_id:u1', 'anonymous_id:anon-7']);
  });

  it('has Segment defaults for limits and priorities, overridable per type', () => {
    const r = compileRules(
      IdentityConfig.parse({ identifiers: { email: { limit: 2, within: '7d', priority: 5 } } }),
    );
    expect([r.limit('user_id'), r.limit('anonymous_id'), r.limit('email')]).toEqual([1, 5, 2]);
    expect([r.priority('user_id'), r.priority('email'), r.priority('device_id')]).toEqual([1, 5, 3]);
    expect(r.within('email')).toBe(7 * 86_400_000);
  });

  it('refuses bad settings with their path', () => {
    const bad = IdentityConfig.safeParse({
      blockedValues: [{ regex: '([' }],
      computed: [{ name: 'revenue', op: 'sum' }],
      identifiers: { 'Bad Type': { limit: 1 } },
    });
    expect(bad.success).toBe(false);
    const paths = bad.error!.issues.map((i) => i.path.join('.'));
    expect(paths).toEqual(
      expect.arrayContaining(['blockedValues.0.regex', 'computed.0.property', 'identifiers.Bad Type']),
    );
  });

  it('reads the documented example', () => {
    const yaml = `identifiers:
  anonymous_id: { limit: 5, within: 7d }
  stripe_customer_id: { limit: 1, priority: 2 }
paths:
  - { source: support, path: properties.ticket_requester_email, type: email }
  - { path: properties.stripe_customer, type: stripe_customer_id }
phoneDefaultCountry: US
traits:
  default: latest
  rules: { signup_source: first, plan: source_priority }
  sourcePriority: [billing, crm]
computed:
  - { name: orders, op: count, event: Order Completed }
  - { name: revenue_30d, op: sum, event: Order Completed, property: properties.total, window: 30d }
  - { name: last_seen_page, op: last, event: "type:page", property: properties.path }
`;
    const cfg = IdentityConfig.parse(parseYaml(yaml));
    expect(cfg.computed[1]!.window).toBe(30 * 86_400_000);
  });
});
