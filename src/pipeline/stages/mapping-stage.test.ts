import { describe, expect, it } from 'vitest';
import { MappingConfig } from '../../config/quality-schema.js';
import { applyStyle, MappingStage, normalize } from './mapping-stage.js';

const stage = (config: unknown) => new MappingStage(MappingConfig.parse(config));

describe('MappingStage', () => {
  it('maps every spelling of an alias to one name, matching by words', () => {
    const m = stage({ events: { aliases: { 'Logged In': ['log_in', 'logged_in'] } } });
    for (const name of ['log_in', 'Logged In', 'logged_in', 'LoggedIn', 'LOG-IN', 'logIn']) {
      const e = { type: 'track', event: name };
      m.map(e);
      expect(e.event, name).toBe('Logged In');
    }
    const other = { type: 'track', event: 'Signed Up' };
    expect(m.map(other)).toEqual([]);
    expect(other).toEqual({ type: 'track', event: 'Signed Up' });
  });

  it('applies a naming style to names no alias names', () => {
    expect(applyStyle('Order Completed', 'snake_case')).toBe('order_completed');
    expect(applyStyle('order_completed', 'title_case')).toBe('Order Completed');
    expect(applyStyle('Order Completed', 'camel_case')).toBe('orderCompleted');
    expect(applyStyle('añadir al carrito', 'title_case')).toBe('Añadir Al Carrito');
  });

  it('maps keys in properties, traits and context.traits, and records the changes (golden)', () => {
    const m = stage({
      fields: { email: ['email_address', 'primary_email', 'contact_email'] },
      normalize: { email: ['trim', 'lowercase'], phone: ['e164'], signup_date: ['iso_date'] },
      defaultRegion: 'GB',
    });
    const crm = {
      type: 'identify',
      traits: { primary_email: ' Ann@Example.com', phone: '020 7946 0958', signup_date: 1700000000 },
      context: { traits: { contact_email: 'b@x.io', email: 'a@x.io' } },
    };
    m.map(crm);
    expect(crm).toEqual({
      type: 'identify',
      traits: { email: 'ann@example.com', phone: '+442079460958', signup_date: '2023-11-14T22:13:20.000Z' },
      context: { traits: { email: 'a@x.io' } },
      _tributary: {
        mapped: [
          { field: 'traits.primary_email', op: 'rename', to: 'traits.email' },
          { field: 'traits.email', op: 'normalize', normalizer: 'trim' },
          { field: 'traits.email', op: 'normalize', normalizer: 'lowercase' },
          { field: 'traits.phone', op: 'normalize', normalizer: 'e164' },
          { field: 'traits.signup_date', op: 'normalize', normalizer: 'iso_date' },
          { field: 'context.traits.contact_email', op: 'conflict', to: 'context.traits.email' },
        ],
      },
    });
  });

  it('leaves a value it cannot parse as it is, and says so', () => {
    const e = { type: 'track', event: 'x', properties: { phone: 'call me', when: 'someday' } };
    stage({ normalize: { phone: ['e164'], when: ['iso_date'] } }).map(e);
    expect(e.properties).toEqual({ phone: 'call me', when: 'someday' });
    expect(e).toMatchObject({
      _tributary: {
        mapped: [
          { field: 'properties.phone', op: 'unparsable', normalizer: 'e164' },
          { field: 'properties.when', op: 'unparsable', normalizer: 'iso_date' },
        ],
      },
    });
  });

  it('normalizers: numbers as strings, international prefixes, non-strings untouched', () => {
    expect(normalize('0041 44 668 18 00', 'e164')).toBe('+41446681800');
    expect(normalize(4155552671, 'e164', 'US')).toBe('+14155552671');
    expect(normalize('1700000000000', 'iso_date')).toBe('2023-11-14T22:13:20.000Z');
    expect(normalize('2024-02-30', 'iso_date')).toBeUndefined();
    expect(normalize(['A'], 'lowercase')).toEqual(['A']);
    expect(normalize(' ÄBC ', 'email')).toBe('äbc');
  });

  it('hostile input: huge strings, unicode keys and names, numbers as strings, nested arrays', () => {
    const m = stage({
      events: { aliases: { 'Café Visité': ['cafe_visite'] }, style: 'snake_case' },
      fields: { phone: ['téléphone'] },
      normalize: { phone: ['e164'], when: ['iso_date'], email: ['email'] },
      defaultRegion: 'FR',
    });
    const huge = '9'.repeat(30_000);
    const e = {
      type: 'track',
      event: 'Café Visité',
      properties: {
        téléphone: '06 12 34 56 78',
        when: '1700000000',
        email: huge,
        nested: [[1, ['a']], { b: [2] }],
      },
    };
    m.map(e);
    expect(e.event).toBe('Café Visité');
    expect(e.properties).toEqual({
      phone: '+33612345678',
      when: '2023-11-14T22:13:20.000Z',
      email: huge,
      nested: [[1, ['a']], { b: [2] }],
    });
    const styled = { type: 'track', event: '注文 完了 ✓' };
    m.map(styled);
    expect(styled.event).toBe('注文_完了');
    expect(normalize(huge, 'e164', 'FR')).toBeUndefined();
    expect(normalize('+1 (415) 555-2671 ext. 1234', 'e164')).toBe('+14155552671');
  });
});
