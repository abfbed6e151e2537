import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { PrivacyConfig } from '../../config/quality-schema.js';
import type { JsonObject } from '../../spec/event.js';
import { isCardNumber, isSsn, mask, PiiClassifier } from './pii-classifier.js';

const SALT = 'test-salt';
const classifier = (policy: unknown, matchers: unknown[] = [], aliases: Record<string, string[]> = {}) =>
  new PiiClassifier(PrivacyConfig.parse({ policy, matchers }), SALT, aliases);
const sha = (text: string) =>
  `sha256:${createHash('sha256').update(SALT).update('\u0000').update(text).digest('hex')}`;

/** Golden cases: one per built-in matcher, by key and by value. */
const MATCHERS: [string, JsonObject, string, string][] = [
  [
    'card number by value (Luhn)',
    { properties: { note: '4111-1111-1111-1111' } },
    'card_number',
    'properties.note',
  ],
  ['card number as a JSON number', { properties: { n: 4111111111111111 } }, 'card_number', 'properties.n'],
  ['card number by key', { properties: { card_number: '1234' } }, 'card_number', 'properties.card_number'],
  ['SSN by value', { traits: { x: '123-45-6789' } }, 'ssn', 'traits.x'],
  ['password by key', { traits: { Password: 'x' } }, 'password', 'traits.Password'],
  ['API key by key', { properties: { api_key: 'abc' } }, 'secret', 'properties.api_key'],
  ['Stripe key by value', { properties: { k: 'sk_live_abcdefghijklmnop' } }, 'secret', 'properties.k'],
  ['AWS key by value', { properties: { k: 'AKIAABCDEFGHIJKLMNOP' } }, 'secret', 'properties.k'],
  ['email by value', { properties: { contact: 'ann@example.com' } }, 'email', 'properties.contact'],
  ['email by key', { traits: { emailAddress: 'not-an-email' } }, 'email', 'traits.emailAddress'],
  ['phone by value', { properties: { p: '+44 20 7946 0958' } }, 'phone', 'properties.p'],
  [
    'address by key',
    { traits: { address: { street: '1 Main St', city: 'X' } } },
    'address',
    'traits.address',
  ],
  ['name by key', { traits: { first_name: 'Ann' } }, 'name', 'traits.first_name'],
  ['IP by key in context', { context: { ip: '10.0.0.1' } }, 'ip', 'context.ip'],
  ['IPv6 by value', { properties: { origin: '2001:db8::1' } }, 'ip', 'properties.origin'],
  [
    'inside nested arrays',
    { properties: { cards: [['x', '4242424242424242']] } },
    'card_number',
    'properties.cards.0.1',
  ],
];

