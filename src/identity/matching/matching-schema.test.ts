import { describe, expect, it } from 'vitest';
import { IdentityConfig } from '../../config/identity-schema.js';
import { MatchingConfig, PEOPLE_FIELDS } from './matching-schema.js';

const issues = (input: unknown) => {
  const r = MatchingConfig.safeParse(input);
  return r.success ? [] : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
};

describe('MatchingConfig', () => {
  it('is off by default, with the people fields, in the identity config', () => {
    const c = IdentityConfig.parse({});
    expect(c.matching.enabled).toBe(false);
    expect(c.matching.fields).toEqual(PEOPLE_FIELDS);
    expect([c.matching.review, c.matching.autoMerge]).toEqual([0.8, 0.99]);
  });

  it('names the mistakes: unknown fields in blocking and swapWith, thresholds in the wrong order, bad names', () => {
    expect(
      issues({
        fields: [
          { name: 'first', comparison: 'name', swapWith: 'nope' },
          { name: 'first', comparison: 'date' },
        ],
        blocking: [['first', { field: 'missing', transform: 'prefix' }]],
        review: 0.995,
      }),
    ).toEqual([
      'fields.1.name: duplicate field',
      'fields.0.swapWith: no other field named nope',
      'blocking.0.1: no field named missing',
      'review: review must not be above autoMerge',
    ]);
    expect(
      issues({ fields: [{ name: 'Robert"); DROP', comparison: 'name' }], blocking: [['x']] })[0],
    ).toMatch(/^fields\.0\.name: use lowercase letters/);
    expect(issues({ sources: { crm: { first_name: ['FirstName'] } }, autoMerge: 1 })).toEqual([
      'autoMerge: Too big: expected number to be <1',
    ]);
  });
});