describe('PiiClassifier', () => {
  it.each(MATCHERS)('finds %s', (_name, event, className, path) => {
    const r = classifier({ allow: ['red', 'yellow'] }).apply(structuredClone(event));
    expect(r.findings.map((f) => [f.className, f.path])).toContainEqual([className, path]);
  });

  it('leaves ordinary data alone, and never classifies the envelope', () => {
    const event = {
      type: 'track',
      userId: 'ann@example.com',
      messageId: '4111111111111111',
      event: 'Order Completed',
      properties: { total: 4111111111111112, order_id: '1234-5678', name: 'Blue shirt', zip_file: 'a.zip' },
    };
    const before = structuredClone(event);
    expect(classifier({}).apply(event)).toEqual({ findings: [], blocked: false });
    expect(event).toEqual(before);
  });

  it('applies each action (golden)', () => {
    const event = {
      type: 'identify',
      userId: 'u1',
      traits: {
        email: 'Ann@Example.com ',
        phone: '+1 415 555 2671',
        password: 'hunter2',
        first_name: 'Ann',
        cards: ['4111111111111111'],
      },
      context: { ip: '192.168.100.200' },
    };
    const r = classifier({ hash: ['email'], mask: ['phone', 'ip'], drop: ['password', 'card_number'] }).apply(
      event,
    );
    expect(event).toEqual({
      type: 'identify',
      userId: 'u1',
      traits: {
        email: sha('ann@example.com'),
        phone: '***********2671',
        first_name: 'Ann',
        cards: [null],
      },
      context: { ip: '***********.200' },
    });
    expect(r.blocked).toBe(false);
    expect(r.findings.map((f) => `${f.className}:${f.action}`)).toEqual([
      'email:hash',
      'phone:mask',
      'password:drop',
      'name:allow',
      'card_number:drop',
      'ip:mask',
    ]);
  });

  it('blocks by class or category, removing the blocked value from what is left', () => {
    const event = { type: 'track', properties: { ssn: '123-45-6789', plan: 'pro' } };
    const r = classifier({ block: ['red'] }).apply(event);
    expect(r.blocked).toBe(true);
    expect(event.properties).toEqual({ plan: 'pro' });
    expect(r.findings).toEqual([
      { className: 'ssn', category: 'red', action: 'block', path: 'properties.ssn' },
    ]);
  });

  it('defaults: red dropped, yellow allowed', () => {
    const event = { type: 'track', properties: { token: 'abc', email: 'a@b.co' } };
    classifier({}).apply(event);
    expect(event.properties).toEqual({ email: 'a@b.co' });
  });

  it('takes user-defined matchers on keys and values', () => {
    const c = classifier({ block: ['employee_id'], mask: ['badge'] }, [
      { name: 'employee_id', category: 'red', key: '^emp(loyee)?_?id$' },
      { name: 'badge', value: '^B-\\d{6}$' },
    ]);
    const a = { type: 'track', properties: { EmpId: 7 } };
    expect(c.apply(a).blocked).toBe(true);
    const b = { type: 'track', properties: { code: 'B-123456' } };
    expect(c.apply(b).blocked).toBe(false);
    expect(b.properties.code).toBe('****');
  });

  it('survives hostile input: huge strings, unicode, numbers as strings, deep arrays', () => {
    const huge = 'x'.repeat(1_000_000);
    const deep: unknown[] = [];
    let cur = deep;
    for (let i = 0; i < 60; i++) {
      const next: unknown[] = [];
      cur.push(next);
      cur = next;
    }
    cur.push('5555 5555 5555 4444');
    const event = {
      type: 'track',
      properties: {
        huge,
        hugeCard: `4111111111111111${huge}`,
        unicode: '４１１１１１１１１１１１１１１１',
        emoji: '💳 4111 1111 1111 1111',
        asString: '378282246310005',
        deep,
        '': 'empty key',
        __proto__x: 'ann@example.com',
      },
    };
    const r = classifier({ drop: ['card_number', 'email'] }).apply(event);
    expect(r.findings.map((f) => f.path).sort()).toEqual(
      ['properties.__proto__x', 'properties.asString', `properties.deep${'.0'.repeat(61)}`].sort(),
    );
    expect(event.properties.huge).toBe(huge);
  });

  it('masks by code point, so a masked emoji string keeps whole characters', () => {
    expect(mask('😀😀😀😀😀😀😀😀😀😀1234', 'x')).toBe('**********1234');
    expect(mask('😀😀😀😀😀😀abcd', 'x')).toBe('******abcd');
    expect(mask('+1 415 555 2671', 'phone')).toBe('***********2671');
    expect(mask('short', 'x')).toBe('****');
    expect(mask('Ann@Example.com', 'email')).toBe('A***@Example.com');
  });

  it('checks Luhn and SSN ranges', () => {
    expect(isCardNumber('4111 1111 1111 1111')).toBe(true);
    expect(isCardNumber('4111 1111 1111 1112')).toBe(false);
    expect(isCardNumber('0000 0000 0000')).toBe(false);
    expect(isSsn('078-05-1120')).toBe(true);
    expect(isSsn('666-12-3456')).toBe(false);
    expect(isSsn('123-00-4567')).toBe(false);
  });

  it('refuses a class under two actions and a matcher regex that does not compile', () => {
    expect(PrivacyConfig.safeParse({ policy: { drop: ['email'], hash: ['email'] } }).success).toBe(false);
    expect(PrivacyConfig.safeParse({ matchers: [{ name: 'x', key: '(' }] }).success).toBe(false);
  });

  it('classifies a key the mapping renames as its canonical name (issue 16, finding 6)', () => {
    const c = classifier(
      { hash: ['email'], block: ['employee_id'] },
      [{ name: 'employee_id', category: 'red', key: '^emp(loyee)?_?id$' }],
      { email: ['email_address', 'primary_email', 'contact_email'], employee_id: ['staff_number'] },
    );
    const event = {
      type: 'identify',
      traits: { contactEmail: ' Ada@Example.com ', 'Primary-Email': 'x' },
      context: { traits: { EMAIL_ADDRESS: 'ada@example.com' } },
    };
    expect(c.apply(event).blocked).toBe(false);
    expect(event.traits).toEqual({ contactEmail: sha('ada@example.com'), 'Primary-Email': sha('x') });
    expect(event.context.traits.EMAIL_ADDRESS).toBe(sha('ada@example.com'));
    const blocked = { type: 'track', properties: { staffNumber: 'E-1' } };
    expect(c.apply(blocked).blocked).toBe(true);
  });

  it('takes the stricter class when an alias is a class of its own', () => {
    // `password` mapped onto `email`: in the log it is a password, in the tables an email.
    const c = classifier({ hash: ['email'] }, [], { email: ['password'], phone: ['contact_email'] });
    const a = { type: 'identify', traits: { password: 'hunter2', contactEmail: 'ann@example.com' } };
    c.apply(a);
    expect(a.traits).toEqual({ contactEmail: sha('ann@example.com') });
  });

  it('matches values after trimming, and masks the trimmed value', () => {
    const event = { type: 'track', properties: { note: '  Ada@Example.com\t', other: ' +44 20 7946 0958 ' } };
    classifier({ hash: ['email'], mask: ['phone'] }).apply(event);
    expect(event.properties).toEqual({ note: sha('ada@example.com'), other: '************0958' });
  });

  it('hashes a phone number as E.164, so its spellings give one hash', () => {
    const a = { type: 'identify', traits: { phone: '+1 415 555 2671' } };
    const b = { type: 'identify', traits: { phone: '+14155552671 ' } };
    const c = classifier({ hash: ['phone'] });
    c.apply(a);
    c.apply(b);
    expect(a.traits.phone).toBe(sha('+14155552671'));
    expect(b.traits.phone).toBe(a.traits.phone);
  });

  it('classifies channel, version and integrations; only the listed envelope fields are exempt', () => {
    const event: JsonObject = {
      type: 'track',
      event: 'E',
      userId: 'u',
      channel: 'ann@example.com',
      version: '4111111111111111',
      integrations: { Webhook: { email: 'ann@example.com' } },
    };
    classifier({ hash: ['email'] }).apply(event);
    expect(event).toEqual({
      type: 'track',
      event: 'E',
      userId: 'u',
      channel: sha('ann@example.com'),
      integrations: { Webhook: { email: sha('ann@example.com') } },
    });
  });
});
